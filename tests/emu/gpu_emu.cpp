// The GPU emulation (make test-emu): the CUDA runtime calls kernels/ makes,
// implemented on the host, so that the GPU code's host side and our own
// kernels run in CI, on machines without a GPU, against the CPU reference
// (the GPU tests: tests/test_gpu.c, tests/test_gpu_walk.c). cuDNN is
// emulated beside it (tests/emu/cudnn_emu.cpp, loaded through
// VGGFT_CUDNN_LIBRARY as the real one is).
//
// What it checks that the CPU build cannot:
// - our kernels' indexing, grid-stride loops and __syncthreads use (the
//   kernel source unchanged, every CUDA thread run: cuda_emu.h);
// - launch configurations (CUDA's limits: cudaErrorInvalidConfiguration);
// - ordering: launches, async copies, memsets and cuDNN calls are queued
//   in issue order, each with its stream, and run only when the host
//   synchronises, and then only what that synchronisation promises:
//   cudaEventSynchronize the work before the event's last cudaEventRecord
//   (at once for an event never recorded), cudaStreamSynchronize the
//   stream's work, a blocking copy (legacy default stream) everything
//   before it, cudaDeviceSynchronize everything; each with what it depends
//   on (its stream's earlier work, the legacy stream's implicit
//   synchronisation with blocking streams, cudaStreamWaitEvent), nothing
//   more (the queue, below). A host that reads a pinned buffer before
//   synchronising sees the old bytes, one that reuses it early sends the
//   new ones, one that waits on the wrong event or stream finds the work
//   not done, a stream that should have waited for another's event reads
//   what that work has not written yet: the races of a real GPU made
//   deterministic failures. (Running only what is waited for is one
//   schedule a GPU may choose.) Copies from pageable memory are staged at
//   the call and copies to it complete before it returns, as CUDA does;
// - device memory: each allocation its own mapping, its last byte just
//   before a guard page, and inaccessible to the host except while queued
//   work runs, so a host dereference of a device pointer or a kernel
//   reading or writing past an allocation is a segmentation fault at the
//   faulty line (explained on stderr); copies and memsets outside an
//   allocation are errors (cudaErrorInvalidValue, and a line on stderr);
//   new allocations hold 0x7F bytes, 3.4e38 in every float and bfloat16
//   (and 2139062143 in every int32), so unwritten memory shows: unlike NaN,
//   which a ReLU or a max pool turns into 0 or drops, it survives them and
//   overflows to inf and NaN in the sums after;
// - kernels: threads run in ascending order in one block and descending in
//   the next (and so for each round between barriers), so threads that
//   read what others write without a barrier disagree whichever writes;
//   __shared__ memory is unwritten (0x7F bytes) at the start of each
//   block, as it holds garbage on a GPU; each fiber's stack ends at a guard page;
// - CUDA_VISIBLE_DEVICES as the runtime reads it (empty or -1: no device);
//   EMU_SM sets GPU 0's compute capability (default 90).
// - streams sharing a buffer without an event between them, with
//   EMU_SCHEDULE=interleave (run_interleaved, below), a cuDNN workspace
//   included (cudnn_emu.cpp splits a convolution in two operations);
// What it cannot: cuDNN's own algorithms and the GPU's arithmetic (FMA
// contraction, tensor cores), real concurrency between CUDA threads or
// streams (everything runs on one host thread, in issue order among what a
// synchronisation runs, or streams taking turns by whole operations: a
// kernel or a copy is one, a cuDNN convolution two), and performance.
// Those need the real GPU run (scripts/device_run.sh).
#include <cuda_runtime.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "cuda_emu.h"

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

// --- the queue --------------------------------------------------------------

// An operation runs after the ones it depends on: the one before it on its
// stream; on the legacy default stream (0) the last one of every other
// (blocking) stream, and on a blocking stream the legacy stream's last one
// (CUDA's implicit synchronisation); and the work before each event its
// stream waited for (cudaStreamWaitEvent). Nothing else orders two
// streams: a synchronisation runs what it waits for and what that depends
// on, and leaves the rest queued, so work on another stream that nothing
// waited for has not run yet (a missing cudaStreamWaitEvent shows).
struct Op {
    void (*run)(void *);
    void (*drop)(void *);  // frees ctx once run (NULL: a graph's operation, which the graph owns)
    void *ctx;
    std::vector<unsigned long> deps;  // numbers of the operations that must run first (all smaller)
    cudaStream_t stream;
    int late;  // the end of a long operation (emu_enqueue_late): interleave runs other streams' work first
};
static std::mutex lock_;  // the queue, the allocations and their protection
static std::map<unsigned long, Op> queue_;        // issued, not yet run, by number
static unsigned long issued_ = 0;                 // operations issued so far (numbered from 1)
static std::map<cudaStream_t, unsigned long> last_on_;  // a stream's last operation (its number)
static std::map<cudaStream_t, std::vector<unsigned long>> waits_;  // for the stream's next operation
static std::map<cudaStream_t, int> nonblocking_;  // streams made with cudaStreamNonBlocking

