// The codec's kernels for one instruction set.
//
// module.cpp includes this file once per ISA, inside that ISA's namespace, after defining
//   CODEC_TARGET  the function attribute naming the ISA (empty for the portable build)
//   CODEC_LANES   float32 lanes per vector: 4, 8 or 16 (16: AVX-512, whose intrinsics some
//                 lane conversions use)
//   CODEC_F16C    1: float16 conversions by the F16C / AVX-512 instructions; 0: bit arithmetic
// Everything is written on GCC/Clang vector extensions, so this one text is every ISA's code.
//
// The bits are those of the NumPy twin (kernels/_numpy.py), which defines them: float16 is
// converted as NumPy converts it, bfloat16 as ml_dtypes does, arithmetic runs in float32
// (float64 for a float64 operand) and every result is rounded once.

constexpr size_t L = CODEC_LANES;
typedef float f32v __attribute__((vector_size(4 * L)));
typedef double f64v __attribute__((vector_size(8 * L)));
typedef int32_t i32v __attribute__((vector_size(4 * L)));
typedef uint32_t u32v __attribute__((vector_size(4 * L)));
typedef int64_t i64v __attribute__((vector_size(8 * L)));
typedef uint64_t u64v __attribute__((vector_size(8 * L)));
typedef uint16_t u16v __attribute__((vector_size(2 * L)));

#define CODEC_INLINE CODEC_TARGET inline __attribute__((always_inline))
#define CODEC_LAMBDA CODEC_TARGET __attribute__((always_inline))

// ---- memory: k <= L elements to or from a vector (the tail of an array is a short k) ----

template <class V, class T> CODEC_INLINE V load_lanes(const T *p, size_t k) {
  V v = {};
  memcpy(&v, p, k * sizeof(T));
  return v;
}

template <class V, class T> CODEC_INLINE void store_lanes(T *p, V v, size_t k) {
  memcpy(p, &v, k * sizeof(T));
}

// body(i, k) for each vector of n elements: k == L, then once k < L for the tail.
template <class Body> CODEC_INLINE void each_vector(size_t n, Body body) {
  size_t i = 0;
  for (; i + L <= n; i += L) body(i, L);
  if (i < n) body(i, n - i);
}

// 16-bit lanes <-> 32-bit lanes (zero-extended; truncated)
CODEC_INLINE u32v to_u32_lanes(u16v h) {
#if CODEC_LANES == 16
  return (u32v)_mm512_cvtepu16_epi32((__m256i)h);
#else
  return __builtin_convertvector(h, u32v);
#endif
}
CODEC_INLINE u16v to_u16_lanes(u32v v) {
#if CODEC_LANES == 16
  return (u16v)_mm512_cvtepi32_epi16((__m512i)v);
#else
  return __builtin_convertvector(v, u16v);
#endif
}

// mask ? a : b, lane by lane (mask lanes are all ones or all zeros)
template <class V, class M> CODEC_INLINE V select(M mask, V a, V b) {
  return (V)((mask & (M)a) | (~mask & (M)b));
}

template <class V> using lane_t = std::remove_reference_t<decltype(V{}[0])>;
template <class V> CODEC_INLINE V splat(lane_t<V> x) { return V{} + x; }

// x * 1.0 as the NumPy twin computes it where it scales by 1: a signaling NaN becomes quiet,
// every other value stays as it is.
CODEC_INLINE f32v quiet(f32v x) { return select(x != x, (f32v)((i32v)x | 0x400000), x); }

// ---- float16 <-> float32 by bit arithmetic: NumPy's conversions, lane by lane ----

// Exact. A NaN keeps its sign and payload, and stays signaling if it was.
CODEC_INLINE f32v float16_to_float32_bits(u16v h16) {
  u32v h = to_u32_lanes(h16);
  u32v sign = (h & 0x8000u) << 16, shifted = (h & 0x7fffu) << 13;
  f32v finite = (f32v)shifted * 0x1p112f;  // rebias 15 -> 127, exact for subnormals too
  u32v special = shifted | 0x7f800000u;     // inf, NaN
  return (f32v)(select((i32v)shifted >= (0x7c00 << 13), special, (u32v)finite) | sign);
}

