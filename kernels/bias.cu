// Bias + activation epilogue of the SE 1x1 convs and the linear head (their GEMMs produce `pre`
// without bias), and of the BN-folded convs of the inference forward (src/deploy: stem, expand,
// depthwise and head convs carry the folded BN as a bias, then swish), forward and backward, f32.
// The CPU reference is src/backend/cpu/bias.rs.
//
//   fwd:  out[r, j] = act(pre[r, j] + bias[j]),  act: 0 identity, 1 ReLU, 2 hard-sigmoid, 3 swish
//   bwd:  dpre[r, j] = dout[r, j] * act'(pre[r, j] + bias[j]);  dbias[j] += sum_r dpre[r, j]
//   bias_grad_accumulate: dbias[j] += sum_r dout[r, j]
//   bias_add_inplace: y[r, j] += bias[j]  (the linear head's identity epilogue, in place on the GEMM output)
//
// Layout: row-major [rows, cols] contiguous; bias/dbias stored at the layer's max width, the first
// cols used. Forward: 1-D grid-stride over rows*cols (256 threads). Backward: one thread per column
// looping over the rows, so the column sum needs no atomics and each step of the loop is one
// coalesced row read across the block. Rows here are a batch of samples (<= a few hundred), so a
// per-column serial f32 sum is short; a wide reduction over rows is not needed. (The folded convs'
// rows are pixels, N*H*W, but they run forward only: inference has no backward.)
// Swish uses the same fast sigmoid as activation.cu and batchnorm.cu, so a folded conv + bias + swish
// differs from conv + BN + swish only by the folding's reordering of the affine arithmetic.

#include "common.cuh"
#include "act.cuh"

__device__ __forceinline__ float bias_act_apply(float z, int act) {
    switch (act) {
        case 1: return relu_f(z);
        case 2: return hard_sigmoid_f(z);
        case 3: return z * sigmoidf_fast(z);
        default: return z;
    }
}

__device__ __forceinline__ float bias_act_grad(float z, int act) {
    switch (act) {
        case 1: return relu_grad_f(z);
        case 2: return hard_sigmoid_grad_f(z);
        case 3: {
            float s = sigmoidf_fast(z);
            return s * (1.0f + z * (1.0f - s));
        }
        default: return 1.0f;
    }
}

extern "C" __global__ void bias_act_fwd_f32(float* __restrict__ out, const float* __restrict__ pre,
                                            const float* __restrict__ bias, long long rows, int cols, int act) {
    GRID_STRIDE_LOOP(i, rows * cols) {
        int j = (int)(i % cols);
        out[i] = bias_act_apply(pre[i] + bias[j], act);
    }
}

extern "C" __global__ void bias_act_bwd_f32(float* __restrict__ dpre, float* __restrict__ dbias,
                                            const float* __restrict__ pre, const float* __restrict__ bias,
                                            const float* __restrict__ dout, long long rows, int cols, int act) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float b = bias[j];
    float sum = 0.0f;
    for (long long r = 0; r < rows; ++r) {
        long long i = r * cols + j;
        float d = dout[i] * bias_act_grad(pre[i] + b, act);
        dpre[i] = d;
        sum += d;
    }
    dbias[j] += sum;
}

extern "C" __global__ void bias_grad_accumulate_f32(float* __restrict__ dbias, const float* __restrict__ dout,
                                                    long long rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float sum = 0.0f;
    for (long long r = 0; r < rows; ++r) sum += dout[r * cols + j];
    dbias[j] += sum;
}

extern "C" __global__ void bias_add_inplace_f32(float* y, const float* __restrict__ bias, long long rows, int cols) {
    GRID_STRIDE_LOOP(i, rows * cols) { y[i] += bias[(int)(i % cols)]; }
}
