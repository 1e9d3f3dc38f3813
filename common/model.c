#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "layers.h"
#include "rng.h"

// Convs per block; channels per block are 64, 128, 256, 512, 512.
static const int vgg16_convs[5] = {2, 2, 3, 3, 3};
static const int vgg19_convs[5] = {2, 2, 4, 4, 4};
static const int block_channels[5] = {64, 128, 256, 512, 512};

void model_config_defaults(ModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = ARCH_VGG16;
    cfg->input_h = cfg->input_w = 150;
    cfg->cut = "block5_pool";
    cfg->hidden = 256;
    cfg->dropout = 0.5f;
    cfg->n_classes = 2;
    cfg->binary = 1;
    cfg->unfreeze = NULL;
}

int arch_from_name(const char *name, Arch *arch) {
    if (!strcmp(name, "vgg16")) *arch = ARCH_VGG16;
    else if (!strcmp(name, "vgg19")) *arch = ARCH_VGG19;
    else return err_set("unknown model '%s' (expected vgg16 or vgg19)", name);
    return 0;
}

const char *arch_name(Arch arch) { return arch == ARCH_VGG19 ? "vgg19" : "vgg16"; }

static Layer *push(Model *m, int cap, const char *name, LayerKind kind) {
    if (m->n_layers >= cap) return NULL;
    Layer *l = &m->layers[m->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->kind = kind;
    if (m->n_layers > 1) {
        const Layer *p = &m->layers[m->n_layers - 2];
        l->in_h = p->out_h, l->in_w = p->out_w, l->in_c = p->out_c;
    }
    l->out_h = l->in_h, l->out_w = l->in_w, l->out_c = l->in_c;
    return l;
}

// Comma-separated names of layers [from, to) satisfying kind (or any if -1),
// for error messages that list the valid choices.
static void list_names(const Model *m, int from, int to, int kind, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = from; i < to && used < size; i++)
        if (kind < 0 || (int)m->layers[i].kind == kind)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", m->layers[i].name);
}

int model_build(Model *m, const ModelConfig *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (cfg->input_h < 32 || cfg->input_w < 32)
        return err_set("input size %dx%d is too small: VGG needs at least 32x32", cfg->input_w, cfg->input_h);
    if (cfg->input_h > 4096 || cfg->input_w > 4096)
        return err_set("input size %dx%d is too large (at most 4096x4096)", cfg->input_w, cfg->input_h);
    if (cfg->n_classes < 2) return err_set("need at least 2 classes, got %d", cfg->n_classes);
    if (cfg->binary && cfg->n_classes != 2)
        return err_set("binary mode needs exactly 2 classes, got %d (use categorical)", cfg->n_classes);
    if (cfg->hidden < 0) return err_set("hidden units must be >= 0, got %d", cfg->hidden);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1)) return err_set("dropout rate must be in [0, 1), got %g", cfg->dropout);

    const int cap = 32;
    m->layers = calloc(cap, sizeof(Layer));
    if (!m->layers) return err_set("out of memory");
    const int *convs = cfg->arch == ARCH_VGG19 ? vgg19_convs : vgg16_convs;

    Layer *in = push(m, cap, "input_1", LAYER_INPUT);
    in->out_h = cfg->input_h, in->out_w = cfg->input_w, in->out_c = 3;
    char name[LAYER_NAME_MAX];
    for (int b = 0; b < 5; b++) {
        for (int c = 0; c < convs[b]; c++) {
            snprintf(name, sizeof name, "block%d_conv%d", b + 1, c + 1);
            Layer *l = push(m, cap, name, LAYER_CONV);
            l->act = ACT_RELU;
            l->units = l->out_c = block_channels[b];
            l->n_kernel = 9L * l->in_c * l->out_c;
            l->n_bias = l->out_c;
        }
        snprintf(name, sizeof name, "block%d_pool", b + 1);
        Layer *p = push(m, cap, name, LAYER_POOL);
        p->out_h = p->in_h / 2, p->out_w = p->in_w / 2;
    }

    const char *cut = cfg->cut ? cfg->cut : "block5_pool";
    int cut_at = model_find_layer(m, cut);
    char names[512];
    if (cut_at < 0 || m->layers[cut_at].kind != LAYER_POOL) {
        list_names(m, 0, m->n_layers, LAYER_POOL, names, sizeof names);
        int bad = cut_at < 0;
        model_free(m);
        return err_set("--layer %s: %s (choose one of: %s)", cut, bad ? "no such layer" : "not a pooling layer", names);
    }
    snprintf(m->cut_name, sizeof m->cut_name, "%s", cut);
    m->n_layers = cut_at + 1;
    m->n_base = m->n_layers;

    m->first_trainable_base = m->n_base;
    if (cfg->unfreeze && cfg->unfreeze[0]) {
        int u = model_find_layer(m, cfg->unfreeze);
        if (u <= 0) {
            list_names(m, 1, m->n_base, LAYER_CONV, names, sizeof names);
            model_free(m);
            return err_set("--unfreeze %s: no such layer in the %s base cut at %s (choose one of: %s)", cfg->unfreeze,
                           arch_name(cfg->arch), cut, names);
        }
        if (m->layers[u].kind != LAYER_CONV) {
            list_names(m, 1, m->n_base, LAYER_CONV, names, sizeof names);
            model_free(m);
            return err_set("--unfreeze %s: not a conv layer (choose one of: %s)", cfg->unfreeze, names);
        }
        m->first_trainable_base = u;
        snprintf(m->unfreeze_name, sizeof m->unfreeze_name, "%s", cfg->unfreeze);
    }
    for (int i = 1; i < m->n_base; i++) m->layers[i].trainable = i >= m->first_trainable_base;

    // The head. Keras auto-names these flatten, dense, dropout, dense_1.
    Layer *f = push(m, cap, "flatten", LAYER_FLATTEN);
    f->out_c = f->in_h * f->in_w * f->in_c;
    f->out_h = f->out_w = 1;
    f->trainable = 1;
    int dense_count = 0;
    if (cfg->hidden > 0) {
        Layer *d = push(m, cap, "dense", LAYER_DENSE);
        dense_count++;
        d->act = ACT_RELU;
        d->units = d->out_c = cfg->hidden;
        d->n_kernel = (long)d->in_c * d->units;
        d->n_bias = d->units;
        d->trainable = 1;
        if (cfg->dropout > 0) {
            Layer *dr = push(m, cap, "dropout", LAYER_DROPOUT);
            dr->rate = cfg->dropout;
            dr->trainable = 1;
        }
    }
    m->n_outputs = cfg->binary ? 1 : cfg->n_classes;
    Layer *o = push(m, cap, dense_count ? "dense_1" : "dense", LAYER_DENSE);
    o->act = cfg->binary ? ACT_SIGMOID : ACT_SOFTMAX;
    o->units = o->out_c = m->n_outputs;
    o->n_kernel = (long)o->in_c * o->units;
    o->n_bias = o->units;
    o->trainable = 1;
    return 0;
}

