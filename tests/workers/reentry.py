"""Collectives issued from where they must not nest or mix (the twenty-sixth review).

Usage: mpiexec -n 2 python -m tests.workers.reentry CASE
  signal      rank 0's signal handler issues collectives while its thread is inside one
              (rank 1 is late): each is refused at once, the outer one returns the right
              result, and the ranks stay in step. Nested, they shared the route's buffers
              (a silent wrong answer with the check off) or hung.
  names       a second live thread of one name issuing on the communicator is refused;
              the name is free again once the first thread ended.
  callbacks   completion callbacks of two communicators issue blocking collectives on
              each other (they deadlocked: the callbacks ran holding the engine's lock).
  raises      rank 1's thread that issued collectives dies of an uncaught exception: the
              job ends (rank 0 waited out its timeout, mpiexec exited 0).
  interrupted Ctrl-C lands in rank 0's close() while it waits for late rank 1: rank 1 is
              still told that rank 0 left.
  exit        a collective from an exit handler registered before init: "closed", not
              mpi4py's raw "Invalid communicator".
  fork        rank 0 forks a child whose exit handlers run: the child does not tell rank 1
              that rank 0 left (a false PeerError there).
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time

import numpy as np
from mpi4py import MPI

import collectives
from tests.workers.common import Tally

REFUSED = "inside another collective of this communicator"


def nested_in_signal_handler(tally: Tally) -> None:
    """Outer call on rank 0's main thread; its SIGALRM handler issues the nested ones."""
    for check, call in ((False, "native"), (True, "ride"), (True, "allgather"),
                        (True, "ring"), (True, "wait")):
        comm = collectives.init(timeout=20, check=check)
        outer, out = np.full(8, comm.rank + 1.0), np.empty(8)

        def collective(x):
            if call == "allgather":
                return comm.allgather(x)
            algorithm = {"native": "native", "ride": "auto", "ring": "ring"}.get(call, "auto")
            return comm.allreduce(x, out=out, algorithm=algorithm)

        collective(outer)  # the repeated call's route is made
        inner: list[str] = []

        def handler(signum, frame):
            try:
                if call == "wait":
                    comm.allreduce_async(np.ones(4)).wait()
                else:
                    collective(np.full(8, 100.0))
                inner.append("the nested call returned")
            except collectives.CollectiveError as error:
                inner.append(str(error))

        if comm.rank == 0:
            before = signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.2)
        else:
            time.sleep(1.0)
        got = collective(outer).copy()
        if comm.rank == 0:
            signal.signal(signal.SIGALRM, before)
            expected = "would wait forever" if call == "wait" else REFUSED
            tally.check(len(inner) == 1 and expected in inner[0], f"{call}: nested: {inner}")
        want = np.stack([np.full(8, 1.0), np.full(8, 2.0)]) if call == "allgather" \
            else np.full(8, 3.0)
        tally.check(np.array_equal(got, want), f"{call}: outer result {got.ravel()[:3]}")
        if call == "wait":  # the async call the handler issued runs: rank 1 issues it too
            if comm.rank == 1:
                comm.allreduce_async(np.ones(4)).wait()
        again = comm.allreduce(np.ones(2))
        tally.check(bool((again == 2).all()), f"{call}: the next call: {again}")
        comm.close()


def same_named_threads(comm, tally: Tally) -> None:
    first_issued, second_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def first():
        seen["first"] = comm.allgather(np.full(2, float(comm.rank)))[:, 0].tolist()
        first_issued.set()
        second_done.wait(30)
        seen["first again"] = comm.allreduce(np.ones(2))[0]

    def second():
        try:
            comm.allreduce(np.ones(2))
            seen["second"] = "ran"
        except collectives.CollectiveError as error:
            seen["second"] = str(error)
        second_done.set()

    one = threading.Thread(target=first, name="worker")
    one.start()
    first_issued.wait(30)
    two = threading.Thread(target=second, name="worker")
    two.start()
    two.join(30)
    one.join(30)
    tally.check(seen.get("first") == [0.0, 1.0] and seen.get("first again") == 2.0,
                f"the first thread: {seen}")
    tally.check("two live threads named 'worker'" in str(seen.get("second")),
                f"the second thread of that name: {seen.get('second')}")
    later = threading.Thread(target=lambda: seen.update(later=comm.allreduce(np.ones(2))[0]),
                             name="worker")
    later.start()
    later.join(30)
    tally.check(seen.get("later") == 2.0, f"a thread of that name after the first ended: {seen}")


