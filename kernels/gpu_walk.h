// The trainable walk of common/walk.h on the GPU (cuDNN + our kernels): the
// same op list over base layers [from, n_base) of a Model, the same inputs
// and outputs on the host, so common/walk.c switches by device alone.
//
//   frozen layers [from, first_trainable): forward only, the whole batch at
//     once, nothing kept: gpu_frozen.cuh, the code of extract's base;
//   trainable layers [first_trainable, n_base): forward keeping their input,
//     each conv's post-ReLU output and each pool's argmax, then backward and
//     the optimizer update, with the weights, their gradients and the
//     optimizer slots living on the device between steps.
//
// Each op and its CPU reference (common/layers.h, common/optim.c):
//   conv forward          cudnnConvolutionForward + bias/ReLU kernel   conv3x3_forward + relu_forward
//   ReLU backward         kernel: dy = 0 where y <= 0                  relu_backward
//   conv backward data    cudnnConvolutionBackwardData                 conv3x3_backward (din)
//   conv backward filter  cudnnConvolutionBackwardFilter               conv3x3_backward (dkernel)
//   bias gradient         kernel: per-channel sum over N*H*W           conv3x3_backward (dbias)
//   2x2 max pool fwd/bwd  kernels, same argmax rule (first max wins)   maxpool2x2_forward/backward
//   optimizer update      kernel, the OptimRule's constants            optim_apply
// Strict float32 (CUDNN_FMA_MATH) and deterministic cuDNN algorithms picked
// by heuristics (no timing; gpu_util.cuh): a rerun gives the same bits. The
// update kernel rounds every operation as optim_apply does (-ffp-contract=off
// on the CPU; explicit _rn intrinsics here), so from the same gradient it
// gives the CPU's bits.
//
// The walk also holds the head (flatten, dense, dropout, loss;
// kernels/gpu_head.h): its weights and slots live on the device,
// gpu_walk_step_begin runs its forward pass, loss, backward pass and update
// there, and the features never leave the device. The default since an H200
// run (2026-11-30) showed it equal to the CPU head (tests/test_gpu_walk.c,
// `*_gpu_head`) and fine-tuning 2.2x faster with it (3,761 against 1,695
// images/s, bf16, 150x150, batch 20). With the environment variable
// VGGFT_GPU_HEAD=0 (read by gpu_walk_create) the head runs on the CPU
// instead (head_forward / head_backward and the CPU optimizer,
// common/forward.h): per step the features go device -> host and their
// gradient host -> device (N x feature size floats each: 0.6 MB for 20
// images at 150x150).
//
// With the environment variable VGGFT_GPU_GRAPH=1 (read by
// gpu_walk_create; the head on the device and page-locked memory needed) a
// whole batch's step is captured once per input buffer as a CUDA graph
// (after the first step, which loads CUDA's and cuDNN's kernels) and each
// later one is that graph's launch: one call instead of ~100. The values
// that change from step to step (the optimizer rule, the dropout seed, the
// labels and sample weights) are read from device memory, so the steps are
// the same bits either way (tests/test_gpu_walk.c, `graph_steps_*`); a
// partial batch is queued as before; a capture that fails in thread-local
// mode is tried again in relaxed mode, and one that fails in both warns
// and turns graphs off for the walk.
//
// Every batch runs at the capacity `cap`: a smaller one is padded with zero
// inputs whose feature gradients are zero, so they add exact zeros to the
// weight gradients and the algorithms, chosen once for cap, never change.
//
// Layouts: activations N,H,W,C as on the CPU; conv kernels on the device in
// cuDNN's K,R,S,C order (Keras's R,S,C,K transposed), and so are their
// gradients and optimizer slots. gpu_walk_upload / gpu_walk_download move
// weights and slots between the two, so checkpoints (which hold only the
// host copies) are the same files on either device.
//
// Errors: -1 / NULL with err_set("GPU: ..." or "cuDNN: ...", naming the
// layer where there is one). The CPU-only build's stubs (gpu_none.c) fail
// with "this build has no CUDA support (built with CUDA=0)".
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "gpu.h"
#include "model.h"
#include "optim.h"

typedef struct GpuWalk GpuWalk;

// For batches of up to cap items entering at layer `from` (1: images; or the
// layer after a pooling layer: its cached output), first trainable layer
// max(from, m->first_trainable_base). Uploads the weights of every conv in
// [from, n_base) (they must be loaded), zeroes the device slots (two per
// trainable tensor, whatever the optimizer) and picks every algorithm.
// from and cap are checked by the caller (walk_alloc's rules). NULL with
// err_set when there is no usable GPU, no cuDNN, no algorithm, or not enough
// device memory.
// precision: GPU_FP32 (strict float32, the CPU step within the tolerances
// of tests/test_gpu_walk.c), GPU_TF32 (tensor cores for every conv,
// forward and backward; about 1e-3 of the features) or GPU_BF16 (the
// frozen layers as extract's bf16 base, bfloat16 activations and kernels;
// the trainable convs in TF32: about 1e-2 of the features).
GpuWalk *gpu_walk_create(const Model *m, int from, int cap, GpuPrecision precision);
void gpu_walk_free(GpuWalk *g);
// Device bytes taken (activations, weights, gradients, slots, workspace).
size_t gpu_walk_bytes(const GpuWalk *g);
// The algorithms picked, e.g. "block5_conv1 fwd 1 bwd-filter 1 bwd-data -1,
// ...; workspace 12 MB, 140 MB in all" (bwd-data -1: not computed, the first
// trainable layer), for logs and tests.
void gpu_walk_describe(const GpuWalk *g, char *buf, size_t size);
// 1 when every algorithm (forward, backward data and filter, the frozen
// layers' too) is deterministic (0: cuDNN offered none for some layer and
// a non-deterministic one was taken; create warned).
int gpu_walk_deterministic(const GpuWalk *g);

