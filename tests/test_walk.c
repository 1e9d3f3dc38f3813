// The conv base as a trainable walk (common/walk.h): the frozen part against
// base_forward_cpu, finite differences through block5 and the head, frozen
// weights untouched by training, the loss going down on a learnable set, and
// fine-tuning steps against Keras's train_on_batch (fixtures from
// scripts/fixtures_finetune.py).
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "forward.h"
#include "image.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"
#include "walk.h"

static Model build(int size, const char *unfreeze, int hidden, float dropout) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    cfg.unfreeze = unfreeze;
    cfg.hidden = hidden;
    cfg.dropout = dropout;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "model_build: %s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0, "%s", err_msg());
    model_init_random(&m, 1, m.n_layers, 7);
    return m;
}

// n floats U(-a, a).
static float *urand(size_t n, float a, uint64_t seed) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = a * (2 * rng_uniform(seed, i) - 1);
    return x;
}

static long item_floats(const Model *m, int layer) {
    const Layer *l = &m->layers[layer];
    return (long)l->out_h * l->out_w * l->out_c;
}

// Optimizer slots in the HEAD_SLOTS layout for every trainable layer with
// weights in [from, n_layers).
static float **slots_alloc(const Model *m, const Optimizer *o, int from) {
    float **s = calloc((size_t)m->n_layers * 4, sizeof(float *));
    for (int i = from; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (!l->n_kernel || !l->trainable) continue;
        for (int k = 0; k < optim_slots(o); k++) {
            HEAD_SLOTS(s, i, 0)[k] = calloc((size_t)l->n_kernel, sizeof(float));
            HEAD_SLOTS(s, i, 1)[k] = calloc((size_t)l->n_bias, sizeof(float));
        }
    }
    return s;
}
static void slots_free(const Model *m, float **s) {
    for (int i = 0; i < m->n_layers * 4; i++) free(s[i]);
    free(s);
}

// --- the walk's layout and memory --------------------------------------------

Test(walk, alloc_errors_name_the_layer) {
    Model m = build(32, "block5_conv1", 8, 0);
    BaseWalk w;
    cr_expect_eq(walk_alloc(&w, &m, 0, 4), -1);
    cr_expect(strstr(err_msg(), "outside the base"), "%s", err_msg());
    cr_expect_eq(walk_alloc(&w, &m, m.n_base, 4), -1);
    int c2 = model_find_layer(&m, "block1_conv2");
    cr_expect_eq(walk_alloc(&w, &m, c2, 4), -1);
    cr_expect(strstr(err_msg(), "block1_conv2") && strstr(err_msg(), "block1_conv1"), "%s", err_msg());
    cr_expect_eq(walk_alloc(&w, &m, 1, 0), -1);
    // From a cache of block4_pool: the input is that layer's output.
    int b5 = model_find_layer(&m, "block5_conv1");
    cr_assert_eq(walk_alloc(&w, &m, b5, 4), 0, "%s", err_msg());
    cr_expect_eq(w.first_trainable, b5);
    cr_expect_eq(w.in_size, 2 * 2 * 512);
    walk_free(&w);
    model_free(&m);
}

// The figure walk.h states: block5 unfrozen at 150x150, batch 20.
Test(walk, memory_at_150_block5_batch_20) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.unfreeze = "block5_conv1";
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    BaseWalk w;
    cr_assert_eq(walk_alloc(&w, &m, 1, 20), 0, "%s", err_msg());
    double mb = (double)w.bytes / (1 << 20);
    cr_log_info("walk at 150x150, block5 unfrozen, batch 20, from images: %.1f MiB", mb);
    cr_expect(fabs(mb - 157.9) < 0.1, "%.1f MiB: update walk.h", mb);
    walk_free(&w);
    // From a block4_pool cache the frozen part's buffers are gone.
    cr_assert_eq(walk_alloc(&w, &m, model_find_layer(&m, "block5_conv1"), 20), 0, "%s", err_msg());
    mb = (double)w.bytes / (1 << 20);
    cr_log_info("walk at 150x150, block5 unfrozen, batch 20, from block4_pool: %.1f MiB", mb);
    cr_expect(fabs(mb - 56.3) < 0.1, "%.1f MiB: update walk.h", mb);
    walk_free(&w);
    model_free(&m);
}

// --- forward ----------------------------------------------------------------------

