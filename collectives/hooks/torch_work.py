"""torch Works over the library's pending results.

`HandleWork` is completed from the progress engine: the library's async collectives run on
the progress thread in issue order, and the last handle's completion callback (which runs
there) finishes the result (copies out of staging rows, if any) and completes the torch
Future; it never blocks. `MessageWork` is a point-to-point message: it completes when waited
or tested, and has no future (as gloo's send and recv).

A failed collective sets the Future's exception: `wait()` and `result()` raise the
library's error (CollectiveError, CollectiveTimeout, ...). `get_future()` fails as torch's
own backends' futures do, with a RuntimeError that names it ("CollectiveTimeout: ..."):
C++ consumers (DDP's reducer) take an exception set from Python for a value ("Unable to
cast ... to Tensor", the eighteenth review), so the future they get is chained through
`raise_or_value`, whose raise torch records as the future's error.

Example::

    work = HandleWork([comm.allreduce_async(view, out=view)], lambda: [tensor])
    work.wait()
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import CollectiveError, MismatchError
from ..p2p import Message
from ..progress import Handle

__all__ = ["HandleWork", "MessageWork", "raise_or_value"]

Tensors = list[torch.Tensor]


def raise_or_value(future: torch.futures.Future):
    """`future`'s value, or its exception raised: as a `Future.then` callback, it makes the
    exception the chained future's error, which C++ consumers see as one."""
    return future.wait()


class _FutureWork(dist.Work):
    """A Work whose state is a torch Future."""

    def __init__(self) -> None:
        super().__init__()
        self._future: torch.futures.Future = torch.futures.Future()
        self._chained: torch.futures.Future | None = None

    def wait(self, timeout: timedelta | None = None) -> bool:
        self._until_done(timeout)
        self._future.wait()
        return True

    def _until_done(self, timeout: timedelta | None) -> None:
        """Return once the future is done; TimeoutError after `timeout` (None or <= 0:
        torch's "no timeout"; then the communicator's own bounds the wait). The wait is
        Python's, so an interrupt (a signal handler that raises, Ctrl-C) ends it at once;
        the collective keeps running."""
        if self._future.done():
            return
        self._refuse_waiting_for_itself()
        done = threading.Event()
        self._future.add_done_callback(lambda _: done.set())
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        bounded = seconds is not None and seconds > 0
        if not done.wait(seconds if bounded else None):
            raise TimeoutError(f"the collective still running after {seconds:g} s "
                               "(Work.wait timeout)")

    def _refuse_waiting_for_itself(self) -> None:
        """Raise where a blocking wait could never end (nothing to check by default)."""

    def is_completed(self) -> bool:
        return self._future.done()

    def is_success(self) -> bool:
        return self.exception() is None if self._future.done() else False

    def exception(self) -> BaseException | None:
        if not self._future.done():
            return None
        try:
            self._future.value()
        except BaseException as error:  # noqa: BLE001 - reported, not handled
            return error
        return None

    def result(self) -> Tensors:
        self._until_done(None)
        return self._future.wait()

    def get_future(self) -> torch.futures.Future:
        if self._chained is None:
            self._chained = self._future.then(raise_or_value)
        return self._chained


class HandleWork(_FutureWork):
    """Completed when the last of `handles` is (at once without any); then `finish()` gives
    the result tensors.

    The handles are one communicator's, so they complete in order: when the last is done,
    all are. The first error among them fails the Work; a MismatchError with `explain()`
    added, where given (what the arrays the library compared stand for).
    """

    def __init__(self, handles: Sequence[Handle], finish: Callable[[], Tensors],
                 explain: Callable[[], str] | None = None):
        super().__init__()
        self._handles = handles
        self._finish = finish
        self._explain = explain
        if handles:
            handles[-1].add_done_callback(self._complete)
        else:
            self._complete(None)

    def _refuse_waiting_for_itself(self) -> None:
        """A blocking wait in a completion callback (a torch `Future.then` callback runs on
        the progress thread) for a collective that thread must run: CollectiveError at once,
        as `Handle.wait` there."""
        if self._handles and self._handles[-1].waits_for_itself():
            raise CollectiveError(
                f"{self._handles[-1].what}: a blocking torch collective, or Work.wait() on a "
                "pending one, in a completion callback (the progress thread, where "
                "Future.then callbacks run) would wait forever; chain another callback")

    def _complete(self, _: Handle | None) -> None:
        try:
            for handle in self._handles:
                handle.wait()  # done already: never blocks
            value = self._finish()
        except MismatchError as error:
            self._future.set_exception(error if self._explain is None else
                                       MismatchError(f"{error}; {self._explain()}"))
        except BaseException as error:  # noqa: BLE001 - handed to torch's future
            self._future.set_exception(error)
        else:
            self._future.set_result(value)


class MessageWork(dist.Work):
    """A posted send or receive; `finish()` runs once it completed (a receive's copy-back)."""

    def __init__(self, message: Message, tensors: Tensors, finish: Callable[[], None]):
        super().__init__()
        self._message = message
        self._tensors = tensors
        self._finish: Callable[[], None] | None = finish

    def wait(self, timeout: timedelta | None = None) -> bool:
        # (it said "the message", naming no rank, tag or size; the 113th review)
        _wait_until(self._message.test, timeout, self._message.what)
        self._message.wait()
        self._finished()
        return True

    def is_completed(self) -> bool:
        if not self._message.test():
            return False
        self._finished()
        return True

    def result(self) -> Tensors:
        self.wait()
        return self._tensors

    def _finished(self) -> None:
        if self._finish is not None:
            self._finish, finish = None, self._finish
            finish()


def _wait_until(done: Callable[[], bool], timeout: timedelta | float | None, what: str) -> None:
    """Return once `done()`; TimeoutError after `timeout` (None or <= 0: torch's "no
    timeout"; then the communicator's own bounds the wait). What runs keeps running."""
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if seconds is None or seconds <= 0:
        return
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still running after {seconds:g} s (Work.wait timeout)")
        time.sleep(1e-4)
