"""Tensor fusion: many arrays, one all-reduce per fusion buffer (Horovod's tensor fusion).

A call's arrays are grouped by dtype (in order of first appearance), each group cut into
buckets of at most `fusion_bytes` (an array larger than that is a bucket of its own). The
`Layout` (buckets and offsets) depends only on the arrays' dtypes and shapes, so it is
cached: a training loop's calls reuse it. Per bucket the arrays are packed into one flat
work buffer with a single kernel call, reduced once, and handed back. The work buffer is

- the new results' own storage when the call returns new arrays of the work dtype: the
  results are then views into one new flat array per bucket (`new_results`, made before
  the ranks agree), so nothing is copied twice;
- the caller's `out` array itself for a single contiguous `out` (the in-place path);
- otherwise a fusion buffer the reducer keeps per (purpose, array module, dtype), which
  grows to the largest bucket and is reused by every later call.

A single contiguous input is not packed at all: the plan reads it where it lies. A
compressed bucket goes through `compression.bucket`. `avg` of integers is exact: int32 is
summed in int64 and int64 as 32-bit halves (`exact_mean`), then floor-divided.

Example::

    ys = comm.allreduce_many([w.grad for w in layers], op="avg", fusion_bytes=16 << 20)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import numpy as np

import kernels

from . import exact_mean
from .compression import auto_may_compress, codec_for, work_dtype
from .compression.bucket import reduce_compressed
from .reproducible import reproducibly
from .options import CallOptions, Op

__all__ = ["Bucket", "Layout", "new_results", "reduce_arrays", "reduce_contiguous"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Arrays `members` (indices into the call's list) of one dtype, reduced as one buffer;
    `offsets` are their starts in the packed buffer, then its length."""

    members: tuple[int, ...]
    dtype: np.dtype
    offsets: tuple[int, ...]
    pieces: tuple[tuple[int, int, int, tuple | None], ...]  # (member, lo, hi, shape)

    @property
    def count(self) -> int:
        return self.offsets[-1]


@dataclass(frozen=True)
class Layout:
    """How a call's arrays are bucketed; cached per (dtypes, shapes, fusion_bytes)."""

    buckets: tuple[Bucket, ...]

    @classmethod
    def of(cls, shapes: tuple, fusion_bytes: int) -> "Layout":
        """The layout of arrays with (dtype, shape) pairs `shapes` (cached)."""
        key = (shapes, fusion_bytes)
        layout = _LAYOUTS.get(key)
        if layout is None:
            layout = cls(tuple(_buckets(shapes, fusion_bytes)))
            if len(_LAYOUTS) >= _LAYOUTS_LIMIT:
                del _LAYOUTS[next(iter(_LAYOUTS))]
            _LAYOUTS[key] = layout
        return layout


_LAYOUTS: dict[tuple, Layout] = {}
_LAYOUTS_LIMIT = 256


