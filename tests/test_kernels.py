"""Kernels against an independent float64 / Python reference, on NumPy and (with a GPU) CuPy.

The reference computes in float64 (exact for these inputs, or Python ints) and rounds once
to the result dtype; for 16-bit floats it goes through float32 rounded to odd, which keeps
the final round-to-nearest-even exact (24 >= 11 + 2 bits).
"""

from __future__ import annotations

import ctypes
import enum
import shutil
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import kernels
from kernels import _cuda_source as cuda

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
HALVES = [F16, BF16]
FLOATS = [*HALVES, F32, F64]
DTYPES = [*FLOATS, np.dtype(np.int32), np.dtype(np.int64)]
OPS = ["sum", "max", "min"]
SIZES = [0, 1, 7, 1000, (1 << 20) + 3]
REF = {"sum": np.add, "max": np.maximum, "min": np.minimum}


@pytest.fixture(
    params=[
        "numpy",
        pytest.param(
            "cupy", marks=pytest.mark.skipif(kernels.gpu_module() is None, reason="needs cupy and a CUDA GPU")
        ),
    ]
)
def xp(request):
    """The array module under test: every test runs on NumPy and, with a GPU, on CuPy."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


def to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def to_float32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 truncated toward zero, lowest bit set when inexact."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = x.astype(F32)
        too_far = np.abs(t.astype(F64)) > np.abs(x)
        t[too_far] = np.nextafter(t[too_far], F32.type(0))
        bits = t.view(np.uint32)
        bits[t.astype(F64) != x] |= 1
    return t


def rounded(exact: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round float64 values to dtype once (see the module docstring)."""
    if dtype in HALVES:
        with np.errstate(over="ignore"):
            return to_float32_round_to_odd(exact).astype(dtype)
    return exact.astype(dtype)


def random_array(n: int, dtype: np.dtype, seed: int) -> np.ndarray:
    """Values of mixed magnitude (so sums round), ints small enough never to overflow."""
    rng = np.random.default_rng(seed)
    if dtype.kind == "i":
        hi = np.iinfo(dtype).max // 4
        return rng.integers(-hi, hi, n, dtype=dtype)
    return (rng.standard_normal(n) * np.exp2(rng.integers(-8, 8, n))).astype(dtype)


