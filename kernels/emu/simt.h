// SIMT emulation header: compiles kernels/*.cu unchanged as host C++20 (g++/clang++) so every CUDA
// kernel runs on the CPU in tests (feature `emu`; build/emu.rs compiles and glues them, the runtime is
// kernels/emu/simt_runtime.cpp, docs/testing.md says what this proves and what it cannot).
//
// Execution model
//   - A launch runs its blocks one after another (one launch at a time in the process). The threads of
//     a block are real host threads from a reusable pool, so __syncthreads() is a real barrier and
//     ThreadSanitizer sees real concurrency between the threads of a block.
//   - threadIdx/blockIdx/blockDim/gridDim are thread_local variables set by the runtime per emulated
//     thread (read-only through the macros below).
//   - Warps are 32 consecutive linear thread ids. __shfl_*_sync/__ballot_sync/__any_sync/__all_sync/
//     __syncwarp/__reduce_*_sync exchange through per-warp slots with a warp barrier; the lanes that
//     take part are `mask` minus the lanes a partial last warp does not have. Reading a lane that did
//     not take part yields a poison value (all bits set: NaN for float), as it is undefined on a GPU.
//   - A barrier that cannot complete (threads exited, or wait at a different __syncthreads, or at a
//     warp collective whose lanes are gone) is detected deterministically when every live thread of
//     the block is waiting; the launch fails with the kernel name and the barrier's file:line.
//
// Shared memory (limits)
//   - `__shared__ T x[N];` becomes a `static` variable: one instance per kernel, and since blocks run one
//     at a time, per block. Contents are not cleared between blocks (undefined on a GPU too).
//     AddressSanitizer reports overruns of a __shared__ array as global-buffer-overflow. An overrun
//     within one array (e.g. tile[0][33] of tile[32][33]) is not detected (compute-sanitizer neither).
//   - `extern __shared__ T s[];` is rewritten by build/emu.rs (the only source rewrite) to a pointer into
//     the launch's dynamic arena: exactly `shared_bytes` of heap, so ASan reports any overrun, and filled
//     with 0xFF (NaN) before each block so reading it before writing it shows up in results.
//   - Static shared sizes are not known to the emulator; the 48 KiB limit is checked on the dynamic
//     size plus the static size nvcc's ptxas reported for the kernel, when nvcc ran at build time.
//
// Other limits: no inline PTX (guard it with `#ifdef __CUDA_ARCH__`, which is never defined here, or
// `#ifndef ATTNAS_SIMT_EMU`); __constant__ and __device__ globals are plain host globals; clock64() is
// host time; no tensor cores, no cp.async, no cooperative groups; timing and cross-block memory ordering
// are those of the host.
#pragma once

#include <atomic>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>  // device printf is host printf
#include <cstring>
#include <type_traits>

#define ATTNAS_SIMT_EMU 1

// ---- CUDA keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __noinline__ is defined at the end: libstdc++ spells __attribute__((__noinline__)) itself.
#define __shared__ static

// ---- vector and index types ----------------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
#define SIMT_VEC2(T, N, A) \
    struct alignas(A) N { T x, y; }; \
    inline N make_##N(T x, T y) { return N{x, y}; }
#define SIMT_VEC3(T, N) \
    struct N { T x, y, z; }; \
    inline N make_##N(T x, T y, T z) { return N{x, y, z}; }
#define SIMT_VEC4(T, N, A) \
    struct alignas(A) N { T x, y, z, w; }; \
    inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }
SIMT_VEC2(float, float2, 8)
SIMT_VEC3(float, float3)
SIMT_VEC4(float, float4, 16)
SIMT_VEC2(int, int2, 8)
SIMT_VEC3(int, int3)
SIMT_VEC4(int, int4, 16)
SIMT_VEC2(unsigned, uint2, 8)
SIMT_VEC4(unsigned, uint4, 16)
SIMT_VEC2(double, double2, 16)
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
#undef SIMT_VEC2
#undef SIMT_VEC3
#undef SIMT_VEC4

constexpr int warpSize = 32;

