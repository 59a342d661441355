"""Bytes on the wire and rounds of the new collectives' plans against docs/algorithms.md,
the registry's labels, and the simulator pricing every new plan.

Counts are multiples of every world size used, so blocks are equal: b = n / p elements.
"""
from __future__ import annotations

import math

import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.algorithms.plan import Plan, Recv, Round, Send
from collectives.costmodel import ClusterModel, LinkModel
from collectives.simulator import simulate
from collectives.topology import Topology

N = 2 * math.lcm(*range(1, 17))  # elements: divisible by every p and node size below
SIZES = range(1, 17)
REDUCE_SCATTERS = ("ring", "hierarchical", "torus2d", "halving_doubling")
NEW = [(c, a) for c in ("reduce_scatter", "allgather", "broadcast", "reduce", "alltoall")
       for a in sorted(PLANNERS[c])]


def plans(collective: str, algorithm: str, p: int, count: int = N, topology=None,
          root: int = 0) -> list[Plan]:
    return [PLANNERS[collective][algorithm](r, p, count, 4, topology, root) for r in range(p)]


def sent(plan: Plan, peers=None) -> int:
    """Elements `plan` sends, to `peers` only when given."""
    return sum(s.hi - s.lo for _, s in plan.steps()
               if isinstance(s, Send) and (peers is None or s.peer in peers))


def received(plan: Plan) -> int:
    return sum(s.hi - s.lo for _, s in plan.steps() if isinstance(s, Recv))


def even_topologies(p: int) -> list[Topology]:
    """Nodes of k ranks for every k dividing p."""
    return [Topology.from_local_size(p, k) for k in range(1, p + 1) if p % k == 0]


def lsb(i: int) -> int:
    return i & -i


def subtree(relative: int, p: int) -> int:
    """Ranks in the binomial subtree headed by relative rank i > 0."""
    return min(lsb(relative), p - relative)


def children(relative: int, p: int) -> int:
    reach = lsb(relative) if relative else 1 << (p - 1).bit_length()
    return sum(1 for m in (1 << j for j in range(reach.bit_length() - 1)) if relative + m < p)


# --- reduce-scatter, and all-gather as its reverse ------------------------------------

