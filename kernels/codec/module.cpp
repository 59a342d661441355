// kernels._codec: the fp16/bf16 CPU kernels, compiled, with runtime CPU-feature dispatch.
//
// Python calls run(index, out, in, in2, scalar): kernel `index` of signatures() on the
// arrays' bytes. The kernels themselves are in simd.h, compiled here once per instruction
// set (portable C vectors; AVX2 + F16C; AVX-512), and the best one this CPU runs is used
// unless use() picks another (the tests run every one).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CODEC_X86 1
#include <immintrin.h>
#else
#define CODEC_X86 0
#endif

namespace codec {

enum class Kind : uint8_t { scale, combine, divide, decompress_reduce, encode, quantize, quantize_residual, absmax };
enum class Dtype : uint8_t { none, float16, bfloat16, float32, float64 };
enum class Op : uint8_t { none, sum, max, min };

// What a kernel computes (kind, op) on which arrays: `out` is written; `in` and `in2` are
// read (`in` is written too by encode and quantize_residual); `wire` is the 16-bit type the
// quantize kernels round through. See each kernel in simd.h.
struct Signature {
  Kind kind;
  Op op = Op::none;
  Dtype out = Dtype::none, in = Dtype::none, in2 = Dtype::none, wire = Dtype::none;
};

constexpr bool is_half(Dtype d) { return d == Dtype::float16 || d == Dtype::bfloat16; }

// Every kernel the codec offers, in table order (the rest of kernels' work stays NumPy's).
template <class Emit> constexpr void each_signature(Emit emit) {
  constexpr Dtype halves[] = {Dtype::float16, Dtype::bfloat16};
  constexpr Dtype wides[] = {Dtype::float32, Dtype::float64};
  constexpr Dtype floats[] = {Dtype::float16, Dtype::bfloat16, Dtype::float32, Dtype::float64};
  constexpr Op ops[] = {Op::sum, Op::max, Op::min};
  for (Dtype x : floats) emit(Signature{Kind::absmax, Op::none, Dtype::none, x});
  for (Dtype dst : floats) {
    for (Dtype src : floats) {
      if (is_half(dst) || is_half(src)) emit(Signature{Kind::scale, Op::none, dst, src});
    }
  }
  for (Dtype h : halves) {
    for (Op op : ops) emit(Signature{Kind::combine, op, h, h, h});
    emit(Signature{Kind::divide, Op::none, h});
    for (Dtype w : wides) {
      for (Op op : ops) emit(Signature{Kind::decompress_reduce, op, w, h});
      emit(Signature{Kind::encode, Op::none, h, w});
      for (Dtype out : floats) emit(Signature{Kind::quantize, Op::none, out, w, Dtype::none, h});
      emit(Signature{Kind::quantize_residual, Op::none, w, w, Dtype::none, h});
    }
  }
}

constexpr size_t signature_count() {
  size_t n = 0;
  each_signature([&n](Signature) { ++n; });
  return n;
}

constexpr std::array<Signature, signature_count()> make_signatures() {
  std::array<Signature, signature_count()> all{};
  size_t n = 0;
  each_signature([&](Signature s) { all[n++] = s; });
  return all;
}

constexpr auto signatures = make_signatures();

// One kernel call: c.n elements of each array (in and in2 may be null where unused).
struct Call {
  void *out;
  void *in;
  const void *in2;
  double scalar;
  size_t n;
};
using Kernel = double (*)(const Call &);

namespace portable {
#define CODEC_TARGET
#define CODEC_LANES 4
#define CODEC_F16C 0
#include "simd.h"
#undef CODEC_TARGET
#undef CODEC_LANES
#undef CODEC_F16C
#undef CODEC_INLINE
#undef CODEC_LAMBDA
}  // namespace portable

#if CODEC_X86
namespace avx2 {
#define CODEC_TARGET __attribute__((target("avx2,f16c")))
#define CODEC_LANES 8
#define CODEC_F16C 1
#include "simd.h"
#undef CODEC_TARGET
#undef CODEC_LANES
#undef CODEC_F16C
#undef CODEC_INLINE
#undef CODEC_LAMBDA
}  // namespace avx2

namespace avx512 {
#define CODEC_TARGET __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define CODEC_LANES 16
#define CODEC_F16C 1
#include "simd.h"
#undef CODEC_TARGET
#undef CODEC_LANES
#undef CODEC_F16C
#undef CODEC_INLINE
#undef CODEC_LAMBDA
}  // namespace avx512
#endif

// ---- instruction sets ----

struct Isa {
  const char *name;
  const Kernel *kernels;
  bool (*runs_here)();
};

const Isa isas[] = {
    {"portable", portable::kernels.data(), [] { return true; }},
#if CODEC_X86
    {"avx2", avx2::kernels.data(),
     [] {
       __builtin_cpu_init();
       return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
     }},
    {"avx512", avx512::kernels.data(),
     [] {
       __builtin_cpu_init();
       return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
              __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
     }},
#endif
};
constexpr size_t isa_count = sizeof(isas) / sizeof(isas[0]);

const Isa *active = &isas[0];  // set to the best at import

// ---- Python glue ----

const char *dtype_name(Dtype d) {
  static const char *const names[] = {nullptr, "float16", "bfloat16", "float32", "float64"};
  return names[(int)d];
}

size_t itemsize(Dtype d) { return d == Dtype::float64 ? 8 : d == Dtype::float32 ? 4 : 2; }

// An argument's bytes, held while the kernel runs.
struct Buffer {
  Py_buffer view{};
  bool held = false;
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
  // Acquire obj's bytes: false if obj is not a C-contiguous buffer (writable if asked).
  bool acquire(PyObject *obj, bool writable) {
    held = PyObject_GetBuffer(obj, &view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0;
    if (!held) PyErr_Clear();
    return held;
  }
};

constexpr Py_ssize_t kReleaseGilFrom = 1 << 14;  // elements: below, the GIL round trip costs more

// Whether two arrays share memory without being the same array (which a kernel may not
// take: it reads and writes element by element, where NumPy would copy first).
bool overlap_apart(const Py_buffer &a, const Py_buffer &b) {
  const char *a0 = (const char *)a.buf, *b0 = (const char *)b.buf;
  return a0 != b0 && a0 < b0 + b.len && b0 < a0 + a.len;
}

// run(index, out, in, in2, scalar): kernel `index` on the arrays' bytes. Returns
// NotImplemented, touching nothing, where an array is not a C-contiguous buffer (writable
// where written), the lengths differ, or arrays overlap without being the same: NumPy's
// twin then decides what that means.
PyObject *run(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "run(index, out, in, in2, scalar) takes 5 arguments");
    return nullptr;
  }
  Py_ssize_t index = PyLong_AsSsize_t(args[0]);
  if (index < 0 || index >= (Py_ssize_t)signatures.size()) {
    if (!PyErr_Occurred()) PyErr_Format(PyExc_IndexError, "no kernel %zd", index);
    return nullptr;
  }
  double scalar = PyFloat_AsDouble(args[4]);
  if (scalar == -1.0 && PyErr_Occurred()) return nullptr;
  const Signature &s = signatures[index];
  const Dtype dtypes[3] = {s.out, s.in, s.in2};
  const bool writable[3] = {true, s.kind == Kind::encode || s.kind == Kind::quantize_residual, false};
  Buffer buffers[3];
  Py_ssize_t n = -1;  // elements, from the first array
  for (int j = 0; j < 3; ++j) {
    if (dtypes[j] == Dtype::none) continue;
    if (!buffers[j].acquire(args[j + 1], writable[j])) Py_RETURN_NOTIMPLEMENTED;
    const Py_ssize_t size = (Py_ssize_t)itemsize(dtypes[j]), count = buffers[j].view.len / size;
    if (n < 0) n = count;
    if (count != n || buffers[j].view.len != count * size) Py_RETURN_NOTIMPLEMENTED;
    for (int i = 0; i < j; ++i) {
      if (buffers[i].held && overlap_apart(buffers[i].view, buffers[j].view)) Py_RETURN_NOTIMPLEMENTED;
    }
  }
  Call call{buffers[0].view.buf, buffers[1].view.buf, buffers[2].view.buf, scalar, (size_t)n};
  Kernel kernel = active->kernels[index];
  double result;
  if (n >= kReleaseGilFrom) {
    Py_BEGIN_ALLOW_THREADS result = kernel(call);
    Py_END_ALLOW_THREADS
  } else {
    result = kernel(call);
  }
  if (s.kind == Kind::absmax) return PyFloat_FromDouble(result);
  Py_RETURN_NONE;
}

