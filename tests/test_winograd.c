// Winograd F(2x2,3x3) against the direct convolution (conv.c), which is the
// reference checked against Keras in test_model.c.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "layers.h"
#include "rng.h"
#include "testutil.h"
#include "winograd.h"

// Glorot-like kernel, ReLU-like non-negative inputs (what VGG's convs see
// after the first layer), and a bias: the relative error is measured
// against the largest output, as test_model.c does against Keras.
static float rel_err_vs_direct(int N, int H, int W, int C, int K, unsigned seed) {
    uint64_t ctr = 0;
    size_t nin = (size_t)N * H * W * C, nout = (size_t)N * H * W * K, nw = (size_t)9 * C * K;
    float *in = malloc(nin * 4), *w = malloc(nw * 4), *b = malloc(K * 4);
    float *ref = malloc(nout * 4), *got = malloc(nout * 4);
    float *U = malloc(winograd_kernel_floats(C, K) * 4);
    float *s1 = malloc(conv3x3_scratch_floats(H, W, C) * 4), *s2 = malloc(winograd_scratch_floats(H, W, C, K) * 4);
    float lim = sqrtf(6.0f / (9.0f * (C + K)));
    for (size_t i = 0; i < nin; i++) in[i] = rng_uniform(seed, ctr++) * 10.0f;
    for (size_t i = 0; i < nw; i++) w[i] = (2 * rng_uniform(seed, ctr++) - 1) * lim;
    for (int k = 0; k < K; k++) b[k] = rng_uniform(seed, ctr++) - 0.5f;
    conv3x3_forward(in, N, H, W, C, w, b, K, ref, s1);
    winograd_kernel_transform(w, C, K, U);
    for (size_t i = 0; i < nout; i++) got[i] = NAN;  // every output must be written
    winograd_forward(in, N, H, W, C, U, b, K, got, s2);
    float big = 0, diff = 0;
    for (size_t i = 0; i < nout; i++) {
        if (fabsf(ref[i]) > big) big = fabsf(ref[i]);
        float d = fabsf(ref[i] - got[i]);
        if (!(d <= diff)) diff = d;  // NaN propagates
    }
    free(in), free(w), free(b), free(ref), free(got), free(U), free(s1), free(s2);
    return diff / big;
}

Test(winograd, equals_direct_conv_on_odd_and_even_sizes) {
    // odd sizes crop the last tile's row/column; 1x1 and 1xW are all edge
    int shapes[][5] = {{1, 4, 4, 1, 1}, {1, 5, 7, 3, 8}, {2, 9, 9, 16, 32}, {1, 1, 1, 4, 4},
                       {1, 1, 6, 5, 3}, {3, 7, 2, 8, 8}, {1, 18, 18, 64, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int *h = shapes[s];
        float e = rel_err_vs_direct(h[0], h[1], h[2], h[3], h[4], 7 + (unsigned)s);
        cr_expect(e < 1e-6f, "N=%d H=%d W=%d C=%d K=%d: relative error %g", h[0], h[1], h[2], h[3], h[4], e);
    }
}

// VGG16's layer shapes (channels) at reduced spatial size: the error grows
// with C (longer sums), so the deep layers are the ones to check.
Test(winograd, vgg16_layer_shapes_within_tolerance) {
    int shapes[][4] = {{38, 3, 64}, {38, 64, 64}, {19, 64, 128}, {19, 128, 128}, {9, 128, 256},
                       {9, 256, 256}, {5, 256, 512}, {5, 512, 512}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int *h = shapes[s];
        float e = rel_err_vs_direct(1, h[0], h[0], h[1], h[2], 100 + (unsigned)s);
        cr_expect(e < 2e-6f, "H=W=%d C=%d K=%d: relative error %g", h[0], h[1], h[2], e);
    }
}

// Bands: more tiles than one band holds (C = K = 512 gives 512 tiles per
// band), crossing image boundaries, with the tail band shorter.
Test(winograd, many_bands_across_images) {
    float e = rel_err_vs_direct(3, 27, 25, 512, 16, 5);  // 16*(512+16): 992 tiles a band, 3*14*13 = 546 tiles
    cr_expect(e < 2e-6f, "relative error %g", e);
    e = rel_err_vs_direct(2, 45, 47, 32, 480, 6);  // 1024 a band, 2*23*24 = 1104 tiles: two bands
    cr_expect(e < 2e-6f, "relative error %g", e);
}
