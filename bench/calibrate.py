"""`collectives-bench --calibrate`: fit the cost model's constants on this machine.

Micro-benchmarks, each over the code path the library itself runs (the communicator's
transport, its executor `run_plan`, the kernels), with every rank busy at once, at the
world size being calibrated, so that ranks sharing cores, caches and memory bandwidth share
them as in a real all-reduce:

1. shift exchange through the executor: every rank sends to the next rank of its node and
   receives from the previous one (pairs when there are two): an N-byte buffer in one chunk
   per rank of that ring, as a ring all-reduce cuts it, and as many rounds, each sending the
   chunk received in the round before, so every chunk is received once; the received chunk
   copied in (copy exchange) or reduced with the rank's input (reduce exchange). The
   per-round time at the smallest N is the link's `alpha` (Python's and the scheduler's
   cost of a round included); per N, the rest per byte is `beta` (copy) and `gamma`
   (reduce, the copy out of the transport included), kept per N in `by_size` since data
   that stays in cache moves several times faster. The same across nodes (rank i with its
   counterparts on the neighbouring nodes) when the topology has several, else inter = intra.
   Between processes of one host the ranks' own cores move the bytes (`cpu_copy`);
2. a copy of N bytes on every rank at once: `copy_beta` per N (copies between input, work
   buffer and output); and one fp16 codec pass over N bytes of float32 (`codec_beta`, at
   the largest N: what `compression="auto"` prices a codec pass at);
3. per-call cost: a plan-based call with nothing to move (``allreduce`` of an empty array):
   validation, the agreement round trip, fusion and plan lookup, at this world size; and
   per N, a ring all-reduce of N bytes less its plan run by the executor alone on the same
   buffers: the call's own work around its plan, which grows with N as the call's Python
   runs on caches its data evicted;
4. the transport's own all-reduce through ``comm.allreduce(algorithm="native")`` per size:
   native's time table (a black box: interpolated, never fitted).

Every time of 1-3 is the median of RUNS timed runs (the slowest rank's mean in each), taken
round-robin over all of them, size by size, so that a slow stretch of the machine moves one
run of each instead of every run of one. `calibrate_alongside` times other calls (the
report's measured all-reduces) in the same round-robin, next to their size's
micro-benchmarks. The result is written to the tuning file
(collectives.costmodel.tuning_path()) under this world size; `auto` and the report's
predictions read it. Every call is plain (deterministic=False): under
COLLECTIVES_DETERMINISTIC=1 the reproducible path was timed and stored as plain native,
10x too slow for every later run (the 100th review). `python -m bench.calibrate ARGS` is
`collectives-bench --calibrate ARGS` (it ran nothing and exited 0).

Example::

    collectives-bench --calibrate --np 2
    collectives-bench --calibrate --np 4
"""
from __future__ import annotations

import functools
import operator
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

import kernels
from bench import environment, harness
from bench.sizes import format_size
from collectives.algorithms import plan_for
from collectives.algorithms.plan import Plan, Recv, Round, Send, segments
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.costmodel import Calibration, LinkModel, write_calibration

__all__ = ["EXCHANGE_SIZES", "QUICK_SIZES", "NATIVE_SIZES", "BUDGET", "RUNS", "fit_alpha_beta",
           "per_byte", "median_time", "round_robin", "exchange_plan", "calibrate",
           "calibrate_alongside", "run"]

EXCHANGE_SIZES = (64,) + tuple(16 << (2 * i) for i in range(5, 12))  # 64 B; 16 KiB .. 64 MiB by x4
QUICK_SIZES = (64, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)
NATIVE_SIZES = tuple(8 << (2 * i) for i in range(13))  # 8 B .. 128 MiB
_TAG = 7001
BUDGET = 0.05  # seconds of timed calls per run (at least 3 calls)
RUNS = 9  # timed runs per measurement; the median counts


def fit_alpha_beta(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """(alpha, beta) minimising the relative error of ``alpha + n beta`` over the points.

    >>> fit_alpha_beta([8, 1 << 20], [1e-5 + 8e-10, 1e-5 + (1 << 20) * 1e-10])
    (1e-05, 1e-10)
    """
    n = np.asarray(sizes, float)
    t = np.asarray(seconds, float)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([1 / t, n / t], axis=1), np.ones_like(t), rcond=None)
    if beta <= 0:
        beta = float((t[-1] - t[0]) / (n[-1] - n[0])) if n[-1] > n[0] else 0.0
    return round(max(float(alpha), 0.0), 12), round(max(float(beta), 0.0), 18)


