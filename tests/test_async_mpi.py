"""Async collectives: the progress engine (single process) and async vs sync under mpiexec."""
import signal
import threading
import time

import pytest

from collectives.errors import CollectiveError
from collectives.progress import ProgressEngine
from tests.mpirun import run_workers

ENV = {"COLLECTIVES_TIMEOUT": "60"}  # a hang fails the test in a minute


def test_submitted_work_runs_in_issue_order_off_the_caller_thread():
    engine = ProgressEngine()
    ran = []
    handles = [engine.submit(lambda i=i: ran.append((i, threading.current_thread().name)) or i,
                             f"job {i}") for i in range(20)]
    assert [h.wait(timeout=10) for h in handles] == list(range(20))
    assert [i for i, _ in ran] == list(range(20))
    assert all(name != threading.current_thread().name for _, name in ran)
    engine.close(timeout=10)


def test_run_waits_for_earlier_submissions():
    engine = ProgressEngine()
    gate = threading.Event()
    order = []
    first = engine.submit(lambda: gate.wait(10) and order.append("async"), "async")
    assert not first.done()
    threading.Timer(0.2, gate.set).start()
    engine.run(lambda: order.append("sync"))
    assert order == ["async", "sync"] and first.done()
    engine.close(timeout=10)


def test_a_wait_bound_is_checked():
    """inf (no bound) and 1e20 were an OverflowError naming no argument; -5 and NaN were
    taken as 0 (the 104th review)."""
    engine = ProgressEngine()
    gate = threading.Event()
    handle = engine.submit(lambda: gate.wait(10), "slow")
    for bad, error in ((-5.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(error, match="timeout must be"):
            handle.wait(bad)
    with pytest.raises(TimeoutError, match="slow still running after 0.05 s"):
        handle.wait(0.05)
    threading.Timer(0.2, gate.set).start()
    assert handle.wait(float("inf")) is True and handle.wait(1e20) is True
    engine.close(timeout=10)


def test_a_signal_handlers_timeout_error_in_a_wait_comes_out_as_it_was():
    """A SIGALRM handler raising TimeoutError("my alarm") in an unbounded wait came out as
    "still running after None s" (the ninety-third review)."""
    def alarm(signum, frame):
        raise TimeoutError("my alarm")

    engine = ProgressEngine()
    gate = threading.Event()
    handle = engine.submit(lambda: gate.wait(10), "slow")
    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        for timeout in (None, 60):  # (bounded, it came out as "still running after 60 s")
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(TimeoutError, match="my alarm"):
                handle.wait(timeout)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        gate.set()
    assert handle.wait(timeout=10) is True
    engine.close(timeout=10)


def test_wait_timeout_and_failure_does_not_cancel_queued_calls():
    engine = ProgressEngine()
    gate = threading.Event()

    def fail():
        gate.wait(10)
        raise ValueError("bad op")

    failing = engine.submit(fail, "first")
    queued = engine.submit(lambda: 1, "second")
    with pytest.raises(TimeoutError, match="first still running"):
        failing.wait(timeout=0.05)
    gate.set()
    with pytest.raises(ValueError, match="bad op"):
        failing.wait(timeout=10)
    # Which calls are still queued when one fails differs between ranks: all of them run.
    assert queued.wait(timeout=10) == 1
    assert engine.submit(lambda: 2, "third").wait(timeout=10) == 2
    engine.close(timeout=10)
    assert engine.pending() == 0


def test_done_flips_without_waiting():
    engine = ProgressEngine()
    handle = engine.submit(lambda: time.sleep(0.05), "sleep")
    deadline = time.monotonic() + 10
    while not handle.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.done()
    engine.close(timeout=10)


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, ValueError])
def test_a_callback_that_raises_leaves_the_engine_running(raised, caplog):
    """A BaseException from a done callback ended the progress thread (set_exception on a
    finished future): later async calls never ran and sync ones waited forever."""
    engine = ProgressEngine()
    first = engine.submit(lambda: 1, "first")

    def callback(_):
        raise raised("from a callback")

    first.add_done_callback(callback)
    assert first.wait(timeout=10) == 1
    assert engine.submit(lambda: 2, "second").wait(timeout=10) == 2
    assert engine.run(lambda: 3, "sync") == 3
    assert engine.close(timeout=10)


def test_waiting_on_another_engines_handle_from_a_callback_is_allowed():
    """wait() from a callback was refused by the thread's name, which every communicator's
    progress thread shares: only waiting on its own engine's handle would wait forever."""
    first, second = ProgressEngine(), ProgressEngine()
    gate = threading.Event()
    other = second.submit(lambda: gate.wait(10) and "other", "other")
    seen = []
    mine = first.submit(lambda: gate.wait(10) and 1, "mine")  # pending: its callback is
    # attached before it completes (else it would run inline, here)
    mine.add_done_callback(lambda h: seen.append(other.wait(timeout=10)))
    own = first.submit(lambda: 2, "own")
    refused = []
    own_pending = first.submit(lambda: gate.wait(10) and 3, "own pending")

    def wait_own(_):
        try:
            own_pending.wait()
        except CollectiveError as error:
            refused.append(str(error))

    own.add_done_callback(wait_own)
    threading.Timer(0.2, gate.set).start()
    assert own_pending.wait(timeout=10) == 3
    assert seen == ["other"]
    assert refused and "would wait forever" in refused[0]
    assert first.close(timeout=10) and second.close(timeout=10)


def test_close_inside_the_engine_on_its_own_thread_is_refused():
    """A signal handler's close() while its thread runs or issues a collective (holding
    the engine's locks, which let it in again: the fourteenth review saw it hang in submit)
    raises; the engine closes later."""
    engine = ProgressEngine()
    for lock in (engine._cv, engine._running):
        with lock:
            with pytest.raises(CollectiveError, match="inside a collective running or being"):
                engine.close(timeout=1)
    assert engine.close(timeout=1)


@pytest.mark.parametrize("np_", [2, 3, 5])
def test_async_equals_sync_while_the_caller_computes(np_):
    run_workers(np_, "async_check", env=ENV)


def test_an_interrupt_as_the_lane_takes_the_engine_leaves_the_rank_in_step():
    """The eleventh review: the engine's lock stayed held, the next collective blocked."""
    run_workers(2, "interrupted_lane", timeout=120)


def test_an_interrupt_in_an_async_calls_issue_leaves_it_unissued():
    """Injected where a signal lands: after the engine's lock is given back (the call was
    queued and ran: issued again, the peers' sums were wrong), before it (the lock stayed
    held), as the progress thread starts (it never ran), and in close() (a second close
    closed the transport under queued calls): the eightieth review."""
    run_workers(2, "interrupted_issue", timeout=120)
