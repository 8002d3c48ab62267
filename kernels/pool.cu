// Pools and joins over NHWC activations. The CPU reference is src/backend/cpu/pool.rs. Activations are
// stored as f32 or bf16 (T; entry points `<kernel>_f32` / `_bf16` generated from ENTRY_POINTS): the
// global pool reads T and writes its [n, c] result in f32 (the SE and head inputs stay f32), its backward
// reads that f32 gradient and writes T; the 2x2 pool and the joins are T to T. Sums are f32 on widened
// loads; a bf16 output is rounded once at its store.
//
//   global average pool:  y[b, ch] = sum_p x[b, p, ch] / hw;   bwd: dx[b, p, ch] (= or +=) dy[b, ch] / hw
//   2x2 stride-2 average (the stride-2 shortcut, spec 1.2 step 5), as AttentiveNAS's
//   F.avg_pool2d(x, 2, padding = H % 2) with PyTorch's defaults count_include_pad = True, ceil_mode = False:
//   pad ph = H % 2, pw = W % 2 (1 on an odd size, else 0), output ceil(H/2) x ceil(W/2), window of output
//   (i, j) = rows 2i - ph .. 2i - ph + 1, cols 2j - pw .. 2j - pw + 1; taps outside the image are zeros
//   and still counted, so the divisor is always 4:
//                         y[b, i, j, ch] = 0.25 * (x[r0,s0] + x[r0,s0+1] + x[r0+1,s0] + x[r0+1,s0+1]),
//                         r0 = 2i - ph, s0 = 2j - pw, x = 0 outside;
//                         bwd: dx[b, r, s, ch] = 0.25 * dy[b, (r + ph)/2, (s + pw)/2, ch] (each input pixel
//                         lies in exactly one window; the padded row/column only ever adds zeros)
//   residual add: y = a + b;  add_assign: dst += src (gradient fan-in)
//
// Global pool (fwd and bwd): grid (ceil(c / 32), n), block 32 channels x 8 pixel lanes: a warp reads
// 32 consecutive channels of one pixel (coalesced, NHWC), each thread keeps one channel of one
// sample, and the forward reduces its 8 lanes in shared memory; one block owns a (sample, channel
// tile), so no atomics and no second stage (hw <= 144*144 pixels per sample).
// The 2x2 pool: 1-D grid-stride over the output elements (256 threads), one output per thread; the pool's
// sums are in the reference's order, so CPU and GPU agree to the bit. The joins: 1-D grid-stride, 4
// consecutive values per thread and access (kernels/elementwise.cuh; grid sized for n / 4 threads).

#include "common.cuh"
#include "elementwise.cuh"
#include "storage.cuh"

#define POOL_CH_TILE 32
#define POOL_LANES 8

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void global_avg_pool_fwd(float* __restrict__ y, const T* __restrict__ x, int hw, int c) {
    __shared__ float partial[POOL_LANES][POOL_CH_TILE];
    int ch = blockIdx.x * POOL_CH_TILE + threadIdx.x;
    long long base = (long long)blockIdx.y * hw;
    float sum = 0.0f;
    if (ch < c) {
        for (int p = threadIdx.y; p < hw; p += POOL_LANES) sum += load(x, (base + p) * c + ch);
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < POOL_LANES; ++k) sum += partial[k][threadIdx.x];
        y[(long long)blockIdx.y * c + ch] = sum / (float)hw;
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void global_avg_pool_bwd(T* __restrict__ dx, const float* __restrict__ dy, int hw, int c,
                                                    int accumulate) {
    int ch = blockIdx.x * POOL_CH_TILE + threadIdx.x;
    if (ch >= c) return;
    float g = dy[(long long)blockIdx.y * c + ch] / (float)hw;
    long long base = (long long)blockIdx.y * hw;
    for (int p = threadIdx.y; p < hw; p += POOL_LANES) {
        long long i = (base + p) * c + ch;
        store(dx, i, accumulate ? load(dx, i) + g : g);
    }
}

// One thread per output element [n, ceil(h/2), ceil(w/2), c]. The four taps are summed in the
// reference's order (row-major over the window, zeros for padded taps), so CPU and GPU agree to the bit.
ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void avg_pool2_fwd(T* __restrict__ y, const T* __restrict__ x, long long total_out, int h,
                                              int w, int c) {
    const int ph = h % 2, pw = w % 2;
    const int ho = (h + ph) / 2, wo = (w + pw) / 2;
    GRID_STRIDE_LOOP(o, total_out) {
        int ch = (int)(o % c);
        long long pix = o / c;
        int j = (int)(pix % wo);
        long long t = pix / wo;
        int i = (int)(t % ho);
        long long b = t / ho;
        float sum = 0.0f;
        for (int dr = 0; dr < 2; ++dr) {
            for (int ds = 0; ds < 2; ++ds) {
                const int r = 2 * i - ph + dr, s = 2 * j - pw + ds;
                sum += (r >= 0 && s >= 0) ? load(x, ((b * h + r) * w + s) * c + ch) : 0.0f;
            }
        }
        store(y, o, 0.25f * sum);
    }
}

// One thread per input element [n, h, w, c]. `accumulate`: dx += the gradient (the pooled shortcut's
// fan-in into the block input's gradient: one read-modify-write where a write of its own and an
// add_assign took two passes; 0.25 * dy is exact, so the sum is the same bits as add_assign's).
ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void avg_pool2_bwd(T* __restrict__ dx, const T* __restrict__ dy, long long total_in, int h,
                                              int w, int c, int accumulate) {
    const int ph = h % 2, pw = w % 2;
    const int ho = (h + ph) / 2, wo = (w + pw) / 2;
    GRID_STRIDE_LOOP(i, total_in) {
        int ch = (int)(i % c);
        long long pix = i / c;
        int s = (int)(pix % w);
        long long t = pix / w;
        int r = (int)(t % h);
        long long b = t / h;
        float g = 0.25f * load(dy, ((b * ho + (r + ph) / 2) * wo + (s + pw) / 2) * c + ch);
        store(dx, i, accumulate ? load(dx, i) + g : g);
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void residual_add_fwd(T* __restrict__ y, const T* __restrict__ a, const T* __restrict__ b,
                                                 long long n) {
    map2(y, a, b, n, [](float u, float v) { return u + v; });
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void add_assign(T* dst, const T* __restrict__ src, long long n) {
    map2(dst, dst, src, n, [](float u, float v) { return u + v; });
}
