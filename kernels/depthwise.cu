// Elastic depthwise convolution, forward, grad-input and grad-weight, f32.
//
// Formula (CPU reference: src/backend/cpu/depthwise.rs). Active kernel k in {3, 5} is the centre of the
// stored 5x5: active tap (i, j) is stored tap (off + i, off + j), off = (5 - k) / 2; pad p = k / 2;
// stride s in {1, 2}; out = floor((H + 2p - k) / s) + 1.
//   y [n,oh,ow,c]  = sum_{i,j} x[n, oh*s-p+i, ow*s-p+j, c] * w[off+i, off+j, c]
//   dx[n,ih,iw,c]  = sum over (oh,ow,i,j) with oh*s-p+i = ih, ow*s-p+j = iw of dy[n,oh,ow,c] * w[off+i,off+j,c]
//   dw[off+i,off+j,c] += sum_{n,oh,ow} x[n, oh*s-p+i, ow*s-p+j, c] * dy[n,oh,ow,c]     (c < c_active only)
//
// Layout: activations NHWC with exactly c (= c_active) channels; weight and its gradient [5][5][c_stored]
// (tap-major, channels contiguous). Forward and grad-input overwrite; grad-weight adds into the active
// centre slice only and touches nothing else.
//
// Why this design. The op is memory-bound (25 FMAs per 8 bytes of traffic at k = 5), so the goal is to
// read each activation from DRAM once and keep the FMA pipe fed from registers:
// - NHWC with channels innermost: a block owns a chunk of up to 32 channels (threadIdx.x = channel
//   lane), so consecutive lanes touch consecutive 16-byte runs: coalesced global loads and
//   conflict-free shared-memory accesses. Lanes are balanced over chunks (40 channels: 2 x 5 lanes).
// - Vectorised channel loads: V = 4 channels per lane through one 128-bit access when c, c_stored and
//   all pointers are 16-byte aligned (every width in this search space is a multiple of 8); V = 1 is the
//   scalar fallback, chosen at run time by the launcher (argument `vec`).
// - Shared-memory input tile with halo: a block stages ((TH-1)*s+k) x ((R-1)*s+k) input pixels of its
//   channel chunk once (zero-filled outside the image, so the inner loop has no bounds checks), plus
//   the k*k active taps; neighbouring outputs reuse each input k*k/s^2 times from shared memory.
// - Register sliding window: each thread computes a strip of R outputs along w (R = 8 at s = 1, 4 at
//   s = 2) for its channels. Per kernel row it holds the k weights in registers and streams the
//   (R-1)*s+k inputs of the row once, each feeding every output it touches: (R-1)*s+k+k shared loads
//   for R*k FMAs instead of 2 per FMA, which keeps shared-memory bandwidth off the critical path.
//   k, s, V are template parameters (8 instantiations behind one entry point) so every register index
//   is static.
// - Grad-input is the transposed convolution: a tile of dx rows maps to a span of dy rows; tile origins
//   are multiples of s, so which taps hit which strip column is static per instantiation and only the
//   row parity is a run-time branch (uniform per thread).
// - Grad-weight is a reduction over N*OH*OW per (tap, channel): two stages, no atomics. Stage one: each
//   block walks a grid-stride list of output tiles, stages the x tile (with halo) and the dy tile in
//   shared memory, and thread (lane, kernel row i, row group g) accumulates the k taps of row i in
//   registers by the same sliding window; at the end the row groups are summed through shared memory
//   and the block writes one partial [k*k][c] slice to the workspace. Stage two
//   (depthwise_bwd_weight_reduce_f32) adds the partials in block order in f64 and adds the total into
//   the stored gradient's active slice.
//
// Launch geometry (src/backend/ops/depthwise.rs, module geometry):
//   fwd:        grid (ceil(OW/R), ceil(OH/TH), N*chunks), block (lanes, TH), TH = min(16 | 8, OH)
//   bwd_input:  grid (ceil(W/8), ceil(H/TH), N*chunks), block (lanes, TH), TH = min(16, H rounded to s)
//   wgrad:      grid (parts, chunks), block (lanes, k, groups <= 4; <= 256 threads);
//               then reduce: 1-D grid-stride over k*k*c
//   dynamic shared memory as computed there (<= 48 KiB).

