#define _GNU_SOURCE  // memmem
// Keras HDF5 weights files. The files read here are written with the raw HDF5
// C API in each layout Keras has used (not with our writer), so the reader is
// checked against the layouts themselves; our writer is then checked by
// reading its files back, raw and through the reader.
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "testutil.h"
#include "weights_h5.h"

// --- a small VGG-like model ---------------------------------------------------
// The layers a caller asks for (conv base), plus "top" layers that files hold
// and the reader must ignore.

typedef struct {
    const char *name;
    int n;  // tensors
    int ndim[2];
    int shape[2][4];
} Spec;

static const Spec BASE[] = {
    {"block1_conv1", 2, {4, 1}, {{3, 3, 3, 4}, {4}}},
    {"block1_conv2", 2, {4, 1}, {{3, 3, 4, 4}, {4}}},
    {"block1_pool", 0, {0, 0}, {{0}, {0}}},
    {"block2_conv1", 2, {4, 1}, {{3, 3, 4, 8}, {8}}},
};
static const Spec TOP[] = {
    {"flatten", 0, {0, 0}, {{0}, {0}}},
    {"fc1", 2, {2, 1}, {{32, 6}, {6}}},
    {"predictions", 2, {2, 1}, {{6, 2}, {2}}},
};
#define NBASE 4
#define NTOP 3

static size_t count_of(const int *shape, int ndim) {
    size_t c = 1;
    for (int i = 0; i < ndim; i++) c *= (size_t)shape[i];
    return c;
}

// Deterministic "random" weights per layer and tensor, so that every file
// variant holds the same values and a mix-up of tensors shows.
static float *make_values(int layer, int t, size_t n) {
    float *v = malloc(n * sizeof *v);
    unsigned s = 2654435761u * (unsigned)(layer * 7 + t + 1);
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        v[i] = (float)((int)(s >> 8) % 20001 - 10000) / 4096.0f;  // exact in float32 and float64
    }
    return v;
}

// --- raw HDF5 writing helpers ------------------------------------------------

static void attr_fixed(hid_t obj, const char *name, const char *const *s, int n, int scalar) {
    size_t maxlen = 1;
    for (int i = 0; i < n; i++)
        if (strlen(s[i]) > maxlen) maxlen = strlen(s[i]);
    char *buf = calloc((size_t)n, maxlen);
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * maxlen, s[i], strlen(s[i]));
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, maxlen);
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, type, buf) >= 0, "raw write of attribute %s", name);
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    free(buf);
}

static void attr_vlen(hid_t obj, const char *name, const char *const *s, int n) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, type, s) >= 0, "raw write of attribute %s", name);
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
}

// np.asarray([]) as h5py stores it: an empty float64 array.
static void attr_empty(hid_t obj, const char *name) {
    hsize_t dims[1] = {0};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0, "raw write of empty attribute %s", name);
    H5Aclose(a);
    H5Sclose(space);
}

