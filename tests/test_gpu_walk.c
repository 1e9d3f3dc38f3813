// The trainable walk on the GPU (kernels/gpu_walk.h) against the CPU walk
// (common/walk.h): the optimizer kernel bit for bit against optim_apply,
// fine-tuning steps (sgd with momentum, adam, rmsprop; from images with
// block5 or block4 unfrozen, from a block4_pool cache) within the tolerance
// below, reruns giving the same bits, a short run that learns, the host
// copies (download / upload), a checkpoint taken on one device resumed on
// the other end to end with the tools, and the step's throughput at the
// seeds' shape (printed). Every GPU test skips without a usable GPU;
// fails_cleanly_without_a_gpu runs only without one.
//
// The head on the device (the default, kernels/gpu_head.h): the tests
// whose names end in _gpu_head run the same checks as the others (which
// keep the head on the host: VGGFT_GPU_HEAD=0) with the head's layers on
// the device as well (its weights and slots compared like the base's, after
// walk_download), plus a 3-class softmax head and sample weights (class
// weights), dropout on; device_dropout_code_equals_cpu_dropout checks the
// device's dropout code on the host (a CUDA build, no GPU needed).
//
// Tolerance. Both devices compute in strict float32 (no TF32) but sum in
// other orders (cuDNN's algorithms vs OpenBLAS's sgemm bands), so values
// agree to a few float32 roundings of the sums' terms, relative to the
// largest value of the tensor, not elementwise (a value that cancels to
// near zero keeps the absolute error of its terms). So:
//   features       max |gpu - cpu| <= 1e-4 x max |cpu|   (test_gpu.c's bound)
//   loss           |gpu - cpu|     <= 1e-4 x max(1, |cpu|)
//   gradients, seen through SGD's update (w - w0 = -lr g, velocity) and
//   Adam's / RMSprop's slots (m = (1-b1) g, v ~ g^2):
//                  max |gpu - cpu| <= 1e-3 x max |cpu|
//   Adam / RMSprop weight updates: relative L2 norm <= 1e-2 (their first
//   update is about lr x sign(g), so an element whose gradient is within
//   rounding of zero may step either way on the two devices: a max-norm
//   bound would not hold, a norm bound does).
// Each comparison prints its measured figure on stderr ("gpu_walk: ...").
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"  // env_flag
#include "error.h"
#include "fileutil.h"
#include "fit.h"
#include "forward.h"
#include "gpu.h"
#include "gpu_head.h"
#include "gpu_walk.h"
#include "layers.h"
#include "model.h"
#include "model_io.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"
#include "walk.h"
#include "weights_source.h"

#define TOL_FEATURES 1e-4f
#define TOL_LOSS 1e-4f
#define TOL_GRAD 1e-3f
// Adam and RMSprop divide each gradient by its own running size, so an
// entry whose gradient is rounding noise (a ReLU within rounding of zero on
// one device only) moves by the full learning rate on one device and not
// the other, and step 2 runs through those weights: the deeper the layer,
// the more such ReLUs above it. Measured on an H200 (2026-11-30), two Adam
// steps from block4_conv1 at 64x64: 1.3e-2 of block4_conv1's and
// block4_conv2's updates in L2 with the head on the GPU, 1.7e-3 with it on
// the host (the head's arithmetic alone differs, by 1e-6), while the same
// steps with SGD, linear in the gradient, agreed to 3e-6 either way; the
// last block and the head 1e-4. A wrong kernel errs by O(1).
#define TOL_ADAPTIVE_NORM 1e-2f
// ... for the base's layers below its last block.
#define TOL_ADAPTIVE_DEEP 3e-2f
// The features through weights after such steps (measured 1.8e-4 there).
#define TOL_FEATURES_ADAPTIVE 1e-3f

static void need_gpu(void) {
    char why[1000];
    if (test_show_gpus(why, sizeof why) == 0) cr_skip_test("no GPU: %s", why);
}

// What some step tests change beyond step_matches_head's arguments (a test
// sets it before its steps; zero: the defaults). Each catches a fault the
// others cannot: a swapped height and width needs H != W; dropout's keep
// and rate are equal at 0.5; RMSprop uses its second slot only with
// momentum; padding rows never written are NaN on the emulated GPU only if
// the first batch a walk sees is partial.
static struct {
    int width;           // input width (0: the height)
    float dropout;       // 0: 0.5
    float rms_momentum;  // RMSprop's momentum
    int partial_first;   // the first forward pass and step on cap - 1 items
} variant;

// classes: 2 (one sigmoid output) or more (softmax).
static Model build_classes(int size, const char *unfreeze, uint64_t seed, int classes) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    if (variant.width) cfg.input_w = variant.width;
    cfg.unfreeze = unfreeze;
    cfg.hidden = 16;
    cfg.dropout = variant.dropout ? variant.dropout : 0.5f;
    cfg.n_classes = classes;
    cfg.binary = classes == 2;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "model_build: %s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0, "%s", err_msg());
    model_init_random(&m, 1, m.n_layers, seed);
    return m;
}

static Model build(int size, const char *unfreeze, uint64_t seed) { return build_classes(size, unfreeze, seed, 2); }

// n floats U(lo, hi).
static float *urand(size_t n, float lo, float hi, uint64_t seed) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return x;
}


static float max_abs(const float *a, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s = fmaxf(s, fabsf(a[i]));
    return s;
}

// max |a - b| <= tol * max |b| (and b not all zero), printing the figure.
static void expect_close_max(const char *what, const float *a, const float *b, size_t n, float tol) {
    float scale = max_abs(b, n), err = max_abs_diff(a, b, n);
    fprintf(stderr, "gpu_walk: %s: max |gpu - cpu| = %.3g x max |cpu| (%.3g)\n", what, scale > 0 ? err / scale : err,
            scale);
    cr_expect_gt(scale, 0.0f, "%s: all zero on the CPU", what);
    cr_expect_leq(err, tol * scale, "%s: max |gpu - cpu| %g > %g x max |cpu| %g", what, err, tol, scale);
}

// ||a - b|| <= tol * ||b||, printing the figure: for optimizer slots. A ReLU
// whose input lies within rounding of zero on one device and not on the
// other passes a gradient on one device only: a local difference, which a
// max-norm bound would blame on the whole tensor (measured on an H200: 4.6e-3
// of the largest Adam m of block4_conv2 in a 64x64 block4 run, 1.2e-3 in L2).
static void expect_close_l2(const char *what, const float *a, const float *b, size_t n, float tol) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        e += d * d, s += (double)b[i] * b[i];
    }
    e = sqrt(e), s = sqrt(s);
    fprintf(stderr, "gpu_walk: %s: ||gpu - cpu|| = %.3g x ||cpu|| (%.3g)\n", what, s > 0 ? e / s : e, s);
    cr_expect_gt(s, 0.0, "%s: all zero on the CPU", what);
    cr_expect_leq(e, tol * s, "%s: relative L2 error %g > %g", what, s > 0 ? e / s : e, tol);
}

// ||(a - a0) - (b - b0)|| <= tol * ||b - b0||: the updates' relative L2 error.
static void expect_close_update(const char *what, const float *a, const float *b, const float *w0, size_t n, float tol,
                                int max_norm) {
    if (max_norm) {
        // SGD: the update is linear in the gradient: a max-norm bound.
        float *da = malloc(n * sizeof(float)), *db = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) da[i] = a[i] - w0[i], db[i] = b[i] - w0[i];
        expect_close_max(what, da, db, n, tol);
        free(da), free(db);
        return;
    }
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = ((double)a[i] - w0[i]) - ((double)b[i] - w0[i]), u = (double)b[i] - w0[i];
        e += d * d, s += u * u;
    }
    e = sqrt(e), s = sqrt(s);
    fprintf(stderr, "gpu_walk: %s: ||update gpu - cpu|| = %.3g x ||update cpu|| (%.3g)\n", what, s > 0 ? e / s : e, s);
    cr_expect_gt(s, 0.0, "%s: no update on the CPU", what);
    cr_expect_leq(e, tol * s, "%s: relative L2 error of the update %g > %g", what, s > 0 ? e / s : e, tol);
}

// --- without a GPU ---------------------------------------------------------------

Test(gpu_walk, fails_cleanly_without_a_gpu) {
    char why[1000];
    if (test_show_gpus(why, sizeof why) > 0) cr_skip_test("a GPU is usable here: nothing to check");
    Model m = build(32, "block5_conv1", 7);
    BaseWalk w;
    cr_expect_eq(walk_alloc_device(&w, &m, 1, 2, 1, GPU_FP32), -1);
    cr_expect(strstr(err_msg(), "GPU") || strstr(err_msg(), "CUDA"), "the reason is given: %s", err_msg());
    cr_expect_null(w.gpu);
    walk_free(&w);  // safe after the failure
    cr_expect_null(gpu_walk_create(&m, 1, 2, GPU_FP32));
    cr_expect(strlen(err_msg()) > 0);
    // The head on the host instead changes nothing here.
    setenv("VGGFT_GPU_HEAD", "0", 1);
    cr_expect_eq(walk_alloc_device(&w, &m, 1, 2, 1, GPU_FP32), -1);
    cr_expect(strstr(err_msg(), "GPU") || strstr(err_msg(), "CUDA"), "the reason is given: %s", err_msg());
    walk_free(&w);
    unsetenv("VGGFT_GPU_HEAD");
    // walk_download / walk_upload of a CPU walk have nothing to do.
    cr_assert_eq(walk_alloc_device(&w, &m, 1, 2, 0, GPU_FP32), 0, "%s", err_msg());
    cr_expect_eq(walk_download(&w, &m, NULL), 0);
    cr_expect_eq(walk_upload(&w, NULL), 0);
    walk_free(&w);
    float p = 1, g = 1;
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    OptimRule r = optim_rule(&o);
    cr_expect_eq(gpu_optim_apply(&r, &p, &g, NULL, 1), -1);
    model_free(&m);
}

// --- the optimizer kernel ------------------------------------------------------------

