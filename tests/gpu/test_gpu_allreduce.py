"""The correctness matrix on CuPy arrays under a real mpiexec (skipped without a GPU).

Ranks share the one GPU of a test machine over the MPI transport; NCCL needs a GPU per rank,
so it runs at np 1 here (more ranks on a machine with more GPUs: docs/gpu.md).
"""
import pytest

from tests.mpirun import run_workers


@pytest.mark.parametrize("np_", [1, 2, 4])
def test_matrix_over_mpi(np_):
    run_workers(np_, "gpu_matrix", "all", "--transport", "mpi",
                *(["--large"] if np_ == 2 else []))


def test_matrix_over_staged_mpi():
    """Force the pinned-buffer path even where MPI is CUDA-aware."""
    run_workers(2, "gpu_matrix", "ring,native", "--large",
                env={"COLLECTIVES_CUDA_AWARE_MPI": "0"})


def test_matrix_over_nccl():
    run_workers(1, "gpu_matrix", "all", "--transport", "nccl", "--large")


@pytest.mark.parametrize("np_", [1, 3])
def test_staged_lanes(np_):
    run_workers(np_, "staging_lanes", "gpu")


@pytest.mark.parametrize("np_,transport", [(1, "nccl"), (2, "mpi"), (4, "mpi")])
def test_compression_fusion_async(np_, transport):
    run_workers(np_, "gpu_features", "--transport", transport)
