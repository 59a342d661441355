"""`init()`: from a launcher's environment to a ready Communicator."""
from __future__ import annotations

from .communicator import Communicator
from .config import Settings
from .errors import unknown_choice
from .topology import Topology

__all__ = ["init"]

TRANSPORTS = ("mpi",)


def init(mpi_comm=None, *, transport: str = "mpi", timeout: float | None = None,
         local_size: int | None = None, check: bool | None = None) -> Communicator:
    """A Communicator over `mpi_comm` (default MPI.COMM_WORLD), started under mpiexec or srun.

    `timeout` (seconds, default COLLECTIVES_TIMEOUT or 300) bounds every wait; `local_size`
    (default COLLECTIVES_LOCAL_SIZE) groups consecutive ranks into emulated nodes, otherwise
    nodes come from MPI's shared-memory split. `check` (default COLLECTIVES_CHECK, on)
    compares every collective's arguments across ranks before data moves. Ranks that share
    a node exchange through MPI-3 shared-memory windows unless COLLECTIVES_SHM=0
    (docs/shared-memory.md).

    Example::

        comm = collectives.init()
        y = comm.allreduce(x, op="avg")
    """
    if transport not in TRANSPORTS:
        raise unknown_choice("transport", transport, TRANSPORTS)
    settings = Settings.resolve(timeout=timeout, local_size=local_size, check=check)
    from mpi4py import MPI

    from .transport.mpi import MPITransport

    # A private duplicate keeps our messages apart from the application's own.
    mpi = MPITransport((mpi_comm if mpi_comm is not None else MPI.COMM_WORLD).Dup())
    if settings.local_size is not None:
        topology = Topology.from_local_size(mpi.size, settings.local_size)
    else:
        topology = Topology.from_node_keys(mpi.node_keys())
    if settings.shm:  # COLLECTIVES_SHM=0 keeps on-node peers on MPI send/recv
        from .transport.shm import ShmTransport

        return Communicator(ShmTransport(mpi), topology, settings)
    return Communicator(mpi, topology, settings)
