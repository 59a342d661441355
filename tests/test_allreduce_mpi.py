"""Multi-rank correctness of every algorithm under a real mpiexec."""
import pytest

from tests.mpirun import run_workers

ALGORITHMS = "ring,native,auto"


@pytest.mark.parametrize("np_", [1, 2, 3, 4, 5, 8])
def test_matrix_matches_reference(np_):
    run_workers(np_, "allreduce_matrix", ALGORITHMS, *(["--large"] if np_ in (2, 3, 5) else []))
