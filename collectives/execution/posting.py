"""When a rank posts its receives: the one rule the executor runs and the simulator prices.

Receives are posted in plan order. Receive i *opens* at the start of its own round, or a
round earlier when the plan may prefetch that round (`Plan.prefetch`). A receive that lands
in scratch (a reduce-receive, or any receive of a staged codec) also needs one of
SCRATCH_SLOTS scratch slots, free again once the segment in it has been applied. Within a
round the executor posts the round's own receives before its sends and the prefetched ones
after them.

Example::

    posting = Posting.of(plan, staged=False)
    posting.opens[i], posting.needs_slot[i]
"""
from __future__ import annotations

from dataclasses import dataclass

from ..algorithms.plan import Plan

__all__ = ["SCRATCH_SLOTS", "Posting"]

SCRATCH_SLOTS = 4


@dataclass(frozen=True)
class Posting:
    """Per receive of one plan (plan order): its round, the round it opens at, its slot need."""

    rounds: tuple[int, ...]
    opens: tuple[int, ...]
    needs_slot: tuple[bool, ...]

    @classmethod
    def of(cls, plan: Plan, *, staged: bool) -> "Posting":
        """The posting of `plan`'s receives; `staged`: every receive lands in scratch."""
        rounds = tuple(k for k, rnd in enumerate(plan.rounds) for _ in rnd.recvs)
        opens = tuple(k - 1 if k > 0 and plan.prefetch[k] else k for k in rounds)
        needs = tuple(staged or r.reduce for rnd in plan.rounds for r in rnd.recvs)
        return cls(rounds, opens, needs)