namespace simt {

// One kernel in the generated glue's tables (mirrored by src/backend/cuda/emu.rs).
struct KernelEntry {
    const char* name;
    // One letter per parameter in signature order: p pointer, i int, u unsigned, f float,
    // l long long, q unsigned long long / size_t.
    const char* kinds;
    // Unpacks a cuLaunchKernel-style `void** args` and calls the kernel (one emulated thread).
    void (*run)(void** args);
    // KERNEL_INDEPENDENT_THREADS: neither the kernel nor any function or macro it names (transitively)
    // mentions __shared__, a barrier or a warp intrinsic (build/emu_classify.rs), so its threads cannot
    // cooperate and may run one after another on a few host threads.
    unsigned flags;
};
constexpr unsigned KERNEL_INDEPENDENT_THREADS = 1u;

// Per emulated thread, set by the runtime before the kernel body runs.
extern thread_local uint3 tls_thread_idx;
extern thread_local uint3 tls_block_idx;
extern thread_local dim3 tls_block_dim;
extern thread_local dim3 tls_grid_dim;

// Runtime hooks (simt_runtime.cpp). `site` is "file:line" of the call in the kernel source.
void syncthreads(const char* site);
int syncthreads_count(int pred, const char* site);
// Warp collective: every lane in `mask` deposits `value` (8 bytes) and gets back the 32 slots and the
// mask of lanes that took part. `kind` names the intrinsic for error messages.
void warp_exchange(unsigned mask, uint64_t value, const char* kind, const char* site, uint64_t out[32],
                   unsigned* took_part);
// The dynamic shared arena of the running launch (`extern __shared__`).
unsigned char* dynamic_shared();
// Kernel trap (__trap, failed device assert): fails the launch with the message.
[[noreturn]] void trap(const char* what, const char* site);

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp intrinsics move up to 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
inline unsigned lane_id() {
    unsigned linear = tls_thread_idx.x + tls_block_dim.x * (tls_thread_idx.y + tls_block_dim.y * tls_thread_idx.z);
    return linear % 32u;
}
constexpr uint64_t POISON = ~uint64_t(0);

template <class T>
inline T shfl(unsigned mask, T var, int src, const char* kind, const char* site) {
    uint64_t slots[32];
    unsigned took = 0;
    warp_exchange(mask, to_bits(var), kind, site, slots, &took);
    if (src < 0 || src > 31 || !((took >> src) & 1u)) return from_bits<T>(POISON);
    return from_bits<T>(slots[src]);
}

}  // namespace simt

#define threadIdx (static_cast<const uint3&>(::simt::tls_thread_idx))
#define blockIdx (static_cast<const uint3&>(::simt::tls_block_idx))
#define blockDim (static_cast<const dim3&>(::simt::tls_block_dim))
#define gridDim (static_cast<const dim3&>(::simt::tls_grid_dim))

#define SIMT_STR2(x) #x
#define SIMT_STR(x) SIMT_STR2(x)
#define SIMT_SITE __FILE__ ":" SIMT_STR(__LINE__)

// `extern __shared__ T name[];` after build/emu.rs's rewrite (function scope).
#define SIMT_EXTERN_SHARED(T, name) T* const name = reinterpret_cast<T*>(::simt::dynamic_shared())

// ---- barriers and warp intrinsics ---------------------------------------------------------------
#define __syncthreads() ::simt::syncthreads(SIMT_SITE)
#define __syncthreads_count(p) ::simt::syncthreads_count((p) ? 1 : 0, SIMT_SITE)
#define __syncthreads_and(p) (::simt::syncthreads_count((p) ? 1 : 0, SIMT_SITE) == (int)(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(p) (::simt::syncthreads_count((p) ? 1 : 0, SIMT_SITE) != 0)
#define __syncwarp(...) ::simt::syncwarp_impl(SIMT_SITE __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(mask, var, ...) ::simt::shfl_idx_impl(mask, var, SIMT_SITE, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) ::simt::shfl_up_impl(mask, var, SIMT_SITE, __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) ::simt::shfl_down_impl(mask, var, SIMT_SITE, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) ::simt::shfl_xor_impl(mask, var, SIMT_SITE, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::simt::ballot_impl(mask, (pred) ? 1 : 0, SIMT_SITE)
#define __any_sync(mask, pred) (::simt::ballot_impl(mask, (pred) ? 1 : 0, SIMT_SITE) != 0u)
#define __all_sync(mask, pred) ::simt::all_impl(mask, (pred) ? 1 : 0, SIMT_SITE)
#define __reduce_add_sync(mask, v) ::simt::reduce_impl(mask, v, 0, SIMT_SITE)
#define __reduce_min_sync(mask, v) ::simt::reduce_impl(mask, v, 1, SIMT_SITE)
#define __reduce_max_sync(mask, v) ::simt::reduce_impl(mask, v, 2, SIMT_SITE)
#define __trap() ::simt::trap("__trap()", SIMT_SITE)
// A failed device assert fails the launch (cudaErrorAssert on a GPU) instead of aborting the process.
#undef assert
#define assert(e) ((e) ? (void)0 : ::simt::trap("assert(" #e ") failed", SIMT_SITE))

