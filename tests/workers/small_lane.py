"""The small-call lane (collectives.calls.small): the calls it takes give the general path's
results, the ones it must not take go the general path, and its guarantees hold.

Usage: mpiexec -n P python -m tests.workers.small_lane
Checks, with the agreement check on and off: every dtype and op, 0-d to 2-D shapes, out
None / separate / in place, `auto`, `native` and a plan (`ring`), against the NumPy reference and with
identical bits on every rank; which route each call took; ranks on different paths in one
call (one passes a strided x); a shape mismatch raising MismatchError on every rank with
the lane's routes cached; a sync call behind an async one; calls from a named thread;
comm.stats() counting the lane's calls, and reset; arguments the general path refuses.
"""
from __future__ import annotations

import threading
import time

import numpy as np

import collectives
from collectives.calls.small import LANE_BYTES
from collectives.options import DTYPES
from tests.workers.common import (OPS, Tally, check_shape_mismatch, digest, everyone,
                                  rank_data, reference)


def route_of(comm, x, op, algorithm) -> str:
    """Which way the lane sends this call: "ride", "native", "plan", or "general"."""
    key = (x.shape, x.dtype, op, algorithm, None, threading.current_thread().name)
    route = comm._lane._routes.get(key)
    return "general" if route is None else route.kind


def expected_route(check: bool, algorithm: str, dtype, op: str, nbytes: int, p: int) -> str:
    if check and algorithm == "auto" and p > 1 and 0 < (p - 1) * nbytes <= 4096:
        return "ride"
    if nbytes == 0 or (op == "avg" and np.dtype(dtype).kind == "i"):
        return "general"
    if algorithm == "native":
        return "native" if nbytes <= LANE_BYTES else "general"
    return "plan" if algorithm == "ring" else "depends"  # auto: the tuner decides


