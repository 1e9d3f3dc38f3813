// train end to end on caches the tests write directly (synthetic features,
// no images): a separable problem learned to 100%, balanced class weights,
// bit-identical results across thread counts, resume equal to an
// uninterrupted run, refusal of mismatched caches, damaged records named.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dataset.h"
#include "error.h"
#include "fit.h"
#include "metrics.h"
#include "model_io.h"
#include "testutil.h"

#define D 512  // vgg16 block5_pool at 32x32: 1x1x512

// Class c's features: a bump on feature c (separable), noise elsewhere.
static void make_cache(const char *path, int K, const int *per_class, int input_size, unsigned seed) {
    char *names[4] = {"ants", "bees", "wasps", "flies"};
    CacheMeta m = test_cache_meta(input_size / 32, 512, names, K);
    m.input_h = m.input_w = input_size;
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &m, 0), 0, "%s", err_msg());
    int n_feat = m.feat_h * m.feat_w * m.feat_c;
    float *f = malloc(sizeof(float) * (size_t)n_feat);
    uint64_t key = 0;
    unsigned s = seed;
    for (int k = 0; k < K; k++)
        for (int i = 0; i < per_class[k]; i++) {
            for (int j = 0; j < n_feat; j++) {
                s = s * 1103515245u + 12345u;
                f[j] = (float)((s >> 16) % 1000) / 1000.0f;  // ReLU-like, non-negative
            }
            for (int j = 0; j < 8; j++) f[k * 8 + j] += 3.0f;
            char p[64];
            snprintf(p, sizeof p, "%s/img%03d.jpg", names[k], i);
            CacheRecord r = {.label = k, .path = p, .features = f};
            cr_assert_eq(cache_put(&c, key++, &r, n_feat, FEAT_F16), 0, "%s", err_msg());
        }
    free(f);
    cr_assert_eq(cache_store_counts(&c, &m), 0, "%s", err_msg());
    free(m.class_counts);
    cache_close(&c);
}

static char *run_ok(const char *args) {
    char *out;
    int rc = run_tool("train", args, &out);
    cr_assert_eq(rc, 0, "train %s:\n%s", args, out);
    return out;
}

// All head weights of a model file, concatenated (for bitwise comparison).
static float *head_weights(const char *path, int K, long *n, int hidden, int input_size) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = input_size;
    cfg.n_classes = K;
    cfg.binary = K == 2;
    cfg.hidden = hidden;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0);
    cr_assert_eq(model_load_head(&m, path), 0, "%s", err_msg());
    *n = 0;
    for (int i = m.n_base; i < m.n_layers; i++) *n += m.layers[i].n_kernel + m.layers[i].n_bias;
    float *w = malloc(sizeof(float) * (size_t)*n), *p = w;
    for (int i = m.n_base; i < m.n_layers; i++) {
        if (!m.layers[i].n_kernel) continue;
        memcpy(p, m.layers[i].kernel, sizeof(float) * (size_t)m.layers[i].n_kernel), p += m.layers[i].n_kernel;
        memcpy(p, m.layers[i].bias, sizeof(float) * (size_t)m.layers[i].n_bias), p += m.layers[i].n_bias;
    }
    model_free(&m);
    return w;
}

