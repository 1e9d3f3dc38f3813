// Our frozen VGG16 conv base on the CPU, timed the way scripts/bench_keras.py
// times Keras's: base_forward_cpu (every conv, ReLU and pool to block5_pool,
// one image at a time as extract runs it) on one batch of preprocessed
// images, REPS times; prints the median and the best seconds per batch.
//
//   bench_base SIZE BATCH REPS THREADS [WEIGHTS.h5]
//
// VGGFT_WINOGRAD=0 in the environment times the direct convolution alone,
// =2, 3 or 4 Winograd F(2x2), F(3x3) or F(4x4) on every frozen conv,
// VGGFT_WINOGRAD_PLAN one method per conv layer (forward.h); by default the
// tools' per-layer choice. blas_setup picks the OpenBLAS kernel as the tools
// do (it may re-execute the program once with OPENBLAS_CORETYPE set).
//
//   bench_base layers SIZE REPS [THREADS]
//
// Each of the 13 convs of VGG16 at SIZE x SIZE, one image per call, on
// THREADS threads (default 1): the direct convolution, Winograd F(2x2),
// F(3x3) and F(4x4) timed in turn (A B C D A B C D ...: the machine's drift
// hits all alike), REPS rounds; prints the median ms of each, the medians of
// the per-round speed-ups over the direct convolution, and what conv_method
// chooses.
//
//   bench_base features SIZE IN.f32 OUT.f32 [WEIGHTS.h5]
//
// The base's features (block5_pool, float32) of the preprocessed images in
// IN.f32 (N x SIZE x SIZE x 3 float32, as scripts/winograd_accuracy.py
// writes them), as base_forward_cpu computes them under the environment's
// VGGFT_WINOGRAD, into OUT.f32.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas_setup.h"
#include "error.h"
#include "forward.h"
#include "model.h"
#include "model_io.h"
#include "layers.h"
#include "parallel.h"
#include "winograd.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
    qsort(t, n, sizeof *t, cmp_double);
    return t[n / 2];
}

static float *randbuf(size_t n, float lo, float hi) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    return p;
}

// Seconds per call of one conv (method 0: direct, else the Winograd tile),
// over enough calls to last >= 20 ms.
typedef struct {
    int H, W, C, K;
    float *in, *w, *bias, *out, *scratch, *U[5];
} LayerRun;

static void layer_call(const LayerRun *r, int method) {
    if (method) winograd_tile_forward(method, r->in, 1, r->H, r->W, r->C, r->U[method], r->bias, r->K, r->out, r->scratch, 1);
    else conv3x3_forward(r->in, 1, r->H, r->W, r->C, r->w, r->bias, r->K, r->out, r->scratch);
}

static double layer_time(const LayerRun *r, int method) {
    int calls = 0;
    double t0 = now(), t;
    do {
        layer_call(r, method);
        calls++;
    } while ((t = now() - t0) < 0.02);
    return t / calls;
}

// The methods timed: the direct convolution and Winograd's three tiles.
static const int METHODS[] = {0, 2, 3, 4};
#define N_METHODS 4

static int bench_layers(int size, int reps, int threads) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    Model m;
    if (model_build(&m, &cfg) < 0) return fprintf(stderr, "bench_base: %s\n", err_msg()), 1;
    printf("VGG16 at %dx%d, one image per call, %d thread(s), medians of %d interleaved rounds (ms; speed-up over "
           "direct):\n",
           size, size, threads, reps);
    printf("  %-13s %-15s %8s %8s %8s %8s %6s %6s %6s  %s\n", "layer", "shape", "direct", "F2", "F3", "F4", "F2 x",
           "F3 x", "F4 x", "chosen");
    double total[N_METHODS] = {0}, chosen_total = 0, best_total = 0;
    for (int i = 1; i < m.n_base; i++) {
        const Layer *l = &m.layers[i];
        if (l->kind != LAYER_CONV) continue;
        LayerRun r = {.H = l->in_h, .W = l->in_w, .C = l->in_c, .K = l->out_c};
        size_t scratch = conv3x3_scratch_floats(r.H, r.W, r.C);
        for (int k = 1; k < N_METHODS; k++) {
            size_t sw = winograd_tile_scratch_floats(METHODS[k], r.H, r.W, r.C, r.K);
            if (sw > scratch) scratch = sw;
        }
        r.in = randbuf((size_t)r.H * r.W * r.C, 0, 10);
        r.w = randbuf((size_t)9 * r.C * r.K, -0.05f, 0.05f);
        r.bias = randbuf(r.K, -0.5f, 0.5f);
        r.out = malloc((size_t)r.H * r.W * r.K * sizeof(float));
        r.scratch = malloc(scratch * sizeof(float));
        for (int k = 1; k < N_METHODS; k++) {
            int mt = METHODS[k];
            r.U[mt] = malloc(winograd_tile_kernel_floats(mt, r.C, r.K) * sizeof(float));
            winograd_tile_kernel_transform(mt, r.w, r.C, r.K, r.U[mt]);
        }
        double *t[N_METHODS], *x[N_METHODS], med[N_METHODS], speedup[N_METHODS];
        for (int k = 0; k < N_METHODS; k++) {
            t[k] = malloc(reps * sizeof(double)), x[k] = malloc(reps * sizeof(double));
            layer_call(&r, METHODS[k]);  // warm-up: page faults
        }
        for (int rep = 0; rep < reps; rep++) {
            for (int k = 0; k < N_METHODS; k++) t[k][rep] = layer_time(&r, METHODS[k]);
            for (int k = 0; k < N_METHODS; k++) x[k][rep] = t[0][rep] / t[k][rep];
        }
        int best = 0;
        for (int k = 0; k < N_METHODS; k++) {
            med[k] = median(t[k], reps), speedup[k] = median(x[k], reps), total[k] += med[k];
            if (med[k] < med[best]) best = k;
        }
        // What base_forward_layers runs for this layer when it is frozen.
        m.layers[i].trainable = 0;
        int chosen = conv_method(&m, i), ck = 0;
        for (int k = 0; k < N_METHODS; k++)
            if (METHODS[k] == chosen) ck = k;
        chosen_total += med[ck], best_total += med[best];
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d %d->%d", r.H, r.W, r.C, r.K);
        printf("  %-13s %-15s %8.2f %8.2f %8.2f %8.2f %6.2f %6.2f %6.2f  %s%s\n", l->name, shape, 1e3 * med[0],
               1e3 * med[1], 1e3 * med[2], 1e3 * med[3], speedup[1], speedup[2], speedup[3],
               chosen ? (const char *[]){"", "", "F2", "F3", "F4"}[chosen] : "direct", best == ck ? "" : " (not the fastest)");
        free(r.in), free(r.w), free(r.bias), free(r.out), free(r.scratch);
        for (int k = 1; k < N_METHODS; k++) free(r.U[METHODS[k]]);
        for (int k = 0; k < N_METHODS; k++) free(t[k]), free(x[k]);
    }
    printf("  all 13 convs (sums of medians, ms): direct %.1f, F2 %.1f, F3 %.1f, F4 %.1f; as chosen %.1f, fastest "
           "of each layer %.1f\n",
           1e3 * total[0], 1e3 * total[1], 1e3 * total[2], 1e3 * total[3], 1e3 * chosen_total, 1e3 * best_total);
    model_free(&m);
    return 0;
}

