"""The same CNN as train_ddp.py on torch.distributed's backend "collectives": no hook, no
other change than the backend's name; DDP, FSDP2 or ZeroRedundancyOptimizer (CPU).

    .venv/bin/torchrun --nproc-per-node 2 examples/train_backend.py --api fsdp
    .venv/bin/mpiexec -n 2 .venv/bin/python examples/train_backend.py --api zero --compression fp16

Under mpiexec torch.distributed has no rendezvous of its own: `init_process_group(comm,
backend="collectives")` gives it MPI's ranks. The learning rate follows Goyal et al.'s
linear scaling with warmup (`collectives.lr`).
"""
import argparse

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel
from train_ddp import BATCH, batch

import collectives
from collectives.bootstrap import launched_by_torchrun
from collectives.hooks.torch import init_process_group
from collectives.hooks.torch_backend import BackendOptions
from collectives.lr import scaled_lr_scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="ddp", choices=["ddp", "fsdp", "zero"])
    parser.add_argument("--algorithm", default=None, help="default: COLLECTIVES_ALGORITHM or auto")
    parser.add_argument("--compression", default=None, choices=["fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    torch.set_num_threads(1)
    options = BackendOptions(algorithm=args.algorithm, compression=args.compression)
    if launched_by_torchrun():
        dist.init_process_group(backend="collectives", pg_options=options)
    else:
        init_process_group(collectives.init(), backend="collectives", pg_options=options)
    rank, size = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 4))
    if args.api == "fsdp":
        mesh = init_device_mesh("cpu", (size,))
        for layer in (model[0], model[3], model[7]):
            fully_shard(layer, mesh=mesh)
        replica = fully_shard(model, mesh=mesh)
    else:
        replica = DistributedDataParallel(model)
    if args.api == "zero":
        optimizer = ZeroRedundancyOptimizer(model.parameters(), torch.optim.SGD, lr=0.01,
                                            momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = scaled_lr_scheduler(optimizer, batch=BATCH * size, base_batch=BATCH,
                                    warmup_steps=10)
    data = torch.Generator().manual_seed(rank)  # every rank its own shard

    for step in range(args.steps):
        images, labels = batch(data, BATCH)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(replica(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if rank == 0 and step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)
    if rank == 0:
        print(f"final loss {loss.item():.4f} on {size} ranks, {args.api} on "
              f"{dist.distributed_c10d._get_default_group()!r}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