// Device allocations: user pointer -> mapping.
struct Region {
    char *base;        // the mapping: data pages, then one guard page
    size_t data_len;   // bytes of the data pages
    size_t size;       // bytes asked for; the pointer is base + data_len - size
};
static std::map<char *, Region> device_;
// cudaMallocHost'ed memory (host memory the GPU copies asynchronously): start -> bytes.
static std::map<char *, size_t> pinned_size_;
static thread_local cudaError_t last_error_ = cudaSuccess;
static const size_t page_ = 4096;
// The byte memory nothing wrote holds (see the top of this file).
#define EMU_UNWRITTEN 0x7F

static void protect_all(int prot) {
    for (auto &r : device_)
        if (r.second.data_len && mprotect(r.second.base, r.second.data_len, prot) != 0) {
            perror("emu: mprotect");
            abort();
        }
}

// EMU_SCHEDULE=interleave: every synchronisation runs all the queued work,
// the streams taking turns one operation at a time (each stream's first
// operation whose dependencies have run), instead of only what it waits
// for in issue order. Two streams that share a buffer without an event
// between them (one writing scratch memory the other is still using) then
// corrupt each other's results, as they may on a GPU where both run at
// once; the default schedule runs one stream's work after the other's and
// hides that (but shows a missing wait, which this one may hide: the
// tests run both).
static int interleave(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("EMU_SCHEDULE");
        on = e && !strcmp(e, "interleave");
    }
    return on;
}
static void run_interleaved(void) {
    for (unsigned round = 0; !queue_.empty(); round++) {
        // Each stream's first queued operation, in the order of their
        // numbers, and every other round in the reverse order: of two
        // streams' operations, each goes first somewhere.
        std::vector<unsigned long> heads;
        std::vector<cudaStream_t> seen;
        for (auto &q : queue_) {
            if (std::find(seen.begin(), seen.end(), q.second.stream) != seen.end()) continue;
            seen.push_back(q.second.stream);
            heads.push_back(q.first);
        }
        if (round & 1) std::reverse(heads.begin(), heads.end());
        auto ready = [](const Op &op) {
            for (unsigned long d : op.deps)
                if (queue_.count(d)) return false;
            return true;
        };
        // A late operation (an end) waits while another stream has an
        // ordinary one ready.
        bool early_ready = false;
        for (unsigned long id : heads) early_ready = early_ready || (!queue_[id].late && ready(queue_[id]));
        int ran = 0;
        for (unsigned long id : heads) {
            auto it = queue_.find(id);
            if (!ready(it->second) || (it->second.late && early_ready)) continue;
            Op op = it->second;
            queue_.erase(it);
            op.run(op.ctx);
            if (op.drop) op.drop(op.ctx);
            ran = 1;
        }
        if (!ran) {  // cannot happen: the smallest queued operation depends only on smaller, run ones (and an
                     // early one ready ran)
            fprintf(stderr, "emu: no queued operation can run\n");
            abort();
        }
    }
}

// Runs operation `upto` and every queued one it depends on, directly or not
// (~0ul: every queued operation), in issue order; device memory is
// accessible meanwhile. (EMU_SCHEDULE=interleave: everything, interleaved.)
static void run_locked(unsigned long upto) {
    if (queue_.empty()) return;
    if (interleave()) {
        protect_all(PROT_READ | PROT_WRITE);
        run_interleaved();
        protect_all(PROT_NONE);
        return;
    }
    std::vector<unsigned long> need;
    if (upto == ~0ul) {
        for (auto &q : queue_) need.push_back(q.first);
    } else {
        std::vector<unsigned long> todo{upto};
        std::map<unsigned long, int> seen;
        while (!todo.empty()) {
            unsigned long id = todo.back();
            todo.pop_back();
            auto it = queue_.find(id);
            if (it == queue_.end() || seen[id]++) continue;
            need.push_back(id);
            for (unsigned long d : it->second.deps) todo.push_back(d);
        }
        std::sort(need.begin(), need.end());  // dependencies have smaller numbers
    }
    if (need.empty()) return;
    protect_all(PROT_READ | PROT_WRITE);
    for (unsigned long id : need) {
        auto it = queue_.find(id);
        Op op = it->second;
        queue_.erase(it);
        op.run(op.ctx);
        if (op.drop) op.drop(op.ctx);
    }
    protect_all(PROT_NONE);
}

static void run_upto(unsigned long upto) {
    std::lock_guard<std::mutex> g(lock_);
    if (upto) run_locked(upto);
}
static void run_all(void) { run_upto(~0ul); }

