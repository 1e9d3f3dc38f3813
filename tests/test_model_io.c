// Model files: a head and a full model written, read back and checked; a
// file made for another model refused with the difference named; base
// weights loaded from a Keras-layout file; the other VGG's weights refused.
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model_io.h"
#include "testutil.h"
#include "weights_h5.h"
#include "weights_source.h"

static Model make(int size, int classes, int hidden, const char *cut) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = size;
    cfg.n_classes = classes;
    cfg.binary = classes == 2;
    cfg.hidden = hidden;
    if (cut) cfg.cut = cut;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    return m;
}

Test(model_io, head_round_trip_with_metadata) {
    char *dir = make_temp_dir("mio");
    char path[512];
    snprintf(path, sizeof path, "%s/head.h5", dir);
    Model m = make(32, 3, 16, NULL);
    cr_assert_eq(model_alloc_weights(&m, m.n_base, m.n_layers), 0);
    model_init_random(&m, m.n_base, m.n_layers, 5);
    for (int i = m.n_base; i < m.n_layers; i++)
        for (long j = 0; m.layers[i].bias && j < m.layers[i].n_bias; j++) m.layers[i].bias[j] = 0.25f * (float)j;
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    char *names[] = {"cats", "dogs and wolves", "r\xe9sum\xe9"};  // spaces and Latin-1 bytes
    meta.class_names = names;
    snprintf(meta.preprocess, sizeof meta.preprocess, "rescale");
    cr_assert_eq(model_save(&m, path, model_head_start(&m), &meta), 0, "%s", err_msg());

    ModelMeta back;
    cr_assert_eq(model_meta_read(path, &back), 0, "%s", err_msg());
    cr_expect_str_eq(back.arch, "vgg16");
    cr_expect_str_eq(back.contents, "head");
    cr_expect_eq(back.input_h, 32);
    cr_expect_eq(back.n_classes, 3);
    cr_expect_eq(back.binary, 0);
    cr_expect_eq(back.hidden, 16);
    cr_expect_str_eq(back.preprocess, "rescale");
    cr_expect_str_eq(back.cut, "block5_pool");
    cr_assert_not_null(back.class_names);
    for (int i = 0; i < 3; i++) cr_expect_str_eq(back.class_names[i], names[i]);
    model_meta_free(&back);

    Model m2 = make(32, 3, 16, NULL);
    cr_assert_eq(model_load_head(&m2, path), 0, "%s", err_msg());
    for (int i = m.n_base; i < m.n_layers; i++) {
        if (!m.layers[i].n_kernel) continue;
        cr_expect_arr_eq(m2.layers[i].kernel, m.layers[i].kernel, m.layers[i].n_kernel * sizeof(float));
        cr_expect_arr_eq(m2.layers[i].bias, m.layers[i].bias, m.layers[i].n_bias * sizeof(float));
    }
    model_free(&m2);

    // Another input size, class count or hidden size: refused, difference named.
    Model other = make(48, 3, 16, NULL);
    cr_expect_eq(model_load_head(&other, path), -1);
    cr_expect(strstr(err_msg(), "input size is 32x32, expected 48x48"), "%s", err_msg());
    model_free(&other);
    other = make(32, 4, 16, NULL);
    cr_expect_eq(model_load_head(&other, path), -1);
    cr_expect(strstr(err_msg(), "number of classes is 3, expected 4"), "%s", err_msg());
    model_free(&other);
    other = make(32, 3, 16, "block4_pool");
    cr_expect_eq(model_load_head(&other, path), -1);
    cr_expect(strstr(err_msg(), "feature layer is block5_pool, expected block4_pool"), "%s", err_msg());
    model_free(&other);

    model_free(&m);
    remove_tree(dir);
    free(dir);
}

