"""Ending the job: MPI_Abort, bounded by a watchdog, and the hooks for uncaught exceptions.

An exception that escapes the program would otherwise run the exit handlers (MPI_Finalize,
freeing shared windows), which wait for the other ranks while they wait, inside their next
collective, for this one. `abort_on_uncaught` makes such an exception print its traceback
and then end the job, as `python -m mpi4py` does; the launcher then ends every rank. So
does one that ends a thread which issued collectives on a communicator still open: its
peers would wait, inside the collective it no longer issues, until they time out. A forked
child's exceptions end only the child (it is not a rank).

MPI_Abort itself may never return nor end the process: when the launcher cannot be reached
(a node whose link is down) MPICH spins inside it, in C, holding the GIL. So `end_job` first
arms a watchdog the kernel carries out without Python: an interval timer whose SIGALRM, at
its default action, terminates the process `COLLECTIVES_ABORT_GRACE` seconds (default 5)
later unless MPI_Abort has ended it by then.

Example::

    abort_on_uncaught(transport)      # done by collectives.init() on more than one rank
    end_job(transport, 3)             # what comm.abort(3) does
"""
from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

from .progress import issued_collectives

__all__ = ["ABORT_CODE", "FORWARD_PAUSE_S", "abort_on_uncaught", "end_job"]

ABORT_CODE = 1
# Before MPI_Abort after printing: the launcher kills every rank at once and drops the output
# it has not forwarded yet, which lost a failing rank's last lines (seen under CI).
FORWARD_PAUSE_S = 0.5


def end_job(transport, errorcode: int, *, grace: float) -> None:
    """MPI_Abort (`transport.abort`), with this process ended `grace` seconds later regardless.

    The watchdog is SIGALRM at its default action (terminate), armed with an interval timer:
    the kernel ends the process even while MPI_Abort spins in C. From a thread other than
    the main one, a SIGALRM handler that the program installed cannot be reset, and then
    only MPI_Abort is called.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL:
        signal.setitimer(signal.ITIMER_REAL, grace)
    transport.abort(errorcode)


# What the hooks end the job through: the newest communicator's transport, its grace, and
# the process that is the rank; and the hooks, while they are sys's and threading's.
_ending: tuple | None = None
_installed = None
_installed_for_threads = None


def abort_on_uncaught(transport, *, grace: float) -> None:
    """Make an uncaught exception end every rank (`end_job` through `transport`, `grace`
    seconds) after reporting. One `sys.excepthook` of ours, chained in front of whatever
    is there unless it is ours already; later calls (more communicators) make it end the
    job through their transport. A hook per call stacked up over init/close cycles: after
    about 1,000, the report of the exception was lost, and each hook kept its closed
    transport (the twenty-third review). A hook the program set since is chained in turn."""
    global _ending, _installed, _installed_for_threads
    _ending = (transport, grace, os.getpid())
    if sys.excepthook is not _installed:
        sys.excepthook = _installed = _hook(sys.excepthook)
    if threading.excepthook is not _installed_for_threads:
        threading.excepthook = _installed_for_threads = _thread_hook(threading.excepthook)


def _hook(previous):
    def hook(kind, value, traceback) -> None:
        if _ending[2] != os.getpid():  # a forked child
            previous(kind, value, traceback)
            return
        _end_after(lambda: previous(kind, value, traceback), "")

    return hook


def _thread_hook(previous):
    def hook(args) -> None:
        if (args.exc_type is SystemExit or args.thread is None
                or not issued_collectives(args.thread) or _ending[2] != os.getpid()):
            previous(args)
            return
        _end_after(lambda: previous(args), f" in thread {args.thread.name!r}, which issued "
                   "collectives on a communicator still open")

    return hook


def _end_after(report, where: str) -> None:
    """`report()` an uncaught exception, say that this rank ends the job, and end it."""
    transport, grace, _ = _ending
    try:
        report()
        stream = _unbuffered_stderr()
        print(f"collectives: rank {transport.rank} ends the job (MPI_Abort) on the "
              f"uncaught exception above{where}", file=stream)
        stream.flush()
        time.sleep(FORWARD_PAUSE_S)
    finally:
        end_job(transport, ABORT_CODE, grace=grace)


def _unbuffered_stderr():
    """sys.stderr; or, where a hook in front of ours buffers it in memory to print once ours
    returns (torch.distributed's does, and ours never returns), the process's own stderr,
    with the buffered report written there first."""
    if not isinstance(sys.stderr, io.StringIO) or sys.__stderr__ is None:
        return sys.stderr
    sys.__stderr__.write(sys.stderr.getvalue())
    sys.stderr.seek(0)
    sys.stderr.truncate()
    return sys.__stderr__
