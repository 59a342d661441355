"""When a rank posts its receives: the one rule the executor runs and the simulator prices.

Receives are posted in plan order. Receive i *opens* at the start of its own round, or a
round earlier when the plan may prefetch that round (`Plan.prefetch`). A receive that lands
in scratch (a reduce-receive, or any receive of a staged codec) also needs one of
SCRATCH_SLOTS scratch slots, free again once the segment in it has been applied. Within a
round the executor posts the round's own receives before its sends and the prefetched ones
after them.

Example::

    posting = Posting.of(plan, staged=False)
    posting.recvs[i], posting.opens[i], posting.needs_slot[i]
"""
from __future__ import annotations

from dataclasses import dataclass

from ..algorithms.plan import Plan, Recv

__all__ = ["SCRATCH_SLOTS", "Posting"]

SCRATCH_SLOTS = 4


@dataclass(frozen=True)
class Posting:
    """Per receive of one plan (plan order): the receive, its round, the round it opens at,
    its slot need."""

    recvs: tuple[Recv, ...]
    rounds: tuple[int, ...]
    opens: tuple[int, ...]
    needs_slot: tuple[bool, ...]

    @classmethod
    def of(cls, plan: Plan, *, staged: bool) -> "Posting":
        """The posting of `plan`'s receives (kept with the plan); `staged`: every receive
        lands in scratch."""
        return plan.derived(("posting", staged), lambda p: cls._build(p, staged))

    @classmethod
    def _build(cls, plan: Plan, staged: bool) -> "Posting":
        recvs = tuple(r for rnd in plan.rounds for r in rnd.recvs)
        rounds = tuple(k for k, rnd in enumerate(plan.rounds) for _ in rnd.recvs)
        opens = tuple(k - 1 if k > 0 and plan.prefetch[k] else k for k in rounds)
        return cls(recvs, rounds, opens, tuple(staged or r.reduce for r in recvs))