// To nearest even; 65520 and up become inf. A NaN keeps its sign and the top 10 bits of
// its payload (0x7c01 if those are zero): no quiet bit is forced.
CODEC_INLINE u16v float32_to_float16_bits(f32v f) {
  i32v mag = (i32v)f & 0x7fffffff;
  u32v sign = ((u32v)f >> 16) & 0x8000u, m = (u32v)mag;
  u32v normal = (m + 0xc8000fffu + ((m >> 13) & 1u)) >> 13;   // rebias 127 -> 15, round
  u32v subnormal = (u32v)((f32v)mag + 0.5f) - 0x3f000000u;    // the add rounds to 2^-24 units
  u32v payload = (m & 0x7fffffu) >> 13;
  u32v nan = 0x7c00u | payload | ((u32v)(payload == 0u) & 1u);
  u32v r = select(mag < 0x38800000, subnormal, normal);
  r = select(mag >= 0x477ff000, splat<u32v>(0x7c00u), r);
  r = select(mag > 0x7f800000, nan, r);
  return to_u16_lanes(r | sign);
}

#if CODEC_F16C
CODEC_INLINE bool any_nan(f32v f) {
#if CODEC_LANES == 16
  return _mm512_cmp_ps_mask((__m512)f, (__m512)f, _CMP_UNORD_Q) != 0;
#else
  return _mm256_movemask_ps(_mm256_cmp_ps((__m256)f, (__m256)f, _CMP_UNORD_Q)) != 0;
#endif
}

// The conversion instructions: they round exactly like NumPy but quiet a signaling NaN ...
CODEC_INLINE f32v float16_to_float32_f16c(u16v h) {
#if CODEC_LANES == 16
  return (f32v)_mm512_cvtph_ps((__m256i)h);
#else
  return (f32v)_mm256_cvtph_ps((__m128i)h);
#endif
}

CODEC_INLINE u16v float32_to_float16_f16c(f32v f) {
#if CODEC_LANES == 16
  return (u16v)_mm512_cvtps_ph((__m512)f, _MM_FROUND_TO_NEAREST_INT);
#else
  return (u16v)_mm256_cvtps_ph((__m256)f, _MM_FROUND_TO_NEAREST_INT);
#endif
}

// ... so a vector that holds a NaN goes the bit-arithmetic way instead.
CODEC_INLINE f32v float16_to_float32(u16v h) {
  f32v f = float16_to_float32_f16c(h);
  return __builtin_expect(any_nan(f), 0) ? float16_to_float32_bits(h) : f;
}

CODEC_INLINE u16v float32_to_float16(f32v f) {
  return __builtin_expect(any_nan(f), 0) ? float32_to_float16_bits(f) : float32_to_float16_f16c(f);
}
#else
CODEC_INLINE f32v float16_to_float32(u16v h) { return float16_to_float32_bits(h); }
CODEC_INLINE u16v float32_to_float16(f32v f) { return float32_to_float16_bits(f); }
#endif

// ---- bfloat16 <-> float32: ml_dtypes' conversions ----

CODEC_INLINE f32v bfloat16_to_float32(u16v h) {
  return (f32v)(to_u32_lanes(h) << 16);
}

// To nearest even (the largest floats become inf); any NaN becomes 0x7fc0 with its sign.
// The 16 bits in 32-bit lanes.
CODEC_INLINE u32v float32_to_bfloat16_lanes(f32v f) {
  u32v b = (u32v)f;
  u32v rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  u32v nan = ((b >> 16) & 0x8000u) | 0x7fc0u;
  return select(((i32v)b & 0x7fffffff) > 0x7f800000, nan, rounded);
}