// Stream capture (CUDA graphs): a capturing stream's operations are kept,
// not queued; cudaGraphLaunch queues them again, in order, on its stream.
// Stricter than CUDA where our code never needs more: a capture holds one
// stream's operations in a line (no event records or waits inside it, which
// CUDA would turn into the graph's edges), and the calls CUDA refuses
// during a capture invalidate it here too, with a line on stderr saying
// which: a synchronisation of the stream, its events or the device, work
// on the legacy default stream (which would synchronise with the capturing
// blocking stream: cudaErrorStreamCaptureImplicit), copies that involve
// pageable memory (CUDA stages those at the call, which a graph replayed
// later cannot), cudaMalloc / cudaMallocHost / cudaHostAlloc (CUDA's
// "potentially unsafe" calls: refused here in every capture mode, where
// CUDA allows them in relaxed mode; our code makes none while capturing)
// and cudaFree / cudaFreeHost (they synchronise the device). The capture
// mode matters only to EMU_GRAPH_FAIL=unsafe (below).
struct GraphOp {
    void (*run)(void *);
    void (*drop)(void *);
    void *ctx;
    int late;
};
// A graph's operations, shared by the graph and its instantiations: the
// last one destroyed frees them.
struct EmuGraph {
    std::vector<GraphOp> ops;
    int refs;
    unsigned long last_op;  // the last operation its latest launch queued (0: none yet)
};
struct Capture {
    EmuGraph *graph;
    cudaError_t invalid;  // cudaSuccess while valid
};
static std::map<cudaStream_t, Capture> capturing_;

static void graph_unref(EmuGraph *gr);

// Invalidates stream s's capture (lock held) and says why, once.
static cudaError_t invalidate_locked(cudaStream_t s, cudaError_t why, const char *what) {
    auto it = capturing_.find(s);
    if (it != capturing_.end() && it->second.invalid == cudaSuccess) {
        fprintf(stderr, "emu: %s during a stream capture: the capture is invalidated\n", what);
        it->second.invalid = why;
    }
    return why;
}
// A call that may not run while stream s captures (s 0: while any does:
// the legacy stream and device-wide calls). cudaSuccess when none does.
static cudaError_t capture_forbids(cudaStream_t s, const char *what) {
    std::lock_guard<std::mutex> g(lock_);
    cudaError_t e = cudaSuccess;
    for (auto &c : capturing_)
        if (!s || c.first == s)
            e = invalidate_locked(c.first, s ? cudaErrorStreamCaptureUnsupported : cudaErrorStreamCaptureImplicit,
                                  what);
    return e;
}
static int is_capturing(cudaStream_t s) {
    std::lock_guard<std::mutex> g(lock_);
    return capturing_.count(s) != 0;
}

// Queues run(ctx) on stream s, then drop(ctx); on a capturing stream, adds
// it to the capture instead.
static void enqueue(void (*run)(void *), void (*drop)(void *), void *ctx, cudaStream_t s, int late) {
    std::lock_guard<std::mutex> g(lock_);
    auto cap = capturing_.find(s);
    if (cap != capturing_.end()) {
        cap->second.graph->ops.push_back(GraphOp{run, drop, ctx, late});
        return;
    }
    if (!s)
        for (auto &c : capturing_)
            invalidate_locked(c.first, cudaErrorStreamCaptureImplicit, "work on the legacy default stream");
    Op op{run, drop, ctx, {}, s, late};
    auto last = last_on_.find(s);
    if (last != last_on_.end()) op.deps.push_back(last->second);
    if (!s) {
        for (auto &l : last_on_)
            if (l.first && !nonblocking_.count(l.first)) op.deps.push_back(l.second);
    } else if (!nonblocking_.count(s)) {
        auto legacy = last_on_.find((cudaStream_t)0);
        if (legacy != last_on_.end()) op.deps.push_back(legacy->second);
    }
    auto w = waits_.find(s);
    if (w != waits_.end()) {
        op.deps.insert(op.deps.end(), w->second.begin(), w->second.end());
        waits_.erase(w);
    }
    queue_[++issued_] = op;
    last_on_[s] = issued_;
}
// For cudnn_emu.cpp too, hence C.
extern "C" void emu_enqueue(void (*run)(void *), void (*drop)(void *), void *ctx, cudaStream_t s) {
    enqueue(run, drop, ctx, s, 0);
}
// The second half of an operation that takes a while on a GPU (cudnn_emu.cpp's
// convolutions: a begin, then this end): under EMU_SCHEDULE=interleave it
// runs once no other stream has work ready to run, so that whatever they
// do while the first half's state is in flight (its workspace, its
// output) happens between the two.
extern "C" void emu_enqueue_late(void (*run)(void *), void (*drop)(void *), void *ctx, cudaStream_t s) {
    enqueue(run, drop, ctx, s, 1);
}

// The number of the last operation that synchronising with stream s waits
// for: the stream's last one (0: none; on the legacy default stream it
// depends on the other streams' earlier ones, so they run too).
static unsigned long stream_mark(cudaStream_t s) {
    std::lock_guard<std::mutex> g(lock_);
    auto it = last_on_.find(s);
    return it == last_on_.end() ? 0 : it->second;
}