Test(model_io, base_weights_from_full_file) {
    // A full model file holds block*_conv* layers under Keras names; loading
    // it as a base must give exactly those weights (matched by name).
    char *dir = make_temp_dir("mio");
    char path[512];
    snprintf(path, sizeof path, "%s/full.h5", dir);
    Model m = make(32, 2, 8, NULL);
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0);
    model_init_random(&m, 0, m.n_layers, 11);
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    cr_assert_eq(model_save(&m, path, 1, &meta), 0, "%s", err_msg());

    Model b = make(32, 2, 8, "block4_pool");
    cr_assert_eq(model_load_base(&b, path), 0, "%s", err_msg());
    int at = model_find_layer(&b, "block4_conv3");
    cr_assert_geq(at, 0);
    cr_expect_arr_eq(b.layers[at].kernel, m.layers[at].kernel, m.layers[at].n_kernel * sizeof(float));
    model_free(&b);

    // A VGG19 base cannot load from a VGG16 file: block3_conv4 is missing.
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = ARCH_VGG19;
    cfg.input_h = cfg.input_w = 32;
    cr_assert_eq(model_build(&b, &cfg), 0);
    cr_expect_eq(model_load_base(&b, path), -1);
    cr_expect(strstr(err_msg(), "block3_conv4"), "%s", err_msg());
    model_free(&b);
    model_free(&m);
    remove_tree(dir);
    free(dir);
}

Test(model_io, not_a_model_file) {
    char *dir = make_temp_dir("mio");
    char path[512];
    snprintf(path, sizeof path, "%s/x.h5", dir);
    write_file(path, "hello", 5);
    ModelMeta meta;
    cr_expect_eq(model_meta_read(path, &meta), -1);
    cr_expect(strstr(err_msg(), path), "%s", err_msg());
    remove_tree(dir);
    free(dir);
}

// A string-list attribute of obj (fixed-length strings, as Keras 2 and our
// writer store them), as one comma-separated string.
static void raw_list(hid_t obj, const char *name, char *out, size_t cap) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    cr_assert(a >= 0, "no attribute %s", name);
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    cr_assert_eq(H5Tget_class(type), H5T_STRING);
    cr_assert_eq(H5Tis_variable_str(type), 0, "Keras 2 writes fixed-length strings");
    size_t size = H5Tget_size(type);
    int n = (int)H5Sget_simple_extent_npoints(space);
    char *buf = calloc((size_t)n, size);
    cr_assert(H5Aread(a, type, buf) >= 0);
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%.*s", i ? "," : "", (int)strnlen(buf + i * size, size),
                 buf + i * size);
    free(buf);
    H5Tclose(type);
    H5Sclose(space);
    H5Aclose(a);
}

static void expect_same_weights(const Model *a, const Model *b, int from, int to) {
    for (int i = from; i < to; i++) {
        if (!a->layers[i].n_kernel) continue;
        cr_assert(b->layers[i].kernel && b->layers[i].bias, "%s was not loaded", a->layers[i].name);
        cr_assert_arr_eq(a->layers[i].kernel, b->layers[i].kernel, a->layers[i].n_kernel * sizeof(float), "%s kernel",
                         a->layers[i].name);
        cr_assert_arr_eq(a->layers[i].bias, b->layers[i].bias, a->layers[i].n_bias * sizeof(float), "%s bias",
                         a->layers[i].name);
    }
}