def callbacks_across_communicators(comm, tally: Tally) -> None:
    other = collectives.init(MPI.COMM_WORLD.Dup(), timeout=20)
    got: dict[str, object] = {}

    def on(name, target):
        def callback(_):
            try:
                got[name] = float(target.allreduce(np.ones(4))[0])
            except collectives.CollectiveError as error:
                got[name] = str(error)
        return callback

    first = comm.allreduce_async(np.ones(1 << 14))
    second = other.allreduce_async(np.ones(1 << 14))
    first.add_done_callback(on("other's from comm's callback", other))
    second.add_done_callback(on("comm's from other's callback", comm))
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    tally.check(sorted(got.values()) == [2.0, 2.0], f"blocking calls from callbacks: {got}")
    after = comm.allreduce(np.ones(2), algorithm="ring")
    tally.check(bool((after == 2).all()), f"the main thread's next call: {after}")
    other.close()


def thread_raises(comm) -> None:
    def train():
        comm.allreduce(np.ones(2))
        if comm.rank == 1:
            raise ValueError("bad batch on rank 1")
        comm.allreduce(np.ones(2))

    worker = threading.Thread(target=train, name="trainer")
    worker.start()
    worker.join()
    print(f"rank {comm.rank}: finished all collectives", flush=True)


def close_interrupted(comm, tally: Tally) -> None:
    if comm.rank == 0:
        def interrupt(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            comm.close()
            tally.check(False, "close() returned through the interrupt")
        except KeyboardInterrupt:
            pass
        return
    time.sleep(2.0)
    start = time.monotonic()
    try:
        comm.allreduce(np.ones(2))
        tally.check(False, "rank 0 left, yet the allreduce returned")
    except collectives.PeerError as error:
        tally.check("rank 0 left" in str(error) and time.monotonic() - start < 5,
                    f"after {time.monotonic() - start:.1f} s: {error}")


def from_exit_handler() -> None:
    def final():
        try:
            comm.allreduce(np.ones(2))
            print(f"rank {comm.rank} FAIL an allreduce from the exit handler ran", flush=True)
        except collectives.CollectiveError as error:
            if "this communicator is closed" in str(error):
                return
            print(f"rank {comm.rank} FAIL from the exit handler: {error}", flush=True)
        except Exception as error:  # noqa: BLE001 - any other error is the failure
            print(f"rank {comm.rank} FAIL from the exit handler: {type(error).__name__}: "
                  f"{error}", flush=True)
        os._exit(3)

    atexit.register(final)  # before init: it runs after the library's exit handlers
    comm = collectives.init(timeout=20)
    comm.allreduce(np.ones(2))


def forked_child_exits(comm, tally: Tally) -> None:
    if comm.rank == 0:
        pid = os.fork()
        if pid == 0:  # the child's exit handlers, then out (MPI_Finalize would hang here)
            atexit._run_exitfuncs()
            os._exit(0)
        os.waitpid(pid, 0)
    comm.barrier()
    try:
        got = comm.allreduce(np.ones(2))
        tally.check(bool((got == 2).all()), f"after the child's exit: {got}")
    except collectives.CollectiveError as error:
        tally.check(False, f"after rank 0's forked child exited: {error}")


def main() -> None:
    case = sys.argv[1]
    if case == "exit":
        from_exit_handler()
        return
    tally = Tally(MPI.COMM_WORLD.Get_rank())
    if case == "signal":
        nested_in_signal_handler(tally)
        tally.finish()
    comm = collectives.init(timeout=20)
    if case == "raises":
        thread_raises(comm)
        return
    {"names": same_named_threads, "callbacks": callbacks_across_communicators,
     "interrupted": close_interrupted, "fork": forked_child_exits}[case](comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
