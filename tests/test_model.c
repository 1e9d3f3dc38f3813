// The model: layer shapes and parameter counts against the figures the seeds
// print, the full VGG16 forward pass and head against Keras (fixtures from
// scripts/fixtures_vgg.py), and a finite-difference check of the head.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blas_setup.h"
#include "error.h"
#include "forward.h"
#include "model.h"
#include "optim.h"
#include "parallel.h"
#include "simd.h"
#include "testutil.h"

static Model build(int size, const char *unfreeze, Arch arch, const char *cut) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = arch;
    cfg.input_h = cfg.input_w = size;
    cfg.unfreeze = unfreeze;
    if (cut) cfg.cut = cut;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "model_build: %s", err_msg());
    return m;
}

Test(model, seeds_parameter_counts) {
    // The figures printed in the seeds (REFERENCE.md §1).
    Model m = build(150, NULL, ARCH_VGG16, NULL);
    ParamCounts p = model_param_counts(&m);
    cr_expect_eq(p.total, 16812353);
    cr_expect_eq(p.trainable, 2097665);
    cr_expect_eq(p.non_trainable, 14714688);
    cr_expect_eq(model_feature_size(&m), 4 * 4 * 512);
    model_free(&m);

    m = build(150, "block5_conv1", ARCH_VGG16, NULL);
    p = model_param_counts(&m);
    cr_expect_eq(p.total, 16812353);
    cr_expect_eq(p.trainable, 9177089);
    cr_expect_eq(p.non_trainable, 7635264);
    model_free(&m);
}

Test(model, vgg16_shapes_and_vgg19_count) {
    Model m = build(150, NULL, ARCH_VGG16, NULL);
    // REFERENCE.md §1 table at 150x150.
    const char *names[] = {"block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool"};
    const int sizes[] = {75, 37, 18, 9, 4};
    for (int i = 0; i < 5; i++) {
        int at = model_find_layer(&m, names[i]);
        cr_assert_geq(at, 0);
        cr_expect_eq(m.layers[at].out_h, sizes[i], "%s", names[i]);
    }
    long base = 0, block5 = 0;
    for (int i = 0; i < m.n_base; i++) {
        base += m.layers[i].n_kernel + m.layers[i].n_bias;
        if (!strncmp(m.layers[i].name, "block5", 6)) block5 += m.layers[i].n_kernel + m.layers[i].n_bias;
    }
    cr_expect_eq(base, 14714688);
    cr_expect_eq(block5, 7079424);
    model_free(&m);

    m = build(224, NULL, ARCH_VGG19, NULL);
    base = 0;
    for (int i = 0; i < m.n_base; i++) base += m.layers[i].n_kernel + m.layers[i].n_bias;
    cr_expect_eq(base, 20024384);
    cr_expect_eq(model_feature_size(&m), 7 * 7 * 512);
    model_free(&m);

    m = build(150, NULL, ARCH_VGG16, "block4_pool");
    cr_expect_eq(model_feature_size(&m), 9 * 9 * 512);
    cr_expect_str_eq(m.layers[m.n_base - 1].name, "block4_pool");
    model_free(&m);
}

Test(model, config_errors_name_the_value) {
    ModelConfig cfg;
    Model m;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 31;
    cr_expect_eq(model_build(&m, &cfg), -1);
    cr_expect(strstr(err_msg(), "31x31") && strstr(err_msg(), "32x32"), "%s", err_msg());

    model_config_defaults(&cfg);
    cfg.cut = "block5_conv3";
    cr_expect_eq(model_build(&m, &cfg), -1);
    cr_expect(strstr(err_msg(), "block5_conv3") && strstr(err_msg(), "not a pooling layer") &&
                  strstr(err_msg(), "block4_pool"),
              "%s", err_msg());

    model_config_defaults(&cfg);
    cfg.unfreeze = "block6_conv1";
    cr_expect_eq(model_build(&m, &cfg), -1);
    cr_expect(strstr(err_msg(), "block6_conv1") && strstr(err_msg(), "block5_conv1"), "%s", err_msg());

    model_config_defaults(&cfg);
    cfg.cut = "block4_pool";
    cfg.unfreeze = "block5_conv1";  // above the cut: not part of this base
    cr_expect_eq(model_build(&m, &cfg), -1);

    model_config_defaults(&cfg);
    cfg.n_classes = 3;  // binary needs 2
    cr_expect_eq(model_build(&m, &cfg), -1);
    cr_expect(strstr(err_msg(), "3"), "%s", err_msg());
}

