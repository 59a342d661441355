"""The shared-memory transport and the executor's copy-in/copy-out schedule."""
import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.execution import IoSchedule
from collectives.topology import Topology
from tests.mpirun import run_workers

ALGORITHMS = ",".join(PLANNERS["allreduce"]) + ",auto"


@pytest.mark.parametrize("np_", [2, 3])
def test_transport_zero_copy_order_timeouts_close(np_):
    run_workers(np_, "shm_transport", timeout=300)


@pytest.mark.parametrize("np_", [2, 3])
def test_messages_through_mpi_cannot_cross_and_streams_out_of_step_raise(np_):
    """Another message with the same source and tag is not taken (the soak's truncation);
    streams out of step give MismatchError naming both ranks on both, no timeout."""
    run_workers(np_, "shm_matching", timeout=120)


def test_compressed_async_fused_stress():
    """Compressed async calls, fused lists (one tag, several plans), mismatches, sizes around
    p * 43 at np=3: the mix where the soak once got a truncated message."""
    run_workers(3, "shm_stress", "400", env={"COLLECTIVES_SHM": "1", "COLLECTIVES_TIMEOUT": "60"},
                timeout=300)


@pytest.mark.parametrize("np_,local_size", [(2, None), (3, 2)])
def test_same_bits_as_mpi_transport(np_, local_size):
    env = {} if local_size is None else {"COLLECTIVES_LOCAL_SIZE": str(local_size)}
    run_workers(np_, "shm_vs_mpi", ALGORITHMS, env=env, timeout=600)


def _covered(ranges, count):
    """Each element of [0, count) in how many of `ranges`."""
    hits = [0] * count
    for lo, hi in ranges:
        for i in range(lo, hi):
            hits[i] += 1
    return hits


@pytest.mark.parametrize("algorithm", sorted(PLANNERS["allreduce"]))
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("count", [0, 1, 5, 97])
def test_io_schedule_loads_once_and_stores_every_element_once(algorithm, size, count):
    topology = Topology.from_local_size(size, 2)
    for rank in range(size):
        plan = plan_for("allreduce", algorithm, rank, size, count, 4, topology)
        io = IoSchedule.of(plan)
        assert IoSchedule.of(plan) is io  # cached per plan
        recvs = [r for rnd in plan.rounds for r in rnd.recvs]
        loads = [r for group in io.load_round + io.load_recv for r in group]
        assert max(_covered(loads, count), default=0) <= 1
        stores = [r for group in io.store_recv for r in group]
        stores += [(r.lo, r.hi) for r, direct in zip(recvs, io.direct) if direct]
        assert _covered(stores + list(io.tail), count) == [1] * count
        for r, direct in zip(recvs, io.direct):
            assert not (direct and r.reduce)
