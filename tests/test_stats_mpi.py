"""comm.stats() under mpiexec: ring bytes in closed form, 16-bit traffic half the 32-bit."""
import pytest

from tests.mpirun import run_workers


@pytest.mark.parametrize("np_", [2, 3, 4, 5])
def test_stats_count_wire_bytes(np_):
    run_workers(np_, "stats_check", env={"COLLECTIVES_TIMEOUT": "60"})
