"""allgather: every rank's x, stacked in rank order: shape (size, *x.shape).

Plans run on the result buffer itself: they send this rank's x where it lies and copy it
into its row while the first messages are in flight; the native path is MPI_Allgather.
With fp16/bf16 compression the rows travel as 16-bit values under one agreed power-of-two
scale (the FSDP parameter gather): the result holds those values, identical on every rank.

Example::

    rows = comm.allgather(shard)            # rows[r] is rank r's shard
"""
from __future__ import annotations

import numpy as np

import kernels

from ..compression import codec_for, work_dtype
from ..compression.bucket import reduce_compressed
from ..execution import Placed
from ..options import Op
from ..validation import check_out
from .base import Context
from .collective import Collective, collective_options, issue
from .riding import payloads

__all__ = ["allgather_call"]


def allgather_call(size: int, x, out, *, algorithm, compression, issued: tuple):
    def build():
        options = collective_options("allgather", algorithm=algorithm, compression=compression)
        return Allgather(x, out, options, None, issued, size)

    return issue("allgather", issued, build)


class Allgather(Collective):
    collective = "allgather"
    __slots__ = ("size",)

    def __init__(self, x, out, options, root, issued, size: int):
        self.size = size
        super().__init__(x, out, options, root, issued)
        codec_for(options.compression, x.dtype)

    def check_shapes(self) -> None:
        if self.out is not None:
            like = kernels.array_module(self.x).empty((self.size, *self.x.shape), self.x.dtype)
            check_out(self.out, like)

    def plan_count(self, size: int) -> int:
        return size * self.x.size

    def _result(self):
        x = self.x
        return (kernels.array_module(x).empty((self.size, *x.shape), x.dtype)
                if self.out is None else self.out)

    def from_rows(self, ctx: Context, rows):
        result = self.result()
        # (result may be a strided out, which reshape would copy)
        kernels.unpack(np.concatenate(payloads(rows, ctx.size, self.x.dtype)), [result])
        return result

    def native(self, ctx: Context, tag: int, deadline: float):
        return self.native_whole(
            ctx, lambda src, dst: ctx.reducer.host.native_allgather(src, dst, deadline))

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        x, result = self.x, self.result()
        codec = codec_for(self.options.compression, x.dtype)
        rank, m = ctx.rank, x.size
        if codec is None:
            direct = result.flags.c_contiguous  # receives into out may be cancelled: fine
            work = result.reshape(-1) if direct else \
                ctx.reducer.buffer("collective", x, x.dtype, ctx.size * m)
            # The plan sends x where it lies and copies it in flight, unless x lies in the
            # result, which receives overwrite (a view of another row: read it first).
            xp = kernels.array_module(x)
            if x.flags.c_contiguous and not xp.may_share_memory(x, result):
                src = Placed(x.reshape(-1), rank * m)
            else:
                src = None
                kernels.pack([x], work[rank * m: (rank + 1) * m])
            self.run_plan(ctx, algorithm, work, tag, deadline, src=src)
            if not direct:
                kernels.unpack(work, [result])
            return result
        work = ctx.reducer.buffer("collective", x, work_dtype(x.dtype), ctx.size * m)
        work[:] = 0  # the rows still to come count as zeros in the scale's max
        kernels.pack([x], work[rank * m: (rank + 1) * m])
        dest = ctx.reducer.buffer("gathered", x, x.dtype, ctx.size * m)
        reduce_compressed(
            work, dest, codec=codec, op=Op.MAX, size=ctx.size,
            reduce=lambda w: self.run_plan(ctx, algorithm, w, tag, deadline, codec=codec),
            agree_max=lambda v: ctx.reducer.agree_max(v, deadline))
        kernels.unpack(dest, [result])
        return result