// ---- float64 ----

CODEC_INLINE f32v magnitude(f32v x) { return (f32v)((u32v)x & 0x7fffffffu); }
CODEC_INLINE f64v magnitude(f64v x) { return (f64v)((u64v)x & 0x7fffffffffffffffu); }

// float64 -> float32 rounded to odd (toward zero, lowest bit set when inexact), so that the
// rounding to 16 bits that follows is the only one.
CODEC_INLINE f32v float64_to_float32_odd(f64v x) {
  f32v t = __builtin_convertvector(x, f32v);  // to nearest ...
  i64v past = magnitude(__builtin_convertvector(t, f64v)) > magnitude(x);
  t = (f32v)((i32v)t + __builtin_convertvector(past, i32v));  // ... one step back where it went past
  i64v inexact = __builtin_convertvector(t, f64v) != x;
  return (f32v)((i32v)t | (__builtin_convertvector(inexact, i32v) & 1));
}

// float32 -> float64 keeping a NaN's payload unquieted (NumPy's float16 -> float64 cast),
// where the conversion instruction would quiet it.
CODEC_INLINE f64v float32_to_float64_exact(f32v f) {
  u64v b = __builtin_convertvector((u32v)f, u64v);
  u64v nan = ((b & 0x80000000u) << 32) | 0x7ff0000000000000u | ((b & 0x7fffffu) << 29);
  i64v is_nan = __builtin_convertvector(f != f, i64v);
  return select(is_nan, (f64v)nan, __builtin_convertvector(f, f64v));
}

// ---- element types: how each is stored, and the vector its arithmetic runs in ----

// The 16-bit types: widen, narrow, and compress_keeping(f, kept): the bits compress_into(...,
// 1.0) writes for f, and in `kept` what decompress_into makes of them (each product by 1
// quiets a signaling NaN).
struct Float16 {
  using storage = uint16_t;
  using compute = f32v;
  static CODEC_INLINE f32v widen(u16v h) { return float16_to_float32(h); }
  static CODEC_INLINE u16v narrow(f32v f) { return float32_to_float16(f); }
  static CODEC_INLINE u16v compress_keeping(f32v f, f32v &kept) {
#if CODEC_F16C  // exact with any input: the instructions quiet a NaN just as the products by 1 do
    u16v h = float32_to_float16_f16c(f);
    kept = float16_to_float32_f16c(h);
#else
    u16v h = float32_to_float16_bits(quiet(f));
    kept = quiet(float16_to_float32_bits(h));
#endif
    return h;
  }
};

struct BFloat16 {
  using storage = uint16_t;
  using compute = f32v;
  static CODEC_INLINE f32v widen(u16v h) { return bfloat16_to_float32(h); }
  static CODEC_INLINE u16v narrow(f32v f) { return to_u16_lanes(float32_to_bfloat16_lanes(f)); }
  static CODEC_INLINE u16v compress_keeping(f32v f, f32v &kept) {  // any NaN: 0x7fc0, quiet
    u32v r = float32_to_bfloat16_lanes(f);
    kept = (f32v)(r << 16);
    return to_u16_lanes(r);
  }
};

struct Float32 {
  using storage = float;
  using compute = f32v;
};

struct Float64 {
  using storage = double;
  using compute = f64v;
};

template <class T> constexpr bool is_half = std::is_same_v<typename T::storage, uint16_t>;
template <class T> using storage_t = typename T::storage;
template <class T> using compute_t = typename T::compute;
template <class T> using scalar_t = lane_t<compute_t<T>>;

// k elements of type T, widened exactly to T's compute vector
template <class T> CODEC_INLINE compute_t<T> get(const storage_t<T> *p, size_t k) {
  if constexpr (is_half<T>) {
    return T::widen(load_lanes<u16v>(p, k));
  } else {
    return load_lanes<compute_t<T>>(p, k);
  }
}