#include "common.cuh"
#include "conv_common.cuh"

#define DW_STORED_K 5

// Output columns per thread (forward, grad-weight) by stride; grad-input columns per thread.
__host__ __device__ constexpr int dw_fwd_strip(int s) { return s == 1 ? 8 : 4; }
#define DW_BWD_STRIP 8

// Stages the k*k active taps of this block's channel chunk: wt[(i*K + j)*cc + lane*V].
template <int V, int K>
__device__ __forceinline__ void dw_stage_weights(float* wt, const float* __restrict__ w, int c, int c_stored,
                                                 int c0, int cc) {
    constexpr int OFF = (DW_STORED_K - K) / 2;
    const int lane = threadIdx.x, ch = c0 + lane * V;
    for (int tap = threadIdx.y; tap < K * K; tap += blockDim.y) {
        float v[V];
        if (ch < c) {
            ConvIo<V>::load(v, w + ((OFF + tap / K) * DW_STORED_K + OFF + tap % K) * c_stored + ch);
        } else {
            for (int q = 0; q < V; ++q) v[q] = 0.0f;
        }
        ConvIo<V>::store(wt + tap * cc + lane * V, v);
    }
}

// Stages rows x COLS pixels of one image starting at (r0, q0), zero outside [0,h) x [0,wd) and beyond c;
// tile[(row*COLS + col)*cc + lane*V]. Threads sharing a lane split the pixels by (ty, nt).
template <int V, int COLS>
__device__ __forceinline__ void dw_stage_tile(float* tile, const float* __restrict__ src, int h, int wd, int c,
                                              int c0, int cc, int rows, int r0, int q0, int ty, int nt) {
    const int lane = threadIdx.x, ch = c0 + lane * V;
    for (int rc = ty; rc < rows * COLS; rc += nt) {
        const int row = rc / COLS, col = rc % COLS;
        const int r = r0 + row, q = q0 + col;
        float v[V];
        if (r >= 0 && r < h && q >= 0 && q < wd && ch < c) {
            ConvIo<V>::load(v, src + ((long long)r * wd + q) * c + ch);
        } else {
            for (int e = 0; e < V; ++e) v[e] = 0.0f;
        }
        ConvIo<V>::store(tile + rc * cc + lane * V, v);
    }
}

template <int V, int K, int S>
__device__ __forceinline__ void depthwise_fwd_block(float* __restrict__ y, const float* __restrict__ x,
                                                    const float* __restrict__ w, int h, int wd, int c,
                                                    int c_stored, int oh_n, int ow_n, int chunks, float* smem) {
    constexpr int R = dw_fwd_strip(S);
    constexpr int P = K / 2;
    constexpr int COLS = (R - 1) * S + K;
    const int lanes = blockDim.x, th = blockDim.y, cc = lanes * V;
    const int rows = (th - 1) * S + K;
    const int img = blockIdx.z / chunks, c0 = (blockIdx.z % chunks) * cc;
    const int oh0 = blockIdx.y * th, ow0 = blockIdx.x * R;
    float* tile = smem;                  // [rows][COLS][cc]
    float* wt = smem + rows * COLS * cc; // [K*K][cc]
    const float* xi = x + (long long)img * h * wd * c;
    dw_stage_tile<V, COLS>(tile, xi, h, wd, c, c0, cc, rows, oh0 * S - P, ow0 * S - P, threadIdx.y, th);
    dw_stage_weights<V, K>(wt, w, c, c_stored, c0, cc);
    __syncthreads();

    const int ty = threadIdx.y, lane = threadIdx.x, ch = c0 + lane * V, oh = oh0 + ty;
    if (oh >= oh_n || ch >= c) return; // no barrier follows
    float acc[R][V];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[r][e] = 0.0f;
#pragma unroll
    for (int i = 0; i < K; ++i) {
        float wr[K][V];
#pragma unroll
        for (int j = 0; j < K; ++j) ConvIo<V>::load(wr[j], wt + (i * K + j) * cc + lane * V);
        const float* trow = tile + (ty * S + i) * COLS * cc + lane * V;
#pragma unroll
        for (int col = 0; col < COLS; ++col) {
            float xv[V];
            ConvIo<V>::load(xv, trow + col * cc);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int j = col - r * S; // static after unrolling
                if (j >= 0 && j < K) {
#pragma unroll
                    for (int e = 0; e < V; ++e) acc[r][e] = fmaf(xv[e], wr[j][e], acc[r][e]);
                }
            }
        }
    }
    float* yrow = y + (((long long)img * oh_n + oh) * ow_n) * c + ch;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (ow0 + r < ow_n) ConvIo<V>::store(yrow + (long long)(ow0 + r) * c, acc[r]);
    }
}

