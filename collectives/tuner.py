"""Choosing an algorithm for `algorithm="auto"`."""
from __future__ import annotations

__all__ = ["choose"]

# Below this size MPI's latency-optimised all-reduce beats a 2(p-1)-step ring.
SMALL_MESSAGE_BYTES = 256 << 10


def choose(nbytes: int, size: int) -> str:
    """The algorithm `auto` runs for a message of `nbytes` on `size` ranks."""
    if size == 1 or nbytes < SMALL_MESSAGE_BYTES:
        return "native"
    return "ring"