// optim_apply and the GPU's kernel on the same tensor for 3 steps: the same bits.
static void optim_same_bits(OptimKind kind, float momentum, int nesterov, long start_step) {
    const size_t n = 100003;
    Optimizer o;
    optim_defaults(&o, kind);
    o.momentum = momentum, o.nesterov = nesterov, o.step = start_step;
    if (kind == OPTIM_SGD) o.lr = 0.01f;
    float *wc = urand(n, -0.5f, 0.5f, 1), *wg = urand(n, -0.5f, 0.5f, 1);
    // Slot values each rule can meet: Adam's m any sign, v >= 0; RMSprop's v
    // >= 0 (a negative one would give NaN, whose bits differ between the
    // CPU's and the GPU's square roots), its momentum any sign.
    const int v_first = kind == OPTIM_RMSPROP;
    float *sc[2] = {v_first ? urand(n, 0, 1e-4f, 4) : urand(n, -0.01f, 0.01f, 3),
                    v_first ? urand(n, -0.01f, 0.01f, 3) : urand(n, 0, 1e-4f, 4)};
    float *sg[2] = {v_first ? urand(n, 0, 1e-4f, 4) : urand(n, -0.01f, 0.01f, 3),
                    v_first ? urand(n, -0.01f, 0.01f, 3) : urand(n, 0, 1e-4f, 4)};
    for (int step = 0; step < 3; step++) {
        float *g = urand(n, -0.1f, 0.1f, 10 + step);
        g[0] = 0, g[1] = 1e-30f, g[2] = -3e-8f;  // tiny gradients, where eps matters
        OptimRule r = optim_rule(&o);
        optim_apply(&r, wc, g, sc, n);
        cr_assert_eq(gpu_optim_apply(&r, wg, g, sg, n), 0, "%s", err_msg());
        optim_step_done(&o);
        free(g);
    }
    cr_expect(!memcmp(wc, wg, n * sizeof(float)), "%s momentum %g nesterov %d: weights differ (max %g)",
              optim_kind_name(kind), momentum, nesterov, max_abs_diff(wc, wg, n));
    for (int s = 0; s < optim_slots(&o); s++)
        cr_expect(!memcmp(sc[s], sg[s], n * sizeof(float)), "%s: slot %d differs", optim_kind_name(kind), s);
    free(wc), free(wg);
    for (int s = 0; s < 2; s++) free(sc[s]), free(sg[s]);
}

Test(gpu_walk, optimizer_kernel_equals_optim_apply_bit_for_bit) {
    need_gpu();
    optim_same_bits(OPTIM_SGD, 0, 0, 0);
    optim_same_bits(OPTIM_SGD, 0.9f, 0, 0);
    optim_same_bits(OPTIM_SGD, 0.9f, 1, 0);
    optim_same_bits(OPTIM_ADAM, 0, 0, 0);
    optim_same_bits(OPTIM_ADAM, 0, 0, 1000);
    optim_same_bits(OPTIM_RMSPROP, 0, 0, 0);
    optim_same_bits(OPTIM_RMSPROP, 0.9f, 0, 0);
}

// --- the device head's dropout, on the host -------------------------------------------------

// The device's relu + dropout code (gpu_head.cu's __host__ __device__
// function, compiled by nvcc for the host) against relu_forward +
// dropout_forward: the same values and mask, bit for bit, for many
// counters, several seeds, streams and rates. Needs a CUDA build, not a GPU.
Test(gpu_walk, device_dropout_code_equals_cpu_dropout) {
    if (!gpu_built()) cr_skip_test("a build without CUDA");
    const size_t n = 1 << 20;
    const float rates[] = {0.5f, 0.3f, 0.1f, 0.9f, 0.0f, 1.0f};
    const uint64_t seeds[] = {1, 12345, 0xFFFFFFFFFFFFFFFFull}, streams[] = {0, 7, 123456789012ull};
    uint8_t *mc = malloc(n), *mg = malloc(n);
    for (size_t r = 0; r < sizeof rates / sizeof *rates; r++)
        for (int k = 0; k < 3; k++) {
            float *xc = urand(n, -1, 1, 60 + k), *xg = urand(n, -1, 1, 60 + k);
            relu_forward(xc, n);
            dropout_forward(xc, n, rates[r], seeds[k], streams[k], mc);
            cr_assert_eq(gpu_head_dropout_host(xg, n, rates[r], seeds[k], streams[k], mg), 0, "%s", err_msg());
            cr_expect(!memcmp(mc, mg, n), "rate %g seed %llu stream %llu: masks differ", rates[r],
                      (unsigned long long)seeds[k], (unsigned long long)streams[k]);
            cr_expect(!memcmp(xc, xg, n * sizeof(float)), "rate %g seed %llu: values differ (max %g)", rates[r],
                      (unsigned long long)seeds[k], max_abs_diff(xc, xg, n));
            size_t kept = 0;
            for (size_t i = 0; i < n; i++) kept += mg[i];
            if (rates[r] > 0 && rates[r] < 1)  // a mask of the right density: not all kept, not all dropped
                cr_expect(fabs((double)kept / n - (1 - rates[r])) < 0.01, "rate %g: %.4f kept", rates[r],
                          (double)kept / n);
            free(xc), free(xg);
        }
    free(mc), free(mg);
}

// --- one step on each device ----------------------------------------------------------

// A CPU walk and a GPU walk on two copies of one model, with their
// optimizers and slots.
typedef struct {
    Model m;
    BaseWalk w;
    HeadBuffers hb;
    Grads g;
    Optimizer o;
    FitState fs;       // its optimizer slots
    float **slots;     // = fs.slots
} Side;

// The devices a Side runs on.
enum { ON_CPU, ON_GPU, ON_GPU_HEAD };  // ON_GPU: the head on the CPU (VGGFT_GPU_HEAD=0); ON_GPU_HEAD: the default

// classes: build_classes's. dev: ON_CPU, ON_GPU or ON_GPU_HEAD.
static void side_init_classes(Side *s, int size, const char *unfreeze, int from_cache, const Optimizer *o, int cap,
                              int dev, int classes) {
    memset(s, 0, sizeof *s);
    s->m = build_classes(size, unfreeze, 7, classes);
    int from = from_cache ? s->m.first_trainable_base : 1;
    cr_assert(!from_cache || s->m.layers[from - 1].kind == LAYER_POOL);
    // The variable is read when the GPU walk is made: set or cleared
    // explicitly, so that the environment the tests run in cannot change
    // which head a test checks.
    // The head on the device is the default; "0" keeps it on the host.
    if (dev == ON_GPU_HEAD) unsetenv("VGGFT_GPU_HEAD");
    else setenv("VGGFT_GPU_HEAD", "0", 1);
    int rc = walk_alloc_device(&s->w, &s->m, from, cap, dev != ON_CPU, GPU_FP32);
    unsetenv("VGGFT_GPU_HEAD");
    cr_assert_eq(rc, 0, "%s", err_msg());
    if (dev != ON_CPU)
        cr_assert_eq(gpu_walk_has_head(s->w.gpu), dev == ON_GPU_HEAD, "the head on the %s, not followed",
                     dev == ON_GPU_HEAD ? "GPU (the default)" : "CPU (VGGFT_GPU_HEAD=0)");
    cr_assert_eq(head_buffers_alloc(&s->hb, &s->m, cap), 0);
    cr_assert_eq(grads_alloc(&s->g, &s->m, s->w.first_trainable, s->m.n_layers), 0);
    s->o = *o;
    // The slots as fit_init makes them for finetune.
    cr_assert_eq(fit_init(&s->fs, &s->m, s->w.first_trainable, o, 1), 0, "%s", err_msg());
    s->slots = s->fs.slots;
}

static void side_init(Side *s, int size, const char *unfreeze, int from_cache, const Optimizer *o, int cap, int dev) {
    side_init_classes(s, size, unfreeze, from_cache, o, cap, dev, 2);
}

static void side_free(Side *s) {
    fit_free(&s->fs);
    grads_free(&s->g);
    head_buffers_free(&s->hb);
    walk_free(&s->w);
    model_free(&s->m);
}

// sample_weights: N, or NULL.
static float side_step_weighted(Side *s, const float *x, const int32_t *labels, const float *sample_weights, int N) {
    float loss = NAN;
    cr_assert_eq(finetune_step(&s->w, &s->hb, &s->g, &s->o, s->slots, x, labels, sample_weights, N, 5, &loss), 0,
                 "%s", err_msg());
    optim_step_done(&s->o);
    return loss;
}

static float side_step(Side *s, const float *x, const int32_t *labels, int N) {
    return side_step_weighted(s, x, labels, NULL, N);
}

// The CPU's and the GPU's weights and slots of every trainable layer after
// the same steps (w0: the starting weights of each layer, kernel then bias).
// 1 when layer i of m is a base layer below the base's last block (not
// "blockN_" of the base's last layer).
static int below_last_block(const Model *m, int i) {
    const char *last = m->layers[m->n_base - 1].name, *u = strchr(last, '_');
    return i < m->n_base && u && strncmp(m->layers[i].name, last, (size_t)(u - last + 1)) != 0;
}

static void compare_state(const char *tag, Side *c, Side *g, float **w0) {
    cr_assert_eq(walk_download(&g->w, &g->m, g->slots), 0, "%s", err_msg());
    const int adaptive = c->o.kind != OPTIM_SGD;
    for (int i = c->w.first_trainable; i < c->m.n_layers; i++) {
        const Layer *lc = &c->m.layers[i], *lg = &g->m.layers[i];
        if (!lc->n_kernel) continue;
        const float tol = !adaptive ? TOL_GRAD : below_last_block(&c->m, i) ? TOL_ADAPTIVE_DEEP : TOL_ADAPTIVE_NORM;
        char what[200];
        snprintf(what, sizeof what, "%s: %s kernel", tag, lc->name);
        expect_close_update(what, lg->kernel, lc->kernel, w0[i], (size_t)lc->n_kernel, tol, !adaptive);
        snprintf(what, sizeof what, "%s: %s bias", tag, lc->name);
        expect_close_update(what, lg->bias, lc->bias, w0[i] + lc->n_kernel, (size_t)lc->n_bias, tol, !adaptive);
        for (int t = 0; t < 2; t++)
            for (int k = 0; k < optim_slots(&c->o); k++) {
                snprintf(what, sizeof what, "%s: %s %s slot %d", tag, lc->name, t ? "bias" : "kernel", k);
                expect_close_l2(what, HEAD_SLOTS(g->slots, i, t)[k], HEAD_SLOTS(c->slots, i, t)[k],
                                (size_t)(t ? lc->n_bias : lc->n_kernel), adaptive ? tol : TOL_ADAPTIVE_NORM);
            }
    }
    // Frozen layers: untouched on the GPU (download does not write them; the
    // device's copies are never updated: a forward pass below checks them).
}

