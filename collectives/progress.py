"""The progress engine: a communicator's collectives run in issue order, async ones on a thread.

Ordering rule: every rank must issue its collectives (sync and async alike) in the same
order. The engine keeps each rank's issue order: async collectives queue up and run one at
a time on one background thread; a sync collective issued while async ones are pending
waits for them, then runs on the caller's thread. The agreement check that starts every
collective (`collectives.agreement`) catches ranks whose n-th collectives differ.

Blocking work on the progress thread would wait for itself: a blocking collective, or
`wait()` on a pending handle, issued from a completion callback (`add_done_callback`; torch
`Future.then` callbacks run there too) raises CollectiveError at once; async collectives
may be issued there (they queue). The callbacks run once the engine's lock is released, so
a callback may issue a blocking collective on another communicator.

A collective issued on a thread that is already inside one of this communicator's (from a
signal handler) would run nested in it and share its buffers: refused on that rank, as is a
wait there on a pending handle (its collective could never run). Ranks pair calls by their
order on the communicator; the issuing thread's name is part of every signature, so a
call paired with another thread's raises MismatchError, but it is used up on every rank:
where several threads issue in orders that differ between ranks, later calls can pair
with another thread's, silently (docs/failure-model.md, known gaps). Threads of one name
are not told apart.

The background thread waits through the transport, which releases the GIL while it polls
(MPI calls and `sched_yield` run without it), so the caller's NumPy work overlaps the
transfer. A failed collective does not cancel the ones queued behind it: which calls are
still queued when one fails differs between ranks, so every issued collective runs (after a
timeout the communicator refuses them all alike; after a MismatchError they proceed).

Example::

    h = comm.allreduce_async(grad)       # returns at once
    loss = forward(next_batch)           # overlaps with the all-reduce
    grad = h.wait()
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import logging
import math
import numbers
import os
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable

from .errors import CollectiveError

__all__ = ["Handle", "ProgressEngine", "THREAD_NAME", "issued_collectives"]

THREAD_NAME = "collectives-progress"  # one name on every rank: it is part of each signature
_ENGINES: "weakref.WeakSet[ProgressEngine]" = weakref.WeakSet()


def issued_collectives(thread: threading.Thread) -> bool:
    """Whether `thread` issued collectives on a communicator that is still open."""
    return any(engine.issued_by(thread) for engine in list(_ENGINES))

log = logging.getLogger("collectives")


def _wait_bound(timeout) -> float | None:
    """`Handle.wait`'s timeout, checked: inf was an OverflowError, and a negative or NaN
    one was taken as 0 (the 104th review)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds (or None), got {timeout!r}")
    return None if timeout > threading.TIMEOUT_MAX else float(timeout)


class Handle:
    """The pending result of an async collective.

    Example::

        h = comm.allreduce_async(x, op="avg")
        while not h.done():
            do_some_work()
        y = h.wait()
    """

    __slots__ = ("_future", "what", "_engine")

    def __init__(self, future: Future, what: str, engine: "ProgressEngine"):
        self._future = future
        self.what = what
        self._engine = engine

    def done(self) -> bool:
        """True once the collective finished (successfully or not); never blocks."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Any:
        """The result, once the collective finished; re-raises its error.

        `timeout` (seconds, >= 0; None or inf: no bound) bounds this wait only: TimeoutError
        if the collective is still running then (it keeps running; wait again later).
        """
        timeout = _wait_bound(timeout)
        if self.waits_for_itself():
            raise CollectiveError(
                f"{self.what}: wait() on a pending handle from a completion callback (the "
                "progress thread), or inside a collective running on this thread (from a "
                "signal handler?), would wait forever; chain a callback instead")
        if not self._future.done() and self._engine.forked():  # (it waited for ever)
            raise CollectiveError(f"{self.what}: wait() in a process forked while it was "
                                  "pending: its progress thread is the parent's")
        start = time.monotonic()
        try:
            return self._future.result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):  # (two classes before 3.11)
            if self._future.done():  # finished meanwhile, or raised a TimeoutError itself
                return self._future.result()
            # A signal handler's own TimeoutError, raised before the timeout: as it was (it
            # came out as "still running after None s"; the 93rd and 95th reviews).
            if timeout is None or time.monotonic() - start < timeout:
                raise
            raise TimeoutError(f"{self.what} still running after {timeout} s") from None

    def waits_for_itself(self) -> bool:
        """Whether a blocking wait here would never end: the collective is pending and the
        caller is the progress thread that must run it (a completion callback), or holds
        the engine's locks that the progress thread needs (a signal handler)."""
        engine = self._engine
        return not self._future.done() and (engine.on_thread() or engine.inside())

    def add_done_callback(self, fn: Callable[["Handle"], Any]) -> None:
        """Call `fn(handle)` once the collective finished (at once if it already has).

        It runs on the progress thread, or at once on the calling thread when the collective
        has already finished (as concurrent.futures does); `fn` should only hand the result
        on (e.g. complete a framework future), calling `wait()` on this handle never blocks
        there. A collective `fn` issues carries that thread's name: where it ran on the
        progress thread on one rank and inline on another, the call raises MismatchError
        (the 106th review; known gaps).
        """
        self._future.add_done_callback(lambda _: fn(self))

    def __repr__(self) -> str:
        return f"<Handle {self.what} {'done' if self.done() else 'pending'}>"