def values(comm, tally: Tally, check: bool) -> None:
    p, rank = comm.size, comm.rank
    for dtype in DTYPES:
        for shape in [(), (0,), (1,), (3,), (2, 5), (1024 // dtype.itemsize,), (40000,)]:
            count = int(np.prod(shape))
            for op in OPS:
                want = reference(count, dtype, p, op).reshape(shape)
                for algorithm in ("auto", "native", "ring"):
                    for mode in ("new", "out", "inplace"):
                        x = rank_data(count, dtype, rank).reshape(shape)
                        kept = x.copy()
                        label = (f"check={check} {dtype} {shape} {op} {algorithm} {mode}")
                        if mode == "new":
                            y = comm.allreduce(x, op=op, algorithm=algorithm)
                        elif mode == "out":
                            out = np.full(shape, 99, dtype)
                            y = comm.allreduce(x, op=op, algorithm=algorithm, out=out)
                            tally.check(y is out, f"{label}: result is not out")
                        else:
                            y = comm.allreduce(x, op=op, algorithm=algorithm, out=x)
                            tally.check(y is x, f"{label}: result is not x")
                        tally.check(y.shape == shape and y.dtype == dtype,
                                    f"{label}: got {y.shape} {y.dtype}")
                        tally.check(np.array_equal(y.astype(np.float64), want.astype(np.float64)),
                                    f"{label}: {y.ravel()[:4]} != {want.ravel()[:4]}")
                        if mode != "inplace":
                            tally.check(np.array_equal(x, kept), f"{label}: x was written")
                        digests = everyone(digest(y))
                        tally.check(len(set(digests)) == 1, f"{label}: bits differ across ranks")
                        taken = route_of(comm, x, op, algorithm)
                        expect = expected_route(check, algorithm, dtype, op, x.nbytes, p)
                        tally.check(expect in (taken, "depends"),
                                    f"{label}: route {taken}, expected {expect}")


def mixed_paths(comm, tally: Tally) -> None:
    """Rank 0 passes a strided x (general path), the others a contiguous one (the lane)."""
    flat = rank_data(5, np.float32, comm.rank)
    if comm.rank == 0:
        spaced = np.zeros(10, np.float32)
        spaced[::2] = flat
        x = spaced[::2]
    else:
        x = flat
    for algorithm in ("auto", "native"):
        y = comm.allreduce(x, algorithm=algorithm)
        tally.check(np.array_equal(y, reference(5, np.float32, comm.size, "sum")),
                    f"mixed paths {algorithm}: {y}")


def behind_async(comm, tally: Tally) -> None:
    """A lane call issued behind a pending async one runs after it, right."""
    big = np.ones(1 << 18, np.float32)
    small = np.full(3, comm.rank, np.float32)
    for _ in range(5):
        handle = comm.allreduce_async(big)
        y = comm.allreduce(small)
        tally.check(handle.done(), "the sync call ran before the async one finished")
        tally.check(np.array_equal(handle.wait(), big * comm.size), "async result")
        tally.check(np.array_equal(y, np.full(3, sum(range(comm.size)), np.float32)), "sync")


def from_thread(comm, tally: Tally) -> None:
    results = []
    worker = threading.Thread(target=lambda: results.append(comm.allreduce(np.ones(2))),
                              name="lane-worker")
    worker.start()
    worker.join()
    tally.check(len(results) == 1 and np.array_equal(results[0], np.full(2, comm.size * 1.0)),
                f"from a named thread: {results}")


def stats(comm, tally: Tally, check: bool) -> None:
    x = np.ones(2, np.float32)
    comm.allreduce(x, algorithm="native")
    comm.reset_stats()
    for _ in range(7):
        comm.allreduce(x, algorithm="native")
    got = comm.stats()
    tally.check(comm.size == 1 or got["native"].calls == 7, f"check={check}: stats {got}")
    tally.check(list(got) == ["native"] or comm.size == 1, f"check={check}: labels {list(got)}")
    comm.reset_stats()
    y = np.ones(1020, np.float32)
    for _ in range(3):
        comm.allreduce(y, algorithm="ring")
    got = comm.stats()
    moved = 2 * (comm.size - 1) * y.nbytes // comm.size  # each way (p in 2, 3, 5 divides 1020)
    tally.check(comm.size == 1 or (got["ring"].calls == 3 and got["ring"].bytes_sent == 3 * moved
                                   and got["ring"].bytes_received == 3 * moved),
                f"check={check}: ring stats {got}")


def bad_arguments(comm, tally: Tally) -> None:
    """Arguments the general path refuses stay refused once the lane knows the call: values
    that hash like valid ones (1.0 like True), unhashable ones. Every rank raises (none
    hangs), and the next call works. NumPy's bool is a bool on both paths (the
    seventy-eighth review)."""
    x = np.ones(3, np.float32)
    comm.allreduce(x, deterministic=True)
    y = comm.allreduce(x, deterministic=np.True_)
    tally.check(np.array_equal(y, np.full(3, comm.size, np.float32)), f"np.True_: {y}")
    for label, kwargs in (("1.0", {"deterministic": 1.0}), ("op list", {"op": ["sum"]})):
        try:
            comm.allreduce(x, **kwargs)
            tally.check(False, f"{label}: accepted")
        except (TypeError, ValueError, collectives.MismatchError):
            pass
        y = comm.allreduce(x, deterministic=True)
        tally.check(np.array_equal(y, np.full(3, comm.size, np.float32)), f"after {label}")


class _HashRefused(str):
    """An op whose hash raises ValueError, not TypeError (the lane caught only the latter:
    the one rank passing it raised before the collective, its peers waited out the timeout)."""

    def __hash__(self):
        raise ValueError("this op has no hash")


def refused_on_one_rank(tally: Tally) -> None:
    """An argument that cannot hash on rank 0 only, once the lane knows the call: every rank
    raises at once (rank 0 its error, the others MismatchError), and the next call works."""
    with collectives.init(timeout=10.0) as comm:
        x = np.ones(3, np.float32)
        comm.allreduce(x, op="sum")
        start = time.monotonic()
        try:
            comm.allreduce(x, op=_HashRefused("sum") if comm.rank == 0 else "sum")
            tally.check(False, "an op that cannot hash: accepted")
        except (ValueError, collectives.MismatchError):
            pass
        tally.check(time.monotonic() - start < 5.0, "an op that cannot hash: a peer waited")
        y = comm.allreduce(x, op="sum")
        tally.check(np.array_equal(y, np.full(3, comm.size, np.float32)), "after it")
        if comm.size == 1:  # (alone, the call would be made: 1 TiB)
            return
        # A 1 TiB view of one value on one rank: the lane planned it (seconds) before it saw
        # the view is not contiguous, the peers waiting on its record (the 65th review).
        huge = np.broadcast_to(np.float32(1), (1 << 38,))
        start = time.monotonic()
        try:
            comm.allreduce(huge if comm.rank == 0 else x)  # (auto: priced for 1 TiB)
            tally.check(False, "a 1 TiB view on one rank: accepted")
        except (collectives.MismatchError, MemoryError):  # (its result: 1 TiB)
            pass
        tally.check(time.monotonic() - start < 5.0, "a 1 TiB view on one rank: slow")


def main() -> None:
    with collectives.init(check=True) as on, collectives.init(check=False) as off:
        tally = Tally(on.rank)
        for comm, check in ((on, True), (off, False)):
            values(comm, tally, check)
            mixed_paths(comm, tally)
            behind_async(comm, tally)
            from_thread(comm, tally)
            stats(comm, tally, check)
        check_shape_mismatch(on, tally, on.allreduce, np.full(4, on.size, np.float32))
        bad_arguments(on, tally)
    refused_on_one_rank(tally)
    tally.finish()


if __name__ == "__main__":
    main()
