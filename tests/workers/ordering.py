"""Calls issued in an order the ranks do not share are caught, never paired silently.

Usage: mpiexec -n P python -m tests.workers.ordering CASE
  threads   two threads per rank issue allreduce_async at once (their order differs
            between ranks): every result is right or the call raised MismatchError.
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
            except collectives.MismatchError as error:
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
    case = sys.argv[1]
    comm = collectives.init(timeout=30)
    tally = Tally(comm.rank)
    {"threads": threads, "order": order, "callback": callback}[case](comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
