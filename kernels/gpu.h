// The CUDA side's entry points that C code calls. Implemented in kernels/*.cu
// when built with CUDA, and by kernels/gpu_none.c (all "unavailable") when
// built with CUDA=0, so C code never needs #ifdefs.
#pragma once
#include <stddef.h>

// 1 if this build has CUDA support compiled in.
int gpu_built(void);
// Number of usable CUDA devices; 0 with a reason in why ("built without CUDA",
// "no CUDA-capable device is detected", a driver error) when there are none.
int gpu_count(char *why, size_t why_size);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"; -1 on error.
int gpu_name(int device, char *buf, size_t size);
// cuDNN version compiled against / loaded, e.g. "9.13.0 / 9.13.0"; "" without CUDA.
void gpu_cudnn_version(char *buf, size_t size);