// Two steps (a full batch of 4, then 3 items: the padded case) on both
// devices from the same weights and inputs; then the state compared. dev:
// ON_GPU (the head on the CPU: VGGFT_GPU_HEAD=0) or ON_GPU_HEAD (the default: the head on
// the device too, its layers compared as the base's). classes: 2 (sigmoid)
// or more (softmax); weighted: sample weights from class weights (as
// finetune's --class-weight makes them). Dropout (0.5) is on in every step.
static void step_matches_head(int size, const char *unfreeze, int from_cache, OptimKind kind, int dev, int classes,
                              int weighted) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, kind);
    if (kind == OPTIM_SGD) o.lr = 0.01f, o.momentum = 0.9f;
    if (kind == OPTIM_RMSPROP) o.lr = 1e-4f, o.momentum = variant.rms_momentum;
    const int cap = 4;
    Side c, g;
    side_init_classes(&c, size, unfreeze, from_cache, &o, cap, ON_CPU, classes);
    side_init_classes(&g, size, unfreeze, from_cache, &o, cap, dev, classes);
    cr_assert_not_null(g.w.gpu);
    char tag[200], plan[2000];
    snprintf(tag, sizeof tag, "%dx%d %s from %s, %s, %d classes%s, head on the %s", size,
             variant.width ? variant.width : size, unfreeze, from_cache ? "a cache" : "images",
             optim_kind_name(kind), classes, weighted ? " (weighted)" : "", dev == ON_GPU_HEAD ? "GPU" : "CPU");
    gpu_walk_describe(g.w.gpu, plan, sizeof plan);
    fprintf(stderr, "gpu_walk: %s: %s\n", tag, plan);
    cr_expect(gpu_walk_deterministic(g.w.gpu), "an algorithm is not deterministic: %s", plan);
    // VGGFT_GPU_AUTOTUNE (the autotuned_* tests): the picks come from cuDNN's
    // timing runs; in the emulation's timed list forward algorithm 0 is the
    // first deterministic one in the descriptor's math, where its heuristics
    // give 1 (after 2, not deterministic: tests/emu/cudnn_emu.cpp, timed_).
    const int timed = env_flag("VGGFT_GPU_AUTOTUNE", 0);
    cr_expect_eq(strstr(plan, "algorithms timed by cuDNN") != NULL, timed, "%s", plan);
    if (test_gpu_emulated())
        cr_expect(strstr(plan, timed ? "fwd 0" : "fwd 1") && !strstr(plan, timed ? "fwd 1" : "fwd 0"),
                  "forward algorithms not from the %s: %s", timed ? "timed list" : "heuristics", plan);
    // The emulation lists a non-deterministic forward algorithm (2) first:
    // the pick passes over it (tests/emu/cudnn_emu.cpp, algos_).
    if (test_gpu_emulated())
        for (const char *p = plan; (p = strstr(p, "fwd 2")); p++)
            cr_expect(p[5] >= '0' && p[5] <= '9', "a non-deterministic forward pick: %s", plan);
    // Starting weights of the trainable layers.
    float **w0 = calloc((size_t)c.m.n_layers, sizeof(float *));
    for (int i = c.w.first_trainable; i < c.m.n_layers; i++) {
        const Layer *l = &c.m.layers[i];
        if (!l->n_kernel) continue;
        w0[i] = malloc((size_t)(l->n_kernel + l->n_bias) * sizeof(float));
        memcpy(w0[i], l->kernel, (size_t)l->n_kernel * sizeof(float));
        memcpy(w0[i] + l->n_kernel, l->bias, (size_t)l->n_bias * sizeof(float));
    }
    // Images as preprocessed (caffe: about -124..152), or a pool's output (>= 0).
    const long item = c.w.in_size;
    float *x = from_cache ? urand((size_t)cap * item, 0, 2, 11) : urand((size_t)cap * item, -120, 130, 11);
    float *x2 = from_cache ? urand((size_t)cap * item, 0, 2, 12) : urand((size_t)cap * item, -120, 130, 12);
    int32_t labels[4] = {0, 1, 1, 0};
    if (classes > 2) labels[1] = 2, labels[3] = classes - 1;
    const float class_w[3] = {0.5f, 2.0f, 1.25f};
    float sw[4];
    for (int i = 0; i < 4; i++) sw[i] = class_w[labels[i] % 3];
    const float *w = weighted ? sw : NULL;

    // The forward pass alone (no update), full and padded batch (padded
    // first with variant.partial_first, as are the steps).
    const long F = model_feature_size(&c.m);
    const int n1 = variant.partial_first ? cap - 1 : cap, n2 = variant.partial_first ? cap : cap - 1;
    char what[300];
    for (int k = 0; k < 2; k++) {
        const int N = k ? n2 : n1;
        cr_assert_eq(walk_forward(&c.w, x, N), 0);
        cr_assert_eq(walk_forward(&g.w, x, N), 0, "%s", err_msg());
        snprintf(what, sizeof what, "%s: features of %d items", tag, N);
        expect_close_max(what, g.w.features, c.w.features, (size_t)(N * F), TOL_FEATURES);
    }
    float lc1 = side_step_weighted(&c, x, labels, w, n1), lg1 = side_step_weighted(&g, x, labels, w, n1);
    float lc2 = side_step_weighted(&c, x2, labels, w, n2), lg2 = side_step_weighted(&g, x2, labels, w, n2);
    // The running accuracy's input: the probabilities of the last step.
    snprintf(what, sizeof what, "%s: probabilities of step 2", tag);
    expect_close_max(what, g.hb.probs, c.hb.probs, (size_t)(n2 * c.m.n_outputs), TOL_LOSS);
    fprintf(stderr, "gpu_walk: %s: losses cpu %.7g %.7g, gpu %.7g %.7g\n", tag, lc1, lc2, lg1, lg2);
    cr_expect(isfinite(lc1) && isfinite(lc2));
    cr_expect_leq(fabsf(lg1 - lc1), TOL_LOSS * fmaxf(1, fabsf(lc1)), "%s: step 1 loss gpu %g cpu %g", tag, lg1, lc1);
    cr_expect_leq(fabsf(lg2 - lc2), TOL_LOSS * fmaxf(1, fabsf(lc2)), "%s: step 2 loss gpu %g cpu %g", tag, lg2, lc2);
    compare_state(tag, &c, &g, w0);
    // The updated weights are the ones the GPU runs with: the features of
    // a new batch still agree (and the frozen layers were left alone).
    cr_assert_eq(walk_forward(&c.w, x2, cap), 0);
    cr_assert_eq(walk_forward(&g.w, x2, cap), 0, "%s", err_msg());
    snprintf(what, sizeof what, "%s: features after the steps", tag);
    expect_close_max(what, g.w.features, c.w.features, (size_t)(cap * F),
                     kind == OPTIM_SGD ? TOL_FEATURES : TOL_FEATURES_ADAPTIVE);
    for (int i = 0; i < c.m.n_layers; i++) free(w0[i]);
    free(w0), free(x), free(x2);
    side_free(&c);
    side_free(&g);
}

static void step_matches(int size, const char *unfreeze, int from_cache, OptimKind kind) {
    step_matches_head(size, unfreeze, from_cache, kind, ON_GPU, 2, 0);
}

// The same with the head on the device (the default).
static void step_matches_gpu_head(int size, const char *unfreeze, int from_cache, OptimKind kind) {
    step_matches_head(size, unfreeze, from_cache, kind, ON_GPU_HEAD, 2, 0);
}

Test(gpu_walk, step_sgd_images_block5) { step_matches(48, "block5_conv1", 0, OPTIM_SGD); }
Test(gpu_walk, step_adam_images_block5) { step_matches(48, "block5_conv1", 0, OPTIM_ADAM); }
Test(gpu_walk, step_rmsprop_images_block5) { step_matches(48, "block5_conv1", 0, OPTIM_RMSPROP); }
Test(gpu_walk, step_sgd_images_block4) { step_matches(64, "block4_conv1", 0, OPTIM_SGD); }
Test(gpu_walk, step_adam_images_block4) { step_matches(64, "block4_conv1", 0, OPTIM_ADAM); }
Test(gpu_walk, step_sgd_cache_block5) { step_matches(64, "block5_conv1", 1, OPTIM_SGD); }
Test(gpu_walk, step_adam_cache_block5) { step_matches(64, "block5_conv1", 1, OPTIM_ADAM); }
Test(gpu_walk, step_rmsprop_cache_block5) { step_matches(64, "block5_conv1", 1, OPTIM_RMSPROP); }
Test(gpu_walk, step_sgd_images_block5_gpu_head) { step_matches_gpu_head(48, "block5_conv1", 0, OPTIM_SGD); }
Test(gpu_walk, step_adam_images_block5_gpu_head) { step_matches_gpu_head(48, "block5_conv1", 0, OPTIM_ADAM); }
Test(gpu_walk, step_rmsprop_images_block5_gpu_head) { step_matches_gpu_head(48, "block5_conv1", 0, OPTIM_RMSPROP); }
Test(gpu_walk, step_sgd_images_block4_gpu_head) { step_matches_gpu_head(64, "block4_conv1", 0, OPTIM_SGD); }
Test(gpu_walk, step_adam_images_block4_gpu_head) { step_matches_gpu_head(64, "block4_conv1", 0, OPTIM_ADAM); }
Test(gpu_walk, step_sgd_cache_block5_gpu_head) { step_matches_gpu_head(64, "block5_conv1", 1, OPTIM_SGD); }
Test(gpu_walk, step_adam_cache_block5_gpu_head) { step_matches_gpu_head(64, "block5_conv1", 1, OPTIM_ADAM); }
Test(gpu_walk, step_rmsprop_cache_block5_gpu_head) { step_matches_gpu_head(64, "block5_conv1", 1, OPTIM_RMSPROP); }
// VGGFT_GPU_AUTOTUNE=1: the algorithms ranked by timing them
// (cudnnFind...Algorithm, PyTorch's cudnn.benchmark) instead of by cuDNN's
// heuristics; the same rule over the list (deterministic first, in the
// descriptor's math), the same agreement with the CPU.
Test(gpu_walk, autotuned_step_sgd_images_block4_gpu_head) {
    setenv("VGGFT_GPU_AUTOTUNE", "1", 1);
    step_matches_gpu_head(64, "block4_conv1", 0, OPTIM_SGD);
}

