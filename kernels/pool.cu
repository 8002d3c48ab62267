// Pools and joins over NHWC activations, f32. The CPU reference is src/backend/cpu/pool.rs.
//
//   global average pool:  y[b, ch] = sum_p x[b, p, ch] / hw;   bwd: dx[b, p, ch] (= or +=) dy[b, ch] / hw
//   2x2 stride-2 average: y[b, i, j, ch] = 0.25 * (x[2i,2j] + x[2i,2j+1] + x[2i+1,2j] + x[2i+1,2j+1]);
//                         bwd: dx[b, r, s, ch] = 0.25 * dy[b, r/2, s/2, ch]  (H, W even: spec 1.2 step 5)
//   residual add: y = a + b;  add_assign: dst += src (gradient fan-in)
//
// Global pool (fwd and bwd): grid (ceil(c / 32), n), block 32 channels x 8 pixel lanes: a warp reads
// 32 consecutive channels of one pixel (coalesced, NHWC), each thread keeps one channel of one
// sample, and the forward reduces its 8 lanes in shared memory; one block owns a (sample, channel
// tile), so no atomics and no second stage (hw <= 144*144 pixels per sample).
// The 2x2 pool and the joins: 1-D grid-stride over the output elements (256 threads), one output per
// thread; the pool's sums are in the reference's order, so CPU and GPU agree to the bit.

#include "common.cuh"

#define POOL_CH_TILE 32
#define POOL_LANES 8

extern "C" __global__ void global_avg_pool_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int hw,
                                                   int c) {
    __shared__ float partial[POOL_LANES][POOL_CH_TILE];
    int ch = blockIdx.x * POOL_CH_TILE + threadIdx.x;
    long long base = (long long)blockIdx.y * hw;
    float sum = 0.0f;
    if (ch < c) {
        for (int p = threadIdx.y; p < hw; p += POOL_LANES) sum += x[(base + p) * c + ch];
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < POOL_LANES; ++k) sum += partial[k][threadIdx.x];
        y[(long long)blockIdx.y * c + ch] = sum / (float)hw;
    }
}

extern "C" __global__ void global_avg_pool_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy, int hw,
                                                   int c, int accumulate) {
    int ch = blockIdx.x * POOL_CH_TILE + threadIdx.x;
    if (ch >= c) return;
    float g = dy[(long long)blockIdx.y * c + ch] / (float)hw;
    long long base = (long long)blockIdx.y * hw;
    for (int p = threadIdx.y; p < hw; p += POOL_LANES) {
        long long i = (base + p) * c + ch;
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

// One thread per output element [n, h/2, w/2, c].
extern "C" __global__ void avg_pool2_fwd_f32(float* __restrict__ y, const float* __restrict__ x, long long total_out,
                                             int h, int w, int c) {
    int wo = w / 2, ho = h / 2;
    GRID_STRIDE_LOOP(o, total_out) {
        int ch = (int)(o % c);
        long long pix = o / c;
        int j = (int)(pix % wo);
        long long t = pix / wo;
        int i = (int)(t % ho);
        long long b = t / ho;
        const float* p = x + ((b * h + 2 * i) * w + 2 * j) * c + ch;
        long long row = (long long)w * c;
        y[o] = 0.25f * (p[0] + p[c] + p[row] + p[row + c]);
    }
}

// One thread per input element [n, h, w, c].
extern "C" __global__ void avg_pool2_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy, long long total_in,
                                             int h, int w, int c) {
    int wo = w / 2, ho = h / 2;
    GRID_STRIDE_LOOP(i, total_in) {
        int ch = (int)(i % c);
        long long pix = i / c;
        int s = (int)(pix % w);
        long long t = pix / w;
        int r = (int)(t % h);
        long long b = t / h;
        dx[i] = 0.25f * dy[((b * ho + r / 2) * wo + s / 2) * c + ch];
    }
}

extern "C" __global__ void residual_add_fwd_f32(float* __restrict__ y, const float* __restrict__ a,
                                                const float* __restrict__ b, long long n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = a[i] + b[i]; }
}

extern "C" __global__ void add_assign_f32(float* __restrict__ dst, const float* __restrict__ src, long long n) {
    GRID_STRIDE_LOOP(i, n) { dst[i] += src[i]; }
}
