// predict: the figures of common/metrics.c worked by hand; predictions equal
// the model's own forward pass (head + base, and a whole model from
// finetune), train's and finetune's evaluation of the same data, and Keras's
// model.predict on a Keras-written model (fixture); JSON Lines that parse and
// hold the documented fields; skipped files and exit code 3; wrong model
// files, wrong base weights, wrong caches and unknown class folders refused
// with messages that name them; the report's files.
#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <hdf5.h>

#include "error.h"
#include "fileutil.h"
#include "fit.h"
#include "forward.h"
#include "image.h"
#include "metrics.h"
#include "model.h"
#include "model_io.h"
#include "testutil.h"
#include "weights_h5.h"
#include "weights_source.h"

// --- common/metrics.c, by hand -------------------------------------------------

Test(predict_metrics, per_class_figures_worked_by_hand) {
    // 3 classes; rows true, columns predicted. Class 2 has no samples and is
    // predicted once (a class-0 sample): its precision and recall are 0.
    int32_t labels[] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
    int32_t pred[] = {0, 0, 0, 0, 0, 1, 2, 0, 0, 1, 1, 1, 0};
    long conf[9] = {0};
    confusion_add(conf, 3, labels, pred, 13);
    long want[9] = {5, 1, 1, 3, 3, 0, 0, 0, 0};
    for (int i = 0; i < 9; i++) cr_expect_eq(conf[i], want[i], "conf[%d] = %ld, expected %ld", i, conf[i], want[i]);
    ClassMetrics c[3];
    metrics_per_class(conf, 3, c);
    // class 0: tp 5, predicted 8, support 7 -> P 5/8, R 5/7, F1 2PR/(P+R) = 10/15
    // class 1: tp 3, predicted 4, support 6 -> P 3/4, R 1/2, F1 0.6
    // class 2: tp 0, predicted 1, support 0 -> 0, 0, 0
    long got[9] = {c[0].tp, c[0].predicted, c[0].support, c[1].tp, c[1].predicted, c[1].support,
                   c[2].tp, c[2].predicted, c[2].support};
    long hand[9] = {5, 8, 7, 3, 4, 6, 0, 1, 0};
    for (int i = 0; i < 9; i++) cr_expect_eq(got[i], hand[i], "count %d: %ld, expected %ld", i, got[i], hand[i]);
    cr_expect_float_eq(c[0].precision, 5.0 / 8, 1e-12);
    cr_expect_float_eq(c[0].recall, 5.0 / 7, 1e-12);
    cr_expect_float_eq(c[0].f1, 2.0 / 3, 1e-12);
    cr_expect_float_eq(c[1].precision, 0.75, 1e-12);
    cr_expect_float_eq(c[1].recall, 0.5, 1e-12);
    cr_expect_float_eq(c[1].f1, 0.6, 1e-12);
    cr_expect(c[2].precision == 0 && c[2].recall == 0 && c[2].f1 == 0);
    double p, r, f;
    metrics_macro(c, 3, &p, &r, &f);  // scikit-learn's macro average counts the empty class
    cr_expect_float_eq(p, (5.0 / 8 + 0.75) / 3, 1e-12);
    cr_expect_float_eq(r, (5.0 / 7 + 0.5) / 3, 1e-12);
    cr_expect_float_eq(f, (2.0 / 3 + 0.6) / 3, 1e-12);
    // A fourth class in neither the truth nor the predictions (a folder
    // without it): scikit-learn's default labels leave it out.
    long conf4[16] = {5, 1, 1, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ClassMetrics c4[4];
    metrics_per_class(conf4, 4, c4);
    double p4, r4, f4;
    metrics_macro(c4, 4, &p4, &r4, &f4);
    cr_expect_float_eq(p4, (5.0 / 8 + 0.75) / 3, 1e-12);
    cr_expect_float_eq(r4, (5.0 / 7 + 0.5) / 3, 1e-12);
    cr_expect_float_eq(f4, (2.0 / 3 + 0.6) / 3, 1e-12);
    metrics_weighted(c, 3, &p, &r, &f);  // by support 7, 6, 0
    cr_expect_float_eq(p, (7 * 5.0 / 8 + 6 * 0.75) / 13, 1e-12);
    cr_expect_float_eq(r, (7 * 5.0 / 7 + 6 * 0.5) / 13, 1e-12);  // = accuracy 8/13
    cr_expect_float_eq(f, (7 * 2.0 / 3 + 6 * 0.6) / 13, 1e-12);
}

// Probabilities shown with more decimals rather than rounded to a false 1.
Test(predict_metrics, probabilities_never_round_up_to_one) {
    cr_expect_eq(metrics_prob_digits(0.973, 3), 3);
    cr_expect_eq(metrics_prob_digits(0.9994, 3), 3);   // 0.999
    cr_expect_eq(metrics_prob_digits(0.99951, 3), 4);  // 0.9995, not 1.000
    cr_expect_eq(metrics_prob_digits(0.99996, 4), 5);  // 0.99996
    cr_expect_eq(metrics_prob_digits(1.0, 3), 3);      // a true 1 stays 1.000
    cr_expect_eq(metrics_prob_digits(1 - 1e-12, 3), 7);  // at most 7
}

Test(predict_metrics, top_k_order_ties_and_nan) {
    float p[] = {0.1f, 0.4f, NAN, 0.4f, 0.1f, 0.0f};
    int idx[6];
    cr_assert_eq(metrics_top_k(p, 6, 3, idx), 3);
    // Equal values: the lower index first (Keras's argmax takes the first maximum).
    cr_expect(idx[0] == 1 && idx[1] == 3 && idx[2] == 0, "%d %d %d", idx[0], idx[1], idx[2]);
    cr_assert_eq(metrics_top_k(p, 6, 10, idx), 6);
    int want[] = {1, 3, 0, 4, 5, 2};  // NaN last
    for (int i = 0; i < 6; i++) cr_expect_eq(idx[i], want[i], "rank %d: %d", i, idx[i]);
    cr_expect_eq(metrics_top_k(p, 6, 0, idx), 0);
    float one[] = {0.25f};
    cr_expect(metrics_top_k(one, 1, 3, idx) == 1 && idx[0] == 0);
}

// --- a JSON Lines reader for predict's documented fields --------------------------

typedef struct {
    char path[1024], truth[128];
    int has_truth, n;
    char cls[16][128];
    double prob[16];
} PredLine;

static void ws(const char **s) {
    while (isspace((unsigned char)**s)) (*s)++;
}

// A JSON string into out (escapes \" \\ \n \t \uXXXX below 0x80); 0 on error.
static int jstring(const char **s, char *out, size_t size) {
    ws(s);
    if (**s != '"') return 0;
    size_t n = 0;
    for ((*s)++; **s != '"'; (*s)++) {
        char c = **s;
        if (!c || (unsigned char)c < 0x20) return 0;
        if (c == '\\') {
            c = *++*s;
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            else if (c == 'u') {
                unsigned v;
                if (sscanf(*s + 1, "%4x", &v) != 1 || v >= 0x80) return 0;
                c = (char)v, *s += 4;
            } else if (c != '"' && c != '\\' && c != '/') return 0;
        }
        if (n + 1 < size) out[n++] = c;
    }
    (*s)++;
    out[n] = '\0';
    return 1;
}

static int jnumber(const char **s, double *v) {
    ws(s);
    char *end;
    *v = strtod(*s, &end);
    if (end == *s) return 0;
    *s = end;
    return 1;
}

static int jchar(const char **s, char c) {
    ws(s);
    if (**s != c) return 0;
    (*s)++;
    return 1;
}

// One line of --format json: exactly the keys path, top_k, and true (optional).
static int parse_pred_line(const char *s, PredLine *l) {
    memset(l, 0, sizeof *l);
    int has_path = 0, has_top = 0;
    if (!jchar(&s, '{')) return 0;
    do {
        char key[64];
        if (!jstring(&s, key, sizeof key) || !jchar(&s, ':')) return 0;
        if (!strcmp(key, "path")) {
            if (!jstring(&s, l->path, sizeof l->path)) return 0;
            has_path = 1;
        } else if (!strcmp(key, "true")) {
            if (!jstring(&s, l->truth, sizeof l->truth)) return 0;
            l->has_truth = 1;
        } else if (!strcmp(key, "top_k")) {
            if (!jchar(&s, '[')) return 0;
            do {
                if (l->n == 16 || !jchar(&s, '{')) return 0;
                char k1[16], k2[16];
                if (!jstring(&s, k1, sizeof k1) || strcmp(k1, "class") || !jchar(&s, ':') ||
                    !jstring(&s, l->cls[l->n], sizeof l->cls[0]) || !jchar(&s, ',') || !jstring(&s, k2, sizeof k2) ||
                    strcmp(k2, "prob") || !jchar(&s, ':') || !jnumber(&s, &l->prob[l->n]) || !jchar(&s, '}'))
                    return 0;
                l->n++;
            } while (jchar(&s, ','));
            if (!jchar(&s, ']')) return 0;
            has_top = 1;
        } else {
            return 0;  // not a documented field
        }
    } while (jchar(&s, ','));
    if (!jchar(&s, '}')) return 0;
    ws(&s);
    return *s == '\0' && has_path && has_top;
}

// Any JSON value (syntax only), for the report file.
static int jvalue(const char **s) {
    ws(s);
    char buf[4096];
    double v;
    if (**s == '"') return jstring(s, buf, sizeof buf);
    if (**s == '{' || **s == '[') {
        char close = **s == '{' ? '}' : ']';
        int obj = close == '}';
        (*s)++;
        if (jchar(s, close)) return 1;
        do {
            if (obj && (!jstring(s, buf, sizeof buf) || !jchar(s, ':'))) return 0;
            if (!jvalue(s)) return 0;
        } while (jchar(s, ','));
        return jchar(s, close);
    }
    if (!strncmp(*s, "null", 4) || !strncmp(*s, "true", 4)) return *s += 4, 1;
    if (!strncmp(*s, "false", 5)) return *s += 5, 1;
    return jnumber(s, &v);
}

// The JSON lines of an output (other lines, e.g. notes on stderr, skipped).
static int pred_lines(const char *out, PredLine *lines, int cap) {
    int n = 0;
    for (const char *p = out; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (*p == '{') {
            char *line = strndup(p, len);
            cr_assert(n < cap, "more lines than expected");
            cr_assert(parse_pred_line(line, &lines[n]), "not a documented JSON line: %s", line);
            free(line);
            n++;
        }
        p += len + (e != NULL);
    }
    return n;
}

static double prob_of(const PredLine *l, const char *cls) {
    for (int j = 0; j < l->n; j++)
        if (!strcmp(l->cls[j], cls)) return l->prob[j];
    cr_assert_fail("%s: class %s not in top_k", l->path, cls);
    return NAN;
}

// --- the pipeline: images, caches, a head ------------------------------------------

typedef struct {
    char *top, *vtop;
    char data[600], val[600], c5[600], vc5[600], head[600];
} Setup;

static char *run_ok(const char *tool, const char *args) {
    char *out;
    int rc = run_tool_timeout(tool, args, 300, &out);
    cr_assert_eq(rc, 0, "%s %s exited %d:\n%s", tool, args, rc, out);
    return out;
}

static const char *COMMON = "--weights random --input-size 32 --threads 1 --quiet --dtype f32";

// Training and validation shape folders, their f32 caches, and a head
// (binary by default, or with extra train options).
static Setup setup(const char *train_extra) {
    Setup s;
    s.top = make_shape_folder("predict", 6, 10);
    s.vtop = make_shape_folder("predict_val", 5, 31);
    snprintf(s.data, sizeof s.data, "%s/data", s.top);
    snprintf(s.val, sizeof s.val, "%s/data", s.vtop);
    snprintf(s.c5, sizeof s.c5, "%s/c5", s.top);
    snprintf(s.vc5, sizeof s.vc5, "%s/vc5", s.top);
    snprintf(s.head, sizeof s.head, "%s/head.h5", s.top);
    char args[3000];
    snprintf(args, sizeof args, "--data '%s' --cache %s %s", s.data, s.c5, COMMON);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--data '%s' --cache %s %s", s.val, s.vc5, COMMON);
    free(run_ok("extract", args));
    snprintf(args, sizeof args,
             "--cache %s --val-cache %s --out %s --epochs 3 --batch 4 --hidden 8 --lr 0.05 --threads 1 --quiet %s",
             s.c5, s.vc5, s.head, train_extra);
    free(run_ok("train", args));
    return s;
}

static void teardown(Setup *s) {
    remove_tree(s->top);
    remove_tree(s->vtop);
    free(s->top), free(s->vtop);
}

// The line of fit_print_report after "WHAT: " ("loss L - accuracy A (c/n)").
static char *figures(const char *out, const char *what) {
    char key[64];
    snprintf(key, sizeof key, "\n%s: loss ", what);
    const char *p = strstr(out, key);
    cr_assert(p, "no '%s' line in:\n%s", what, out);
    p += strlen(key) - 5;
    const char *e = strchr(p, '\n');
    return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

// The model's own forward pass, in this process: every image of a folder
// through base_forward_cpu and head_forward; probs[i] = the output row.
typedef struct {
    int n, outputs;
    char paths[64][600];
    float probs[64][4];
} Forward;

static void own_forward(const char *model_file, int full, const char *dir, Forward *fw) {
    ModelMeta meta;
    cr_assert_eq(model_meta_read(model_file, &meta), 0, "%s", err_msg());
    ModelConfig cfg;
    model_meta_to_config(&meta, &cfg);
    cfg.unfreeze = NULL;
    Model m = {0};
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    char id[96];
    if (full) cr_assert_eq(model_load_full(&m, model_file), 0, "%s", err_msg());
    else {
        cr_assert_eq(load_base_weights(&m, "random", 1, 1, id, sizeof id), 0, "%s", err_msg());
        cr_assert_eq(model_load_head(&m, model_file), 0, "%s", err_msg());
    }
    LoadOptions lo = {.w = meta.input_w, .h = meta.input_h};
    cr_assert_eq(interp_parse(meta.interpolation, &lo.interp), 0);
    cr_assert_eq(prep_parse(meta.preprocess, &lo.prep), 0);
    BaseWorkspace ws;
    HeadBuffers hb;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    cr_assert_eq(head_buffers_alloc(&hb, &m, 1), 0);
    float *x = malloc(sizeof(float) * (size_t)lo.w * lo.h * 3), *feat = malloc(sizeof(float) * model_feature_size(&m));
    const char *cls[2] = {"circles", "squares"};
    fw->n = 0;
    fw->outputs = m.n_outputs;
    for (int k = 0; k < 2; k++)
        for (int i = 0;; i++) {
            char p[600];
            snprintf(p, sizeof p, "%s/%s/img %02d.jpg", dir, cls[k], i);
            struct stat st;
            if (stat(p, &st) != 0) break;
            cr_assert_eq(image_load(p, &lo, NULL, x, NULL), 0, "%s", err_msg());
            base_forward_cpu(&m, x, 1, feat, &ws);
            cr_assert_eq(head_forward(&m, feat, 1, 0, 0, 0, &hb), 0);
            snprintf(fw->paths[fw->n], sizeof fw->paths[0], "%s", p);
            memcpy(fw->probs[fw->n], hb.probs, sizeof(float) * m.n_outputs);
            fw->n++;
        }
    free(x), free(feat);
    head_buffers_free(&hb);
    base_workspace_free(&ws);
    model_free(&m);
    model_meta_free(&meta);
}

// predict's JSON lines for the folder equal the forward pass, class by class.
static void expect_json_equals_forward(const char *out, const Forward *fw) {
    PredLine *lines = calloc(64, sizeof(PredLine));
    int n = pred_lines(out, lines, 64);
    cr_assert_eq(n, fw->n, "%d JSON lines for %d images:\n%s", n, fw->n, out);
    for (int i = 0; i < n; i++) {
        cr_expect_str_eq(lines[i].path, fw->paths[i]);
        cr_expect(lines[i].has_truth, "--eval lines hold the true class");
        const char *want_truth = strstr(fw->paths[i], "/circles/") ? "circles" : "squares";
        cr_expect_str_eq(lines[i].truth, want_truth);
        cr_expect_eq(lines[i].n, 2, "top-k defaults to min(3, classes) = 2");
        cr_expect(lines[i].prob[0] >= lines[i].prob[1], "top_k is in decreasing order");
        float sq = fw->outputs == 1 ? fw->probs[i][0] : fw->probs[i][1];
        float ci = fw->outputs == 1 ? 1.0f - fw->probs[i][0] : fw->probs[i][0];
        // %.9g reads back as the same float32: equal to float32 rounding of
        // sums that may run in another order on other BLAS thread counts.
        cr_expect(fabs(prob_of(&lines[i], "squares") - sq) <= 1e-6, "%s: %.9g vs %.9g", lines[i].path,
                  prob_of(&lines[i], "squares"), sq);
        cr_expect(fabs(prob_of(&lines[i], "circles") - ci) <= 1e-6, "%s", lines[i].path);
    }
    free(lines);
}

Test(predict, head_and_base_equal_own_forward_and_train_evaluation, .timeout = 600) {
    Setup s = setup("");
    char args[3000];
    // train's evaluation of the validation cache (f32 features: what the images give).
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s/again.h5 --epochs 3 --batch 4 --hidden 8 "
             "--lr 0.05 --threads 1 --quiet", s.c5, s.vc5, s.top);
    char *tr = run_ok("train", args);
    char *want = figures(tr, "Validation");

    snprintf(args, sizeof args, "--head %s --weights random --eval '%s' --format json --threads 1 --quiet", s.head,
             s.val);
    char *out = run_ok("predict", args);
    char *got = figures(out, "Evaluation");
    cr_expect_str_eq(got, want, "predict --eval on the images gives train's figures:\n%s", out);
    Forward *fw = malloc(sizeof *fw);
    own_forward(s.head, 0, s.val, fw);
    cr_assert_eq(fw->n, 10);
    expect_json_equals_forward(out, fw);
    free(got), free(out);

    // The same from the cache, without images.
    snprintf(args, sizeof args, "--head %s --cache %s --threads 1 --quiet", s.head, s.vc5);
    out = run_ok("predict", args);
    got = figures(out, "Evaluation (cached features)");
    cr_expect_str_eq(got, want, "%s", out);
    free(got), free(out), free(want), free(tr), free(fw);
    teardown(&s);
}

Test(predict, categorical_head_and_text_csv_formats, .timeout = 600) {
    Setup s = setup("--class-mode categorical");
    char args[3000];
    snprintf(args, sizeof args, "--cache %s --val-cache %s --out %s/again.h5 --epochs 3 --batch 4 --hidden 8 "
             "--lr 0.05 --threads 1 --quiet --class-mode categorical", s.c5, s.vc5, s.top);
    char *tr = run_ok("train", args);
    char *want = figures(tr, "Validation");
    snprintf(args, sizeof args, "--head %s --weights random --eval '%s' --format json --threads 1 --quiet --batch 3",
             s.head, s.val);
    char *out = run_ok("predict", args);
    char *got = figures(out, "Evaluation");
    cr_expect_str_eq(got, want, "%s", out);
    Forward *fw = malloc(sizeof *fw);
    own_forward(s.head, 0, s.val, fw);
    cr_assert_eq(fw->outputs, 2, "softmax over 2 classes");
    expect_json_equals_forward(out, fw);
    free(out), free(got);

    // text: one line per image, the top classes with probabilities; csv: a header and one row each.
    snprintf(args, sizeof args, "--head %s --weights random --top-k 1 --threads 1 --quiet '%s/squares/img 02.jpg'",
             s.head, s.val);
    out = run_ok("predict", args);
    char line[800];
    float p = fw->probs[7][1] >= fw->probs[7][0] ? fw->probs[7][1] : fw->probs[7][0];
    snprintf(line, sizeof line, "%s/squares/img 02.jpg: %s %.4f\n", s.val,
             fw->probs[7][1] >= fw->probs[7][0] ? "squares" : "circles", p);
    cr_expect_str_eq(out, line);
    free(out);
    snprintf(args, sizeof args, "--head %s --weights random --format csv --threads 1 --quiet '%s/squares/img 02.jpg'",
             s.head, s.val);
    out = run_ok("predict", args);
    cr_expect(!strncmp(out, "path,class_1,prob_1,class_2,prob_2\n", 35), "%s", out);
    cr_expect(strstr(out, "/squares/img 02.jpg,"), "%s", out);
    free(out), free(want), free(tr), free(fw);
    teardown(&s);
}

Test(predict, finetuned_model_equals_own_forward_and_finetune_report, .timeout = 900) {
    Setup s = setup("");
    char args[3000], model[700];
    snprintf(model, sizeof model, "%s/model.h5", s.top);
    snprintf(args, sizeof args,
             "--data '%s' --val-data '%s' --head %s --weights random --out %s --epochs 1 --batch 4 --lr 0.01 "
             "--threads 1 --quiet --no-augment",
             s.data, s.val, s.head, model);
    char *ft = run_ok("finetune", args);
    char *want = figures(ft, "Validation");
    snprintf(args, sizeof args, "--model %s --eval '%s' --format json --threads 1 --quiet", model, s.val);
    char *out = run_ok("predict", args);
    char *got = figures(out, "Evaluation");
    // finetune validates through the trainable walk (batched convs): the
    // same figures to the 4 decimals printed.
    cr_expect_str_eq(got, want, "predict:\n%s\nfinetune:\n%s", out, ft);
    Forward *fw = malloc(sizeof *fw);
    own_forward(model, 1, s.val, fw);
    expect_json_equals_forward(out, fw);
    free(got), free(out), free(want), free(ft), free(fw);

    // A whole model given as --head, and a head given as --model: told which to use.
    snprintf(args, sizeof args, "--head %s --weights random '%s'", model, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "give it as --model"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--model %s '%s'", s.head, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "holds only the dense head") && strstr(out, "--head"), "%s", out);
    free(out);
    teardown(&s);
}

// --- Keras's model.predict on a Keras-written model ---------------------------------

Test(predict, keras_fixture_within_tolerance) {
    char *dir = fixture_path("predict");
    char args[3000];
    snprintf(args, sizeof args,
             "--model %s/model.h5 --format json --threads 1 --quiet %s/img0.png %s/img1.png %s/img2.png %s/img3.png "
             "%s/img4.png",
             dir, dir, dir, dir, dir, dir);
    char *out = run_ok("predict", args);
    Npy want = fixture_npy("predict/probs.npy");
    cr_assert(want.ndim == 2 && want.shape[0] == 5 && want.shape[1] == 3);
    const float *w = want.data;
    PredLine lines[8];
    cr_assert_eq(pred_lines(out, lines, 8), 5, "%s", out);
    const char *names[3] = {"ant", "bee", "wasp"};
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(lines[i].n, 3);
        cr_expect(!lines[i].has_truth, "no true class without --eval");
        for (int k = 0; k < 3; k++) worst = fmax(worst, fabs(prob_of(&lines[i], names[k]) - w[i * 3 + k]));
        // The top class is Keras's argmax.
        int best = 0;
        for (int k = 1; k < 3; k++) best = w[i * 3 + k] > w[i * 3 + best] ? k : best;
        cr_expect_str_eq(lines[i].cls[0], names[best], "image %d", i);
    }
    // Stated tolerance: 1e-5 absolute on probabilities (float32 conv sums in
    // another order than XLA's; measured 2e-7).
    cr_expect(worst <= 1e-5, "max |predict - Keras| = %g", worst);
    npy_free(&want);
    free(out), free(dir);
}

// --- unreadable inputs, refusals ------------------------------------------------------

Test(predict, corrupt_file_is_skipped_with_exit_code_3, .timeout = 600) {
    Setup s = setup("");
    char p[800], args[3000];
    snprintf(p, sizeof p, "%s/squares/broken.jpg", s.val);
    write_file(p, "\xff\xd8\xff\xe0 not really a jpeg", 22);
    snprintf(args, sizeof args, "--head %s --weights random --eval '%s' --threads 1 --quiet --report %s/rep", s.head,
             s.val, s.top);
    char *out;
    int rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 3, "exit 3 when a file was skipped: %d\n%s", rc, out);
    cr_expect(strstr(out, "warning: skipped") && strstr(out, "broken.jpg"), "%s", out);
    cr_expect(strstr(out, "(10/10)") || strstr(out, "/10)"), "the other 10 images are evaluated:\n%s", out);
    cr_expect(strstr(out, "1 of 11 files could not be read"), "%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/rep_report.txt", s.top);
    struct stat st;
    cr_expect(stat(p, &st) == 0, "the report is still written");

    // Plain inputs: a missing file among them.
    snprintf(args, sizeof args, "--head %s --weights random --threads 1 --quiet '%s/circles/img 00.jpg' %s/nope.png",
             s.head, s.val, s.top);
    rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 3, "%d\n%s", rc, out);
    cr_expect(strstr(out, "img 00.jpg: "), "the readable one is classified:\n%s", out);
    cr_expect(strstr(out, "nope.png"), "%s", out);
    free(out);

    // A folder of 12 files that are not images, each skipped in a moment:
    // the bar's last line gives no rate from them (no "img/s").
    snprintf(p, sizeof p, "%s/junk", s.top);
    mkdir(p, 0755);
    for (int i = 0; i < 12; i++) {
        snprintf(p, sizeof p, "%s/junk/%02d.jpg", s.top, i);
        write_file(p, "not an image\n", 13);
    }
    snprintf(args, sizeof args, "--head %s --weights random --threads 1 %s/junk", s.head, s.top);
    run_tool("predict", args, &out);
    cr_expect(strstr(out, "12/12 [") && !strstr(out, "img/s"), "%s", out);
    free(out);
    teardown(&s);
}