// in: N <= cap items on the host (N x the output size of layer from-1).
// features: N x model_feature_size floats on the host, the cut's output.
// Keeps what backward needs for the trainable layers. Returns when done.
int gpu_walk_forward(GpuWalk *g, const float *in, int N, float *features);
// After gpu_walk_forward on the same batch: d_features (N x feature size on
// the host, the gradient of the loss w.r.t. the cut's output) back through
// the trainable layers, then one update of every trainable conv's kernel
// and bias by rule r (optim_rule of the step's Optimizer). Returns when
// done. (The path of VGGFT_GPU_HEAD=0.)
int gpu_walk_backward_update(GpuWalk *g, const float *d_features, int N, const OptimRule *r);

// Starts the upload of the next batch (N <= cap items on the host, as
// gpu_walk_forward's in) on a stream of its own while the step under way
// computes; the next gpu_walk_step_begin or gpu_walk_forward given this
// same `in` and N uses it instead of uploading (another batch: uploaded as
// usual). Where frozen layers feed trainable ones, their forward pass over
// the staged batch follows its upload on that stream, beside the step
// under way (their weights never change); VGGFT_GPU_OVERLAP=0 (read by
// gpu_walk_create) leaves them to the step, as before 2026-12-01. Either
// way the same bits. `in` must not change until that step has ended;
// page-locked memory (gpu_host_alloc) makes the copy asynchronous. in NULL:
// forget the batch staged (a caller that will not use it: its buffer may
// then change).
int gpu_walk_stage(GpuWalk *g, const float *in, int N);

// 1 when the walk holds the head (the default), 0 with VGGFT_GPU_HEAD=0.
int gpu_walk_has_head(const GpuWalk *g);
// One whole training step with the device head (gpu_walk_has_head), queued
// on the walk's stream; returns without waiting for the GPU: the base's
// forward pass on `in` (as gpu_walk_forward's; `in` must not change until
// gpu_walk_end returns), the head's forward pass with dropout (seed,
// stream: head_forward's), the mean (weighted) loss of labels (host, N;
// sample_weights host, N, or NULL; both read before the call returns), the
// backward pass through the head and the trainable base layers, and the
// update by r of every trainable layer. Equals finetune_step on the CPU
// within the tolerances of tests/test_gpu_walk.c. Then gpu_walk_end,
// before any other call on the walk but gpu_walk_stage.
int gpu_walk_step_begin(GpuWalk *g, const float *in, int N, const int32_t *labels, const float *sample_weights,
                        uint64_t seed, uint64_t stream, const OptimRule *r);
// Inference with the device head, queued likewise: the base's forward pass
// on `in` (unchanged until gpu_walk_end returns), then the head's without
// dropout. Then gpu_walk_end, as after gpu_walk_step_begin.
int gpu_walk_predict_begin(GpuWalk *g, const float *in, int N);
// Waits for the step or prediction begun last and gives its logits and
// probs (host, N x n_outputs each; may be NULL) and mean loss (may be NULL;
// NaN after a prediction). A CUDA or cuDNN error of any of its operations
// shows here (-1 with err_set).
int gpu_walk_end(GpuWalk *g, float *logits, float *probs, float *loss);
// With the environment variable VGGFT_GPU_PROFILE=1 when the walk was made,
// CUDA events time each step's parts on the GPU (input upload, frozen
// layers, trainable forward, head, trainable backward and update) and the
// host's time to queue it; writes the means over the steps so far as one
// line into buf and returns 1 (0 when not profiling or no step ended yet).
// Where the GPU's time from first to last operation is about the host's
// queueing time, the host's launches are the limit, not the arithmetic.
// Steps launched as a graph (VGGFT_GPU_GRAPH=1) are timed apart: their
// input, the graph as a whole, and the host's time to launch it.
int gpu_walk_profile(const GpuWalk *g, char *buf, size_t size);

// Host <-> device copies of the trainable convs' weights and optimizer
// slots (and of the head's layers when the walk holds the head). slots: the HEAD_SLOTS layout over m's layer indices (fit.h's
// FitState.slots), may be NULL; a slot pointer that is NULL (the optimizer
// has fewer slots) is skipped. download writes m's kernels (Keras R,S,C,K)
// and biases of layers [first_trainable, n_base) and the slots; upload reads
// them (and also re-uploads the frozen convs' weights). m is the model the
// walk was created for.
int gpu_walk_download(GpuWalk *g, Model *m, float *const *slots);
int gpu_walk_upload(GpuWalk *g, const Model *m, float *const *slots);

// For tests: the update kernel alone, on host arrays (copied to the device
// and back): param and slots (r->n_slots arrays of n floats) updated from
// grad. Its CPU reference, optim_apply, must give the same bits.
int gpu_optim_apply(const OptimRule *r, float *param, const float *grad, float *const *slots, size_t n);
