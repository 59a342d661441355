"""A Communicator for each torch.distributed group of backend "collectives".

torch builds a group's backend on the group's members only, from the group's own store, while
torch.distributed may not be initialized yet (the default group) or may be in the middle of
`new_group`. So nothing here calls torch.distributed's group functions:

- Under an MPI launcher (mpiexec, srun), the group is MPI_COMM_WORLD restricted to its ranks
  (`MPI_Comm_create_group`, collective over the members only), and the Communicator is
  `collectives.init(mpi_comm=...)` over it: shared memory, MPI's own collectives as `native`.
  torch's ranks must be MPI's (`collectives.hooks.torch.init_process_group` makes them so).
- Elsewhere (torchrun, or any launcher that gives torch a store), the Communicator runs over a
  gloo group made from the group's store, the same gloo transport `collectives.init()` uses
  under torchrun.

Example::

    comm = group_communicator(store, group_rank=1, group_size=2, global_ranks=[0, 3],
                              timeout=60.0)
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch.distributed as dist

from ..bootstrap import MPI_LAUNCHER_ENV, agree_over, init, topology_of
from ..communicator import Communicator
from ..config import Settings
from ..errors import CollectiveError
from ..transport.torch_dist import TorchDistTransport

__all__ = ["group_communicator"]


def group_communicator(store: dist.Store, *, group_rank: int, group_size: int,
                       global_ranks: Sequence[int], timeout: float) -> Communicator:
    """The Communicator of one torch group; `global_ranks` is empty for the default group.

    Collective over the group's members, in the order torch creates groups.
    """
    ranks = list(global_ranks) or list(range(group_size))
    if any(key in os.environ for key in MPI_LAUNCHER_ENV):
        return _over_mpi(ranks, group_rank, timeout)
    return _over_gloo(store, group_rank, group_size, timeout)


def _over_mpi(ranks: list[int], group_rank: int, timeout: float) -> Communicator:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if ranks[group_rank] != world.Get_rank() or max(ranks) >= world.Get_size():
        raise CollectiveError(
            f"backend 'collectives' under an MPI launcher needs torch's ranks to be MPI's: torch "
            f"rank {ranks[group_rank]} is MPI rank {world.Get_rank()} of {world.Get_size()}; "
            "start torch.distributed with collectives.hooks.torch.init_process_group(comm, "
            "backend='collectives')")
    if len(ranks) == world.Get_size():
        return init(mpi_comm=world, timeout=timeout)
    members = world.Get_group().Incl(ranks)
    try:
        return init(mpi_comm=world.Create_group(members), timeout=timeout)
    finally:
        members.Free()


def _over_gloo(store: dist.Store, rank: int, size: int, timeout: float) -> Communicator:
    """Our algorithms over gloo point-to-point, on a gloo group of the group's own store."""
    settings, error = None, None
    try:
        settings = Settings.resolve(timeout=timeout)
    except ValueError as bad:  # (told to the others first, as init() does)
        error = bad
    transport = TorchDistTransport.over_store(store, rank, size, timeout)
    agree_over(transport, settings, "mpi", error)
    return Communicator(transport, topology_of(transport, settings), settings)