Test(predict, wrong_files_and_folders_refused_with_names, .timeout = 600) {
    Setup s = setup("");
    char args[3000], p[800], *out;

    // A text file as the model.
    snprintf(p, sizeof p, "%s/notes.txt", s.top);
    write_file(p, "not a model\n", 12);
    snprintf(args, sizeof args, "--model %s '%s'", p, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "predict: error: --model ") && strstr(out, "notes.txt") && strstr(out, "finetune"), "%s",
              out);
    free(out);

    // A Keras weights file of (part of) the conv base alone: no classifier in it.
    snprintf(p, sizeof p, "%s/base.h5", s.top);
    float *k = calloc(3 * 3 * 3 * 64, sizeof(float)), *b = calloc(64, sizeof(float));
    H5Layer l = {"block1_conv1", 2, {4, 1}, {{3, 3, 3, 64}, {64}}, {k, b}, NULL};
    cr_assert_eq(h5_write_layers(p, &l, 1, NULL, 0), 0, "%s", err_msg());
    free(k), free(b);
    snprintf(args, sizeof args, "--model %s '%s'", p, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "base.h5") && strstr(out, "not a vggft model file") &&
                  strstr(out, "conv base has no classifier"),
              "%s", out);
    free(out);

    // A head trained on other base weights than --weights: both named.
    snprintf(args, sizeof args, "--head %s --weights random --seed 2 '%s'", s.head, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "random:seed=2") && strstr(out, "random:seed=1") && strstr(out, "head.h5"), "%s", out);
    free(out);

    // A cache of another layer (or size): refused naming both.
    char c4[700];
    snprintf(c4, sizeof c4, "%s/c4", s.top);
    snprintf(args, sizeof args, "--data '%s' --cache %s %s --layer block4_pool", s.val, c4, COMMON);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--head %s --cache %s", s.head, c4);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "block4_pool") && strstr(out, "block5_pool") && strstr(out, "c4"), "%s", out);
    free(out);

    // An --eval folder with a class the model does not know.
    snprintf(p, sizeof p, "%s/zebras", s.val);
    cr_assert_eq(make_dirs(p), 0);
    snprintf(p, sizeof p, "%s/zebras/z.jpg", s.val);
    uint8_t rgb[40 * 40 * 3];
    draw_shape(rgb, 40, 40, 0, 5);
    write_jpeg(p, rgb, 40, 40, 90);
    snprintf(args, sizeof args, "--head %s --weights random --eval '%s' --quiet", s.head, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "class folder 'zebras' is not one of the model's classes [circles, squares]"), "%s", out);
    free(out);

    // Usage errors: exit 2.
    snprintf(args, sizeof args, "--head %s --model %s x.jpg", s.head, s.head);
    cr_expect_eq(run_tool("predict", args, &out), 2, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--head %s --cache %s --eval '%s'", s.head, s.vc5, s.val);
    cr_expect_eq(run_tool("predict", args, &out), 2, "%s", out);
    free(out);
    teardown(&s);
}

