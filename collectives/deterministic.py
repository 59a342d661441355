"""Reproducible reductions: the same bits whatever the algorithm, node layout or fusion.

The definition (`reference_reduce`, which a user can run on the inputs with NumPy): every
element is the fold of the ranks' values in rank order, ``((x0 op x1) op x2) ...``, computed
in float32 for float16/bfloat16 (rounded once at the end), in the dtype itself for float32
and float64; avg divides the sum by p (one rounding); integers are exact (avg floors). With
fp16/bf16 compression the codec is part of the definition: each rank's values are first
scaled by the agreed power-of-two scale and rounded to 16 bits, the fold runs in float32,
its result is rounded to 16 bits and unscaled.

How the ranks compute it without losing bandwidth: the flat buffer is cut into p blocks;
an all-to-all gives block j's owner (rank j) every rank's block j (the bytes of a ring's
reduce-scatter, (p-1)/p n per rank, in one round of p-1 messages); the owner folds them in
rank order; an all-gather (with the caller's algorithm: its bytes too) spreads the blocks.
The fold happens once per element, on one rank, so every algorithm gives the same bits.
Across nodes the all-to-all moves a node's blocks raw: k times the inter-node bytes of
hierarchical's reduce-scatter for nodes of k ranks (docs/reproducible.md).

Example::

    >>> import numpy as np
    >>> xs = [np.float32([1e8, 1.0]), np.float32([-1e8, 1.0]), np.float32([1.0, 1e8])]
    >>> reference_reduce(xs, "sum")
    array([1.e+00, 1.e+08], dtype=float32)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

import kernels

from . import exact_mean
from .compression import codec_for, scale_for, unscale_into
from .compression.scaling import absmax
from .options import Op
from .validation import array_list, check_array

__all__ = ["reference_reduce", "fold_rows", "encode"]


def reference_reduce(arrays: Iterable, op: str = "sum", *, compression: str | None = None):
    """The deterministic reduction of `arrays` (one per rank, in rank order): the bits that
    `deterministic=True` collectives produce (see the module doc)."""
    op = Op.parse(op)
    arrays = array_list(arrays, "reference_reduce")
    _check_same_arrays(arrays)
    rows = np.stack([a.reshape(-1) for a in arrays])
    dtype = rows.dtype
    codec = codec_for(compression, dtype)
    if codec is None:
        out = np.empty(rows.shape[1], dtype)
        fold_rows(rows, op, out)
        return out.reshape(np.shape(arrays[0]))
    scale = scale_for(codec, max(absmax(r) for r in rows), len(rows), op, dtype)
    wire = np.empty(rows.shape, codec.dtype)
    for row, encoded in zip(rows, wire):
        encode(codec, row, encoded, scale, op, len(rows))
    folded = np.empty(rows.shape[1], codec.dtype)
    fold_rows(wire, Op.SUM if op is Op.AVG else op, folded)
    out = np.empty(rows.shape[1], dtype)
    unscale_into(out, folded, scale)
    return out.reshape(np.shape(arrays[0]))


def _check_same_arrays(arrays: Sequence) -> None:
    """What the collectives would refuse: no arrays, a non-array, an unsupported dtype, ranks
    that differ in shape or dtype (NumPy would upcast or broadcast them)."""
    if len(arrays) == 0:
        raise ValueError("reference_reduce needs one array per rank, got none")
    first = arrays[0]
    for r, a in enumerate(arrays):
        check_array(a, f"arrays[{r}]")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"arrays[{r}] must be a NumPy array, got {type(a).__qualname__}")
        if (a.shape, a.dtype) != (first.shape, first.dtype):
            raise ValueError(f"arrays[{r}] is {a.dtype} {a.shape} but arrays[0] is "
                             f"{first.dtype} {first.shape}: every rank passes the same shape "
                             "and dtype")


def encode(codec, values, wire, scale: float, op: Op, size: int) -> None:
    """wire = values times the scale (and 1/size for avg), rounded to the codec's 16 bits."""
    kernels.compress_into(wire, values, scale / size if op is Op.AVG else scale)


def fold_rows(rows, op: Op, out) -> None:
    """out = rows[0] op rows[1] op ... in rank order (16-bit in float32, rounded once;
    integer avg exact), out in the rows' dtype; `rows` a 2-D array or a list of rows."""
    if type(out) is np.ndarray:
        host_fold(rows[0].dtype, op)(rows, out)
    else:
        _fold(rows, out, op)


@functools.cache
def host_fold(dtype: np.dtype, op: Op) -> Callable[[Sequence, np.ndarray], None]:
    """`fold_rows` for NumPy rows of `dtype`, as a function `(rows, out)` with its choices
    made once (the small-call lane keeps it): the same bits, the same ufuncs as kernels."""
    if kernels.compute_dtype(dtype) != dtype or (op is Op.AVG and dtype.kind == "i"):
        return functools.partial(_fold, op=op)
    ufunc = _UFUNCS[op]
    in_order = _fold_floats if dtype.kind == "f" else _fold_in_order
    if op is not Op.AVG:
        return functools.partial(in_order, ufunc)

    def average(rows, out) -> None:
        in_order(ufunc, rows, out)
        kernels.divide_into(out, len(rows))

    return average


def _fold(rows, out, op: Op) -> None:
    """fold_rows for any array module and dtype."""
    dtype = rows[0].dtype
    if op is Op.AVG and dtype.kind == "i":  # (on the rows' module: CuPy rows met NumPy's
        xp = kernels.array_module(rows[0])  # buffers; the eighty-fifth review)
        wide = xp.zeros(exact_mean.wide_length(dtype, out.size), np.int64)
        part = xp.empty_like(wide)
        for row in rows:
            exact_mean.pack([row], part, dtype)
            wide += part
        exact_mean.finish(wide, out, len(rows))
        return
    compute = kernels.compute_dtype(dtype)
    if compute != dtype:  # 16-bit floats: accumulated in float32, rounded once at the end
        acc, rest = rows[0].astype(compute), rows[1:]
    elif len(rows) > 1:  # the first two in one pass
        acc, rest = out, rows[2:]
        kernels.combine_into(acc, rows[0], rows[1], op.elementwise)
    else:
        acc, rest = out, ()
        kernels.copy_into(acc, rows[0])
    for row in rest:
        kernels.reduce_into(acc, row, op.elementwise)
    if op is Op.AVG:
        kernels.divide_into(acc, len(rows))
    if compute != dtype:
        kernels.scale_into(out, acc, 1.0)  # one rounding to 16 bits; overflow is data


_UFUNCS = {Op.SUM: np.add, Op.AVG: np.add, Op.MAX: np.maximum, Op.MIN: np.minimum}


def _fold_in_order(ufunc, rows, out) -> None:
    """out = rows[0] ufunc rows[1] ufunc ... in the rows' dtype (NumPy rows)."""
    if len(rows) == 1:
        np.copyto(out, rows[0])
        return
    ufunc(rows[0], rows[1], out=out)
    for i in range(2, len(rows)):
        ufunc(out, rows[i], out=out)


_fold_floats = kernels.quiet(_fold_in_order)  # inf - inf, overflow, NaN compares are data
