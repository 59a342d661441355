"""Simulator: every rank's real plan run on virtual clocks over a modelled cluster.

The simulator consumes the very `Plan` objects the executor runs (`step_list(plan)` is
everything it reads of them) and replays the executor's rules with no data and no MPI:

- round k's sends are posted when round k-1 has ended (its receives reduced, its sends
  complete); round k's receives are posted then too, or a round earlier when
  `plan.prefetch[k]`; receives are posted in plan order, and a reduce-receive needs one of
  the executor's SCRATCH_SLOTS scratch slots, free again once an earlier segment is reduced
  (the executor's own rule: collectives.execution.posting);
- a message starts when both its send and its receive are posted and takes
  ``alpha + bytes * beta`` of its link class; messages between one pair of ranks queue (FIFO);
- a reduce-receive is reduced on the receiver's one compute engine, ``bytes * gamma``, after
  it lands (and after the round's sends when `plan.reduce_after_send[k]`);
- over a zero-copy link the receiver reduces (or copies) straight from the sender's buffer
  (except in rounds that reduce after their own sends), and over a `cpu_copy` link (a host
  transport) the receiver's core moves the bytes: latency alpha, then the receiver's
  compute does the work (beta per byte to copy, gamma to reduce), queued with its other
  work, and the send completes then;
- the per-byte constants are those of a call of this many bytes (`ClusterModel.at_message`).

The result is the slowest rank's finish time, bytes per rank and per link class, the busiest
link and the critical path. Ranks whose plans are the same up to a relabelling that the
cluster does not notice (a shift by whole nodes, or an XOR of node bits) run identically, so
only one rank per class is simulated; the relabelling is checked on sample ranks' real plans,
and without one that holds every rank is simulated. That is what makes 4096 ranks take seconds.

Example::

    >>> from collectives.costmodel import ClusterModel, LinkModel
    >>> link = LinkModel.from_bandwidth(alpha_us=5, gbytes_per_s=10)
    >>> cluster = ClusterModel.uniform(nodes=4, ranks_per_node=2, intra=link, inter=link,
    ...                                gamma=1e-10)
    >>> p = simulate("ring", cluster, count=1 << 20)
    >>> p.bytes_sent[0] == 2 * 7 * (4 << 20) // 8
    True
"""
from __future__ import annotations

from ..algorithms import PLANNERS
from ..costmodel import ClusterModel
from ..errors import unknown_choice
from .engine import Engine, critical_path
from .flows import NodeFlows
from .prediction import CriticalPath, Hop, Prediction
from .symmetry import SymmetryBroken, identity, pick_group
from .trace import Step, Trace, step_list

__all__ = ["Step", "Hop", "CriticalPath", "Prediction", "step_list", "simulate", "Trace"]


def simulate(algorithm: str, cluster: ClusterModel, count: int, *, itemsize: int = 4,
             wire_itemsize: int | None = None, symmetry: bool = True,
             samples: int = 2, collective: str = "allreduce", root: int = 0) -> Prediction:
    """Predict one `collective` (rooted at `root` where it has one) of `count` elements of
    `itemsize` bytes with `algorithm`'s plans; `count` as the plans count it (the whole
    buffer for allgather and alltoall).

    `wire_itemsize` is the bytes per element on the wire (2 for fp16 compression). With
    `symmetry`, one rank per class of identically-behaving ranks is simulated, after
    checking the relabelling on the ranks the group's generators reach from each
    representative and on `samples` random ranks; otherwise (or if the relabelling then
    fails to match messages) every rank.
    """
    if collective not in PLANNERS:
        raise unknown_choice("collective to simulate", collective, PLANNERS)
    builders = PLANNERS[collective]
    if algorithm not in builders:
        raise unknown_choice("algorithm to simulate", algorithm, builders)
    wire = itemsize if wire_itemsize is None else wire_itemsize
    if count < 0 or itemsize < 1 or wire < 1:
        raise ValueError(f"need count >= 0, itemsize >= 1 and wire_itemsize >= 1, got "
                         f"{count}, {itemsize}, {wire_itemsize}")
    cluster = cluster.at_message(count * itemsize)
    size = cluster.size
    traces: dict[int, Trace] = {}

    def trace(rank: int) -> Trace:
        if rank not in traces:
            plan = builders[algorithm](rank, size, count, itemsize, cluster.topology, root)
            traces[rank] = Trace(plan, wire, cluster.copies, itemsize, staged=wire != itemsize)
        return traces[rank]

    group = pick_group(cluster, trace, samples, wire) if symmetry else identity(size)
    try:
        engine = Engine(cluster, group, {rep: trace(rep) for rep in group.reps},
                        _flows(cluster, trace, every_node=group.name == "none"))
        engine.run()
    except SymmetryBroken:
        # A relabelling the probes missed breaks message matching: simulate every rank.
        engine = Engine(cluster, identity(size), {rank: trace(rank) for rank in range(size)},
                        _flows(cluster, trace, every_node=True))
        engine.run()
    return _prediction(algorithm, collective, cluster, count, itemsize, engine)


def _flows(cluster: ClusterModel, trace, *, every_node: bool) -> NodeFlows | None:
    """The flows sharing each node's link, when a link class is one per node: counted on
    every node, or on node 0 when every node behaves alike (a node-preserving symmetry)."""
    if not (cluster.inter.per_node or cluster.intra.per_node):
        return None
    topology = cluster.topology
    ranks = range(topology.size) if every_node else topology.nodes[0]
    return NodeFlows(topology.node_of, ((r, trace(r)) for r in ranks),
                     same_everywhere=not every_node)


def _prediction(algorithm: str, collective: str, cluster: ClusterModel, count: int,
                itemsize: int, engine: Engine) -> Prediction:
    group = engine.group
    size = cluster.size
    node_of = cluster.topology.node_of
    per_rep: dict[int, int] = {}
    class_bytes = {"intra": 0, "inter": 0}
    busiest = (0, 0, 0)
    for rep, st in engine.state.items():
        pair: dict[int, int] = {}
        for peer, nbytes in zip(st.trace.send_peer, st.trace.send_bytes):
            pair[peer] = pair.get(peer, 0) + nbytes
        per_rep[rep] = sum(pair.values())
        orbit = [rank for rank in range(size) if group.rep_of(rank) == rep]
        for peer, nbytes in pair.items():
            if nbytes > busiest[2]:
                busiest = (rep, peer, nbytes)
            # Each rank of the orbit sends this to its relabelled peer.
            intra = sum(node_of[q] == node_of[group.forward(q, peer)] for q in orbit)
            class_bytes["intra"] += intra * nbytes
            class_bytes["inter"] += (len(orbit) - intra) * nbytes
    last = max((st.end for st in engine.state.values()), key=lambda event: event.time)
    return Prediction(
        algorithm=algorithm, collective=collective, size=size, count=count, itemsize=itemsize,
        time=last.time,
        bytes_sent=tuple(per_rep[group.rep_of(rank)] for rank in range(size)),
        class_bytes=class_bytes, busiest_link=busiest, critical_path=critical_path(last),
        simulated_ranks=len(group.reps), symmetry=group.name)
