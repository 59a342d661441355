"""CUDA C source of the CuPy kernels, as plain strings: importable (and testable) without CuPy.

16-bit floats travel as raw `unsigned short` bits and are converted by the helpers in
`PREAMBLE` (pure bit arithmetic, no `cuda_fp16.h`), so the kernels need neither CuPy's
float16 class nor its bfloat16 support, and the same C compiles on a host for testing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from kernels._common import HALF_DTYPES

__all__ = [
    "MULTI_COPY", "PREAMBLE", "ElementwiseSpec", "ReductionSpec", "absmax_spec", "combine_spec",
    "divide_spec", "encode_spec", "multi_copy_source", "quantize_residual_spec", "quantize_spec",
    "reduce_spec", "scale_spec",
]

PREAMBLE = r"""
__device__ __forceinline__ float collectives_load_float16(unsigned short h) {
  unsigned int sign = (unsigned int)(h & 0x8000u) << 16, bits = h & 0x7fffu;
  float mag = bits >= 0x7c00u ? __uint_as_float(0x7f800000u | (bits & 0x3ffu) << 13)  // inf, NaN
                              : __uint_as_float(bits << 13) * 0x1p112f;  // exact, subnormals too
  return __uint_as_float(__float_as_uint(mag) | sign);
}
__device__ __forceinline__ unsigned short collectives_store_float16(float f) {  // to nearest even
  unsigned int u = __float_as_uint(f) & 0x7fffffffu;
  unsigned short sign = (unsigned short)((__float_as_uint(f) >> 16) & 0x8000u);
  if (u > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // 65520 and up round to inf
  if (u < 0x38800000u) {  // subnormal: adding 0.5f rounds to a multiple of 2^-24 in hardware
    return sign | (unsigned short)(__float_as_uint(__uint_as_float(u) + 0.5f) - 0x3f000000u);
  }
  return sign | (unsigned short)((u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13);  // rebias, round
}
__device__ __forceinline__ float collectives_load_bfloat16(unsigned short b) {
  return __uint_as_float((unsigned int)b << 16);
}
__device__ __forceinline__ unsigned short collectives_store_bfloat16(float f) {  // to nearest even
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// float64 -> float32 rounded to odd, so that a later rounding to 16 bits is the only one
__device__ __forceinline__ float collectives_float32_odd(double x) {
  float t = __double2float_rz(x);
  return (double)t == x ? t : __uint_as_float(__float_as_uint(t) | 1u);
}
// np.maximum / np.minimum: a NaN on either side wins; of equal values (+0, -0) b wins
template <typename T> __device__ __forceinline__ T collectives_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <typename T> __device__ __forceinline__ T collectives_min(T a, T b) {
  return (a < b || a != a) ? a : b;
}
// |v| for a finite v, 0 for inf and NaN: absmax is the max over finite values
__device__ __forceinline__ double collectives_absmax_term(double v) {
  return fabs(v) < (double)__uint_as_float(0x7f800000u) ? fabs(v) : 0.0;
}
template <typename T> __device__ __forceinline__ T collectives_floordiv(T a, T d) {
  T q = a / d;
  return (q * d != a && ((a < 0) != (d < 0))) ? q - 1 : q;
}
"""

# Pack (or unpack) many same-dtype, C-contiguous tensors in one launch: each flat index
# finds its tensor by binary search over the start offsets (empty tensors are skipped).
MULTI_COPY = r"""
extern "C" __global__ void collectives_{direction}_{bits}(
    const unsigned long long* ptrs, const long long* starts, int count,
    {ctype}* flat, long long total) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    int lo = 0, hi = count;  // the last tensor t with starts[t] <= i
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (starts[mid] <= i) lo = mid; else hi = mid;
    }
    {ctype}* tensor = ({ctype}*)ptrs[lo];
    {statement};
  }
}
"""

_COMBINE = {"sum": "{a} + {b}", "max": "collectives_max({a}, {b})", "min": "collectives_min({a}, {b})"}
_CTYPE = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long"}
_UINT = {2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}


@dataclass(frozen=True)
class ElementwiseSpec:
    """The arguments of a `cupy.ElementwiseKernel` (its preamble is always `PREAMBLE`)."""

    in_params: str
    out_params: str
    operation: str
    name: str


@dataclass(frozen=True)
class ReductionSpec:
    """The arguments of a `cupy.ReductionKernel` (its preamble is always `PREAMBLE`)."""

    in_params: str
    out_params: str
    map_expr: str
    reduce_expr: str
    post_map_expr: str
    identity: str
    name: str


def _storage(dtype: np.dtype) -> str:
    """The dtype name a parameter is declared with: 16-bit floats as raw uint16 bits."""
    return "uint16" if dtype in HALF_DTYPES else dtype.name


def _compute(dtype: np.dtype) -> str:
    """The C type arithmetic runs in: float for 16-bit floats."""
    return "float" if dtype in HALF_DTYPES else _CTYPE[dtype.name]


def _load(dtype: np.dtype, var: str) -> str:
    """C expression: a stored element widened (exactly) to its compute type."""
    return f"collectives_load_{dtype.name}({var})" if dtype in HALF_DTYPES else var


def _store(dtype: np.dtype, expr: str, ctype: str) -> str:
    """C expression: a value of C type ctype converted to dtype's storage, rounded once."""
    if dtype not in HALF_DTYPES:
        return f"({_CTYPE[dtype.name]})({expr})"
    if ctype == "double":
        expr = f"collectives_float32_odd({expr})"
    return f"collectives_store_{dtype.name}((float)({expr}))"


