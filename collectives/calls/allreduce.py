"""allreduce and allreduce_many as calls: checks, signature, agreement, fused data movement.

Example::

    call = allreduce_call(settings, x, None, op="sum", algorithm=None, compression=None,
                          check_finite=False, error_feedback=False, mode="sync")
"""
from __future__ import annotations

import time
from threading import current_thread
from typing import Hashable

import numpy as np

import kernels

from ..agreement import Signature
from ..compression import auto_may_compress, codec_for
from ..fusion import Layout, new_results, reduce_arrays, reduce_contiguous
from ..options import SUPPORTED, CallOptions, Op
from ..validation import check_array, check_out, check_outs
from .base import TAG_LIMIT, Call, Context, Refused, issuer
from .riding import as_payload, reduce_rows, rides

__all__ = ["allreduce_call", "allreduce_many_call", "describe"]


def allreduce_call(settings, x, out, op, algorithm, compression, check_finite,
                   error_feedback, deterministic, mode: str) -> Call:
    """The call of `comm.allreduce(x, ...)` (or its async twin, `mode` "async")."""
    issued = (mode, current_thread().name)  # issuer(mode), on every call's path
    try:
        options = CallOptions.parse(op, settings.algorithm if algorithm is None else algorithm,
                                    compression, settings.fusion_bytes, check_finite,
                                    error_feedback, "allreduce",
                                    settings.deterministic if deterministic is None
                                    else deterministic)
        if type(x) is not np.ndarray or x.dtype not in SUPPORTED:  # else: nothing to check
            check_array(x)
        if out is not None:
            check_out(out, x)
        if compression is not None and compression != "auto":  # auto: decided per buffer
            codec_for(options.compression, x.dtype)
    except (TypeError, ValueError) as error:
        return Refused("allreduce", issued, error)
    shapes = ((x.dtype, x.shape),)
    array = kernels.array_module(x).__name__  # NumPy arrays ride, CuPy arrays do not
    signature = Signature.of("allreduce", (options, shapes, issued, array),
                             lambda: describe(options, shapes, issued, array))
    return _Reduction(signature, (x,), None if out is None else (out,), options, shapes,
                      single=True)


def allreduce_many_call(settings, arrays, outs, *, op, algorithm, compression, fusion_bytes,
                        check_finite, error_feedback, deterministic, mode: str) -> Call:
    """The call of `comm.allreduce_many(arrays, ...)` (or its async twin)."""
    issued = issuer(mode)
    try:
        options = CallOptions.parse(
            op, settings.algorithm if algorithm is None else algorithm, compression,
            settings.fusion_bytes if fusion_bytes is None else fusion_bytes, check_finite,
            error_feedback, "allreduce",
            settings.deterministic if deterministic is None else deterministic)
        arrays = _check_arrays(arrays, options.compression)
        if outs is not None:
            if not isinstance(outs, (list, tuple)) or len(outs) != len(arrays):
                got = f"{len(outs)} arrays" if isinstance(outs, (list, tuple)) else type(outs).__name__
                raise ValueError(f"out must be a list of {len(arrays)} arrays like arrays, got {got}")
            outs = tuple(outs)
            check_outs(outs, arrays)
    except (TypeError, ValueError) as error:
        return Refused("allreduce_many", issued, error)
    shapes = tuple((a.dtype, a.shape) for a in arrays)
    array = kernels.array_module(arrays[0]).__name__ if arrays else "numpy"
    signature = Signature.of("allreduce_many", (options, shapes, issued, array),
                             lambda: describe(options, shapes, issued, array, single=False))
    return _Reduction(signature, arrays, outs, options, shapes, single=False)


