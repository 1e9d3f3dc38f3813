// finetune end to end on generated images (32x32, random base weights):
// extract -> train -> finetune; resumed runs (SIGTERM from inside and from
// outside, kill -9) end with the bytes of an uninterrupted run; a cache of
// block4_pool gives the weights that images give; frozen layers stay as
// they were; wrong inputs are refused with the reason.
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"
#include "model.h"
#include "model_io.h"
#include "testutil.h"
#include "weights_h5.h"

typedef struct {
    char *dir;
    char data[512], val[512], c5[512], vc5[512], head[512];
} Setup;

static char *run_ok(const char *tool, const char *args) {
    char *out;
    int rc = run_tool(tool, args, &out);
    cr_assert_eq(rc, 0, "%s %s exited %d:\n%s", tool, args, rc, out);
    return out;
}

// Images, the head's caches and a head trained on them (2 epochs).
static Setup setup(void) {
    Setup s;
    s.dir = make_temp_dir("finetune");
    snprintf(s.data, sizeof s.data, "%s/train", s.dir);
    snprintf(s.val, sizeof s.val, "%s/val", s.dir);
    snprintf(s.c5, sizeof s.c5, "%s/c5", s.dir);
    snprintf(s.vc5, sizeof s.vc5, "%s/vc5", s.dir);
    snprintf(s.head, sizeof s.head, "%s/head.h5", s.dir);
    make_disc_square_folder(s.data, 10, 1);
    make_disc_square_folder(s.val, 4, 500);
    char args[2600];
    const char *common = "--weights random --input-size 32 --threads 1 --quiet";
    snprintf(args, sizeof args, "--data %s --cache %s %s", s.data, s.c5, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data %s --cache %s %s", s.val, s.vc5, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --epochs 2 --batch 8 --hidden 16 --threads 1 --quiet",
             s.c5, s.vc5, s.head);
    free(run_ok("train", args));
    return s;
}


static void expect_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    cr_expect(na == nb && !memcmp(x, y, na), "%s and %s differ", a, b);
    free(x), free(y);
}

// NAME in the case's folder, into buf (at least 600 bytes, as the cases' path buffers).
static void in_dir(const Setup *s, const char *name, char *buf) { snprintf(buf, 600, "%s/%s", s->dir, name); }

// The finetune arguments shared by a case's runs (out appended).
static void ft_args(const Setup *s, const char *extra, const char *out, char *buf, size_t n) {
    snprintf(buf, n,
             "--data %s --val-data %s --head %s --weights random --out %s --epochs 2 --batch 8 --lr 0.01 "
             "--momentum 0.9 --threads 1 --quiet --checkpoint-every 1 %s",
             s->data, s->val, s->head, out, extra);
}

// The final report is the last epoch's validation (its figures reused, not
// recomputed): the same loss, and a confusion matrix (two classes) whose
// diagonal holds the images it counts right.
static void expect_report_of_the_last_epoch(const char *out) {
    const char *last = NULL;
    for (const char *p = out; (p = strstr(p, " - val_loss: ")); p++) last = p;
    const char *rep = strstr(out, "\nValidation: loss ");
    cr_assert(last && rep, "%s", out);
    float epoch_loss, loss, acc;
    long right, n, c[4];
    cr_assert_eq(sscanf(last, " - val_loss: %f", &epoch_loss), 1, "%s", out);
    cr_assert_eq(sscanf(rep, "\nValidation: loss %f - accuracy %f (%ld/%ld)", &loss, &acc, &right, &n), 4, "%s", out);
    cr_expect_float_eq(loss, epoch_loss, 1e-4f, "%s", out);
    const char *m = strstr(rep, "Confusion matrix");
    cr_assert(m, "%s", out);
    m = strchr(strchr(m, '\n') + 1, '\n') + 1;  // past the heading and the column names
    cr_assert_eq(sscanf(m, " %*s %ld %ld %*s %ld %ld", &c[0], &c[1], &c[2], &c[3]), 4, "%s", m);
    cr_expect_eq(c[0] + c[3], right, "%s", out);
    cr_expect_eq(c[0] + c[1] + c[2] + c[3], n, "%s", out);
}

