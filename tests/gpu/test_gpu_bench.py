"""collectives-bench --device gpu: CuPy buffers, device-synchronized timing, #wrong 0."""
import json
import os
import subprocess
import sys

import pytest

from tests.mpirun import ROOT, mpiexec


@pytest.mark.parametrize("np_,transport", [(2, "mpi"), (1, "nccl")])
def test_bench_on_gpu(tmp_path, np_, transport):
    out = tmp_path / "bench.json"
    command = [mpiexec(), "-n", str(np_), sys.executable, "-m", "bench.allreduce_perf",
               "--device", "gpu", "--transport", transport, "-b", "1K", "-e", "4M", "-f", "64",
               "-n", "3", "-w", "1", "--algorithms", "ring,native", "--json", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(out.read_text())
    assert document["config"]["device"] == "gpu"
    assert {row["wrong"] for row in document["rows"]} == {0}
    assert [row["size"] for row in document["rows"]] == [1024, 1024, 65536, 65536,
                                                         4 << 20, 4 << 20]
