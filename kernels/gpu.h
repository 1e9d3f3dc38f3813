// The CUDA side's entry points that C code calls. Implemented in kernels/*.cu
// when built with CUDA, and by kernels/gpu_none.c (all "unavailable") when
// built with CUDA=0, so C code never needs #ifdefs. A CUDA build needs no
// CUDA library to start (the runtime is linked in, cuDNN is dlopen'ed: see
// kernels/cudnn_api.h); what is missing shows up here, as reasons.
#pragma once
#include <stddef.h>

// 1 if this build has CUDA support compiled in.
int gpu_built(void);
// Number of usable CUDA devices. 0, with every reason found in why
// ("; "-separated), when there are none or they cannot be used: built
// without CUDA, "NVIDIA driver not found: libcuda.so.1: cannot open shared
// object file...", a driver older than this build's CUDA, no device, GPU 0
// older than the oldest sm_ this build has code for, "cuDNN not found:
// libcudnn.so.9: ..." or an unusable cuDNN.
int gpu_count(char *why, size_t why_size);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"; -1 on error.
int gpu_name(int device, char *buf, size_t size);
// What this build found of CUDA, for --version, one item a line: the
// driver (the CUDA version it supports and its file), the runtime (linked
// in), cuDNN (version, the CUDA it was built for, its file) and the GPU code
// in this binary; a missing piece reads "not found: " and the loader's
// reason. E.g.
//   CUDA driver: for CUDA 13.0 (/usr/lib/x86_64-linux-gnu/libcuda.so.1)
//   CUDA runtime: 13.0 (linked in)
//   cuDNN: 9.13.0 for CUDA 13.0 (/usr/lib/libcudnn.so.9)
//   GPU code: sm_80 sm_90 + PTX compute_90
// Without CUDA: "CUDA: not built in (built with CUDA=0)".
void gpu_libraries(char *buf, size_t size);

// Page-locked (pinned) host memory, which the GPU copies from and to at
// full bus speed and asynchronously (cudaMallocHost): NULL when it cannot be
// had (no GPU, the system's limit, a CPU-only build), and the caller uses
// malloc'd memory instead. gpu_host_free frees it (NULL: nothing).
void *gpu_host_alloc(size_t bytes);
void gpu_host_free(void *p);

// Arithmetic of the GPU convolutions (--precision). FP32: strict float32
// (FMA kernels only), features equal the CPU path to float32 rounding.
// TF32: tensor cores on sm_80+ with 10-bit mantissa products, float32 sums.
// BF16: bfloat16 activations and kernels (8-bit mantissas), float32 sums and
// biases, the first conv in TF32 (extract only; features to float at the end).
typedef enum { GPU_FP32 = 0, GPU_TF32 = 1, GPU_BF16 = 2 } GpuPrecision;
// "fp32" / "tf32" / "bf16"; -1 (err_set) for anything else.
int gpu_precision_from_name(const char *name, GpuPrecision *p);
const char *gpu_precision_name(GpuPrecision p);
