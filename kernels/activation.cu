// Element-wise activations, forward and backward, f32.
//
// Formulas (the CPU reference is src/backend/cpu/activation.rs):
//   swish:  y = x * s,  s = sigmoid(x);   dx = dy * s * (1 + x * (1 - s))
// The backward recomputes s from the saved forward input x rather than storing s: one fewer
// activation buffer per layer, and the exp is free next to the memory traffic of an element-wise op.
//
// Layout: flat contiguous arrays of n floats (any NHWC tensor). Launch: 1-D grid-stride loop, 256
// threads per block, grid = min(ceil(n / 256), 65535 * 4); any n including 0 is correct.
// These ops are memory-bound (8 bytes/elem forward, 12 backward): no shared memory, no tricks.

#include "common.cuh"

extern "C" __global__ void swish_fwd_f32(float* __restrict__ y, const float* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        y[i] = v * sigmoidf_fast(v);
    }
}

extern "C" __global__ void swish_bwd_f32(float* __restrict__ dx, const float* __restrict__ x,
                                         const float* __restrict__ dy, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        float s = sigmoidf_fast(v);
        dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
    }
}
