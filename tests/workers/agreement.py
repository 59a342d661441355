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
from tests.workers.common import Tally, digest, rank_data, reference, everyone

COUNT = 1000


def _said(p: int, field: str, odd: str, usual: str) -> str:
    """How the message names the last rank's `odd` value against everyone else's `usual`.

    The smaller group comes first; on 2 ranks both have one rank, so rank 0 comes first.
    """
    if p == 2:
        return f"rank 0 has {field} {usual}, rank 1 has {odd}"
    return f"rank {p - 1} has {field} {odd}, ranks 0-{p - 2} have {usual}"


def cases(p: int, algorithm: str):
    """(name, per-rank call kwargs, expected error per rank, expected text) for each case."""
    last = p - 1

    def x(dtype=np.float32, count=COUNT, rank=0):
        return rank_data(count, dtype, rank)

    yield ("count", lambda r: dict(x=x(count=COUNT + (r == last), rank=r)),
           lambda r: collectives.MismatchError,
           _said(p, "shape", f"({COUNT + 1},)", f"({COUNT},)"))
    yield ("dtype", lambda r: dict(x=x(np.float64 if r == last else np.float32, rank=r)),
           lambda r: collectives.MismatchError,
           _said(p, "dtype", "float64", "float32"))
    yield ("shape", lambda r: dict(x=x(rank=r).reshape((10, 100) if r == last else (100, 10))),
           lambda r: collectives.MismatchError,
           _said(p, "shape", "(10, 100)", "(100, 10)"))
    yield ("op", lambda r: dict(x=x(rank=r), op="max" if r == last else "sum"),
           lambda r: collectives.MismatchError,
           _said(p, "op", "max", "sum"))
    other = "native" if algorithm != "native" else "ring"
    if algorithm != "auto":  # auto resolves per size; a named algorithm must agree with it
        yield ("algorithm", lambda r: dict(x=x(rank=r), algorithm=other if r == last else algorithm),
               lambda r: collectives.MismatchError,
               _said(p, "algorithm", other, algorithm))
    yield ("check_finite flag", lambda r: dict(x=x(rank=r), check_finite=r == last),
           lambda r: collectives.MismatchError,
           _said(p, "check_finite", "True", "False"))
    yield ("rejected input", lambda r: dict(x=x(np.complex64 if r == last else np.float32, rank=r)),
           lambda r: TypeError if r == last else collectives.MismatchError,
           f"rank {last} rejected its arguments")
    yield ("compression", lambda r: dict(x=x(rank=r), compression="bf16" if r == last else None),
           lambda r: collectives.MismatchError,
           _said(p, "compression", "bf16", "None"))
    yield ("non-finite", lambda r: dict(x=np.where(np.arange(COUNT) == 7, np.nan if r == last else 0,
                                                   x(rank=r)).astype(np.float32), check_finite=True),
           lambda r: collectives.NonFiniteError,
           f"rank {last} has NaN or Inf in the input")
    yield ("fused list", lambda r: dict(many=[x(rank=r), x(count=5 + (r == last), rank=r)]),
           lambda r: collectives.MismatchError,
           _said(p, "shape", f"[({COUNT},), (6,)]", f"[({COUNT},), (5,)]"))
    yield ("fusion_bytes", lambda r: dict(many=[x(rank=r)], fusion_bytes=4096 if r == last else 8192),
           lambda r: collectives.MismatchError,
           _said(p, "fusion_bytes", "4096", "8192"))
    yield ("async", lambda r: dict(x=x(count=COUNT - (r == last), rank=r), asynchronous=True),
           lambda r: collectives.MismatchError,
           _said(p, "shape", f"({COUNT - 1},)", f"({COUNT},)"))


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
            # A riding call first: its data fills the records' rows past the texts' length
            # (the transport reuses them), which a MismatchError's text once carried along.
            comm.allreduce(np.full(4096 // (p - 1) // 4, 1.5, np.float32), algorithm="auto")
            try:
                call(comm, kwargs)
                tally.check(False, f"{case}: no error, expected {expected.__name__}")
            except Exception as error:  # noqa: BLE001 - the type is what is checked
                tally.check(type(error) is expected,
                            f"{case}: got {type(error).__name__}: {error}, expected {expected.__name__}")
                if expected is not TypeError:
                    tally.check(text in str(error), f"{case}: {text!r} not in {str(error)!r}")
                    tally.check("\0" not in str(error) and "thread" not in str(error),
                                f"{case}: stale record bytes in {str(error)!r}")
            # The communicator is still usable: the next collective is right on every rank.
            for dtype in (np.float32, np.int64):
                y = comm.allreduce(rank_data(COUNT, dtype, rank), algorithm=algorithm)
                tally.check(np.array_equal(y, reference(COUNT, dtype, p, "sum")),
                            f"{case}: the next {dtype.__name__} all-reduce is wrong")
                digests = everyone(digest(y))
                tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits afterwards")
    tally.finish()


if __name__ == "__main__":
    main()