// --- the report -------------------------------------------------------------------


static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

Test(predict, report_files_json_and_contact_sheet, .timeout = 600) {
    Setup s = setup("--epochs 1");  // barely trained: mistakes to show
    char args[3000], prefix[700], p[800];
    snprintf(prefix, sizeof prefix, "%s/out/val", s.top);
    snprintf(args, sizeof args,
             "--head %s --weights random --eval '%s' --format json --threads 1 --quiet --report %s --max-errors 2",
             s.head, s.val, prefix);
    char *out = run_ok("predict", args);
    PredLine *lines = calloc(16, sizeof(PredLine));
    int n = pred_lines(out, lines, 16), wrong = 0;
    cr_assert_eq(n, 10);
    for (int i = 0; i < n; i++) wrong += strcmp(lines[i].cls[0], lines[i].truth) != 0;
    snprintf(p, sizeof p, "%s_report.json", prefix);
    char *rep = read_file(p, NULL);
    const char *q = rep;
    cr_expect(jvalue(&q), "the report parses as JSON:\n%s", rep);
    ws(&q);
    cr_expect_eq(*q, '\0');
    const char *keys[] = {"\"loss\": ", "\"accuracy\": ", "\"classes\": [\"circles\", \"squares\"]", "\"confusion\": [[",
                          "\"per_class\": [", "\"f1\": ", "\"macro\": ", "\"misclassified\": [", "\"skipped\": []",
                          "\"model\": \""};
    for (int i = 0; i < 10; i++) cr_expect(strstr(rep, keys[i]), "%s missing:\n%s", keys[i], rep);
    // It names what it evaluated: the head, on its base.
    cr_expect(strstr(rep, "head.h5, a head on vgg16 32x32 "), "%s", rep);
    cr_expect_eq(count(rep, "\"predicted\": "), wrong, "every misclassified file is listed:\n%s", rep);
    cr_expect(wrong > 0, "the barely trained head makes mistakes (else this test checks nothing)");
    // The text report went to stderr (stdout holds only JSON lines).
    cr_expect(strstr(out, "Evaluation: loss"), "%s", out);
    free(rep);

    snprintf(p, sizeof p, "%s_errors.svg", prefix);
    char *svg = read_file(p, NULL);
    int shown = wrong < 2 ? wrong : 2;
    cr_expect_eq(count(svg, "<image"), shown, "at most --max-errors thumbnails:\n%.2000s", svg);
    cr_expect(strstr(svg, "true: "), "captions name the true class");
    // Each picture names its file: the name in the caption, the path on hover.
    cr_expect_eq(count(svg, "<g><title>"), shown, "a path tooltip per thumbnail:\n%.2000s", svg);
    cr_expect_eq(count(svg, ".jpg</text>") + count(svg, ".png</text>"), shown, "a file name per caption:\n%.3000s",
                 svg);
    // The most confident mistakes, first to last: the captions' "pred: CLASS P"
    // are the largest wrong top-1 probabilities of the JSON lines, in order.
    double wp[16];
    int nw = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(lines[i].cls[0], lines[i].truth)) wp[nw++] = lines[i].prob[0];
    for (int i = 0; i < nw; i++)  // descending
        for (int j = i + 1; j < nw; j++)
            if (wp[j] > wp[i]) {
                double t = wp[i];
                wp[i] = wp[j], wp[j] = t;
            }
    const char *c = svg;
    for (int i = 0; i < shown; i++) {
        c = strstr(c, "pred: ");
        cr_assert(c, "caption %d missing", i);
        const char *sp = strchr(c + 6, ' ');
        char want[16], got[16] = "";
        snprintf(want, sizeof want, "%.3f", wp[i]);
        sscanf(sp + 1, "%15[0-9.]", got);
        cr_expect_str_eq(got, want, "thumbnail %d is not the mistake of confidence rank %d", i, i + 1);
        c = sp;
    }
    free(svg);
    const char *texts[] = {"true: "};
    if (shown) assert_svg_readable(p, texts, 1);
    snprintf(p, sizeof p, "%s_confusion.svg", prefix);
    svg = read_file(p, NULL);
    cr_expect(strstr(svg, "circles") && strstr(svg, "squares"));
    free(svg);
    free(lines), free(out);
    teardown(&s);
}

