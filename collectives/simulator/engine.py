"""The simulator's engine: every simulated rank's plan on virtual clocks.

It replays the executor's rules with no data and no MPI (see the package docstring): sends
post when their round starts, receives when `Posting` opens them and a scratch slot is
free, messages cost ``alpha + bytes * beta`` of their link class and queue per pair, and
reductions run on each rank's one compute engine. Every step is an `Event` whose `parent`
is the event it waited for, so the critical path is a walk back from the last one.
"""
from __future__ import annotations

from operator import attrgetter
from typing import NamedTuple

from ..costmodel import ClusterModel
from .flows import NodeFlows
from .prediction import CriticalPath, Hop
from .symmetry import Group, SymmetryBroken
from .trace import Trace

__all__ = ["Event", "Engine", "critical_path"]


class Event(NamedTuple):
    """A point on a rank's virtual timeline, and the event it waited for."""

    time: float
    parent: "Event | None"
    kind: str  # start, latency, zero-copy, message, queued, reduce, copy, copy-in
    rank: int
    round: int
    nbytes: int
    link: str


_TIME = attrgetter("time")


class _RankState:
    __slots__ = ("trace", "links", "start", "send_post", "arrival", "done", "send_done", "chan",
                 "compute", "posted", "i_arr", "i_proc", "end")

    def __init__(self, trace: Trace, rank: int, cluster: ClusterModel):
        self.trace = trace
        node_of = cluster.topology.node_of
        self.links = [(cluster.intra, "intra", cluster.hops(q, rank)) if node_of[q] == node_of[rank]
                      else (cluster.inter, "inter", cluster.hops(q, rank)) for q in trace.recv_peer]
        self.start: list[Event] = [Event(0.0, None, "start", rank, 0, 0, "")]  # start[k]: round k starts
        self.arrival: list[Event] = []
        self.done: list[Event] = []
        self.send_done: list[Event | None] = [None] * len(trace.send_round)
        self.chan: dict[int, Event] = {}
        self.compute: Event = self.start[0]
        self.posted: Event = self.start[0]
        self.send_post: list[Event] = []  # send_post[k]: round k's sends go out (after loads)
        self.i_arr = 0
        self.i_proc = 0
        self.end: Event | None = None


class Engine:
    def __init__(self, cluster: ClusterModel, group: Group, traces: dict[int, Trace],
                 flows: NodeFlows | None = None):
        self.cluster = cluster
        self.group = group
        self.flows = flows  # how many flows share a per-node link (None: links per pair)
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
                if self.group.name != "none":
                    raise SymmetryBroken(f"{self.group.name}: plans stall at {stuck}")
                raise RuntimeError(f"simulated plans deadlock: (rank: (round, rounds)) {stuck}")
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

    def _arrivals(self, c: int, st: _RankState, tr: Trace) -> bool:
        """Post receives in plan order and compute when each message lands."""
        moved = False
        group = self.group
        while st.i_arr < len(tr.recv_round):
            i = st.i_arr
            k = tr.recv_round[i]
            base_round = tr.recv_opens[i]
            if base_round >= len(st.start):
                break
            slot_prev = tr.recv_slot_prev[i]
            if slot_prev >= st.i_proc:
                break
            q = tr.recv_peer[i]
            sender_rep = group.rep_of(q)
            sender = self.state[sender_rep]
            s = sender.trace.send_index.get((group.backward(q, c), tr.recv_chan[i]))
            if s is None:
                raise SymmetryBroken(f"{group.name}: rank {c}'s receive {i} from rank {q} has "
                                     "no matching send")
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
            if link.per_node and self.flows is not None:
                beta *= self.flows.share(q, send_round, c, k)
            # The executor takes no peer view where it waits for its own sends before
            # reducing: that receive copies like any other.
            if link.on_receiver and not (tr.recv_reduce[i] and tr.gate[k]):
                node = Event(ready.time + link.alpha, ready, "latency", c, k, 0, name)
                per_byte = self.cluster.gamma if tr.recv_reduce[i] else link.beta
                completes = Event(node.time + nbytes * per_byte, node, "zero-copy", c, k, nbytes,
                                  name)
            else:
                node = Event(ready.time + link.alpha + nbytes * beta, ready, "message", c, k,
                             nbytes, name)
                previous = st.chan.get(q)
                if previous is not None and previous.time + nbytes * beta > node.time:
                    node = Event(previous.time + nbytes * beta, previous, "queued", c, k, nbytes,
                                 name)
                st.chan[q] = node
                completes = node
            sender.send_done[s] = completes
            st.arrival.append(node)
            st.i_arr += 1
            moved = True
        return moved

    def _reductions(self, c: int, st: _RankState, tr: Trace) -> bool:
        """Reduce (or, zero-copy, copy) landed segments in order on the one compute engine,
        with the copies in and out of the work buffer that go with them."""
        moved = False
        copy_beta = self.cluster.copy_beta
        while st.i_proc < st.i_arr:
            i = st.i_proc
            k = tr.recv_round[i]
            if k >= len(st.start):  # a receive posted ahead: its round loads first (in
                break               # event order it took the engine before that load)
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
                done = Event(begin.time + work + copied, begin, kind, c, k, nbytes, "")
                st.compute = done
            else:
                done = arrival
            st.done.append(done)
            st.i_proc += 1
            moved = True
        return moved

    def _begin_round(self, st: _RankState) -> None:
        """Round k starts: load what its sends read first, then post them (round 0 then
        copies the regions no receive writes, as the executor does); or finish."""
        k = len(st.start) - 1
        start = st.start[k]
        tr = st.trace
        copy_beta = self.cluster.copy_beta
        if k < tr.rounds:
            if tr.load_round[k]:
                begin = max(start, st.compute, key=_TIME)
                start = st.compute = Event(begin.time + tr.load_round[k] * copy_beta, begin,
                                           "copy-in", begin.rank, k, tr.load_round[k], "")
            st.send_post.append(start)
            if k == 0 and tr.tail:
                begin = max(start, st.compute, key=_TIME)
                st.compute = Event(begin.time + tr.tail * copy_beta, begin, "copy-in",
                                   begin.rank, k, tr.tail, "")
        else:
            st.end = max(start, st.compute, key=_TIME) if tr.tail else start

    def _end_round(self, st: _RankState, tr: Trace) -> bool:
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


def critical_path(end: Event) -> CriticalPath:
    hops = []
    node = end
    while node.parent is not None:
        parent = node.parent
        seconds = node.time - parent.time
        if seconds > 0:
            hops.append(Hop(node.rank, node.round, node.kind, node.link, node.nbytes, seconds))
        node = parent
    return CriticalPath(tuple(reversed(hops)))
