"""Issue order under a real mpiexec: calls the ranks issue in different orders (threads,
sync against async) raise MismatchError instead of pairing silently; completion callbacks
cannot deadlock the progress thread."""
import pytest

from tests.mpirun import run_workers


@pytest.mark.parametrize("np_", [2, 3])
def test_two_threads_issuing_at_once_never_mix_results(np_):
    run_workers(np_, "ordering", "threads", timeout=300)


@pytest.mark.parametrize("np_", [2, 3])
def test_async_then_sync_against_sync_then_async_is_caught(np_):
    run_workers(np_, "ordering", "order", timeout=120)


def test_collectives_from_completion_callbacks_do_not_deadlock():
    run_workers(2, "ordering", "callback", timeout=120)
