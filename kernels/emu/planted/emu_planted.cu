// Planted bugs: kernels that are wrong on purpose, so tests can prove the emulator and its sanitizer
// builds catch each class of bug (tests/emu_divergence.rs, tests/emu_sanitize.rs). Compiled only into
// the emulator (build/emu.rs), never by nvcc, never reachable through KernelFn.

// Off-by-one global write: `<=` writes y[n], one past the end (ASan: heap-buffer-overflow WRITE).
extern "C" __global__ void planted_oob_write_f32(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = i < n ? x[i] * 2.0f : 0.0f;
}

// Off-by-one static shared write: thread t writes tile[t + 1]; the last thread of a 256-thread block
// writes past the tile (ASan: global-buffer-overflow on the __shared__ array).
extern "C" __global__ void planted_shared_oob_f32(float* y, const float* x, int n) {
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x + 1] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) y[i] = tile[threadIdx.x];
}

// Off-by-one dynamic shared write: launched with blockDim.x floats, thread t writes buf[t + 1]
// (ASan: heap-buffer-overflow in the launch's dynamic arena).
extern "C" __global__ void planted_dyn_shared_oob_f32(float* y, const float* x, int n) {
    extern __shared__ float buf[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x + 1] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) y[i] = buf[threadIdx.x];
}

// Missing barrier: each thread writes its tile slot and at once reads another thread's slot
// (TSan: data race on the __shared__ tile). The correct kernel is emu_block_reverse_f32.
extern "C" __global__ void planted_missing_barrier_f32(float* out, const float* in, int n) {
    __shared__ float tile[1024];
    int base = blockIdx.x * blockDim.x;
    int t = threadIdx.x;
    tile[t] = base + t < n ? in[base + t] : 0.0f;
    // __syncthreads();  <- the missing barrier
    if (base + t < n) out[base + t] = tile[blockDim.x - 1 - t];
}

// Divergent barrier by early exit: the upper half of the block returns before the barrier the lower
// half waits at (a hang or undefined behaviour on a GPU; an error naming the kernel here).
extern "C" __global__ void planted_barrier_after_exit_f32(float* y, const float* x, int n) {
    __shared__ float tile[1024];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x >= blockDim.x / 2) return;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) y[i] = tile[threadIdx.x];
}

// Divergent barrier by different call sites: even and odd threads wait at different __syncthreads.
extern "C" __global__ void planted_barrier_two_sites_f32(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    if (threadIdx.x % 2 == 0) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    if (i < n) y[i] = v;
}

// A warp shuffle whose full mask names lanes that have exited (lanes 16..31 return first).
extern "C" __global__ void planted_shuffle_after_exit_f32(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x % 32 >= 16) return;
    float v = i < n ? x[i] : 0.0f;
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    if (i < n) y[i] = v;
}