// --- conventions shared by every tool (issue 15) -----------------------------------

Test(predict, out_of_range_values_are_usage_errors) {
    // Refused when parsed (exit 2), before the model is even opened: the
    // model file does not exist, which would be exit 1.
    const char *bad[][2] = {{"--top-k 0", "--top-k must be >= 1, got 0"},
                            {"--batch 0", "--batch must be >= 1, got 0"},
                            {"--threads -1", "--threads must be >= 0, got -1"},
                            {"--max-errors -1", "--max-errors must be >= 0, got -1"},
                            {"--memory-budget -5", "--memory-budget must be >= 0, got -5"}};
    for (int i = 0; i < 5; i++) {
        char args[300], *out;
        snprintf(args, sizeof args, "--model /nonexistent/model.h5 %s x.jpg", bad[i][0]);
        int rc = run_tool("predict", args, &out);
        cr_expect_eq(rc, 2, "%s: exit %d\n%s", bad[i][0], rc, out);
        cr_expect(strstr(out, "predict: error: ") && strstr(out, bad[i][1]), "%s:\n%s", bad[i][0], out);
        free(out);
    }
    // The same values in range: the run goes on and fails on the model file,
    // named plainly (exit 1).
    char *out;
    int rc = run_tool("predict", "--model /nonexistent/model.h5 --top-k 1 --batch 1 --threads 0 x.jpg", &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "predict: error: --model /nonexistent/model.h5: no such file"), "%s", out);
    free(out);
}

