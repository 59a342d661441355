"""fp16 / bf16 wire compression: the executor codec, overflow-safe scaling, error feedback.

A compressed all-reduce (driven by `collectives.fusion`) runs in four steps:

1. The inputs are packed into an accumulator: float32 (float64 for float64 inputs).
2. Every rank agrees on a power-of-two scale `s` (`agree_scale`: one extra all-reduce of a
   single float, the max of max|x| over ranks), chosen so that no partial sum can leave the
   16-bit range: `s * bound <= max16 / 2`, where bound is p * max|x| for sum and max|x| for
   avg, max and min. The accumulator is multiplied by `s`, or by `s / p` for avg: the
   division happens before the cast, as in PyTorch's fp16 hook.
3. The plan runs with `HalfCodec`: each send is rounded to 16 bits into a staging buffer and
   the sender keeps the rounded value (quantize on send); each receive is widened and
   accumulated in the float32 accumulator. Because a value that left a rank equals the
   sender's own copy, final values spread by copy (ring all-gather) and values reduced
   symmetrically (recursive doubling: q(a) + q(b) on both sides) are bit-identical on every
   rank.
4. The accumulator is multiplied by 1/s (exact: a power of two) and cast to the input dtype.

Example::

    y = comm.allreduce(grad, op="avg", compression="bf16")
"""
from __future__ import annotations

import math
from typing import Any, Hashable

import ml_dtypes
import numpy as np

import kernels

from .errors import unknown_choice
from .options import COMPRESSIONS, Op

__all__ = ["HalfCodec", "ErrorFeedback", "codec_for", "work_dtype", "scale_for", "absmax",
           "scale_into", "quantize"]

# Scales stay inside float32's normal range, so x * s and its inverse are exact.
_MIN_EXP, _MAX_EXP = -126, 100


class HalfCodec:
    """The 16-bit wire: float16 or bfloat16 payloads, float32 (or float64) accumulation.

    Example::

        codec = HalfCodec("bf16")
        run_plan(plan, work32, scratch16, transport, "sum", tag, deadline, codec, staging16)
    """

    staged = True  # every send is encoded into staging, every receive lands in scratch

    def __init__(self, name: str):
        if name not in ("fp16", "bf16"):
            raise unknown_choice("compression", name, ["fp16", "bf16"])
        self.name = name
        self.dtype = np.dtype(np.float16 if name == "fp16" else ml_dtypes.bfloat16)
        # fp16: scale small values up, away from its subnormals; bf16 has float32's exponent
        # range, so it is only ever scaled down.
        self.max_exp = _MAX_EXP if name == "fp16" else 0
        self.max_value = float(ml_dtypes.finfo(self.dtype).max)

    def wire_dtype(self, work_dtype) -> np.dtype:
        return self.dtype

    def encode(self, region, staging):
        """Round `region` to 16 bits into `staging`; `region` keeps the rounded value."""
        kernels.compress_into(staging, region, 1.0)
        kernels.decompress_into(region, staging)
        return staging

    def decode_reduce(self, region, payload, op: str) -> None:
        kernels.decompress_reduce_into(region, payload, op)

    def decode_copy(self, region, payload) -> None:
        kernels.decompress_into(region, payload)

    def __repr__(self) -> str:
        return f"HalfCodec({self.name!r})"


_CODECS = {name: HalfCodec(name) for name in COMPRESSIONS if name is not None}


def codec_for(compression: str | None, dtype: np.dtype) -> HalfCodec | None:
    """The codec for `compression` on arrays of `dtype`; None for no compression.

    Raises ValueError for an unknown name, TypeError for integer arrays.
    """
    if compression is None:
        return None
    codec = _CODECS.get(compression)
    if codec is None:
        raise unknown_choice("compression", compression, COMPRESSIONS)
    if np.dtype(dtype).kind not in "f" and np.dtype(dtype) not in kernels.HALF_DTYPES:
        raise TypeError(
            f"compression {compression!r} needs floating-point arrays, got {np.dtype(dtype)}; "
            "integers are summed exactly: pass compression=None for them"
        )
    return codec


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The accumulator dtype of a compressed all-reduce of `dtype`: float64 or float32."""
    return np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)


def absmax(work) -> float:
    """max|work| as a Python float; inf when work holds NaN (so every rank agrees on it)."""
    if work.size == 0:
        return 0.0
    hi, lo = float(work.max()), float(work.min())
    if math.isnan(hi) or math.isnan(lo):
        return math.inf
    return max(hi, -lo, 0.0)


def scale_for(codec: HalfCodec, agreed_absmax: float, size: int, op: Op) -> float:
    """The power of two s with s * bound <= max16 / 2 (1.0 for zero or non-finite data).

    bound is size * max|x| for sum (the largest partial sum), max|x| otherwise (avg divides
    by size before the cast). Example: fp16, sum over 4 ranks of data up to 60000 gives
    s = 2**-3, since 4 * 60000 / 8 = 30000 <= 32752.
    """
    bound = agreed_absmax * (size if op is Op.SUM else 1)
    if bound == 0.0 or not math.isfinite(bound):
        return 1.0
    exponent = math.frexp(codec.max_value / 2 / bound)[1] - 1  # floor(log2(limit / bound))
    return math.ldexp(1.0, min(max(exponent, _MIN_EXP), codec.max_exp))


def scale_into(dst, src, factor: float) -> None:
    """dst = src * factor, computed in src's accumulator dtype and rounded once to dst's."""
    xp = kernels.array_module(dst)
    with np.errstate(all="ignore"):
        xp.multiply(src, factor, out=dst, dtype=kernels.compute_dtype(src.dtype),
                    casting="unsafe")


def quantize(work, wire) -> None:
    """Round `work` to the 16-bit values `wire` (a scratch of the wire dtype) can hold."""
    kernels.compress_into(wire, work, 1.0)
    kernels.decompress_into(work, wire)


class ErrorFeedback:
    """Compression residuals kept between calls, one per key and fusion bucket.

    A call with error feedback adds the residual of its previous call to its input,
    rounds its own contribution to the wire format, and keeps what that rounding lost for
    the next call, so over many steps the rounding of each rank's contribution cancels
    out. (Roundings of partial sums at later hops are not fed back.)
    """

    def __init__(self) -> None:
        self._residuals: dict[Hashable, Any] = {}

    def residual(self, key: Hashable, like, count: int):
        """The residual for `key` (zeros the first time), an accumulator of `count` elements."""
        buf = self._residuals.get(key)
        if buf is None or buf.size != count or buf.dtype != like.dtype:
            xp = kernels.array_module(like)
            buf = self._residuals[key] = xp.zeros(count, like.dtype)
        return buf

    def clear(self) -> None:
        self._residuals.clear()

    def __len__(self) -> int:
        return len(self._residuals)
