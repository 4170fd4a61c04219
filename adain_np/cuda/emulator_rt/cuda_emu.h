// Prelude for running CUDA C kernels on the CPU (see adain_np/cuda/emulator.py).
// It is included before the kernel source; the source itself is unchanged
// except that `extern __shared__ T name[];` is rewritten by the Python side.
#pragma once

#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>  // libstdc++'s wrapper: float overloads (sqrt(float)...) in ::
#include <type_traits>
#include <utility>

#define EMU_EXPORT __attribute__((visibility("default")))

// ---- qualifiers -----------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__
// Blocks run one after another, so block-shared arrays can live in static
// storage. The section lets the runtime find and poison them per block.
#define __shared__ __attribute__((section("emu_shared"))) static

// ---- vector types -----------------------------------------------------------
#define EMU_VEC2(T, N, A) struct __attribute__((aligned(A))) N##2 { T x, y; }; \
  static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define EMU_VEC3(T, N) struct N##3 { T x, y, z; }; \
  static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define EMU_VEC4(T, N, A) struct __attribute__((aligned(A))) N##4 { T x, y, z, w; }; \
  static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
#define EMU_VECS(T, N, A2, A4) EMU_VEC2(T, N, A2) EMU_VEC3(T, N) EMU_VEC4(T, N, A4)
EMU_VECS(float, float, 8, 16)
EMU_VECS(int, int, 8, 16)
EMU_VECS(unsigned int, uint, 8, 16)
EMU_VECS(double, double, 16, 16)
EMU_VECS(long long, longlong, 16, 16)
EMU_VECS(unsigned char, uchar, 2, 4)
EMU_VECS(char, char, 2, 4)
EMU_VECS(short, short, 4, 8)
EMU_VECS(unsigned short, ushort, 4, 8)
struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  operator uint3() const { return uint3{x, y, z}; }
};

// ---- runtime interface (emulator_rt/runtime.cpp) ----------------------------
namespace emu {
struct ThreadPublic { uint3 thread_idx; };
extern const ThreadPublic* g_cur;  // the running fiber
extern uint3 g_block_idx, g_block_dim, g_grid_dim;
extern unsigned char dyn_smem[];   // `extern __shared__` arrays point here

enum CollectiveKind { kShflIdx, kShflUp, kShflDown, kShflXor, kSyncWarp, kBallot,
                      kAny, kAll, kReduceAdd, kReduceMin, kReduceMax, kReduceMinU,
                      kReduceMaxU };
// Waits until every lane of `mask` reached the same collective, then returns
// this lane's result (raw bytes, sizeof(T) <= 8).
uint64_t warp_collective(int kind, const char* file, int line, unsigned mask,
                         uint64_t value, int size, int arg, int width);
int syncthreads(const char* file, int line, int predicate, int mode);
unsigned activemask();
[[noreturn]] void device_fail(const char* what, const char* file, int line);

template <class T> static inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp shuffles take 1-8 byte scalar values");
  uint64_t b = 0; std::memcpy(&b, &v, sizeof(T)); return b;
}
template <class T> static inline T from_bits(uint64_t b) { T v; std::memcpy(&v, &b, sizeof(T)); return v; }
template <class T> static inline T shfl(int kind, const char* f, int l, unsigned mask, T v, int arg, int width) {
  return from_bits<T>(warp_collective(kind, f, l, mask, to_bits(v), (int)sizeof(T), arg, width));
}
}  // namespace emu

#define threadIdx (::emu::g_cur->thread_idx)
#define blockIdx (static_cast<const ::uint3&>(::emu::g_block_idx))
#define blockDim (static_cast<const ::uint3&>(::emu::g_block_dim))
#define gridDim (static_cast<const ::uint3&>(::emu::g_grid_dim))
static constexpr int warpSize = 32;

