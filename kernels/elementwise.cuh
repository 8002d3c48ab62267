// Vectorised element-wise maps over flat arrays stored as f32 or bf16 (kernels/storage.cuh), for the
// memory-bound 1-D kernels (activations, the residual join and the gradient fan-in).
//
// Why: a thread that moves one 2-byte bf16 per load issues four times the memory instructions of a
// float4 thread for a quarter of the bytes, and a warp's request is 64 bytes, half a cache line: issue-
// bound, well under the copy bandwidth (issue #13: each memory-bound kernel at 70 % of it). Here each
// thread moves 4 consecutive values per access: one 16-byte float4 in f32, one 8-byte uint2 in bf16.
//
// Contract: `f` maps the widened inputs of one element to its f32 result, which is stored once (rounded
// to nearest even in bf16), exactly as the scalar loop did: the vector path changes no bit of any result.
// Every pointer must be aligned to 4 elements for the vector path (arena tensors are; a slice at an odd
// offset is not); otherwise, and for the last n % 4 elements, the same grid runs the scalar loop.
//
// Launch: 1-D grid-stride, any grid; the launchers size it for n / 4 threads (one group of 4 each).

#pragma once

#include "common.cuh"
#include "storage.cuh"

struct Vals4 {
    float v[4];
};

template <typename T>
__device__ __forceinline__ bool aligned4(const T* p) {
    return ((unsigned long long)p & (4 * sizeof(T) - 1)) == 0;
}

// Values 4g .. 4g + 3 (p aligned to 4 elements).
__device__ __forceinline__ Vals4 load4(const float* p, long long g) {
    const float4 q = reinterpret_cast<const float4*>(p)[g];
    return Vals4{{q.x, q.y, q.z, q.w}};
}
__device__ __forceinline__ Vals4 load4(const bf16* p, long long g) {
    const uint2 q = reinterpret_cast<const uint2*>(p)[g];  // little-endian: value 4g in the low half of x
    return Vals4{{bf16_bits_to_f32((unsigned short)(q.x & 0xffffu)), bf16_bits_to_f32((unsigned short)(q.x >> 16)),
                  bf16_bits_to_f32((unsigned short)(q.y & 0xffffu)), bf16_bits_to_f32((unsigned short)(q.y >> 16))}};
}

__device__ __forceinline__ void store4(float* p, long long g, const Vals4& a) {
    reinterpret_cast<float4*>(p)[g] = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
}
__device__ __forceinline__ void store4(bf16* p, long long g, const Vals4& a) {
    uint2 q;
    q.x = (unsigned)f32_to_bf16_bits(a.v[0]) | ((unsigned)f32_to_bf16_bits(a.v[1]) << 16);
    q.y = (unsigned)f32_to_bf16_bits(a.v[2]) | ((unsigned)f32_to_bf16_bits(a.v[3]) << 16);
    reinterpret_cast<uint2*>(p)[g] = q;
}

// y[i] = f(a[i]) for i < n.
template <typename T, typename F>
__device__ __forceinline__ void map1(T* __restrict__ y, const T* __restrict__ a, long long n, F f) {
    const long long groups = aligned4(y) && aligned4(a) ? n / 4 : 0;
    GRID_STRIDE_LOOP(g, groups) {
        Vals4 va = load4(a, g);
#pragma unroll
        for (int k = 0; k < 4; ++k) va.v[k] = f(va.v[k]);
        store4(y, g, va);
    }
    GRID_STRIDE_LOOP(t, n - 4 * groups) {
        const long long i = 4 * groups + t;
        store(y, i, f(load(a, i)));
    }
}

// y[i] = f(a[i], b[i]) for i < n; y may be a (in place: each element is read before it is written, by
// the same thread).
template <typename T, typename F>
__device__ __forceinline__ void map2(T* y, const T* a, const T* __restrict__ b, long long n, F f) {
    const long long groups = aligned4(y) && aligned4(a) && aligned4(b) ? n / 4 : 0;
    GRID_STRIDE_LOOP(g, groups) {
        Vals4 va = load4(a, g);
        const Vals4 vb = load4(b, g);
#pragma unroll
        for (int k = 0; k < 4; ++k) va.v[k] = f(va.v[k], vb.v[k]);
        store4(y, g, va);
    }
    GRID_STRIDE_LOOP(t, n - 4 * groups) {
        const long long i = 4 * groups + t;
        store(y, i, f(load(a, i), load(b, i)));
    }
}
