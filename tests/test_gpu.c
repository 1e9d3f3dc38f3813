// The GPU conv base against the CPU reference. Skips without a usable GPU.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "forward.h"
#include "gpu.h"
#include "gpu_base.h"
#include "model.h"
#include "testutil.h"

static void compare(int size, const char *cut, int N) {
    char why[256];
    if (gpu_count(why, sizeof why) == 0) cr_skip_test("no GPU: %s", why);
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    cfg.cut = cut;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 1, m.n_base), 0);
    model_init_random(&m, 1, m.n_base, 3);
    size_t in_n = (size_t)N * size * size * 3;
    long D = model_feature_size(&m);
    float *x = malloc(sizeof(float) * in_n), *cpu = malloc(sizeof(float) * N * D), *gpu = malloc(sizeof(float) * N * D);
    for (size_t i = 0; i < in_n; i++) x[i] = (float)((i * 37) % 256) - 120.0f;
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    base_forward_cpu(&m, x, N, cpu, &ws);
    GpuBase *g = gpu_base_create(&m, N, GPU_FP32);
    cr_assert_not_null(g, "%s", err_msg());
    cr_assert_eq(gpu_base_forward(g, x, N, gpu), 0, "%s", err_msg());
    // Strict float32 on both sides, sums in another order: relative 1e-4 of
    // the largest feature (the same bound as CPU vs Keras).
    float scale = 0;
    for (long i = 0; i < N * D; i++) scale = fmaxf(scale, fabsf(cpu[i]));
    float err = max_abs_diff(gpu, cpu, (size_t)(N * D));
    cr_expect_gt(scale, 0);
    cr_expect_leq(err, 1e-4f * scale, "GPU vs CPU at %dx%d (%s): max |diff| %g, largest %g", size, size, cut, err, scale);
    // A smaller batch than planned reuses the plan.
    cr_assert_eq(gpu_base_forward(g, x, 1, gpu), 0, "%s", err_msg());
    err = max_abs_diff(gpu, cpu, (size_t)D);
    cr_expect_leq(err, 1e-4f * scale);
    gpu_base_free(g);
    base_workspace_free(&ws);
    free(x), free(cpu), free(gpu);
    model_free(&m);
}

Test(gpu, base_matches_cpu_48) { compare(48, "block5_pool", 3); }
Test(gpu, base_matches_cpu_150_block4) { compare(150, "block4_pool", 2); }
