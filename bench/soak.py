"""Soak: thousands of mixed collectives, every answer checked, memory watched.

Every rank draws the same sequence of collectives from one seed: sync, out= (a new
array, every other element of a buffer twice as long, or column-major), in place, async
batches, fused lists (`allreduce_many`, sync and async), over every algorithm,
compression, dtype, op, size and layout, plus a few deliberate mismatches that must raise
MismatchError on every rank and leave the communicator working. Each result is compared
with a closed-form reference on its rank; a running digest of all results is compared
across ranks at every checkpoint (identical bits everywhere). Memory: resident set and
peak (VmHWM) after a warm-up that runs every configuration once at the largest size, then
at every checkpoint and halfway through the mix. Caches still fill early in the mix, so
growth is judged over its second half: (peak at the end - peak halfway) / peak halfway, on
each rank. A leak that grows the peak by less than --max-growth over the second half passes
(run a longer mix to see a slow one). Rank 0 prints progress to stderr at every
checkpoint.

Example::

    mpiexec -n 3 python -m bench.soak --collectives 10000 --json soak.json
    python -m bench.soak --np 3 --collectives 500          # starts the ranks itself

Exit status 0 when every answer was right, every expected error came, every rank's bits
were identical and no rank's growth exceeded --max-growth; else 1, with the reasons.
Arguments that cannot work exit 2 before any rank starts.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench import environment, launch
from bench.arguments import refuse_beyond_memory
from bench.reference import CODES, Expected, element_codes, rounding_eps, value_table

__all__ = ["Case", "Data", "draw", "main"]

_MODULE = "bench.soak"
KINDS = ("sync", "out", "inplace", "async", "many", "many_async", "mismatch")
# How often each kind is drawn (mismatch only when the agreement check is on).
WEIGHTS = (30, 12, 12, 16, 14, 6, 1)
FUSION_BYTES = (4 << 10, 64 << 10, 1 << 20, None)
OUT_LAYOUTS = ("new", "strided", "column-major")  # what out= is, for the kind "out"
MAX_COUNT = (1 << 32) - 2  # element codes hash uint32 indices 0..max count
WRONG_LINES = 20  # failure lines kept per rank in the summary (the count is the total)


@dataclass(frozen=True)
class Case:
    """One drawn collective (or one batch, for async and fused kinds)."""

    kind: str
    algorithm: str
    compression: str | None
    op: str
    dtypes: tuple[np.dtype, ...]  # one per array (async batch members, fused list members)
    counts: tuple[int, ...]
    layout: str  # "flat", "2d", "strided"
    fusion_bytes: int | None = None
    salt: int = 0
    out: str = ""  # one of OUT_LAYOUTS for the kind "out"

    def label(self) -> str:
        dtypes = ",".join(sorted({str(d) for d in self.dtypes}))
        return (f"{self.kind} {self.algorithm}{'+' + self.compression if self.compression else ''} "
                f"{self.op} {dtypes} counts={list(self.counts)} {self.layout}"
                f"{' out=' + self.out if self.out else ''}")


@dataclass
class Totals:
    """What one rank saw."""

    collectives: int = 0
    checked: int = 0
    wrong: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    outs: Counter = field(default_factory=Counter)  # out= layouts of the kind "out"
    memory: list[tuple[int, int, int]] = field(default_factory=list)  # (done, rss, peak) bytes


def _count(rng: np.random.Generator, p: int, max_count: int) -> int:
    """Log-uniform in [0, max_count], sometimes a count near p (never above max_count)."""
    if rng.random() < 0.1:
        return min(int(rng.choice([0, 1, max(p - 1, 1), p, p + 1])), max_count)
    return int(math.exp(rng.uniform(0, math.log(max_count + 1)))) - 1


def draw(rng: np.random.Generator, *, p: int, algorithms: Sequence[str], dtypes: Sequence,
         max_count: int, check: bool, salt: int) -> Case:
    """The next collective; a function of the generator's state only, so equal on every rank."""
    weights = np.array(WEIGHTS, float) * [k != "mismatch" or check for k in KINDS]
    kind = KINDS[rng.choice(len(KINDS), p=weights / weights.sum())]
    algorithm = str(rng.choice(algorithms))
    compression = [None, None, "fp16", "bf16"][rng.integers(4)]
    floats = [d for d in dtypes if d.kind != "i"]
    pool = floats if compression else list(dtypes)
    n = int(rng.integers(1, 9)) if kind in ("many", "many_async") else (
        int(rng.integers(1, 5)) if kind == "async" else 1)
    dtype = pool[rng.integers(len(pool))]
    mixed = kind in ("many", "many_async") and rng.random() < 0.5
    chosen = tuple(pool[rng.integers(len(pool))] if mixed else dtype for _ in range(n))
    return Case(kind=kind, algorithm=algorithm, compression=compression,
                op=str(rng.choice(["sum", "avg", "max", "min"])), dtypes=chosen,
                counts=tuple(_count(rng, p, max_count) for _ in range(n)),
                layout=str(rng.choice(["flat", "flat", "2d", "strided"])),
                fusion_bytes=FUSION_BYTES[rng.integers(len(FUSION_BYTES))], salt=salt,
                out=str(rng.choice(OUT_LAYOUTS)) if kind == "out" else "")


