"""allreduce_async / allreduce_many_async: same bits as sync while the caller computes, in order.

Usage: mpiexec -n P python -m tests.workers.async_check
Checks: results equal the sync ones bit for bit while the caller runs NumPy work; a sync call
issued while async ones are pending keeps the issue order; handles report done() and honour
wait(timeout); errors surface at wait() on every rank and the communicator carries on;
ranks that issue different n-th collectives get MismatchError.
"""
from __future__ import annotations

import signal
import threading
import time

import numpy as np

import collectives
from collectives.transport.mpi import LEAVE_GRACE
from tests.workers.common import Tally, digest, everyone


def inputs(rank: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(rank)
    big = rng.standard_normal(300_001).astype(np.float32)
    many = [rng.standard_normal(n).astype(d) for n, d in
            zip((1, 1000, 4096, 77, 30_000), (np.float32, np.float64, np.float32, np.float16, np.float32))]
    ints = rng.integers(-100, 100, 10_007).astype(np.int64)
    return big, many, ints


def compute(seed: int) -> float:
    """Caller work while collectives are in flight (NumPy releases the GIL)."""
    a = np.random.default_rng(seed).standard_normal((300, 300))
    for _ in range(20):
        a = np.tanh(a @ a / 300.0)
    return float(a.sum())


def bits(arrays) -> list[str]:
    return [digest(a) for a in arrays]


def overlap(comm, tally) -> None:
    big, many, ints = inputs(comm.rank)
    calls = [
        ("ring sum", lambda f: f(big, op="sum", algorithm="ring")),
        ("native avg ints", lambda f: f(ints, op="avg", algorithm="native")),
        ("auto fp16", lambda f: f(big, op="avg", compression="fp16")),
    ]
    sync = [call(comm.allreduce) for _, call in calls]
    sync_many = comm.allreduce_many(many, op="avg", fusion_bytes=16 << 10)
    alone = compute(1)
    handles = [call(comm.allreduce_async) for _, call in calls]
    handle_many = comm.allreduce_many_async(many, op="avg", fusion_bytes=16 << 10)
    busy = compute(1)  # runs while the collectives progress in the background
    tally.check(busy == alone, "the caller's own work changed while collectives ran")
    for (name, _), h, want in zip(calls, handles, sync):
        got = h.wait()
        tally.check(h.done(), f"{name}: not done after wait()")
        tally.check(digest(got) == digest(want), f"{name}: async bits differ from sync")
    got_many = handle_many.wait()
    tally.check(bits(got_many) == bits(sync_many), "many: async bits differ from sync")
    tally.check(all(g.dtype == m.dtype and g.shape == m.shape for g, m in zip(got_many, many)),
                "many: dtypes or shapes changed")
    gathered = everyone(bits(got_many) + [digest(h.wait()) for h in handles])
    tally.check(all(e == gathered[0] for e in gathered), "async results differ across ranks")


def ordering(comm, tally) -> None:
    """async, sync, async issued back to back: each result belongs to its own call."""
    xs = [np.full(1000 + i, float(comm.rank + 10 * i), np.float32) for i in range(4)]
    want = [np.full(x.size, sum(range(comm.size)) + 10.0 * i * comm.size, np.float32)
            for i, x in enumerate(xs)]
    h0 = comm.allreduce_async(xs[0], op="sum", algorithm="ring")
    h1 = comm.allreduce_async(xs[1], op="sum", algorithm="native")
    y2 = comm.allreduce(xs[2], op="sum", algorithm="ring")  # waits for h0, h1 first
    tally.check(h0.done() and h1.done(), "a sync call ran before the async ones issued earlier")
    h3 = comm.allreduce_many_async([xs[3]], op="sum")
    got = [h0.wait(), h1.wait(), y2, h3.wait()[0]]
    for i, (g, w) in enumerate(zip(got, want)):
        tally.check(np.array_equal(g, w), f"ordering: call {i} got {g[:2]}, want {w[:2]}")


def staggered(comm, tally) -> None:
    """Rank 0 issues first; its handle is pending until the last rank joins (which it
    does once rank 0 has looked, told over MPI's world communicator)."""
    from mpi4py import MPI

    x = np.ones(5000, np.float32)
    last = comm.size - 1
    if comm.rank == last and last > 0:
        MPI.COMM_WORLD.recv(source=0, tag=77)
    h = comm.allreduce_async(x, op="sum", algorithm="ring")
    if comm.rank == 0 and last > 0:
        tally.check(not h.done(), "done() before the last rank issued")
        try:
            h.wait(timeout=0.05)
        except TimeoutError as caught:
            tally.check("still running" in str(caught), f"timeout message: {caught}")
        else:
            tally.check(False, "wait(timeout=0.05) returned before the last rank issued")
        MPI.COMM_WORLD.send(None, dest=last, tag=77)
    tally.check(np.array_equal(h.wait(), np.full(5000, comm.size, np.float32)), "staggered sum")


def failures(comm, tally) -> None:
    """Bad arguments raise at wait() on every rank; a rank mismatch is caught; then it goes on."""
    h = comm.allreduce_async(np.ones(4, np.float32), op="prod")
    try:
        h.wait()
    except ValueError as caught:
        tally.check("prod" in str(caught), f"bad op message: {caught}")
    else:
        tally.check(False, "op='prod': wait() did not raise")
    shape = 10 + (comm.rank == 0)
    h = comm.allreduce_async(np.ones(shape, np.float32))
    try:
        h.wait()
    except collectives.MismatchError as caught:
        tally.check("shape" in str(caught), f"mismatch message: {caught}")
    else:
        tally.check(comm.size == 1, "different shapes on the ranks: no MismatchError")
    y = comm.allreduce_async(np.ones(3, np.float32)).wait()
    tally.check(np.array_equal(y, np.full(3, comm.size, np.float32)), "after failures: wrong sum")


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    overlap(comm, tally)
    ordering(comm, tally)
    staggered(comm, tally)
    failures(comm, tally)
    for count, algorithm in ((3, "auto"), (100_000, "ring")):  # riding, then a plan
        close_from_another_thread(count, algorithm, tally)
    close_from_a_signal_handler(tally)
    close_with_pending(comm, tally)
    tally.finish()


LATE = LEAVE_GRACE + 0.5  # after a closing rank's barrier gave up on the others


def close_from_another_thread(count: int, algorithm: str, tally: Tally) -> None:
    """close() from a thread while this thread's collective waits for a late peer waits for
    the collective (the twelfth review: it closed the transport under it, a false
    MismatchError here, success or a full timeout on the peer)."""
    comm = collectives.init(timeout=30)
    p, last = comm.size, comm.rank == comm.size - 1
    closed = []
    if comm.rank == 0 and p > 1:
        threading.Timer(0.2, lambda: closed.append((comm.close(), time.time()))).start()
    if last:
        time.sleep(LATE)
    arrived = time.time()  # (one machine: the ranks' wall clocks agree)
    try:
        got = comm.allreduce(np.ones(count), algorithm=algorithm)
        tally.check(bool((got == p).all()), f"{algorithm}: {got[:3]} while closing")
    except collectives.CollectiveError as error:
        tally.check(False, f"{algorithm} while another thread closes: {error}")
    arrivals = everyone(arrived)
    if comm.rank != 0 or p == 1:
        comm.close()
        return
    deadline = time.monotonic() + 30
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    tally.check(bool(closed) and closed[0][1] >= max(arrivals),
                f"close() did not wait for the late rank's call: {closed}, arrivals {arrivals}")


def close_from_a_signal_handler(tally: Tally) -> None:
    """close() from a signal handler on the thread whose collective waits for a late peer:
    the engine's lock is an RLock and let it in, closing the transport under the call (a
    false MismatchError here, a full timeout on the peer; the thirteenth review). Now it
    raises there, as an interrupt: the call breaks and tells the peer at once."""
    comm = collectives.init(timeout=30)
    if comm.size == 1:
        comm.close()
        return
    refused = []

    def handler(signum, frame):
        try:
            comm.close()
        except collectives.CollectiveError as error:
            refused.append(str(error))
            raise
    if comm.rank == 0:
        before = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
    else:
        time.sleep(3.0)  # long after rank 0's alarm, whenever rank 0 got here
    start = time.monotonic()
    try:
        comm.allreduce(np.ones(3))
        tally.check(False, "an allreduce with close() called inside it returned")
    except collectives.CollectiveError as error:
        took = time.monotonic() - start
        tally.check((comm.rank == 0 and bool(refused) and "inside a collective" in refused[0])
                    or (comm.rank > 0 and isinstance(error, collectives.PeerError) and took < 10),
                    f"close() in a signal handler: {type(error).__name__} after {took:.1f} s: "
                    f"{error} ({refused})")
    finally:
        if comm.rank == 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, before)
    comm.close()