// Lines containing needle all start with an ISO 8601 timestamp (stderr is a
// pipe here, as in a batch job's log); 0 when one does not or none is found.
static int stamped_lines_with(const char *text, const char *needle) {
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2} ", REG_EXTENDED | REG_NOSUB), 0);
    int found = 0, ok = 1;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *line = strndup(p, len);
        if (strstr(line, needle)) found = 1, ok &= regexec(&re, line, 0, NULL, 0) == 0;
        free(line);
        p += len + (e ? 1 : 0);
    }
    regfree(&re);
    return found && ok;
}

Test(predict, quiet_hides_progress_never_warnings) {
    // A folder with one image, one broken image and a file Keras does not list.
    char *fix = fixture_path("predict"), *top = make_temp_dir("predict_quiet");
    char p[800], args[3000], *out;
    snprintf(p, sizeof p, "%s/img0.png", fix);
    char *png = read_file(p, NULL);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/img0.png", top);
    write_file(p, png, (size_t)st.st_size);
    free(png);
    snprintf(p, sizeof p, "%s/broken.png", top);
    write_file(p, "\x89PNG\r\n\x1a\n truncated", 19);
    snprintf(p, sizeof p, "%s/notes.txt", top);
    write_file(p, "not an image\n", 13);

    for (int quiet = 0; quiet < 2; quiet++) {
        snprintf(args, sizeof args, "--model %s/model.h5 --threads 1 %s %s", fix, quiet ? "--quiet" : "", top);
        int rc = run_tool("predict", args, &out);
        cr_expect_eq(rc, 3, "exit 3 (EXIT_PARTIAL) when a file was skipped: %d\n%s", rc, out);
        cr_expect(strstr(out, "img0.png: "), "the readable image is classified:\n%s", out);
        // Warnings and notes print with or without --quiet, stamped in a log.
        cr_expect(stamped_lines_with(out, "warning: skipped ") && strstr(out, "broken.png"),
                  "quiet=%d: the skipped file's warning, with a timestamp:\n%s", quiet, out);
        cr_expect(stamped_lines_with(out, "note: 1 file that Keras does not list"), "quiet=%d:\n%s", quiet, out);
        cr_expect(stamped_lines_with(out, "notes.txt: unsupported file type (.txt)"), "the ignored file is named:\n%s",
                  out);
        cr_expect(stamped_lines_with(out, "1 of 2 files could not be read"), "quiet=%d:\n%s", quiet, out);
        // --quiet hides the progress bar (its final line "2/2 [===...]").
        if (quiet) cr_expect(!strstr(out, "2/2 ["), "--quiet shows no progress:\n%s", out);
        else cr_expect(strstr(out, "2/2 ["), "the progress bar's last line:\n%s", out);
        free(out);
    }
    remove_tree(top);
    free(top), free(fix);
}

