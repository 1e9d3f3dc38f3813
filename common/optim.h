// Optimizers with Keras 3's defaults and update rules.
//
//   SGD      lr 0.01, momentum 0, nesterov off
//            v = momentum*v - lr*g;  w += nesterov ? momentum*v - lr*g : v
//            (momentum 0: w -= lr*g)
//   Adam     lr 0.001, beta1 0.9, beta2 0.999, epsilon 1e-7
//            m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//            w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
//   RMSprop  lr 0.001, rho 0.9, epsilon 1e-7, momentum 0
//            v = rho*v + (1-rho)*g^2;  w -= lr*g / sqrt(v + eps)
// State lives in caller-owned "slots" of n floats per parameter tensor, so a
// resume file can save and restore it.
#pragma once
#include <stddef.h>

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_RMSPROP } OptimKind;

typedef struct {
    OptimKind kind;
    float lr;
    float momentum;   // SGD (and RMSprop's momentum, 0 = off)
    int nesterov;     // SGD
    // Kept in double: Keras forms 1 - beta from the Python float, then casts
    // to float32 (0.1f, 0.001f), while beta^t uses float32(beta).
    double beta1, beta2;
    double rho;
    float epsilon;
    long step;        // updates done so far; Adam's t is step+1 during update
} Optimizer;

// Fills o with Keras's defaults for kind (step = 0).
void optim_defaults(Optimizer *o, OptimKind kind);
// "sgd", "adam", "rmsprop" (any case). Returns -1 (err_set) on an unknown name.
int optim_kind_from_name(const char *name, OptimKind *kind);
const char *optim_kind_name(OptimKind kind);
// "sgd lr 0.0001 momentum 0.9 nesterov", "rmsprop lr 2e-05": what tells two
// runs apart, for plot titles. Returns buf.
const char *optim_text(const Optimizer *o, char *buf, size_t size);
// Number of n-float state slots each parameter tensor needs (0, 1 or 2):
// SGD 1 with momentum (velocity); Adam 2 (m, v); RMSprop 1 (v), 2 with
// momentum (v, momentum).
int optim_slots(const Optimizer *o);
// Applies one update to a parameter tensor. slots points to optim_slots(o)
// arrays of n floats, zero-initialised before the first step.
void optim_update(const Optimizer *o, float *param, const float *grad,
                  float *const *slots, size_t n);

// One step's elementwise rule with its per-step constants worked out once
// (Adam's bias-corrected step size), so that it can be applied piece by
// piece, e.g. to a tile of a kernel as soon as that tile's gradient is known
// (dense_update_forward). Valid until optim_step_done.
typedef struct {
    OptimKind kind;
    int n_slots;        // optim_slots
    int nesterov;
    float lr, momentum;
    float alpha;        // Adam: lr * sqrt(1 - b2^t) / (1 - b1^t)
    float c1, c2;       // Adam: 1 - beta1, 1 - beta2; RMSprop: c1 = 1 - rho
    float rho, epsilon;
} OptimRule;
OptimRule optim_rule(const Optimizer *o);
// The rule on n elements, on the calling thread. slots as for optim_update,
// each pointing at the same offset as param and grad.
void optim_apply(const OptimRule *r, float *param, const float *grad, float *const *slots, size_t n);
// Call once per training step, after all tensors were updated.
static inline void optim_step_done(Optimizer *o) { o->step++; }
