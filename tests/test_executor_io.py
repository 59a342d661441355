"""run_plan with the input, work buffer and output apart (IoSchedule), every plan, no MPI.

Ranks are threads over an eager in-process transport with MPI's matching rules
(tests/inprocess). Each case checks the result against NumPy, that `src` is untouched, and
that all ranks hold identical bits; max over +0/-0 and sums of NaNs with rank-specific
payloads show operand order. Segments are cut at a few elements so plans have many segments
and rounds. Plans that send their input (`Plan.sends_input`, alltoall) read src for every
send and copy the regions no receive writes from it.
"""
from __future__ import annotations

import numpy as np
import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.algorithms.plan import split_bounds
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.execution import IoSchedule, Placed
from collectives.topology import Topology
from tests.inprocess import run_plans

SEG = 4  # elements per segment
MODES = ("in-place", "src", "src+out", "src+out shared")


def run_all(algorithm: str, size: int, inputs: list[np.ndarray], op: str, mode: str,
            itemsize: int = SEGMENT_BYTES // SEG) -> list:
    """Every rank's all-reduce of its input in `mode`; each rank's result (or error).

    `itemsize` is what the plans are cut for: the default makes segments of SEG elements,
    the real one gives small messages their small-message plans (recursive doubling).
    """
    topology = Topology.from_local_size(size, 2)
    plans = [plan_for("allreduce", algorithm, rank, size, x.size, itemsize, topology)
             for rank, x in enumerate(inputs)]
    works = [x.copy() if mode == "in-place" else np.full_like(x, 7) for x in inputs]
    outs = [np.full_like(x, 9) for x in inputs] if "out" in mode else None
    return run_plans(plans, works, op, srcs=None if mode == "in-place" else inputs, outs=outs,
                     shared="shared" in mode)


def _inputs(size: int, count: int, dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(size * 1000 + count)
    if np.dtype(dtype).kind == "i":
        return [rng.integers(-1000, 1000, count).astype(dtype) for _ in range(size)]
    floats = [rng.choice(np.array([0.0, -0.0, 1.5, -2.0], dtype), count) for _ in range(size)]
    for rank, x in enumerate(floats):
        x.view(np.uint32)[::5] = 0x7FC00001 + rank  # quiet NaNs: which payload survives shows order
    return floats


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
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


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
@pytest.mark.parametrize("size", [2, 3, 4, 6])
def test_reading_src_in_place_never_copies_the_input(algorithm, size):
    """Sends read untouched regions from src and first reduces combine src with the payload,
    so no plan loads src into work; a codec or shared work loads each element at most once."""
    topology = Topology.from_local_size(size, 2)
    for count in (1, 97, 10**6 + 3):
        for rank in range(size):
            plan = plan_for("allreduce", algorithm, rank, size, count, 4, topology)
            direct = IoSchedule.of(plan, from_src=True)
            assert not any(direct.load_round + direct.load_recv), f"{algorithm} p={size} rank {rank}"
            staged = IoSchedule.of(plan)
            assert not any(map(any, staged.send_src))
            assert not any(staged.fresh)
            loaded = sorted(r for group in staged.load_round + staged.load_recv for r in group)
            assert all(a[1] <= b[0] for a, b in zip(loaded, loaded[1:])), "an element loaded twice"


# --- plans that send their input (alltoall) -------------------------------------------

def _alltoall(size: int, m: int, itemsize: int = SEGMENT_BYTES // SEG) -> list:
    return [plan_for("alltoall", "pairwise", rank, size, size * m, itemsize) for rank in range(size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["src", "src+out"])
def test_sends_input_reads_src_and_writes_work_or_out(size, mode):
    """Every send reads src, so with p = 2 a row goes out and comes in the same round;
    receives land in work (or out) and the own row is copied from src."""
    for m in (0, 1, 2 * SEG + 1):
        inputs = [np.arange(size * m, dtype=np.float32) + 1000 * rank for rank in range(size)]
        kept = [x.copy() for x in inputs]
        works = [np.full_like(x, 7) for x in inputs]
        outs = [np.full_like(x, 9) for x in inputs] if mode == "src+out" else None
        results = run_plans(_alltoall(size, m), works, "sum", srcs=inputs, outs=outs)
        for rank, got in enumerate(results):
            assert not isinstance(got, BaseException), f"p={size} m={m} rank {rank}: {got!r}"
            want = np.concatenate([x[rank * m:(rank + 1) * m] for x in inputs])
            np.testing.assert_array_equal(got, want, err_msg=f"p={size} m={m} {mode} rank {rank}")
            assert inputs[rank].tobytes() == kept[rank].tobytes()
            if outs is not None:  # work kept out of it: nothing sent or received went there
                assert (works[rank] == 7).all()


def test_sends_input_schedule_never_loads_or_sends_work():
    for rank, plan in enumerate(_alltoall(4, 5)):
        io = IoSchedule.of(plan, from_src=True)
        assert all(all(row) for row in io.send_src) and not any(io.load_round + io.load_recv)
        assert io.tail == ((5 * rank, 5 * rank + 5),)  # the own row, from src
        assert all(io.direct) and not any(io.store_recv)


def test_sends_input_needs_src_and_no_shared_work():
    plans = _alltoall(2, 3)
    works = [np.zeros(6, np.float32) for _ in plans]
    for kwargs in ({}, {"srcs": [w.copy() for w in works], "shared": True}):
        for result in run_plans(plans, works, "sum", **kwargs):
            assert isinstance(result, ValueError) and "sends its input" in str(result)


# --- inputs placed in part of the buffer (allgather), results the plan receives -----------

@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allgather"]))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_allgather_reads_its_row_from_a_placed_input(algorithm, size):
    """Each rank's input covers only its own row (`Placed`): the plan sends it from there
    and copies it into work while its messages are in flight."""
    topology = Topology.from_local_size(size, 2)
    for m in (0, 1, 2 * SEG + 1, 97):
        rows = [np.arange(m, dtype=np.float32) + 1000 * rank for rank in range(size)]
        plans = [plan_for("allgather", algorithm, rank, size, size * m, SEGMENT_BYTES // SEG,
                          topology) for rank in range(size)]
        works = [np.full(size * m, 7, np.float32) for _ in range(size)]
        srcs = [Placed(row, rank * m) for rank, row in enumerate(rows)]
        for rank, got in enumerate(run_plans(plans, works, "sum", srcs=srcs)):
            assert not isinstance(got, BaseException), f"{algorithm} p={size} m={m}: {got!r}"
            np.testing.assert_array_equal(got, np.concatenate(rows),
                                          err_msg=f"{algorithm} p={size} m={m} rank {rank}")


def test_a_placed_input_refuses_elements_outside_it():
    placed = Placed(np.arange(4.0), 8)
    np.testing.assert_array_equal(placed[9:11], [1.0, 2.0])
    for lo, hi in ((7, 9), (10, 13)):
        with pytest.raises(IndexError, match=r"outside the input placed at \[8, 12\)"):
            placed[lo:hi]


@pytest.mark.parametrize("collective", ["reduce_scatter", "reduce"])
@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
def test_result_received_plans_receive_every_element_of_the_result(collective, size):
    """`Plan.result_received`: the executor leaves the input's other regions out of work,
    so the block (reduce_scatter) or root's buffer (reduce) must be written by receives."""
    topology = Topology.from_local_size(size, 2)
    for algorithm in sorted(PLANNERS[collective]):
        for count in (0, 1, size - 1, 7, 97, 10**6 + 3):
            for rank in range(size):
                plan = plan_for(collective, algorithm, rank, size, count, 4, topology)
                assert plan.result_received
                lo, hi = split_bounds(0, count, size)[rank] if collective == "reduce_scatter" \
                    else (0, count if rank == 0 else 0)
                tail = IoSchedule.of(plan, from_src=True).tail
                assert not [(a, b) for a, b in tail if a < hi and lo < b], \
                    f"{algorithm} p={size} n={count} rank {rank}: {tail} not received"


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["reduce_scatter"]))
@pytest.mark.parametrize("size", [2, 3, 5, 8])
@pytest.mark.parametrize("mode", ["src", "in-place"])
def test_reduce_scatter_reduces_its_block_straight_into_a_placed_out(algorithm, size, mode):
    """out holds only this rank's block (`Placed`, `region`): reading src, the block's last
    reduces write it (`direct`); either way nothing lands outside it (Placed would raise),
    and every rank's block is the NumPy reduction's, with the bits of a run without out
    (NaN payloads aside: an out-of-place sum may keep the other one, docs/reproducible.md)."""
    topology = Topology.from_local_size(size, 2)
    for count in sorted({1, size - 1, 7, 2 * SEG * size + 3, 97}):
        inputs = _inputs(size, count, np.float32)
        plans = [plan_for("reduce_scatter", algorithm, rank, size, count, SEGMENT_BYTES // SEG,
                          topology) for rank in range(size)]
        blocks = split_bounds(0, count, size)
        outs = [np.full(hi - lo, 9, np.float32) for lo, hi in blocks]
        srcs = inputs if mode == "src" else None
        works = [np.full_like(x, 7) if srcs else x.copy() for x in inputs]
        placed = [Placed(out, lo) for out, (lo, hi) in zip(outs, blocks)]
        results = run_plans(plans, works, "sum", srcs=srcs, outs=placed)
        plain = run_plans(plans, [np.full_like(x, 7) if srcs else x.copy() for x in inputs],
                          "sum", srcs=srcs)
        case = f"{algorithm} p={size} n={count} {mode}"
        for rank, ((lo, hi), out) in enumerate(zip(blocks, outs)):
            assert not isinstance(results[rank], BaseException), f"{case}: {results[rank]!r}"
            want = np.add.reduce(np.stack(inputs), axis=0)[lo:hi]
            np.testing.assert_array_equal(out, want, err_msg=f"{case} rank {rank}")
            numbers = ~np.isnan(out)
            assert out[numbers].tobytes() == plain[rank][lo:hi][numbers].tobytes(), \
                f"{case} rank {rank} bits"
            io = IoSchedule.of(plans[rank], from_src=srcs is not None, region=(lo, hi))
            if srcs is not None and hi > lo and algorithm == "ring":  # (others may resend it)
                assert any(io.direct), f"{case} rank {rank}: no reduce lands in out"
