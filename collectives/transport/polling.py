"""The bounded wait every transport uses: poll, yield the core, sleep once it drags on."""
from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

__all__ = ["SPIN_SECONDS", "poll"]

T = TypeVar("T")

# A waiting rank polls (which drives the transport's progress) and yields the core to other
# runnable ranks; after SPIN_SECONDS without completion it also sleeps between polls, so a
# rank stuck on a dead peer does not burn a core.
SPIN_SECONDS = 0.05


def poll(test: Callable[[], T | None], deadline: float, timeout_error: Callable[[], Exception],
         *, idle_sleep: float = 1e-3) -> T:
    """`test()`'s first result other than None; `raise timeout_error()` past `deadline`."""
    spin_until = time.monotonic() + SPIN_SECONDS
    while True:
        result = test()
        if result is not None:
            return result
        now = time.monotonic()
        if now > deadline:
            raise timeout_error()
        if now > spin_until:
            time.sleep(idle_sleep)
        else:
            os.sched_yield()
