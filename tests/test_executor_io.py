"""run_plan with the input, work buffer and output apart (IoSchedule), every plan, no MPI.

Ranks are threads over an eager in-process transport with MPI's matching rules (the k-th
send a -> b meets the k-th receive b <- a). Each case checks the result against NumPy, that
`src` is untouched, and that all ranks hold identical bits; max over +0/-0 and sums of
NaNs with rank-specific payloads show operand order. Segments are cut at a few elements so plans have many segments and rounds.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np
import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.execution import IoSchedule, buffer_sizes, run_plan
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.errors import CollectiveTimeout
from collectives.topology import Topology
from tests.threaded import run_ranks

SEG = 4  # elements per segment
MODES = ("in-place", "src", "src+out", "src+out shared")


class _Done:
    def __init__(self, done: bool = True):
        self.done = done


class _Eager:
    """One rank's end of an in-process transport: sends are copied out at once."""

    shared = None  # no zero-copy capability

    def abandon(self, sends, receives):
        """Nothing to withdraw: these in-process messages stop with the test."""

    def __init__(self, boxes, cond: threading.Condition, rank: int, size: int):
        self.boxes, self.cond, self.rank, self.size = boxes, cond, rank, size
        self.pending: list[tuple[_Done, np.ndarray, int]] = []

    def isend(self, buf, peer, tag):
        with self.cond:
            self.boxes[(self.rank, peer, tag)].append(buf.copy())
            self.cond.notify_all()
        return _Done()

    def irecv(self, buf, peer, tag):
        request = _Done(False)
        self.pending.append((request, buf, peer))
        return request

    def _match(self) -> None:
        still, blocked = [], set()
        for request, buf, peer in self.pending:
            box = self.boxes[(peer, self.rank, 1)]
            if peer in blocked or not box:  # a peer's messages land in posting order
                blocked.add(peer)
                still.append((request, buf, peer))
                continue
            message = box.popleft()
            assert message.size == buf.size, f"rank {self.rank}: {message.size} vs {buf.size} from {peer}"
            buf[...] = message
            request.done = True
        self.pending = still

    def _wait(self, test, deadline, what):
        with self.cond:
            while True:
                self._match()
                found = test()
                if found is not None:
                    return found
                if time.monotonic() > deadline:
                    raise CollectiveTimeout(f"rank {self.rank}: {what}")
                self.cond.wait(0.01)

    def wait_all(self, requests, deadline, what):
        self._wait(lambda: all(r.done for r in requests if r is not None) or None, deadline, what)

    def wait_any(self, requests, deadline, what):
        return self._wait(lambda: next((i for i, r in enumerate(requests) if r.done), None), deadline, what)


def run_all(algorithm: str, size: int, inputs: list[np.ndarray], op: str, mode: str,
            itemsize: int = SEGMENT_BYTES // SEG) -> list:
    """Every rank's all-reduce of its input in `mode`; each rank's result (or error).

    `itemsize` is what the plans are cut for: the default makes segments of SEG elements,
    the real one gives small messages their small-message plans (recursive doubling).
    """
    boxes, cond = defaultdict(deque), threading.Condition()
    topology = Topology.from_local_size(size, 2)
    deadline = time.monotonic() + 20

    def rank_main(rank: int) -> np.ndarray:
        x = inputs[rank]
        plan = plan_for(algorithm, rank, size, x.size, itemsize, topology)
        scratch = np.empty(buffer_sizes(plan)[0], x.dtype)
        work = x.copy() if mode == "in-place" else np.full_like(x, 7)
        out = np.full_like(x, 9) if "out" in mode else None
        run_plan(plan, work, scratch, _Eager(boxes, cond, rank, size), op, 1, deadline,
                 src=None if mode == "in-place" else x, out=out, shared="shared" in mode)
        return work if out is None else out

    return run_ranks(size, rank_main, timeout=30)


def _inputs(size: int, count: int, dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(size * 1000 + count)
    if np.dtype(dtype).kind == "i":
        return [rng.integers(-1000, 1000, count).astype(dtype) for _ in range(size)]
    floats = [rng.choice(np.array([0.0, -0.0, 1.5, -2.0], dtype), count) for _ in range(size)]
    for rank, x in enumerate(floats):
        x.view(np.uint32)[::5] = 0x7FC00001 + rank  # quiet NaNs: which payload survives shows order
    return floats


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", sorted(PLANNERS))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_every_plan_and_io_mode_matches_numpy_with_identical_bits(algorithm, size, mode):
    cases = [(count, dtype, op, ufunc, cut)
             for count in sorted({0, 1, max(size - 1, 0), 7, 2 * SEG * size + 3, 97})
             for dtype, op, ufunc in ((np.int64, "sum", np.add), (np.float32, "sum", np.add),
                                      (np.float32, "max", np.maximum))
             for cut in ("segments", "real")]
    for count, dtype, op, ufunc, cut in cases:
        inputs = _inputs(size, count, dtype)
        kept = [x.copy() for x in inputs]
        itemsize = np.dtype(dtype).itemsize if cut == "real" else SEGMENT_BYTES // SEG
        results = run_all(algorithm, size, inputs, op, mode, itemsize)
        want = ufunc.reduce(np.stack(inputs), axis=0) if count else np.empty(0, dtype)
        case = f"{algorithm} p={size} n={count} {np.dtype(dtype).name} {op} {mode} ({cut} plan)"
        for rank, got in enumerate(results):
            assert not isinstance(got, BaseException), f"{case} rank {rank}: {got!r}"
            np.testing.assert_array_equal(got, want, err_msg=f"{case} rank {rank}")
            assert got.tobytes() == results[0].tobytes(), f"{case}: rank {rank} bits differ from rank 0"
            assert inputs[rank].tobytes() == kept[rank].tobytes(), f"{case}: rank {rank} input modified"


@pytest.mark.parametrize("algorithm", sorted(PLANNERS))
@pytest.mark.parametrize("size", [2, 3, 4, 6])
def test_reading_src_in_place_never_copies_the_input(algorithm, size):
    """Sends read untouched regions from src and first reduces combine src with the payload,
    so no plan loads src into work; a codec or shared work loads each element at most once."""
    topology = Topology.from_local_size(size, 2)
    for count in (1, 97, 10**6 + 3):
        for rank in range(size):
            plan = plan_for(algorithm, rank, size, count, 4, topology)
            direct = IoSchedule.of(plan, from_src=True)
            assert not any(direct.load_round + direct.load_recv), f"{algorithm} p={size} rank {rank}"
            staged = IoSchedule.of(plan)
            assert not any(map(any, staged.send_src))
            assert not any(staged.fresh)
            loaded = sorted(r for group in staged.load_round + staged.load_recv for r in group)
            assert all(a[1] <= b[0] for a, b in zip(loaded, loaded[1:])), "an element loaded twice"
