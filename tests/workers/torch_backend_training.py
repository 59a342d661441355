"""DDP, FSDP2 and ZeroRedundancyOptimizer on backend "collectives" against the same runs on gloo.

Usage: torchrun --nproc-per-node P -m tests.workers.torch_backend_training
       mpiexec -n P python -m tests.workers.torch_backend_training
"collectives" is the default group (`dist.init_process_group(backend="collectives")`, or
`init_process_group(comm, backend="collectives")` under mpiexec); gloo is a group over the
same ranks. Each API trains the same MLP for STEPS steps on per-rank data on either group;
parameters must match gloo's within TOLERANCE and be bit-identical on every rank. With fp16
compression (a "collectives" subgroup with BackendOptions(compression="fp16")) the loss falls.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import collectives
from collectives.bootstrap import launched_by_torchrun
from collectives.hooks.torch import init_process_group
from collectives.hooks.torch_backend import BackendOptions, CollectivesProcessGroup
from tests.workers.common import Tally
from tests.workers.torch_training import STEPS, TOLERANCE, batches, make_model

APIS = ("ddp", "fsdp", "zero")


def start() -> None:
    """torch.distributed with "collectives" as the default group, under either launcher."""
    if launched_by_torchrun():
        dist.init_process_group(backend="collectives")
    else:
        init_process_group(collectives.init(), backend="collectives")


def train(api: str, group: dist.ProcessGroup) -> tuple[np.ndarray, list[float]]:
    """Final parameters (whole, flat) and per-step losses of one API on one group."""
    model = make_model()
    if api != "fsdp" and group.rank() != 0:  # DDP must broadcast rank 0's parameters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    if api == "fsdp":
        mesh = DeviceMesh.from_group(group, "cpu")
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        step_model = fully_shard(model, mesh=mesh)
    else:
        step_model = DistributedDataParallel(model, process_group=group, bucket_cap_mb=1 / 64)
    if api == "zero":
        optimizer = ZeroRedundancyOptimizer(model.parameters(), torch.optim.SGD,
                                            process_group=group, lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x, y in batches(group.rank()):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(step_model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    whole = [p.full_tensor() if api == "fsdp" else p for p in model.parameters()]
    return torch.cat([p.detach().reshape(-1) for p in whole]).numpy(), losses


def identical(gloo: dist.ProcessGroup, array: np.ndarray) -> bool:
    """Bit-identical on every rank, judged over gloo (outside the backend under test)."""
    tensor = torch.from_numpy(array)
    high, low = tensor.clone(), tensor.clone()
    dist.all_reduce(high, dist.ReduceOp.MAX, group=gloo)
    dist.all_reduce(low, dist.ReduceOp.MIN, group=gloo)
    return bool(torch.equal(high, tensor) and torch.equal(low, tensor))


def compressed_calls(stats, collective: str) -> int:
    """Calls of `collective` that ran a plan with fp16 on the wire (any plan auto chose);
    all-reduce labels carry no collective prefix."""
    prefix = "" if collective == "allreduce" else f"{collective}:"
    return sum(stats[label].calls for label in stats
               if label.endswith("+fp16") and label.startswith(prefix)
               and (prefix or ":" not in label))


def main() -> None:
    torch.set_num_threads(1)
    start()
    ours = dist.distributed_c10d._get_default_group()
    gloo = dist.new_group(backend="gloo")
    fp16 = dist.new_group(backend="collectives",
                          pg_options=BackendOptions(compression="fp16"))
    tally = Tally(dist.get_rank())
    tally.check(isinstance(ours, CollectivesProcessGroup) and dist.get_backend() == "collectives",
                f"the default group is {ours!r}")
    print(f"rank {dist.get_rank()}: size={dist.get_world_size()}, {ours!r}", flush=True)
    for api in APIS:
        reference, _ = train(api, gloo)
        got, losses = train(api, ours)
        diff = float(np.abs(got - reference).max())
        tally.check(diff <= TOLERANCE, f"{api}: parameters differ from gloo's by {diff:.3g}")
        tally.check(identical(gloo, got), f"{api}: replicas differ")
        tally.check(identical(gloo, reference), f"{api} on gloo: replicas differ")
    for api, reduction in (("ddp", "allreduce"), ("fsdp", "reduce_scatter")):
        fp16.comm.reset_stats()
        got, losses = train(api, fp16)
        compressed = compressed_calls(fp16.comm.stats(), reduction)
        tally.check(compressed >= STEPS,
                    f"{api}+fp16: {compressed} compressed {reduction} in {STEPS} steps")
        first, last = np.mean(losses[:5]), np.mean(losses[-5:])
        tally.check(last < 0.7 * first, f"{api}+fp16: loss {first:.4g} -> {last:.4g}")
        tally.check(identical(gloo, got), f"{api}+fp16: replicas differ")
    dist.destroy_process_group()
    tally.finish()


if __name__ == "__main__":
    main()
