// Self-test kernels of the SIMT emulator (tests/emu_*.rs): each exercises one part of the execution
// model against a plain-loop expectation in the test. Compiled only into the emulator (build/emu.rs),
// never by nvcc; they use nothing a GPU would reject, so they would behave the same on one.
#include "../../common.cuh"

// 3-D indexing: out[global linear thread id] = that id, plus each builtin's value, so the test checks
// threadIdx/blockIdx/blockDim/gridDim in every dimension. out has 8 ints per thread.
extern "C" __global__ void emu_index_3d_i32(int* out) {
    long long block = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
    int tpb = blockDim.x * blockDim.y * blockDim.z;
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    long long g = block * tpb + t;
    int* o = out + g * 8;
    o[0] = (int)g;
    o[1] = threadIdx.x; o[2] = threadIdx.y; o[3] = threadIdx.z;
    o[4] = blockIdx.x; o[5] = blockIdx.y; o[6] = blockIdx.z;
    o[7] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
}

// Reverses each block's chunk of blockDim.x elements through a static __shared__ tile: correct only if
// the barrier holds every thread until the tile is full, and the tile is per block. Ragged last chunk:
// positions past n hold 0.
extern "C" __global__ void emu_block_reverse_f32(float* out, const float* in, int n) {
    __shared__ float tile[1024];
    int base = blockIdx.x * blockDim.x;
    int t = threadIdx.x;
    tile[t] = base + t < n ? in[base + t] : 0.0f;
    __syncthreads();
    int src = blockDim.x - 1 - t;
    if (base + t < n) out[base + t] = tile[src];
}

// Per-block sum with a dynamic (extern) shared buffer of blockDim.x floats, tree reduction with a
// barrier per level (blockDim.x a power of two). Also counts, with __syncthreads_count, the threads
// whose input is positive: counts[blockIdx.x].
extern "C" __global__ void emu_block_sum_dyn_f32(float* sums, int* counts, const float* in, int n) {
    extern __shared__ float buf[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? in[i] : 0.0f;
    buf[threadIdx.x] = v;
    int positive = __syncthreads_count(v > 0.0f);
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        sums[blockIdx.x] = buf[0];
        counts[blockIdx.x] = positive;
    }
}

// Every warp intrinsic on `in` (one int per thread); 10 results per thread in out:
// [0] shfl from lane 3, [1] shfl_up 1, [2] shfl_down 1, [3] shfl_xor 1, [4] shfl_down 2 width 8,
// [5] ballot(in > 0), [6] any(in > 0), [7] all(in > 0), [8] __reduce_add_sync, [9] lane id.
// Blocks may be partial warps (blockDim.x not a multiple of 32): the mask is full and the emulator
// drops the missing lanes, which read as poison (-1) where a lane would read one of them.
extern "C" __global__ void emu_warp_ops_i32(int* out, const int* in) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[t];
    int* o = out + t * 10;
    unsigned full = 0xffffffffu;
    o[0] = __shfl_sync(full, v, 3);
    o[1] = __shfl_up_sync(full, v, 1);
    o[2] = __shfl_down_sync(full, v, 1);
    o[3] = __shfl_xor_sync(full, v, 1);
    o[4] = __shfl_down_sync(full, v, 2, 8);
    o[5] = (int)__ballot_sync(full, v > 0);
    o[6] = __any_sync(full, v > 0) ? 1 : 0;
    o[7] = __all_sync(full, v > 0) ? 1 : 0;
    o[8] = __reduce_add_sync(full, v);
    __syncwarp();
    o[9] = threadIdx.x % 32;
}

// Butterfly sum over the 32 lanes of a warp. A helper on purpose: the kernel below names no warp
// intrinsic itself, so it tests that build/emu_classify.rs follows calls.
__device__ __forceinline__ float emu_warp_reduce_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Warp-shuffle sum reduction in floats, the pattern the reduction kernels use: out[warp] = sum of the
// warp's 32 inputs (blockDim.x a multiple of 32).
extern "C" __global__ void emu_warp_sum_f32(float* out, const float* in) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    float v = emu_warp_reduce_sum(in[t]);
    if (threadIdx.x % 32 == 0) out[t / 32] = v;
}

// Atomics from every thread of a grid-stride loop over n: ints[0] += 1 per element, ints[1] = max of
// (int)(x * 1000), ints[2] = min of it, ints[3] counts via atomicCAS increments, fsum[0] += x.
extern "C" __global__ void emu_atomics(int* ints, float* fsum, const float* in, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        float x = in[i];
        int q = __float2int_rz(x * 1000.0f);
        atomicAdd(&ints[0], 1);
        atomicMax(&ints[1], q);
        atomicMin(&ints[2], q);
        int old = atomicAdd(&ints[3], 0);  // an atomic read: a plain one would race
        int assumed;
        do {
            assumed = old;
            old = atomicCAS(&ints[3], assumed, assumed + 1);
        } while (old != assumed);
        atomicAdd(&fsum[0], x);
    }
}

// A device assert that fails for element `bad` (tests that it fails the launch with the condition).
extern "C" __global__ void emu_assert_i32(int* out, int bad) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    assert(t != bad);
    out[t] = t;
}