// ---- synchronisation ------------------------------------------------------
#define __syncthreads() ((void)::emu::syncthreads(__FILE__, __LINE__, 0, 0))
#define __syncthreads_count(p) ::emu::syncthreads(__FILE__, __LINE__, (p) ? 1 : 0, 1)
#define __syncthreads_and(p) ::emu::syncthreads(__FILE__, __LINE__, (p) ? 1 : 0, 2)
#define __syncthreads_or(p) ::emu::syncthreads(__FILE__, __LINE__, (p) ? 1 : 0, 3)
#define __syncwarp(...) ((void)::emu::warp_collective(::emu::kSyncWarp, __FILE__, __LINE__, \
                                                      ::emu::syncwarp_mask(__VA_ARGS__), 0, 0, 0, 32))
namespace emu { static inline unsigned syncwarp_mask(unsigned m = 0xffffffffu) { return m; } }
#define __shfl_sync(m, v, ...) ::emu::shfl_args(::emu::kShflIdx, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) ::emu::shfl_args(::emu::kShflUp, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) ::emu::shfl_args(::emu::kShflDown, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) ::emu::shfl_args(::emu::kShflXor, __FILE__, __LINE__, m, v, __VA_ARGS__)
namespace emu {
template <class T> static inline T shfl_args(int k, const char* f, int l, unsigned m, T v, int arg, int width = 32) {
  return shfl<T>(k, f, l, m, v, arg, width);
}
}
#define __ballot_sync(m, p) ((unsigned)::emu::warp_collective(::emu::kBallot, __FILE__, __LINE__, m, (p) ? 1 : 0, 4, 0, 32))
#define __any_sync(m, p) ((int)::emu::warp_collective(::emu::kAny, __FILE__, __LINE__, m, (p) ? 1 : 0, 4, 0, 32))
#define __all_sync(m, p) ((int)::emu::warp_collective(::emu::kAll, __FILE__, __LINE__, m, (p) ? 1 : 0, 4, 0, 32))
#define __reduce_add_sync(m, v) ::emu::reduce_sync(::emu::kReduceAdd, __FILE__, __LINE__, m, v)
#define __reduce_min_sync(m, v) ::emu::reduce_sync(::emu::kReduceMin, __FILE__, __LINE__, m, v)
#define __reduce_max_sync(m, v) ::emu::reduce_sync(::emu::kReduceMax, __FILE__, __LINE__, m, v)
namespace emu {
static inline int reduce_sync(int k, const char* f, int l, unsigned m, int v) {
  return (int)warp_collective(k, f, l, m, (uint64_t)(int64_t)v, 4, 0, 32);
}
static inline unsigned reduce_sync(int k, const char* f, int l, unsigned m, unsigned v) {
  int ku = k == kReduceMin ? kReduceMinU : k == kReduceMax ? kReduceMaxU : k;
  return (unsigned)warp_collective(ku, f, l, m, v, 4, 0, 32);
}
}
static inline unsigned __activemask() { return ::emu::activemask(); }
static inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
#define __trap() ::emu::device_fail("__trap() called", __FILE__, __LINE__)
#undef assert
#define assert(e) ((e) ? (void)0 : ::emu::device_fail("assertion `" #e "` failed", __FILE__, __LINE__))

// ---- atomics: fibers of one launch run on one OS thread, so a plain
// read-modify-write is atomic with respect to every other CUDA thread.
#define EMU_ATOMIC(NAME, T, EXPR) \
  static inline T NAME(T* a, T v) { T old = *a; *a = (EXPR); return old; }
#define EMU_ATOMIC_ARITH(T) EMU_ATOMIC(atomicAdd, T, old + v) EMU_ATOMIC(atomicExch, T, v)
EMU_ATOMIC_ARITH(int) EMU_ATOMIC_ARITH(unsigned int) EMU_ATOMIC_ARITH(unsigned long long)
EMU_ATOMIC_ARITH(float) EMU_ATOMIC_ARITH(double)
#define EMU_ATOMIC_INT(T) EMU_ATOMIC(atomicSub, T, old - v) \
  EMU_ATOMIC(atomicMax, T, old < v ? v : old) EMU_ATOMIC(atomicMin, T, v < old ? v : old) \
  EMU_ATOMIC(atomicAnd, T, old & v) EMU_ATOMIC(atomicOr, T, old | v) EMU_ATOMIC(atomicXor, T, old ^ v)