Test(model_io, full_model_nested_like_the_seeds_sequential) {
    char *dir = make_temp_dir("mio");
    char path[512], again[512], head[512];
    snprintf(path, sizeof path, "%s/full.h5", dir);
    snprintf(again, sizeof again, "%s/again.h5", dir);
    snprintf(head, sizeof head, "%s/head.h5", dir);
    Model m = make(32, 2, 8, NULL);
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0);
    model_init_random(&m, 0, m.n_layers, 21);
    for (int i = 1; i < m.n_layers; i++)
        for (long j = 0; j < m.layers[i].n_bias; j++) m.layers[i].bias[j] = 0.001f * (float)(i * 1000 + j);
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    snprintf(meta.unfreeze, sizeof meta.unfreeze, "block5_conv1");
    cr_assert_eq(model_save(&m, path, 1, &meta), 0, "%s", err_msg());

    // The layout Keras 2's save_weights gives Sequential([VGG16(...), Flatten(),
    // Dense(8), Dropout(0.5), Dense(1)]).
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    static char got[4096];
    raw_list(f, "layer_names", got, sizeof got);
    cr_expect_str_eq(got, "vgg16,flatten,dense,dropout,dense_1");
    hid_t g = H5Gopen2(f, "vgg16", H5P_DEFAULT);
    cr_assert(g >= 0, "group vgg16");
    raw_list(g, "weight_names", got, sizeof got);
    static char want[4096];
    want[0] = '\0';
    const int convs[5] = {2, 2, 3, 3, 3};
    for (int b = 1; b <= 5; b++)
        for (int c = 1; c <= convs[b - 1]; c++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%sblock%d_conv%d/kernel:0,block%d_conv%d/bias:0",
                     want[0] ? "," : "", b, c, b, c);
    cr_expect_str_eq(got, want);
    H5Gclose(g);
    g = H5Gopen2(f, "dense_1", H5P_DEFAULT);
    raw_list(g, "weight_names", got, sizeof got);
    cr_expect_str_eq(got, "dense_1/kernel:0,dense_1/bias:0");
    H5Gclose(g);
    cr_expect(H5Lexists(f, "vgg16/block5_conv3/kernel:0", H5P_DEFAULT) > 0);
    H5Fclose(f);
    H5LayerInfo *info = NULL;
    cr_assert_eq(h5_list_layers(path, &info), 15, "%s", err_msg());
    cr_expect_str_eq(info[0].name, "block1_conv1");
    cr_expect_str_eq(info[12].name, "block5_conv3");
    cr_expect_str_eq(info[12].group, "vgg16");
    cr_expect_str_eq(info[13].name, "dense");
    cr_expect_str_eq(info[13].group, "");
    free(info);

    // Loaded whole: every tensor bit-exact, metadata kept.
    Model r = make(32, 2, 8, NULL);
    cr_assert_eq(model_load_full(&r, path), 0, "%s", err_msg());
    expect_same_weights(&m, &r, 1, m.n_layers);
    model_free(&r);
    ModelMeta back;
    cr_assert_eq(model_meta_read(path, &back), 0, "%s", err_msg());
    cr_expect_str_eq(back.contents, "full");
    cr_expect_str_eq(back.unfreeze, "block5_conv1");
    model_meta_free(&back);

    // The same model gives the same bytes.
    cr_assert_eq(model_save(&m, again, 1, &meta), 0, "%s", err_msg());
    FILE *a = fopen(path, "rb"), *b = fopen(again, "rb");
    cr_assert(a && b);
    int same = 1, ca, cb;
    do {
        ca = getc(a);
        cb = getc(b);
        same = ca == cb;
    } while (same && ca != EOF);
    fclose(a);
    fclose(b);
    cr_expect(same, "two saves of the same model differ");

    // A head file is not a full model; a full file of another head is refused.
    cr_assert_eq(model_save(&m, head, model_head_start(&m), &meta), 0, "%s", err_msg());
    r = make(32, 2, 8, NULL);
    cr_expect_eq(model_load_full(&r, head), -1);
    cr_expect(strstr(err_msg(), "head.h5 holds only the dense head (vggft_contents=head)"), "%s", err_msg());
    model_free(&r);
    r = make(32, 2, 16, NULL);
    cr_expect_eq(model_load_full(&r, path), -1);
    cr_expect(strstr(err_msg(), "hidden units is 8, expected 16"), "%s", err_msg());
    model_free(&r);
    // The head of a full file loads alone too.
    r = make(32, 2, 8, NULL);
    cr_assert_eq(model_load_head(&r, path), 0, "%s", err_msg());
    expect_same_weights(&m, &r, m.n_base, m.n_layers);
    model_free(&r);
    model_free(&m);
    remove_tree(dir);
    free(dir);
}

Test(model_io, full_model_cut_at_block4_nests_the_conv_layers_up_to_the_cut) {
    char *dir = make_temp_dir("mio");
    char path[512];
    snprintf(path, sizeof path, "%s/full.h5", dir);
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = ARCH_VGG19;
    cfg.input_h = cfg.input_w = 32;
    cfg.cut = "block4_pool";
    cfg.hidden = 4;
    cfg.n_classes = 3;
    cfg.binary = 0;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 0, m.n_layers), 0);
    model_init_random(&m, 0, m.n_layers, 3);
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    cr_assert_eq(model_save(&m, path, 1, &meta), 0, "%s", err_msg());
    H5LayerInfo *info = NULL;
    cr_assert_eq(h5_list_layers(path, &info), 14, "%s", err_msg());  // 12 convs + 2 dense
    cr_expect_str_eq(info[11].name, "block4_conv4");
    cr_expect_str_eq(info[11].group, "vgg19");
    free(info);
    Model r;
    cr_assert_eq(model_build(&r, &cfg), 0);
    cr_assert_eq(model_load_full(&r, path), 0, "%s", err_msg());
    expect_same_weights(&m, &r, 1, m.n_layers);
    model_free(&r);
    model_free(&m);
    remove_tree(dir);
    free(dir);
}

