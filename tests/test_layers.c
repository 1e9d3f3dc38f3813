// CPU reference layers: forward and backward against Keras 3 fixtures
// (scripts/fixtures_layers.py), finite-difference gradient checks, the
// banded conv against one band and a direct double-precision conv, dropout
// statistics and glorot_uniform's distribution.
//
// Tolerances. Fixture comparisons use the error relative to the array's
// largest magnitude, max|got - want| / max|want|: the float32 results differ
// from Keras's only by summation order, which for sums of at most a few
// hundred terms of similar size stays below ~1e-6 of the largest term; 1e-5
// leaves room for that and still fails on any indexing or layout mistake
// (those give errors of order 1). Finite differences use perturbations for
// which the difference quotient is exact in real arithmetic (the layers are
// linear, or piecewise linear with kinks farther away than the step), so what
// remains is float32 rounding of the perturbed outputs divided by 2h.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"

// --- helpers ------------------------------------------------------------------

static Npy load(const char *name) { return fixture_npy("layers/%s.npy", name); }

#define F(a) ((float *)(a).data)

static double scale_of(const float *want, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    return m > 0 ? m : 1.0;
}

// max |got - want| / max |want|
static double rel_err(const float *got, const float *want, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (isnan(d)) return INFINITY;
        m = fmax(m, d);
    }
    return m / scale_of(want, n);
}

#define EXPECT_CLOSE(got, want, n, tol, what)                                   \
    do {                                                                        \
        double e_ = rel_err((got), (want), (n));                                \
        cr_expect(e_ <= (tol), "%s: relative error %.3g > %.3g", (what), e_,    \
                  (double)(tol));                                               \
    } while (0)

// Deterministic test data in [-1, 1).
static float *urand(size_t n, uint64_t seed) {
    float *p = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * rng_uniform(seed, i) - 1.0f;
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// Direct convolution in double: the reference for shapes without fixtures.
static void conv_direct(const float *in, int N, int H, int W, int C, const float *k,
                        const float *b, int K, float *out) {
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int o = 0; o < K; o++) {
                    double s = b ? b[o] : 0.0;
                    for (int dy = 0; dy < 3; dy++)
                        for (int dx = 0; dx < 3; dx++) {
                            int yy = y + dy - 1, xx = x + dx - 1;
                            if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                            for (int c = 0; c < C; c++)
                                s += (double)in[(((size_t)n * H + yy) * W + xx) * C + c] *
                                     k[((dy * 3 + dx) * C + c) * K + o];
                        }
                    out[(((size_t)n * H + y) * W + x) * K + o] = (float)s;
                }
}

// --- conv: fixtures -----------------------------------------------------------

static void conv_fixture(const char *tag) {
    char nm[64];
#define L(s) (snprintf(nm, sizeof nm, "%s_%s", tag, s), load(nm))
    Npy x = L("x"), k = L("kernel"), b = L("bias"), y = L("y"), dy = L("dy"), dx = L("dx"),
        dk = L("dkernel"), db = L("dbias");
#undef L
    int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3], K = k.shape[3];
    float *scratch = malloc(conv3x3_scratch_floats(H, W, C) * sizeof(float));
    float *out = malloc(y.count * sizeof(float));
    conv3x3_forward(F(x), N, H, W, C, F(k), F(b), K, out, scratch);
    EXPECT_CLOSE(out, F(y), y.count, 1e-5, tag);

    float *gin = malloc(x.count * sizeof(float));
    float *gk = calloc(k.count, sizeof(float)), *gb = calloc(K, sizeof(float));
    conv3x3_backward(F(x), N, H, W, C, F(k), K, F(dy), gin, gk, gb, scratch);
    EXPECT_CLOSE(gin, F(dx), x.count, 1e-5, "conv din");
    EXPECT_CLOSE(gk, F(dk), k.count, 1e-5, "conv dkernel");
    EXPECT_CLOSE(gb, F(db), (size_t)K, 1e-5, "conv dbias");

    // Parameter gradients accumulate: a second call doubles them.
    conv3x3_backward(F(x), N, H, W, C, F(k), K, F(dy), NULL, gk, gb, scratch);
    for (size_t i = 0; i < k.count; i++) gk[i] *= 0.5f;
    for (int i = 0; i < K; i++) gb[i] *= 0.5f;
    EXPECT_CLOSE(gk, F(dk), k.count, 1e-5, "conv dkernel accumulated");
    EXPECT_CLOSE(gb, F(db), (size_t)K, 1e-5, "conv dbias accumulated");

    free(scratch); free(out); free(gin); free(gk); free(gb);
    Npy *all[] = {&x, &k, &b, &y, &dy, &dx, &dk, &db};
    for (int i = 0; i < 8; i++) npy_free(all[i]);
}