Test(finetune, resume_after_sigterm_or_kill_equals_uninterrupted_run) {
    Setup s = setup();
    char a[600], b[600], c[600], args[3000];
    in_dir(&s, "a.h5", a);
    in_dir(&s, "b.h5", b);
    in_dir(&s, "c.h5", c);
    ft_args(&s, "", a, args, sizeof args);
    char *out = run_ok("finetune", args);
    cr_expect(strstr(out, "Before fine-tuning: val_loss"), "the head's figures are reported: %s", out);
    cr_expect(strstr(out, "with the head alone (before fine-tuning)"), "%s", out);
    expect_report_of_the_last_epoch(out);
    free(out);

    // SIGTERM inside epoch 1 (the handler's path): exit 75, then resume.
    ft_args(&s, "", b, args, sizeof args);
    char env_args[3200];
    snprintf(env_args, sizeof env_args, "%s", args);
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "2", 1);
    int rc = run_tool("finetune", env_args, &out);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_assert_eq(rc, 75, "SIGTERM gives exit 75 (resumable): %d\n%s", rc, out);
    cr_expect(strstr(out, "SIGTERM: stopped after step 2/3 of epoch 1"), "%s", out);
    struct stat st;
    cr_expect(stat(b, &st) != 0, "no model is written by a stopped run");
    free(out);
    strcat(env_args, " --resume");
    free(run_ok("finetune", env_args));
    expect_same_file(a, b);

    // SIGTERM after the last step of epoch 1, so during its validation: the
    // steps are saved, and the resumed run validates and goes on.
    char d[600];
    in_dir(&s, "d.h5", d);
    ft_args(&s, "", d, args, sizeof args);
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "3", 1);
    rc = run_tool("finetune", args, &out);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_assert_eq(rc, 75, "%d\n%s", rc, out);
    cr_expect(strstr(out, "stopped while validating epoch 1"), "%s", out);
    free(out);
    // (Resumed with its progress bar: epoch 1 shows its 3 steps done.)
    char *quiet = strstr(args, " --quiet");
    cr_assert(quiet);
    memmove(quiet, quiet + 8, strlen(quiet + 8) + 1);
    strcat(args, " --resume");
    out = run_ok("finetune", args);
    cr_expect(strstr(out, "3/3 [====") && !strstr(out, "0/3 ["), "%s", out);
    free(out);
    expect_same_file(a, d);

    // kill -9 after step 4 (epoch 2, step 1; its checkpoint was written).
    ft_args(&s, "", c, args, sizeof args);
    setenv("VGGFT_TEST_CRASH_AFTER_STEP", "4", 1);
    rc = run_tool("finetune", args, NULL);
    unsetenv("VGGFT_TEST_CRASH_AFTER_STEP");
    cr_assert_eq(rc, 137, "the crash hook exits like kill -9: %d", rc);
    strcat(args, " --resume");
    free(run_ok("finetune", args));
    expect_same_file(a, c);
    // A resume on another thread count says it will not be bit for bit.
    strcat(args, " --threads 2");
    out = run_ok("finetune", args);
    cr_expect(strstr(out, "written by a run on 1 threads, this one has 2"), "%s", out);
    cr_expect(strstr(out, "training had ended"), "%s", out);
    free(out);
    char hist_a[700], hist_c[700];
    snprintf(hist_a, sizeof hist_a, "%s/a.history.csv", s.dir);
    snprintf(hist_c, sizeof hist_c, "%s/c.history.csv", s.dir);
    size_t na, nc;
    char *ha = read_file(hist_a, &na), *hc = read_file(hist_c, &nc);
    // Same epochs and figures; only the seconds column may differ.
    cr_expect(strncmp(ha, hc, 60) == 0, "history:\n%s\nvs\n%s", ha, hc);
    free(ha), free(hc);
    remove_tree(s.dir);
    free(s.dir);
}

// finetune ARGS (a --resume) refused: exit 1, the image folder's digest
// named, and `why` in the message.
static void expect_resume_refused(const char *args, const char *why) {
    char *out;
    int rc = run_tool("finetune", args, &out);
    cr_expect(rc == 1 && strstr(out, "data_content is images:") && strstr(out, why), "%d: %s", rc, out);
    free(out);
}

// A resume on images that changed since the checkpoint's run began (one
// moved to the other class, one replaced): refused with the reason; with
// the folder as it was, the resume goes on.
Test(finetune, resume_refuses_changed_images) {
    Setup s = setup();
    char b[600], args[3000], *out;
    in_dir(&s, "b.h5", b);
    ft_args(&s, "", b, args, sizeof args);
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "2", 1);
    int rc = run_tool("finetune", args, &out);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_assert_eq(rc, 75, "%d\n%s", rc, out);
    free(out);
    strcat(args, " --resume");
    char from[700], to[700];
    snprintf(from, sizeof from, "%s/discs/03.jpg", s.data);
    snprintf(to, sizeof to, "%s/squares/03b.jpg", s.data);
    cr_assert_eq(rename(from, to), 0);
    expect_resume_refused(args, "moved to another class");
    cr_assert_eq(rename(to, from), 0);
    // The same name, other bytes (another image of another size).
    char other[700];
    snprintf(other, sizeof other, "%s/squares/02.jpg", s.val);
    size_t n_old, n_new;
    char *old = read_file(from, &n_old), *img = read_file(other, &n_new);
    cr_assert(old && img && n_old != n_new, "the test needs images of two sizes");
    write_file(from, img, n_new);
    expect_resume_refused(args, "data_content is images:");
    // The same name and size, one byte changed (within its first 4 KiB).
    old[n_old / 2] ^= 0x55;
    write_file(from, old, n_old);
    expect_resume_refused(args, "data_content is images:");
    old[n_old / 2] ^= 0x55;
    write_file(from, old, n_old);
    free(old), free(img);
    free(run_ok("finetune", args));
    remove_tree(s.dir);
    free(s.dir);
}

