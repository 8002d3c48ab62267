// Losses and metrics on logits, f32 (the CPU reference, in f64, is src/backend/cpu/loss.rs; spec 3.2).
//
// Formulas, per row z (k classes), m = max_c z_c, S = sum_c exp(z_c - m):
//   label smoothing (eps, label y):  loss = log S - (1 - eps) (z_y - m) - (eps / k) sum_c (z_c - m)
//                                    dz_c = (exp(z_c - m) / S - (1 - eps) [c == y] - eps / k) * inv_n
//   soft CE (teacher T, mT, ST):     loss = log S - (1 / ST) sum_c exp(T_c - mT) (z_c - m)
//                                    dz_c = (exp(z_c - m) / S - exp(T_c - mT) / ST) * inv_n
//   alpha-divergence KD (AlphaNet's AdaptiveLossSoft; reference: backend::cpu::loss::AlphaDivergence):
//     lq = log_softmax(z), lp = log_softmax(T), q = exp(lq), log w = lp - lq; per alpha of {a_min, a_max}
//     a class's divergence term d and gradient weight a = q rho:
//       |alpha| < 1e-3:     lw = min(log w, log clip);  d = -q lw;            a = q (lw - 1)
//       |alpha - 1| < 1e-3: p = exp(lp);                d = p log w;          a = p
//       otherwise:          iw = min(exp(alpha log w), clip), b = 1 / (alpha (alpha - 1));
//                           d = q (iw - 1) b;           a = q (iw / alpha + b)
//     D = sum_c d; alpha_min is used iff D(a_min) > D(a_max); then with A = sum_c a (chosen alpha):
//     loss = -sum_c a_c lq_c (the original's surrogate);  dz_c = (q_c A - a_c) * inv_n
//   rank of the label:               #{c : z_c > z_y} + #{c < y : z_c == z_y}
// Both loss forms are -sum_c target_c log_softmax(z)_c rewritten with sum_c target_c = 1, so every term is
// a max-subtracted quantity (z_c - m <= 0, exp <= 1): no overflow for any finite logits, and no
// cancellation between two large log-sum-exp terms. inv_n = 1 / batch: the gradients are of the mean.
// Labels are class indices stored as f32; a label that is not an integer in [0, k) makes the row's loss,
// gradient and rank NaN (a kernel cannot return an error; NaN is visible downstream, a clamp is not).
//
// Layout: logits, teacher, dlogits (n, k) row-major dense; labels, row outputs (n).
// Launch, row kernels: one block per row (grid n), blockDim a multiple of 32 up to 256 (the launcher
// picks min(256, round_up(k, 32))); threads stride over the row, then a block reduction (warp shuffles,
// then one warp over the per-warp partials in shared memory). The row (4 KB at k = 1000) is re-read per
// pass from L1/L2; these kernels are launch-bound at batch 64, so nothing more is worth doing.
// Launch, batch kernels (batch_mean, topk_count): one block of 256 threads over the n row values, fixed
// order; this is the second stage of a deterministic two-stage reduction (no float atomics).

#include "common.cuh"

#define LOSS_MAX_WARPS 32
// Spelled as bit patterns: INFINITY/NAN need <math.h>, which NVRTC does not provide.
#define LOSS_NEG_INF __int_as_float((int)0xff800000u)
#define LOSS_NAN __int_as_float(0x7fc00000)

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32. The order is
// fixed (butterfly within warps, then warp partials in index order), so results are reproducible.
__device__ float block_sum(float v, float* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1) {
            v += __shfl_xor_sync(0xffffffffu, v, offset);
        }
        if (lane == 0) {
            scratch[0] = v;
        }
    }
    __syncthreads();
    v = scratch[0];
    __syncthreads();  // scratch is free for the next reduction
    return v;
}

// Max over the block (NaN-ignoring, like fmaxf); every thread gets the result. As block_sum.
__device__ float block_max(float v, float* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : LOSS_NEG_INF;
        for (int offset = 16; offset > 0; offset >>= 1) {
            v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
        }
        if (lane == 0) {
            scratch[0] = v;
        }
    }
    __syncthreads();
    v = scratch[0];
    __syncthreads();
    return v;
}

// The class a label names, or -1 when it is not an integer in [0, k) (NaN fails every comparison).
__device__ __forceinline__ int label_class(float label, int k) {
    return (label >= 0.0f && label < (float)k && label == floorf(label)) ? (int)label : -1;
}

__device__ __forceinline__ float row_max(const float* z, int k, float* scratch) {
    float m = LOSS_NEG_INF;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        m = fmaxf(m, z[c]);
    }
    return block_max(m, scratch);
}

