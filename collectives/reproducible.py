"""`deterministic=True`: the reduction of collectives.deterministic, run across the ranks.

An all-to-all gives block j's owner every rank's block j; the owner folds them in rank
order; an all-gather spreads the folded blocks (all-reduce), or each rank keeps its own
(reduce-scatter), or root keeps them all (reduce). The all-to-all runs as pairwise exchange
(or MPI's own for `native`), the all-gather with the call's algorithm: so the bits never
depend on the algorithm, the node layout, the fusion buffers or sync vs async.

Example::

    result = reproducibly(reducer, flat, Op.SUM, None, "ring", tag, deadline, keep="all")
"""
from __future__ import annotations

import time

import numpy as np

import kernels

from .algorithms import PLANNERS, plan_for
from .compression import absmax, codec_for, scale_for, unscale_into
from .deterministic import encode, fold_rows
from .execution import IDENTITY
from .options import Op
from .stats import plan_traffic

__all__ = ["reproducibly"]


def reproducibly(reducer, flat, op: Op, compression: str | None, algorithm: str,
                 tag: int, deadline: float, *, keep: str, out=None):
    """The deterministic reduction of every rank's `flat`: all of it (`keep="all"`, in `out`
    when given, else a new array), this rank's block as np.array_split cuts it ("block", a
    view of a reused buffer: copy it before the next call), or None where nothing is kept
    ("none": a reduce off root). Buffers are the reducer's, reused from call to call."""
    p, me = reducer.size, reducer.rank
    xp = kernels.array_module(flat)
    if xp is not np and algorithm in ("native", "auto"):
        algorithm = "ring"  # MPI's own collectives move host arrays only
    codec = codec_for(compression, flat.dtype)
    scale = 1.0
    if codec is not None:
        scale = scale_for(codec, reducer.agree_max(absmax(flat), deadline), p, op,
                          flat.dtype)
    rows, bounds = _rows(reducer, flat, codec, scale, op)
    theirs = reducer.buffer("deterministic in", flat, rows.dtype, rows.size).reshape(rows.shape)
    _run(reducer, "alltoall", "pairwise" if algorithm != "native" else "native", rows, theirs,
         tag, deadline)
    gather_with = _concrete(reducer, "allgather", algorithm, rows.nbytes)
    if keep == "all" and out is None:
        out = xp.empty(flat.size, flat.dtype)
    # A plan may gather straight into out (its receives are cancelled on failure); MPI's
    # own all-gather cannot be cancelled, so it never writes memory the caller holds.
    direct = (keep == "all" and codec is None and gather_with != "native"
              and rows.size == out.size)
    gathered = out.reshape(rows.shape) if direct else reducer.buffer(
        "deterministic out", flat, rows.dtype, rows.size).reshape(rows.shape)
    folded = gathered[me]
    own = rows[me]  # read where it lies, unless the fold writes there (in place)
    if xp.may_share_memory(own, folded):
        kernels.copy_into(theirs[me], own)
        own = theirs[me]
    mine = [theirs[r] if r != me else own for r in range(p)]
    fold_rows(mine, Op.SUM if codec is not None and op is Op.AVG else op, folded)
    if keep == "block":
        lo, hi = bounds[me]
        return _decoded(folded[: hi - lo], flat.dtype, scale, codec is not None)
    _run(reducer, "allgather", gather_with, gathered, gathered, tag, deadline)
    if keep == "none":
        return None
    if direct:
        return out
    for r, (lo, hi) in enumerate(bounds):
        if codec is None:
            kernels.copy_into(out[lo:hi], gathered[r, : hi - lo])
        else:
            unscale_into(out[lo:hi], gathered[r, : hi - lo], scale)
    return out


def _rows(reducer, flat, codec, scale: float, op: Op):
    """(rows, bounds): what this rank sends, block r in row r (np.array_split's cut,
    zero-padded to the longest block), encoded when a codec travels; `flat` itself
    reshaped when the blocks are equal and travel raw."""
    p, n = reducer.size, flat.size
    length = -(-n // p) if n else 0
    bounds = [(lo, hi) for lo, hi in _split(n, p)]
    if codec is None and length * p == n:
        return flat.reshape(p, length), bounds
    dtype = flat.dtype if codec is None else codec.dtype
    rows = reducer.buffer("deterministic rows", flat, dtype, p * length).reshape(p, length)
    for r, (lo, hi) in enumerate(bounds):
        if codec is None:
            kernels.copy_into(rows[r, : hi - lo], flat[lo:hi])
        else:
            encode(codec, flat[lo:hi], rows[r, : hi - lo], scale, op, p)
        rows[r, hi - lo:] = 0
    return rows, bounds


def _split(n: int, p: int):
    base, longer = divmod(n, p)
    start = 0
    for r in range(p):
        stop = start + base + (r < longer)
        yield start, stop
        start = stop


def _decoded(values, dtype, scale: float, compressed: bool):
    """The result in the input's dtype (unscaled, when it travelled compressed)."""
    if not compressed:
        return values
    out = kernels.array_module(values).empty(values.size, dtype)
    unscale_into(out, values, scale)
    return out


def _run(reducer, collective: str, algorithm: str, rows, result, tag: int,
         deadline: float) -> None:
    """An all-to-all of `rows` into `result` (a plan leaves this rank's own row of result
    unwritten), or an all-gather in place (`rows` is `result`, this rank's row already in
    it), by MPI's own or by a plan of `algorithm`."""
    flat = rows.reshape(-1)
    algorithm = _concrete(reducer, collective, algorithm, flat.nbytes)
    if collective == "alltoall":
        if algorithm == "native":
            reducer.host.native_alltoall(flat, result.reshape(-1), deadline)
        else:
            _plan(reducer, collective, algorithm, result.reshape(-1), tag, deadline, src=flat,
                  copy_untouched=False)  # this rank's own row is read where it lies
    elif algorithm == "native":
        reducer.host.native_allgather(rows[reducer.rank].copy(), flat, deadline)
    else:
        _plan(reducer, collective, algorithm, flat, tag, deadline)


def _concrete(reducer, collective: str, algorithm: str, nbytes: int) -> str:
    """`algorithm` as `collective` runs it: auto's choice, or the collective's default plan
    for an all-reduce algorithm it has no plan of."""
    if algorithm == "auto":
        algorithm = reducer.tuner.choose(nbytes, collective) if nbytes else "native"
    if algorithm not in ("native", *PLANNERS[collective]):
        algorithm = "ring" if collective == "allgather" else "pairwise"
    return algorithm


def _plan(reducer, collective: str, algorithm: str, work, tag: int, deadline: float, *,
          src=None, copy_untouched: bool = True) -> None:
    start = time.perf_counter()
    plan = plan_for(collective, algorithm, reducer.rank, reducer.size, work.size,
                    work.itemsize, reducer.topology)
    reducer.runner(work).run(plan, work, "sum", tag, deadline, IDENTITY, src=src,
                             copy_untouched=copy_untouched)
    sent, received = plan_traffic(plan)
    reducer.stats.record(f"deterministic:{collective}:{algorithm}", time.perf_counter() - start,
                         sent * work.itemsize, received * work.itemsize)
