#include "model_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "weights_h5.h"

// Describes layers [from, to) of m for the HDF5 module (data = m's buffers).
// base_group: NULL, or the nested group to write the base layers into.
static H5Layer *h5_spec(const Model *m, int from, int to, const char *base_group) {
    H5Layer *s = calloc((size_t)(to - from) + 1, sizeof(H5Layer));
    if (!s) return NULL;
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        H5Layer *h = &s[i - from];
        h->layer = l->name;
        if (i < m->n_base) h->group = base_group;
        if (!l->n_kernel) continue;
        h->n_tensors = 2;
        if (l->kind == LAYER_CONV) {
            h->ndim[0] = 4;
            h->shape[0][0] = 3, h->shape[0][1] = 3, h->shape[0][2] = l->in_c, h->shape[0][3] = l->out_c;
        } else {
            h->ndim[0] = 2;
            h->shape[0][0] = l->in_c, h->shape[0][1] = l->units;
        }
        h->ndim[1] = 1;
        h->shape[1][0] = (int)l->n_bias;
        h->data[0] = l->kernel;
        h->data[1] = l->bias;
    }
    return s;
}

// blockB_convC: 1 with B and C; any other name: 0.
static int conv_name(const char *s, int *b, int *c) {
    int end = 0;
    return sscanf(s, "block%d_conv%d%n", b, c, &end) == 2 && end > 0 && s[end] == '\0';
}

int model_check_conv_layers(const Model *m, const char *path, const char *const *names, int n) {
    // Blocks 3 to 5 tell the two apart: VGG19 has a conv4 there, VGG16 stops
    // at conv3. A file without any of them (e.g. cut at block2_pool) holds
    // layers both share and fits either.
    int has[6][6] = {{0}}, n_conv = 0, b, c;
    for (int i = 0; i < n; i++)
        if (conv_name(names[i], &b, &c) && b >= 1 && b <= 5 && c >= 1 && c <= 5) {
            has[b][c] = 1;
            n_conv++;
        }
    char with[128] = "", without[128] = "";
    for (b = 3; b <= 5; b++) {
        char *list = has[b][4] ? with : has[b][3] ? without : NULL;
        if (list)
            snprintf(list + strlen(list), sizeof with - strlen(list), "%sblock%d_conv4", *list ? ", " : "", b);
    }
    int need = 0;
    for (int i = 1; i < m->n_base; i++) need += m->layers[i].kind == LAYER_CONV;
    char upto[LAYER_NAME_MAX + 8] = "";
    if (strcmp(m->cut_name, "block5_pool")) snprintf(upto, sizeof upto, " up to %s", m->cut_name);
    if (m->cfg.arch == ARCH_VGG16 && *with) {
        if (!*without)
            return err_set("%s holds a VGG19 conv base (%d conv layers, with %s); --model vgg16 needs VGG16's %d%s "
                           "(use --model vgg19)", path, n_conv, with, need, upto);
        return err_set("%s holds conv layers that VGG16 does not have (%s); --model vgg16 needs VGG16's %d%s", path,
                       with, need, upto);
    }
    if (m->cfg.arch == ARCH_VGG19 && *without) {
        if (!*with)
            return err_set("%s holds a VGG16 conv base (%d conv layers, without %s); --model vgg19 needs VGG19's %d%s "
                           "(use --model vgg16)", path, n_conv, without, need, upto);
        return err_set("%s lacks conv layers of VGG19 (%s); --model vgg19 needs VGG19's %d%s", path, without, need,
                       upto);
    }
    return 0;
}

// model_check_conv_layers on the layers a file holds.
static int check_conv_file(const Model *m, const char *path) {
    H5LayerInfo *info = NULL;
    int n = h5_list_layers(path, &info);
    if (n < 0) return -1;
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    int rc = names ? 0 : err_set("out of memory");
    for (int i = 0; i < n && rc == 0; i++) names[i] = info[i].name;
    if (rc == 0) rc = model_check_conv_layers(m, path, names, n);
    free(names);
    free(info);
    return rc;
}