Test(model, summary_table) {
    Model m = build(150, "block5_conv1", ARCH_VGG16, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    model_print_summary(&m, SUMMARY_FLAT, f);
    fclose(f);
    cr_expect(strstr(text, "block5_conv1 (Conv2D)") != NULL, "%s", text);
    cr_expect(strstr(text, "(None, 9, 9, 512)         2359808   Y") != NULL, "%s", text);
    cr_expect(strstr(text, "(None, 18, 18, 512)       2359808   N") != NULL, "%s", text);
    cr_expect(strstr(text, "flatten (Flatten)           (None, 8192)") != NULL, "%s", text);
    cr_expect(strstr(text, "Total params: 16,812,353\n") != NULL, "%s", text);
    cr_expect(strstr(text, "Trainable params: 9,177,089\n") != NULL, "%s", text);
    cr_expect(strstr(text, "Non-trainable params: 7,635,264\n") != NULL, "%s", text);
    free(text);
    model_free(&m);
}

// The weight formula of scripts/fixtures_vgg.py, evaluated the same way;
// scramble for the conv kernels (why: the script's docstring).
static void formula_kernel(float *w, long n, int L, int fan_in, int scramble) {
    double limit = sqrt(6.0 / fan_in);
    for (long i = 0; i < n; i++) {
        long h = (i * 7919 + (long)L * 104729) % 2003;
        if (scramble) h = (h * h * 31 + i) % 2003;
        double v = (double)h / 2003.0 - 0.5;
        w[i] = (float)(v * 2.0 * limit);
    }
}
static void formula_bias(float *b, long n, int L) {
    for (long j = 0; j < n; j++) b[j] = (float)(0.001 * (double)((j * 31 + L) % 7 - 3));
}

static void check_against_keras(int H, int W, int classes) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = H, cfg.input_w = W;
    cfg.hidden = 8;
    cfg.n_classes = classes;
    cfg.binary = classes == 2;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0);
    int L = 0;
    for (int i = 0; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        L++;
        formula_kernel(l->kernel, l->n_kernel, L, l->kind == LAYER_CONV ? 9 * l->in_c : l->in_c, l->kind == LAYER_CONV);
        formula_bias(l->bias, l->n_bias, L);
    }
    const int N = 2;
    float *x = malloc(sizeof(float) * N * H * W * 3);
    for (int n = 0; n < N; n++)
        for (long i = 0; i < (long)H * W * 3; i++) x[(long)n * H * W * 3 + i] = (float)((i * 37 + n * 11) % 256 - 128);

    Npy want = fixture_npy("vgg/vgg_%dx%d_features.npy", H, W);
    long D = model_feature_size(&m);
    cr_assert_eq((long)want.count, N * D);

    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    float *feat = malloc(sizeof(float) * N * D);
    base_forward_cpu(&m, x, N, feat, &ws);
    // Float32 sums over up to 4608 terms in another order than Keras's, and
    // Winograd tiles on the late layers (forward.h): compare relative to the
    // largest feature. Measured: direct 8e-6 to 1.1e-5, the default tiles
    // 1e-5 to 1.5e-5, F(4x4) everywhere 1.9e-5.
    float scale = 0;
    for (long i = 0; i < N * D; i++) scale = fmaxf(scale, fabsf(((float *)want.data)[i]));
    float err = max_abs_diff(feat, want.data, N * D);
    cr_log_info("features %dx%d vs Keras: max |diff| %g = %.2g of the largest feature", H, W, err, err / scale);
    cr_expect_lt(err, 5e-5f * scale + 1e-7f, "features %dx%d: max |diff| %g (largest feature %g)", H, W, err, scale);

    // The head on Keras's own features must give Keras's probabilities
    // closely; on ours, the features' differences (scaled up by the head's
    // weights) come on top.
    Npy probs = fixture_npy("vgg/vgg_%dx%d_probs.npy", H, W);
    HeadBuffers hb;
    cr_assert_eq(head_buffers_alloc(&hb, &m, N), 0);
    cr_assert_eq((long)probs.count, (long)N * m.n_outputs);
    head_forward(&m, want.data, N, 0, 0, 0, &hb);
    float perr = max_abs_diff(hb.probs, probs.data, probs.count);
    cr_expect_lt(perr, 1e-6f, "probs %dx%d from Keras's features: max |diff| %g", H, W, perr);
    head_forward(&m, feat, N, 0, 0, 0, &hb);
    perr = max_abs_diff(hb.probs, probs.data, probs.count);
    cr_log_info("probs %dx%d from our features: max |diff| %g", H, W, perr);
    cr_expect_lt(perr, 1e-4f, "probs %dx%d from our features: max |diff| %g", H, W, perr);

    head_buffers_free(&hb);
    base_workspace_free(&ws);
    npy_free(&want);
    npy_free(&probs);
    free(feat);
    free(x);
    model_free(&m);
}

