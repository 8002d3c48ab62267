// Fill a buffer with one value, f32: x[i] = v for i < n.
//
// Used to zero the gradient arena before each training step (the sandwich rule then accumulates the
// four subnets into it) and to reset BN running statistics before calibration (mean 0, var 1).
// cuMemsetD32 would do for zero, but a kernel keeps the op on the same launch seam as every other op,
// so the SIMT emulator runs it too and the CPU/GPU code paths stay one.
//
// Layout: flat array of n floats. Launch: 1-D grid-stride loop, 256 threads per block,
// grid = min(ceil(n / 256), 65535 * 4); any n including 0 is correct. Memory-bound (4 bytes/elem).

#include "common.cuh"

extern "C" __global__ void fill_f32(float* __restrict__ x, long long n, float v) {
    GRID_STRIDE_LOOP(i, n) { x[i] = v; }
}