def per_byte(seconds: float, alpha: float, nbytes: int) -> float:
    """Seconds per byte beyond the latency: ``(seconds - alpha) / nbytes``, at least 0.

    >>> per_byte(3e-5, 1e-5, 1000)
    2e-08
    """
    return round(max(seconds - alpha, 0.0) / nbytes, 18) if nbytes else 0.0


def _iterations(mpi_comm, call: Callable[[], None], budget: float) -> int:
    """Timed calls per run so that one run takes about `budget` seconds (3 to 200), from
    one warm-up call and one timed call on the slowest rank."""
    call()
    mpi_comm.Barrier()
    start = time.perf_counter()
    call()
    once = max(mpi_comm.allgather(time.perf_counter() - start))
    return int(min(200, max(3, budget / max(once, 1e-7))))


def median_time(mpi_comm, call: Callable[[], None], *, budget: float = BUDGET,
                runs: int = RUNS) -> float:
    """Seconds per call: the median over `runs` timed runs of the slowest rank's mean."""
    return statistics.median(round_robin(mpi_comm, [call], budget=budget, runs=runs)[0])


def round_robin(mpi_comm, calls: Sequence[Callable[[], None]], *, budget: float = BUDGET,
                runs: int = RUNS, progress: Callable[[str], None] = lambda what: None
                ) -> list[list[float]]:
    """Per call, the seconds per call of each of `runs` timed runs (the slowest rank's mean),
    taken round-robin over the calls: each call's runs spread over the whole measurement,
    and calls next to each other in `calls` are timed moments apart in every run."""
    iters = [_iterations(mpi_comm, call, budget) for call in calls]
    seconds: list[list[float]] = [[] for _ in calls]
    for k in range(runs):
        progress(f"timed run {k + 1}/{runs} over {len(calls)} calls")
        for call, n, times in zip(calls, iters, seconds):
            times.append(harness.time_per_iteration(mpi_comm, call, iters=n, warmup=1))
    return seconds