Test(train, separable_problem_learned_to_100_percent) {
    char *dir = make_temp_dir("train");
    char tr[600], va[600], out[600], args[3000];
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(va, sizeof va, "%s/val", dir);
    snprintf(out, sizeof out, "%s/head.h5", dir);
    int n_tr[3] = {30, 20, 25}, n_va[3] = {10, 10, 10};
    make_cache(tr, 3, n_tr, 32, 1);
    make_cache(va, 3, n_va, 32, 2);
    snprintf(args, sizeof args,
             "--cache %s --val-cache %s --out %s --hidden 16 --optimizer adam --lr 0.01 --epochs 8 --batch 8 --quiet",
             tr, va, out);
    char *o = run_ok(args);
    cr_expect(strstr(o, "Validation: loss") && strstr(o, "accuracy 1.0000 (30/30)"), "%s", o);
    cr_expect(strstr(o, "categorical, softmax"), "%s", o);
    free(o);
    // The outputs beside the head.
    const char *sfx[] = {"head.history.csv", "head.history.svg", "head.confusion.svg", "head.ckpt"};
    for (int i = 0; i < 4; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, sfx[i]);
        FILE *f = fopen(p, "r");
        cr_expect_not_null(f, "missing %s", p);
        if (f) fclose(f);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/head.history.csv", dir);
    FILE *f = fopen(p, "r");
    char line[256];
    cr_assert(fgets(line, sizeof line, f));
    cr_expect_str_eq(line, "epoch,accuracy,loss,val_accuracy,val_loss,seconds\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) rows++;
    fclose(f);
    cr_expect_eq(rows, 8);
    // The head records the cache's settings for finetune to check.
    ModelMeta meta;
    cr_assert_eq(model_meta_read(out, &meta), 0, "%s", err_msg());
    cr_expect_str_eq(meta.weights, "random:seed=1");
    cr_expect_str_eq(meta.class_names[2], "wasps");
    model_meta_free(&meta);
    remove_tree(dir);
    free(dir);
}

Test(train, balanced_weights_by_hand) {
    // scikit-learn: w_c = N / (K * N_c); counts 30, 10, 20 -> 60/90, 60/30, 60/60.
    long counts[3] = {30, 10, 20};
    char *names[3] = {"a", "b", "c"};
    float w[3];
    cr_assert_eq(class_weights_balanced(counts, 3, names, w), 0);
    cr_expect_float_eq(w[0], 2.0f / 3.0f, 1e-7);
    cr_expect_float_eq(w[1], 2.0f, 1e-7);
    cr_expect_float_eq(w[2], 1.0f, 1e-7);
    long empty[2] = {5, 0};
    cr_expect_eq(class_weights_balanced(empty, 2, names, w), -1);
    cr_expect(strstr(err_msg(), "'b' has no images"), "%s", err_msg());
}

Test(train, balanced_weights_change_the_training_loss) {
    // A 3:1 skewed set: with balanced weights the first epoch's loss is
    // sum(w_c * l_i) / N, not the plain mean, so the two runs differ while
    // the unweighted validation loss after 1 epoch at a tiny lr is the same.
    char *dir = make_temp_dir("train");
    char tr[600], out[600], args[3000];
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(out, sizeof out, "%s/head.h5", dir);
    int n[2] = {30, 10};
    make_cache(tr, 2, n, 32, 3);
    float loss[2], vloss[2];
    for (int b = 0; b < 2; b++) {
        snprintf(args, sizeof args,
                 "--cache %s --validation-split 0.5 --out %s --hidden 16 --lr 1e-12 --epochs 1 --batch 40 "
                 "--dropout 0 --quiet --class-weight %s",
                 tr, out, b ? "balanced" : "none");
        char *o = run_ok(args);
        char *e = strstr(o, "Epoch 1/1 - ");
        cr_assert_not_null(e, "%s", o);
        cr_assert(sscanf(strstr(e, "loss: "), "loss: %f", &loss[b]) == 1, "%s", o);
        cr_assert(sscanf(strstr(e, "val_loss: "), "val_loss: %f", &vloss[b]) == 1, "%s", o);
        free(o);
    }
    cr_expect_float_eq(vloss[0], vloss[1], 1e-6, "validation is never class-weighted");
    cr_expect(fabsf(loss[0] - loss[1]) > 1e-4, "balanced weights did not change the loss: %g vs %g", loss[0], loss[1]);
    remove_tree(dir);
    free(dir);
}

Test(train, same_seed_same_result_on_any_thread_count) {
    // The default head (256 units) on the seeds' 4x4x512 features: 16 blocks
    // of rows of the hidden kernel, shared out differently on 1 and 2
    // threads (see common/dense.c). Plain SGD and Adam: an update rule
    // without and with optimizer state.
    char *dir = make_temp_dir("train");
    char tr[600], out1[600], out2[600], args[3000];
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(out1, sizeof out1, "%s/h1.h5", dir);
    snprintf(out2, sizeof out2, "%s/h2.h5", dir);
    int n[2] = {40, 24};
    make_cache(tr, 2, n, 150, 4);
    const char *opts[2] = {"--optimizer sgd --lr 0.01", "--optimizer adam --lr 0.001"};
    for (int o = 0; o < 2; o++) {
        for (int t = 1; t <= 2; t++) {
            snprintf(args, sizeof args, "--cache %s --out %s --epochs 2 --batch 7 --seed 9 --threads %d --quiet %s", tr,
                     t == 1 ? out1 : out2, t, opts[o]);
            free(run_ok(args));
        }
        long n1, n2;
        float *w1 = head_weights(out1, 2, &n1, 256, 150), *w2 = head_weights(out2, 2, &n2, 256, 150);
        cr_assert_eq(n1, n2);
        cr_expect_arr_eq(w1, w2, sizeof(float) * (size_t)n1, "%s: weights differ between --threads 1 and 2", opts[o]);
        free(w1), free(w2);
    }
    // And another seed gives other weights (the comparison can fail).
    snprintf(args, sizeof args, "--cache %s --out %s --epochs 2 --batch 7 --seed 10 --quiet %s", tr, out2, opts[1]);
    free(run_ok(args));
    long n1, n2;
    float *w1 = head_weights(out1, 2, &n1, 256, 150), *w2 = head_weights(out2, 2, &n2, 256, 150);
    cr_expect(memcmp(w1, w2, sizeof(float) * (size_t)n1) != 0);
    free(w1), free(w2);
    remove_tree(dir);
    free(dir);
}

// Two runs of the same training into a.h5 and b.h5: the second killed (like
// kill -9, exit 137) after `epoch`, then rerun with --resume. Returns the
// resumed run's output.
typedef struct {
    char *dir;
    char tr[600], va[600], a[600], b[600];
} ResumeCase;

static ResumeCase resume_case(int n_train, int n_val, unsigned seed) {
    ResumeCase r = {make_temp_dir("train")};
    snprintf(r.tr, sizeof r.tr, "%s/train", r.dir);
    snprintf(r.va, sizeof r.va, "%s/val", r.dir);
    snprintf(r.a, sizeof r.a, "%s/a.h5", r.dir);
    snprintf(r.b, sizeof r.b, "%s/b.h5", r.dir);
    int n[2] = {n_train, n_train}, nv[2] = {n_val, n_val};
    make_cache(r.tr, 2, n, 32, seed);
    make_cache(r.va, 2, nv, 32, seed + 1);
    return r;
}

static char *uninterrupted(const ResumeCase *r, const char *common) {
    char args[3000];
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s", r->tr, r->va, r->a, common);
    return run_ok(args);
}

static char *crash_then_resume(const ResumeCase *r, const char *common, int epoch) {
    char args[3000], env[16];
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s", r->tr, r->va, r->b, common);
    snprintf(env, sizeof env, "%d", epoch);
    setenv("VGGFT_TEST_CRASH_AFTER_EPOCH", env, 1);
    char *o;
    int rc = run_tool("train", args, &o);
    unsetenv("VGGFT_TEST_CRASH_AFTER_EPOCH");
    cr_assert_eq(rc, 137, "the crash hook did not fire: %s", o);
    free(o);
    strcat(args, " --resume");
    return run_ok(args);
}

static void expect_same_heads(const ResumeCase *r) {
    long n1, n2;
    float *w1 = head_weights(r->a, 2, &n1, 16, 32), *w2 = head_weights(r->b, 2, &n2, 16, 32);
    cr_assert_eq(n1, n2);
    cr_expect_arr_eq(w1, w2, sizeof(float) * (size_t)n1, "the resumed run differs from the uninterrupted one");
    free(w1), free(w2);
}

static void resume_case_free(ResumeCase *r) {
    remove_tree(r->dir);
    free(r->dir);
}

Test(train, resume_equals_uninterrupted_run) {
    ResumeCase r = resume_case(30, 8, 5);
    const char *common = "--hidden 16 --optimizer adam --lr 0.003 --epochs 5 --batch 8 --quiet";
    free(uninterrupted(&r, common));
    char *o = crash_then_resume(&r, common, 2);
    cr_expect(strstr(o, "Epoch 3/5") && !strstr(o, "Epoch 2/5"), "resumed at epoch 3: %s", o);
    free(o);
    expect_same_heads(&r);
    // The history has all 5 epochs, equal to the uninterrupted run's but for timings.
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/a.history.csv", r.dir);
    snprintf(p2, sizeof p2, "%s/b.history.csv", r.dir);
    cr_expect_eq(expect_same_history(p1, p2), 6);
    // Resuming with other settings is refused, naming the setting.
    char args[3000];
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s --resume --batch 9", r.tr, r.va, r.b, common);
    int rc = run_tool("train", args, &o);
    cr_expect_eq(rc, 1, "%s", o);
    cr_expect(strstr(o, "batch is 8 in the checkpoint, 9 in this run (--batch): to continue that run give its "
                        "settings and data again; to start over (replacing the checkpoint) leave out --resume"),
              "the setting, its option and what to do: %s", o);
    free(o);
    // Another validation names its option; more epochs done than asked
    // for says how many to give.
    snprintf(args, sizeof args, "--cache %s --out %s %s --resume --validation-split 0.5", r.tr, r.b, common);
    rc = run_tool("train", args, &o);
    cr_expect(rc == 1 && strstr(o, "in the checkpoint, (none) in this run (--val-cache): to continue"), "%s", o);
    free(o);
    snprintf(args, sizeof args,
             "--cache %s --val-cache %s --out %s --hidden 16 --optimizer adam --lr 0.003 --epochs 3 --batch 8 "
             "--quiet --resume",
             r.tr, r.va, r.b);
    rc = run_tool("train", args, &o);
    cr_expect(rc == 1 && strstr(o, "5 epochs done, more than --epochs 3: give --epochs 5 or more to continue that run"),
              "%d: %s", rc, o);
    free(o);
    // --resume-if-same: the same settings with more epochs continue the
    // finished run; other settings (or fewer epochs) start over, saying why.
    const char *more = "--hidden 16 --optimizer adam --lr 0.003 --epochs 6 --batch 8 --quiet";
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s --resume-if-same", r.tr, r.va, r.b, more);
    o = run_ok(args);
    cr_expect(strstr(o, "after epoch 5") && strstr(o, "Epoch 6/6") && !strstr(o, "Epoch 5/6"), "%s", o);
    free(o);
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s --resume-if-same --batch 9", r.tr, r.va, r.b,
             more);
    o = run_ok(args);
    cr_expect(strstr(o, "is of another run (batch is 8 in the checkpoint, 9 in this run): starting over") &&
                  strstr(o, "Epoch 1/6"),
              "%s", o);
    free(o);
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s --resume-if-same --batch 9 --epochs 2", r.tr,
             r.va, r.b, more);
    o = run_ok(args);
    cr_expect(strstr(o, "6 epochs done, more than --epochs 2): starting over"), "%s", o);
    free(o);
    // A damaged checkpoint is never taken for another run's: an error that says what to do.
    char ckpt[700];
    snprintf(ckpt, sizeof ckpt, "%s/b.ckpt", r.dir);
    write_file(ckpt, "x", 1);
    int rc2 = run_tool("train", args, &o);
    cr_expect(rc2 == 1 && strstr(o, "remove it to start over"), "%d: %s", rc2, o);
    free(o);
    resume_case_free(&r);
}

