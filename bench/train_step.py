"""Training step time on our collectives beside the same training on torch's gloo.

Variants: DDP with our all-reduce hook (`hook-ALGORITHM[+COMPRESSION]`), and per parallel API
(`--apis`: DDP, FSDP2) the API on a gloo group (`ddp-gloo`, `fsdp-gloo`) and on a group of our
torch.distributed backend (`ddp-collectives`, `fsdp-collectives`). Every variant trains its
own copy of the same ~25M-parameter MLP (6 x Linear(2048, 2048)) on the same synthetic
batches; the variants take turns, a few steps each, round after round, so drift in a shared
machine hits them alike. Reported per variant: median step time (slowest rank), the ratio to
its baseline on gloo (`ddp-gloo` for DDP and the hooks, `fsdp-gloo` for FSDP2), whether its
DDP replicas ended bit-identical on every rank (FSDP2 keeps one copy: `-`), and how far its
final parameters are from its baseline's: |params - baseline's| / |baseline's - initial|
(2-norms). 0 is the same bits, as measured on 2 and 3 ranks; from 4 ranks some of our
algorithms add in another order than gloo (up to 1e-4 measured) and a 16-bit wire rounds
(up to 1.4e-2), so a variant may be off by `SUM_ORDER_DISTANCE`, with a compressed hook by
`COMPRESSED_DISTANCE`; a wrong reduction is off by about 1 (max for sum: 0.9). A variant
off by more, or whose ranks differ, fails the run (exit 1).

Example::

    python -m bench.train_step --np 2 --hooks ring --apis ddp,fsdp --rounds 5 --steps 4
    python -m bench.train_step --nodes 2 --ppn 1 --link 1gbit --hooks ring,ring+fp16 --apis ddp
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from bench import launch
from bench.arguments import positive_int, positive_seconds

_MODULE = "bench.train_step"
BASELINE = "ddp-gloo"
APIS = ("ddp", "fsdp")
SUM_ORDER_DISTANCE = 1e-3
COMPRESSED_DISTANCE = 3e-2  # fp16/bf16 hooks measured up to 0.014 off


def _megabytes(text: str) -> float:
    """A size in MB from the command line: a finite number above 0."""
    try:
        return positive_seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"need a number of MB above 0, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line: launch and lab options, variants, model size, turns."""
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
    parser.add_argument("--width", type=positive_int, default=2048,
                        help="layer width (default 2048)")
    parser.add_argument("--layers", type=positive_int, default=6,
                        help="Linear layers (default 6: ~25M parameters)")
    parser.add_argument("--batch", type=positive_int, default=32,
                        help="per-rank batch (default 32)")
    parser.add_argument("--bucket-mb", type=_megabytes, default=25.0,
                        help="DDP bucket cap, MB (default 25)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per variant (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="rounds of turns (default 5)")
    parser.add_argument("--steps", type=positive_int, default=4,
                        help="timed steps per turn (default 4)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads per rank (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def _names(text: str) -> list[str]:
    """The comma-separated names of `text`, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_unique(option: str, names: list[str]) -> None:
    """ValueError when a name repeats (its rows would overwrite each other's)."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{option}: {', '.join(repeated)} given twice")


def hook_label(hook: tuple[str, str | None]) -> str:
    """('ring', 'fp16') -> 'ring+fp16'; ('ring', None) -> 'ring'."""
    algorithm, compression = hook
    return f"{algorithm}+{compression}" if compression else algorithm


def parse_hooks(text: str) -> list[tuple[str, str | None]]:
    """'ring,auto+fp16' -> [('ring', None), ('auto', 'fp16')], checked against the library."""
    import collectives

    variants = []
    for item in _names(text):
        algorithm, _, compression = item.partition("+")
        if algorithm not in collectives.ALGORITHMS:
            raise ValueError(f"--hooks: unknown algorithm {algorithm!r}; "
                             f"accepted: {', '.join(collectives.ALGORITHMS)}")
        if (compression or None) not in collectives.COMPRESSIONS:
            raise ValueError(f"--hooks: unknown compression {compression!r}; accepted: "
                             f"{', '.join(filter(None, collectives.COMPRESSIONS))}")
        variants.append((algorithm, compression or None))
    _check_unique("--hooks", [hook_label(hook) for hook in variants])
    return variants


def parse_apis(text: str) -> list[str]:
    """'ddp,fsdp' -> ['ddp', 'fsdp'], checked."""
    apis = _names(text)
    _check_unique("--apis", apis)
    for api in apis:
        if api not in APIS:
            raise ValueError(f"--apis: unknown API {api!r}; accepted: {', '.join(APIS)}")
    return apis


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str],
                    ) -> tuple[argparse.Namespace, list[tuple[str, str | None]], list[str]]:
    """(args, hooks, apis), or `parser.error` (exit 2) before any rank starts."""
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    from bench import environment  # imports the library: after the cheap refusals

    try:
        hooks = parse_hooks(args.hooks)
        apis = parse_apis(args.apis)
        if args.json is not None:
            environment.check_writable(args.json)
    except ValueError as error:
        parser.error(str(error))
    return args, hooks, apis


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
        self.api = api
        self.baseline = f"{api}-gloo"
        self.tolerance = COMPRESSED_DISTANCE if hook and hook[1] else SUM_ORDER_DISTANCE
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


def make_variants(args, hooks, apis, comm, gloo, ours) -> list[Variant]:
    """The baseline, one variant per hook, then per API its gloo and 'collectives' ones."""
    variants = [Variant(BASELINE, args, gloo)]
    variants += [Variant(f"hook-{hook_label(hook)}", args, gloo, hook=hook, comm=comm)
                 for hook in hooks]
    for api in apis:
        if api != "ddp":
            variants.append(Variant(f"{api}-gloo", args, gloo, api=api))
        variants.append(Variant(f"{api}-collectives", args, ours, api=api))
    return variants


def train(variants: list[Variant], args, comm, x, y) -> None:
    """Warm every variant up, then time `args.steps` steps per turn, `args.rounds` rounds."""
    import numpy as np

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


def ranks_equal(comm, variant: Variant, flat) -> bool | None:
    """Whether every rank's DDP replica holds the same bits; None for FSDP2 (one copy)."""
    import numpy as np

    if variant.api == "fsdp":
        return None
    return bool(np.array_equal(comm.allreduce(flat, op="max"), flat)
                and np.array_equal(comm.allreduce(flat, op="min"), flat))


def distance(flat, baseline, initial) -> float:
    """|flat - baseline| / |baseline - initial| (2-norms): 0 for the same bits."""
    import numpy as np

    baseline = baseline.astype(np.float64)
    return float(np.linalg.norm(flat - baseline) / np.linalg.norm(baseline - initial))


def results(variants: list[Variant], comm, initial) -> list[dict]:
    """Per variant: median step time of the slowest rank, its ratio and distance to its
    baseline (None for a baseline), whether its ranks agree, and whether it passed."""
    import numpy as np

    rows, medians, finals = [], {}, {}
    for variant in variants:
        finals[variant.name] = flat = variant.flat_parameters()
        slowest = comm.allreduce(np.array(variant.times), op="max")  # a step ends on its last rank
        medians[variant.name] = median = statistics.median(slowest.tolist())
        same = ranks_equal(comm, variant, flat)
        off = None if variant.name == variant.baseline else distance(
            flat, finals[variant.baseline], initial)
        rows.append({"variant": variant.name, "median_ms": median * 1e3,
                     "baseline": variant.baseline,
                     "ratio_to_baseline": median / medians[variant.baseline],
                     "replicas_identical": same, "distance_to_baseline": off,
                     "tolerance": variant.tolerance,
                     "passed": same is not False and (off is None or off <= variant.tolerance)})
    return rows


def failure(row: dict) -> str:
    """Why `row`'s variant failed, in one line."""
    if row["replicas_identical"] is False:
        return f"train_step: {row['variant']} failed: its ranks' replicas differ"
    return (f"train_step: {row['variant']} failed: {row['distance_to_baseline']:.3g} off "
            f"{row['baseline']}'s parameters, more than {row['tolerance']:g}")


def print_table(rows: list[dict], args, argv: list[str], *, params: int, nranks: int) -> None:
    """The header, one line per variant, and a line on stderr per failed variant."""
    print(f"# train_step: {params / 1e6:.1f}M parameters, {nranks} ranks, batch "
          f"{args.batch}/rank, DDP buckets {args.bucket_mb} MB, "
          f"{args.rounds}x{args.steps} timed steps per variant")
    print(f"# command: python -m {_MODULE} {' '.join(argv)}")
    print(f"# off baseline: |params - baseline's| / |baseline's - initial|; at most "
          f"{SUM_ORDER_DISTANCE:g} (summation order), {COMPRESSED_DISTANCE:g} with a "
          "compressed hook")
    print(f"{'variant':<22}{'median step ms':>16}{'baseline':>12}{'ratio':>8}"
          f"{'ranks equal':>13}{'off baseline':>14}{'ok':>6}")
    for row in rows:
        same = "-" if row["replicas_identical"] is None else str(row["replicas_identical"])
        off = "-" if row["distance_to_baseline"] is None else f"{row['distance_to_baseline']:.3g}"
        print(f"{row['variant']:<22}{row['median_ms']:>16.1f}{row['baseline']:>12}"
              f"{row['ratio_to_baseline']:>8.2f}{same:>13}{off:>14}{str(row['passed']):>6}")
    for row in rows:
        if not row["passed"]:
            print(failure(row), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Train every variant; 0 when each matched its baseline (and its ranks agreed), else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    with launch.agreed_checks(parser):
        args, hooks, apis = parse_arguments(parser, argv)
        lab = launch.lab_request(parser, args)
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np, lab=lab)

    import torch
    import torch.distributed as dist

    import collectives
    from bench import environment
    from collectives.hooks.torch import init_process_group

    torch.set_num_threads(args.threads)
    comm = collectives.init()
    init_process_group(comm)  # gloo
    gloo = dist.distributed_c10d._get_default_group()
    ours = dist.new_group(backend="collectives") if apis else None
    variants = make_variants(args, hooks, apis, comm, gloo, ours)
    initial = variants[0].flat_parameters()
    data = torch.Generator().manual_seed(comm.rank)
    x = torch.randn(args.batch, args.width, generator=data)
    y = torch.randn(args.batch, args.width, generator=data)
    train(variants, args, comm, x, y)
    rows = results(variants, comm, initial)
    if comm.rank == 0:
        params = initial.size
        print_table(rows, args, argv, params=params, nranks=comm.size)
        if args.json:
            environment.write_json(args.json, {"parameters": params, "ranks": comm.size,
                                               "args": vars(args), "rows": rows})
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
