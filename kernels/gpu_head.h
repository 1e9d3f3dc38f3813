// The dense head on the GPU (the default; VGGFT_GPU_HEAD=0 keeps it on the host, see gpu_walk.h):
// flatten -> [dense (relu) -> [dropout]] -> dense (sigmoid | softmax), the
// loss, the backward pass down to the features' gradient, and the head
// layers' optimizer update, on device buffers, so that a fine-tuning step's
// features never leave the device.
//
// Each op and its CPU reference (common/forward.c, dense.c, layers.c,
// loss.c, optim.c):
//   flatten              nothing: NHWC features are Keras's H,W,C order     (Flatten)
//   dense forward        tiled product, fixed split of D into blocks of 512  dense_forward
//                        rows, each block a sequential fmaf sum from 0, the
//                        blocks added to the bias in block order: the CPU's
//                        bits from the same inputs
//   relu + dropout       kernel; the mask from the CPU's counter RNG        relu_forward, dropout_forward
//                        (rng_hash ported as __host__ __device__), x/keep
//   sigmoid / softmax    kernel, one thread per row (softmax in double)      sigmoid_forward, softmax_forward
//   loss and d_logits    one block; per-row terms in double, summed in row   loss_sigmoid_bce,
//                        order by one thread, the same formulas              loss_softmax_cce
//   dW = in^T dout       tiled product, a sequential fmaf sum over the       dense_backward (dW)
//                        batch from 0: the CPU's bits
//   db                   kernel: 0 + dout[0][c] + dout[1][c] + ...           dense_backward (db)
//   din = dout W^T       tiled product, sequential over U (the CPU's is      dense_backward (din,
//                        OpenBLAS sgemm: other order, float32 roundings)     cblas_sgemm)
//   dropout / relu bwd   kernel                                              dropout_backward, relu_backward
//   optimizer update     gpu_optim_launch (gpu_util.cuh), shared with the    optim_apply
//                        walk's convs
// Matrix products are our own 16x16 shared-memory tiles (no cuBLAS), each
// output a sequential float32 fmaf sum: the same bits on every run.
// The CPU's bits hold as far as the logits (products, bias, ReLU, dropout);
// the sigmoid / softmax and the loss call CUDA's expf / exp / log / log1p,
// which may round differently from glibc's in the last bit (CUDA: expf 2 ulp,
// double exp and log1p 1 ulp), so the probabilities, the loss and every
// gradient after them are the CPU's within rounding, not bit for bit (the
// tests compare them with tolerances). (On the GPU emulation, make test-emu,
// with glibc's functions, these kernels give the CPU's bits throughout.)
//
// Layouts as on the host: dense kernels D x U row-major (Keras), so upload /
// download are plain copies; activations N rows. The head runs on the
// batch's N rows only (never the walk's padding rows), so dropout's counter
// i = row * units + unit is the CPU's.
//
// Errors: -1 / NULL with err_set("GPU head: ..." or "GPU: ..."), naming the
// layer where there is one.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"

typedef struct GpuHead GpuHead;

// For batches of up to cap rows: allocates the head's device buffers,
// uploads the weights of m's head layers [n_base, n_layers) (they must be
// loaded) and zeroes two slots per tensor. Every later operation is queued
// on `stream` (a cudaStream_t; NULL: the legacy default stream), in order
// with the caller's work there. NULL with err_set when the head is not
// flatten, [dense (relu), [dropout]], dense (sigmoid | softmax), or on a
// CUDA error (out of device memory...).
GpuHead *gpu_head_create(const Model *m, int cap, void *stream);
void gpu_head_free(GpuHead *h);
// Device bytes taken.
size_t gpu_head_bytes(const GpuHead *h);
// 1 when the step's host block is page-locked (a CUDA graph may copy from
// it; else plain memory, whose copies CUDA stages at the call).
int gpu_head_pinned(const GpuHead *h);

// A training step comes in three calls, so that its device work can be
// captured once as a CUDA graph and replayed (gpu_walk.cu):
//   gpu_head_step_prepare  the host's part: waits until the previous step's
//                          copies have read the page-locked input block,
//                          then writes the step's labels (host, N class
//                          indices), sample_weights (host, N, or NULL), the
//                          dropout seed of (seed, stream) (dropout_forward's
//                          derivation) and the rule r there; every pointer
//                          is read before it returns;
//   gpu_head_step_queue    the device's part, queued on the head's stream
//                          without a host wait or an event (capturable):
//                          the input block's upload, the forward pass of
//                          the N prepared rows of device features feat (N x
//                          model_feature_size) with dropout, the mean
//                          (weighted) loss as head_backward computes it,
//                          the gradient of every head layer, if d_feat
//                          (device, N x feature size) is not NULL the
//                          gradient of the loss w.r.t. the features (from
//                          the weights before the update), one update by r
//                          of every trainable head layer (slots on the
//                          device), and the copies of the logits, the
//                          probabilities and the loss into page-locked
//                          memory. Every value that changes from step to
//                          step (labels, weights, the seed, Adam's alpha)
//                          is read from device memory, never passed by
//                          value; only N and whether there are sample
//                          weights are fixed at the call;
//   gpu_head_step_queued   after that work (or a graph holding it) on the
//                          head's stream: records the head's events;
//                          gpu_head_results then gives this step's results.
int gpu_head_step_prepare(GpuHead *h, const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                          uint64_t stream, const OptimRule *r);
int gpu_head_step_queue(GpuHead *h, const float *feat, float *d_feat);
int gpu_head_step_queued(GpuHead *h);
// Inference on N <= cap rows of device features feat, queued without a
// wait: the forward pass without dropout, then the copies of the logits and
// the probabilities to the host (gpu_head_results gives them).
int gpu_head_predict(GpuHead *h, const float *feat, int N);
// Waits for the last results (a step's, after gpu_head_step_queued, or
// gpu_head_predict's) and gives them: logits and probs (host, N x n_outputs
// each, N the step's rows; may be NULL) and *loss (may be NULL; NaN after
// inference). A CUDA error of any work queued before shows here: -1 with
// err_set.
int gpu_head_results(GpuHead *h, float *logits, float *probs, float *loss);

// Host <-> device copies of the head layers' weights and slots. slots: the
// HEAD_SLOTS layout over m's layer indices (forward.h), may be NULL; NULL
// slot pointers are skipped. m must be the model the head was made for.
int gpu_head_download(GpuHead *h, Model *m, float *const *slots);
int gpu_head_upload(GpuHead *h, const Model *m, float *const *slots);

// For tests, on the host: the device's relu + dropout code (the same
// __host__ __device__ function the kernel runs, compiled by nvcc for the
// host) over x (n floats, training mode), mask as dropout_forward's.
// Reference: relu_forward then dropout_forward (common/layers.c), bit for
// bit. -1 (err_set) in a build without CUDA.
int gpu_head_dropout_host(float *x, size_t n, float rate, uint64_t seed, uint64_t stream, uint8_t *mask);
