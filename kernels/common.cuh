// Shared device helpers for every kernel file. Included with #include "common.cuh"; build.rs inlines
// it into each flattened source for NVRTC. Everything here compiles unchanged for nvcc, NVRTC and the
// SIMT emulator (kernels/emu/simt.h), so it uses only portable CUDA.
#pragma once

// Grid-stride loop over [0, n): correct for any grid size, so launchers may cap the grid.
#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float sigmoidf_fast(float x) {
    // 1 / (1 + e^-x) with the fast exponential; saturates cleanly to 0 or 1 for |x| > 88.
    return 1.0f / (1.0f + __expf(-x));
}