namespace simt {

inline void syncwarp_impl(const char* site, unsigned mask = 0xffffffffu) {
    uint64_t slots[32];
    unsigned took = 0;
    warp_exchange(mask, 0, "__syncwarp", site, slots, &took);
}

// Lane arithmetic as the CUDA programming guide defines it for sub-warp `width` segments.
template <class T>
inline T shfl_idx_impl(unsigned mask, T var, const char* site, int src, int width = 32) {
    int lane = (int)lane_id();
    int base = lane & ~(width - 1);
    return shfl(mask, var, base + (src & (width - 1)), "__shfl_sync", site);
}
template <class T>
inline T shfl_up_impl(unsigned mask, T var, const char* site, unsigned delta, int width = 32) {
    int lane = (int)lane_id();
    int in_seg = lane & (width - 1);
    int src = in_seg >= (int)delta ? lane - (int)delta : lane;
    return shfl(mask, var, src, "__shfl_up_sync", site);
}
template <class T>
inline T shfl_down_impl(unsigned mask, T var, const char* site, unsigned delta, int width = 32) {
    int lane = (int)lane_id();
    int in_seg = lane & (width - 1);
    int src = in_seg + (int)delta < width ? lane + (int)delta : lane;
    return shfl(mask, var, src, "__shfl_down_sync", site);
}
template <class T>
inline T shfl_xor_impl(unsigned mask, T var, const char* site, int lane_mask, int width = 32) {
    int lane = (int)lane_id();
    int src = lane ^ lane_mask;
    // a later segment is out of reach: the lane keeps its own value
    if ((src & ~(width - 1)) > (lane & ~(width - 1))) src = lane;
    return shfl(mask, var, src, "__shfl_xor_sync", site);
}
inline unsigned ballot_impl(unsigned mask, int pred, const char* site) {
    uint64_t slots[32];
    unsigned took = 0;
    warp_exchange(mask, (uint64_t)pred, "__ballot_sync", site, slots, &took);
    unsigned r = 0;
    for (int l = 0; l < 32; ++l)
        if (((took >> l) & 1u) && slots[l]) r |= 1u << l;
    return r;
}
inline bool all_impl(unsigned mask, int pred, const char* site) {
    uint64_t slots[32];
    unsigned took = 0;
    warp_exchange(mask, (uint64_t)pred, "__all_sync", site, slots, &took);
    for (int l = 0; l < 32; ++l)
        if (((took >> l) & 1u) && !slots[l]) return false;
    return true;
}
template <class T>
inline T reduce_impl(unsigned mask, T v, int op, const char* site) {
    static_assert(std::is_integral_v<T>, "__reduce_*_sync takes int or unsigned");
    uint64_t slots[32];
    unsigned took = 0;
    warp_exchange(mask, to_bits(v), "__reduce_*_sync", site, slots, &took);
    bool first = true;
    T r = 0;
    for (int l = 0; l < 32; ++l) {
        if (!((took >> l) & 1u)) continue;
        T x = from_bits<T>(slots[l]);
        r = first ? x : op == 0 ? T(r + x) : op == 1 ? (x < r ? x : r) : (x > r ? x : r);
        first = false;
    }
    return r;
}
inline unsigned activemask_impl() { return 0xffffffffu; }

}  // namespace simt