template <int V, int K, int S>
__device__ __forceinline__ void depthwise_bwd_input_block(float* __restrict__ dx, const float* __restrict__ dy,
                                                          const float* __restrict__ w, int h, int wd, int c,
                                                          int c_stored, int oh_n, int ow_n, int chunks,
                                                          float* smem) {
    constexpr int R = DW_BWD_STRIP;
    constexpr int P = K / 2;
    // First dy row/col touching a tile whose origin t0 is a multiple of S: t0/S + LO.
    constexpr int LO = conv_floor_div(P - K + 1, S);
    constexpr int COLS = conv_floor_div(R - 1 + P, S) - LO + 1;
    constexpr int JB = P - S * LO; // tap j = JB + r - S*col for dx column r of the strip, dy column col
    const int lanes = blockDim.x, th = blockDim.y, cc = lanes * V;
    const int rows = conv_floor_div(th - 1 + P, S) - LO + 1;
    const int img = blockIdx.z / chunks, c0 = (blockIdx.z % chunks) * cc;
    const int ih0 = blockIdx.y * th, iw0 = blockIdx.x * R; // both multiples of S (launcher: th % S == 0)
    float* tile = smem;                  // [rows][COLS][cc] of dy
    float* wt = smem + rows * COLS * cc; // [K*K][cc]
    const float* dyi = dy + (long long)img * oh_n * ow_n * c;
    dw_stage_tile<V, COLS>(tile, dyi, oh_n, ow_n, c, c0, cc, rows, ih0 / S + LO, iw0 / S + LO, threadIdx.y, th);
    dw_stage_weights<V, K>(wt, w, c, c_stored, c0, cc);
    __syncthreads();

    const int ty = threadIdx.y, lane = threadIdx.x, ch = c0 + lane * V, ih = ih0 + ty;
    if (ih >= h || ch >= c) return; // no barrier follows
    float acc[R][V];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[r][e] = 0.0f;
#pragma unroll
    for (int i = 0; i < K; ++i) {
        const int a = ty + JB - i; // = (ih + P - i) - S*(first dy row of the tile) >= 0
        if (a % S != 0) continue;  // this kernel row never lands on ih (stride-2 parity)
        float wr[K][V];
#pragma unroll
        for (int j = 0; j < K; ++j) ConvIo<V>::load(wr[j], wt + (i * K + j) * cc + lane * V);
        const float* trow = tile + (a / S) * COLS * cc + lane * V;
#pragma unroll
        for (int col = 0; col < COLS; ++col) {
            float gv[V];
            ConvIo<V>::load(gv, trow + col * cc);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int j = JB + r - S * col; // static after unrolling
                if (j >= 0 && j < K) {
#pragma unroll
                    for (int e = 0; e < V; ++e) acc[r][e] = fmaf(gv[e], wr[j][e], acc[r][e]);
                }
            }
        }
    }
    float* dxrow = dx + (((long long)img * h + ih) * wd) * c + ch;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (iw0 + r < wd) ConvIo<V>::store(dxrow + (long long)(iw0 + r) * c, acc[r]);
    }
}