// sum_c exp(z_c - m)
__device__ __forceinline__ float row_sum_exp(const float* z, int k, float m, float* scratch) {
    float s = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        s += expf(z[c] - m);
    }
    return block_sum(s, scratch);
}

extern "C" __global__ void label_smoothing_ce_fwd_f32(float* __restrict__ row_loss, const float* __restrict__ logits,
                                                      const float* __restrict__ labels, int k, float eps) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const float* z = logits + (long long)blockIdx.x * k;
    const float m = row_max(z, k, scratch);
    float sum_exp = 0.0f, sum_shifted = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float d = z[c] - m;
        sum_exp += expf(d);
        sum_shifted += d;
    }
    sum_exp = block_sum(sum_exp, scratch);
    sum_shifted = block_sum(sum_shifted, scratch);
    if (threadIdx.x == 0) {
        const int y = label_class(labels[blockIdx.x], k);
        row_loss[blockIdx.x] =
            y < 0 ? LOSS_NAN : logf(sum_exp) - (1.0f - eps) * (z[y] - m) - (eps / (float)k) * sum_shifted;
    }
}

extern "C" __global__ void label_smoothing_ce_bwd_f32(float* __restrict__ dlogits, const float* __restrict__ logits,
                                                      const float* __restrict__ labels, int k, float eps,
                                                      float inv_n) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const long long row = (long long)blockIdx.x * k;
    const float* z = logits + row;
    const float m = row_max(z, k, scratch);
    const float inv_sum = 1.0f / row_sum_exp(z, k, m, scratch);
    const int y = label_class(labels[blockIdx.x], k);
    const float smooth = eps / (float)k;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float target = (c == y) ? (1.0f - eps) + smooth : smooth;
        dlogits[row + c] = y < 0 ? LOSS_NAN : (expf(z[c] - m) * inv_sum - target) * inv_n;
    }
}

extern "C" __global__ void soft_ce_fwd_f32(float* __restrict__ row_loss, const float* __restrict__ logits,
                                           const float* __restrict__ teacher, int k) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const float* z = logits + (long long)blockIdx.x * k;
    const float* t = teacher + (long long)blockIdx.x * k;
    const float m = row_max(z, k, scratch);
    const float m_teacher = row_max(t, k, scratch);
    float sum_exp = 0.0f, sum_exp_teacher = 0.0f, cross = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float e_teacher = expf(t[c] - m_teacher);
        sum_exp += expf(z[c] - m);
        sum_exp_teacher += e_teacher;
        cross += e_teacher * (z[c] - m);
    }
    sum_exp = block_sum(sum_exp, scratch);
    sum_exp_teacher = block_sum(sum_exp_teacher, scratch);
    cross = block_sum(cross, scratch);
    if (threadIdx.x == 0) {
        row_loss[blockIdx.x] = logf(sum_exp) - cross / sum_exp_teacher;
    }
}

extern "C" __global__ void soft_ce_bwd_f32(float* __restrict__ dlogits, const float* __restrict__ logits,
                                           const float* __restrict__ teacher, int k, float inv_n) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const long long row = (long long)blockIdx.x * k;
    const float* z = logits + row;
    const float* t = teacher + row;
    const float m = row_max(z, k, scratch);
    const float m_teacher = row_max(t, k, scratch);
    const float inv_sum = 1.0f / row_sum_exp(z, k, m, scratch);
    const float inv_sum_teacher = 1.0f / row_sum_exp(t, k, m_teacher, scratch);
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        dlogits[row + c] = (expf(z[c] - m) * inv_sum - expf(t[c] - m_teacher) * inv_sum_teacher) * inv_n;
    }
}

// Per-class terms of one alpha (see the header): *d the divergence term, *a = q rho.
__device__ __forceinline__ void alpha_terms(float alpha, float clip, float lq, float lp, float* d, float* a) {
    const float q = expf(lq), log_w = lp - lq;
    if (fabsf(alpha) < 1e-3f) {
        const float lw = fminf(log_w, logf(clip));
        *d = -q * lw;
        *a = q * (lw - 1.0f);
    } else if (fabsf(alpha - 1.0f) < 1e-3f) {
        const float p = expf(lp);
        *d = p * log_w;
        *a = p;
    } else {
        const float iw = fminf(expf(alpha * log_w), clip);
        const float base = 1.0f / (alpha * (alpha - 1.0f));
        *d = q * (iw - 1.0f) * base;
        *a = q * (iw / alpha + base);
    }
}

