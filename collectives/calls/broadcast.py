"""broadcast: root's x on every rank.

On the other ranks x only gives the shape and dtype (it is not written unless `out is x`).
Plans run on the result buffer, root's x copied in first; the native path is MPI_Bcast.

Example::

    params = comm.broadcast(params, root=0)
"""
from __future__ import annotations

import kernels

from ..validation import check_out
from .base import Context
from .collective import Collective, check_root, collective_options, issue
from .riding import payloads

__all__ = ["broadcast_call"]


def broadcast_call(size: int, rank: int, x, out, *, root, algorithm, issued: tuple):
    def build():
        options = collective_options("broadcast", algorithm=algorithm)
        return Broadcast(x, out, options, check_root(root, size), issued, rank)

    return issue("broadcast", issued, build)


class Broadcast(Collective):
    collective = "broadcast"
    __slots__ = ("rank",)

    def __init__(self, x, out, options, root, issued, rank: int):
        self.rank = rank
        super().__init__(x, out, options, root, issued)

    def check_shapes(self) -> None:
        if self.out is not None:
            check_out(self.out, self.x)

    def riding_payload(self, ctx: Context):
        payload = super().riding_payload(ctx)
        return payload if ctx.rank == self.root else payload[:0]  # only root's data rides

    def riding_traffic(self, ctx: Context) -> tuple[int, int]:
        if ctx.rank == self.root:
            return (ctx.size - 1) * self.x.nbytes, 0
        return 0, self.x.nbytes

    def _result(self):
        return kernels.array_module(self.x).empty_like(self.x) if self.out is None else self.out

    def from_rows(self, ctx: Context, rows):
        result = self.result()
        if not (ctx.rank == self.root and result is self.x):
            kernels.unpack(payloads(rows, ctx.size, self.x.dtype)[self.root], [result])
        return result

    def _work(self, ctx: Context, result):
        """(flat buffer the broadcast runs on, whether to copy it into result after), root's
        data already in it: result itself where it is contiguous."""
        if result.flags.c_contiguous:
            work, copy = result.reshape(-1), False
        else:
            work, copy = ctx.reducer.buffer("collective", self.x, self.x.dtype, self.x.size), True
        if self.rank == self.root and (copy or result is not self.x):  # (x in a buffer too)
            kernels.pack([self.x], work)
        return work, copy

    def native(self, ctx: Context, tag: int, deadline: float):
        result = self.result()
        if self.out is not None and self.rank != self.root:
            work, copy = ctx.reducer.buffer("native", self.x, self.x.dtype, self.x.size), True
        else:
            work, copy = self._work(ctx, result)
        written = self.host(work) if self.rank == self.root else self.host_out(work)
        ctx.reducer.host.native_broadcast(written, self.root, deadline)
        self.back(work, written)
        if copy:
            kernels.unpack(work, [result])
        return result

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        result = self.result()
        work, copy = self._work(ctx, result)
        self.run_plan(ctx, algorithm, work, tag, deadline)
        if copy:
            kernels.unpack(work, [result])
        return result
