"""torch's side of a collective as the library's: the one ReduceOp table and tensor -> array path.

Reductions take tensors of the library's dtypes (float16, bfloat16, float32, float64, int32,
int64), any layout, viewed without a copy (`gradsync.as_array`). Collectives that only move
data (broadcast, all-gather, all-to-all, send and recv) take contiguous tensors of any dtype,
seen as `rows`: a tensor of a library dtype is viewed as it is; any other dtype (uint8 of
pickled objects, bool masks) travels as a copy of its bytes in 32-bit words with two more,
the row's byte count and its dtype, that `finish()` checks (ranks with rows of 2 and 3
bytes would pad alike; uint8 x 4 against int32 or bool against uint8 would look alike to
the agreement) and writes back.

Example::

    op = reduce_op(dist.ReduceOp.AVG)                   # Op.AVG
    rows = Rows(output_tensor, world_size)              # rows.array: (world_size, n)
    comm.allgather(as_array(input_tensor), out=rows.array.reshape(...)); rows.finish()
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..gradsync import as_array
from ..options import DTYPES, Op

__all__ = ["REDUCE_OPS", "reduce_op", "compressible", "flat", "byte_view", "Rows", "as_array",
           "dtype_code", "dtype_named", "tensors_named"]

REDUCE_OPS = {
    dist.ReduceOp.SUM: Op.SUM,
    dist.ReduceOp.AVG: Op.AVG,
    dist.ReduceOp.MAX: Op.MAX,
    dist.ReduceOp.MIN: Op.MIN,
}
_LIBRARY_DTYPES = frozenset(getattr(torch, str(d)) for d in DTYPES)  # same names in torch
_WORD = np.dtype(np.int32)
# Every torch dtype by name: a row's dtype travels as its index (the same on every rank).
_TORCH_DTYPES = sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)
_DTYPE_CODES = {dtype: code for code, dtype in enumerate(_TORCH_DTYPES)}


def dtype_code(dtype: torch.dtype) -> int:
    """A torch dtype as a number, the same on every rank (to compare what ranks send)."""
    return _DTYPE_CODES[dtype]


def dtype_named(code: int) -> object:
    """The torch dtype of a code another rank sent (the code itself if unknown here)."""
    return _TORCH_DTYPES[code] if 0 <= code < len(_TORCH_DTYPES) else code


def tensors_named(tensors) -> str:
    """What a refusal of `Rows` adds: the agreement compares the arrays the library was
    given, which for dtypes it lacks are the 32-bit word rows, not the tensors."""
    named = ", ".join(f"{t.dtype} of shape {tuple(t.shape)}" for t in tensors)
    return (f"this rank's tensor: {named} (tensors of dtypes the library lacks travel as "
            "int32 rows of shape (rows, words, 1))")


def reduce_op(op: dist.ReduceOp) -> Op:
    """The library's Op for a torch ReduceOp (or a bare member such as ReduceOp.AVG, which
    passes isinstance but has no `op`); ValueError naming any other (PRODUCT, BAND, ...)."""
    kind = getattr(op, "op", op)
    try:
        return REDUCE_OPS[kind]
    except KeyError:
        accepted = ", ".join(f"ReduceOp.{k.name}" for k in REDUCE_OPS)
        raise ValueError(f"backend 'collectives' does not support ReduceOp.{kind.name}; "
                         f"accepted: {accepted}") from None


def compressible(tensor: torch.Tensor) -> bool:
    """Whether 16-bit wire compression applies: float32 and float64 values (16-bit floats
    already travel as 16 bits; integers are reduced exactly)."""
    return tensor.dtype in (torch.float32, torch.float64)


def flat(tensor: torch.Tensor):
    """A contiguous tensor of a library dtype as a 1-D array over its memory."""
    _check_contiguous(tensor)
    return as_array(tensor).reshape(-1)


def byte_view(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous tensor's memory as 1-D uint8 (any dtype)."""
    _check_contiguous(tensor)
    if tensor.numel() == 0:  # no memory to view (and torch will not view a 0-stride tensor)
        return np.zeros(0, np.uint8)
    return as_array(tensor.detach().reshape(-1).view(torch.uint8))


def _check_contiguous(tensor: torch.Tensor) -> None:
    if not tensor.is_contiguous():
        raise ValueError(f"backend 'collectives' needs a contiguous tensor here; got shape "
                         f"{tuple(tensor.shape)} with strides {tensor.stride()}: pass "
                         ".contiguous()")


class Rows:
    """A contiguous tensor as `rows` rows of an array the library can move, written back by
    `finish()` when it had to be a copy.

    Example::

        rows = Rows(torch.zeros(6, dtype=torch.uint8), 2)    # rows.array: (2, 3, 1) int32, a copy
        rows.array[:, 0] = 0x01010101; rows.finish()         # the tensor holds 1s
    """

    __slots__ = ("array", "_words", "_bytes", "_dtype")

    def __init__(self, tensor: torch.Tensor, rows: int = 1):
        _check_contiguous(tensor)
        if tensor.numel() % rows:
            raise ValueError(f"a tensor of {tensor.numel()} elements does not split into "
                             f"{rows} equal rows")
        self._bytes = None
        if tensor.dtype in _LIBRARY_DTYPES:
            self.array = as_array(tensor).reshape(rows, -1)
            return
        raw = byte_view(tensor).reshape(rows, -1)
        words = -(-raw.shape[1] // _WORD.itemsize)
        self._words = np.zeros((rows, words + 2), _WORD)  # then the row's bytes and dtype
        self._words.view(np.uint8)[:, :raw.shape[1]] = raw
        self._words[:, -2] = raw.shape[1]
        self._words[:, -1] = _DTYPE_CODES[tensor.dtype]
        # one more axis: no tensor of a library dtype (rows of 2 axes, views the library
        # writes in place) has this shape, so the agreement refuses the pair before a byte
        # moves; 16 uint8 and 6 int32 made one shape (the fortieth review)
        self.array = self._words[:, :, np.newaxis]
        self._bytes, self._dtype = raw, tensor.dtype

    def finish(self) -> None:
        """Write a copy's contents back into the tensor (nothing to do for a view);
        ValueError, the tensor untouched, where a row of another byte count or dtype
        arrived."""
        if self._bytes is None:
            return
        length, code = self._bytes.shape[1], _DTYPE_CODES[self._dtype]
        lengths, codes = self._words[:, -2], self._words[:, -1]
        other = lengths[lengths != length]
        if other.size:
            raise ValueError(f"backend 'collectives': a row of {int(other[0])} bytes arrived "
                             f"for a tensor row of {length} bytes (the ranks' tensors differ "
                             "in size); the tensor is left as it was")
        other = codes[codes != code]
        if other.size:
            sent = dtype_named(int(other[0]))
            raise ValueError(f"backend 'collectives': a row of {sent} arrived for a "
                             f"{self._dtype} tensor (the ranks' tensors differ in dtype); the "
                             "tensor is left as it was")
        self._bytes[...] = self._words.view(np.uint8)[:, :length]