// --checkpoint-seconds (the default way, 2 minutes): a checkpoint between
// steps once that long has passed, so a kill -9 loses no more; 0 turns it
// off (then only epochs' ends are kept).
Test(finetune, checkpoint_by_time_survives_kill_9) {
    Setup s = setup();
    char a[600], b[600], c[600], args[3000];
    in_dir(&s, "a.h5", a);
    in_dir(&s, "b.h5", b);
    in_dir(&s, "c.h5", c);
    ft_args(&s, "--checkpoint-every 0", a, args, sizeof args);
    free(run_ok("finetune", args));
    const char *by[2] = {"--checkpoint-every 0 --checkpoint-seconds 1e-9", "--checkpoint-every 0 --checkpoint-seconds 0"};
    const char *want[2] = {"at epoch 2, after step 1", "after epoch 1"};
    const char *outs[2] = {b, c};
    for (int k = 0; k < 2; k++) {
        ft_args(&s, by[k], outs[k], args, sizeof args);
        setenv("VGGFT_TEST_CRASH_AFTER_STEP", "4", 1);  // epoch 2, step 1 (3 steps an epoch)
        int rc = run_tool("finetune", args, NULL);
        unsetenv("VGGFT_TEST_CRASH_AFTER_STEP");
        cr_assert_eq(rc, 137, "the crash hook exits like kill -9: %d", rc);
        strcat(args, " --resume");
        char *out = run_ok("finetune", args);
        cr_expect(strstr(out, want[k]), "%s: want '%s' in:\n%s", by[k], want[k], out);
        free(out);
        expect_same_file(a, outs[k]);
    }
    remove_tree(s.dir);
    free(s.dir);
}

// A real SIGTERM from outside at an arbitrary moment: the run stops with 75
// (or has finished: 0), and the resumed run ends with the same bytes.
Test(finetune, external_sigterm_then_resume) {
    Setup s = setup();
    char a[600], b[600], args[3000];
    in_dir(&s, "a.h5", a);
    in_dir(&s, "b.h5", b);
    ft_args(&s, "--checkpoint-every 0", a, args, sizeof args);
    free(run_ok("finetune", args));
    ft_args(&s, "--checkpoint-every 0", b, args, sizeof args);
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "%s/finetune %s > %s/log 2>&1 & p=$!; sleep 0.7; kill -TERM $p; wait $p; exit $?", bin,
             args, s.dir);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    cr_assert(rc == 75 || rc == 0, "exit %d after SIGTERM", rc);
    if (rc == 75) {
        strcat(args, " --resume");
        free(run_ok("finetune", args));
    }
    expect_same_file(a, b);
    remove_tree(s.dir);
    free(s.dir);
}