// Softmax over 3 classes, and sample weights (class weights), dropout on:
// the CPU head against the CPU step once, the device head twice.
Test(gpu_walk, step_sgd_images_block5_softmax3_gpu_head) {
    step_matches_head(48, "block5_conv1", 0, OPTIM_SGD, ON_GPU_HEAD, 3, 0);
}
Test(gpu_walk, step_adam_cache_block5_softmax3_weighted) {
    step_matches_head(64, "block5_conv1", 1, OPTIM_ADAM, ON_GPU, 3, 1);
}
Test(gpu_walk, step_adam_cache_block5_softmax3_weighted_gpu_head) {
    step_matches_head(64, "block5_conv1", 1, OPTIM_ADAM, ON_GPU_HEAD, 3, 1);
}
Test(gpu_walk, step_sgd_cache_block5_weighted_gpu_head) {
    step_matches_head(64, "block5_conv1", 1, OPTIM_SGD, ON_GPU_HEAD, 2, 1);
}
// Each variant at once (see `variant`): 48x80 images, RMSprop with
// momentum, dropout 0.3, the first batch partial; the head on each device.
static void step_variants(int dev) {
    variant.width = 80, variant.dropout = 0.3f, variant.rms_momentum = 0.9f, variant.partial_first = 1;
    step_matches_head(48, "block5_conv1", 0, OPTIM_RMSPROP, dev, 2, 0);
}
Test(gpu_walk, step_variants_48x80_rmsprop_momentum_dropout_partial_first) { step_variants(ON_GPU); }
Test(gpu_walk, step_variants_48x80_rmsprop_momentum_dropout_partial_first_gpu_head) { step_variants(ON_GPU_HEAD); }

// The weights and first optimizer slot of every trainable layer of two
// sides, brought back from their devices: the same bits.
static void expect_same_state(Side *a, Side *b) {
    cr_assert_eq(walk_download(&a->w, &a->m, a->slots), 0, "%s", err_msg());
    cr_assert_eq(walk_download(&b->w, &b->m, b->slots), 0, "%s", err_msg());
    for (int i = a->w.first_trainable; i < a->m.n_layers; i++) {
        const Layer *la = &a->m.layers[i], *lb = &b->m.layers[i];
        if (!la->n_kernel) continue;
        cr_expect(!memcmp(la->kernel, lb->kernel, (size_t)la->n_kernel * sizeof(float)), "%s kernel differs",
                  la->name);
        cr_expect(!memcmp(la->bias, lb->bias, (size_t)la->n_bias * sizeof(float)), "%s bias differs", la->name);
        if (optim_slots(&a->o) > 0)
            cr_expect(!memcmp(HEAD_SLOTS(a->slots, i, 0)[0], HEAD_SLOTS(b->slots, i, 0)[0],
                              (size_t)la->n_kernel * sizeof(float)),
                      "%s slot 0 differs", la->name);
    }
}

// The same steps from the same state on two GPU walks give the same bits:
// the algorithms are deterministic and chosen without timing, and our
// kernels sum in a fixed order.
static void rerun_same_bits(int dev) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 0.01f, o.momentum = 0.9f;
    const int cap = 4;
    Side a, b;
    side_init(&a, 64, "block4_conv1", 0, &o, cap, dev);
    side_init(&b, 64, "block4_conv1", 0, &o, cap, dev);
    const long item = a.w.in_size;
    float *x = urand((size_t)cap * item, -120, 130, 41);
    int32_t labels[4] = {1, 0, 0, 1};
    for (int s = 0; s < 2; s++) {
        float la = side_step(&a, x, labels, cap - s), lb = side_step(&b, x, labels, cap - s);
        cr_expect_eq(la, lb, "step %d: loss %.9g vs %.9g", s + 1, la, lb);
    }
    expect_same_state(&a, &b);
    free(x);
    side_free(&a);
    side_free(&b);
}

Test(gpu_walk, rerun_gives_the_same_bits) { rerun_same_bits(ON_GPU); }
Test(gpu_walk, rerun_gives_the_same_bits_gpu_head) { rerun_same_bits(ON_GPU_HEAD); }

// finetune's loop on the GPU: a step queued (finetune_step_begin), the next
// batch written into the walk's other buffer and its upload started
// (walk_prefetch) while the step runs, then finetune_step_end. Three steps
// (the last one padded) give the bits of the same steps taken one at a time
// through one buffer: a staged upload that lands in the buffer the next
// step does not read, a step that reads the other buffer's older batch, or
// a result read before the step ended (the emulation's page-locked buffers
// hold the old bytes until a wait) fails it. The same for validation's
// predictions (walk_predict_begin / _end), and a staged batch dropped
// (walk_prefetch NULL) is not used. from_cache: the trainable layers read
// the input buffer itself, in the backward pass too. From images the staged
// batch's frozen layers run beside the step (overlap: the default) or in
// its own step (VGGFT_GPU_OVERLAP=0); under EMU_SCHEDULE=interleave
// (make test-emu-interleave) a staged frozen pass that did not wait for the
// frozen layers' scratch to be free fails it too.
static void pipelined_steps(int from_cache, int overlap) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 0.01f, o.momentum = 0.9f;
    const int cap = 4, steps = 3, N[3] = {4, 4, 3};
    Side a, b;
    side_init(&a, 48, "block5_conv1", from_cache, &o, cap, ON_GPU_HEAD);
    const char *env = getenv("VGGFT_GPU_OVERLAP");  // a run of the suite with VGGFT_GPU_OVERLAP=0: kept
    overlap = overlap && env_flag("VGGFT_GPU_OVERLAP", 1);
    if (!overlap) setenv("VGGFT_GPU_OVERLAP", "0", 1);
    side_init(&b, 48, "block5_conv1", from_cache, &o, cap, ON_GPU_HEAD);
    if (!env) unsetenv("VGGFT_GPU_OVERLAP");
    char plan[2000];
    gpu_walk_describe(b.w.gpu, plan, sizeof plan);
    cr_expect(!strstr(plan, "frozen layers during the step") == (from_cache || !overlap), "%s", plan);
    const long item = a.w.in_size;
    const size_t batch = (size_t)cap * (size_t)item;
    float *x = urand(3 * batch, from_cache ? 0 : -120, 130, 61);
    const int32_t labels[3][4] = {{1, 0, 0, 1}, {0, 1, 1, 0}, {1, 1, 0, 0}};
    float la[3], lb[3], pa[3][4], pb[3][4];
    for (int s = 0; s < steps; s++) {
        memcpy(a.w.input, x + s * batch, (size_t)N[s] * item * sizeof(float));
        la[s] = side_step(&a, a.w.input, labels[s], N[s]);
        memcpy(pa[s], a.hb.probs, (size_t)N[s] * sizeof(float));
    }
    float *buf[2] = {b.w.input, b.w.input_next};
    memcpy(buf[0], x, (size_t)N[0] * item * sizeof(float));
    for (int s = 0; s < steps; s++) {
        cr_assert_eq(finetune_step_begin(&b.w, &b.hb, &b.g, &b.o, b.slots, buf[s % 2], labels[s], NULL, N[s], 5), 0,
                     "%s", err_msg());
        if (s + 1 < steps) {
            memcpy(buf[(s + 1) % 2], x + (s + 1) * batch, (size_t)N[s + 1] * item * sizeof(float));
            cr_assert_eq(walk_prefetch(&b.w, buf[(s + 1) % 2], N[s + 1]), 0, "%s", err_msg());
        }
        cr_assert_eq(finetune_step_end(&b.w, &b.hb, &lb[s]), 0, "%s", err_msg());
        optim_step_done(&b.o);
        memcpy(pb[s], b.hb.probs, (size_t)N[s] * sizeof(float));
        cr_expect_eq(la[s], lb[s], "step %d: loss %.9g one at a time, %.9g overlapped", s + 1, la[s], lb[s]);
        cr_expect(!memcmp(pa[s], pb[s], (size_t)N[s] * sizeof(float)), "step %d: the probabilities differ", s + 1);
    }
    expect_same_state(&a, &b);
    // Validation's order: predictions queued, the next batch sent meanwhile.
    for (int s = 0; s < steps; s++) {
        memcpy(a.w.input, x + s * batch, (size_t)N[s] * item * sizeof(float));
        cr_assert_eq(walk_predict(&a.w, &a.hb, a.w.input, N[s]), 0, "%s", err_msg());
        memcpy(pa[s], a.hb.probs, (size_t)N[s] * sizeof(float));
    }
    memcpy(buf[0], x, (size_t)N[0] * item * sizeof(float));
    for (int s = 0; s < steps; s++) {
        cr_assert_eq(walk_predict_begin(&b.w, &b.hb, buf[s % 2], N[s]), 0, "%s", err_msg());
        if (s + 1 < steps) {
            memcpy(buf[(s + 1) % 2], x + (s + 1) * batch, (size_t)N[s + 1] * item * sizeof(float));
            cr_assert_eq(walk_prefetch(&b.w, buf[(s + 1) % 2], N[s + 1]), 0, "%s", err_msg());
        }
        cr_assert_eq(walk_predict_end(&b.w, &b.hb), 0, "%s", err_msg());
        cr_expect(!memcmp(pa[s], b.hb.probs, (size_t)N[s] * sizeof(float)), "prediction %d: the probabilities differ",
                  s + 1);
    }
    // A batch staged and then dropped: its buffer changes, and the next
    // prediction on it uploads the new contents.
    memcpy(buf[1], x, (size_t)cap * item * sizeof(float));
    cr_assert_eq(walk_prefetch(&b.w, buf[1], cap), 0, "%s", err_msg());
    // (A download waits for every stream: the staged copy has read buf[1].)
    cr_assert_eq(walk_download(&b.w, &b.m, b.slots), 0, "%s", err_msg());
    cr_assert_eq(walk_prefetch(&b.w, NULL, 0), 0, "%s", err_msg());
    memcpy(buf[1], x + batch, (size_t)cap * item * sizeof(float));
    cr_assert_eq(walk_predict(&b.w, &b.hb, buf[1], cap), 0, "%s", err_msg());
    memcpy(a.w.input, x + batch, (size_t)cap * item * sizeof(float));
    cr_assert_eq(walk_predict(&a.w, &a.hb, a.w.input, cap), 0, "%s", err_msg());
    cr_expect(!memcmp(a.hb.probs, b.hb.probs, (size_t)cap * sizeof(float)), "the dropped batch was used");
    // A batch staged, then new weights uploaded (a frozen layer's too): its
    // prediction runs the new ones, not the frozen output staged before.
    if (!from_cache) {
        memcpy(buf[0], x + batch, (size_t)cap * item * sizeof(float));
        cr_assert_eq(walk_prefetch(&b.w, buf[0], cap), 0, "%s", err_msg());
        for (Side *sd = &a; sd; sd = sd == &a ? &b : NULL) {
            cr_assert_eq(walk_download(&sd->w, &sd->m, sd->slots), 0, "%s", err_msg());
            Layer *l = &sd->m.layers[1];
            cr_assert(l->kind == LAYER_CONV && !l->trainable, "%s", l->name);
            for (long k = 0; k < l->n_kernel; k++) l->kernel[k] *= 0.5f;
            cr_assert_eq(walk_upload(&sd->w, sd->slots), 0, "%s", err_msg());
        }
        cr_assert_eq(walk_predict(&b.w, &b.hb, buf[0], cap), 0, "%s", err_msg());
        memcpy(a.w.input, x + batch, (size_t)cap * item * sizeof(float));
        cr_assert_eq(walk_predict(&a.w, &a.hb, a.w.input, cap), 0, "%s", err_msg());
        cr_expect(!memcmp(a.hb.probs, b.hb.probs, (size_t)cap * sizeof(float)),
                  "a batch staged before an upload ran the old frozen weights");
    }
    // The halves in their order only.
    float loss;
    cr_expect_eq(finetune_step_end(&b.w, &b.hb, &loss), -1, "an end without a step");
    cr_expect(strstr(err_msg(), "no step under way"), "%s", err_msg());
    cr_assert_eq(finetune_step_begin(&b.w, &b.hb, &b.g, &b.o, b.slots, buf[0], labels[0], NULL, 2, 5), 0, "%s",
                 err_msg());
    cr_expect_eq(finetune_step_begin(&b.w, &b.hb, &b.g, &b.o, b.slots, buf[0], labels[0], NULL, 2, 5), -1,
                 "a second begin");
    cr_expect(strstr(err_msg(), "under way"), "%s", err_msg());
    cr_expect_eq(walk_download(&b.w, &b.m, b.slots), -1, "weights downloaded during a step");
    cr_expect(strstr(err_msg(), "under way"), "%s", err_msg());
    cr_expect_eq(walk_predict_end(&b.w, &b.hb), -1, "a prediction's end after a step's begin");
    cr_expect_eq(finetune_step_end(&b.w, &b.hb, &loss), 0, "%s", err_msg());
    cr_expect(isfinite(loss));
    free(x);
    side_free(&a);
    side_free(&b);
}

