// Storage types (issue #13 item 1): kernels compute in f32 and load/store through these overloads, so
// one templated body serves every storage type (build/entry_points.rs generates the entry points).
//
//   load(p, i)      -> float   exact widening (bf16 is the top 16 bits of an f32)
//   store(p, i, v)             rounds to nearest, ties to even, when the storage is bf16
//
// bf16 here is a plain 16-bit struct, not cuda_bf16.h's __nv_bfloat16: the same header then compiles
// for nvcc, NVRTC (no include path) and the SIMT emulator (host C++). Arithmetic on bf16 is never done;
// values are widened first. The rounding matches src/backend/dtype.rs (the `half` crate) bit for bit,
// NaN aside: the portable path keeps the NaN's payload (quiet bit set), `cvt.rn.bf16.f32` returns the
// canonical NaN; both are NaN.
//
// ENTRY_POINTS(types...) marks a template `template <typename T> __device__ void name(...)` whose
// extern "C" entry points `name_<type>` build.rs generates; it expands to nothing.
#pragma once

#define ENTRY_POINTS(...)

struct bf16 {
    unsigned short bits;
};

__device__ __forceinline__ unsigned short f32_to_bf16_bits(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
    return r;
#else
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x40u);  // NaN: keep it a (quiet) NaN
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (overflow carries into inf)
    return (unsigned short)(u >> 16);
#endif
}

__device__ __forceinline__ float bf16_bits_to_f32(unsigned short b) { return __uint_as_float((unsigned)b << 16); }

__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load(const bf16* p, long long i) { return bf16_bits_to_f32(p[i].bits); }
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16* p, long long i, float v) { p[i].bits = f32_to_bf16_bits(v); }
// The value `store(p, i, v)` leaves, as a later `load` reads it back (v itself in f32, v rounded in bf16):
// for a kernel that goes on using what it stored (a fused consumer reads what the unfused one would).
__device__ __forceinline__ float as_stored(const float*, float v) { return v; }
__device__ __forceinline__ float as_stored(const bf16*, float v) { return bf16_bits_to_f32(f32_to_bf16_bits(v)); }
