"""A rank that fails outside a collective ends the job instead of leaving the others waiting.

An exception that escapes the program would otherwise run the exit handlers (MPI_Finalize,
freeing shared windows), which wait for the other ranks while they wait, inside their next
collective, for this one. `abort_on_uncaught` makes such an exception print its traceback
and then call MPI_Abort, as `python -m mpi4py` does; the launcher then ends every rank.

Example::

    abort_on_uncaught(transport)      # done by collectives.init() on more than one rank
"""
from __future__ import annotations

import sys

__all__ = ["abort_on_uncaught", "ABORT_CODE"]

ABORT_CODE = 1


def abort_on_uncaught(transport) -> None:
    """Chain a `sys.excepthook` that aborts every rank (`transport.abort`) after reporting."""
    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        try:
            previous(kind, value, traceback)
            print(f"collectives: rank {transport.rank} ends the job (MPI_Abort) on the "
                  "uncaught exception above", file=sys.stderr)
            sys.stderr.flush()
        finally:
            transport.abort(ABORT_CODE)

    sys.excepthook = hook