// Reads a whole fine-tuned model back (vgg16 at 32x32, the head's shape).
Test(finetune, cache_of_block4_pool_equals_images_and_frozen_layers_stay) {
    Setup s = setup();
    char c4[600], vc4[600], a[600], b[600], args[3000];
    snprintf(c4, sizeof c4, "%s/c4", s.dir);
    snprintf(vc4, sizeof vc4, "%s/vc4", s.dir);
    in_dir(&s, "img.h5", a);
    in_dir(&s, "cache.h5", b);
    const char *common = "--weights random --input-size 32 --threads 1 --quiet --layer block4_pool --dtype f32";
    snprintf(args, sizeof args, "--data %s --cache %s %s", s.data, c4, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data %s --cache %s %s", s.val, vc4, common);
    free(run_ok("extract", args));

    ft_args(&s, "--no-augment", a, args, sizeof args);
    free(run_ok("finetune", args));
    snprintf(args, sizeof args,
             "--cache %s --val-cache %s --head %s --weights random --out %s --epochs 2 --batch 8 --lr 0.01 "
             "--momentum 0.9 --threads 1 --quiet",
             c4, vc4, s.head, b);
    char *out = run_ok("finetune", args);
    cr_expect(strstr(out, "No augmentation in this mode"), "%s", out);
    free(out);

    Model mi, mc, base, head;
    load_model_file(a, &mi);
    load_model_file(b, &mc);
    // The starting point: the random base and the trained head.
    ModelConfig cfg = mi.cfg;
    cfg.unfreeze = NULL;
    cr_assert_eq(model_build(&base, &cfg), 0);
    cr_assert_eq(model_alloc_weights(&base, 1, base.n_base), 0);
    model_init_random(&base, 1, base.n_base, 1);
    cr_assert_eq(model_build(&head, &cfg), 0);
    cr_assert_eq(model_load_head(&head, s.head), 0, "%s", err_msg());
    int b5 = model_find_layer(&mi, "block5_conv1");
    for (int i = 1; i < mi.n_layers; i++) {
        Layer *l = &mi.layers[i], *lc = &mc.layers[i];
        if (!l->n_kernel) continue;
        size_t nk = (size_t)l->n_kernel * sizeof(float);
        cr_expect(!memcmp(l->kernel, lc->kernel, nk), "%s: images and cache give other weights", l->name);
        const float *start = i < mi.n_base ? base.layers[i].kernel : head.layers[i].kernel;
        int same = !memcmp(l->kernel, start, nk);
        if (i < b5) cr_expect(same, "frozen %s changed", l->name);
        else cr_expect(!same, "trainable %s did not change", l->name);
    }
    // The model records its training settings, and where and in what
    // arithmetic the steps ran (tests hide the GPU: the CPU, fp32).
    char *training = NULL;
    cr_assert_eq(h5_read_attr(a, "vggft_training", &training), 1, "%s", err_msg());
    cr_expect(strstr(training, "unfreeze=block5_conv1\n") && strstr(training, "batch=8\n"), "%s", training);
    cr_expect(strstr(training, "device=cpu\nprecision=fp32\n"), "%s", training);
    free(training);
    model_free(&mi), model_free(&mc), model_free(&base), model_free(&head);
    remove_tree(s.dir);
    free(s.dir);
}

Test(finetune, refuses_mismatched_inputs_with_the_reason) {
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;  // the tools run as run_ok runs them
    Setup s = setup();
    char args[3000], *out;
    // A cache of the wrong layer names the one that is needed.
    snprintf(args, sizeof args, "--cache %s --head %s --weights random --out %s/x.h5 --threads 1", s.c5, s.head,
             s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1);
    cr_expect(strstr(out, "block4_pool"), "names the layer needed: %s", out);
    free(out);
    // Other base weights than the head's: a fine-tuned model's file (its
    // base changed; --seed is the fine-tuning's own and changes nothing of
    // the random base weights, which follow the head).
    char c4[600];
    snprintf(c4, sizeof c4, "%s/c4", s.dir);
    snprintf(args, sizeof args, "--data %s --cache %s --weights random --input-size 32 --layer block4_pool --threads 1 "
             "--quiet", s.data, c4);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --head %s --weights random --seed 7 --out %s/w.h5 --epochs 1 --threads 1 "
             "--quiet", c4, s.head, s.dir);
    free(run_ok("finetune", args));
    snprintf(args, sizeof args, "--data %s --head %s --weights %s/w.h5 --out %s/x.h5 --threads 1", s.data, s.head,
             s.dir, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1);
    cr_expect(strstr(out, "not the base weights the head was trained on") &&
                  strstr(out, "random:seed=1") && strstr(out, "give --weights random"), "%s", out);
    free(out);
    // A head on a weights FILE (the fine-tuned w.h5, copied to a name that
    // needs quoting): without --weights, predict takes that file, as the
    // extract command that made the head's features names it.
    char wfile[700], whead[700], wcache[700];
    snprintf(wfile, sizeof wfile, "%s/base w'q.h5", s.dir);
    in_dir(&s, "hw.h5", whead);
    snprintf(wcache, sizeof wcache, "%s/cw", s.dir);
    snprintf(args, sizeof args, "cp '%s/w.h5' \"%s\"", s.dir, wfile);
    cr_assert_eq(system(args), 0);
    // (The --weights=FILE form, FILE needing quotes, after a decoy --weights
    // that a later one overrides, as the option parser does.)
    snprintf(args, sizeof args,
             "--data %s --cache %s --weights random \"--weights=%s\" --input-size 32 --threads 1 --quiet", s.data,
             wcache, wfile);
    out = run_ok("extract", args);
    cr_expect(strstr(out, "is a whole model (from `finetune`): its conv base is used"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--cache %s --out %s --epochs 1 --hidden 4 --threads 1 --quiet", wcache, whead);
    free(run_ok("train", args));
    snprintf(args, sizeof args, "--head %s --eval %s --threads 1", whead, s.val);
    out = run_ok("predict", args);
    char want[900];
    snprintf(want, sizeof want, "note: base weights %s, as the head", wfile);
    cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
    free(out);
    // The same with the file named relative to the folder extract ran in:
    // predict, run from elsewhere, still finds it (the command records it
    // as an absolute path).
    snprintf(args, sizeof args,
             "cd '%s' && %s/extract --data %s --cache cw_rel --weights './base w'\\''q.h5' --input-size 32 "
             "--threads 1 --quiet 2>&1 && %s/train --cache cw_rel --out hw_rel.h5 --epochs 1 --hidden 4 --threads 1 "
             "--quiet 2>&1",
             s.dir, bin, s.data, bin);
    cr_assert_eq(run_command(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--head %s/hw_rel.h5 --eval %s --threads 1", s.dir, s.val);
    out = run_ok("predict", args);
    cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
    free(out);
    // No --weights: the head's own (here random:seed=1), with a note; not
    // Keras's ImageNet file, which a node without network cannot fetch.
    snprintf(args, sizeof args, "--data %s --head %s --out %s/y2.h5 --epochs 1 --threads 1", s.data, s.head, s.dir);
    out = run_ok("finetune", args);
    cr_expect(strstr(out, "note: base weights random, as the head") && !strstr(out, "Downloading"), "%s", out);
    free(out);
    // Files in each other's places: a head as extract's base weights, a
    // Keras weights file (the conv base's) as finetune's --head; each says
    // what to give, and a refused run leaves no folder it made for its outputs.
    snprintf(args, sizeof args, "--data %s --cache %s/new/c --weights %s --input-size 32 --quiet", s.data, s.dir,
             s.head);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "a dense head trained by `train`, not the weights of a conv base: give the base"), "%s",
              out);
    free(out);
    char keras[700], made_out[700];
    in_dir(&s, "keras_base.h5", keras);
    {
        float *k = calloc(3 * 3 * 3 * 64, sizeof(float)), *b = calloc(64, sizeof(float));
        H5Layer l = {"block1_conv1", 2, {4, 1}, {{3, 3, 3, 64}, {64}}, {k, b}, NULL};
        cr_assert_eq(h5_write_layers(keras, &l, 1, NULL, 0), 0, "%s", err_msg());
        free(k), free(b);
    }
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/new/m.h5", s.data, keras, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "not a head trained by `train` (it lacks the settings") &&
                  strstr(out, "give the --out HEAD.h5 of train as --head"),
              "%s", out);
    free(out);
    // A missing folder or weights file names its option; extract finds a
    // missing --weights FILE before it scans the images.
    snprintf(args, sizeof args, "--data %s/nope --val-data %s --head %s --weights random --out %s/new/m.h5", s.dir,
             s.val, s.head, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "finetune: error: --data ") && strstr(out, "/nope: cannot open dataset directory"), "%s",
              out);
    free(out);
    snprintf(args, sizeof args, "--data %s --val-data %s/nope --head %s --weights random --out %s/new/m.h5", s.data,
             s.dir, s.head, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "finetune: error: --val-data ") && strstr(out, "/nope: cannot open dataset directory"),
              "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data %s --cache %s/new/c --weights %s/nope.h5", s.data, s.dir, s.dir);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "/nope.h5: no such file") && !strstr(out, "Found "), "%s", out);
    free(out);
    // A resume with another split names the split, not the data's digest
    // (which the split changes too).
    snprintf(args, sizeof args,
             "--data %s --validation-split 0.25 --head %s --weights random --out %s/split.h5 --epochs 1 --threads 1 "
             "--quiet",
             s.data, s.head, s.dir);
    free(run_ok("finetune", args));
    char *split = strstr(args, "0.25");
    memcpy(split, "0.50", 4);
    strcat(args, " --resume");
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "validation_split is 0.25 in the checkpoint, 0.5 in this run (--validation-split): to "
                          "continue that run give its settings and data again"),
              "%s", out);
    free(out);
    // The checkpoint beside a model given for it: the model is named.
    snprintf(args, sizeof args, "--data %s --head %s/split.ckpt --weights random --out %s/x.h5", s.data, s.dir,
             s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "split.ckpt: a checkpoint (the state --resume continues from), not a model file: give ") &&
                  strstr(out, "/split.h5, written beside it"),
              "%s", out);
    free(out);
    // (train too, failing after making its --out folder; not the Keras
    // cache folder that an imagenet download failing for want of a network
    // tells the user to copy the file into.)
    snprintf(args, sizeof args, "--cache %s --val-cache %s/none --out %s/new/h.h5", s.c5, s.dir, s.dir);
    cr_expect_eq(run_tool("train", args, &out), 1, "%s", out);
    free(out);
    in_dir(&s, "new", made_out);
    cr_expect_neq(access(made_out, F_OK), 0, "a refused run left the folder %s it made", made_out);
    char keras_home[700];
    in_dir(&s, "keras_home", keras_home);
    setenv("KERAS_HOME", keras_home, 1);
    setenv("VGGFT_WEIGHTS_URL", "/nonexistent/vggft-mirror", 1);  // no network, as on a compute node
    snprintf(args, sizeof args, "--data %s --cache %s/new/c --weights imagenet --input-size 32 --quiet", s.data, s.dir);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    unsetenv("KERAS_HOME");
    unsetenv("VGGFT_WEIGHTS_URL");
    cr_expect(strstr(out, "copy Keras's file to"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "%s/models", keras_home);
    cr_expect_eq(access(args, F_OK), 0, "the Keras cache folder the message names is gone");
    cr_expect_neq(access(made_out, F_OK), 0, "a refused run left the folder %s it made", made_out);
    // A training folder whose classes are not the head's: both lists named.
    char renamed[1200], from[1200];
    snprintf(renamed, sizeof renamed, "%s/renamed", s.dir);
    snprintf(args, sizeof args, "cp -r '%s' '%s'", s.data, renamed);
    cr_assert_eq(system(args), 0);
    DIR *d = opendir(renamed);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') break;
    cr_assert(e, "no class folder in %s", renamed);
    snprintf(from, sizeof from, "%s/%s", renamed, e->d_name);
    closedir(d);
    snprintf(args, sizeof args, "%s/zebras", renamed);
    cr_assert_eq(rename(from, args), 0);
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/x.h5 --threads 1", renamed, s.head,
             s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1);
    cr_expect(strstr(out, "zebras") && strstr(out, "the head was trained on ["), "%s", out);
    free(out);
    // Augmentation with a cache is a usage error.
    snprintf(args, sizeof args, "--cache %s --head %s --out %s/x.h5 --augment flip", s.c5, s.head, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 2);
    cr_expect(strstr(out, "no augmentation in this mode"), "%s", out);
    free(out);
    // --device cuda without a usable GPU (tests hide it: testutil.h) fails
    // with the reason (the GPU walk itself: tests/test_gpu_walk.c).
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/x.h5 --device cuda", s.data, s.head,
             s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 1);
    cr_expect(strstr(out, "GPU") || strstr(out, "CUDA"), "%s", out);
    cr_expect(!strstr(out, "not available yet"), "%s", out);
    free(out);
    // --precision tf32 / bf16 on a run without a GPU (--device auto) is
    // refused, not quietly run in float32 on the CPU.
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/x.h5 --precision %s", s.data,
                 s.head, s.dir, i ? "bf16" : "tf32");
        cr_expect_eq(run_tool("finetune", args, &out), 1);
        cr_expect(strstr(out, i ? "--precision bf16 needs a GPU" : "--precision tf32 needs a GPU"), "%s", out);
        free(out);
    }
    // Outputs that would destroy something are refused before any work.
    const char *bad_out[3] = {"/dev/null", s.head, s.dir};
    const char *why[3] = {"not a regular file", "is this run's --head", "is a folder"};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s", s.data, s.head, bad_out[i]);
        cr_expect_eq(run_tool("finetune", args, &out), 1, "--out %s", bad_out[i]);
        cr_expect(strstr(out, why[i]), "--out %s: %s", bad_out[i], out);
        free(out);
    }
    struct stat st;
    cr_expect(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null is still a device");
    // --unfreeze must name a conv layer (block5_pool would train the head
    // alone): a usage error, exit 2.
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/x.h5 --unfreeze block5_pool", s.data,
             s.head, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 2);
    cr_expect(strstr(out, "not a conv layer"), "%s", out);
    free(out);
    // A temporary checkpoint left by a killed run is removed; a live one is not.
    char stale[700], live[700];
    snprintf(stale, sizeof stale, "%s/y.ckpt.tmp.999999999", s.dir);
    snprintf(live, sizeof live, "%s/y.ckpt.tmp.%d", s.dir, (int)getpid());
    write_file(stale, "x", 1);
    write_file(live, "x", 1);
    snprintf(args, sizeof args, "--data %s --val-data %s --head %s --weights random --out %s/y.h5 --epochs 1 --quiet",
             s.data, s.val, s.head, s.dir);
    out = run_ok("finetune", args);
    cr_expect(!strstr(out, "holds the very images"), "%s", out);
    free(out);
    cr_expect(stat(stale, &st) != 0, "the stale temporary checkpoint was removed");
    cr_expect(stat(live, &st) == 0, "a running process's temporary file is kept");
    // --out inside the image folder: refused, and no folder made there
    // (extract and Keras would read it as a class).
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/run/m.h5 --epochs 1 --quiet", s.data,
             s.head, s.data);
    cr_expect_eq(run_tool("finetune", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "lies inside --data"), "%s", out);
    free(out);
    char made[700];
    snprintf(made, sizeof made, "%s/run", s.data);
    cr_expect_neq(access(made, F_OK), 0, "the refused run made %s", made);
    // --val-data the training folder itself (spelled otherwise): a warning,
    // as train's for --val-cache, since the validation figures would be
    // training figures.
    snprintf(args, sizeof args, "--data %s --val-data %s/ --head %s --weights random --out %s/y.h5 --epochs 1 --quiet",
             s.data, s.data, s.head, s.dir);
    out = run_ok("finetune", args);
    cr_expect(strstr(out, "warning: --val-data ") && strstr(out, "holds the very images of --data"), "%s", out);
    free(out);
    // A bad augmentation spec names the key.
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/x.h5 --augment rotate=3", s.data,
             s.head, s.dir);
    cr_expect_eq(run_tool("finetune", args, &out), 2);
    cr_expect(strstr(out, "rotate"), "%s", out);
    free(out);
    remove_tree(s.dir);
    free(s.dir);
}

