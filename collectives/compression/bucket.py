"""A compressed all-reduce of one fusion bucket, in the order docs/compression.md gives.

1. (error feedback) add the residual of the previous call;
2. agree on the scale (one all-reduce of one float) and scale the accumulator, by s / p
   for avg: the division happens before the cast; (error feedback) in the same pass, round
   this rank's contribution and keep what the rounding loses;
4. run the flat all-reduce with the 16-bit codec;
5. round every final value to 16 bits once more (a rank that kept an fp32 sum a peer only
   received rounded then holds the peer's bits), then unscale and cast into `dest` in one
   pass (s is a power of two: exact).
"""
from __future__ import annotations

from typing import Callable

import kernels

from ..options import Op
from .codec import HalfCodec
from .scaling import absmax, scale_for, unscale_into

__all__ = ["reduce_compressed"]


def reduce_compressed(work, dest, *, codec: HalfCodec, op: Op, size: int,
                      reduce: Callable[[object], None], agree_max: Callable[[float], float],
                      residual=None, region: tuple[int, int] | None = None) -> None:
    """All-reduce the accumulator `work` over a 16-bit wire; the result lands in `dest`.

    `reduce(work)` runs the flat collective in place with the codec (an all-reduce, or a
    reduce-scatter, reduce or all-gather whose result is work[region]); `agree_max(v)` is the
    max of v over ranks; `residual` (error feedback) is updated in place. `dest` (region's
    length) may be work itself. Every step is one pass of a fused kernel.
    """
    if residual is not None:
        kernels.reduce_into(work, residual, "sum")
    scale = scale_for(codec, agree_max(absmax(work)), size, op, work.dtype)
    factor = scale / size if op is Op.AVG else scale
    if residual is None:
        kernels.scale_into(work, work, factor)
    else:  # residual = (work - round16(work)) / factor, work rounded, in one pass
        kernels.quantize_residual_into(work, residual, codec.dtype, factor)
    reduce(work)
    lo, hi = (0, work.size) if region is None else region
    unscale_into(dest, work[lo:hi], scale, codec.dtype)
