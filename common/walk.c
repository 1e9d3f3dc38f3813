// The conv base as a trainable walk (see walk.h): the frozen layers through
// forward.c's per-image pass, the trainable ones batched on the reference
// layers of layers.h, keeping what their backward pass needs.
#include "walk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gpu.h"
#include "gpu_walk.h"
#include "layers.h"
#include "progress.h"

static size_t out_floats(const Layer *l) { return (size_t)l->out_h * l->out_w * l->out_c; }
static size_t in_floats(const Layer *l) { return (size_t)l->in_h * l->in_w * l->in_c; }

// malloc that adds what it took to *bytes.
static void *take(size_t n, size_t *bytes) {
    *bytes += n;
    return malloc(n ? n : 1);
}

// walk_alloc's checks of from and cap, and the fields they fix.
static int walk_setup(BaseWalk *w, const Model *m, int from, int cap) {
    memset(w, 0, sizeof *w);
    const int nb = m->n_base;
    if (cap < 1) return err_set("walk: batch capacity must be at least 1, got %d", cap);
    if (from < 1 || from >= nb)
        return err_set("walk: first layer %d is outside the base (layers 1 to %d, %s)", from, nb - 1,
                       m->layers[nb - 1].name);
    if (from > 1 && m->layers[from - 1].kind != LAYER_POOL)
        return err_set("walk: layer %s does not start the base or follow a pooling layer (%s is not one)",
                       m->layers[from].name, m->layers[from - 1].name);
    // model_build cuts at a pooling layer; backward relies on it (the cut's
    // gradient is only read).
    if (m->layers[nb - 1].kind != LAYER_POOL)
        return err_set("walk: the base ends at %s, not at a pooling layer", m->layers[nb - 1].name);
    w->m = m;
    w->from = from;
    w->first_trainable = m->first_trainable_base > from ? m->first_trainable_base : from;
    w->cap = cap;
    w->in_size = (long)out_floats(&m->layers[from - 1]);
    return 0;
}

int walk_alloc_device(BaseWalk *w, const Model *m, int from, int cap, int gpu, GpuPrecision precision) {
    if (!gpu) return walk_alloc(w, m, from, cap);
    if (walk_setup(w, m, from, cap) < 0) return -1;
    // The host's side of every step's copies: page-locked when the system
    // allows (full bus speed), else plain memory.
    const size_t F = (size_t)cap * (size_t)model_feature_size(m) * sizeof(float);
    const size_t I = (size_t)cap * (size_t)w->in_size * sizeof(float);
    w->features = gpu_host_alloc(F);
    w->d_features = gpu_host_alloc(F);
    w->input = gpu_host_alloc(I);
    w->input_next = gpu_host_alloc(I);
    w->pinned = 1;
    if (!w->features || !w->d_features || !w->input || !w->input_next) {
        gpu_host_free(w->features), gpu_host_free(w->d_features), gpu_host_free(w->input);
        gpu_host_free(w->input_next);
        w->pinned = 0;
        w->features = take(F, &w->bytes);
        w->d_features = take(F, &w->bytes);
        w->input = take(I, &w->bytes);
        w->input_next = take(I, &w->bytes);
        if (!w->features || !w->d_features || !w->input || !w->input_next) {
            walk_free(w);
            return err_set("walk: out of memory for a batch of %d", cap);
        }
    } else {
        w->bytes += 2 * F + 2 * I;
    }
    w->gpu = gpu_walk_create(m, from, cap, precision);
    if (!w->gpu) {
        ErrKept keep;
        err_keep(&keep);
        walk_free(w);
        return err_restore(&keep);
    }
    return 0;
}

int walk_download(BaseWalk *w, Model *m, float *const *slots) {
    return w->gpu ? gpu_walk_download(w->gpu, m, slots) : 0;
}

int walk_upload(BaseWalk *w, float *const *slots) {
    return w->gpu ? gpu_walk_upload(w->gpu, w->m, slots) : 0;
}