// The names of a VGG's conv layers through block `last`, then extra names.
static int vgg_names(char names[][LAYER_NAME_MAX], int vgg19, int last, const char *const *extra, int n_extra) {
    const int c16[5] = {2, 2, 3, 3, 3}, c19[5] = {2, 2, 4, 4, 4};
    int n = 0;
    const int *convs = vgg19 ? c19 : c16;
    for (int b = 0; b < last && b < 5; b++)
        for (int c = 0; c < convs[b]; c++) snprintf(names[n++], LAYER_NAME_MAX, "block%d_conv%d", b + 1, c + 1);
    for (int i = 0; i < n_extra; i++) snprintf(names[n++], LAYER_NAME_MAX, "%s", extra[i]);
    return n;
}

static int check_names(const Model *m, char names[][LAYER_NAME_MAX], int n) {
    const char *p[32];
    for (int i = 0; i < n; i++) p[i] = names[i];
    return model_check_conv_layers(m, "w.h5", p, n);
}

static Model make_arch(Arch arch, const char *cut) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = arch;
    cfg.input_h = cfg.input_w = 32;
    if (cut) cfg.cut = cut;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    return m;
}

Test(model_io, the_other_vggs_conv_layers_are_refused_naming_the_model) {
    Model m16 = make_arch(ARCH_VGG16, NULL), m19 = make_arch(ARCH_VGG19, NULL);
    Model m16b4 = make_arch(ARCH_VGG16, "block4_pool");
    char names[32][LAYER_NAME_MAX];
    const char *top[3] = {"fc1", "fc2", "predictions"}, *head[2] = {"dense", "dense_1"};

    // The file's own VGG: accepted, with or without top, with a head.
    cr_expect_eq(check_names(&m16, names, vgg_names(names, 0, 5, NULL, 0)), 0, "%s", err_msg());
    cr_expect_eq(check_names(&m16, names, vgg_names(names, 0, 5, top, 3)), 0, "%s", err_msg());
    cr_expect_eq(check_names(&m19, names, vgg_names(names, 1, 5, head, 2)), 0, "%s", err_msg());
    cr_expect_eq(check_names(&m16b4, names, vgg_names(names, 0, 4, head, 2)), 0, "%s", err_msg());
    // Blocks 1-2 are the same in both: nothing tells them apart.
    cr_expect_eq(check_names(&m16, names, vgg_names(names, 1, 2, NULL, 0)), 0, "%s", err_msg());
    cr_expect_eq(check_names(&m19, names, vgg_names(names, 0, 2, NULL, 0)), 0, "%s", err_msg());

    // VGG19 weights for VGG16, and the reverse.
    cr_expect_eq(check_names(&m16, names, vgg_names(names, 1, 5, top, 3)), -1);
    cr_expect_str_eq(err_msg(), "w.h5 holds a VGG19 conv base (16 conv layers, with block3_conv4, block4_conv4, "
                                "block5_conv4); --model vgg16 needs VGG16's 13 (use --model vgg19)");
    cr_expect_eq(check_names(&m19, names, vgg_names(names, 0, 5, head, 2)), -1);
    cr_expect_str_eq(err_msg(), "w.h5 holds a VGG16 conv base (13 conv layers, without block3_conv4, block4_conv4, "
                                "block5_conv4); --model vgg19 needs VGG19's 16 (use --model vgg16)");
    // A VGG19 file cut at block4 for a VGG16 cut there.
    cr_expect_eq(check_names(&m16b4, names, vgg_names(names, 1, 4, NULL, 0)), -1);
    cr_expect_str_eq(err_msg(), "w.h5 holds a VGG19 conv base (12 conv layers, with block3_conv4, block4_conv4); "
                                "--model vgg16 needs VGG16's 10 up to block4_pool (use --model vgg19)");
    model_free(&m16);
    model_free(&m19);
    model_free(&m16b4);
}

