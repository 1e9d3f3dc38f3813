#include "forward.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_setup.h"
#include "error.h"
#include "layers.h"
#include "parallel.h"
#include "simd.h"
#include "winograd.h"

// The fastest Winograd tile for a layer's map (scripts/bench_base.c layers,
// one thread, VGG16 at 150x150 and 224x224; docs/DEVELOPMENT.md): F(4x4)
// from 24x24 up (maps of 28 to 224), F(3x3) on 16x16 to 23x23 (block4's
// 18x18 at 150: F(4x4) would pad it to 20x20) and on smaller maps whose side
// F(3x3) tiles exactly (block5's 9x9 at 150: 1.25x F(2x2)'s speed), F(2x2)
// on the others (block5's 14x14 at 224), whose few tiles make the GEMMs too
// short to pay for the larger tiles' larger transformed kernel.
static int fastest_tile(const Layer *l) {
    int side = l->in_h < l->in_w ? l->in_h : l->in_w;
    if (side >= 24) return 4;
    if (side >= 16 || (l->in_h % 3 == 0 && l->in_w % 3 == 0)) return 3;
    return 2;
}

// How a frozen conv layer runs (forward.h). block1_conv1 (3 input channels)
// stays direct: the transforms cost more than they save. Every other frozen
// conv takes the fastest tile for its map: on real photos the features stay
// within 3.7e-6 of Keras (docs/DEVELOPMENT.md).
int conv_method(const Model *m, int i) {
    static int forced = -1;  // -1: not read yet; 1: the per-layer choice
    static const char *plan;
    if (forced < 0) {
        const char *e = getenv("VGGFT_WINOGRAD");
        // "fast" was the name of today's choice while it was not the default.
        forced = e && strlen(e) == 1 && strchr("0234", e[0]) ? e[0] - '0' : 1;
        if (e && forced == 1 && strcmp(e, "fast") != 0)
            fprintf(stderr, "warning: VGGFT_WINOGRAD=%s is not one of 0, 2, 3, 4: ignored\n", e);
        plan = getenv("VGGFT_WINOGRAD_PLAN");
        if (plan && (strspn(plan, "0234") != strlen(plan) || !*plan)) {
            fprintf(stderr, "warning: VGGFT_WINOGRAD_PLAN=%s: one digit 0, 2, 3 or 4 per conv layer: ignored\n",
                    plan);
            plan = NULL;
        }
    }
    const Layer *l = &m->layers[i];
    if (l->kind != LAYER_CONV || l->trainable) return 0;
    if (forced != 1) return forced;
    int conv = 0;  // which conv layer of the base this is, from 0
    for (int j = 0; j < i; j++) conv += m->layers[j].kind == LAYER_CONV;
    if (plan && conv < (int)strlen(plan) && strchr("0234", plan[conv])) return plan[conv] - '0';
    if (l->in_c < 64) return 0;
    return fastest_tile(l);
}

// The transformed kernel of layer i for method m, made on first use (NULL:
// out of memory, the direct convolution then runs).
static const float *winograd_kernel(BaseWorkspace *ws, const Layer *l, int i, int m) {
    if (ws->wino[i] && ws->wino_of[i] == l->kernel) return ws->wino[i];
    free(ws->wino[i]);
    ws->wino[i] = malloc(winograd_tile_kernel_floats(m, l->in_c, l->out_c) * sizeof(float));
    ws->wino_of[i] = l->kernel;
    if (ws->wino[i]) winograd_tile_kernel_transform(m, l->kernel, l->in_c, l->out_c, ws->wino[i]);
    return ws->wino[i];
}

