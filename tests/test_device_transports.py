"""The device-transport choices that need no GPU: init(transport=...) and CUDA-aware detection."""
import pytest

from collectives.config import Settings
from tests.mpirun import run_workers


@pytest.mark.parametrize("np_", [1, 2])
def test_transport_choice(np_):
    run_workers(np_, "transport_choice")


@pytest.mark.parametrize("np_", [1, 3])
def test_staged_lanes_with_late_copies(np_):
    """The lanes' chunking and ordering over real MPI, NumPy standing in for the device."""
    run_workers(np_, "staging_lanes", "host")


@pytest.mark.parametrize("raw,expected", [("1", True), ("yes", True), ("0", False), ("off", False),
                                          ("", None)])
def test_cuda_aware_from_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("COLLECTIVES_CUDA_AWARE_MPI", raw)
    settings = Settings.resolve()
    assert settings.cuda_aware_mpi is expected  # None: MPI's own word
    assert settings.agreed()["cuda_aware_mpi"] is expected  # compared at init


def test_cuda_aware_rejects_junk(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_CUDA_AWARE_MPI", "maybe")
    with pytest.raises(ValueError, match="COLLECTIVES_CUDA_AWARE_MPI='maybe'"):
        Settings.resolve()
