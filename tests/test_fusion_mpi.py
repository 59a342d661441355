"""allreduce_many: buckets (single process), and fused vs per-array results under mpiexec."""
import numpy as np
import pytest

from collectives.fusion import Layout
from tests.mpirun import run_workers

ENV = {"COLLECTIVES_TIMEOUT": "60"}  # a hang fails the test in a minute


def buckets(arrays, fusion_bytes):
    return Layout.of(tuple((a.dtype, a.shape) for a in arrays), fusion_bytes).buckets


def test_buckets_group_by_dtype_in_first_appearance_order():
    arrays = [np.zeros(3, np.float32), np.zeros(2, np.int64), np.zeros((2, 2), np.float32)]
    got = [(b.members, b.dtype, b.count, b.offsets) for b in buckets(arrays, 1 << 20)]
    assert got == [((0, 2), np.dtype(np.float32), 7, (0, 3, 7)),
                   ((1,), np.dtype(np.int64), 2, (0, 2))]


def test_buckets_respect_fusion_bytes_and_keep_big_arrays_whole():
    arrays = [np.zeros(n, np.float32) for n in (768, 768, 768, 5000, 1)]  # 3 KiB each, then 20 KB
    got = [b.members for b in buckets(arrays, 8 << 10)]
    assert got == [(0, 1), (2,), (3,), (4,)]
    assert [b.members for b in buckets(arrays, 1)] == [(i,) for i in range(5)]


def test_layouts_are_cached_per_shapes_and_fusion_bytes():
    shapes = ((np.dtype(np.float32), (3,)), (np.dtype(np.float32), (4, 5)))
    assert Layout.of(shapes, 1 << 20) is Layout.of(shapes, 1 << 20)
    assert Layout.of(shapes, 1 << 20) is not Layout.of(shapes, 16)


@pytest.mark.parametrize("np_", [2, 3, 4, 5])
def test_fused_equals_per_array(np_):
    run_workers(np_, "fusion_check", "ring,native,auto", env=ENV)


def test_fusion_bytes_from_environment():
    run_workers(2, "fusion_check", "--env-fusion-bytes", "8000",
                env={**ENV, "COLLECTIVES_FUSION_BYTES": "8000"})


def test_tensor_bounds_cover_the_vector_with_uneven_nonempty_pieces():
    from bench.ops.allreduce import tensor_bounds

    bounds = tensor_bounds(2_097_152, 1000)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == 2_097_152 and len(sizes) == 1000
    assert sizes.min() >= 1 and sizes.max() > 2 * sizes.min()


def test_bench_tensors_mode_runs_and_checks():
    import subprocess
    import sys

    from tests.mpirun import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "bench.allreduce_perf", "--np", "2", "-b", "64K", "-e", "64K",
         "--tensors", "20", "--algorithms", "ring", "-n", "2", "-w", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "many ring/flat ring busbw" in proc.stdout and "#wrong total: 0 OK" in proc.stdout