// finetune --cache with --validation-split: the model records the cache's
// decoding (a reduced decode here), as with --val-cache, so that predict
// decodes images as the features were (the split had dropped it: '').
Test(finetune, cache_split_keeps_the_decoding_record, .timeout = 300) {
    Setup s = setup();
    char args[3000], c5[700], c4[700], head[700], model[700];
    snprintf(c5, sizeof c5, "%s/c5r", s.dir);
    snprintf(c4, sizeof c4, "%s/c4r", s.dir);
    in_dir(&s, "hr.h5", head);
    in_dir(&s, "mr.h5", model);
    const char *common = "--weights random --input-size 32 --threads 1 --quiet --reduced-decode";
    snprintf(args, sizeof args, "--data %s --cache %s %s", s.data, c5, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data %s --cache %s --layer block4_pool %s", s.data, c4, common);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --out %s --epochs 1 --hidden 4 --threads 1 --quiet", c5, head);
    free(run_ok("train", args));
    snprintf(args, sizeof args,
             "--cache %s --validation-split 0.5 --head %s --weights random --out %s --epochs 1 --threads 1 --quiet",
             c4, head, model);
    free(run_ok("finetune", args));
    ModelMeta mm;
    cr_assert_eq(model_meta_read(model, &mm), 0, "%s", err_msg());
    cr_expect(!strncmp(mm.decode, "reduced", 7), "the model records decoding '%s'", mm.decode);
    model_meta_free(&mm);
    remove_tree(s.dir);
    free(s.dir);
}