Test(walk, all_frozen_equals_base_forward_cpu) {
    Model m = build(48, NULL, 8, 0.5f);
    const int N = 3;
    const long in = 48 * 48 * 3, D = model_feature_size(&m);
    float *x = urand((size_t)N * in, 128, 1);
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    float *want = malloc(sizeof(float) * N * D);
    base_forward_cpu(&m, x, N, want, &ws);
    BaseWalk w;
    cr_assert_eq(walk_alloc(&w, &m, 1, 4), 0, "%s", err_msg());
    cr_expect_eq(w.first_trainable, m.n_base);
    walk_forward(&w, x, N);
    cr_expect_arr_eq(w.features, want, sizeof(float) * N * D, "walk differs from base_forward_cpu");
    // walk_predict = the head on those features, without dropout.
    HeadBuffers hb, hb2;
    cr_assert_eq(head_buffers_alloc(&hb, &m, 4), 0);
    cr_assert_eq(head_buffers_alloc(&hb2, &m, 4), 0);
    cr_assert_eq(walk_predict(&w, &hb, x, N), 0);
    cr_assert_eq(head_forward(&m, want, N, 0, 0, 0, &hb2), 0);
    cr_expect_arr_eq(hb.probs, hb2.probs, sizeof(float) * N);
    head_buffers_free(&hb), head_buffers_free(&hb2);
    walk_free(&w);
    base_workspace_free(&ws);
    free(x), free(want);
    model_free(&m);
}

// The frozen part runs one image at a time: an image's values are the same
// whatever else is in its batch. The trainable part is batched; from a cache
// of the frozen part's output it computes exactly what it computes from images.
Test(walk, frozen_part_is_per_image_and_cache_mode_matches) {
    Model m = build(48, "block5_conv1", 8, 0);
    const int N = 5, b5 = model_find_layer(&m, "block5_conv1");
    const long in = 48 * 48 * 3, T = item_floats(&m, b5 - 1), D = model_feature_size(&m);
    float *x = urand((size_t)N * in, 128, 2);
    BaseWalk w, one, cached;
    cr_assert_eq(walk_alloc(&w, &m, 1, N), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&one, &m, 1, 1), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&cached, &m, b5, N), 0, "%s", err_msg());
    walk_forward(&w, x, N);
    // block4_pool of each image alone, and through base_forward_layers.
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    float *f4 = malloc(sizeof(float) * T);
    float worst = 0;
    for (int n = 0; n < N; n++) {
        walk_forward(&one, x + n * in, 1);
        cr_expect_arr_eq(one.t_in, w.t_in + n * T, sizeof(float) * T, "image %d: frozen part depends on its batch", n);
        base_forward_layers(&m, 1, b5, x + n * in, 1, f4, &ws);
        cr_expect_arr_eq(f4, w.t_in + n * T, sizeof(float) * T, "image %d", n);
        // The batched part alone vs in a batch of 5: sgemm is called with
        // another M, which OpenBLAS may block differently.
        worst = fmaxf(worst, max_abs_diff(one.features, w.features + n * D, D));
    }
    float scale = 0;
    for (long i = 0; i < N * D; i++) scale = fmaxf(scale, fabsf(w.features[i]));
    cr_log_info("trainable part, batch of 5 vs one image at a time: max |diff| %g (largest feature %g)", worst, scale);
    cr_expect_leq(worst, 1e-5f * scale);
    // Cache mode: the input is block4_pool.
    walk_forward(&cached, w.t_in, N);
    cr_expect_arr_eq(cached.features, w.features, sizeof(float) * N * D, "cache mode differs from image mode");
    base_workspace_free(&ws);
    walk_free(&w), walk_free(&one), walk_free(&cached);
    free(x), free(f4);
    model_free(&m);
}

// --- gradients ----------------------------------------------------------------------

// The allowance of tests/test_model.c's head check: 2% of the gradients'
// size plus the resolution of the difference of two losses, which dominates
// for gradients near zero. Here that resolution is 8 ulps of the loss rather
// than 4: a step of h in one weight changes the rounding of every float32
// value downstream of it (three 4608-term convolutions, then the head),
// which moves the loss by up to ~4 ulps (measured) besides h * gradient.
static double grad_error(double num, double ana, float loss, float h) {
    double ulp = nextafterf(loss, INFINITY) - loss;
    return fabs(num - ana) / (2e-2 * (fabs(num) + fabs(ana)) + 8 * ulp / (2 * h));
}