// What a 16-bit type is narrowed from: v itself, or a float64 v rounded to odd in float32
// (so that the narrowing rounds once; the conversion quiets a NaN, as v * 1 would)
template <class V> CODEC_INLINE f32v float32_to_narrow(V v) {
  if constexpr (std::is_same_v<V, f64v>) {
    return float64_to_float32_odd(v);
  } else {
    return v;
  }
}

// v (f32v or f64v) rounded once to T, k elements stored
template <class T, class V> CODEC_INLINE void put(storage_t<T> *p, V v, size_t k) {
  if constexpr (is_half<T>) {
    store_lanes(p, T::narrow(float32_to_narrow(v)), k);
  } else {
    static_assert(sizeof(scalar_t<T>) >= sizeof(v[0]), "only widening stores are exact");
    store_lanes(p, __builtin_convertvector(v, compute_t<T>), k);
  }
}

// k 16-bit elements in W's compute type, as NumPy casts them: to float64, float16 goes
// exactly (a NaN unquieted) and bfloat16 through float32 (whose conversion quiets it).
template <class W, class H> CODEC_INLINE compute_t<W> get_as(const uint16_t *p, size_t k) {
  f32v f = get<H>(p, k);
  if constexpr (std::is_same_v<compute_t<W>, f32v>) {
    return f;
  } else if constexpr (std::is_same_v<H, Float16>) {
    return float32_to_float64_exact(f);
  } else {
    return __builtin_convertvector(f, f64v);
  }
}

// a (op) b like np.add / np.maximum / np.minimum in NumPy's vector loops: a NaN on either
// side wins, a's if both are (quieted by sum, as x86 does: the compiler may swap a + b, so
// that case is explicit); of equal values (+0, -0) max and min return b
template <Op op, class V> CODEC_INLINE V apply(V a, V b) {
  if constexpr (op == Op::sum) {
    return select(a != a, a + a, a + b);
  } else if constexpr (op == Op::max) {
    return select((a > b) | (a != a), a, b);
  } else {
    return select((a < b) | (a != a), a, b);
  }
}

// ---- the kernels: each a pass over c.n elements, vector by vector ----

// out = round(in * scale), the product in the input's compute type
template <class D, class S> CODEC_TARGET double scale(const Call &c) {
  auto *dst = (storage_t<D> *)c.out;
  auto *src = (const storage_t<S> *)c.in;
  const auto s = (scalar_t<S>)c.scalar;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA { put<D>(dst + i, get<S>(src + i, k) * s, k); });
  return 0;
}

// out = in (op) in2, in float32, rounded once
template <class H, Op op> CODEC_TARGET double combine(const Call &c) {
  auto *dst = (uint16_t *)c.out;
  auto *a = (const uint16_t *)c.in, *b = (const uint16_t *)c.in2;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    put<H>(dst + i, apply<op>(get<H>(a + i, k), get<H>(b + i, k)), k);
  });
  return 0;
}

// out = out / divisor, in float32, rounded once
template <class H> CODEC_TARGET double divide(const Call &c) {
  auto *buf = (uint16_t *)c.out;
  const float divisor = (float)c.scalar;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA { put<H>(buf + i, get<H>(buf + i, k) / divisor, k); });
  return 0;
}

// out = out (op) widen(in): the accumulate step of a compressed reduction
template <class W, class H, Op op> CODEC_TARGET double decompress_reduce(const Call &c) {
  auto *acc = (storage_t<W> *)c.out;
  auto *src = (const uint16_t *)c.in;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    put<W>(acc + i, apply<op>(get<W>(acc + i, k), get_as<W, H>(src + i, k)), k);
  });
  return 0;
}

// out = round16(in); in = widen(out): a send's payload, the sender keeping what it sent
template <class H, class W> CODEC_TARGET double encode(const Call &c) {
  auto *wire = (uint16_t *)c.out;
  auto *work = (storage_t<W> *)c.in;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    f32v kept;
    store_lanes(wire + i, H::compress_keeping(float32_to_narrow(get<W>(work + i, k)), kept), k);
    put<W>(work + i, kept, k);
  });
  return 0;
}