// The row's log-softmax offsets (lq_c = z_c - *off_z, lp_c = T_c - *off_t) and the alpha it uses (the one
// with the larger divergence, alpha_min only when strictly larger). Every thread gets the results.
__device__ float alpha_row_setup(const float* z, const float* t, int k, float alpha_min, float alpha_max, float clip,
                                 float* off_z, float* off_t, float* scratch) {
    const float m = row_max(z, k, scratch);
    const float m_teacher = row_max(t, k, scratch);
    *off_z = m + logf(row_sum_exp(z, k, m, scratch));
    *off_t = m_teacher + logf(row_sum_exp(t, k, m_teacher, scratch));
    float d_min = 0.0f, d_max = 0.0f, d, a;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float lq = z[c] - *off_z, lp = t[c] - *off_t;
        alpha_terms(alpha_min, clip, lq, lp, &d, &a);
        d_min += d;
        alpha_terms(alpha_max, clip, lq, lp, &d, &a);
        d_max += d;
    }
    d_min = block_sum(d_min, scratch);
    d_max = block_sum(d_max, scratch);
    return d_min > d_max ? alpha_min : alpha_max;
}

extern "C" __global__ void alpha_divergence_fwd_f32(float* __restrict__ row_loss, const float* __restrict__ logits,
                                                    const float* __restrict__ teacher, int k, float alpha_min,
                                                    float alpha_max, float clip) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const float* z = logits + (long long)blockIdx.x * k;
    const float* t = teacher + (long long)blockIdx.x * k;
    float off_z, off_t, d, a;
    const float alpha = alpha_row_setup(z, t, k, alpha_min, alpha_max, clip, &off_z, &off_t, scratch);
    float cross = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float lq = z[c] - off_z;
        alpha_terms(alpha, clip, lq, t[c] - off_t, &d, &a);
        cross += a * lq;
    }
    cross = block_sum(cross, scratch);
    if (threadIdx.x == 0) {
        row_loss[blockIdx.x] = -cross;
    }
}

extern "C" __global__ void alpha_divergence_bwd_f32(float* __restrict__ dlogits, const float* __restrict__ logits,
                                                    const float* __restrict__ teacher, int k, float alpha_min,
                                                    float alpha_max, float clip, float inv_n) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const long long row = (long long)blockIdx.x * k;
    const float* z = logits + row;
    const float* t = teacher + row;
    float off_z, off_t, d, a;
    const float alpha = alpha_row_setup(z, t, k, alpha_min, alpha_max, clip, &off_z, &off_t, scratch);
    float sum_a = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        alpha_terms(alpha, clip, z[c] - off_z, t[c] - off_t, &d, &a);
        sum_a += a;
    }
    sum_a = block_sum(sum_a, scratch);
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float lq = z[c] - off_z;
        alpha_terms(alpha, clip, lq, t[c] - off_t, &d, &a);
        dlogits[row + c] = (expf(lq) * sum_a - a) * inv_n;
    }
}

extern "C" __global__ void topk_rank_fwd_f32(float* __restrict__ row_rank, const float* __restrict__ logits,
                                             const float* __restrict__ labels, int k) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    const float* z = logits + (long long)blockIdx.x * k;
    const int y = label_class(labels[blockIdx.x], k);
    const float z_y = y < 0 ? 0.0f : z[y];
    float above = 0.0f;  // counts <= k <= 2^24 are exact in f32
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float v = z[c];
        above += (v > z_y || (v == z_y && c < y)) ? 1.0f : 0.0f;
    }
    above = block_sum(above, scratch);
    if (threadIdx.x == 0) {
        row_rank[blockIdx.x] = y < 0 ? LOSS_NAN : above;
    }
}

extern "C" __global__ void batch_mean_fwd_f32(float* __restrict__ mean, const float* __restrict__ values, int n) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        s += values[i];
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        mean[0] = s / (float)n;
    }
}

// counts[0] = rows with rank < 1, counts[1] = rows with rank < 5; NaN if any rank is NaN.
extern "C" __global__ void topk_count_fwd_f32(float* __restrict__ counts, const float* __restrict__ row_rank, int n) {
    __shared__ float scratch[LOSS_MAX_WARPS];
    float top1 = 0.0f, top5 = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float r = row_rank[i];
        const float invalid = (r == r) ? 0.0f : LOSS_NAN;
        top1 += (r < 1.0f ? 1.0f : 0.0f) + invalid;
        top5 += (r < 5.0f ? 1.0f : 0.0f) + invalid;
    }
    top1 = block_sum(top1, scratch);
    top5 = block_sum(top5, scratch);
    if (threadIdx.x == 0) {
        counts[0] = top1;
        counts[1] = top5;
    }
}
