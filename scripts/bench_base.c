// Our frozen VGG16 conv base on the CPU, timed the way scripts/bench_keras.py
// times Keras's: base_forward_cpu (every conv, ReLU and pool to block5_pool,
// one image at a time as extract runs it) on one batch of preprocessed
// images, REPS times; prints the median and the best seconds per batch.
//
//   bench_base SIZE BATCH REPS THREADS [WEIGHTS.h5]
//
// VGGFT_WINOGRAD=0 in the environment times the direct convolution alone
// (forward.h). blas_setup picks the OpenBLAS kernel as the tools do (it may
// re-execute the program once with OPENBLAS_CORETYPE set).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "blas_setup.h"
#include "error.h"
#include "forward.h"
#include "model.h"
#include "model_io.h"
#include "parallel.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_base SIZE BATCH REPS THREADS [WEIGHTS.h5]\n");
        return 2;
    }
    int size = atoi(argv[1]), batch = atoi(argv[2]), reps = atoi(argv[3]), threads = atoi(argv[4]);
    blas_setup(argv, threads);
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
    const char *w = getenv("VGGFT_WINOGRAD");
    printf("ours conv %d (%s): %.4f %.4f s/batch of %d\n", size, w && w[0] == '0' ? "direct" : "winograd",
           t[reps / 2], t[0], batch);
    return 0;
}