// VGG16's base at H x W with the fixture's formula weights (conv layers).
static void formula_base(Model *m, int H, int W) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = H, cfg.input_w = W;
    cr_assert_eq(model_build(m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(m, 0, m->n_base), 0);
    int L = 0;
    for (int i = 1; i < m->n_base; i++) {
        Layer *l = &m->layers[i];
        if (!l->n_kernel) continue;
        formula_kernel(l->kernel, l->n_kernel, ++L, 9 * l->in_c, 1);
        formula_bias(l->bias, l->n_bias, L);
    }
}

// The whole base on 1, 2, 3 and 5 threads for 4 images: side by side (2, 3
// threads: as many images as threads) or one at a time over the pool (1, 5):
// the same bits (forward.h), and the extra buffers reported in ws.floats.
Test(model, base_features_same_bits_side_by_side_and_one_at_a_time) {
    Model m;
    formula_base(&m, 40, 56);
    const ModelConfig cfg = m.cfg;
    const int N = 4;
    const long px = (long)cfg.input_h * cfg.input_w * 3, D = model_feature_size(&m);
    float *x = malloc(sizeof(float) * N * px), *ref = malloc(sizeof(float) * N * D), *got = malloc(sizeof(float) * N * D);
    for (long i = 0; i < N * px; i++) x[i] = (float)((i * 37) % 256 - 128);
    const int threads[] = {1, 2, 3, 5};
    for (int t = 0; t < 4; t++) {
        parallel_set_threads(threads[t]);
        blas_set_threads(threads[t]);
        BaseWorkspace ws;
        cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
        size_t floats = ws.floats;
        base_forward_cpu(&m, x, N, t ? got : ref, &ws);
        if (t) cr_expect_arr_eq(got, ref, sizeof(float) * N * D, "%d threads differ from 1", threads[t]);
        if (threads[t] > 1 && threads[t] <= N)
            cr_expect_eq(ws.n_extra, threads[t] - 1, "%d threads: %d extra buffer sets", threads[t], ws.n_extra);
        else
            cr_expect_eq(ws.n_extra, 0, "%d threads, %d images: no extra buffers", threads[t], N);
        cr_expect_eq(ws.floats, floats + ws.n_extra * (2 * ws.act_floats + ws.image_scratch_floats));
        // One image alone, on any count: the same bits as in the batch.
        base_forward_cpu(&m, x + 2 * px, 1, got, &ws);
        cr_expect_arr_eq(got, ref + 2 * D, sizeof(float) * D, "image 2 alone on %d threads", threads[t]);
        base_workspace_free(&ws);
    }
    parallel_set_threads(1);
    blas_set_threads(1);
    free(x), free(ref), free(got);
    model_free(&m);
}

// The frozen base uses no BLAS (dense_product for the Winograd GEMMs and the
// direct block1_conv1, forward.h): its features are the same bits at every
// SIMD level, as on every OPENBLAS_CORETYPE.
Test(model, base_features_same_bits_at_every_simd_level) {
    Model m;
    formula_base(&m, 36, 44);
    const ModelConfig cfg = m.cfg;
    const long px = (long)cfg.input_h * cfg.input_w * 3, D = model_feature_size(&m);
    float *x = malloc(sizeof(float) * px), *ref = malloc(sizeof(float) * D), *got = malloc(sizeof(float) * D);
    for (long i = 0; i < px; i++) x[i] = (float)((i * 53) % 256 - 128);
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    simd_set_level(SIMD_PORTABLE);
    base_forward_cpu(&m, x, 1, ref, &ws);
    for (int level = SIMD_AVX2; level <= simd_cpu_level(); level++) {
        simd_set_level(level);
        base_forward_cpu(&m, x, 1, got, &ws);
        cr_expect_arr_eq(got, ref, sizeof(float) * D, "%s differs from portable C", simd_level_name(level));
    }
    simd_set_level(simd_cpu_level());
    base_workspace_free(&ws);
    free(x), free(ref), free(got);
    model_free(&m);
}