int model_load_base(Model *m, const char *path) {
    if (check_conv_file(m, path) < 0) return -1;
    if (model_alloc_weights(m, 1, m->n_base) < 0) return -1;
    H5Layer *s = h5_spec(m, 1, m->n_base, NULL);
    if (!s) return err_set("out of memory");
    int rc = h5_read_layers(path, s, m->n_base - 1);
    free(s);
    return rc;
}

void model_meta_from_model(const Model *m, ModelMeta *meta) {
    memset(meta, 0, sizeof *meta);
    snprintf(meta->arch, sizeof meta->arch, "%s", arch_name(m->cfg.arch));
    meta->input_h = m->cfg.input_h;
    meta->input_w = m->cfg.input_w;
    snprintf(meta->cut, sizeof meta->cut, "%s", m->cut_name);
    snprintf(meta->preprocess, sizeof meta->preprocess, "caffe");
    snprintf(meta->interpolation, sizeof meta->interpolation, "nearest");
    meta->n_classes = m->cfg.n_classes;
    meta->binary = m->cfg.binary;
    meta->hidden = m->cfg.hidden;
    meta->dropout = m->cfg.dropout;
    snprintf(meta->unfreeze, sizeof meta->unfreeze, "%s", m->unfreeze_name);
}

void model_meta_to_config(const ModelMeta *meta, ModelConfig *cfg) {
    model_config_defaults(cfg);
    arch_from_name(meta->arch, &cfg->arch);
    cfg->input_h = meta->input_h;
    cfg->input_w = meta->input_w;
    cfg->cut = meta->cut;
    cfg->n_classes = meta->n_classes;
    cfg->binary = meta->binary;
    cfg->hidden = meta->hidden;
    cfg->dropout = meta->dropout;
    cfg->unfreeze = meta->unfreeze[0] ? meta->unfreeze : NULL;
}

void model_meta_free(ModelMeta *meta) {
    if (meta->class_names)
        for (int i = 0; i < meta->n_classes; i++) free(meta->class_names[i]);
    free(meta->class_names);
    meta->class_names = NULL;
    free(meta->features_made_by);
    meta->features_made_by = NULL;
}

const char *model_meta_made_by_note(const ModelMeta *meta, char *buf, size_t size) {
    if (meta->features_made_by && meta->features_made_by[0])
        snprintf(buf, size, "; its features were made by: %s", meta->features_made_by);
    else if (size)
        buf[0] = '\0';
    return buf;
}

long model_meta_pixel_budget(const ModelMeta *meta, long fallback) {
    const char *p = strstr(meta->decode, "pixel budget ");
    long n = 0;
    return p && sscanf(p + 13, "%ld", &n) == 1 && n > 0 ? n : fallback;
}

int model_meta_check_writable(const ModelMeta *meta, const char *path) {
    if (meta->n_classes < 2 || meta->n_classes > MODEL_MAX_CLASSES)
        return err_set("%s: %d classes; a model file records 2 to %d", path, meta->n_classes, MODEL_MAX_CLASSES);
    // Class names are stored one per line: a folder name with a newline
    // cannot be represented, so refuse it rather than corrupt the list.
    for (int i = 0; meta->class_names && i < meta->n_classes; i++)
        if (strchr(meta->class_names[i], '\n'))
            return err_set("%s: class name '%s' contains a newline, which model files cannot store", path,
                           meta->class_names[i]);
    return 0;
}