def _shaped(values: np.ndarray, layout: str) -> np.ndarray:
    count = values.size
    if layout == "2d" and count % 2 == 0 and count:
        return values.reshape(2, count // 2)
    if layout == "strided":
        spaced = np.zeros(2 * count, values.dtype)
        spaced[::2] = values
        return spaced[::2]
    return values


def out_like(x: np.ndarray, layout: str) -> np.ndarray:
    """A buffer for x's result, filled with 99: a new array, every other element of one
    twice as long (shaped like x), or column-major (not C-contiguous when x is 2-D)."""
    if layout == "strided":
        return np.full(2 * x.size, 99, x.dtype)[::2].reshape(x.shape)
    return np.full(x.shape, 99, x.dtype, order="F" if layout == "column-major" else "C")


class Data:
    """Inputs and references: bench.reference's hashed codes and per-rank value table.

    Element i of a collective salted s takes code (code_i + s) mod 16, so consecutive
    collectives differ, and nothing is periodic in the sizes drawn.
    """

    def __init__(self, p: int, rank: int, max_count: int):
        self.p, self.rank = p, rank
        self.codes = element_codes(max_count + 1).astype(np.int64)
        self.tables = {integer: value_table(p, integer=integer) for integer in (False, True)}

    def _codes(self, count: int, salt: int) -> np.ndarray:
        return (self.codes[:count] + salt) % CODES

    def input(self, count: int, dtype: np.dtype, salt: int, layout: str) -> np.ndarray:
        table = self.tables[dtype.kind == "i"][self.rank].astype(dtype)
        return _shaped(table[self._codes(count, salt)], layout)

    def wrong(self, y, x, op: str, compression: str | None, salt: int) -> int:
        """Elements of y off the reference by more than the tolerance (NaN included)."""
        expected = Expected.reduction(self.tables[x.dtype.kind == "i"], op,
                                      eps=rounding_eps(x.dtype, compression))
        return expected.wrong(np.asarray(y).reshape(-1), self._codes(x.size, salt))


class Soak:
    """Runs cases on one rank and tallies the answers."""

    def __init__(self, comm, mpi_comm, max_count: int):
        self.comm, self.mpi = comm, mpi_comm
        self.p, self.rank = comm.size, comm.rank
        self.data = Data(comm.size, comm.rank, max_count)
        self.totals = Totals()
        self.digest = hashlib.blake2b(digest_size=16)

    def run(self, case: Case) -> None:
        try:
            self._run(case)
        except Exception:
            print(f"rank {self.rank}: failed in collective {case.salt}: {case.label()}",
                  file=sys.stderr, flush=True)
            raise

    def _run(self, case: Case) -> None:
        self.totals.kinds[case.kind] += 1
        if case.out:
            self.totals.outs[case.out] += 1
        inputs = [self.data.input(n, d, case.salt + i, case.layout)
                  for i, (n, d) in enumerate(zip(case.counts, case.dtypes))]
        kwargs = dict(op=case.op, algorithm=case.algorithm, compression=case.compression)
        if case.kind == "mismatch":
            self._mismatch(case, inputs[0], kwargs)
            return
        if case.kind in ("sync", "out", "inplace"):
            x = inputs[0]
            before = x.copy()
            if case.kind == "sync":
                results = [self.comm.allreduce(x, **kwargs)]
                self._check(np.array_equal(x, before), case, "input modified")
            else:
                out = x if case.kind == "inplace" else out_like(x, case.out)
                results = [self.comm.allreduce(x, out=out, **kwargs)]
                self._check(results[0] is out, case, "result is not out")
        elif case.kind == "async":
            handles = [self.comm.allreduce_async(x, **kwargs) for x in inputs]
            results = [h.wait() for h in handles]
        else:
            many = self.comm.allreduce_many if case.kind == "many" else self.comm.allreduce_many_async
            result = many(inputs, fusion_bytes=case.fusion_bytes, **kwargs)
            results = result if case.kind == "many" else result.wait()
        self.totals.collectives += 1 if case.kind.startswith("many") else len(results)
        for i, (x, y) in enumerate(zip(inputs, results)):
            ok = y.shape == x.shape and y.dtype == x.dtype
            self._check(ok, case, f"array {i}: got {y.shape} {y.dtype}, not {x.shape} {x.dtype}")
            wrong = self.data.wrong(y, x, case.op, case.compression, case.salt + i) if ok else 0
            self._check(wrong == 0, case, f"array {i}: {wrong} elements off the reference")
            self.digest.update(np.ascontiguousarray(y).view(np.uint8).tobytes())

    def _mismatch(self, case: Case, x: np.ndarray, kwargs: dict) -> None:
        """The last rank passes one more element: MismatchError everywhere, nothing moves."""
        import collectives

        if self.rank == self.p - 1:
            x = np.concatenate([x.reshape(-1), x.reshape(-1)[:1] if x.size else np.zeros(1, x.dtype)])
        try:
            self.comm.allreduce(x.reshape(-1), **kwargs)
            self._check(self.p == 1, case, "no MismatchError")
        except collectives.MismatchError as error:
            self._check("has shape" in str(error), case, f"MismatchError without shapes: {error}")

    def _check(self, ok: bool, case: Case, what: str) -> None:
        self.totals.checked += 1
        if not ok:
            self.totals.wrong.append(f"rank {self.rank}: {case.label()}: {what}")

    def checkpoint(self) -> bool:
        """Record memory; True when every rank's results so far have identical bits."""
        self.totals.memory.append((self.totals.collectives, _rss(), _peak()))
        digests = self.mpi.allgather(self.digest.digest())
        return len(set(digests)) == 1


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _rss() -> int:
    return _status("VmRSS")


def _peak() -> int:
    return _status("VmHWM")  # the resident set's high-water mark


def warm_up_cases(*, p: int, algorithms, dtypes, max_count: int) -> list[Case]:
    """Every kind x algorithm x compression x dtype once at the largest size, strided (the
    largest temporaries), batches and lists at their longest for 8-byte dtypes: buffers,
    caches and the peak reach what the mix can need."""
    cases = []
    for kind in ("sync", "async", "many", "many_async"):
        for algorithm in algorithms:
            for compression in (None, "fp16", "bf16"):
                for dtype in dtypes:
                    if compression and dtype.kind == "i":
                        continue
                    # The longest batches and lists in the largest dtype: the biggest
                    # transients the mix can draw happen here first.
                    longest = 4 if kind == "async" else 8
                    n = 1 if kind == "sync" else (longest if dtype.itemsize == 8 else 2)
                    cases.append(Case(kind=kind, algorithm=algorithm, compression=compression,
                                      op="avg", dtypes=(dtype,) * n, counts=(max_count,) * n,
                                      layout="strided", fusion_bytes=None, salt=len(cases)))
    return cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--collectives", type=int, default=10_000,
                        help="mixed collectives after the warm-up (default 10000; an async "
                             "batch counts each member, a fused list counts once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-count", type=int, default=1 << 18,
                        help="largest element count of one array (default 262144)")
    parser.add_argument("--checkpoint", type=int, default=500, help="collectives between checkpoints")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="fail when a rank's peak memory grows more than this over the "
                             "second half of the mix (default 0.10)")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated collectives.ALGORITHMS, or all (default: all)")
    parser.add_argument("--json", default=None, help="write the summary here (rank 0)")
    launch.add_launch_argument(parser, default=3)
    launch.add_lab_arguments(parser)
    return parser


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What in the arguments cannot work, before any rank starts."""
    for name, value in (("--collectives", args.collectives), ("--checkpoint", args.checkpoint)):
        if value < 1:
            return f"{name} must be at least 1, got {value}"
    if not 1 <= args.max_count <= MAX_COUNT:
        return f"--max-count must be 1..{MAX_COUNT}, got {args.max_count}"
    if args.seed < 0:
        return f"--seed must be at least 0, got {args.seed}"
    if not (math.isfinite(args.max_growth) and args.max_growth >= 0):
        return f"--max-growth must be a fraction of at least 0, got {args.max_growth}"
    return None


def _algorithms(text: str | None, known: Sequence[str]) -> tuple[str, ...]:
    """The algorithms --algorithms names (all of `known` by default); ValueError for names
    the library does not know, a name twice, an empty name, or none (mpi alone)."""
    if text is None:
        return tuple(known)
    if "mpi" in (name.strip() for name in text.split(",")):
        raise ValueError(f"--algorithms {text!r}: the soak runs the library's algorithms, "
                         f"not MPI's own (mpi); choose from {', '.join(known)} or 'all'")
    from bench import ops  # (imports mpi4py.MPI: only when there is something to check)

    algorithms = ops.algorithms_for("allreduce", text, known)
    if not algorithms:
        raise ValueError(f"--algorithms {text!r}: the soak runs the library's algorithms, "
                         f"not MPI's own; choose from {', '.join(known)} or 'all'")
    return algorithms


def _checked_arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, tuple[str, ...],
                                                     launch.LabRequest | None]:
    """(arguments, algorithms, lab); what cannot work ends the process here with one line
    and exit status 2 (parser.error), before any rank starts."""
    import collectives

    parser = build_parser()
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        problem = _usage_problem(args)
        if problem is not None:
            parser.error(problem)
        try:
            algorithms = _algorithms(args.algorithms, collectives.ALGORITHMS)
            if args.json is not None:
                environment.check_writable(args.json)
        except ValueError as error:
            parser.error(str(error))
        lab = launch.lab_request(parser, args)
        refuse_beyond_memory(parser, args.max_count * 8, launch.ranks_here(args.np, lab),
                             flag="--max-count")
    return args, algorithms, lab


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, algorithms, lab = _checked_arguments(argv)
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np, lab=lab)
    from mpi4py import MPI

    import collectives

    mpi = MPI.COMM_WORLD
    comm = collectives.init()
    dtypes = list(collectives.DTYPES)
    soak = Soak(comm, mpi, args.max_count)
    start = time.perf_counter()
    for case in warm_up_cases(p=comm.size, algorithms=algorithms, dtypes=dtypes,
                              max_count=args.max_count):
        soak.run(case)
    same_bits = soak.checkpoint()
    warm = soak.totals  # the mix is counted from here; its memory starts from the warm-up's
    soak.totals = Totals(checked=warm.checked, wrong=warm.wrong, memory=[(0, *warm.memory[-1][1:])])
    mixed_start = time.perf_counter()
    _progress(soak, f"warm-up: {warm.collectives} collectives in {mixed_start - start:.1f} s")
    same_bits &= mix(soak, args, algorithms=algorithms, dtypes=dtypes)
    summary = _summary(soak.totals, rank=comm.rank, warm_up=warm.collectives,
                       seconds=time.perf_counter() - mixed_start,
                       warm_up_seconds=mixed_start - start)
    everyone = mpi.gather(summary, root=0)
    ok = True
    if comm.rank == 0:
        reasons = _failures(everyone, same_bits=same_bits, max_growth=args.max_growth)
        _report(everyone, args, same_bits=same_bits, reasons=reasons, algorithms=algorithms)
        ok = not reasons
    return 0 if mpi.bcast(ok, root=0) else 1


def mix(soak: Soak, args: argparse.Namespace, *, algorithms: Sequence[str],
        dtypes: Sequence[np.dtype]) -> bool:
    """The drawn collectives, a checkpoint (and a progress line) every --checkpoint; True when
    every checkpoint found identical bits on every rank."""
    rng = np.random.default_rng(args.seed)
    same_bits, salt, next_checkpoint = True, 0, args.checkpoint
    halfway = max(args.collectives // 2, 1)  # a memory record there, whatever --checkpoint
    start = time.perf_counter()
    while soak.totals.collectives < args.collectives:
        soak.run(draw(rng, p=soak.p, algorithms=algorithms, dtypes=dtypes,
                      max_count=args.max_count, check=soak.comm.settings.check, salt=salt))
        salt += 1
        done = soak.totals.collectives
        if done >= min(next_checkpoint, halfway) or done >= args.collectives:
            if done >= halfway:
                halfway = args.collectives + 1
            same_bits &= soak.checkpoint()
            next_checkpoint = (done // args.checkpoint + 1) * args.checkpoint
            _progress(soak, f"{done}/{args.collectives} collectives in "
                            f"{time.perf_counter() - start:.1f} s")
    return same_bits


def _progress(soak: Soak, what: str) -> None:
    """On rank 0, one line to stderr: how far, this rank's memory, wrong answers so far."""
    if soak.rank == 0:
        _, rss, peak = soak.totals.memory[-1]
        print(f"# soak: {what}; rank 0: rss {rss / (1 << 20):.1f} MiB, peak "
              f"{peak / (1 << 20):.1f} MiB, {len(soak.totals.wrong)} wrong",
              file=sys.stderr, flush=True)