def reference(op: str, a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """a (op) b computed exactly (int64 or float64), rounded once to dtype."""
    wide = np.int64 if dtype.kind == "i" else np.float64
    return rounded(REF[op](a.astype(wide), b.astype(wide)), dtype)


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


# reduce_into, copy_into, divide_into


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reduce_into(xp, dtype, op, n):
    a, b = random_array(n, dtype, 1), random_array(n, dtype, 2)
    dst, src = xp.array(a), xp.array(b)
    kernels.reduce_into(dst, src, op)
    assert_same_bits(to_host(dst), reference(op, a, b, dtype))
    assert_same_bits(to_host(src), b)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_combine_into_equals_copy_then_reduce(xp, dtype, op, n):
    a, b = random_array(n, dtype, 3), random_array(n, dtype, 4)
    if dtype.kind == "f" and n >= 2:
        a[:2], b[:2] = np.array([0.0, -0.0], dtype), np.array([-0.0, 0.0], dtype)  # which zero wins
    dst = xp.zeros(n, dtype)
    kernels.combine_into(dst, xp.array(a), xp.array(b), op)
    assert_same_bits(to_host(dst), reference(op, a, b, dtype))
    in_place = xp.array(b)  # dst may be an operand
    kernels.combine_into(in_place, xp.array(a), in_place, op)
    assert_same_bits(to_host(in_place), reference(op, a, b, dtype))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_reduce_into_propagates_nan(xp, dtype, op):
    a = np.array([np.nan, 1, 2, np.nan, np.inf, -0.0], dtype)
    b = np.array([1, np.nan, 3, np.nan, -np.inf, 4], dtype)
    dst = xp.array(a)
    kernels.reduce_into(dst, xp.array(b), op)
    want = {
        "sum": [np.nan, np.nan, 5, np.nan, np.nan, 4],
        "max": [np.nan, np.nan, 3, np.nan, np.inf, 4],
        "min": [np.nan, np.nan, 2, np.nan, -np.inf, -0.0],
    }[op]
    np.testing.assert_array_equal(to_host(dst).astype(F64), want)


def test_float_events_are_data_even_where_the_caller_raises_on_them():
    """Overflow, inf - inf and NaN compares neither raise nor warn inside a kernel, and
    the caller's error state is back in force after it (also after an error inside)."""
    a = np.array([3e38, np.inf, np.nan], F32)
    b = np.array([3e38, -np.inf, 1], F32)
    with np.errstate(all="raise"):
        for op in OPS:
            dst = a.copy()
            kernels.reduce_into(dst, b, op)
        np.testing.assert_array_equal(dst, np.array([3e38, -np.inf, np.nan], F32))
        assert np.isnan(kernels.quiet(np.subtract)(a[1:2], a[1:2]))[0]
        with pytest.raises(ZeroDivisionError):
            kernels.quiet(lambda: 1 / 0)()
        with pytest.raises(FloatingPointError):
            np.add(a[:1], a[:1])
    assert np.geterr()["over"] == "warn"


def test_reduce_into_takes_a_str_enum_and_rejects_unknown_ops():
    class Op(str, enum.Enum):
        SUM = "sum"

    dst = np.ones(3, F32)
    kernels.reduce_into(dst, np.ones(3, F32), Op.SUM)
    np.testing.assert_array_equal(dst, [2, 2, 2])
    with pytest.raises(ValueError, match="op must be one of"):
        kernels.reduce_into(dst, dst, "prod")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copy_into(xp, dtype, n):
    a = random_array(n, dtype, 3)
    dst = xp.array(np.zeros(n, dtype))
    kernels.copy_into(dst, xp.array(a))
    assert_same_bits(to_host(dst), a)


@pytest.mark.parametrize("divisor", [1, 3, 7, 257, 4099])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_divide_into(xp, dtype, n, divisor):
    a = random_array(n, dtype, 4)
    if dtype.kind == "i":
        want = np.array([int(v) // divisor for v in a[:1000].tolist()], dtype)
    else:  # 257 and 4099 are not 16-bit floats: the divisor must not be rounded first
        want = rounded(a[:1000].astype(F64) / divisor, dtype)
    buf = xp.array(a)
    kernels.divide_into(buf, divisor)
    assert_same_bits(to_host(buf)[:1000], want)


def test_divide_into_floors_negative_ints(xp):
    buf = xp.array(np.array([-7, 7, -8, 0], np.int32))
    kernels.divide_into(buf, 2)
    np.testing.assert_array_equal(to_host(buf), [-4, 3, -4, 0])


# compression


@pytest.mark.parametrize("scale", [1.0, 0.125, 1 / 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("src_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_compress_into(xp, wire, src_dtype, n, scale):
    src = random_array(n, src_dtype, 5) * src_dtype.type(64)
    src[::97] = 1e6  # past float16's range: must become inf, not wrap
    dst = xp.array(np.zeros(n, wire))
    kernels.compress_into(dst, xp.array(src), scale)
    exact = src.astype(F64) * F64.type(src_dtype.type(scale))  # the product is exact in float64 ...
    if src_dtype == F32:
        exact = exact.astype(F32).astype(F64)  # ... and rounded to float32 first for a float32 src
    assert_same_bits(to_host(dst), rounded(exact, wire))


@pytest.mark.parametrize("scale", [1.0, 1 / 3])
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("src_dtype", FLOATS, ids=str)
def test_scale_into(xp, src_dtype, dst_dtype, scale):
    src = random_array(5000, src_dtype, 13)
    exact = src.astype(F64) * F64.type(kernels.compute_dtype(src_dtype).type(scale))
    if src_dtype != F64:
        exact = exact.astype(F32).astype(F64)  # the product rounds to the compute dtype first
    dst = xp.array(np.zeros(src.size, dst_dtype))
    kernels.scale_into(dst, xp.array(src), scale)
    assert_same_bits(to_host(dst), rounded(exact, dst_dtype))


def test_scale_into_in_place(xp):
    buf = xp.array(np.array([1, 3, -5], F32))
    kernels.scale_into(buf, buf, 0.5)
    np.testing.assert_array_equal(to_host(buf), [0.5, 1.5, -2.5])


def test_compress_into_rejects_a_wide_destination():
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        kernels.compress_into(np.zeros(3, F32), np.ones(3, F32), 1.0)


@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_compression_round_trip_error_is_half_an_ulp(xp, wire):
    src = random_array((1 << 16) + 5, F32, 6)
    src = src[np.abs(src) > 1e-4]  # stay clear of float16 subnormals
    wire_buf, back = xp.array(np.zeros(src.size, wire)), xp.array(np.zeros(src.size, F32))
    kernels.compress_into(wire_buf, xp.array(src), 1.0)
    kernels.decompress_into(back, wire_buf)
    mantissa_bits = {F16: 10, BF16: 7}[wire]
    rel = np.abs(to_host(back).astype(F64) - src) / np.abs(src)
    assert rel.max() <= 2.0 ** -(mantissa_bits + 1)


@pytest.mark.parametrize("dst_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_decompress_into_is_exact(xp, wire, dst_dtype):
    every = np.arange(1 << 16, dtype=np.uint16).view(wire)  # every 16-bit pattern
    dst = xp.array(np.zeros(every.size, dst_dtype))
    kernels.decompress_into(dst, xp.array(every))
    got = to_host(dst)
    finite = np.isfinite(every.astype(F32))
    np.testing.assert_array_equal(got[finite], [float(v) for v in every[finite].tolist()])
    assert np.isnan(got[np.isnan(every.astype(F32))]).all()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_decompress_reduce_into(xp, wire, op, n):
    acc0, incoming = random_array(n, F32, 7), random_array(n, wire, 8)
    acc = xp.array(acc0)
    kernels.decompress_reduce_into(acc, xp.array(incoming), op)
    assert_same_bits(to_host(acc), reference(op, acc0, incoming, F32))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_decompress_reduce_into_propagates_nan(xp, wire, op):
    acc = xp.array(np.array([np.nan, 1, 2], F32))
    kernels.decompress_reduce_into(acc, xp.array(np.array([1, np.nan, 3], wire)), op)
    got = to_host(acc)
    assert np.isnan(got[:2]).all() and got[2] == {"sum": 5, "max": 3, "min": 2}[op]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("work_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_encode_into_sends_and_keeps_the_rounded_value(xp, wire, work_dtype, n):
    work = random_array(n, work_dtype, 18) * work_dtype.type(64)
    work[::97] = 1e6  # past float16's range: inf on the wire and in work
    wire_buf, work_buf = xp.array(np.zeros(n, wire)), xp.array(work)
    kernels.encode_into(wire_buf, work_buf)
    sent = rounded(work.astype(F64), wire)
    assert_same_bits(to_host(wire_buf), sent)
    assert_same_bits(to_host(work_buf), sent.astype(work_dtype))


@pytest.mark.parametrize("scale", [1.0, 2.0**-9, 1 / 3])
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("src_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_quantize_into(xp, wire, src_dtype, dst_dtype, scale):
    src = random_array(5000, src_dtype, 19) * src_dtype.type(64)
    exact = rounded(src.astype(F64), wire).astype(F64) * F64.type(F32.type(scale))
    want = rounded(exact.astype(F32).astype(F64), dst_dtype)  # the product rounds to float32 first
    dst = xp.array(np.zeros(src.size, dst_dtype))
    kernels.quantize_into(dst, xp.array(src), wire, scale)
    assert_same_bits(to_host(dst), want)


@pytest.mark.parametrize("work_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_quantize_residual_into(xp, wire, work_dtype):
    work, scale = random_array(5000, work_dtype, 20), 4096 / 3
    scaled = work * work_dtype.type(scale)
    sent = rounded(scaled.astype(F64), wire).astype(work_dtype)
    work_buf, residual = xp.array(work), xp.array(np.zeros(work.size, work_dtype))
    kernels.quantize_residual_into(work_buf, residual, wire, scale)
    assert_same_bits(to_host(work_buf), sent)
    with np.errstate(invalid="ignore"):
        want = (scaled - sent) * work_dtype.type(1 / scale)
    want[~np.isfinite(want)] = 0  # what overflows the wire carries nothing on
    assert_same_bits(to_host(residual), want)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_absmax_over_the_finite_values(xp, dtype, n):
    x = random_array(n, dtype, 21)
    x[n // 2 :: 7] = np.nan
    x[n // 3 :: 11] = -np.inf
    wide = x.astype(F64)
    finite = wide[np.isfinite(wide)]
    assert kernels.absmax(xp.array(x)) == (float(np.abs(finite).max()) if finite.size else 0.0)


# multi-tensor pack / unpack

LAYOUTS = {
    "c": lambda x: x,
    "fortran": lambda x: x.T,
    "strided": lambda x: x[::2, ::3],
    "scalar": lambda x: x[1, 1],
    "empty": lambda x: x[:0],
    "vector": lambda x: x[0],
}


def mixed_arrays(xp, dtypes):
    """One array per layout, cycling through dtypes, with distinct values."""
    out = []
    for i, layout in enumerate(LAYOUTS.values()):
        dtype = dtypes[i % len(dtypes)]
        base = (np.arange(6 * 9).reshape(6, 9) + 100 * i).astype(dtype)
        out.append(layout(xp.array(base)))
    return out


@pytest.mark.parametrize(
    "flat_dtype,dtypes",
    [(F32, [F32]), (F32, [F16, F32, BF16]), (F64, [F32, np.dtype(np.int32)]), (np.dtype(np.int64), [np.dtype(np.int32)])],
    ids=str,
)
def test_pack_then_unpack_round_trips(xp, flat_dtype, dtypes):
    arrays = mixed_arrays(xp, dtypes)
    values = [float(v) for a in arrays for v in to_host(a).flat]  # C order, element by element
    flat = xp.array(np.full(len(values) + 5, -1, flat_dtype))
    assert kernels.pack(arrays, flat) == len(values)
    np.testing.assert_array_equal(to_host(flat), [*values, -1, -1, -1, -1, -1])
    assert kernels.packed_offsets(arrays)[-1] == len(values)

    outs = [xp.array(np.zeros(a.shape, a.dtype, order=o)) for a, o in zip(arrays, "CFCFCF")]
    assert kernels.unpack(flat, outs) == len(values)
    for out, a in zip(outs, arrays):
        assert_same_bits(to_host(out), to_host(a))


def test_pack_many_small_tensors(xp):
    arrays = [xp.array(np.full(i % 7, i, F32)) for i in range(1000)]
    offsets = kernels.packed_offsets(arrays)
    flat = xp.array(np.zeros(offsets[-1], F32))
    kernels.pack(arrays, flat)
    host = to_host(flat)
    for i in range(1000):
        assert (host[offsets[i] : offsets[i + 1]] == i).all()
    outs = [xp.zeros_like(a) for a in arrays]
    kernels.unpack(flat, outs)
    assert all(bool((to_host(o) == i).all()) for i, o in enumerate(outs))


def test_pack_of_nothing_writes_nothing(xp):
    flat = xp.array(np.ones(3, F32))
    assert kernels.pack([], flat) == 0 and kernels.unpack(flat, []) == 0
    assert kernels.packed_offsets([]) == [0]
    np.testing.assert_array_equal(to_host(flat), [1, 1, 1])


def test_array_module(xp):
    assert kernels.array_module(xp.ones(1)) is xp


def _layouts() -> list[np.ndarray]:
    base = np.arange(120, dtype=np.float64)
    cube = base.reshape(4, 5, 6)
    frozen = cube.copy()
    frozen.flags.writeable = False
    return [base, cube[::-1], cube[:, ::-2, 1:], cube.T, cube[1:1], cube[2, 3, 4:5],
            np.asfortranarray(cube)[::2], np.broadcast_to(base[7], (3, 4)), np.ones(()),
            cube.astype(BF16)[::-1, 2], cube.astype(np.int32)[:, :, ::-3], frozen, np.zeros(0),
            np.lib.stride_tricks.sliding_window_view(base, 5)[::7]]


def _touched_bytes(array: np.ndarray) -> tuple[int, int]:
    """From every element's own address: [lowest, highest + itemsize), or (0, 0)."""
    start = array.__array_interface__["data"][0]
    addresses = [start + sum(i * s for i, s in zip(index, array.strides))
                 for index in np.ndindex(*array.shape)]
    return (min(addresses), max(addresses) + array.itemsize) if addresses else (0, 0)


def test_byte_extents_are_where_the_elements_lie(tmp_path):
    arrays = _layouts()
    want = [_touched_bytes(a) for a in arrays]
    assert [kernels.byte_extent(a) for a in arrays] == want  # the reference twin
    assert kernels.byte_extents(arrays) == want  # compiled where built
    (tmp_path / "m").write_bytes(bytes(8))
    memmap = np.memmap(tmp_path / "m", dtype=np.uint8, mode="r")[::-2]
    assert kernels.byte_extents([memmap, arrays[1]]) == [_touched_bytes(memmap), want[1]]


def test_compiled_byte_extents_are_built_and_refuse_what_is_no_array():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the install leaves kernels._extents out, the twin runs")
    assert kernels._extents is not None, "kernels._extents is missing: re-run `pip install -e .`"
    arrays = _layouts()
    assert kernels._extents.byte_extents(arrays) == [_touched_bytes(a) for a in arrays]
    with pytest.raises(TypeError):
        kernels._extents.byte_extents([[1.0, 2.0]])
    with pytest.raises(TypeError, match="sequence of arrays"):
        kernels._extents.byte_extents(5)
    assert kernels.byte_extents(iter(arrays)) == kernels.byte_extents(arrays)  # read once


@pytest.mark.parametrize("call", ["_extents.byte_extents(arrays)",
                                  "_gather.gather(arrays, np.zeros(80000))",
                                  "_gather.scatter(np.zeros(80000), arrays)"])
def test_compiled_calls_survive_a_list_emptied_meanwhile(call):
    """Found by the thirty-second review: a finalizer run by the garbage collector while the
    extension built its answer emptied the list it read: a segfault."""
    module = call.split(".")[0]
    code = (
        "import gc, numpy as np, kernels\n"
        f"if kernels.{module} is None: raise SystemExit(0)\n"
        "arrays = [np.zeros(4) for _ in range(20000)]\n"
        "runs = 0\n"
        "class Bomb:\n"
        "    def __del__(self):\n"
        "        global runs\n"
        "        runs += 1\n"
        "        if runs == 50:\n"
        "            arrays.clear(); arrays.extend(object() for _ in range(100))\n"
        "        else:\n"
        "            arm()\n"
        "def arm():\n"
        "    bomb = Bomb(); bomb.cycle = bomb  # freed by the collector only\n"
        "arm(); gc.set_threshold(1)\n"
        f"result = kernels.{call}\n"
        "assert result in (20000, 80000) or len(result) == 20000, result\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_compiled_extents_the_twin_finds_the_clash():
    code = (
        "import sys\n"
        "sys.modules['kernels._extents'] = None  # as if the install had not built it\n"
        "import numpy as np, kernels\n"
        "from collectives.validation import check_outs\n"
        "assert kernels._extents is None\n"
        "a, b = np.zeros(8), np.ones(8)\n"
        "try:\n"
        "    check_outs((b, a), (a, b))\n"
        "except ValueError as error:\n"
        "    assert 'arrays[1] and out[0] share memory' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no clash found')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# compiled pack / unpack (kernels._gather)

def _require_gather() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the install leaves kernels._gather out, the twin runs")
    assert kernels._gather is not None, "kernels._gather is missing: re-run `pip install -e .`"


def _random_bits(dtype: np.dtype, shape: tuple, seed: int) -> np.ndarray:
    """Random bytes seen as dtype: NaN payloads, negative zeros and subnormals among them."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.random.default_rng(seed).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES + [np.dtype(np.uint8), np.dtype(np.int16)],
                         ids=str)
def test_compiled_gather_and_scatter_give_the_twins_bits(dtype):
    _require_gather()
    shapes = [(0,), (1,), (7,), (3, 5), (2, 0, 4), (), (1000,), (4, 3, 2)] * 40
    arrays = [_random_bits(dtype, shape, seed) for seed, shape in enumerate(shapes)]
    total = sum(a.size for a in arrays)
    twin, flat = np.full(total + 3, 7, dtype), np.full(total + 3, 7, dtype)
    assert kernels._numpy.pack(arrays, twin) == total
    assert kernels._gather.gather(arrays, flat) == total
    assert_same_bits(flat, twin)  # the 3 elements past the end untouched too
    outs = [np.zeros_like(a) for a in arrays]
    assert kernels._gather.scatter(flat, tuple(outs)) == total
    for out, a in zip(outs, arrays):
        assert_same_bits(out, a)


def _declined() -> dict:
    """case -> (arrays, flat, outs) that the byte copies must leave to the twin."""
    padded = np.dtype([("a", "u1"), ("b", "<u4")], align=True)  # 3 bytes NumPy never copies
    a, b = np.arange(6, dtype=np.float32), np.arange(4, dtype=np.float32).reshape(2, 2)
    flat = np.zeros(20, np.float32)
    frozen = flat.copy()
    frozen.flags.writeable = False
    frozen_out = np.zeros(6, np.float32)
    frozen_out.flags.writeable = False
    return {
        "strided": ([a, a[::2]], flat, [b, np.zeros(6, np.float32)[::2]]),
        "fortran": ([a, np.asfortranarray(b)], flat, [a.copy(), np.zeros((2, 2), np.float32, "F")]),
        "another dtype": ([a, np.ones(3)], flat, [a.copy(), np.zeros(3)]),
        "byte-swapped": ([a, a.astype(">f4")], flat, [a.copy(), np.zeros(6, ">f4")]),
        "subclass": ([a, np.ma.masked_array(b.ravel())], flat,
                     [a.copy(), np.ma.masked_array(np.zeros(4, np.float32))]),
        "not an array": ([a, [1.0, 2.0]], flat, [a.copy(), [0.0, 0.0]]),
        "flat too short": ([a, a, a, a], flat, [a.copy() for _ in range(4)]),
        "meets flat": ([a, flat[2:6]], flat, [a.copy(), flat[3:7]]),
        "read-only": ([a, b], frozen, [a.copy(), frozen_out]),
        "iterator": (iter([a, b]), flat, iter([a.copy(), b.copy()])),
        "flat 2-D": ([a], flat.reshape(4, 5), [a.copy()]),
        "objects": ([np.array([1, "x"], object)], np.zeros(3, object), [np.zeros(2, object)]),
        "no bytes (V0)": ([np.zeros(5, "V0")], np.zeros(2, "V0"), [np.zeros(5, "V0")]),
        "fields with padding": ([np.ones(2, padded)], np.zeros(3, padded), [np.zeros(2, padded)]),
    }


@pytest.mark.parametrize("case", list(_declined()), ids=str)
def test_compiled_gather_declines_what_a_byte_copy_gets_wrong(case):
    """NotImplemented before a byte moves (kernels.pack/unpack then run the twin, which
    casts, follows strides or raises its error)."""
    _require_gather()
    arrays, flat, outs = _declined()[case]
    written = [flat, *(o for o in outs if isinstance(o, np.ndarray))] \
        if isinstance(outs, list) else [flat]
    before = [w.copy() for w in written]
    assert kernels._gather.gather(arrays, flat) is NotImplemented
    assert kernels._gather.scatter(flat, outs) is NotImplemented
    for array, was in zip(written, before):  # (values where bytes say nothing: object
        plain = not (array.dtype.hasobject or array.dtype.names)  # arrays, padding)
        assert array.tobytes() == was.tobytes() if plain else array.tolist() == was.tolist()


def test_pack_and_unpack_outside_the_byte_copies_are_the_twins():
    for case, (arrays, flat, outs) in _declined().items():
        for name, args in (("pack", (arrays, flat)), ("unpack", (flat, outs))):
            if case == "iterator":
                continue  # read once: the same call cannot run twice
            try:
                want = getattr(kernels._numpy, name)(*args)
            except Exception as error:
                with pytest.raises(type(error)):
                    getattr(kernels, name)(*args)
            else:
                assert getattr(kernels, name)(*args) == want, (case, name)


def test_pack_asks_for_writes_only_where_it_writes():
    """Found by the thirty-seventh review: a pack of nothing into an array that warns on
    write (np.broadcast_arrays) warned, and spent its warning; the twin writes nothing."""
    flat, _ = np.broadcast_arrays(np.zeros((), np.float32), np.zeros(1, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.pack([np.zeros(0, np.float32)], flat) == 0
    with pytest.warns((DeprecationWarning, FutureWarning)):  # (still there for a real write)
        kernels.pack([np.ones(1, np.float32)], flat)


def test_compiled_gather_declines_a_total_past_the_largest_size():
    """Found by the thirty-sixth review: the byte count of 2**19 views of one 16 TiB
    mapping wrapped negative, passed the length check, and the copy wrote past flat (a
    segfault); the twin raises ValueError."""
    code = (
        "import ctypes, mmap, numpy as np, kernels\n"
        "if kernels._gather is None: raise SystemExit(0)\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,"
        " ctypes.c_int, ctypes.c_long]\n"
        "size = 1 << 44\n"
        "addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS"
        " | 0x4000, -1, 0)  # MAP_NORESERVE: nothing committed\n"
        "if addr in (None, 2 ** 64 - 1): raise SystemExit(0)  # no such mapping here\n"
        "class Mapping:\n"
        "    __array_interface__ = {'data': (addr, True), 'shape': (size,), 'typestr': '|u1',"
        " 'version': 3}\n"
        "arrays = [np.asarray(Mapping())] * (1 << 19)  # 2**63 bytes in all\n"
        "assert kernels._gather.gather(arrays, np.zeros(16, np.uint8)) is NotImplemented\n"
        "assert kernels._gather.scatter(np.zeros(16, np.uint8), arrays) is NotImplemented\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_compiled_gather_the_twin_packs():
    code = (
        "import sys\n"
        "sys.modules['kernels._gather'] = None  # as if the install had not built it\n"
        "import numpy as np, kernels\n"
        "assert kernels._gather is None\n"
        "arrays = [np.full(n, n, np.float32) for n in range(50)]\n"
        "flat = np.zeros(sum(range(50)), np.float32)\n"
        "assert kernels.pack(arrays, flat) == flat.size\n"
        "outs = [np.zeros_like(a) for a in arrays]\n"
        "assert kernels.unpack(flat, outs) == flat.size\n"
        "assert all((o == a).all() for o, a in zip(outs, arrays))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numpy_work_never_imports_cupy():
    code = (
        "import sys, numpy as np, kernels\n"
        "a = np.ones(3, np.float16); kernels.reduce_into(a, a, 'sum')\n"
        "assert kernels.array_module(a) is np and 'cupy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# The CUDA C of the CuPy twin, compiled for the host: the GPU code's arithmetic checked
# bit for bit against the NumPy twin on machines without a GPU. (On a GPU, the `xp`
# tests above run the real kernels.)

HOST_SHIM = r"""
#include <cmath>
#include <cstring>
using std::isfinite;
#define __device__
#define __global__
#define __forceinline__ inline
struct Dim { long long x; };
static const Dim blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline float __double2float_rz(double x) {  // to nearest, then back toward zero if past
  float t = (float)x;
  return std::fabs((double)t) > std::fabs(x) ? std::nextafter(t, 0.0f) : t;
}
"""
C_TYPES = {"uint16": "unsigned short", "float32": "float", "float64": "double", "int32": "int", "int64": "long long"}
SCALAR_PARAMS = {"scale", "divisor"}  # every other ElementwiseSpec parameter is an array


def host_function(spec) -> str:
    """An ElementwiseSpec as a host C function (n, params...) looping over the elements."""
    params = [p.split() for p in f"{spec.in_params}, {spec.out_params}".split(", ") if p]
    args, binds = ["long long n"], []
    for dtype, name in params:
        ctype = C_TYPES[dtype]
        if name in SCALAR_PARAMS:
            args.append(f"{ctype} {name}")
        else:
            args.append(f"{ctype}* {name}_p")
            binds.append(f"{ctype}& {name} = {name}_p[i];")
    body = " ".join(binds) + f" {spec.operation};"
    return f'extern "C" void {spec.name}({", ".join(args)}) {{ for (long long i = 0; i < n; ++i) {{ {body} }} }}\n'


def host_specs() -> list:
    """Every elementwise kernel the CuPy twin can build for the supported dtypes."""
    specs = [cuda.reduce_spec(d, d, op) for d in DTYPES for op in OPS]
    specs += [cuda.reduce_spec(F32, h, op) for h in HALVES for op in OPS]
    specs += [cuda.combine_spec(d, op) for d in DTYPES for op in OPS]
    specs += [cuda.scale_spec(s, d) for s in FLOATS for d in FLOATS]
    specs += [cuda.divide_spec(d) for d in DTYPES]
    specs += [cuda.encode_spec(h, w) for h in HALVES for w in (F32, F64)]
    specs += [cuda.quantize_spec(d, w, h) for d in FLOATS for w in (F32, F64) for h in HALVES]
    specs += [cuda.quantize_residual_spec(w, h) for w in (F32, F64) for h in HALVES]
    return specs


def host_reduction(spec) -> str:
    """A ReductionSpec as a host C function (n, x) -> the reduced value."""
    ctype = C_TYPES[spec.in_params.split()[0]]
    return (
        f'extern "C" double {spec.name}(long long n, const {ctype}* x_p) {{ double a = {spec.identity}, y; '
        f"for (long long i = 0; i < n; ++i) {{ {ctype} x = x_p[i]; double b = {spec.map_expr}; a = {spec.reduce_expr}; }} "
        f"{spec.post_map_expr}; return y; }}\n"
    )


@pytest.fixture(scope="module")
def host_cuda(tmp_path_factory) -> ctypes.CDLL:
    """The CUDA C compiled as a host shared library (skipped without a C++ compiler)."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a C++ compiler to check the CUDA C on the host")
    code = HOST_SHIM + cuda.PREAMBLE + "".join(map(host_function, host_specs()))
    code += "".join(host_reduction(cuda.absmax_spec(d)) for d in FLOATS)
    code += "".join(cuda.multi_copy_source(d, 4)[0] for d in ("pack", "unpack"))
    path = tmp_path_factory.mktemp("host_cuda")
    (path / "k.cpp").write_text(code)
    cmd = [compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC"]
    subprocess.run([*cmd, "-o", str(path / "k.so"), str(path / "k.cpp")], check=True)
    return ctypes.CDLL(str(path / "k.so"))


def call_host(lib, spec, *args) -> None:
    """Run spec's host function over the arrays (same size; 16-bit floats as bits) and scalars."""
    n = next(a.size for a in args if isinstance(a, np.ndarray))
    c_args = [ctypes.c_longlong(n)]
    for a in args:
        if isinstance(a, np.ndarray):
            c_args.append(ctypes.c_void_p(a.ctypes.data))
        else:
            c_args.append(ctypes.c_double(a) if isinstance(a, float) else ctypes.c_longlong(a))
    getattr(lib, spec.name)(*c_args)


def assert_same_bits_or_both_nan(got: np.ndarray, want: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        nan = np.isnan(want.astype(F64))
        np.testing.assert_array_equal(np.isnan(got.astype(F64)), nan)
    assert_same_bits(got[~nan], want[~nan])


def edge_values(dtype: np.dtype, n: int, seed: int) -> np.ndarray:
    """Random values with infs, NaNs, zeros, subnormals and huge values mixed in."""
    a = random_array(n, dtype, seed)
    if dtype.kind == "f":
        info = ml_dtypes.finfo(dtype) if dtype == BF16 else np.finfo(dtype)
        specials = [np.inf, -np.inf, np.nan, 0.0, -0.0, info.max, -info.max, info.smallest_subnormal, info.tiny]
        a[: len(specials)] = np.array(specials, dtype)
        with np.errstate(over="ignore"):
            a[len(specials) :: 13] *= dtype.type(1 << 12)
            a[len(specials) + 1 :: 13] /= dtype.type(1 << 12)
    return a


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype,src_dtype", [(d, d) for d in DTYPES] + [(F32, h) for h in HALVES], ids=str)
def test_host_cuda_reduce_matches_numpy(host_cuda, dtype, src_dtype, op):
    lib = host_cuda
    a, b = edge_values(dtype, 20_000, 9), edge_values(src_dtype, 20_000, 10)[::-1].copy()
    if dtype.kind == "f":
        b[3:5] = np.array([-0.0, 0.0], src_dtype)  # against a's +0, -0: which zero wins
    got, want = a.copy(), a.copy()
    call_host(lib, cuda.reduce_spec(dtype, src_dtype, op), b, got)
    kernels.reduce_into(want, b, op) if dtype == src_dtype else kernels.decompress_reduce_into(want, b, op)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_cuda_combine_matches_numpy(host_cuda, dtype, op):
    a, b = edge_values(dtype, 20_000, 12), edge_values(dtype, 20_000, 13)[::-1].copy()
    if dtype.kind == "f":
        b[3:5] = np.array([-0.0, 0.0], dtype)  # against a's +0, -0: which zero wins
    got, want = np.zeros_like(a), np.zeros_like(a)
    call_host(host_cuda, cuda.combine_spec(dtype, op), a, b, got)
    kernels.combine_into(want, a, b, op)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("scale", [1.0, 1 / 3, 2.0**-20])
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("src_dtype", FLOATS, ids=str)
def test_host_cuda_scale_matches_numpy(host_cuda, src_dtype, dst_dtype, scale):
    lib = host_cuda
    with np.errstate(over="ignore"):
        x = edge_values(src_dtype, 100_000, 11) * src_dtype.type(1 << 10)
    got, want = np.zeros(x.size, dst_dtype), np.zeros(x.size, dst_dtype)
    c_scale = scale if src_dtype == F64 else float(np.float32(scale))  # as the CuPy twin passes it
    call_host(lib, cuda.scale_spec(src_dtype, dst_dtype), x, c_scale, got)
    kernels.scale_into(want, x, scale)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("dst_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_host_cuda_decompress_matches_numpy_for_every_16_bit_pattern(host_cuda, wire, dst_dtype):
    lib = host_cuda
    every = np.arange(1 << 16, dtype=np.uint16).view(wire)
    got, want = np.zeros(every.size, dst_dtype), np.zeros(every.size, dst_dtype)
    call_host(lib, cuda.scale_spec(wire, dst_dtype), every, 1.0, got)
    kernels.decompress_into(want, every)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("dtype,divisor", [
    (d, v) for d in DTYPES
    for v in (1, 3, 257, 4099) + (() if d.kind == "i" else (0.75, 0.625))], ids=str)
def test_host_cuda_divide_matches_numpy(host_cuda, dtype, divisor):
    """Ints divide by the world size; floats by any divisor (a float16 avg over 3 ranks
    divides by 3/4 after scaling by 1/4)."""
    lib = host_cuda
    a = edge_values(dtype, 20_000, 12)
    a[:4] = np.array([-7, 7, -8, 1], dtype) if dtype.kind == "i" else a[:4]
    got, want = a.copy(), a.copy()
    call_host(lib, cuda.divide_spec(dtype), divisor if dtype.kind == "i" else float(divisor),
              got)
    kernels.divide_into(want, divisor)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("work_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_host_cuda_encode_matches_numpy(host_cuda, wire, work_dtype):
    with np.errstate(over="ignore"):
        work = edge_values(work_dtype, 100_000, 14) * work_dtype.type(1 << 10)
    got_work, want_work = work.copy(), work.copy()
    got_wire, want_wire = np.zeros(work.size, wire), np.zeros(work.size, wire)
    call_host(host_cuda, cuda.encode_spec(wire, work_dtype), got_wire, got_work)
    kernels.encode_into(want_wire, want_work)
    assert_same_bits_or_both_nan(got_wire, want_wire)
    assert_same_bits_or_both_nan(got_work, want_work)


@pytest.mark.parametrize("scale", [1.0, 1 / 3])
@pytest.mark.parametrize("dst_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("src_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_host_cuda_quantize_matches_numpy(host_cuda, wire, src_dtype, dst_dtype, scale):
    with np.errstate(over="ignore"):
        src = edge_values(src_dtype, 100_000, 15) * src_dtype.type(1 << 10)
    got, want = np.zeros(src.size, dst_dtype), np.zeros(src.size, dst_dtype)
    call_host(host_cuda, cuda.quantize_spec(dst_dtype, src_dtype, wire), src, scale, got)
    kernels.quantize_into(want, src, wire, scale)
    assert_same_bits_or_both_nan(got, want)


@pytest.mark.parametrize("scale", [1.0, 4096 / 3])
@pytest.mark.parametrize("work_dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("wire", HALVES, ids=str)
def test_host_cuda_quantize_residual_matches_numpy(host_cuda, wire, work_dtype, scale):
    work = edge_values(work_dtype, 100_000, 16)
    got_work, want_work = work.copy(), work.copy()
    got_residual, want_residual = np.zeros_like(work), np.zeros_like(work)
    call_host(host_cuda, cuda.quantize_residual_spec(work_dtype, wire), scale, got_work, got_residual)
    kernels.quantize_residual_into(want_work, want_residual, wire, scale)
    assert_same_bits_or_both_nan(got_work, want_work)
    assert_same_bits_or_both_nan(got_residual, want_residual)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_host_cuda_absmax_matches_numpy(host_cuda, dtype):
    x = edge_values(dtype, 20_000, 17)
    absmax = getattr(host_cuda, cuda.absmax_spec(dtype).name)
    absmax.restype = ctypes.c_double
    for data in (x, x[np.isfinite(x.astype(F64))], x[~np.isfinite(x.astype(F64))], x[:0]):
        got = absmax(ctypes.c_longlong(data.size), ctypes.c_void_p(data.ctypes.data))
        assert got == kernels.absmax(data)


def test_host_cuda_multi_copy_packs_and_unpacks(host_cuda):
    lib = host_cuda
    arrays = [np.full(i % 5, i, F32) for i in range(300)]  # empty tensors included
    offsets = kernels.packed_offsets(arrays)
    ptrs = np.array([a.ctypes.data for a in arrays], np.uint64)
    starts = np.array(offsets[:-1], np.int64)
    flat, want = np.zeros(offsets[-1], F32), np.zeros(offsets[-1], F32)
    kernels.pack(arrays, want)
    c_args = [ctypes.c_void_p(ptrs.ctypes.data), ctypes.c_void_p(starts.ctypes.data), ctypes.c_int(len(arrays))]
    lib.collectives_pack_32(*c_args, ctypes.c_void_p(flat.ctypes.data), ctypes.c_longlong(flat.size))
    assert_same_bits(flat, want)
    flat += 1
    lib.collectives_unpack_32(*c_args, ctypes.c_void_p(flat.ctypes.data), ctypes.c_longlong(flat.size))
    assert all((a == i + 1).all() for i, a in enumerate(arrays))
