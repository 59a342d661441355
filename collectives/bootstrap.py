"""`init()`: from a launcher's environment to a ready Communicator, bounded and checked.

Before anything collective that could hang, the ranks meet once within the timeout: the
communicator is duplicated without blocking (MPI_Comm_idup), then every rank sends every
other rank its settings, or the error it found in them. So a rank with a bad
`COLLECTIVES_*` value raises its ValueError and the others MismatchError naming it; ranks
whose settings differ (check, shared memory, emulated nodes, grid, transport) all raise
MismatchError naming the ranks and values; a rank that never calls init is named by a
CollectiveTimeout. Only then is the transport built.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from .agreement import differences
from .communicator import Communicator
from .config import DEFAULT_TIMEOUT, Settings
from .errors import CollectiveError, CollectiveTimeout, MismatchError, rank_list, unknown_choice
from .failure import abort_on_uncaught
from .topology import Topology

__all__ = ["init"]

TRANSPORTS = ("mpi", "nccl", "auto")
MPI_LAUNCHER_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")  # Hydra, PMIx, Open MPI
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR")
_HELLO_BYTES = 2048
_VERSION = "0.1.0"
log = logging.getLogger(__name__)


def init(mpi_comm=None, *, transport: str = "mpi", timeout: float | None = None,
         local_size: int | None = None, grid: tuple[int, int] | None = None,
         check: bool | None = None) -> Communicator:
    """A Communicator over `mpi_comm` (default MPI.COMM_WORLD), started under mpiexec or srun.

    `timeout` (seconds, default COLLECTIVES_TIMEOUT or 300) bounds every wait, init's own
    included; `local_size` (default COLLECTIVES_LOCAL_SIZE) groups consecutive ranks into
    emulated nodes, otherwise nodes come from MPI's shared-memory split. `grid=(X, Y)`
    (default COLLECTIVES_GRID=XxY) lays the ranks out as Y rows of X for torus2d; without
    it the shape follows the nodes, else the most square factorization
    (Topology.grid_shape). `check` (default COLLECTIVES_CHECK, on) compares every
    collective's arguments across ranks before data moves. With COLLECTIVES_SHM=1 ranks
    that share a node exchange through MPI-3 shared-memory windows (opt-in for now:
    docs/shared-memory.md says why). Every rank must pass the same settings: init checks.

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
    settings, error = None, None
    try:
        if transport not in TRANSPORTS:
            raise unknown_choice("transport", transport, TRANSPORTS)
        settings = Settings.resolve(timeout=timeout, local_size=local_size, grid=grid,
                                    check=check)
    except ValueError as bad:
        error = bad
    if mpi_comm is None and launched_by_torchrun():
        return _init_torch(transport, settings, error)
    from mpi4py import MPI

    from .transport.mpi import MPITransport

    deadline = time.monotonic() + (settings.timeout if settings else DEFAULT_TIMEOUT)
    base = MPI.COMM_WORLD if mpi_comm is None else _intra_communicator(mpi_comm, MPI)
    # A private duplicate keeps our messages apart from the application's own.
    comm = _duplicate(base, deadline)
    _handshake(comm, _hello(settings, transport, error), deadline)
    if error is not None:
        raise error
    mpi = MPITransport(comm)
    if mpi.size > 1:
        abort_on_uncaught(mpi, grace=settings.abort_grace)  # ends the job, not hangs it
    topology = topology_of(mpi, settings)
    device = _device_transport(transport, mpi, settings.cuda_aware_mpi)
    if settings.shm:  # COLLECTIVES_SHM=1: on-node peers exchange through shared windows
        from .transport.shm import ShmTransport

        return Communicator(ShmTransport(mpi), topology, settings, device_transport=device)
    return Communicator(mpi, topology, settings, device_transport=device)


def _intra_communicator(mpi_comm, MPI):
    """`mpi_comm` if it is a usable intra-communicator; TypeError or ValueError naming what
    it is otherwise. An inter-communicator was taken: its all-reduce is MPI's inter-group
    one (each rank got the other group's value) while the plans reduced within a group,
    and unequal groups hung init (the twenty-third review). Every rank of an
    inter-communicator, or of COMM_NULL, refuses alike."""
    if not isinstance(mpi_comm, MPI.Comm):
        raise TypeError(f"mpi_comm must be an mpi4py communicator (MPI.COMM_WORLD, or one "
                        f"made by Split, Create_group, ...), got "
                        f"{type(mpi_comm).__module__}.{type(mpi_comm).__qualname__}")
    if mpi_comm == MPI.COMM_NULL:
        raise ValueError("mpi_comm is MPI.COMM_NULL (freed, or this rank is not in it): "
                         "call init() only on the ranks of a communicator")
    if mpi_comm.Is_inter():  # (the object's own kind: MPI.Comm(intracomm) is one too)
        raise TypeError("mpi_comm must be an intra-communicator, got an inter-communicator: "
                        "pass one group's communicator, or Merge() the two groups")
    return mpi_comm


def launched_by_torchrun() -> bool:
    """torch's launcher environment is present and no MPI launcher's is."""
    return (all(key in os.environ for key in TORCHRUN_ENV)
            and not any(key in os.environ for key in MPI_LAUNCHER_ENV))


