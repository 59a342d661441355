"""A rank that never arrives, exits or is killed: the others must not hang.

Usage: mpiexec -n P python -m tests.workers.timeouts MODE ALGORITHM OUTDIR
  absent  the last rank never calls the second collective; the others must raise
          CollectiveTimeout within the timeout (init(timeout=TIMEOUT)) and write what they
          saw to OUTDIR/rank<r>.json; then rank 0 ends the job with comm.abort(ABORT_CODE).
  absent-grow  the same with a second collective large enough to grow the shared windows.
  interrupted  the last rank comes late to the second collective; a signal handler raises
          KeyboardInterrupt in rank 0's after INTERRUPT_AFTER s: each rank writes what it
          saw to OUTDIR/rank<r>.json.
  late    the last rank comes to the second collective after the others timed out in it:
          each rank writes what it saw to OUTDIR/rank<r>.json.
  exit    rank 1 calls os._exit(3) in the middle of a run of collectives.
  kill    rank 1 sends itself SIGKILL in the middle of a run of collectives.
  raise   rank 1 raises an uncaught exception in the middle of a run of collectives.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import collectives
from collectives.bootstrap import launched_by_torchrun
from tests.workers.common import rank_data

TIMEOUT = 2.0
INTERRUPT_AFTER = 0.3
ABORT_CODE = 7
COUNT = 1 << 12


def absent(comm, algorithm: str, outdir: Path, grow: bool = False) -> None:
    x = rank_data(COUNT, np.float32, comm.rank)
    comm.allreduce(x, algorithm=algorithm)  # all ranks arrive here
    if grow:  # the next calls need larger shared windows (COLLECTIVES_SHM=1)
        x = rank_data(1 << 20, np.float32, comm.rank)
    if comm.rank == comm.size - 1:
        time.sleep(TIMEOUT + 60)  # never arrives; ended by rank 0's abort
        return
    seen: dict[str, object] = {"rank": comm.rank}
    start = time.monotonic()
    try:
        comm.allreduce(x, algorithm=algorithm)
        seen["error"] = None
    except (collectives.CollectiveTimeout, collectives.PeerError) as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    try:
        comm.allreduce(x, algorithm=algorithm)
    except collectives.CollectiveError as error:
        seen["after"] = f"{type(error).__name__}: {error}"
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))
    if comm.rank == 0:
        expected = {outdir / f"rank{r}.json" for r in range(comm.size - 1)}
        limit = time.monotonic() + 30
        while not all(path.exists() for path in expected) and time.monotonic() < limit:
            time.sleep(0.05)
        comm.abort(ABORT_CODE)
    time.sleep(60)  # the abort ends this rank too


def late(comm, algorithm: str, outdir: Path, interrupt: bool) -> None:
    x = rank_data(COUNT, np.float32, comm.rank)
    comm.allreduce(x, algorithm=algorithm)  # all ranks arrive here
    seen: dict[str, object] = {"rank": comm.rank}
    if comm.rank == comm.size - 1:
        time.sleep(TIMEOUT * (0.75 if interrupt else 1.5))
    elif comm.rank == 0 and interrupt:
        signal.signal(signal.SIGALRM, _raise_interrupt)
        signal.setitimer(signal.ITIMER_REAL, INTERRUPT_AFTER)
    start = time.monotonic()
    try:
        comm.allreduce(x, algorithm=algorithm)
        seen["error"] = None
    except BaseException as error:  # noqa: BLE001 - what each rank saw is the result
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    if not interrupt and comm.rank == 0:  # a message after the collective gave up
        try:
            comm.send(np.ones(1), dst=1, tag=1)
            seen["send after"] = None
        except collectives.CollectiveError as error:
            seen["send after"] = str(error)
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))
    limit = time.monotonic() + 30  # alive until every rank wrote: not told by an exit
    while not all((outdir / f"rank{r}.json").exists() for r in range(comm.size)) \
            and time.monotonic() < limit:
        time.sleep(0.05)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("the test's alarm")


def dies(comm, algorithm: str, how: str) -> None:
    x = rank_data(COUNT, np.float32, comm.rank)
    for i in range(1000):
        if i == 20 and comm.rank == 1:
            if how == "exit":
                os._exit(3)
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 fails in the middle of the run")
        comm.allreduce(x, algorithm=algorithm)
    print(f"rank {comm.rank}: finished all collectives without rank 1", flush=True)


def meet() -> None:
    """The ranks meet before init(timeout=TIMEOUT), which must then finish within TIMEOUT:
    they may come seconds apart (torch's import under torchrun; MPI_Init need not sync
    them). Under torchrun init then reuses this default group and connects only its own."""
    if launched_by_torchrun():
        import datetime

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        atexit.register(dist.destroy_process_group)  # after init's own group (LIFO)
    else:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()


def main() -> None:
    mode, algorithm = sys.argv[1], sys.argv[2]
    if mode in ("absent", "absent-grow"):
        meet()
        absent(collectives.init(timeout=TIMEOUT), algorithm, Path(sys.argv[3]),
               grow=mode == "absent-grow")
    elif mode in ("interrupted", "late"):
        meet()
        late(collectives.init(timeout=TIMEOUT), algorithm, Path(sys.argv[3]),
             interrupt=mode == "interrupted")
    else:
        dies(collectives.init(), algorithm, mode)


if __name__ == "__main__":
    main()
