"""Sharded data parallelism (ZeRO / FSDP's scheme) on reduce_scatter and allgather.

Every rank keeps the full parameters for its forward and backward passes, but the optimizer
state and update of only its shard: 1/size of the parameters, flattened in order. Per step:

1. `reduce(grads)` reduce-scatters the gradients (avg): this rank's shard of the average;
2. the optimizer updates this rank's shard of the parameters (`shard(params)` views it);
3. `gather(params)` all-gathers the updated shards back into every rank's parameters.

The bytes on the wire are those of one all-reduce (a reduce-scatter plus an all-gather),
and the optimizer's memory and work are divided by the number of ranks. Arrays are NumPy,
CuPy, or anything DLPack gives one of (torch tensors: see GradSync's `as_array`).

Example::

    sharded = ShardedSync(comm, [w, b])
    for batch in data:
        grads = compute_grads(batch)
        g = sharded.reduce(grads)                     # this rank's shard of the mean
        p = sharded.shard()                           # this rank's shard of [w, b], a copy
        p -= lr * g                                   # the optimizer step, on the shard
        sharded.gather(p)                             # every rank's w and b updated
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

import kernels

from .algorithms import PLANNERS
from .algorithms.plan import split_bounds
from .calls.collective import collective_options
from .communicator import Communicator
from .compression import codec_for
from .errors import MismatchError, outliers, rank_list
from .gradsync import layout_digest
from .options import COMPRESSIONS, CallOptions
from .validation import array_list, check_array, sharing_pair

__all__ = ["ShardedSync"]

_ALGORITHMS = ("auto", "native", *PLANNERS["reduce_scatter"])  # (allgather's too)


class ShardedSync:
    """Shards of a list of parameter arrays over `comm`'s ranks (see the module doc).

    `algorithm` is that of reduce_scatter and allgather; `compression` (fp16, bf16) that
    of the gradients' reduce_scatter only: the parameters are gathered exactly (rounded
    to 16 bits, an update smaller than their rounding step would vanish). Made on every
    rank at once: the ranks compare their parameters' shapes and dtype (one small
    all-gather), and where they differ, or one rank's parameters or options are refused,
    every rank raises (options were checked only at the first reduce, after a step's
    forward and backward: the forty-fourth review).
    """

    __slots__ = ("comm", "params", "algorithm", "compression", "_bounds", "_count", "_dtype",
                 "_xp", "_lock", "_idle")

    def __init__(self, comm: Communicator, params: Sequence, *, algorithm: str | None = None,
                 compression: str | None = None):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a collectives.Communicator, got {type(comm).__name__}")
        with comm.refusing("allgather"):  # (the others compare layouts in _agree)
            params = _checked_params(array_list(params, "ShardedSync"))
            options = collective_options("reduce_scatter", op="avg", algorithm=algorithm,
                                         compression=compression,
                                         deterministic=comm.settings.deterministic)
            collective_options("allgather", algorithm=algorithm)
            codec_for(compression, params[0].dtype)  # (integers take no compression)
        _agree(comm, params, options)
        self.comm, self.params = comm, params
        self.algorithm, self.compression = algorithm, compression
        self._count, self._dtype = sum(p.size for p in params), params[0].dtype
        self._xp = kernels.array_module(params[0])
        self._bounds = split_bounds(0, self._count, comm.size)[comm.rank]
        self._lock, self._idle = threading.Lock(), []  # flat buffers no call is using

    @property
    def bounds(self) -> tuple[int, int]:
        """[lo, hi) of this rank's shard in the flattened parameters."""
        return self._bounds

    def shard(self):
        """A copy of this rank's shard of the parameters, flattened (update it, then gather).
        Copied straight from the parameters, not through a buffer of reduce or gather."""
        lo, hi = self._bounds
        shard = self._xp.empty(hi - lo, self._dtype)
        start = 0
        for p in self.params:
            a, b = max(lo, start), min(hi, start + p.size)
            if a < b:
                kernels.copy_into(shard[a - lo:b - lo], p.reshape(-1)[a - start:b - start])
            start += p.size
        return shard

    def reduce(self, grads: Sequence):
        """This rank's shard of the average of every rank's gradients (one reduce-scatter).
        Gradients that do not fit refuse it on every rank (MismatchError on the others;
        with the check off a refusal is this rank's only, as everywhere)."""
        with self.comm.refusing("reduce_scatter"):
            grads = array_list(grads, "ShardedSync.reduce")
            self._check_grads(grads)
        flat = self._take()
        kernels.pack(grads, flat)
        shard = self.comm.reduce_scatter(flat, op="avg", algorithm=self.algorithm,
                                         compression=self.compression)
        self._give_back(flat)
        return shard

    def _take(self):
        """A flat buffer of the parameters' size that no other call is using: reduce and
        gather each packed into one buffer of the ShardedSync, and from two threads (one
        step's gather beside the next step's reduce) each read the other's data: wrong
        gradients and parameters, no error (the 82nd and 98th reviews)."""
        with self._lock:
            return self._idle.pop() if self._idle else self._xp.empty(self._count, self._dtype)

    def _give_back(self, flat) -> None:
        """Keep `flat` for the next call unless one is kept (not after an error: a transfer
        may still hold it)."""
        with self._lock:
            if not self._idle:
                self._idle.append(flat)

    def _check_grads(self, grads: list) -> None:
        for i, g in enumerate(grads):
            check_array(g, f"grads[{i}]")
        if [g.shape for g in grads] != [p.shape for p in self.params]:
            raise ValueError("grads must have the parameters' shapes, in their order: "
                             f"expected {[p.shape for p in self.params]}, "
                             f"got {[g.shape for g in grads]}")
        wrong = sorted({str(g.dtype) for g in grads} - {str(self._dtype)})
        if wrong:  # packing would cast them (float64 to float16 overflows, silently)
            raise TypeError(f"grads must have the parameters' dtype {self._dtype}, "
                            f"got {wrong}")

    def gather(self, shard) -> None:
        """Write every rank's updated shard into the parameters (one all-gather). A shard
        that does not fit refuses it on every rank (MismatchError on the others)."""
        with self.comm.refusing("allgather"):
            self._check_shard(shard)
            _check_writable(self.params)  # (made read-only since: half written, one rank)
        pieces = self.comm.allgather(_padded(shard, self._longest()), algorithm=self.algorithm)
        flat = self._take()
        for r, (a, b) in enumerate(split_bounds(0, self._count, self.comm.size)):
            kernels.copy_into(flat[a:b], pieces[r, : b - a])
        kernels.unpack(flat, self.params)
        self._give_back(flat)

    def _check_shard(self, shard) -> None:
        lo, hi = self._bounds
        check_array(shard, "shard")
        if shard.shape != (hi - lo,):
            raise ValueError(f"shard must have this rank's {hi - lo} elements, got {shard.shape}")
        if shard.dtype != self._dtype:
            raise TypeError(f"shard must have the parameters' dtype {self._dtype}, "
                            f"got {shard.dtype}")

    def _longest(self) -> int:
        """Rows of an all-gather are of one length: the first (longest) shard's."""
        lo, hi = split_bounds(0, self._count, self.comm.size)[0]
        return hi - lo


