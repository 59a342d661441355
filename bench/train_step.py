"""Training step time on our collectives beside the same training on torch's gloo.

Variants: DDP with our all-reduce hook (`hook-ALGORITHM[+COMPRESSION]`), and per parallel API
(`--apis`: DDP, FSDP2) the API on a gloo group (`ddp-gloo`, `fsdp-gloo`) and on a group of our
torch.distributed backend (`ddp-collectives`, `fsdp-collectives`). Every variant trains its
own copy of the same ~25M-parameter MLP (6 x Linear(2048, 2048)) on the same synthetic
batches; the variants take turns, a few steps each, round after round, so drift in a shared
machine hits them alike. Reported per variant: median step time (slowest rank), the ratio to
its baseline on gloo (`ddp-gloo` for DDP and the hooks, `fsdp-gloo` for FSDP2), and whether
its replicas ended bit-identical on every rank.

Example::

    python -m bench.train_step --np 2 --hooks ring --apis ddp,fsdp --rounds 5 --steps 4
    python -m bench.train_step --nodes 2 --ppn 1 --link 1gbit --hooks ring,ring+fp16 --apis ddp
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

from bench import launch

_MODULE = "bench.train_step"
BASELINE = "ddp-gloo"
APIS = ("ddp", "fsdp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step",
                                     description=__doc__.split("\n\n")[0])
    launch.add_launch_argument(parser)
    launch.add_lab_arguments(parser)
    parser.add_argument("--hooks", default="auto,ring,ring+fp16",
                        help="our hook's variants, ALGORITHM[+COMPRESSION] comma-separated "
                             "(default auto,ring,ring+fp16)")
    parser.add_argument("--apis", default="ddp,fsdp",
                        help="parallel APIs to run on gloo and on backend 'collectives', "
                             "comma-separated from ddp, fsdp (default ddp,fsdp; '' for none)")
    parser.add_argument("--width", type=int, default=2048, help="layer width (default 2048)")
    parser.add_argument("--layers", type=int, default=6,
                        help="Linear layers (default 6: ~25M parameters)")
    parser.add_argument("--batch", type=int, default=32, help="per-rank batch (default 32)")
    parser.add_argument("--bucket-mb", type=float, default=25.0,
                        help="DDP bucket cap, MB (default 25)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per variant (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns (default 5)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per turn (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def parse_hooks(text: str) -> list[tuple[str, str | None]]:
    """'ring,auto+fp16' -> [('ring', None), ('auto', 'fp16')], checked against the library."""
    import collectives

    variants = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        algorithm, _, compression = item.partition("+")
        if algorithm not in collectives.ALGORITHMS:
            raise ValueError(f"--hooks: unknown algorithm {algorithm!r}; "
                             f"accepted: {', '.join(collectives.ALGORITHMS)}")
        if (compression or None) not in collectives.COMPRESSIONS:
            raise ValueError(f"--hooks: unknown compression {compression!r}; accepted: fp16, bf16")
        variants.append((algorithm, compression or None))
    return variants


def parse_apis(text: str) -> list[str]:
    """'ddp,fsdp' -> ['ddp', 'fsdp'], checked."""
    apis = [part.strip() for part in text.split(",") if part.strip()]
    for api in apis:
        if api not in APIS:
            raise ValueError(f"--apis: unknown API {api!r}; accepted: {', '.join(APIS)}")
    return apis


class Variant:
    """One way of training: a replica (DDP, optionally with our hook, or FSDP2) on a group,
    its optimizer, and its timed steps."""

    def __init__(self, name: str, args: argparse.Namespace, group, *, api: str = "ddp",
                 hook: tuple | None = None, comm=None):
        import torch
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard
        from torch.nn.parallel import DistributedDataParallel

        from collectives.hooks.torch import HookState, allreduce_hook

        torch.manual_seed(0)
        layers = [torch.nn.Linear(args.width, args.width) for _ in range(args.layers)]
        modules = [m for layer in layers for m in (layer, torch.nn.ReLU())][:-1]
        self.model = torch.nn.Sequential(*modules)
        if api == "fsdp":
            mesh = DeviceMesh.from_group(group, "cpu")
            for layer in layers:
                fully_shard(layer, mesh=mesh)
            self.replica = fully_shard(self.model, mesh=mesh)
        else:
            self.replica = DistributedDataParallel(self.model, process_group=group,
                                                   bucket_cap_mb=args.bucket_mb)
        if hook is not None:
            algorithm, compression = hook
            state = HookState(comm, algorithm=algorithm, compression=compression)
            self.replica.register_comm_hook(state, allreduce_hook)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4)
        self.name = name
        self.baseline = f"{api}-gloo"
        self.times: list[float] = []

    def step(self, x, y) -> None:
        import torch

        self.optimizer.zero_grad()
        torch.nn.functional.mse_loss(self.replica(x), y).backward()
        self.optimizer.step()

    def flat_parameters(self):
        """The whole model's parameters, flat (FSDP2's shards gathered)."""
        import torch

        whole = [p.full_tensor() if hasattr(p, "full_tensor") else p
                 for p in self.model.parameters()]
        return torch.cat([p.detach().reshape(-1) for p in whole]).numpy()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        hooks = parse_hooks(args.hooks)
        apis = parse_apis(args.apis)
    except ValueError as error:
        parser.error(str(error))
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np,
                           lab=launch.lab_request(parser, args))

    import numpy as np
    import torch
    import torch.distributed as dist

    import collectives
    from collectives.hooks.torch import init_process_group

    torch.set_num_threads(args.threads)
    comm = collectives.init()
    init_process_group(comm)  # gloo
    gloo = dist.distributed_c10d._get_default_group()
    ours = dist.new_group(backend="collectives") if apis else None
    variants = [Variant(BASELINE, args, gloo)]
    variants += [Variant(f"hook-{a}{'+' + c if c else ''}", args, gloo, hook=(a, c), comm=comm)
                 for a, c in hooks]
    for api in apis:
        if api != "ddp":
            variants.append(Variant(f"{api}-gloo", args, gloo, api=api))
        variants.append(Variant(f"{api}-collectives", args, ours, api=api))
    data = torch.Generator().manual_seed(comm.rank)
    x = torch.randn(args.batch, args.width, generator=data)
    y = torch.randn(args.batch, args.width, generator=data)
    for variant in variants:
        for _ in range(args.warmup):
            variant.step(x, y)
    for _ in range(args.rounds):
        for variant in variants:
            for _ in range(args.steps):
                comm.allreduce(np.zeros(1), algorithm="native")  # start each step together
                start = time.perf_counter()
                variant.step(x, y)
                variant.times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in variants[0].model.parameters())
    rows = []
    medians = {}
    for variant in variants:
        flat = variant.flat_parameters()
        same = bool(np.array_equal(comm.allreduce(flat, op="max"), flat)
                    and np.array_equal(comm.allreduce(flat, op="min"), flat))
        slowest = comm.allreduce(np.array(variant.times), op="max")  # a step ends on its last rank
        medians[variant.name] = median = statistics.median(slowest.tolist())
        rows.append({"variant": variant.name, "median_ms": median * 1e3,
                     "baseline": variant.baseline,
                     "ratio_to_baseline": median / medians[variant.baseline],
                     "replicas_identical": same})
    if comm.rank == 0:
        print(f"# train_step: {params / 1e6:.1f}M parameters, {comm.size} ranks, batch "
              f"{args.batch}/rank, DDP buckets {args.bucket_mb} MB, "
              f"{args.rounds}x{args.steps} timed steps per variant")
        print(f"# command: python -m {_MODULE} {' '.join(argv)}")
        print(f"{'variant':<22}{'median step ms':>16}{'baseline':>12}{'ratio':>8}"
              f"{'replicas equal':>16}")
        for row in rows:
            print(f"{row['variant']:<22}{row['median_ms']:>16.1f}{row['baseline']:>12}"
                  f"{row['ratio_to_baseline']:>8.2f}{str(row['replicas_identical']):>16}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"parameters": params, "ranks": comm.size, "args": vars(args),
                           "rows": rows}, f, indent=2)
    return 0 if all(row["replicas_identical"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
