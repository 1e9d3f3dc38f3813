// SGD, Adam and RMSprop with Keras 3's update rules (keras/src/optimizers/
// {sgd,adam,rmsprop}.py), in float32 and in the same operation order, so a
// trajectory matches Keras's to float32 rounding.
#include "optim.h"
#include "parallel.h"
#include "simd.h"

#include <stdio.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "error.h"

void optim_defaults(Optimizer *o, OptimKind kind) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->rho = 0.9;
    o->epsilon = 1e-7f;
    o->lr = kind == OPTIM_SGD ? 0.01f : 0.001f;
}

static const char *const names[] = {"sgd", "adam", "rmsprop"};

int optim_kind_from_name(const char *name, OptimKind *kind) {
    // Case-insensitive, like the strings Keras accepts ("sgd", "Adam", ...).
    for (int k = 0; k < 3; k++) {
        if (strcasecmp(name, names[k]) == 0) {
            *kind = (OptimKind)k;
            return 0;
        }
    }
    return err_set("unknown optimizer '%s' (expected sgd, adam or rmsprop)", name);
}

const char *optim_kind_name(OptimKind kind) {
    return (unsigned)kind < 3 ? names[kind] : "unknown";
}

int optim_slots(const Optimizer *o) {
    switch (o->kind) {
    case OPTIM_SGD: return o->momentum != 0.0f ? 1 : 0;
    case OPTIM_ADAM: return 2;
    case OPTIM_RMSPROP: return o->momentum > 0.0f ? 2 : 1;
    }
    return 0;
}

OptimRule optim_rule(const Optimizer *o) {
    OptimRule r = {.kind = o->kind, .n_slots = optim_slots(o), .nesterov = o->nesterov, .lr = o->lr,
                   .momentum = o->momentum, .epsilon = o->epsilon};
    if (o->kind == OPTIM_ADAM) {
        // Bias correction folded into the step size, as Keras does:
        // alpha = lr * sqrt(1 - b2^t) / (1 - b1^t), with t = step + 1.
        float t = (float)(o->step + 1);
        float b1p = powf((float)o->beta1, t), b2p = powf((float)o->beta2, t);
        r.alpha = o->lr * sqrtf(1.0f - b2p) / (1.0f - b1p);
        r.c1 = (float)(1.0 - o->beta1), r.c2 = (float)(1.0 - o->beta2);
    } else if (o->kind == OPTIM_RMSPROP) {
        r.rho = (float)o->rho, r.c1 = (float)(1.0 - o->rho);
    }
    return r;
}

static inline __attribute__((always_inline)) void sgd_apply(const OptimRule *r, float *restrict w, const float *restrict g, float *const *slots, size_t n) {
    float lr = r->lr, mu = r->momentum;
    if (mu == 0.0f) {
        for (size_t i = 0; i < n; i++) w[i] -= g[i] * lr;
        return;
    }
    float *restrict m = slots[0];
    for (size_t i = 0; i < n; i++) {
        m[i] = m[i] * mu - g[i] * lr;
        w[i] += r->nesterov ? m[i] * mu - g[i] * lr : m[i];
    }
}

static inline __attribute__((always_inline)) void adam_apply(const OptimRule *r, float *restrict w, const float *restrict g, float *const *slots,
                       size_t n) {
    float alpha = r->alpha, c1 = r->c1, c2 = r->c2, eps = r->epsilon;
    float *restrict m = slots[0], *restrict v = slots[1];
    for (size_t i = 0; i < n; i++) {
        m[i] += (g[i] - m[i]) * c1;
        v[i] += (g[i] * g[i] - v[i]) * c2;
        w[i] -= (m[i] * alpha) / (sqrtf(v[i]) + eps);
    }
}

static inline __attribute__((always_inline)) void rmsprop_apply(const OptimRule *r, float *restrict w, const float *restrict g, float *const *slots,
                          size_t n) {
    // Keras adds epsilon inside the square root (unlike Adam).
    float rho = r->rho, c = r->c1, lr = r->lr, eps = r->epsilon, mu = r->momentum;
    float *restrict v = slots[0];
    float *restrict mom = mu > 0.0f ? slots[1] : NULL;
    for (size_t i = 0; i < n; i++) {
        v[i] = rho * v[i] + c * (g[i] * g[i]);
        float inc = (lr * g[i]) / sqrtf(v[i] + eps);
        if (mom) {
            mom[i] = mu * mom[i] + inc;
            inc = mom[i];
        }
        w[i] -= inc;
    }
}

// The rules built three times, inlined into each (always_inline): AVX-512,
// AVX2 and the base ISA, chosen by simd_level(). dense_update_forward
// applies the rule a few rows at a time, between its products, and RMSprop
// and Adam are bound by square roots and divisions, as many per instruction
// as the vectors are wide. The same bits on all three: -ffp-contract=off
// (Makefile) keeps multiplies and adds apart, and sqrt and division are exact.
#define RULES(r, param, grad, slots, n)                                    \
    switch ((r)->kind) {                                                  \
    case OPTIM_SGD: sgd_apply(r, param, grad, slots, n); break;           \
    case OPTIM_ADAM: adam_apply(r, param, grad, slots, n); break;         \
    case OPTIM_RMSPROP: rmsprop_apply(r, param, grad, slots, n); break;   \
    }

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void apply_avx512(const OptimRule *r, float *param, const float *grad,
                                                            float *const *slots, size_t n) {
    RULES(r, param, grad, slots, n)
}

__attribute__((target("avx2"))) static void apply_avx2(const OptimRule *r, float *param, const float *grad,
                                                       float *const *slots, size_t n) {
    RULES(r, param, grad, slots, n)
}
#endif

void optim_apply(const OptimRule *r, float *param, const float *grad, float *const *slots, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    int simd = simd_level();
    if (simd >= SIMD_AVX512) return apply_avx512(r, param, grad, slots, n);
    if (simd >= SIMD_AVX2) return apply_avx2(r, param, grad, slots, n);
#endif
    RULES(r, param, grad, slots, n)
}

// Elementwise, so any split gives the same bits: fixed chunks on the pool.
enum { CHUNK = 1 << 15 };

typedef struct {
    OptimRule rule;
    float *param;
    const float *grad;
    float *const *slots;
    size_t n;
} UpdateJob;

static void update_chunk(void *ctx, int t) {
    const UpdateJob *j = ctx;
    size_t at = (size_t)t * CHUNK, len = j->n - at < CHUNK ? j->n - at : CHUNK;
    int ns = j->rule.n_slots;  // the caller's array holds exactly this many
    float *sl[2] = {ns > 0 ? j->slots[0] + at : NULL, ns > 1 ? j->slots[1] + at : NULL};
    optim_apply(&j->rule, j->param + at, j->grad + at, sl, len);
}

void optim_update(const Optimizer *o, float *param, const float *grad,
                  float *const *slots, size_t n) {
    UpdateJob j = {optim_rule(o), param, grad, slots, n};
    parallel_for((int)((n + CHUNK - 1) / CHUNK), update_chunk, &j);
}

const char *optim_text(const Optimizer *o, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s lr %g", optim_kind_name(o->kind), o->lr);
    if (n > 0 && (size_t)n < size && o->kind != OPTIM_ADAM && o->momentum != 0)
        n += snprintf(buf + n, size - (size_t)n, " momentum %g", o->momentum);
    if (n > 0 && (size_t)n < size && o->kind == OPTIM_SGD && o->nesterov) snprintf(buf + n, size - (size_t)n, " nesterov");
    return buf;
}