int model_save(const Model *m, const char *path, int from, const ModelMeta *meta) {
    if (model_meta_check_writable(meta, path) < 0) return -1;
    // One per line; thousands of classes make a long value, which
    // h5_write_layers splits into vggft_class_names0, 1, ... (Keras's way).
    size_t names_len = 1;
    for (int i = 0; meta->class_names && i < meta->n_classes; i++) names_len += strlen(meta->class_names[i]) + 1;
    char *names = malloc(names_len);
    if (!names) return err_set("out of memory");
    size_t at = 0;
    for (int i = 0; meta->class_names && i < meta->n_classes; i++) {
        size_t n = strlen(meta->class_names[i]);
        memcpy(names + at, meta->class_names[i], n);
        at += n;
        if (i + 1 < meta->n_classes) names[at++] = '\n';
    }
    names[at] = '\0';
    char size[32], classes[16], hidden[16], dropout[32];
    snprintf(size, sizeof size, "%dx%d", meta->input_w, meta->input_h);
    snprintf(classes, sizeof classes, "%d", meta->n_classes);
    snprintf(hidden, sizeof hidden, "%d", meta->hidden);
    snprintf(dropout, sizeof dropout, "%.9g", meta->dropout);
    H5Attr attrs[] = {
        {"vggft_format", "1"},
        {"vggft_version", VGGFT_VERSION},
        {"vggft_contents", from <= 1 ? "full" : "head"},
        {"vggft_model", meta->arch},
        {"vggft_input_size", size},
        {"vggft_layer", meta->cut},
        {"vggft_preprocess", meta->preprocess},
        {"vggft_interpolation", meta->interpolation},
        {"vggft_classes", classes},
        {"vggft_class_mode", meta->binary ? "binary" : "categorical"},
        {"vggft_class_names", names},
        {"vggft_hidden", hidden},
        {"vggft_dropout", dropout},
        {"vggft_unfreeze", meta->unfreeze},
        {"vggft_weights", meta->weights},
        {"vggft_training", meta->training ? meta->training : ""},
        {"vggft_features_made_by", meta->features_made_by ? meta->features_made_by : ""},
        {"vggft_decoding", meta->decode},
    };
    // A full file nests the base in a group named after the arch (see the
    // header): the layout of the seeds' Sequential([VGG16(...), ...]).
    if (from < 1) from = 1;
    H5Layer *s = h5_spec(m, from, m->n_layers, from == 1 ? arch_name(m->cfg.arch) : NULL);
    int rc = s ? h5_write_layers(path, s, m->n_layers - from, attrs, (int)(sizeof attrs / sizeof attrs[0]))
               : err_set("out of memory");
    free(s);
    free(names);
    return rc;
}

// Reads one attribute into a buffer; a missing one is an error naming it.
static int read_attr(const char *path, const char *key, char *buf, size_t size) {
    char *v = NULL;
    int rc = h5_read_attr(path, key, &v);
    if (rc < 0) return -1;
    if (rc == 0) return err_set("%s: not a vggft model file (no attribute %s)", path, key);
    snprintf(buf, size, "%s", v);
    free(v);
    return 0;
}

static int meta_read(const char *path, ModelMeta *meta);

int model_meta_read(const char *path, ModelMeta *meta) {
    if (meta_read(path, meta) == 0) return 0;
    // train's and finetune's OUT.ckpt beside OUT.h5, given by a slip: not
    // HDF5 (a model file, whatever its name, reads as one).
    size_t len = strlen(path);
    if (len > 5 && !strcmp(path + len - 5, ".ckpt"))
        return err_set("%s: a checkpoint (the state --resume continues from), not a model file: give %.*s.h5, "
                       "written beside it",
                       path, (int)(len - 5), path);
    return -1;
}