Test(gpu_walk, overlapped_steps_equal_steps_one_at_a_time) { pipelined_steps(0, 1); }
Test(gpu_walk, overlapped_steps_equal_steps_one_at_a_time_from_a_cache) { pipelined_steps(1, 1); }
// VGGFT_GPU_OVERLAP=0: the next batch's frozen layers left to its step.
Test(gpu_walk, overlapped_steps_equal_steps_one_at_a_time_frozen_layers_in_the_step) { pipelined_steps(0, 0); }

// VGGFT_GPU_GRAPH=1: a whole batch's step captured once per input buffer as
// a CUDA graph and replayed (kernels/gpu_walk.cu, graph_for). finetune's
// loop (steps begun, the next batch staged meanwhile) with graphs gives the
// bits of the same loop without: Adam (its alpha changes every step),
// dropout (its seed too), other labels every step, sample weights on and
// then off (a graph captured with them is captured again without), a
// padded batch (not a graph) and predictions between steps. A graph that
// replayed any step's value as it was at its capture, or read the input
// buffer it was captured with instead of the step's, fails it; the
// profile's count of graph launches shows they ran. fail (the emulation
// only: EMU_GRAPH_FAIL, tests/emu/gpu_emu.cpp): "capture" makes every
// capture fail, "launch" every graph's launch; the walk warns and queues
// the steps one by one from then on, the same bits. "unsafe" fails the
// captures that are not in relaxed mode (as a library's cudaMalloc inside
// one would): the walk captures in relaxed mode instead, graphs as usual.
static void graph_steps(int from_cache, const char *fail) {
    need_gpu();
    if (fail && !test_gpu_emulated()) cr_skip_test("EMU_GRAPH_FAIL is the emulation's");
    Optimizer o;
    optim_defaults(&o, OPTIM_ADAM);
    o.lr = 1e-3f;
    const int cap = 4, steps = 9;
    const int N[9] = {4, 4, 4, 3, 4, 4, 4, 4, 4};
    Side a, b;
    // "false" (an on/off word, env_flag) turns graphs off: it turned them on before.
    setenv("VGGFT_GPU_GRAPH", "false", 1);
    side_init(&a, 48, "block5_conv1", from_cache, &o, cap, ON_GPU_HEAD);
    setenv("VGGFT_GPU_GRAPH", "1", 1);
    setenv("VGGFT_GPU_PROFILE", "1", 1);
    side_init(&b, 48, "block5_conv1", from_cache, &o, cap, ON_GPU_HEAD);
    unsetenv("VGGFT_GPU_GRAPH");
    unsetenv("VGGFT_GPU_PROFILE");
    char plan[2000];
    gpu_walk_describe(b.w.gpu, plan, sizeof plan);
    cr_expect(strstr(plan, "steps as CUDA graphs"), "%s", plan);
    gpu_walk_describe(a.w.gpu, plan, sizeof plan);
    cr_expect(!strstr(plan, "CUDA graphs"), "%s", plan);
    const long item = a.w.in_size;
    const size_t batch = (size_t)cap * (size_t)item;
    float *x = urand(steps * batch, from_cache ? 0 : -120, 130, 67);
    const float weights[4] = {0.5f, 2.0f, 1.0f, 1.5f};
    if (fail) setenv("EMU_GRAPH_FAIL", fail, 1);
    for (Side *sd = &a; sd; sd = sd == &a ? &b : NULL) {
        float *buf[2] = {sd->w.input, sd->w.input_next};
        memcpy(buf[0], x, (size_t)N[0] * item * sizeof(float));
        for (int s = 0; s < steps; s++) {
            int32_t labels[4];
            for (int i = 0; i < 4; i++) labels[i] = (s * 7 + i * 3) % 5 < 2;
            // Sample weights in steps 3 to 6: a graph without, then with, then without again.
            const float *sw = s >= 2 && s < 6 ? weights : NULL;
            cr_assert_eq(finetune_step_begin(&sd->w, &sd->hb, &sd->g, &sd->o, sd->slots, buf[s % 2], labels, sw, N[s],
                                             11),
                         0, "%s", err_msg());
            if (s + 1 < steps) {
                memcpy(buf[(s + 1) % 2], x + (s + 1) * batch, (size_t)N[s + 1] * item * sizeof(float));
                cr_assert_eq(walk_prefetch(&sd->w, buf[(s + 1) % 2], N[s + 1]), 0, "%s", err_msg());
            }
            float loss;
            cr_assert_eq(finetune_step_end(&sd->w, &sd->hb, &loss), 0, "%s", err_msg());
            optim_step_done(&sd->o);
            static float la[9], pa[9][4];
            if (sd == &a) {
                la[s] = loss;
                memcpy(pa[s], sd->hb.probs, (size_t)N[s] * sizeof(float));
            } else {
                cr_expect_eq(la[s], loss, "step %d: loss %.9g queued one by one, %.9g with graphs", s + 1, la[s], loss);
                cr_expect(!memcmp(pa[s], sd->hb.probs, (size_t)N[s] * sizeof(float)),
                          "step %d: the probabilities differ", s + 1);
            }
            if (s == 4) {
                // A prediction between steps (validation's, through the
                // other buffer): its results then the next step's.
                walk_prefetch(&sd->w, NULL, 0);
                float *other = buf[(s + 1) % 2] == sd->w.input ? sd->w.input_next : sd->w.input;
                memcpy(other, x, batch * sizeof(float));
                cr_assert_eq(walk_predict(&sd->w, &sd->hb, other, cap), 0, "%s", err_msg());
                static float pred[4];
                if (sd == &a) memcpy(pred, sd->hb.probs, sizeof pred);
                else cr_expect(!memcmp(pred, sd->hb.probs, sizeof pred), "the prediction between steps differs");
                // Staged again: the prediction took the other buffer's place.
                cr_assert_eq(walk_prefetch(&sd->w, buf[(s + 1) % 2], N[s + 1]), 0, "%s", err_msg());
            }
        }
    }
    unsetenv("EMU_GRAPH_FAIL");
    expect_same_state(&a, &b);
    // Queued one by one: step 1 (no step had ended: nothing captured yet)
    // and the padded step 4; the 7 others were graphs' launches.
    char prof[2000];
    cr_assert(gpu_walk_profile(b.w.gpu, prof, sizeof prof), "no profile");
    // From images, the frozen layers of every staged batch ran beside the
    // step before it (VGGFT_GPU_OVERLAP): all but the first step's.
    // The steps queued one by one timed their own frozen layers only where
    // they ran them: the first step's (and with VGGFT_GPU_OVERLAP=0 every one's).
    const int relaxed = fail && !strcmp(fail, "unsafe"), overlap = env_flag("VGGFT_GPU_OVERLAP", 1);
    const int queued = fail && !relaxed ? 9 : 2;
    char frozen_in[64];
    snprintf(frozen_in, sizeof frozen_in, "frozen layers (in %d of these steps)", overlap ? 1 : queued);
    if (!from_cache) {
        cr_expect(strstr(prof, frozen_in), "%s: %s", frozen_in, prof);
        cr_expect(!overlap == !strstr(prof, "; 8 steps' frozen layers beside the step before them"), "%s", prof);
    } else {
        cr_expect(!strstr(prof, "frozen layers"), "%s", prof);
    }
    if (!fail || relaxed) {
        cr_expect(strstr(prof, " 2 steps queued one by one") && strstr(prof, " 7 steps as a CUDA graph"), "%s", prof);
        // Three captures: buffer 0, buffer 1, buffer 1 again without sample weights.
        cr_expect(strstr(prof, relaxed ? "(3 captures in relaxed mode," : "(3 captures,"), "%s", prof);
    } else {
        // One capture at step 2 (tried in thread-local, then relaxed mode), then graphs off.
        cr_expect(strstr(prof, " 9 steps queued one by one") && !strstr(prof, "CUDA graph"), "%s", prof);
        gpu_walk_describe(b.w.gpu, plan, sizeof plan);
        cr_expect(!strstr(plan, "CUDA graphs"), "graphs still on after a failed %s: %s", fail, plan);
    }
    free(x);
    side_free(&a);
    side_free(&b);
}