// A float dataset at path (relative to loc; intermediate groups created),
// stored as file_type (float32 or float64), values given as float.
static void dataset(hid_t loc, const char *path, int ndim, const int *shape, const float *v, hid_t file_type) {
    hsize_t dims[4];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(loc, path, file_type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0, "raw create of dataset %s", path);
    cr_assert(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Sclose(space);
}

static const Spec *spec_at(int i) { return i < NBASE ? &BASE[i] : &TOP[i - NBASE]; }

typedef enum {
    LAYOUT_KERAS1,      // ImageNet files: X_W_1:0 / X_b_1:0 in the layer group, fixed strings
    LAYOUT_KERAS2,      // kernel:0 one group deeper, split layer_names, version attrs, vlen strings, f64 biases
    LAYOUT_FULL_MODEL,  // Keras 2 layout under /model_weights (model.save("x.h5"))
    LAYOUT_KERAS3,      // .weights.h5: layers/<auto>/vars/{0,1} with a name attribute
} Layout;

static void write_raw(const char *path, Layout layout) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0, "raw create %s", path);
    const int n = NBASE + NTOP + 1;  // + input layer
    const char *names[NBASE + NTOP + 1];
    names[0] = "input_1";
    for (int i = 0; i < NBASE + NTOP; i++) names[i + 1] = spec_at(i)->name;

    if (layout == LAYOUT_KERAS3) {
        for (int i = 0; i < NBASE + NTOP; i++) {
            const Spec *s = spec_at(i);
            char gp[128];
            // Keras 3 names groups after the class ("conv2d", "conv2d_1", ...).
            snprintf(gp, sizeof gp, "layers/auto_%d/vars", i);
            hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
            H5Pset_create_intermediate_group(lcpl, 1);
            hid_t g = H5Gcreate2(f, gp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
            H5Pclose(lcpl);
            attr_vlen(g, "name", &s->name, 1);
            for (int t = 0; t < s->n; t++) {
                float *v = make_values(i, t, count_of(s->shape[t], s->ndim[t]));
                dataset(g, t == 0 ? "0" : "1", s->ndim[t], s->shape[t], v, H5T_IEEE_F32LE);
                free(v);
            }
            H5Gclose(g);
        }
        hid_t g = H5Gcreate2(f, "vars", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(g);
        H5Fclose(f);
        return;
    }

    hid_t root = f;
    if (layout == LAYOUT_FULL_MODEL) {
        const char *cfg = "{\"class_name\": \"Functional\"}";
        attr_fixed(f, "model_config", &cfg, 1, 1);
        root = H5Gcreate2(f, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    }
    if (layout == LAYOUT_KERAS1) {
        attr_fixed(root, "layer_names", names, n, 0);
    } else {
        // Split the way Keras does when the list is too big for one attribute.
        attr_fixed(root, "layer_names0", names, 5, 0);
        attr_fixed(root, "layer_names1", names + 5, n - 5, 0);
        const char *kv = "2.2.4", *be = "tensorflow";
        attr_fixed(root, "keras_version", &kv, 1, 1);
        attr_fixed(root, "backend", &be, 1, 1);
    }
    // The input layer: a group with empty weight_names.
    hid_t g = H5Gcreate2(root, "input_1", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    attr_empty(g, "weight_names");
    H5Gclose(g);
    for (int i = 0; i < NBASE + NTOP; i++) {
        const Spec *s = spec_at(i);
        g = H5Gcreate2(root, s->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (s->n == 0) {
            attr_empty(g, "weight_names");
            H5Gclose(g);
            continue;
        }
        char wn[2][128];
        const char *wp[2] = {wn[0], wn[1]};
        if (layout == LAYOUT_KERAS1) {
            snprintf(wn[0], sizeof wn[0], "%s_W_1:0", s->name);
            snprintf(wn[1], sizeof wn[1], "%s_b_1:0", s->name);
            attr_fixed(g, "weight_names", wp, 2, 0);
        } else {
            snprintf(wn[0], sizeof wn[0], "%s/kernel:0", s->name);
            snprintf(wn[1], sizeof wn[1], "%s/bias:0", s->name);
            attr_vlen(g, "weight_names", wp, 2);
        }
        for (int t = 0; t < 2; t++) {
            float *v = make_values(i, t, count_of(s->shape[t], s->ndim[t]));
            // float64 biases in the Keras 2 variants: the reader converts.
            hid_t ft = (layout != LAYOUT_KERAS1 && t == 1) ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
            dataset(g, wn[t], s->ndim[t], s->shape[t], v, ft);
            free(v);
        }
        H5Gclose(g);
    }
    if (root != f) H5Gclose(root);
    H5Fclose(f);
}

// H5Layer requests for the conv base, with freshly allocated buffers
// (filled with a poison value so that a tensor left unread shows).
static void base_request(H5Layer *L) {
    memset(L, 0, NBASE * sizeof *L);
    for (int i = 0; i < NBASE; i++) {
        L[i].layer = BASE[i].name;
        L[i].n_tensors = BASE[i].n;
        for (int t = 0; t < BASE[i].n; t++) {
            L[i].ndim[t] = BASE[i].ndim[t];
            memcpy(L[i].shape[t], BASE[i].shape[t], sizeof L[i].shape[t]);
            size_t c = count_of(BASE[i].shape[t], BASE[i].ndim[t]);
            L[i].data[t] = malloc(c * sizeof(float));
            for (size_t k = 0; k < c; k++) L[i].data[t][k] = -999.0f;
        }
    }
}

static void free_request(H5Layer *L, int n) {
    for (int i = 0; i < n; i++)
        for (int t = 0; t < L[i].n_tensors; t++) free(L[i].data[t]);
}

static void check_values(const H5Layer *L) {
    for (int i = 0; i < NBASE; i++)
        for (int t = 0; t < BASE[i].n; t++) {
            size_t c = count_of(BASE[i].shape[t], BASE[i].ndim[t]);
            float *want = make_values(i, t, c);
            cr_assert(memcmp(L[i].data[t], want, c * sizeof(float)) == 0, "layer %s tensor %d differs",
                      BASE[i].name, t);
            free(want);
        }
}

static char *dir;
static void setup(void) { dir = make_temp_dir("h5"); }
static void teardown(void) { remove_tree(dir); free(dir); }

static char *path_in(const char *name) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

TestSuite(weights_h5, .init = setup, .fini = teardown);

static void read_layout(Layout layout) {
    char *p = path_in("w.h5");
    write_raw(p, layout);
    H5Layer L[NBASE];
    base_request(L);
    int rc = h5_read_layers(p, L, NBASE);
    cr_assert_eq(rc, 0, "read failed: %s", err_msg());
    check_values(L);
    free_request(L, NBASE);
    free(p);
}

// --- a model nested in a model ---------------------------------------------------
// The seeds' Sequential([VGG16(...), Flatten(), Dense, ...]) as Keras saves it:
// the base is ONE entry of layer_names, a group whose weight_names lists the
// tensors of all its conv layers.
typedef enum {
    NESTED_KERAS2,      // save_weights: fixed strings, "block1_conv1/kernel:0", the
                        // trainable block2 first (a partly fine-tuned base), f64 biases
    NESTED_MODEL_SAVE,  // the same under /model_weights (model.save("x.h5"))
    NESTED_KERAS3,      // Keras 3's legacy writer: vlen strings, "block1_conv1/kernel",
                        // top layers "sequential/fc1/kernel", top_level_model_weights
} Nested;

static void write_raw_nested(const char *path, Nested kind) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0, "raw create %s", path);
    hid_t root = f;
    if (kind == NESTED_MODEL_SAVE) {
        const char *cfg = "{\"class_name\": \"Sequential\"}";
        attr_fixed(f, "model_config", &cfg, 1, 1);
        root = H5Gcreate2(f, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    }
    const char *top[4] = {"vgg16", "flatten", "fc1", "predictions"};
    const char *kv = kind == NESTED_KERAS3 ? "3.3.3" : "2.15.0", *be = kind == NESTED_KERAS3 ? "jax" : "tensorflow";
    if (kind == NESTED_KERAS3) attr_vlen(root, "layer_names", top, 4);
    else attr_fixed(root, "layer_names", top, 4, 0);
    attr_fixed(root, "keras_version", &kv, 1, 1);
    attr_fixed(root, "backend", &be, 1, 1);

    // The base: weighted layers in the order Keras lists them.
    const int order[3] = {3, 0, 1};  // block2_conv1 (trainable) first, then block1
    const char *suffix = kind == NESTED_KERAS3 ? "" : ":0";
    char wn[6][128];
    const char *wp[6];
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 2; t++) {
            snprintf(wn[2 * k + t], sizeof wn[0], "%s/%s%s", BASE[order[k]].name, t ? "bias" : "kernel", suffix);
            wp[2 * k + t] = wn[2 * k + t];
        }
    hid_t g = H5Gcreate2(root, "vgg16", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (kind == NESTED_KERAS3) attr_vlen(g, "weight_names", wp, 6);
    else attr_fixed(g, "weight_names", wp, 6, 0);
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 2; t++) {
            const Spec *sp = &BASE[order[k]];
            float *v = make_values(order[k], t, count_of(sp->shape[t], sp->ndim[t]));
            dataset(g, wn[2 * k + t], sp->ndim[t], sp->shape[t], v, t && kind != NESTED_KERAS3 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE);
            free(v);
        }
    H5Gclose(g);
    // The head at the top level.
    for (int i = NBASE; i < NBASE + NTOP; i++) {
        const Spec *sp = spec_at(i);
        g = H5Gcreate2(root, sp->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sp->n == 0) {
            attr_empty(g, "weight_names");
            H5Gclose(g);
            continue;
        }
        char hn[2][128];
        const char *hp[2] = {hn[0], hn[1]};
        for (int t = 0; t < 2; t++)
            snprintf(hn[t], sizeof hn[t], "%s%s/%s%s", kind == NESTED_KERAS3 ? "sequential/" : "", sp->name,
                     t ? "bias" : "kernel", suffix);
        if (kind == NESTED_KERAS3) attr_vlen(g, "weight_names", hp, 2);
        else attr_fixed(g, "weight_names", hp, 2, 0);
        for (int t = 0; t < 2; t++) {
            float *v = make_values(i, t, count_of(sp->shape[t], sp->ndim[t]));
            dataset(g, hn[t], sp->ndim[t], sp->shape[t], v, H5T_IEEE_F32LE);
            free(v);
        }
        H5Gclose(g);
    }
    if (kind == NESTED_KERAS3) {
        g = H5Gcreate2(root, "top_level_model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        attr_empty(g, "weight_names");
        H5Gclose(g);
    }
    if (root != f) H5Gclose(root);
    H5Fclose(f);
}

// The base's layers by name, the head's too, and the listing in the file's
// order with the nested group named.
static void read_nested(Nested kind) {
    char *p = path_in("nested.h5");
    write_raw_nested(p, kind);
    H5Layer L[NBASE];
    base_request(L);
    cr_assert_eq(h5_read_layers(p, L, NBASE), 0, "read failed: %s", err_msg());
    check_values(L);
    free_request(L, NBASE);

    const Spec *fc1 = spec_at(NBASE + 1);
    float *k = malloc(count_of(fc1->shape[0], 2) * sizeof(float)), *b = malloc(fc1->shape[1][0] * sizeof(float));
    H5Layer F = {.layer = "fc1", .n_tensors = 2, .ndim = {2, 1}, .shape = {{32, 6}, {6}}, .data = {k, b}};
    cr_assert_eq(h5_read_layers(p, &F, 1), 0, "%s", err_msg());
    float *want = make_values(NBASE + 1, 0, 32 * 6);
    cr_assert(memcmp(k, want, 32 * 6 * sizeof(float)) == 0, "fc1 kernel differs");
    free(want);
    free(k);
    free(b);

    H5LayerInfo *info = NULL;
    int n = h5_list_layers(p, &info);
    cr_assert_eq(n, 5, "%s", err_msg());
    const char *names[5] = {"block2_conv1", "block1_conv1", "block1_conv2", "fc1", "predictions"};
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(info[i].name, names[i]);
        cr_assert_str_eq(info[i].group, i < 3 ? "vgg16" : "");
        cr_assert_eq(info[i].n_tensors, 2);
    }
    cr_assert_eq(info[0].shape[0][3], 8, "block2_conv1's kernel is (3,3,4,8)");
    free(info);
    free(p);
}

Test(weights_h5, reads_keras2_nested_base) { read_nested(NESTED_KERAS2); }
Test(weights_h5, reads_keras2_nested_base_in_model_save_file) { read_nested(NESTED_MODEL_SAVE); }
Test(weights_h5, reads_keras3_legacy_nested_base) { read_nested(NESTED_KERAS3); }

Test(weights_h5, reads_keras1_imagenet_layout) { read_layout(LAYOUT_KERAS1); }
Test(weights_h5, reads_keras2_layout_split_names_and_float64) { read_layout(LAYOUT_KERAS2); }
Test(weights_h5, reads_full_model_file) { read_layout(LAYOUT_FULL_MODEL); }
Test(weights_h5, reads_keras3_weights_h5) { read_layout(LAYOUT_KERAS3); }

Test(weights_h5, reads_top_layers_by_name_in_any_order) {
    char *p = path_in("w.h5");
    write_raw(p, LAYOUT_KERAS1);
    // predictions before fc1, and one base layer: order and subset are free.
    H5Layer L[2] = {0};
    const int idx[2] = {NBASE + 2, NBASE + 1};
    for (int k = 0; k < 2; k++) {
        const Spec *s = spec_at(idx[k]);
        L[k].layer = s->name;
        L[k].n_tensors = 2;
        for (int t = 0; t < 2; t++) {
            L[k].ndim[t] = s->ndim[t];
            memcpy(L[k].shape[t], s->shape[t], sizeof L[k].shape[t]);
            L[k].data[t] = malloc(count_of(s->shape[t], s->ndim[t]) * sizeof(float));
        }
    }
    cr_assert_eq(h5_read_layers(p, L, 2), 0, "%s", err_msg());
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < 2; t++) {
            const Spec *s = spec_at(idx[k]);
            size_t c = count_of(s->shape[t], s->ndim[t]);
            float *want = make_values(idx[k], t, c);
            cr_assert(memcmp(L[k].data[t], want, c * sizeof(float)) == 0, "%s differs", s->name);
            free(want);
        }
    free_request(L, 2);
    free(p);
}

Test(weights_h5, wrong_shape_names_layer_and_both_shapes) {
    char *p = path_in("weights.h5");
    write_raw(p, LAYOUT_KERAS1);
    H5Layer L[NBASE];
    base_request(L);
    L[0].shape[0][3] = 64;  // file has (3,3,3,4)
    cr_assert_eq(h5_read_layers(p, L, NBASE), -1);
    const char *m = err_msg();
    cr_assert(strstr(m, "weights.h5: layer block1_conv1: kernel has shape (3,3,3,4), expected (3,3,3,64)"),
              "message: %s", m);
    L[0].shape[0][3] = 4;
    L[3].shape[1][0] = 7;  // bias of block2_conv1 is (8,)
    cr_assert_eq(h5_read_layers(p, L, NBASE), -1);
    m = err_msg();
    cr_assert(strstr(m, "layer block2_conv1: bias has shape (8,), expected (7,)"), "message: %s", m);
    L[3].shape[1][0] = 8;
    L[1].ndim[0] = 2;  // rank differs
    L[1].shape[0][0] = 36;
    L[1].shape[0][1] = 4;
    cr_assert_eq(h5_read_layers(p, L, NBASE), -1);
    cr_assert(strstr(err_msg(), "kernel has shape (3,3,4,4), expected (36,4)"), "message: %s", err_msg());
    free_request(L, NBASE);
    free(p);
}

Test(weights_h5, missing_layer_lists_what_the_file_has) {
    char *p = path_in("weights.h5");
    write_raw(p, LAYOUT_KERAS2);
    float k[3 * 3 * 8 * 8], b[8];
    H5Layer L = {.layer = "block5_conv3", .n_tensors = 2, .ndim = {4, 1},
                 .shape = {{3, 3, 8, 8}, {8}}, .data = {k, b}};
    cr_assert_eq(h5_read_layers(p, &L, 1), -1);
    const char *m = err_msg();
    cr_assert(strstr(m, "weights.h5: no layer named block5_conv3"), "message: %s", m);
    cr_assert(strstr(m, "the file has 5 layers with weights: block1_conv1, block1_conv2, block2_conv1, fc1, "
                        "predictions"),
              "message: %s", m);
    free(p);
}

Test(weights_h5, tensor_count_and_weightless_layer) {
    char *p = path_in("w.h5");
    write_raw(p, LAYOUT_KERAS1);
    float k[3 * 3 * 3 * 4], b[4];
    H5Layer L = {.layer = "block1_conv1", .n_tensors = 1, .ndim = {4}, .shape = {{3, 3, 3, 4}}, .data = {k}};
    cr_assert_eq(h5_read_layers(p, &L, 1), -1);
    cr_assert(strstr(err_msg(), "layer block1_conv1: the file has 2 weight tensors"), "message: %s", err_msg());
    cr_assert(strstr(err_msg(), "expected 1"), "message: %s", err_msg());
    H5Layer P = {.layer = "block1_pool", .n_tensors = 2, .ndim = {4, 1}, .shape = {{3, 3, 3, 4}, {4}},
                 .data = {k, b}};
    cr_assert_eq(h5_read_layers(p, &P, 1), -1);
    cr_assert(strstr(err_msg(), "layer block1_pool has no weights in the file"), "message: %s", err_msg());
    // A weightless request for a weightless layer reads nothing and succeeds.
    H5Layer Q = {.layer = "block1_pool", .n_tensors = 0};
    cr_assert_eq(h5_read_layers(p, &Q, 1), 0, "%s", err_msg());
    free(p);
}

Test(weights_h5, integer_dataset_is_rejected) {
    char *p = path_in("int.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *names[1] = {"dense"};
    attr_fixed(f, "layer_names", names, 1, 0);
    hid_t g = H5Gcreate2(f, "dense", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char *wn[2] = {"dense/kernel:0", "dense/bias:0"};
    attr_fixed(g, "weight_names", wn, 2, 0);
    float kv[6] = {1, 2, 3, 4, 5, 6}, bv[2] = {0, 1};
    int ks[2] = {3, 2}, bs[1] = {2};
    dataset(g, wn[0], 2, ks, kv, H5T_STD_I32LE);
    dataset(g, wn[1], 1, bs, bv, H5T_IEEE_F32LE);
    H5Gclose(g);
    H5Fclose(f);
    float k[6], b[2];
    H5Layer L = {.layer = "dense", .n_tensors = 2, .ndim = {2, 1}, .shape = {{3, 2}, {2}}, .data = {k, b}};
    cr_assert_eq(h5_read_layers(p, &L, 1), -1);
    cr_assert(strstr(err_msg(), "layer dense: kernel"), "message: %s", err_msg());
    cr_assert(strstr(err_msg(), "integer data, expected float"), "message: %s", err_msg());
    free(p);
}

Test(weights_h5, not_hdf5_missing_file_and_not_keras) {
    char *p = path_in("fake.h5");
    write_file(p, "this is not HDF5\n", 17);
    H5Layer L[NBASE];
    base_request(L);
    cr_assert_eq(h5_read_layers(p, L, NBASE), -1);
    cr_assert(strstr(err_msg(), "fake.h5: not an HDF5 file"), "message: %s", err_msg());
    char *v = NULL;
    cr_assert_eq(h5_read_attr(p, "backend", &v), -1);
    cr_assert(strstr(err_msg(), "not an HDF5 file"), "message: %s", err_msg());

    char *q = path_in("nope.h5");
    cr_assert_eq(h5_read_layers(q, L, NBASE), -1);
    cr_assert(strstr(err_msg(), "nope.h5: No such file or directory"), "message: %s", err_msg());

    // HDF5, but not a Keras weights file.
    char *r = path_in("other.h5");
    hid_t f = H5Fcreate(r, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    cr_assert_eq(h5_read_layers(r, L, NBASE), -1);
    cr_assert(strstr(err_msg(), "other.h5: not a Keras weights file"), "message: %s", err_msg());

    cr_assert_eq(h5_read_layers(dir, L, NBASE), -1);
    cr_assert(strstr(err_msg(), "is a directory"), "message: %s", err_msg());
    free_request(L, NBASE);
    free(p);
    free(q);
    free(r);
}

// --- writing ---------------------------------------------------------------------

// The full model: input-less list as the lead passes it (base + head).
static void full_model(H5Layer *L) {
    memset(L, 0, (NBASE + NTOP) * sizeof *L);
    for (int i = 0; i < NBASE + NTOP; i++) {
        const Spec *s = spec_at(i);
        L[i].layer = s->name;
        L[i].n_tensors = s->n;
        for (int t = 0; t < s->n; t++) {
            L[i].ndim[t] = s->ndim[t];
            memcpy(L[i].shape[t], s->shape[t], sizeof L[i].shape[t]);
            L[i].data[t] = make_values(i, t, count_of(s->shape[t], s->ndim[t]));
        }
    }
}

static int count_tmp_files(void) {
    DIR *d = opendir(dir);
    cr_assert(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

// Raw read of a string-list attribute (fixed-length, as our writer stores).
static int raw_strings(hid_t obj, const char *name, char out[][64], int max) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    cr_assert(a >= 0, "no attribute %s", name);
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    int n = (int)H5Sget_simple_extent_npoints(space);
    if (n > 0) {
        cr_assert_eq(H5Tget_class(type), H5T_STRING, "%s is not a string attribute", name);
        cr_assert(H5Tis_variable_str(type) == 0, "%s should be fixed-length like Keras 2 writes", name);
        size_t size = H5Tget_size(type);
        char *buf = calloc((size_t)n, size);
        H5Aread(a, type, buf);
        for (int i = 0; i < n && i < max; i++) snprintf(out[i], 64, "%.*s", (int)strnlen(buf + i * size, size), buf + i * size);
        free(buf);
    }
    H5Tclose(type);
    H5Sclose(space);
    H5Aclose(a);
    return n;
}

// Every tensor we write carries HDF5's Fletcher-32 checksum: one damaged
// byte among the weights fails the read, naming the dataset, instead of
// loading a wrong weight.
Test(weights_h5, damaged_weights_fail_their_checksum) {
    char *p = path_in("sum.h5");
    enum { N = 64 * 10 };
    float *k = malloc(N * sizeof(float)), b[10];
    for (int i = 0; i < N; i++) k[i] = 1.5f;
    for (int i = 0; i < 10; i++) b[i] = 0.25f;
    H5Layer l = {"dense", 2, {2, 1}, {{64, 10}, {10}}, {k, b}, NULL};
    cr_assert_eq(h5_write_layers(p, &l, 1, NULL, 0), 0, "%s", err_msg());
    H5Layer back = {"dense", 2, {2, 1}, {{64, 10}, {10}}, {calloc(N, sizeof(float)), calloc(10, sizeof(float))}, NULL};
    cr_assert_eq(h5_read_layers(p, &back, 1), 0, "%s", err_msg());
    cr_expect_eq(back.data[0][N - 1], 1.5f);
    // The kernel's bytes: 1.5f is 00 00 c0 3f; change one in the middle.
    size_t n;
    unsigned char *bytes = (unsigned char *)read_file(p, &n);
    const unsigned char one_and_half[8] = {0, 0, 0xc0, 0x3f, 0, 0, 0xc0, 0x3f};
    unsigned char *at = memmem(bytes, n, one_and_half, 8);
    cr_assert(at, "the kernel's values are not in the file as written");
    at[(N / 2) * 4 + 3] = 0x40;  // 1.5 -> 2.0: a plausible weight, still finite
    write_file(p, (const char *)bytes, n);
    cr_expect_eq(h5_read_layers(p, &back, 1), -1, "a damaged kernel was read");
    cr_expect(strstr(err_msg(), "kernel") && strstr(err_msg(), "damaged file"), "%s", err_msg());
    free(bytes), free(k), free(back.data[0]), free(back.data[1]), free(p);
}

// A file another process has open for writing (h5py 'r+' in a notebook
// holds HDF5's lock, here flock's exclusive lock) is said to be locked,
// not damaged.
Test(weights_h5, locked_file_is_not_called_damaged) {
    char *p = path_in("locked.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    int fd = open(p, O_RDWR);
    cr_assert(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    char *v = NULL;
    cr_expect_eq(h5_read_attr(p, "backend", &v), -1);
    cr_expect(strstr(err_msg(), "locked.h5: locked by another process") && strstr(err_msg(), "HDF5_USE_FILE_LOCKING"),
              "message: %s", err_msg());
    close(fd);
    free(p);
}

Test(weights_h5, write_then_read_back) {
    char *p = path_in("model.h5");
    H5Layer W[NBASE + NTOP];
    full_model(W);
    H5Attr attrs[2] = {{"vggft_preprocess", "caffe"}, {"vggft_classes", "[\"cats\", \"dogs\"]"}};
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, attrs, 2), 0, "%s", err_msg());
    cr_assert_eq(count_tmp_files(), 0);

    // Through our reader: the whole model, values bit-identical.
    H5Layer R[NBASE + NTOP];
    full_model(R);
    for (int i = 0; i < NBASE + NTOP; i++)
        for (int t = 0; t < R[i].n_tensors; t++)
            memset(R[i].data[t], 0, count_of(R[i].shape[t], R[i].ndim[t]) * sizeof(float));
    cr_assert_eq(h5_read_layers(p, R, NBASE + NTOP), 0, "%s", err_msg());
    for (int i = 0; i < NBASE + NTOP; i++)
        for (int t = 0; t < R[i].n_tensors; t++)
            cr_assert(memcmp(R[i].data[t], W[i].data[t], count_of(R[i].shape[t], R[i].ndim[t]) * 4) == 0,
                      "%s tensor %d", R[i].layer, t);

    // Raw: the Keras 2 layout.
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    char s[16][64];
    cr_assert_eq(raw_strings(f, "layer_names", s, 16), NBASE + NTOP);
    for (int i = 0; i < NBASE + NTOP; i++) cr_assert_str_eq(s[i], spec_at(i)->name);
    hid_t g = H5Gopen2(f, "block1_pool", H5P_DEFAULT);
    cr_assert_eq(raw_strings(g, "weight_names", s, 16), 0, "a pool has an empty weight_names");
    H5Gclose(g);
    g = H5Gopen2(f, "fc1", H5P_DEFAULT);
    cr_assert_eq(raw_strings(g, "weight_names", s, 16), 2);
    cr_assert_str_eq(s[0], "fc1/kernel:0");
    cr_assert_str_eq(s[1], "fc1/bias:0");
    hid_t d = H5Dopen2(g, "fc1/kernel:0", H5P_DEFAULT);
    cr_assert(d >= 0);
    hid_t type = H5Dget_type(d);
    cr_assert(H5Tequal(type, H5T_IEEE_F32LE) > 0, "datasets are float32");
    H5Tclose(type);
    H5Dclose(d);
    H5Gclose(g);
    H5Fclose(f);

    char *v = NULL;
    cr_assert_eq(h5_read_attr(p, "backend", &v), 1, "%s", err_msg());
    cr_assert_str_eq(v, "tensorflow");
    free(v);
    cr_assert_eq(h5_read_attr(p, "keras_version", &v), 1);
    cr_assert_str_eq(v, "2.15.0");
    free(v);
    cr_assert_eq(h5_read_attr(p, "vggft_classes", &v), 1);
    cr_assert_str_eq(v, "[\"cats\", \"dogs\"]");
    free(v);
    cr_assert_eq(h5_read_attr(p, "no_such_attr", &v), 0);
    cr_assert_null(v);

    H5LayerInfo *info = NULL;
    int n = h5_list_layers(p, &info);
    cr_assert_eq(n, 5, "%s", err_msg());
    cr_assert_str_eq(info[0].name, "block1_conv1");
    cr_assert_str_eq(info[3].name, "fc1");
    cr_assert_eq(info[3].n_tensors, 2);
    cr_assert_eq(info[3].ndim[0], 2);
    cr_assert_eq(info[3].shape[0][0], 32);
    cr_assert_eq(info[3].shape[0][1], 6);
    cr_assert_eq(info[3].ndim[1], 1);
    cr_assert_eq(info[3].shape[1][0], 6);
    free(info);

    // Overwriting an existing file replaces it.
    W[5].data[0][0] += 1.0f;
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, NULL, 0), 0, "%s", err_msg());
    cr_assert_eq(h5_read_layers(p, R, NBASE + NTOP), 0, "%s", err_msg());
    cr_assert_eq(R[5].data[0][0], W[5].data[0][0]);
    cr_assert_eq(h5_read_attr(p, "vggft_preprocess", &v), 0, "the old file's attributes are gone");

    free_request(W, NBASE + NTOP);
    free_request(R, NBASE + NTOP);
    free(p);
}

// File content, or NULL.
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n + 1);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

Test(weights_h5, writes_a_nested_base_as_keras2_does) {
    // The base layers in group "vgg16" (pool included: it leaves no trace),
    // the top layers at the top level.
    H5Layer W[NBASE + NTOP];
    full_model(W);
    for (int i = 0; i < NBASE; i++) W[i].group = "vgg16";
    char *p = path_in("full.h5"), *q = path_in("again.h5");
    H5Attr attr = {"vggft_contents", "full"};
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, &attr, 1), 0, "%s", err_msg());

    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    char s[16][64];
    cr_assert_eq(raw_strings(f, "layer_names", s, 16), 4);
    const char *top[4] = {"vgg16", "flatten", "fc1", "predictions"};
    for (int i = 0; i < 4; i++) cr_assert_str_eq(s[i], top[i]);
    hid_t g = H5Gopen2(f, "vgg16", H5P_DEFAULT);
    cr_assert(g >= 0);
    cr_assert_eq(raw_strings(g, "weight_names", s, 16), 6);
    const char *wn[6] = {"block1_conv1/kernel:0", "block1_conv1/bias:0", "block1_conv2/kernel:0",
                         "block1_conv2/bias:0",   "block2_conv1/kernel:0", "block2_conv1/bias:0"};
    for (int i = 0; i < 6; i++) cr_assert_str_eq(s[i], wn[i]);
    cr_assert_eq(H5Lexists(g, "block1_pool", H5P_DEFAULT), 0, "a weightless inner layer leaves no group");
    H5Gclose(g);
    cr_assert_eq(H5Lexists(f, "block1_conv1", H5P_DEFAULT), 0, "no top-level group for an inner layer");
    hid_t d = H5Dopen2(f, "vgg16/block2_conv1/kernel:0", H5P_DEFAULT);
    cr_assert(d >= 0, "dataset at vgg16/block2_conv1/kernel:0");
    hid_t type = H5Dget_type(d), space = H5Dget_space(d);
    hsize_t dims[4];
    cr_assert_eq(H5Sget_simple_extent_dims(space, dims, NULL), 4);
    cr_assert(dims[0] == 3 && dims[1] == 3 && dims[2] == 4 && dims[3] == 8);
    cr_assert(H5Tequal(type, H5T_IEEE_F32LE) > 0);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(d);
    // No modification times (two writes a second apart would differ).
    const char *objs[3] = {"vgg16", "vgg16/block1_conv1", "vgg16/block1_conv1/kernel:0"};
    for (int i = 0; i < 3; i++) {
        H5O_info_t oi;
        cr_assert(H5Oget_info_by_name(f, objs[i], &oi, H5P_DEFAULT) >= 0);
        cr_assert(oi.mtime == 0 && oi.ctime == 0, "%s carries a timestamp", objs[i]);
    }
    H5Fclose(f);

    // Read back by name, bit-exact, and listed with the group.
    H5Layer R[NBASE];
    base_request(R);
    cr_assert_eq(h5_read_layers(p, R, NBASE), 0, "%s", err_msg());
    check_values(R);
    free_request(R, NBASE);
    H5LayerInfo *info = NULL;
    cr_assert_eq(h5_list_layers(p, &info), 5, "%s", err_msg());
    cr_assert_str_eq(info[0].name, "block1_conv1");
    cr_assert_str_eq(info[0].group, "vgg16");
    cr_assert_str_eq(info[2].name, "block2_conv1");
    cr_assert_str_eq(info[3].name, "fc1");
    cr_assert_str_eq(info[3].group, "");
    free(info);

    // Byte-reproducible: no timestamps.
    cr_assert_eq(h5_write_layers(q, W, NBASE + NTOP, &attr, 1), 0, "%s", err_msg());
    size_t n1 = 0, n2 = 0;
    char *a = slurp(p, &n1), *b = slurp(q, &n2);
    cr_assert(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "two writes of the same model differ");
    free(a);
    free(b);

    // A group split in two, or named like a top-level layer: refused.
    W[NBASE + 2].group = "vgg16";
    cr_assert_eq(h5_write_layers(q, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "the layers of group vgg16 are not consecutive"), "message: %s", err_msg());
    W[NBASE + 2].group = NULL;
    for (int i = 0; i < NBASE; i++) W[i].group = "fc1";
    cr_assert_eq(h5_write_layers(q, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "group fc1 has the name of a top-level layer"), "message: %s", err_msg());
    W[0].group = "a/b";
    cr_assert_eq(h5_write_layers(q, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "cannot be an HDF5 group name"), "message: %s", err_msg());
    free_request(W, NBASE + NTOP);
    free(p);
    free(q);
}

