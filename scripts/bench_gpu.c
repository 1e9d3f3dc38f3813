// The GPU conv base alone (no decoding, no cache): images/s and TFLOP/s of
// gpu_base_submit/collect with two batches in flight, random weights, on
// inputs already in host memory. The FLOPs are the direct convolution's
// (2*H*W*Cin*Cout*9 per conv at its map size; pools and ReLU free), the
// count PyTorch's FlopCounterMode gives (13.231 GFLOP per image at 150x150).
//
//   build/bench_gpu SIZE BATCH ITERS fp32|tf32|bf16
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "gpu.h"
#include "gpu_base.h"
#include "model.h"
#include "progress.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bench_gpu SIZE BATCH ITERS fp32|tf32|bf16\n");
        return 2;
    }
    int size = atoi(argv[1]), B = atoi(argv[2]), iters = atoi(argv[3]);
    GpuPrecision prec;
    if (gpu_precision_from_name(argv[4], &prec) < 0 || size < 32 || B < 1 || iters < 1) {
        fprintf(stderr, "bench_gpu: bad arguments (%s)\n", err_msg());
        return 2;
    }
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    Model m;
    if (model_build(&m, &cfg) < 0 || model_alloc_weights(&m, 1, m.n_base) < 0) {
        fprintf(stderr, "bench_gpu: %s\n", err_msg());
        return 1;
    }
    model_init_random(&m, 1, m.n_base, 1);
    double flops = 0;
    for (int i = 1; i < m.n_base; i++) {
        const Layer *l = &m.layers[i];
        if (l->kind == LAYER_CONV) flops += 2.0 * l->out_h * l->out_w * l->in_c * l->out_c * 9;
    }
    size_t in_n = (size_t)B * size * size * 3, D = (size_t)model_feature_size(&m);
    float *x = malloc(in_n * sizeof(float)), *out = malloc((size_t)B * D * sizeof(float));
    for (size_t i = 0; i < in_n; i++) x[i] = (float)(i % 251) - 125.0f;
    GpuBase *g = gpu_base_create(&m, B, prec);
    if (!g) {
        fprintf(stderr, "bench_gpu: %s\n", err_msg());
        return 1;
    }
    // Warm-up, then iters batches with two in flight.
    for (int i = 0; i < 3; i++)
        if (gpu_base_forward(g, x, B, out) < 0) return fprintf(stderr, "bench_gpu: %s\n", err_msg()), 1;
    double t0 = progress_now();
    int in_flight = 0;
    for (int i = 0; i < iters; i++) {
        if (gpu_base_submit(g, x, B) < 0) return fprintf(stderr, "bench_gpu: %s\n", err_msg()), 1;
        if (++in_flight == 2) {
            if (gpu_base_collect(g, out) < 0) return fprintf(stderr, "bench_gpu: %s\n", err_msg()), 1;
            in_flight--;
        }
    }
    while (in_flight--)
        if (gpu_base_collect(g, out) < 0) return fprintf(stderr, "bench_gpu: %s\n", err_msg()), 1;
    double s = progress_now() - t0, ips = (double)iters * B / s;
    printf("ours conv base alone %dx%d %s: %.0f img/s, %.1f TFLOP/s at %.4f GFLOP/image (batch %d, %d batches, host "
           "copies included)\n",
           size, size, argv[4], ips, ips * flops / 1e12, flops / 1e9, B, iters);
    gpu_base_free(g);
    model_free(&m);
    free(x), free(out);
    return 0;
}
