"""`collectives-bench --calibrate`: fit the cost model's constants on this machine.

Micro-benchmarks, each over the code path the library itself runs (the communicator's
transport, the kernels), all ranks busy at once so that shared cores are shared as in a
real all-reduce (pairs 0-1, 2-3, ... run side by side):

1. copy ping-pong (isend, irecv into a buffer): one-way time per size -> link alpha, beta
   by a least-relative-error fit of ``alpha + n beta``; pairs on one node give the intra
   class, pairs across nodes (when the topology has several) the inter class;
2. reduce ping-pong (the receiver reduces the message into its buffer, from the peer's
   memory when the transport is zero-copy): its slope minus the link's transfer is gamma;
3. the transport's own all-reduce through ``comm.allreduce(algorithm="native")`` per size:
   native's time table (a black box: interpolated, never fitted);
4. per-call cost: the communicator's native call at 8 B minus raw ``MPI_Allreduce``, plus
   what a plan-based call costs more than a native one on a one-rank communicator;
5. a 128 MiB copy and reduce on every rank at once (memory-bound, as large messages are):
   copy_beta (copies in and out of the work buffer), and lower bounds for gamma and a zero-copy link's beta (ranks that share cores
   compute at once in a real call, unlike in a ping-pong).

The result is written to the tuning file (collectives.costmodel.tuning_path()) under this
world size; `auto` and the report's predictions read it.

Example::

    collectives-bench --calibrate --np 2
    collectives-bench --calibrate --np 4
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

import kernels
from bench import harness
from collectives.costmodel import Calibration, LinkModel, write_calibration

__all__ = ["PINGPONG_SIZES", "NATIVE_SIZES", "fit_alpha_beta", "calibrate", "run"]

PINGPONG_SIZES = tuple(8 << (3 * i) for i in range(8)) + (16 << 20,)  # 8 B .. 16 MiB
NATIVE_SIZES = tuple(8 << (2 * i) for i in range(13))  # 8 B .. 128 MiB
_TAG = 7001
_BUDGET = 0.15  # seconds of timed calls per measurement (at least 3 calls)


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


def _timed(mpi_comm, call: Callable[[], None], *, budget: float = _BUDGET) -> float:
    """Seconds per call, every rank timing together; the slowest rank's mean."""
    call()
    mpi_comm.Barrier()
    start = time.perf_counter()
    call()
    once = max(mpi_comm.allgather(time.perf_counter() - start))
    iters = int(min(200, max(3, budget / max(once, 1e-7))))
    return harness.time_per_iteration(mpi_comm, call, iters=iters, warmup=1)


class _PingPong:
    """Message round trips between partner ranks through the communicator's transport."""

    def __init__(self, transport, partner: int | None, send_buf: np.ndarray, recv_buf: np.ndarray,
                 *, first: bool):
        self.transport = transport
        self.partner = partner
        self.send_buf = send_buf
        self.recv_buf = recv_buf
        self.first = first
        self.zero_copy = hasattr(transport, "irecv_view")

    def _send(self, n: int) -> None:  # n: float32 elements, as are all counts here
        req = self.transport.isend(self.send_buf[:n], self.partner, _TAG)
        self.transport.wait_all([req], time.monotonic() + 60, "calibration send")

    def _recv(self, n: int, reduce: bool) -> None:
        t = self.transport
        deadline = time.monotonic() + 60
        if reduce and self.zero_copy:
            req = t.irecv_view(self.recv_buf[n:2 * n], self.partner, _TAG)
            t.wait_all([req], deadline, "calibration receive")
            kernels.reduce_into(self.recv_buf[:n], t.view(req), "sum")
            t.release(req)
            return
        scratch = self.recv_buf[n:2 * n] if reduce else self.recv_buf[:n]
        req = t.irecv(scratch, self.partner, _TAG)
        t.wait_all([req], deadline, "calibration receive")
        if reduce:
            kernels.reduce_into(self.recv_buf[:n], scratch, "sum")

    def round_trip(self, n: int, reduce: bool) -> None:
        if self.partner is None:
            return
        if self.first:
            self._send(n)
            self._recv(n, reduce)
        else:
            self._recv(n, reduce)
            self._send(n)


def _partner(rank: int, size: int, topology, *, across: bool) -> int | None:
    """Pairs (0,1), (2,3), ... within nodes, or rank i with its counterpart on the next node."""
    if across:
        nodes = topology.nodes
        node = topology.node_of[rank]
        mine = nodes[node].index(rank)
        other = node + 1 if node % 2 == 0 else node - 1
        if other < len(nodes) and mine < len(nodes[other]) and len(nodes) >= 2:
            return nodes[other][mine]
        return None
    peers = topology.peers(rank)
    index = peers.index(rank)
    mate = index + 1 if index % 2 == 0 else index - 1
    return peers[mate] if mate < len(peers) else None


