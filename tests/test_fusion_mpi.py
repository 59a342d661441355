"""allreduce_many: buckets (single process), and fused vs per-array results under mpiexec."""
import numpy as np
import pytest

from collectives.fusion import buckets
from tests.mpirun import run_workers

ENV = {"COLLECTIVES_TIMEOUT": "60"}  # a hang fails the test in a minute


def test_buckets_group_by_dtype_in_first_appearance_order():
    arrays = [np.zeros(3, np.float32), np.zeros(2, np.int64), np.zeros(4, np.float32)]
    got = [(b.members, b.dtype, b.count) for b in buckets(arrays, 1 << 20)]
    assert got == [((0, 2), np.dtype(np.float32), 7), ((1,), np.dtype(np.int64), 2)]


def test_buckets_respect_fusion_bytes_and_keep_big_arrays_whole():
    arrays = [np.zeros(n, np.float32) for n in (768, 768, 768, 5000, 1)]  # 3 KiB each, then 20 KB
    got = [b.members for b in buckets(arrays, 8 << 10)]
    assert got == [(0, 1), (2,), (3,), (4,)]
    assert [b.members for b in buckets(arrays, 1)] == [(i,) for i in range(5)]


@pytest.mark.parametrize("np_", [2, 3, 4, 5])
def test_fused_equals_per_array(np_):
    run_workers(np_, "fusion_check", "ring,native,auto", env=ENV)


def test_fusion_bytes_from_environment():
    run_workers(2, "fusion_check", "--env-fusion-bytes", "8000",
                env={**ENV, "COLLECTIVES_FUSION_BYTES": "8000"})