EMU_ATOMIC_INT(int) EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC(atomicMax, long long, old < v ? v : old) EMU_ATOMIC(atomicMin, long long, v < old ? v : old)
EMU_ATOMIC(atomicMax, unsigned long long, old < v ? v : old)
EMU_ATOMIC(atomicMin, unsigned long long, v < old ? v : old)
static inline unsigned atomicInc(unsigned* a, unsigned v) { unsigned o = *a; *a = o >= v ? 0 : o + 1; return o; }
static inline unsigned atomicDec(unsigned* a, unsigned v) { unsigned o = *a; *a = (o == 0 || o > v) ? v : o - 1; return o; }
#define EMU_CAS(T) static inline T atomicCAS(T* a, T cmp, T v) { T o = *a; if (o == cmp) *a = v; return o; }
EMU_CAS(int) EMU_CAS(unsigned int) EMU_CAS(unsigned long long) EMU_CAS(unsigned short)

// ---- loads and bit casts ----------------------------------------------------
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class To, class From> static inline To emu_bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  To t; std::memcpy(&t, &v, sizeof(To)); return t;
}
static inline int __float_as_int(float x) { return emu_bit_cast<int>(x); }
static inline unsigned int __float_as_uint(float x) { return emu_bit_cast<unsigned int>(x); }
static inline float __int_as_float(int x) { return emu_bit_cast<float>(x); }
static inline float __uint_as_float(unsigned int x) { return emu_bit_cast<float>(x); }
static inline long long __double_as_longlong(double x) { return emu_bit_cast<long long>(x); }
static inline double __longlong_as_double(long long x) { return emu_bit_cast<double>(x); }

// ---- math: IEEE host versions of the CUDA fast intrinsics ------------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float fdividef(float a, float b) { return a / b; }
// glibc declares __expf, __logf... itself, so these go through macros.
namespace emu { namespace intrin {
static inline float __expf(float x) { return expf(x); }
static inline float __exp10f(float x) { return powf(10.0f, x); }
static inline float __logf(float x) { return logf(x); }
static inline float __log2f(float x) { return log2f(x); }
static inline float __log10f(float x) { return log10f(x); }
static inline float __powf(float a, float b) { return powf(a, b); }
static inline float __sinf(float x) { return sinf(x); }
static inline float __cosf(float x) { return cosf(x); }
static inline float __tanf(float x) { return tanf(x); }
static inline float __tanhf(float x) { return tanhf(x); }
static inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
} }
#define __expf ::emu::intrin::__expf
#define __exp10f ::emu::intrin::__exp10f
#define __logf ::emu::intrin::__logf
#define __log2f ::emu::intrin::__log2f
#define __log10f ::emu::intrin::__log10f
#define __powf ::emu::intrin::__powf
#define __sinf ::emu::intrin::__sinf
#define __cosf ::emu::intrin::__cosf
#define __tanf ::emu::intrin::__tanf
#define __tanhf ::emu::intrin::__tanhf
#define __sincosf ::emu::intrin::__sincosf
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
  unsigned r = 0; for (int i = 0; i < 32; ++i) { r = (r << 1) | (x & 1u); x >>= 1; } return r;
}
static inline int __mul24(int a, int b) { return a * b; }
static inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }

// CUDA's min/max overload set (same ambiguities as nvcc for mixed types).
#define EMU_MINMAX(R, A, B) \
  static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
  static inline R max(A a, B b) { return (R)a < (R)b ? (R)b : (R)a; }