// out = round_D(widen(round16(in)) * scale), the product in float32
template <class D, class W, class H> CODEC_TARGET double quantize(const Call &c) {
  auto *dst = (storage_t<D> *)c.out;
  auto *src = (const storage_t<W> *)c.in;
  const float s = (float)c.scalar;
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    f32v kept;
    H::compress_keeping(float32_to_narrow(get<W>(src + i, k)), kept);
    put<D>(dst + i, kept * s, k);
  });
  return 0;
}

// t = out * scale; out = widen(round16(t)); in = (t - out) * (1 / scale), 0 where that is
// not finite (a NaN or inf input carries nothing into the next call): error feedback
template <class W, class H> CODEC_TARGET double quantize_residual(const Call &c) {
  auto *work = (storage_t<W> *)c.out;
  auto *residual = (storage_t<W> *)c.in;
  const auto s = (scalar_t<W>)c.scalar, inverse = (scalar_t<W>)(1.0 / c.scalar);
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    compute_t<W> t = get<W>(work + i, k) * s;
    f32v kept;
    H::compress_keeping(float32_to_narrow(t), kept);
    compute_t<W> q = __builtin_convertvector(kept, compute_t<W>);
    store_lanes(work + i, q, k);
    compute_t<W> r = (t - q) * inverse;
    store_lanes(residual + i, select(r - r == 0, r, compute_t<W>{}), k);  // r - r: NaN unless finite
  });
  return 0;
}

// max |v| over the finite elements v of in (0 if there are none)
template <class T> CODEC_TARGET double absmax(const Call &c) {
  using V = compute_t<T>;
  auto *x = (const storage_t<T> *)c.in;
  const V inf = splat<V>(INFINITY);
  V best = {};
  each_vector(c.n, [&](size_t i, size_t k) CODEC_LAMBDA {
    V a = magnitude(get<T>(x + i, k));
    best = select((a > best) & (a < inf), a, best);  // NaN compares false
  });
  double result = 0;
  for (size_t j = 0; j < L; ++j) result = best[j] > result ? best[j] : result;
  return result;
}

// ---- this ISA's table: kernels[i] computes signatures[i] (module.cpp) ----

template <Dtype d> struct element;
template <> struct element<Dtype::float16> { using type = Float16; };
template <> struct element<Dtype::bfloat16> { using type = BFloat16; };
template <> struct element<Dtype::float32> { using type = Float32; };
template <> struct element<Dtype::float64> { using type = Float64; };
template <Dtype d> using E = typename element<d>::type;

template <size_t I> constexpr Kernel kernel_for() {
  constexpr Signature s = signatures[I];
  if constexpr (s.kind == Kind::scale) return &scale<E<s.out>, E<s.in>>;
  if constexpr (s.kind == Kind::combine) return &combine<E<s.out>, s.op>;
  if constexpr (s.kind == Kind::divide) return &divide<E<s.out>>;
  if constexpr (s.kind == Kind::decompress_reduce) return &decompress_reduce<E<s.out>, E<s.in>, s.op>;
  if constexpr (s.kind == Kind::encode) return &encode<E<s.out>, E<s.in>>;
  if constexpr (s.kind == Kind::quantize) return &quantize<E<s.out>, E<s.in>, E<s.wire>>;
  if constexpr (s.kind == Kind::quantize_residual) return &quantize_residual<E<s.out>, E<s.wire>>;
  if constexpr (s.kind == Kind::absmax) return &absmax<E<s.in>>;
}

template <size_t... I> constexpr std::array<Kernel, sizeof...(I)> make_table(std::index_sequence<I...>) {
  return {{kernel_for<I>()...}};
}

constexpr auto kernels = make_table(std::make_index_sequence<signatures.size()>{});
