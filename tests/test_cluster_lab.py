"""The lab's life: ranks land on their nodes, the launcher is bounded, nothing outlives it.

"Nothing" is: none of the lab's namespaces (the bridge and links live inside them), none
of the processes that ran in it, no record under /run/collectives-cluster. Checked after a
normal end, an exception, Ctrl-C, SIGTERM, and after the creating process was killed
outright and `collectives-cluster down` cleaned up. Needs root (as CI runs).
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bench.cluster import Lab, LabError, netns, registry
from bench.cluster.lab import pids_of
from tests.mpirun import ROOT

CREATOR = textwrap.dedent("""
    import signal
    from bench.cluster import Lab
    # Ctrl-C as at a terminal, even when started from a background job (which ignores it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Lab(nodes=2, link="1gbit") as lab:
        job = lab.start(["sleep", "120"], ppn=1)
        print(lab.name, flush=True)
        job.wait()
""")


def cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cluster.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def leftovers(name: str, pids: list[int]) -> list[str]:
    """What is left of lab ``name`` and of the processes ``pids`` that ran in it."""
    found = [f"namespace {ns}" for ns in netns.namespaces() if ns.startswith(f"{name}-")]
    found += [f"process {pid}" for pid in pids if _running(pid)]
    found += [f"record {registry.directory(name)}"] if registry.directory(name).exists() else []
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ranks_on_nodes(output: str) -> dict[tuple[str, str], list[int]]:
    """'RANK HOSTNAME SHM' lines as {(hostname, what /dev/shm is): sorted ranks}."""
    nodes: dict[tuple[str, str], list[int]] = {}
    for line in output.split("\n"):
        if line.strip():
            rank, host, shm = line.split()
            nodes.setdefault((host, shm), []).append(int(rank))
    return {node: sorted(ranks) for node, ranks in nodes.items()}


def _wait_for_sleepers(name: str, count: int) -> list[int]:
    """The pids in lab ``name`` once ``count`` ``sleep`` processes run there."""
    limit = time.monotonic() + 30
    while time.monotonic() < limit:
        pids = pids_of(name)
        sleepers = [pid for pid in pids if _command(pid).startswith("sleep")]
        if len(sleepers) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"lab {name}: {count} sleep processes did not start in 30 s")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as cmdline:
            return cmdline.read().replace("\0", " ")
    except OSError:
        return ""


def _start_creator() -> tuple[subprocess.Popen, str, list[int]]:
    """A process holding a lab with a rank sleeping on each node: (process, lab, pids)."""
    creator = subprocess.Popen([sys.executable, "-c", CREATOR], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    name = creator.stdout.readline().strip()
    assert name.startswith("clab-"), f"the creator printed {name!r}"
    return creator, name, _wait_for_sleepers(name, 2)


def test_uneven_ranks_land_on_their_nodes_and_two_labs_coexist():
    """Each node has its own hostname and /dev/shm (a tmpfs that goes with the node)."""
    show = "echo $PMI_RANK $(hostname) $(df --output=source /dev/shm | tail -n 1)"
    with Lab(nodes=2) as first, Lab(nodes=2) as second:
        assert first.name != second.name
        for lab in (first, second):
            outcome = lab.mpiexec(["sh", "-c", show], ppn=[3, 2], timeout=60).check()
            node0, node1 = f"{lab.name}-node0", f"{lab.name}-node1"
            assert _ranks_on_nodes(outcome.stdout) == {
                (node0, f"{node0}-shm"): [0, 1, 2], (node1, f"{node1}-shm"): [3, 4]}, outcome
    assert leftovers(first.name, []) == leftovers(second.name, []) == []


def test_an_exception_tears_the_lab_down():
    with pytest.raises(RuntimeError, match="fails inside"):
        with Lab(nodes=2, link="1gbit") as lab:
            lab.start(["sleep", "120"], ppn=1)
            pids = _wait_for_sleepers(lab.name, 2)
            raise RuntimeError("the test fails inside the lab")
    assert leftovers(lab.name, pids) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_creator_tears_the_lab_down(signum):
    creator, name, pids = _start_creator()
    creator.send_signal(signum)
    status = creator.wait(timeout=60)
    assert status != 0
    assert leftovers(name, pids) == []


def test_down_removes_a_lab_whose_creator_was_killed():
    creator, name, pids = _start_creator()
    creator.kill()
    creator.wait(timeout=60)
    assert leftovers(name, pids), "SIGKILL left nothing to clean up: the test proves nothing"
    status = cli("status")
    assert f"{name}: 2 nodes, link 1gbit" in status.stdout and "stale" in status.stdout, status
    down = cli("down", name)
    assert down.returncode == 0, down
    assert leftovers(name, pids) == []


def test_cli_bounds_a_launcher_that_does_not_end():
    up = cli("up", "--nodes", "2")
    assert up.returncode == 0, up
    name = up.stdout.strip()
    try:
        start = time.monotonic()
        run = cli("run", "--lab", name, "--ppn", "1", "--timeout", "2", "--", "sleep", "60")
        elapsed = time.monotonic() - start
        assert run.returncode == 124, run
        assert "every process of lab" in run.stderr and elapsed < 15, (elapsed, run)
        assert pids_of(name) == []
    finally:
        assert cli("down", name).returncode == 0
    assert leftovers(name, []) == []


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "soon"])
def test_run_refuses_a_timeout_that_bounds_nothing(value):
    """nan and inf were taken and bounded nothing; 0 and -5 killed the job at once."""
    run = cli("run", "--timeout", value, "--", "true")
    assert run.returncode == 2 and "need a number of seconds above 0" in run.stderr, run


def test_a_rate_too_high_for_tbf_is_refused_by_what_it_is():
    """10tbit told the user to load sch_tbf; its bucket is what tbf refuses."""
    up = cli("up", "--nodes", "2", "--link", "10tbit")
    assert up.returncode == 2 and "too high for tc's tbf" in up.stderr, up


@pytest.mark.parametrize("command, said", [
    (["up", "--nodes", "2"], "the lab needs root"),
    (["down", "--all"], "removing a lab needs root"),  # said "removed" and removed nothing
])
def test_without_root_the_lab_says_what_is_missing(command, said):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run([*nobody, sys.executable, "-m", "bench.cluster.cli", *command],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc
    assert said in proc.stderr and "run it as root" in proc.stderr, proc.stderr


def test_a_bad_placement_is_refused_before_anything_starts():
    with Lab(nodes=2) as lab:
        with pytest.raises(ValueError, match="does not fit lab"):
            lab.start(["true"], ppn=[1, 1, 1])
        with pytest.raises(LabError, match="no lab clab-000000"):
            Lab.existing("clab-000000")