EMU_MINMAX(int, int, int) EMU_MINMAX(unsigned int, unsigned int, unsigned int)
EMU_MINMAX(unsigned int, int, unsigned int) EMU_MINMAX(unsigned int, unsigned int, int)
EMU_MINMAX(long, long, long) EMU_MINMAX(unsigned long, unsigned long, unsigned long)
EMU_MINMAX(long long, long long, long long)
EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(float a, double b) { return fmin(a, b); }
static inline double max(float a, double b) { return fmax(a, b); }
static inline double min(double a, float b) { return fmin(a, b); }
static inline double max(double a, float b) { return fmax(a, b); }

#include "math_constants.h"

// Kernels may test these; the emulated device is an sm_90 (H100/H200).
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDA_ARCH__ 900
#define ADAIN_NP_EMULATOR 1

// ---- launcher: generated code appends EMU_DEFINE_LAUNCHER(kernel_name) ------
namespace emu {
int launch(const char* name, const unsigned* grid, const unsigned* block,
           unsigned long long shared_bytes, void (*body)(void*), void* args);

template <class T> struct Elem { using type = T; };
#define EMU_ELEM(V, T) template <> struct Elem<V> { using type = T; };
#define EMU_ELEMS(N, T) EMU_ELEM(N##2, T) EMU_ELEM(N##3, T) EMU_ELEM(N##4, T)
EMU_ELEMS(float, float) EMU_ELEMS(int, int) EMU_ELEMS(uint, unsigned int)
EMU_ELEMS(double, double) EMU_ELEMS(longlong, long long) EMU_ELEMS(uchar, unsigned char)
EMU_ELEMS(char, char) EMU_ELEMS(short, short) EMU_ELEMS(ushort, unsigned short)

// One letter per arithmetic kind: f(loat) i(nt) u(nsigned) b(ool) o(ther).
template <class T> constexpr char kind_of() {
  return std::is_same<T, bool>::value ? 'b'
       : std::is_floating_point<T>::value ? 'f'
       : std::is_integral<T>::value ? (std::is_signed<T>::value ? 'i' : 'u') : 'o';
}
// Parameter description "P<elem size><elem kind><c if const>:<align>" for
// pointers and "S<size><kind>" for by-value parameters, ';'-separated.
template <class P> void describe(char* out, size_t cap) {
  size_t n = std::strlen(out);
  if constexpr (std::is_pointer<P>::value) {
    using Pointee = std::remove_pointer_t<P>;
    using E = typename Elem<std::remove_cv_t<Pointee>>::type;
    constexpr size_t esize = std::is_void<E>::value ? 0 : sizeof(std::conditional_t<std::is_void<E>::value, char, E>);
    constexpr size_t align = std::is_void<E>::value ? 1 : alignof(std::conditional_t<std::is_void<Pointee>::value, char, std::remove_cv_t<Pointee>>);
    std::snprintf(out + n, cap - n, "P%zu%c%s:%zu;", esize, std::is_void<E>::value ? 'o' : kind_of<E>(),
                  std::is_const<Pointee>::value ? "c" : "", align);
  } else {
    std::snprintf(out + n, cap - n, "S%zu%c;", sizeof(P), kind_of<P>());
  }
}
template <class... P> const char* signature(void (*)(P...)) {
  static char buf[4096];
  buf[0] = 0;
  (describe<P>(buf, sizeof buf), ...);
  return buf;
}
template <class... P, size_t... I>
void invoke(void (*k)(P...), void** a, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<P>*>(a[I])...);
}
template <class... P> void invoke(void (*k)(P...), void** a) { invoke(k, a, std::index_sequence_for<P...>{}); }
}  // namespace emu

#define EMU_DEFINE_LAUNCHER(kname)                                                        \
  static void emu_kernel_body(void* a) { ::emu::invoke(&kname, static_cast<void**>(a)); } \
  extern "C" EMU_EXPORT const char* emu_signature(void) { return ::emu::signature(&kname); } \
  extern "C" EMU_EXPORT int emu_launch(const unsigned* grid, const unsigned* block,       \
                                       unsigned long long shared_bytes, void** args) {    \
    return ::emu::launch(#kname, grid, block, shared_bytes, &emu_kernel_body, args);      \
  }
