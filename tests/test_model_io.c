// Model files: a head and a full model written, read back and checked; a
// file made for another model refused with the difference named; base
// weights loaded from a Keras-layout file.
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model_io.h"
#include "testutil.h"

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
