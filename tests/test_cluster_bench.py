"""collectives-bench --nodes/--ppn/--link: the benchmark on a lab it makes and removes.

The launcher (bench/launch.py) makes the lab, runs the tool's ranks across it and exits
with the tool's status; the options are checked before anything starts. The summary
(bench/cluster/summary.py) holds such runs against the link bound.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cluster import LinkRate, netns, registry
from bench.cluster.lab import pids_of
from bench.cluster.summary import Run, bound_busbw, markdown
from bench.launch import LAUNCHER_VARIABLES, lab_tuning_environment
from collectives.costmodel import TUNING_ENV
from tests.mpirun import ROOT, mpiexec
from tests.test_cluster_lab import _command


def _bench(*args: str) -> subprocess.CompletedProcess:
    """``python -m bench.allreduce_perf ARGS`` started by hand (no launcher's variables)."""
    env = {key: value for key, value in os.environ.items()
           if key not in LAUNCHER_VARIABLES and not key.startswith("COLLECTIVES_BENCH_")}
    return subprocess.run([sys.executable, "-m", "bench.allreduce_perf", *args], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)


def test_bench_runs_across_uneven_nodes_and_removes_its_lab(tmp_path):
    labs_before = {record.name for record in registry.records()}
    out = tmp_path / "bench.json"
    proc = _bench("--nodes", "2", "--ppn", "3,2", "--link", "5gbit", "-b", "1M", "-e", "1M",
                  "-n", "2", "-w", "1", "--algorithms", "hierarchical,native", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 nodes, ranks per node 3,2, link 5gbit" in proc.stderr
    document = json.loads(out.read_text())
    assert (document["environment"]["nranks"], document["environment"]["hosts"]) == (5, 2)
    rows = document["rows"]
    assert [(row["algorithm"], row["wrong"]) for row in rows] == [
        ("mpi", 0), ("hierarchical", 0), ("native", 0)]
    # 2 nodes: each node's link carries the vector once each way at the optimum (2(q-1)/q = 1)
    assert all(row["inter_node_busbw"] == pytest.approx(row["algbw"]) for row in rows)
    assert document["ranks_per_node"] == [3, 2]
    assert document["link_bound"] == {"bytes_per_s": 625e6, "link_factor": 1.0,
                                      "inter_node_busbw": 0.625}
    assert "node bw" in proc.stdout and "link 0.625 GB/s each way" in proc.stdout
    lab = next(line.split()[2].rstrip(":") for line in proc.stderr.splitlines()
               if line.startswith("# lab clab-"))
    assert lab not in labs_before
    assert [ns for ns in netns.namespaces() if ns.startswith(lab)] == []
    assert not registry.directory(lab).exists()


def test_a_run_that_does_not_end_is_bounded_and_removes_its_lab():
    """Ranks that cannot start (MPI_Init failing on 63 of 64 nodes) left mpiexec and the
    tool waiting for good: --lab-timeout ends the run, its processes and its lab."""
    labs_before = {record.name for record in registry.records()}
    started = time.monotonic()
    proc = _bench("--nodes", "2", "--link", "8kbit", "--lab-timeout", "5", "-b", "64M",
                  "-e", "64M", "-n", "50", "--algorithms", "ring")
    assert time.monotonic() - started < 60, proc.stderr
    assert proc.returncode == 1 and "had not ended after 5 s (--lab-timeout)" in proc.stderr, \
        proc.stderr
    lab = next(line.split()[2].rstrip(":") for line in proc.stderr.splitlines()
               if line.startswith("# lab clab-"))
    assert lab not in labs_before
    assert [ns for ns in netns.namespaces() if ns.startswith(lab)] == []


def test_a_run_killed_from_outside_is_said_and_gives_128_plus_the_signal():
    """mpiexec killed as `down` kills: the bench exited 247 (sys.exit(-9)), without a word
    (the twenty-second review)."""
    env = {key: value for key, value in os.environ.items()
           if key not in LAUNCHER_VARIABLES and not key.startswith("COLLECTIVES_BENCH_")}
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench.allreduce_perf", "--nodes", "2", "-b", "8", "-e", "8",
         "-n", "100000000", "-c", "0", "--algorithms", "ring"], cwd=ROOT, text=True,
        env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lab = next(line.split()[2].rstrip(":") for line in bench.stderr
               if line.startswith("# lab clab-"))
    limit = time.monotonic() + 60
    while len([p for p in pids_of(lab) if "allreduce_perf" in _command(p)]) < 2:
        assert time.monotonic() < limit, "the ranks did not start in 60 s"
        time.sleep(0.1)
    launcher = next(p for p in pids_of(lab) if "mpiexec" in _command(p).split()[0])
    os.kill(launcher, signal.SIGKILL)
    _, stderr = bench.communicate(timeout=60)
    assert bench.returncode == 137 and "was killed by signal 9" in stderr, stderr
    assert [ns for ns in netns.namespaces() if ns.startswith(lab)] == []


@pytest.mark.parametrize("args, message", [
    (["--ppn", "2"], "--ppn and --link need --nodes N"),
    (["--nodes", "2", "--ppn", "3,2,1"], "--ppn 3,2,1 gives 3 counts for --nodes 2"),
    (["--nodes", "2", "--ppn", "0"], "ranks per node '0' is neither"),
    (["--nodes", "2", "--link", "fast"], "link rate 'fast' is not a rate such as 1gbit"),
    (["--nodes", "251"], "--nodes must be 1..250, got 251"),  # was a traceback
    (["--nodes", "2", "--link", "1" + "0" * 320 + "bit"], "too high for tc's tbf"),  # same
    (["--nodes", "2", "--ppn", "100000"], "200000 rank(s) on this machine need"),  # forked them
])
def test_bad_lab_options_are_refused(args, message):
    proc = _bench(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_nodes_under_a_launcher_is_refused_not_ignored():
    """Running under our own launch (or `collectives-cluster run`) made --nodes 2 --ppn 2 a
    one-rank run on this host, exit 0, no word. (A rank of a launch: started by mpiexec,
    the marker naming this test's process, an ancestor; a stale one is ignored:
    tests/test_bench.py.)"""
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "COLLECTIVES_BENCH_LAUNCHED": f"local:{os.getpid()}"}
    proc = subprocess.run([mpiexec(), "-n", "1", sys.executable, "-m", "bench.allreduce_perf",
                           "--nodes", "2", "--ppn", "2", "-b", "1K", "-e", "1K"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc
    assert "already runs under a launcher (COLLECTIVES_BENCH_LAUNCHED, PMI_RANK" in \
        proc.stderr, proc.stderr


def test_a_lab_keeps_its_calibration_apart(monkeypatch, tmp_path):
    """collectives-report and --calibrate on a lab write a tuning file of the lab's shape."""
    monkeypatch.delenv(TUNING_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lab_tuning_environment([3, 2], "1gbit") == {
        TUNING_ENV: str(tmp_path / "collectives" / "tuning-lab-3+2-1gbit.json")}
    monkeypatch.setenv(TUNING_ENV, str(tmp_path / "mine.json"))
    assert lab_tuning_environment([3, 2], "1gbit") == {}


def test_the_link_bound_of_the_summary(tmp_path):
    """2 nodes: each link carries n each way; 4 nodes: 1.5 n (bench/cluster/summary.py)."""
    rate = LinkRate.parse("1gbit")
    n = 64 << 20
    for nodes, ranks, carried in ((2, 4, n), (4, 8, 1.5 * n)):
        seconds = carried / rate.bytes_per_second
        busbw = n / seconds * 2 * (ranks - 1) / ranks / 1e9
        assert bound_busbw(rate, nodes=nodes, ranks=ranks) == pytest.approx(busbw)
    run = tmp_path / "2x2.json"
    run.write_text(json.dumps({"environment": {"hosts": 2, "nranks": 4}, "rows": [
        {"size": n, "algorithm": "ring", "busbw": 0.094}]}))
    table = markdown([Run.load(run)], rate).splitlines()
    assert table[0] == "| busbw GB/s (of bound) | 2x2 64 MiB |"
    assert table[2] == "| ring | 0.094 (0.50) |"
    assert table[3] == "| *link bound* | *0.188* |"


def test_without_root_the_bench_says_why_there_is_no_lab():
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run([*nobody, sys.executable, "-m", "bench.allreduce_perf", "--nodes", "2",
                           "-b", "1M", "-e", "1M"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc
    assert "error: no lab for --nodes 2: the lab needs root" in proc.stderr, proc.stderr