// The mean weighted binary cross-entropy of hb->logits in double (Keras's
// sum_over_batch_size): finite differences then resolve the float32 logits
// rather than the float32 loss.
static double loss_double(const HeadBuffers *hb, const int32_t *labels, const float *sw, int N) {
    double sum = 0;
    for (int i = 0; i < N; i++) {
        double z = hb->logits[i];
        sum += (sw ? sw[i] : 1.0) * (fmax(z, 0) + log1p(exp(-fabs(z))) - labels[i] * z);
    }
    return sum / N;
}

// Which side of every kink the batch is on: each ReLU's sign in the
// trainable convs and the head, each pool's argmax (FNV-1a over them).
static uint64_t kinks(const BaseWalk *w, const HeadBuffers *hb, int N) {
    const Model *m = w->m;
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
    for (int i = w->first_trainable; i < m->n_base; i++) {
        size_t n = (size_t)N * item_floats(m, i);
        if (m->layers[i].kind == LAYER_CONV)
            for (size_t j = 0; j < n; j++) MIX(w->act[i][j] > 0);
        else
            for (size_t j = 0; j < n; j++) MIX(w->argmax[i][j]);
    }
    for (long j = 0; j < (long)N * m->cfg.hidden; j++) MIX(hb->hidden[j] > 0);
#undef MIX
    return h;
}

// Finite differences of the mean loss (block5 + head, 48x48 so block5 runs
// on 3x3 maps and block5_pool drops a row and a column) with respect to a
// sample of every trainable tensor, against finetune_step's backward pass.
// The walk starts at block5_conv1 on the frozen part's output (which this
// test checks equals the walk from images, gradients included).
// The loss is piecewise smooth in the weights: a step that moves a ReLU
// across zero or changes a pool's argmax measures another piece. Such steps
// are seen (the kink pattern changes) and retried with h/4 (h = 1e-2, 2.5e-3,
// 6.25e-4; within a piece the logits are linear in any one weight, so a
// large h costs no accuracy); a weight whose step still crosses is skipped
// and counted. Smaller steps would drown in the loss's own rounding.
Test(walk, gradients_finite_differences) {
    Model m = build(48, "block5_conv1", 8, 0);
    const int N = 2, b5 = model_find_layer(&m, "block5_conv1");
    // Non-zero biases, so that their gradients do not meet zero weights only.
    for (int i = b5; i < m.n_layers; i++)
        for (long j = 0; j < m.layers[i].n_bias; j++) m.layers[i].bias[j] = 0.02f * (float)((j % 5) - 2);
    const long in = 48 * 48 * 3;
    float *x = urand((size_t)N * in, 128, 3);
    int32_t labels[2] = {0, 1};
    float sw[2] = {1.0f, 0.5f};
    BaseWalk full, w;
    HeadBuffers hb;
    Grads g, g_full;
    cr_assert_eq(walk_alloc(&full, &m, 1, N), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&w, &m, b5, N), 0, "%s", err_msg());
    cr_assert_eq(head_buffers_alloc(&hb, &m, N), 0);
    cr_assert_eq(grads_alloc(&g, &m, b5, m.n_layers), 0);
    cr_assert_eq(grads_alloc(&g_full, &m, b5, m.n_layers), 0);
    // Plain SGD with lr 0: finetune_step's gradients without moving anything.
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 0;
    float loss, loss_full;
    cr_assert_eq(finetune_step(&full, &hb, &g_full, &o, NULL, x, labels, sw, N, 1, &loss_full), 0);
    float *cut = malloc(sizeof(float) * N * w.in_size);
    memcpy(cut, full.t_in, sizeof(float) * N * w.in_size);
    cr_assert_eq(finetune_step(&w, &hb, &g, &o, NULL, cut, labels, sw, N, 1, &loss), 0);
    cr_expect_eq(loss, loss_full);
    for (int i = b5; i < m.n_layers; i++) {
        if (!g.dkernel[i]) continue;
        cr_expect_arr_eq(g.dkernel[i], g_full.dkernel[i], sizeof(float) * m.layers[i].n_kernel, "%s", m.layers[i].name);
        cr_expect_arr_eq(g.dbias[i], g_full.dbias[i], sizeof(float) * m.layers[i].n_bias, "%s", m.layers[i].name);
    }

