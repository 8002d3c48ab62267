// BatchNorm over NHWC activations with sliced gamma/beta, optional fused swish and fused residual add. f32.
//
// Formulas (the CPU reference is src/backend/cpu/batchnorm.rs):
//   train fwd:  mean, var = batch mean and biased variance per channel over P = N*H*W pixels;
//               z = gamma * (x - mean) * rsqrt(var + eps) + beta;  y = z or swish(z), plus residual[i]
//               when one is given (the MBConv block's projection BN and its shortcut join in one pass:
//               the unfused pair wrote the BN output and read it back, 2 of the 5 passes over [P, c];
//               the sum is the same f32 addition the separate join did, so the result is bit-identical)
//   eval fwd:   the same with the running mean/var
//   train bwd:  xhat = (x - mean) * invstd; dz = dy (* swish'(z), z recomputed);
//               dbeta += sum dz;  dgamma += sum dz * xhat;
//               dx = gamma * invstd / P * (P * dz - sum dz - xhat * sum(dz * xhat))
//   calibrate:  running += (batch - running) / k, with the unbiased batch variance var * P / (P - 1)
//
// Layout: x, y, dy, dx are [P, c] with channels contiguous (NHWC with exactly c active channels);
// gamma, beta, running stats and dgamma/dbeta are stored at the max width, the first c entries used.
// saved = [mean(c), biased var(c)] from the training forward, read by the backward and calibration.
//
// Launch geometry (every per-pixel kernel): block = 32 channels x 8 row lanes (256 threads), grid =
// (ceil(c / 32), chunks); block (bx, by) owns channels bx*32 .. +32 and rows by*rows_per_chunk .. +rows_per_chunk.
// Why: NHWC puts channels contiguous, so the 32 lanes of a warp read 32 consecutive floats of one
// pixel (one coalesced 128-byte row); each thread keeps one channel for its whole chunk, so gamma,
// beta and the statistics are loaded once per thread and there is no per-element division/modulo.
//
// Reductions are two-stage, with no atomics: stage 1 (`*_partial`) reduces each chunk in registers,
// then across the 8 row lanes in shared memory, and writes one partial per (chunk, channel) to the
// caller's scratch; stage 2 (`*_finalize`) folds the chunk partials per channel in f64 (block = 32
// channels x 32 chunk lanes). The variance uses sums shifted by the channel's first value (x[0, ch]),
// which keeps the f32 per-thread sums free of the catastrophic cancellation of sum(x^2) - sum(x)^2
// when |mean| >> std. The host picks `chunks` so that about 1024 blocks cover the tensor (>= 64 rows
// per chunk): enough blocks to fill an H100/H200 several times over, few enough partials that stage 2
// is negligible.

#include "common.cuh"

#define BN_CH_TILE 32
#define BN_ROW_LANES 8
#define BN_FINAL_LANES 32
#define BN_EPS 1e-5f

__device__ __forceinline__ float bn_activate(float z, int swish) {
    return swish ? z * sigmoidf_fast(z) : z;
}

__device__ __forceinline__ float bn_activate_grad(float z, int swish) {
    if (!swish) return 1.0f;
    float s = sigmoidf_fast(z);
    return s * (1.0f + z * (1.0f - s));
}

// Sums the two per-thread values over the 8 row lanes of the block through the kernel's shared
// arrays sa, sb (BN_ROW_LANES x BN_CH_TILE each); lane ty == 0 gets the totals.
__device__ __forceinline__ void bn_block_reduce2(float* sa, float* sb, float& a, float& b) {
    sa[threadIdx.y * BN_CH_TILE + threadIdx.x] = a;
    sb[threadIdx.y * BN_CH_TILE + threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0) {
        for (int k = 1; k < BN_ROW_LANES; ++k) {
            a += sa[k * BN_CH_TILE + threadIdx.x];
            b += sb[k * BN_CH_TILE + threadIdx.x];
        }
    }
}