// SIGTERM inside an epoch (what Slurm sends at the time limit): the run saves
// its state between two steps, exits 75, leaves no temporary file, and the
// resumed run ends with the weights of an uninterrupted one.
Test(train, sigterm_mid_epoch_then_resume_equals_uninterrupted_run) {
    ResumeCase r = resume_case(30, 8, 9);
    const char *common = "--hidden 16 --optimizer rmsprop --lr 0.003 --epochs 3 --batch 8 --quiet";
    free(uninterrupted(&r, common));
    char args[3000], *o;
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s %s", r.tr, r.va, r.b, common);
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "10", 1);  // epoch 2 (8 steps an epoch), step 2
    int rc = run_tool("train", args, &o);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_assert_eq(rc, 75, "exit 75 (stopped, resumable): %d\n%s", rc, o);
    cr_expect(strstr(o, "SIGTERM: stopped after step 2/8 of epoch 2"), "%s", o);
    free(o);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", r.dir);
    FILE *p = popen(cmd, "r");
    int tmp = -1;
    cr_assert_eq(fscanf(p, "%d", &tmp), 1);
    pclose(p);
    cr_expect_eq(tmp, 0, "a temporary file was left in %s", r.dir);
    // --epochs 1 on a checkpoint 1 epoch and 2 steps in: more training than
    // asked for. --resume refuses; --resume-if-same would start over (not
    // run here: it would replace the checkpoint resumed below).
    char fewer[3000];
    snprintf(fewer, sizeof fewer, "--cache %s --val-cache %s --out %s %s --epochs 1 --resume", r.tr, r.va, r.b,
             common);
    rc = run_tool("train", fewer, &o);
    cr_expect(rc == 1 && strstr(o, "1 epoch and part of the next done, more than --epochs 1"), "%d: %s", rc, o);
    free(o);
    strcat(args, " --resume");
    free(run_ok(args));
    expect_same_heads(&r);
    resume_case_free(&r);
}

