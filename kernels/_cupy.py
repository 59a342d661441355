"""CuPy kernels: the GPU twin of `kernels._numpy`, same semantics and same bits.

Imported only when a CuPy array reaches `kernels`. The CUDA C lives in
`kernels._cuda_source`; here each kernel object is built once per device and spec
(memoized), with a namespaced name such as `collectives_reduce_sum_float32`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cupy
import numpy as np

from kernels._common import HALF_DTYPES, KERNELS, op_name, packed_offsets
from kernels._cuda_source import (
    PREAMBLE,
    ElementwiseSpec,
    ReductionSpec,
    absmax_spec,
    combine_spec,
    divide_spec,
    encode_spec,
    multi_copy_source,
    quantize_residual_spec,
    quantize_spec,
    reduce_spec,
    scale_spec,
)

__all__ = list(KERNELS)

_THREADS = 256  # per block of the multi-tensor copy; its grid strides over the rest
_MAX_BLOCKS = 1 << 16


@cupy.memoize(for_each_device=True)
def _elementwise(spec: ElementwiseSpec) -> cupy.ElementwiseKernel:
    return cupy.ElementwiseKernel(
        spec.in_params, spec.out_params, spec.operation, spec.name, preamble=PREAMBLE
    )


@cupy.memoize(for_each_device=True)
def _reduction(spec: ReductionSpec) -> cupy.ReductionKernel:
    return cupy.ReductionKernel(
        spec.in_params, spec.out_params, spec.map_expr, spec.reduce_expr, spec.post_map_expr,
        spec.identity, spec.name, preamble=PREAMBLE,
    )


@cupy.memoize(for_each_device=True)
def _multi_copy_kernel(direction: str, itemsize: int) -> cupy.RawKernel:
    return cupy.RawKernel(*multi_copy_source(direction, itemsize))


def _raw(x: cupy.ndarray) -> cupy.ndarray:
    """x as the kernels see it: 16-bit floats viewed as uint16 bits."""
    return x.view(cupy.uint16) if x.dtype in HALF_DTYPES else x


def reduce_into(dst: cupy.ndarray, src: cupy.ndarray, op: str) -> None:
    _elementwise(reduce_spec(dst.dtype, src.dtype, op_name(op)))(_raw(src), _raw(dst))


def combine_into(dst: cupy.ndarray, a: cupy.ndarray, b: cupy.ndarray, op: str) -> None:
    _elementwise(combine_spec(dst.dtype, op_name(op)))(_raw(a), _raw(b), _raw(dst))


def copy_into(dst: cupy.ndarray, src: cupy.ndarray) -> None:
    if dst.dtype != src.dtype:
        scale_into(dst, src, 1.0)
    elif src.nbytes:
        dst.data.copy_from_device_async(src.data, src.nbytes)  # on the current stream


def divide_into(buf: cupy.ndarray, divisor: float) -> None:
    _elementwise(divide_spec(buf.dtype))(divisor, _raw(buf))


def scale_into(dst: cupy.ndarray, src: cupy.ndarray, scale: float) -> None:
    if src.dtype != np.float64:  # like the NumPy twin, multiply by scale rounded to float32
        scale = float(np.float32(scale))
    _elementwise(scale_spec(src.dtype, dst.dtype))(_raw(src), scale, _raw(dst))


def compress_into(dst16: cupy.ndarray, src: cupy.ndarray, scale: float) -> None:
    if dst16.dtype not in HALF_DTYPES:
        raise TypeError(f"compress_into writes float16 or bfloat16, got {dst16.dtype}")
    scale_into(dst16, src, scale)


def decompress_into(dst: cupy.ndarray, src16: cupy.ndarray) -> None:
    scale_into(dst, src16, 1.0)


def decompress_reduce_into(acc: cupy.ndarray, src16: cupy.ndarray, op: str) -> None:
    _elementwise(reduce_spec(acc.dtype, src16.dtype, op_name(op)))(_raw(src16), _raw(acc))


def encode_into(wire16: cupy.ndarray, work: cupy.ndarray) -> None:
    _elementwise(encode_spec(wire16.dtype, work.dtype))(_raw(wire16), _raw(work))


def quantize_into(dst: cupy.ndarray, src: cupy.ndarray, wire: np.dtype, scale: float) -> None:
    _elementwise(quantize_spec(dst.dtype, src.dtype, np.dtype(wire)))(_raw(src), scale, _raw(dst))


def quantize_residual_into(work: cupy.ndarray, residual: cupy.ndarray, wire: np.dtype, scale: float) -> None:
    _elementwise(quantize_residual_spec(work.dtype, np.dtype(wire)))(scale, work, residual)


def absmax(x: cupy.ndarray) -> float:
    return float(_reduction(absmax_spec(x.dtype))(_raw(x)))  # waits for the GPU


def _multi_copy(direction: str, tensors: Sequence[cupy.ndarray], flat: cupy.ndarray) -> int:
    """Copy between flat and tensors: one launch when all have flat's dtype and are C-contiguous."""
    offsets = packed_offsets(tensors)
    total = offsets[-1]
    if total and all(t.dtype == flat.dtype and t.flags.c_contiguous for t in tensors):
        ptrs = cupy.asarray(np.fromiter((t.data.ptr for t in tensors), np.uint64, len(tensors)))
        starts = cupy.asarray(np.asarray(offsets[:-1], np.int64))
        blocks = min(-(-total // _THREADS), _MAX_BLOCKS)
        args = (ptrs, starts, np.int32(len(tensors)), flat, np.int64(total))
        _multi_copy_kernel(direction, flat.dtype.itemsize)((blocks,), (_THREADS,), args)
        return total
    for t, lo, hi in zip(tensors, offsets, offsets[1:]):  # any layout or dtype: CuPy casts
        if direction == "pack":
            flat[lo:hi].reshape(t.shape)[...] = t
        else:
            t[...] = flat[lo:hi].reshape(t.shape)
    return total


def pack(arrays: Sequence[cupy.ndarray], flat: cupy.ndarray) -> int:
    return _multi_copy("pack", arrays, flat)


def unpack(flat: cupy.ndarray, outs: Sequence[cupy.ndarray]) -> int:
    return _multi_copy("unpack", outs, flat)
