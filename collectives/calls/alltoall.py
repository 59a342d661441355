"""alltoall: x has shape (size, ...); row r of the result is rank r's row `rank`.

The pairwise plan sends rows straight from x and receives into the result; the native path
is MPI_Alltoall.

Example::

    routed = comm.alltoall(tokens_by_expert)      # mixture of experts
"""
from __future__ import annotations

import kernels

from ..validation import check_out
from .base import Context
from .collective import Collective, collective_options, issue
from .riding import payloads

__all__ = ["alltoall_call"]


def alltoall_call(size: int, rank: int, x, out, *, algorithm, issued: tuple):
    def build():
        options = collective_options("alltoall", algorithm=algorithm)
        return Alltoall(x, out, options, None, issued, size, rank)

    return issue("alltoall", issued, build)


class Alltoall(Collective):
    collective = "alltoall"
    __slots__ = ("size", "rank")

    def __init__(self, x, out, options, root, issued, size: int, rank: int):
        self.size, self.rank = size, rank
        super().__init__(x, out, options, root, issued)

    def check_shapes(self) -> None:
        x = self.x
        if x.ndim == 0 or x.shape[0] != self.size:
            raise ValueError(f"alltoall needs x of shape (size, ...) = ({self.size}, ...), "
                             f"one row per rank; got shape {x.shape}")
        if self.out is not None:
            check_out(self.out, x)

    def _result(self):
        return kernels.array_module(self.x).empty_like(self.x) if self.out is None else self.out

    def from_rows(self, ctx: Context, rows):
        result = self.result()
        rows_out = [payload.reshape(self.size, -1)[ctx.rank]
                    for payload in payloads(rows, ctx.size, self.x.dtype)]
        flat = kernels.array_module(self.x).concatenate(rows_out)
        kernels.unpack(flat, [result])
        return result

    def native(self, ctx: Context, tag: int, deadline: float):
        return self.native_whole(
            ctx, lambda src, dst: ctx.reducer.host.native_alltoall(src, dst, deadline))

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        x, result = self.x, self.result()
        src = kernels.array_module(x).ascontiguousarray(x).reshape(-1)  # rows are sent from x
        direct = result.flags.c_contiguous and result is not x  # in place: receive apart
        work = result.reshape(-1) if direct else \
            ctx.reducer.buffer("collective", x, x.dtype, x.size)
        self.run_plan(ctx, algorithm, work, tag, deadline, src=src)
        if not direct:
            kernels.unpack(work, [result])
        return result