int base_workspace_alloc_layers(BaseWorkspace *ws, const Model *m, int from, int to) {
    memset(ws, 0, sizeof *ws);
    size_t act = (size_t)model_max_activation(m, from, to);
    size_t scratch = 0, wino = 0;
    ws->n_layers = m->n_layers;
    ws->wino = calloc((size_t)m->n_layers, sizeof *ws->wino);
    ws->wino_of = calloc((size_t)m->n_layers, sizeof *ws->wino_of);
    if (!ws->wino || !ws->wino_of) {
        base_workspace_free(ws);
        return err_set("out of memory for the conv base workspace");
    }
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        size_t s = conv3x3_scratch_floats(l->in_h, l->in_w, l->in_c);
        int method = conv_method(m, i);
        if (method) {
            size_t sw = winograd_tile_scratch_floats(method, l->in_h, l->in_w, l->in_c, l->out_c);
            if (sw > s) s = sw;
            wino += winograd_tile_kernel_floats(method, l->in_c, l->out_c);
        }
        if (s > scratch) scratch = s;
    }
    // One image's scratch on its own thread (images side by side): each
    // layer's own method's, without the direct convolution's for Winograd
    // layers (their transformed kernels are made before such a run).
    size_t image_scratch = 0;
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        int method = conv_method(m, i);
        size_t s = method ? winograd_tile_scratch_floats(method, l->in_h, l->in_w, l->in_c, l->out_c)
                          : conv3x3_scratch_floats(l->in_h, l->in_w, l->in_c);
        if (s > image_scratch) image_scratch = s;
    }
    ws->act_floats = act ? act : 1;
    ws->image_scratch_floats = image_scratch ? image_scratch : 1;
    ws->a = malloc((act ? act : 1) * sizeof(float));
    ws->b = malloc((act ? act : 1) * sizeof(float));
    ws->scratch = malloc((scratch ? scratch : 1) * sizeof(float));
    ws->floats = 2 * act + scratch + wino;
    if (!ws->a || !ws->b || !ws->scratch) {
        base_workspace_free(ws);
        return err_set("out of memory for the conv base workspace (%zu MB)", (2 * act + scratch) * 4 >> 20);
    }
    return 0;
}

int base_workspace_alloc(BaseWorkspace *ws, const Model *m) { return base_workspace_alloc_layers(ws, m, 1, m->n_base); }

void base_workspace_free(BaseWorkspace *ws) {
    for (int i = 0; ws->extra && i < 3 * ws->n_extra; i++) free(ws->extra[i]);
    free(ws->extra);
    for (int i = 0; ws->wino && i < ws->n_layers; i++) free(ws->wino[i]);
    free(ws->wino);
    free(ws->wino_of);
    free(ws->a);
    free(ws->b);
    free(ws->scratch);
    memset(ws, 0, sizeof *ws);
}

// One image x through layers [from, to) into out, ping-ponging between a
// and b. alone: every layer on the calling thread (images side by side; the
// caller has made the transformed kernels and set OpenBLAS to one thread),
// else each layer spread over the pool.
static void image_forward(const Model *m, int from, int to, const float *x, float *out, float *a, float *b,
                          float *scratch, BaseWorkspace *ws, int alone) {
    float *y = a;
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        float *dst = i == to - 1 ? out : y;
        const int method = conv_method(m, i);
        const float *U = method ? winograd_kernel(ws, l, i, method) : NULL;
        if (U) {
            winograd_tile_forward(method, x, 1, l->in_h, l->in_w, l->in_c, U, l->bias, l->out_c, dst, scratch,
                                  !alone);
            relu_forward(dst, (size_t)l->out_h * l->out_w * l->out_c);
        } else if (l->kind == LAYER_CONV) {
            conv3x3_forward_frozen(x, 1, l->in_h, l->in_w, l->in_c, l->kernel, l->bias, l->out_c, dst, scratch);
            relu_forward(dst, (size_t)l->out_h * l->out_w * l->out_c);
        } else {
            maxpool2x2_forward(x, 1, l->in_h, l->in_w, l->in_c, dst, NULL);
        }
        x = dst;
        y = (dst == a) ? b : a;
    }
}

// Images side by side: pool task t takes the next image not yet taken until
// none is left, on its own buffers.
typedef struct {
    const Model *m;
    int from, to, N;
    const float *in;
    float *out;
    size_t in_size, out_size;
    BaseWorkspace *ws;
    atomic_int next;
} SideBySide;

static void side_by_side_task(void *ctx, int t) {
    SideBySide *j = ctx;
    BaseWorkspace *ws = j->ws;
    float *a = t ? ws->extra[3 * (t - 1)] : ws->a, *b = t ? ws->extra[3 * (t - 1) + 1] : ws->b;
    float *scratch = t ? ws->extra[3 * (t - 1) + 2] : ws->scratch;
    for (int n; (n = atomic_fetch_add(&j->next, 1)) < j->N;)
        image_forward(j->m, j->from, j->to, j->in + n * j->in_size, j->out + n * j->out_size, a, b, scratch, ws, 1);
}