// --validation-split takes the files Keras's split takes: Keras splits each
// class's file list before reading any file, so files that extract skipped
// still count. Class "ants" lists 10 files of which the first 2 were
// unreadable (no records: keys 2..9), "bees" 10 readable ones (keys 10..19).
// F = 0.2: Keras's validation files are ants 0, 1 (none readable) and bees
// 10, 11, so 2 validation records, where splitting the records would take 3.
Test(train, validation_split_takes_the_files_keras_takes) {
    char *dir = make_temp_dir("train");
    char path[600], out[600], args[1400], *o;
    snprintf(path, sizeof path, "%s/c", dir);
    snprintf(out, sizeof out, "%s/h.h5", dir);
    char *names[2] = {"ants", "bees"};
    long files[2] = {10, 10};
    CacheMeta m = test_cache_meta(1, 512, names, 2);
    m.class_files = files;
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &m, 0), 0, "%s", err_msg());
    float f[D];
    for (uint64_t key = 2; key < 20; key++) {
        int k = key >= 10;
        for (int j = 0; j < D; j++) f[j] = (float)((key * 31 + (uint64_t)j * 7) % 13) / 13.0f + (j == k) * 3.0f;
        char p[64];
        snprintf(p, sizeof p, "%s/img%02d.jpg", names[k], (int)key);
        CacheRecord r = {.label = k, .path = p, .features = f};
        cr_assert_eq(cache_put(&c, key, &r, D, FEAT_F16), 0, "%s", err_msg());
    }
    cr_assert_eq(cache_store_counts(&c, &m), 0, "%s", err_msg());
    free(m.class_counts);
    cache_close(&c);
    snprintf(args, sizeof args, "--cache %s --out %s --validation-split 0.2 --epochs 1 --quiet", path, out);
    cr_assert_eq(run_tool("train", args, &o), 0, "%s", o);
    cr_expect(strstr(o, "Train on 16 samples") && strstr(o, "Validate on 2 samples"), "%s", o);
    free(o);
    remove_tree(dir);
    free(dir);
}

