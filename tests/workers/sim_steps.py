"""The executor's transport calls equal the step list the simulator consumes, per rank.

Usage: mpiexec -n P python -m tests.workers.sim_steps LOCAL_SIZE
Runs every plan-based algorithm over a transport that records isend/irecv (peer, bytes),
and compares with the steps the simulator reads of the same plan (simulator.Trace).
"""
from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from collectives import Communicator
from collectives.algorithms import PLANNERS
from collectives.config import Settings
from collectives.costmodel import DEFAULT_CALIBRATION
from collectives.simulator import Trace
from collectives.topology import Topology
from collectives.transport.mpi import MPITransport
from tests.workers.common import Tally, rank_data


class Recording:
    """MPITransport that logs every isend and irecv as (peer, bytes)."""

    def __init__(self, inner: MPITransport):
        self._inner = inner
        self.sends: list[tuple[int, int]] = []
        self.recvs: list[tuple[int, int]] = []

    def isend(self, buf, peer, tag):
        self.sends.append((peer, buf.nbytes))
        return self._inner.isend(buf, peer, tag)

    def irecv(self, buf, peer, tag):
        self.recvs.append((peer, buf.nbytes))
        return self._inner.irecv(buf, peer, tag)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def simulated_steps(algorithm: str, cluster, count: int, rank: int, *, itemsize: int):
    """One rank's (sends, receives) exactly as the simulator's engine reads them."""
    plan = PLANNERS["allreduce"][algorithm](rank, cluster.size, count, itemsize, cluster.topology)
    return Trace(plan, itemsize).consumed()


def main() -> None:
    local_size = int(sys.argv[1])
    transport = Recording(MPITransport(MPI.COMM_WORLD.Dup()))
    topology = Topology.from_local_size(transport.size, local_size)
    comm = Communicator(transport, topology, Settings.resolve())
    cluster = DEFAULT_CALIBRATION.cluster(topology)
    tally = Tally(comm.rank)
    for algorithm in PLANNERS["allreduce"]:
        for dtype, count in ((np.float32, 7), (np.float32, 1009), (np.float64, 600_003)):
            x = rank_data(count, dtype, comm.rank)
            transport.sends.clear()
            transport.recvs.clear()
            comm.allreduce(x, algorithm=algorithm)
            sends, recvs = simulated_steps(algorithm, cluster, count, comm.rank,
                                           itemsize=np.dtype(dtype).itemsize)
            case = f"{algorithm} count={count}"
            tally.check(len(sends) > 0 or comm.size == 1, f"{case}: no sends")
            tally.check(transport.sends == [(peer, n) for _, peer, n in sends],
                        f"{case}: sends {transport.sends[:4]} vs simulated {sends[:4]}")
            tally.check(transport.recvs == [(peer, n) for _, peer, n, _ in recvs],
                        f"{case}: recvs {transport.recvs[:4]} vs simulated {recvs[:4]}")
    tally.finish()


if __name__ == "__main__":
    main()
