// CPU reference layers, forward and backward, on flat float32 buffers.
//
// Layout conventions (the same as Keras, so weights and features need no
// transposition):
//   activations   N,H,W,C  (channels last)
//   conv kernels  3,3,Cin,Cout  (Keras layout; as a matrix: (9*Cin) x Cout)
//   dense kernels D,U        (Keras layout: out = in(N,D) @ W(D,U) + b)
// Backward functions ACCUMULATE parameter gradients (dW += ..., db += ...;
// the caller zeroes them once per step) and OVERWRITE the input gradient
// `din`, which may be NULL when it is not needed (first trainable layer).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "dense.h"

// --- 3x3 convolution, 'same' padding (pad 1, stride 1), with bias ----------
// Cross-correlation like Keras (no kernel flip). Runs through OpenBLAS sgemm
// on im2col patches, a band of output rows at a time so that the scratch
// buffer stays bounded whatever the image size.
// The N images are treated as one stack of N*H rows and a band may span
// several images, so small maps still give sgemm a large M: pass a batch in
// one call where memory allows (block5 at 150x150 is a 9x9 map: one image
// gives M = 81, where sgemm runs at under half its speed; 20 images ~90%).
// Scratch floats needed by conv3x3_forward/backward for one H,W,C input,
// whatever N and K (at most 8 Mi floats = 32 MiB, or one row's patches if
// that is larger).
size_t conv3x3_scratch_floats(int H, int W, int C);
// bias may be NULL (no bias).
void conv3x3_forward(const float *in, int N, int H, int W, int C,
                     const float *kernel, const float *bias, int K,
                     float *out, float *scratch);
// The same for a frozen layer's inference (forward.c): where the kernel is
// small (9 C K <= 64 Ki floats: block1_conv1, the one frozen layer the
// tools run direct), the product on dense_product (dense.h) instead of
// OpenBLAS, the bias added after the sum: the same bits on every CPU, SIMD
// level and OPENBLAS_CORETYPE, so that caches extracted on different nodes
// agree bit for bit. Larger kernels (only when VGGFT_WINOGRAD=0 forces the
// direct convolution) stay on OpenBLAS. Safe on several threads at once,
// each with its own scratch.
void conv3x3_forward_frozen(const float *in, int N, int H, int W, int C, const float *kernel, const float *bias,
                            int K, float *out, float *scratch);
// 1 when conv3x3_forward_frozen of C -> K channels calls OpenBLAS (a large
// kernel, and BLAS usable: blas_setup.h).
int conv3x3_frozen_uses_blas(int C, int K);
// din, dkernel and dbias may each be NULL when not wanted.
void conv3x3_backward(const float *in, int N, int H, int W, int C,
                      const float *kernel, int K, const float *dout,
                      float *din, float *dkernel, float *dbias, float *scratch);
// Rows (of the N*H stack) per band that the two functions above use; the
// band's scratch is rows*W*9*C floats <= conv3x3_scratch_floats(H, W, C).
int conv3x3_band_rows(int H, int W, int C, int K);
// The same with an explicit band height (>= 1; scratch >= band_rows*W*9*C
// floats): for tests and benchmarks.
void conv3x3_forward_banded(const float *in, int N, int H, int W, int C,
                            const float *kernel, const float *bias, int K,
                            float *out, float *scratch, int band_rows);
void conv3x3_backward_banded(const float *in, int N, int H, int W, int C,
                             const float *kernel, int K, const float *dout,
                             float *din, float *dkernel, float *dbias,
                             float *scratch, int band_rows);

// --- ReLU (in place) -------------------------------------------------------
void relu_forward(float *x, size_t n);
// dy[i] = 0 where the forward output y[i] <= 0.
void relu_backward(const float *y, float *dy, size_t n);

// --- 2x2 max pool, stride 2, floor (Keras 'valid') --------------------------
// out is N, H/2, W/2, C. argmax (may be NULL) receives, per output element,
// the index within the input tensor of the maximum (first one on ties).
void maxpool2x2_forward(const float *in, int N, int H, int W, int C,
                        float *out, int32_t *argmax);
// din (N,H,W,C) is zeroed and the output gradient routed to the argmax.
void maxpool2x2_backward(const float *dout, int N, int H, int W, int C,
                         const int32_t *argmax, float *din);

// --- Dense: see dense.h -----------------------------------------------------
// --- Inverted dropout (training only) --------------------------------------
// Keeps each element with probability 1-rate and divides kept ones by
// (1-rate), like Keras. Element i is kept when
// rng_uniform(rng_hash(seed ^ K, stream), i) >= rate: each stream (training
// step) has its own draws whatever its size, and the same (seed, stream)
// gives the same mask on any thread count. mask (may be NULL in forward) gets 1 where
// kept. rate == 0 leaves x unchanged, mask all 1; rate >= 1 zeroes x.
void dropout_forward(float *x, size_t n, float rate, uint64_t seed,
                     uint64_t stream, uint8_t *mask);
void dropout_backward(float *dx, size_t n, float rate, const uint8_t *mask);

// --- Output activations and losses ------------------------------------------
// Losses are computed from logits (numerically stable); they equal Keras's
// binary/categorical cross-entropy on sigmoid/softmax outputs except where
// Keras clips probabilities to [1e-7, 1-1e-7] (saturated outputs only).
// weights: per-sample weights (class weight of the sample's label), or NULL
// for 1. Reduction is Keras's 'sum_over_batch_size': sum_i w_i*l_i / N.
// d_logits (may be NULL) receives the gradient of that mean loss.
// probs (may be NULL) receives the activation output.
void sigmoid_forward(const float *logits, float *probs, size_t n);
void softmax_forward(const float *logits, float *probs, int N, int K);
float loss_sigmoid_bce(const float *logits, const float *targets,
                       const float *weights, int N, float *d_logits,
                       float *probs);
// labels are class indices in [0, K); one outside makes the loss NaN.
float loss_softmax_cce(const float *logits, const int32_t *labels,
                       const float *weights, int N, int K, float *d_logits,
                       float *probs);

// --- Initialisation ----------------------------------------------------------
// Keras's glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), drawn
// from rng_uniform(seed, i). Conv: fan_in = 9*Cin, fan_out = 9*Cout.
void glorot_uniform(float *w, size_t n, int fan_in, int fan_out, uint64_t seed);
