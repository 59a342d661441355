"""Exceptions a caller can act on: each names what is wrong, where, and expected vs got."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["CollectiveError", "MismatchError", "CollectiveTimeout", "unknown_choice"]


class CollectiveError(RuntimeError):
    """Base class of every error raised by a collective."""


class MismatchError(CollectiveError):
    """Ranks disagree on a collective's arguments (shape, dtype, op, algorithm, ...)."""


class CollectiveTimeout(CollectiveError):
    """A collective did not complete within the communicator's timeout."""


def unknown_choice(what: str, got: object, accepted: Iterable[str]) -> ValueError:
    """A ValueError for a bad option, listing what is accepted and the closest match."""
    accepted = list(accepted)
    message = f"unknown {what} {got!r}; accepted: {', '.join(map(repr, accepted))}"
    close = difflib.get_close_matches(str(got), accepted, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return ValueError(message)
