// Bicubic resize of an NHWC batch, forward only, f32: PyTorch interpolate(mode='bicubic',
// align_corners=False) without antialias (the CPU reference is src/backend/cpu/resize.rs).
//
// Formula, per axis (in -> out):
//   s = (o + 0.5) * in / out - 0.5   (half-pixel centres; not clamped at 0, as PyTorch's bicubic path)
//   b = floor(s), t = s - b; taps b-1 .. b+2, each clamped to [0, in-1] (border clamp / replicate)
//   weights W(t+1), W(t), W(1-t), W(2-t) of Keys' cubic with A = -0.75:
//     |d| <= 1: ((A+2)|d| - (A+3))|d|^2 + 1;   1 < |d| < 2: ((A|d| - 5A)|d| + 8A)|d| - 4A
//   y = sum_r wy[r] * (sum_k wx[k] * x[row r, col k])   (x first, then y: PyTorch's order)
//
// Layout: x (n, h_in, w_in, c), y (n, h_out, w_out, c), dense NHWC.
// Launch: grid (ceil(w_out * c / 128), min(n * h_out, 65535)), 128 threads. x covers one output row's
// (ox, ch) positions, c fastest, so stores are coalesced and a warp's tap loads fall on a few neighbouring
// pixels (L1 hits; DRAM traffic stays near the ideal of reading the input once and writing the output
// once). y grid-strides over the n * h_out output rows, so the column taps are computed once per thread
// and the row taps once per row: the per-output work is 16 FMAs, no 64-bit divisions. 128 threads wastes
// little on a 288 * 3 = 864 wide row (7 blocks, 96% busy). Weights are recomputed rather than staged in
// shared memory: a few dozen flops per output is far below the flop/byte balance of the GPU.

#include "common.cuh"

#define BICUBIC_A (-0.75f)

// The 4 clamped source indices and weights for output index o on one axis. s = ((2o+1) in - out) / (2 out)
// is split into floor and fraction in integer arithmetic: exact, where PyTorch's f32 (o + 0.5) * scale - 0.5
// is off by up to ~1e-5 px at 288 wide (an error of the same order as the tolerance against it).
// The launcher checks that (2 out + 1) in fits an int.
__device__ __forceinline__ void bicubic_axis_taps(int o, int len_in, int len_out, int idx[4], float w[4]) {
    const int num = (2 * o + 1) * len_in - len_out;
    const int den = 2 * len_out;
    int base = num / den;  // C division truncates toward zero: fix up to floor for a negative num
    int rem = num - base * den;
    if (rem < 0) {
        base -= 1;
        rem += den;
    }
    const float t = (float)rem / (float)den;
    const float a = BICUBIC_A;
    const float d0 = t + 1.0f, d2 = 1.0f - t, d3 = 2.0f - t;
    w[0] = ((a * d0 - 5.0f * a) * d0 + 8.0f * a) * d0 - 4.0f * a;
    w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    w[2] = ((a + 2.0f) * d2 - (a + 3.0f)) * d2 * d2 + 1.0f;
    w[3] = ((a * d3 - 5.0f * a) * d3 + 8.0f * a) * d3 - 4.0f * a;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        idx[k] = min(max(base - 1 + k, 0), len_in - 1);
    }
}

extern "C" __global__ void bicubic_resize_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int n, int c,
                                                  int h_in, int w_in, int h_out, int w_out) {
    const int row_len = w_out * c;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // (ox, ch) within an output row
    if (j >= row_len) {
        return;  // no barriers below
    }
    const int ox = j / c, ch = j - ox * c;
    int ix[4];
    float wx[4];
    bicubic_axis_taps(ox, w_in, w_out, ix, wx);
    const int rows = n * h_out;  // the launcher checks it fits an int
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int img = row / h_out, oy = row - img * h_out;
        int iy[4];
        float wy[4];
        bicubic_axis_taps(oy, h_in, h_out, iy, wy);
        const float* x_img = x + (long long)img * h_in * w_in * c + ch;
        float acc = 0.0f;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const float* x_row = x_img + (long long)iy[r] * w_in * c;
            float interp = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                interp += wx[k] * x_row[ix[k] * c];
            }
            acc += wy[r] * interp;
        }
        y[(long long)row * row_len + j] = acc;
    }
}
