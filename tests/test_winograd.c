// Winograd F(2x2,3x3) and F(4x4,3x3) against the direct convolution
// (conv.c), which is the reference checked against Keras in test_model.c.
// The bounds are a few times the measured errors (stated at each test), far
// below what one wrong transform coefficient gives (errors of 1e-2 to 1,
// checked by breaking one of each transform once).
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "parallel.h"
#include "rng.h"
#include "simd.h"
#include "testutil.h"
#include "winograd.h"

// Glorot-like kernel, ReLU-like non-negative inputs (what VGG's convs see
// after the first layer), and a bias: the relative error is measured
// against the largest output, as test_model.c does against Keras.
static float rel_err_vs_direct(int m, int N, int H, int W, int C, int K, unsigned seed) {
    uint64_t ctr = 0;
    size_t nin = (size_t)N * H * W * C, nout = (size_t)N * H * W * K, nw = (size_t)9 * C * K;
    float *in = malloc(nin * 4), *w = malloc(nw * 4), *b = malloc(K * 4);
    float *ref = malloc(nout * 4), *got = malloc(nout * 4);
    float *U = malloc(winograd_tile_kernel_floats(m, C, K) * 4);
    float *s1 = malloc(conv3x3_scratch_floats(H, W, C) * 4), *s2 = malloc(winograd_tile_scratch_floats(m, H, W, C, K) * 4);
    float lim = sqrtf(6.0f / (9.0f * (C + K)));
    for (size_t i = 0; i < nin; i++) in[i] = rng_uniform(seed, ctr++) * 10.0f;
    for (size_t i = 0; i < nw; i++) w[i] = (2 * rng_uniform(seed, ctr++) - 1) * lim;
    for (int k = 0; k < K; k++) b[k] = rng_uniform(seed, ctr++) - 0.5f;
    conv3x3_forward(in, N, H, W, C, w, b, K, ref, s1);
    winograd_tile_kernel_transform(m, w, C, K, U);
    for (size_t i = 0; i < nout; i++) got[i] = NAN;  // every output must be written
    winograd_tile_forward(m, in, N, H, W, C, U, b, K, got, s2, 1);
    float big = 0, diff = 0;
    for (size_t i = 0; i < nout; i++) {
        if (fabsf(ref[i]) > big) big = fabsf(ref[i]);
        float d = fabsf(ref[i] - got[i]);
        if (!(d <= diff)) diff = d;  // NaN propagates
    }
    free(in), free(w), free(b), free(ref), free(got), free(U), free(s1), free(s2);
    return diff / big;
}

// Odd sizes and sizes that are not multiples of the tile crop the last
// tiles' rows and columns; 1x1 and 1xW are all edge; channel counts that
// are not multiples of 16 leave the transforms' last lanes unused.
static void check_small_shapes(int m, float bound) {
    static const int shapes[][5] = {{1, 4, 4, 1, 1},   {1, 5, 7, 3, 8},    {2, 9, 9, 16, 32},
                                    {1, 1, 1, 4, 4},   {1, 1, 6, 5, 3},    {3, 7, 2, 8, 8},
                                    {1, 18, 18, 64, 64}, {1, 10, 11, 17, 33}, {2, 13, 6, 20, 40}};
    float worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int *h = shapes[s];
        float e = rel_err_vs_direct(m, h[0], h[1], h[2], h[3], h[4], 7 + (unsigned)s);
        cr_expect(e < bound, "F(%dx%d) N=%d H=%d W=%d C=%d K=%d: relative error %g", m, m, h[0], h[1], h[2], h[3],
                  h[4], e);
        if (!(e <= worst)) worst = e;
    }
    cr_log_info("F(%dx%d), small shapes: largest relative error %.3g", m, m, worst);
}

// Measured: at most 6.5e-7 (F(2x2)), 1.5e-6 (F(3x3)) and 2.6e-6 (F(4x4)) of
// the largest output (uniform inputs in [0, 10), Glorot-uniform kernels).
Test(winograd, f2_equals_direct_conv_on_odd_and_even_sizes) { check_small_shapes(2, 1e-6f); }
Test(winograd, f3_equals_direct_conv_on_odd_and_even_sizes) { check_small_shapes(3, 3e-6f); }
Test(winograd, f4_equals_direct_conv_on_odd_and_even_sizes) { check_small_shapes(4, 5e-6f); }

// VGG16's 13 conv layer shapes (channels; the three block5 convs and
// block4_conv2/3 share one) at reduced spatial size: the error grows with C
// (longer sums), so the deep layers are the ones to check.
static void check_vgg16_shapes(int m, float bound) {
    static const int shapes[][4] = {{38, 3, 64},  {38, 64, 64},   {19, 64, 128}, {19, 128, 128}, {9, 128, 256},
                                    {9, 256, 256}, {5, 256, 512}, {5, 512, 512}, {9, 512, 512}};
    float worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int *h = shapes[s];
        float e = rel_err_vs_direct(m, 1, h[0], h[0], h[1], h[2], 100 + (unsigned)s);
        cr_expect(e < bound, "F(%dx%d) H=W=%d C=%d K=%d: relative error %g", m, m, h[0], h[1], h[2], e);
        if (!(e <= worst)) worst = e;
    }
    cr_log_info("F(%dx%d), VGG16 shapes: largest relative error %.3g", m, m, worst);
}

