// Optimizers against Keras 3 trajectories (scripts/fixtures_layers.py: five
// apply_gradients steps on one variable, same gradients), plus hand-worked
// values and the small API around them.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "optim.h"
#include "simd.h"
#include "testutil.h"

static Npy load(const char *name) { return fixture_npy("layers/%s.npy", name); }

// The settings of each Keras optimizer in OPTIMIZERS of fixtures_layers.py.
static Optimizer make(const char *name) {
    Optimizer o;
    if (strncmp(name, "sgd", 3) == 0) {
        optim_defaults(&o, OPTIM_SGD);
        o.lr = 0.1f;
        if (strcmp(name, "sgd") != 0) {
            o.lr = 0.05f;
            o.momentum = 0.9f;
            o.nesterov = strcmp(name, "sgd_nesterov") == 0;
        }
    } else if (strncmp(name, "adam", 4) == 0) {
        optim_defaults(&o, OPTIM_ADAM);
        if (strcmp(name, "adam") == 0) o.lr = 0.01f;
    } else {
        optim_defaults(&o, OPTIM_RMSPROP);
        o.lr = 0.01f;
        if (strcmp(name, "rmsprop_momentum") == 0) o.momentum = 0.5f;
    }
    return o;
}

static void simd_reset(void) { simd_set_level(SIMD_AVX512); }

// Runs the fixture's 5 steps and compares every step's weights. The weights
// are O(1) and move by O(lr) per step; Keras computes in float32 with the same
// operation order, so they agree to float32 rounding: SGD and RMSprop within
// 1 ulp, Adam within a few ulp (like Keras we form 1 - beta in double from
// the decimal, and beta^t from float32(beta)). The tolerance, 1e-6 absolute, is far below the smallest move a
// wrong rule would cause: the column with 1e-4 gradients tells epsilon's
// placement apart (RMSprop's sqrt(v + eps) vs sqrt(v) + eps changes its step
// by ~10x), and the zero-gradient columns check that momentum keeps moving a
// parameter that has no gradient.
static void check_trajectory(const char *name) {
    Npy w0 = load("optim_w0"), g = load("optim_grads");
    char fx[64];
    snprintf(fx, sizeof fx, "optim_traj_%s", name);
    Npy traj = load(fx);
    int steps = g.shape[0], n = g.shape[1];
    cr_assert_eq(traj.shape[0], steps);
    Optimizer o = make(name);
    int ns = optim_slots(&o);
    float *w = malloc(n * sizeof(float));
    memcpy(w, w0.data, n * sizeof(float));
    float *slotbuf = calloc((size_t)(ns > 0 ? ns : 1) * n, sizeof(float));
    float *slots[2] = {slotbuf, slotbuf + n};
    for (int s = 0; s < steps; s++) {
        optim_update(&o, w, (float *)g.data + (size_t)s * n, slots, n);
        optim_step_done(&o);
        const float *want = (float *)traj.data + (size_t)s * n;
        for (int i = 0; i < n; i++)
            cr_expect(fabsf(w[i] - want[i]) <= 1e-6f, "%s step %d w[%d]: %.9g vs Keras %.9g",
                      name, s + 1, i, w[i], want[i]);
    }
    cr_expect_eq(o.step, steps);
    free(w); free(slotbuf);
    npy_free(&w0); npy_free(&g); npy_free(&traj);
}

// Three steps of each optimizer on 1037 parameters (vector tails too) with
// the rules built for each SIMD level this CPU has: the same bits as the
// portable build. A contracted multiply-add would differ in a few elements.
Test(optim, every_simd_level_gives_the_same_bits, .fini = simd_reset) {
    static const char *names[] = {"sgd", "sgd_momentum", "sgd_nesterov", "adam", "rmsprop", "rmsprop_momentum"};
    const int n = 1037, steps = 3;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        float *w[3], *slot[3][2];
        for (int level = SIMD_PORTABLE; level <= simd_cpu_level(); level++) {
            simd_set_level(level);
            Optimizer o = make(names[k]);
            w[level] = malloc(n * sizeof(float));
            slot[level][0] = calloc(n, sizeof(float)), slot[level][1] = calloc(n, sizeof(float));
            unsigned seed = 7;
            for (int i = 0; i < n; i++) seed = seed * 1103515245u + 12345u, w[level][i] = (float)(seed >> 9) / (1 << 23) - 1;
            float *g = malloc(n * sizeof(float));
            for (int s = 0; s < steps; s++) {
                for (int i = 0; i < n; i++) seed = seed * 1103515245u + 12345u, g[i] = ((float)(seed >> 9) / (1 << 23) - 1) * 0.3f;
                optim_update(&o, w[level], g, slot[level], n);
                optim_step_done(&o);
            }
            free(g);
            if (level == SIMD_PORTABLE) continue;
            cr_expect_arr_eq(w[level], w[0], n * sizeof(float), "%s: weights with %s", names[k], simd_level_name(level));
            cr_expect_arr_eq(slot[level][0], slot[0][0], n * sizeof(float), "%s: slot 0 with %s", names[k], simd_level_name(level));
            cr_expect_arr_eq(slot[level][1], slot[0][1], n * sizeof(float), "%s: slot 1 with %s", names[k], simd_level_name(level));
        }
        for (int level = SIMD_PORTABLE; level <= simd_cpu_level(); level++) free(w[level]), free(slot[level][0]), free(slot[level][1]);
    }
    if (simd_cpu_level() == SIMD_PORTABLE) cr_skip_test("no AVX2 on this CPU: only the portable rules run");
}