// Bytes from p to the end of the block of `blocks` (start -> its bytes,
// size_of of the mapped value) that holds p; 0 when none does.
template <typename M, typename SizeOf>
static size_t extent_in(const M &blocks, const void *p, SizeOf size_of) {
    std::lock_guard<std::mutex> g(lock_);
    char *c = (char *)p;
    auto it = blocks.upper_bound(c);
    if (it == blocks.begin()) return 0;
    --it;
    char *end = it->first + size_of(it->second);
    return c >= it->first && c < end ? (size_t)(end - c) : 0;
}

// Bytes of device memory from p to the end of its allocation; 0 when p is
// not in one (also for cudnn_emu.cpp).
extern "C" size_t emu_device_extent(const void *p) {
    return extent_in(device_, p, [](const Region &r) { return r.size; });
}
// The same for pinned host memory.
static size_t pinned_extent(const void *p) {
    return extent_in(pinned_size_, p, [](size_t n) { return n; });
}

// A SIGSEGV in device memory said in words, with the kernel that ran and a
// backtrace (function names: the executables are linked -rdynamic), then
// the signal's default action, so the test still crashes: inside an
// allocation outside the queue's runs is host code touching device memory;
// in a guard page is work running past an allocation's end. The map is
// read without the lock: the process is crashing anyway.
static thread_local const char *running_kernel_ = NULL;  // the kernel whose threads run, else NULL
static void explain_segv(int sig, siginfo_t *info, void *ctx) {
    char *a = (char *)info->si_addr, msg[400];
    int n = 0;
    const char *k = running_kernel_;
    for (auto &r : device_) {
        char *end = r.first + r.second.size, *map_end = r.second.base + r.second.data_len + page_;
        if (a >= r.first && a < end)
            n = snprintf(msg, sizeof msg, "emu: SIGSEGV at byte %ld of a device allocation of %zu bytes: host code "
                         "used device memory\n", (long)(a - r.first), r.second.size);
        else if (a >= end && a < map_end)
            n = snprintf(msg, sizeof msg, "emu: SIGSEGV at byte %ld of a device allocation of %zu bytes, past its "
                         "end, in %s%s\n", (long)(a - r.first), r.second.size, k ? "kernel " : "",
                         k ? k : "a copy or cuDNN call");
        if (n) break;
    }
    if (!n) n = snprintf(msg, sizeof msg, "emu: SIGSEGV at %p, outside device memory%s%s\n", (void *)a,
                         k ? ", in kernel " : "", k ? k : "");
    if (n > 0 && write(2, msg, (size_t)n) < 0) n = 0;
    void *frames[32];
    backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
}
// At start-up: the SIGSEGV explanation, and the emulated cuDNN by default.
static struct EmuStartup {
    EmuStartup() {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = explain_segv;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigaction(SIGSEGV, &sa, NULL);
#ifdef EMU_CUDNN_LIBRARY
        // The emulated cuDNN unless told otherwise: a real one next to the
        // emulated runtime fails in puzzling ways (CUDNN_STATUS_NOT_INITIALIZED).
        setenv("VGGFT_CUDNN_LIBRARY", EMU_CUDNN_LIBRARY, 0);
#endif
    }
} emu_startup_;

static cudaError_t fail(cudaError_t e, const char *what) {
    fprintf(stderr, "emu: %s: %s\n", what, cudaGetErrorString(e));
    return e;
}

// --- memory ------------------------------------------------------------------

