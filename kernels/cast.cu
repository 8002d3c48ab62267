// Storage-type conversion: f32 <-> any storage type (kernels/storage.cuh). The bf16 copies of the
// weights the GEMMs read, the bf16 images of f32 values, and their f32 widenings.
//
//   cast_from_f32_<T>: y[i] = round_T(x[i])   (round to nearest, ties to even, for bf16; a copy for f32)
//   cast_to_f32_<T>:   y[i] = widen(x[i])      (exact)
//
// Layout: flat arrays of n elements. Launch: 1-D grid-stride loop, 256 threads per block, grid =
// min(ceil(n / 256), 65535 * 4). Memory-bound: 6 bytes per element each way for bf16.

#include "common.cuh"
#include "storage.cuh"

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void cast_from_f32(T* __restrict__ y, const float* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) { store(y, i, x[i]); }
}

ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void cast_to_f32(float* __restrict__ y, const T* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = load(x, i); }
}