def _link(mpi_comm, comm, sizes, *, across: bool, progress) -> tuple[LinkModel, float, dict] | None:
    """Fit one link class; None when no pair of ranks is of that class."""
    transport = comm._transport
    partner = _partner(comm.rank, comm.size, comm.topology, across=across)
    if not any(mpi_comm.allgather(partner is not None)):
        return None
    top = max(sizes) // 4
    shared = getattr(transport, "work_buffer", None)  # zero-copy sends read from it
    send = shared(top, np.float32, deadline=time.monotonic() + 60) if shared else None
    send = np.empty(top, np.float32) if send is None else send
    send[:] = 1
    recv = np.zeros(2 * top, np.float32)
    pingpong = _PingPong(transport, partner, send, recv, first=partner is not None and comm.rank < partner)
    copy, reduce = [], []
    for n in sizes:
        progress(f"{'inter' if across else 'intra'}-node ping-pong {harness.format_size(n)}")
        copy.append(_timed(mpi_comm, lambda: pingpong.round_trip(n // 4, False)) / 2)
        reduce.append(_timed(mpi_comm, lambda: pingpong.round_trip(n // 4, True)) / 2)
    zero_copy = pingpong.zero_copy and not across
    alpha, beta = fit_alpha_beta(sizes, copy)
    _, slope = fit_alpha_beta(sizes, reduce)
    gamma = slope if zero_copy else max(slope - beta, slope / 10)
    measured = {"sizes": list(sizes), "copy_s": copy, "reduce_s": reduce}
    return LinkModel(alpha, beta, zero_copy), gamma, measured


def calibrate(mpi_comm, comm, *, quick: bool = False,
              progress: Callable[[str], None] = lambda what: None) -> Calibration:
    """Measure and fit on every rank of `comm` (a collectives Communicator over mpi_comm)."""
    from mpi4py import MPI

    import collectives

    sizes = PINGPONG_SIZES[::2] + PINGPONG_SIZES[-1:] if quick else PINGPONG_SIZES
    intra = _link(mpi_comm, comm, sizes, across=False, progress=progress)
    inter = _link(mpi_comm, comm, sizes, across=True, progress=progress)
    if intra is None and inter is None:
        raise ValueError(f"calibration needs at least 2 ranks, got {comm.size}")
    intra = intra or inter
    inter = inter or (LinkModel(intra[0].alpha, intra[0].beta), intra[1], intra[2])

    native = []
    for n in (NATIVE_SIZES[::2] if quick else NATIVE_SIZES):
        progress(f"native all-reduce {harness.format_size(n)}")
        x = np.ones(n // 4, np.float32)
        out = np.empty_like(x)
        native.append((n, _timed(mpi_comm, lambda: comm.allreduce(x, algorithm="native", out=out))))

    progress("per-call cost")
    x, out = np.ones(2, np.float32), np.empty(2, np.float32)
    raw = _timed(mpi_comm, lambda: mpi_comm.Allreduce(x, out))
    solo = collectives.init(mpi_comm=MPI.COMM_SELF)
    solo_plan = _timed(MPI.COMM_SELF, lambda: solo.allreduce(x, algorithm="ring", out=out))
    solo_native = _timed(MPI.COMM_SELF, lambda: solo.allreduce(x, algorithm="native", out=out))
    call_overhead = max(native[0][1] - raw + solo_plan - solo_native, 0.0)
    # Every rank copying and reducing at once: what ranks sharing cores get in a real call.
    progress("local copy and reduce, all ranks at once")
    big = np.ones(32 << 20, np.float32)  # 128 MiB: well past the L3 (32 MiB here): from memory
    dst = np.empty_like(big)
    copy_beta = _timed(mpi_comm, lambda: kernels.copy_into(dst, big)) / big.nbytes
    reduce_local = _timed(mpi_comm, lambda: kernels.reduce_into(dst, big, "sum")) / big.nbytes
    link = intra[0]
    if link.zero_copy:  # the receiver's compute copies from the peer: no faster than locally
        link = LinkModel(link.alpha, max(link.beta, copy_beta), zero_copy=True)
    return Calibration(
        size=comm.size, intra=link, inter=inter[0], gamma=max(intra[1], reduce_local),
        call_overhead=call_overhead, copy_beta=copy_beta, native=tuple(native),
        measured={"intra": intra[2], "inter": inter[2], "raw_mpi_8B_s": raw,
                  "reduce_pingpong_gamma": intra[1], "reduce_local_all_ranks_gamma": reduce_local,
                  "solo_plan_call_s": solo_plan, "solo_native_call_s": solo_native,
                  "transport": comm._transport.name})


def run(mpi_comm, *, quick: bool = False, out=None) -> Calibration:
    """Calibrate, write the tuning file (rank 0) and print what was fitted."""
    import sys

    import collectives

    out = out or sys.stdout
    comm = collectives.init(mpi_comm=mpi_comm)
    leader = mpi_comm.rank == 0
    env = harness.environment(mpi_comm)

    def progress(what: str) -> None:
        if leader:
            sys.stderr.write(f"calibrating: {what}\n")
            sys.stderr.flush()

    calibration = calibrate(mpi_comm, comm, quick=quick, progress=progress)
    if leader:
        path = write_calibration(calibration, transport=comm._transport.name, host=env["hostname"],
                                 date=env["date"])
        out.write(describe(calibration) + f"\n# written to {path}\n")
        out.flush()
    return calibration


def describe(calibration: Calibration) -> str:
    """The fitted constants in words."""
    def link(model: LinkModel) -> str:
        kind = ", zero-copy" if model.zero_copy else ""
        return f"alpha {model.alpha * 1e6:.1f} us, {1 / model.beta / 1e9 if model.beta else float('inf'):.2f} GB/s{kind}"

    return "\n".join([
        f"# calibration at np {calibration.size}",
        f"# intra-node link: {link(calibration.intra)}",
        f"# inter-node link: {link(calibration.inter)}",
        f"# reduction: {1 / calibration.gamma / 1e9:.2f} GB/s (gamma {calibration.gamma:.3e} s/B)",
        f"# per call: {calibration.call_overhead * 1e6:.1f} us; copies in/out of the work buffer: {1 / calibration.copy_beta / 1e9:.2f} GB/s",
        "# native all-reduce: " + ", ".join(f"{harness.format_size(n)} {t * 1e6:.0f} us"
                                            for n, t in calibration.native[::3]),
    ])
