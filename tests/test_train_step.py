"""bench.train_step: its refusals before any rank starts, its parity check, and a tiny run."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from bench import launch, train_step  # noqa: E402
from tests.test_bench import ROOT, _self_launch_env  # noqa: E402


def _train_step(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.train_step", *args], cwd=ROOT,
                          env=_self_launch_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    # a StatisticsError, DDP's and torch's RuntimeErrors after launch; a table of
    # meaningless rows; an abort after the table; rows that overwrote each other's medians
    (["--rounds", "0"], "--rounds: need an integer above 0"),
    (["--steps", "0"], "--steps: need an integer above 0"),
    (["--layers", "0"], "--layers: need an integer above 0"),
    (["--width", "0"], "--width: need an integer above 0"),
    (["--batch", "0"], "--batch: need an integer above 0"),
    (["--threads", "0"], "--threads: need an integer above 0"),
    (["--bucket-mb", "nan"], "--bucket-mb: need a number of MB above 0"),
    (["--bucket-mb", "-1"], "--bucket-mb: need a number of MB above 0"),
    (["--json", "/proc/x"], "cannot write /proc/x"),
    (["--hooks", "ring,ring"], "--hooks: ring given twice"),
    (["--apis", "ddp,ddp"], "--apis: ddp given twice"),
    (["--hooks", "bogus"], "--hooks: unknown algorithm 'bogus'"),
    (["--apis", "tp"], "--apis: unknown API 'tp'"),
])
def test_bad_options_are_refused_before_launch(args, message):
    proc = _train_step(["--np", "2", *args], timeout=60)
    error = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2 and message in error, proc.stderr
    assert error.startswith("python -m bench.train_step: error:"), proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


class _OneRank:
    """A communicator of one rank: every reduction gives back its input."""

    def allreduce(self, array, op="sum", algorithm=None):
        return array


def _variant(name: str, flat: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(name=name, api="fsdp", baseline="fsdp-gloo", times=[1e-3],
                           tolerance=train_step.SUM_ORDER_DISTANCE, flat_parameters=lambda: flat)


def test_a_variant_off_its_baselines_parameters_fails():
    """FSDP2 gathers one copy, so every rank held the same bits even with max for sum in
    the reduce-scatter: the check passed. Its parameters are now held against fsdp-gloo's:
    twice the baseline's step fails; a one-ulp difference (another order of addition)
    passes."""
    initial = np.full(1000, 0.1, dtype=np.float32)
    baseline = initial - np.float32(1e-6)
    one_ulp = baseline.copy()
    one_ulp[0] = np.nextafter(one_ulp[0], np.float32(1))
    variants = [_variant("fsdp-gloo", baseline), _variant("wrong", initial - np.float32(2e-6)),
                _variant("reordered", one_ulp)]
    rows = train_step.results(variants, _OneRank(), initial)
    assert [row["passed"] for row in rows] == [True, False, True], rows
    assert rows[1]["distance_to_baseline"] == pytest.approx(1, rel=0.1), rows


def test_two_ranks_train_alike_on_every_variant(tmp_path):
    """ddp and fsdp on gloo and on our backend, and our hook: on 2 ranks each variant ends
    with its baseline's bits, on every rank."""
    try:
        launch.find_mpiexec()
    except FileNotFoundError:
        pytest.skip("no mpiexec")
    out = tmp_path / "train_step.json"
    proc = _train_step(["--np", "2", "--hooks", "ring", "--apis", "ddp,fsdp", "--rounds", "1",
                        "--steps", "1", "--warmup", "0", "--width", "64", "--layers", "2",
                        "--json", str(out)], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == [
        "ddp-gloo", "hook-ring", "ddp-collectives", "fsdp-gloo", "fsdp-collectives"]
    assert [row["replicas_identical"] for row in rows] == [True, True, True, None, None], rows
    assert [row["distance_to_baseline"] for row in rows] == [None, 0.0, 0.0, None, 0.0], rows
    assert all(row["passed"] for row in rows), rows
