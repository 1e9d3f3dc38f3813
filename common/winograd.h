// 3x3 'same' convolution (pad 1, stride 1) with bias by Winograd's minimal
// filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016): each 2x2 block of outputs costs 16 multiplies per
// (input channel, output channel) instead of 36, i.e. 2.25x fewer than the
// direct convolution (conv3x3_forward in conv.c, the reference). The
// multiplies are still GEMMs on OpenBLAS: for each of the 16 points of the
// transformed 4x4 tile, (tiles x C) times (C x K).
//
// Same layouts as layers.h: NHWC activations, Keras kernels (3,3,C,K).
// Inference only (the frozen base): training keeps the direct convolution,
// whose backward pass is the reference for the gradient checks.
//
// Accuracy: the transforms only add, subtract and halve (exact in binary
// float except for the sums' rounding), so results differ from the direct
// convolution by a few float32 roundings of the larger partial sums: about
// 1e-6 of the largest output on VGG16's layers (tests/test_winograd.c
// measures it layer by layer).
#pragma once
#include <stddef.h>

// Floats of the transformed kernel of a C -> K layer: 16 * C * K.
size_t winograd_kernel_floats(int C, int K);
// U = G g G^T for every (c, k): w is (3,3,C,K); U is 16 matrices of C x K
// (point-major: U[p*C*K + c*K + k], p = 4*i + j of the 4x4 tile).
void winograd_kernel_transform(const float *w, int C, int K, float *U);
// Scratch floats winograd_forward needs for an H x W x C -> K layer (the
// transformed input and product of one band of tiles; at most 32 MiB).
size_t winograd_scratch_floats(int H, int W, int C, int K);
// out (N,H,W,K) = conv3x3(in (N,H,W,C)) + bias, from U of
// winograd_kernel_transform. Any H, W >= 1 (odd sizes crop the last tile);
// C <= 4096. The transforms run on the thread pool (parallel.h), the GEMMs
// on OpenBLAS's threads.
// The band of tiles depends on the shape only, so an image's result does
// not depend on the run it is part of when N = 1.
void winograd_forward(const float *in, int N, int H, int W, int C, const float *U, const float *bias, int K,
                      float *out, float *scratch);