Test(weights_h5, reads_vlen_string_attr) {
    char *p = path_in("a.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *v1 = "jax";
    attr_vlen(f, "backend", &v1, 1);  // a one-element vlen array, as h5py may store
    const char *two[2] = {"a", "b"};
    attr_fixed(f, "pair", two, 2, 0);
    H5Fclose(f);
    char *v = NULL;
    cr_assert_eq(h5_read_attr(p, "backend", &v), 1, "%s", err_msg());
    cr_assert_str_eq(v, "jax");
    free(v);
    cr_assert_eq(h5_read_attr(p, "pair", &v), -1);
    cr_assert(strstr(err_msg(), "attribute pair holds 2 strings"), "message: %s", err_msg());
    free(p);
}


Test(weights_h5, failed_write_leaves_destination_untouched) {
    char *p = path_in("model.h5");
    write_file(p, "OLD CONTENT", 11);
    H5Layer W[NBASE + NTOP];
    full_model(W);

    // A NULL tensor: rejected before anything is created.
    float *saved = W[5].data[1];
    W[5].data[1] = NULL;
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "layer fc1: bias data is NULL"), "message: %s", err_msg());
    W[5].data[1] = saved;

    // Bad names and attributes are rejected too.
    W[1].layer = "block1_conv1";
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "appears twice"), "message: %s", err_msg());
    W[1].layer = "block1_conv2";
    H5Attr bad = {"layer_names", "x"};
    cr_assert_eq(h5_write_layers(p, W, NBASE + NTOP, &bad, 1), -1);
    cr_assert(strstr(err_msg(), "reserved"), "message: %s", err_msg());

    size_t n = 0;
    char *c = slurp(p, &n);
    cr_assert(c && n == 11 && memcmp(c, "OLD CONTENT", 11) == 0, "destination was modified");
    free(c);
    cr_assert_eq(count_tmp_files(), 0);

    // A directory that does not exist: error names the path.
    char *q = path_in("no/such/dir/model.h5");
    cr_assert_eq(h5_write_layers(q, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "no/such/dir/model.h5") && strstr(err_msg(), "No such file or directory"),
              "message: %s", err_msg());

    // The whole file is written, then the final rename fails (the destination
    // is a non-empty directory): the temporary file must not stay behind.
    char *r = path_in("adir");
    mkdir(r, 0777);
    char *r2 = path_in("adir/keep");
    write_file(r2, "x", 1);
    cr_assert_eq(h5_write_layers(r, W, NBASE + NTOP, NULL, 0), -1);
    cr_assert(strstr(err_msg(), "adir: cannot write: Is a directory"), "message: %s", err_msg());
    cr_assert_eq(count_tmp_files(), 0, "temporary file left behind");
    struct stat st;
    cr_assert(stat(r2, &st) == 0, "destination directory was touched");

    // An unwritable directory (only meaningful when not root).
    if (geteuid() != 0) {
        char *ro = path_in("ro");
        mkdir(ro, 0555);
        char *rp = path_in("ro/model.h5");
        cr_assert_eq(h5_write_layers(rp, W, NBASE + NTOP, NULL, 0), -1);
        cr_assert(strstr(err_msg(), "Permission denied"), "message: %s", err_msg());
        chmod(ro, 0755);
        free(ro);
        free(rp);
    }
    free_request(W, NBASE + NTOP);
    free(p);
    free(q);
    free(r);
    free(r2);
}

