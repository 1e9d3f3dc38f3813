// Throughput of conv3x3_forward/backward on VGG16 layer shapes, measured
// against a plain 1536^3 sgemm (the machine's practical peak) on the same run.
//
//   cc -std=gnu11 -O2 -pthread -I. -Icommon -Ikernels $(pkg-config --cflags openblas hdf5) scripts/bench_conv.c
//       -o bench_conv $(make -s print-link)      (one line; scripts/bench.sh does it)
//   OPENBLAS_CORETYPE=SkylakeX ./bench_conv [threads] [--vgg16|--bands]
//
// OPENBLAS_CORETYPE must be in the environment before the program starts
// (OpenBLAS picks its kernel when it is loaded). --vgg16 times all 13 convs
// of VGG16 at 150x150 (1 and 8 images per call); --bands sweeps the band
// height (where sgemm's M stops mattering). Winograd against the direct
// convolution layer by layer: scripts/bench_base.c layers.
//
// The development machines are shared VMs whose speed drifts by tens of
// percent from one second to the next. So every figure alternates short
// trials of the conv and of the reference sgemm and reports, besides the best
// GFLOPS of each, the median of the per-trial ratios conv/sgemm: drift that
// slows both cancels out of the ratio.
#include "layers.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRIALS 7
#define TRIAL_SECONDS 0.12
#define REF_N 1536

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *randbuf(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)rand() / RAND_MAX - 0.5f;
    return p;
}

typedef struct {
    int N, H, W, C, K, rows, backward;
    float *in, *ker, *bias, *out, *scratch, *din, *dk, *db;
} Conv;

static float *ref_a, *ref_b, *ref_c;

static void run_ref(void *unused) {
    (void)unused;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, REF_N, REF_N, REF_N, 1.0f, ref_a,
                REF_N, ref_b, REF_N, 0.0f, ref_c, REF_N);
}

static void run_conv(void *p) {
    Conv *c = p;
    if (c->backward)
        conv3x3_backward_banded(c->in, c->N, c->H, c->W, c->C, c->ker, c->K, c->out, c->din,
                                c->dk, c->db, c->scratch, c->rows);
    else
        conv3x3_forward_banded(c->in, c->N, c->H, c->W, c->C, c->ker, c->bias, c->K, c->out,
                               c->scratch, c->rows);
}

