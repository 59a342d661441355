"""Bounded waits under a real mpiexec: a rank that never arrives, exits, is killed or raises."""
import json
import time

import pytest

from tests.mpirun import ended_by_abort, run_workers
from tests.workers.timeouts import ABORT_CODE, TIMEOUT

NP = 3


@pytest.mark.parametrize("algorithm, check, step, mode", [
    ("ring", "1", "timed out waiting for the agreement records: nothing from rank(s) [2]",
     "absent"),
    ("ring", "0", "ring round ", "absent"),
    ("halving_doubling", "0", "halving_doubling round ", "absent"),
    ("native", "0", "timed out waiting for native MPI all-reduce", "absent"),
    # the node's shared windows grow for the larger call: the node's meeting names the
    # absent rank
    ("ring", "0", "grow the shared windows: rank(s) [2] did not come", "absent-grow"),
])
def test_rank_that_never_arrives_gives_collective_timeout(tmp_path, algorithm, check, step, mode):
    env = {"COLLECTIVES_CHECK": check, **({"COLLECTIVES_SHM": "1"} if mode == "absent-grow"
                                          else {})}
    proc = run_workers(NP, "timeouts", mode, algorithm, str(tmp_path), expect_ok=False,
                       env=env, timeout=120)
    output = f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    # comm.abort(7) ended the job
    assert ended_by_abort(proc, ABORT_CODE), output
    seen_by = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(NP - 1)]
    # The first rank to time out tells the others, which may then stop at once (PeerError).
    assert any(seen["error"] == "CollectiveTimeout" for seen in seen_by), seen_by
    for rank, seen in enumerate(seen_by):
        assert seen["elapsed"] <= TIMEOUT + 5, seen  # (a hang would take far longer)
        message = seen["message"]
        assert message.startswith(f"allreduce #2 (op=sum, algorithm={algorithm}, "), message
        assert message.endswith("; this communicator is unusable now: call comm.abort()"), \
            message
        if seen["error"] == "PeerError":  # told by a notice, or by the node's meeting
            assert ("gave up on collective #2" in message
                    or "gave up waiting for the node's ranks to grow" in message), message
            assert seen["after"].startswith("CollectiveError: allreduce #3: this communicator "
                                            "is unusable since allreduce #2 was abandoned"), seen
            continue
        assert seen["error"] == "CollectiveTimeout", seen
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


@pytest.mark.parametrize("algorithm, check, call", [
    ("ring", "1", ()), ("native", "1", ()), ("ring", "0", ()), ("native", "0", ()),
    ("auto", "1", ("allreduce", "4")),  # the small-call lane: the data rides
    ("auto", "1", ("broadcast", "4")),  # a riding broadcast on the general path
    # a float16 avg in place scaled x before MPI's own all-reduce, which then timed out
    ("native", "0", ("allreduce", str(1 << 16), "float16")),
])
def test_late_rank_touches_no_memory_and_never_succeeds(tmp_path, algorithm, check, call):
    """After rank 0 timed out, rank 1 arrives: rank 0's fresh arrays and its out=x stay as
    they were while MPI progresses, and rank 1 is told rank 0 gave up (it must not return a
    result rank 0 never agreed to). A riding call has every rank's data at hand on the late
    rank too: it must raise without writing its out=x."""
    from tests.workers import late_rank

    proc = run_workers(2, "late_rank", algorithm, check, str(tmp_path), *call,
                       expect_ok=False, timeout=120)
    output = f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    assert ended_by_abort(proc, late_rank.ABORT), output
    first = json.loads((tmp_path / "rank0.json").read_text())
    late = json.loads((tmp_path / "rank1.json").read_text())
    assert first["error"] == "CollectiveTimeout", first
    assert first["changed"] == [], first
    assert late["error"] in ("PeerError", "CollectiveTimeout"), late
    if late["error"] == "PeerError":
        assert "rank 0 gave up on collective #2" in late["message"], late
    if call:
        assert not late["x_changed"], late
    if algorithm == "native":  # MPI's own cannot be cancelled: it never writes x
        assert not first["x_changed"], first