Test(conv, keras_fixture_c3_k4) { conv_fixture("conv_a"); }
Test(conv, keras_fixture_c8_k5) { conv_fixture("conv_b"); }
Test(conv, keras_fixture_1x1_image) { conv_fixture("conv_c"); }

// --- conv: bands ----------------------------------------------------------------

// Band heights that split the N*H row stack inside images and across image
// boundaries must all give the single-band result.
Test(conv, bands_match_single_band) {
    int N = 3, H = 7, W = 6, C = 5, K = 4;
    float *in = urand((size_t)N * H * W * C, 1), *k = urand(9 * C * K, 2), *b = urand(K, 3);
    float *dout = urand((size_t)N * H * W * K, 4);
    size_t rows = (size_t)N * H;
    float *scratch = malloc(rows * W * 9 * C * sizeof(float));
    float *ref = malloc(rows * W * K * sizeof(float)), *out = malloc(rows * W * K * sizeof(float));
    float *rdin = malloc(rows * W * C * sizeof(float)), *din = malloc(rows * W * C * sizeof(float));
    float *rdk = calloc(9 * C * K, sizeof(float)), *rdb = calloc(K, sizeof(float));
    conv3x3_forward_banded(in, N, H, W, C, k, b, K, ref, scratch, (int)rows);
    conv3x3_backward_banded(in, N, H, W, C, k, K, dout, rdin, rdk, rdb, scratch, (int)rows);

    int bands[] = {1, 2, 3, 5, 8, 20};
    for (size_t i = 0; i < sizeof bands / sizeof *bands; i++) {
        float *dk = calloc(9 * C * K, sizeof(float)), *db = calloc(K, sizeof(float));
        memset(out, 0xff, rows * W * K * sizeof(float));  // NaN: catches unwritten rows
        memset(din, 0xff, rows * W * C * sizeof(float));
        conv3x3_forward_banded(in, N, H, W, C, k, b, K, out, scratch, bands[i]);
        conv3x3_backward_banded(in, N, H, W, C, k, K, dout, din, dk, db, scratch, bands[i]);
        char what[64];
        snprintf(what, sizeof what, "band %d rows", bands[i]);
        EXPECT_CLOSE(out, ref, rows * W * K, 1e-5, what);
        EXPECT_CLOSE(din, rdin, rows * W * C, 1e-5, what);
        EXPECT_CLOSE(dk, rdk, 9 * C * K, 1e-5, what);
        EXPECT_CLOSE(db, rdb, (size_t)K, 1e-5, what);
        free(dk); free(db);
    }
    free(in); free(k); free(b); free(dout); free(scratch); free(ref); free(out);
    free(rdin); free(din); free(rdk); free(rdb);
}

// The default band on a small-map layer spans several images per band (and
// ends inside an image); compare with the direct double-precision conv.
Test(conv, default_band_spans_images) {
    int N = 7, H = 9, W = 9, C = 16, K = 64;
    int rows = conv3x3_band_rows(H, W, C, K);
    cr_assert(rows > H && rows < N * H && (N * H) % rows != 0,
              "band of %d rows no longer spans images here: pick another shape", rows);
    cr_assert_leq((size_t)rows * W * 9 * C, conv3x3_scratch_floats(H, W, C));
    float *in = urand((size_t)N * H * W * C, 5), *k = urand(9 * C * K, 6), *b = urand(K, 7);
    float *scratch = malloc(conv3x3_scratch_floats(H, W, C) * sizeof(float));
    size_t no = (size_t)N * H * W * K;
    float *out = malloc(no * sizeof(float)), *ref = malloc(no * sizeof(float));
    conv3x3_forward(in, N, H, W, C, k, b, K, out, scratch);
    conv_direct(in, N, H, W, C, k, b, K, ref);
    EXPECT_CLOSE(out, ref, no, 1e-5, "default band vs direct");
    conv3x3_forward(in, N, H, W, C, k, NULL, K, out, scratch);  // no bias
    conv_direct(in, N, H, W, C, k, NULL, K, ref);
    EXPECT_CLOSE(out, ref, no, 1e-5, "no bias");
    free(in); free(k); free(b); free(scratch); free(out); free(ref);
}

