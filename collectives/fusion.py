"""Tensor fusion: many arrays, one all-reduce per fusion buffer (Horovod's tensor fusion).

`run` groups a call's arrays by dtype (in order of first appearance), cuts each group into
buckets of at most `fusion_bytes` (an array larger than that is a bucket of its own), and
per bucket: packs the arrays into one flat work buffer with a single kernel call, runs one
all-reduce on it, and hands the results back. The work buffer is

- the new results' own storage when the call returns new arrays of the work dtype: the
  results are then views into one new flat array per bucket, so nothing is copied twice;
- the caller's `out` array itself for a single contiguous `out` (the in-place path);
- otherwise a fusion buffer cached by the communicator per (purpose, array module, dtype),
  which grows to the largest bucket and is reused by every later call; `out=` lists
  and 16-bit inputs under compression (float32 accumulator) use it.

A compressed bucket also agrees on a scale and may apply error feedback (see
`collectives.compression`). A single all-reduce is a call with one array.

Example::

    ys = comm.allreduce_many([w.grad for w in layers], op="avg", fusion_bytes=16 << 20)
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import kernels

from .compression import (ErrorFeedback, HalfCodec, absmax, codec_for, quantize, scale_for,
                          scale_into, work_dtype)
from .options import Op, check_algorithm
from .validation import check_array, check_out

__all__ = ["Bucket", "Request", "Backend", "buckets", "request", "run"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Arrays `members` (indices into the call's list) of one dtype, reduced as one buffer."""

    members: tuple[int, ...]
    dtype: np.dtype
    count: int


@dataclass(frozen=True)
class Request:
    """A validated all-reduce of one or more arrays."""

    arrays: tuple
    outs: tuple | None  # None: return new arrays
    op: Op
    algorithm: str  # may be "auto": resolved per bucket
    compression: str | None
    fusion_bytes: int
    feedback_key: Hashable | None  # None: no error feedback


@dataclass(frozen=True)
class Backend:
    """What fusion needs from its communicator for one call.

    buffer(purpose, like, dtype, count): a reusable flat array on like's array module;
    resolve(algorithm, nbytes): "auto" made concrete; reduce(work, op, algorithm, codec, src):
    the flat all-reduce in place (src: read the input from there instead of work);
    agree_max(value): the max of value over ranks.
    """

    size: int
    buffer: Callable[[str, Any, np.dtype, int], Any]
    resolve: Callable[[str, int], str]
    reduce: Callable[[Any, str, str, HalfCodec | None, Any], None]
    agree_max: Callable[[float], float]
    feedback: ErrorFeedback


def request(arrays: Sequence, *, out: Sequence | None, op: str | Op, algorithm: str,
            compression: str | None, fusion_bytes: int, error_feedback: bool | str,
            single: bool = False) -> Request:
    """Check a call's arguments; every failure names the argument and what is accepted.

    `single`: the call is `allreduce(x, out=out)`, passed as one-element lists.
    """
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list or tuple of arrays, got {type(arrays).__name__}")
    arrays = tuple(arrays)
    op = Op.parse(op)
    check_algorithm(algorithm)
    if isinstance(fusion_bytes, bool) or not isinstance(fusion_bytes, int) or fusion_bytes <= 0:
        raise ValueError(f"fusion_bytes must be a positive int, got {fusion_bytes!r}")
    _check_arrays(arrays, compression, single)
    if out is not None:
        if not isinstance(out, (list, tuple)) or len(out) != len(arrays):
            got = f"{len(out)} arrays" if isinstance(out, (list, tuple)) else type(out).__name__
            raise ValueError(f"out must be a list of {len(arrays)} arrays like arrays, got {got}")
        for o, a in zip(out, arrays):
            check_out(o, a)
        out = tuple(out)
    return Request(arrays, out, op, algorithm, compression, fusion_bytes,
                   _feedback_key(error_feedback, arrays, op, compression, fusion_bytes))


def _check_arrays(arrays: tuple, compression: str | None, single: bool) -> None:
    """Each array's type and dtype, checked once per distinct (type, dtype): fast for 1000s."""
    def name(i: int) -> str:
        return "x" if single else f"arrays[{i}]"

    types = {type(a) for a in arrays}
    if len(types) > 1:
        first = type(arrays[0])
        for i, a in enumerate(arrays):
            check_array(a, name(i))
            if type(a) is not first:
                raise TypeError(f"{name(i)} is a {type(a).__module__}.{type(a).__name__} but "
                                f"arrays[0] a {first.__module__}.{first.__name__}; "
                                "pass arrays of one kind per call")
    for i, dtype in _distinct_dtypes(arrays):
        check_array(arrays[i], name(i))
        codec_for(compression, dtype)
    if compression is not None and not arrays:
        codec_for(compression, np.float32)  # still reject unknown names


def _distinct_dtypes(arrays: Sequence) -> list[tuple[int, Any]]:
    """(index of first appearance, dtype) per distinct dtype, in order of first appearance."""
    if not arrays:
        return []
    first = getattr(arrays[0], "dtype", None)
    if all(getattr(a, "dtype", None) is first for a in arrays):  # the common case, no hashing
        return [(0, first)]
    seen: dict[Any, int] = {}
    for i, a in enumerate(arrays):
        seen.setdefault(getattr(a, "dtype", None), i)
    return [(i, dtype) for dtype, i in seen.items()]