// --- the breaker's findings (issue 11): output errors, odd names, odd files -------

// A shell command line with the tools' folder as $B; captures what the
// command line sends to the pipe (stdout and stderr, as the caller
// redirects them). Returns the exit status.
static int run_sh(const char *cmd, char **output) {
    const char *bin = getenv("VGGFT_BIN");
    if (!bin) bin = TEST_BUILD;
    char full[4000];
    snprintf(full, sizeof full, "B='%s'; %s", bin, cmd);
    return run_command(full, output);
}

// A folder with copies of the fixture's img0.png under the given names.
static char *folder_of_copies(const char *tag, const char *const *names, int n) {
    char *fix = fixture_path("predict"), *top = make_temp_dir(tag);
    char p[800];
    snprintf(p, sizeof p, "%s/img0.png", fix);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    char *png = read_file(p, NULL);
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", top, names[i]);
        write_file(p, png, (size_t)st.st_size);
    }
    free(png), free(fix);
    return top;
}

Test(predict_fix, failed_writes_to_stdout_exit_1) {
    const char *names[] = {"a.png", "b.png"};
    char *top = folder_of_copies("predict_full", names, 2), *fix = fixture_path("predict"), cmd[3000], *out;
    // A full disk: every line lost, so exit 1 naming stdout.
    snprintf(cmd, sizeof cmd, "$B/predict --quiet --threads 1 --model %s/model.h5 %s 2>&1 >/dev/full", fix, top);
    int rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 1, "exit 1 when stdout cannot be written: %d\n%s", rc, out);
    cr_expect(strstr(out, "writing the predictions to stdout: No space left on device"), "%s", out);
    free(out);
    // stdout closed: refused at once (the temporary file must not take fd 1).
    snprintf(cmd, sizeof cmd, "$B/predict --quiet --threads 1 --model %s/model.h5 %s 2>&1 >&-", fix, top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 1, "%d\n%s", rc, out);
    cr_expect(strstr(out, "stdout is closed"), "%s", out);
    free(out);
    // The same across the tool's restarts (blas_setup re-executes it to pick
    // OpenBLAS's kernel on AVX-512 CPUs; under an address-space limit
    // blas_preinit and blas_setup do, whatever the CPU): the new image must
    // see stdout closed too, not the /dev/null put in its place. (ASan
    // reserves terabytes of address space: no ulimit -v fits it.)
#ifndef __SANITIZE_ADDRESS__
    snprintf(cmd, sizeof cmd, "ulimit -v 2097152; $B/predict --quiet --threads 1 --model %s/model.h5 %s 2>&1 >&-", fix,
             top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 1, "%d\n%s", rc, out);
    cr_expect(strstr(out, "stdout is closed"), "%s", out);
    free(out);
#endif
    remove_tree(top);
    free(top), free(fix);
}

// --report's three files replace the old three together: a write that
// fails part way (here the contact sheet, past a file size limit) leaves
// the old set whole, not a new report beside an old contact sheet (the
// breaker's finding), and no temporary file.
Test(predict_fix, report_files_replaced_together_or_not_at_all) {
    const char *names[] = {"ant/a.png", "bee/b.png"};  // two of the fixture model's classes
    char *top = make_temp_dir("predict_group"), *fix = fixture_path("predict"), cmd[4000], p[900], *out;
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%.3s", top, names[i]);
        make_dirs(p);
    }
    char *src = folder_of_copies("predict_group_src", (const char *const[]){"img.png"}, 1);
    snprintf(p, sizeof p, "%s/img.png", src);
    size_t n;
    char *png = read_file(p, &n);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", top, names[i]);
        write_file(p, png, n);
    }
    free(png);
    const char *const files[3] = {"rep_report.txt", "rep_confusion.svg", "rep_errors.svg"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", top, files[k]);
        write_file(p, "OLD", 3);
    }
    // ulimit -f counts KiB: the report and the matrix fit, the sheet of thumbnails does not.
    snprintf(cmd, sizeof cmd,
             "ulimit -f 12; $B/predict --quiet --threads 1 --model %s/model.h5 --eval %s --report %s/rep 2>&1 >/dev/null",
             fix, top, top);
    int rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 1, "%d\n%s", rc, out);
    cr_expect(strstr(out, "rep_errors.svg") && strstr(out, "File too large"), "%s", out);
    free(out);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", top, files[k]);
        char *c = read_file(p, &n);
        cr_expect(c && n == 3 && !memcmp(c, "OLD", 3), "%s was replaced although the set was not written", files[k]);
        free(c);
    }
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -c '\\.tmp\\.'", top);
    run_sh(cmd, &out);
    cr_expect_eq(atoi(out), 0, "temporary files left: %s", out);
    free(out);
    // With room, the three are replaced.
    snprintf(cmd, sizeof cmd, "$B/predict --quiet --threads 1 --model %s/model.h5 --eval %s --report %s/rep >/dev/null 2>&1",
             fix, top, top);
    cr_expect_eq(run_sh(cmd, &out), 0);
    free(out);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", top, files[k]);
        char *c = read_file(p, &n);
        cr_expect(c && n > 3, "%s was not written", files[k]);
        free(c);
    }
    remove_tree(top), remove_tree(src);
    free(top), free(src), free(fix);
}

