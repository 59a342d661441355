"""Calls issued in an order the ranks do not share are caught, never paired silently.

Usage: mpiexec -n P python -m tests.workers.ordering CASE
  threads   two threads per rank issue allreduce_async at once (their order differs
            between ranks): every result is right or the call raised (MismatchError, then
            CollectiveError: the communicator is unusable once threads of other names met).
  shifted   the same in a fixed order (rank 0 issues B1 B2 A1 A2, the others A1 B1 B2 A2),
            each call with its own input: B2 was paired with B1, silently (104th review).
  order     rank 0 issues async then sync, the others sync then async (same shapes):
            MismatchError on every rank for both calls, then the communicator works.
  callback  a completion callback issues a blocking all-reduce (refused at once with
            CollectiveError, no deadlock), waits on a pending handle (refused too), and
            issues an async one (runs).
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np

import collectives
from tests.workers.common import Tally

CALLS = 100


def threads(comm, tally: Tally) -> None:
    p = comm.size
    outcomes: dict[str, list] = {"A": [], "B": []}
    scale = {"A": 1.0, "B": 1000.0}

    def issue(name: str) -> None:
        x = np.full(64, scale[name] * (comm.rank + 1), np.float32)
        handles = [comm.allreduce_async(x) for _ in range(CALLS)]
        for h in handles:
            try:
                outcomes[name].append(h.wait())
            except collectives.CollectiveError as error:
                outcomes[name].append(error)

    workers = [threading.Thread(target=issue, args=(n,), name=f"issuer-{n}") for n in "AB"]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wrong = mismatched = 0
    for name, results in outcomes.items():
        want = scale[name] * p * (p + 1) / 2
        for r in results:
            if isinstance(r, Exception):
                mismatched += 1
            elif not (r == want).all():
                wrong += 1
    print(f"rank {comm.rank}: {mismatched} mismatches caught, {wrong} wrong", flush=True)
    tally.check(wrong == 0, f"{wrong} of {2 * CALLS} concurrent calls returned another's result")
    tally.check(len(outcomes["A"]) == len(outcomes["B"]) == CALLS, "a call went missing")


def shifted(comm, tally: Tally) -> None:
    order = ["B1", "B2", "A1", "A2"] if comm.rank == 0 else ["A1", "B1", "B2", "A2"]
    turns = {call: threading.Event() for call in order}
    handles = {}

    def value(call: str, rank: int) -> float:
        return 10.0 * int(call[1]) + 1000.0 * rank + (100.0 if call[0] == "B" else 0.0)

    def issue(letter: str) -> None:
        for call in [c for c in order if c[0] == letter]:
            turns[call].wait()
            handles[call] = comm.allreduce_async(np.array([value(call, comm.rank)]))
            if order.index(call) + 1 < len(order):
                turns[order[order.index(call) + 1]].set()

    workers = [threading.Thread(target=issue, args=(n,), name=f"issuer-{n}") for n in "AB"]
    for w in workers:
        w.start()
    turns[order[0]].set()
    for w in workers:
        w.join()
    for call, handle in sorted(handles.items()):
        want = sum(value(call, r) for r in range(comm.size))
        try:
            got = float(handle.wait()[0])
        except collectives.CollectiveError:
            continue
        tally.check(got == want, f"{call}: {got} returned, {want} is its sum (paired shifted)")


def order(comm, tally: Tally) -> None:
    a = np.full(16, comm.rank + 1.0, np.float32)
    b = np.full(16, 10.0 * (comm.rank + 1), np.float32)
    outcomes = []

    def sync() -> None:
        try:
            outcomes.append(comm.allreduce(b))
        except collectives.MismatchError as error:
            outcomes.append(error)

    if comm.rank == 0:
        h = comm.allreduce_async(a)
        sync()
    else:
        sync()
        h = comm.allreduce_async(a)
    try:
        outcomes.append(h.wait())
    except collectives.MismatchError as error:
        outcomes.append(error)
    tally.check(all(isinstance(o, collectives.MismatchError) and "issued" in str(o)
                    for o in outcomes),
                f"sync/async in different orders not caught on both calls: {outcomes}")
    y = comm.allreduce(a)
    tally.check(bool((y == comm.size * (comm.size + 1) / 2).all()), f"afterwards: {y[:3]}")


def callback(comm, tally: Tally) -> None:
    seen: dict[str, object] = {}
    done = threading.Event()
    later: list = []

    def on_done(handle) -> None:
        try:
            comm.allreduce(np.ones(4, np.float32))
            seen["blocking"] = "ran"
        except collectives.CollectiveError as error:
            seen["blocking"] = str(error)
        pending = comm.allreduce_async(np.ones(4, np.float32))
        try:
            pending.wait()
            seen["wait"] = "returned"
        except collectives.CollectiveError as error:
            seen["wait"] = str(error)
        later.append(pending)
        done.set()

    start = time.monotonic()
    gate = threading.Event()  # holds the progress thread until the callback is attached
    comm._progress.submit(lambda: gate.wait(30), "gate")  # (else it could run inline, here)
    comm.allreduce_async(np.ones(4, np.float32)).add_done_callback(on_done)
    gate.set()
    tally.check(done.wait(30), "the callback never finished (deadlock)")
    tally.check("completion callback" in str(seen.get("blocking")),
                f"blocking call in a callback: {seen.get('blocking')}")
    tally.check("completion callback" in str(seen.get("wait")), f"wait in a callback: {seen.get('wait')}")
    tally.check(bool((later[0].wait() == comm.size).all()), "async call from the callback")
    y = comm.allreduce(np.ones(4, np.float32))
    tally.check(bool((y == comm.size).all()) and time.monotonic() - start < 30, "afterwards")


def main() -> None:
    cases = {"threads": threads, "shifted": shifted, "order": order, "callback": callback}
    tally = None
    for case in sys.argv[1].split(","):  # each on a communicator of its own
        comm = collectives.init(timeout=30)
        tally = tally or Tally(comm.rank)
        cases[case](comm, tally)
        comm.close()
    tally.finish()


if __name__ == "__main__":
    main()
