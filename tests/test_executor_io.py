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
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.execution import IoSchedule
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