Test(gpu_walk, graph_steps_equal_steps_queued_one_by_one) { graph_steps(0, NULL); }
Test(gpu_walk, graph_steps_equal_steps_queued_one_by_one_from_a_cache) { graph_steps(1, NULL); }
Test(gpu_walk, graph_capture_that_fails_falls_back_to_steps_queued_one_by_one) { graph_steps(0, "capture"); }
Test(gpu_walk, graph_launch_that_fails_falls_back_to_steps_queued_one_by_one) { graph_steps(1, "launch"); }
Test(gpu_walk, graph_capture_that_a_potentially_unsafe_call_fails_is_captured_in_relaxed_mode) {
    graph_steps(0, "unsafe");
}

// The seeds' fine-tuning shape (150x150 images, block5 and the head
// trainable, batch 20): images/s of finetune_step on the GPU, data loading
// left out. Prints the figure; fails only far below any working GPU (a
// kernel launched with one block, a sync per element...). On the emulated
// GPU one step, untimed: the seeds' shape runs through.
static void throughput(int dev) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 1e-4f, o.momentum = 0.9f;
    const int emulated = test_gpu_emulated();
    const int cap = 20, steps = emulated ? 1 : 20;
    Side g;
    side_init(&g, 150, "block5_conv1", 0, &o, cap, dev);
    const long item = g.w.in_size;
    float *x = urand((size_t)cap * item, -120, 130, 51);
    int32_t labels[20];
    for (int i = 0; i < cap; i++) labels[i] = i % 2;
    side_step(&g, x, labels, cap);  // warm-up: lazy loading of cuDNN's kernels
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int s = 0; s < steps; s++) cr_assert(isfinite(side_step(&g, x, labels, cap)));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    double ips = steps * cap / secs;
    char plan[2000];
    gpu_walk_describe(g.w.gpu, plan, sizeof plan);
    fprintf(stderr, "gpu_walk: finetune_step at 150x150, block5 + head (on the %s), batch 20: %.0f images/s (%.2f ms "
                    "a step; base %.2f s, head %.2f s, head update %.2f s in all)\n  %s\n",
            dev == ON_GPU_HEAD ? "GPU" : "CPU", ips, 1e3 * secs / steps, g.w.times.trainable, g.w.times.head,
            g.w.times.update, plan);
    if (!emulated) cr_expect_gt(ips, 100.0, "%.0f images/s", ips);
    free(x);
    side_free(&g);
}

Test(gpu_walk, throughput_150_block5_batch_20) { throughput(ON_GPU); }
Test(gpu_walk, throughput_150_block5_batch_20_gpu_head) { throughput(ON_GPU_HEAD); }

// --- host copies ----------------------------------------------------------------------

// After steps on the GPU: download, upload, download gives the same bits;
// and the CPU's state uploaded into a GPU walk (a CPU checkpoint resumed on
// the GPU) steps on like the CPU.
// dev ON_GPU_HEAD: the head's layers make the round trip too.
static void round_trip(int dev) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, OPTIM_ADAM);
    const int cap = 3;
    Side c, g;
    side_init(&c, 64, "block5_conv1", 1, &o, cap, ON_CPU);
    side_init(&g, 64, "block5_conv1", 1, &o, cap, dev);
    const long item = c.w.in_size;
    float *x = urand((size_t)cap * item, 0, 2, 21), *x2 = urand((size_t)cap * item, 0, 2, 22);
    int32_t labels[3] = {1, 0, 1};
    side_step(&g, x, labels, cap);
    side_step(&g, x2, labels, cap);
    // Round trip: the same bits.
    // The layers whose state lives on the device: the trainable base's, and the head's (the default).
    const int ft = g.w.first_trainable, nb = dev == ON_GPU_HEAD ? g.m.n_layers : g.m.n_base;
    cr_assert_eq(walk_download(&g.w, &g.m, g.slots), 0, "%s", err_msg());
    size_t total = 0;
    for (int i = ft; i < nb; i++) total += (size_t)(g.m.layers[i].n_kernel + g.m.layers[i].n_bias) * 3;
    float *a = malloc(total * sizeof(float)), *b = malloc(total * sizeof(float));
    float *dst[2] = {a, b};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            // Scribble over the host copies, upload what pass 0 read, read back.
            float *p = a;
            for (int i = ft; i < nb; i++) {
                Layer *l = &g.m.layers[i];
                if (!l->n_kernel) continue;
                memcpy(l->kernel, p, (size_t)l->n_kernel * sizeof(float)), p += l->n_kernel;
                memcpy(l->bias, p, (size_t)l->n_bias * sizeof(float)), p += l->n_bias;
                for (int t = 0; t < 2; t++)
                    for (int k = 0; k < 2; k++) {
                        size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
                        memcpy(HEAD_SLOTS(g.slots, i, t)[k], p, n * sizeof(float)), p += n;
                    }
            }
            cr_assert_eq(walk_upload(&g.w, g.slots), 0, "%s", err_msg());
            for (int i = ft; i < nb; i++) {
                Layer *l = &g.m.layers[i];
                if (!l->n_kernel) continue;
                memset(l->kernel, 0xff, (size_t)l->n_kernel * sizeof(float));
                for (int t = 0; t < 2; t++)
                    for (int k = 0; k < 2; k++)
                        memset(HEAD_SLOTS(g.slots, i, t)[k], 0xff, (size_t)(t ? l->n_bias : l->n_kernel) * sizeof(float));
            }
            cr_assert_eq(walk_download(&g.w, &g.m, g.slots), 0, "%s", err_msg());
        }
        float *p = dst[pass];
        for (int i = ft; i < nb; i++) {
            const Layer *l = &g.m.layers[i];
            if (!l->n_kernel) continue;
            memcpy(p, l->kernel, (size_t)l->n_kernel * sizeof(float)), p += l->n_kernel;
            memcpy(p, l->bias, (size_t)l->n_bias * sizeof(float)), p += l->n_bias;
            for (int t = 0; t < 2; t++)
                for (int k = 0; k < 2; k++) {
                    size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
                    memcpy(p, HEAD_SLOTS(g.slots, i, t)[k], n * sizeof(float)), p += n;
                }
        }
    }
    cr_expect(!memcmp(a, b, total * sizeof(float)), "download -> upload -> download changed the bits");

    // The CPU's state after the same two steps, uploaded to the GPU (as a
    // resumed run does after reading a CPU checkpoint), steps on like the CPU.
    side_step(&c, x, labels, cap);
    side_step(&c, x2, labels, cap);
    for (int i = ft; i < c.m.n_layers; i++) {
        Layer *lc = &c.m.layers[i], *lg = &g.m.layers[i];
        if (!lc->n_kernel) continue;
        memcpy(lg->kernel, lc->kernel, (size_t)lc->n_kernel * sizeof(float));
        memcpy(lg->bias, lc->bias, (size_t)lc->n_bias * sizeof(float));
        for (int t = 0; t < 2; t++)
            for (int k = 0; k < 2; k++)
                memcpy(HEAD_SLOTS(g.slots, i, t)[k], HEAD_SLOTS(c.slots, i, t)[k],
                       (size_t)(t ? lc->n_bias : lc->n_kernel) * sizeof(float));
    }
    cr_assert_eq(walk_upload(&g.w, g.slots), 0, "%s", err_msg());
    float **w0 = calloc((size_t)c.m.n_layers, sizeof(float *));
    for (int i = ft; i < c.m.n_layers; i++) {
        const Layer *l = &c.m.layers[i];
        if (!l->n_kernel) continue;
        w0[i] = malloc((size_t)(l->n_kernel + l->n_bias) * sizeof(float));
        memcpy(w0[i], l->kernel, (size_t)l->n_kernel * sizeof(float));
        memcpy(w0[i] + l->n_kernel, l->bias, (size_t)l->n_bias * sizeof(float));
    }
    float lc = side_step(&c, x, labels, cap), lg = side_step(&g, x, labels, cap);
    fprintf(stderr, "gpu_walk: resumed step: loss cpu %.7g gpu %.7g\n", lc, lg);
    cr_expect_leq(fabsf(lg - lc), TOL_LOSS * fmaxf(1, fabsf(lc)), "loss gpu %g cpu %g", lg, lc);
    compare_state("CPU state resumed on the GPU", &c, &g, w0);
    for (int i = 0; i < c.m.n_layers; i++) free(w0[i]);
    free(w0), free(a), free(b), free(x), free(x2);
    side_free(&c);
    side_free(&g);
}