Test(optim, sgd_matches_keras) { check_trajectory("sgd"); }
Test(optim, sgd_momentum_matches_keras) { check_trajectory("sgd_momentum"); }
Test(optim, sgd_nesterov_matches_keras) { check_trajectory("sgd_nesterov"); }
Test(optim, adam_matches_keras) { check_trajectory("adam"); }
Test(optim, adam_defaults_match_keras) { check_trajectory("adam_default"); }
Test(optim, rmsprop_matches_keras) { check_trajectory("rmsprop"); }
Test(optim, rmsprop_momentum_matches_keras) { check_trajectory("rmsprop_momentum"); }

// Adam's first step, by hand: m = 0.1 g, v = 0.001 g^2 and
// alpha = lr sqrt(1 - 0.999) / (1 - 0.9), so the step is
// lr * g sqrt(0.001) / (sqrt(0.001) |g| + eps): lr * sign(g) up to epsilon.
// Without bias correction it would be 0.1 g / (sqrt(0.001) |g|) * lr ~ 3.16 lr.
Test(optim, adam_bias_correction_step_one) {
    Optimizer o;
    optim_defaults(&o, OPTIM_ADAM);
    float w[3] = {1.0f, 1.0f, 1.0f}, g[3] = {2.0f, -0.5f, 1e-5f};
    float m[3] = {0}, v[3] = {0};
    float *slots[2] = {m, v};
    optim_update(&o, w, g, slots, 3);
    for (int i = 0; i < 3; i++) {
        double s = sqrt(0.001);
        double step = 0.001 * g[i] * s / (s * fabs(g[i]) + 1e-7);
        cr_expect(fabs(w[i] - (1.0 - step)) < 2e-7, "w[%d] = %.9g, expected %.9g", i, w[i],
                  1.0 - step);
        cr_expect(fabsf(m[i] - 0.1f * g[i]) <= 1e-6f * fabsf(g[i]));
        cr_expect(fabsf(v[i] - 0.001f * g[i] * g[i]) <= 1e-6f * g[i] * g[i]);
    }
    // 2.0 and -0.5 move by lr (1 - 2e-6 and 1 - 6e-6); 1e-5 is damped by eps
    // to lr * 3.16e-7 / (3.16e-7 + 1e-7) = 0.76 lr.
    cr_expect(fabsf(w[0] - 0.999f) < 1e-6f);
    cr_expect(fabsf(w[1] - 1.001f) < 1e-6f);
    cr_expect(fabsf(w[2] - (1.0f - 0.001f * 0.7597f)) < 1e-6f);
}

Test(optim, keras_defaults) {
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    cr_expect_float_eq(o.lr, 0.01f, 1e-9);
    cr_expect_eq(o.momentum, 0.0f);
    cr_expect_eq(o.nesterov, 0);
    cr_expect_eq(o.step, 0);
    cr_expect_eq(optim_slots(&o), 0);
    o.momentum = 0.9f;
    cr_expect_eq(optim_slots(&o), 1);

    optim_defaults(&o, OPTIM_ADAM);
    cr_expect_float_eq(o.lr, 0.001f, 1e-9);
    cr_expect_eq(o.beta1, 0.9);
    cr_expect_eq(o.beta2, 0.999);
    cr_expect_float_eq(o.epsilon, 1e-7f, 1e-12);
    cr_expect_eq(optim_slots(&o), 2);

    optim_defaults(&o, OPTIM_RMSPROP);
    cr_expect_float_eq(o.lr, 0.001f, 1e-9);
    cr_expect_eq(o.rho, 0.9);
    cr_expect_float_eq(o.epsilon, 1e-7f, 1e-12);
    cr_expect_eq(o.momentum, 0.0f);
    cr_expect_eq(optim_slots(&o), 1);
    o.momentum = 0.5f;
    cr_expect_eq(optim_slots(&o), 2);
}

// Plain SGD has no state: it must work with no slots at all.
Test(optim, sgd_without_slots) {
    Optimizer o;
    optim_defaults(&o, OPTIM_SGD);
    float w[2] = {1.0f, -2.0f}, g[2] = {10.0f, -1.0f};
    optim_update(&o, w, g, NULL, 2);
    cr_expect_float_eq(w[0], 0.9f, 1e-7);
    cr_expect_float_eq(w[1], -1.99f, 1e-7);
}

Test(optim, names) {
    OptimKind k;
    cr_expect_eq(optim_kind_from_name("sgd", &k), 0);
    cr_expect_eq(k, OPTIM_SGD);
    cr_expect_eq(optim_kind_from_name("Adam", &k), 0);
    cr_expect_eq(k, OPTIM_ADAM);
    cr_expect_eq(optim_kind_from_name("RMSprop", &k), 0);
    cr_expect_eq(k, OPTIM_RMSPROP);
    cr_expect_eq(optim_kind_from_name("adagrad", &k), -1);
    cr_expect(strstr(err_msg(), "adagrad"), "error names the bad value: %s", err_msg());
    cr_expect_str_eq(optim_kind_name(OPTIM_SGD), "sgd");
    cr_expect_str_eq(optim_kind_name(OPTIM_ADAM), "adam");
    cr_expect_str_eq(optim_kind_name(OPTIM_RMSPROP), "rmsprop");
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(optim_kind_from_name(optim_kind_name((OptimKind)i), &k), 0);
        cr_expect_eq(k, (OptimKind)i);
    }
}