Test(predict_fix, json_lines_escape_invalid_utf8_and_control_bytes) {
    // 0xff is never UTF-8; 0x01 a control character; "é" valid UTF-8 stays.
    const char *names[] = {"a\xff.png", "b\x01.png", "c\xc3\xa9.png"};
    char *top = folder_of_copies("predict_utf8", names, 3), *fix = fixture_path("predict"), cmd[3000], *out;
    snprintf(cmd, sizeof cmd, "$B/predict --quiet --threads 1 --format json --model %s/model.h5 %s 2>/dev/null", fix,
             top);
    int rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    cr_expect(strstr(out, "a\\u00ff.png"), "an invalid byte as \\u00XX (its Latin-1 reading):\n%s", out);
    cr_expect(strstr(out, "b\\u0001.png"), "a control byte \\u-escaped:\n%s", out);
    cr_expect(strstr(out, "c\xc3\xa9.png"), "valid UTF-8 as it is:\n%s", out);
    cr_expect(!strchr(out, '\xff') && !strchr(out, '\x01'), "no raw invalid or control byte:\n%s", out);
    int lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')); p++) lines++;
    cr_expect_eq(lines, 3, "one line per image:\n%s", out);
    free(out);
    remove_tree(top);
    free(top), free(fix);
}

Test(predict_fix, temporary_file_in_tmpdir_named_when_it_fails) {
    // --eval keeps the misclassified files in a temporary file: in $TMPDIR.
    char *top = make_temp_dir("predict_tmpdir"), p[800];
    snprintf(p, sizeof p, "%s/ant", top), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/bee", top), mkdir(p, 0755);
    char *fix = fixture_path("predict"), cmd[3000], *out;
    snprintf(cmd, sizeof cmd, "cp %s/img0.png %s/ant/a.png && cp %s/img1.png %s/bee/b.png", fix, top, fix, top);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "TMPDIR=%s/nowhere $B/predict --quiet --threads 1 --model %s/model.h5 --eval %s 2>&1",
             top, fix, top);
    int rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 1, "%d\n%s", rc, out);
    cr_expect(strstr(out, "temporary file in ") && strstr(out, "/nowhere (TMPDIR)"), "names the folder:\n%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "TMPDIR=%s $B/predict --quiet --threads 1 --model %s/model.h5 --eval %s 2>&1", top, fix,
             top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    free(out);
    remove_tree(top);
    free(top), free(fix);
}

Test(predict_fix, fifo_model_head_weights_refused_not_blocking, .timeout = 120) {
    char *top = make_temp_dir("predict_fifo"), *fix = fixture_path("predict"), p[800], args[3000], *out;
    snprintf(p, sizeof p, "%s/fifo.h5", top);
    cr_assert_eq(mkfifo(p, 0644), 0);
    // The shared opener (weights_h5.c) refuses it before any open.
    ModelMeta meta;
    cr_expect(model_meta_read(p, &meta) < 0);
    cr_expect(strstr(err_msg(), "not a regular file"), "%s", err_msg());
    const char *how[] = {"--model %s %s/img0.png", "--head %s %s/img0.png"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, how[i], p, fix);
        int rc = run_tool_timeout("predict", args, 30, &out);
        cr_expect_eq(rc, 1, "%s: exit %d (137: it blocked)\n%s", args, rc, out);
        cr_expect(strstr(out, "not a regular file"), "%s\n%s", args, out);
        free(out);
    }
    remove_tree(top);
    free(top), free(fix);
}

Test(predict_fix, pixel_budget_is_extracts) {
    char *top = make_temp_dir("predict_pixels"), p[800], args[3000], *out;
    uint8_t *rgb = calloc(200 * 200 * 3, 1);
    draw_shape(rgb, 200, 200, 0, 1);
    snprintf(p, sizeof p, "%s/big.jpg", top);
    write_jpeg(p, rgb, 200, 200, 90);
    free(rgb);
    char *fix = fixture_path("predict");
    snprintf(args, sizeof args, "--quiet --threads 1 --model %s/model.h5 --max-pixels 10000 %s", fix, p);
    int rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    cr_expect(strstr(out, "big.jpg is 200x200, over the pixel budget of 10000: decoded at a reduced scale"), "%s",
              out);
    free(out);
    snprintf(args, sizeof args, "--quiet --threads 1 --model %s/model.h5 %s", fix, p);
    rc = run_tool("predict", args, &out);
    cr_expect(rc == 0 && !strstr(out, "pixel budget"), "within the default budget (50,000,000): %d\n%s", rc, out);
    free(out);
    snprintf(args, sizeof args, "--model %s/model.h5 --max-pixels 0 %s", fix, p);
    cr_expect_eq(run_tool("predict", args, NULL), 2, "--max-pixels must be >= 1, as extract's");
    // Without --max-pixels, the budget the head records (its features'
    // extract was given 10000), not predict's own default (a breaker: the
    // report's figures differed from train's, no word said).
    char *shapes = make_shape_folder("predict_budget", 2, 3);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s/c' %s --max-pixels 10000", shapes, shapes, COMMON);
    free(run_ok("extract", args));
    snprintf(args, sizeof args, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4 --threads 1 --quiet", shapes,
             shapes);
    free(run_ok("train", args));
    snprintf(args, sizeof args, "--threads 1 --head '%s/h.h5' %s", shapes, p);
    rc = run_tool("predict", args, &out);
    cr_expect(rc == 0 && strstr(out, "big.jpg is 200x200, over the pixel budget of 10000"), "%d\n%s", rc, out);
    free(out);
    remove_tree(shapes);
    free(shapes);
    remove_tree(top);
    free(top), free(fix);
}

Test(predict_fix, all_inputs_unreadable_exit_1) {
    char *fix = fixture_path("predict"), args[3000], *out;
    snprintf(args, sizeof args, "--quiet --threads 1 --model %s/model.h5 /nonexistent/x.jpg", fix);
    int rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 1, "%d\n%s", rc, out);
    cr_expect(strstr(out, "no image could be read"), "%s", out);
    free(out), free(fix);
}

