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

import bisect
import itertools
import time

import numpy as np

import kernels

from .algorithms import PLANNERS, plan_for
from .compression import absmax, absmaxes, codec_for, scales_for, unscale_into
from .deterministic import encode, fold_rows
from .execution import IDENTITY
from .options import Op
from .stats import plan_traffic

__all__ = ["reproducibly"]

# From this size on, a count p does not divide runs its tail of n % p elements apart: the
# padded copies it saves cost more than the tail's small all-gather.
TAIL_APART_BYTES = 256 * 1024


def reproducibly(reducer, flat, op: Op, compression: str | None, algorithm: str,
                 tag: int, deadline: float, *, keep: str, out=None, sizes=None):
    """The deterministic reduction of every rank's `flat`: all of it (`keep="all"`, in `out`
    when given, else a new array), this rank's block as np.array_split cuts it ("block", a
    view of a reused buffer: copy it before the next call), or None where nothing is kept
    ("none": a reduce off root). Buffers are the reducer's, reused from call to call.
    `sizes`: the lengths of the arrays packed one after another in flat (fusion); each
    has a compression scale of its own, so its bits do not depend on its neighbours."""
    p, me = reducer.size, reducer.rank
    xp = kernels.array_module(flat)
    if xp is not np and algorithm in ("native", "auto"):
        algorithm = "ring"  # MPI's own collectives move host arrays only
    codec = codec_for(compression, flat.dtype)
    if codec is None and keep != "block" and flat.size % p and flat.nbytes >= TAIL_APART_BYTES:
        return _bulk_and_tail(reducer, flat, op, algorithm, tag, deadline, keep, out)
    scales = None
    if codec is not None:
        scales = _Scaled(_scales(reducer, flat, codec, op, sizes or [flat.size], deadline),
                         flat, p)
    rows, bounds = _rows(reducer, flat, codec, scales, op)
    theirs = reducer.buffer("deterministic in", flat, rows.dtype, rows.size).reshape(rows.shape)
    wire = None if codec is None else codec.name
    _run(reducer, "alltoall", "pairwise" if algorithm != "native" else "native", rows, theirs,
         tag, deadline, wire)
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
        if codec is None:
            return folded[: hi - lo]
        block = xp.empty(hi - lo, flat.dtype)
        scales.apply(unscale_into, block, folded[: hi - lo], lo, hi)
        return block
    _run(reducer, "allgather", gather_with, gathered, gathered, tag, deadline, wire)
    if keep == "none":
        return None
    if direct:
        return out
    for r, (lo, hi) in enumerate(bounds):
        if codec is None:
            kernels.copy_into(out[lo:hi], gathered[r, : hi - lo])
        else:
            scales.apply(unscale_into, out[lo:hi], gathered[r, : hi - lo], lo, hi)
    return out


def _bulk_and_tail(reducer, flat, op: Op, algorithm: str, tag: int, deadline: float,
                   keep: str, out):
    """`reproducibly` for a count p does not divide: the first p * (n // p) elements as
    equal blocks, read and written where they lie, and the last n % p (< p) all-gathered
    and folded on every rank. The same bits (every element is folded in rank order
    alone), without copying the whole input into padded rows and the result out of them
    (each a pass over memory: 0.34x the default's speed at 2^24 + 1 floats, where 2^24
    ran at 0.89x; the 108th review)."""
    p = reducer.size
    bulk = flat.size - flat.size % p
    if keep == "all" and out is None:
        out = kernels.array_module(flat).empty(flat.size, flat.dtype)
    reproducibly(reducer, flat[:bulk], op, None, algorithm, tag, deadline, keep=keep,
                 out=None if out is None else out[:bulk])
    tails = reducer.buffer("deterministic tails", flat, flat.dtype, p * (flat.size - bulk))
    tails = tails.reshape(p, -1)
    kernels.copy_into(tails[reducer.rank], flat[bulk:])
    _run(reducer, "allgather", algorithm, tails, tails, tag, deadline, None)
    if out is None:
        return None
    fold_rows(tails, op, out[bulk:])
    return out


def _scales(reducer, flat, codec, op: Op, sizes, deadline: float):
    """[(start, stop, scale)] over flat: each array's agreed power-of-two scale (its max|x|
    agreed with every rank's in one all-reduce), neighbours of one scale in one run."""
    ends = np.cumsum(sizes)
    starts = ends - np.asarray(sizes)
    filled = starts < ends  # (an empty array has no scale: nothing of it travels)
    starts, ends = starts[filled], ends[filled]
    if not starts.size:
        return [(0, flat.size, 1.0)]
    if kernels.array_module(flat) is np and starts.size > 1 and flat.size < 4096 * starts.size:
        maxes = absmaxes(flat, starts)  # many small arrays (else absmax's one fast pass each)
    else:
        maxes = np.array([absmax(flat[a:b]) for a, b in zip(starts, ends)], np.float64)
    scales = scales_for(codec, reducer.agree_maxes(maxes, deadline), reducer.size, op,
                        flat.dtype)
    cuts = np.flatnonzero(scales[1:] != scales[:-1]) + 1
    firsts, lasts = np.r_[0, cuts], np.r_[cuts, scales.size] - 1
    return list(zip(starts[firsts].tolist(), ends[lasts].tolist(), scales[firsts].tolist()))