Test(weights_h5, long_layer_list_is_split_and_read_back) {
    // Enough layers that layer_names exceeds HDF5's 64 KiB attribute limit.
    enum { N = 1800 };
    static char names[N][48];
    static H5Layer L[N];
    float k[6], b[2];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "a_rather_long_dropout_layer_name_number_%05d", i);
        L[i] = (H5Layer){.layer = names[i], .n_tensors = 0};
    }
    for (int i = 0; i < 6; i++) k[i] = (float)i;
    b[0] = -1;
    b[1] = 2;
    L[N - 1] = (H5Layer){.layer = "dense", .n_tensors = 2, .ndim = {2, 1}, .shape = {{3, 2}, {2}}, .data = {k, b}};
    char *p = path_in("big.h5");
    cr_assert_eq(h5_write_layers(p, L, N, NULL, 0), 0, "%s", err_msg());
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(H5Aexists(f, "layer_names") == 0 && H5Aexists(f, "layer_names0") > 0 && H5Aexists(f, "layer_names1") > 0,
              "layer_names should be split");
    H5Fclose(f);
    float k2[6] = {0}, b2[2] = {0};
    H5Layer R = {.layer = "dense", .n_tensors = 2, .ndim = {2, 1}, .shape = {{3, 2}, {2}}, .data = {k2, b2}};
    cr_assert_eq(h5_read_layers(p, &R, 1), 0, "%s", err_msg());
    cr_assert(memcmp(k, k2, sizeof k) == 0 && memcmp(b, b2, sizeof b) == 0);
    free(p);
}