// The default --unfreeze follows the head's cut (block2_pool -> block2_conv1),
// and a layer the head's base lacks is a usage error (exit 2) though it is
// known only once HEAD.h5 is read.
Test(finetune, default_unfreeze_follows_the_heads_cut) {
    char *dir = make_temp_dir("finetune_cut");
    char data[600], cache[600], head[600], args[3000], *out;
    snprintf(data, sizeof data, "%s/train", dir);
    snprintf(cache, sizeof cache, "%s/c2", dir);
    snprintf(head, sizeof head, "%s/h2.h5", dir);
    make_disc_square_folder(data, 4, 3);
    snprintf(args, sizeof args, "--data %s --cache %s --weights random --input-size 32 --layer block2_pool --threads 1 "
             "--quiet", data, cache);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --out %s --epochs 1 --batch 4 --hidden 8 --threads 1 --quiet", cache, head);
    free(run_ok("train", args));
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/m.h5 --epochs 1 --batch 4 --threads 1",
             data, head, dir);
    out = run_ok("finetune", args);
    cr_expect(strstr(out, "from block2_conv1"), "the default unfreezes block2_conv1: %s", out);
    free(out);
    snprintf(args, sizeof args, "--data %s --head %s --weights random --out %s/m.h5 --epochs 1 --unfreeze block5_conv1",
             data, head, dir);
    cr_expect_eq(run_tool("finetune", args, &out), 2, "%s", out);
    cr_expect(strstr(out, "block5_conv1") && strstr(out, "no such layer"), "%s", out);
    free(out);
    // --summary: the default follows --layer.
    cr_expect_eq(run_tool("finetune", "--summary --input-size 32 --layer block2_pool --classes 2", &out), 0, "%s", out);
    free(out);
    out = run_ok("finetune", "--help");
    cr_expect(strstr(out, "block2_conv1 for"), "--help states the default: %s", out);
    free(out);
    remove_tree(dir);
    free(dir);
}

