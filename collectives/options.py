"""Named choices: reduction ops, supported dtypes, algorithm and compression names."""
from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

from .algorithms import PLANNERS
from .errors import unknown_choice

__all__ = ["Op", "DTYPES", "ALGORITHMS", "COMPRESSIONS", "check_dtype", "check_algorithm"]


class Op(str, enum.Enum):
    """A reduction. `AVG` is a sum followed by a division by the world size."""

    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"

    @classmethod
    def parse(cls, op: "str | Op") -> "Op":
        if isinstance(op, Op):
            return op
        try:
            return cls(str(op).lower())
        except ValueError:
            raise unknown_choice("op", op, [o.value for o in cls]) from None

    @property
    def elementwise(self) -> str:
        """The kernel op applied at each reduction step."""
        return "sum" if self is Op.AVG else self.value


DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t)
    for t in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64)
)
ALGORITHMS: tuple[str, ...] = ("auto", "native", *PLANNERS)
COMPRESSIONS = (None, "fp16", "bf16")


def check_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise TypeError(
            f"unsupported dtype {dtype}; supported: {', '.join(str(d) for d in DTYPES)}"
        )
    return dtype


def check_algorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise unknown_choice("algorithm", name, ALGORITHMS)
    return name