// The scratch bound holds for every K, and stays bounded on a big layer.
Test(conv, scratch_bound) {
    int shapes[][3] = {{150, 150, 64}, {224, 224, 512}, {9, 9, 512}, {37, 37, 256}, {1, 1, 3},
                       {3000, 3000, 512}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int H = shapes[s][0], W = shapes[s][1], C = shapes[s][2];
        size_t bound = conv3x3_scratch_floats(H, W, C);
        size_t row = (size_t)W * 9 * C;
        cr_expect(bound <= (8u << 20) || bound == row, "%dx%dx%d: %zu floats", H, W, C, bound);
        for (int K = 1; K <= 4096; K *= 2) {
            int r = conv3x3_band_rows(H, W, C, K);
            cr_expect(r >= 1 && (size_t)r * row <= bound, "%dx%dx%d K=%d: %d rows", H, W, C, K, r);
        }
    }
}

// --- conv: finite differences ------------------------------------------------------

// L = sum(conv(in) * g). The conv is linear in each of in, kernel and bias, so
// the central difference is exact for any step; h = 0.5 makes float32
// rounding of L (|L| ~ 10, ulp ~ 1e-6) negligible against the gradients.
static double conv_objective(const float *in, int N, int H, int W, int C, const float *k,
                             const float *b, int K, const float *g, float *out, float *scratch,
                             int band) {
    conv3x3_forward_banded(in, N, H, W, C, k, b, K, out, scratch, band);
    return dot(out, g, (size_t)N * H * W * K);
}

static void conv_fd(int N, int H, int W, int C, int K, int band, uint64_t seed) {
    size_t ni = (size_t)N * H * W * C, no = (size_t)N * H * W * K, nk = 9 * (size_t)C * K;
    float *in = urand(ni, seed), *k = urand(nk, seed + 1), *b = urand(K, seed + 2);
    float *g = urand(no, seed + 3);
    float *scratch = malloc((size_t)band * W * 9 * C * sizeof(float));
    float *out = malloc(no * sizeof(float)), *din = malloc(ni * sizeof(float));
    float *dk = calloc(nk, sizeof(float)), *db = calloc(K, sizeof(float));
    conv3x3_backward_banded(in, N, H, W, C, k, K, g, din, dk, db, scratch, band);

    const float h = 0.5f;
    struct { float *p, *grad; size_t n; const char *name; } params[] = {
        {in, din, ni, "input"}, {k, dk, nk, "kernel"}, {b, db, (size_t)K, "bias"}};
    for (int p = 0; p < 3; p++) {
        double worst = 0;
        for (size_t i = 0; i < params[p].n; i++) {
            float v = params[p].p[i];
            params[p].p[i] = v + h;
            double lp = conv_objective(in, N, H, W, C, k, b, K, g, out, scratch, band);
            params[p].p[i] = v - h;
            double lm = conv_objective(in, N, H, W, C, k, b, K, g, out, scratch, band);
            params[p].p[i] = v;
            double fd = (lp - lm) / (2 * h);
            worst = fmax(worst, fabs(fd - params[p].grad[i]) / (1 + fabs(fd)));
        }
        cr_expect(worst < 1e-5, "conv %dx%dx%dx%d->%d band %d: d/d%s off by %.3g", N, H, W, C, K,
                  band, params[p].name, worst);
    }
    free(in); free(k); free(b); free(g); free(scratch); free(out); free(din); free(dk); free(db);
}

Test(conv, finite_differences) {
    conv_fd(2, 5, 3, 3, 2, 10, 100);  // odd H, W; one band
    conv_fd(2, 5, 3, 3, 2, 3, 200);   // bands that cross the image boundary
    conv_fd(3, 4, 7, 2, 3, 1, 300);   // one row per band
    conv_fd(1, 1, 1, 4, 3, 1, 400);   // 1x1 image: only the centre tap
    conv_fd(2, 2, 1, 1, 1, 4, 500);   // single column
}

// --- ReLU -------------------------------------------------------------------------------

Test(relu, keras_fixture_and_gradient) {
    Npy x = load("relu_x"), y = load("relu_y");
    float *v = malloc(x.count * sizeof(float));
    memcpy(v, x.data, x.count * sizeof(float));
    relu_forward(v, x.count);
    cr_expect_arr_eq(v, y.data, x.count * sizeof(float), "relu differs from Keras");

    // Gradient: passes where y > 0, zero elsewhere (including y == 0).
    float y2[] = {1.5f, 0.0f, 0.0f, 2.0f, 0.0f}, x2[] = {1.5f, -3.0f, 0.0f, 2.0f, -0.1f};
    float d[] = {1, 2, 3, 4, 5}, want[] = {1, 0, 0, 4, 0};
    relu_forward(x2, 5);
    cr_expect_arr_eq(x2, y2, sizeof y2);
    relu_backward(x2, d, 5);
    cr_expect_arr_eq(d, want, sizeof want);
    free(v); npy_free(&x); npy_free(&y);
}