Test(train, mismatched_and_bad_caches) {
    char *dir = make_temp_dir("train");
    char tr[600], va[600], one[600], out[600], args[3000];
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(va, sizeof va, "%s/val64", dir);
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(out, sizeof out, "%s/head.h5", dir);
    int n[2] = {6, 6};
    make_cache(tr, 2, n, 32, 7);
    make_cache(va, 2, n, 64, 8);
    char *o;
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --quiet", tr, va, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "input size: --cache has 32x32, --val-cache 64x64"), "%s", o);
    free(o);
    // A validation cache without one of the classes (its folder missing):
    // the message names the class, and that the folders must match.
    char va3[600];
    snprintf(va3, sizeof va3, "%s/val3", dir);
    int three[3] = {4, 4, 4};
    make_cache(va3, 3, three, 32, 10);
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --quiet", va3, tr, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "--cache has 3 classes, --val-cache 2; 'wasps' only in --cache") &&
                  strstr(o, "the same class folders"), "%s", o);
    free(o);
    int single[1] = {5};
    make_cache(one, 1, single, 32, 9);
    snprintf(args, sizeof args, "--cache %s --out %s --quiet", one, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "single class"), "%s", o);
    free(o);
    // No records at all, and a class with none.
    char empty[600], absent[600];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(absent, sizeof absent, "%s/absent", dir);
    int none[2] = {0, 0}, only_ants[2] = {5, 0};
    make_cache(empty, 2, none, 32, 12);
    make_cache(absent, 2, only_ants, 32, 13);
    snprintf(args, sizeof args, "--cache %s --out %s --quiet", empty, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "holds no records"), "%s", o);
    free(o);
    snprintf(args, sizeof args, "--cache %s --out %s --quiet", absent, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "class 'bees' has no training records"), "%s", o);
    free(o);
    snprintf(args, sizeof args, "--cache %s/none --out %s --quiet", dir, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "no such cache"), "%s", o);
    free(o);
    // Usage errors: exit 2 with the value named.
    snprintf(args, sizeof args, "--cache %s --out %s --lr -1", tr, out);
    cr_expect_eq(run_tool("train", args, &o), 2);
    cr_expect(strstr(o, "--lr must be > 0, got -1"), "%s", o);
    free(o);
    snprintf(args, sizeof args, "--cache %s --out %s --validation-split 1.5", tr, out);
    cr_expect_eq(run_tool("train", args, &o), 2);
    free(o);

    // One damaged record: reported by key and path.
    Cache c;
    CacheMeta m;
    cr_assert_eq(cache_open_read(&c, tr, &m), 0);
    cache_close(&c);
    cr_assert_eq(cache_open_write(&c, tr, &m, 0), 0, "%s", err_msg());
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(c.env, NULL, 0, &txn), 0);
    MDB_val k = {10, "0000000003"}, v;
    cr_assert_eq(mdb_get(txn, c.dbi_features, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size - 10] ^= 0xff;  // inside the zstd frame
    MDB_val nv = {v.mv_size, copy};
    cr_assert_eq(mdb_put(txn, c.dbi_features, &k, &nv, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    free(copy);
    cache_close(&c);
    cache_meta_free(&m);
    snprintf(args, sizeof args, "--cache %s --out %s --quiet", tr, out);
    cr_expect_eq(run_tool("train", args, &o), 1);
    cr_expect(strstr(o, "record 0000000003 (ants/img003.jpg)") && strstr(o, "damaged"), "%s", o);
    free(o);
    remove_tree(dir);
    free(dir);
}

Test(train, streaming_from_the_cache_equals_in_memory) {
    char *dir = make_temp_dir("train");
    char tr[600], a[600], b[600], args[3000];
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(a, sizeof a, "%s/mem.h5", dir);
    snprintf(b, sizeof b, "%s/stream.h5", dir);
    int n[2] = {25, 15};
    make_cache(tr, 2, n, 32, 11);
    snprintf(args, sizeof args, "--cache %s --out %s --hidden 16 --epochs 2 --batch 6 --quiet", tr, a);
    free(run_ok(args));
    // A budget of 0 MB: nothing fits, every batch is read from LMDB.
    snprintf(args, sizeof args, "--cache %s --out %s --hidden 16 --epochs 2 --batch 6 --quiet --memory-budget 0", tr, b);
    free(run_ok(args));
    long n1, n2;
    float *w1 = head_weights(a, 2, &n1, 16, 32), *w2 = head_weights(b, 2, &n2, 16, 32);
    cr_expect_arr_eq(w1, w2, sizeof(float) * (size_t)n1);
    free(w1), free(w2);
    remove_tree(dir);
    free(dir);
}

// Killed right after early stopping fired (while writing the outputs): the
// resumed run must not train on, and must equal the uninterrupted one.
Test(train, resume_after_early_stopping_trains_no_further) {
    ResumeCase r = resume_case(20, 6, 21);
    // A large step: val_loss soon stops improving.
    const char *common = "--hidden 16 --optimizer sgd --lr 0.5 --epochs 40 --batch 8 --early-stopping 2 --quiet";
    char *o = uninterrupted(&r, common);
    int stop_epoch = 0;
    char *e = strstr(o, "early stopping");
    cr_assert_not_null(e, "early stopping never fired: %s", o);
    while (e > o && e[-1] != '\n') e--;
    cr_assert(sscanf(e, "Epoch %d:", &stop_epoch) == 1, "%s", e);
    free(o);
    o = crash_then_resume(&r, common, stop_epoch);
    char next[32];
    snprintf(next, sizeof next, "Epoch %d/40", stop_epoch + 1);
    cr_expect(strstr(o, next) == NULL, "trained on after early stopping: %s", o);
    free(o);
    expect_same_heads(&r);
    resume_case_free(&r);
}

// ---- many classes ---------------------------------------------------------------

// K classes named Quercus_robur_subspecies_NNNN, one record each.
static char **make_many_class_cache(const char *path, int K) {
    char **names = calloc((size_t)K, sizeof *names);
    for (int k = 0; k < K; k++) {
        names[k] = malloc(40);
        snprintf(names[k], 40, "Quercus_robur_subspecies_%04d", k);
    }
    CacheMeta m = test_cache_meta(1, D, names, K);
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &m, 0), 0, "%s", err_msg());
    float f[D];
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < D; j++) f[j] = (float)((k * 31 + j * 17) % 100) / 100.0f;
        char p[80];
        snprintf(p, sizeof p, "%s/a.png", names[k]);
        CacheRecord r = {.label = k, .path = p, .features = f};
        cr_assert_eq(cache_put(&c, (uint64_t)k, &r, D, FEAT_F16), 0, "%s", err_msg());
    }
    cr_assert_eq(cache_store_counts(&c, &m), 0, "%s", err_msg());
    free(m.class_counts);
    cache_close(&c);
    return names;
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

