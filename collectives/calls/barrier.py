"""barrier: every rank waits until every rank has arrived.

With the agreement check on, the records' exchange is itself the barrier (every rank hears
from every other); with it off, MPI_Ibarrier, bounded by the timeout.

Example::

    comm.barrier()
"""
from __future__ import annotations

from ..agreement import Signature
from .base import Call, Context

__all__ = ["Barrier"]


class Barrier(Call):
    __slots__ = ()

    def __init__(self, issued: tuple):
        super().__init__("barrier", Signature.of(
            "barrier", issued, lambda: {"issued": issued[0], "thread": issued[1]}))

    def agree(self, ctx: Context, seq: int, deadline: float):
        return ctx.agreement.agree(self.signature, seq, deadline) if ctx.agreement.check else None

    def move(self, ctx: Context, seq: int, deadline: float, rows):
        if rows is None:
            ctx.transport.barrier(deadline)
        return None
