"""CPU kernels: the compiled codec wherever a 16-bit float is involved, NumPy for the rest.

`kernels._codec` (kernels/codec/, built by the package's install) runs every kernel that
reads or writes float16 or bfloat16, plus `absmax`, in one vectorized pass with the bits of
the NumPy twin, the reference. A kernel is looked up by kind and dtypes (one dict lookup)
and gets the arrays' buffers; whatever the codec does not cover (other dtypes, strided or
read-only arrays) goes to the NumPy twin. Imported only where the codec was built.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from kernels import _codec, _numpy
from kernels._common import BFLOAT16, KERNELS, op_name

__all__ = list(KERNELS)

copy_into, pack, unpack = _numpy.copy_into, _numpy.pack, _numpy.unpack

_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": BFLOAT16,
           "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _kernel_indexes() -> dict[Hashable, int]:
    """(kind, op, out dtype, in dtype, in2 dtype, wire dtype) -> the codec's kernel index."""
    table = {}
    for index, (kind, op, *names) in enumerate(_codec.signatures()):
        table[(kind, op, *(None if n is None else _DTYPES[n] for n in names))] = index
    return table


_KERNELS = _kernel_indexes()


def _ran(key: tuple, out, a=None, b=None, scalar: float = 0.0) -> bool:
    """Run the codec's kernel for key; False where there is none or the arrays are not
    contiguous buffers of one length, writable where written (the NumPy twin then runs)."""
    index = _KERNELS.get(key)
    return index is not None and _codec.run(index, out, a, b, scalar) is not NotImplemented


def reduce_into(dst: np.ndarray, src: np.ndarray, op: str) -> None:
    op = op_name(op)
    if not _ran(("combine", op, dst.dtype, dst.dtype, src.dtype, None), dst, dst, src):
        _numpy.reduce_into(dst, src, op)


def combine_into(dst: np.ndarray, a: np.ndarray, b: np.ndarray, op: str) -> None:
    # (one lookup with the op as given: on the executor's path per segment received)
    index = _KERNELS.get(("combine", op, dst.dtype, a.dtype, b.dtype, None)) \
        if isinstance(op, str) else None
    if index is None or _codec.run(index, dst, a, b, 0.0) is NotImplemented:
        _numpy.combiner(op, dst.dtype, a.dtype, b.dtype)(dst, a, b)


def divide_into(buf: np.ndarray, divisor: float) -> None:
    if not _ran(("divide", None, buf.dtype, None, None, None), buf, scalar=divisor):
        _numpy.divide_into(buf, divisor)


def scale_into(dst: np.ndarray, src: np.ndarray, scale: float) -> None:
    if not _ran(("scale", None, dst.dtype, src.dtype, None, None), dst, src, scalar=scale):
        _numpy.scale_into(dst, src, scale)


def compress_into(dst16: np.ndarray, src: np.ndarray, scale: float) -> None:
    key = ("scale", None, dst16.dtype, src.dtype, None, None)  # 16-bit dst16: a scale kernel
    if dst16.itemsize != 2 or not _ran(key, dst16, src, scalar=scale):
        _numpy.compress_into(dst16, src, scale)  # (which refuses a wide dst16)


def decompress_into(dst: np.ndarray, src16: np.ndarray) -> None:
    scale_into(dst, src16, 1.0)


def decompress_reduce_into(acc: np.ndarray, src16: np.ndarray, op: str) -> None:
    op = op_name(op)
    if not _ran(("decompress_reduce", op, acc.dtype, src16.dtype, None, None), acc, src16):
        _numpy.decompress_reduce_into(acc, src16, op)


def encode_into(wire16: np.ndarray, work: np.ndarray) -> None:
    if not _ran(("encode", None, wire16.dtype, work.dtype, None, None), wire16, work):
        _numpy.encode_into(wire16, work)


def quantize_into(dst: np.ndarray, src: np.ndarray, wire: np.dtype, scale: float) -> None:
    if not _ran(("quantize", None, dst.dtype, src.dtype, None, np.dtype(wire)), dst, src, scalar=scale):
        _numpy.quantize_into(dst, src, wire, scale)


def quantize_residual_into(work: np.ndarray, residual: np.ndarray, wire: np.dtype, scale: float) -> None:
    key = ("quantize_residual", None, work.dtype, residual.dtype, None, np.dtype(wire))
    if not _ran(key, work, residual, scalar=scale):
        _numpy.quantize_residual_into(work, residual, wire, scale)


def absmax(x: np.ndarray) -> float:
    index = _KERNELS.get(("absmax", None, None, x.dtype, None, None))
    result = NotImplemented if index is None else _codec.run(index, None, x, None, 0.0)
    return _numpy.absmax(x) if result is NotImplemented else result