// A file with the conv layer names of one VGG and tiny tensors: the refusal
// comes from the names, before any shape is compared.
static void write_named(const char *path, int vgg19) {
    char names[32][LAYER_NAME_MAX];
    int n = vgg_names(names, vgg19, 5, NULL, 0);
    H5Layer L[32];
    float k[1] = {1}, b[1] = {0};
    memset(L, 0, sizeof L);
    for (int i = 0; i < n; i++)
        L[i] = (H5Layer){.layer = names[i], .n_tensors = 2, .ndim = {4, 1}, .shape = {{1, 1, 1, 1}, {1}}, .data = {k, b}};
    cr_assert_eq(h5_write_layers(path, L, n, NULL, 0), 0, "%s", err_msg());
}

Test(model_io, weights_of_the_other_vgg_are_refused_end_to_end) {
    char *dir = make_temp_dir("mio");
    char p16[512], p19[512];
    snprintf(p16, sizeof p16, "%s/vgg16.h5", dir);
    snprintf(p19, sizeof p19, "%s/vgg19.h5", dir);
    write_named(p16, 0);
    write_named(p19, 1);
    char id[128];
    Model m = make_arch(ARCH_VGG16, NULL);
    cr_expect_eq(load_base_weights(&m, p19, 1, 1, id, sizeof id), -1);
    cr_expect(strstr(err_msg(), "vgg19.h5 holds a VGG19 conv base (16 conv layers") &&
                  strstr(err_msg(), "--model vgg16 needs VGG16's 13 (use --model vgg19)"),
              "%s", err_msg());
    // Its own names pass the check; then the tiny shapes are wrong.
    cr_expect_eq(model_load_base(&m, p16), -1);
    cr_expect(strstr(err_msg(), "layer block1_conv1: kernel has shape (1,1,1,1), expected (3,3,3,64)"), "%s",
              err_msg());
    model_free(&m);
    m = make_arch(ARCH_VGG19, NULL);
    cr_expect_eq(model_load_base(&m, p16), -1);
    cr_expect(strstr(err_msg(), "vgg16.h5 holds a VGG16 conv base (13 conv layers") &&
                  strstr(err_msg(), "--model vgg19 needs VGG19's 16 (use --model vgg16)"),
              "%s", err_msg());
    model_free(&m);
    remove_tree(dir);
    free(dir);
}

// A head saved with K classes named Quercus_robur_subspecies_NNNN and read
// back: every name equal; *split tells whether vggft_class_names was split
// into vggft_class_names0, 1, ... (over HDF5's 64 KiB attribute limit).
static void many_names_round_trip(const char *dir, int K, int *split) {
    char path[512];
    snprintf(path, sizeof path, "%s/head_%d.h5", dir, K);
    Model m = make(32, K, 4, NULL);
    cr_assert_eq(model_alloc_weights(&m, m.n_base, m.n_layers), 0);
    model_init_random(&m, m.n_base, m.n_layers, 5);
    char **names = calloc((size_t)K, sizeof *names);
    size_t total = 0;
    for (int k = 0; k < K; k++) {
        names[k] = malloc(40);
        snprintf(names[k], 40, "Quercus_robur_subspecies_%04d", k);
        total += strlen(names[k]) + 1;
    }
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    meta.class_names = names;
    cr_assert_eq(model_save(&m, path, model_head_start(&m), &meta), 0, "%d classes (%zu bytes of names): %s", K,
                 total, err_msg());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    int single = H5Aexists(f, "vggft_class_names") > 0, chunked = H5Aexists(f, "vggft_class_names0") > 0;
    H5Fclose(f);
    cr_assert(single != chunked, "vggft_class_names: single %d, split %d", single, chunked);
    *split = chunked;

    ModelMeta back;
    cr_assert_eq(model_meta_read(path, &back), 0, "%s", err_msg());
    cr_assert_eq(back.n_classes, K);
    cr_assert_not_null(back.class_names);
    for (int k = 0; k < K; k++) cr_assert_str_eq(back.class_names[k], names[k], "class %d", k);
    cr_assert_eq(model_meta_check_classes(&back, "the cache", names, K), 0, "%s", err_msg());
    model_meta_free(&back);
    Model m2 = make(32, K, 4, NULL);
    cr_assert_eq(model_load_head(&m2, path), 0, "%s", err_msg());
    expect_same_weights(&m, &m2, m.n_base, m.n_layers);
    model_free(&m2);
    model_free(&m);
    for (int k = 0; k < K; k++) free(names[k]);
    free(names);
}