def close_with_pending(comm, tally: Tally) -> None:
    """close() right after async calls finishes them first (they all failed with "this
    communicator is closed"); then a callback's close() and later calls are refused."""
    p = comm.size
    handles = [comm.allreduce_async(np.full(1 << 16, float(i), np.float32)) for i in range(6)]
    refused = []
    handles[-1].add_done_callback(lambda h: refused.append(_close_refused(comm)))
    comm.close()
    for i, handle in enumerate(handles):
        try:
            tally.check(bool((handle.wait() == i * p).all()), f"queued call {i} before close")
        except collectives.CollectiveError as error:
            tally.check(False, f"queued call {i} failed at close: {error}")
    tally.check(refused == [True], f"close() from a callback: {refused}")
    for what, call in (("allreduce", lambda: comm.allreduce(np.ones(2))),
                       # it said "the progress engine is shut down" (the seventy-sixth review)
                       ("allreduce_many_async", lambda: comm.allreduce_many_async(
                           [np.ones(2)]))):
        try:
            call()
            tally.check(False, f"{what} after close ran")
        except collectives.CollectiveError as error:
            tally.check(f"{what}: this communicator is closed" in str(error),
                        f"{what} after close: {error}")


def _close_refused(comm) -> bool | str:
    try:
        comm.close()
    except collectives.CollectiveError as error:
        return "would wait for itself" in str(error) or str(error)
    return "close() from a callback returned"


if __name__ == "__main__":
    main()