class _Scaled:
    """Runs of arrays of one scale over flat, and a per-element operation `(dst, src, scale)`
    (encode, unscale) applied with each element's own scale: run by run, or, where runs
    are many and short (many small arrays of a few distinct scales), once per distinct
    scale over the whole range, keeping each element's own result (the same bits: the
    operations are elementwise; a Python call per run costs a few us, milliseconds for
    1000 arrays)."""

    def __init__(self, runs: list[tuple[int, int, float]], flat, p: int):
        self.runs = runs
        starts, stops, scales = (np.array(column) for column in zip(*runs))
        self.starts = starts.tolist()
        self.distinct, which = np.unique(scales, return_inverse=True)
        self.ids = None
        # Estimated in us: a pass per distinct scale and block about 7, plus 2 per 4 KB
        # of flat, against a call per run of about 3 (float64 arrays of hundreds of
        # distinct scales ran 1.5-1.7x slower grouped: the 46th and 47th reviews)
        grouped_us = self.distinct.size * (7 * p + flat.nbytes / 2000)
        if kernels.array_module(flat) is np and len(runs) > 16 and grouped_us < 3 * len(runs):
            self.ids = np.repeat(which.astype(np.int16), stops - starts)

    def apply(self, operation, dst, src, lo: int, hi: int) -> None:
        """operation(dst, src, scale) for the elements [lo, hi) of flat (dst and src are
        theirs, from lo), each with its array's scale."""
        if self.ids is None:
            first = max(bisect.bisect_right(self.starts, lo) - 1, 0)
            for a, b, scale in itertools.islice(self.runs, first, None):
                if a >= hi:
                    return
                if b > lo:
                    a, b = max(a, lo) - lo, min(b, hi) - lo
                    operation(dst[a:b], src[a:b], scale)
            return
        ids, each = self.ids[lo:hi], np.empty_like(dst)
        for i, scale in enumerate(self.distinct.tolist()):
            mine = ids == i
            if mine.any():
                operation(each, src, scale)
                np.copyto(dst, each, where=mine)


def _rows(reducer, flat, codec, scales, op: Op):
    """(rows, bounds): what this rank sends, block r in row r (np.array_split's cut,
    zero-padded to the longest block), encoded with each array's scale when a codec
    travels; `flat` itself reshaped when the blocks are equal and travel raw."""
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
            scales.apply(lambda wire, values, scale: encode(codec, values, wire, scale, op, p),
                         rows[r, : hi - lo], flat[lo:hi], lo, hi)
        rows[r, hi - lo:] = 0
    return rows, bounds


def _split(n: int, p: int):
    base, longer = divmod(n, p)
    start = 0
    for r in range(p):
        stop = start + base + (r < longer)
        yield start, stop
        start = stop


def _run(reducer, collective: str, algorithm: str, rows, result, tag: int,
         deadline: float, wire: str | None) -> None:
    """An all-to-all of `rows` into `result` (a plan leaves this rank's own row of result
    unwritten), or an all-gather in place (`rows` is `result`, this rank's row already in
    it), by MPI's own or by a plan of `algorithm`; recorded in the stats, with the codec
    name `wire` when the rows are 16-bit codes."""
    flat = rows.reshape(-1)
    algorithm = _concrete(reducer, collective, algorithm, flat.nbytes)
    start = time.perf_counter()
    if algorithm == "native":
        if collective == "alltoall":
            reducer.host.native_alltoall(flat, result.reshape(-1), deadline)
        else:
            reducer.host.native_allgather(rows[reducer.rank].copy(), flat, deadline)
        sent = received = (reducer.size - 1) * flat.nbytes // reducer.size  # MPI's, modelled
    else:
        work = result.reshape(-1)
        plan = plan_for(collective, algorithm, reducer.rank, reducer.size, work.size,
                        work.itemsize, reducer.topology)
        reducer.runner(work).run(  # an all-to-all reads this rank's own row where it lies
            plan, work, "sum", tag, deadline, IDENTITY,
            src=flat if collective == "alltoall" else None,
            copy_untouched=collective != "alltoall")
        sent, received = (count * work.itemsize for count in plan_traffic(plan))
    label = f"deterministic:{collective}:{algorithm}" + (f"+{wire}" if wire else "")
    reducer.stats.record(label, time.perf_counter() - start, sent, received,
                         modelled=algorithm == "native")


def _concrete(reducer, collective: str, algorithm: str, nbytes: int) -> str:
    """`algorithm` as `collective` runs it: auto's choice, or the collective's default plan
    for an all-reduce algorithm it has no plan of."""
    if algorithm == "auto":
        algorithm = reducer.tuner.choose(nbytes, collective) if nbytes else "native"
    if algorithm not in ("native", *PLANNERS[collective]):
        algorithm = "ring" if collective == "allgather" else "pairwise"
    return algorithm
