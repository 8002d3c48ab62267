// Dropout and per-sample drop-connect (spec 3.4); storage f32 or bf16 (T, entry points generated from
// ENTRY_POINTS; the factor is 0 or 1/keep, applied in f32 and rounded once at the store). The CPU reference is
// src/backend/cpu/regularize.rs; the mask hash (kernels/mask.cuh) must stay bit-identical to `mask_hash` there.
//
//   factor(k) = scale if u(seed, k) < keep else 0,  u = (splitmix64_mix(seed + (k + 1) * golden) >> 40) / 2^24
//   dropout:       y[i] = x[i] * factor(i)
//   drop-connect:  y[i] = x[i] * factor(i / per_sample)        (one draw per sample)
// Forward and backward are the same map (the backward passes dy as x), so both launch these kernels:
// no mask buffer is stored, and CPU and GPU masks are identical by construction (counter-based hash
// of the element or sample index, no RNG state). `scale = 1 / keep` is computed once on the host.
// Launch: 1-D grid-stride over n elements, 256 threads per block.

#include "common.cuh"
#include "mask.cuh"
#include "storage.cuh"

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void dropout_fwd(T* __restrict__ y, const T* __restrict__ x, long long n,
                                            unsigned long long seed, float keep, float scale) {
    GRID_STRIDE_LOOP(i, n) {
        float f = mask_uniform(seed, (unsigned long long)i) < keep ? scale : 0.0f;
        store(y, i, load(x, i) * f);
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void drop_connect_fwd(T* __restrict__ y, const T* __restrict__ x, long long n,
                                                 long long per_sample, unsigned long long seed, float keep,
                                                 float scale) {
    GRID_STRIDE_LOOP(i, n) {
        float f = mask_uniform(seed, (unsigned long long)(i / per_sample)) < keep ? scale : 0.0f;
        store(y, i, load(x, i) * f);
    }
}