// Central differences on inputs at least 0.05 from the kink at 0, h = 0.01.
Test(relu, finite_differences) {
    size_t n = 200;
    float *x = urand(n, 11), *g = urand(n, 12), *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) < 0.05f) x[i] += x[i] < 0 ? -0.05f : 0.05f;
    memcpy(y, x, n * sizeof(float));
    relu_forward(y, n);
    float *d = malloc(n * sizeof(float));
    memcpy(d, g, n * sizeof(float));
    relu_backward(y, d, n);
    const float h = 0.01f;
    for (size_t i = 0; i < n; i++) {
        float a = fmaxf(x[i] + h, 0) * g[i], b = fmaxf(x[i] - h, 0) * g[i];
        cr_expect(fabsf((a - b) / (2 * h) - d[i]) < 1e-4f, "relu grad %zu", i);
    }
    free(x); free(g); free(y); free(d);
}

// --- max pool -------------------------------------------------------------------------

static void pool_fixture(const char *tag) {
    char nm[64];
#define L(s) (snprintf(nm, sizeof nm, "%s_%s", tag, s), load(nm))
    Npy x = L("x"), y = L("y"), dy = L("dy"), dx = L("dx");
#undef L
    int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3];
    cr_assert_eq(y.shape[1], H / 2);
    cr_assert_eq(y.shape[2], W / 2);
    float *out = malloc(y.count * sizeof(float)), *din = malloc(x.count * sizeof(float));
    int32_t *am = malloc(y.count * sizeof(int32_t));
    maxpool2x2_forward(F(x), N, H, W, C, out, am);
    cr_expect_arr_eq(out, y.data, y.count * sizeof(float), "%s: pool differs from Keras", tag);
    memset(din, 0xff, x.count * sizeof(float));  // must be overwritten everywhere
    maxpool2x2_backward(F(dy), N, H, W, C, am, din);
    cr_expect_arr_eq(din, dx.data, x.count * sizeof(float), "%s: pool grad differs", tag);
    maxpool2x2_forward(F(x), N, H, W, C, out, NULL);  // argmax optional
    cr_expect_arr_eq(out, y.data, y.count * sizeof(float));
    free(out); free(din); free(am);
    npy_free(&x); npy_free(&y); npy_free(&dy); npy_free(&dx);
}

Test(maxpool, keras_fixture_odd_sizes) { pool_fixture("pool_a"); }
Test(maxpool, keras_fixture_even_sizes) { pool_fixture("pool_b"); }

Test(maxpool, ties_pick_first_in_row_major_order) {
    // One 2x2 window, 2 channels, N=1. Channel 0: all equal -> (0,0).
    // Channel 1: max 5 at (0,1) and (1,0) -> (0,1).
    float in[] = {3, 1, 3, 5, 3, 5, 3, 2};
    float out[2], din[8];
    int32_t am[2];
    maxpool2x2_forward(in, 1, 2, 2, 2, out, am);
    cr_expect_eq(am[0], 0);
    cr_expect_eq(am[1], 3);
    cr_expect_eq(out[0], 3.0f);
    cr_expect_eq(out[1], 5.0f);
    float dout[] = {10, 20};
    maxpool2x2_backward(dout, 1, 2, 2, 2, am, din);
    float want[] = {10, 0, 0, 20, 0, 0, 0, 0};
    cr_expect_arr_eq(din, want, sizeof want);
}

// Values are distinct multiples of 0.1 (a shuffled grid), so h = 0.02 never
// changes which element of a window is the largest.
Test(maxpool, finite_differences) {
    int N = 2, H = 5, W = 7, C = 3;
    size_t n = (size_t)N * H * W * C, no = (size_t)N * (H / 2) * (W / 2) * C;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 0.1f * (float)((i * 37) % n) - 5.0f;
    float *g = urand(no, 21), *out = malloc(no * sizeof(float)), *din = malloc(n * sizeof(float));
    int32_t *am = malloc(no * sizeof(int32_t));
    maxpool2x2_forward(x, N, H, W, C, out, am);
    maxpool2x2_backward(g, N, H, W, C, am, din);
    const float h = 0.02f;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v + h;
        maxpool2x2_forward(x, N, H, W, C, out, NULL);
        double lp = dot(out, g, no);
        x[i] = v - h;
        maxpool2x2_forward(x, N, H, W, C, out, NULL);
        double lm = dot(out, g, no);
        x[i] = v;
        worst = fmax(worst, fabs((lp - lm) / (2 * h) - din[i]));
    }
    // |x| <= 5: rounding of x +- h is ~5e-7, over 2h = 0.04 gives ~1e-5.
    cr_expect(worst < 1e-4, "maxpool grad off by %.3g", worst);
    free(x); free(g); free(out); free(din); free(am);
}