def growth(memory: Sequence[tuple[int, int, int]]) -> tuple[float, int, int]:
    """(growth, index halfway, index at the end) of `memory`'s (done, rss, peak) records,
    the first taken after the warm-up: the peak's growth from the record halfway through the
    mix (the last at or before it) to the end (early growth is caches filling, not a leak)."""
    end = len(memory) - 1
    half = max(i for i, (done, _, _) in enumerate(memory) if done <= memory[end][0] // 2)
    return (memory[end][2] - memory[half][2]) / memory[half][2], half, end


def _summary(totals: Totals, **fields) -> dict:
    """One rank's results as JSON; the failure lines capped at WRONG_LINES, not the count."""
    rise, half, end = growth(totals.memory)
    first = totals.memory[0]
    return {
        **fields, "collectives": totals.collectives, "checked": totals.checked,
        "wrong_count": len(totals.wrong), "wrong": totals.wrong[:WRONG_LINES],
        "kinds": dict(totals.kinds), "outs": dict(totals.outs),
        "rss_after_warm_up": first[1], "peak_after_warm_up": first[2],
        "halfway": totals.memory[half][0], "peak_halfway": totals.memory[half][2],
        "peak_at_end": totals.memory[end][2], "rss_at_end": totals.memory[end][1],
        "growth": rise, "memory": totals.memory,
    }


def _failures(everyone: list[dict], *, same_bits: bool, max_growth: float) -> list[str]:
    """Why the run failed, one phrase a reason; empty when it passed."""
    mib = 1 << 20
    reasons = []
    wrong = sum(s["wrong_count"] for s in everyone)
    if wrong:
        reasons.append(f"{wrong} wrong answers or missing errors")
    if not same_bits:
        reasons.append("results differ in their bits between ranks")
    for s in everyone:
        if s["growth"] > max_growth:
            reasons.append(
                f"rank {s['rank']}'s peak memory grew {s['growth']:+.2%} over the second half "
                f"({s['peak_halfway'] / mib:.1f} MiB after {s['halfway']} collectives, "
                f"{s['peak_at_end'] / mib:.1f} MiB after {s['collectives']}), more than "
                f"--max-growth {max_growth:.0%}")
    return reasons


def _report(everyone: list[dict], args, *, same_bits: bool, reasons: list[str],
            algorithms) -> None:
    mib = 1 << 20
    first = everyone[0]
    print(f"# soak: {len(everyone)} ranks, seed {args.seed}, max count {args.max_count}, "
          f"algorithms {','.join(algorithms)}")
    print(f"# warm-up: {first['warm_up']} collectives in {first['warm_up_seconds']:.1f} s; "
          f"mixed: {first['collectives']} collectives in {first['seconds']:.1f} s")
    print(f"# kinds: {first['kinds']}; out= layouts: {first['outs']}")
    print("# rank  checked  wrong  rss_warm_MiB  peak_warm_MiB  peak_half_MiB  peak_end_MiB  "
          "rss_end_MiB  growth_2nd_half")
    for s in everyone:
        print(f"  {s['rank']:4d}  {s['checked']:7d}  {s['wrong_count']:5d}  "
              f"{s['rss_after_warm_up'] / mib:12.1f}  {s['peak_after_warm_up'] / mib:13.1f}  "
              f"{s['peak_halfway'] / mib:13.1f}  {s['peak_at_end'] / mib:12.1f}  "
              f"{s['rss_at_end'] / mib:11.1f}  {s['growth']:+15.2%}")
    for s in everyone:
        for line in s["wrong"]:
            print(f"WRONG {line}")
        if s["wrong_count"] > len(s["wrong"]):
            print(f"WRONG rank {s['rank']}: ... {s['wrong_count'] - len(s['wrong'])} more")
    print(f"# identical bits on every rank: {'yes' if same_bits else 'NO'}")
    print(f"# FAIL: {'; '.join(reasons)}" if reasons else
          f"# PASS: all correct, growth over the second half <= {args.max_growth:.0%}")
    if args.json:
        environment.write_json(args.json, {"args": vars(args), "ranks": everyone,
                                           "ok": not reasons})


if __name__ == "__main__":
    sys.exit(main())