def _buckets(shapes: tuple, fusion_bytes: int) -> list[Bucket]:
    """Group by dtype (first appearance first), then cut into buckets of <= fusion_bytes.

    Example: float32 arrays of 3, 3 and 3 KiB with fusion_bytes=8 KiB give buckets of
    (0, 1) and (2,).
    """
    groups: dict[np.dtype, list[int]] = {}
    for i, (dtype, _) in enumerate(shapes):
        groups.setdefault(dtype, []).append(i)
    result = []
    for dtype, members in groups.items():
        limit = max(1, fusion_bytes // dtype.itemsize)
        current: list[int] = []
        offsets = [0]
        for i in members:
            n = int(np.prod(shapes[i][1], dtype=np.int64))
            if current and offsets[-1] + n > limit:
                result.append(_bucket(current, dtype, offsets, shapes))
                current, offsets = [], [0]
            current.append(i)
            offsets.append(offsets[-1] + n)
        result.append(_bucket(current, dtype, offsets, shapes))
    return result


def _bucket(members: list[int], dtype: np.dtype, offsets: list[int], shapes: tuple) -> Bucket:
    """The bucket, with each member's slice of it and its shape (None: 1-D, the slice as is)."""
    pieces = tuple((i, lo, hi, None if len(shapes[i][1]) == 1 else shapes[i][1])
                   for i, lo, hi in zip(members, offsets, offsets[1:]))
    return Bucket(tuple(members), dtype, tuple(offsets), pieces)


def reduce_contiguous(reducer, work, src, options: CallOptions, tag: int, deadline: float,
                      exposed: bool) -> None:
    """The uncompressed all-reduce of one flat buffer (not an integer avg): `work` receives
    the result, the input is read from `src` (None: work holds it); `exposed`: work is
    memory the caller sees. The whole call for a single contiguous array."""
    op = options.op
    algorithm = reducer.resolve(options.algorithm, work.nbytes)
    scaled = reducer.scaled_first(op, work if src is None else src)
    if scaled is not None:
        src = scaled
    reducer.reduce(work, _ELEMENTWISE[op], algorithm, None, src, tag, deadline, exposed)
    _, after = op.averaging(work.dtype, reducer.size)
    if after is not None:
        kernels.divide_into(work, after)


_ELEMENTWISE = {op: op.elementwise for op in Op}


def new_results(layout: Layout, like) -> list:
    """The storage of new results, one flat array per bucket of `layout`, on like's array
    module (made before the ranks agree: a MemoryError then refuses the call on every rank
    instead of breaking the communicator mid-way)."""
    xp = kernels.array_module(like)
    return [xp.empty(bucket.count, bucket.dtype) for bucket in layout.buckets]


def reduce_arrays(arrays: tuple, outs: tuple | None, options: CallOptions, layout: Layout,
                  reducer, *, tag: int, deadline: float, fresh: list | None = None,
                  feedback_key: Hashable | None = None) -> list:
    """Reduce every bucket of `layout`; the results in the order of `arrays`. Without
    `outs` the results are views of `fresh` (`new_results`; made here when None)."""
    results: list = list(outs) if outs is not None else [None] * len(arrays)
    if outs is None and fresh is None:
        fresh = new_results(layout, arrays[0]) if arrays else []
    for index, bucket in enumerate(layout.buckets):
        _Bucket(arrays, outs, options, bucket, reducer, tag, deadline,
                None if fresh is None else fresh[index]).reduce(
            results, None if feedback_key is None else (feedback_key, index))
    return results


class _Bucket:
    """One bucket of a call: its work buffer, input and result."""

    def __init__(self, arrays, outs, options: CallOptions, bucket: Bucket, reducer, tag: int,
                 deadline: float, fresh):
        self.arrays = [arrays[i] for i in bucket.members]
        self.outs = None if outs is None else [outs[i] for i in bucket.members]
        self.fresh = fresh  # the new results' storage (outs None)
        self.options, self.bucket, self.reducer = options, bucket, reducer
        self.tag, self.deadline = tag, deadline
        self.algorithm = options.algorithm
        self.between_nodes = False  # the codec on messages between nodes only
        self.codec = codec_for(self._compression(), bucket.dtype)
        self.xp = kernels.array_module(self.arrays[0])

    def _compression(self) -> str | None:
        """The bucket's compression: "auto" asks the tuner (float32 and float64 only), and
        may change the algorithm it runs with and keep the codec between nodes."""
        options, bucket = self.options, self.bucket
        if options.compression != "auto":
            return options.compression
        if not auto_may_compress(bucket.dtype):
            return None
        wire = self.reducer.tuner.compression(bucket.count * 4, options.algorithm)
        self.algorithm, self.between_nodes = wire.algorithm, wire.between_nodes
        return wire.compression

    def reduce(self, results: list, feedback_key) -> None:
        if self.options.deterministic:
            result = self._reproducible()
        elif self.codec is not None:
            result = self._compressed(feedback_key)
        elif self.options.op is Op.AVG and self.bucket.dtype.kind == "i":
            result = self._integer_mean()
        else:
            result = self._plain()
        self._hand_back(result, results)

    def _result_buffer(self, dtype, purpose: str):
        """(buffer, exposed): a new array for new results, the single contiguous out of this
        dtype itself (exposed: the caller sees it), else a reusable buffer."""
        bucket = self.bucket
        if self.outs is None:
            return (self.fresh if dtype == bucket.dtype
                    else self.reducer.buffer(purpose, self.arrays[0], dtype, bucket.count)), False
        out0 = self.outs[0]
        if len(self.outs) == 1 and out0.flags.c_contiguous and out0.dtype == dtype:
            return out0.reshape(-1), True
        return self.reducer.buffer(purpose, self.arrays[0], dtype, bucket.count), False

    def _load(self, work):
        """Pack the inputs into work unless the plan can read them where they lie: then the
        single contiguous input (or None when work is x itself) is returned."""
        arrays = self.arrays
        if len(arrays) == 1 and self.xp.shares_memory(arrays[0], work):
            return None
        if (self.codec is None and len(arrays) == 1 and arrays[0].flags.c_contiguous
                and arrays[0].dtype == work.dtype):
            return arrays[0].reshape(-1)
        kernels.pack(arrays, work)
        return None

    def _plain(self):
        work, exposed = self._result_buffer(self.bucket.dtype, "fusion")
        src = self._load(work)
        reduce_contiguous(self.reducer, work, src, self.options, self.tag, self.deadline, exposed)
        return work

    def _reproducible(self):
        """The bucket reduced as collectives.deterministic defines it (bits independent of
        the algorithm, the layout and the buckets: each array compressed with its own
        scale)."""
        bucket, arrays = self.bucket, self.arrays
        if len(arrays) == 1 and arrays[0].flags.c_contiguous:
            flat = arrays[0].reshape(-1)  # read where it lies: the result is written last
        else:
            flat = self.reducer.buffer("fusion", arrays[0], bucket.dtype, bucket.count)
            kernels.pack(arrays, flat)
        out, _ = self._result_buffer(bucket.dtype, "fusion result")
        return reproducibly(self.reducer, flat, self.options.op, self.options.compression,
                            self.options.algorithm, self.tag, self.deadline, keep="all",
                            out=out, sizes=[a.size for a in arrays])

    def _integer_mean(self):
        """avg of integers, exact: the sum in wide integers, then a floor division."""
        bucket, reducer = self.bucket, self.reducer
        wide = reducer.buffer("wide", self.arrays[0], np.int64,
                              exact_mean.wide_length(bucket.dtype, bucket.count))
        exact_mean.pack(self.arrays, wide, bucket.dtype)
        self._reduce(wide, "sum", None)
        result, _ = self._result_buffer(bucket.dtype, "fusion")
        exact_mean.finish(wide, result, reducer.size)
        return result

    def _compressed(self, feedback_key):
        bucket, reducer, codec = self.bucket, self.reducer, self.codec
        wdtype = work_dtype(bucket.dtype)
        work, _ = self._result_buffer(wdtype, "fusion")
        self._load(work)
        # the result lands in the bucket's own dtype: unscale_into clamps a value the wire's
        # rounding pushed past that dtype's top (in float32, then cast, it became inf)
        dest = (work if wdtype == bucket.dtype
                else self._result_buffer(bucket.dtype, "fusion result")[0])
        residual = None
        if feedback_key is not None:
            residual = reducer.feedback.residual(feedback_key, work, work.size)
        reduce_compressed(
            work, dest, codec=codec, op=self.options.op, size=reducer.size,
            reduce=lambda w: self._reduce(w, self.options.op.elementwise, codec),
            agree_max=lambda v: reducer.agree_max(v, self.deadline), residual=residual)
        return dest

    def _reduce(self, work, op: str, codec, src=None, exposed: bool = False) -> None:
        itemsize = work.dtype.itemsize if codec is None else codec.dtype.itemsize
        algorithm = self.reducer.resolve(self.algorithm, work.size * itemsize,
                                         compressed=codec is not None)
        self.reducer.reduce(work, op, algorithm, codec, src, self.tag, self.deadline, exposed,
                            between_nodes=self.between_nodes)

    def _hand_back(self, result, results: list) -> None:
        if self.outs is None:
            for i, lo, hi, shape in self.bucket.pieces:
                results[i] = result[lo:hi] if shape is None else result[lo:hi].reshape(shape)
        elif not self.xp.shares_memory(result, self.outs[0]):
            kernels.unpack(result, self.outs)
