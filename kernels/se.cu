// Squeeze-and-excite channel scale (spec 1.2 step 3, the last step). x, y, dy, dx stored as f32 or bf16
// (T; entry points generated from ENTRY_POINTS), s and ds always f32; f32 arithmetic, one rounding per store. The CPU reference is
// src/backend/cpu/se.rs; the rest of the block (pool, 1x1 convs, bias + act) is other kernels
// composed by `se_fwd`/`se_bwd` in src/backend/ops/se.rs.
//
//   fwd:  y[b, p, ch] = x[b, p, ch] * s[b, ch]
//   bwd:  dx[b, p, ch] = dy * s[b, ch];   ds[b, ch] = sum_p dy[b, p, ch] * x[b, p, ch]   (overwritten)
//
// Layout: x, y, dy, dx NHWC [n, hw, c] with exactly c channels; s, ds [n, c].
// Launch (both): grid (ceil(c / 32), n), block 32 channels x 8 pixel lanes. A warp reads 32
// consecutive channels of one pixel (coalesced); each thread loads its s[b, ch] once; the backward's
// per-(sample, channel) sum reduces the 8 lanes in shared memory. One block owns a (sample, channel
// tile), so ds needs no atomics and no second stage.

#include "common.cuh"
#include "storage.cuh"

#define SE_CH_TILE 32
#define SE_LANES 8

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void channel_scale_fwd(T* __restrict__ y, const T* __restrict__ x, const float* __restrict__ s,
                                                  int hw, int c) {
    int ch = blockIdx.x * SE_CH_TILE + threadIdx.x;
    if (ch >= c) return;
    float scale = s[(long long)blockIdx.y * c + ch];
    long long base = (long long)blockIdx.y * hw;
    for (int p = threadIdx.y; p < hw; p += SE_LANES) {
        long long i = (base + p) * c + ch;
        store(y, i, load(x, i) * scale);
    }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void channel_scale_bwd(T* __restrict__ dx, float* __restrict__ ds, const T* __restrict__ x,
                                                  const float* __restrict__ s, const T* __restrict__ dy, int hw,
                                                  int c) {
    __shared__ float partial[SE_LANES][SE_CH_TILE];
    int ch = blockIdx.x * SE_CH_TILE + threadIdx.x;
    float sum = 0.0f;
    if (ch < c) {
        float scale = s[(long long)blockIdx.y * c + ch];
        long long base = (long long)blockIdx.y * hw;
        for (int p = threadIdx.y; p < hw; p += SE_LANES) {
            long long i = (base + p) * c + ch;
            float g = load(dy, i);
            store(dx, i, g * scale);
            sum += g * load(x, i);
        }
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < SE_LANES; ++k) sum += partial[k][threadIdx.x];
        ds[(long long)blockIdx.y * c + ch] = sum;
    }
}