// walk_upload sends the host weights of every layer from `from`, the
// frozen ones too (and their bf16 copies): after a checkpoint's weights are
// loaded on the host, the walk computes what a walk made from them does.
// Here a frozen conv's kernel is negated on the host after the walk was
// made: the features equal a fresh walk's, bit for bit.
static void upload_frozen(GpuPrecision p) {
    need_gpu();
    Model m1 = build(48, "block4_conv1", 7), m2 = build(48, "block4_conv1", 7);
    const int cap = 2;
    BaseWalk w1, w2;
    unsetenv("VGGFT_GPU_HEAD");  // the default (the head on the device), whatever the environment
    cr_assert_eq(walk_alloc_device(&w1, &m1, 1, cap, 1, p), 0, "%s", err_msg());
    const int b2 = model_find_layer(&m1, "block2_conv1");
    cr_assert_gt(b2, 0);
    cr_assert_lt(b2, m1.first_trainable_base, "block2_conv1 is frozen");
    for (long i = 0; i < m1.layers[b2].n_kernel; i++) {
        m1.layers[b2].kernel[i] = -m1.layers[b2].kernel[i];
        m2.layers[b2].kernel[i] = -m2.layers[b2].kernel[i];
    }
    cr_assert_eq(walk_upload(&w1, NULL), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc_device(&w2, &m2, 1, cap, 1, p), 0, "%s", err_msg());
    const long F = model_feature_size(&m1);
    float *x = urand((size_t)cap * w1.in_size, -120, 130, 5);
    cr_assert_eq(walk_forward(&w1, x, cap), 0, "%s", err_msg());
    cr_assert_eq(walk_forward(&w2, x, cap), 0, "%s", err_msg());
    cr_expect_gt(max_abs(w2.features, (size_t)(cap * F)), 0.0f);
    cr_expect(!memcmp(w1.features, w2.features, (size_t)(cap * F) * sizeof(float)),
              "%s: the uploaded frozen weights are not the ones the walk runs with (max |diff| %g)",
              gpu_precision_name(p), max_abs_diff(w1.features, w2.features, (size_t)(cap * F)));
    free(x);
    walk_free(&w1), walk_free(&w2);
    model_free(&m1), model_free(&m2);
}
Test(gpu_walk, upload_sends_the_frozen_weights) {
    upload_frozen(GPU_FP32);
    upload_frozen(GPU_BF16);
}

Test(gpu_walk, download_upload_round_trip_and_cross_device_resume) { round_trip(ON_GPU); }
Test(gpu_walk, download_upload_round_trip_and_cross_device_resume_gpu_head) { round_trip(ON_GPU_HEAD); }

// --- learning --------------------------------------------------------------------------

// Two classes of block4_pool-like inputs (each a fixed pattern plus noise):
// 12 steps on the GPU lower the loss over the set.
static void short_run(int dev) {
    need_gpu();
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 0.01f, o.momentum = 0.9f;
    const int n = 16, cap = 8;
    Side g;
    side_init(&g, 64, "block5_conv1", 1, &o, cap, dev);
    const long item = g.w.in_size;
    float *pat[2] = {urand((size_t)item, 0, 2, 31), urand((size_t)item, 0, 2, 32)};
    float *x = malloc((size_t)n * item * sizeof(float));
    int32_t labels[16];
    for (int i = 0; i < n; i++) {
        labels[i] = i % 2;
        float *noise = urand((size_t)item, -0.5f, 0.5f, 100 + i);
        for (long k = 0; k < item; k++) x[i * item + k] = fmaxf(0, pat[i % 2][k] + noise[k]);
        free(noise);
    }
    double before = 0, after = 0;
    for (int b = 0; b < n; b += cap) {
        cr_assert_eq(walk_predict(&g.w, &g.hb, x + b * item, cap), 0, "%s", err_msg());
        before += head_backward(&g.m, g.w.features, labels + b, NULL, cap, &g.hb, NULL, NULL);
    }
    for (int s = 0; s < 12; s++) {
        int b = (s % 2) * cap;
        float loss = side_step(&g, x + b * item, labels + b, cap);
        cr_assert(isfinite(loss));
    }
    for (int b = 0; b < n; b += cap) {
        cr_assert_eq(walk_predict(&g.w, &g.hb, x + b * item, cap), 0, "%s", err_msg());
        after += head_backward(&g.m, g.w.features, labels + b, NULL, cap, &g.hb, NULL, NULL);
    }
    fprintf(stderr, "gpu_walk: short run: loss %.4f before, %.4f after 12 steps\n", before / 2, after / 2);
    cr_expect_lt(after, 0.7 * before, "loss %g before, %g after", before / 2, after / 2);
    free(pat[0]), free(pat[1]), free(x);
    side_free(&g);
}

Test(gpu_walk, short_run_learns) { short_run(ON_GPU); }
Test(gpu_walk, short_run_learns_gpu_head) { short_run(ON_GPU_HEAD); }

// --- end to end: finetune --device cuda, checkpoints across devices -------------------------

static char *run_ok(const char *tool, const char *args) {
    char *out;
    int rc = run_tool_timeout(tool, args, 600, &out);
    cr_assert_eq(rc, 0, "%s %s exited %d:\n%s", tool, args, rc, out);
    return out;
}

// The trainable layers of two model files agree: relative L2 error of the
// change from `start` (the same for both) within tol.
static void expect_models_close(const char *what, const char *a, const char *b, const Model *start) {
    Model ma, mb;
    load_model_file(a, &ma);
    load_model_file(b, &mb);
    for (int i = 1; i < ma.n_layers; i++) {
        const Layer *la = &ma.layers[i], *lb = &mb.layers[i], *l0 = &start->layers[i];
        if (!la->n_kernel) continue;
        char w[300];
        snprintf(w, sizeof w, "%s: %s", what, la->name);
        if (!la->trainable) {
            cr_expect(!memcmp(la->kernel, lb->kernel, (size_t)la->n_kernel * sizeof(float)), "%s changed", w);
            continue;
        }
        expect_close_update(w, la->kernel, lb->kernel, l0->kernel, (size_t)la->n_kernel, TOL_ADAPTIVE_NORM, 0);
    }
    model_free(&ma);
    model_free(&mb);
}

// Two model files hold the same bits in every layer's weights.
static void expect_models_same_bits(const char *what, const char *a, const char *b) {
    Model ma, mb;
    load_model_file(a, &ma);
    load_model_file(b, &mb);
    for (int i = 1; i < ma.n_layers; i++) {
        const Layer *la = &ma.layers[i], *lb = &mb.layers[i];
        if (!la->n_kernel) continue;
        cr_expect(!memcmp(la->kernel, lb->kernel, (size_t)la->n_kernel * sizeof(float)) &&
                      !memcmp(la->bias, lb->bias, (size_t)la->n_bias * sizeof(float)),
                  "%s: %s differs", what, la->name);
    }
    model_free(&ma);
    model_free(&mb);
}

// Two `predict --format csv` outputs agree: the same images in the same
// order, and each class's probability within tol (the classes' order may
// differ where two are within tol of each other).
static void expect_predictions_close(const char *cpu, const char *gpu, double tol) {
    char *a = strdup(cpu), *b = strdup(gpu), *sa, *sb;
    int lines = 0;
    for (char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb); la || lb;
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), lines++) {
        cr_assert(la && lb, "line %d: one output ends early:\n%s\n---\n%s", lines, cpu, gpu);
        if (lines == 0) {
            cr_expect_str_eq(la, lb);  // the header
            continue;
        }
        char *ta[16], *tb[16], *s1, *s2;
        int na = 0, nb = 0;
        for (char *t = strtok_r(la, ",", &s1); t && na < 16; t = strtok_r(NULL, ",", &s1)) ta[na++] = t;
        for (char *t = strtok_r(lb, ",", &s2); t && nb < 16; t = strtok_r(NULL, ",", &s2)) tb[nb++] = t;
        cr_assert(na == nb && na >= 3 && na % 2 == 1, "line %d: %d and %d fields", lines, na, nb);
        cr_expect_str_eq(ta[0], tb[0], "line %d: another image", lines);
        for (int i = 1; i < na; i += 2) {
            int j = 1;
            while (j < nb && strcmp(ta[i], tb[j])) j += 2;
            cr_assert_lt(j, nb, "%s: class %s only on the CPU", ta[0], ta[i]);
            double pa = atof(ta[i + 1]), pb = atof(tb[j + 1]);
            cr_expect_leq(fabs(pa - pb), tol, "%s: %s %g on the CPU, %g on the GPU", ta[0], ta[i], pa, pb);
        }
    }
    cr_expect_gt(lines, 2, "predictions were printed");
    free(a), free(b);
}