// Prepares images side by side on T tasks: every transformed kernel made,
// buffers for tasks 1..T-1. 0 if the run can go side by side.
static int side_by_side_ready(const Model *m, int from, int to, BaseWorkspace *ws, int T) {
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        int method = conv_method(m, i);
        if (method && !winograd_kernel(ws, l, i, method)) return -1;  // direct fallback: its scratch is larger
        // Under an address-space limit only the main thread calls BLAS.
        if (!method && l->kind == LAYER_CONV && blas_main_thread_only() && conv3x3_frozen_uses_blas(l->in_c, l->out_c))
            return -1;
    }
    if (ws->n_extra >= T - 1) return 0;
    if (ws->no_side_by_side) return -1;
    float **extra = realloc(ws->extra, sizeof(float *) * 3 * (size_t)(T - 1));
    if (!extra) return ws->no_side_by_side = 1, -1;
    ws->extra = extra;
    for (; ws->n_extra < T - 1; ws->n_extra++) {
        float **e = ws->extra + 3 * ws->n_extra;
        e[0] = malloc(ws->act_floats * sizeof(float));
        e[1] = malloc(ws->act_floats * sizeof(float));
        e[2] = malloc(ws->image_scratch_floats * sizeof(float));
        if (!e[0] || !e[1] || !e[2]) {
            // Out of memory: give back what this took and never try again
            // (one image at a time needs nothing more).
            free(e[0]), free(e[1]), free(e[2]);
            for (int i = 0; i < 3 * ws->n_extra; i++) free(ws->extra[i]);
            ws->floats -= (size_t)ws->n_extra * (2 * ws->act_floats + ws->image_scratch_floats);
            ws->n_extra = 0;
            ws->no_side_by_side = 1;
            return -1;
        }
        ws->floats += 2 * ws->act_floats + ws->image_scratch_floats;
    }
    return 0;
}

void base_forward_layers(const Model *m, int from, int to, const float *in, int N, float *out, BaseWorkspace *ws) {
    const Layer *first = &m->layers[from - 1], *last = &m->layers[to - 1];
    const size_t in_size = (size_t)first->out_h * first->out_w * first->out_c;
    const size_t out_size = (size_t)last->out_h * last->out_w * last->out_c;
    const int T = parallel_threads();
    if (T > 1 && N >= T && side_by_side_ready(m, from, to, ws, T) == 0) {
        simd_level();  // decided once, before the threads read it
        const int blas_threads = openblas_get_num_threads();
        if (blas_threads > 1) openblas_set_num_threads(1);
        SideBySide j = {.m = m, .from = from, .to = to, .N = N, .in = in, .out = out, .in_size = in_size,
                        .out_size = out_size, .ws = ws};
        atomic_init(&j.next, 0);
        parallel_for(T, side_by_side_task, &j);
        if (blas_threads > 1) openblas_set_num_threads(blas_threads);
        return;
    }
    for (int n = 0; n < N; n++)
        image_forward(m, from, to, in + n * in_size, out + n * out_size, ws->a, ws->b, ws->scratch, ws, 0);
}

void base_forward_cpu(const Model *m, const float *in, int N, float *out, BaseWorkspace *ws) {
    base_forward_layers(m, 1, m->n_base, in, N, out, ws);
}

int head_buffers_alloc(HeadBuffers *hb, const Model *m, int cap) {
    memset(hb, 0, sizeof *hb);
    hb->cap = cap;
    size_t hidden = m->cfg.hidden > 0 ? (size_t)m->cfg.hidden : 1;
    size_t outs = (size_t)m->n_outputs;
    hb->hidden = malloc(cap * hidden * sizeof(float));
    hb->d_hidden = malloc(cap * hidden * sizeof(float));
    hb->mask = malloc(cap * hidden);
    hb->logits = malloc(cap * outs * sizeof(float));
    hb->probs = malloc(cap * outs * sizeof(float));
    hb->d_logits = malloc(cap * outs * sizeof(float));
    hb->targets = malloc(cap * sizeof(float));
    if (!hb->hidden || !hb->d_hidden || !hb->mask || !hb->logits || !hb->probs || !hb->d_logits || !hb->targets) {
        head_buffers_free(hb);
        return err_set("out of memory for head buffers (batch %d)", cap);
    }
    return 0;
}

void head_buffers_free(HeadBuffers *hb) {
    free(hb->hidden);
    free(hb->d_hidden);
    free(hb->mask);
    free(hb->logits);
    free(hb->probs);
    free(hb->d_logits);
    free(hb->targets);
    memset(hb, 0, sizeof *hb);
}