@cache
def reduce_spec(dst: np.dtype, src: np.dtype, op: str) -> ElementwiseSpec:
    """dst = dst (op) src in dst's compute type, src widened first (reduce, decompress-reduce)."""
    ct = _compute(dst)
    value = _COMBINE[op].format(a=_load(dst, "dst"), b=f"({ct}){_load(src, 'src')}")
    suffix = "" if src == dst else f"_{src.name}"
    return ElementwiseSpec(
        f"{_storage(src)} src", f"{_storage(dst)} dst", f"dst = {_store(dst, value, ct)}",
        f"collectives_reduce_{op}_{dst.name}{suffix}",
    )


@cache
def combine_spec(dtype: np.dtype, op: str) -> ElementwiseSpec:
    """dst = a (op) b in dtype's compute type, rounded once (a first reduce that reads the input)."""
    ct, storage = _compute(dtype), _storage(dtype)
    value = _COMBINE[op].format(a=_load(dtype, "a"), b=_load(dtype, "b"))
    return ElementwiseSpec(
        f"{storage} a, {storage} b", f"{storage} dst", f"dst = {_store(dtype, value, ct)}",
        f"collectives_combine_{op}_{dtype.name}",
    )


@cache
def scale_spec(src: np.dtype, dst: np.dtype) -> ElementwiseSpec:
    """dst = src * scale in src's compute type, rounded once to dst (compress, widen, cast)."""
    ct = _compute(src)
    value = f"{_load(src, 'src')} * ({ct})scale"
    return ElementwiseSpec(
        f"{_storage(src)} src, float64 scale", f"{_storage(dst)} dst",
        f"dst = {_store(dst, value, ct)}", f"collectives_scale_{src.name}_to_{dst.name}",
    )


@cache
def encode_spec(wire: np.dtype, work: np.dtype) -> ElementwiseSpec:
    """wire = round16(work), then work = widen(wire): a send's payload and what the sender keeps."""
    ct = _compute(work)
    return ElementwiseSpec(
        "", f"{_storage(wire)} wire, {_storage(work)} work",
        f"wire = {_store(wire, 'work', ct)}; work = ({ct}){_load(wire, 'wire')}",
        f"collectives_encode_{work.name}_to_{wire.name}",
    )


@cache
def quantize_spec(dst: np.dtype, src: np.dtype, wire: np.dtype) -> ElementwiseSpec:
    """dst = round_dst(widen(round_wire(src)) * scale), the product in float32."""
    value = f"{_load(wire, _store(wire, 'src', _compute(src)))} * (float)scale"
    return ElementwiseSpec(
        f"{_storage(src)} src, float64 scale", f"{_storage(dst)} dst", f"dst = {_store(dst, value, 'float')}",
        f"collectives_quantize_{src.name}_via_{wire.name}_to_{dst.name}",
    )


@cache
def quantize_residual_spec(work: np.dtype, wire: np.dtype) -> ElementwiseSpec:
    """t = work * scale; work = widen(round_wire(t)); residual = (t - work) * (1 / scale),
    0 where that is not finite."""
    ct, storage = _compute(work), _storage(work)
    rounded = f"({ct}){_load(wire, _store(wire, 't', ct))}"
    return ElementwiseSpec(
        "float64 scale", f"{storage} work, {storage} residual",
        f"{ct} t = work * ({ct})scale; {ct} q = {rounded}; work = q; "
        f"{ct} r = (t - q) * ({ct})(1.0 / scale); residual = isfinite(r) ? r : ({ct})0",
        f"collectives_quantize_residual_{work.name}_via_{wire.name}",
    )


@cache
def absmax_spec(dtype: np.dtype) -> ReductionSpec:
    """max |v| over the finite values v of x as float64 (0 when there are none)."""
    return ReductionSpec(
        f"{_storage(dtype)} x", "float64 y", f"collectives_absmax_term({_load(dtype, 'x')})",
        "fmax(a, b)", "y = a", "0", f"collectives_absmax_{dtype.name}",
    )


@cache
def divide_spec(dtype: np.dtype) -> ElementwiseSpec:
    """buf = buf / divisor (floats, one rounding) or floor(buf / divisor) (ints)."""
    ct = _compute(dtype)
    if dtype.kind == "i":
        divisor, quotient = "int64 divisor", f"collectives_floordiv<{ct}>(buf, ({ct})divisor)"
    else:  # (any divisor: a float16 avg divides by size / 2^k, Op.averaging)
        divisor, quotient = "float64 divisor", f"{_load(dtype, 'buf')} / ({ct})divisor"
    return ElementwiseSpec(
        divisor, f"{_storage(dtype)} buf", f"buf = {_store(dtype, quotient, ct)}",
        f"collectives_divide_{dtype.name}",
    )


@cache
def multi_copy_source(direction: str, itemsize: int) -> tuple[str, str]:
    """(source, kernel name) of the one-launch "pack" or "unpack" of itemsize-byte elements."""
    statement = {"pack": "flat[i] = tensor[i - starts[lo]]", "unpack": "tensor[i - starts[lo]] = flat[i]"}
    name = f"collectives_{direction}_{8 * itemsize}"
    source = (
        MULTI_COPY.replace("{direction}", direction)
        .replace("{bits}", str(8 * itemsize))
        .replace("{ctype}", _UINT[itemsize])
        .replace("{statement}", statement[direction])
    )
    return source, name