// The lines of a tool's output that hold a comma and no timestamp.
static char *csv_lines(const char *text) {
    char *out = calloc(strlen(text) + 1, 1);
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        if (memchr(p, ',', n) && !(n > 20 && p[4] == '-' && p[10] == 'T')) strncat(out, p, n);
        p += n;
    }
    return out;
}

// --restore-best-weights: the model written (and evaluated) is the one at
// the end of the best epoch: predict gives what a run of that many epochs
// gives, image for image.
Test(finetune, restore_best_weights_writes_the_best_epoch) {
    Setup s = setup();
    char a[600], c[600], args[3000], extra[200];
    in_dir(&s, "a.h5", a);
    in_dir(&s, "c.h5", c);
    ft_args(&s, "--epochs 5 --lr 0.05 --restore-best-weights", a, args, sizeof args);
    char *out = run_ok("finetune", args);
    int best = restored_best_epoch(out);
    cr_assert(best >= 1 && best < 5, "the best epoch should not be the last for the test to mean anything: %d\n%s",
              best, out);
    free(out);
    snprintf(extra, sizeof extra, "--epochs %d --lr 0.05", best);
    ft_args(&s, extra, c, args, sizeof args);
    free(run_ok("finetune", args));
    char *pa, *pc;
    snprintf(args, sizeof args, "--model %s --format csv --threads 1 %s", a, s.val);
    pa = run_ok("predict", args);
    snprintf(args, sizeof args, "--model %s --format csv --threads 1 %s", c, s.val);
    pc = run_ok("predict", args);
    // The CSV lines (the log lines have times).
    char *la = csv_lines(pa), *lc = csv_lines(pc);
    cr_expect(strlen(la) > 100, "%s", pa);
    cr_expect_str_eq(la, lc, "predictions of the restored model and of a %d-epoch run differ", best);
    free(pa), free(pc), free(la), free(lc);
    remove_tree(s.dir);
    free(s.dir);
}

