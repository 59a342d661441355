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
from .compression import absmax, codec_for, scale_for
from .deterministic import encode, fold_rows, padded_rows
from .execution import IDENTITY
from .options import Op
from .stats import plan_traffic

__all__ = ["reproducibly"]


def reproducibly(reducer, flat, op: Op, compression: str | None, algorithm: str,
                 tag: int, deadline: float, *, keep: str):
    """The deterministic reduction of every rank's `flat`: all of it (`keep="all"`), this
    rank's block as np.array_split cuts it ("block"), or None where nothing is kept
    ("none": a reduce off root)."""
    p, me = reducer.size, reducer.rank
    xp = kernels.array_module(flat)
    if xp is not np and algorithm in ("native", "auto"):
        algorithm = "ring"  # MPI's own collectives move host arrays only
    rows, bounds = padded_rows(flat, p, xp)
    codec = codec_for(compression, flat.dtype)
    scale = 1.0
    if codec is not None:
        scale = scale_for(codec, reducer.agree_max(absmax(flat), deadline), p, op)
        encoded = xp.empty(rows.shape, codec.dtype)
        encode(codec, rows.reshape(-1), encoded.reshape(-1), scale, op, p)
        rows = encoded
    theirs = _run(reducer, "alltoall", "pairwise" if algorithm != "native" else "native", rows,
                  tag, deadline)
    folded = xp.empty(rows.shape[1], rows.dtype)
    fold_rows(theirs, Op.SUM if codec is not None and op is Op.AVG else op, folded)
    if keep == "block":
        lo, hi = bounds[me]
        return _decoded(folded[: hi - lo], flat.dtype, scale, codec is not None)
    gathered = xp.empty(rows.shape, rows.dtype)
    gathered[me] = folded
    gathered = _run(reducer, "allgather", algorithm, gathered, tag, deadline)
    if keep == "none":
        return None
    whole = xp.concatenate([gathered[r, : hi - lo] for r, (lo, hi) in enumerate(bounds)])
    return _decoded(whole, flat.dtype, scale, codec is not None)


def _decoded(values, dtype, scale: float, compressed: bool):
    """The result in the input's dtype (unscaled, when it travelled compressed)."""
    if not compressed:
        return values
    out = kernels.array_module(values).empty(values.size, dtype)
    kernels.scale_into(out, values, 1.0 / scale)
    return out


def _run(reducer, collective: str, algorithm: str, rows, tag: int, deadline: float):
    """Rows after an alltoall (a new (p, m) array) or an all-gather (`rows` itself, this
    rank's row already in place), by MPI's own or by a plan of `algorithm`."""
    flat = rows.reshape(-1)
    if algorithm == "auto":
        algorithm = reducer.tuner.choose(flat.nbytes, collective) if flat.nbytes else "native"
    if algorithm not in ("native", *PLANNERS[collective]):
        algorithm = "ring" if collective == "allgather" else "pairwise"
    if collective == "alltoall":
        out = kernels.array_module(rows).empty_like(rows)
        if algorithm == "native":
            reducer.host.native_alltoall(flat, out.reshape(-1), deadline)
        else:
            _plan(reducer, collective, algorithm, out.reshape(-1), tag, deadline, src=flat)
        return out
    if algorithm == "native":
        reducer.host.native_allgather(rows[reducer.rank].copy(), flat, deadline)
    else:
        _plan(reducer, collective, algorithm, flat, tag, deadline)
    return rows


def _plan(reducer, collective: str, algorithm: str, work, tag: int, deadline: float, *,
          src=None) -> None:
    start = time.perf_counter()
    plan = plan_for(collective, algorithm, reducer.rank, reducer.size, work.size,
                    work.itemsize, reducer.topology)
    reducer.runner(work).run(plan, work, "sum", tag, deadline, IDENTITY, src=src)
    sent, received = plan_traffic(plan)
    reducer.stats.record(f"deterministic:{collective}:{algorithm}", time.perf_counter() - start,
                         sent * work.itemsize, received * work.itemsize)