// 2,100 classes: 62,999 bytes of names, more than one HDF5 attribute holds.
// model_save refused them ("attribute vggft_class_names is 62999 bytes, more
// than the 60000 an HDF5 attribute holds"), after train's last epoch; now
// they are split as Keras splits layer_names and read back whole. 1,700
// classes (50,999 bytes) still make one attribute, as every older file has.
Test(model_io, thousands_of_class_names_round_trip) {
    char *dir = make_temp_dir("mio_names");
    int split;
    many_names_round_trip(dir, 2100, &split);
    cr_assert(split, "62,999 bytes of names should be split");
    many_names_round_trip(dir, 1700, &split);
    cr_assert(!split, "50,999 bytes of names fit one attribute, as in older files");
    remove_tree(dir);
    free(dir);
}

// What model_save cannot record is known before any work (train checks it
// before its first epoch).
Test(model_io, unwritable_metadata_is_refused_up_front) {
    char *names[] = {"cats", "dogs\nwolves"};
    ModelMeta meta = {.n_classes = 2, .class_names = names};
    cr_assert_eq(model_meta_check_writable(&meta, "h.h5"), -1);
    cr_assert(strstr(err_msg(), "newline"), "message: %s", err_msg());
    names[1] = "dogs";
    cr_assert_eq(model_meta_check_writable(&meta, "h.h5"), 0, "%s", err_msg());
    meta.n_classes = MODEL_MAX_CLASSES + 1;
    meta.class_names = NULL;
    cr_assert_eq(model_meta_check_writable(&meta, "h.h5"), -1);
}

// A head's vggft_class_names replaced by text (a scalar fixed-length string,
// as a hand edit with h5py would leave it).
static void set_class_names(const char *path, const char *text) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    if (H5Aexists(f, "vggft_class_names") > 0) H5Adelete(f, "vggft_class_names");
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, strlen(text));
    hid_t a = H5Acreate2(f, "vggft_class_names", type, space, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, type, text) >= 0);
    H5Aclose(a), H5Sclose(space), H5Tclose(type), H5Fclose(f);
}

// Class names that cannot be the head's outputs' (more names than outputs,
// a name twice) are refused naming what is wrong; the head's own are read.
Test(model_io, class_names_that_do_not_fit_the_outputs_are_refused) {
    char *dir = make_temp_dir("mio_names");
    char path[512];
    snprintf(path, sizeof path, "%s/head.h5", dir);
    Model m = make(32, 3, 4, NULL);
    cr_assert_eq(model_alloc_weights(&m, m.n_base, m.n_layers), 0);
    model_init_random(&m, m.n_base, m.n_layers, 5);
    char *names[] = {"ants", "bees", "wasps"};
    ModelMeta meta;
    model_meta_from_model(&m, &meta);
    meta.class_names = names;
    cr_assert_eq(model_save(&m, path, model_head_start(&m), &meta), 0, "%s", err_msg());
    ModelMeta back;
    cr_assert_eq(model_meta_read(path, &back), 0, "%s", err_msg());
    model_meta_free(&back);
    set_class_names(path, "ants\nbees\nwasps\nflies");
    cr_expect_eq(model_meta_read(path, &back), -1);
    cr_expect(strstr(err_msg(), "lists more than the 3 classes") && strstr(err_msg(), path), "%s", err_msg());
    set_class_names(path, "ants\nbees\nants");
    cr_expect_eq(model_meta_read(path, &back), -1);
    cr_expect(strstr(err_msg(), "class 0 and class 2 both 'ants'"), "%s", err_msg());
    set_class_names(path, "ants\nbees\nwasps");
    cr_expect_eq(model_meta_read(path, &back), 0, "%s", err_msg());
    model_meta_free(&back);
    model_free(&m);
    remove_tree(dir);
    free(dir);
}
