// Fused optimizer step: element-wise gradient clip, coupled weight decay, SGD with Nesterov momentum
// (PyTorch's clip_grad_value_ then SGD(nesterov=True); the CPU reference is src/backend/cpu/optimizer.rs),
// and, in bf16 training, the refresh of the parameters' storage-type copy in the same pass.
// Master weights, momentum and gradients are f32 always; T is the copy's storage type (entry points
// sgd_nesterov_step_f32 / _bf16 generated from ENTRY_POINTS; kernels/storage.cuh).
//
// Formula, per element (spec 3.1):
//   g = clip(grad, -c, c);  g += wd * p;  v = mu * v + g;  p -= lr * (g + mu * v)
//   copy = round_T(p)                                  (only when has_copy; the GEMMs read the copy)
// The clip is written with comparisons so a NaN gradient stays NaN (fminf/fmaxf would turn it into +-c
// and hide a diverged step); c = +inf disables it.
//
// Layout: params, momentum, grads: the same n contiguous floats of one parameter group (one weight decay);
// the launcher issues one launch per group (see src/backend/ops/optimizer.rs for why groups are runs).
// Launch: 1-D grid-stride loop, 256 threads per block, grid = min(ceil(n / 256), 65535 * 4).
// Memory-bound: 12 bytes read + 8 written per element (+ sizeof(T) with the copy, which saves the
// separate cast pass's 4-byte read), nothing reused, so there is nothing to stage in
// shared memory; consecutive threads touch consecutive floats, so every warp access is fully coalesced.

#include "common.cuh"
#include "storage.cuh"

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void sgd_nesterov_step(float* __restrict__ params, float* __restrict__ momentum,
                                                  const float* __restrict__ grads, T* __restrict__ copy,
                                                  long long n, float lr, float momentum_coef, float weight_decay,
                                                  float clip, int has_copy) {
    GRID_STRIDE_LOOP(i, n) {
        float g = grads[i];
        g = g > clip ? clip : (g < -clip ? -clip : g);
        const float p = params[i];
        g = fmaf(weight_decay, p, g);
        const float v = fmaf(momentum_coef, momentum[i], g);
        momentum[i] = v;
        const float updated = p - lr * fmaf(momentum_coef, v, g);
        params[i] = updated;
        if (has_copy) store(copy, i, updated);
    }
}
