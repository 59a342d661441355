"""Bounded waits under a real mpiexec: a rank that never arrives, exits, is killed or raises."""
import json
import time

import pytest

from tests.mpirun import run_workers
from tests.workers.timeouts import ABORT_CODE, TIMEOUT

NP = 3


@pytest.mark.parametrize("algorithm, check, step", [
    ("ring", "1", "timed out waiting for the agreement records: nothing from rank(s) [2]"),
    ("ring", "0", "ring round "),
    ("halving_doubling", "0", "halving_doubling round "),
    ("native", "0", "timed out waiting for native MPI all-reduce"),
])
def test_rank_that_never_arrives_gives_collective_timeout(tmp_path, algorithm, check, step):
    proc = run_workers(NP, "timeouts", "absent", algorithm, str(tmp_path), expect_ok=False,
                       env={"COLLECTIVES_CHECK": check}, timeout=120)
    output = f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    # comm.abort(7) ended the job (mpiexec exits 7, or 9 when it reports the killed ranks).
    assert proc.returncode != 0 and "MPI_Abort(comm=" in proc.stderr, output
    assert f", {ABORT_CODE}) - process 0" in proc.stderr, output
    for rank in range(NP - 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["error"] == "CollectiveTimeout", seen
        assert seen["elapsed"] <= TIMEOUT + 2, seen
        message = seen["message"]
        assert message.startswith(f"allreduce #2 (op=sum, algorithm={algorithm}, "), message
        assert f"rank {rank}: " in message and step in message, message
        if algorithm != "native":  # MPI's own all-reduce cannot say whom it waits for
            # Rank 0 waits on the absent rank 2; rank 1 may finish a round first and then
            # wait on rank 0, which is stuck: either way it names a peer, never itself.
            silent = message[message.index("rank(s) [") + len("rank(s) ["):].split("]")[0]
            assert silent and str(rank) not in silent.split(", "), message
        assert seen["after"] == ("CollectiveError: allreduce #3: this communicator is unusable "
                                 "since allreduce #2 timed out; call comm.abort()"), seen


@pytest.mark.parametrize("how", ["exit", "kill", "raise"])
def test_rank_that_dies_ends_the_job(how):
    start = time.monotonic()
    proc = run_workers(NP, "timeouts", how, "ring", expect_ok=False, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "finished all collectives" not in proc.stdout
    assert elapsed < 30, f"mpiexec took {elapsed:.1f} s after rank 1 died"
    if how == "raise":
        assert "rank 1 ends the job (MPI_Abort) on the uncaught exception above" in proc.stderr