int walk_alloc(BaseWalk *w, const Model *m, int from, int cap) {
    if (walk_setup(w, m, from, cap) < 0) return -1;
    const int nb = m->n_base;
    const int ft = w->first_trainable;
    const size_t C = (size_t)cap, F = (size_t)model_feature_size(m);

    w->act = calloc((size_t)m->n_layers, sizeof *w->act);
    w->argmax = calloc((size_t)m->n_layers, sizeof *w->argmax);
    if (!w->act || !w->argmax) goto oom;
    // One workspace for [from, n_base): its ping-pong buffers serve the
    // frozen per-image layers, its scratch (bounded by conv3x3_scratch_floats
    // whatever the batch) every conv, frozen or batched.
    if (base_workspace_alloc_layers(&w->ws, m, from, nb) < 0) {
        walk_free(w);
        return err_prefix("walk: ");
    }
    w->bytes = w->ws.floats * sizeof(float);
    w->scratch = w->ws.scratch;
    w->features = take(C * F * sizeof(float), &w->bytes);
    w->d_features = take(C * F * sizeof(float), &w->bytes);
    w->input = take(C * (size_t)w->in_size * sizeof(float), &w->bytes);
    if (!w->features || !w->d_features || !w->input) goto oom;
    if (ft < nb) {
        w->t_in = take(C * in_floats(&m->layers[ft]) * sizeof(float), &w->bytes);
        if (!w->t_in) goto oom;
    }
    size_t dmax = 0;  // largest gradient backward writes: the outputs of [ft, nb-1)
    for (int i = ft; i < nb; i++) {
        const Layer *l = &m->layers[i];
        if (i == nb - 1) w->act[i] = w->features;  // the cut's output is the features
        else w->act[i] = take(C * out_floats(l) * sizeof(float), &w->bytes);
        if (!w->act[i]) goto oom;
        if (i < nb - 1 && out_floats(l) > dmax) dmax = out_floats(l);
        if (l->kind == LAYER_POOL) {
            // argmax holds int32 indices into the whole batch's input.
            if (C * in_floats(l) > INT32_MAX) {
                walk_free(w);
                return err_set("walk: a batch of %d is too large for %s (at most %zu)", cap, l->name,
                               (size_t)INT32_MAX / in_floats(l));
            }
            w->argmax[i] = take(C * out_floats(l) * sizeof(int32_t), &w->bytes);
            if (!w->argmax[i]) goto oom;
        }
    }
    if (dmax) {
        w->d_a = take(C * dmax * sizeof(float), &w->bytes);
        w->d_b = take(C * dmax * sizeof(float), &w->bytes);
        if (!w->d_a || !w->d_b) goto oom;
    }
    return 0;
oom:;
    size_t mb = w->bytes >> 20;
    walk_free(w);
    return err_set("walk: out of memory for a batch of %d (%zu MB taken when it failed)", cap, mb);
}

void walk_free(BaseWalk *w) {
    gpu_walk_free(w->gpu);
    if (w->act && w->m)
        for (int i = 0; i < w->m->n_layers; i++)
            if (w->act[i] != w->features) free(w->act[i]);
    if (w->argmax && w->m)
        for (int i = 0; i < w->m->n_layers; i++) free(w->argmax[i]);
    free(w->act);
    free(w->argmax);
    free(w->t_in);
    free(w->d_a);
    free(w->d_b);
    if (w->pinned) {
        gpu_host_free(w->features), gpu_host_free(w->d_features), gpu_host_free(w->input);
        gpu_host_free(w->input_next);
    } else {
        free(w->features), free(w->d_features), free(w->input), free(w->input_next);
    }
    base_workspace_free(&w->ws);  // owns w->scratch
    memset(w, 0, sizeof *w);
}

