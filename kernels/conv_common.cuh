// Helpers shared by the convolution kernels (depthwise.cu, stem_conv.cu). Portable CUDA only, so the
// same code runs under nvcc, NVRTC and the SIMT emulator.
//
// - ConvIo<V>: load / store V consecutive floats between memory and a register array. V = 4 goes
//   through a 16-byte aligned struct, which nvcc turns into one 128-bit access (LDG.128 / LDS.128 /
//   STG.128); the launcher only picks V = 4 when every channel run and base pointer is 16-byte aligned,
//   V = 1 is the scalar fallback. A plain struct instead of float4 keeps the file free of vector-type
//   headers, which host C++ lacks. Overloads on bf16 pointers move V bf16 values (one 64-bit access
//   for V = 4, 8-byte aligned) and widen / round them (kernels/storage.cuh), so a kernel templated on
//   the activations' storage type calls ConvIo the same way for both.
// - conv_sum_partials: second stage of the two-stage weight-gradient reductions. Stage one writes one
//   partial sum per block into a workspace; stage two adds those partials for one gradient element in
//   a fixed order (so the result is deterministic run to run) with an f64 accumulator (so the number
//   of partials does not cost precision), then the caller adds the total into the stored gradient.
#pragma once

#include "storage.cuh"

struct alignas(16) ConvFloat4 {
    float x, y, z, w;
};

struct alignas(8) ConvBf16x4 {
    bf16 v[4];
};

template <int V>
struct ConvIo;

template <>
struct ConvIo<1> {
    static __device__ __forceinline__ void load(float* d, const float* p) { d[0] = p[0]; }
    static __device__ __forceinline__ void store(float* p, const float* s) { p[0] = s[0]; }
    static __device__ __forceinline__ void load(float* d, const bf16* p) { d[0] = ::load(p, 0); }
    static __device__ __forceinline__ void store(bf16* p, const float* s) { ::store(p, 0, s[0]); }
};

template <>
struct ConvIo<4> {
    static __device__ __forceinline__ void load(float* d, const float* p) {
        const ConvFloat4 v = *reinterpret_cast<const ConvFloat4*>(p);
        d[0] = v.x;
        d[1] = v.y;
        d[2] = v.z;
        d[3] = v.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* s) {
        ConvFloat4 v;
        v.x = s[0];
        v.y = s[1];
        v.z = s[2];
        v.w = s[3];
        *reinterpret_cast<ConvFloat4*>(p) = v;
    }
    static __device__ __forceinline__ void load(float* d, const bf16* p) {
        const ConvBf16x4 v = *reinterpret_cast<const ConvBf16x4*>(p);
        for (int e = 0; e < 4; ++e) d[e] = bf16_bits_to_f32(v.v[e].bits);
    }
    static __device__ __forceinline__ void store(bf16* p, const float* s) {
        ConvBf16x4 v;
        for (int e = 0; e < 4; ++e) v.v[e].bits = f32_to_bf16_bits(s[e]);
        *reinterpret_cast<ConvBf16x4*>(p) = v;
    }
};

// Floor division for possibly negative numerators (C++ '/' truncates toward zero).
__host__ __device__ constexpr int conv_floor_div(int a, int b) {
    return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

// Sum over `parts` partials of element e; partial p of element e is at partial[p * pitch + e].
__device__ __forceinline__ double conv_sum_partials(const float* __restrict__ partial, int parts, long long pitch,
                                                    long long e) {
    double s = 0.0;
    for (int p = 0; p < parts; ++p) s += (double)partial[(long long)p * pitch + e];
    return s;
}