Test(model, vgg16_forward_matches_keras_32x32_binary) { check_against_keras(32, 32, 2); }
// Non-square input and a 2x1 final map pin down the H,W,C flatten order.
Test(model, vgg16_forward_matches_keras_64x48_softmax) { check_against_keras(64, 48, 3); }

// The finite-difference error of a gradient as a fraction of what float32
// allows: 2% of the gradients' size (central differences, h = 2e-3), plus
// the resolution of the difference of two float32 losses (a few ulps of the
// loss over 2h), which dominates for gradients near zero.
static double grad_error(double num, double ana, float loss, float h) {
    double ulp = nextafterf(loss, INFINITY) - loss;
    return fabs(num - ana) / (2e-2 * (fabs(num) + fabs(ana)) + 4 * ulp / (2 * h));
}

// Finite differences of the head's mean loss with respect to every dense
// parameter and the input features, with dropout on (fixed mask).
static void head_gradcheck(int binary, int classes, int hidden) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 32;  // features 1x1x512
    cfg.hidden = hidden;
    cfg.dropout = 0.3f;
    cfg.n_classes = classes;
    cfg.binary = binary;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, m.n_base, m.n_layers), 0);
    model_init_random(&m, m.n_base, m.n_layers, 7);
    for (int i = m.n_base; i < m.n_layers; i++)
        if (m.layers[i].bias)
            for (long j = 0; j < m.layers[i].n_bias; j++) m.layers[i].bias[j] = 0.05f * (float)((j % 5) - 2);
    const int N = 5;
    const int D = (int)model_feature_size(&m);
    float *feat = malloc(sizeof(float) * N * D), *dfeat = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N * D; i++) feat[i] = (float)((i * 29 % 97) / 97.0 - 0.3);
    int32_t labels[5] = {0, 1, 1, 0, 1};
    if (!binary)
        for (int i = 0; i < N; i++) labels[i] = i % classes;
    float weights[5] = {1.0f, 2.0f, 0.5f, 1.5f, 1.0f};
    HeadBuffers hb;
    Grads g;
    cr_assert_eq(head_buffers_alloc(&hb, &m, N), 0);
    cr_assert_eq(grads_alloc(&g, &m, m.n_base, m.n_layers), 0);
    grads_zero(&g, &m);
    head_forward(&m, feat, N, 1, 42, 3, &hb);
    head_backward(&m, feat, labels, weights, N, &hb, &g, dfeat);

    // loss(theta) with the same dropout mask (same seed and stream).
#define LOSS() (head_forward(&m, feat, N, 1, 42, 3, &hb), head_backward(&m, feat, labels, weights, N, &hb, NULL, NULL))
    int checked = 0;
    double worst = 0;
    for (int i = m.n_base; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        for (int which = 0; which < 2; which++) {
            float *p = which ? l->bias : l->kernel;
            float *dp = which ? g.dbias[i] : g.dkernel[i];
            long n = which ? l->n_bias : l->n_kernel;
            for (long k = 0; k < n; k += 1 + n / 23) {
                float keep = p[k];
                const float h = 2e-3f;
                p[k] = keep + h;
                double lp = LOSS();
                p[k] = keep - h;
                double lm = LOSS();
                p[k] = keep;
                double num = (lp - lm) / (2 * h);
                double e = grad_error(num, dp[k], lp, h);
                if (e > worst) worst = e;
                checked++;
            }
        }
    }
    for (long k = 0; k < (long)N * D; k += 97) {
        float keep = feat[k];
        const float h = 2e-3f;
        feat[k] = keep + h;
        double lp = LOSS();
        feat[k] = keep - h;
        double lm = LOSS();
        feat[k] = keep;
        double num = (lp - lm) / (2 * h);
        double e = grad_error(num, dfeat[k], lp, h);
        if (e > worst) worst = e;
        checked++;
    }
#undef LOSS
    // A wrong gradient, or a ReLU kink crossed, shows as an error many times
    // the allowance.
    cr_expect_lt(worst, 1.0, "worst gradient error %g of the allowance over %d checks", worst, checked);
    cr_expect_gt(checked, 40);
    grads_free(&g);
    head_buffers_free(&hb);
    free(feat);
    free(dfeat);
    model_free(&m);
}