static int meta_read(const char *path, ModelMeta *meta) {
    memset(meta, 0, sizeof *meta);
    char size[32], classes[16], mode[16], hidden[16], dropout[32];
    if (read_attr(path, "vggft_model", meta->arch, sizeof meta->arch) < 0 ||
        read_attr(path, "vggft_contents", meta->contents, sizeof meta->contents) < 0 ||
        read_attr(path, "vggft_input_size", size, sizeof size) < 0 ||
        read_attr(path, "vggft_layer", meta->cut, sizeof meta->cut) < 0 ||
        read_attr(path, "vggft_preprocess", meta->preprocess, sizeof meta->preprocess) < 0 ||
        read_attr(path, "vggft_interpolation", meta->interpolation, sizeof meta->interpolation) < 0 ||
        read_attr(path, "vggft_classes", classes, sizeof classes) < 0 ||
        read_attr(path, "vggft_class_mode", mode, sizeof mode) < 0 ||
        read_attr(path, "vggft_hidden", hidden, sizeof hidden) < 0 ||
        read_attr(path, "vggft_dropout", dropout, sizeof dropout) < 0 ||
        read_attr(path, "vggft_unfreeze", meta->unfreeze, sizeof meta->unfreeze) < 0)
        return -1;
    if (sscanf(size, "%dx%d", &meta->input_w, &meta->input_h) != 2)
        return err_set("%s: bad vggft_input_size '%s'", path, size);
    meta->n_classes = atoi(classes);
    meta->binary = !strcmp(mode, "binary");
    meta->hidden = atoi(hidden);
    meta->dropout = (float)atof(dropout);
    if (meta->n_classes < 2 || meta->n_classes > MODEL_MAX_CLASSES)
        return err_set("%s: bad vggft_classes '%s'", path, classes);
    char *w = NULL;
    if (h5_read_attr(path, "vggft_weights", &w) == 1) snprintf(meta->weights, sizeof meta->weights, "%s", w);
    free(w);
    char *decode = NULL;  // optional (files before it had none)
    if (h5_read_attr(path, "vggft_decoding", &decode) == 1) snprintf(meta->decode, sizeof meta->decode, "%s", decode);
    free(decode);
    char *made_by = NULL;  // optional (files before it had none)
    if (h5_read_attr(path, "vggft_features_made_by", &made_by) == 1) meta->features_made_by = made_by;
    else free(made_by);
    char *names = NULL;
    if (h5_read_attr(path, "vggft_class_names", &names) == 1 && names[0]) {
        meta->class_names = calloc((size_t)meta->n_classes, sizeof(char *));
        char *p = names;
        for (int i = 0; i < meta->n_classes; i++) {
            char *nl = strchr(p, '\n');
            if (!nl && i + 1 < meta->n_classes) {
                free(names);
                model_meta_free(meta);
                return err_set("%s: vggft_class_names lists fewer than %d classes", path, meta->n_classes);
            }
            if (nl) *nl = '\0';
            meta->class_names[i] = strdup(p);
            p = nl ? nl + 1 : p + strlen(p);
        }
        // More names than outputs, or a name twice (a file edited by hand,
        // or damaged): which output is which class would be a guess.
        const int K = meta->n_classes;
        int more = *p != '\0', dup_a = -1, dup_b = -1;
        for (int i = 0; i < K && dup_a < 0; i++)
            for (int j = i + 1; j < K && dup_a < 0; j++)
                if (meta->class_names[i] && meta->class_names[j] && !strcmp(meta->class_names[i], meta->class_names[j]))
                    dup_a = i, dup_b = j;
        if (more || dup_a >= 0) {
            char what[600];
            if (more) snprintf(what, sizeof what, "lists more than the %d classes the head has", K);
            else snprintf(what, sizeof what, "names class %d and class %d both '%.400s'", dup_a, dup_b,
                          meta->class_names[dup_a]);
            free(names);
            model_meta_free(meta);
            return err_set("%s: vggft_class_names %s (damaged or edited by hand: retrain the head)", path, what);
        }
    }
    free(names);
    return 0;
}

// Refuses a file (meta read from it) made for another model than m, naming
// the first difference.
static int check_meta(const Model *m, const char *path, const ModelMeta *meta) {
    char want[32], got[32];
    snprintf(want, sizeof want, "%dx%d", m->cfg.input_w, m->cfg.input_h);
    snprintf(got, sizeof got, "%dx%d", meta->input_w, meta->input_h);
    const char *what = NULL, *have = NULL, *need = NULL;
    char a[32], b[32];
    if (strcmp(meta->arch, arch_name(m->cfg.arch))) what = "model", have = meta->arch, need = arch_name(m->cfg.arch);
    else if (strcmp(got, want)) what = "input size", have = got, need = want;
    else if (strcmp(meta->cut, m->cut_name)) what = "feature layer", have = meta->cut, need = m->cut_name;
    else if (meta->n_classes != m->cfg.n_classes) {
        snprintf(a, sizeof a, "%d", meta->n_classes);
        snprintf(b, sizeof b, "%d", m->cfg.n_classes);
        what = "number of classes", have = a, need = b;
    } else if (meta->hidden != m->cfg.hidden) {
        snprintf(a, sizeof a, "%d", meta->hidden);
        snprintf(b, sizeof b, "%d", m->cfg.hidden);
        what = "hidden units", have = a, need = b;
    } else if (meta->binary != m->cfg.binary)
        what = "class mode", have = meta->binary ? "binary" : "categorical", need = m->cfg.binary ? "binary" : "categorical";
    if (what) return err_set("%s: %s is %s, expected %s", path, what, have, need);
    return 0;
}

