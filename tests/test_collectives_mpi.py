"""reduce_scatter, allgather, broadcast, reduce, alltoall and barrier under a real mpiexec:
every algorithm, dtype, op, awkward size, root and layout against NumPy, on emulated nodes
too, and the agreement check's guarantees."""
import pytest

from tests.mpirun import run_workers

ALL = "reduce_scatter,allgather,broadcast,reduce,alltoall"


@pytest.mark.parametrize("np_, env, extra", [
    (1, {}, ["--dtypes", "few"]),
    (2, {}, ["--large"]),
    (3, {}, []),
    (4, {"COLLECTIVES_LOCAL_SIZE": "2"}, ["--dtypes", "few"]),
    (5, {"COLLECTIVES_LOCAL_SIZE": "2"}, ["--dtypes", "few"]),
    (8, {"COLLECTIVES_LOCAL_SIZE": "3"}, ["--dtypes", "few"]),
])
def test_every_collective_matches_numpy(np_, env, extra):
    run_workers(np_, "collective_matrix", ALL, *extra, env=env, timeout=900)


def test_with_the_check_off():
    """No records: small calls do not ride; every call goes native or through a plan."""
    run_workers(3, "collective_matrix", ALL, "--dtypes", "few", env={"COLLECTIVES_CHECK": "0"})


def test_over_shared_memory():
    run_workers(4, "collective_matrix", ALL, "--dtypes", "few",
                env={"COLLECTIVES_SHM": "1", "COLLECTIVES_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("np_", [2, 3])
def test_small_calls_ride_whatever_ndarray_each_rank_passes(np_, tmp_path):
    """A memmap on one rank, plain arrays on the others, strided outs: every collective's
    small auto call rides on every rank and gives the reference."""
    run_workers(np_, "riding_inputs", str(tmp_path))


@pytest.mark.parametrize("np_", [1, 2, 3])
def test_repeated_calls_take_the_lane_with_the_general_paths_bits(np_):
    run_workers(np_, "collective_lane")


@pytest.mark.parametrize("np_", [2, 3])
def test_disagreement_and_bad_input_raise_on_every_rank(np_):
    run_workers(np_, "collective_agreement")


@pytest.mark.parametrize("np_", [2, 3, 5])
def test_sharded_training_equals_plain_data_parallel(np_):
    """30 SGD steps: reduce-scatter, update the shard, all-gather == all-reduce (1e-5)."""
    run_workers(np_, "sharded_training", env={"COLLECTIVES_TIMEOUT": "60"})
