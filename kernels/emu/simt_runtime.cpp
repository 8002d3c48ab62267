// SIMT emulator runtime: the thread pool, block barriers, warp exchanges and the launch entry point that
// src/backend/cuda/emu.rs calls (through the tables build/emu.rs generates). See simt.h for the model.
//
// Concurrency: one launch at a time (a process-wide mutex), its blocks in sequence. In cooperative mode
// block thread i runs on pool worker i; all barrier state is guarded by one block mutex, so a barrier or
// warp exchange is a real happens-before edge for ThreadSanitizer and code between barriers is truly
// concurrent. Kernels flagged KERNEL_INDEPENDENT_THREADS (no shared memory, barriers or warp
// intrinsics in their file) run whole blocks serially on a few workers instead (much faster; blocks
// still run concurrently, so ThreadSanitizer sees races between blocks); SIMT_FORCE_THREADS=1 makes
// every kernel cooperative.
//
// Divergent barriers: a thread that waits increments `waiting`, a thread that returns increments
// `exited`; when waiting + exited == threads with waiting > 0, no barrier can ever complete (the last
// arrival completes a barrier), so the block is aborted: waiting threads throw `Abort`, which unwinds
// the kernel frames back to the worker, and the launch reports where each thread was.
// system headers first: simt.h defines __noinline__, which libstdc++ headers spell themselves
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "simt.h"

namespace simt {

thread_local uint3 tls_thread_idx;
thread_local uint3 tls_block_idx;
thread_local dim3 tls_block_dim;
thread_local dim3 tls_grid_dim;

namespace {

struct Abort {};  // unwinds a thread out of an aborted block

constexpr unsigned MAX_THREADS = 1024;
constexpr size_t WORKER_STACK = 1u << 20;

struct Warp {
    unsigned present = 0;  // lanes this block has
    unsigned exited = 0;
    unsigned arrived = 0;  // lanes waiting in the current collective
    uint64_t gen = 0;
    const char* site = nullptr;
    const char* kind = nullptr;
    uint64_t slots[32] = {};
    uint64_t* outs[32] = {};
    unsigned* tooks[32] = {};
    std::condition_variable cv;
};

struct Block {
    std::mutex mu;
    unsigned threads = 0;
    unsigned waiting = 0;
    unsigned exited = 0;
    // __syncthreads
    unsigned bar_arrived = 0;
    uint64_t bar_gen = 0;
    const char* bar_site = nullptr;
    int bar_acc = 0;
    int bar_result = 0;
    std::condition_variable bar_cv;
    Warp warps[MAX_THREADS / 32];
    bool aborted = false;
    std::string error;

    void reset(unsigned n) {
        threads = n;
        waiting = exited = 0;
        bar_arrived = 0;
        bar_site = nullptr;
        bar_acc = bar_result = 0;
        aborted = false;
        error.clear();
        for (unsigned w = 0; w < MAX_THREADS / 32; ++w) {
            Warp& wp = warps[w];
            unsigned first = w * 32;
            unsigned lanes = first >= n ? 0 : (n - first >= 32 ? 32 : n - first);
            wp.present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
            wp.exited = wp.arrived = 0;
            wp.site = wp.kind = nullptr;
        }
    }

    // Caller holds mu.
    void abort_locked(const std::string& why) {
        if (aborted) return;
        aborted = true;
        error = why;
        bar_cv.notify_all();
        for (Warp& w : warps) w.cv.notify_all();
    }