class _Reduction(Call):
    """A checked all-reduce of one or more arrays."""

    __slots__ = ("arrays", "outs", "options", "shapes", "single", "payload", "fresh")

    def __init__(self, signature: Signature, arrays: tuple, outs, options: CallOptions,
                 shapes: tuple, *, single: bool):
        self.name, self.signature = signature.name, signature
        self.arrays, self.outs = arrays, outs
        self.options, self.shapes, self.single = options, shapes, single
        self.payload = self.fresh = None

    def prepare(self, ctx: Context) -> None:
        """Without `out`: the results' storage, one flat array per fusion bucket
        (`new_results`); a single array's is its flat result (`_single`, `_direct`)."""
        if self.outs is None and self.arrays:
            self.fresh = new_results(self._layout(), self.arrays[0])

    def _layout(self) -> Layout:
        return Layout.of(self.shapes, self.options.fusion_bytes)

    def agree(self, ctx: Context, seq: int, deadline: float):
        options = self.options
        checked = ctx.agreement.check
        if not (checked or options.check_finite):
            return None  # nothing to exchange: the data moves next
        x = self.arrays[0] if self.arrays else None
        if (checked and self.single and options.algorithm == "auto"
                and isinstance(x, np.ndarray) and rides(x.nbytes, ctx.size) and self._raw(ctx)):
            self.payload = as_payload(x)
        finite = not options.check_finite or all(map(_finite, self.arrays))
        return ctx.agreement.agree(self.signature, seq, deadline, finite, self.payload,
                                   options.check_finite)

    def move(self, ctx: Context, seq: int, deadline: float, rows):
        if self.payload is not None:
            return self._direct(ctx, rows)
        if self.single and not self.options.deterministic and self._contiguous(ctx):
            return self._single(ctx, seq, deadline)
        results = reduce_arrays(self.arrays, self.outs, self.options, self._layout(),
                                ctx.reducer, tag=seq % TAG_LIMIT, deadline=deadline,
                                fresh=self.fresh, feedback_key=self._feedback_key())
        return results[0] if self.single else results

    def _contiguous(self, ctx: Context) -> bool:
        """One array, read where it lies and reduced straight into its result: contiguous,
        uncompressed, and not an integer avg (which sums in wider integers)."""
        options, x = self.options, self.arrays[0]
        out = self.outs[0] if self.outs is not None else None
        return (x.flags.c_contiguous and (out is None or out.flags.c_contiguous)
                and not (options.op is Op.AVG and x.dtype.kind == "i") and self._raw(ctx))

    def _raw(self, ctx: Context) -> bool:
        """The single array travels uncompressed: no compression, or compression="auto"
        deciding none for its size (then it takes the uncompressed call's fast paths)."""
        compression, x = self.options.compression, self.arrays[0]
        if compression != "auto":
            return compression is None
        if not auto_may_compress(x.dtype):
            return True
        return ctx.reducer.tuner.compression(x.size * 4, self.options.algorithm).compression is None

    def _single(self, ctx: Context, seq: int, deadline: float):
        """The fast path of one contiguous array: no packing, no fusion bookkeeping."""
        x = self.arrays[0]
        out = self.outs[0] if self.outs is not None else None
        result = self.fresh[0] if out is None else out.reshape(-1)
        reduce_contiguous(ctx.reducer, result, None if out is x else x.reshape(-1), self.options,
                          seq % TAG_LIMIT, deadline, out is not None)
        return result.reshape(x.shape) if out is None else out

    def _direct(self, ctx: Context, rows):
        """The data rode with the records: reduce every rank's in rank order."""
        start = time.perf_counter()
        x = self.arrays[0]
        out = self.outs[0] if self.outs is not None else None
        result = self.fresh[0] if out is None else out.reshape(-1) \
            if out.flags.c_contiguous else kernels.array_module(x).empty(x.size, x.dtype)
        reduce_rows(rows, ctx.size, x.dtype, self.options.op, result)
        moved = (ctx.size - 1) * x.nbytes
        ctx.reducer.stats.record("direct", time.perf_counter() - start, moved, moved)
        if out is None:
            return result.reshape(x.shape)
        if not kernels.array_module(x).shares_memory(result, out):
            kernels.unpack(result, [out])
        return out

    def _feedback_key(self) -> Hashable | None:
        feedback, options = self.options.error_feedback, self.options
        if feedback is False:
            return None
        if feedback is True:
            return ("layout", self.shapes, options)
        return ("named", feedback, options)


def describe(options: CallOptions, shapes: tuple, issued: tuple, array: str, *,
             single: bool = True) -> dict:
    """An all-reduce's signature fields, as text for messages; `array` ("numpy", "cupy"):
    the arrays' kind (NumPy arrays ride; CuPy arrays may take NCCL where NumPy's take MPI),
    `single`: one array, not a list."""
    dtypes = [str(d) for d, _ in shapes]
    dims = [str(s) for _, s in shapes]
    return {
        "op": options.op, "algorithm": options.algorithm, "compression": options.compression,
        "fusion_bytes": options.fusion_bytes,
        "dtype": dtypes[0] if single else f"[{', '.join(dtypes)}]",
        "shape": dims[0] if single else f"[{', '.join(dims)}]",
        "array": array,
        "check_finite": options.check_finite, "error_feedback": options.error_feedback,
        "deterministic": options.deterministic, "issued": issued[0], "thread": issued[1],
    }


def _check_arrays(arrays, compression: str | None) -> tuple:
    """Each array's type and dtype, checked once per distinct (type, dtype): fast for 1000s."""
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list or tuple of arrays, got {type(arrays).__name__}")
    arrays = tuple(arrays)
    if set(map(type, arrays)) == {np.ndarray}:  # the common case, in whole-list passes
        dtypes = dict.fromkeys(a.dtype for a in arrays)  # first appearance first
        if SUPPORTED.issuperset(dtypes):
            for dtype in dtypes:
                codec_for(compression, dtype)
            return arrays
    seen: dict[tuple, int] = {}
    for i, a in enumerate(arrays):
        key = (type(a), getattr(a, "dtype", None))
        if key not in seen:
            seen[key] = i
            check_array(a, f"arrays[{i}]")
            codec_for(compression, a.dtype)
    kinds = {t for t, _ in seen}
    if len(kinds) > 1:
        first = type(arrays[0])
        i = next(i for (t, _), i in seen.items() if t is not first)
        raise TypeError(f"arrays[{i}] is a {type(arrays[i]).__module__}.{type(arrays[i]).__name__} "
                        f"but arrays[0] a {first.__module__}.{first.__name__}; "
                        "pass arrays of one kind per call")
    return arrays


def _finite(array) -> bool:
    return array.dtype.kind in "iub" or bool(kernels.array_module(array).isfinite(array).all())