// 2,100 classes (62,999 bytes of class names): train wrote no head after its
// last epoch ("attribute vggft_class_names is 62999 bytes, more than the
// 60000 an HDF5 attribute holds") and would have printed a 2100 x 2100
// matrix. Now the head is written and names every class, predict reads it
// back, and the confusion outputs stay small.
Test(train, thousands_of_classes_write_a_head_with_every_name, .timeout = 120) {
    char *dir = make_temp_dir("train_many");
    const int K = 2100;
    char cache[600], out[600], args[2000], svg[700], report[700];
    snprintf(cache, sizeof cache, "%s/C", dir);
    snprintf(out, sizeof out, "%s/h.h5", dir);
    char **names = make_many_class_cache(cache, K);
    snprintf(args, sizeof args, "--cache %s --out %s --epochs 2 --hidden 8 --batch 64 --quiet --threads 2", cache,
             out);
    char *text = run_ok(args);
    cr_assert_lt(strlen(text), 200000, "train printed %zu bytes", strlen(text));
    cr_assert(strstr(text, "Confusion matrix not shown for 2100 classes (more than 50)"), "%.2000s", text);
    free(text);
    ModelMeta hm;
    cr_assert_eq(model_meta_read(out, &hm), 0, "%s", err_msg());
    cr_assert_eq(hm.n_classes, K);
    cr_assert_not_null(hm.class_names);
    for (int k = 0; k < K; k++) cr_assert_str_eq(hm.class_names[k], names[k]);
    model_meta_free(&hm);
    snprintf(svg, sizeof svg, "%s/h.confusion.svg", dir);
    cr_assert_lt(file_size(svg), 50000);

    // predict reads the head's names back and checks the cache's against them.
    snprintf(report, sizeof report, "%s/val", dir);
    snprintf(args, sizeof args, "--head %s --cache %s --report %s --threads 2", out, cache, report);
    int rc = run_tool("predict", args, &text);
    cr_assert_eq(rc, 0, "predict %s:\n%.3000s", args, text);
    cr_assert(strstr(text, "Confusion matrix not shown for 2100 classes"), "%.2000s", text);
    free(text);
    snprintf(svg, sizeof svg, "%s/val_confusion.svg", dir);
    cr_assert_lt(file_size(svg), 50000);
    for (int k = 0; k < K; k++) free(names[k]);
    free(names);
    remove_tree(dir);
    free(dir);
}

// The printed report: the matrix up to FIT_REPORT_MATRIX_MAX classes, above
// it a note and the largest confusions (2,600 classes printed 110 MB).
Test(train, report_matrix_capped_above_fifty_classes) {
    for (int K = FIT_REPORT_MATRIX_MAX; K <= FIT_REPORT_MATRIX_MAX + 1; K++) {
        char **names = calloc((size_t)K, sizeof *names);
        long *conf = calloc((size_t)K * K, sizeof *conf);
        for (int k = 0; k < K; k++) {
            names[k] = malloc(16);
            snprintf(names[k], 16, "c%02d", k);
            conf[k * K + k] = 3;
        }
        conf[2 * K + 5] = 9;  // the largest confusion: c02 -> c05
        conf[7 * K + 1] = 4;
        Running r = {.n = 3.0 * K + 13, .correct = 3L * K};
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        fit_print_report(f, "Validation", &r, K, names, conf);
        fclose(f);
        if (K <= FIT_REPORT_MATRIX_MAX) {
            cr_assert(strstr(text, "Confusion matrix (rows: true class, columns: predicted)"), "%s", text);
            cr_assert(!strstr(text, "not shown"));
        } else {
            cr_assert(!strstr(text, "Confusion matrix (rows"), "%s", text);
            cr_assert(strstr(text, "Confusion matrix not shown for 51 classes (more than 50)"), "%s", text);
            const char *a = strstr(text, "  c02 -> c05: 9 (0.7500)\n"), *b = strstr(text, "  c07 -> c01: 4 (0.5714)\n");
            cr_assert(a && b && a < b, "the largest confusions first:\n%s", text);
            cr_assert_lt(len, 4000, "%zu bytes", len);
        }
        cr_assert(strstr(text, "precision   recall       f1  support"), "per-class figures are still printed");
        free(text);
        for (int k = 0; k < K; k++) free(names[k]);
        free(names), free(conf);
    }
}

// Display columns of s[0..n) for the names below, which hold only ASCII,
// Latin letters (2-byte UTF-8: 1 column), CJK (3 bytes led by E4..E9: 2
// columns) and emoji (4 bytes: 2 columns); -1 where s is not UTF-8 (a name
// cut inside a sequence). Independent of utf8_width on purpose.
static int columns(const char *s, size_t n) {
    int w = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 ? 4 : 0;
        if (!len || i + len > n) return -1;
        for (int k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return -1;
        w += len == 1 || len == 2 ? 1 : 2;
        i += (size_t)len;
    }
    return w;
}