// Measured: at most 8.1e-7 (F(2x2)), 2.5e-6 (F(3x3)) and 6.0e-6 (F(4x4)) of
// the largest output; on real VGG16 weights and photos F(4x4) is 2e-6 to
// 6e-6 per layer (docs/DEVELOPMENT.md).
Test(winograd, f2_vgg16_layer_shapes_within_tolerance) { check_vgg16_shapes(2, 2e-6f); }
Test(winograd, f3_vgg16_layer_shapes_within_tolerance) { check_vgg16_shapes(3, 5e-6f); }
Test(winograd, f4_vgg16_layer_shapes_within_tolerance) { check_vgg16_shapes(4, 1e-5f); }

// Bands: more tiles than one band holds, crossing image boundaries, with the
// tail band shorter (band sizes: winograd.c's band_tiles).
Test(winograd, many_bands_across_images) {
    // F(2x2): 124 tiles a band for 512 -> 16, 3*14*13 = 546 tiles; 128 a
    // band for 32 -> 480, 2*23*24 = 1104 tiles.
    float e = rel_err_vs_direct(2, 3, 27, 25, 512, 16, 5);
    cr_expect(e < 2e-6f, "relative error %g", e);
    e = rel_err_vs_direct(2, 2, 45, 47, 32, 480, 6);
    cr_expect(e < 2e-6f, "relative error %g", e);
    // F(4x4): 55 tiles a band, 4*12*12 = 576 tiles; 56 a band, 2*18*17 =
    // 612 tiles.
    e = rel_err_vs_direct(4, 4, 45, 47, 512, 16, 7);
    cr_expect(e < 1e-5f, "relative error %g", e);
    e = rel_err_vs_direct(4, 2, 70, 66, 32, 480, 8);
    cr_expect(e < 1e-5f, "relative error %g", e);
}

// The transforms run as AVX-512, AVX2 or portable code (simd.h) with the
// same operations in the same order: the same bits at every level.
Test(winograd, same_bits_at_every_simd_level) {
    const int N = 1, H = 13, W = 11, C = 40, K = 24;
    uint64_t ctr = 0;
    size_t nin = (size_t)N * H * W * C, nout = (size_t)N * H * W * K;
    float *in = malloc(nin * 4), *w = malloc((size_t)9 * C * K * 4), *b = malloc(K * 4);
    float *ref = malloc(nout * 4), *got = malloc(nout * 4);
    for (size_t i = 0; i < nin; i++) in[i] = rng_uniform(3, ctr++) * 10.0f;
    for (size_t i = 0; i < (size_t)9 * C * K; i++) w[i] = rng_uniform(3, ctr++) - 0.5f;
    for (int k = 0; k < K; k++) b[k] = rng_uniform(3, ctr++) - 0.5f;
    for (int m = 2; m <= 4; m++) {
        float *U = malloc(winograd_tile_kernel_floats(m, C, K) * 4), *s = malloc(winograd_tile_scratch_floats(m, H, W, C, K) * 4);
        winograd_tile_kernel_transform(m, w, C, K, U);
        simd_set_level(SIMD_PORTABLE);
        winograd_tile_forward(m, in, N, H, W, C, U, b, K, ref, s, 1);
        for (int level = SIMD_AVX2; level <= simd_cpu_level(); level++) {
            simd_set_level(level);
            winograd_tile_forward(m, in, N, H, W, C, U, b, K, got, s, 1);
            cr_expect_arr_eq(got, ref, nout * 4, "F(%dx%d): %s differs from portable C", m, m, simd_level_name(level));
        }
        simd_set_level(SIMD_AVX512);
        free(U), free(s);
    }
    free(in), free(w), free(b), free(ref), free(got);
}

// One thread or two (the pool and OpenBLAS, as the tools set both), or off
// the pool: the same bits, whatever the tile.
Test(winograd, same_bits_on_one_and_two_threads) {
    const int N = 2, H = 20, W = 17, C = 48, K = 40;
    uint64_t ctr = 0;
    size_t nin = (size_t)N * H * W * C, nout = (size_t)N * H * W * K;
    float *in = malloc(nin * 4), *w = malloc((size_t)9 * C * K * 4), *b = malloc(K * 4);
    float *ref = malloc(nout * 4), *got = malloc(nout * 4);
    for (size_t i = 0; i < nin; i++) in[i] = rng_uniform(4, ctr++) * 10.0f;
    for (size_t i = 0; i < (size_t)9 * C * K; i++) w[i] = rng_uniform(4, ctr++) - 0.5f;
    for (int k = 0; k < K; k++) b[k] = rng_uniform(4, ctr++) - 0.5f;
    for (int m = 2; m <= 4; m++) {
        float *U = malloc(winograd_tile_kernel_floats(m, C, K) * 4), *s = malloc(winograd_tile_scratch_floats(m, H, W, C, K) * 4);
        winograd_tile_kernel_transform(m, w, C, K, U);
        parallel_set_threads(1), openblas_set_num_threads(1);
        winograd_tile_forward(m, in, N, H, W, C, U, b, K, ref, s, 1);
        parallel_set_threads(2), openblas_set_num_threads(2);
        winograd_tile_forward(m, in, N, H, W, C, U, b, K, got, s, 1);
        cr_expect_arr_eq(got, ref, nout * 4, "F(%dx%d): 2 threads differ from 1", m, m);
        cr_expect_eq(openblas_get_num_threads(), 2, "OpenBLAS's thread count not set back");
        // Off the pool (images side by side, forward.h): the same tasks on
        // this thread alone.
        openblas_set_num_threads(1);
        memset(got, 0, nout * 4);
        winograd_tile_forward(m, in, N, H, W, C, U, b, K, got, s, 0);
        cr_expect_arr_eq(got, ref, nout * 4, "F(%dx%d): off the pool differs", m, m);
        parallel_set_threads(1), openblas_set_num_threads(1);
        free(U), free(s);
    }
    free(in), free(w), free(b), free(ref), free(got);
}