def exchange_plan(rank: int, size: int, nbytes: int, succ: int | None, pred: int | None, *,
                  parts: int, reduce: bool, itemsize: int = 4) -> Plan:
    """`parts` rounds over a buffer of `parts` chunks of `nbytes` / `parts`: round k sends
    chunk k to `succ` and receives chunk k + 1 (mod parts) from `pred`, reducing it (with the
    input) or copying it.

    As in a ring's phases, each round sends what the previous one received, and 1 MiB
    segments pipeline a chunk. Every chunk is received once, as every region of a real
    all-reduce is: a chunk never received would be copied from the input at the end, a copy
    no all-reduce makes. No rounds for a rank without neighbours.

    >>> [len(r.sends) for r in exchange_plan(0, 2, 8 << 20, 1, 1, parts=2, reduce=True).rounds]
    [4, 4]
    """
    chunk = max(1, nbytes // (parts * itemsize))
    seg = max(1, SEGMENT_BYTES // itemsize)
    rounds = []
    if succ is not None and pred is not None:
        for k in range(parts):
            j = (k + 1) % parts
            rounds.append(Round(
                sends=tuple(Send(succ, a, b) for a, b in segments(k * chunk, (k + 1) * chunk, seg)),
                recvs=tuple(Recv(pred, a, b, reduce) for a, b in segments(j * chunk, (j + 1) * chunk, seg))))
    return Plan("exchange", rank, size, parts * chunk, tuple(rounds))


def _ring(rank: int, topology, *, across: bool) -> list[int]:
    """The ring over this rank's node, or over the nodes (ranks of one local index); empty
    for a rank that has no neighbours of that class."""
    if across:
        nodes = topology.nodes
        local = nodes[topology.node_of[rank]].index(rank)
        ring = [node[local] for node in nodes if local < min(len(n) for n in nodes)]
    else:
        ring = list(topology.peers(rank))
    return ring if len(ring) >= 2 and rank in ring else []


def _same_host(mpi_comm, peer: int | None) -> bool:
    """Whether `peer` shares this rank's machine (MPI's shared-memory split), for every rank."""
    from mpi4py import MPI

    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    host = mpi_comm.allgather(node.allreduce(mpi_comm.rank, op=MPI.MIN))
    node.Free()
    return all(mpi_comm.allgather(peer is None or host[peer] == host[mpi_comm.rank]))


class _Exchange:
    """The copy and reduce shift exchange of one link class, per size, as timed calls."""

    def __init__(self, mpi_comm, comm, sizes: Sequence[int], *, across: bool) -> None:
        runner = comm.runner
        ring = _ring(comm.rank, comm.topology, across=across)
        i = ring.index(comm.rank) if ring else 0
        succ, pred = (ring[(i + 1) % len(ring)], ring[i - 1]) if ring else (None, None)
        # one chunk count everywhere (rings may differ in length): one buffer length on
        # every rank, as a shared-memory window needs
        self.parts = max(mpi_comm.allgather(len(ring)))
        self.active = self.parts > 0
        self.same_host = self.active and _same_host(mpi_comm, succ)
        # zero-copy: on-node peers read the transport's shared work buffer
        self.zero_copy = runner.transport.shared is not None and not across
        # Between hosts, every local rank runs its ring at once, so a node's link carries one
        # flow per local rank each way: the link's own rate is that many times a flow's.
        self.flows = min(len(node) for node in comm.topology.nodes) if across else 1
        self.calls: dict[tuple[int, bool], Callable[[], None]] = {}
        for n in sizes if self.active else ():
            plans = [exchange_plan(comm.rank, comm.size, n, succ, pred, parts=self.parts,
                                   reduce=is_reduce) for is_reduce in (False, True)]
            src = np.ones(plans[0].count, np.float32)
            out = np.empty_like(src)
            for is_reduce, plan in zip((False, True), plans):
                self.calls[n, is_reduce] = _bare_run(plan, runner, src, out)

    def times(self, seconds: Mapping[tuple[int, bool], float], sizes: Sequence[int]) -> dict:
        """The exchange's per-round seconds per size, from the median seconds per call."""
        return {"sizes": list(sizes), "chunks": self.parts,
                "copy_round_s": [seconds[n, False] / self.parts for n in sizes],
                "reduce_round_s": [seconds[n, True] / self.parts for n in sizes],
                "same_host": self.same_host, "zero_copy": self.zero_copy,
                "flows_per_link": self.flows}


def _link(times: dict, sizes: Sequence[int]) -> tuple[LinkModel, list[float], list[float]]:
    """The link (alpha from the smallest exchange, beta at the largest) and per-size beta, gamma."""
    alpha = times["copy_round_s"][0]
    chunks = [n // times["chunks"] for n in sizes]
    # A network link between hosts is one per node (a NIC shared by the node's flows):
    # its beta is a flow's divided by the flows that shared it during the exchange, and a
    # reduce round costs the copy round plus the reduction (gamma, on the receiver).
    per_node = not times["same_host"]
    if per_node:
        gammas = [max(r - t, 0.0) / c for t, r, c in
                  zip(times["copy_round_s"], times["reduce_round_s"], chunks)]
    else:  # the ranks' cores move the bytes: gamma includes the copy out of the transport
        gammas = [per_byte(t, alpha, c) for t, c in zip(times["reduce_round_s"], chunks)]
    flows = times.get("flows_per_link", 1) if per_node else 1
    betas = [per_byte(t, alpha, c) / flows for t, c in zip(times["copy_round_s"], chunks)]
    link = LinkModel(round(alpha, 12), betas[-1], zero_copy=times["zero_copy"],
                     cpu_copy=times["same_host"] and not times["zero_copy"], per_node=per_node)
    return link, betas, gammas


def calibrate(mpi_comm, comm, *, quick: bool = False,
              progress: Callable[[str], None] = lambda what: None) -> Calibration:
    """Measure and fit on every rank of `comm` (a collectives Communicator over mpi_comm)."""
    return calibrate_alongside(mpi_comm, comm, {}, quick=quick, progress=progress)[0]


def calibrate_alongside(mpi_comm, comm, alongside: Mapping[int, Sequence[Callable[[], None]]], *,
                        quick: bool = False, progress: Callable[[str], None] = lambda what: None
                        ) -> tuple[Calibration, dict[int, list[float]]]:
    """`calibrate`, with the `alongside` calls of each size (bytes) timed in the same
    round-robin, right after that size's micro-benchmarks: (the calibration, the median
    seconds per call of each alongside call). So a model built from the calibration can be
    compared with calls timed at the same moments, on a host whose speed drifts."""
    sizes = tuple(sorted(set(QUICK_SIZES if quick else EXCHANGE_SIZES) | set(alongside)))
    exchanges = [_Exchange(mpi_comm, comm, sizes, across=across) for across in (False, True)]
    if not any(exchange.active for exchange in exchanges):
        raise ValueError(f"calibration needs at least 2 ranks, got {comm.size}")
    empty = np.empty(0, np.float32)

    def empty_call() -> None:
        comm.allreduce(empty, algorithm="ring", deterministic=False)

    # In each timed run, per size: the exchanges, a copy of n bytes on every rank, a ring
    # all-reduce of n bytes and its plan run bare (the difference is the call's cost around
    # its plan), then the alongside calls.
    schedule: list[tuple[tuple, Callable[[], None]]] = [(("empty call",), empty_call)]
    for n in sizes:
        for e, exchange in enumerate(exchanges):
            schedule += [((e, n, is_reduce), exchange.calls[n, is_reduce])
                         for is_reduce in (False, True) if exchange.active]
        if n != sizes[0]:
            a = np.ones(n // 4, np.float32)
            b = np.empty_like(a)
            half = np.empty(a.size, np.float16)
            schedule += [(("copy", n), functools.partial(kernels.copy_into, b, a)),
                         (("codec", n), functools.partial(kernels.compress_into, half, a, 1.0)),
                         *(((kind, n), call) for kind, call in _call_and_plan(comm, n).items())]
        schedule += [(("alongside", n, i), call) for i, call in enumerate(alongside.get(n, ()))]
    progress(f"exchanges, copies and per-call cost, {format_size(sizes[0])} .. "
             f"{format_size(sizes[-1])}" + (", with the calls alongside" if alongside else ""))
    runs = dict(zip((key for key, _ in schedule),
                    round_robin(mpi_comm, [call for _, call in schedule], progress=progress)))
    seconds = {key: statistics.median(times) for key, times in runs.items()}

    measured = [exchange.times({key[1:]: t for key, t in seconds.items() if key[0] == e}, sizes)
                if exchange.active else None for e, exchange in enumerate(exchanges)]
    intra, inter = measured
    intra_link, intra_beta, gamma = _link(intra or inter, sizes)
    inter_link, inter_beta, inter_gamma = _link(inter, sizes) if inter else (intra_link, intra_beta, gamma)
    if intra is None:  # one rank per node: the inter-node reduce exchange sets gamma
        gamma = inter_gamma
    call_overhead = seconds[("empty call",)]
    copy_beta = [round(seconds["copy", n] / n, 18) for n in sizes[1:]]
    call_after = [round(max(statistics.median(map(operator.sub, runs["call", n], runs["plan", n])),
                            call_overhead), 12) for n in sizes[1:]]
    rows = tuple(zip(sizes[1:], intra_beta[1:], inter_beta[1:], gamma[1:], copy_beta, call_after))
    calibration = Calibration(
        size=comm.size, intra=intra_link, inter=inter_link, gamma=gamma[-1],
        call_overhead=call_overhead, copy_beta=copy_beta[-1],
        codec_beta=round(seconds["codec", sizes[-1]] / sizes[-1], 18),
        native=_native_table(mpi_comm, comm, NATIVE_SIZES[::2] if quick else NATIVE_SIZES, progress),
        by_size=rows,
        measured={"intra_exchange": intra, "inter_exchange": inter,
                  "empty_plan_call_s": call_overhead,
                  "transport": comm.transport_name})
    return calibration, {n: [seconds["alongside", n, i] for i in range(len(calls))]
                         for n, calls in alongside.items()}


def _bare_run(plan: Plan, runner, src: np.ndarray, out: np.ndarray) -> Callable[[], None]:
    """`plan` summing `src` into `out` through the executor alone (the communicator's
    PlanRunner: through the transport's shared work buffer when it has one)."""

    def run() -> None:
        runner.run(plan, out, "sum", _TAG, time.monotonic() + 60, src=src)

    return run


def _call_and_plan(comm, nbytes: int) -> dict[str, Callable[[], None]]:
    """A ring all-reduce of `nbytes` through `comm` ("call") and the same plan on the same
    buffers run by the executor alone ("plan")."""
    plan = plan_for("allreduce", "ring", comm.rank, comm.size, nbytes // 4, 4, comm.topology)
    x = np.ones(plan.count, np.float32)
    out = np.empty_like(x)
    return {"call": lambda: comm.allreduce(x, algorithm="ring", out=out, deterministic=False),
            "plan": _bare_run(plan, comm.runner, x, out)}


def _native_table(mpi_comm, comm, sizes: Sequence[int], progress) -> tuple[tuple[int, float], ...]:
    """(bytes, seconds) of `comm.allreduce(algorithm="native")` per size."""
    table = []
    for n in sizes:
        progress(f"native all-reduce {format_size(n)}")
        x = np.ones(n // 4, np.float32)
        out = np.empty_like(x)
        table.append((n, median_time(mpi_comm, lambda: comm.allreduce(
            x, algorithm="native", out=out, deterministic=False))))
    return tuple(table)


def tuning_file_problem() -> str | None:
    """Why the tuning file could not take a calibration (``check_tuning_file``), or None."""
    from collectives.costmodel import check_tuning_file

    try:
        check_tuning_file()
    except ValueError as error:
        return str(error)
    return None


def run(mpi_comm, *, quick: bool = False, out=None) -> Calibration:
    """Calibrate, write the tuning file (rank 0) and print what was fitted."""
    import sys

    import collectives

    out = out or sys.stdout
    comm = collectives.init(mpi_comm=mpi_comm)
    leader = mpi_comm.rank == 0
    env = environment.environment(mpi_comm)

    def progress(what: str) -> None:
        if leader:
            sys.stderr.write(f"calibrating: {what}\n")
            sys.stderr.flush()

    calibration = calibrate(mpi_comm, comm, quick=quick, progress=progress)
    if leader:
        path = write_calibration(calibration, transport=comm.transport_name, host=env["hostname"],
                                 date=env["date"])
        out.write(describe(calibration) + f"\n# written to {path}\n")
        out.flush()
    return calibration


def describe(calibration: Calibration) -> str:
    """The fitted constants in words."""
    def link(model: LinkModel) -> str:
        kind = ", zero-copy" if model.zero_copy else ", cores copy" if model.cpu_copy else ""
        return f"alpha {model.alpha * 1e6:.1f} us, {_rate(model.beta)} GB/s{kind}"

    lines = [
        f"# calibration at np {calibration.size}",
        f"# intra-node link: {link(calibration.intra)}",
        f"# inter-node link: {link(calibration.inter)}",
        f"# reduction: {_rate(calibration.gamma)} GB/s (gamma {calibration.gamma:.3e} s/B)",
        f"# per call: {calibration.call_overhead * 1e6:.1f} us; copies in/out of the work buffer: {_rate(calibration.copy_beta)} GB/s",
        f"# a 16-bit codec pass (float32 in): {_rate(calibration.codec_beta)} GB/s",
    ]
    if calibration.by_size:
        lines.append("# per call size (GB/s; per call): " + "; ".join(
            f"{format_size(n)}: intra {_rate(b)}, inter {_rate(c)}, reduce {_rate(g)}, "
            f"copy {_rate(cb)}; {call * 1e6:.0f} us" for n, b, c, g, cb, call in calibration.by_size))
    lines.append("# native all-reduce: " + ", ".join(f"{format_size(n)} {t * 1e6:.0f} us"
                                                    for n, t in calibration.native[::3]))
    return "\n".join(lines)


def _rate(seconds_per_byte: float) -> str:
    return f"{1 / seconds_per_byte / 1e9:.2f}" if seconds_per_byte > 0 else "inf"


if __name__ == "__main__":
    import sys

    from bench.allreduce_perf import main

    sys.exit(main(["--calibrate", *sys.argv[1:]]))