void model_free(Model *m) {
    if (!m->layers) return;
    for (int i = 0; i < m->n_layers; i++) {
        free(m->layers[i].kernel);
        free(m->layers[i].bias);
    }
    free(m->layers);
    m->layers = NULL;
    m->n_layers = 0;
}

float *model_floats_alloc(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes);
    return p;
}

int model_alloc_weights(Model *m, int from, int to) {
    for (int i = from; i < to; i++) {
        Layer *l = &m->layers[i];
        if (!l->n_kernel || l->kernel) continue;
        l->kernel = model_floats_alloc((size_t)l->n_kernel);
        l->bias = model_floats_alloc((size_t)l->n_bias);
        if (!l->kernel || !l->bias) return err_set("out of memory allocating weights of layer %s", l->name);
    }
    return 0;
}

void model_init_random(Model *m, int from, int to, uint64_t seed) {
    for (int i = from; i < to; i++) {
        Layer *l = &m->layers[i];
        if (!l->n_kernel || !l->kernel) continue;
        int fan_in = l->kind == LAYER_CONV ? 9 * l->in_c : l->in_c;
        int fan_out = l->kind == LAYER_CONV ? 9 * l->out_c : l->units;
        // Each layer draws from its own stream so that layers do not share values.
        glorot_uniform(l->kernel, (size_t)l->n_kernel, fan_in, fan_out, rng_hash(seed, (uint64_t)i));
        memset(l->bias, 0, (size_t)l->n_bias * sizeof(float));
    }
}

int model_check_finite(const Model *m, int from, int to) {
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        for (int t = 0; t < 2 && l->n_kernel; t++) {
            const float *w = t ? l->bias : l->kernel;
            long n = t ? l->n_bias : l->n_kernel;
            for (long k = 0; w && k < n; k++)
                if (!isfinite(w[k]))
                    return err_set("layer %s: its %s holds a non-finite value (%g at index %ld)", l->name,
                                   t ? "bias" : "kernel", w[k], k);
        }
    }
    return 0;
}

int model_find_layer(const Model *m, const char *name) {
    for (int i = 0; i < m->n_layers; i++)
        if (!strcmp(m->layers[i].name, name)) return i;
    return -1;
}

long model_feature_size(const Model *m) {
    const Layer *c = &m->layers[m->n_base - 1];
    return (long)c->out_h * c->out_w * c->out_c;
}

