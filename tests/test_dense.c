// The dense layer's kernels (common/dense.c): the AVX-512 and AVX2 code
// (each level this CPU has) against the portable reference, the fused training step against the separate passes,
// and thread-count independence, all bit for bit. Its agreement with Keras
// is in test_layers.c (dense fixtures) and test_model.c (training steps).
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dense.h"
#include "forward.h"
#include "model.h"
#include "optim.h"
#include "parallel.h"
#include "simd.h"

static float *filled(size_t n, unsigned seed, float scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = ((float)((seed >> 8) % 2001) / 1000.0f - 1.0f) * scale;
    }
    return p;
}

static float *copy(const float *a, size_t n) {
    float *p = malloc(n * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

// Shapes with every ragged edge: D over two blocks of 512 rows and not a
// multiple of the 32-row panels; U not a multiple of the 32- and 16-column
// kernel blocks nor of the 128-column chunks; N not a multiple of the
// kernels' groups of up to 12 and 6 rows. N = 700 makes panels narrower, N = 5000 too large to copy.
static const int shapes[][3] = {{7, 1100, 150}, {20, 1024, 256}, {1, 37, 5}, {33, 520, 17}, {700, 96, 40}, {5000, 9, 20}};

static void teardown(void) {
    simd_set_level(SIMD_AVX512);  // the default: the widest the CPU has
    parallel_set_threads(1);
}

Test(dense, simd_equals_reference, .fini = teardown) {
    int widest = simd_cpu_level();
    if (widest == SIMD_PORTABLE) cr_skip_test("no AVX2+FMA on this CPU: only the reference runs");
    for (int level = SIMD_AVX2; level <= widest; level++)
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int N = shapes[k][0], D = shapes[k][1], U = shapes[k][2];
        float *x = filled((size_t)N * D, 1 + k, 1.0f), *W = filled((size_t)D * U, 2 + k, 0.1f);
        float *b = filled(U, 3 + k, 0.5f), *dy = filled((size_t)N * U, 4 + k, 0.01f);
        float *out[2], *dW[2], *db[2];
        for (int simd = 0; simd < 2; simd++) {
            simd_set_level(simd ? level : SIMD_PORTABLE);
            out[simd] = malloc(sizeof(float) * N * U);
            dW[simd] = calloc((size_t)D * U, sizeof(float));
            db[simd] = calloc(U, sizeof(float));
            cr_assert_eq(dense_forward(x, N, D, W, b, U, out[simd]), 0);
            dense_backward(x, N, D, W, U, dy, NULL, dW[simd], db[simd]);
        }
        const char *name = simd_level_name(level);
        cr_expect_arr_eq(out[0], out[1], sizeof(float) * N * U, "%s: forward, %dx%dx%d", name, N, D, U);
        cr_expect_arr_eq(dW[0], dW[1], sizeof(float) * D * U, "%s: dW, %dx%dx%d", name, N, D, U);
        cr_expect_arr_eq(db[0], db[1], sizeof(float) * U, "%s: db, %dx%dx%d", name, N, D, U);
        // And both are the product: against a double-precision sum.
        double worst = 0;
        for (int n = 0; n < N; n += 3)
            for (int u = 0; u < U; u++) {
                double s = b[u], mag = fabs(b[u]);
                for (int d = 0; d < D; d++) s += (double)x[(size_t)n * D + d] * W[(size_t)d * U + u], mag += fabs((double)x[(size_t)n * D + d] * W[(size_t)d * U + u]);
                worst = fmax(worst, fabs(out[1][(size_t)n * U + u] - s) / (mag + 1e-30));
            }
        cr_expect_lt(worst, 1e-5, "forward %dx%dx%d: relative error %g", N, D, U, worst);
        for (int s = 0; s < 2; s++) free(out[s]), free(dW[s]), free(db[s]);
        free(x), free(W), free(b), free(dy);
    }
}

typedef struct {
    const char *name;
    OptimKind kind;
    float lr, momentum;
    int nesterov;
} OptCase;

static const OptCase opt_cases[] = {
    {"sgd", OPTIM_SGD, 0.05f, 0, 0},
    {"sgd nesterov", OPTIM_SGD, 0.05f, 0.9f, 1},
    {"adam", OPTIM_ADAM, 0.01f, 0, 0},
    {"rmsprop momentum", OPTIM_RMSPROP, 0.01f, 0.5f, 0},
};

// Two steps: gradient, update and the next batch's forward pass, fused and
// separately; the second step starts from the first's optimizer state.
static void fused_vs_separate(const OptCase *c, int N, int D, int U, int next_N) {
    Optimizer o;
    optim_defaults(&o, c->kind);
    o.lr = c->lr, o.momentum = c->momentum, o.nesterov = c->nesterov;
    int ns = optim_slots(&o);
    float *W0 = filled((size_t)D * U, 11, 0.1f), *b0 = filled(U, 12, 0.5f);
    float *W[2] = {copy(W0, (size_t)D * U), copy(W0, (size_t)D * U)}, *b[2] = {copy(b0, U), copy(b0, U)};
    float *ks[2][2] = {{0}}, *bs[2][2] = {{0}};
    for (int p = 0; p < 2; p++)
        for (int s = 0; s < ns; s++) ks[p][s] = calloc((size_t)D * U, 4), bs[p][s] = calloc(U, 4);
    float *out[2] = {malloc(sizeof(float) * next_N * U), malloc(sizeof(float) * next_N * U)};
    float *dW = malloc(sizeof(float) * D * U), *db = malloc(sizeof(float) * U);
    for (int step = 0; step < 2; step++) {
        float *x = filled((size_t)N * D, 20 + step, 1.0f), *dy = filled((size_t)N * U, 30 + step, 0.01f);
        float *nx = filled((size_t)next_N * D, 40 + step, 1.0f);
        // separate
        memset(dW, 0, sizeof(float) * D * U), memset(db, 0, sizeof(float) * U);
        dense_backward(x, N, D, W[0], U, dy, NULL, dW, db);
        optim_update(&o, W[0], dW, ks[0], (size_t)D * U);
        optim_update(&o, b[0], db, bs[0], (size_t)U);
        cr_assert_eq(dense_forward(nx, next_N, D, W[0], b[0], U, out[0]), 0);
        // fused
        OptimRule r = optim_rule(&o);
        cr_assert_eq(dense_update_forward(x, N, D, W[1], b[1], U, dy, &r, ks[1], bs[1], nx, next_N, out[1]), 0);
        optim_step_done(&o);
        cr_expect_arr_eq(W[0], W[1], sizeof(float) * D * U, "%s (%s) step %d: kernel", c->name, simd_level_name(simd_level()), step);
        cr_expect_arr_eq(b[0], b[1], sizeof(float) * U, "%s (%s) step %d: bias", c->name, simd_level_name(simd_level()), step);
        cr_expect_arr_eq(out[0], out[1], sizeof(float) * next_N * U, "%s (%s) step %d: next forward", c->name, simd_level_name(simd_level()), step);
        for (int s = 0; s < ns; s++) {
            cr_expect_arr_eq(ks[0][s], ks[1][s], sizeof(float) * D * U, "%s (%s) step %d: kernel slot %d", c->name, simd_level_name(simd_level()), step, s);
            cr_expect_arr_eq(bs[0][s], bs[1][s], sizeof(float) * U, "%s (%s) step %d: bias slot %d", c->name, simd_level_name(simd_level()), step, s);
        }
        free(x), free(dy), free(nx);
    }
    // The weights moved, so the comparisons above could fail.
    float moved = 0;
    for (int i = 0; i < D * U; i++) moved = fmaxf(moved, fabsf(W[1][i] - W0[i]));
    cr_expect_gt(moved, 1e-6f, "%s: the update did nothing", c->name);
    for (int p = 0; p < 2; p++) {
        free(W[p]), free(b[p]), free(out[p]);
        for (int s = 0; s < ns; s++) free(ks[p][s]), free(bs[p][s]);
    }
    free(W0), free(b0), free(dW), free(db);
}

// On every level of kernels: plain SGD is applied inside the kernels
// (ACC_SGD), the other rules on the gradient's rows afterwards. With
// simd_equals_reference, this makes each level's fused step equal the
// reference's separate passes.
Test(dense, fused_step_equals_separate_passes, .fini = teardown) {
    for (int level = simd_cpu_level(); level >= SIMD_PORTABLE; level--) {
        simd_set_level(level);
        for (size_t c = 0; c < sizeof opt_cases / sizeof *opt_cases; c++) {
            fused_vs_separate(&opt_cases[c], 7, 1100, 150, 9);
            if (level > SIMD_PORTABLE) fused_vs_separate(&opt_cases[c], 20, 1024, 37, 20);
        }
    }
}

// The update without a next batch leaves next_out alone and updates the same.
Test(dense, fused_step_without_next_batch, .fini = teardown) {
    const int N = 6, D = 700, U = 24;
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    OptimRule r = optim_rule(&o);
    float *x = filled((size_t)N * D, 1, 1.0f), *dy = filled((size_t)N * U, 2, 0.1f);
    float *W1 = filled((size_t)D * U, 3, 0.1f), *W2 = copy(W1, (size_t)D * U), *b1 = filled(U, 4, 1), *b2 = copy(b1, U);
    float out[6 * 24];
    cr_assert_eq(dense_update_forward(x, N, D, W1, b1, U, dy, &r, NULL, NULL, NULL, 0, NULL), 0);
    cr_assert_eq(dense_update_forward(x, N, D, W2, b2, U, dy, &r, NULL, NULL, x, N, out), 0);
    cr_expect_arr_eq(W1, W2, sizeof(float) * D * U);
    cr_expect_arr_eq(b1, b2, sizeof(float) * U);
    free(x), free(dy), free(W1), free(W2), free(b1), free(b2);
}

Test(dense, same_bits_on_any_thread_count, .fini = teardown) {
    const int N = 20, D = 4096, U = 256;  // 8 blocks of rows
    Optimizer o;
    optim_defaults(&o, OPTIM_ADAM);
    OptimRule r = optim_rule(&o);
    float *x = filled((size_t)N * D, 1, 1.0f), *dy = filled((size_t)N * U, 2, 0.01f), *W0 = filled((size_t)D * U, 3, 0.1f);
    float *W[3], *out[3], *m[3], *v[3];
    for (int t = 0; t < 3; t++) {
        parallel_set_threads(t + 1);
        W[t] = copy(W0, (size_t)D * U), out[t] = malloc(sizeof(float) * N * U);
        m[t] = calloc((size_t)D * U, 4), v[t] = calloc((size_t)D * U, 4);
        float *slots[2] = {m[t], v[t]};
        cr_assert_eq(dense_update_forward(x, N, D, W[t], NULL, U, dy, &r, slots, NULL, x, N, out[t]), 0);
    }
    for (int t = 1; t < 3; t++) {
        cr_expect_arr_eq(W[0], W[t], sizeof(float) * D * U, "kernel, %d threads", t + 1);
        cr_expect_arr_eq(out[0], out[t], sizeof(float) * N * U, "forward, %d threads", t + 1);
        cr_expect_arr_eq(v[0], v[t], sizeof(float) * D * U, "second moments, %d threads", t + 1);
    }
    for (int t = 0; t < 3; t++) free(W[t]), free(out[t]), free(m[t]), free(v[t]);
    free(x), free(dy), free(W0);
}

// The training step of the whole head equals its reference: head_forward,
// head_backward, optim_update of each layer, and the next batch's first
// layer, with dropout and class weights.
Test(dense, head_train_step_equals_reference, .fini = teardown) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 64;  // features 2x2x512 = 2048
    cfg.hidden = 40;
    cfg.n_classes = 3, cfg.binary = 0;
    Model m[2];
    const int N = 9;
    Optimizer o[2];
    float *slots[2][256] = {{0}};  // (layer * 2 + tensor) * 2 + slot
    HeadBuffers hb[2];
    Grads g[2];
    for (int p = 0; p < 2; p++) {
        cr_assert_eq(model_build(&m[p], &cfg), 0);
        cr_assert_lt(m[p].n_layers * 4, 256);
        int h0 = model_head_start(&m[p]);
        cr_assert_eq(model_alloc_weights(&m[p], h0, m[p].n_layers), 0);
        model_init_random(&m[p], h0, m[p].n_layers, 7);
        optim_defaults(&o[p], OPTIM_RMSPROP);
        o[p].momentum = 0.3f;
        for (int i = h0; i < m[p].n_layers; i++)
            for (int t = 0; t < 2 && m[p].layers[i].n_kernel; t++)
                for (int s = 0; s < 2; s++)
                    slots[p][(i * 2 + t) * 2 + s] =
                        model_floats_alloc((size_t)(t ? m[p].layers[i].n_bias : m[p].layers[i].n_kernel));
        cr_assert_eq(head_buffers_alloc(&hb[p], &m[p], N), 0);
        cr_assert_eq(grads_alloc(&g[p], &m[p], h0, m[p].n_layers), 0);
    }
    const int D = (int)model_feature_size(&m[0]);
    float *x[3];
    int32_t labels[3][9];
    float weights[9];
    for (int s = 0; s < 3; s++) {
        x[s] = filled((size_t)N * D, 100 + s, 1.0f);
        for (int i = 0; i < N; i++) x[s][i * D + i] = fabsf(x[s][i * D + i]) * 3, labels[s][i] = (i + s) % 3;
    }
    for (int i = 0; i < N; i++) weights[i] = 0.5f + (float)(i % 3);
    cr_assert_eq(head_forward_first(&m[1], x[0], N, &hb[1]), 0);
    for (int s = 0; s < 2; s++) {
        // reference
        cr_assert_eq(head_forward(&m[0], x[s], N, 1, 5, (uint64_t)o[0].step, &hb[0]), 0);
        grads_zero(&g[0], &m[0]);
        float loss0 = head_backward(&m[0], x[s], labels[s], weights, N, &hb[0], &g[0], NULL);
        for (int i = model_head_start(&m[0]); i < m[0].n_layers; i++) {
            Layer *l = &m[0].layers[i];
            if (!l->n_kernel) continue;
            optim_update(&o[0], l->kernel, g[0].dkernel[i], HEAD_SLOTS(slots[0], i, 0), (size_t)l->n_kernel);
            optim_update(&o[0], l->bias, g[0].dbias[i], HEAD_SLOTS(slots[0], i, 1), (size_t)l->n_bias);
        }
        optim_step_done(&o[0]);
        // the step
        float loss1;
        cr_assert_eq(head_train_step(&m[1], &o[1], slots[1], x[s], labels[s], weights, N, 5, x[s + 1], N, &hb[1],
                                     &g[1], &loss1),
                     0);
        optim_step_done(&o[1]);
        cr_expect_eq(loss0, loss1, "step %d: loss %.9g vs %.9g", s, loss0, loss1);
        cr_expect_arr_eq(hb[0].probs, hb[1].probs, sizeof(float) * N * 3, "step %d: outputs", s);
        for (int i = model_head_start(&m[0]); i < m[0].n_layers; i++) {
            const Layer *a = &m[0].layers[i], *b = &m[1].layers[i];
            if (!a->n_kernel) continue;
            cr_expect_arr_eq(a->kernel, b->kernel, sizeof(float) * a->n_kernel, "step %d: %s kernel", s, a->name);
            cr_expect_arr_eq(a->bias, b->bias, sizeof(float) * a->n_bias, "step %d: %s bias", s, a->name);
        }
        // The next batch's first layer, from the fused pass.
        cr_assert_eq(head_forward_first(&m[0], x[s + 1], N, &hb[0]), 0);
        cr_expect_arr_eq(hb[0].hidden, hb[1].hidden, sizeof(float) * N * cfg.hidden, "step %d: next hidden", s);
    }
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 256; i++) free(slots[p][i]);
        head_buffers_free(&hb[p]);
        grads_free(&g[p]);
        model_free(&m[p]);
    }
    for (int s = 0; s < 3; s++) free(x[s]);
}
