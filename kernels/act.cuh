// Scalar ReLU and hard-sigmoid shared by kernels/activation.cu and kernels/bias.cu (the SE epilogues).
// Written in the same f32 operation order as src/backend/cpu/activation.rs so both sides agree to
// the bit: hsig(x) = min(max(x + 3, 0), 6) / 6 (IEEE division; the build uses no fast-math), and the
// PyTorch derivative conventions at the kinks: relu'(0) = 0, hsig'(x) = 1/6 only for -3 < x < 3.
#pragma once

__device__ __forceinline__ float relu_f(float x) { return x > 0.0f ? x : 0.0f; }
__device__ __forceinline__ float relu_grad_f(float x) { return x > 0.0f ? 1.0f : 0.0f; }
__device__ __forceinline__ float hard_sigmoid_f(float x) { return fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) / 6.0f; }
__device__ __forceinline__ float hard_sigmoid_grad_f(float x) {
    return (x > -3.0f && x < 3.0f) ? 1.0f / 6.0f : 0.0f;
}