int grads_alloc(Grads *g, const Model *m, int from, int to) {
    memset(g, 0, sizeof *g);
    g->n_layers = m->n_layers;
    g->dkernel = calloc(m->n_layers, sizeof(float *));
    g->dbias = calloc(m->n_layers, sizeof(float *));
    if (!g->dkernel || !g->dbias) return err_set("out of memory");
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        if (!l->n_kernel || !l->trainable) continue;
        g->dkernel[i] = calloc((size_t)l->n_kernel, sizeof(float));
        g->dbias[i] = calloc((size_t)l->n_bias, sizeof(float));
        if (!g->dkernel[i] || !g->dbias[i]) return err_set("out of memory for gradients of layer %s", l->name);
    }
    return 0;
}

void grads_zero(Grads *g, const Model *m) {
    for (int i = 0; i < g->n_layers; i++) {
        if (g->dkernel[i]) memset(g->dkernel[i], 0, (size_t)m->layers[i].n_kernel * sizeof(float));
        if (g->dbias[i]) memset(g->dbias[i], 0, (size_t)m->layers[i].n_bias * sizeof(float));
    }
}

void grads_free(Grads *g) {
    for (int i = 0; i < g->n_layers; i++) {
        if (g->dkernel) free(g->dkernel[i]);
        if (g->dbias) free(g->dbias[i]);
    }
    free(g->dkernel);
    free(g->dbias);
    memset(g, 0, sizeof *g);
}

// Head layout after model_build: flatten, [dense (relu), [dropout]], output dense.
typedef struct {
    const Layer *hidden, *dropout, *output;
    int i_hidden, i_output;
} HeadLayers;

static HeadLayers head_layers(const Model *m) {
    HeadLayers h = {0};
    for (int i = m->n_base; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_DENSE && i < m->n_layers - 1) h.hidden = l, h.i_hidden = i;
        else if (l->kind == LAYER_DROPOUT) h.dropout = l;
        else if (l->kind == LAYER_DENSE) h.output = l, h.i_output = i;
    }
    return h;
}

// The layer that reads the features (the hidden layer, or the output layer
// when there is none), and where its output goes.
static Layer *first_dense(const HeadLayers *h, HeadBuffers *hb, float **out) {
    *out = h->hidden ? hb->hidden : hb->logits;
    return (Layer *)(h->hidden ? h->hidden : h->output);
}

int head_forward_first(const Model *m, const float *features, int N, HeadBuffers *hb) {
    HeadLayers h = head_layers(m);
    float *out;
    const Layer *l = first_dense(&h, hb, &out);
    return dense_forward(features, N, (int)model_feature_size(m), l->kernel, l->bias, l->units, out);
}

int head_forward_rest(const Model *m, int N, int training, uint64_t seed, uint64_t stream, HeadBuffers *hb) {
    HeadLayers h = head_layers(m);
    if (h.hidden) {
        size_t n = (size_t)N * h.hidden->units;
        relu_forward(hb->hidden, n);
        hb->dropout_applied = h.dropout && training;
        if (hb->dropout_applied) dropout_forward(hb->hidden, n, h.dropout->rate, seed, stream, hb->mask);
        if (dense_forward(hb->hidden, N, h.hidden->units, h.output->kernel, h.output->bias, h.output->units,
                          hb->logits) < 0)
            return -1;
    }
    if (h.output->act == ACT_SIGMOID) sigmoid_forward(hb->logits, hb->probs, (size_t)N);
    else softmax_forward(hb->logits, hb->probs, N, h.output->units);
    return 0;
}

int head_forward(const Model *m, const float *features, int N, int training, uint64_t seed, uint64_t stream,
                 HeadBuffers *hb) {
    if (head_forward_first(m, features, N, hb) < 0) return -1;
    return head_forward_rest(m, N, training, seed, stream, hb);
}

// The loss of the batch in hb->logits and, if dl, its gradient.
static float head_loss(const Model *m, const HeadLayers *h, const int32_t *labels, const float *sample_weights, int N,
                       HeadBuffers *hb, float *dl) {
    if (h->output->act == ACT_SIGMOID) {
        for (int i = 0; i < N; i++) hb->targets[i] = (float)labels[i];
        return loss_sigmoid_bce(hb->logits, hb->targets, sample_weights, N, dl, NULL);
    }
    return loss_softmax_cce(hb->logits, labels, sample_weights, N, h->output->units, dl, NULL);
}