cudaError_t cudaMalloc(void **p, size_t size) {
    *p = NULL;
    if (capture_forbids(0, "cudaMalloc") != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
    if (size == 0) return cudaSuccess;
    // The last byte just before the guard page: the pointer is aligned to
    // the largest power of two dividing size, so an array of any element
    // type whose size is a power of two is aligned to its elements.
    size_t data_len = (size + page_ - 1) / page_ * page_;
    char *base = (char *)mmap(NULL, data_len + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return cudaErrorMemoryAllocation;
    char *user = base + data_len - size;
    memset(user, EMU_UNWRITTEN, size);
    if (mprotect(base, data_len + page_, PROT_NONE) != 0) abort();
    std::lock_guard<std::mutex> g(lock_);
    device_[user] = Region{base, data_len, size};
    *p = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    if (capture_forbids(0, "cudaFree") != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
    std::lock_guard<std::mutex> g(lock_);
    run_locked(~0ul);  // cudaFree synchronises the device
    auto it = device_.find((char *)p);
    if (it == device_.end()) return fail(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
    munmap(it->second.base, it->second.data_len + page_);
    device_.erase(it);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t size) {
    *p = NULL;
    if (capture_forbids(0, "cudaMallocHost") != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
    void *q = NULL;
    if (posix_memalign(&q, page_, size ? size : 1) != 0) return cudaErrorMemoryAllocation;
    std::lock_guard<std::mutex> g(lock_);
    pinned_size_[(char *)q] = size;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags) { return cudaMallocHost(p, size); }

cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    if (capture_forbids(0, "cudaFreeHost") != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
    std::lock_guard<std::mutex> g(lock_);
    run_locked(~0ul);  // as cudaFree
    if (!pinned_size_.erase((char *)p))
        return fail(cudaErrorInvalidValue, "cudaFreeHost of a pointer cudaMallocHost did not return");
    free(p);
    return cudaSuccess;
}

struct CopyOp {
    void *dst;
    const void *src;
    size_t n;
    void *staged;  // owned copy of a pageable source, or NULL
};
static void run_copy(void *p) {
    CopyOp *c = (CopyOp *)p;
    memcpy(c->dst, c->staged ? c->staged : c->src, c->n);
}
static void drop_copy(void *p) {
    CopyOp *c = (CopyOp *)p;
    free(c->staged);
    delete c;
}

// The checks of a copy of n bytes from src to dst of kind k: the device
// side(s) inside one allocation, the host side(s) not device memory.
static cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    int dst_dev = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    int src_dev = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (k != cudaMemcpyHostToDevice && k != cudaMemcpyDeviceToHost && k != cudaMemcpyDeviceToDevice)
        return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpy: only HostToDevice, DeviceToHost and DeviceToDevice are emulated");
    if (n == 0) return cudaSuccess;
    size_t de = emu_device_extent(dst), se = emu_device_extent(src);
    if (dst_dev && de < n) return fail(cudaErrorInvalidValue, de ? "cudaMemcpy past the end of the device allocation" : "cudaMemcpy to a pointer that is not device memory");
    if (src_dev && se < n) return fail(cudaErrorInvalidValue, se ? "cudaMemcpy from past the end of the device allocation" : "cudaMemcpy from a pointer that is not device memory");
    if (!dst_dev && de) return fail(cudaErrorInvalidValue, "cudaMemcpy DeviceToHost into device memory");
    if (!src_dev && se) return fail(cudaErrorInvalidValue, "cudaMemcpy HostToDevice from device memory");
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s) {
    cudaError_t e = check_copy(dst, src, n, k);
    if (e != cudaSuccess || n == 0) return e;
    if (is_capturing(s) && ((k == cudaMemcpyHostToDevice && pinned_extent(src) < n) ||
                            (k == cudaMemcpyDeviceToHost && pinned_extent(dst) < n)))
        return capture_forbids(s, "cudaMemcpyAsync with pageable host memory");
    CopyOp *c = new CopyOp{dst, src, n, NULL};
    if (k == cudaMemcpyHostToDevice && pinned_extent(src) < n) {
        // Pageable source: CUDA stages it before returning.
        c->staged = malloc(n);
        memcpy(c->staged, src, n);
    }
    emu_enqueue(run_copy, drop_copy, c, s);
    // Pageable destination: the copy completes before the call returns.
    if (k == cudaMemcpyDeviceToHost && pinned_extent(dst) < n) run_upto(stream_mark(s));
    return cudaSuccess;
}

// On the legacy default stream, and complete on return.
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    cudaError_t e = cudaMemcpyAsync(dst, src, n, k, 0);
    if (e == cudaSuccess) run_upto(stream_mark(0));
    return e;
}

struct SetOp {
    void *dst;
    int value;
    size_t n;
};
static void run_set(void *p) {
    SetOp *o = (SetOp *)p;
    memset(o->dst, o->value, o->n);
}
static void drop_set(void *p) { delete (SetOp *)p; }

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    size_t de = emu_device_extent(dst);
    if (de < n) return fail(cudaErrorInvalidValue, de ? "cudaMemset past the end of the device allocation" : "cudaMemset of a pointer that is not device memory");
    emu_enqueue(run_set, drop_set, new SetOp{dst, value, n}, s);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t n) {
    cudaError_t e = cudaMemsetAsync(dst, value, n, 0);
    if (e == cudaSuccess) run_upto(stream_mark(0));
    return e;
}

// --- streams, events, the device ---------------------------------------------

cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = (cudaStream_t) new char;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    cudaStreamCreate(s);
    std::lock_guard<std::mutex> g(lock_);
    if (flags & cudaStreamNonBlocking) nonblocking_[*s] = 1;
    return cudaSuccess;
}
// Returns at once, as CUDA's: the stream's work still runs (in order).
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    std::lock_guard<std::mutex> g(lock_);
    last_on_.erase(s);
    waits_.erase(s);
    nonblocking_.erase(s);
    delete (char *)s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    cudaError_t e = capture_forbids(s, "cudaStreamSynchronize of the capturing stream");
    if (e != cudaSuccess) return e;
    run_upto(stream_mark(s));
    return cudaSuccess;
}

