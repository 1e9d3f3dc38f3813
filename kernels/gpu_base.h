// The frozen conv base on the GPU (cuDNN), inference only: the GPU
// counterpart of base_forward_cpu in common/forward.c, same inputs and
// outputs (N,H,W,C float32 on the host), so callers switch by device alone.
#pragma once
#include "model.h"

typedef struct GpuBase GpuBase;

// Uploads the weights of layers [1, n_base) and lets cuDNN pick, by timing
// its candidates (cudnnFind), the fastest algorithm for each conv at
// max_batch within a bounded workspace. NULL with err_set on failure.
// Arithmetic is strict float32 (no TF32), so features match the CPU path
// to float32 rounding.
GpuBase *gpu_base_create(const Model *m, int max_batch);
// in: N <= max_batch preprocessed images; out: N feature vectors (H,W,C).
int gpu_base_forward(GpuBase *g, const float *in, int N, float *out);
void gpu_base_free(GpuBase *g);