// --- dense ------------------------------------------------------------------------------

Test(dense, keras_fixture) {
    Npy x = load("dense_x"), W = load("dense_W"), b = load("dense_b"), y = load("dense_y"),
        dy = load("dense_dy"), dx = load("dense_dx"), dW = load("dense_dW"), db = load("dense_db");
    int N = x.shape[0], D = x.shape[1], U = W.shape[1];
    float *out = malloc(y.count * sizeof(float)), *din = malloc(x.count * sizeof(float));
    float *gW = calloc(W.count, sizeof(float)), *gb = calloc(U, sizeof(float));
    dense_forward(F(x), N, D, F(W), F(b), U, out);
    EXPECT_CLOSE(out, F(y), y.count, 1e-5, "dense forward");
    dense_backward(F(x), N, D, F(W), U, F(dy), din, gW, gb);
    EXPECT_CLOSE(din, F(dx), x.count, 1e-5, "dense din");
    EXPECT_CLOSE(gW, F(dW), W.count, 1e-5, "dense dW");
    EXPECT_CLOSE(gb, F(db), (size_t)U, 1e-5, "dense db");
    dense_backward(F(x), N, D, F(W), U, F(dy), NULL, gW, gb);  // accumulates
    for (size_t i = 0; i < W.count; i++) gW[i] *= 0.5f;
    for (int i = 0; i < U; i++) gb[i] *= 0.5f;
    EXPECT_CLOSE(gW, F(dW), W.count, 1e-5, "dense dW accumulated");
    EXPECT_CLOSE(gb, F(db), (size_t)U, 1e-5, "dense db accumulated");
    free(out); free(din); free(gW); free(gb);
    Npy *all[] = {&x, &W, &b, &y, &dy, &dx, &dW, &db};
    for (int i = 0; i < 8; i++) npy_free(all[i]);
}

// Linear in x, W and b: exact central differences with h = 0.5.
Test(dense, finite_differences) {
    int N = 3, D = 11, U = 5;
    float *x = urand((size_t)N * D, 31), *W = urand((size_t)D * U, 32), *b = urand(U, 33);
    float *g = urand((size_t)N * U, 34), *out = malloc((size_t)N * U * sizeof(float));
    float *dx = malloc((size_t)N * D * sizeof(float));
    float *dW = calloc((size_t)D * U, sizeof(float)), *db = calloc(U, sizeof(float));
    dense_backward(x, N, D, W, U, g, dx, dW, db);
    const float h = 0.5f;
    struct { float *p, *grad; size_t n; const char *name; } params[] = {
        {x, dx, (size_t)N * D, "x"}, {W, dW, (size_t)D * U, "W"}, {b, db, (size_t)U, "b"}};
    for (int p = 0; p < 3; p++) {
        double worst = 0;
        for (size_t i = 0; i < params[p].n; i++) {
            float v = params[p].p[i];
            params[p].p[i] = v + h;
            dense_forward(x, N, D, W, b, U, out);
            double lp = dot(out, g, (size_t)N * U);
            params[p].p[i] = v - h;
            dense_forward(x, N, D, W, b, U, out);
            double lm = dot(out, g, (size_t)N * U);
            params[p].p[i] = v;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - params[p].grad[i]));
        }
        cr_expect(worst < 1e-5, "dense d/d%s off by %.3g", params[p].name, worst);
    }
    free(x); free(W); free(b); free(g); free(out); free(dx); free(dW); free(db);
}

// --- dropout --------------------------------------------------------------------------

Test(dropout, rate_zero_is_identity) {
    size_t n = 1000;
    float *x = urand(n, 41), *orig = malloc(n * sizeof(float));
    memcpy(orig, x, n * sizeof(float));
    uint8_t *mask = calloc(n, 1);
    dropout_forward(x, n, 0.0f, 7, 0, mask);
    cr_expect_arr_eq(x, orig, n * sizeof(float));
    for (size_t i = 0; i < n; i++) cr_expect_eq(mask[i], 1);
    dropout_backward(x, n, 0.0f, mask);
    cr_expect_arr_eq(x, orig, n * sizeof(float));
    free(x); free(orig); free(mask);
}

