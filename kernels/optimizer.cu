// Fused optimizer step, f32: element-wise gradient clip, coupled weight decay, SGD with Nesterov momentum
// (PyTorch's clip_grad_value_ then SGD(nesterov=True); the CPU reference is src/backend/cpu/optimizer.rs).
//
// Formula, per element (spec 3.1):
//   g = clip(grad, -c, c);  g += wd * p;  v = mu * v + g;  p -= lr * (g + mu * v)
// The clip is written with comparisons so a NaN gradient stays NaN (fminf/fmaxf would turn it into +-c
// and hide a diverged step); c = +inf disables it.
//
// Layout: params, momentum, grads: the same n contiguous floats of one parameter group (one weight decay);
// the launcher issues one launch per group (see src/backend/ops/optimizer.rs for why groups are runs).
// Launch: 1-D grid-stride loop, 256 threads per block, grid = min(ceil(n / 256), 65535 * 4).
// Memory-bound: 12 bytes read + 8 written per element, nothing reused, so there is nothing to stage in
// shared memory; consecutive threads touch consecutive floats, so every warp access is fully coalesced.

#include "common.cuh"

extern "C" __global__ void sgd_nesterov_step_f32(float* __restrict__ params, float* __restrict__ momentum,
                                                 const float* __restrict__ grads, long long n, float lr,
                                                 float momentum_coef, float weight_decay, float clip) {
    GRID_STRIDE_LOOP(i, n) {
        float g = grads[i];
        g = g > clip ? clip : (g < -clip ? -clip : g);
        const float p = params[i];
        g = fmaf(weight_decay, p, g);
        const float v = fmaf(momentum_coef, momentum[i], g);
        momentum[i] = v;
        params[i] = p - lr * fmaf(momentum_coef, v, g);
    }
}