// gpu_head: the GPU runs with the head on the device (the default; 0: VGGFT_GPU_HEAD=0; the CPU runs ignore it):
// the head's weights and slots go through the checkpoints from the device.
static void tool_runs(int gpu_head) {
    need_gpu();
    if (gpu_head) unsetenv("VGGFT_GPU_HEAD");
    else setenv("VGGFT_GPU_HEAD", "0", 1);
    char *dir = make_temp_dir("gpu_walk");
    char data[600], val[600], c5[600], vc5[600], head[600], args[4000], base[3000];
    snprintf(data, sizeof data, "%s/train", dir);
    snprintf(val, sizeof val, "%s/val", dir);
    snprintf(c5, sizeof c5, "%s/c5", dir);
    snprintf(vc5, sizeof vc5, "%s/vc5", dir);
    snprintf(head, sizeof head, "%s/head.h5", dir);
    make_disc_square_folder(data, 10, 1);
    make_disc_square_folder(val, 4, 500);
    const char *common = "--weights random --input-size 32 --threads 2 --quiet --device cpu";
    snprintf(args, sizeof args, "--data %s --cache %s %s", data, c5, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data %s --cache %s %s", val, vc5, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --epochs 2 --batch 8 --hidden 16 --threads 2 --quiet",
             c5, vc5, head);
    free(run_ok("train", args));
    snprintf(base, sizeof base,
             "--data %s --val-data %s --head %s --weights random --epochs 2 --batch 8 --lr 0.01 --momentum 0.9 "
             "--threads 2 --quiet --checkpoint-every 1",
             data, val, head);
    char cpu[700], gpu[700], g2c[700], c2g[700];
    snprintf(cpu, sizeof cpu, "%s/cpu.h5", dir);
    snprintf(gpu, sizeof gpu, "%s/gpu.h5", dir);
    snprintf(g2c, sizeof g2c, "%s/g2c.h5", dir);
    snprintf(c2g, sizeof c2g, "%s/c2g.h5", dir);
    snprintf(args, sizeof args, "%s --out %s --device cpu", base, cpu);
    free(run_ok("finetune", args));
    snprintf(args, sizeof args, "%s --out %s --device cuda", base, gpu);
    char *out = run_ok("finetune", args);
    cr_expect(strstr(out, "GPU 0"), "the run says it is on the GPU: %s", out);
    free(out);
    if (gpu_head) {
        // Steps as CUDA graphs (VGGFT_GPU_GRAPH=1): the same model, bit for
        // bit; the profile line counts the graphs' launches (2 epochs of 2
        // whole batches of 8 and one of 4: all but the first step and the
        // padded ones).
        char graph[700];
        snprintf(graph, sizeof graph, "%s/graph.h5", dir);
        snprintf(args, sizeof args, "%s --out %s --device cuda", base, graph);
        setenv("VGGFT_GPU_GRAPH", "1", 1);
        setenv("VGGFT_GPU_PROFILE", "1", 1);
        out = run_ok("finetune", args);
        unsetenv("VGGFT_GPU_GRAPH");
        unsetenv("VGGFT_GPU_PROFILE");
        cr_expect(strstr(out, " 3 steps as a CUDA graph") && !strstr(out, "warning"), "%s", out);
        free(out);
        expect_models_same_bits("steps as CUDA graphs vs queued one by one", graph, gpu);
    }
    // Stopped by SIGTERM after step 2 on one device, resumed on the other.
    const char *dev[2][2] = {{"cuda", "cpu"}, {"cpu", "cuda"}};
    const char *outs[2] = {g2c, c2g};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "%s --out %s --device %s", base, outs[k], dev[k][0]);
        setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "2", 1);
        int rc = run_tool_timeout("finetune", args, 600, &out);
        unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
        cr_assert_eq(rc, 75, "--device %s, SIGTERM: exit %d\n%s", dev[k][0], rc, out);
        free(out);
        snprintf(args, sizeof args, "%s --out %s --device %s --resume", base, outs[k], dev[k][1]);
        free(run_ok("finetune", args));
    }
    // The starting point: the random base finetune made (--weights random,
    // --seed 1) and the head.
    Model start;
    load_model_file(cpu, &start);  // the shapes; the weights replaced:
    char id[96];
    cr_assert_eq(load_base_weights(&start, "random", 1, 1, id, sizeof id), 0, "%s", err_msg());
    cr_assert_eq(model_load_head(&start, head), 0, "%s", err_msg());
    expect_models_close("GPU run vs CPU run", gpu, cpu, &start);
    expect_models_close("GPU checkpoint resumed on the CPU vs CPU run", g2c, cpu, &start);
    expect_models_close("CPU checkpoint resumed on the GPU vs CPU run", c2g, cpu, &start);
    model_free(&start);
    // predict on the GPU (its frozen base, the RGB8 input preprocessed on
    // the device, the trainable layers, the head) against the CPU, with the
    // fine-tuned model and with the head on its random base.
    const char *which[2][2] = {{"--model", gpu}, {"--head", head}};
    for (int k = 0; k < 2; k++) {
        char *p[2];
        for (int d = 0; d < 2; d++) {
            snprintf(args, sizeof args, "%s %s%s --format csv --batch 3 --threads 2 --quiet --device %s %s",
                     which[k][0], which[k][1], k ? " --weights random" : "", d ? "cuda" : "cpu", val);
            p[d] = run_ok("predict", args);
        }
        expect_predictions_close(p[0], p[1], 1e-4);
        free(p[0]), free(p[1]);
    }
    remove_tree(dir);
    free(dir);
}

Test(gpu_walk, finetune_tool_on_the_gpu_and_checkpoints_across_devices, .timeout = 900) { tool_runs(0); }
Test(gpu_walk, finetune_tool_gpu_head_and_checkpoints_across_devices, .timeout = 900) { tool_runs(1); }

// A step in lower precision against the CPU's strict float32 step, from
// the same weights and images (48x48, unfreezing from `unfreeze`): the
// features within feat_tol of the largest, the loss within loss_tol, and
// the first trainable conv's update within update_tol (relative L2): the
// step moves the weights the way the CPU's does.
static void low_precision_step(GpuPrecision p, const char *unfreeze, float feat_tol, float loss_tol, float update_tol) {
    need_gpu();
    const char *name = gpu_precision_name(p);
    Model mc = build(48, unfreeze, 7), mg = build(48, unfreeze, 7);
    const int cap = 4;
    BaseWalk wc, wg;
    unsetenv("VGGFT_GPU_HEAD");  // the default (the head on the device), whatever the environment
    cr_assert_eq(walk_alloc_device(&wc, &mc, 1, cap, 0, GPU_FP32), 0, "%s", err_msg());
    cr_assert_eq(walk_alloc_device(&wg, &mg, 1, cap, 1, p), 0, "%s", err_msg());
    const long item = wc.in_size, F = model_feature_size(&mc);
    float *x = urand((size_t)cap * item, -120, 130, 11);
    cr_assert_eq(walk_forward(&wc, x, cap), 0);
    cr_assert_eq(walk_forward(&wg, x, cap), 0, "%s", err_msg());
    char what[96];
    snprintf(what, sizeof what, "%s from %s: features", name, unfreeze);
    expect_close_max(what, wg.features, wc.features, (size_t)(cap * F), feat_tol);
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 0.01f;
    HeadBuffers hc, hg;
    Grads gc, gg;
    cr_assert_eq(head_buffers_alloc(&hc, &mc, cap), 0);
    cr_assert_eq(head_buffers_alloc(&hg, &mg, cap), 0);
    cr_assert_eq(grads_alloc(&gc, &mc, wc.first_trainable, mc.n_layers), 0);
    cr_assert_eq(grads_alloc(&gg, &mg, mg.n_base, mg.n_layers), 0);
    const Layer *l = &mc.layers[wc.first_trainable];
    float *w0 = malloc((size_t)l->n_kernel * sizeof(float));
    memcpy(w0, l->kernel, (size_t)l->n_kernel * sizeof(float));
    int32_t labels[4] = {0, 1, 1, 0};
    float lc, lg;
    cr_assert_eq(finetune_step(&wc, &hc, &gc, &o, NULL, x, labels, NULL, cap, 5, &lc), 0);
    cr_assert_eq(finetune_step(&wg, &hg, &gg, &o, NULL, x, labels, NULL, cap, 5, &lg), 0, "%s", err_msg());
    fprintf(stderr, "gpu_walk: %s from %s: loss cpu %.7g gpu %.7g\n", name, unfreeze, lc, lg);
    cr_expect_leq(fabsf(lg - lc), loss_tol * fmaxf(1, fabsf(lc)), "%s: loss gpu %g cpu %g", name, lg, lc);
    cr_assert_eq(walk_download(&wg, &mg, NULL), 0, "%s", err_msg());
    snprintf(what, sizeof what, "%s: %s kernel", name, l->name);
    expect_close_update(what, mg.layers[wg.first_trainable].kernel, l->kernel, w0, (size_t)l->n_kernel, update_tol,
                        0);
    free(w0), free(x);
    grads_free(&gc), grads_free(&gg);
    head_buffers_free(&hc), head_buffers_free(&hg);
    walk_free(&wc), walk_free(&wg);
    model_free(&mc), model_free(&mg);
}

// --precision tf32: every conv on tensor cores, forward and backward. The
// features stay within 2e-2 of the CPU's (TF32 rounds products to 10-bit
// mantissas: about 1e-3 measured for the frozen base), and a step moves
// the weights the way the CPU's step does. The update's bound, 0.15
// relative L2, is about twice what the GPU emulation's TF32 gives (make
// test-emu: inputs rounded to 10-bit mantissas, float sums: 0.063): at
// random weights and a loss near chance the gradient's sums cancel, so
// their inputs' rounding shows (the features: 6.7e-4). A backward pass
// that is wrong rather than rounded gives 1 or more.
Test(gpu_walk, tf32_step_near_the_cpu_step) { low_precision_step(GPU_TF32, "block5_conv1", 2e-2f, 1e-2f, 0.15f); }

// --precision bf16: the frozen layers are extract's bf16 base (bfloat16
// activations and kernels: 4e-3 to 8e-3 of the features measured there),
// the trainable convs TF32. From block5_conv1 the frozen run ends at a pool,
// from block5_conv2 at a conv, from block1_conv2 it is block1_conv1 alone
// (in TF32: a run's first conv takes float input). The updates' bounds are
// about twice the GPU emulation's figures (0.26, 0.23 and 0.10 relative L2;
// see the TF32 test above for why they are this large).
Test(gpu_walk, bf16_step_near_the_cpu_step) {
    low_precision_step(GPU_BF16, "block5_conv1", 5e-2f, 3e-2f, 0.5f);
    low_precision_step(GPU_BF16, "block5_conv2", 5e-2f, 3e-2f, 0.5f);
    low_precision_step(GPU_BF16, "block1_conv2", 2e-2f, 1e-2f, 0.25f);
}
