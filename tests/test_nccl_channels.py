"""Deadlock-freedom of the NCCL transport's channels, with the real executor and plans, no GPU.

`_World` is an in-process model of NCCL's stream semantics, the part that decides deadlock:
on each stream, groups run one after another; an operation of the running group completes
only when its counterpart (the k-th send a -> b meets the k-th receive b <- a) is in the
running group of the peer's stream, and the send reads its buffer then, not when posted
(rendezvous: no eager buffering, the worst case). Ranks are threads running `run_plan`.

`channels` is what NCCLTransport does: every operation launched at once, alone, on the
stream of its direction (a -> b). `one_stream` is the obvious alternative, buffering the
operations and launching all pending ones as one group per wait on one stream: the model
shows it deadlocking, which is why the transport uses channels. A hang shows up as a
CollectiveTimeout.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np
import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.execution import buffer_sizes, run_plan
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.errors import CollectiveTimeout
from collectives.topology import Topology
from tests.threaded import run_ranks

DEADLINE = 10.0  # seconds: every case here finishes in well under one when it works


class _Op:
    def __init__(self, rank: int, peer: int, is_send: bool, buf: np.ndarray):
        self.rank, self.peer, self.is_send, self.buf = rank, peer, is_send, buf
        self.done = buf.size == 0  # empty messages never reach NCCL, on either side
        self.seq = -1
        self.stream: tuple = ()


class _World:
    """Streams of launched groups and the matching of their operations."""

    def __init__(self):
        self.cond = threading.Condition()
        self.streams: dict[tuple, deque[list[_Op]]] = defaultdict(deque)
        self.counters: dict[tuple, int] = defaultdict(int)
        self.launched: dict[tuple, _Op] = {}

    def launch(self, stream: tuple, group: list[_Op]) -> None:
        for op in group:
            src, dst = (op.rank, op.peer) if op.is_send else (op.peer, op.rank)
            key = (src, dst, op.is_send)
            op.seq, op.stream = self.counters[key], stream
            self.counters[key] += 1
            self.launched[(src, dst, op.is_send, op.seq)] = op
        self.streams[stream].append(group)
        self._advance()
        self.cond.notify_all()

    def _running(self, op: _Op) -> bool:
        stream = self.streams[op.stream]
        return bool(stream) and any(o is op for o in stream[0])

    def _advance(self) -> None:
        moved = True
        while moved:
            moved = False
            for stream in list(self.streams.values()):
                for op in stream[0] if stream else ():
                    if op.done or not op.is_send:
                        continue
                    peer = self.launched.get((op.rank, op.peer, False, op.seq))
                    if peer is not None and self._running(peer):
                        assert peer.buf.nbytes == op.buf.nbytes, "mismatched message sizes"
                        peer.buf[...] = op.buf  # the send reads its buffer when it runs
                        op.done = peer.done = True
                        moved = True
            for stream in self.streams.values():
                while stream and all(op.done for op in stream[0]):
                    stream.popleft()
                    moved = True


class SimNccl:
    """One rank's transport over the modelled world, launching as `policy` says."""

    shared = None  # no zero-copy capability

    def abandon(self, sends, receives):
        """Nothing to withdraw: these in-process messages stop with the test."""

    def __init__(self, world: _World, rank: int, size: int, policy: str):
        self.world, self.rank, self.size, self.policy = world, rank, size, policy
        self.pending: list[_Op] = []

    def isend(self, buf, peer, tag):
        return self._post(_Op(self.rank, peer, True, buf))

    def irecv(self, buf, peer, tag):
        return self._post(_Op(self.rank, peer, False, buf))

    def _post(self, op: _Op) -> _Op:
        with self.world.cond:
            if op.done:
                pass
            elif self.policy == "channels":  # NCCLTransport: at once, on its direction's stream
                direction = (op.rank, op.peer) if op.is_send else (op.peer, op.rank)
                self.world.launch(("channel", op.rank, *direction), [op])
            else:
                self.pending.append(op)
        return op

    def _wait(self, test, deadline: float, what: str):
        with self.world.cond:
            while True:
                if self.pending:  # one_stream: everything pending, one group, one stream
                    self.world.launch(("rank", self.rank), self.pending)
                    self.pending = []
                result = test()
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CollectiveTimeout(f"rank {self.rank}: {what}: modelled NCCL stuck")
                self.world.cond.wait(min(left, 0.05))

    def wait_all(self, requests, deadline, what):
        live = [r for r in requests if r is not None]
        self._wait(lambda: all(r.done for r in live) or None, deadline, what)

    def wait_any(self, requests, deadline, what):
        return self._wait(lambda: next(
            (i for i, r in enumerate(requests) if r is not None and r.done), None), deadline, what)


def run_all(algorithm: str, size: int, count: int, seg: int, policy: str = "channels",
            timeout: float = DEADLINE) -> list:
    """All-reduce (sum) rank-distinct data on `size` threads; each rank's result or error."""
    world = _World()
    topology = Topology.from_local_size(size, 2)
    itemsize = SEGMENT_BYTES // seg  # plans cut segments of SEGMENT_BYTES // itemsize elements
    deadline = time.monotonic() + timeout

    def rank_main(rank: int) -> np.ndarray:
        plan = plan_for("allreduce", algorithm, rank, size, count, itemsize, topology)
        work = np.arange(count, dtype=np.float64) * (rank + 1)
        scratch = np.empty(buffer_sizes(plan)[0], np.float64)
        run_plan(plan, work, scratch, SimNccl(world, rank, size, policy), "sum", 1, deadline)
        return work

    return run_ranks(size, rank_main, timeout=timeout + 5)


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("chunk_segments", [1, 9])
def test_channels_complete_every_plan_with_right_sums(algorithm, size, chunk_segments):
    """9 segments per chunk: more reduce-receives than scratch slots; +3: uneven chunks.

    Prefetching plans included: a receive posted a round early may complete early.
    """
    seg = 4
    count = size * seg * chunk_segments + 3
    results = run_all(algorithm, size, count, seg, timeout=DEADLINE)
    want = np.arange(count, dtype=np.float64) * (size * (size + 1) // 2)
    for rank, got in enumerate(results):
        assert not isinstance(got, BaseException), f"rank {rank}: {got!r}"
        np.testing.assert_array_equal(got, want, err_msg=f"{algorithm} p={size} rank {rank}")


def test_one_stream_groups_deadlock():
    """The alternative the transport avoids: a ring with more segments than scratch slots."""
    results = run_all("ring", 3, 3 * 4 * 9, 4, policy="one_stream", timeout=2.0)
    assert any(isinstance(r, CollectiveTimeout) for r in results), results