template <int V, int K, int S>
__device__ __forceinline__ void depthwise_bwd_weight_partial_block(float* __restrict__ partial,
                                                                   const float* __restrict__ x,
                                                                   const float* __restrict__ dy, int n, int h,
                                                                   int wd, int c, int oh_n, int ow_n,
                                                                   int tile_rows, float* smem) {
    constexpr int R = dw_fwd_strip(S);
    constexpr int P = K / 2;
    constexpr int COLS = (R - 1) * S + K;
    const int lanes = blockDim.x, cc = lanes * V, groups = blockDim.z;
    const int lane = threadIdx.x, i = threadIdx.y, g = threadIdx.z;
    const int c0 = blockIdx.y * cc, ch = c0 + lane * V;
    const int rows = (tile_rows - 1) * S + K;
    const int tiles_w = (ow_n + R - 1) / R, tiles_h = (oh_n + tile_rows - 1) / tile_rows;
    const long long tiles = (long long)n * tiles_h * tiles_w;
    float* xt = smem;                    // [rows][COLS][cc]
    float* gt = smem + rows * COLS * cc; // [tile_rows][R][cc] of dy
    // threads sharing a lane split the staging work by q = (g, i)
    const int q = g * K + i, nq = groups * K;

    float acc[K][V];
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[j][e] = 0.0f;

    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int img = (int)(t / ((long long)tiles_h * tiles_w));
        const int rem = (int)(t % ((long long)tiles_h * tiles_w));
        const int oh0 = (rem / tiles_w) * tile_rows, ow0 = (rem % tiles_w) * R;
        __syncthreads(); // the previous tile has been consumed
        dw_stage_tile<V, COLS>(xt, x + (long long)img * h * wd * c, h, wd, c, c0, cc, rows, oh0 * S - P,
                               ow0 * S - P, q, nq);
        dw_stage_tile<V, R>(gt, dy + (long long)img * oh_n * ow_n * c, oh_n, ow_n, c, c0, cc, tile_rows, oh0,
                            ow0, q, nq);
        __syncthreads();
        if (ch < c) {
            for (int tr = g; tr < tile_rows; tr += groups) {
                float gv[R][V];
#pragma unroll
                for (int r = 0; r < R; ++r) ConvIo<V>::load(gv[r], gt + (tr * R + r) * cc + lane * V);
                const float* xrow = xt + (tr * S + i) * COLS * cc + lane * V;
#pragma unroll
                for (int col = 0; col < COLS; ++col) {
                    float xv[V];
                    ConvIo<V>::load(xv, xrow + col * cc);
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        const int j = col - r * S;
                        if (j >= 0 && j < K) {
#pragma unroll
                            for (int e = 0; e < V; ++e) acc[j][e] = fmaf(xv[e], gv[r][e], acc[j][e]);
                        }
                    }
                }
            }
        }
    }
    // Sum the row groups through shared memory (reusing the tiles): red[((g*K + i)*K + j)*cc + lane*V].
    __syncthreads();
    float* red = smem;
#pragma unroll
    for (int j = 0; j < K; ++j) ConvIo<V>::store(red + ((g * K + i) * K + j) * cc + lane * V, acc[j]);
    __syncthreads();
    if (g != 0 || ch >= c) return;
    float* out = partial + (long long)blockIdx.x * K * K * c;
#pragma unroll
    for (int j = 0; j < K; ++j) {
        float s[V];
        ConvIo<V>::load(s, red + (i * K + j) * cc + lane * V);
        for (int gg = 1; gg < groups; ++gg) {
            float v[V];
            ConvIo<V>::load(v, red + ((gg * K + i) * K + j) * cc + lane * V);
#pragma unroll
            for (int e = 0; e < V; ++e) s[e] += v[e];
        }
        ConvIo<V>::store(out + (i * K + j) * c + ch, s);
    }
}