// The display columns where the last `want` space-separated tokens of line
// end; asserts the line is UTF-8 and has that many tokens.
static void token_ends(const char *line, size_t n, int want, int *ends) {
    int found = 0;
    for (size_t i = n; i > 0 && found < want;) {
        while (i > 0 && line[i - 1] == ' ') i--;
        if (i == 0) break;
        int end = columns(line, i);
        cr_assert_geq(end, 0, "not UTF-8: %.*s", (int)n, line);
        ends[want - 1 - found++] = end;
        while (i > 0 && line[i - 1] != ' ') i--;
    }
    cr_assert_eq(found, want, "%d tokens in: %.*s", found, (int)n, line);
}

// Names with multi-byte UTF-8 are padded (and cut) by display columns, not
// bytes: every row's counts end where the header's names end, and the
// per-class figures line up; long names are cut at a character boundary.
Test(train, report_columns_align_for_utf8_names) {
    char *names[] = {"cat", "\xc3\xbcn\xc3\xaf",                             // ünï
                     "\xe4\xb8\xad\xe6\x96\x87\xe7\x8c\xab",                 // 中文猫: 6 columns
                     "\xf0\x9f\x90\xb1" "cat",                              // 🐱cat: 5 columns
                     "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
                     "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"};  // 13 x 中: 26
    enum { K = 5 };
    long conf[K * K];
    for (int i = 0; i < K * K; i++) conf[i] = i % K == i / K ? 100 + i : i;
    Running r = {.n = 600, .correct = 500};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fit_print_report(f, "Validation", &r, K, names, conf);
    fclose(f);

    const char *m = strstr(text, "predicted):\n");
    cr_assert(m, "%s", text);
    const char *line = m + strlen("predicted):\n"), *nl = strchr(line, '\n');
    int head[K], ends[K];
    token_ends(line, (size_t)(nl - line), K, head);
    for (int k = 1; k < K; k++) cr_expect_eq(head[k] - head[k - 1], 17, "columns of 16 + 1:\n%s", text);
    // The 26-column name cut to 16 columns (8 characters) in the header, 24 (12) as a row label.
    cr_expect(strstr(line, " \xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
                           "\xe4\xb8\xad\n"), "%s", text);
    for (int t = 0; t < K; t++) {
        line = nl + 1, nl = strchr(line, '\n');
        cr_assert(nl && !strncmp(line, "  ", 2), "%s", text);
        token_ends(line, (size_t)(nl - line), K, ends);
        for (int k = 0; k < K; k++) cr_expect_eq(ends[k], head[k], "row %d column %d:\n%s", t, k, text);
    }
    cr_expect(strstr(text, "\n  \xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
                           "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad "),
              "%s", text);

    // The per-class table (precision, recall, F1, support: scikit-learn's
    // classification_report) and its averages: the figures end in the same
    // columns on every row.
    line = strstr(text, " precision   recall       f1  support\n");
    cr_assert(line, "%s", text);
    line = strchr(line, '\n') + 1;
    int first[4];
    for (int k = 0; k < K + 2; k++, line = nl + 1) {
        nl = strchr(line, '\n');
        cr_assert(nl, "%s", text);
        token_ends(line, (size_t)(nl - line), 4, k == 0 ? first : ends);
        for (int j = 0; k > 0 && j < 4; j++) cr_expect_eq(ends[j], first[j], "row %d figure %d:\n%s", k, j, text);
    }
    cr_expect(strstr(text, "  weighted avg "), "%s", text);
    free(text);
}

// --restore-best-weights (Keras's EarlyStopping(restore_best_weights=True)):
// the head written is the one at the end of the best val_loss epoch, equal
// to a run of that many epochs; a run killed after that epoch and resumed
// writes the same head (the best weights are in the checkpoint).
Test(train, restore_best_weights_writes_the_best_epoch) {
    ResumeCase r = resume_case(12, 30, 11);
    const char *common = "--hidden 16 --optimizer adam --lr 0.3 --epochs 8 --batch 4 --restore-best-weights --quiet";
    char *out = uninterrupted(&r, common);
    int best = restored_best_epoch(out);
    cr_assert(best >= 1 && best < 8, "the best epoch should not be the last for the test to mean anything: %d\n%s",
              best, out);
    free(out);
    // The same training stopped after the best epoch, without the option.
    char c[700], args[3000];
    snprintf(c, sizeof c, "%s/c.h5", r.dir);
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --hidden 16 --optimizer adam --lr 0.3 --epochs %d "
             "--batch 4 --quiet", r.tr, r.va, c, best);
    free(run_ok(args));
    long n1, n2;
    float *w1 = head_weights(r.a, 2, &n1, 16, 32), *w2 = head_weights(c, 2, &n2, 16, 32);
    cr_assert_eq(n1, n2);
    cr_expect_arr_eq(w1, w2, sizeof(float) * (size_t)n1, "the head is not the best epoch's (%d)", best);
    free(w1), free(w2);
    // Killed after the last epoch but one (after the best), resumed.
    free(crash_then_resume(&r, common, 7));
    expect_same_heads(&r);
    // One log for both streams (Slurm's slurm-JOBID.out): stdout's lines in
    // order with stderr's, "Train on" before "Epoch 1/".
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --epochs 1 --hidden 4", r.tr, r.va, c);
    out = run_ok(args);
    const char *train_on = strstr(out, "Train on "), *epoch1 = strstr(out, "Epoch 1/1");
    cr_expect(train_on && epoch1 && train_on < epoch1, "%s", out);
    free(out);
    // --monitor alone watches nothing: a note, and a resume with another
    // --monitor continues (it is no setting of such a run).
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s --epochs 2 --hidden 4 --quiet --resume "
             "--monitor val_accuracy", r.tr, r.va, c);
    out = run_ok(args);
    cr_expect(strstr(out, "note: --monitor is what --early-stopping and --restore-best-weights watch"), "%s", out);
    free(out);
    // Without validation data: refused.
    snprintf(args, sizeof args, "--cache %s --out %s --restore-best-weights --quiet", r.tr, c);
    cr_expect_eq(run_tool("train", args, &out), 2);
    cr_expect(strstr(out, "--restore-best-weights watches val_loss: give --val-cache"), "%s", out);
    free(out);
    resume_case_free(&r);
}