Test(predict_fix, double_dash_empty_report_and_notes) {
    const char *names[] = {"--odd.png"};
    char *top = folder_of_copies("predict_dash", names, 1), *fix = fixture_path("predict"), cmd[3000], *out;
    snprintf(cmd, sizeof cmd, "cd %s && $B/predict --quiet --threads 1 --model %s/model.h5 -- --odd.png 2>&1", top,
             fix);
    int rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 0, "after --, --odd.png is a file: %d\n%s", rc, out);
    cr_expect(strstr(out, "--odd.png: "), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "$B/predict --model %s/model.h5 --eval %s --report '' 2>&1", fix, top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 2, "an empty --report is a usage error: %d\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "$B/predict --model %s/model.h5 --eval %s --report %s/ 2>&1", fix, top, top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 2, "a --report folder is a usage error: %d\n%s", rc, out);
    cr_expect(strstr(out, "not a folder") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "$B/predict --quiet --threads 1 --model %s/model.h5 --seed 3 --max-errors 2 %s 2>&1",
             fix, top);
    rc = run_sh(cmd, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    cr_expect(strstr(out, "note: --seed only goes with") && strstr(out, "note: --max-errors only changes"), "%s",
              out);
    free(out);
    remove_tree(top);
    free(top), free(fix);
}

Test(predict_fix, cache_report_says_what_extract_skipped, .timeout = 600) {
    Setup s = setup("");
    char p[800], args[3000], *out;
    snprintf(p, sizeof p, "%s/squares/broken.jpg", s.val);
    write_file(p, "\xff\xd8\xff\xe0 not really a jpeg", 22);
    char cache[700];
    snprintf(cache, sizeof cache, "%s/vcb", s.top);
    snprintf(args, sizeof args, "--data '%s' --cache %s %s", s.val, cache, COMMON);
    int rc = run_tool("extract", args, &out);
    cr_assert(rc == 0 || rc == 3, "extract: %d\n%s", rc, out);
    free(out);
    snprintf(args, sizeof args, "--head %s --cache %s --threads 1 --quiet --format json --report %s/rep", s.head,
             cache, s.top);
    rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    cr_expect(strstr(out, "Note: extract skipped 1 file that could not be read (listed in ") &&
                  strstr(out, "vcb/skipped.tsv"),
              "the report on screen says it:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/rep_report.json", s.top);
    char *rep = read_file(p, NULL);
    cr_expect(strstr(rep, "\"note\": \"extract skipped 1 file"), "and the report file:\n%s", rep);
    const char *q = rep;
    cr_expect(jvalue(&q), "the report is JSON");
    free(rep);
    teardown(&s);
}

// Scales every float dataset of an HDF5 file by f (finite weights whose
// products overflow: the model's outputs become NaN or infinite).
static herr_t scale_one(hid_t loc, const char *name, const H5O_info_t *info, void *op) {
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    if (H5Tget_class(t) == H5T_FLOAT) {
        hssize_t n = H5Sget_simple_extent_npoints(sp);
        float *v = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        for (hssize_t i = 0; i < n; i++) v[i] *= *(float *)op;
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
    }
    H5Sclose(sp), H5Tclose(t), H5Dclose(d);
    return 0;
}

Test(predict_fix, non_finite_outputs_warned_once_and_null_in_json, .timeout = 600) {
    Setup s = setup("");
    float f = 1e30f;
    hid_t h = H5Fopen(s.head, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(h >= 0);
    H5Ovisit(h, H5_INDEX_NAME, H5_ITER_NATIVE, scale_one, &f);
    H5Fclose(h);
    char args[3000], *out;
    snprintf(args, sizeof args, "--head %s --cache %s --threads 1 --quiet --format json --report %s/nan", s.head,
             s.vc5, s.top);
    int rc = run_tool("predict", args, &out);
    cr_expect_eq(rc, 0, "%d\n%s", rc, out);
    // (Here the outputs saturate at 0 and 1, so the loss is what is not finite.)
    const char *w = strstr(out, "warning: the model produced a non-finite");
    cr_expect(w, "a warning:\n%s", out);
    if (w) cr_expect(!strstr(w + 1, "warning: the model produced"), "once:\n%s", out);
    cr_expect(!strstr(out, "nan,") && !strstr(out, "nan}") && !strstr(out, ": -nan"), "no nan in JSON:\n%s", out);
    free(out);
    char p[800];
    snprintf(p, sizeof p, "%s/nan_report.json", s.top);
    char *rep = read_file(p, NULL);
    const char *q = rep;
    cr_expect(jvalue(&q) && !strstr(rep, "nan"), "the report is JSON:\n%s", rep);
    free(rep);
    teardown(&s);
}

// A head trained on features of JPEGs decoded at a reduced scale (extract
// --reduced-decode): predict decodes images as those were, so --eval gives
// train's figures; a cache decoded otherwise is refused, both named.
Test(predict, head_of_reduced_decode_features_decodes_images_alike, .timeout = 600) {
    char *top = make_temp_dir("predict_reduced");
    uint8_t *rgb = malloc(96 * 96 * 3);
    char p[1024], args[4000];
    const char *sets[2] = {"train", "val"}, *cls[2] = {"dark", "light"};
    for (int set = 0; set < 2; set++)
        for (int k = 0; k < 2; k++) {
            snprintf(p, sizeof p, "%s/%s/%s", top, sets[set], cls[k]);
            cr_assert_eq(make_dirs(p), 0);
            for (int i = 0; i < 4; i++) {
                // Fine stripes: a 1/2-scale decode averages them, a full decode keeps them.
                for (int y = 0; y < 96; y++)
                    for (int x = 0; x < 96; x++)
                        for (int c = 0; c < 3; c++)
                            rgb[(y * 96 + x) * 3 + c] =
                                (uint8_t)(k * 90 + ((x + y * (i + 1) + set) % 3) * 40 + c * 20);
                snprintf(p, sizeof p, "%s/%s/%s/%d.jpg", top, sets[set], cls[k], i);
                write_jpeg(p, rgb, 96, 96, 95);
            }
        }
    free(rgb);
    for (int set = 0; set < 2; set++) {
        snprintf(args, sizeof args, "--data %s/%s --cache %s/r%s --reduced-decode %s", top, sets[set], top, sets[set],
                 COMMON);
        free(run_ok("extract", args));
    }
    snprintf(args, sizeof args, "--data %s/val --cache %s/fval %s", top, top, COMMON);
    free(run_ok("extract", args));
    snprintf(args, sizeof args,
             "--cache %s/rtrain --val-cache %s/rval --out %s/head.h5 --epochs 2 --batch 4 --hidden 8 --threads 1 "
             "--quiet", top, top, top);
    char *tr = run_ok("train", args);
    char *want = figures(tr, "Validation");
    snprintf(args, sizeof args, "--head %s/head.h5 --weights random --eval %s/val --threads 1 --quiet", top, top);
    char *out = run_ok("predict", args);
    char *got = figures(out, "Evaluation");
    cr_expect_str_eq(got, want, "predict --eval decodes as the head's features were:\n%s", out);
    free(got), free(out), free(want), free(tr);
    // --weights, as the --head examples give it, with --cache: a note, not an error.
    snprintf(args, sizeof args, "--head %s/head.h5 --weights random --cache %s/rval --threads 1 --quiet", top, top);
    out = run_ok("predict", args);
    cr_expect(strstr(out, "note: --weights random is not used with --cache"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--head %s/head.h5 --cache %s/fval --threads 1 --quiet", top, top);
    cr_expect_eq(run_tool("predict", args, &out), 1);
    cr_expect(strstr(out, "the cache's decoding is full, pixel budget 50000000; the head needs reduced, pixel budget "
                          "50000000"),
              "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// A file name with a newline or a tab stays on its one text line (written
// \n, \t); the report's list of mistakes too.
Test(predict, text_lines_escape_control_characters_in_names, .timeout = 600) {
    Setup s = setup("");
    char from[1024], to[1024], args[3000], *out;
    snprintf(from, sizeof from, "%s/squares/img 00.jpg", s.val);
    snprintf(to, sizeof to, "%s/squares/a\nb\tc.jpg", s.val);
    cr_assert_eq(rename(from, to), 0, "%s", from);
    snprintf(args, sizeof args, "--head %s --weights random --threads 1 --quiet '%s/squares'", s.head, s.val);
    cr_assert_eq(run_tool("predict", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "/squares/a\\nb\\tc.") != NULL, "%s", out);
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    cr_expect_eq(lines, 5, "one line per image:\n%s", out);
    free(out);
    teardown(&s);
}
