// Stem convolution: dense 3x3, stride 2, padding 1, 3 input channels -> the first c_out of c_stored
// output channels. Forward and grad-weight (no grad-input: the stem's input is the image). The image x,
// the weights and the grad-weight partials are f32; the output y and its gradient dy are stored as f32 or
// bf16 (T; entry points `<kernel>_f32` / `_bf16` generated from ENTRY_POINTS), y rounded once at its store.
//
// Formula (CPU reference: src/backend/cpu/stem_conv.rs), out = floor((H - 1) / 2) + 1:
//   y[n,oh,ow,co]      = sum_{ky,kx,ci} x[n, 2oh-1+ky, 2ow-1+kx, ci] * w[ky,kx,ci,co]
//   dw[ky,kx,ci,co]   += sum_{n,oh,ow} x[n, 2oh-1+ky, 2ow-1+kx, ci] * dy[n,oh,ow,co]     (co < c_out only)
// Layout: x NHWC [n][h][w][3]; y, dy NHWC with exactly c_out channels; weight and gradient
// [3][3][3][c_stored] (tap, input channel, then output channels contiguous).
//
// Why this design. The stem is memory-bound on its output (c_out floats per pixel written, 27 read
// through L1): forward runs one thread per (output pixel, group of V output channels), V = 4 with
// 128-bit loads of the staged weights and 128-bit stores when c_out, c_stored and the pointers are
// 16-byte aligned (else V = 1). Threads of one pixel are neighbours in a warp, so the 27 input reads are
// broadcasts from L1 and the output stores are coalesced. The 27 x c_out active weights are staged in
// shared memory once per block.
// Grad-weight is a reduction over N*OH*OW per (tap, ci, co): two stages, no atomics. Stage one, block
// (32 output channels, 8 pixel rows), grid (parts, ceil(c_out / 32)): each thread keeps 27 accumulators
// for its output channel over a grid-stride list of pixels (the 27 x reads are warp broadcasts), the 8
// pixel rows are summed through shared memory in order, and the block writes one [27][c_out] partial.
// Stage two adds the partials in block order in f64 into the stored gradient's first c_out channels.
//
// Launch geometry (src/backend/ops/stem_conv.rs): fwd 1-D grid-stride, 256 threads, dynamic shared
// 27*c_out floats; partial grid (parts, chunks) x block (32, 8); reduce 1-D grid-stride over 27*c_out.

#include "common.cuh"
#include "conv_common.cuh"

#define STEM_TAPS 27      // 3 x 3 taps x 3 input channels
#define STEM_PIXEL_ROWS 8 // blockDim.y of the grad-weight partial kernel
#define STEM_CO_LANES 32  // blockDim.x of the grad-weight partial kernel

