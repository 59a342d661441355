"""The bounded wait every transport uses: poll, yield the core, sleep once it drags on."""
from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

__all__ = ["BUSY_POLLS", "SPIN_SECONDS", "poll"]

T = TypeVar("T")

# A waiting rank polls (which drives the transport's progress); the first polls spin, so a
# message that is about to land costs no system call. Then it yields the core to other
# runnable ranks, and after SPIN_SECONDS without completion it also sleeps between polls,
# so a rank stuck on a dead peer does not burn a core.
BUSY_POLLS = 64
SPIN_SECONDS = 0.05
_CHECK_EVERY = 64  # polls between two calls of `interrupt` while yielding


def poll(test: Callable[[], T | None], deadline: float, timeout_error: Callable[[], Exception],
         *, idle_sleep: float = 1e-3, interrupt: Callable[[], None] | None = None) -> T:
    """`test()`'s first result other than None; `raise timeout_error()` past `deadline`.

    `interrupt()` (e.g. "has a peer given up?") runs now and then while waiting and may raise.
    """
    for _ in range(BUSY_POLLS):
        result = test()
        if result is not None:
            return result
    spin_until = time.monotonic() + SPIN_SECONDS
    polls = 0
    while True:
        result = test()
        if result is not None:
            return result
        now = time.monotonic()
        if now > deadline:
            raise timeout_error()
        polls += 1
        sleeping = now > spin_until
        if interrupt is not None and (sleeping or polls % _CHECK_EVERY == 0):
            interrupt()
        if sleeping:
            time.sleep(idle_sleep)
        else:
            os.sched_yield()
