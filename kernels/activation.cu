// Element-wise activations, forward and backward, f32.
//
// Formulas (the CPU reference is src/backend/cpu/activation.rs):
//   swish:  y = x * s,  s = sigmoid(x);   dx = dy * s * (1 + x * (1 - s))
//   relu:   y = max(x, 0);                 dx = dy * (x > 0)
//   hard-sigmoid: y = relu6(x + 3) / 6;    dx = dy / 6 where -3 < x < 3 (SE only, spec 1.2 step 3)
// The backward recomputes s from the saved forward input x rather than storing s: one fewer
// activation buffer per layer, and the exp is free next to the memory traffic of an element-wise op.
//
// Layout: flat contiguous arrays of n floats (any NHWC tensor). Launch: 1-D grid-stride loop, 256
// threads per block, grid = min(ceil(n / 256), 65535 * 4); any n including 0 is correct.
// These ops are memory-bound (8 bytes/elem forward, 12 backward): no shared memory, no tricks.

#include "common.cuh"
#include "act.cuh"

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

extern "C" __global__ void relu_fwd_f32(float* __restrict__ y, const float* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = relu_f(x[i]); }
}

extern "C" __global__ void relu_bwd_f32(float* __restrict__ dx, const float* __restrict__ x,
                                        const float* __restrict__ dy, long long n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * relu_grad_f(x[i]); }
}

extern "C" __global__ void hard_sigmoid_fwd_f32(float* __restrict__ y, const float* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = hard_sigmoid_f(x[i]); }
}

extern "C" __global__ void hard_sigmoid_bwd_f32(float* __restrict__ dx, const float* __restrict__ x,
                                                const float* __restrict__ dy, long long n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * hard_sigmoid_grad_f(x[i]); }
}