#define LOSS() (walk_forward(&w, cut, N), head_forward(&m, w.features, N, 1, 1, 0, &hb), loss_double(&hb, labels, sw, N))
    LOSS();
    const uint64_t at_zero = kinks(&w, &hb, N);
    int checked = 0, retried = 0, skipped = 0;
    double worst = 0, sum_grad = 0;
    for (int i = b5; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        for (int which = 0; which < 2; which++) {
            float *p = which ? l->bias : l->kernel;
            float *dp = which ? g.dbias[i] : g.dkernel[i];
            long n = which ? l->n_bias : l->n_kernel;
            for (long k = n > 20 ? 7 : 0; k < n; k += 1 + n / 20) {
                float keep = p[k], h = 1e-2f;
                double lp = 0, lm = 0;
                int crossed = 1;
                for (int t = 0; t < 3 && crossed; t++, h /= 4) {
                    p[k] = keep + h;
                    lp = LOSS();
                    crossed = kinks(&w, &hb, N) != at_zero;
                    p[k] = keep - h;
                    lm = LOSS();
                    crossed |= kinks(&w, &hb, N) != at_zero;
                    retried += t > 0;
                }
                h *= 4;
                p[k] = keep;
                if (crossed) {
                    skipped++;
                    continue;
                }
                double num = (lp - lm) / (2 * h);
                double e = grad_error(num, dp[k], (float)lp, h);
                if (e > 0.5)
                    cr_log_info("%s %s[%ld]: finite difference %g, backward %g", l->name, which ? "bias" : "kernel", k,
                                num, dp[k]);
                if (e > worst) worst = e;
                sum_grad += fabs(dp[k]);
                checked++;
            }
        }
    }
#undef LOSS
    cr_log_info("gradient check: %d weights (%d retries with a smaller step, %d skipped), worst error %.3g of the "
                "allowance, mean |gradient| %.3g",
                checked, retried, skipped, worst, sum_grad / checked);
    cr_expect_lt(worst, 1.0, "worst gradient error %g of the allowance over %d checks", worst, checked);
    cr_expect_geq(checked, 100);
    cr_expect_lt(skipped, checked / 3);
    grads_free(&g), grads_free(&g_full);
    head_buffers_free(&hb);
    walk_free(&w), walk_free(&full);
    free(x), free(cut);
    model_free(&m);
}

// --- training -------------------------------------------------------------------------

// Discs (label 0) and squares (label 1) at 32x32, caffe-preprocessed.
static float *shapes(int n, int32_t *labels) {
    const int S = 32;
    float *x = malloc(sizeof(float) * n * S * S * 3);
    uint8_t *rgb = malloc((size_t)S * S * 3);
    for (int i = 0; i < n; i++) {
        labels[i] = i % 2;
        draw_shape(rgb, S, S, labels[i], (unsigned)(1000 + i));
        image_preprocess(rgb, (size_t)S * S, PREP_CAFFE, x + (size_t)i * S * S * 3);
    }
    free(rgb);
    return x;
}

static float eval_loss(BaseWalk *w, HeadBuffers *hb, const float *x, const int32_t *labels, int n) {
    cr_assert_eq(walk_predict(w, hb, x, n), 0);
    return head_backward(w->m, w->features, labels, NULL, n, hb, NULL, NULL);
}

