"""fp16/bf16 compression: the codec and scale (single process), every algorithm under mpiexec."""
import math

import ml_dtypes
import numpy as np
import pytest

from collectives.compression import HalfCodec, absmax, codec_for, scale_for, scales_for
from collectives.options import Op
from tests.mpirun import run_workers

ENV = {"COLLECTIVES_TIMEOUT": "60"}  # a hang fails the test in a minute


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_encode_keeps_what_it_sends(name):
    codec = HalfCodec(name)
    region = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 1000
    staging = np.empty(1000, codec.dtype)
    payload = codec.encode(region, staging)
    assert payload is staging
    widened = np.empty(1000, np.float32)
    codec.decode_copy(widened, payload)
    assert np.array_equal(region, widened)  # the sender holds exactly what it sent
    again = codec.encode(region.copy(), np.empty(1000, codec.dtype))
    assert np.array_equal(again.view(np.uint16), payload.view(np.uint16))  # idempotent


def test_decode_reduce_accumulates_in_float32():
    codec = HalfCodec("fp16")
    acc = np.full(4, 2048.0, np.float32)
    codec.decode_reduce(acc, np.ones(4, np.float16), "sum")
    assert np.array_equal(acc, np.full(4, 2049.0, np.float32))  # fp16 alone would round to 2048


@pytest.mark.parametrize("name, data_max, size, op, scale", [
    ("fp16", 60000.0, 4, Op.SUM, 2.0 ** -3),   # 4 * 60000 / 8 = 30000 <= 32752
    ("fp16", 60000.0, 4, Op.AVG, 2.0 ** -1),   # avg divides before the cast
    ("fp16", 1.0, 2, Op.SUM, 2.0 ** 13),       # small values are lifted off the subnormals
    ("bf16", 1.0, 2, Op.SUM, 1.0),             # bf16 has float32's range: never scaled up
    ("bf16", 3e38, 8, Op.SUM, 2.0 ** -4),
    ("fp16", 0.0, 4, Op.SUM, 1.0),
    ("fp16", math.inf, 4, Op.SUM, 1.0),
])
def test_scale_keeps_partial_sums_in_range(name, data_max, size, op, scale):
    codec = HalfCodec(name)
    got = scale_for(codec, data_max, size, op)
    assert got == scale
    bound = data_max * (size if op is Op.SUM else 1)
    if math.isfinite(bound):
        assert got * bound <= float(ml_dtypes.finfo(codec.dtype).max)


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_float64_scales_keep_every_world_size_in_range(name):
    """float64 data near the bottom of its range: max16 / 2 / M overflowed before the
    division by p, and the largest scale was taken whatever p (inf at 16 ranks: the 101st
    review). Both the plain and the deterministic path's scales."""
    codec = HalfCodec(name)
    agreed = np.array([5e-324, 1e-310, 1.227e-304, 6.3e-271, 1e-200, 1.0, 1e300])
    for size in (1, 2, 3, 8, 9, 16, 64, 1000):
        scales = scales_for(codec, agreed, size, Op.SUM, np.float64)
        for m, scale in zip(agreed.tolist(), scales.tolist()):
            assert scale == scale_for(codec, m, size, Op.SUM, np.float64)
            assert scale * m * size <= codec.max_value / 2, (size, m, scale)


def test_absmax_counts_only_finite_values():
    """A NaN or Inf must not set the scale of a whole bucket (it would leave every other
    value unscaled: 40000 + 40000 overflows fp16)."""
    assert absmax(np.array([1.0, -3.0], np.float32)) == 3.0
    assert absmax(np.array([1.0, np.nan, -np.inf, -2.0], np.float32)) == 2.0
    assert absmax(np.array([np.nan, np.inf], np.float32)) == 0.0
    assert absmax(np.zeros(0, np.float32)) == 0.0


def test_codec_for_rejects_integers_and_unknown_names():
    assert codec_for(None, np.int32) is None
    with pytest.raises(TypeError, match="int32.*compression=None"):
        codec_for("fp16", np.int32)
    with pytest.raises(ValueError, match="unknown compression 'fp8'"):
        codec_for("fp8", np.float32)


@pytest.mark.parametrize("np_", [2, 3, 4, 5])
def test_every_algorithm_within_bounds_and_bit_identical(np_):
    run_workers(np_, "compression_check", env=ENV)


@pytest.mark.parametrize("np_", [3, 4])
def test_compression_over_shared_memory(np_):
    """Compressed payloads leave the shared window (private staging) and go over MPI."""
    run_workers(np_, "compression_check", env={**ENV, "COLLECTIVES_SHM": "1",
                                                "COLLECTIVES_LOCAL_SIZE": "2"})


def test_bench_compression_columns_run_and_check():
    import subprocess
    import sys

    from tests.mpirun import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "bench.allreduce_perf", "--np", "2", "-b", "64K", "-e", "256K",
         "-f", "4", "--algorithms", "ring,native", "--compression", "none,fp16,bf16",
         "-n", "2", "-w", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ring+fp16" in proc.stdout and "native+bf16" in proc.stdout
    assert "#wrong total: 0 OK" in proc.stdout


def test_error_feedback_residuals_are_bounded_and_clearable():
    """300 layouts used to keep 300 residuals for good (RSS 62 -> 197 MiB)."""
    from collectives.compression import ErrorFeedback

    like = np.zeros(1, np.float32)
    feedback = ErrorFeedback(max_entries=8, max_bytes=1 << 20)
    for shape in range(1, 301):
        feedback.residual(("layout", shape), like, 1000 + shape)
    assert len(feedback) == 8 and feedback.nbytes <= 8 * 4 * 1300
    kept = feedback.residual(("layout", 300), like, 1300)
    kept += 1.0
    assert (feedback.residual(("layout", 300), like, 1300) == 1.0).all()  # the same residual
    for key in range(100):
        feedback.residual(("big", key), like, 100_000)  # 400 KB each, 1 MiB in all
    assert feedback.nbytes <= 1 << 20 and len(feedback) <= 3
    feedback.clear()
    assert len(feedback) == 0 and feedback.nbytes == 0


@pytest.mark.parametrize("np_", [2, 3, 4])
def test_compressed_reduce_scatter_allgather_reduce(np_):
    """The FSDP case: every plan and auto within bounds, overflow-safe, never MPI's own."""
    run_workers(np_, "compressed_collectives", env=ENV)


@pytest.mark.parametrize("np_, local_size, shm", [(4, 2, "0"), (6, 4, "0"), (4, 2, "1")])
def test_auto_compresses_between_nodes_only_on_slow_links(np_, local_size, shm, tmp_path):
    """Nodes of 2 + 2 and of 4 + 2 ranks joined by 1 Gbit links, as the tuning file says
    (where the model prices fp16 between nodes below fp16 everywhere); inside the nodes
    over MPI and over the shared-memory transport."""
    from collectives.costmodel import Calibration, LinkModel, write_calibration

    tuning = tmp_path / "slow-links.json"
    write_calibration(Calibration(
        size=np_, intra=LinkModel.from_bandwidth(alpha_us=5, gbytes_per_s=10, cpu_copy=True),
        inter=LinkModel.from_bandwidth(alpha_us=60, gbytes_per_s=0.117, per_node=True),
        gamma=1 / 3e9, call_overhead=20e-6, copy_beta=1 / 8e9), tuning)
    run_workers(np_, "between_nodes", env={**ENV, "COLLECTIVES_LOCAL_SIZE": str(local_size),
                                           "COLLECTIVES_TUNING_FILE": str(tuning),
                                           "COLLECTIVES_SHM": shm})