int walk_forward(BaseWalk *w, const float *in, int N) {
    if (w->gpu) {
        // One batched pass on the device: frozen and trainable layers counted together.
        double t0 = progress_now();
        int rc = gpu_walk_forward(w->gpu, in, N, w->features);
        w->times.trainable += progress_now() - t0;
        return rc;
    }
    const Model *m = w->m;
    const int nb = m->n_base, ft = w->first_trainable;
    // The frozen part writes where the trainable part reads (or the features
    // when nothing is trainable).
    float *frozen_out = ft < nb ? w->t_in : w->features;
    double t0 = progress_now();
    if (w->from < ft) base_forward_layers(m, w->from, ft, in, N, frozen_out, &w->ws);
    else memcpy(frozen_out, in, (size_t)N * (size_t)w->in_size * sizeof(float));
    double t1 = progress_now();
    w->times.frozen += t1 - t0;
    // The trainable part on the whole batch: bands of the N*H row stack span
    // images, so sgemm gets a large M even on 9x9 maps.
    for (int i = ft; i < nb; i++) {
        const Layer *l = &m->layers[i];
        const float *x = i == ft ? w->t_in : w->act[i - 1];
        if (l->kind == LAYER_CONV) {
            conv3x3_forward(x, N, l->in_h, l->in_w, l->in_c, l->kernel, l->bias, l->out_c, w->act[i], w->scratch);
            relu_forward(w->act[i], (size_t)N * out_floats(l));
        } else {
            maxpool2x2_forward(x, N, l->in_h, l->in_w, l->in_c, w->act[i], w->argmax[i]);
        }
    }
    w->times.trainable += progress_now() - t1;
    return 0;
}

void walk_backward(BaseWalk *w, const float *dfeat, int N, Grads *g) {
    if (w->gpu) return;  // its activations are on the device (walk.h: CPU walk only)
    const Model *m = w->m;
    const int nb = m->n_base, ft = w->first_trainable;
    // dout of the cut is dfeat, which only the cut (a pool) reads; below it
    // the gradients ping-pong between d_a and d_b, and each conv's ReLU
    // backward runs in place on its output gradient.
    const float *dout = dfeat;
    float *cur = NULL, *spare = w->d_a;
    for (int i = nb - 1; i >= ft; i--) {
        const Layer *l = &m->layers[i];
        const float *x = i == ft ? w->t_in : w->act[i - 1];
        float *din = i > ft ? spare : NULL;  // the first trainable layer's input gradient is never needed
        if (l->kind == LAYER_CONV) {
            relu_backward(w->act[i], cur, (size_t)N * out_floats(l));
            conv3x3_backward(x, N, l->in_h, l->in_w, l->in_c, l->kernel, l->out_c, cur, din,
                             g->dkernel[i], g->dbias[i], w->scratch);
        } else if (din) {
            maxpool2x2_backward(dout, N, l->in_h, l->in_w, l->in_c, w->argmax[i], din);
        }
        if (!din) break;
        spare = din == w->d_a ? w->d_b : w->d_a;
        dout = cur = din;
    }
}

