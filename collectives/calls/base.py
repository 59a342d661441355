"""What every collective call is: a signature to agree on, then data to move.

A `Call` is built by its collective's module from the method's arguments (checked there).
`agree(ctx, seq, deadline)` runs the agreement check (for small calls it moves the data
too: the records carry it) and returns the records' rows or None; `move(ctx, seq,
deadline, rows)` moves the data and returns the result. A call whose arguments failed
the local checks is a `Refused` call: its error is shared with the other ranks (they raise
MismatchError) and raised here.

`Context` is what calls may use of their communicator: the transport, the agreement guard,
the flat reducer, the settings and the topology.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..agreement import Agreement, Signature
from ..config import Settings
from ..reduction import FlatReducer
from ..topology import Topology

__all__ = ["Call", "Refused", "Context", "TAG_LIMIT", "execute", "issuer"]

TAG_LIMIT = 32768  # MPI guarantees tags up to 32767


@dataclass(frozen=True, slots=True)
class Context:
    transport: Any
    agreement: Agreement
    reducer: FlatReducer
    settings: Settings
    topology: Topology

    @property
    def rank(self) -> int:
        return self.transport.rank

    @property
    def size(self) -> int:
        return self.transport.size


class Call:
    """One collective as issued: its name and signature; subclasses agree and move."""

    __slots__ = ("name", "signature")
    error: Exception | None = None

    def __init__(self, name: str, signature: Signature):
        self.name = name
        self.signature = signature

    def prepare(self, ctx: Context) -> None:
        """Allocate what the call returns, before anything is agreed: an error then (a
        MemoryError) refuses the call (MismatchError on the others), the communicator
        usable. Scratch buffers grow in `move`, where a MemoryError ends the communicator
        (docs/failure-model.md, known gaps)."""

    def agree(self, ctx: Context, seq: int, deadline: float):
        raise NotImplementedError

    def move(self, ctx: Context, seq: int, deadline: float, rows):
        raise NotImplementedError


class Refused(Call):
    """A call whose arguments failed the local checks."""

    __slots__ = ("error",)

    def __init__(self, name: str, issued: tuple, error: Exception):
        super().__init__(name, Signature.of(name, ("refused", issued),
                                            lambda: {"issued": issued[0]}))
        self.error = error


def execute(ctx: Context, call: Call):
    """Run one call: agree, move data, make sure no peer gave up meanwhile; an error ends
    the collective (collectives.agreement)."""
    agreement = ctx.agreement
    moving = False
    seq = agreement.enter(call.name)
    try:  # (right after enter: an interrupt between the two would leave this rank ahead)
        deadline = time.monotonic() + ctx.settings.timeout
        refusal = call.error
        if refusal is None:
            try:
                call.prepare(ctx)
            except Exception as error:  # noqa: BLE001 - MemoryError, NumPy's "array is too
                refusal = error  # big": the rank cannot take part; the others are told
        if refusal is not None:
            agreement.share_failure(call.signature, seq, deadline, refusal)
            raise refusal
        rows = call.agree(ctx, seq, deadline)
        if rows is not None:  # a peer's record still arrives after the peer gave up
            ctx.transport.check_peers()
        moving = True
        result = call.move(ctx, seq, deadline, rows)
        ctx.transport.check_peers()
        return result
    except BaseException as error:
        agreement.raise_failed(call.signature, seq, error, moving)


def issuer(mode: str) -> tuple[str, str]:
    """How and where a call is issued: part of every signature, so ranks that pair calls
    issued differently (sync against async, another thread) are told apart."""
    return mode, threading.current_thread().name