def _feedback_key(error_feedback: bool | str, arrays: tuple, op: Op, compression: str | None,
                  fusion_bytes: int) -> Hashable | None:
    """None (off), the caller's name for the residual, or the call's layout for True."""
    if error_feedback is False or error_feedback is None:
        return None
    if compression is None:
        raise ValueError("error_feedback needs compression='fp16' or 'bf16'; got compression=None")
    if error_feedback is True:
        layout = tuple((a.shape, a.dtype.str) for a in arrays)
        return ("layout", layout, op, compression, fusion_bytes)
    if isinstance(error_feedback, str):
        return ("named", error_feedback, op, compression, fusion_bytes)
    raise TypeError(f"error_feedback must be a bool or a str naming the residual, "
                    f"got {type(error_feedback).__name__}")


def buckets(arrays: Sequence, fusion_bytes: int) -> list[Bucket]:
    """Group by dtype (first appearance first), then cut into buckets of <= fusion_bytes.

    Example: float32 arrays of 3, 3 and 3 KiB with fusion_bytes=8 KiB give buckets of
    (0, 1) and (2,).
    """
    distinct = _distinct_dtypes(arrays)
    if len(distinct) == 1:
        groups = {distinct[0][1]: range(len(arrays))}
    else:
        groups = {dtype: [] for _, dtype in distinct}
        for i, a in enumerate(arrays):
            groups[a.dtype].append(i)
    result = []
    for dtype, members in groups.items():
        limit = max(1, fusion_bytes // dtype.itemsize)
        total = sum(arrays[i].size for i in members)
        if total <= limit:  # one buffer holds the whole group
            result.append(Bucket(tuple(members), dtype, total))
            continue
        current: list[int] = []
        count = 0
        for i in members:
            n = arrays[i].size
            if current and count + n > limit:
                result.append(Bucket(tuple(current), dtype, count))
                current, count = [], 0
            current.append(i)
            count += n
        result.append(Bucket(tuple(current), dtype, count))
    return result


def run(req: Request, backend: Backend) -> list:
    """Reduce every bucket of `req`; the results in the order of `req.arrays`."""
    results: list = list(req.outs) if req.outs is not None else [None] * len(req.arrays)
    for index, bucket in enumerate(buckets(req.arrays, req.fusion_bytes)):
        _reduce_bucket(req, bucket, index, backend, results)
    return results


def _reduce_bucket(req: Request, bucket: Bucket, index: int, backend: Backend,
                   results: list) -> None:
    arrays = [req.arrays[i] for i in bucket.members]
    first = arrays[0]
    xp = kernels.array_module(first)
    codec = codec_for(req.compression, bucket.dtype)
    wdtype = bucket.dtype if codec is None else work_dtype(bucket.dtype)
    outs = None if req.outs is None else [req.outs[i] for i in bucket.members]
    fresh = xp.empty(bucket.count, bucket.dtype) if outs is None else None
    if fresh is not None and wdtype == bucket.dtype:
        work = fresh
    elif outs is not None and len(outs) == 1 and outs[0].flags.c_contiguous and outs[0].dtype == wdtype:
        work = outs[0].reshape(-1)
    else:
        work = backend.buffer("fusion", first, wdtype, bucket.count)
    wire_itemsize = bucket.dtype.itemsize if codec is None else codec.dtype.itemsize
    algorithm = backend.resolve(req.algorithm, bucket.count * wire_itemsize)

    src = None
    if len(arrays) == 1 and xp.shares_memory(first, work):
        pass  # in place: work is x itself
    elif codec is None and len(arrays) == 1 and first.flags.c_contiguous:
        src = first.reshape(-1)  # read x where it lies: no copy in
    else:
        kernels.pack(arrays, work)

    result = work
    if codec is None:
        backend.reduce(work, req.op.elementwise, algorithm, None, src)
        if req.op is Op.AVG:
            kernels.divide_into(work, backend.size)
    else:
        scale = _prescale(req, bucket, index, codec, work, backend)
        backend.reduce(work, req.op.elementwise, algorithm, codec, None)
        # Every final value becomes a 16-bit value: a rank that kept an fp32 sum which a
        # peer only received rounded (an extra rank of halving-doubling, a value stored
        # before its last send) then holds the same bits as that peer.
        result = backend.buffer("wire", work, codec.dtype, bucket.count)
        kernels.compress_into(result, work, 1.0)
        if fresh is None:
            scale_into(work, result, 1.0 / scale)
            result = work

    if fresh is not None:
        if result is not fresh:
            scale_into(fresh, result, 1.0 / scale)  # widen, unscale and cast in one pass
        offsets = kernels.packed_offsets(arrays)
        for i, a, lo, hi in zip(bucket.members, arrays, offsets, offsets[1:]):
            results[i] = fresh[lo:hi] if a.ndim == 1 else fresh[lo:hi].reshape(a.shape)
        return
    if not xp.shares_memory(work, outs[0]):
        kernels.unpack(work, outs)


def _prescale(req: Request, bucket: Bucket, index: int, codec: HalfCodec, work,
              backend: Backend) -> float:
    """Agree on the scale and apply it to `work` (with 1/p for avg, and error feedback).

    Returns the scale s; the reduced work times 1/s is the result.
    """
    residual = None
    if req.feedback_key is not None:
        residual = backend.feedback.residual((req.feedback_key, index), work, bucket.count)
        kernels.reduce_into(work, residual, "sum")
    scale = scale_for(codec, backend.agree_max(absmax(work)), backend.size, req.op)
    factor = scale / backend.size if req.op is Op.AVG else scale
    scale_into(work, work, factor)
    if residual is not None:
        # residual = (work - round16(work)) / factor: what this rank's own rounding loses.
        kernels.copy_into(residual, work)
        quantize(work, backend.buffer("wire", work, codec.dtype, bucket.count))
        xp = kernels.array_module(work)
        xp.subtract(residual, work, out=residual)
        scale_into(residual, residual, 1.0 / factor)
    return scale
