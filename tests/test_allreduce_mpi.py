"""Multi-rank correctness of every algorithm under a real mpiexec."""
import pytest

from tests.mpirun import run_workers

ALGORITHMS = "ring,native,auto"


@pytest.mark.parametrize("np_", [1, 2, 3, 4, 5, 8])
def test_matrix_matches_reference(np_):
    run_workers(np_, "allreduce_matrix", ALGORITHMS, *(["--large"] if np_ in (2, 3, 5) else []))


@pytest.mark.parametrize("np_", [3, 4])
def test_matrix_over_shared_memory(np_):
    """Every plan algorithm with on-node peers exchanging through shared windows."""
    run_workers(np_, "allreduce_matrix", "ring,hierarchical,torus2d,halving_doubling,auto",
                env={"COLLECTIVES_SHM": "1", "COLLECTIVES_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("np_", [2, 4, 5])
def test_order_sensitive_values_give_identical_bits(np_):
    """+-0 and NaN payloads: partners reducing the same pair must agree on operand order."""
    run_workers(np_, "symmetric_bits")


@pytest.mark.parametrize("np_", [2, 3, 5])
def test_integer_avg_is_exact_where_the_sum_overflows(np_):
    run_workers(np_, "integer_mean", "ring,hierarchical,torus2d,halving_doubling,native,auto",
                env={"COLLECTIVES_LOCAL_SIZE": "2", "COLLECTIVES_DEBUG": "1"})


@pytest.mark.parametrize("np_", [2, 3])
def test_float16_avg_is_finite_where_the_sum_overflows(np_):
    run_workers(np_, "half_mean", env={"COLLECTIVES_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("np_", [1, 2, 3, 5])
def test_small_call_lane_matches_the_general_path(np_):
    """The small-call lane: values, routes, mixed paths, mismatch, ordering, threads, stats."""
    run_workers(np_, "small_lane")
