"""Collectives issued from where they must not nest or mix (the twenty-sixth review).

Usage: mpiexec -n 2 python -m tests.workers.reentry CASE
  signal      rank 0's signal handler issues collectives while its thread is inside one
              (rank 1 is late): each is refused at once, the outer one returns the right
              result, and the ranks stay in step. Nested, they shared the route's buffers
              (a silent wrong answer with the check off) or hung.
  names       a thread issues a repeated call while another of the same name is inside
              it (its failed start cleared the call under the first: AttributeError);
              threads of one name one after the other, each ending a little after its
              call, all pair right.
  callbacks   completion callbacks of two communicators issue blocking collectives on
              each other (they deadlocked: the callbacks ran holding the engine's lock).
  raises      rank 1's thread that issued collectives dies of an uncaught exception: the
              job ends (rank 0 waited out its timeout, mpiexec exited 0).
  closed      a thread that issued collectives on a communicator closed since dies of an
              uncaught exception: the job goes on.
  torch       an uncaught exception after torch.distributed started over the communicator
              (its excepthook buffers the report, to print it once ours returns: it was lost).
  unclosed    communicators dropped without close() are freed.
  interrupted Ctrl-C lands in rank 0's close() while it waits for late rank 1: rank 1 is
              still told that rank 0 left.
  exit        a collective from an exit handler registered before init: "closed", not
              mpi4py's raw "Invalid communicator".
  fork        rank 0 forks a child whose exit handlers run: the child does not tell rank 1
              that rank 0 left (a false PeerError there).
"""
from __future__ import annotations

import atexit
import copy
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
    x = np.full(4, float(comm.rank))
    want = np.stack([np.full(4, 0.0), np.full(4, 1.0)])
    seen: dict[str, object] = {}

    def gather(label):
        try:
            seen[label] = np.array_equal(comm.allgather(x), want)
        except collectives.CollectiveError as error:
            seen[label] = f"{type(error).__name__}: {error}"

    def in_thread(target, *args):
        thread = threading.Thread(target=target, args=args, name="worker")
        thread.start()
        return thread

    in_thread(gather, "warm").join(30)  # the repeated call's route is made
    if comm.rank == 0:  # A inside the call (rank 1 is late), B issues it meanwhile
        a = in_thread(gather, "A")
        time.sleep(0.5)
        b = in_thread(gather, "B")
        a.join(30)
        b.join(30)
    else:
        time.sleep(1.5)
        in_thread(lambda: (gather("A"), gather("B"))).join(30)
    tally.check(all(seen.get(k) is True for k in ("warm", "A", "B")), f"one name: {seen}")
    results: list = []

    def step(i):  # hands its result on, then tidies up a little before it ends
        results.append(float(comm.allreduce(np.full(2, float(i)))[0]))
        time.sleep(0.01)

    for i in range(20):  # the next thread of the name starts before the last one ended
        in_thread(step, i)
        while len(results) <= i:
            time.sleep(0.001)
    tally.check(results == [2.0 * i for i in range(20)], f"threads one after another: {results}")


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

    # Large enough to be pending when the callbacks are attached on every rank: one that
    # finished first runs its callback on the attaching thread (a known gap), and the
    # ranks' threads then differ (128 KiB finished first once, in a loaded fresh-clone run).
    first = comm.allreduce_async(np.ones(1 << 20))
    second = other.allreduce_async(np.ones(1 << 20))
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


def thread_raises_after_close(comm) -> None:
    closed = threading.Event()

    def work():
        comm.allreduce(np.ones(2))
        closed.wait(30)
        raise ValueError("an error after the communicator was closed")

    worker = threading.Thread(target=work, name="helper")
    worker.start()
    time.sleep(0.5)  # (its collective is done: every rank took part)
    comm.close()
    closed.set()
    worker.join()
    print(f"rank {comm.rank}: went on", flush=True)


def unclosed_are_freed(tally: Tally) -> None:
    import gc
    import weakref

    refs = []
    for _ in range(5):
        comm = collectives.init(MPI.COMM_WORLD.Dup(), timeout=20)
        comm.allreduce(np.ones(1 << 16), algorithm="ring")
        refs.append(weakref.ref(comm))
        del comm
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    tally.check(alive == 0, f"{alive} of 5 communicators dropped without close() kept alive")


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
    """Forked while an async call runs (rank 1 is late): the child's exit handlers neither
    tell rank 1 that rank 0 left nor wait for the parent's progress thread."""
    if comm.rank == 1:
        time.sleep(1.0)
    pending = comm.allreduce_async(np.ones(2))
    copies = (copy.copy(comm), copy.deepcopy(comm))  # (a copy escaped the refusal: the
    if comm.rank == 0:  # eighty-seventh review)
        time.sleep(0.3)  # the progress thread is inside the call, waiting for rank 1
        pid = os.fork()
        if pid == 0:  # the child's exit handlers, then out (MPI_Finalize would hang here)
            for caller in (comm, *copies):  # as the rank, it paired with rank 1's next call
                try:  # (the eighty-third review)
                    caller.allreduce(np.ones(2))
                    os._exit(8)
                except collectives.CollectiveError as error:
                    if "forked from it cannot take part" not in str(error):
                        os._exit(9)
            try:  # it waited for ever: the progress thread is the parent's (the 86th review)
                pending.wait()
                os._exit(10)
            except collectives.CollectiveError as error:
                if "forked while it was pending" not in str(error):
                    os._exit(11)
            start = time.monotonic()
            atexit._run_exitfuncs()
            os._exit(0 if time.monotonic() - start < 5 else 7)
        _, status = os.waitpid(pid, 0)
        tally.check(os.waitstatus_to_exitcode(status) == 0,
                    f"the child took part in a collective (8), was refused unclearly (9), "
                    f"waited for the parent's call (10, 11) or its exit handlers took 5 s or "
                    f"more (7): status {status}")
    tally.check(bool((pending.wait() == 2).all()), "the call in flight at the fork")
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
    if case == "unclosed":
        unclosed_are_freed(tally)
        tally.finish()
    comm = collectives.init(timeout=20)
    if case == "torch":
        from collectives.hooks.torch import init_process_group

        init_process_group(comm)
        raise RuntimeError(f"boom on rank {comm.rank}")
    if case in ("raises", "closed"):
        (thread_raises if case == "raises" else thread_raises_after_close)(comm)
        return
    {"names": same_named_threads, "callbacks": callbacks_across_communicators,
     "interrupted": close_interrupted, "fork": forked_child_exits}[case](comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