// Reads layers [from, n_layers) of m from path after checking its metadata;
// full: the file must hold the base too.
static int load_layers(Model *m, const char *path, int from, int full) {
    ModelMeta meta;
    if (model_meta_read(path, &meta) < 0) return -1;
    int rc = 0;
    if (full && strcmp(meta.contents, "full"))
        rc = err_set("%s holds only the %s (vggft_contents=%s), not the base: a full model file is needed", path,
                     !strcmp(meta.contents, "head") ? "dense head" : "part of a model", meta.contents);
    if (rc == 0) rc = check_meta(m, path, &meta);
    model_meta_free(&meta);
    if (rc < 0) return -1;
    if (model_alloc_weights(m, from, m->n_layers) < 0) return -1;
    H5Layer *s = h5_spec(m, from, m->n_layers, NULL);
    if (!s) return err_set("out of memory");
    rc = h5_read_layers(path, s, m->n_layers - from);
    free(s);
    return rc;
}

int model_load_head(Model *m, const char *path) { return load_layers(m, path, model_head_start(m), 0); }

int model_load_full(Model *m, const char *path) { return load_layers(m, path, 1, 1); }

int model_meta_check_classes(const ModelMeta *head, const char *what, char *const *names, int n) {
    if (!head->class_names) return 0;  // an old head without names: nothing to compare
    int same = n == head->n_classes;
    for (int k = 0; same && k < n; k++) same = !strcmp(names[k], head->class_names[k]);
    if (same) return 0;
    char a[600] = "", b[600] = "";
    for (int k = 0; k < n; k++) snprintf(a + strlen(a), sizeof a - strlen(a), "%s%s", k ? ", " : "", names[k]);
    for (int k = 0; k < head->n_classes; k++)
        snprintf(b + strlen(b), sizeof b - strlen(b), "%s%s", k ? ", " : "", head->class_names[k]);
    return err_set("%s has classes [%s]; the head was trained on [%s]", what, a, b);
}

const char *model_decode_pixels(const char *decode, char *buf, size_t size) {
    // "full, pixel budget 50000000, tf32 convolutions": the first two parts.
    const char *comma = strchr(decode, ',');
    const char *second = comma ? strchr(comma + 1, ',') : NULL;
    snprintf(buf, size, "%.*s", second ? (int)(second - decode) : (int)strlen(decode), decode);
    return buf;
}

int model_meta_check_cache(const ModelMeta *head, const CacheMeta *c, const char *cache_path, const char *weights_id) {
    char got[32], want[32];
    snprintf(got, sizeof got, "%dx%d", c->input_w, c->input_h);
    snprintf(want, sizeof want, "%dx%d", head->input_w, head->input_h);
    const char *weights = weights_id ? weights_id : head->weights;
    const char *what = NULL, *have = NULL, *need = NULL;
    if (strcmp(c->model, head->arch)) what = "model", have = c->model, need = head->arch;
    else if (strcmp(got, want)) what = "input size", have = got, need = want;
    else if (strcmp(c->preprocess, head->preprocess)) what = "preprocessing", have = c->preprocess, need = head->preprocess;
    else if (strcmp(c->interpolation, head->interpolation))
        what = "interpolation", have = c->interpolation, need = head->interpolation;
    else if (weights[0] && strcmp(c->weights, weights)) what = "base weights", have = c->weights, need = weights;
    // The pixels: JPEGs decoded in full or at a reduced scale, the pixel
    // budget (heads written before it was recorded: not compared).
    char dc[64], dh[64];
    if (!what && head->decode[0] && c->decode[0] &&
        strcmp(model_decode_pixels(c->decode, dc, sizeof dc), model_decode_pixels(head->decode, dh, sizeof dh)))
        what = "decoding", have = dc, need = dh;
    if (what) return err_set("%s: the cache's %s is %s; the head needs %s", cache_path, what, have, need);
    return model_meta_check_classes(head, cache_path, c->class_names, c->n_classes);
}
