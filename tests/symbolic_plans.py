"""All p ranks' plans run in one process on symbolic values, with MPI's matching rules.

Each element starts as a leaf (an id the test chooses: a rank's contribution, a row of
an alltoall, or a placeholder for "nothing yet"); a reduction makes the unordered pair
{a, b} (IEEE a + b and b + a are the same bits), a copy moves an expression. `Values.leaves`
tells which leaves an expression holds and how many times. Messages match per pair of ranks
in plan order, with equal lengths, and the schedule must finish when every send also waits
for its receiver to post (rendezvous), as the executor does with large messages.
"""
from __future__ import annotations

from collections import defaultdict

from collectives.algorithms.plan import Plan, Recv, Send

__all__ = ["Values", "check_matching", "run"]


class Values:
    """Interned expressions: ids 0..leaves-1 are leaves, then unordered pairs."""

    def __init__(self, leaves: int):
        self.pairs: dict[tuple[int, int], int] = {}
        self.leaves: list[tuple[int, int]] = [(1 << i, 1) for i in range(leaves)]  # (leaf mask, count)

    def reduce(self, a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in self.pairs:
            self.pairs[key] = len(self.leaves)
            (ma, na), (mb, nb) = self.leaves[a], self.leaves[b]
            self.leaves.append((ma | mb, na + nb))
        return self.pairs[key]


def check_matching(all_plans: list[Plan]) -> dict[tuple[int, int], list[tuple[int, Recv]]]:
    """Per (sender, receiver): the receiver's (round, Recv) steps, checked against the sends."""
    sends: dict[tuple[int, int], list[int]] = defaultdict(list)
    recvs: dict[tuple[int, int], list[tuple[int, Recv]]] = defaultdict(list)
    for plan in all_plans:
        for k, step in plan.steps():
            assert 0 <= step.lo <= step.hi <= plan.count and step.peer != plan.rank, (plan.rank, k, step)
            if isinstance(step, Send):
                sends[plan.rank, step.peer].append(step.hi - step.lo)
            else:
                recvs[step.peer, plan.rank].append((k, step))
        for k, rnd in enumerate(plan.rounds):
            regions = sorted((r.lo, r.hi) for r in rnd.recvs)
            assert all(a[1] <= b[0] for a, b in zip(regions, regions[1:])), (
                f"rank {plan.rank} round {k}: receives overlap")
    for pair in set(sends) | set(recvs):
        lengths = [r.hi - r.lo for _, r in recvs[pair]]
        assert sends[pair] == lengths, f"{pair}: sends {sends[pair]} vs receives {lengths}"
    return recvs


def run(all_plans: list[Plan], initial: list[list[int]], values: Values) -> list[list[int]]:
    """Run every rank's plan from `initial` (per rank, an expression id per element); return
    each rank's final work buffer. A `sends_input` plan sends from `initial` (its input)
    and starts from a work buffer of `initial`'s values too, as the executor's copy of the
    regions no receive writes."""
    p = len(all_plans)
    recvs = check_matching(all_plans)
    work = [list(values_of) for values_of in initial]
    current = [0] * p  # the round each rank runs (its sends issued, its receives posted)
    channel: dict[tuple[int, int], list[list[int]]] = defaultdict(list)  # payloads sent so far
    taken: dict[tuple[int, int], int] = defaultdict(int)  # payloads received so far
    outstanding: list[list[tuple[int, int]]] = [[] for _ in range(p)]  # (peer, payload index)

    def start(rank: int) -> None:
        """Issue the sends of the rank's current round, its data as of now."""
        plan, outstanding[rank] = all_plans[rank], []
        origin = initial[rank] if plan.sends_input else work[rank]
        if current[rank] < len(plan.rounds):
            for s in plan.rounds[current[rank]].sends:
                outstanding[rank].append((s.peer, len(channel[rank, s.peer])))
                channel[rank, s.peer].append(origin[s.lo : s.hi])

    def can_finish(rank: int) -> bool:
        needed: dict[int, int] = defaultdict(int)
        for r in all_plans[rank].rounds[current[rank]].recvs:
            needed[r.peer] += 1
        if any(len(channel[peer, rank]) < taken[peer, rank] + n for peer, n in needed.items()):
            return False  # a sender has not reached its round yet
        # the receiver has posted the receive of each of our sends (rendezvous)
        return all(current[peer] >= recvs[rank, peer][i][0] for peer, i in outstanding[rank])

    def finish(rank: int) -> None:
        for r in all_plans[rank].rounds[current[rank]].recvs:
            payload = channel[r.peer, rank][taken[r.peer, rank]]
            taken[r.peer, rank] += 1
            mine = work[rank]
            for i, v in enumerate(payload):
                mine[r.lo + i] = values.reduce(mine[r.lo + i], v) if r.reduce else v
        current[rank] += 1
        start(rank)

    for rank in range(p):
        start(rank)
    progress = True
    while progress:
        progress = False
        for rank in range(p):
            while current[rank] < len(all_plans[rank].rounds) and can_finish(rank):
                finish(rank)
                progress = True
    stuck = [r for r in range(p) if current[r] < len(all_plans[r].rounds)]
    assert not stuck, f"deadlock: ranks {stuck} stuck at rounds {[current[r] for r in stuck]}"
    for pair, payloads in channel.items():
        assert taken[pair] == len(payloads), f"{pair}: {len(payloads) - taken[pair]} messages unreceived"
    return work
