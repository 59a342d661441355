"""Simulator: every rank's real plan run on virtual clocks over a modelled cluster.

The simulator consumes the very `Plan` objects the executor runs (`step_list(plan)` is
everything it reads of them) and replays the executor's rules with no data and no MPI:

- round k's sends are posted when round k-1 has ended (its receives reduced, its sends
  complete); round k's receives are posted then too, or a round earlier when
  `plan.prefetch[k]`; receives are posted in plan order, and a reduce-receive needs one of
  the executor's SCRATCH_SLOTS scratch slots, free again once an earlier segment is reduced;
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

import random
from dataclasses import dataclass
from operator import itemgetter
from typing import Callable

from .algorithms import PLANNERS
from .algorithms.executor import SCRATCH_SLOTS, IoSchedule
from .algorithms.plan import Plan, Send
from .costmodel import ClusterModel
from .errors import unknown_choice

__all__ = ["Step", "Hop", "CriticalPath", "Prediction", "step_list", "simulate", "simulated_steps"]

Step = tuple[int, str, int, int, bool]  # (round, "send" | "recv", peer, elements, reduce)
_TIME = itemgetter(0)
# A timeline node: (time, parent node, kind, rank, round, bytes, link class name).
_Node = tuple


def step_list(plan: Plan) -> list[Step]:
    """What the simulator reads of a plan: every step in issue order (Plan.steps)."""
    return [(k, "send", s.peer, s.hi - s.lo, False) if isinstance(s, Send)
            else (k, "recv", s.peer, s.hi - s.lo, s.reduce) for k, s in plan.steps()]


@dataclass(frozen=True)
class Hop:
    """One piece of the critical path: `kind` ("message", "queued", "reduce", "copy",
    "latency") on `rank` (a class representative) in `round`, taking `seconds`."""

    rank: int
    round: int
    kind: str
    link: str
    nbytes: int
    seconds: float


@dataclass(frozen=True)
class CriticalPath:
    """The chain of steps that set the finish time, and its time by kind of step."""

    hops: tuple[Hop, ...]

    @property
    def seconds_by_kind(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for hop in self.hops:
            total[hop.kind] = total.get(hop.kind, 0.0) + hop.seconds
        return total

    @property
    def messages(self) -> int:
        return sum(hop.kind in ("message", "latency") for hop in self.hops)

    def summary(self) -> str:
        """E.g. ``14 messages (intra 12, inter 2); message 80%, reduce 20%``."""
        links: dict[str, int] = {}
        for hop in self.hops:
            if hop.kind in ("message", "latency"):
                links[hop.link] = links.get(hop.link, 0) + 1
        by_kind = self.seconds_by_kind
        total = sum(by_kind.values()) or 1.0
        shares = ", ".join(f"{kind} {100 * t / total:.0f}%" for kind, t in
                           sorted(by_kind.items(), key=lambda kv: -kv[1]) if t > 0)
        link_text = ", ".join(f"{name} {n}" for name, n in sorted(links.items()))
        return f"{self.messages} messages ({link_text}); {shares}"


@dataclass(frozen=True)
class Prediction:
    """What a simulated all-reduce costs: `time` in seconds (the plan, slowest rank)."""

    algorithm: str
    size: int
    count: int
    itemsize: int
    time: float
    bytes_sent: tuple[int, ...]
    class_bytes: dict[str, int]
    busiest_link: tuple[int, int, int]  # (src, dst, bytes)
    critical_path: CriticalPath
    simulated_ranks: int
    symmetry: str

    @property
    def nbytes(self) -> int:
        return self.count * self.itemsize

    def busbw(self, seconds: float | None = None) -> float:
        """nccl-tests' bus bandwidth in GB/s for `seconds` (default: the plan's time)."""
        seconds = self.time if seconds is None else seconds
        if seconds <= 0 or self.size < 2:
            return 0.0
        return self.nbytes / seconds / 1e9 * 2 * (self.size - 1) / self.size


class _Trace:
    """One rank's plan as flat lists, in the order the executor issues it (Plan.steps), and
    the bytes the executor copies between input, work buffer and output (IoSchedule)."""

    def __init__(self, plan: Plan, itemsize: int, copies: str = "none", work_itemsize: int = 0):
        self.plan = plan
        self.rounds = len(plan.rounds)
        self.prefetch = plan.prefetch
        self.gate = plan.reduce_after_send
        self.send_round, self.send_peer, self.send_bytes = [], [], []
        self.send_index: dict[tuple[int, int], int] = {}
        self.round_sends: list[list[int]] = [[] for _ in range(self.rounds)]
        self.recv_round, self.recv_peer, self.recv_bytes, self.recv_reduce = [], [], [], []
        self.recv_chan, self.recv_slot_prev = [], []
        self.round_recv_end = [0] * self.rounds
        sent: dict[int, int] = {}
        received: dict[int, int] = {}
        slot_users: list[int] = []
        n_sends = 0
        for k, step in plan.steps():
            peer = step.peer
            if type(step) is Send:
                j = sent.get(peer, 0)
                sent[peer] = j + 1
                self.send_index[peer, j] = n_sends
                self.round_sends[k].append(n_sends)
                self.send_round.append(k)
                self.send_peer.append(peer)
                self.send_bytes.append((step.hi - step.lo) * itemsize)
                n_sends += 1
            else:
                j = received.get(peer, 0)
                received[peer] = j + 1
                i = len(self.recv_round)
                reduce = step.reduce
                self.recv_slot_prev.append(
                    slot_users[-SCRATCH_SLOTS] if reduce and len(slot_users) >= SCRATCH_SLOTS else -1)
                if reduce:
                    slot_users.append(i)
                self.recv_round.append(k)
                self.recv_peer.append(peer)
                self.recv_bytes.append((step.hi - step.lo) * itemsize)
                self.recv_reduce.append(reduce)
                self.recv_chan.append(j)
                self.round_recv_end[k] = i + 1
        for k in range(1, self.rounds):  # rounds without receives end where the last did
            self.round_recv_end[k] = max(self.round_recv_end[k], self.round_recv_end[k - 1])
        self._copies(plan, copies, work_itemsize or itemsize)

    def _copies(self, plan: Plan, copies: str, itemsize: int) -> None:
        """Bytes copied src -> work before each round's sends and each reduce, work -> out
        after each receive, and at the end (executor.IoSchedule; none without copies)."""
        nrecv = len(self.recv_round)
        self.load_round, self.load_recv, self.store_recv = [0] * self.rounds, [0] * nrecv, [0] * nrecv
        self.tail = 0
        if copies == "none" or not self.rounds:
            return
        io = IoSchedule.of(plan, from_src=copies == "in")  # "in+out": peers read work in place

        def nbytes(ranges) -> int:
            return itemsize * sum(hi - lo for lo, hi in ranges)

        self.load_round = [nbytes(r) for r in io.load_round]
        self.load_recv = [nbytes(r) for r in io.load_recv]
        if copies == "in+out":
            self.store_recv = [nbytes(r) for r in io.store_recv]
        self.tail = nbytes(io.tail)

    def consumed(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int, bool]]]:
        """(sends, receives) as the engine reads them: (round, peer, bytes[, reduce]) each."""
        return (list(zip(self.send_round, self.send_peer, self.send_bytes)),
                list(zip(self.recv_round, self.recv_peer, self.recv_bytes, self.recv_reduce)))


# ---------------------------------------------------------------------------- symmetry

@dataclass(frozen=True)
class _Group:
    """Relabellings that the cluster does not notice; `forward(q, x)` maps rank x of
    rep_of(q)'s frame to q's frame, `backward` is its inverse."""

    name: str
    reps: tuple[int, ...]
    rep_of: Callable[[int], int]
    forward: Callable[[int, int], int]
    backward: Callable[[int, int], int]
    generators: tuple[int, ...] = ()  # ranks whose relabelling generates the group from rank 0

    def probes(self) -> list[int]:
        """Every representative moved by every generator: the ranks checked before use."""
        return [self.forward(g, rep) for rep in self.reps for g in self.generators]


def _identity(size: int) -> _Group:
    return _Group("none", tuple(range(size)), lambda q: q, lambda q, x: x, lambda q, x: x)


def _candidate_groups(cluster: ClusterModel) -> list[_Group]:
    """Relabellings to try, fewest classes first; each is accepted only if the probed ranks'
    plans and the links they use match (_same_up_to)."""
    p = cluster.size
    local = len(cluster.topology.nodes[0])
    nodes = p // local
    # With one link class any shift of ranks goes unnoticed (nodes only shape the plans).
    rotation = [_Group("rank rotation", (0,), lambda q: 0, lambda q, x: (x + q) % p,
                       lambda q, x: (x - q) % p, (1 % p,))] if cluster.intra == cluster.inter else []
    if any(node != rank // local for rank, node in enumerate(cluster.topology.node_of)) or p % local:
        return rotation
    power2 = (local & (local - 1)) == 0 and (nodes & (nodes - 1)) == 0

    def rotate(q: int, x: int, sign: int) -> int:
        n = (x // local + sign * (q // local)) % nodes
        return n * local + (x % local + sign * (q % local)) % local

    bits = [1 << i for i in range(p.bit_length() - 1)]
    node_bits = [b for b in bits if b >= local]
    groups = [_Group("node and local rotation", (0,), lambda q: 0, lambda q, x: rotate(q, x, 1),
                     lambda q, x: rotate(q, x, -1), (1 % p, local % p)), *rotation]
    if power2:
        groups.append(_Group("xor", (0,), lambda q: 0, lambda q, x: x ^ q, lambda q, x: x ^ q,
                             tuple(bits)))
    groups.append(_Group("node shift", tuple(range(local)), lambda q: q % local,
                         lambda q, x: (x + q - q % local) % p, lambda q, x: (x - q + q % local) % p,
                         (local % p,)))
    if power2:
        groups.append(_Group("node xor", tuple(range(local)), lambda q: q % local,
                             lambda q, x: x ^ (q - q % local), lambda q, x: x ^ (q - q % local),
                             tuple(node_bits)))
    return groups


def _same_up_to(group: _Group, q: int, mine: _Trace, rep: _Trace, itemsize: int,
                cluster: ClusterModel) -> bool:
    """Whether q's plan is its representative's with peers relabelled (lengths +-1 element),
    each over a link that costs the same (link class, torus hops)."""
    me = group.rep_of(q)
    for peer in set(rep.send_peer) | set(rep.recv_peer):
        mapped = group.forward(q, peer)
        if (cluster.link(me, peer) != cluster.link(q, mapped)
                or cluster.hops(me, peer) != cluster.hops(q, mapped)):
            return False
    if (mine.rounds, mine.prefetch, mine.gate, mine.send_round, mine.recv_round, mine.recv_reduce) != (
            rep.rounds, rep.prefetch, rep.gate, rep.send_round, rep.recv_round, rep.recv_reduce):
        return False
    forward = group.forward
    return (all(a == forward(q, b) for a, b in zip(mine.send_peer, rep.send_peer))
            and all(a == forward(q, b) for a, b in zip(mine.recv_peer, rep.recv_peer))
            and all(abs(a - b) <= itemsize for a, b in zip(mine.send_bytes, rep.send_bytes))
            and all(abs(a - b) <= itemsize for a, b in zip(mine.recv_bytes, rep.recv_bytes)))


# ---------------------------------------------------------------------------- the engine

class _RankState:
    __slots__ = ("trace", "links", "start", "send_post", "arrival", "done", "send_done", "chan",
                 "compute", "posted", "i_arr", "i_proc", "end")

    def __init__(self, trace: _Trace, rank: int, cluster: ClusterModel):
        self.trace = trace
        node_of = cluster.topology.node_of
        self.links = [(cluster.intra, "intra", cluster.hops(q, rank)) if node_of[q] == node_of[rank]
                      else (cluster.inter, "inter", cluster.hops(q, rank)) for q in trace.recv_peer]
        self.start: list[_Node] = [(0.0, None, "start", rank, 0, 0, "")]  # start[k]: round k starts
        self.arrival: list[_Node] = []
        self.done: list[_Node] = []
        self.send_done: list[_Node | None] = [None] * len(trace.send_round)
        self.chan: dict[int, _Node] = {}
        self.compute: _Node = self.start[0]
        self.posted: _Node = self.start[0]
        self.send_post: list[_Node] = []  # send_post[k]: round k's sends go out (after loads)
        self.i_arr = 0
        self.i_proc = 0
        self.end: _Node | None = None


class _Engine:
    def __init__(self, cluster: ClusterModel, group: _Group, traces: dict[int, _Trace]):
        self.cluster = cluster
        self.group = group
        self.state = {rep: _RankState(traces[rep], rep, cluster) for rep in group.reps}
        for st in self.state.values():
            self._begin_round(st)

    def run(self) -> None:
        pending = [rep for rep, st in self.state.items() if st.trace.rounds]
        while pending:
            progressed = [self._advance(rep) for rep in pending]
            if not any(progressed):
                stuck = {rep: (len(self.state[rep].start) - 1, self.state[rep].trace.rounds)
                         for rep in pending[:8]}
                raise AssertionError(f"simulated plans deadlock: (rank: (round, rounds)) {stuck}")
            pending = [rep for rep in pending
                       if len(self.state[rep].start) <= self.state[rep].trace.rounds]

    def _advance(self, c: int) -> bool:
        st = self.state[c]
        tr = st.trace
        progressed = False
        moved = True
        while moved:
            moved = self._arrivals(c, st, tr) | self._reductions(c, st, tr) | self._end_round(st, tr)
            progressed |= moved
        return progressed

    def _arrivals(self, c: int, st: _RankState, tr: _Trace) -> bool:
        """Post receives in plan order and compute when each message lands."""
        moved = False
        group = self.group
        while st.i_arr < len(tr.recv_round):
            i = st.i_arr
            k = tr.recv_round[i]
            base_round = k - 1 if k > 0 and tr.prefetch[k] else k
            if base_round >= len(st.start):
                break
            slot_prev = tr.recv_slot_prev[i]
            if slot_prev >= st.i_proc:
                break
            q = tr.recv_peer[i]
            sender_rep = group.rep_of(q)
            sender = self.state[sender_rep]
            s = sender.trace.send_index[group.backward(q, c), tr.recv_chan[i]]
            send_round = sender.trace.send_round[s]
            if send_round >= len(sender.send_post):
                break
            post = max(st.posted, st.start[base_round], key=_TIME)
            if slot_prev >= 0:
                post = max(post, st.done[slot_prev], key=_TIME)
            st.posted = post
            ready = max(post, sender.send_post[send_round], key=_TIME)
            nbytes = tr.recv_bytes[i]
            link, name, hops = st.links[i]
            beta = link.beta * hops
            # The executor takes no peer view where it waits for its own sends before
            # reducing: that receive copies like any other.
            if link.on_receiver and not (tr.recv_reduce[i] and tr.gate[k]):
                node = (ready[0] + link.alpha, ready, "latency", c, k, 0, name)
                per_byte = self.cluster.gamma if tr.recv_reduce[i] else link.beta
                completes = (node[0] + nbytes * per_byte, node, "zero-copy", c, k, nbytes, name)
            else:
                node = (ready[0] + link.alpha + nbytes * beta, ready, "message", c, k, nbytes, name)
                previous = st.chan.get(q)
                if previous is not None and previous[0] + nbytes * beta > node[0]:
                    node = (previous[0] + nbytes * beta, previous, "queued", c, k, nbytes, name)
                st.chan[q] = node
                completes = node
            sender.send_done[s] = completes
            st.arrival.append(node)
            st.i_arr += 1
            moved = True
        return moved

    def _reductions(self, c: int, st: _RankState, tr: _Trace) -> bool:
        """Reduce (or, zero-copy, copy) landed segments in order on the one compute engine,
        with the copies in and out of the work buffer that go with them."""
        moved = False
        copy_beta = self.cluster.copy_beta
        while st.i_proc < st.i_arr:
            i = st.i_proc
            k = tr.recv_round[i]
            arrival = st.arrival[i]
            link = st.links[i][0]
            nbytes = tr.recv_bytes[i]
            copied = (tr.load_recv[i] + tr.store_recv[i]) * copy_beta
            if tr.recv_reduce[i] or link.on_receiver or copied:
                inputs = [arrival, st.compute]
                if tr.recv_reduce[i] and tr.gate[k]:
                    sends = [st.send_done[s] for s in tr.round_sends[k]]
                    if any(node is None for node in sends):
                        break
                    inputs += sends
                begin = max(inputs, key=_TIME)
                gamma = self.cluster.gamma
                if tr.recv_reduce[i] and tr.gate[k] and link.cpu_copy:
                    gamma = max(gamma - link.beta, 0.0)  # the message's copy was priced already
                if tr.recv_reduce[i]:
                    work, kind = nbytes * gamma, "reduce"
                else:
                    work, kind = (nbytes * link.beta if link.on_receiver else 0.0), "copy"
                done = (begin[0] + work + copied, begin, kind, c, k, nbytes, "")
                st.compute = done
            else:
                done = arrival
            st.done.append(done)
            st.i_proc += 1
            moved = True
        return moved

    def _begin_round(self, st: _RankState) -> None:
        """Round k starts: load what its sends read first, then post them; or finish."""
        k = len(st.start) - 1
        start = st.start[k]
        tr = st.trace
        copy_beta = self.cluster.copy_beta
        if k < tr.rounds:
            if tr.load_round[k]:
                begin = max(start, st.compute, key=_TIME)
                start = st.compute = (begin[0] + tr.load_round[k] * copy_beta, begin, "copy-in",
                                      begin[3], k, tr.load_round[k], "")
            st.send_post.append(start)
        elif tr.tail:
            st.end = (start[0] + tr.tail * copy_beta, start, "copy-in", start[3], k, tr.tail, "")
        else:
            st.end = start

    def _end_round(self, st: _RankState, tr: _Trace) -> bool:
        """End the current round once its receives are done and its sends complete."""
        k = len(st.start) - 1
        if k >= tr.rounds or st.i_proc < tr.round_recv_end[k]:
            return False
        first = tr.round_recv_end[k - 1] if k > 0 else 0
        ends = [st.send_post[k], *st.done[first:tr.round_recv_end[k]]]
        for s in tr.round_sends[k]:
            if st.send_done[s] is None:
                return False
            ends.append(st.send_done[s])
        st.start.append(max(ends, key=_TIME))
        self._begin_round(st)
        return True


def _critical_path(end: _Node) -> CriticalPath:
    hops = []
    node = end
    while node[1] is not None:
        parent = node[1]
        seconds = node[0] - parent[0]
        if seconds > 0:
            hops.append(Hop(node[3], node[4], node[2], node[6], node[5], seconds))
        node = parent
    return CriticalPath(tuple(reversed(hops)))


# ---------------------------------------------------------------------------- entry point

def simulate(algorithm: str, cluster: ClusterModel, count: int, *, itemsize: int = 4,
             wire_itemsize: int | None = None, symmetry: bool = True,
             samples: int = 2) -> Prediction:
    """Predict one all-reduce of `count` elements of `itemsize` bytes with `algorithm`'s plans.

    `wire_itemsize` is the bytes per element on the wire (2 for fp16 compression). With
    `symmetry`, one rank per class of identically-behaving ranks is simulated, after
    checking the relabelling on the ranks the group's generators reach from each
    representative and on `samples` random ranks; otherwise (or if the relabelling then
    fails to match messages) every rank.
    """
    if algorithm not in PLANNERS:
        raise unknown_choice("algorithm to simulate", algorithm, PLANNERS)
    if count < 0 or itemsize < 1:
        raise ValueError(f"need count >= 0 and itemsize >= 1, got {count}, {itemsize}")
    wire = itemsize if wire_itemsize is None else wire_itemsize
    cluster = cluster.at_message(count * itemsize)
    size = cluster.size
    traces: dict[int, _Trace] = {}

    def trace(rank: int) -> _Trace:
        if rank not in traces:
            plan = PLANNERS[algorithm](rank, size, count, itemsize, cluster.topology)
            traces[rank] = _Trace(plan, wire, cluster.copies, itemsize)
        return traces[rank]

    group = _pick_group(cluster, trace, samples, wire) if symmetry else _identity(size)
    engine = _Engine(cluster, group, {rep: trace(rep) for rep in group.reps})
    try:
        engine.run()
    except (AssertionError, KeyError):
        if group.name == "none":
            raise
        # A relabelling the probes missed breaks message matching: simulate every rank.
        engine = _Engine(cluster, _identity(size), {rank: trace(rank) for rank in range(size)})
        engine.run()
    return _prediction(algorithm, cluster, count, itemsize, engine)


def _pick_group(cluster: ClusterModel, trace: Callable[[int], _Trace], samples: int,
                itemsize: int) -> _Group:
    """The symmetry with the fewest classes that the probed ranks' real plans obey: every
    representative moved by each generator of the group, and `samples` random ranks."""
    size = cluster.size
    rng = random.Random(size * 7919 + len(cluster.topology.nodes))
    randoms = [rng.randrange(size) for _ in range(samples)]
    for group in _candidate_groups(cluster):
        checks = dict.fromkeys(q for q in [*group.probes(), size - 1, *randoms]
                               if group.rep_of(q) != q)
        if all(_same_up_to(group, q, trace(q), trace(group.rep_of(q)), itemsize, cluster)
               for q in checks):
            return group
    return _identity(size)


def _prediction(algorithm: str, cluster: ClusterModel, count: int, itemsize: int,
                engine: _Engine) -> Prediction:
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
    last = max((st.end for st in engine.state.values()), key=_TIME)
    return Prediction(
        algorithm=algorithm, size=size, count=count, itemsize=itemsize, time=last[0],
        bytes_sent=tuple(per_rep[group.rep_of(rank)] for rank in range(size)),
        class_bytes=class_bytes, busiest_link=busiest, critical_path=_critical_path(last),
        simulated_ranks=len(group.reps), symmetry=group.name)


def simulated_steps(algorithm: str, cluster: ClusterModel, count: int, rank: int, *,
                    itemsize: int = 4) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int, bool]]]:
    """One rank's (sends, receives) exactly as the engine reads them from its plan:
    (round, peer, bytes) and (round, peer, bytes, reduce), in issue order."""
    plan = PLANNERS[algorithm](rank, cluster.size, count, itemsize, cluster.topology)
    return _Trace(plan, itemsize).consumed()