// Seconds per call of fn over one trial of >= TRIAL_SECONDS.
static double trial(void (*fn)(void *), void *arg) {
    int reps = 0;
    double t0 = now(), t;
    do {
        fn(arg);
        reps++;
    } while ((t = now() - t0) < TRIAL_SECONDS);
    return t / reps;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { double best, ref_best, ratio; } Rate;

// GFLOPS of fn (flops per call) and of the reference, interleaved.
static Rate measure(void (*fn)(void *), void *arg, double flops) {
    double ref_flops = 2.0 * REF_N * REF_N * REF_N, ratios[TRIALS];
    Rate r = {0, 0, 0};
    fn(arg);  // warm-up: page faults, OpenBLAS buffers
    for (int t = 0; t < TRIALS; t++) {
        double g_ref = ref_flops / trial(run_ref, NULL) * 1e-9;
        double g = flops / trial(fn, arg) * 1e-9;
        ratios[t] = g / g_ref;
        if (g > r.best) r.best = g;
        if (g_ref > r.ref_best) r.ref_best = g_ref;
    }
    qsort(ratios, TRIALS, sizeof *ratios, cmp_double);
    r.ratio = ratios[TRIALS / 2];
    return r;
}

static Rate bench_conv(const char *name, int N, int H, int W, int C, int K, int band,
                       int backward, int quiet) {
    Conv c = {.N = N, .H = H, .W = W, .C = C, .K = K, .backward = backward,
              .rows = band > 0 ? band : conv3x3_band_rows(H, W, C, K)};
    c.in = randbuf((size_t)N * H * W * C);
    c.ker = randbuf((size_t)9 * C * K);
    c.bias = randbuf(K);
    c.out = randbuf((size_t)N * H * W * K);
    c.scratch = malloc((size_t)c.rows * W * 9 * C * sizeof(float));
    c.din = malloc((size_t)N * H * W * C * sizeof(float));
    c.dk = calloc((size_t)9 * C * K, sizeof(float));
    c.db = calloc(K, sizeof(float));
    double flops = 2.0 * N * H * W * 9.0 * C * K * (backward ? 2 : 1);
    Rate r = measure(run_conv, &c, flops);
    if (!quiet) {
        char shape[64];
        snprintf(shape, sizeof shape, "N=%d %dx%dx%d->%d", N, H, W, C, K);
        long m = (long)c.rows * W < (long)N * H * W ? (long)c.rows * W : (long)N * H * W;
        printf("%-13s %-23s %s %6.1f GFLOPS  %3.0f%% of sgemm (%5.1f)  band %d rows, M=%ld\n",
               name, shape, backward ? "bwd" : "fwd", r.best, 100 * r.ratio, r.ref_best, c.rows,
               m);
    }
    free(c.in); free(c.ker); free(c.bias); free(c.out); free(c.scratch);
    free(c.din); free(c.dk); free(c.db);
    return r;
}

// The 13 convs of VGG16 at 150x150 (what extract runs per image).
static void bench_vgg16(int N) {
    static const struct { const char *name; int hw, c, k; } L[] = {
        {"block1_conv1", 150, 3, 64},    {"block1_conv2", 150, 64, 64},
        {"block2_conv1", 75, 64, 128},   {"block2_conv2", 75, 128, 128},
        {"block3_conv1", 37, 128, 256},  {"block3_conv2", 37, 256, 256},
        {"block3_conv3", 37, 256, 256},  {"block4_conv1", 18, 256, 512},
        {"block4_conv2", 18, 512, 512},  {"block4_conv3", 18, 512, 512},
        {"block5_conv1", 9, 512, 512},   {"block5_conv2", 9, 512, 512},
        {"block5_conv3", 9, 512, 512},
    };
    double total_s = 0, total_f = 0, ratio_s = 0;
    printf("VGG16 at 150x150, %d image(s) per call:\n", N);
    for (size_t i = 0; i < sizeof L / sizeof *L; i++) {
        Rate r = bench_conv(L[i].name, N, L[i].hw, L[i].hw, L[i].c, L[i].k, 0, 0, 1);
        double f = 2.0 * N * L[i].hw * L[i].hw * 9.0 * L[i].c * L[i].k;
        printf("  %-13s %3dx%-3d %3d->%-3d %6.1f GFLOPS  %3.0f%% of sgemm  %6.2f ms/image\n",
               L[i].name, L[i].hw, L[i].hw, L[i].c, L[i].k, r.best, 100 * r.ratio,
               1e3 * f / (r.best * 1e9) / N);
        total_s += f / (r.best * 1e9);
        ratio_s += f / r.ratio;  // time in units of the sgemm's: weights each layer's ratio
        total_f += f;
    }
    printf("  all 13 convs: %.1f GFLOPS, %.0f%% of sgemm, %.1f ms/image, %.2f images/s\n",
           total_f / total_s * 1e-9, 100 * total_f / ratio_s, 1e3 * total_s / N, N / total_s);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    const char *mode = argc > 2 ? argv[2] : "";
    openblas_set_num_threads(threads);
    ref_a = randbuf((size_t)REF_N * REF_N);
    ref_b = randbuf((size_t)REF_N * REF_N);
    ref_c = randbuf((size_t)REF_N * REF_N);
    if (strcmp(mode, "--sgemm") == 0) {  // the reference alone: "sgemm CORE GFLOPS"
        double best = 0, f = 2.0 * REF_N * REF_N * REF_N;
        for (int t = 0; t < TRIALS; t++) {
            double g = f / trial(run_ref, NULL) * 1e-9;
            if (g > best) best = g;
        }
        printf("sgemm %s %.1f\n", openblas_get_corename(), best);
        return 0;
    }
    printf("OpenBLAS core %s, %d thread(s); best of %d trials, median ratio to the "
           "1536^3 sgemm (best sgemm in parentheses)\n",
           openblas_get_corename(), threads, TRIALS);
    bench_conv("block1_conv2", 1, 150, 150, 64, 64, 0, 0, 0);
    bench_conv("block3_conv2", 1, 37, 37, 256, 256, 0, 0, 0);
    bench_conv("block5_conv1", 1, 9, 9, 512, 512, 0, 0, 0);
    bench_conv("block5_conv1", 20, 9, 9, 512, 512, 0, 0, 0);
    bench_conv("block5_conv1", 20, 9, 9, 512, 512, 0, 1, 0);
    if (strcmp(mode, "--vgg16") == 0) {
        bench_vgg16(1);
        bench_vgg16(8);
    }
    if (strcmp(mode, "--bands") == 0) {
        int rows[] = {1, 2, 4, 8, 16, 32, 64, 128};
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b1c2", 2, 150, 150, 64, 64, rows[i], 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b2c2", 4, 75, 75, 128, 128, rows[i], 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b3c2", 8, 37, 37, 256, 256, rows[i] * 2, 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b5c1", 64, 9, 9, 512, 512, rows[i] * 4, 0, 0);
    }
    return 0;
}