long model_max_activation(const Model *m, int from, int to) {
    long mx = 0;
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        long a = (long)l->out_h * l->out_w * l->out_c;
        long b = (long)l->in_h * l->in_w * l->in_c;
        if (a > mx) mx = a;
        if (b > mx) mx = b;
    }
    return mx;
}

ParamCounts model_param_counts(const Model *m) {
    ParamCounts p = {0, 0, 0};
    for (int i = 0; i < m->n_layers; i++) {
        long n = m->layers[i].n_kernel + m->layers[i].n_bias;
        p.total += n;
        if (m->layers[i].trainable) p.trainable += n;
        else p.non_trainable += n;
    }
    return p;
}

const char *format_thousands(long v, char *buf, size_t size) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%ld", v < 0 ? -v : v);
    size_t o = 0;
    if (v < 0 && o + 1 < size) buf[o++] = '-';
    for (int i = 0; i < n && o + 1 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0 && o + 1 < size) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

static const char *kind_name(LayerKind k) {
    switch (k) {
    case LAYER_INPUT: return "InputLayer";
    case LAYER_CONV: return "Conv2D";
    case LAYER_POOL: return "MaxPooling2D";
    case LAYER_FLATTEN: return "Flatten";
    case LAYER_DENSE: return "Dense";
    case LAYER_DROPOUT: return "Dropout";
    }
    return "?";
}

static void shape_text(const Layer *l, char *buf, size_t size) {
    if (l->kind == LAYER_FLATTEN || l->kind == LAYER_DENSE || l->kind == LAYER_DROPOUT)
        snprintf(buf, size, "(None, %d)", l->out_c);
    else
        snprintf(buf, size, "(None, %d, %d, %d)", l->out_h, l->out_w, l->out_c);
}

static void rule(FILE *out, char c, int width) {
    for (int i = 0; i < width; i++) fputc(c, out);
    fputc('\n', out);
}

// One table row in Keras 2's layout: name (type) | output shape | params.
static void row(FILE *out, const char *name, const char *type, const char *shape, long params, const char *trainable) {
    char left[128];
    snprintf(left, sizeof left, "%s (%s)", name, type);
    fprintf(out, " %-28s%-26s%-10ld", left, shape, params);
    if (trainable) fprintf(out, "%s", trainable);
    fputc('\n', out);
}

void model_print_summary(const Model *m, SummaryStyle style, FILE *out) {
    const int width = style == SUMMARY_FLAT ? 76 : 65;
    const char *title = style == SUMMARY_BASE ? arch_name(m->cfg.arch) : "sequential";
    char buf[64];
    fprintf(out, "Model: \"%s\"\n", title);
    rule(out, '_', width);
    fprintf(out, " %-28s%-26s%-10s%s\n", "Layer (type)", "Output Shape", "Param #",
            style == SUMMARY_FLAT ? "Trainable" : "");
    rule(out, '=', width);
    ParamCounts shown = {0, 0, 0};
    int first = 1;
    for (int i = 0; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (style == SUMMARY_BASE && i >= m->n_base) break;
        if (style == SUMMARY_NESTED && i < m->n_base) {
            if (i == m->n_base - 1) {  // the whole base as one row
                long base = 0, base_trainable = 0;
                for (int j = 0; j < m->n_base; j++) {
                    base += m->layers[j].n_kernel + m->layers[j].n_bias;
                    if (m->layers[j].trainable) base_trainable += m->layers[j].n_kernel + m->layers[j].n_bias;
                }
                shape_text(l, buf, sizeof buf);
                row(out, arch_name(m->cfg.arch), "Functional", buf, base, NULL);
                shown.total += base;
                shown.trainable += base_trainable;
                first = 0;
            }
            continue;
        }
        if (!first) fprintf(out, "%*s\n", width, "");  // Keras 2 separates rows with blank lines
        first = 0;
        long params = l->n_kernel + l->n_bias;
        shape_text(l, buf, sizeof buf);
        const char *tr = NULL;
        if (style == SUMMARY_FLAT) tr = l->kind == LAYER_INPUT ? "-" : l->trainable ? "Y" : "N";
        row(out, l->name, kind_name(l->kind), buf, params, tr);
        shown.total += params;
        if (l->trainable) shown.trainable += params;
    }
    shown.non_trainable = shown.total - shown.trainable;
    rule(out, '=', width);
    fprintf(out, "Total params: %s\n", format_thousands(shown.total, buf, sizeof buf));
    fprintf(out, "Trainable params: %s\n", format_thousands(shown.trainable, buf, sizeof buf));
    fprintf(out, "Non-trainable params: %s\n", format_thousands(shown.non_trainable, buf, sizeof buf));
    rule(out, '_', width);
}
