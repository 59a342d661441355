"""init() over communicators it must refuse, and many init/close cycles (the twenty-third
review).

Usage: mpiexec -n P python -m tests.workers.init_comms refuse|cycles
- refuse: an inter-communicator and COMM_NULL are refused by name on every rank (an
  inter-communicator was taken: native all-reduce gave each rank the other group's value,
  and unequal groups hung init); COMM_WORLD then works.
- cycles: CYCLES init/close cycles keep one excepthook that holds no closed transport but
  the newest (after about 1,000 cycles the stacked hooks lost the report), and an init
  after the program set its own hook chains ours again; then rank 1 raises uncaught,
  which must be reported once and end the job.
"""
from __future__ import annotations

import gc
import sys
import time
import weakref

import numpy as np
from mpi4py import MPI

import collectives
from tests.workers.common import Tally

CYCLES = 200
CAUSE = "THE REAL CAUSE on rank 1"


def refuse(tally: Tally) -> None:
    world = MPI.COMM_WORLD
    local = world.Split(world.rank % 2, world.rank)
    inter = local.Create_intercomm(0, world, 1 - world.rank % 2 if world.size > 1 else 0)
    for what, comm, error, said in (
            ("intercomm", inter, TypeError, "got an inter-communicator"),
            ("intercomm as MPI.Comm", MPI.Comm(inter), TypeError,
             "got an inter-communicator"),
            ("COMM_NULL", MPI.COMM_NULL, ValueError, "mpi_comm is MPI.COMM_NULL"),
            ("a group", world.Get_group(), TypeError, "got mpi4py.MPI.Group")):
        try:
            collectives.init(comm)
            tally.check(False, f"init({what}) was taken")
        except error as refused:
            tally.check(said in str(refused), f"init({what}): {refused}")
    for what, base in (("COMM_WORLD", None), ("MPI.Comm(COMM_WORLD)", MPI.Comm(world))):
        with collectives.init(base) as comm:  # (a plain MPI.Comm was refused by its class)
            total = comm.allreduce(np.ones(3))
            tally.check(bool((total == world.size).all()), f"{what} after: {total}")


def cycles(tally: Tally) -> None:
    comm = collectives.init()
    hook = sys.excepthook
    transports = [weakref.ref(comm._transport)]
    comm.close()
    for _ in range(CYCLES):
        with collectives.init() as comm:
            comm.allreduce(np.ones(2))
        transports.append(weakref.ref(comm._transport))
    del comm
    gc.collect()
    tally.check(sys.excepthook is hook, "init chained another excepthook")
    alive = sum(ref() is not None for ref in transports)
    tally.check(alive <= 1, f"{alive} closed transports kept alive")
    sys.excepthook = sys.__excepthook__  # a framework's own hook, set in between
    collectives.init().close()
    tally.check(sys.excepthook is not sys.__excepthook__,
                "init after the program set its own excepthook installed none")
    if tally.failures:
        tally.finish()
    print(f"rank {MPI.COMM_WORLD.rank}: {CYCLES} cycles kept one hook", flush=True)
    with collectives.init() as comm:
        comm.allreduce(np.ones(2))
        if comm.rank == 1:
            raise RuntimeError(CAUSE)
        time.sleep(60)  # rank 1's uncaught error ends the job meanwhile (waiting outside
        # the library: a PeerError here would end the job from this rank, maybe first)


def main() -> None:
    tally = Tally(MPI.COMM_WORLD.rank)
    if sys.argv[1] == "refuse":
        refuse(tally)
        tally.finish()
    else:
        cycles(tally)


if __name__ == "__main__":
    main()
