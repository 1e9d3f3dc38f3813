// The GPU emulation's view of CUDA C++ for kernels/*.cu compiled by g++ as
// host code (make test-emu; force-included with -include, after
// tests/emu/launches.pl has rewritten each `k<<<grid, block, smem, stream>>>(args)`
// into `emu_launch("k", uses_syncthreads, k, emu_config(grid, block, smem, stream), args)`).
//
// What it gives the kernels: the built-in indices (one CUDA thread at a
// time on the host thread that runs the queue), __syncthreads (each thread
// of a block a fiber: see tests/emu/gpu_emu.cpp), __shared__ as static
// storage (one block runs at a time; unwritten at its start), and the _rn intrinsics as host
// operations (IEEE round-to-nearest, never fused into an FMA). Launches are queued with their arguments converted to
// the kernel's parameter types at the launch, as CUDA does, and run when the
// host synchronises: see gpu_emu.cpp for what the emulation checks and what
// it cannot (cuDNN's and the GPU's own arithmetic, races between threads).
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <math.h>

#include <tuple>
#include <type_traits>
#include <utility>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
// One block runs at a time: its threads share static storage. The section
// lets the launcher fill it with 0x7F bytes before each block (gpu_emu.cpp).
#define __shared__ static __attribute__((section("emu_shared")))
#define __launch_bounds__(...)

// The CUDA thread that runs (set by the launcher before each one runs).
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
// A barrier of the block's threads (fibers); only in kernels the launch
// rewriter saw call it (a call from any other kernel aborts with its name).
void __syncthreads(void);

// nvcc never fuses an _rn operation with another operation into an FMA:
// the empty asm statements hide the operands and the result from GCC's
// contraction too (the EMU_FMA=1 build contracts everything else).
#define EMU_OPAQUE(v) asm("" : "+x"(v))
#define EMU_RN2(T, name, expr)                  \
    static inline T name(T a, T b) {            \
        EMU_OPAQUE(a);                          \
        EMU_OPAQUE(b);                          \
        T r = expr;                             \
        EMU_OPAQUE(r);                          \
        return r;                               \
    }
EMU_RN2(float, __fadd_rn, a + b)
EMU_RN2(float, __fsub_rn, a - b)
EMU_RN2(float, __fmul_rn, a * b)
EMU_RN2(float, __fdiv_rn, a / b)
EMU_RN2(double, __dadd_rn, a + b)
EMU_RN2(double, __dsub_rn, a - b)
EMU_RN2(double, __dmul_rn, a * b)
EMU_RN2(double, __ddiv_rn, a / b)
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// CUDA's integer and float min / max.
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// A launch's configuration, with CUDA's defaults.
struct EmuConfig {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
static inline EmuConfig emu_config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    return EmuConfig{grid, block, smem, stream};
}

// Queues body(args) for every thread of cfg's grid (gpu_emu.cpp); a bad
// configuration is not queued and is the next cudaGetLastError(), as in CUDA.
void emu_launch_raw(const char *name, int uses_syncthreads, const EmuConfig &cfg, void (*body)(void *),
                    void *args, void (*free_args)(void *));

template <typename... P>
struct EmuLaunch {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> args;
};

template <typename... P, typename... A>
void emu_launch(const char *name, int uses_syncthreads, void (*kernel)(P...), const EmuConfig &cfg, A &&...a) {
    auto *l = new EmuLaunch<P...>{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
    emu_launch_raw(
        name, uses_syncthreads, cfg, [](void *p) {
            auto *x = (EmuLaunch<P...> *)p;
            std::apply(x->kernel, x->args);
        },
        l, [](void *p) { delete (EmuLaunch<P...> *)p; });
}
