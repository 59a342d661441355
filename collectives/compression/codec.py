"""The 16-bit wire codec (the executor's `Codec` protocol) and its choice per dtype.

Each send is rounded to 16 bits into a staging buffer and the sender keeps the rounded
value (quantize on send); each receive is widened and accumulated in float32 (float64 for
float64 inputs). Because a value that left a rank equals the sender's own copy, final
values spread by copy (ring all-gather) and values reduced symmetrically (recursive
doubling: q(a) + q(b) on both sides) are bit-identical on every rank.

Example::

    codec = codec_for("bf16", np.float32)
    run_plan(plan, work32, scratch16, transport, "sum", tag, deadline, codec, staging16)
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

import kernels

from ..errors import unknown_choice
from ..options import COMPRESSIONS

__all__ = ["HalfCodec", "auto_may_compress", "codec_for", "work_dtype"]


class HalfCodec:
    """The 16-bit wire: float16 or bfloat16 payloads, float32 (or float64) accumulation."""

    staged = True  # every send is encoded into staging, every receive lands in scratch

    def __init__(self, name: str):
        if name not in ("fp16", "bf16"):
            raise unknown_choice("compression", name, ["fp16", "bf16"])
        self.name = name
        self.dtype = np.dtype(np.float16 if name == "fp16" else ml_dtypes.bfloat16)
        # fp16: scale small values up, away from its subnormals; bf16 has float32's exponent
        # range, so it is only ever scaled down (float64 data aside: scaling._exponents).
        self.max_exp = 100 if name == "fp16" else 0
        self.max_value = float(ml_dtypes.finfo(self.dtype).max)

    def wire_dtype(self, work_dtype) -> np.dtype:
        return self.dtype

    def encode(self, region, staging):
        """Round `region` to 16 bits into `staging`; `region` keeps the rounded value (one
        pass: kernels.encode_into)."""
        kernels.encode_into(staging, region)
        return staging

    def decode_reduce(self, region, payload, op: str) -> None:
        kernels.decompress_reduce_into(region, payload, op)

    def decode_copy(self, region, payload) -> None:
        kernels.decompress_into(region, payload)

    def __repr__(self) -> str:
        return f"HalfCodec({self.name!r})"


_CODECS = {name: HalfCodec(name) for name in ("fp16", "bf16")}


def codec_for(compression: str | None, dtype: np.dtype) -> HalfCodec | None:
    """The codec for `compression` on arrays of `dtype`; None for no compression (and for
    "auto" on integers, which are summed exactly; "auto" on floats is decided per buffer by
    the tuner, so its codec is None here too).

    Raises ValueError for an unknown name, TypeError for integer arrays.
    """
    if compression is None or compression == "auto":
        return None
    codec = _CODECS.get(compression)
    if codec is None:
        raise unknown_choice("compression", compression, COMPRESSIONS)
    if np.dtype(dtype).kind not in "f" and np.dtype(dtype) not in kernels.HALF_DTYPES:
        raise TypeError(
            f"compression {compression!r} needs floating-point arrays, got {np.dtype(dtype)}; "
            "integers travel exactly: pass compression=None for them"
        )
    return codec


def auto_may_compress(dtype: np.dtype) -> bool:
    """Whether compression="auto" prices a codec for arrays of `dtype`: float32 and float64
    only. Integers are summed exactly; float16 and bfloat16 already travel as 16 bits, so a
    codec saves no byte (auto took fp16 for them, priced as float32: bfloat16's small
    values came back as zeros, float16 ran 3.6x slower; the 103rd review)."""
    return np.dtype(dtype) in _AUTO_DTYPES


_AUTO_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The accumulator dtype of a compressed all-reduce of `dtype`: float64 or float32."""
    return np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)