// Dispatch on (vec, k, s) to the 8 instantiations; the branch is uniform over the grid.
#define DW_DISPATCH(BODY, ...)                                          \
    do {                                                                \
        if (vec == 4) {                                                 \
            if (kernel == 3) {                                          \
                if (stride == 1) BODY<4, 3, 1>(__VA_ARGS__);            \
                else BODY<4, 3, 2>(__VA_ARGS__);                        \
            } else {                                                    \
                if (stride == 1) BODY<4, 5, 1>(__VA_ARGS__);            \
                else BODY<4, 5, 2>(__VA_ARGS__);                        \
            }                                                           \
        } else {                                                        \
            if (kernel == 3) {                                          \
                if (stride == 1) BODY<1, 3, 1>(__VA_ARGS__);            \
                else BODY<1, 3, 2>(__VA_ARGS__);                        \
            } else {                                                    \
                if (stride == 1) BODY<1, 5, 1>(__VA_ARGS__);            \
                else BODY<1, 5, 2>(__VA_ARGS__);                        \
            }                                                           \
        }                                                               \
    } while (0)

extern "C" __global__ void depthwise_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                             const float* __restrict__ w, int h, int w_in, int c, int c_stored,
                                             int kernel, int stride, int out_h, int out_w, int chunks, int vec) {
    extern __shared__ ConvFloat4 dw_smem_fwd[];
    float* smem = reinterpret_cast<float*>(dw_smem_fwd);
    DW_DISPATCH(depthwise_fwd_block, y, x, w, h, w_in, c, c_stored, out_h, out_w, chunks, smem);
}

extern "C" __global__ void depthwise_bwd_input_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int h, int w_in, int c,
                                                   int c_stored, int kernel, int stride, int out_h, int out_w,
                                                   int chunks, int vec) {
    extern __shared__ ConvFloat4 dw_smem_bwd_input[];
    float* smem = reinterpret_cast<float*>(dw_smem_bwd_input);
    DW_DISPATCH(depthwise_bwd_input_block, dx, dy, w, h, w_in, c, c_stored, out_h, out_w, chunks, smem);
}

extern "C" __global__ void depthwise_bwd_weight_partial_f32(float* __restrict__ partial,
                                                            const float* __restrict__ x,
                                                            const float* __restrict__ dy, int n, int h, int w_in,
                                                            int c, int kernel, int stride, int out_h, int out_w,
                                                            int tile_rows, int vec) {
    extern __shared__ ConvFloat4 dw_smem_wgrad[];
    float* smem = reinterpret_cast<float*>(dw_smem_wgrad);
    DW_DISPATCH(depthwise_bwd_weight_partial_block, partial, x, dy, n, h, w_in, c, out_h, out_w, tile_rows, smem);
}

// Stage two of grad-weight: element e = (i*k + j)*c + ch of the partials; adds the f64 sum over the
// `parts` block partials into stored tap (off+i, off+j), channel ch. 1-D grid-stride over k*k*c.
extern "C" __global__ void depthwise_bwd_weight_reduce_f32(float* __restrict__ dw, const float* __restrict__ partial,
                                                           int parts, int c, int c_stored, int kernel) {
    const int off = (DW_STORED_K - kernel) / 2;
    const long long total = (long long)kernel * kernel * c;
    GRID_STRIDE_LOOP(e, total) {
        const int tap = (int)(e / c), ch = (int)(e % c);
        const int i = tap / kernel, j = tap % kernel;
        float* d = dw + ((long long)(off + i) * DW_STORED_K + off + j) * c_stored + ch;
        *d = (float)((double)*d + conv_sum_partials(partial, parts, total, e));
    }
}