@pytest.mark.parametrize("algorithm, check, call, out", [
    ("native", "0", ("allreduce", "4"), "x"),  # the small-call lane's native, through its stage
    ("native", "0", ("allreduce", "4"), "none"),  # the lane's native into a new array
    ("native", "0", ("allreduce", str(1 << 16), "float16"), "x"),  # the general path's
    ("native", "0", ("broadcast", str(1 << 16)), "x"),  # another collective's native
    ("ring", "1", ("allreduce", "4"), "x"),  # the lane's plan, after the records' exchange
])
def test_late_rank_that_misses_the_notice_at_first_still_never_succeeds(tmp_path, algorithm,
                                                                         check, call, out):
    """Rank 1 arrives late and does not see rank 0's notice as its call starts (under load
    the notice waits behind the messages of rank 0's orphaned MPI collective, found by CI).
    With the check off, MPI's own collective completes with that orphaned request, and rank
    1 must still raise before it writes x or returns (the notices are checked when a native
    collective completes). With it on, rank 0's record (sent before it gave up) arrives:
    rank 1 must look for notices before any data moves, as the general path does (the
    lane's plan ran its first round first: the sixty-second review)."""
    proc = run_workers(2, "late_rank", algorithm, check, str(tmp_path), *call,
                       expect_ok=False, timeout=120,
                       env={"LATE_RANK_MISSES_NOTICE": "1", "LATE_RANK_OUT": out})
    output = f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    late = json.loads((tmp_path / "rank1.json").read_text())
    assert late["error"] == "PeerError", (late, output)
    assert "rank 0 gave up on collective #2" in late["message"], late
    assert "round" not in late["message"], late  # no plan step ran
    assert not late["x_changed"], late


@pytest.mark.parametrize("mode", ["late-grow", "grow-vs-close", "held", "interrupted",
                                  "interrupted-after-allocating", "left", "left-grow"])
def test_shared_windows_that_cannot_grow_leave_no_rank_hanging(tmp_path, mode):
    """With COLLECTIVES_SHM=1 a call that grows the node's shared windows meets the node's
    ranks first: a rank coming after the others gave up there, one closing while another
    grows, one held in the meeting past the others' patience, one interrupted there: every
    rank raises, and the program ends normally on every rank (each closes at exit). The
    first two hung for good when the meeting was an MPI barrier (the sixty-first review),
    the third in the first version of the meeting (the sixty-third); one interrupted right
    after the allocation returned left the ranks disagreeing on the windows, and every rank
    hung freeing them at exit (the seventy-first). A rank that closes while another calls:
    the caller was told after the close's 30 s grace, and one that grew the windows was told
    the ranks disagree on the arguments (the eighty-third)."""
    start = time.monotonic()
    proc = run_workers(2, "shm_meetings", mode, str(tmp_path), timeout=90,
                       env={"COLLECTIVES_SHM": "1", "COLLECTIVES_CHECK": "0"})
    assert time.monotonic() - start < 60, proc.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    if mode.startswith("left"):
        assert seen[1]["error"] is None and seen[1]["elapsed"] < 10, seen  # (it was 30 s)
        said = seen[0].get("message", "")
        assert seen[0]["error"] == "PeerError" and ("[1] left" in said or "rank 1 left" in said), seen
        assert seen[0]["elapsed"] < (1 if mode == "left-grow" else 4), seen
        return
    assert all(s["error"] is not None for s in seen), seen
    if mode == "late-grow":
        assert seen[0]["error"] == "CollectiveTimeout", seen
        assert "grow the shared windows: rank(s) [1] did not come" in seen[0]["message"], seen
        assert seen[1]["elapsed"] < 1.0, seen  # told at once: rank 0 gave up there
    elif mode == "grow-vs-close":
        assert seen[1]["error"] == "CollectiveTimeout", seen
    elif mode == "held":
        assert seen[0]["error"] == "CollectiveTimeout", seen  # after its deadline and grace
        assert seen[1]["error"] == "PeerError", seen  # it finds rank 0 gave up
    elif mode == "interrupted":
        assert seen[1]["error"] == "KeyboardInterrupt", seen
        assert seen[0]["error"] == "PeerError" and seen[0]["elapsed"] < 1.0, seen
    else:
        assert seen[1]["error"] == "KeyboardInterrupt", seen
        assert seen[0]["error"] in ("PeerError", "CollectiveTimeout"), seen


