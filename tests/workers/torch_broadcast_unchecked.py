"""torch's broadcast on backend "collectives" with the agreement check off: a tensor whose
bytes or dtype differ from the root's raises ValueError on every rank, the root too, and
the ranks stay in step (the thirty-ninth review; the label that carries them with the check
on is compared by the agreement only: the ninety-sixth review).

Usage: COLLECTIVES_CHECK=0 mpiexec -n P python -m tests.workers.torch_broadcast_unchecked
"""
from __future__ import annotations

import torch
import torch.distributed as dist

import collectives
from collectives.hooks.torch import init_process_group
from tests.workers.common import Tally


def main() -> None:
    comm = collectives.init(timeout=30)
    init_process_group(comm, backend="collectives")
    rank, size = dist.get_rank(), dist.get_world_size()
    tally = Tally(rank)
    tally.check(not comm.settings.check, "run with COLLECTIVES_CHECK=0")
    last = rank == size - 1
    for root_tensor, other, said in (
            (torch.full((3,), 9, dtype=torch.uint8), torch.zeros(2, dtype=torch.uint8),
             f"rank {size - 1}'s tensor holds 2 bytes of torch.uint8, the root's (rank 0) 3"),
            (torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.uint8),
             f"rank {size - 1}'s tensor holds 2 bytes of torch.uint8, the root's (rank 0) 2 "
             "bytes of torch.bool")):
        mine = other if last else root_tensor.clone()
        try:
            dist.broadcast(mine, 0)
            tally.check(False, f"{mine.dtype} of {mine.numel()} broadcast from the root's")
        except ValueError as error:
            tally.check(said in str(error), f"unlike tensors, check off: {error}")
    step = torch.ones(2)
    dist.all_reduce(step)
    tally.check(torch.equal(step, torch.full((2,), float(size))), f"the next call: {step}")
    dist.barrier()
    dist.destroy_process_group()
    tally.finish()


if __name__ == "__main__":
    main()
