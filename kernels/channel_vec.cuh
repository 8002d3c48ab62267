// Four consecutive channels per thread for the per-channel kernels over [rows, c] (NHWC) activations
// stored as f32 or bf16 (kernels/batchnorm.cu).
//
// Why: with one channel per lane a warp's row access is 32 values: 128 bytes in f32, but 64 bytes in
// bf16 (half a cache line per memory instruction, and 2 bytes in flight per thread per load), so the
// bf16 kernels would be issue-bound well under the copy bandwidth (issue #13: each memory-bound kernel
// at 70 % of it). A lane owning channels ch0 .. ch0 + 3 moves one 16-byte float4 (f32) or 8-byte uint2
// (bf16) per row instead (kernels/elementwise.cuh's load4/store4), and a warp covers 128 channels.
//
// Exactness: only the thread that owns a channel changes; each channel's arithmetic (its rows in the
// same order, the same folds) is what the one-channel-per-lane kernels did, so the results are the same
// bits as long as the rows each thread visits and the order of the folds stay the same (the row lanes
// below change them for c <= 64), and the wide and the scalar path agree bit for bit (tests/batchnorm.rs).
//
// The wide path needs c % 4 == 0 (then ch0 and every row start r * c are multiples of 4) and every
// tensor pointer aligned to 4 elements (arena tensors are; a slice at an odd offset is not): the kernel
// decides once (`wide`, uniform across the grid), otherwise it loads and stores the lane's `valid`
// (<= 4) channels one by one. Lanes past c (valid <= 0) hold zeros and touch no memory.
#pragma once

#include "elementwise.cuh"
#include "storage.cuh"

#define CH_VEC 4

// One thread's place in a per-pixel kernel over [rows, c] with block = 32 x 8 threads: its channels
// ch0 .. ch0 + valid - 1 (valid <= 4; <= 0 past c) and its row lane (rows row_lane, row_lane + row_lanes,
// ... of the block's chunk). With `lanes_per_row` channel lanes per row the 32 threads of a warp cover
// 32 / lanes_per_row rows, so a narrow layer (c <= 64) still keeps every thread busy: c = 16 takes 4
// channel lanes and 8 rows per warp, 64 row lanes per block.
struct ChanLane {
    int ch0;
    int valid;
    bool wide;
    int row_lane;
    int row_lanes;
};

// Channel lanes per row for c channels: the smallest power of two covering ceil(c / 4) channel groups,
// at most 32 (wider layers take several blocks across the channels, grid.x = ceil(c / 128)).
__device__ __forceinline__ int lanes_per_row(int c) {
    const int groups = (c + CH_VEC - 1) / CH_VEC;
    int lanes = 1;
    while (lanes < groups && lanes < 32) lanes *= 2;
    return lanes;
}

// The lane of thread (blockIdx.x, threadIdx.x, threadIdx.y); lanes = lanes_per_row(c), or 32 for a
// kernel whose row order must stay that of a one-row-per-warp geometry (8 row lanes).
__device__ __forceinline__ ChanLane chan_lane(int c, bool wide, int lanes) {
    const int rows_per_warp = 32 / lanes;
    const int ch0 = (blockIdx.x * lanes + (int)threadIdx.x % lanes) * CH_VEC;
    const int row_lane = (int)threadIdx.y * rows_per_warp + (int)threadIdx.x / lanes;
    return ChanLane{ch0, min(CH_VEC, c - ch0), wide, row_lane, (int)blockDim.y * rows_per_warp};
}

// Values at flat indices i .. i + 3 (i = r * c + ch0); lanes past `valid` read as 0.
template <typename T>
__device__ __forceinline__ Vals4 load_chans(const T* p, long long i, const ChanLane& l) {
    if (l.wide) return load4(p, i >> 2);
    Vals4 v{{0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int j = 0; j < CH_VEC; ++j) {
        if (j < l.valid) v.v[j] = load(p, i + j);
    }
    return v;
}

template <typename T>
__device__ __forceinline__ void store_chans(T* p, long long i, const Vals4& v, const ChanLane& l) {
    if (l.wide) {
        store4(p, i >> 2, v);
        return;
    }
#pragma unroll
    for (int j = 0; j < CH_VEC; ++j) {
        if (j < l.valid) store(p, i + j, v.v[j]);
    }
}

// A per-channel f32 parameter (gamma, beta, mean, var, ...) at channels ch0 .. ch0 + 3, `fill` past valid
// (parameters are short f32 arrays, read once per thread: scalar loads).
__device__ __forceinline__ Vals4 load_params(const float* p, const ChanLane& l, float fill) {
    Vals4 v{{fill, fill, fill, fill}};
#pragma unroll
    for (int j = 0; j < CH_VEC; ++j) {
        if (j < l.valid) v.v[j] = p[l.ch0 + j];
    }
    return v;
}