PyObject *name_or_none(const char *name) {
  if (name == nullptr) Py_RETURN_NONE;
  return PyUnicode_FromString(name);
}

PyObject *signatures_tuple(PyObject *, PyObject *) {
  static const char *const kinds[] = {"scale", "combine", "divide", "decompress_reduce",
                                      "encode", "quantize", "quantize_residual", "absmax"};
  static const char *const ops[] = {nullptr, "sum", "max", "min"};
  PyObject *all = PyTuple_New((Py_ssize_t)signatures.size());
  if (all == nullptr) return nullptr;
  for (size_t i = 0; i < signatures.size(); ++i) {
    const Signature &s = signatures[i];
    PyObject *row = Py_BuildValue("(sNNNNN)", kinds[(int)s.kind], name_or_none(ops[(int)s.op]),
                                  name_or_none(dtype_name(s.out)), name_or_none(dtype_name(s.in)),
                                  name_or_none(dtype_name(s.in2)), name_or_none(dtype_name(s.wire)));
    if (row == nullptr) {
      Py_DECREF(all);
      return nullptr;
    }
    PyTuple_SET_ITEM(all, (Py_ssize_t)i, row);
  }
  return all;
}

PyObject *supported_isas(PyObject *, PyObject *) {
  PyObject *names = PyList_New(0);
  for (size_t i = 0; names != nullptr && i < isa_count; ++i) {
    if (isas[i].runs_here() && PyList_Append(names, PyUnicode_FromString(isas[i].name)) < 0) {
      Py_CLEAR(names);
    }
  }
  return names;
}