// Stage 1 of the forward statistics: shifted sums per (chunk, channel).
// partial: [2][chunks][c] (sum of x - shift, sum of (x - shift)^2).
extern "C" __global__ void batchnorm_stats_partial_f32(float* __restrict__ partial, const float* __restrict__ x,
                                                       long long pixels, int c, int rows_per_chunk) {
    __shared__ float sa[BN_ROW_LANES * BN_CH_TILE];
    __shared__ float sb[BN_ROW_LANES * BN_CH_TILE];
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    long long row0 = (long long)blockIdx.y * rows_per_chunk;
    long long row1 = min(row0 + rows_per_chunk, pixels);
    float s1 = 0.0f, s2 = 0.0f;
    if (ch < c) {
        float shift = x[ch];
#pragma unroll 4
        for (long long r = row0 + threadIdx.y; r < row1; r += BN_ROW_LANES) {
            float d = x[r * c + ch] - shift;
            s1 += d;
            s2 += d * d;
        }
    }
    bn_block_reduce2(sa, sb, s1, s2);
    if (threadIdx.y == 0 && ch < c) {
        long long plane = (long long)gridDim.y * c;
        partial[(long long)blockIdx.y * c + ch] = s1;
        partial[plane + (long long)blockIdx.y * c + ch] = s2;
    }
}

// Stage 2 of the forward statistics: saved = [mean(c), biased var(c)].
extern "C" __global__ void batchnorm_stats_finalize_f32(float* __restrict__ saved, const float* __restrict__ partial,
                                                        const float* __restrict__ x, long long pixels, int c,
                                                        int chunks) {
    __shared__ double s1s[BN_FINAL_LANES][BN_CH_TILE];
    __shared__ double s2s[BN_FINAL_LANES][BN_CH_TILE];
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    double s1 = 0.0, s2 = 0.0;
    if (ch < c) {
        long long plane = (long long)chunks * c;
        for (int k = threadIdx.y; k < chunks; k += BN_FINAL_LANES) {
            s1 += (double)partial[(long long)k * c + ch];
            s2 += (double)partial[plane + (long long)k * c + ch];
        }
    }
    s1s[threadIdx.y][threadIdx.x] = s1;
    s2s[threadIdx.y][threadIdx.x] = s2;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < BN_FINAL_LANES; ++k) {
            s1 += s1s[k][threadIdx.x];
            s2 += s2s[k][threadIdx.x];
        }
        double m = s1 / (double)pixels;  // mean of the shifted values
        double var = s2 / (double)pixels - m * m;
        saved[ch] = (float)((double)x[ch] + m);
        saved[c + ch] = (float)(var > 0.0 ? var : 0.0);
    }
}

// y = act(gamma * (x - mean) * rsqrt(var + eps) + beta) [+ residual]; mean/var are the batch (saved) or
// running stats. residual is [P, c] like y and read only when has_residual (else any valid pointer).
extern "C" __global__ void batchnorm_apply_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                                   const float* __restrict__ gamma, const float* __restrict__ beta,
                                                   const float* __restrict__ mean, const float* __restrict__ var,
                                                   const float* __restrict__ residual, long long pixels, int c,
                                                   int rows_per_chunk, int swish, int has_residual) {
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    if (ch >= c) return;
    float scale = gamma[ch] * rsqrtf(var[ch] + BN_EPS);
    float shift = beta[ch] - mean[ch] * scale;
    long long row0 = (long long)blockIdx.y * rows_per_chunk;
    long long row1 = min(row0 + rows_per_chunk, pixels);
#pragma unroll 4
    for (long long r = row0 + threadIdx.y; r < row1; r += BN_ROW_LANES) {
        long long i = r * c + ch;
        float v = bn_activate(fmaf(x[i], scale, shift), swish);
        y[i] = has_residual ? v + residual[i] : v;
    }
}

// Stage 1 of the backward: per (chunk, channel) sums of dz and dz * xhat into partial [2][chunks][c].
extern "C" __global__ void batchnorm_grad_partial_f32(float* __restrict__ partial, const float* __restrict__ x,
                                                      const float* __restrict__ dy, const float* __restrict__ gamma,
                                                      const float* __restrict__ beta, const float* __restrict__ saved,
                                                      long long pixels, int c, int rows_per_chunk, int swish) {
    __shared__ float sa[BN_ROW_LANES * BN_CH_TILE];
    __shared__ float sb[BN_ROW_LANES * BN_CH_TILE];
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    long long row0 = (long long)blockIdx.y * rows_per_chunk;
    long long row1 = min(row0 + rows_per_chunk, pixels);
    float sdz = 0.0f, sdzx = 0.0f;
    if (ch < c) {
        float mean = saved[ch];
        float invstd = rsqrtf(saved[c + ch] + BN_EPS);
        float g = gamma[ch], b = beta[ch];
#pragma unroll 4
        for (long long r = row0 + threadIdx.y; r < row1; r += BN_ROW_LANES) {
            long long i = r * c + ch;
            float xhat = (x[i] - mean) * invstd;
            float dz = dy[i] * bn_activate_grad(fmaf(g, xhat, b), swish);
            sdz += dz;
            sdzx += dz * xhat;
        }
    }
    bn_block_reduce2(sa, sb, sdz, sdzx);
    if (threadIdx.y == 0 && ch < c) {
        long long plane = (long long)gridDim.y * c;
        partial[(long long)blockIdx.y * c + ch] = sdz;
        partial[plane + (long long)blockIdx.y * c + ch] = sdzx;
    }
}

