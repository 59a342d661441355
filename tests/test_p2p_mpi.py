"""Point-to-point send/recv under a real mpiexec."""
import pytest

from tests.mpirun import run_workers


@pytest.mark.parametrize("np_", [2, 3])
def test_messages_in_a_ring_beside_collectives(np_):
    run_workers(np_, "p2p_check")


def test_messages_to_itself_on_one_rank():
    run_workers(1, "p2p_alone", timeout=120)