def _checked_params(params: list) -> list:
    """`params`, refused where they cannot be sharded: none, not arrays (torch tensors:
    pass as_array(t), a zero-copy view), read-only (`gather` writes them; np.asarray of a
    JAX array is read-only), of several dtypes, sharing memory (tied weights: the update
    of one use was lost; the forty-fourth review)."""
    if not params:
        raise ValueError("params must hold at least one array")
    for i, p in enumerate(params):
        check_array(p, f"params[{i}]")
    _check_writable(params)
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise TypeError(f"params must share one dtype, got {sorted(map(str, dtypes))}")
    shared = sharing_pair(params)
    if shared is not None:  # gather unpacks each in turn: the last write wins, silently
        i, j = shared
        raise ValueError(f"params[{i}] and params[{j}] share memory (a tied weight?): each "
                         "parameter must be its own memory; pass a tied weight once")
    return params


def _check_writable(params: list) -> None:
    for i, p in enumerate(params):
        if not getattr(p.flags, "writeable", True):
            raise ValueError(f"params[{i}] is read-only, and gather writes the parameters: "
                             "pass writable arrays (np.array(x) copies one)")


def _agree(comm: Communicator, params: list, options: CallOptions) -> None:
    """MismatchError on every rank where the ranks' parameters differ in shapes, order or
    dtype (the same total size in another layout mixed one rank's weights with another's
    biases, silently; the twenty-first review), or their options do, as parsed (found only
    at the first reduce or gather, after a step's work; the 98th and 102nd reviews)."""
    mine = np.array([*layout_digest(params), sum(p.size for p in params),
                     _ALGORITHMS.index(options.algorithm),
                     COMPRESSIONS.index(options.compression), options.deterministic], np.int64)
    rows = comm.allgather(mine)
    layouts, settings = rows[:, :-3], rows[:, -3:]
    if not (layouts == layouts[0]).all():
        shapes = [tuple(p.shape) for p in params]
        raise MismatchError(f"ShardedSync: the ranks' parameters differ in shapes, order or "
                            f"dtype: {outliers(layouts)} (rank {comm.rank} has "
                            f"{params[0].dtype} {str(shapes)[:200]})")
    if not (settings == settings[0]).all():
        groups: dict[tuple, list[int]] = {}
        for rank, row in enumerate(settings.tolist()):
            groups.setdefault(tuple(row), []).append(rank)
        said = "; ".join(f"{rank_list(ranks)} {'has' if len(ranks) == 1 else 'have'} "
                         f"{_options_text(*row)}" for row, ranks in groups.items())
        raise MismatchError(f"ShardedSync: the ranks' options differ: {said}")


def _options_text(algorithm: int, compression: int, deterministic: int) -> str:
    return (f"algorithm={_ALGORITHMS[algorithm]!r}, compression={COMPRESSIONS[compression]!r}, "
            f"deterministic={bool(deterministic)}")


def _padded(shard, length: int):
    """`shard` extended to `length` elements (with zeros) for an all-gather of equal rows."""
    if shard.size == length:
        return shard
    xp = kernels.array_module(shard)
    padded = xp.zeros(length, shard.dtype)
    padded[: shard.size] = shard
    return padded