// All lanes are reported active: the emulator cannot know which lanes a GPU would have converged.
#define __activemask() ::simt::activemask_impl()

// ---- atomics (std::atomic_ref: seen by ThreadSanitizer) ------------------------------------------
#define SIMT_ATOMIC_RMW(NAME, OP)                                                   \
    template <class T>                                                              \
    inline T NAME(T* addr, T v) {                                                   \
        return std::atomic_ref<T>(*addr).OP(v, std::memory_order_relaxed);          \
    }
SIMT_ATOMIC_RMW(atomicAdd, fetch_add)
SIMT_ATOMIC_RMW(atomicSub, fetch_sub)
SIMT_ATOMIC_RMW(atomicAnd, fetch_and)
SIMT_ATOMIC_RMW(atomicOr, fetch_or)
SIMT_ATOMIC_RMW(atomicXor, fetch_xor)
#undef SIMT_ATOMIC_RMW

template <class T>
inline T atomicExch(T* addr, T v) {
    return std::atomic_ref<T>(*addr).exchange(v, std::memory_order_relaxed);
}
template <class T>
inline T atomicCAS(T* addr, T compare, T v) {
    std::atomic_ref<T>(*addr).compare_exchange_strong(compare, v, std::memory_order_relaxed);
    return compare;  // the old value in both outcomes
}
template <class T>
inline T atomicMax(T* addr, T v) {
    std::atomic_ref<T> a(*addr);
    T old = a.load(std::memory_order_relaxed);
    while (old < v && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
template <class T>
inline T atomicMin(T* addr, T v) {
    std::atomic_ref<T> a(*addr);
    T old = a.load(std::memory_order_relaxed);
    while (v < old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
inline unsigned atomicInc(unsigned* addr, unsigned limit) {
    std::atomic_ref<unsigned> a(*addr);
    unsigned old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, old >= limit ? 0u : old + 1u, std::memory_order_relaxed)) {
    }
    return old;
}
inline unsigned atomicDec(unsigned* addr, unsigned limit) {
    std::atomic_ref<unsigned> a(*addr);
    unsigned old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, (old == 0u || old > limit) ? limit : old - 1u, std::memory_order_relaxed)) {
    }
    return old;
}
#define SIMT_ATOMIC_ALIAS(N) \
    template <class T>       \
    inline T N##_block(T* a, T v) { return N(a, v); } \
    template <class T>       \
    inline T N##_system(T* a, T v) { return N(a, v); }
SIMT_ATOMIC_ALIAS(atomicAdd)
SIMT_ATOMIC_ALIAS(atomicMax)
SIMT_ATOMIC_ALIAS(atomicMin)
#undef SIMT_ATOMIC_ALIAS

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) {}
long long clock64();  // host steady-clock nanoseconds

// ---- math intrinsics (libm; the fast variants are the accurate ones here) -------------------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmaf_rz(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }

// Conversions: round-to-nearest-even under the host's default rounding mode.
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
inline long long __float2ll_rz(float x) { return (long long)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline int __double2int_rn(double x) { return (int)nearbyint(x); }
inline float __double2float_rn(double x) { return (float)x; }
inline int __float_as_int(float x) { return simt::from_bits<int>(simt::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return simt::from_bits<unsigned>(simt::to_bits(x)); }
inline float __int_as_float(int x) { return simt::from_bits<float>(simt::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return simt::from_bits<float>(simt::to_bits(x)); }
inline long long __double_as_longlong(double x) { return simt::from_bits<long long>(simt::to_bits(x)); }
inline double __longlong_as_double(long long x) { return simt::from_bits<double>(simt::to_bits(x)); }

// Integer intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __sad(int a, int b, unsigned c) { return (a > b ? a - b : b - a) + (int)c; }

// CUDA's global min/max overloads (device code calls them unqualified on ints and floats).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
// Mixed operand types: compare in the common type, as CUDA's promoting overloads do.
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a > (C)b ? (C)a : (C)b;
}

// Read-only cache loads are plain loads here.
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
template <class T>
inline void __stcg(T* p, T v) { *p = v; }

// Last, after every standard header this file includes (see the note at the keywords).
#define __noinline__ __attribute__((noinline))