// Reads attribute `name` of the root of p raw (one fixed-length string),
// returning its length; -1 when absent.
static long raw_attr_len(const char *p, const char *name, char *last) {
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    long n = -1;
    if (H5Aexists(f, name) > 0) {
        hid_t a = H5Aopen(f, name, H5P_DEFAULT), t = H5Aget_type(a);
        size_t size = H5Tget_size(t);
        char *buf = calloc(1, size + 1);
        cr_assert(H5Aread(a, t, buf) >= 0);
        n = (long)strlen(buf);
        if (last) *last = n ? buf[n - 1] : '\0';
        free(buf);
        H5Tclose(t);
        H5Aclose(a);
    }
    H5Fclose(f);
    return n;
}

// A string attribute over HDF5's 64 KiB attribute limit (the class names of
// thousands of classes) is stored split, as Keras splits layer_names: KEY0,
// KEY1, ..., each at most H5_ATTR_CHUNK_MAX bytes, lines kept whole, and
// h5_read_attr gives the whole value back. A value without newlines is cut
// between UTF-8 characters. Short values stay single attributes.
Test(weights_h5, long_string_attribute_is_split_and_read_back) {
    enum { LINES = 4000 };
    size_t cap = (size_t)LINES * 40 + 1;
    char *lines = malloc(cap), *utf8 = malloc(2 * 70000 + 1);
    size_t at = 0;
    for (int i = 0; i < LINES; i++)
        at += (size_t)snprintf(lines + at, cap - at, "%sQuercus_robur_subspecies_%04d", i ? "\n" : "", i);
    for (int i = 0; i < 70000; i++) memcpy(utf8 + 2 * i, "\xc3\xa9", 2);  // 70,000 x U+00E9
    utf8[2 * 70000] = '\0';
    cr_assert_gt(strlen(lines), 65536);
    H5Layer L = {.layer = "dropout", .n_tensors = 0};
    H5Attr attrs[3] = {{"vggft_class_names", lines}, {"vggft_utf8", utf8}, {"vggft_short", "cats\ndogs"}};
    char *p = path_in("names.h5");
    cr_assert_eq(h5_write_layers(p, &L, 1, attrs, 3), 0, "%s", err_msg());

    cr_assert_eq(raw_attr_len(p, "vggft_class_names", NULL), -1, "a long value is not one attribute");
    size_t total = 0;
    int chunks = 0;
    for (;; chunks++) {
        char name[64], last = 0;
        snprintf(name, sizeof name, "vggft_class_names%d", chunks);
        long n = raw_attr_len(p, name, &last);
        if (n < 0) break;
        cr_assert_leq(n, H5_ATTR_CHUNK_MAX, "%s is %ld bytes", name, n);
        total += (size_t)n;
        if (total < strlen(lines)) cr_assert_eq(last, '\n', "%s does not end between lines", name);
    }
    cr_assert_geq(chunks, 2);
    cr_assert_eq(total, strlen(lines));
    cr_assert_eq(raw_attr_len(p, "vggft_short", NULL), 9, "a short value stays one attribute");

    char *v = NULL;
    cr_assert_eq(h5_read_attr(p, "vggft_class_names", &v), 1, "%s", err_msg());
    cr_assert(strcmp(v, lines) == 0, "the split value reads back different (%zu bytes, want %zu)", strlen(v),
              strlen(lines));
    free(v);
    cr_assert_eq(h5_read_attr(p, "vggft_utf8", &v), 1, "%s", err_msg());
    cr_assert(strcmp(v, utf8) == 0, "the UTF-8 value reads back different");
    free(v);
    for (int c = 0;; c++) {  // every piece of it is whole characters
        char name[64];
        snprintf(name, sizeof name, "vggft_utf8%d", c);
        long n = raw_attr_len(p, name, NULL);
        if (n < 0) break;
        cr_assert_eq(n % 2, 0, "%s cuts a character in two", name);
    }
    cr_assert_eq(h5_read_attr(p, "vggft_short", &v), 1, "%s", err_msg());
    cr_assert_str_eq(v, "cats\ndogs");
    free(v);

    // A file written before splitting existed: one attribute, read as before,
    // even beside unrelated attributes whose names end in digits.
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *old = "a\nb\nc", *other = "x";
    attr_fixed(f, "vggft_class_names", &old, 1, 1);
    attr_fixed(f, "vggft_class_names0", &other, 1, 1);
    H5Fclose(f);
    cr_assert_eq(h5_read_attr(p, "vggft_class_names", &v), 1, "%s", err_msg());
    cr_assert_str_eq(v, "a\nb\nc", "the single attribute comes first, as in Keras");
    free(v);

    // Keys that the split form of another would clash with are refused.
    H5Attr clash[2] = {{"vggft_x", "1"}, {"vggft_x0", "2"}};
    cr_assert_eq(h5_write_layers(p, &L, 1, clash, 2), -1);
    cr_assert(strstr(err_msg(), "clash"), "message: %s", err_msg());
    H5Attr keras[1] = {{"layer_names1", "a"}};
    cr_assert_eq(h5_write_layers(p, &L, 1, keras, 1), -1);
    cr_assert(strstr(err_msg(), "clash"), "message: %s", err_msg());
    free(lines), free(utf8), free(p);
}