template <int V, typename T>
__device__ __forceinline__ void stem_conv_fwd_body(T* __restrict__ y, const float* __restrict__ x,
                                                   const float* __restrict__ w, int n, int h, int wd, int c_out,
                                                   int c_stored, int oh_n, int ow_n, float* wt) {
    for (int e = threadIdx.x; e < STEM_TAPS * c_out; e += blockDim.x) {
        wt[e] = w[(e / c_out) * c_stored + e % c_out];
    }
    __syncthreads();
    const int groups = c_out / V;
    const long long total = (long long)n * oh_n * ow_n * groups;
    GRID_STRIDE_LOOP(idx, total) {
        const long long pix = idx / groups;
        const int co = (int)(idx % groups) * V;
        const int ow = (int)(pix % ow_n);
        const long long t = pix / ow_n;
        const int oh = (int)(t % oh_n);
        const long long img = t / oh_n;
        float acc[V];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int ih = 2 * oh - 1 + ky;
            if (ih < 0 || ih >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int iw = 2 * ow - 1 + kx;
                if (iw < 0 || iw >= wd) continue;
                const float* px = x + ((img * h + ih) * wd + iw) * 3;
#pragma unroll
                for (int ci = 0; ci < 3; ++ci) {
                    const float xv = px[ci];
                    float wv[V];
                    ConvIo<V>::load(wv, wt + ((ky * 3 + kx) * 3 + ci) * c_out + co);
#pragma unroll
                    for (int v = 0; v < V; ++v) acc[v] = fmaf(xv, wv[v], acc[v]);
                }
            }
        }
        ConvIo<V>::store(y + pix * c_out + co, acc);
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void stem_conv_fwd(T* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w,
                                              int n, int h, int w_in, int c_out, int c_stored, int out_h, int out_w,
                                              int vec) {
    extern __shared__ ConvFloat4 stem_smem_fwd[];
    float* wt = reinterpret_cast<float*>(stem_smem_fwd); // [27][c_out]
    if (vec == 4) {
        stem_conv_fwd_body<4>(y, x, w, n, h, w_in, c_out, c_stored, out_h, out_w, wt);
    } else {
        stem_conv_fwd_body<1>(y, x, w, n, h, w_in, c_out, c_stored, out_h, out_w, wt);
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void stem_conv_bwd_weight_partial(float* __restrict__ partial, const float* __restrict__ x,
                                                             const T* __restrict__ dy, int n, int h, int w_in,
                                                             int c_out, int out_h, int out_w) {
    __shared__ float red[STEM_PIXEL_ROWS * STEM_TAPS * STEM_CO_LANES];
    const int lane = threadIdx.x, row = threadIdx.y;
    const int co = blockIdx.y * STEM_CO_LANES + lane;
    float acc[STEM_TAPS];
#pragma unroll
    for (int t = 0; t < STEM_TAPS; ++t) acc[t] = 0.0f;
    if (co < c_out) {
        const long long pixels = (long long)n * out_h * out_w;
        for (long long pix = (long long)blockIdx.x * STEM_PIXEL_ROWS + row; pix < pixels;
             pix += (long long)gridDim.x * STEM_PIXEL_ROWS) {
            const float g = load(dy, pix * c_out + co);
            const int ow = (int)(pix % out_w);
            const long long t = pix / out_w;
            const int oh = (int)(t % out_h);
            const long long img = t / out_h;
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int ih = 2 * oh - 1 + ky;
                if (ih < 0 || ih >= h) continue;
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int iw = 2 * ow - 1 + kx;
                    if (iw < 0 || iw >= w_in) continue;
                    const float* px = x + ((img * h + ih) * w_in + iw) * 3;
#pragma unroll
                    for (int ci = 0; ci < 3; ++ci) {
                        acc[(ky * 3 + kx) * 3 + ci] = fmaf(px[ci], g, acc[(ky * 3 + kx) * 3 + ci]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < STEM_TAPS; ++t) red[(row * STEM_TAPS + t) * STEM_CO_LANES + lane] = acc[t];
    __syncthreads();
    if (row != 0 || co >= c_out) return;
    float* out = partial + (long long)blockIdx.x * STEM_TAPS * c_out;
    for (int t = 0; t < STEM_TAPS; ++t) {
        float s = 0.0f;
        for (int r = 0; r < STEM_PIXEL_ROWS; ++r) s += red[(r * STEM_TAPS + t) * STEM_CO_LANES + lane];
        out[t * c_out + co] = s;
    }
}

// Stage two: element e = t*c_out + co; adds the f64 sum of the `parts` partials into dw[t][co].
extern "C" __global__ void stem_conv_bwd_weight_reduce_f32(float* __restrict__ dw, const float* __restrict__ partial,
                                                           int parts, int c_out, int c_stored) {
    const long long total = (long long)STEM_TAPS * c_out;
    GRID_STRIDE_LOOP(e, total) {
        float* d = dw + (e / c_out) * c_stored + e % c_out;
        *d = (float)((double)*d + conv_sum_partials(partial, parts, total, e));
    }
}
