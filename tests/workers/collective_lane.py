"""The small-call lane of the collectives besides all-reduce (calls.small.CallRoute): a
repeated sync call gives the general path's bits, and nothing the first call's checks
refused or would refuse slips through the route.

Usage: mpiexec -n P python -m tests.workers.collective_lane
Checks, with the agreement check on and off: each collective with `auto`, `native` and a
plan, out None / separate / in place, called twice (the second call takes the route),
against the async twin (the general path) bit for bit and the same bits on every rank;
routes made; x not kept between calls; arguments whose value hashes alike but whose
type differs (root True after root 1); a refused first call refused again; an out that
overlaps x after a route with a separate out; a read-only x in place after a writable one;
an out whose elements share memory after a route;
shapes that differ between ranks after the routes are cached; comm.stats() counting the
lane's calls.
"""
from __future__ import annotations

import threading

import numpy as np

import collectives
from tests.workers.common import Tally, check_shape_mismatch, digest, everyone, rank_data

SHAPES = ((), (1,), (7,), (3, 5), (40000,))


def calls(comm, x, algorithm):
    """(name, sync call, async call) of each collective on x, with out given by `out(y)`."""
    p, root = comm.size, comm.size - 1
    rows = np.stack([x.ravel()] * p) + comm.rank  # alltoall's (size, ...) input
    return (
        ("reduce_scatter", x, lambda out, sync=True: (
            comm.reduce_scatter if sync else comm.reduce_scatter_async)(
                x, op="sum", algorithm=algorithm, out=out)),
        ("allgather", x, lambda out, sync=True: (
            comm.allgather if sync else comm.allgather_async)(x, algorithm=algorithm, out=out)),
        ("broadcast", x, lambda out, sync=True: (
            comm.broadcast if sync else comm.broadcast_async)(
                x, root=root, algorithm=algorithm, out=out)),
        ("reduce", x, lambda out, sync=True: (comm.reduce if sync else comm.reduce_async)(
            x, root=root, op="max", algorithm=algorithm, out=out)),
        ("alltoall", rows, lambda out, sync=True: (
            comm.alltoall if sync else comm.alltoall_async)(rows, algorithm=algorithm, out=out)),
    )


def result_like(comm, name: str, x):
    """A separate out for `name` of x (None where this rank gets no result)."""
    if name == "reduce_scatter":
        return np.empty(len(np.array_split(np.empty(x.size), comm.size)[comm.rank]), x.dtype)
    if name == "allgather":
        return np.empty((comm.size, *x.shape), x.dtype)
    return np.empty_like(x)


def values(comm, tally: Tally, check: bool) -> None:
    """Each collective twice per case (the second through its route) against its async
    twin on the general path: the same bits, on every rank."""
    for dtype in (np.float32, np.int64, np.float16):
        for shape in SHAPES:
            x0 = rank_data(int(np.prod(shape)), np.dtype(dtype), comm.rank).reshape(shape)
            for algorithm in ("auto", "native", "ring"):
                for name, x, call in calls(comm, x0, algorithm):
                    if algorithm == "ring" and name in ("broadcast", "alltoall"):
                        continue  # not their plans (tree, pairwise: under auto)
                    for mode in ("new", "out", "inplace"):
                        if mode == "inplace" and name not in ("broadcast", "alltoall"):
                            continue
                        label = f"check={check} {name} {np.dtype(dtype)} {shape} {algorithm} {mode}"
                        kept = x.copy()
                        want = call(None, sync=False).wait()
                        for turn in range(2):
                            if mode == "inplace":
                                x[...] = kept
                                out = x
                            else:
                                out = None if mode == "new" else result_like(comm, name, x)
                            got = call(out)
                            if out is not None and got is not None:
                                tally.check(got is out, f"{label}: the result is not out")
                            if want is None or got is None:
                                tally.check(want is None and got is None,
                                            f"{label} turn {turn}: {got} against {want}")
                            else:
                                tally.check(got.shape == want.shape and got.dtype == want.dtype
                                            and digest(got) == digest(want),
                                            f"{label} turn {turn}: {got.ravel()[:4]} against "
                                            f"{want.ravel()[:4]}")
                            if name in ("allgather", "broadcast"):  # (the same result everywhere)
                                tally.check(len(set(everyone(digest(got)))) == 1,
                                            f"{label} turn {turn}: bits differ across ranks")
                            if mode != "inplace":
                                tally.check(np.array_equal(x, kept), f"{label}: x was written")
                        x[...] = kept
    tally.check(all(route is None or route.call.x is None
                    for route in comm._lane._calls.values()),
                "a route kept the caller's x")


