// The executables as a user runs them: --summary figures, --help, --version,
// exit codes for usage errors and for --device cuda without a GPU.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu.h"
#include "testutil.h"

Test(tools, train_summary_matches_seeds) {
    char *out;
    int rc = run_tool("train", "--summary --input-size 150 --classes 2", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "vgg16 (Functional)          (None, 4, 4, 512)         14714688") != NULL, "%s", out);
    cr_expect(strstr(out, "dense (Dense)               (None, 256)               2097408") != NULL, "%s", out);
    cr_expect(strstr(out, "Total params: 16,812,353") != NULL, "%s", out);
    cr_expect(strstr(out, "Trainable params: 2,097,665") != NULL, "%s", out);
    cr_expect(strstr(out, "Non-trainable params: 14,714,688") != NULL, "%s", out);
    free(out);
}

Test(tools, finetune_summary_matches_seeds) {
    char *out;
    int rc = run_tool("finetune", "--summary --input-size 150 --classes 2 --unfreeze block5_conv1", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Trainable params: 9,177,089") != NULL, "%s", out);
    cr_expect(strstr(out, "Non-trainable params: 7,635,264") != NULL, "%s", out);
    free(out);
    rc = run_tool("finetune", "--summary --unfreeze block9_conv1", &out);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "finetune: error: --unfreeze block9_conv1") != NULL, "%s", out);
    free(out);
}

Test(tools, extract_summary_base_only) {
    char *out;
    int rc = run_tool("extract", "--summary --model vgg19 --input-size 224", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "block5_conv4 (Conv2D)") != NULL, "%s", out);
    cr_expect(strstr(out, "(None, 7, 7, 512)") != NULL, "%s", out);
    cr_expect(strstr(out, "Total params: 20,024,384") != NULL, "%s", out);
    cr_expect(strstr(out, "flatten") == NULL, "the base summary has no head: %s", out);
    free(out);
}

Test(tools, help_version_and_usage_errors) {
    const char *tools[] = {"extract", "train", "finetune"};
    for (int i = 0; i < 3; i++) {
        char *out;
        cr_expect_eq(run_tool(tools[i], "--help", &out), 0);
        cr_expect(strstr(out, "usage: ") && strstr(out, "(default: "), "%s", out);
        free(out);
        cr_expect_eq(run_tool(tools[i], "--version", &out), 0);
        cr_expect(strstr(out, "BLAS: OpenBLAS") && strstr(out, "kernel"), "%s", out);
        free(out);
        cr_expect_eq(run_tool(tools[i], "--no-such-option", &out), 2);
        cr_expect(strstr(out, ": error: unknown option '--no-such-option'"), "%s", out);
        free(out);
        cr_expect_eq(run_tool(tools[i], "--input-size 16 --summary", &out), 2);
        cr_expect(strstr(out, "16x16") && strstr(out, "32x32"), "%s", out);
        free(out);
    }
}

Test(tools, device_cuda_without_gpu_is_a_clear_error) {
    char why[256];
    if (gpu_count(why, sizeof why) > 0) cr_skip_test("a GPU is present");
    char *out;
    int rc = run_tool("extract", "--device cuda --data x --cache y", &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "extract: error: --device cuda: no usable GPU") != NULL, "%s", out);
    free(out);
}

// The option tables end with {0} and count themselves: the options added
// last (the shared model options) are in --help and are parsed.
Test(tools, option_tables_reach_their_last_entries) {
    const char *tools[] = {"extract", "train", "finetune"};
    const char *last[] = {"--layer NAME", "--dropout RATE", "--unfreeze LAYER"};
    for (int i = 0; i < 3; i++) {
        char *out;
        cr_expect_eq(run_tool(tools[i], "--help", &out), 0);
        cr_expect(strstr(out, last[i]) != NULL, "%s --help lacks %s: %s", tools[i], last[i], out);
        free(out);
    }
    char *out;
    cr_expect_eq(run_tool("extract", "--summary --layer block4_pool --input-size 64", &out), 0);
    cr_expect(strstr(out, "block4_pool") && !strstr(out, "block5_conv1"), "%s", out);
    free(out);
}

// A weights file that is a FIFO would block the SHA-256 (and HDF5's open)
// forever: every tool refuses what is not a regular file, at once.
Test(tools, weights_that_are_not_regular_files_are_refused) {
    char *dir = make_temp_dir("fifo_weights");
    char fifo[1024], args[4096];
    snprintf(fifo, sizeof fifo, "%s/w.h5", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    char *top = make_shape_folder("fifo_weights_data", 2, 3);
    char *out = NULL;
    snprintf(args, sizeof args, "--data %s/data --cache %s/c --weights %s --input-size 32 --quiet", top, dir, fifo);
    cr_expect_eq(run_tool_timeout("extract", args, 20, &out), 1, "%s", out);
    cr_expect(strstr(out, "not a regular file"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data %s/data --head %s --weights random --out %s/m.h5", top, fifo, dir);
    cr_expect_eq(run_tool_timeout("finetune", args, 20, &out), 1, "%s", out);
    cr_expect(strstr(out, "not a regular file"), "%s", out);
    free(out);
    remove_tree(top);
    remove_tree(dir);
    free(top);
    free(dir);
}