def test_ranks_closing_apart_over_shared_memory_leave_nothing_to_the_next_one(tmp_path):
    """Two ranks told the third they left (2 s into their close) and then all freed the
    windows together: the second notice, never taken, waited in the freed communicator and
    the next communicator's first collective raised PeerError (the eighty-sixth review)."""
    run_workers(3, "shm_meetings", "closed-apart", str(tmp_path), timeout=90,
                env={"COLLECTIVES_SHM": "1"})
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert all(s["error"] is None and s["sum"] == 3 for s in seen), seen


def test_rank_held_in_the_data_while_the_others_end_gets_the_librarys_error(tmp_path):
    """Rank 1 held past the timeout inside a large ring all-reduce; the others time out and
    end. Its transfers with them then fail inside MPI: it raises a CollectiveError, not
    mpi4py's exception, and ends (tests/workers/stalled_in_data.py)."""
    run_workers(3, "stalled_in_data", "ring", str(tmp_path), timeout=90)
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert all(s["raised"] and s["raised"].startswith("collectives.errors.") for s in seen), seen


def test_peer_that_gave_up_on_a_later_collective_does_not_fail_this_one():
    """Rank 0 slow in #2 (MPI's own) while rank 1 finished #2 and gave up on #3: rank 0's #2
    returns its result, its #3 raises PeerError (tests/workers/gave_up_later.py)."""
    run_workers(2, "gave_up_later", timeout=120)


def test_abort_after_close_ends_the_job_with_its_code():
    """`comm.abort(6)` after the with-block closed the communicator: MPI_Abort on
    COMM_WORLD, the job ends at once with its code and no traceback (before: exit code 1
    after a raw mpi4py error, or 14, the watchdog's SIGALRM)."""
    from tests.workers import abort_after_close

    start = time.monotonic()
    proc = run_workers(2, "abort_after_close", expect_ok=False, timeout=120)
    output = f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    assert ended_by_abort(proc, abort_after_close.ABORT), output
    assert "Traceback" not in proc.stderr, output
    assert time.monotonic() - start < 30, output


def test_rank_that_exits_cleanly_is_named_at_once(tmp_path):
    """sys.exit(0) on rank 1: the others' next collective raises PeerError within seconds
    (rank 1 tells them it left), instead of waiting out their 60 s timeout."""
    from tests.workers.early_exit import CALLS_BEFORE_EXIT

    start = time.monotonic()
    run_workers(3, "early_exit", str(tmp_path), timeout=120)
    assert time.monotonic() - start < 40
    for rank in (0, 2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["error"] == "PeerError", seen
        assert f"rank 1 left after collective #{CALLS_BEFORE_EXIT}" in seen["message"], seen
        assert seen["elapsed"] < 10, seen


@pytest.mark.parametrize("kind, check", [("ride", "1"), ("large", "1"), ("begin", "1"),
                                         ("before", "1"), ("before", "0"), ("after", "1")])
def test_an_interrupted_collective_leaves_the_communicator_unusable_everywhere(kind, check):
    """An interrupt between the start of rank 0's collective and its data, while rank 1 is
    late (a signal in the wait for the records; as the collective begins; before rank 0's
    record went out, the check on or off; after the records came back): rank 0 raises it,
    rank 1 a PeerError naming rank 0, every later call on either rank a CollectiveError
    (the ninth and tenth reviews: MismatchErrors for ever, rank 1 completed the call rank 0
    had abandoned, or waited out its timeout)."""
    run_workers(2, "interrupted_records", kind, timeout=120, env={"COLLECTIVES_CHECK": check})