@pytest.mark.parametrize("p", SIZES)
def test_reduce_scatter_sends_the_ring_lower_bound(p):
    """Every rank sends (p-1) b; the halving's folded even ranks send their whole vector."""
    b = N // p
    pof2 = 1 << (p.bit_length() - 1)
    extra = p - pof2
    for plan in plans("reduce_scatter", "ring", p):
        assert sent(plan) == (p - 1) * b and len(plan.rounds) == p - 1
    for plan in plans("reduce_scatter", "halving_doubling", p):
        away = plan.rank < 2 * extra and plan.rank % 2 == 0
        assert sent(plan) == (p * b if away else (p - 1) * b)
        rounds = 2 if away else int(math.log2(pof2)) + (2 if extra and plan.rank < 2 * extra else 0)
        assert len(plan.rounds) == rounds
    for topology in even_topologies(p):
        k, nodes = len(topology.nodes[0]), len(topology.nodes)
        for plan in plans("reduce_scatter", "hierarchical", p, topology=topology):
            off_node = set(range(p)) - set(topology.peers(plan.rank))
            assert sent(plan) == (p - 1) * b
            assert sent(plan, off_node) == (nodes - 1) * b
            assert len(plan.rounds) == (k - 1) + (nodes - 1)
        for x in (d for d in range(1, p + 1) if p % d == 0):
            grid = Topology.from_local_size(p, k, grid=(x, p // x))
            for plan in plans("reduce_scatter", "torus2d", p, topology=grid):
                assert sent(plan) == (p - 1) * b
                assert len(plan.rounds) == (x - 1) + (p // x - 1)


@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("algorithm", REDUCE_SCATTERS)
def test_allgather_is_the_reduce_scatter_reversed(algorithm, p):
    """Each rank sends in the all-gather what it receives in the reduce-scatter, and back,
    in as many rounds; uneven nodes included."""
    for topology in (Topology.from_local_size(p, 3), Topology.from_local_size(p, 2)):
        for count in (N, N + 7, p - 1):
            scatter = plans("reduce_scatter", algorithm, p, count, topology)
            gather = plans("allgather", algorithm, p, count, topology)
            for rs, ag in zip(scatter, gather):
                assert (sent(ag), received(ag)) == (received(rs), sent(rs))
                assert len(ag.rounds) == len(rs.rounds)


def test_hierarchical_uneven_nodes_balance_the_shares():
    """Nodes of 3 and 2 ranks: each rank of a node of k_j ranks sends (k_j - 1)/k_j n inside
    it, and across nodes n in all, as with even nodes (N - 1) n."""
    p, topology = 5, Topology.from_local_size(5, 3)
    all_plans = plans("reduce_scatter", "hierarchical", p, topology=topology)
    for plan in all_plans:
        node = topology.peers(plan.rank)
        assert sent(plan, set(node)) == (len(node) - 1) * N // len(node)
    assert sum(sent(plan, set(range(p)) - set(topology.peers(plan.rank))) for plan in all_plans) == N


# --- rooted collectives and alltoall -------------------------------------------------

@pytest.mark.parametrize("p", SIZES)
def test_broadcast_and_tree_reduce_bytes(p):
    b = N // p
    for root in sorted({0, p // 2, p - 1}):
        for plan in plans("broadcast", "tree", p, root=root):
            relative = (plan.rank - root) % p
            assert sent(plan) == children(relative, p) * N
            assert received(plan) == (N if relative else 0)
        assert len(plans("broadcast", "tree", p, root=root)[root].rounds) == math.ceil(math.log2(p))
        for plan in plans("reduce", "tree", p, root=root):
            relative = (plan.rank - root) % p
            assert sent(plan) == (N if relative else 0)
            assert received(plan) == children(relative, p) * N
        for plan in plans("broadcast", "scatter_allgather", p, root=root):
            relative = (plan.rank - root) % p
            scatter = (p - 1) * b if relative == 0 else (subtree(relative, p) - 1) * b
            assert sent(plan) == scatter + (p - 1) * b


@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("algorithm", REDUCE_SCATTERS)
def test_reduce_is_reduce_scatter_then_gather(algorithm, p):
    """The gather adds subtree(i) b to relative rank i's reduce-scatter bytes; the root
    receives the (p-1) other blocks."""
    b = N // p
    topology = Topology.from_local_size(p, 2)
    scatter = plans("reduce_scatter", algorithm, p, topology=topology)
    for root in sorted({0, p // 2, p - 1}):
        for rs, plan in zip(scatter, plans("reduce", algorithm, p, topology=topology, root=root)):
            relative = (plan.rank - root) % p
            assert sent(plan) == sent(rs) + (subtree(relative, p) * b if relative else 0)
            if relative == 0:
                assert received(plan) == received(rs) + (p - 1) * b


@pytest.mark.parametrize("p", SIZES)
def test_alltoall_pairwise_bytes_and_rounds(p):
    for plan in plans("alltoall", "pairwise", p):
        assert sent(plan) == received(plan) == (p - 1) * N // p
        assert len(plan.rounds) == p - 1 and plan.sends_input


# --- registry, labels, invariants ----------------------------------------------------

def test_registry_labels_every_plan():
    assert set(PLANNERS) == {"allreduce", "reduce_scatter", "allgather", "broadcast", "reduce",
                             "alltoall"}
    for collective, algorithm in NEW:
        plan = plan_for(collective, algorithm, 1, 4, 64, 4, None, 2)
        assert (plan.collective, plan.algorithm) == (collective, algorithm)
        assert plan.root == (2 if collective in ("broadcast", "reduce") else None)
        assert plan.sends_input == (collective == "alltoall")
        assert plan is plan_for(collective, algorithm, 1, 4, 64, 4, None, 2)
    assert plan_for("allreduce", "ring", 0, 4, 64, 4).collective == "allreduce"


def test_plans_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="root 4"):
        PLANNERS["broadcast"]["tree"](0, 4, 10, 4, None, 4)
    with pytest.raises(ValueError, match="rows"):
        PLANNERS["alltoall"]["pairwise"](0, 4, 10, 4, None)


def test_sends_input_allows_receiving_where_the_round_sends():
    """A copy-receive into a region the round sends is a race unless sends read the input."""
    rounds = (Round(sends=(Send(1, 0, 4),), recvs=(Recv(1, 0, 4, False),)),
              Round(sends=(Send(1, 4, 8),), recvs=(Recv(1, 4, 8, False),)))
    with pytest.raises(ValueError, match="copy-receive"):
        Plan("swap", 0, 2, 8, rounds)
    plan = Plan("swap", 0, 2, 8, rounds, collective="alltoall", sends_input=True)
    assert plan.prefetch == (False, True)  # round 1's receive does not touch round 0's


# --- the simulator prices every new plan ---------------------------------------------

LINK = LinkModel(alpha=5e-6, beta=1e-10)


@pytest.mark.parametrize("nodes, local", [(1, 1), (2, 3), (5, 1), (3, 2)])
@pytest.mark.parametrize("collective, algorithm", NEW)
def test_simulator_prices_every_new_plan(collective, algorithm, nodes, local):
    cluster = ClusterModel.uniform(nodes=nodes, ranks_per_node=local, intra=LINK,
                                   inter=LinkModel(alpha=20e-6, beta=1e-9), gamma=1e-10)
    p = cluster.size
    root = p - 1
    predicted = simulate(algorithm, cluster, N, collective=collective, root=root)
    expected = [4 * sent(plan) for plan in plans(collective, algorithm, p, N, cluster.topology, root)]
    assert list(predicted.bytes_sent) == expected
    assert predicted.collective == collective
    assert (predicted.time > 0) == (p > 1)
    if p > 1:
        factor = {"broadcast": 1, "reduce": 1, "reduce_scatter": (p - 1) / p,
                  "allgather": (p - 1) / p, "alltoall": (p - 1) / p}[collective]
        assert predicted.busbw() == pytest.approx(4 * N / predicted.time / 1e9 * factor)