static void check_keep_fraction(float rate) {
    size_t n = 100000;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 1.0f + (float)(i % 13);
    uint8_t *mask = malloc(n);
    dropout_forward(x, n, rate, 1234, 5, mask);
    size_t kept = 0;
    float keep = 1.0f - rate;
    for (size_t i = 0; i < n; i++) {
        float v = 1.0f + (float)(i % 13);
        if (mask[i]) {
            kept++;
            cr_expect(fabsf(x[i] - v / keep) <= 1e-6f * x[i], "kept value not scaled by 1/(1-rate)");
        } else {
            cr_expect_eq(x[i], 0.0f);
        }
    }
    // Binomial: sd of the kept fraction is sqrt(p(1-p)/n) <= 0.0016; 5 sd.
    double frac = (double)kept / n, sd = sqrt(keep * (1.0 - keep) / n);
    cr_expect(fabs(frac - keep) < 5 * sd, "rate %.2f: kept %.4f, expected %.4f", rate, frac, keep);
    free(x); free(mask);
}

Test(dropout, keep_fraction_and_scaling) {
    check_keep_fraction(0.5f);
    check_keep_fraction(0.2f);
    check_keep_fraction(0.9f);
}

Test(dropout, mask_depends_on_seed_and_stream_only) {
    size_t n = 10000;
    float *a = urand(n, 51), *b = urand(n, 51), *c = urand(n, 51), *d = urand(n, 51);
    uint8_t *ma = malloc(n), *mb = malloc(n), *mc = malloc(n), *md = malloc(n);
    dropout_forward(a, n, 0.5f, 99, 3, ma);
    dropout_forward(b, n, 0.5f, 99, 3, mb);
    dropout_forward(c, n, 0.5f, 99, 4, mc);
    dropout_forward(d, n, 0.5f, 100, 3, md);
    cr_expect_arr_eq(ma, mb, n, "same seed and stream must give the same mask");
    cr_expect_arr_eq(a, b, n * sizeof(float));
    size_t same_c = 0, same_d = 0;
    for (size_t i = 0; i < n; i++) {
        same_c += ma[i] == mc[i];
        same_d += ma[i] == md[i];
    }
    // Independent masks agree on about half the elements at rate 0.5.
    cr_expect(same_c > 0.45 * n && same_c < 0.55 * n, "streams 3 and 4 agree on %zu", same_c);
    cr_expect(same_d > 0.45 * n && same_d < 0.55 * n, "seeds 99 and 100 agree on %zu", same_d);
    free(a); free(b); free(c); free(d); free(ma); free(mb); free(mc); free(md);
}

// With the mask fixed (same seed and stream) dropout is linear: exact
// central differences.
Test(dropout, finite_differences) {
    size_t n = 300;
    float rate = 0.3f;
    float *x = urand(n, 61), *g = urand(n, 62), *y = malloc(n * sizeof(float));
    uint8_t *mask = malloc(n);
    float *dx = malloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    dropout_forward(y, n, rate, 5, 9, mask);
    memcpy(dx, g, n * sizeof(float));
    dropout_backward(dx, n, rate, mask);
    const float h = 0.5f;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        memcpy(y, x, n * sizeof(float));
        y[i] = v + h;
        dropout_forward(y, n, rate, 5, 9, NULL);
        double lp = dot(y, g, n);
        memcpy(y, x, n * sizeof(float));
        y[i] = v - h;
        dropout_forward(y, n, rate, 5, 9, NULL);
        double lm = dot(y, g, n);
        worst = fmax(worst, fabs((lp - lm) / (2 * h) - dx[i]));
    }
    cr_expect(worst < 1e-5, "dropout grad off by %.3g", worst);
    free(x); free(g); free(y); free(mask); free(dx);
}

// --- activations and losses ----------------------------------------------------------

Test(activations, keras_fixture) {
    Npy z = load("bce_logits"), p = load("bce_probs"), zc = load("cce_logits"),
        pc = load("cce_probs");
    float *out = malloc(zc.count * sizeof(float));
    sigmoid_forward(F(z), out, z.count);
    EXPECT_CLOSE(out, F(p), z.count, 1e-6, "sigmoid");
    softmax_forward(F(zc), out, zc.shape[0], zc.shape[1]);
    EXPECT_CLOSE(out, F(pc), zc.count, 1e-6, "softmax");
    free(out);
    npy_free(&z); npy_free(&p); npy_free(&zc); npy_free(&pc);
}

// Losses are single numbers of size ~1-20 accumulated in double: 1e-6
// relative (a few float32 ulps).
#define EXPECT_LOSS(got, want, what)                                              \
    cr_expect(fabsf((got) - (want)) <= 1e-6f * fmaxf(1.0f, fabsf(want)),          \
              "%s: %.8g vs Keras %.8g", (what), (double)(got), (double)(want))