// Training moves every unfrozen tensor and leaves every frozen one bit for
// bit as it was (two steps from images); more steps, from the frozen part's
// output (the cache mode, equal to the image mode: see above), lower the
// loss of a learnable set.
Test(walk, training_moves_only_the_unfrozen_layers_and_learns) {
    Model m = build(32, "block5_conv1", 256, 0.25f);
    const int n = 16, B = 8, b5 = model_find_layer(&m, "block5_conv1");
    int32_t labels[16];
    float *x = shapes(n, labels);
    float **before = calloc((size_t)m.n_layers * 2, sizeof(float *));
    for (int i = 0; i < m.n_layers; i++) {
        Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        before[2 * i] = malloc(sizeof(float) * l->n_kernel);
        before[2 * i + 1] = malloc(sizeof(float) * l->n_bias);
        memcpy(before[2 * i], l->kernel, sizeof(float) * l->n_kernel);
        memcpy(before[2 * i + 1], l->bias, sizeof(float) * l->n_bias);
    }
    BaseWalk w, wc, ev, evc;
    HeadBuffers hb;
    Grads g;
    cr_assert_eq(walk_alloc(&w, &m, 1, B), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&wc, &m, b5, B), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&ev, &m, 1, n), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc(&evc, &m, b5, n), 0, "%s", err_msg());
    cr_assert_eq(head_buffers_alloc(&hb, &m, n), 0);
    cr_assert_eq(grads_alloc(&g, &m, w.first_trainable, m.n_layers), 0);
    Optimizer o;
    optim_defaults(&o, OPTIM_ADAM);
    o.lr = 1e-4f;
    float **slots = slots_alloc(&m, &o, w.first_trainable);

    float first = eval_loss(&ev, &hb, x, labels, n), loss = 0;
    float *cut = malloc(sizeof(float) * n * wc.in_size);  // block4_pool of the set
    memcpy(cut, ev.t_in, sizeof(float) * n * wc.in_size);
    const int steps = 40;
    for (int step = 0; step < steps; step++) {
        int at = (step % (n / B)) * B;
        BaseWalk *sw = step < 2 ? &w : &wc;
        const float *in = step < 2 ? x + (size_t)at * 32 * 32 * 3 : cut + (size_t)at * wc.in_size;
        cr_assert_eq(finetune_step(sw, &hb, &g, &o, slots, in, labels + at, NULL, B, 5, &loss), 0, "%s", err_msg());
        cr_assert(isfinite(loss));
        optim_step_done(&o);
        if (step != 1) continue;
        for (int i = 1; i < m.n_layers; i++) {
            Layer *l = &m.layers[i];
            if (!l->n_kernel) continue;
            int same_k = !memcmp(before[2 * i], l->kernel, sizeof(float) * l->n_kernel);
            int same_b = !memcmp(before[2 * i + 1], l->bias, sizeof(float) * l->n_bias);
            if (i < w.first_trainable) {
                cr_expect(same_k && same_b, "frozen %s changed", l->name);
                continue;
            }
            // Not all: a unit whose ReLU is off for the whole batch gets no gradient.
            long moved = 0;
            for (long j = 0; j < l->n_kernel; j++) moved += l->kernel[j] != before[2 * i][j];
            cr_log_info("%s: %ld of %ld kernel weights moved", l->name, moved, l->n_kernel);
            cr_expect_gt(moved, l->n_kernel / 4, "%s: %ld of %ld kernel weights moved", l->name, moved, l->n_kernel);
            cr_expect(!same_b, "%s: bias did not move", l->name);
        }
    }
    cr_assert_eq(walk_predict(&evc, &hb, cut, n), 0);
    float last = head_backward(&m, evc.features, labels, NULL, n, &hb, NULL, NULL);
    cr_log_info("loss on the 16 shapes: %.4f before, %.4f after %d steps", first, last, steps);
    cr_expect_lt(last, 0.6f * first, "loss %g -> %g", first, last);

    for (int i = 0; i < m.n_layers * 2; i++) free(before[i]);
    free(before);
    slots_free(&m, slots);
    grads_free(&g);
    head_buffers_free(&hb);
    walk_free(&w), walk_free(&wc), walk_free(&ev), walk_free(&evc);
    free(x), free(cut);
    model_free(&m);
}

// --- against Keras ----------------------------------------------------------------------