// When the head alone does better on the validation data than the
// fine-tuned model, the report says which file to keep.
Test(finetune, says_when_the_head_alone_did_better) {
    Setup s = setup();
    char c[600], vc[600], head[600], a[600], args[3000];
    snprintf(c, sizeof c, "%s/c64", s.dir);
    snprintf(vc, sizeof vc, "%s/vc64", s.dir);
    in_dir(&s, "head64.h5", head);
    in_dir(&s, "worse.h5", a);
    // A head better than chance (64x64: 2x2 block5_pool features)...
    snprintf(args, sizeof args, "--data %s --cache %s --weights random --input-size 64 --threads 1 --quiet", s.data, c);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data %s --cache %s --weights random --input-size 64 --threads 1 --quiet", s.val, vc);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --epochs 30 --batch 8 --hidden 0 --optimizer adam "
             "--lr 0.01 --threads 1 --quiet", c, vc, head);
    free(run_ok("train", args));
    // ... and a learning rate that wrecks it.
    snprintf(args, sizeof args, "--data %s --val-data %s --head %s --weights random --out %s --epochs 1 --batch 8 "
             "--lr 3 --momentum 0.9 --no-augment --threads 1 --quiet", s.data, s.val, head, a);
    char *out = run_ok("finetune", args);
    float before = -1, after = -1;
    const char *v = strstr(out, "Validation accuracy: ");
    cr_assert(v && sscanf(v, "Validation accuracy: %f with the head alone (before fine-tuning), %f after", &before,
                          &after) == 2, "%s", out);
    cr_assert(before > after, "the case needs a worse fine-tuned model (%.4f, %.4f):\n%s", before, after, out);
    cr_expect(strstr(out, "note: the head alone did better on the validation data: keep") && strstr(out, head),
              "%s", out);
    free(out);
    remove_tree(s.dir);
    free(s.dir);
}

// A --batch larger than the data (20 training and 8 validation images
// here): one step of all the images, as Keras runs, with buffers for 20
// images, not for --batch. The same figures as --batch 20; before, the
// buffers were sized by --batch (100000 images: 3.6 GB, or a failed
// allocation under the address-space limit this runs it with).
Test(finetune, batch_larger_than_the_data_is_one_step_of_it_all) {
    SKIP_UNDER_ASAN();
    Setup s = setup();
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char out20[600], outbig[600], args[3000];
    in_dir(&s, "b20.h5", out20);
    in_dir(&s, "bbig.h5", outbig);
    snprintf(args, sizeof args,
             "--data %s --val-data %s --head %s --weights random --out %s --epochs 2 --batch 20 --lr 0.01 "
             "--momentum 0.9 --threads 1 --quiet",
             s.data, s.val, s.head, out20);
    free(run_ok("finetune", args));
    snprintf(args, sizeof args,
             "ulimit -v 1500000 && %s/finetune --data %s --val-data %s --head %s --weights random --out %s --epochs 2 "
             "--batch 100000 --lr 0.01 --momentum 0.9 --threads 1 --quiet 2>&1",
             bin, s.data, s.val, s.head, outbig);
    char *out;
    cr_assert_eq(run_command(args, &out), 0, "%s", out);
    free(out);
    // The history's figures (all but the last column, the epoch's seconds).
    char h20[600], hbig[600];
    in_dir(&s, "b20.history.csv", h20);
    in_dir(&s, "bbig.history.csv", hbig);
    cr_expect_eq(expect_same_history(h20, hbig), 3, "a header and 2 epochs");
    remove_tree(s.dir);
    free(s.dir);
}