Test(loss, sigmoid_bce_keras_fixture) {
    Npy z = load("bce_logits"), t = load("bce_targets"), w = load("bce_weights"),
        lw = load("bce_loss_w"), l = load("bce_loss"), gw = load("bce_grad_w"),
        g = load("bce_grad"), p = load("bce_probs");
    int N = (int)z.count;
    float d[64], probs[64];
    float loss = loss_sigmoid_bce(F(z), F(t), F(w), N, d, probs);
    EXPECT_LOSS(loss, F(lw)[0], "weighted BCE");
    EXPECT_CLOSE(d, F(gw), (size_t)N, 1e-6, "weighted BCE grad");
    EXPECT_CLOSE(probs, F(p), (size_t)N, 1e-6, "BCE probs");
    loss = loss_sigmoid_bce(F(z), F(t), NULL, N, d, NULL);
    EXPECT_LOSS(loss, F(l)[0], "BCE");
    EXPECT_CLOSE(d, F(g), (size_t)N, 1e-6, "BCE grad");
    cr_expect_float_eq(loss_sigmoid_bce(F(z), F(t), F(w), N, NULL, NULL), F(lw)[0], 1e-5);
    Npy *all[] = {&z, &t, &w, &lw, &l, &gw, &g, &p};
    for (int i = 0; i < 8; i++) npy_free(all[i]);
}

Test(loss, softmax_cce_keras_fixture) {
    Npy z = load("cce_logits"), y = load("cce_labels"), w = load("cce_weights"),
        lw = load("cce_loss_w"), l = load("cce_loss"), gw = load("cce_grad_w"),
        g = load("cce_grad"), p = load("cce_probs");
    int N = z.shape[0], K = z.shape[1];
    float d[64], probs[64];
    float loss = loss_softmax_cce(F(z), (int32_t *)y.data, F(w), N, K, d, probs);
    EXPECT_LOSS(loss, F(lw)[0], "weighted CCE");
    EXPECT_CLOSE(d, F(gw), z.count, 1e-6, "weighted CCE grad");
    EXPECT_CLOSE(probs, F(p), z.count, 1e-6, "CCE probs");
    loss = loss_softmax_cce(F(z), (int32_t *)y.data, NULL, N, K, d, NULL);
    EXPECT_LOSS(loss, F(l)[0], "CCE");
    EXPECT_CLOSE(d, F(g), z.count, 1e-6, "CCE grad");
    Npy *all[] = {&z, &y, &w, &lw, &l, &gw, &g, &p};
    for (int i = 0; i < 8; i++) npy_free(all[i]);
}

// Away from saturation Keras's from-probabilities losses (the seeds' sigmoid
// or softmax layer + 'binary_crossentropy') equal ours from logits; only the
// 1e-7 clipping and the float32 log of a probability separate them, ~1e-7
// relative here.
Test(loss, equals_keras_from_probabilities_when_not_saturated) {
    Npy z = load("bce_ns_logits"), t = load("bce_ns_targets"), w = load("bce_ns_weights"),
        ref = load("bce_ns_loss_from_probs");
    float loss = loss_sigmoid_bce(F(z), F(t), F(w), (int)z.count, NULL, NULL);
    cr_expect(fabsf(loss - F(ref)[0]) < 2e-6f * F(ref)[0], "BCE %.8g vs from-probs %.8g", loss,
              F(ref)[0]);
    npy_free(&z); npy_free(&t); npy_free(&w); npy_free(&ref);

    Npy zc = load("cce_logits"), y = load("cce_labels"), wc = load("cce_weights"),
        refc = load("cce_ns_loss_from_probs");
    int K = zc.shape[1];
    loss = loss_softmax_cce(F(zc), (int32_t *)y.data, F(wc), 5, K, NULL, NULL);  // rows 0..4
    cr_expect(fabsf(loss - F(refc)[0]) < 2e-6f * F(refc)[0], "CCE %.8g vs from-probs %.8g",
              loss, F(refc)[0]);
    npy_free(&zc); npy_free(&y); npy_free(&wc); npy_free(&refc);
}

