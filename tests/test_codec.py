"""The compiled codec against the NumPy twin (the reference), bit for bit, on every ISA.

Each test runs once per instruction set this CPU runs (portable, AVX2 + F16C, AVX-512),
calls the public `kernels` functions (which route 16-bit work to the codec) and compares
every output bit, NaN sign, payload and quietness included, with `kernels._numpy`. Inputs:
every 16-bit pattern, float32/float64 values of every class (zeros, subnormals, normals,
the 16-bit range edges, ties, inf, quiet and signaling NaNs) and their neighbours, random
bit patterns, and wide-exponent data; sizes around the vector widths and unaligned views.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import kernels
from kernels import _numpy as reference

try:
    from kernels import _codec
except ImportError:
    _codec = None

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
HALVES, WIDES, FLOATS = [F16, BF16], [F32, F64], [F16, BF16, F32, F64]
OPS = ["sum", "max", "min"]
ISAS = _codec.isas() if _codec is not None else []


def test_the_codec_is_built():
    """With a C++ compiler the install builds the codec, so a failed build cannot hide."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the install leaves the codec out and NumPy runs")
    assert _codec is not None, "kernels._codec is missing: re-run `pip install -e .`"
    assert kernels.cpu_backend() == _codec.isas()[-1]  # the best this CPU runs