// Stage 2 of the backward: sums[0..c) = sum dz, sums[c..2c) = sum dz*xhat (for the dx kernel);
// dbeta[ch] += sum dz, dgamma[ch] += sum dz*xhat (the active slice of the stored gradients).
extern "C" __global__ void batchnorm_grad_finalize_f32(float* __restrict__ sums, float* __restrict__ dgamma,
                                                       float* __restrict__ dbeta, const float* __restrict__ partial,
                                                       int c, int chunks) {
    __shared__ double s1s[BN_FINAL_LANES][BN_CH_TILE];
    __shared__ double s2s[BN_FINAL_LANES][BN_CH_TILE];
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    double s1 = 0.0, s2 = 0.0;
    if (ch < c) {
        long long plane = (long long)chunks * c;
        for (int k = threadIdx.y; k < chunks; k += BN_FINAL_LANES) {
            s1 += (double)partial[(long long)k * c + ch];
            s2 += (double)partial[plane + (long long)k * c + ch];
        }
    }
    s1s[threadIdx.y][threadIdx.x] = s1;
    s2s[threadIdx.y][threadIdx.x] = s2;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < BN_FINAL_LANES; ++k) {
            s1 += s1s[k][threadIdx.x];
            s2 += s2s[k][threadIdx.x];
        }
        sums[ch] = (float)s1;
        sums[c + ch] = (float)s2;
        dbeta[ch] += (float)s1;
        dgamma[ch] += (float)s2;
    }
}

// dx = gamma * invstd / P * (P * dz - sum dz - xhat * sum(dz * xhat)), dz recomputed.
extern "C" __global__ void batchnorm_grad_input_f32(float* __restrict__ dx, const float* __restrict__ x,
                                                    const float* __restrict__ dy, const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, const float* __restrict__ saved,
                                                    const float* __restrict__ sums, long long pixels, int c,
                                                    int rows_per_chunk, int swish) {
    int ch = blockIdx.x * BN_CH_TILE + threadIdx.x;
    if (ch >= c) return;
    float mean = saved[ch];
    float invstd = rsqrtf(saved[c + ch] + BN_EPS);
    float g = gamma[ch], b = beta[ch];
    float inv_p = 1.0f / (float)pixels;
    float mean_dz = sums[ch] * inv_p;
    float mean_dzx = sums[c + ch] * inv_p;
    float k = g * invstd;
    long long row0 = (long long)blockIdx.y * rows_per_chunk;
    long long row1 = min(row0 + rows_per_chunk, pixels);
#pragma unroll 4
    for (long long r = row0 + threadIdx.y; r < row1; r += BN_ROW_LANES) {
        long long i = r * c + ch;
        float xhat = (x[i] - mean) * invstd;
        float dz = dy[i] * bn_activate_grad(fmaf(g, xhat, b), swish);
        dx[i] = k * (dz - mean_dz - xhat * mean_dzx);
    }
}

// Calibration (PyTorch momentum=None) after batch number `batches` (1-based): one thread per channel.
extern "C" __global__ void batchnorm_calibrate_f32(float* __restrict__ running_mean, float* __restrict__ running_var,
                                                   const float* __restrict__ saved, int c, long long pixels,
                                                   int batches) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float k = 1.0f / (float)batches;
    float bessel = (float)((double)pixels / (double)(pixels - 1));
    float unbiased = saved[c + ch] * bessel;
    running_mean[ch] += (saved[ch] - running_mean[ch]) * k;
    running_var[ch] += (unbiased - running_var[ch]) * k;
}
