"""A small CNN trained with DDP, its gradients averaged by our all-reduce hook (CPU).

Synthetic data: 16x16 images whose class is the quadrant holding a bright square, so the
loss visibly falls within a few dozen steps. The learning rate, tuned for one rank's batch,
is scaled to the global batch after a linear warmup (Goyal et al., `collectives.lr`). Runs
under either launcher:

    .venv/bin/mpiexec -n 2 .venv/bin/python examples/train_ddp.py --algorithm ring
    .venv/bin/torchrun --nproc-per-node 2 examples/train_ddp.py --compression fp16
"""
import argparse

import torch
from torch.nn.parallel import DistributedDataParallel

import collectives
from collectives.hooks.torch import HookState, allreduce_hook, init_process_group
from collectives.lr import scaled_lr_scheduler

BATCH = 32  # per rank


def batch(generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a bright 4x4 square in quadrant `label` (0..3)."""
    labels = torch.randint(0, 4, (size,), generator=generator)
    images = 0.5 * torch.randn(size, 1, 16, 16, generator=generator)
    for i, label in enumerate(labels.tolist()):
        row, col = 8 * (label // 2) + 2, 8 * (label % 2) + 2
        images[i, 0, row:row + 4, col:col + 4] += 0.5
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="auto", choices=collectives.ALGORITHMS)
    parser.add_argument("--compression", default=None, choices=["fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    torch.set_num_threads(1)
    comm = collectives.init()        # mpiexec/srun: MPI; torchrun: torch.distributed (gloo)
    init_process_group(comm)         # DDP's gloo group (already there under torchrun)

    torch.manual_seed(0)             # DDP broadcasts rank 0's parameters anyway
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 4))
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(HookState(comm, algorithm=args.algorithm, compression=args.compression),
                           allreduce_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)  # tuned for BATCH
    scheduler = scaled_lr_scheduler(optimizer, batch=BATCH * comm.size, base_batch=BATCH,
                                    warmup_steps=10)
    data = torch.Generator().manual_seed(comm.rank)  # every rank its own shard

    for step in range(args.steps):
        images, labels = batch(data, BATCH)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(images), labels)
        loss.backward()              # the hook all-reduces gradient buckets meanwhile
        optimizer.step()
        scheduler.step()
        if comm.rank == 0 and step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)
    if comm.rank == 0:
        print(f"final loss {loss.item():.4f} on {comm.size} ranks ({comm!r})")


if __name__ == "__main__":
    main()
