// Throughput of conv3x3_forward/backward on VGG16 layer shapes, next to a
// plain 1536^3 sgemm on the same run (the machine's practical peak).
//
//   gcc -std=gnu11 -O2 -Wall -Wextra -I. -Icommon $(pkg-config --cflags openblas) \
//       scripts/bench_conv.c common/conv.c common/error.c -o /tmp/bench_conv \
//       $(pkg-config --libs openblas) -lm
//   OPENBLAS_CORETYPE=SkylakeX /tmp/bench_conv [threads] [--vgg16|--bands]
//
// OPENBLAS_CORETYPE must be in the environment before the program starts
// (OpenBLAS picks its kernel when it is loaded). --vgg16 times all 13 convs
// of VGG16 at 150x150; --bands sweeps the band height (where M stops
// mattering).
#include "layers.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

// The machine is a shared VM whose speed drifts by tens of percent from one
// second to the next, so each figure is the best of 5 trials of >= 0.2 s
// (after one warm-up call): the best is the least disturbed estimate.
#define TIME_IT(secs, stmt)                                          \
    do {                                                             \
        stmt;                                                        \
        secs = 1e30;                                                 \
        for (int trial_ = 0; trial_ < 5; trial_++) {                 \
            int reps_ = 0;                                           \
            double t0_ = now(), t_;                                  \
            do { stmt; reps_++; } while ((t_ = now() - t0_) < 0.2);  \
            if (t_ / reps_ < secs) secs = t_ / reps_;                \
        }                                                            \
    } while (0)

static void bench_sgemm(int n) {
    float *a = randbuf((size_t)n * n), *b = randbuf((size_t)n * n), *c = randbuf((size_t)n * n);
    double s;
    TIME_IT(s, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                           b, n, 0.0f, c, n));
    printf("%-14s %-24s     %6.1f GFLOPS\n", "sgemm", "1536^3", 2.0 * n * n * n / s * 1e-9);
    free(a); free(b); free(c);
}

// Returns forward seconds per call.
static double bench_conv(const char *name, int N, int H, int W, int C, int K, int band,
                         int backward, int quiet) {
    float *in = randbuf((size_t)N * H * W * C), *ker = randbuf((size_t)9 * C * K);
    float *bias = randbuf(K), *out = randbuf((size_t)N * H * W * K);
    int rows = band > 0 ? band : conv3x3_band_rows(H, W, C, K);
    float *scratch = malloc((size_t)rows * W * 9 * C * sizeof(float));
    double flops = 2.0 * N * H * W * 9.0 * C * K, s, fwd;
    TIME_IT(s, conv3x3_forward_banded(in, N, H, W, C, ker, bias, K, out, scratch, rows));
    fwd = s;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d %dx%dx%d->%d", N, H, W, C, K);
    long m = (long)rows * W < (long)N * H * W ? (long)rows * W : (long)N * H * W;
    if (!quiet)
        printf("%-14s %-24s fwd %6.1f GFLOPS  (band %d rows, M=%ld)\n", name, shape,
               flops / s * 1e-9, rows, m);
    if (backward) {
        float *din = malloc((size_t)N * H * W * C * sizeof(float));
        float *dk = calloc((size_t)9 * C * K, sizeof(float)), *db = calloc(K, sizeof(float));
        TIME_IT(s, conv3x3_backward_banded(in, N, H, W, C, ker, K, out, din, dk, db, scratch,
                                           rows));
        printf("%-14s %-24s bwd %6.1f GFLOPS  (dkernel + din: 2x forward's flops)\n", name,
               shape, 2 * flops / s * 1e-9);
        free(din); free(dk); free(db);
    }
    free(in); free(ker); free(bias); free(out); free(scratch);
    return fwd;
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
    double total_s = 0, total_f = 0;
    for (size_t i = 0; i < sizeof L / sizeof *L; i++) {
        double s = bench_conv(L[i].name, N, L[i].hw, L[i].hw, L[i].c, L[i].k, 0, 0, 1);
        double f = 2.0 * N * L[i].hw * L[i].hw * 9.0 * L[i].c * L[i].k;
        printf("  %-14s %3dx%-3d %3d->%-3d %6.1f GFLOPS %7.2f ms/image\n", L[i].name, L[i].hw,
               L[i].hw, L[i].c, L[i].k, f / s * 1e-9, 1e3 * s / N);
        total_s += s;
        total_f += f;
    }
    printf("VGG16 convs at 150x150, N=%d: %.1f GFLOPS overall, %.1f ms/image (%.2f images/s)\n",
           N, total_f / total_s * 1e-9, 1e3 * total_s / N, N / total_s);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    const char *mode = argc > 2 ? argv[2] : "";
    openblas_set_num_threads(threads);
    printf("OpenBLAS core %s, %d thread(s)\n", openblas_get_corename(), threads);
    bench_sgemm(1536);
    bench_conv("block1_conv2", 1, 150, 150, 64, 64, 0, 0, 0);
    bench_conv("block3_conv2", 1, 37, 37, 256, 256, 0, 0, 0);
    bench_conv("block5_conv1", 1, 9, 9, 512, 512, 0, 1, 0);
    bench_conv("block3_conv2", 20, 37, 37, 256, 256, 0, 0, 0);
    bench_conv("block5_conv1", 20, 9, 9, 512, 512, 0, 1, 0);
    bench_sgemm(1536);
    if (strcmp(mode, "--vgg16") == 0) {
        bench_vgg16(1);
        bench_vgg16(8);
        bench_sgemm(1536);
    }
    if (strcmp(mode, "--bands") == 0) {
        int rows[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b1c2", 2, 150, 150, 64, 64, rows[i], 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b2c2", 4, 75, 75, 128, 128, rows[i], 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b3c2", 8, 37, 37, 256, 256, rows[i], 0, 0);
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
            bench_conv("sweep b5c1", 64, 9, 9, 512, 512, rows[i] * 4, 0, 0);
        bench_sgemm(1536);
    }
    return 0;
}
