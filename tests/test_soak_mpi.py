"""A short soak under a real mpiexec: hundreds of mixed collectives, all checked.

The full soak (10,000 collectives, docs/failure-model.md) is the same command with the
default --collectives.
"""
import json

from tests.mpirun import run_workers


def test_short_soak_all_correct(tmp_path):
    out = tmp_path / "soak.json"
    proc = run_workers(3, "soak", "--collectives", "500", "--max-count", "65536",
                       "--checkpoint", "100", "--json", str(out),
                       env={"COLLECTIVES_TIMEOUT": "60"})
    summary = json.loads(out.read_text())
    assert summary["ok"], proc.stdout
    for rank in summary["ranks"]:
        assert rank["collectives"] >= 500 and not rank["wrong"], rank
        assert rank["kinds"].get("mismatch", 0) > 0 and rank["kinds"].get("many_async", 0) > 0
    assert "identical bits on every rank: yes" in proc.stdout