// The losses are smooth: central differences with h = 1e-2 have truncation
// error h^2/6 * |l'''| <= 2e-5 * w/N, and float32 rounding of the returned
// loss (~1e-7 * |L|) over 2h adds ~1e-5 * |L|. Tolerance 1e-4 absolute.
Test(loss, finite_differences_with_weights) {
    int N = 7, K = 5;
    float z[7], t[7] = {1, 0, 1, 1, 0, 0.3f, 0}, w[7] = {1, 2, 0.5f, 0, 1.5f, 1, 3};
    for (int i = 0; i < N; i++) z[i] = 4.0f * rng_uniform(71, i) - 2.0f;
    z[6] = 9.0f;  // strongly wrong: gradient near w/N
    float d[7];
    loss_sigmoid_bce(z, t, w, N, d, NULL);
    const float h = 1e-2f;
    for (int i = 0; i < N; i++) {
        float v = z[i];
        z[i] = v + h;
        double lp = loss_sigmoid_bce(z, t, w, N, NULL, NULL);
        z[i] = v - h;
        double lm = loss_sigmoid_bce(z, t, w, N, NULL, NULL);
        z[i] = v;
        double fd = (lp - lm) / (2 * h);
        cr_expect(fabs(fd - d[i]) < 1e-4, "BCE d/dz[%d]: %.6g vs %.6g", i, fd, d[i]);
    }

    float zc[35], dc[35];
    int32_t y[7] = {0, 4, 2, 2, 1, 3, 0};
    for (int i = 0; i < N * K; i++) zc[i] = 6.0f * rng_uniform(72, i) - 3.0f;
    loss_softmax_cce(zc, y, w, N, K, dc, NULL);
    for (int i = 0; i < N * K; i++) {
        float v = zc[i];
        zc[i] = v + h;
        double lp = loss_softmax_cce(zc, y, w, N, K, NULL, NULL);
        zc[i] = v - h;
        double lm = loss_softmax_cce(zc, y, w, N, K, NULL, NULL);
        zc[i] = v;
        double fd = (lp - lm) / (2 * h);
        cr_expect(fabs(fd - dc[i]) < 1e-4, "CCE d/dz[%d]: %.6g vs %.6g", i, fd, dc[i]);
    }
    // A zero-weight sample contributes no gradient at all.
    for (int k = 0; k < K; k++) cr_expect_eq(dc[3 * K + k], 0.0f);
}

Test(loss, extreme_logits_stay_finite) {
    float z[4] = {200.0f, -200.0f, 88.0f, -104.0f}, t[4] = {0, 1, 1, 0}, d[4];
    float l = loss_sigmoid_bce(z, t, NULL, 4, d, NULL);
    cr_expect_float_eq(l, (200.0f + 200.0f) / 4, 1e-3);
    for (int i = 0; i < 4; i++) cr_expect(isfinite(d[i]));
    float zc[3] = {1000.0f, -1000.0f, 0.0f}, dc[3];
    int32_t y = 1;
    cr_expect_float_eq(loss_softmax_cce(zc, &y, NULL, 1, 3, dc, NULL), 2000.0f, 1e-2);
    cr_expect_float_eq(dc[0], 1.0f, 1e-6);
    cr_expect_float_eq(dc[1], -1.0f, 1e-6);
}

Test(loss, bad_label_gives_nan) {
    float zc[3] = {1, 2, 3}, dc[3];
    int32_t y = 3;
    cr_expect(isnan(loss_softmax_cce(zc, &y, NULL, 1, 3, dc, NULL)));
}

// --- glorot_uniform ---------------------------------------------------------------------

Test(init, glorot_uniform_distribution) {
    size_t n = 9 * 64 * 128;  // block2_conv1's kernel: 73,728 draws
    int fan_in = 9 * 64, fan_out = 9 * 128;
    double l = sqrt(6.0 / (fan_in + fan_out));
    float *w = malloc(n * sizeof(float));
    glorot_uniform(w, n, fan_in, fan_out, 42);
    double sum = 0, sq = 0, lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(fabs(w[i]) <= l * (1 + 1e-6), "w[%zu] = %g outside +-%g", i, w[i], l);
        sum += w[i];
        sq += (double)w[i] * w[i];
        lo = fmin(lo, w[i]);
        hi = fmax(hi, w[i]);
    }
    // U(-l, l): mean 0 with sd l/sqrt(3n); E[w^2] = l^2/3 with
    // sd sqrt(4/45) l^2 / sqrt(n). Five standard deviations each.
    double mean = sum / n, ms = sq / n;
    cr_expect(fabs(mean) < 5 * l / sqrt(3.0 * n), "mean %g", mean);
    cr_expect(fabs(ms - l * l / 3) < 5 * sqrt(4.0 / 45) * l * l / sqrt((double)n),
              "E[w^2] %g, expected %g", ms, l * l / 3);
    cr_expect(lo < -0.999 * l && hi > 0.999 * l, "range [%g, %g] does not fill +-%g", lo, hi, l);

    float *w2 = malloc(n * sizeof(float)), *w3 = malloc(n * sizeof(float));
    glorot_uniform(w2, n, fan_in, fan_out, 42);
    glorot_uniform(w3, n, fan_in, fan_out, 43);
    cr_expect_arr_eq(w, w2, n * sizeof(float), "same seed, same weights");
    cr_expect_arr_neq(w, w3, n * sizeof(float), "another seed, other weights");
    free(w); free(w2); free(w3);
}
