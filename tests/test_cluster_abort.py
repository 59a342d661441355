"""Every rank ends after an abort, even when MPI_Abort cannot reach the launcher.

The watchdog of collectives.failure.end_job: SIGALRM at its default action ends the
process COLLECTIVES_ABORT_GRACE seconds after MPI_Abort was called, whatever MPI_Abort
does meanwhile. Shown on a stand-in transport whose abort never returns (holding the GIL,
as MPICH's does when it spins), and for real on a lab whose node loses its link in the
middle of a run of all-reduces.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.cluster import Lab
from collectives.config import DEFAULT_ABORT_GRACE, Settings
from tests.mpirun import ROOT
from tests.workers.cut_link import STEP_PAUSE

SPINNING_ABORT = textwrap.dedent("""
    import signal
    from collectives.failure import end_job

    class SpinningTransport:
        def abort(self, errorcode):
            while True:  # never returns, never releases the GIL for long
                pass

    signal.signal(signal.SIGALRM, lambda *args: None)  # the program's own handler
    end_job(SpinningTransport(), 3, grace=1.0)
""")
TIMEOUT = 5.0  # the collectives' timeout in the cut-link run
BOUND = 15.0  # every rank must have ended this long after the cut


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_abort_grace_is_refused(monkeypatch, value):
    monkeypatch.setenv("COLLECTIVES_ABORT_GRACE", value)
    with pytest.raises(ValueError, match="COLLECTIVES_ABORT_GRACE"):
        Settings.resolve()


def test_abort_grace_default_and_setting(monkeypatch):
    monkeypatch.delenv("COLLECTIVES_ABORT_GRACE", raising=False)
    assert Settings.resolve().abort_grace == DEFAULT_ABORT_GRACE
    monkeypatch.setenv("COLLECTIVES_ABORT_GRACE", "2.5")
    assert Settings.resolve().abort_grace == 2.5


def test_the_watchdog_ends_a_process_whose_abort_never_returns():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SPINNING_ABORT], cwd=ROOT, timeout=60,
                          env={**os.environ, "COLLECTIVES_ABORT_GRACE": "1"})
    elapsed = time.monotonic() - start
    assert proc.returncode == -signal.SIGALRM
    assert 1 <= elapsed < 10, f"ended {elapsed:.1f} s after start; the grace is 1 s"


def _ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_for(path: Path, seconds: float) -> None:
    limit = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < limit, f"{path} did not appear in {seconds} s"
        time.sleep(0.02)


def test_every_rank_ends_after_a_node_loses_its_link(tmp_path):
    """2 nodes x 2 ranks, timeout 5 s; node 1's link is cut between two all-reduces."""
    with Lab(nodes=2) as lab:
        job = lab.start([sys.executable, "-m", "tests.workers.cut_link", str(tmp_path)], ppn=2,
                        env={"PYTHONPATH": str(ROOT), "COLLECTIVES_TIMEOUT": str(TIMEOUT),
                             "COLLECTIVES_LOCAL_SIZE": ""})
        for rank in range(4):  # every rank is in its pause: the next all-reduce starts after
            _wait_for(tmp_path / f"ready{rank}", 120)
        pids = {rank: int((tmp_path / f"pid{rank}").read_text()) for rank in range(4)}
        cut = time.time()
        lab.cut(1)
        while not all(_ended(pid) for pid in pids.values()) and time.time() < cut + 2 * BOUND:
            time.sleep(0.05)
        ended_after = time.time() - cut
        running = [rank for rank, pid in pids.items() if not _ended(pid)]
        outcome = job.wait(timeout=1)  # hydra's mpiexec never ends once a node is unreachable
    output = f"--- stdout ---\n{outcome.stdout[-5000:]}\n--- stderr ---\n{outcome.stderr[-5000:]}"
    assert not running and ended_after <= BOUND, (
        f"ranks {running} still running {ended_after:.1f} s after the cut\n{output}")
    # The cut-off ranks always end by themselves (a timeout, or the notice of the other rank
    # of their node that timed out first); of the survivors, the first to time out aborts,
    # and mpiexec may end the other before it reports. Every report names the other side.
    reports = {rank: json.loads(path.read_text())
               for rank in range(4) if (path := tmp_path / f"rank{rank}.json").exists()}
    assert {2, 3} <= set(reports) and {0, 1} & set(reports), (sorted(reports), output)
    for rank, seen in reports.items():
        silent = "[2, 3]" if rank < 2 else "[0, 1]"
        assert seen["time"] - cut <= STEP_PAUSE + TIMEOUT + 2, seen  # next call, then timeout
        if seen["error"] == "CollectiveTimeout":
            assert (f"rank {rank}: timed out waiting for the agreement records: nothing from "
                    f"rank(s) {silent}") in seen["message"], seen
        else:
            assert seen["error"] == "PeerError", seen
            assert f"nothing yet from rank(s) {silent}" in seen["message"], seen