Test(head, gradients_binary) { head_gradcheck(1, 2, 16); }
Test(head, gradients_softmax) { head_gradcheck(0, 4, 16); }
Test(head, gradients_no_hidden_layer) { head_gradcheck(0, 3, 0); }

// Three training steps of the head against Keras's train_on_batch on the
// same weights and batches (class weights on, dropout 0 so nothing random):
// the loss of each step and the weights after the last. Covers the whole
// step: forward, weighted loss, backward, optimizer, in Keras's order.
static void train_steps_like_keras(const char *opt_name) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 32;  // features 1x1x512
    cfg.hidden = 8;
    cfg.dropout = 0;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, m.n_base, m.n_layers), 0);
    int L = 0;
    for (int i = m.n_base; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        L++;
        formula_kernel(l->kernel, l->n_kernel, L, l->in_c, 0);
        formula_bias(l->bias, l->n_bias, L);
        for (long j = 0; j < l->n_bias; j++) l->bias[j] *= 50.0f;
    }
    Npy feats = fixture_npy("vgg/headtrain_features.npy");
    Npy labels = fixture_npy("vgg/headtrain_labels.npy");
    Npy want_loss = fixture_npy("vgg/headtrain_%s_losses.npy", opt_name);
    Npy want_w = fixture_npy("vgg/headtrain_%s_weights.npy", opt_name);

    Optimizer o;
    if (!strcmp(opt_name, "sgd")) {
        optim_defaults(&o, OPTIM_SGD);
        o.lr = 0.05f, o.momentum = 0.9f, o.nesterov = 1;
    } else {
        optim_defaults(&o, OPTIM_ADAM);
        o.lr = 0.01f;
    }
    HeadBuffers hb;
    Grads g;
    cr_assert_eq(head_buffers_alloc(&hb, &m, 4), 0);
    cr_assert_eq(grads_alloc(&g, &m, m.n_base, m.n_layers), 0);
    float *slots[16][2] = {{0}};
    for (int step = 0; step < 3; step++) {
        const float *x = (const float *)feats.data + (size_t)step * 4 * 512;
        const int32_t *y = (const int32_t *)labels.data + step * 4;
        float w[4];
        for (int i = 0; i < 4; i++) w[i] = y[i] ? 1.5f : 0.75f;
        grads_zero(&g, &m);
        head_forward(&m, x, 4, 1, 0, 0, &hb);
        float loss = head_backward(&m, x, y, w, 4, &hb, &g, NULL);
        float want = ((float *)want_loss.data)[step];
        cr_expect_float_eq(loss, want, 2e-6f * fabsf(want), "%s step %d: loss %.8g, Keras %.8g", opt_name, step, loss,
                           want);
        int k = 0;
        for (int i = m.n_base; i < m.n_layers; i++) {
            Layer *l = &m.layers[i];
            if (!l->n_kernel) continue;
            for (int t = 0; t < 2; t++, k++) {
                size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
                for (int s = 0; s < optim_slots(&o); s++)
                    if (!slots[k][s]) slots[k][s] = calloc(n, sizeof(float));
                optim_update(&o, t ? l->bias : l->kernel, t ? g.dbias[i] : g.dkernel[i], slots[k], n);
            }
        }
        optim_step_done(&o);
    }
    // Weights in Keras's get_weights() order: kernel, bias per Dense layer.
    const float *want = want_w.data;
    size_t at = 0;
    float worst = 0;
    for (int i = m.n_base; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        for (long j = 0; j < l->n_kernel; j++) worst = fmaxf(worst, fabsf(l->kernel[j] - want[at++]));
        for (long j = 0; j < l->n_bias; j++) worst = fmaxf(worst, fabsf(l->bias[j] - want[at++]));
    }
    cr_assert_eq(at, want_w.count);
    // Weights are O(0.1): float32 rounding of reordered sums, carried
    // through three updates.
    cr_expect_lt(worst, 1e-6f, "%s: weights differ from Keras's by %g", opt_name, worst);
    for (int k = 0; k < 16; k++) free(slots[k][0]), free(slots[k][1]);
    grads_free(&g);
    head_buffers_free(&hb);
    npy_free(&feats), npy_free(&labels), npy_free(&want_loss), npy_free(&want_w);
    model_free(&m);
}

Test(head, training_steps_match_keras_sgd_nesterov) { train_steps_like_keras("sgd"); }
Test(head, training_steps_match_keras_adam) { train_steps_like_keras("adam"); }