class ProgressEngine:
    """Runs one communicator's collectives in issue order; see the module docstring."""

    def __init__(self) -> None:
        # guards the queue; reentrant, so that close() can tell this thread holds it
        self._cv = threading.Condition(threading.RLock())
        self._queue: collections.deque[_Queued] = collections.deque()
        # held while a collective runs, on either thread; an RLock, so that `end` can tell
        # whether the calling thread holds it
        self._running = threading.RLock()
        self._thread: threading.Thread | None = None
        self._loop_ended = False  # the thread's loop returned (close() waits for it)
        self._closed = False
        self._issuers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        self._last_issuer: threading.Thread | None = None
        self._pid = os.getpid()  # a forked child's exit does not drain the rank's engine
        _ENGINES.add(self)

    def admit(self, what: str, thread: threading.Thread, *, queued: bool = False) -> None:
        """Refuse a collective that `thread`, the calling one, issues inside a collective
        of this engine (an async one, `queued`, only inside one being issued): see the
        module docstring. Before any lock of the engine is taken."""
        if (not queued and self._running._is_owned()) or self._cv._is_owned():
            raise CollectiveError(
                f"{what}: issued inside another collective of this communicator running or "
                "being issued on this thread (from a signal handler?), which it would "
                "corrupt; issue it after that one returned")
        if thread is not self._last_issuer:
            self._issuers.add(thread)
            self._last_issuer = thread

    def issued_by(self, thread: threading.Thread) -> bool:
        """Whether `thread` issued collectives here and the engine is still open."""
        return not self._closed and thread in self._issuers

    def inside(self) -> bool:
        """Whether the calling thread is inside a collective of this engine (or issuing one)."""
        return self._running._is_owned() or self._cv._is_owned()

    def submit(self, fn: Callable[[], Any], what: str) -> Handle:
        """Queue `fn` behind every collective issued before; return at once.

        An interrupt (a signal handler that raises) anywhere in here leaves the call not
        issued: it is queued uncommitted, the progress thread takes no uncommitted call, and
        the commit is the last step before the return, with no point between where Python
        runs a signal handler. An interrupt before it withdraws the call (and releases the
        queue's lock if it landed while that was being taken or given back). It had been
        queued with more to run after (starting the thread, notifying): the call ran while
        the caller saw an interrupt, and a program that issued it again paired the peers'
        next calls with it (silently wrong sums; the eightieth review)."""
        self.admit(what, threading.current_thread(), queued=True)
        queued = _Queued(fn, Future(), what)
        handle = Handle(queued.future, what, self)
        try:
            with self._cv:
                if self._closed:
                    raise CollectiveError(f"{what}: this communicator is closed")
                self._start_thread()  # (under the lock: threads issuing their first call at
                self._queue.append(queued)  # once started one each; the 81st review)
                self._cv.notify_all()
            queued.committed = True
        except BaseException:
            self._withdraw(queued)
            raise
        return handle

    def _start_thread(self) -> None:
        """Start the progress thread unless it runs (one interrupted before it began is
        replaced: it was kept, never ran, and every later call waited for it). Under the
        queue's lock."""
        if self._thread is not None and (self._thread.ident is not None or self._loop_ended):
            return
        atexit.register(_drain_at_exit, weakref.ref(self))  # (twice if start is interrupted)
        thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._thread = thread
        thread.start()

    def _withdraw(self, queued: "_Queued") -> None:
        """After an interrupt in `submit`: the call leaves the queue, this thread lets go of
        the queue's lock (admit made sure it held none before)."""
        self._let_go()
        with self._cv:
            if queued in self._queue:
                self._queue.remove(queued)
            self._cv.notify_all()

    def forked(self) -> bool:
        """Whether the caller is a process forked from the one this engine runs in."""
        return os.getpid() != self._pid

    def on_thread(self) -> bool:
        """Whether the caller is this engine's progress thread (a completion callback)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, fn: Callable[[], Any], what: str = "collective") -> Any:
        """Run `fn` on the calling thread once every earlier collective has finished."""
        if self.on_thread():
            raise CollectiveError(
                f"{what}: a blocking collective was issued from a completion callback (the "
                "progress thread), where it would wait for itself; issue the _async variant "
                "there")
        self.admit(what, threading.current_thread())
        try:
            with self._cv:
                while self._queue:  # the progress thread pops them in order, then runs each
                    self._cv.wait()
        except BaseException:
            self._let_go()
            raise
        with self._running:
            return fn()

    def _let_go(self) -> None:
        """After an interrupt in a `with self._cv` that `admit` let in (this thread held the
        lock before it): give the lock back if the interrupt landed while the Condition's
        Python code took or returned it (held, every later call was refused as "inside
        another collective" and close() for ever; the eightieth review)."""
        while self._cv._is_owned():
            self._cv.release()

    def try_begin(self) -> bool:
        """Begin a collective on the calling thread at once if none is queued or running
        and the engine is open (never waits; the small-call lane's entry); False: use
        `run`. `admit` before it; call `end()` after it in a `finally`, whatever it returned
        or raised."""
        return not self._closed and not self._queue and self._running.acquire(False)

    def end(self) -> None:
        """After `try_begin`: the collective it began on the calling thread finished. An
        interrupt (a signal handler that raises, KeyboardInterrupt) can land right after
        try_begin took the lock, before its caller learned that it did: so the lock is
        released wherever this thread holds it (the eleventh review: a lock left held
        blocked the rank's next collective for ever)."""
        try:
            self._running.release()
        except RuntimeError:  # this thread does not hold it: try_begin did not take it
            pass

    def pending(self) -> int:
        """Collectives issued and not finished yet."""
        with self._cv:
            running = not self._running.acquire(False)
            if not running:
                self._running.release()
            return len(self._queue) + running

    def _queue_drained(self, deadline: float | None) -> bool:
        """For close(): mark the engine closed and wait (up to `deadline`) until the loop
        ran every queued call and returned. By the loop's own word, not Thread.join: an
        interrupted join() marks a running thread stopped (CPython), and a second close()
        closed the transport under the collectives still queued (the eightieth review). A
        forked child has no such thread to wait for."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            started = (self._thread is not None and self._thread.ident is not None
                       and not self.forked())
            while started and not self._loop_ended:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._queue and self._queue[0].committed):
                    if self._closed and not self._queue:
                        self._loop_ended = True
                        self._cv.notify_all()
                        return
                    # (a call is committed right after the lock is given back: look again soon)
                    self._cv.wait(_UNCOMMITTED_POLL if self._queue else None)
            with self._running:  # taken before the head is popped: no sync call slips in
                with self._cv:
                    queued = self._queue.popleft()
                    self._cv.notify_all()  # sync callers wait for the queue to drain
                if not queued.future.set_running_or_notify_cancel():
                    continue
                outcome = _outcome(queued.fn)
            _settle(queued.future, *outcome)  # the callbacks run with the lock released

    def close(self, timeout: float | None = None, then: Callable[[], Any] | None = None) -> bool:
        """Let queued collectives and a sync one running on another thread finish (up to
        `timeout`), then stop the thread and run `then()` (closing the transport) while no
        collective can run; whether every one finished (else `then` does not run). Refused
        from a completion callback (it would wait for itself)."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise CollectiveError("close() from a completion callback (the progress thread) "
                                  "would wait for itself; close from the issuing thread")
        if self.inside():  # (RLocks: they would let us in)
            raise CollectiveError("close() inside a collective running or being issued on "
                                  "this thread (from a signal handler?) would close the "
                                  "transport under it; close after it returned")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if not self._queue_drained(deadline):
                return False
        except BaseException:
            self._let_go()
            raise
        left = -1 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._running.acquire(timeout=left):  # a sync collective on another thread
            return False
        try:
            if then is not None:
                then()
        finally:
            self._running.release()
        return True


