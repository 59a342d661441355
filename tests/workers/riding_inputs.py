"""Small `auto` calls whose data rides with the agreement records, with inputs ranks may
legitimately pass differently: an ndarray subclass (np.memmap) on one rank and a plain
array on the others, and a strided `out`. Every collective must give the NumPy reference,
the same on every rank.

Before the fix a memmap on one rank took another path than a plain array (which rode):
the digests matched, so a rank summed stale record bytes, or raised a raw ValueError
while its peer timed out; and a small allgather into a strided out returned out unwritten.

Usage: mpiexec -n P python -m tests.workers.riding_inputs DIR   (DIR: where memmaps live)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import collectives
from tests.workers.common import Tally, everyone, rank_data

COUNT = 6  # (p - 1) * 48 bytes <= 4 KiB: every call here rides at P <= 8
SAME_EVERYWHERE = ("allreduce", "allgather", "broadcast")


def memmapped(x: np.ndarray, path: Path) -> np.memmap:
    held = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape)
    held[...] = x
    return held


def calls(p: int, rank: int):
    """(name, call(comm, x, out), x, expected result on this rank or None)."""
    x = rank_data(COUNT, np.float64, rank)
    xs = [rank_data(COUNT, np.float64, r) for r in range(p)]
    total = np.sum(xs, axis=0)
    rows = rank_data(p * 2, np.float64, rank).reshape(p, 2)
    yield ("allreduce", lambda c, a, o: c.allreduce(a, out=o), x, total)
    yield ("reduce_scatter", lambda c, a, o: c.reduce_scatter(a, out=o), x,
           np.array_split(total, p)[rank])
    yield ("allgather", lambda c, a, o: c.allgather(a, out=o), x, np.stack(xs))
    yield ("broadcast", lambda c, a, o: c.broadcast(a, root=p - 1, out=o), x, xs[p - 1])
    yield ("reduce", lambda c, a, o: c.reduce(a, root=0, op="max", out=o if rank == 0 else None),
           x, np.max(xs, axis=0) if rank == 0 else None)
    yield ("alltoall", lambda c, a, o: c.alltoall(a, out=o), rows,
           np.stack([rank_data(p * 2, np.float64, r).reshape(p, 2)[rank] for r in range(p)]))


def strided_like(want: np.ndarray) -> np.ndarray:
    """A view shaped like want whose last axis steps over every other element."""
    wide = np.full((*want.shape[:-1], 2 * want.shape[-1]) if want.ndim else (2,), -1.0)
    return wide[..., ::2] if want.ndim else wide[:1].reshape(())


def main() -> None:
    comm = collectives.init(timeout=30)
    tally = Tally(comm.rank)
    p, rank, last = comm.size, comm.rank, comm.rank == comm.size - 1
    folder = Path(sys.argv[1])
    for name, call, x, want in calls(p, rank):
        subclass = memmapped(x, folder / f"{name}.{rank}") if last else x
        for layout in ("new", "strided"):
            out = None if layout == "new" or want is None else strided_like(want)
            case = f"{name} ({'memmap' if last else 'ndarray'} x, {layout} out)"
            try:
                y = call(comm, subclass, out)
            except Exception as error:  # noqa: BLE001 - reported, then the tally fails
                tally.check(False, f"{case}: {type(error).__name__}: {error}")
                continue
            if want is None:
                tally.check(y is None, f"{case}: off root got {type(y).__name__}")
                continue
            tally.check(out is None or y is out, f"{case}: out not returned")
            tally.check(np.array_equal(y, want), f"{case}: {y} != {want}")
            if name in SAME_EVERYWHERE:
                tally.check(len(set(everyone(y.tobytes()))) == 1, f"{case}: ranks differ")
    stats = comm.stats()
    tally.check(p == 1 or any(label.endswith("direct") for label in stats),
                f"nothing rode: {list(stats)}")
    tally.finish()


if __name__ == "__main__":
    main()