// An event: the operation number its last record marked (recorded: once).
struct EmuEvent {
    int recorded;
    unsigned long mark;
};
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    *e = (cudaEvent_t) new EmuEvent{0, 0};
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (is_capturing(s)) return capture_forbids(s, "cudaEventRecord on the capturing stream");
    EmuEvent *ev = (EmuEvent *)e;
    ev->recorded = 1;
    ev->mark = stream_mark(s);
    return cudaSuccess;
}
// The work before the event's last record is done (an event never
// recorded: at once, as CUDA documents).
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    EmuEvent *ev = (EmuEvent *)e;
    if (ev->recorded) run_upto(ev->mark);
    return cudaSuccess;
}
// The stream's next operation (and so every later one) depends on the work
// before the event's last record (an event never recorded: none).
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    if (!e || flags) return fail(cudaErrorInvalidValue, "cudaStreamWaitEvent without an event, or with flags");
    if (is_capturing(s)) return capture_forbids(s, "cudaStreamWaitEvent on the capturing stream");
    EmuEvent *ev = (EmuEvent *)e;
    std::lock_guard<std::mutex> g(lock_);
    if (ev->recorded && ev->mark) waits_[s].push_back(ev->mark);
    return cudaSuccess;
}
// Timing: no GPU time passes here (0 ms), once both events are done.
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    EmuEvent *ea = (EmuEvent *)a, *eb = (EmuEvent *)b;
    if (!ea->recorded || !eb->recorded) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime of an event never recorded");
    {
        std::lock_guard<std::mutex> g(lock_);
        if (queue_.count(ea->mark) || queue_.count(eb->mark)) return cudaErrorNotReady;
    }
    *ms = 0.f;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete (EmuEvent *)e;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    if (capture_forbids(0, "cudaDeviceSynchronize") != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
    run_all();
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error_;
    last_error_ = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error_; }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error (emulated)";
    }
}

// Device 0 only; CUDA_VISIBLE_DEVICES as the runtime reads it.
static int visible(void) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v) return 1;
    return v[0] == '0' && (v[1] == 0 || v[1] == ',');
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = visible();
    return *n ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int d) { return d == 0 && visible() ? cudaSuccess : cudaErrorInvalidDevice; }
