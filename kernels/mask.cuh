// The counter-based mask draw of dropout and drop-connect (spec 3.4), shared by kernels/regularize.cu
// and the projection BN's fused drop-connect join (kernels/batchnorm.cu). Must stay bit-identical to
// `mask_hash` in src/backend/cpu/regularize.rs: a splitmix64 finaliser of `seed + (index + 1) * golden`,
// its top 24 bits as a uniform in [0, 1). No RNG state: any thread can draw any index's value.

#pragma once

#include "common.cuh"

__device__ __forceinline__ float mask_uniform(unsigned long long seed, unsigned long long index) {
    unsigned long long z = seed + (index + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}
