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

// Misaligned vector load: reads x + 1 as float4. A GPU faults ("misaligned address"); the ASan build's
// alignment check (-fsanitize=alignment) reports it.
extern "C" __global__ void planted_misaligned_float4_f32(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (4 * i + 4 < n) {
        float4 v = reinterpret_cast<const float4*>(x + 1)[i];
        y[i] = v.x + v.y + v.z + v.w;
    }
}

// Waits for a later block: block 0 spins until block 1 sets the flag. Blocks of a grid have no
// forward-progress guarantee on a GPU; in the emulator (blocks in sequence) it never returns, and the
// launch watchdog (SIMT_LAUNCH_TIMEOUT_S) stops the process naming the kernel.
extern "C" __global__ void planted_wait_for_later_block_i32(int* flag) {
    if (blockIdx.x == 1) {
        atomicExch(flag, 1);
        return;
    }
    while (atomicAdd(flag, 0) == 0) {
    }
}
