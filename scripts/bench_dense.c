// The fused training step of the head's big layer alone (dense_update_forward,
// plain SGD: gradient, update and the next batch's forward pass) at the
// seeds' shape, 20 x 8192 -> 256, on each SIMD level this CPU has. Prints
// milliseconds per step and GFLOPS (4 * 20 * 8192 * 256 per step), best of
// 7 trials of 150 steps. Usage: bench_dense THREADS
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "blas_setup.h"
#include "dense.h"
#include "optim.h"
#include "parallel.h"
#include "simd.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const int N = 20, D = 8192, U = 256, STEPS = 150;
    blas_set_threads(1);
    parallel_set_threads(threads);
    float *W = aligned_alloc(64, sizeof(float) * D * U), *b = calloc(U, sizeof(float));
    float *x = malloc(sizeof(float) * N * D), *next = malloc(sizeof(float) * N * D);
    float *dy = malloc(sizeof(float) * N * U), *out = malloc(sizeof(float) * N * U);
    for (long i = 0; i < (long)D * U; i++) W[i] = 1e-3f * (float)(i % 1000);
    for (int i = 0; i < N * D; i++) x[i] = 0.5f, next[i] = 0.25f;
    for (int i = 0; i < N * U; i++) dy[i] = 1e-3f;
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    o.lr = 1e-9f;  // keeps the weights where they are, whatever the number of steps
    OptimRule rule = optim_rule(&o);
    // The widest level down to AVX2 (the portable code is for correctness, not speed).
    int lowest = simd_cpu_level() > SIMD_PORTABLE ? SIMD_AVX2 : SIMD_PORTABLE;
    for (int level = simd_cpu_level(); level >= lowest; level--) {
        simd_set_level(level);
        double best = 1e9;
        for (int trial = 0; trial < 7; trial++) {
            double t = now();
            for (int k = 0; k < STEPS; k++)
                if (dense_update_forward(x, N, D, W, b, U, dy, &rule, NULL, NULL, next, N, out) < 0) return 1;
            t = (now() - t) / STEPS;
            if (t < best) best = t;
        }
        printf("dense step %dx%dx%d, %s, %d threads: %.3f ms, %.1f GFLOPS\n", N, D, U, simd_level_name(level),
               threads, best * 1e3, 4.0 * N * D * U / best * 1e-9);
    }
    return 0;
}
