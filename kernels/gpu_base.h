// The frozen conv base on the GPU (cuDNN), inference only: the GPU
// counterpart of base_forward_cpu in common/forward.c, same inputs and
// outputs (N,H,W,C float32 on the host), so callers switch by device alone.
#pragma once
#include "gpu.h"
#include "image.h"
#include "model.h"

typedef struct GpuBase GpuBase;

// Uploads the weights of layers [1, n_base) and picks each conv's algorithm
// for batches of max_batch by cuDNN's heuristics within a bounded workspace
// (the same on every run: no timing). precision GPU_FP32: strict float32,
// features match the CPU path to float32 rounding; GPU_TF32: tensor cores.
// NULL with err_set on failure (no cuDNN, no GPU, out of device memory).
GpuBase *gpu_base_create(const Model *m, int max_batch, GpuPrecision precision);
// in: N <= max_batch preprocessed images; out: N feature vectors (H,W,C).
// Runs max_batch images every time (zeros after the N given), so an image's
// features do not depend on N or on its batch-mates.
int gpu_base_forward(GpuBase *g, const float *in, int N, float *out);
// The same in two halves, so the host works while the GPU runs: submit
// copies the N images (into pinned memory) and queues the batch, returning
// at once; collect waits for the oldest batch submitted, writes its feature
// vectors to out and returns its N. At most two batches in flight (a third
// submit is an error). gpu_base_forward = submit + collect, with none in flight.
int gpu_base_submit(GpuBase *g, const float *in, int N);
int gpu_base_collect(GpuBase *g, float *out);
// The pinned input buffer (max_batch images) that the k-th submit since
// creation reads, k = 0, 1, 0, 1, ...: a caller that fills it in place
// passes it as `in`, and submit copies nothing. Write to it only while its
// last batch is collected (at most one other batch in flight).
float *gpu_base_staging(GpuBase *g, int k);
// The same from RGB8 pixels (rgb: N x H x W x 3 bytes, as image_chain_rgb8
// writes them), preprocessed on the device by prep_pixel in mode prep, the
// host's own code (prep_pixel.h): the same floats as image_preprocess, a
// quarter of the bytes to copy. gpu_base_staging_rgb8(g, k) is
// gpu_base_staging's buffer for such pixels (fill it in place and pass it).
int gpu_base_submit_rgb8(GpuBase *g, const uint8_t *rgb, int N, PrepMode prep);
uint8_t *gpu_base_staging_rgb8(GpuBase *g, int k);
void gpu_base_free(GpuBase *g);