// Scheduling flags (one of auto, spin, yield, blocking sync) and the
// mapped-memory and local-memory ones; anything else is invalid, as CUDA
// says. The emulation's waits are the same whatever the flags.
cudaError_t cudaSetDeviceFlags(unsigned int flags) {
    if (!visible()) return cudaErrorNoDevice;
    const unsigned sched = flags & cudaDeviceScheduleMask;
    if (flags & ~(cudaDeviceScheduleMask | cudaDeviceMapHost | cudaDeviceLmemResizeToMax)) return cudaErrorInvalidValue;
    if (sched != cudaDeviceScheduleAuto && sched != cudaDeviceScheduleSpin && sched != cudaDeviceScheduleYield &&
        sched != cudaDeviceScheduleBlockingSync)
        return cudaErrorInvalidValue;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (d != 0 || !visible()) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated GPU (tests/emu, on the host CPU)");
    // EMU_SM: the compute capability, e.g. 75 (default 90, an H100/H200).
    const char *sm = getenv("EMU_SM");
    int cc = sm && atoi(sm) > 0 ? atoi(sm) : 90;
    p->major = cc / 10, p->minor = cc % 10;
    p->totalGlobalMem = (size_t)80 << 30;
    p->multiProcessorCount = 132;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

// --- kernels ------------------------------------------------------------------

// The block's threads as fibers, for kernels that call __syncthreads: each
// runs until its next barrier (or its end), then the next; a round ends
// when all have, which is the barrier. The switch saves the callee-saved
// registers and the SSE / x87 control words on the stack and swaps stack
// pointers (the System V x86-64 ABI's contract for a call); swapcontext
// would also make a system call a switch, for the signal mask, and the
// backward pass switches millions of times.
#if defined(__x86_64__)
extern "C" void emu_switch(void **save_sp, void *load_sp);
asm(".text\n"
    ".globl emu_switch\n"
    ".type emu_switch,@function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch, .-emu_switch\n");
#else
#error "the GPU emulation's fibers are written for x86-64 (tests/emu/gpu_emu.cpp: emu_switch)"
#endif

struct Fiber {
    void *sp;  // saved stack pointer while switched out
    int done;
};
static thread_local void *scheduler_sp_;
static thread_local Fiber *current_ = NULL;
static thread_local void (*fiber_body_)(void *);
static thread_local void *fiber_args_;

void __syncthreads(void) {
    if (!current_) {
        fprintf(stderr, "emu: kernel %s calls __syncthreads but tests/emu/launches.pl did not see it do so\n",
                running_kernel_);
        abort();
    }
    emu_switch(&current_->sp, scheduler_sp_);
}

// A fiber's first instruction (emu_switch "returns" here): the thread's
// body, then back to the scheduler for good.
static void fiber_main(void) {
    fiber_body_(fiber_args_);
    current_->done = 1;
    emu_switch(&current_->sp, scheduler_sp_);
    abort();  // never resumed
}

// A fresh stack [stack, stack + size) set up as emu_switch leaves a
// switched-out fiber: control words, six registers, the return address.
static void *fiber_stack(char *stack, size_t size) {
    uintptr_t top = ((uintptr_t)(stack + size) & ~(uintptr_t)15) - 16;
    void **sp = (void **)top;
    *sp = (void *)fiber_main;  // at a 16-byte boundary: a call's alignment on entry
    sp -= 6;
    memset(sp, 0, 6 * sizeof(void *));
    sp -= 1;
    uint32_t csr;
    uint16_t cw;
    asm volatile("stmxcsr %0" : "=m"(csr));
    asm volatile("fnstcw %0" : "=m"(cw));
    memcpy((char *)sp, &csr, 4);
    memcpy((char *)sp + 4, &cw, 2);
    return sp;
}

struct Launch {
    const char *name;
    int sync;
    EmuConfig cfg;
    void (*body)(void *);
    void *args;
    void (*free_args)(void *);
};

// __shared__ variables (cuda_emu.h puts them in this section): unwritten
// (EMU_UNWRITTEN) at the start of each block.
extern "C" char __start_emu_shared[] __attribute__((weak)), __stop_emu_shared[] __attribute__((weak));
static void poison_shared(void) {
    char *start = __start_emu_shared, *stop = __stop_emu_shared;
    if (start && stop > start)
        memset(start, EMU_UNWRITTEN, (size_t)(stop - start));
}

// Fiber stacks, each above a guard page (a kernel's locals that overflow
// one fault rather than overwrite the next thread's); kept between launches.
static const size_t fiber_stack_ = 64 * 1024;
static thread_local char *stacks_ = NULL;
static thread_local size_t stacks_n_ = 0;
static char *fiber_stacks(unsigned threads) {
    if (threads <= stacks_n_) return stacks_;
    if (stacks_) munmap(stacks_, stacks_n_ * (fiber_stack_ + page_));
    stacks_n_ = threads;
    stacks_ = (char *)mmap(NULL, threads * (fiber_stack_ + page_), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stacks_ == MAP_FAILED) abort();
    for (unsigned t = 0; t < threads; t++) mprotect(stacks_ + t * (fiber_stack_ + page_), page_, PROT_NONE);
    return stacks_;
}

static unsigned long launches_ = 0;

// The t-th thread to run in a pass over n threads: ascending or descending.
static inline unsigned nth(unsigned t, unsigned n, int down) { return down ? n - 1 - t : t; }

static void run_launch(void *p) {
    Launch *l = (Launch *)p;
    const dim3 g = l->cfg.grid, b = l->cfg.block;
    gridDim = g, blockDim = b;
    running_kernel_ = l->name;
    const unsigned threads = b.x * b.y * b.z;
    std::vector<Fiber> fibers(l->sync ? threads : 0);
    char *stacks = l->sync ? fiber_stacks(threads) : NULL;
    fiber_body_ = l->body, fiber_args_ = l->args;
    unsigned long block = launches_++;  // the direction alternates per block (and round), from launch to launch
    for (unsigned bz = 0; bz < g.z; bz++)
        for (unsigned by = 0; by < g.y; by++)
            for (unsigned bx = 0; bx < g.x; bx++, block++) {
                blockIdx = uint3{bx, by, bz};
                poison_shared();
                if (!l->sync) {
                    for (unsigned i = 0; i < threads; i++) {
                        unsigned t = nth(i, threads, block & 1);
                        threadIdx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
                        l->body(l->args);
                    }
                    continue;
                }
                for (unsigned t = 0; t < threads; t++) {
                    fibers[t].done = 0;
                    fibers[t].sp = fiber_stack(stacks + t * (fiber_stack_ + page_) + page_, fiber_stack_);
                }
                for (int live = 1, round = 0; live; round++) {
                    live = 0;
                    for (unsigned i = 0; i < threads; i++) {
                        unsigned t = nth(i, threads, (block + round) & 1);
                        if (fibers[t].done) continue;
                        threadIdx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
                        current_ = &fibers[t];
                        emu_switch(&scheduler_sp_, fibers[t].sp);
                        current_ = NULL;
                        live |= !fibers[t].done;
                    }
                }
            }
    running_kernel_ = NULL;
}
static void drop_launch(void *p) {
    Launch *l = (Launch *)p;
    l->free_args(l->args);
    delete l;
}

void emu_launch_raw(const char *name, int uses_syncthreads, const EmuConfig &cfg, void (*body)(void *), void *args,
                    void (*free_args)(void *)) {
    const dim3 g = cfg.grid, b = cfg.block;
    unsigned long threads = (unsigned long)b.x * b.y * b.z;
    if (!g.x || !g.y || !g.z || !threads || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
        g.x > 2147483647u || g.y > 65535 || g.z > 65535 || cfg.smem > 48 * 1024) {
        fprintf(stderr, "emu: kernel %s: grid %ux%ux%u, block %ux%ux%u, %zu bytes of shared memory: %s\n", name, g.x,
                g.y, g.z, b.x, b.y, b.z, cfg.smem, cudaGetErrorString(cudaErrorInvalidConfiguration));
        last_error_ = cudaErrorInvalidConfiguration;
        free_args(args);
        capture_forbids(cfg.stream, "a kernel launch that failed");
        return;
    }
    emu_enqueue(run_launch, drop_launch, new Launch{name, uses_syncthreads, cfg, body, args, free_args}, cfg.stream);
}

// --- graphs (stream capture; see "Stream capture" above) ------------------------

// EMU_GRAPH_FAIL=capture makes every capture fail (as one holding an
// operation CUDA cannot capture would), =unsafe every capture not in
// relaxed mode (as a library's "potentially unsafe" call inside it would),
// =launch every cudaGraphLaunch: the callers' fallbacks, tested.
static int graph_fail_is(const char *what) {
    const char *f = getenv("EMU_GRAPH_FAIL");
    return f && !strcmp(f, what);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    if (!s) return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture on the legacy default stream");
    std::lock_guard<std::mutex> g(lock_);
    if (capturing_.count(s)) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture on a capturing stream");
    capturing_[s] = Capture{new EmuGraph{{}, 1}, cudaSuccess};
    if (graph_fail_is("capture"))
        invalidate_locked(s, cudaErrorStreamCaptureUnsupported, "EMU_GRAPH_FAIL=capture");
    if (graph_fail_is("unsafe") && mode != cudaStreamCaptureModeRelaxed)
        invalidate_locked(s, cudaErrorStreamCaptureUnsupported, "EMU_GRAPH_FAIL=unsafe (a potentially unsafe call)");
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    std::lock_guard<std::mutex> g(lock_);
    auto it = capturing_.find(s);
    *status = it == capturing_.end() ? cudaStreamCaptureStatusNone
              : it->second.invalid == cudaSuccess ? cudaStreamCaptureStatusActive
                                                  : cudaStreamCaptureStatusInvalidated;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    *graph = NULL;
    Capture c;
    {
        std::lock_guard<std::mutex> g(lock_);
        auto it = capturing_.find(s);
        if (it == capturing_.end()) return fail(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture");
        c = it->second;
        capturing_.erase(it);
    }
    if (c.invalid != cudaSuccess) {
        graph_unref(c.graph);
        return cudaErrorStreamCaptureInvalidated;
    }
    *graph = (cudaGraph_t)c.graph;
    return cudaSuccess;
}

// cudaGraphExec_t: its own reference to the graph's operations (a graph
// may be destroyed once instantiated).
struct EmuExec {
    EmuGraph *graph;
};

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    if (!graph) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate of no graph");
    EmuGraph *gr = (EmuGraph *)graph;
    std::lock_guard<std::mutex> g(lock_);
    gr->refs++;
    *exec = (cudaGraphExec_t) new EmuExec{gr};
    return cudaSuccess;
}

// Queues the graph's operations on s, in their captured order, each run
// without being freed (the graph owns them). CUDA orders a launch behind
// the same instantiation's previous launch, on whatever stream that was;
// here the first operation waits for the last one of any launch of the
// graph before (stricter: the operations' state, cudnn_emu.cpp's
// convolutions' included, is the graph's, shared by its instantiations).
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return fail(cudaErrorInvalidValue, "cudaGraphLaunch of no graph");
    if (is_capturing(s)) return capture_forbids(s, "cudaGraphLaunch into a capturing stream (not emulated)");
    if (graph_fail_is("launch")) return fail(cudaErrorNotSupported, "cudaGraphLaunch (EMU_GRAPH_FAIL=launch)");
    EmuGraph *gr = ((EmuExec *)exec)->graph;
    if (gr->ops.empty()) return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(lock_);
        if (gr->last_op) waits_[s].push_back(gr->last_op);
    }
    for (const GraphOp &op : gr->ops) enqueue(op.run, NULL, op.ctx, s, op.late);
    std::lock_guard<std::mutex> g(lock_);
    gr->last_op = last_on_[s];
    return cudaSuccess;
}

// Frees the operations once nothing refers to them (after every queued
// launch of them has run: CUDA lets a launched graph be destroyed).
static void graph_unref(EmuGraph *gr) {
    {
        std::lock_guard<std::mutex> g(lock_);
        if (--gr->refs > 0) return;
        run_locked(~0ul);
    }
    for (const GraphOp &op : gr->ops)
        if (op.drop) op.drop(op.ctx);
    delete gr;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    if (!exec) return cudaSuccess;
    graph_unref(((EmuExec *)exec)->graph);
    delete (EmuExec *)exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    if (graph) graph_unref((EmuGraph *)graph);
    return cudaSuccess;
}