PyObject *use(PyObject *, PyObject *arg) {
  const char *name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  for (size_t i = 0; i < isa_count; ++i) {
    if (strcmp(isas[i].name, name) == 0 && isas[i].runs_here()) {
      const char *previous = active->name;
      active = &isas[i];
      return PyUnicode_FromString(previous);
    }
  }
  PyErr_Format(PyExc_ValueError, "instruction set %R is not one this CPU runs", arg);
  return nullptr;
}

PyObject *active_isa(PyObject *, PyObject *) { return PyUnicode_FromString(active->name); }

PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(index, out, in, in2, scalar): kernel `index` of signatures() on C-contiguous buffers\n"
     "of equal length; NotImplemented (nothing done) where the arrays are not such buffers."},
    {"signatures", signatures_tuple, METH_NOARGS,
     "The kernels, in index order: (kind, op, out, in, in2, wire) with dtype names or None."},
    {"isas", supported_isas, METH_NOARGS, "The instruction sets this CPU runs, best last."},
    {"use", use, METH_O, "use(name): run the kernels of that instruction set; returns the previous one."},
    {"isa", active_isa, METH_NOARGS, "The instruction set the kernels run now."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "kernels._codec",
                      "fp16/bf16 CPU kernels with runtime CPU-feature dispatch (see kernels/_cpu.py).",
                      -1, methods};

}  // namespace codec

PyMODINIT_FUNC PyInit__codec(void) {
  for (const codec::Isa &isa : codec::isas) {
    if (isa.runs_here()) codec::active = &isa;
  }
  return PyModule_Create(&codec::module);
}
