"""reduce: the reduction of every rank's x, on root; None on the other ranks.

Plans run on root's result (on other ranks on a buffer of the library's), the input read
where it lies; the native path is MPI_Reduce. fp16/bf16 compression as for all-reduce; an
integer avg is summed exactly.

Example::

    total = comm.reduce(metrics, root=0, op="sum")   # None off rank 0
"""
from __future__ import annotations

import kernels

from ..compression import codec_for, work_dtype
from ..compression.bucket import reduce_compressed
from ..validation import check_out
from .base import Context
from .collective import Collective, check_root, collective_options, issue
from ..reproducible import reproducibly
from .riding import reduce_rows

__all__ = ["reduce_call"]


def reduce_call(size: int, rank: int, x, out, *, root, op, algorithm, compression,
                deterministic: bool, issued: tuple):
    def build():
        options = collective_options("reduce", op=op, algorithm=algorithm,
                                     compression=compression, deterministic=deterministic)
        return Reduce(x, out, options, check_root(root, size), issued, rank)

    return issue("reduce", issued, build)


class Reduce(Collective):
    collective = "reduce"
    reduces = True
    __slots__ = ("rank",)

    def __init__(self, x, out, options, root, issued, rank: int):
        self.rank = rank
        super().__init__(x, out, options, root, issued)
        codec_for(options.compression, x.dtype)

    def check_shapes(self) -> None:
        if self.out is not None:
            check_out(self.out, self.x)

    def _result(self):
        if self.rank != self.root:
            return None
        return kernels.array_module(self.x).empty_like(self.x) if self.out is None else self.out

    def from_rows(self, ctx: Context, rows):
        result = self.result()
        if result is not None:
            flat = kernels.array_module(self.x).empty(self.x.size, self.x.dtype)
            reduce_rows(rows, ctx.size, self.x.dtype, self.options.op, flat)
            kernels.unpack(flat, [result])
        return result

    def native(self, ctx: Context, tag: int, deadline: float):
        if self.exact_mean():
            return self._on_root(self.exact_mean_of_all(ctx, tag, deadline))
        result = self.result()
        dest, copy = (None, False) if result is None else self.landing(ctx, result)
        written = None if dest is None else self.host_out(dest)
        ctx.reducer.host.native_reduce(self.native_input(ctx), written,
                                       self.options.op.elementwise, self.root, deadline)
        if dest is not None:
            self.back(dest, written)
            self.finish_avg(ctx, dest)
            if copy:
                kernels.unpack(dest, [result])
        return result

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        if self.exact_mean():
            return self._on_root(self.exact_mean_of_all(ctx, tag, deadline))
        x, result = self.x, self.result()
        codec = codec_for(self.options.compression, x.dtype)
        op = self.options.op.elementwise
        if codec is None:
            # Root's plan runs on its result (receives into out may be cancelled: fine).
            direct = result is not None and result.flags.c_contiguous
            work = result.reshape(-1) if direct else \
                ctx.reducer.buffer("collective", x, x.dtype, x.size)
            in_place = direct and self.out is x  # work is x itself
            src = x.reshape(-1) if x.flags.c_contiguous and not in_place else None
            if src is None and not in_place:
                kernels.pack([x], work)
            src = self.scaled_input(ctx, work, src)
            self.run_plan(ctx, algorithm, work, tag, deadline, op=op, src=src)
            if result is not None:
                self.finish_avg(ctx, work)
                if not direct:
                    kernels.unpack(work, [result])
            return result
        work = ctx.reducer.buffer("collective", x, work_dtype(x.dtype), x.size)
        kernels.pack([x], work)
        dest = ctx.reducer.buffer("reduced", x, x.dtype, x.size)
        reduce_compressed(
            work, dest, codec=codec, op=self.options.op, size=ctx.size,
            reduce=lambda w: self.run_plan(ctx, algorithm, w, tag, deadline, op=op, codec=codec),
            agree_max=lambda v: ctx.reducer.agree_max(v, deadline))
        if result is not None:
            kernels.unpack(dest, [result])
        return result

    def _on_root(self, whole):
        result = self.result()
        if result is not None:
            kernels.unpack(whole, [result])
        return result

    def reproducible(self, ctx: Context, tag: int, deadline: float):
        algorithm = self.options.algorithm  # the all-gather's: reduce's own "tree" has none
        whole = reproducibly(ctx.reducer, self.x.ravel(), self.options.op,
                             self.options.compression,
                             "auto" if algorithm == "tree" else algorithm, tag, deadline,
                             keep="all" if self.rank == self.root else "none")
        return self._on_root(whole) if whole is not None else None