int finetune_step_begin(BaseWalk *w, HeadBuffers *hb, Grads *g, const Optimizer *o, float *const *slots,
                        const float *in, const int32_t *labels, const float *sample_weights, int N, uint64_t seed) {
    const Model *m = w->m;
    if (w->step_pending) return err_set("walk: a step is under way (its end first)");
    if (w->gpu && gpu_walk_has_head(w->gpu)) {
        // The whole step on the device (the default; not with
        // VGGFT_GPU_HEAD=0), queued: the features and their gradient stay
        // there; finetune_step_end brings the logits, the probabilities and
        // the loss. g and slots are not used: the head's gradients and slots
        // live on the device too. Its time, queued and waited for, counts as
        // the base's (the parts overlap; only the whole is measured).
        double t0 = progress_now();
        OptimRule rule = optim_rule(o);
        hb->dropout_applied = 0;  // the host's mask is not this batch's
        if (gpu_walk_step_begin(w->gpu, in, N, labels, sample_weights, seed, (uint64_t)o->step, &rule) < 0)
            return -1;
        w->times.trainable += progress_now() - t0;
        w->step_pending = WALK_STEP;
        return 0;
    }
    grads_zero(g, m);
    if (walk_forward(w, in, N) < 0) return -1;
    double t0 = progress_now();
    if (head_forward(m, w->features, N, 1, seed, (uint64_t)o->step, hb) < 0) return -1;
    // head_backward overwrites d_features (dense_backward's din).
    float loss = head_backward(m, w->features, labels, sample_weights, N, hb, g, w->d_features);
    double t1 = progress_now();
    // The base's backward pass, and on the GPU also its update (the weights
    // and slots live there; the rule's constants are worked out here once).
    if (w->gpu) {
        OptimRule rule = optim_rule(o);
        if (gpu_walk_backward_update(w->gpu, w->d_features, N, &rule) < 0) return -1;
    } else {
        walk_backward(w, w->d_features, N, g);
    }
    double t2 = progress_now();
    w->times.head += t1 - t0, w->times.trainable += t2 - t1;
    for (int i = w->gpu ? m->n_base : w->first_trainable; i < m->n_layers; i++) {
        Layer *l = &m->layers[i];
        if (!l->n_kernel || !l->trainable || !g->dkernel[i]) continue;
        optim_update(o, l->kernel, g->dkernel[i], slots ? HEAD_SLOTS(slots, i, 0) : NULL, (size_t)l->n_kernel);
        optim_update(o, l->bias, g->dbias[i], slots ? HEAD_SLOTS(slots, i, 1) : NULL, (size_t)l->n_bias);
    }
    w->times.update += progress_now() - t2;
    w->step_loss = loss;
    w->step_pending = WALK_STEP;
    return 0;
}

// What is under way must be `kind` (WALK_STEP, WALK_PREDICT); it ends now.
static int end_pending(BaseWalk *w, int kind) {
    if (w->step_pending != kind)
        return err_set("walk: no %s under way (%s first)", kind == WALK_STEP ? "step" : "prediction",
                       kind == WALK_STEP ? "finetune_step_begin" : "walk_predict_begin");
    w->step_pending = 0;
    return 0;
}

int finetune_step_end(BaseWalk *w, HeadBuffers *hb, float *loss) {
    if (end_pending(w, WALK_STEP) < 0) return -1;
    if (w->gpu && gpu_walk_has_head(w->gpu)) {
        double t0 = progress_now();
        int rc = gpu_walk_end(w->gpu, hb->logits, hb->probs, loss);
        w->times.trainable += progress_now() - t0;
        return rc;
    }
    *loss = w->step_loss;
    return 0;
}

int finetune_step(BaseWalk *w, HeadBuffers *hb, Grads *g, const Optimizer *o, float *const *slots,
                  const float *in, const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                  float *loss) {
    if (finetune_step_begin(w, hb, g, o, slots, in, labels, sample_weights, N, seed) < 0) return -1;
    return finetune_step_end(w, hb, loss);
}

int walk_prefetch(BaseWalk *w, const float *in, int N) {
    return w->gpu ? gpu_walk_stage(w->gpu, in, N) : 0;
}

int walk_predict_begin(BaseWalk *w, HeadBuffers *hb, const float *in, int N) {
    if (w->step_pending) return err_set("walk: a step is under way (its end first)");
    if (w->gpu && gpu_walk_has_head(w->gpu)) {
        // Queued: walk_predict_end waits. The features stay on the device.
        hb->dropout_applied = 0;
        if (gpu_walk_predict_begin(w->gpu, in, N) < 0) return -1;
    } else {
        if (walk_forward(w, in, N) < 0) return -1;
        if (head_forward(w->m, w->features, N, 0, 0, 0, hb) < 0) return -1;
    }
    w->step_pending = WALK_PREDICT;
    return 0;
}

int walk_predict_end(BaseWalk *w, HeadBuffers *hb) {
    if (end_pending(w, WALK_PREDICT) < 0) return -1;
    return w->gpu && gpu_walk_has_head(w->gpu) ? gpu_walk_end(w->gpu, hb->logits, hb->probs, NULL) : 0;
}

int walk_predict(BaseWalk *w, HeadBuffers *hb, const float *in, int N) {
    if (walk_predict_begin(w, hb, in, N) < 0) return -1;
    return walk_predict_end(w, hb);
}
