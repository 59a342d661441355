"""Exceptions a caller can act on: each names what is wrong, where, and expected vs got.

What each one leaves behind (see docs/failure-model.md):

- `MismatchError`, `NonFiniteError`: raised on every rank before any data moved; the
  communicator stays usable.
- `CollectiveTimeout`, `PeerError`: the ranks are out of step and messages may be in
  flight; the communicator refuses further collectives. Call `comm.abort()`.
"""
from __future__ import annotations

import difflib
from collections import Counter
from typing import Iterable, Sequence

__all__ = [
    "CollectiveError",
    "MismatchError",
    "NonFiniteError",
    "CollectiveTimeout",
    "PeerError",
    "unknown_choice",
    "rank_list",
    "outliers",
]


class CollectiveError(RuntimeError):
    """Base class of every error raised by a collective."""


class MismatchError(CollectiveError):
    """Ranks disagree on a collective's arguments (shape, dtype, op, algorithm, ...).

    Raised by the agreement check on every rank before any data moved; the next collective
    may proceed. Raised while data moves (a transport finding the ranks' message streams
    out of step, possible only with the check off), it leaves the communicator unusable,
    as a timeout does: call `comm.abort()`.
    """


class NonFiniteError(CollectiveError):
    """`check_finite=True` and some rank's input holds NaN or Inf; raised on every rank."""


class CollectiveTimeout(CollectiveError):
    """A collective did not complete within the communicator's timeout.

    The communicator is unusable afterwards: call `comm.abort()`.
    """


class PeerError(CollectiveError):
    """Another rank told this one that it gave up on a collective (it timed out) or left
    (closed its communicator, or its program ended) while this rank still needs it.

    The communicator is unusable afterwards: call `comm.abort()`.
    """


def unknown_choice(what: str, got: object, accepted: Iterable[object]) -> ValueError:
    """A ValueError for a bad option, listing what is accepted and the closest match.

    >>> str(unknown_choice("algorithm", "rign", ["ring", "native"]))
    "unknown algorithm 'rign'; accepted: 'ring', 'native' (did you mean 'ring'?)"
    """
    accepted = list(accepted)
    message = f"unknown {what} {got!r}; accepted: {', '.join(map(repr, accepted))}"
    close = difflib.get_close_matches(str(got), [str(a) for a in accepted], n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return ValueError(message)


def rank_list(ranks: Iterable[int]) -> str:
    """Ranks as short text: runs of consecutive ranks become ranges.

    >>> rank_list([0, 1, 2, 5, 7, 8])
    'ranks 0-2, 5, 7-8'
    >>> rank_list([3])
    'rank 3'
    """
    ranks = sorted(set(ranks))
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    return f"{'rank' if len(ranks) == 1 else 'ranks'} {text}"


def outliers(rows: Sequence) -> str:
    """Which ranks differ, as text, from one row per rank (NumPy rows, compared whole): the
    largest group of equal rows is the reference, rank 0's on a tie.

    >>> import numpy as np
    >>> outliers(np.array([[4], [5], [4]]))
    'rank 1 against ranks 0, 2'
    """
    keys = [tuple(row.tolist()) for row in rows]
    sizes = Counter(keys)
    reference = max(sizes, key=lambda key: (sizes[key], key == keys[0]))
    odd = [r for r, key in enumerate(keys) if key != reference]
    same = [r for r, key in enumerate(keys) if key == reference]
    return f"{rank_list(odd)} against {rank_list(same)}"