static int features(int size, const char *in_path, const char *out_path, const char *weights) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    Model m;
    BaseWorkspace ws;
    if (model_build(&m, &cfg) < 0 || model_alloc_weights(&m, 1, m.n_base) < 0 ||
        (weights ? model_load_base(&m, weights) : (model_init_random(&m, 1, m.n_base, 1), 0)) < 0 ||
        base_workspace_alloc(&ws, &m) < 0)
        return fprintf(stderr, "bench_base: %s\n", err_msg()), 1;
    FILE *f = fopen(in_path, "rb"), *g = fopen(out_path, "wb");
    if (!f || !g) return fprintf(stderr, "bench_base: cannot open %s or %s\n", in_path, out_path), 1;
    size_t in = (size_t)size * size * 3, D = model_feature_size(&m);
    float *x = malloc(in * sizeof(float)), *y = malloc(D * sizeof(float));
    while (fread(x, sizeof(float), in, f) == in) {
        base_forward_cpu(&m, x, 1, y, &ws);
        fwrite(y, sizeof(float), D, g);
    }
    fclose(f);
    return fclose(g) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "layers") == 0) {
        int threads = argc > 4 ? atoi(argv[4]) : 1;
        blas_setup(argv, threads, BLAS_NEEDED);
        parallel_set_threads(threads);
        return bench_layers(atoi(argv[2]), atoi(argv[3]), threads);
    }
    if (argc >= 5 && strcmp(argv[1], "features") == 0) {
        blas_setup(argv, 1, BLAS_NEEDED);
        return features(atoi(argv[2]), argv[3], argv[4], argc > 5 ? argv[5] : NULL);
    }
    if (argc < 5) {
        fprintf(stderr, "usage: bench_base SIZE BATCH REPS THREADS [WEIGHTS.h5]\n");
        return 2;
    }
    int size = atoi(argv[1]), batch = atoi(argv[2]), reps = atoi(argv[3]), threads = atoi(argv[4]);
    blas_setup(argv, threads, BLAS_NEEDED);
    parallel_set_threads(threads);  // the Winograd transforms' pool, as extract sets it
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    Model m;
    if (model_build(&m, &cfg) < 0 || model_alloc_weights(&m, 1, m.n_base) < 0) {
        fprintf(stderr, "bench_base: %s\n", err_msg());
        return 1;
    }
    if (argc > 5) {
        if (model_load_base(&m, argv[5]) < 0) {
            fprintf(stderr, "bench_base: %s\n", err_msg());
            return 1;
        }
    } else {
        model_init_random(&m, 1, m.n_base, 1);
    }
    size_t in = (size_t)size * size * 3;
    float *x = malloc(sizeof(float) * in * batch), *f = malloc(sizeof(float) * model_feature_size(&m) * batch);
    for (size_t i = 0; i < in * batch; i++) x[i] = (float)((i * 2654435761u) % 256) - 120.0f;  // caffe-like range
    BaseWorkspace ws;
    if (base_workspace_alloc(&ws, &m) < 0) {
        fprintf(stderr, "bench_base: %s\n", err_msg());
        return 1;
    }
    base_forward_cpu(&m, x, 1, f, &ws);  // warm-up: transformed kernels, page faults
    double *t = malloc(sizeof(double) * reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        base_forward_cpu(&m, x, batch, f, &ws);
        t[r] = now() - t0;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    const char *w = getenv("VGGFT_WINOGRAD"), *plan = getenv("VGGFT_WINOGRAD_PLAN");
    char what[64];
    if (w && w[0] && strchr("0234", w[0])) snprintf(what, sizeof what, "%s", (const char *[]){"direct", "", "F2", "F3", "F4"}[w[0] - '0']);
    else if (plan) snprintf(what, sizeof what, "plan %s", plan);
    else snprintf(what, sizeof what, "winograd");
    printf("ours conv %d (%s): %.4f %.4f s/batch of %d\n", size, what, t[reps / 2], t[0], batch);
    return 0;
}
