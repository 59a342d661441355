"""Error feedback: each call's rounding carried into the next call with the same residual.

A call with error feedback adds the residual of its previous call to its input, rounds its
own contribution to the wire format, and keeps what that rounding lost for the next call,
so over many steps the rounding of each rank's contribution cancels out. (Roundings of
partial sums at later hops are not fed back.)

Residuals are bounded: at most `max_entries` of them and `max_bytes` in all; the least
recently used go first (a layout not seen for a while starts again from zero), and
`clear()` drops them all.

Example::

    feedback = ErrorFeedback(max_entries=256, max_bytes=1 << 30)
    residual = feedback.residual(key, work, work.size)
"""
from __future__ import annotations

import collections
from typing import Any, Hashable

import kernels

__all__ = ["ErrorFeedback", "MAX_ENTRIES", "MAX_BYTES"]

MAX_ENTRIES = 1024
MAX_BYTES = 2 << 30


class ErrorFeedback:
    """Compression residuals kept between calls, one per key (least recently used dropped)."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"need max_entries >= 1 and max_bytes >= 1, got {max_entries}, "
                             f"{max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._residuals: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._bytes = 0

    def residual(self, key: Hashable, like, count: int):
        """The residual for `key` (zeros the first time), an accumulator of `count` elements."""
        buf = self._residuals.get(key)
        if buf is not None and buf.size == count and buf.dtype == like.dtype:
            self._residuals.move_to_end(key)
            return buf
        self._drop(key)
        buf = kernels.array_module(like).zeros(count, like.dtype)
        self._residuals[key] = buf
        self._bytes += buf.nbytes
        while len(self._residuals) > self.max_entries or (
                self._bytes > self.max_bytes and len(self._residuals) > 1):
            self._drop(next(iter(self._residuals)))
        return buf

    def _drop(self, key: Hashable) -> None:
        buf = self._residuals.pop(key, None)
        if buf is not None:
            self._bytes -= buf.nbytes

    def clear(self) -> None:
        self._residuals.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._residuals)
