"""Named choices (ops, dtypes, algorithms, compressions) and a call's options, checked once.

`CallOptions.parse` is the one place a collective's options are validated; the
communicator, fusion, GradSync and the torch hooks all go through it, and its result is
what the agreement check compares. Parsed options are memoized: a training loop's calls
with the same options cost a dictionary lookup.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from .algorithms import PLANNERS
from .config import MAX_COUNT
from .errors import unknown_choice

__all__ = ["Op", "DTYPES", "ALGORITHMS", "COMPRESSIONS", "CallOptions", "check_dtype",
           "check_algorithm", "check_compression"]


class Op(str, enum.Enum):
    """A reduction. `AVG` is a sum followed by a division by the world size (for float16
    with a scaling first: `averaging`)."""

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

    def averaging(self, dtype: np.dtype, size: int) -> tuple[float | None, float | None]:
        """(scale of the input before the sum, divisor after it) of this op over `size`
        ranks; None: no such step.

        An avg divides the sum by size. A float16 sum overflows where the mean fits (60000
        on two ranks), so its inputs are first scaled by 2^-k, 2^k the smallest power of two
        >= size, and the sum divided by size / 2^k, as NCCL's ncclAvg and PyTorch DDP divide
        first: no partial sum exceeds the largest input. The scale is exact for inputs of
        magnitude >= 2^(k-14), where the bits are those of sum / size; smaller inputs fall
        into float16's subnormal range and round (mean(x, x) of x = 6.11e-05 gives 6.10e-05
        at size 2): the price of the range. (Paths that fold in float32, riding and
        deterministic, divide once at the end; bfloat16 has float32's range.)"""
        if self is not Op.AVG:
            return None, None
        if dtype != _FLOAT16:
            return None, size
        first = 1 << (size - 1).bit_length()
        return (None if first == 1 else 1.0 / first), (None if first == size else size / first)


DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t)
    for t in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64)
)
SUPPORTED = frozenset(DTYPES)
_FLOAT16 = np.dtype(np.float16)
ALGORITHMS: tuple[str, ...] = ("auto", "native", *PLANNERS["allreduce"])
COMPRESSIONS = (None, "fp16", "bf16", "auto")


def check_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise TypeError(
            f"unsupported dtype {dtype}; supported: {', '.join(str(d) for d in DTYPES)}"
        )
    return dtype


def check_algorithm(name: str, collective: str = "allreduce") -> str:
    """`name` must be "auto", "native" or one of `collective`'s plan algorithms."""
    accepted = ALGORITHMS if collective == "allreduce" else ("auto", "native",
                                                             *PLANNERS[collective])
    if name not in accepted:
        what = "algorithm" if collective == "allreduce" else f"algorithm for {collective}"
        raise unknown_choice(what, name, accepted)
    return name


def check_compression(name: str | None, collective: str = "allreduce") -> str | None:
    """`name` must be a compression `collective` takes ("auto" is for all-reduces only)."""
    accepted = COMPRESSIONS if collective == "allreduce" else COMPRESSIONS[:-1]
    if name not in accepted:
        raise unknown_choice("compression", name, accepted)
    return name


@dataclass(frozen=True, slots=True)
class CallOptions:
    """A collective's options after checking: every rank must pass the same ones.

    `error_feedback` is False, True (one residual per call layout) or a name for the
    residual; it needs a compression.
    """

    op: Op
    algorithm: str
    compression: str | None
    fusion_bytes: int
    check_finite: bool = False
    error_feedback: bool | str = False
    deterministic: bool = False
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        fields = (self.op, self.algorithm, self.compression, self.fusion_bytes,
                  self.check_finite, self.error_feedback, self.deterministic)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:  # options are dictionary keys on every call: hashed once
        return self._hash

    @classmethod
    def parse(cls, op: "str | Op" = "sum", algorithm: str = "auto",
              compression: str | None = None, fusion_bytes: int = 64 << 20,
              check_finite: bool = False, error_feedback: bool | str = False,
              collective: str = "allreduce", deterministic: bool = False) -> "CallOptions":
        """Checked options of a `collective`; each failure names the argument and what is
        accepted (the algorithms are the collective's)."""
        key = (op, algorithm, compression, fusion_bytes, type(fusion_bytes), check_finite,
               type(check_finite), error_feedback, type(error_feedback), collective,
               deterministic, type(deterministic))
        try:
            cached = _PARSED.get(key)
        except TypeError:  # an unhashable argument: checked (and refused) below
            cached = None
        if cached is not None:
            return cached
        parsed = cls._check(op, algorithm, compression, fusion_bytes, check_finite,
                            error_feedback, collective, deterministic)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[key] = parsed
        return parsed

    @classmethod
    def _check(cls, op, algorithm, compression, fusion_bytes, check_finite,
               error_feedback, collective, deterministic) -> "CallOptions":
        op = Op.parse(op)
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__}")
        check_algorithm(algorithm, collective)
        if compression is not None and not isinstance(compression, str):
            raise TypeError(f"compression must be None or a str, got {type(compression).__name__}")
        check_compression(compression)
        if (isinstance(fusion_bytes, bool) or not isinstance(fusion_bytes, (int, np.integer))
                or not 0 < fusion_bytes <= MAX_COUNT):  # (NumPy integers as root and counts
            raise ValueError(f"fusion_bytes must be a positive int (at most 2**63 - 1), "
                             f"got {fusion_bytes!r}")  # are; 2**63 failed in GradSync)
        if not isinstance(check_finite, (bool, np.bool_)):  # (NumPy's as root is accepted)
            raise TypeError(f"check_finite must be a bool, got {check_finite!r}")
        if error_feedback is None:
            error_feedback = False
        if not isinstance(error_feedback, (bool, str)):
            raise TypeError(f"error_feedback must be a bool or a str naming the residual, "
                            f"got {type(error_feedback).__name__}")
        if error_feedback is not False and compression is None:
            raise ValueError("error_feedback needs compression='fp16' or 'bf16'; "
                             "got compression=None")
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
        if deterministic and error_feedback is not False:
            raise ValueError("deterministic reductions (deterministic=True, the default "
                             "under COLLECTIVES_DETERMINISTIC=1) define the result by the "
                             "inputs alone; error_feedback carries state between calls: turn "
                             "one of them off")
        return cls(op, algorithm, compression, int(fusion_bytes), bool(check_finite),
                   error_feedback, bool(deterministic))


_PARSED: dict[tuple, CallOptions] = {}
_PARSED_LIMIT = 1024