// A binary head (32x32 features, 4 hidden units) with its weights
// allocated; returns its first layer.
static int small_binary_head(Model *m) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 32, cfg.n_classes = 2, cfg.binary = 1, cfg.hidden = 4;
    cr_assert_eq(model_build(m, &cfg), 0);
    const int h0 = model_head_start(m);
    cr_assert_eq(model_alloc_weights(m, h0, m->n_layers), 0);
    return h0;
}

// A checkpoint's settings against a run's: a setting added since (monitor,
// restore_best_weights) absent from an older checkpoint is taken as its
// old meaning; augment_ranges (float ranges before vggft 0.2) is not: the
// resume is refused, saying why.
Test(train, checkpoint_settings_added_since) {
    char *dir = make_temp_dir("fitset");
    char path[700];
    snprintf(path, sizeof path, "%s/x.ckpt", dir);
    Model m;
    const int h0 = small_binary_head(&m);
    model_init_random(&m, h0, m.n_layers, 1);
    Optimizer opt;
    optim_defaults(&opt, OPTIM_SGD);
    FitState a, b;
    cr_assert_eq(fit_init(&a, &m, h0, &opt, 3), 0);
    cr_assert_eq(fit_save(&a, "tool=finetune\nlr=0.01\naugment=shift=0.2\n", path), 0, "%s", err_msg());
    cr_assert_eq(fit_init(&b, &m, h0, &opt, 3), 0);
    cr_expect_eq(fit_load(&b, "tool=finetune\nlr=0.01\naugment=shift=0.2\nmonitor=val_loss\nrestore_best_weights=0\n",
                          path), 0, "%s", err_msg());
    cr_expect_eq(fit_load(&b, "tool=finetune\nlr=0.01\naugment=shift=0.2\nmonitor=val_accuracy\n", path), -1);
    cr_expect(strstr(err_msg(), "monitor is (absent) in the checkpoint, val_accuracy in this run"), "%s", err_msg());
    cr_expect_eq(fit_load(&b, "tool=finetune\nlr=0.01\naugment=shift=0.2\naugment_ranges=double\n", path), -1);
    cr_expect(strstr(err_msg(), "augment_ranges is (absent)") && strstr(err_msg(), "float ranges"), "%s", err_msg());
    fit_free(&a), fit_free(&b);
    model_free(&m);
    remove_tree(dir);
    free(dir);
}

// Keras's EarlyStopping on a NaN first epoch: it is the best so far (best
// is None), and nothing improves on it; patience 2 stops at the third.
Test(train, early_stopping_as_keras_after_a_nan_first_epoch) {
    Model m;
    const int h0 = small_binary_head(&m);
    Optimizer opt;
    optim_defaults(&opt, OPTIM_SGD);
    FitState s;
    cr_assert_eq(fit_init(&s, &m, h0, &opt, 5), 0);
    fit_set_monitor(&s, 0, 1);
    const float val[3] = {NAN, 0.5f, 0.4f};
    int stop = 0;
    for (int e = 0; e < 3 && !stop; e++) {
        fit_end_epoch(&s, 1, 0.5f, val[e], 0.5f, 1);
        stop = fit_early_stop(&s, 2);
        cr_expect_eq(fit_epoch_is_best(&s), e == 0, "epoch %d", e + 1);
        cr_expect_eq(stop, e == 2, "epoch %d", e + 1);
    }
    cr_expect_eq(s.best_epoch, 0);
    fit_free(&s);
    model_free(&m);
}

// A class with no image and none predicted as it has no figures and is
// not in the averages (scikit-learn leaves it out); the row says so.
Test(train, report_class_without_images_or_predictions) {
    char *names[] = {"ants", "\x1b[31mbees", "tulips"};  // (an escape sequence: printed as '?')
    long conf[9] = {3, 1, 0, 2, 4, 0, 0, 0, 0};  // tulips: no image, never predicted
    Running r = {.n = 10, .correct = 7};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fit_print_report(f, "Validation", &r, 3, names, conf);
    fclose(f);
    cr_expect(strstr(text, "  tulips               -        -        -        0\n"), "%s", text);
    cr_expect(strstr(text, "(-: no image of that class, and none predicted as it; not in the averages)"), "%s", text);
    // macro precision: (3/5 + 4/5) / 2 = 0.7, over the two classes only
    cr_expect(strstr(text, "  macro avg       0.7000 "), "%s", text);
    cr_expect(!strchr(text, '\x1b') && strstr(text, "  ?[31mbees       0.8000"), "%s", text);
    free(text);
}
