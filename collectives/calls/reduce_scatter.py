"""reduce_scatter: this rank's block of the reduced, flattened input.

The block is `np.array_split(reduced.ravel(), size)[rank]` (larger blocks first). Plans
leave rank r's block of the work buffer reduced (collectives.algorithms conventions), here
written straight into the result by the block's last reduces (`execution.Placed`); the
native path is MPI_Reduce_scatter with those block counts. fp16/bf16 compression works as
for all-reduce (an agreed power-of-two scale, 16-bit wire, float32 accumulation); an
integer avg is summed exactly (as all-reduce does) and its block kept.

Example::

    block = comm.reduce_scatter(grad, op="avg")     # FSDP's gradient shard
"""
from __future__ import annotations

import numpy as np

import kernels

from ..algorithms.plan import split_bounds
from ..compression import codec_for, work_dtype
from ..compression.bucket import reduce_compressed
from ..execution import Placed
from ..validation import check_out
from .base import Context
from .collective import Collective, collective_options, issue
from ..reproducible import reproducibly
from .riding import reduce_rows

__all__ = ["reduce_scatter_call"]


def reduce_scatter_call(size: int, rank: int, x, out, *, op, algorithm, compression,
                        deterministic: bool, issued: tuple):
    def build():
        options = collective_options("reduce_scatter", op=op, algorithm=algorithm,
                                     compression=compression, deterministic=deterministic)
        return ReduceScatter(x, out, options, None, issued, size, rank)

    return issue("reduce_scatter", issued, build)


class ReduceScatter(Collective):
    collective = "reduce_scatter"
    reduces = True
    __slots__ = ("block",)

    def __init__(self, x, out, options, root, issued, size: int, rank: int):
        codec_for(options.compression, getattr(x, "dtype", np.float32))
        self.block = split_bounds(0, getattr(x, "size", 0), size)[rank]
        super().__init__(x, out, options, root, issued)

    def check_shapes(self) -> None:
        if self.out is not None:
            lo, hi = self.block
            check_out(self.out, kernels.array_module(self.x).empty(hi - lo, self.x.dtype))

    def _result(self):
        lo, hi = self.block
        return (kernels.array_module(self.x).empty(hi - lo, self.x.dtype) if self.out is None
                else self.out)

    def from_rows(self, ctx: Context, rows):
        result = self.result()
        reduce_rows(rows, ctx.size, self.x.dtype, self.options.op, result, self.block[0])
        return result

    def native(self, ctx: Context, tag: int, deadline: float):
        if self.exact_mean():
            return self._block(self.exact_mean_of_all(ctx, tag, deadline))
        x, result = self.native_input(ctx), self.result()
        dest, copy = self.landing(ctx, result)
        counts = [hi - lo for lo, hi in split_bounds(0, x.size, ctx.size)]
        written = self.host_out(dest)
        ctx.reducer.host.native_reduce_scatter(x, written, counts, self.options.op.elementwise,
                                               deadline)
        self.back(dest, written)
        if copy:
            kernels.unpack(dest, [result])
        self.finish_avg(ctx, result)
        return result

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        if self.exact_mean():
            return self._block(self.exact_mean_of_all(ctx, tag, deadline))
        x, result, (lo, hi) = self.x, self.result(), self.block
        codec = codec_for(self.options.compression, x.dtype)
        op = self.options.op.elementwise
        if codec is None:
            work = ctx.reducer.buffer("collective", x, x.dtype, x.size)
            src = x.reshape(-1) if x.flags.c_contiguous else None
            if src is None:
                kernels.pack([x], work)
            src = self.scaled_input(ctx, work, src)
            # The block's last reduces land in the result (receives into out may be
            # cancelled: fine); from 2 ranks on every element of it is received. Not where
            # the result lies in x (NCCL's in-place idiom): x is read until the plan ends.
            direct = (ctx.size > 1 and result.flags.c_contiguous
                      and not kernels.array_module(x).may_share_memory(result, x))
            self.run_plan(ctx, algorithm, work, tag, deadline, op=op, src=src,
                          out=Placed(result.reshape(-1), lo) if direct else None)
            if not direct:
                kernels.copy_into(result, work[lo:hi])
            self.finish_avg(ctx, result)
            return result
        work = ctx.reducer.buffer("collective", x, work_dtype(x.dtype), x.size)
        kernels.pack([x], work)
        reduce_compressed(
            work, result, codec=codec, op=self.options.op, size=ctx.size,
            reduce=lambda w: self.run_plan(ctx, algorithm, w, tag, deadline, op=op, codec=codec),
            agree_max=lambda v: ctx.reducer.agree_max(v, deadline), region=(lo, hi))
        return result

    def _block(self, whole):
        result = self.result()
        lo, hi = self.block
        kernels.copy_into(result, whole[lo:hi])
        return result

    def reproducible(self, ctx: Context, tag: int, deadline: float):
        result = self.result()
        block = reproducibly(ctx.reducer, self.x.ravel(), self.options.op,
                             self.options.compression, self.options.algorithm, tag, deadline,
                             keep="block")
        kernels.copy_into(result, block)
        return result
