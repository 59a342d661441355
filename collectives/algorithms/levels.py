"""A plan cut where its messages change level: rounds inside the node, rounds across nodes.

`by_level(plan, node_of)` gives the plan's consecutive rounds whose every message stays in
this rank's node (`across` False) or leaves it (True), each as a plan of its own, in order;
None when a round mixes both (a ring across nodes). Running the parts one after another is
running the plan: a message has one level seen from either end, so every peer cuts its
plan at the same messages, and between two ranks the messages keep their order. It lets a
codec travel on one level only (compression between nodes, hierarchical's middle stage).

Example::

    parts = by_level(plan_for("allreduce", "hierarchical", rank, p, n, 2, topology),
                     topology.node_of)       # [(False, intra RS), (True, inter), (False, AG)]
"""
from __future__ import annotations

from typing import Sequence

from .plan import Plan, Round, make_plan

__all__ = ["by_level"]


def by_level(plan: Plan, node_of: Sequence[int]) -> list[tuple[bool, Plan]] | None:
    """[(across, part), ...] in order, or None when a round mixes the levels."""
    home = node_of[plan.rank]
    runs: list[tuple[bool, list[Round]]] = []
    for rnd in plan.rounds:
        levels = {node_of[step.peer] != home for step in rnd.sends + rnd.recvs}
        if len(levels) != 1:
            return None
        across = levels.pop()
        if runs and runs[-1][0] == across:
            runs[-1][1].append(rnd)
        else:
            runs.append((across, [rnd]))
    return [(across, make_plan(plan.algorithm, plan.rank, plan.size, plan.count, rounds,
                               collective=plan.collective, root=plan.root,
                               sends_input=plan.sends_input))
            for across, rounds in runs]
