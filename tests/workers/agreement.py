"""Ranks that disagree get MismatchError (or NonFiniteError) on every rank, then carry on.

Usage: mpiexec -n P python -m tests.workers.agreement ALG[,ALG...]   (P >= 2)
For each algorithm, each case makes one rank call differently from the others; every rank
must raise the expected error with the expected text, and the next collective must give
the reference result on every rank.
"""
from __future__ import annotations

import sys

import numpy as np

import collectives
from tests.workers.common import Tally, digest, rank_data, reference

COUNT = 1000


def _others(p: int, verb_one: str, verb_many: str) -> str:
    """How the message names ranks 0..p-2: 'rank 0 has' or 'ranks 0-1 have'."""
    return f"rank 0 {verb_one}" if p == 2 else f"ranks 0-{p - 2} {verb_many}"


def cases(p: int, algorithm: str):
    """(name, per-rank call kwargs, expected error per rank, expected text) for each case."""
    last = p - 1

    def x(dtype=np.float32, count=COUNT, rank=0):
        return rank_data(count, dtype, rank)

    yield ("count", lambda r: dict(x=x(count=COUNT + (r == last), rank=r)),
           lambda r: collectives.MismatchError,
           f"rank {last} has shape ({COUNT + 1},), {_others(p, 'has', 'have')} ({COUNT},)")
    yield ("dtype", lambda r: dict(x=x(np.float64 if r == last else np.float32, rank=r)),
           lambda r: collectives.MismatchError,
           f"rank {last} has dtype float64, {_others(p, 'has', 'have')} float32")
    yield ("shape", lambda r: dict(x=x(rank=r).reshape((10, 100) if r == last else (100, 10))),
           lambda r: collectives.MismatchError,
           f"rank {last} has shape (10, 100), {_others(p, 'has', 'have')} (100, 10)")
    yield ("op", lambda r: dict(x=x(rank=r), op="max" if r == last else "sum"),
           lambda r: collectives.MismatchError,
           f"rank {last} has op max, {_others(p, 'has', 'have')} sum")
    other = "native" if algorithm != "native" else "ring"
    if algorithm != "auto":  # auto resolves per size; a named algorithm must agree with it
        yield ("algorithm", lambda r: dict(x=x(rank=r), algorithm=other if r == last else algorithm),
               lambda r: collectives.MismatchError,
               f"rank {last} has algorithm {other}, {_others(p, 'has', 'have')} {algorithm}")
    yield ("check_finite flag", lambda r: dict(x=x(rank=r), check_finite=r == last),
           lambda r: collectives.MismatchError,
           f"rank {last} has check_finite True, {_others(p, 'has', 'have')} False")
    yield ("rejected input", lambda r: dict(x=x(np.complex64 if r == last else np.float32, rank=r)),
           lambda r: TypeError if r == last else collectives.MismatchError,
           f"rank {last} rejected its arguments")
    yield ("compression", lambda r: dict(x=x(rank=r), compression="bf16" if r == last else None),
           lambda r: collectives.MismatchError,
           f"rank {last} has compression bf16, {_others(p, 'has', 'have')} None")
    yield ("non-finite", lambda r: dict(x=np.where(np.arange(COUNT) == 7, np.nan if r == last else 0,
                                                   x(rank=r)).astype(np.float32), check_finite=True),
           lambda r: collectives.NonFiniteError,
           f"rank {last} has NaN or Inf in the input")
    yield ("fused list", lambda r: dict(many=[x(rank=r), x(count=5 + (r == last), rank=r)]),
           lambda r: collectives.MismatchError,
           f"rank {last} has shape [({COUNT},), (6,)], {_others(p, 'has', 'have')} [({COUNT},), (5,)]")
    yield ("fusion_bytes", lambda r: dict(many=[x(rank=r)], fusion_bytes=4096 if r == last else 8192),
           lambda r: collectives.MismatchError,
           f"rank {last} has fusion_bytes 4096, {_others(p, 'has', 'have')} 8192")
    yield ("async", lambda r: dict(x=x(count=COUNT - (r == last), rank=r), asynchronous=True),
           lambda r: collectives.MismatchError,
           f"rank {last} has shape ({COUNT - 1},), {_others(p, 'has', 'have')} ({COUNT},)")


def call(comm, kwargs: dict):
    """allreduce, allreduce_many (`many=`) or allreduce_async (`asynchronous=True`) + wait."""
    if "many" in kwargs:
        return comm.allreduce_many(kwargs.pop("many"), op="sum", **kwargs)
    x = kwargs.pop("x")
    if kwargs.pop("asynchronous", False):
        return comm.allreduce_async(x, **kwargs).wait()
    return comm.allreduce(x, **kwargs)


def main() -> None:
    algorithms = sys.argv[1].split(",")
    comm = collectives.init()
    p, rank = comm.size, comm.rank
    tally = Tally(rank)
    for algorithm in algorithms:
        for name, kwargs_of, error_of, text in cases(p, algorithm):
            case = f"{algorithm} {name}"
            kwargs = {"algorithm": algorithm, **kwargs_of(rank)}
            expected = error_of(rank)
            try:
                call(comm, kwargs)
                tally.check(False, f"{case}: no error, expected {expected.__name__}")
            except Exception as error:  # noqa: BLE001 - the type is what is checked
                tally.check(type(error) is expected,
                            f"{case}: got {type(error).__name__}: {error}, expected {expected.__name__}")
                if expected is not TypeError:
                    tally.check(text in str(error), f"{case}: {text!r} not in {str(error)!r}")
            # The communicator is still usable: the next collective is right on every rank.
            for dtype in (np.float32, np.int64):
                y = comm.allreduce(rank_data(COUNT, dtype, rank), algorithm=algorithm)
                tally.check(np.array_equal(y, reference(COUNT, dtype, p, "sum")),
                            f"{case}: the next {dtype.__name__} all-reduce is wrong")
                digests = comm._transport.allgather_object(digest(y))
                tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits afterwards")
    tally.finish()


if __name__ == "__main__":
    main()
