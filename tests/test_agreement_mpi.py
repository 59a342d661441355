"""The agreement check under a real mpiexec: disagreement and bad input raise on every rank,
and the communicator goes on working."""
import pytest

import collectives
from tests.mpirun import run_workers

ALL = ",".join(collectives.ALGORITHMS)


@pytest.mark.parametrize("np_", [2, 3])
def test_disagreement_raises_on_every_rank_then_recovers(np_):
    run_workers(np_, "agreement", ALL, env={"COLLECTIVES_TIMEOUT": "30"})


def test_disagreement_on_emulated_nodes():
    run_workers(4, "agreement", ALL, env={"COLLECTIVES_TIMEOUT": "30", "COLLECTIVES_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("np_", [1, 3])
def test_bad_input_errors_and_non_finite_propagation(np_):
    run_workers(np_, "agreement_inputs", ALL, env={"COLLECTIVES_TIMEOUT": "30"})


def test_bad_input_errors_with_the_check_off():
    run_workers(2, "agreement_inputs", "ring,native", env={"COLLECTIVES_TIMEOUT": "30",
                                                           "COLLECTIVES_CHECK": "0"})
