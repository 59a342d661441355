"""Collectives from signal handlers, same-named threads, callbacks across communicators,
dying threads, interrupted closes, exit handlers and forked children (tests/workers/reentry.py)."""
import time

import pytest

from tests.mpirun import run_workers


@pytest.mark.parametrize("case", ["signal", "names", "callbacks", "interrupted", "exit", "fork",
                                  "unclosed"])
def test_collectives_where_they_must_not_nest_or_mix(case):
    proc = run_workers(2, "reentry", case, timeout=120)
    assert "FAIL" not in proc.stdout, proc.stdout


def test_a_thread_that_issued_collectives_and_died_ends_the_job():
    start = time.monotonic()
    proc = run_workers(2, "reentry", "raises", expect_ok=False, timeout=120)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert elapsed < 15, f"the job took {elapsed:.1f} s to end (the timeout is 20 s)\n{output}"
    assert ("rank 1 ends the job (MPI_Abort) on the uncaught exception above in thread "
            "'trainer', which issued collectives on a communicator still open") in proc.stderr, \
        output


def test_a_thread_that_dies_after_its_communicator_closed_ends_nothing():
    proc = run_workers(2, "reentry", "closed", timeout=120)
    assert proc.stdout.count("went on") == 2 and "ValueError" in proc.stderr, \
        proc.stdout + proc.stderr
    assert "ends the job" not in proc.stderr, proc.stderr


def test_an_uncaught_exception_is_reported_after_torch_distributed_started():
    """torch's excepthook buffers the report until ours returns; ours ends the job first."""
    pytest.importorskip("torch", reason="the torch extra is not installed")
    proc = run_workers(2, "reentry", "torch", expect_ok=False, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "RuntimeError: boom on rank" in proc.stderr and "ends the job" in proc.stderr, \
        proc.stderr


def test_a_communicator_made_after_one_gave_up_takes_none_of_its_messages():
    """Ranks interrupted in a ring all-reduce close; the next communicator got the freed
    context id back and the abandoned call's messages with it: wrong sums (the seventieth
    review). A communicator that gave up on a collective is no longer freed."""
    run_workers(2, "stale_messages", timeout=120)


def test_close_after_an_interrupt_as_the_records_came_back():
    """The records' completed persistent receives were cancelled at close: mpi4py's own
    exception (the seventy-first review)."""
    run_workers(2, "interrupted_close", "records", timeout=60)


def test_an_interrupted_close_leaves_the_next_communicator_none_of_its_messages():
    """Its "left" notice, undelivered, reached the next communicator as a PeerError (the
    seventy-fourth review)."""
    run_workers(2, "interrupted_close", "leaving", timeout=60)
