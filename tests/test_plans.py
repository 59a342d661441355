"""Every all-reduce plan builder, all p ranks run in one process on symbolic values
(tests/symbolic_plans; the other collectives: tests/test_collective_plans.py).

Each element starts as its rank's leaf; a reduction makes the unordered pair {a, b} (IEEE
a + b and b + a are the same bits), a copy moves an expression. A correct plan ends with
one expression per element, the same on every rank, holding every rank exactly once: the
all-reduce, with identical bits everywhere. Messages match per pair of ranks in plan order,
with equal lengths, and the schedule must finish when every send also waits for its
receiver to post (rendezvous), as the executor does.
"""
from __future__ import annotations

import math

import pytest

from collectives.algorithms import PLANNERS, halving_doubling, hierarchical, plan_for
from collectives.algorithms.levels import by_level
from collectives.algorithms.plan import Plan, Send
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.topology import Topology
from tests import symbolic_plans
from tests.symbolic_plans import Values

SIZES = range(1, 17)
BANDWIDTH_OPTIMAL = ("ring", "hierarchical", "torus2d", "halving_doubling")
SMALL_ITEMSIZE = 1  # recursive doubling below RECURSIVE_DOUBLING_BYTES
SEGMENTED = SEGMENT_BYTES // 3  # itemsize that cuts every step into segments of 3 elements
HALVING = halving_doubling.RECURSIVE_DOUBLING_BYTES + 1  # itemsize: halving from one element up


def counts(p: int) -> list[int]:
    return sorted({0, 1, max(p - 1, 1), p, p + 1, 2 * p + 3, 4 * p * p, 61})


