// A run of frozen base layers on the GPU, forward only (inference): the one
// piece of code behind extract's conv base (gpu_base.cu: layers [1, n_base))
// and the frozen layers below a fine-tuning walk's first trainable one
// (gpu_walk.cu: layers [from, first trainable)). Device buffers in and out,
// NHWC float32; nothing is kept between calls.
//
// Per layer: conv (cuDNN) -> bias + ReLU (our kernel; CPU reference
// conv3x3_forward's bias + relu_forward) -> 2x2 max pool (cuDNN, or our bf16
// kernel; CPU reference maxpool2x2_forward). Precision (gpu.h):
//   GPU_FP32  strict float32 (CUDNN_FMA_MATH): the CPU's features to float32
//             rounding;
//   GPU_TF32  tensor cores, float32 activations;
//   GPU_BF16  the first conv of the run in TF32 on its float input, its
//             output and every later activation and kernel bfloat16 (float
//             sums and biases), the last output converted back to float.
// Algorithms come from cuDNN's heuristics for the batch `cap` (no timing),
// so the same shapes always compute the same bits. C++ (CUDA) only.
#pragma once
#include <cuda_bf16.h>

#include "gpu_util.cuh"

extern "C" {
#include "gpu.h"
}

typedef struct {
    const Model *m;
    int from, to, cap;               // layers [from, to), batches of cap items
    GpuPrecision precision;
    GpuConv *convs;                  // indexed like m->layers (convs of [from, to) only)
    cudnnConvolutionFwdAlgo_t *algos;
    __nv_bfloat16 **k16;             // GPU_BF16: each conv's kernel (K,R,S,C) in bf16, but the first's
    cudnnTensorDescriptor_t *pool_x, *pool_y;
    cudnnPoolingDescriptor_t pool;
    void *d_a, *d_b;                 // ping-pong for the outputs between the first and the last layer
    void *work;
    size_t work_size, bytes;
    int deterministic;               // 0: some conv had no deterministic forward algorithm (create warned)
} GpuFrozen;

// Descriptors, weights (m's host weights, which must be loaded) and
// algorithms for layers [from, to) of m (from after a pooling layer or 1;
// to > from) at batch cap, chosen with handle h. -1 with err_set naming the
// layer; gpu_frozen_free cleans up after a failure too.
int gpu_frozen_create(GpuFrozen *f, const Model *m, int from, int to, int cap, GpuPrecision precision,
                      cudnnHandle_t h);
// in: cap items of layer from-1's output (float, device); out: cap items of
// layer to-1's output (float, device; may not be in). Queued on stream s
// with handle h (set to s by the caller); returns at once.
int gpu_frozen_forward(GpuFrozen *f, cudnnHandle_t h, const float *in, float *out, cudaStream_t s);
// Re-uploads every conv's weights from m (after they changed on the host).
int gpu_frozen_upload(GpuFrozen *f, const Model *m);
void gpu_frozen_free(GpuFrozen *f);