    // Caller holds mu: every live thread waits, so nothing can ever release them.
    void check_deadlock_locked() {
        if (aborted || waiting == 0 || waiting + exited != threads) return;
        std::string why = "divergent barrier (deadlock): ";
        if (bar_arrived > 0)
            why += std::to_string(bar_arrived) + " thread(s) wait at __syncthreads() at " + bar_site + "; ";
        for (unsigned w = 0; w < MAX_THREADS / 32; ++w) {
            const Warp& wp = warps[w];
            if (wp.arrived == 0) continue;
            char lanes[64];
            std::snprintf(lanes, sizeof lanes, "lanes 0x%08x of warp %u", wp.arrived, w);
            why += std::string(lanes) + " wait at " + wp.kind + " at " + wp.site;
            if (wp.exited) {
                std::snprintf(lanes, sizeof lanes, " (lanes 0x%08x have exited)", wp.exited);
                why += lanes;
            }
            why += "; ";
        }
        why += std::to_string(exited) + " of " + std::to_string(threads) + " thread(s) have exited";
        abort_locked(why);
    }
};

struct Launch {
    const KernelEntry* kernel = nullptr;
    void** args = nullptr;
    dim3 grid, block;
    unsigned char* dyn = nullptr;
    uint3 block_idx{0, 0, 0};
    uint64_t blocks = 0;
    unsigned serial_workers = 0;
    std::mutex error_mu;  // independent mode: first trap wins
    std::atomic<bool> failed{false};
    std::string error;
};

Launch g_launch;
Block g_block;
thread_local Block* tls_block = nullptr;  // null in independent mode
thread_local unsigned tls_linear = 0;

struct Trap {
    std::string what;
};

// A kernel that never returns (an infinite loop, or a spin-wait on another block, which never runs
// concurrently here) would hang CI silently: after SIMT_LAUNCH_TIMEOUT_S seconds (default 300) the
// process stops with the kernel's name instead.
std::chrono::seconds launch_timeout() {
    const char* v = std::getenv("SIMT_LAUNCH_TIMEOUT_S");
    long s = v ? std::strtol(v, nullptr, 10) : 0;
    return std::chrono::seconds(s > 0 ? s : 300);
}

[[noreturn]] void stuck();  // reports the running kernel and aborts

// A fixed set of host threads; run(n, job) runs job(0..n) on workers 0..n and waits for all of them.
// Synchronisation is only launcher -> worker (per-worker mutex) and worker -> launcher (a release
// countdown the launcher acquires), never worker -> worker: so inside a block the only happens-before
// edges between emulated threads are the kernel's own barriers, warp collectives and atomics, and
// ThreadSanitizer reports a missing barrier even when the host ran the threads one after another.
class Pool {
  public:
    void run(unsigned n, void (*job)(unsigned)) {
        while (workers_.size() < n) spawn();
        job_ = job;
        remaining_.store(n, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lk(done_mu_);
            done_ = false;
        }
        for (unsigned i = 0; i < n; ++i) {
            Worker& w = *workers_[i];
            {
                std::lock_guard<std::mutex> lk(w.mu);
                w.has_job = true;
            }
            w.cv.notify_one();
        }
        std::unique_lock<std::mutex> lk(done_mu_);
        if (!done_cv_.wait_for(lk, launch_timeout(), [&] { return done_; })) stuck();
        // acquire every worker's release: what the job wrote is visible to the launcher
        (void)remaining_.load(std::memory_order_acquire);
    }

  private:
    struct Worker {
        Pool* pool;
        unsigned index;
        std::mutex mu;
        std::condition_variable cv;
        bool has_job = false;
    };

    void spawn() {
        auto* w = new Worker{this, (unsigned)workers_.size()};
        workers_.emplace_back(w);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, WORKER_STACK);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        if (pthread_create(&t, &attr, &Pool::main, w) != 0) {
            std::fprintf(stderr, "simt: cannot create worker thread %u\n", w->index);
            std::abort();
        }
        pthread_attr_destroy(&attr);
    }

    static void* main(void* arg) {
        auto* w = static_cast<Worker*>(arg);
        Pool& p = *w->pool;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(w->mu);
                w->cv.wait(lk, [&] { return w->has_job; });
                w->has_job = false;
            }
            p.job_(w->index);
            if (p.remaining_.fetch_sub(1, std::memory_order_release) == 1) {
                std::lock_guard<std::mutex> lk(p.done_mu_);
                p.done_ = true;
                p.done_cv_.notify_one();
            }
        }
        return nullptr;
    }

    // only the launcher (under the launch lock) touches workers_ and job_ outside a worker's mutex
    std::vector<std::unique_ptr<Worker>> workers_;
    void (*job_)(unsigned) = nullptr;
    std::atomic<unsigned> remaining_{0};
    std::mutex done_mu_;
    std::condition_variable done_cv_;
    bool done_ = false;
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: workers outlive static destructors
    return *p;
}

void set_thread(unsigned linear) {
    const Launch& L = g_launch;
    tls_thread_idx = uint3{linear % L.block.x, (linear / L.block.x) % L.block.y, linear / (L.block.x * L.block.y)};
    tls_block_dim = L.block;
    tls_grid_dim = L.grid;
    tls_linear = linear;
}

uint3 block_index(uint64_t b) {
    const Launch& L = g_launch;
    return uint3{(unsigned)(b % L.grid.x), (unsigned)((b / L.grid.x) % L.grid.y),
                 (unsigned)(b / ((uint64_t)L.grid.x * L.grid.y))};
}

std::string where(const uint3& bi) {
    return "block (" + std::to_string(bi.x) + "," + std::to_string(bi.y) + "," + std::to_string(bi.z) + ")";
}