def topologies(p: int) -> list[Topology]:
    """One node, one rank per node, local sizes 2 and 3 (uneven when they do not divide p),
    and every explicit grid."""
    tops = {Topology.from_local_size(p, k) for k in (1, 2, 3, p)}
    tops |= {Topology.from_local_size(p, 2, grid=(x, p // x)) for x in range(1, p + 1) if p % x == 0}
    return sorted(tops, key=repr)


def plans(algorithm: str, p: int, count: int, itemsize: int = 4, topology=None) -> list[Plan]:
    return [PLANNERS["allreduce"][algorithm](r, p, count, itemsize, topology) for r in range(p)]


def hd_plans(p: int, count: int, seg: int, recursive_doubling: bool) -> list[Plan]:
    return [Plan("halving_doubling", r, p, count,
                 tuple(halving_doubling.schedule(r, p, count, seg, recursive_doubling)))
            for r in range(p)]


def simulate(all_plans: list[Plan]) -> list[list[int]]:
    """Run every rank's plan on its leaves; check each element ends as the same expression
    on every rank, holding every rank exactly once; return the final work buffers."""
    p, count = all_plans[0].size, all_plans[0].count
    values = Values(p)
    work = symbolic_plans.run(all_plans, [[r] * count for r in range(p)], values)
    full = ((1 << p) - 1, p)
    for e in range(count):
        finals = {work[r][e] for r in range(p)}
        assert len(finals) == 1, f"element {e}: ranks hold different expressions"
        assert values.leaves[finals.pop()] == full, f"element {e}: not every rank exactly once"
    return work


def sent(plan: Plan, peers=None) -> int:
    """Elements `plan` sends, to `peers` only when given."""
    return sum(s.hi - s.lo for _, s in plan.steps() if isinstance(s, Send) and (peers is None or s.peer in peers))


# --- correctness of every algorithm on every shape ---------------------------------------

@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("algorithm", ["ring", "halving_doubling"])
def test_topology_free_plans_reduce_everything_once(algorithm, p):
    for count in counts(p):
        for itemsize in (SMALL_ITEMSIZE, 8, SEGMENTED):
            simulate(plans(algorithm, p, count, itemsize))


@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("algorithm", ["hierarchical", "torus2d"])
def test_topology_plans_reduce_everything_once(algorithm, p):
    for topology in topologies(p) + [None]:
        for count in counts(p):
            simulate(plans(algorithm, p, count, 4, topology))
        simulate(plans(algorithm, p, 2 * p + 5, SEGMENTED, topology))


@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("recursive_doubling", [False, True])
def test_halving_doubling_both_paths_with_segments(p, recursive_doubling):
    for count in counts(p):
        for seg in (1, 2, 1 << 20):
            simulate(hd_plans(p, count, seg, recursive_doubling))


@pytest.mark.parametrize("sizes", [(3, 2), (2, 3, 1), (4, 1, 2), (1, 1, 3), (5, 3), (3, 3, 3, 1)])
def test_hierarchical_arbitrary_node_sizes(sizes):
    """Nodes of any sizes, including non-consecutive membership (ranks dealt round-robin)."""
    p = sum(sizes)
    keys = [n for n, k in enumerate(sizes) for _ in range(k)]
    for topology in (Topology.from_node_keys(keys), Topology.from_node_keys(keys[::-1])):
        for count in counts(p):
            simulate(plans("hierarchical", p, count, 4, topology))
    dealt = Topology.from_node_keys([r % 3 for r in range(p)])
    for count in counts(p):
        simulate(plans("hierarchical", p, count, 4, dealt))
        simulate(plans("torus2d", p, count, 4, dealt))


# --- bytes on the wire and latency terms against the closed forms ------------------------

@pytest.mark.parametrize("p", SIZES)
def test_total_bytes_match_the_ring_lower_bound(p):
    """All bandwidth-optimal plans move 2 (p-1) n elements in all, whatever the count."""
    for count in counts(p):
        for algorithm in BANDWIDTH_OPTIMAL:
            for topology in topologies(p):
                total = sum(sent(plan) for plan in plans(algorithm, p, count, HALVING, topology))
                assert total == 2 * (p - 1) * count, (algorithm, topology, count)


@pytest.mark.parametrize("p", SIZES)
def test_per_rank_bytes_and_rounds(p):
    n = 2 * math.lcm(*range(1, 17))  # divisible by every chunking below
    per_rank = 2 * (p - 1) * n // p
    for plan in plans("ring", p, n):
        assert sent(plan) == per_rank and len(plan.rounds) == 2 * (p - 1)
    for topology in topologies(p):
        x, y = topology.grid_shape()
        for plan in plans("torus2d", p, n, 4, topology):
            assert sent(plan) == per_rank and len(plan.rounds) == 2 * (x - 1) + 2 * (y - 1)
        nodes = topology.nodes
        if len({len(node) for node in nodes}) == 1:
            k, big_n = len(nodes[0]), len(nodes)
            for plan in plans("hierarchical", p, n, 4, topology):
                off_node = set(range(p)) - set(topology.peers(plan.rank))
                assert sent(plan) == per_rank
                assert sent(plan, off_node) == 2 * (big_n - 1) * n // (big_n * k)
                assert len(plan.rounds) == 2 * (k - 1) + 2 * (big_n - 1)


@pytest.mark.parametrize("p", SIZES)
def test_halving_doubling_bytes_and_rounds(p):
    pof2 = 1 << (p.bit_length() - 1)
    extra, steps = p - pof2, pof2.bit_length() - 1
    n = 4 * pof2 * 3
    for recursive_doubling in (False, True):
        for plan in hd_plans(p, n, 1 << 30, recursive_doubling):
            core = steps * n if recursive_doubling else 2 * (pof2 - 1) * n // pof2
            core_rounds = steps if recursive_doubling else 2 * steps
            if plan.rank < 2 * extra and plan.rank % 2 == 0:
                assert sent(plan) == n and len(plan.rounds) == 2
            elif plan.rank < 2 * extra:
                assert sent(plan) == core + n and len(plan.rounds) == core_rounds + 2
            else:
                assert sent(plan) == core and len(plan.rounds) == core_rounds


def test_halving_doubling_switches_to_recursive_doubling_on_small_messages():
    limit = halving_doubling.RECURSIVE_DOUBLING_BYTES
    small = PLANNERS["allreduce"]["halving_doubling"](0, 8, limit // 4, 4, None)
    large = PLANNERS["allreduce"]["halving_doubling"](0, 8, limit // 4 + 1, 4, None)
    assert len(small.rounds) == 3 and all(small.reduce_after_send)
    assert len(large.rounds) == 6 and not any(large.reduce_after_send)


def test_hierarchical_cross_node_bytes_with_uneven_nodes():
    """Uneven nodes still send 2 (N-1) n elements across nodes in all, the even-node total."""
    for p, k in [(5, 2), (5, 3), (7, 3), (8, 3), (10, 4)]:
        topology = Topology.from_local_size(p, k)
        big_n = len(topology.nodes)
        for count in (0, 1, p, 97, 360):
            all_plans = plans("hierarchical", p, count, 4, topology)
            across = sum(sent(plan, set(range(p)) - set(topology.peers(plan.rank))) for plan in all_plans)
            assert across == 2 * (big_n - 1) * count


def test_hierarchical_pieces_refine_uneven_slices():
    nodes = ((0, 1, 2), (3, 4))
    pieces = hierarchical.slice_owners(nodes, 6)
    # node 0 slices [0,2) [2,4) [4,6) owned by ranks 2, 0, 1; node 1 [0,3) [3,6) by 4, 3
    assert pieces == [(0, 2, (2, 4)), (2, 3, (0, 4)), (3, 4, (0, 3)), (4, 6, (1, 3))]
    even = hierarchical.slice_owners(((0, 1), (2, 3), (4, 5)), 4)
    assert even == [(0, 2, (1, 3, 5)), (2, 4, (0, 2, 4))]


@pytest.mark.parametrize("algorithm", BANDWIDTH_OPTIMAL)
def test_degenerate_shapes_give_empty_or_ring_plans(algorithm):
    assert plans(algorithm, 1, 100)[0].rounds == ()
    assert all(plan.rounds == () for plan in plans(algorithm, 4, 0))
    ring = plans("ring", 5, 23)
    for topology in (Topology.from_local_size(5, 1), Topology.from_local_size(5, 5), None):
        if algorithm != "halving_doubling":
            assert [p.rounds for p in plans(algorithm, 5, 23, 4, topology)] == [p.rounds for p in ring]


@pytest.mark.parametrize("size, local_size", [(4, 2), (6, 4), (5, 2), (8, 4)])
def test_hierarchical_cuts_into_levels_that_rebuild_the_plan(size, local_size):
    """Inside the node, across, inside again: every step in its order, every message's
    level the same seen from both ends; a ring across nodes mixes levels in a round."""
    topology = Topology.from_local_size(size, local_size)
    for rank in range(size):
        plan = plan_for("allreduce", "hierarchical", rank, size, 1009, 4, topology)
        parts = by_level(plan, topology.node_of)
        assert parts is not None
        assert [step for _, part in parts for _, step in part.steps()] == \
            [step for _, step in plan.steps()]
        home = topology.node_of[rank]
        for across, part in parts:
            assert all((topology.node_of[step.peer] != home) == across
                       for _, step in part.steps())
        levels = [across for across, _ in parts]
        assert levels == ([True] if len(topology.peers(rank)) == 1 else [False, True, False])
    ring = plan_for("allreduce", "ring", 1, 4, 1009, 4, Topology.from_local_size(4, 2))
    assert by_level(ring, Topology.from_local_size(4, 2).node_of) is None