// From the output layer's gradient dl to the hidden layer's, in hb->d_hidden.
static void hidden_backward(const HeadLayers *h, int N, HeadBuffers *hb) {
    size_t n = (size_t)N * h->hidden->units;
    if (hb->dropout_applied) dropout_backward(hb->d_hidden, n, h->dropout->rate, hb->mask);
    // relu'(pre) equals relu'(post-dropout) only where dropout kept the
    // unit; dropped units already have zero gradient from the mask.
    relu_backward(hb->hidden, hb->d_hidden, n);
}

float head_backward(const Model *m, const float *features, const int32_t *labels, const float *sample_weights, int N,
                    HeadBuffers *hb, Grads *g, float *d_features) {
    HeadLayers h = head_layers(m);
    const int D = (int)model_feature_size(m);
    float *dl = (g || d_features) ? hb->d_logits : NULL;
    float loss = head_loss(m, &h, labels, sample_weights, N, hb, dl);
    if (!dl) return loss;
    const float *x = h.hidden ? hb->hidden : features;
    int dim = h.hidden ? h.hidden->units : D;
    float *dx = h.hidden ? hb->d_hidden : d_features;
    dense_backward(x, N, dim, h.output->kernel, h.output->units, dl, dx, g ? g->dkernel[h.i_output] : NULL,
                   g ? g->dbias[h.i_output] : NULL);
    if (h.hidden) {
        hidden_backward(&h, N, hb);
        dense_backward(features, N, D, h.hidden->kernel, h.hidden->units, hb->d_hidden, d_features,
                       g ? g->dkernel[h.i_hidden] : NULL, g ? g->dbias[h.i_hidden] : NULL);
    }
    return loss;
}

int head_train_step(const Model *m, const Optimizer *o, float *const *slots, const float *features,
                    const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                    const float *next_features, int next_N, HeadBuffers *hb, Grads *g, float *loss) {
    HeadLayers h = head_layers(m);
    if (head_forward_rest(m, N, 1, seed, (uint64_t)o->step, hb) < 0) return -1;
    *loss = head_loss(m, &h, labels, sample_weights, N, hb, hb->d_logits);
    OptimRule rule = optim_rule(o);
    const float *d_first = hb->d_logits;
    int i_first = h.i_output;
    if (h.hidden) {
        // The small output layer the plain way: its gradient, and din from
        // the weights before the update, then the update.
        const Layer *l = h.output;
        int i = h.i_output;
        memset(g->dkernel[i], 0, sizeof(float) * (size_t)l->n_kernel);
        memset(g->dbias[i], 0, sizeof(float) * (size_t)l->n_bias);
        dense_backward(hb->hidden, N, h.hidden->units, l->kernel, l->units, hb->d_logits, hb->d_hidden, g->dkernel[i],
                       g->dbias[i]);
        optim_apply(&rule, l->kernel, g->dkernel[i], HEAD_SLOTS(slots, i, 0), (size_t)l->n_kernel);
        optim_apply(&rule, l->bias, g->dbias[i], HEAD_SLOTS(slots, i, 1), (size_t)l->n_bias);
        hidden_backward(&h, N, hb);
        d_first = hb->d_hidden, i_first = h.i_hidden;
    }
    // The big layer in one pass, which also runs the next batch into it: its
    // output buffer is free again now that the backward pass is done.
    float *next_out;
    Layer *first = first_dense(&h, hb, &next_out);
    return dense_update_forward(features, N, (int)model_feature_size(m), first->kernel, first->bias, first->units,
                                d_first, &rule, HEAD_SLOTS(slots, i_first, 0), HEAD_SLOTS(slots, i_first, 1),
                                next_features, next_N, next_out);
}

void head_predict_classes(const Model *m, const HeadBuffers *hb, int N, int32_t *classes) {
    int K = m->n_outputs;
    for (int i = 0; i < N; i++) {
        if (K == 1) {
            classes[i] = hb->probs[i] > 0.5f;  // Keras binary_accuracy: strictly greater
            continue;
        }
        int best = 0;
        for (int k = 1; k < K; k++)
            if (hb->probs[i * K + k] > hb->probs[i * K + best]) best = k;
        classes[i] = best;
    }
}
