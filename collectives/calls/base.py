"""What every collective call is: a signature to agree on, then data to move.

`Call.agree(ctx, seq, deadline)` runs the agreement check (and, for small calls, moves the
data with it: the records carry it); `Call.move(ctx, seq, deadline, rows)` moves the data
and returns the result. A call whose arguments failed the local checks carries the error
instead: it is shared with the other ranks (they raise MismatchError) and raised here.

`Context` is what calls may use of their communicator: the transport, the agreement guard,
the flat reducer, the settings and the topology.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..agreement import Agreement, Signature
from ..config import Settings
from ..reduction import FlatReducer
from ..topology import Topology

__all__ = ["Call", "Context", "TAG_LIMIT", "issuer"]

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


@dataclass(slots=True)
class Call:
    """One collective as issued: its name and signature, and what to run (or the error)."""

    name: str
    signature: Signature
    agree: Callable[[Context, int, float], Any] | None = None
    move: Callable[[Context, int, float, Any], Any] | None = None
    error: Exception | None = None


def issuer(mode: str) -> tuple[str, str]:
    """How and where a call is issued: part of every signature, so ranks that pair calls
    issued differently (sync against async, another thread) are told apart."""
    return mode, threading.current_thread().name
