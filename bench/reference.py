"""The benchmarks' data and its closed-form reference: one place for every bench tool.

Every element gets one of :data:`CODES` values per rank, picked by a multiplicative hash
of its index (Knuth's 2654435761): never periodic in the sizes we sweep, so a segment sent
to the wrong offset is caught, yet a reduction's reference is a table of CODES entries.
The values are small integers (quarters of them for floats), so sums are exact for
integers, for float16 up to 256 ranks and for bfloat16 up to 32.

Example::

    codes = element_codes(1000)
    table = value_table(4, integer=False)
    x = inputs(table, rank=1, codes=codes, dtype=np.dtype(np.float32))
    check = Expected.reduction(table, "sum", eps=rounding_eps(x.dtype, None))
    check.wrong(y, codes)          # elements of y off the reference
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["CODES", "DTYPES", "DTYPE_ALIASES", "REDOPS", "WIRE_EPS", "Expected",
           "element_codes", "inputs", "poison", "reference", "rounding_eps", "value_table"]

DTYPES = {
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32), "int64": np.dtype(np.int64),
}
# nccl-tests' type names for the same dtypes.
DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64"}
REDOPS = ("sum", "avg", "max", "min")
# Machine epsilon of each compression's wire format.
WIRE_EPS = {"fp16": float(ml_dtypes.finfo(np.float16).eps),
            "bf16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps)}

CODES = 16
_HASH = np.uint32(2654435761)
_CHUNK = 1 << 20  # elements per step of the streamed codes and checks


def element_codes(count: int) -> np.ndarray:
    """Per-element codes in [0, 16): the top 4 bits of ``index * 2654435761 mod 2**32``."""
    codes = np.empty(count, np.uint8)
    for lo in range(0, count, _CHUNK):
        index = np.arange(lo, min(lo + _CHUNK, count), dtype=np.uint32)
        codes[lo:lo + index.size] = (index * _HASH) >> np.uint32(28)
    return codes


def value_table(nranks: int, *, integer: bool) -> np.ndarray:
    """``table[rank, code]``: the value each rank contributes for each code.

    Integers in [-8, 8] (quarters of them for floats): sums fit an int32 up to millions
    of ranks, and stay exact in float16 up to 256 ranks and in bfloat16 up to 32.
    """
    rank = np.arange(nranks)[:, None]
    code = np.arange(CODES)[None, :]
    values = (5 * code + 3 * rank + (code * rank) % 7) % 17 - 8
    return values if integer else values / 4


def inputs(table: np.ndarray, *, rank: int, codes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``rank``'s data for ``codes``: its row of the table, in ``dtype``."""
    return np.take(table[rank].astype(dtype), codes)


def poison(out: Any) -> None:
    """Fill an output buffer (NumPy or CuPy) with what no right result holds: NaN, or for
    integers the type's minimum (results are reductions of values in [-8, 8])."""
    out.fill(np.iinfo(out.dtype).min if out.dtype.kind in "iu" else np.nan)


def reference(table: np.ndarray, redop: str, *, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(expected, tolerance) per code for ``redop`` over the ranks of ``table``.

    Max and min are exact, and so is everything on integers (avg rounds down, as the
    library does). A float sum may round at each of its p-1 additions, by at most
    eps/2 of the partial sum, itself at most sum(|x|) — in any order the algorithm adds —
    and the result once more when it is stored (or divided, for avg).
    """
    nranks = table.shape[0]
    zero = np.zeros(CODES)
    if redop == "max":
        return table.max(axis=0), zero
    if redop == "min":
        return table.min(axis=0), zero
    total = table.sum(axis=0)
    divisor = nranks if redop == "avg" else 1
    if table.dtype.kind == "i":
        return total // divisor, zero
    expected = total / divisor
    tolerance = eps * ((nranks - 1) / 2 * np.abs(table).sum(axis=0) / divisor + np.abs(expected))
    return expected, tolerance


def rounding_eps(dtype: np.dtype, compression: str | None) -> float:
    """The eps a reduction in ``dtype`` may round by: the dtype's (0 for integers); with a
    16-bit wire format, twice the larger of it and the wire's (rounded at every hop, and
    once more at the end); ``"auto"`` may put fp16 on the wire."""
    eps = float(ml_dtypes.finfo(dtype).eps) if dtype.kind != "i" else 0.0
    wire = "fp16" if compression == "auto" else compression
    return eps if wire is None else 2 * max(eps, WIRE_EPS[wire])


@dataclass(frozen=True)
class Expected:
    """The right answer per code, and how far an element may be off it."""

    values: np.ndarray
    tolerance: np.ndarray

    @classmethod
    def reduction(cls, table: np.ndarray, redop: str, *, eps: float) -> "Expected":
        """The reduction of every rank's row of ``table`` (see :func:`reference`)."""
        return cls(*reference(table, redop, eps=eps))

    @classmethod
    def row(cls, table: np.ndarray, rank: int) -> "Expected":
        """``rank``'s own data, exactly (what a gather, broadcast or all-to-all delivers)."""
        return cls(table[rank], np.zeros(CODES))

    def wrong(self, got: np.ndarray, codes: np.ndarray) -> int:
        """Elements of ``got`` (1-D, one per code) off by more than the tolerance (NaN and
        inf included); the difference is taken in float64, where no integer wraps."""
        bad = 0
        for lo in range(0, codes.size, _CHUNK):
            part = codes[lo:lo + _CHUNK]
            error = np.abs(got[lo:lo + _CHUNK].astype(np.float64) - self.values[part])
            bad += int(np.count_nonzero(~(error <= self.tolerance[part])))
        return bad