def argument_types(comm, tally: Tally) -> None:
    """root=True after root=1: the same key value, another call (refused by name)."""
    x = np.ones(3)
    if comm.size < 2:
        return
    comm.broadcast(x, root=1)
    for root in (True, 1.0):
        try:
            comm.broadcast(x, root=root)
            tally.check(False, f"root={root!r} after root=1 went through")
        except ValueError as error:
            tally.check("root must be a rank" in str(error), f"root={root!r}: {error}")
    y = comm.broadcast(x * comm.rank, root=np.int64(1))
    tally.check(bool((y == 1).all()), f"root=np.int64(1): {y}")
    for _ in range(2):  # a refused call is refused again, not laned
        try:
            comm.reduce(x, root=comm.size)
            tally.check(False, "a root out of range went through")
        except ValueError as error:
            tally.check("root must be a rank" in str(error), f"root out of range: {error}")


def overlapping_out(comm, tally: Tally) -> None:
    """A route made with a separate out, then an out that overlaps x: refused as on the
    general path (alltoall and broadcast check overlap), the route untouched."""
    p = comm.size
    base = np.zeros(2 * p * 3)
    x = base[: p * 3].reshape(p, 3)
    comm.alltoall(x, out=np.empty((p, 3)))
    try:
        comm.alltoall(x, out=base[1: 1 + p * 3].reshape(p, 3))
        tally.check(False, "an out overlapping x went through")
    except ValueError as error:
        tally.check("overlaps x" in str(error), f"overlap: {error}")
    got = comm.alltoall(np.full((p, 3), comm.rank, np.float64), out=np.empty((p, 3)))
    tally.check(np.array_equal(got[:, 0], np.arange(p, dtype=np.float64)), f"after: {got}")


def read_only_in_place(comm, tally: Tally) -> None:
    """A route made in place, then a read-only x in place: refused as on the general path
    (MPI would have failed to receive into it mid-collective)."""
    x = np.ones(5)
    comm.broadcast(x, root=0, out=x)
    x.flags.writeable = False
    try:
        comm.broadcast(x, root=0, out=x)
        tally.check(False, "a read-only x in place went through")
    except ValueError as error:
        tally.check("read-only" in str(error), f"read-only in place: {error}")
    y = comm.broadcast(np.full(5, comm.rank, np.float64), root=0, out=np.empty(5))
    tally.check(bool((y == 0).all()), f"after: {y}")


def out_over_itself(comm, tally: Tally) -> None:
    """Routes made in place and with a separate out, then a writable out whose elements
    share memory (stride 0): refused as on the general path (found by the ninth review:
    every element would have held the last one's result)."""
    for separate in (False, True):
        x = np.arange(4.0)
        comm.broadcast(x, root=0, out=np.empty(4) if separate else x)
        shared = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(4,), strides=(0,))
        try:
            comm.broadcast(x if separate else shared, root=0, out=shared)
            tally.check(False, f"a stride-0 out went through (separate out: {separate})")
        except ValueError as error:
            tally.check("elements that may share memory" in str(error), f"stride-0 out: {error}")
    y = comm.broadcast(np.full(5, comm.rank, np.float64), root=0, out=np.empty(5))
    tally.check(bool((y == 0).all()), f"after: {y}")


def statistics_and_threads(comm, tally: Tally) -> None:
    comm.reset_stats()
    x = np.ones(1000, np.float32)
    for _ in range(3):
        comm.allgather(x, algorithm="ring")
    taken = [route for route in comm._lane._calls.values()
             if route is not None and route.call.collective == "allgather"]
    tally.check(bool(taken), "no allgather took the lane")
    calls_made = comm.stats().get("allgather:ring")
    tally.check(comm.size == 1 or (calls_made is not None and calls_made.calls == 3),
                f"stats counted {calls_made}")
    results = []
    worker = threading.Thread(
        target=lambda: results.extend(comm.allgather(x, algorithm="ring") for _ in range(2)),
        name="collective-lane-worker")
    worker.start()
    worker.join()
    tally.check(len(results) == 2 and all((r == 1).all() for r in results), "from a thread")


def main() -> None:
    tally = None
    for check in (True, False):
        comm = collectives.init(check=check, timeout=30)
        tally = tally or Tally(comm.rank)
        values(comm, tally, check)
        argument_types(comm, tally)
        overlapping_out(comm, tally)
        read_only_in_place(comm, tally)
        out_over_itself(comm, tally)
        if check:
            check_shape_mismatch(comm, tally, comm.allgather,
                                 np.ones((comm.size, 4), np.float32))
        statistics_and_threads(comm, tally)
        comm.close()
    tally.finish()


if __name__ == "__main__":
    main()
