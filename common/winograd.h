// 3x3 'same' convolution (pad 1, stride 1) with bias by Winograd's minimal
// filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016), for output tiles of m = 2, 3 or 4: each m x m
// block of outputs costs (m+2)^2 multiplies per (input channel, output
// channel) instead of 9 m^2, i.e. 2.25x (F(2x2)), 3.24x (F(3x3)) or 4x
// (F(4x4)) fewer than the direct convolution (conv3x3_forward in conv.c,
// the reference). The multiplies are GEMMs (dense.h's dense_product): for
// each of the (m+2)^2 points of the transformed tile, (tiles x C) times
// (C x K), the same bits on every SIMD level and whatever OpenBLAS's kernel.
//
// Same layouts as layers.h: NHWC activations, Keras kernels (3,3,C,K).
// Inference only (the frozen base): training keeps the direct convolution,
// whose backward pass is the reference for the gradient checks.
//
// Accuracy against the direct convolution, as a fraction of the layer's
// largest output (tests/test_winograd.c measures it layer by layer): the
// larger the tile, the larger the transforms' coefficients (up to 5 and 8
// for F(4x4)) and the cancellation between the transformed-domain products,
// whose float32 sums (the GEMMs) then carry most of the error:
// - F(2x2) (adds, subtracts, halves): 6e-7 on VGG16's layer shapes;
// - F(3x3): 2e-6; F(4x4): 5e-6 (with the GEMMs' sums in blocks of 128
//   channels: winograd.c).
// End to end on real photos with the real ImageNet weights see forward.h.
#pragma once
#include <stddef.h>

// Floats of the transformed kernel of a C -> K layer: (m+2)^2 * C * K
// (m = 2: 16 C K, 1.8x the kernel; m = 3: 25 C K, 2.8x; m = 4: 36 C K, 4x).
size_t winograd_tile_kernel_floats(int m, int C, int K);
// U = G g G^T for every (c, k), computed in double and rounded once: w is
// (3,3,C,K); U is (m+2)^2 matrices of C x K (point-major, p = (m+2)*i + j
// of the transformed tile), each stored as panels of 32 output channels
// (the last one narrower), C rows of its width each: the GEMM's operand
// packed once (winograd.c, u_offset).
void winograd_tile_kernel_transform(int m, const float *w, int C, int K, float *U);
// Scratch floats winograd_tile_forward needs for an H x W x C -> K layer
// (the transformed input and product of one band of tiles; at most 32 MiB
// and a few KiB).
size_t winograd_tile_scratch_floats(int m, int H, int W, int C, int K);
// out (N,H,W,K) = conv3x3(in (N,H,W,C)) + bias, from U of
// winograd_tile_kernel_transform with the same m (2, 3 or 4). Any H, W >= 1
// (sizes that are not multiples of m crop the last tiles); C <= 4096.
// on_pool: runs on the thread pool (parallel.h): the transforms in chunks of
// tiles, the GEMMs one per task; 0: the same tasks in order on the calling
// thread (the caller runs several of these side by side on the pool). The
// band of tiles depends on the shape only, so an image's result does not
// depend on the run it is part of when N = 1, nor on the number of threads,
// nor on_pool, nor the SIMD level. Safe to call from several threads at
// once when on_pool is 0.
void winograd_tile_forward(int m, const float *in, int N, int H, int W, int C, const float *U, const float *bias,
                           int K, float *out, float *scratch, int on_pool);