def test_without_the_codec_the_numpy_twin_runs_every_kernel():
    """An install without a compiler: `kernels` imports, says so, and computes the same bits."""
    code = (
        "import sys\n"
        "sys.modules['kernels._codec'] = None  # as if the install had built no codec\n"
        "import numpy as np, kernels\n"
        "assert kernels.cpu_backend() == 'numpy'\n"
        "work, wire = np.array([1 / 3, 7e4, -0.0], np.float32), np.zeros(3, np.float16)\n"
        "kernels.encode_into(wire, work)\n"
        "assert wire.view(np.uint16).tolist() == [0x3555, 0x7C00, 0x8000], wire\n"
        "assert work.view(np.uint32).tolist() == [0x3EAAA000, 0x7F800000, 0x80000000], work\n"
        "assert kernels.absmax(work) == work[0]  # inf left out\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_codec_offers_every_16_bit_kernel():
    """Every kernel kind on every dtype it is documented for (a stale build would lack some)."""
    if _codec is None:
        pytest.skip("the codec is not built (see test_the_codec_is_built)")
    from kernels._cpu import _KERNELS

    expected = [("scale", None, d, s, None, None) for d in FLOATS for s in FLOATS if HALVES.count(d) + HALVES.count(s)]
    expected += [("absmax", None, None, d, None, None) for d in FLOATS]
    for h in HALVES:
        expected += [("combine", op, h, h, h, None) for op in OPS] + [("divide", None, h, None, None, None)]
        for w in WIDES:
            expected += [("decompress_reduce", op, w, h, None, None) for op in OPS]
            expected += [("encode", None, h, w, None, None), ("quantize_residual", None, w, w, None, h)]
            expected += [("quantize", None, d, w, None, h) for d in FLOATS]
    assert sorted(map(str, _KERNELS)) == sorted(map(str, expected))


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the codec's kernels for one instruction set during the test."""
    previous = _codec.use(request.param)
    assert kernels.cpu_backend() == request.param
    yield request.param
    _codec.use(previous)


# ---- inputs ----


def _bits(values, dtype: np.dtype) -> np.ndarray:
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
    return np.array(values, unsigned).view(dtype)


def _with_neighbours(patterns: list[int], sign: int) -> list[int]:
    """Each pattern, its next and previous pattern, and all of them negated."""
    near = [q for p in patterns for q in (p - 1, p, p + 1) if q >= 0]
    return near + [q | sign for q in near]


FLOAT32_EDGES = _with_neighbours(
    [
        0x00000000, 0x00000001, 0x007FFFFF, 0x00800000, 0x3F800000, 0x7F7FFFFF, 0x7F800000,
        0x7FC00000, 0x7F800001, 0x7F801FFF, 0x7F802000, 0x7FA00000, 0x7FFFFFFF, 0x7FC00001,
        0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001,  # float16's largest and its ties
        0x38800000, 0x387FE000, 0x387FF000, 0x33800000, 0x33000000, 0x33400000, 0x33C00000,
        0x3F801000, 0x3F803000, 0x3F808000, 0x3F818000, 0x7F7F8000, 0x7F7F7FFF, 0x00008000,
        0x00018000, 0x00400000, 0x34000000, 0x2F800000,  # ties at every 16-bit precision
    ],
    0x80000000,
)
FLOAT64_EDGES = _with_neighbours(
    [
        0x0000000000000000, 0x0000000000000001, 0x3FF0000000000000, 0x7FEFFFFFFFFFFFFF,
        0x7FF0000000000000, 0x7FF8000000000000, 0x7FF0000000000001, 0x7FF4000000000000,
        0x7FF8000000000001, 0x7FFFFFFFFFFFFFFF, 0x47EFFFFFE0000000, 0x47EFFFFFF0000000,
        0x36A0000000000000, 0x3810000000000000, 0x380FFFFFFFFFFFFF,
        0x3FF0020000000000, 0x3FF0020000000001, 0x3FF0010000000000, 0x3FF0010000000001,
        0x3FF0100000000000, 0x3FF0100000000001, 0x3FF0080000000000, 0x3FF0080000000001,
        0x40EFFE0000000000, 0x40EFFE0000000001, 0x40EFFDFFFFFFFFFF,
    ],
    0x8000000000000000,
)


def values(dtype: np.dtype, n: int = 1 << 16, seed: int = 0) -> np.ndarray:
    """n values of dtype: every 16-bit pattern, or edge cases, random bits and wide data."""
    rng = np.random.default_rng(seed)
    if dtype in HALVES:
        patterns = np.arange(1 << 16, dtype=np.uint16)
        return np.resize(rng.permutation(patterns), n).view(dtype)
    edges = FLOAT32_EDGES if dtype == F32 else FLOAT64_EDGES
    unsigned = np.uint32 if dtype == F32 else np.uint64
    random_bits = rng.integers(0, np.iinfo(unsigned).max, n, dtype=unsigned, endpoint=True).view(dtype)
    with np.errstate(over="ignore"):
        wide = (rng.standard_normal(n) * np.exp2(rng.integers(-40, 40, n))).astype(dtype)
    out = np.where(np.arange(n) % 2 == 0, random_bits, wide)
    out[: len(edges)] = _bits(edges, dtype)[:n]
    return out


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    unsigned = f"u{got.itemsize}"
    np.testing.assert_array_equal(got.view(unsigned), want.view(unsigned))


def both(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two copies: one for the codec, one for the reference."""
    return array.copy(), array.copy()


# ---- every kernel, bit for bit ----


@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 3, 2.0**20])
@pytest.mark.parametrize("src_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
def test_scale_into(isa, dst_dtype, src_dtype, scale):
    src = values(src_dtype, seed=1)
    got, want = np.zeros(src.size, dst_dtype), np.zeros(src.size, dst_dtype)
    kernels.scale_into(got, src, scale)
    reference.scale_into(want, src, scale)
    assert_same_bits(got, want)


@pytest.mark.parametrize("scale", [1.0, 0.125, 1 / 3])
@pytest.mark.parametrize("src_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_compress_into(isa, wire, src_dtype, scale):
    src = values(src_dtype, seed=2)
    got, want = np.zeros(src.size, wire), np.zeros(src.size, wire)
    kernels.compress_into(got, src, scale)
    reference.compress_into(want, src, scale)
    assert_same_bits(got, want)


@pytest.mark.parametrize("dst_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_decompress_into_every_pattern(isa, wire, dst_dtype):
    src = values(wire)
    got, want = np.zeros(src.size, dst_dtype), np.zeros(src.size, dst_dtype)
    kernels.decompress_into(got, src)
    reference.decompress_into(want, src)
    assert_same_bits(got, want)


def both_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isnan(a.astype(F64)) & np.isnan(b.astype(F64))


def first_nan_wins(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b, with a where a sum meets two NaNs: the codec returns a's (quieted), like x86 and
    NumPy's vector loop; NumPy's scalar tail returns b's, so the reference gets a + a there."""
    return np.where(both_nan(a, b), a, b) if op == "sum" else b


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_reduce_and_combine_every_pattern(isa, dtype, op):
    a, b = values(dtype, seed=3), values(dtype, seed=4)  # every pattern against a shuffle of all
    a[:2], b[:2] = np.array([0.0, -0.0], dtype), np.array([-0.0, 0.0], dtype)  # which zero wins
    got, want = both(a)
    kernels.reduce_into(got, b, op)
    reference.reduce_into(want, first_nan_wins(op, a, b), op)
    assert_same_bits(got, want)
    got, want = np.zeros_like(a), np.zeros_like(a)
    kernels.combine_into(got, b, a, op)
    reference.combine_into(want, b, first_nan_wins(op, b, a), op)
    assert_same_bits(got, want)


def test_a_sum_of_two_nans_keeps_the_first(isa):
    a = _bits([0x7D11, 0xFE01, 0x7C01, 0x7E00], F16)
    b = _bits([0x7FA5, 0x7C02, 0xFE00, 0xFC03], F16)
    kernels.reduce_into(a, b, "sum")
    assert_same_bits(a, _bits([0x7F11, 0xFE01, 0x7E01, 0x7E00], F16))
    acc = _bits([0xFF812345, 0x7FC00001], F32)
    kernels.decompress_reduce_into(acc, _bits([0x7F81, 0xFFC0], BF16), "sum")
    assert_same_bits(acc, _bits([0xFFC12345, 0x7FC00001], F32))


@pytest.mark.parametrize("divisor", [1, 3, 257, 4099])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_divide_into(isa, dtype, divisor):
    got, want = both(values(dtype))
    kernels.divide_into(got, divisor)
    reference.divide_into(want, divisor)
    assert_same_bits(got, want)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("acc_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_decompress_reduce_into(isa, wire, acc_dtype, op):
    incoming = values(wire)
    acc = values(acc_dtype, seed=5)
    with np.errstate(invalid="ignore"):
        acc[1::3] = incoming[1::3].astype(acc_dtype)  # equal operands: which NaN wins
    acc[:2], incoming[:2] = np.array([0.0, -0.0], acc_dtype), np.array([-0.0, 0.0], wire)  # which zero
    got, want = both(acc)
    kernels.decompress_reduce_into(got, incoming, op)
    reference.decompress_reduce_into(want, incoming, op)
    if op == "sum":  # two NaNs: acc's, quieted (see first_nan_wins)
        nans = both_nan(acc, incoming)
        with np.errstate(invalid="ignore"):
            want[nans] = acc[nans] + acc[nans]
    assert_same_bits(got, want)


@pytest.mark.parametrize("work_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_encode_into(isa, wire, work_dtype):
    got_work, want_work = both(values(work_dtype, seed=6))
    got_wire, want_wire = np.zeros(got_work.size, wire), np.zeros(got_work.size, wire)
    kernels.encode_into(got_wire, got_work)
    reference.encode_into(want_wire, want_work)
    assert_same_bits(got_wire, want_wire)
    assert_same_bits(got_work, want_work)


@pytest.mark.parametrize("scale", [1.0, 2.0**-7, 1 / 3])
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("src_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_quantize_into(isa, wire, src_dtype, dst_dtype, scale):
    src = values(src_dtype, seed=7)
    got, want = np.zeros(src.size, dst_dtype), np.zeros(src.size, dst_dtype)
    kernels.quantize_into(got, src, wire, scale)
    reference.quantize_into(want, src, wire, scale)
    assert_same_bits(got, want)
    if dst_dtype == src_dtype:  # in place
        got, want = both(src)
        kernels.quantize_into(got, got, wire, scale)
        reference.quantize_into(want, want, wire, scale)
        assert_same_bits(got, want)


@pytest.mark.parametrize("scale", [1.0, 2.0**12 / 3, 1e-30])
@pytest.mark.parametrize("work_dtype", WIDES, ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_quantize_residual_into(isa, wire, work_dtype, scale):
    got_work, want_work = both(values(work_dtype, seed=8))
    got_residual, want_residual = np.zeros_like(got_work), np.zeros_like(got_work)
    kernels.quantize_residual_into(got_work, got_residual, wire, scale)
    reference.quantize_residual_into(want_work, want_residual, wire, scale)
    assert_same_bits(got_work, want_work)
    assert_same_bits(got_residual, want_residual)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_absmax_over_the_finite_values(isa, dtype):
    x = values(dtype, seed=9)  # NaNs and infs among them
    with np.errstate(invalid="ignore"):
        wide = x.astype(F64)
    want = np.abs(wide[np.isfinite(wide)]).max()
    assert kernels.absmax(x) == reference.absmax(x) == want
    for n in range(1, 40):  # the largest value, then a NaN and an inf, in every lane and the tail
        y = np.full(n, -2.5, dtype)
        y[n - 1] = -3.0
        assert kernels.absmax(y) == 3.0
        for special in (np.nan, -np.inf):
            y[n - 1] = special
            assert kernels.absmax(y) == (2.5 if n > 1 else 0.0)
    assert kernels.absmax(np.zeros(0, dtype)) == 0.0
    assert kernels.absmax(np.array([np.nan, np.inf, -np.inf], dtype)) == 0.0
    assert kernels.absmax(np.array([-0.0, 0.0], dtype)) == 0.0


# ---- sizes, offsets, layouts ----

SIZES = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, (1 << 14) - 1, (1 << 14) + 3, 100_003]


KINDS = {  # one kernel of each kind, on the arrays named below
    "scale": lambda k, a: k.scale_into(a["bf16"], a["f32"], 0.75),
    "decompress": lambda k, a: k.decompress_into(a["f32"], a["bf16"]),
    "combine": lambda k, a: k.combine_into(a["bf16"], a["bf16"], a["bf16 b"], "max"),
    "divide": lambda k, a: k.divide_into(a["f16"], 3),
    "decompress_reduce": lambda k, a: k.decompress_reduce_into(a["f64"], a["f16"], "sum"),
    "encode": lambda k, a: k.encode_into(a["f16"], a["f32"]),
    "quantize": lambda k, a: k.quantize_into(a["bf16"], a["f64"], F16, 0.5),
    "quantize_residual": lambda k, a: k.quantize_residual_into(a["f32"], a["f32 b"], BF16, 3.0),
}
ARRAYS = {"f32": F32, "f32 b": F32, "f64": F64, "f16": F16, "bf16": BF16, "bf16 b": BF16}


@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_at_every_size_and_offset(isa, kind, n, offset):
    """Slices `offset` elements into longer arrays: bits as the reference's, nothing else touched."""
    bases = {
        name: np.concatenate([np.ones(offset, dtype), values(dtype, n, seed), np.ones(5, dtype)])
        for seed, (name, dtype) in enumerate(ARRAYS.items())
    }
    bases["f64"][np.isnan(bases["f64"])] = 1.0  # no sum of two NaNs (see first_nan_wins)
    want_bases = {name: base.copy() for name, base in bases.items()}
    KINDS[kind](kernels, {name: base[offset : offset + n] for name, base in bases.items()})
    KINDS[kind](reference, {name: base[offset : offset + n] for name, base in want_bases.items()})
    for name, base in bases.items():
        unsigned = f"u{base.itemsize}"
        np.testing.assert_array_equal(base.view(unsigned), want_bases[name].view(unsigned), err_msg=name)


@pytest.mark.parametrize("n", [1, 17, 1000])
def test_byte_misaligned_arrays(isa, n):
    def misaligned(dtype, seed):
        raw = bytearray(n * dtype.itemsize + 1)
        a = np.frombuffer(raw, dtype, count=n, offset=1)
        a[...] = values(dtype, n, seed)
        return a

    work, wire = misaligned(F32, 1), misaligned(F16, 2)
    want_work, want_wire = work.copy(), wire.copy()
    kernels.encode_into(wire, work)
    reference.encode_into(want_wire, want_work)
    assert_same_bits(wire, want_wire)
    assert_same_bits(work, want_work)


def test_strided_arrays_take_the_numpy_path(isa):
    src = values(F32, 2000, 1)[::2]
    got, want = np.zeros(2000, BF16)[::2], np.zeros(1000, BF16)
    kernels.compress_into(got, src, 0.5)
    reference.compress_into(want, src, 0.5)
    assert_same_bits(got, want)


def test_what_the_codec_cannot_run_is_numpys_to_run_or_refuse(isa):
    with pytest.raises(ValueError, match="broadcast"):  # different lengths
        kernels.compress_into(np.zeros(4, F16), np.zeros(5, F32), 1.0)
    dst = np.zeros(4, F16)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.compress_into(dst, np.ones(4, F32), 1.0)
    got = np.zeros(4, F32)
    kernels.decompress_reduce_into(got, np.ones(1, BF16), "sum")  # NumPy broadcasts
    np.testing.assert_array_equal(got, [1, 1, 1, 1])
    got, want = both(values(F16, 1000, 3))  # overlapping operands: NumPy copies first
    kernels.combine_into(got[1:], got[:-1], got[1:], "max")
    reference.combine_into(want[1:], want[:-1], want[1:], "max")
    assert_same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_many_arrays_scales_are_each_arrays_own(dtype):
    """The fused deterministic path computes every array's max|x| and scale at once
    (absmaxes, scales_for): the same values as absmax and scale_for array by array."""
    from collectives.compression import absmax, absmaxes, codec_for, scale_for, scales_for
    from collectives.options import Op

    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 40, 300)
    n = int(sizes.sum())
    with np.errstate(over="ignore"):  # (16-bit dtypes: some overflow to inf, kept)
        flat = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))).astype(dtype)
    flat[rng.integers(0, flat.size, 20)] = np.array([np.nan, np.inf, -np.inf, 0.0] * 5, dtype)
    starts = np.cumsum(sizes) - sizes
    maxes = absmaxes(flat, starts)
    assert maxes.tolist() == [absmax(flat[a:a + n]) for a, n in zip(starts, sizes)]
    edges = np.array([0.0, np.inf, np.nan, 5e-324, 1e-310, 1e-45, 1e-30, 1.0, 65504.0, 3e38,
                      1e300, 1.7e308], np.float64)
    for codec_name in ("fp16", "bf16"):
        codec = codec_for(codec_name, np.dtype(np.float32))
        for op in (Op.SUM, Op.AVG, Op.MAX):
            for size in (1, 2, 3, 8):
                values = np.concatenate([maxes, edges])
                got = scales_for(codec, values, size, op, flat.dtype)
                assert got.tolist() == [scale_for(codec, float(v), size, op, flat.dtype)
                                        for v in values]
