"""Simulator: closed-form bytes, engine timing on a case solvable by hand, symmetry, executor parity."""
from __future__ import annotations

import dataclasses
import math

import pytest

from collectives.algorithms import PLANNERS
from collectives.costmodel import ClusterModel, LinkModel
from collectives.simulator import simulate, step_list
from collectives.topology import Topology
from tests.mpirun import run_workers

LINK = LinkModel(alpha=5e-6, beta=1e-10)
SLOW = LinkModel(alpha=20e-6, beta=1e-9)


def cluster(nodes: int, local: int, *, grid=None, gamma: float = 1e-10, intra=LINK, inter=SLOW):
    return ClusterModel.uniform(nodes=nodes, ranks_per_node=local, grid=grid, intra=intra,
                                inter=inter, gamma=gamma)


SHAPES = [(1, 2), (2, 1), (3, 1), (1, 5), (2, 2), (2, 3), (4, 2), (3, 4), (8, 1), (2, 8), (5, 3),
          (16, 1), (4, 4)]


@pytest.mark.parametrize("algorithm", ["ring", "hierarchical", "torus2d"])
@pytest.mark.parametrize("nodes, local", SHAPES)
def test_bandwidth_optimal_bytes_per_rank(algorithm, nodes, local):
    """ring, hierarchical, torus2d: every rank sends 2 (p-1)/p n bytes (count divisible by p)."""
    p = nodes * local
    count = p * 3 * 1024
    n = 4 * count
    for symmetry in (True, False):
        predicted = simulate(algorithm, cluster(nodes, local), count, symmetry=symmetry)
        assert predicted.bytes_sent == (2 * (p - 1) * n // p,) * p
        assert sum(predicted.class_bytes.values()) == sum(predicted.bytes_sent)


@pytest.mark.parametrize("p", [2, 3, 4, 5, 6, 7, 8, 12, 16, 32])
@pytest.mark.parametrize("nbytes", [4 << 10, 4 << 20])
def test_halving_doubling_bytes(p, nbytes):
    """p' = 2^floor(log2 p) ranks send 2(p'-1)/p' n (halving) or log2 p' n (doubling, small);
    the 2r folding ranks add n each (even ones only fold in, odd ones send the result back)."""
    count = nbytes // 4
    pof2 = 1 << (p.bit_length() - 1)
    extra = p - pof2
    doubling = nbytes <= 16 << 10
    core = int(math.log2(pof2)) * nbytes if doubling else 2 * (pof2 - 1) * nbytes // pof2
    predicted = simulate("halving_doubling", cluster(p, 1), count, symmetry=False)
    expected = [nbytes if r < 2 * extra and r % 2 == 0 else
                core + (nbytes if r < 2 * extra else 0) for r in range(p)]
    assert list(predicted.bytes_sent) == expected


@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_ring_time_matches_hand_solution(p):
    """One segment per chunk, one link class: every round is alpha + (n/p) beta, and the p-1
    reduce-scatter rounds add (n/p) gamma: T = 2(p-1)(alpha + n beta/p) + (p-1) n gamma/p."""
    count = p * 1000
    chunk = 4 * count / p
    gamma = 3e-10
    predicted = simulate("ring", cluster(1, p, gamma=gamma), count)
    expected = 2 * (p - 1) * (LINK.alpha + chunk * LINK.beta) + (p - 1) * chunk * gamma
    assert predicted.time == pytest.approx(expected, rel=1e-12)
    assert predicted.critical_path.messages == 2 * (p - 1)


def test_segments_pipeline_and_queue_on_one_channel():
    """Two ranks, 4 MiB chunks of 1 MiB segments: the second segment queues behind the first,
    so a round costs alpha + chunk * beta (not 4 alphas); the last reduction trails it."""
    count = 2 * (4 << 20) // 4
    gamma = 1e-12
    predicted = simulate("ring", cluster(1, 2, gamma=gamma), count)
    round_time = LINK.alpha + (4 << 20) * LINK.beta
    assert predicted.time == pytest.approx(2 * round_time + (1 << 20) * gamma, rel=1e-9)
    assert predicted.critical_path.seconds_by_kind["queued"] == pytest.approx(
        2 * 3 * (1 << 20) * LINK.beta)


def test_zero_copy_link_has_no_transfer():
    """Over a zero-copy link a reduce-receive costs alpha + bytes * gamma (the receiver reads
    the peer's buffer while reducing) and a copy-receive alpha + bytes * beta."""
    zero_copy = LinkModel(alpha=5e-6, beta=1e-10, zero_copy=True)
    gamma = 4e-10
    count = 2 * 1000
    predicted = simulate("ring", cluster(1, 2, gamma=gamma, intra=zero_copy), count)
    chunk = 4 * count / 2
    assert predicted.time == pytest.approx(2 * zero_copy.alpha + chunk * (gamma + zero_copy.beta))
    assert {hop.kind for hop in predicted.critical_path.hops} <= {"latency", "zero-copy", "reduce", "copy"}


def test_cpu_copy_link_queues_transfers_with_reductions():
    """Over a host link (cpu_copy) the receiver's core moves the bytes: two ranks, 4 MiB
    chunks in 1 MiB segments cost alpha + chunk * gamma to reduce and alpha + chunk * beta
    to copy, serialised on the receiver (gamma: the copy out of the transport included)."""
    host = LinkModel(alpha=5e-6, beta=1e-10, cpu_copy=True)
    gamma = 3e-10
    count = 2 * (4 << 20) // 4
    predicted = simulate("ring", cluster(1, 2, gamma=gamma, intra=host, inter=host), count)
    chunk = 4 << 20
    assert predicted.time == pytest.approx(2 * host.alpha + chunk * (gamma + host.beta), rel=1e-9)
    by_kind = predicted.critical_path.seconds_by_kind
    assert "queued" not in by_kind and by_kind["reduce"] == pytest.approx(chunk * gamma)


def test_constants_follow_the_call_size():
    """by_size rows replace the flat beta, gamma, copy_beta and per-call cost for a call of
    that size (log-log between rows, the nearest row outside them); without rows nothing
    changes."""
    rows = ((1 << 20, 1e-10, 2e-10, 3e-10, 4e-10, 1e-4), (4 << 20, 4e-10, 8e-10, 12e-10, 16e-10, 4e-4))
    base = cluster(2, 2)
    table = dataclasses.replace(base, by_size=rows)
    assert base.at_message(1 << 20) is base and base.call_time(1 << 20) == base.call_overhead
    at_1m = table.at_message(1 << 20)
    assert (at_1m.intra.beta, at_1m.inter.beta, at_1m.gamma, at_1m.copy_beta,
            at_1m.call_overhead) == rows[0][1:]
    assert table.call_time(2 << 20) == pytest.approx(2e-4) and table.call_time(1 << 30) == 4e-4
    assert at_1m.intra.alpha == base.intra.alpha and at_1m.by_size == ()
    mid = table.at_message(2 << 20)  # halfway in log: the geometric mean
    assert mid.gamma == pytest.approx((3e-10 * 12e-10) ** 0.5)
    assert table.at_message(64 << 20).copy_beta == 16e-10
    assert table.at_message(8).intra.beta == 1e-10
    for count in (1 << 18, 1 << 19, 1 << 22):
        flat = table.at_message(4 * count)
        assert simulate("hierarchical", table, count).time == simulate("hierarchical", flat, count).time
    assert simulate("ring", table, 1 << 22).time > simulate("ring", table, 1 << 18).time * 4
    with pytest.raises(ValueError, match="increasing bytes"):
        dataclasses.replace(base, by_size=rows[::-1])


@pytest.mark.parametrize("copies, extra", [("in", 0.0), ("in+out", 1.5)])
def test_copies_into_and_out_of_the_work_buffer(copies, extra):
    """Two ranks, one segment per chunk. Reading the input where it lies (in), the executor
    sends from it and combines it with what it receives: no copy. With a shared work buffer
    (in+out) it loads the chunk it sends and the one it reduces (n bytes) and stores its
    reduced half out (the other half lands in out directly): 1.5 n."""
    count = 2 * 1000
    base = cluster(1, 2)
    with_copies = dataclasses.replace(base, copies=copies, copy_beta=1e-9)
    delta = simulate("ring", with_copies, count).time - simulate("ring", base, count).time
    assert delta == pytest.approx(extra * 4 * count * 1e-9)
    with pytest.raises(ValueError, match="copies must be one of none, in, in\\+out, got 'out'"):
        dataclasses.replace(base, copies="out")


def test_inter_node_link_dominates_the_ring():
    """A ring over 2 nodes waits on its slowest (inter-node) link every round."""
    predicted = simulate("ring", cluster(2, 4), 8 * 4096)
    inter = [hop for hop in predicted.critical_path.hops if hop.kind == "message"]
    assert inter and all(hop.link == "inter" for hop in inter)
    assert predicted.class_bytes["inter"] == 2 * 2 * 7 * 4 * 4096  # 2 boundary ranks, 14 chunks


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
@pytest.mark.parametrize("nodes, local, grid", [(4, 4, None), (8, 2, None), (2, 8, None),
                                                 (16, 1, None), (4, 2, (2, 4)), (3, 3, None)])
@pytest.mark.parametrize("count", [45 << 10, 45 << 16])  # divisible by every p here
def test_symmetry_classes_reproduce_the_full_simulation(algorithm, nodes, local, grid, count):
    model = cluster(nodes, local, grid=grid)
    fast = simulate(algorithm, model, count)
    full = simulate(algorithm, model, count, symmetry=False)
    assert fast.time == pytest.approx(full.time, rel=1e-12)
    assert fast.bytes_sent == full.bytes_sent
    assert fast.class_bytes == full.class_bytes
    assert full.simulated_ranks == nodes * local


def test_uneven_nodes_simulate_every_rank():
    model = ClusterModel(Topology.from_local_size(7, 3), intra=LINK, inter=SLOW, gamma=1e-10)
    predicted = simulate("hierarchical", model, 7000)
    assert predicted.simulated_ranks == 7 and predicted.symmetry == "none"
    assert predicted.time > 0


def test_4096_ranks():
    """Thousands of ranks: one representative per class of identically-behaving ranks."""
    model = cluster(512, 8)
    count = 4096 * 1024
    predicted = simulate("hierarchical", model, count)
    assert predicted.size == 4096 and predicted.simulated_ranks < 8
    assert predicted.bytes_sent == (2 * 4095 * 4 * count // 4096,) * 4096
    # Latency terms of the hierarchical schedule: 2(k-1) intra + 2(N-1) inter messages.
    links = [hop.link for hop in predicted.critical_path.hops if hop.kind == "message"]
    assert links.count("inter") == 2 * 511


def test_step_list_is_plan_steps():
    plan = PLANNERS["allreduce"]["ring"](1, 3, 10, 4, None)
    assert step_list(plan) == [(k, "send" if type(s).__name__ == "Send" else "recv", s.peer,
                                s.hi - s.lo, getattr(s, "reduce", False)) for k, s in plan.steps()]


def test_bad_input():
    with pytest.raises(ValueError, match="unknown algorithm to simulate 'rign'.*'ring'"):
        simulate("rign", cluster(1, 2), 10)
    with pytest.raises(ValueError, match="count >= 0"):
        simulate("ring", cluster(1, 2), -1)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        LinkModel.from_bandwidth(alpha_us=1, gbytes_per_s=0)


@pytest.mark.parametrize("np_, local_size", [(3, 2), (4, 2)])
def test_executor_issues_the_simulated_steps(np_, local_size):
    """A recording transport under the real executor logs the same sends and receives, in
    the same order and sizes, that the simulator consumes for that rank's plan."""
    run_workers(np_, "sim_steps", str(local_size),
                env={"COLLECTIVES_SHM": "0", "COLLECTIVES_TIMEOUT": "30"}, timeout=300)


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
@pytest.mark.parametrize("count", [0, 1, 2])
def test_empty_and_tiny_messages(algorithm, count):
    predicted = simulate(algorithm, cluster(2, 3), count)
    assert predicted.time >= 0 and sum(predicted.bytes_sent) >= 0


def test_one_link_class_lets_every_rank_shift():
    """With intra == inter the ring is one class even across nodes; bytes per class still
    follow the nodes (each node boundary of the ring is an inter-node message)."""
    model = cluster(4, 4, intra=LINK, inter=LINK)
    count = 16 * 1024
    fast = simulate("ring", model, count)
    full = simulate("ring", model, count, symmetry=False)
    assert fast.symmetry == "rank rotation" and fast.simulated_ranks == 1
    assert fast.time == pytest.approx(full.time, rel=1e-12)
    assert fast.class_bytes == full.class_bytes
    assert full.class_bytes["inter"] == 4 * 2 * 15 * 4 * 1024


@pytest.mark.parametrize("collective, algorithm",
                         [(c, a) for c in sorted(PLANNERS) for a in sorted(PLANNERS[c])])
def test_ranks_dealt_round_robin_shift_as_one_class_where_the_plan_allows(collective,
                                                                          algorithm):
    """Nodes of ranks r % 4 (`--map-by node`): a shift by one rank maps nodes onto nodes, so
    the ring is one class; every rank was simulated (256 ranks in 32 nodes took `auto` 8 s
    per new size; the 109th review). Plans that do not shift so fall back, alike."""
    from dataclasses import replace
    from collectives.costmodel import DEFAULT_CALIBRATION
    p = 16
    model = replace(DEFAULT_CALIBRATION, size=p).cluster(
        Topology(tuple(r % 4 for r in range(p))))
    fast = simulate(algorithm, model, 8 * p * 1024, collective=collective)
    full = simulate(algorithm, model, 8 * p * 1024, collective=collective, symmetry=False)
    assert fast.time == pytest.approx(full.time, rel=1e-12)
    assert fast.bytes_sent == full.bytes_sent and fast.class_bytes == full.class_bytes
    if algorithm == "ring" and collective not in ("broadcast", "reduce"):  # (rooted)
        assert fast.symmetry == "rank rotation" and fast.simulated_ranks == 1
    stranded = Topology((0, 1, 0, 1, 1, 0))  # a shift maps node 0 onto both nodes
    assert simulate(algorithm, replace(DEFAULT_CALIBRATION, size=6).cluster(stranded), 600,
                    collective=collective).symmetry == "none"


def test_torus_links_price_hops():
    """On a wired 4x4 torus a message between ranks h hops apart costs alpha + h n beta:
    halving-doubling's partners 2 columns away pay twice, its neighbours once."""
    base = cluster(4, 4, grid=(4, 4), intra=LINK, inter=LINK, gamma=0.0)
    wired = dataclasses.replace(base, torus_links=True)
    assert [wired.hops(0, q) for q in (1, 2, 3, 4, 5, 8, 10)] == [1, 2, 1, 1, 2, 2, 4]
    count = 16 * 4096
    for algorithm in ("ring", "torus2d", "halving_doubling"):
        fast = simulate(algorithm, wired, count)
        full = simulate(algorithm, wired, count, symmetry=False)
        assert fast.time == pytest.approx(full.time, rel=1e-12)
    assert simulate("torus2d", wired, count).time == pytest.approx(simulate("torus2d", base, count).time)
    assert simulate("halving_doubling", wired, count).time > simulate("halving_doubling", base, count).time


@pytest.mark.parametrize("collective, algorithm",
                         [(c, a) for c in sorted(PLANNERS) for a in sorted(PLANNERS[c])])
def test_every_collective_simulated_by_class_or_by_rank_takes_one_time(collective, algorithm):
    """With the default calibration (a core copies every on-node message), a receive
    posted ahead took the rank's compute engine before its round's load in event order:
    all-gather by halving_doubling ran 259 us by class, 438 us rank by rank, and got faster
    from 7 elements to 8 (the forty-eighth review)."""
    from dataclasses import replace
    from collectives.costmodel import DEFAULT_CALIBRATION
    for p, local in ((4, 4), (8, 4)):
        model = replace(DEFAULT_CALIBRATION, size=p).cluster(Topology.from_local_size(p, local))
        for count in (8 * p, 1 << 16):
            fast = simulate(algorithm, model, count, collective=collective)
            full = simulate(algorithm, model, count, collective=collective, symmetry=False)
            assert fast.time == pytest.approx(full.time, rel=1e-5), (p, local, count)
    model = replace(DEFAULT_CALIBRATION, size=8).cluster(Topology.from_local_size(8, 4))
    if collective in ("allreduce", "allgather", "reduce_scatter"):
        times = [simulate(algorithm, model, n, collective=collective).time for n in (7, 8)]
        assert times[0] <= times[1]
