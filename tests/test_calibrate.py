"""bench/calibrate.py: the shift exchange's plans and the round-robin timing."""
from __future__ import annotations

import pytest

from bench.calibrate import exchange_plan, round_robin
from collectives.execution import IoSchedule


@pytest.mark.parametrize("parts", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("reduce", [False, True])
def test_exchange_receives_every_chunk_once_as_a_ring(parts, reduce):
    """Round k sends chunk k and receives chunk k+1 from the previous rank, so nothing is
    left for the executor to copy from the input at the end (a copy that inflated beta)."""
    nbytes = 3 << 20
    rank, size = 1, parts
    succ, pred = (rank + 1) % size, (rank - 1) % size
    plan = exchange_plan(rank, size, nbytes, succ, pred, parts=parts, reduce=reduce)
    chunk = plan.count // parts
    assert len(plan.rounds) == parts and plan.count == parts * (nbytes // (4 * parts))
    received = sorted((r.lo, r.hi) for rnd in plan.rounds for r in rnd.recvs)
    merged = [received[0]]
    for lo, hi in received[1:]:
        assert lo == merged[-1][1]  # no overlap, no gap
        merged[-1] = (merged[-1][0], hi)
    assert merged == [(0, plan.count)]
    for k, rnd in enumerate(plan.rounds):
        assert {s.peer for s in rnd.sends} == {succ} and {r.peer for r in rnd.recvs} == {pred}
        assert (rnd.sends[0].lo, rnd.sends[-1].hi) == (k * chunk, (k + 1) * chunk)
        assert all(r.reduce == reduce for r in rnd.recvs)
    io = IoSchedule.of(plan, from_src=True)
    assert io.tail == () and not any(io.load_round) and not any(io.load_recv)


def test_exchange_has_no_rounds_without_neighbours():
    assert exchange_plan(0, 1, 1 << 20, None, None, parts=2, reduce=True).rounds == ()


class OneRank:
    """The two MPI calls the timing makes, for a single process."""

    def Barrier(self) -> None:
        pass

    def allgather(self, value):
        return [value]


def test_round_robin_times_every_call_in_each_run_in_order():
    log: list[str] = []
    calls = [lambda name=name: log.append(name) for name in "abc"]
    runs = round_robin(OneRank(), calls, budget=0.0, runs=3)
    assert len(runs) == 3 and all(len(times) == 3 and min(times) >= 0 for times in runs)
    # sizing: a warm-up and a timed call each; then per run, each call's warm-up and 3 calls
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    assert log[6:] == [name for _ in range(3) for name in "abc" for _ in range(4)]