void stuck() {
    const Launch& L = g_launch;
    std::fprintf(stderr,
                 "simt: kernel %s is still running after %lld s (block %u,%u,%u): an infinite loop, or a wait on "
                 "another block (blocks never run concurrently in the emulator); stopping the process\n",
                 L.kernel ? L.kernel->name : "?", (long long)launch_timeout().count(), L.block_idx.x, L.block_idx.y,
                 L.block_idx.z);
    std::fflush(stderr);
    std::abort();
}

// Cooperative mode: pool worker `i` is thread i of the current block.
void cooperative_thread(unsigned i) {
    Block& b = g_block;
    set_thread(i);
    tls_block_idx = g_launch.block_idx;
    tls_block = &b;
    std::string trap;
    try {
        g_launch.kernel->run(g_launch.args);
    } catch (const Abort&) {
    } catch (const Trap& t) {
        trap = t.what;
    } catch (const std::exception& e) {
        trap = std::string("C++ exception: ") + e.what();
    }
    std::lock_guard<std::mutex> lk(b.mu);
    if (!trap.empty()) b.abort_locked(trap);
    b.exited++;
    b.warps[i / 32].exited |= 1u << (i % 32);
    b.check_deadlock_locked();
}

// Independent mode: worker `w` runs blocks w, w + W, ... thread by thread. Workers share no lock
// (a trap sets an atomic flag), so ThreadSanitizer still sees races between blocks.
void serial_blocks(unsigned w) {
    Launch& L = g_launch;
    tls_block = nullptr;
    unsigned threads = L.block.x * L.block.y * L.block.z;
    for (uint64_t b = w; b < L.blocks && !L.failed.load(std::memory_order_relaxed); b += L.serial_workers) {
        tls_block_idx = block_index(b);
        for (unsigned t = 0; t < threads; ++t) {
            set_thread(t);
            try {
                L.kernel->run(L.args);
            } catch (const Trap& e) {
                std::lock_guard<std::mutex> lk(L.error_mu);
                if (L.error.empty()) L.error = where(tls_block_idx) + ": " + e.what;
                L.failed.store(true, std::memory_order_relaxed);
                return;
            }
        }
    }
}

bool force_cooperative() {
    const char* v = std::getenv("SIMT_FORCE_THREADS");
    return v && v[0] == '1';
}

Block& current_block(const char* what, const char* site) {
    if (!tls_block)
        throw Trap{std::string(what) + " at " + site +
                   " in a kernel that build/emu.rs classified as independent-threads (its file names no "
                   "__shared__, barrier or warp intrinsic); the classification missed this call"};
    return *tls_block;
}

}  // namespace

void syncthreads(const char* site) { (void)syncthreads_count(0, site); }

int syncthreads_count(int pred, const char* site) {
    Block& b = current_block("__syncthreads", site);
    std::unique_lock<std::mutex> lk(b.mu);
    if (b.aborted) throw Abort{};
    if (b.bar_arrived == 0) {
        b.bar_site = site;
        b.bar_acc = 0;
    } else if (std::strcmp(b.bar_site, site) != 0) {
        b.abort_locked("divergent barrier: threads wait at different __syncthreads(): " + std::to_string(b.bar_arrived) +
                       " at " + b.bar_site + ", thread " + std::to_string(tls_linear) + " at " + site);
        throw Abort{};
    }
    b.bar_acc += pred;
    b.bar_arrived++;
    uint64_t gen = b.bar_gen;
    if (b.bar_arrived == b.threads) {
        b.bar_result = b.bar_acc;
        b.waiting -= b.threads - 1;
        b.bar_arrived = 0;
        b.bar_gen++;
        b.bar_cv.notify_all();
        return b.bar_result;
    }
    b.waiting++;
    b.check_deadlock_locked();
    b.bar_cv.wait(lk, [&] { return b.bar_gen != gen || b.aborted; });
    if (b.bar_gen == gen) throw Abort{};
    return b.bar_result;  // the next barrier cannot complete before this thread reaches it
}