// Two fine-tuning steps of block5 + the head against Keras's train_on_batch
// (scripts/fixtures_finetune.py): the same initial weights (the script ports
// model_init_random), the same batch; the loss of each step and a sample of
// the updated weights. Run twice: from Keras's own block4_pool output (the
// trainable step alone) and from the images (the frozen part too, whose
// float32 sums differ from XLA's in the last bits).
static void steps_like_keras(const char *opt_name, int from_images) {
    Model m = build(32, "block5_conv1", 8, 0);
    const int N = 4, b5 = model_find_layer(&m, "block5_conv1");
    Npy x = fixture_npy("finetune/x.npy"), y = fixture_npy("finetune/y.npy");
    Npy cut = fixture_npy("finetune/block4_pool.npy"), init = fixture_npy("finetune/init_sample.npy");
    Npy want_loss = fixture_npy("finetune/%s_losses.npy", opt_name);
    Npy want_w = fixture_npy("finetune/%s_weights.npy", opt_name);
    cr_assert_eq(x.count, (size_t)N * 32 * 32 * 3);
    cr_assert_eq(cut.count, (size_t)N * item_floats(&m, b5 - 1));

    // The sample: kernel[::S] then bias of each trainable layer (S = 101 for
    // the 3x3x512x512 kernels, 1 for the head's); the initial one is ours bit
    // for bit.
    float *ours = malloc(want_w.count * sizeof(float)), *ours0 = malloc(want_w.count * sizeof(float));
#define SAMPLE(dst)                                                                              \
    do {                                                                                         \
        size_t at_ = 0;                                                                          \
        for (int i = b5; i < m.n_layers; i++) {                                                  \
            Layer *l = &m.layers[i];                                                             \
            if (!l->n_kernel) continue;                                                          \
            long s_ = l->n_kernel > 100000 ? 101 : 1;                                            \
            for (long j = 0; j < l->n_kernel; j += s_) (dst)[at_++] = l->kernel[j];             \
            for (long j = 0; j < l->n_bias; j++) (dst)[at_++] = l->bias[j];                      \
        }                                                                                        \
        cr_assert_eq(at_, want_w.count);                                                         \
    } while (0)
    SAMPLE(ours0);
    cr_assert_arr_eq(ours0, init.data, sizeof(float) * init.count, "model_init_random and the script's port differ");

    BaseWalk w;
    HeadBuffers hb;
    Grads g;
    cr_assert_eq(walk_alloc(&w, &m, from_images ? 1 : b5, N), 0, "%s", err_msg());
    cr_assert_eq(head_buffers_alloc(&hb, &m, N), 0);
    cr_assert_eq(grads_alloc(&g, &m, w.first_trainable, m.n_layers), 0);
    Optimizer o;
    if (!strcmp(opt_name, "sgd")) {
        optim_defaults(&o, OPTIM_SGD);
        o.lr = 0.01f, o.momentum = 0.9f;
    } else {
        optim_defaults(&o, OPTIM_ADAM);
        o.lr = 1e-3f;
    }
    float **slots = slots_alloc(&m, &o, w.first_trainable);
    const float *in = from_images ? x.data : cut.data;
    for (int step = 0; step < 2; step++) {
        float loss;
        cr_assert_eq(finetune_step(&w, &hb, &g, &o, slots, in, y.data, NULL, N, 0, &loss), 0);
        optim_step_done(&o);
        if (from_images && step == 0) {
            // Our frozen part against Keras's block4_pool: float32 sums in
            // another order (as tests/test_model.c's forward check).
            float scale = 0;
            for (size_t i = 0; i < cut.count; i++) scale = fmaxf(scale, fabsf(((float *)cut.data)[i]));
            float err = max_abs_diff(w.t_in, cut.data, cut.count);
            cr_log_info("block4_pool vs Keras: max |diff| %g (largest %g)", err, scale);
            cr_expect_lt(err, 1e-4f * scale);
        }
        float want = ((float *)want_loss.data)[step];
        cr_log_info("%s from %s, step %d: loss %.8g, Keras %.8g", opt_name, from_images ? "images" : "block4_pool",
                    step, loss, want);
        cr_expect_lt(fabsf(loss - want), 1e-5f * want, "%s step %d: loss %.8g, Keras %.8g", opt_name, step, loss, want);
    }
    // The updates (new - initial, exact in double) against Keras's, relative
    // to the largest one. Measured: SGD 1.1e-4 from block4_pool, 1.4e-5 from
    // images; Adam 4.8e-4 and 1.4e-3. Adam's first steps move each weight by
    // about lr * sign(gradient) whatever the gradient's size, so where a
    // gradient is tiny (sums that nearly cancel) its relative rounding error
    // shows in full in the update; SGD's update scales with the gradient.
    SAMPLE(ours);
#undef SAMPLE
    const float *kw = want_w.data;
    double worst = 0, largest = 0;
    for (size_t i = 0; i < want_w.count; i++) {
        double dk = (double)kw[i] - ours0[i], dc = (double)ours[i] - ours0[i];
        largest = fmax(largest, fabs(dk));
        worst = fmax(worst, fabs(dc - dk));
    }
    cr_log_info("%s from %s: updates differ from Keras's by %.3g (largest update %.3g): %.2g of it", opt_name,
                from_images ? "images" : "block4_pool", worst, largest, worst / largest);
    cr_expect_gt(largest, 0);
    double allowed = o.kind == OPTIM_ADAM ? 1e-2 : 1e-3;
    cr_expect_lt(worst, allowed * largest, "%s: updates differ by %g, largest %g", opt_name, worst, largest);

    slots_free(&m, slots);
    grads_free(&g);
    head_buffers_free(&hb);
    walk_free(&w);
    free(ours), free(ours0);
    npy_free(&x), npy_free(&y), npy_free(&cut), npy_free(&init), npy_free(&want_loss), npy_free(&want_w);
    model_free(&m);
}

Test(finetune, steps_match_keras_sgd_momentum_from_cut) { steps_like_keras("sgd", 0); }
Test(finetune, steps_match_keras_adam_from_cut) { steps_like_keras("adam", 0); }
Test(finetune, steps_match_keras_sgd_momentum_from_images) { steps_like_keras("sgd", 1); }
Test(finetune, steps_match_keras_adam_from_images) { steps_like_keras("adam", 1); }
