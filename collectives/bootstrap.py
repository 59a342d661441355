"""`init()`: from a launcher's environment to a ready Communicator."""
from __future__ import annotations

import os

from .communicator import Communicator
from .config import Settings
from .errors import CollectiveError, unknown_choice
from .failure import abort_on_uncaught
from .topology import Topology

__all__ = ["init"]

TRANSPORTS = ("mpi", "nccl", "auto")
MPI_LAUNCHER_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")  # Hydra, PMIx, Open MPI
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR")


def init(mpi_comm=None, *, transport: str = "mpi", timeout: float | None = None,
         local_size: int | None = None, grid: tuple[int, int] | None = None,
         check: bool | None = None) -> Communicator:
    """A Communicator over `mpi_comm` (default MPI.COMM_WORLD), started under mpiexec or srun.

    `timeout` (seconds, default COLLECTIVES_TIMEOUT or 300) bounds every wait; `local_size`
    (default COLLECTIVES_LOCAL_SIZE) groups consecutive ranks into emulated nodes, otherwise
    nodes come from MPI's shared-memory split. `grid=(X, Y)` (default COLLECTIVES_GRID=XxY)
    lays the ranks out as Y rows of X for torus2d; without it the shape follows the nodes, else
    the most square factorization (Topology.grid_shape). `check` (default COLLECTIVES_CHECK,
    on) compares every collective's arguments across ranks before data moves. With
    COLLECTIVES_SHM=1 ranks that share a node exchange through MPI-3 shared-memory windows
    (opt-in for now: docs/shared-memory.md says why).

    `transport` says what moves CuPy arrays (NumPy arrays always go over MPI): "mpi" (default;
    device memory straight to a CUDA-aware MPI, else staged through pinned host buffers),
    "nccl" (NCCL point-to-point, NCCL's all-reduce as "native"; one GPU per rank), or "auto"
    (nccl when every rank can use it, else mpi). See docs/gpu.md.

    Under torchrun (torch's RANK, WORLD_SIZE and MASTER_ADDR set, no MPI launcher) NumPy
    arrays go over torch.distributed's gloo point-to-point instead of MPI, so the same
    algorithms run (docs/hooks.md).

    Example::

        comm = collectives.init()
        y = comm.allreduce(x, op="avg")
    """
    if transport not in TRANSPORTS:
        raise unknown_choice("transport", transport, TRANSPORTS)
    settings = Settings.resolve(timeout=timeout, local_size=local_size, grid=grid, check=check)
    if mpi_comm is None and launched_by_torchrun():
        return _init_torch(transport, settings)
    from mpi4py import MPI

    from .transport.mpi import MPITransport

    # A private duplicate keeps our messages apart from the application's own.
    mpi = MPITransport((mpi_comm if mpi_comm is not None else MPI.COMM_WORLD).Dup())
    if mpi.size > 1:
        abort_on_uncaught(mpi)  # an uncaught exception ends the job, not hangs it
    topology = _topology(mpi, settings)
    device = _device_transport(transport, mpi)
    if settings.shm:  # COLLECTIVES_SHM=1: on-node peers exchange through shared windows
        from .transport.shm import ShmTransport

        return Communicator(ShmTransport(mpi), topology, settings, device_transport=device)
    return Communicator(mpi, topology, settings, device_transport=device)


def launched_by_torchrun() -> bool:
    """torch's launcher environment is present and no MPI launcher's is."""
    return (all(key in os.environ for key in TORCHRUN_ENV)
            and not any(key in os.environ for key in MPI_LAUNCHER_ENV))


def _init_torch(transport: str, settings: Settings) -> Communicator:
    """Over torch.distributed's gloo point-to-point; CuPy arrays over NCCL if asked for."""
    from .transport.torch_dist import TorchDistTransport

    host = TorchDistTransport.from_environment(settings.timeout)
    device = None if transport == "mpi" else _device_transport(transport, host)
    return Communicator(host, _topology(host, settings), settings, device_transport=device)


def _topology(transport, settings: Settings) -> Topology:
    if settings.local_size is not None:
        return Topology.from_local_size(transport.size, settings.local_size, grid=settings.grid)
    return Topology.from_node_keys(transport.node_keys(), grid=settings.grid)


def _device_transport(name: str, mpi):
    """The transport for CuPy arrays; collective, so every rank reaches the same choice."""
    from .transport.staging import StagedMPI

    if name == "mpi":
        return StagedMPI(mpi)  # loads CuPy only when a CuPy array arrives
    keys = mpi.node_keys()
    try:
        from .transport import nccl
    except ImportError as error:
        reason = f"CuPy with NCCL is not importable ({error})"
    else:
        reason = nccl.unusable_reason(keys, mpi.rank)
    reasons = {r: why for r, why in enumerate(mpi.allgather_object(reason)) if why is not None}
    if not reasons:
        return nccl.NCCLTransport.for_local_rank(mpi, keys)
    if name == "auto":
        return StagedMPI(mpi) if mpi.name == "mpi" else None
    rank, why = next(iter(reasons.items()))
    raise CollectiveError(f"transport 'nccl' is unusable on rank(s) {sorted(reasons)}: "
                          f"rank {rank}: {why}")