def _hello(settings: Settings | None, transport: str, error: Exception | None) -> dict:
    """What a rank tells the others at init: its shared settings, or what was wrong."""
    if error is not None:  # cut until its JSON fits the hello (a value of any length may be
        # named; a cut of the JSON itself fell inside a \u escape: the 92nd review)
        text = f"{type(error).__name__}: {error}"
        while len(json.dumps(text)) > _HELLO_BYTES // 2:
            text = text[: len(text) * 3 // 4]
        return {"error": text}
    agreed = {key: str(value) for key, value in settings.agreed().items()}
    return {"version": _VERSION, "transport": transport, **agreed}


def _duplicate(base, deadline: float):
    """MPI_Comm_idup of `base`, bounded: a rank that never calls init is named in time."""
    comm, request = base.Idup()
    _wait(lambda: request.Test(), deadline, base, "the other ranks to call init()")
    return comm


def _handshake(comm, hello: dict, deadline: float) -> None:
    """Every rank's hello, point to point and bounded; errors raised alike on every rank."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    mine = np.zeros(_HELLO_BYTES, np.uint8)
    body = json.dumps(hello).encode()[: _HELLO_BYTES - 1]
    mine[: len(body)] = np.frombuffer(body, np.uint8)
    rows = np.zeros((size, _HELLO_BYTES), np.uint8)
    rows[rank] = mine
    peers = [p for p in range(size) if p != rank]
    recvs = [comm.Irecv([rows[p], MPI.BYTE], p, 0) for p in peers]
    sends = [comm.Isend([mine, MPI.BYTE], p, 0) for p in peers]

    def silent() -> list[int]:
        return [p for p, r in zip(peers, recvs) if not r.Test()]

    _wait(lambda: MPI.Request.Testall(recvs + sends), deadline, comm,
          "the other ranks' settings", silent)
    _compare([json.loads(row.tobytes().rstrip(b"\0").decode()) for row in rows], hello)


def agree_over(host, settings: Settings | None, transport: str,
               error: Exception | None) -> None:
    """The hellos' comparison over `host`'s all-gather (torch.distributed's gloo, where
    there is no MPI): the same errors as under MPI; this rank's `error` raised here. On
    any error `host` is closed (its gloo group: each refused init kept one; the
    seventy-ninth review)."""
    try:
        hello = _hello(settings, transport, error)
        _compare(host.allgather_object(hello), hello)
        if error is not None:
            raise error
    except BaseException:
        host.close()
        raise


def _compare(hellos: list[dict], hello: dict) -> None:
    """MismatchError where other ranks rejected their settings or the settings differ
    (nothing where this rank rejected its own: it raises its error)."""
    failed = [r for r, h in enumerate(hellos) if "error" in h]
    if failed:
        if "error" in hello:
            return
        reasons = "; ".join(f"rank {r}: {hellos[r]['error']}" for r in failed)
        raise MismatchError(f"init: {rank_list(failed)} rejected {'its' if len(failed) == 1 else 'their'} "
                            f"settings ({reasons})")
    if any(h != hellos[0] for h in hellos):
        raise MismatchError(f"init: ranks disagree on settings that must be equal: "
                            f"{differences(hellos)}")


def _wait(test, deadline: float, comm, what: str, silent=None) -> None:
    while not test():
        if time.monotonic() > deadline:
            named = f": nothing from rank(s) {silent()}" if silent else ""
            raise CollectiveTimeout(f"init: rank {comm.Get_rank()} timed out waiting for "
                                    f"{what}{named}")
        time.sleep(1e-4)


def _init_torch(transport: str, settings: Settings | None,
                error: Exception | None) -> Communicator:
    """Over torch.distributed's gloo point-to-point; CuPy arrays over NCCL if asked for.
    The ranks compare their settings first, as under MPI."""
    from .transport.torch_dist import TorchDistTransport

    timeout = settings.timeout if settings else DEFAULT_TIMEOUT
    try:
        host = TorchDistTransport.from_environment(timeout)
    except RuntimeError as failure:  # torch's DistStoreError names a store key, no rank
        kind = CollectiveTimeout if "timeout" in str(failure).lower() else CollectiveError
        raise kind(f"init: rank {os.environ.get('RANK')} could not join the other ranks "
                   f"within {timeout:g} s (a rank that never calls init(), or another "
                   f"MASTER_ADDR/MASTER_PORT): torch.distributed said: {failure}") from None
    agree_over(host, settings, transport, error)
    if settings.shm:
        log.warning("COLLECTIVES_SHM=1 is for the MPI transport: under torchrun messages "
                    "go through gloo")
    device = (None if transport == "mpi"
              else _device_transport(transport, host, settings.cuda_aware_mpi))
    return Communicator(host, topology_of(host, settings), settings, device_transport=device)


def topology_of(transport, settings: Settings) -> Topology:
    if settings.local_size is not None:
        return Topology.from_local_size(transport.size, settings.local_size, grid=settings.grid)
    return Topology.from_node_keys(transport.node_keys(), grid=settings.grid)


def _device_transport(name: str, mpi, cuda_aware: bool | None):
    """The transport for CuPy arrays; collective, so every rank reaches the same choice.
    `cuda_aware`: COLLECTIVES_CUDA_AWARE_MPI (compared at init), None to ask MPI."""
    from .transport.staging import StagedMPI

    if name == "mpi":  # (loads CuPy only when a CuPy array arrives)
        return StagedMPI(mpi, cuda_aware=cuda_aware)
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
        return StagedMPI(mpi, cuda_aware=cuda_aware) if mpi.name == "mpi" else None
    rank, why = next(iter(reasons.items()))
    raise CollectiveError(f"transport 'nccl' is unusable on rank(s) {sorted(reasons)}: "
                          f"rank {rank}: {why}")