void warp_exchange(unsigned mask, uint64_t value, const char* kind, const char* site, uint64_t out[32],
                   unsigned* took_part) {
    Block& b = current_block(kind, site);
    unsigned lane = tls_linear % 32;
    Warp& w = b.warps[tls_linear / 32];
    std::unique_lock<std::mutex> lk(b.mu);
    if (b.aborted) throw Abort{};
    if (!((mask >> lane) & 1u)) {
        char msg[96];
        std::snprintf(msg, sizeof msg, " with mask 0x%08x that excludes the calling lane %u", mask, lane);
        b.abort_locked(std::string(kind) + " at " + site + msg);
        throw Abort{};
    }
    if (w.arrived == 0) {
        w.site = site;
        w.kind = kind;
    }
    w.slots[lane] = value;
    w.outs[lane] = out;
    w.tooks[lane] = took_part;
    w.arrived |= 1u << lane;
    unsigned expected = mask & w.present;
    uint64_t gen = w.gen;
    if ((w.arrived & expected) == expected) {
        unsigned took = w.arrived;
        for (unsigned l = 0; l < 32; ++l) {
            if (!((took >> l) & 1u)) continue;
            std::memcpy(w.outs[l], w.slots, sizeof w.slots);
            *w.tooks[l] = took;
        }
        b.waiting -= (unsigned)__builtin_popcount(took) - 1;
        w.arrived = 0;
        w.gen++;
        w.cv.notify_all();
        return;
    }
    b.waiting++;
    b.check_deadlock_locked();
    w.cv.wait(lk, [&] { return w.gen != gen || b.aborted; });
    if (w.gen == gen) throw Abort{};
}

unsigned char* dynamic_shared() { return g_launch.dyn; }

void trap(const char* what, const char* site) {
    throw Trap{std::string(what) + " at " + site + " in thread " + std::to_string(tls_linear)};
}

}  // namespace simt

long long clock64() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// The sanitizer this library was built with (build-sanitized.sh; none for the copy linked into the crate),
// for tests that assert its reports.
extern "C" const char* simt_sanitizer() {
#if defined(__SANITIZE_ADDRESS__)
    return "address";
#elif defined(__SANITIZE_THREAD__)
    return "thread";
#else
    return "none";
#endif
}

namespace {
std::atomic<bool> g_published{false};
}  // namespace

// Called once by the Rust side after it has loaded this library, in the loading thread. simt_launch
// acquires it: ThreadSanitizer then sees this library's static initialisers (run by dlopen in that
// thread) happen before any launch from another thread, which the Rust side's uninstrumented OnceLock
// guarantees but cannot show it.
extern "C" void simt_publish() { g_published.store(true, std::memory_order_release); }

// Runs `kernel` over the grid. Returns 0, or 1 with a message in `err`. Dimensions are validated by the
// caller (emu.rs); this only refuses what would break the runtime itself.
extern "C" int simt_launch(const simt::KernelEntry* kernel, const unsigned grid[3], const unsigned block[3],
                           size_t shared_bytes, void** args, char* err, size_t err_cap) {
    using namespace simt;
    (void)g_published.load(std::memory_order_acquire);
    static std::mutex launch_mu;
    std::lock_guard<std::mutex> launch_lock(launch_mu);
    auto fail = [&](const std::string& m) {
        std::snprintf(err, err_cap, "%s", m.c_str());
        return 1;
    };
    uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    if (threads == 0 || threads > MAX_THREADS) return fail("block of " + std::to_string(threads) + " threads");
    uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    if (blocks == 0) return fail("empty grid");

    Launch& L = g_launch;
    L.kernel = kernel;
    L.args = args;
    L.grid = dim3(grid[0], grid[1], grid[2]);
    L.block = dim3(block[0], block[1], block[2]);
    L.blocks = blocks;
    L.error.clear();
    L.failed.store(false, std::memory_order_relaxed);
    // exactly shared_bytes, so AddressSanitizer reports any access past the launch's dynamic size
    std::unique_ptr<unsigned char, void (*)(void*)> dyn(static_cast<unsigned char*>(std::malloc(shared_bytes)),
                                                        &std::free);
    if (!dyn && shared_bytes > 0) return fail("cannot allocate " + std::to_string(shared_bytes) + " bytes of shared memory");
    L.dyn = dyn.get();

    if ((kernel->flags & KERNEL_INDEPENDENT_THREADS) && !force_cooperative()) {
        unsigned hw = std::thread::hardware_concurrency();
        L.serial_workers = (unsigned)std::min<uint64_t>(blocks, hw == 0 ? 2 : hw);
        pool().run(L.serial_workers, &serial_blocks);
        if (!L.error.empty()) return fail(L.error);
        return 0;
    }
    for (uint64_t b = 0; b < blocks; ++b) {
        L.block_idx = block_index(b);
        g_block.reset((unsigned)threads);
        if (shared_bytes) std::memset(L.dyn, 0xFF, shared_bytes);  // NaN: reads before writes show up
        pool().run((unsigned)threads, &cooperative_thread);
        if (g_block.aborted) return fail(where(L.block_idx) + ": " + g_block.error);
    }
    return 0;
}
