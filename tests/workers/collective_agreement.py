"""The collectives beside all-reduce keep its guarantees: ranks that disagree (root, shape,
op, algorithm) get MismatchError on every rank before data moves, bad input and a result
that cannot be allocated are refused by name, and the next collective works.

Usage: mpiexec -n P python -m tests.workers.collective_agreement   (P >= 2)
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally, rank_data

COUNT = 100


def cases(p: int, rank: int):
    """(name, call, expected error on this rank, text) per case; the last rank differs."""
    last = rank == p - 1
    x = rank_data(COUNT, np.float32, rank)
    yield ("broadcast root", lambda c: c.broadcast(x, root=1 if last else 0),
           collectives.MismatchError, "has root")
    yield ("reduce root", lambda c: c.reduce(x, root=1 if last else 0),
           collectives.MismatchError, "has root")
    yield ("allgather shape", lambda c: c.allgather(x[: COUNT - last]),
           collectives.MismatchError, "has shape")
    yield ("reduce_scatter op", lambda c: c.reduce_scatter(x, op="max" if last else "sum"),
           collectives.MismatchError, "has op")
    yield ("alltoall algorithm", lambda c: c.alltoall(
        rank_data(2 * p, np.float32, rank).reshape(p, 2), algorithm="native" if last else "pairwise"),
        collectives.MismatchError, "has algorithm")
    yield ("broadcast vs reduce", lambda c: c.reduce(x) if last else c.broadcast(x),
           collectives.MismatchError, "collective")
    yield ("broadcast label", lambda c: c.broadcast(x, label="b" if last else "a"),
           collectives.MismatchError, "has label")
    # a label that is no str: a list raised its unhashable TypeError before the call was
    # refused, and the ranks fell out of step (the ninety-sixth review)
    yield ("broadcast label of a list", lambda c: c.broadcast_async(
        x, label=["a"] if last else "a").wait(),
        TypeError if last else collectives.MismatchError,
        "label must be a str or None, got list" if last else f"rank {p - 1} rejected its")
    # a control character is the signature's separator: the mismatch named another field
    # ("shape"), or none (the ninety-seventh review)
    yield ("broadcast label with a control character", lambda c: c.broadcast(
        x, label="a\x1fshape=(9,)" if last else "a"),
        ValueError if last else collectives.MismatchError,
        "label must be printable text" if last else f"rank {p - 1} rejected its")
    yield ("root out of range", lambda c: c.broadcast(x, root=p),
           ValueError, f"root must be a rank in [0, {p}), got {p}")
    yield ("alltoall rows", lambda c: c.alltoall(x),
           ValueError, f"alltoall needs x of shape (size, ...) = ({p}, ...)")
    yield ("unknown algorithm", lambda c: c.broadcast(x, algorithm="ring"),
           ValueError, "unknown algorithm for broadcast 'ring'")
    yield ("rejected on one rank", lambda c: c.allgather(x.astype(np.complex64) if last else x),
           TypeError if last else collectives.MismatchError,
           "unsupported dtype" if last else f"rank {p - 1} rejected its arguments")
    # a result one rank cannot allocate (a stride-0 view of 4 TiB): refused before the
    # agreement; it was raised in the data phase, leaving the communicator unusable
    huge = np.broadcast_to(np.float32(1), (1 << 40,))
    yield ("result too large on one rank", lambda c: c.allgather(huge if last else x),
           MemoryError if last else collectives.MismatchError,
           "Unable to allocate" if last else f"rank {p - 1} rejected its arguments")
    # past 2**63 bytes NumPy raises ValueError, not MemoryError: that rank ran a sequence
    # number ahead of the others for good
    vast = np.broadcast_to(np.float32(1), (1 << 60,))
    yield ("result past 2**63 bytes on one rank", lambda c: c.allgather(vast if last else x),
           ValueError if last else collectives.MismatchError,
           "array is too big" if last else f"rank {p - 1} rejected its arguments")


def main() -> None:
    comm = collectives.init(timeout=30)
    tally = Tally(comm.rank)
    for name, call, expected, text in cases(comm.size, comm.rank):
        try:
            call(comm)
            tally.check(False, f"{name}: no error, expected {expected.__name__}")
        except Exception as error:  # noqa: BLE001 - the type is what is checked (NumPy raises
            # a subclass of MemoryError)
            tally.check(isinstance(error, expected) and text in str(error),
                        f"{name}: got {type(error).__name__}: {error}")
        y = comm.allgather(np.full(3, comm.rank, np.int64))
        tally.check(np.array_equal(y[:, 0], np.arange(comm.size)), f"{name}: the next call")
    tally.finish()


if __name__ == "__main__":
    main()