_UNCOMMITTED_POLL = 1e-3  # seconds; only while a call's issue is being interrupted


class _Queued:
    """An async call in the queue; `committed` once `submit` is sure to return its handle."""

    __slots__ = ("fn", "future", "what", "committed")

    def __init__(self, fn: Callable[[], Any], future: Future, what: str):
        self.fn, self.future, self.what = fn, future, what
        self.committed = False


def _outcome(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, fn's result) or (False, what it raised)."""
    try:
        return True, fn()
    except BaseException as error:  # noqa: BLE001 - handed to the waiter
        return False, error


def _settle(future: Future, ok: bool, outcome: Any) -> None:
    """Set `future`'s outcome. That runs the done callbacks, whose Exceptions
    `concurrent.futures` logs; a BaseException (SystemExit, KeyboardInterrupt) would end
    the progress thread and leave every queued collective waiting forever: logged too."""
    try:
        (future.set_result if ok else future.set_exception)(outcome)
    except BaseException:  # noqa: BLE001 - a callback's, with nobody to catch it
        log.exception("collectives: a completion callback of %r raised; the progress thread "
                      "goes on", future)


def _drain_at_exit(ref: "weakref.ref[ProgressEngine]") -> None:
    """Before MPI finalizes at exit, let the queued collectives finish (bounded)."""
    engine = ref()
    if engine is not None and engine._pid == os.getpid():
        engine.close(timeout=10.0)
