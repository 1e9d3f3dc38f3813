#include "fit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "error.h"
#include "fileutil.h"
#include "forward.h"
#include "metrics.h"
#include "plot.h"
#include "rng.h"
#include "utf8.h"

void running_add(Running *r, float batch_loss, int batch_n, const int32_t *pred, const int32_t *labels) {
    r->loss_sum += (double)batch_loss * batch_n;
    r->n += batch_n;
    for (int i = 0; i < batch_n; i++) r->correct += pred[i] == labels[i];
}

float running_loss(const Running *r) { return r->n ? (float)(r->loss_sum / r->n) : NAN; }
float running_acc(const Running *r) { return r->n ? (float)(r->correct / r->n) : NAN; }

// The layers whose weights (and slots) the state covers.
static int covered(const FitState *s, int i) {
    const Layer *l = &s->m->layers[i];
    return l->n_kernel > 0 && l->trainable;
}

int fit_init(FitState *s, const Model *m, int from, const Optimizer *opt, int max_epochs) {
    memset(s, 0, sizeof *s);
    s->m = m, s->from = from, s->opt = *opt, s->max_epochs = max_epochs;
    s->best_val = INFINITY;
    s->best_epoch = -1;
    s->before_val_loss = s->before_val_acc = NAN;
    size_t E = (size_t)(max_epochs > 0 ? max_epochs : 1);
    s->loss = malloc(sizeof(float) * E), s->acc = malloc(sizeof(float) * E);
    s->val_loss = malloc(sizeof(float) * E), s->val_acc = malloc(sizeof(float) * E);
    s->secs = malloc(sizeof(float) * E);
    s->slots = calloc((size_t)m->n_layers * 4, sizeof(float *));
    if (!s->loss || !s->acc || !s->val_loss || !s->val_acc || !s->secs || !s->slots) goto oom;
    int n_slots = optim_slots(opt);
    for (int i = from; i < m->n_layers; i++) {
        if (!covered(s, i)) continue;
        const Layer *l = &m->layers[i];
        for (int t = 0; t < 2; t++)
            for (int k = 0; k < n_slots; k++) {
                float *p = model_floats_alloc((size_t)(t ? l->n_bias : l->n_kernel));
                if (!p) goto oom;
                HEAD_SLOTS(s->slots, i, t)[k] = p;
            }
    }
    return 0;
oom:
    fit_free(s);
    return err_set("out of memory for the optimizer state");
}

void fit_free(FitState *s) {
    if (s->slots && s->m)
        for (int i = 0; i < s->m->n_layers * 4; i++) free(s->slots[i]);
    free(s->slots);
    if (s->best_w && s->m)
        for (int i = 0; i < s->m->n_layers * 2; i++) free(s->best_w[i]);
    free(s->best_w);
    free(s->loss), free(s->acc), free(s->val_loss), free(s->val_acc), free(s->secs);
    free(s->history_path), free(s->history_svg), free(s->history_title);
    memset(s, 0, sizeof *s);
}

void fit_end_epoch(FitState *s, float loss, float acc, float val_loss, float val_acc, float secs) {
    int e = s->epochs_done++;
    s->loss[e] = loss, s->acc[e] = acc, s->val_loss[e] = val_loss, s->val_acc[e] = val_acc, s->secs[e] = secs;
    s->steps_in_epoch = 0;
    memset(&s->run, 0, sizeof s->run);
    s->epoch_secs = 0;
}

void fit_set_monitor(FitState *s, int acc, int restore_best) {
    s->monitor_acc = acc, s->restore_best = restore_best;
    s->best_val = acc ? -INFINITY : INFINITY;
}

// best_w's buffers (once).
static int alloc_best(FitState *s) {
    const Model *m = s->m;
    if (!s->best_w && !(s->best_w = calloc((size_t)m->n_layers * 2, sizeof(float *))))
        return err_set("out of memory for the best epoch's weights");
    for (int i = s->from; i < m->n_layers; i++) {
        if (!covered(s, i)) continue;
        const Layer *l = &m->layers[i];
        for (int t = 0; t < 2; t++) {
            float **b = &s->best_w[i * 2 + t];
            if (!*b && !(*b = model_floats_alloc((size_t)(t ? l->n_bias : l->n_kernel))))
                return err_set("out of memory for the best epoch's weights");
        }
    }
    return 0;
}

// The trainable weights into best_w (to_model 0) or back (1).
static void copy_best(FitState *s, int to_model) {
    for (int i = s->from; i < s->m->n_layers; i++) {
        if (!covered(s, i)) continue;
        Layer *l = &s->m->layers[i];
        for (int t = 0; t < 2; t++) {
            float *w = t ? l->bias : l->kernel, *b = s->best_w[i * 2 + t];
            size_t bytes = (size_t)(t ? l->n_bias : l->n_kernel) * sizeof(float);
            if (to_model) memcpy(w, b, bytes);
            else memcpy(b, w, bytes);
        }
    }
}

int fit_early_stop(FitState *s, int patience) {
    if (s->epochs_done == 0) return 0;
    const int e = s->epochs_done - 1;
    float v = s->monitor_acc ? s->val_acc[e] : s->val_loss[e];
    // Keras's _is_improvement: the first monitored epoch always is (best is
    // None, a NaN too), then monitor_op, np.less for a loss, np.greater for
    // an accuracy (nothing improves on a NaN best, nor is a NaN better).
    const int first = s->best_epoch < 0 && isinf(s->best_val);  // (a checkpoint's best_val is kept)
    if (first || (s->monitor_acc ? v > s->best_val : v < s->best_val)) {
        s->best_val = v, s->best_epoch = e, s->wait = 0;
        if (s->restore_best) {  // Keras's best_weights = model.get_weights()
            if (alloc_best(s) < 0) return -1;
            copy_best(s, 0);
        }
        return s->stopped;
    }
    if (patience > 0 && ++s->wait >= patience) s->stopped = 1;
    return s->stopped;
}

int fit_epoch_is_best(const FitState *s) { return s->epochs_done > 0 && s->best_epoch == s->epochs_done - 1; }

int fit_restore_best(FitState *s) {
    if (!s->restore_best || s->best_epoch < 0) return 0;  // nothing watched, or no validated epoch
    if (!s->best_w)
        return err_set("--restore-best-weights: the best epoch's weights were not kept (a checkpoint of an older "
                       "vggft); rerun without --resume");
    copy_best(s, 1);
    printf("Restoring model weights from the end of the best epoch: %d.\n", s->best_epoch + 1);
    return 1;
}

const char *fit_float_text(float v, char *buf) {
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, 32, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

void fit_shuffle(int *perm, int n, uint64_t seed, int epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    uint64_t s = rng_hash(seed, 0x5eed0000ull + (uint64_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_hash(s, (uint64_t)i) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void fit_epoch_start(const FitState *s, Progress *bar, int steps, int quiet, int *perm, int n, uint64_t seed) {
    if (!quiet) log_printf(stderr, "Epoch %d/%d\n", s->epochs_done + 1, s->max_epochs);
    progress_start(bar, stderr, steps, "step");
    if (quiet) bar->enabled = 0;
    // A resumed epoch shows the time and steps it had, but its rate and ETA
    // come from this run's steps only.
    bar->t_start -= s->epoch_secs;
    bar->t_before = s->epoch_secs;
    bar->free_items = s->steps_in_epoch;
    bar->done = s->steps_in_epoch;  // a resume after the epoch's last step shows it whole
    fit_shuffle(perm, n, seed, s->epochs_done);
}

// --- checkpoints --------------------------------------------------------------

// Calls fn on every array of the state (name, buffer, floats): the one list
// that saving and loading both walk, so they cannot disagree.
typedef int (*ArrayFn)(void *ctx, const char *name, float *data, size_t n);
static int each_array(const FitState *s, ArrayFn fn, void *ctx) {
    char name[96];
    int n_slots = optim_slots(&s->opt);
    if (fn(ctx, "best_val_loss", (float *)&s->best_val, 1) < 0) return -1;
    for (int e = 0; e < s->epochs_done; e++) {
        // Five separate arrays keep the layout of earlier checkpoints' history%d.
        snprintf(name, sizeof name, "history%d", e);
        float h[5] = {s->loss[e], s->acc[e], s->val_loss[e], s->val_acc[e], s->secs[e]};
        if (fn(ctx, name, h, 5) < 0) return -1;
        s->loss[e] = h[0], s->acc[e] = h[1], s->val_loss[e] = h[2], s->val_acc[e] = h[3], s->secs[e] = h[4];
    }
    for (int i = s->from; i < s->m->n_layers; i++) {
        if (!covered(s, i)) continue;
        Layer *l = &s->m->layers[i];
        for (int t = 0; t < 2; t++) {
            size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
            const char *tn = t ? "bias" : "kernel";
            snprintf(name, sizeof name, "%s/%s", l->name, tn);
            if (fn(ctx, name, t ? l->bias : l->kernel, n) < 0) return -1;
            for (int k = 0; k < n_slots; k++) {
                snprintf(name, sizeof name, "%s/%s/slot%d", l->name, tn, k);
                if (fn(ctx, name, HEAD_SLOTS(s->slots, i, t)[k], n) < 0) return -1;
            }
            if (s->best_w && s->best_w[i * 2 + t]) {
                snprintf(name, sizeof name, "%s/%s/best", l->name, tn);
                if (fn(ctx, name, s->best_w[i * 2 + t], n) < 0) return -1;
            }
        }
    }
    return 0;
}

static int add_array(void *ctx, const char *name, float *data, size_t n) {
    return checkpoint_add(ctx, name, data, n);
}

int fit_save(const FitState *s, const char *settings, const char *path) {
    Checkpoint c = {0};
    size_t tl = strlen(settings) + 512;
    c.text = malloc(tl);
    if (!c.text) return err_set("out of memory");
    // Sums in %.17g: a resumed epoch's running figures continue bit for bit.
    snprintf(c.text, tl,
             "%sepochs_done=%d\nstep=%ld\nsteps_in_epoch=%ld\nrun_loss_sum=%.17g\nrun_n=%.17g\nrun_correct=%ld\n"
             "epoch_secs=%.3f\nwait=%d\nstopped=%d\nthreads=%d\nbest_epoch=%d\n",
             settings, s->epochs_done, s->opt.step, s->steps_in_epoch, s->run.loss_sum, s->run.n, s->run.correct,
             s->epoch_secs, s->wait, s->stopped, s->threads, s->best_epoch);
    FitState *mut = (FitState *)s;  // each_array only reads when saving (the history round-trips unchanged)
    int rc = each_array(mut, add_array, &c);
    float before[2] = {s->before_val_loss, s->before_val_acc};
    if (rc == 0) rc = checkpoint_add(&c, "before_val", before, 2);
    if (rc == 0) rc = checkpoint_write(&c, path);
    checkpoint_free(&c);
    if (rc == 0 && s->history_path) rc = fit_write_history_files(s);
    return rc;
}

typedef struct {
    const Checkpoint *c;
    const char *path;
} GetCtx;

static int get_array(void *vctx, const char *name, float *data, size_t n) {
    GetCtx *g = vctx;
    return checkpoint_get(g->c, g->path, name, data, n);
}

// The value of key in the checkpoint as a number; -1 naming it when absent.
static int setting_num(const Checkpoint *c, const char *path, const char *key, double *v) {
    char *t = checkpoint_setting(c, key);
    if (!t) return err_set("%s: the checkpoint has no %s", path, key);
    char *end;
    *v = strtod(t, &end);
    int bad = end == t || *end;
    free(t);
    return bad ? err_set("%s: bad %s in the checkpoint", path, key) : 0;
}

// A folder setting this run gives as an absolute path (realpath, as the
// tools record them) and the checkpoint as another spelling of the same
// folder: "data" or "./data/" written by an older run, from this directory.
static int same_path(const char *have, const char *want, size_t want_len) {
    if (want_len == 0 || want[0] != '/' || !have[0]) return 0;
    char real[PATH_MAX];
    return realpath(have, real) && strlen(real) == want_len && !strncmp(real, want, want_len);
}

static int checkpoint_has(const Checkpoint *c, const char *key) {
    char *v = checkpoint_setting(c, key);
    int has = v != NULL;
    free(v);
    return has;
}

// The options behind a setting key of train's and finetune's checkpoints,
// for the message that refuses a resume ("" when the key names none).
static const char *setting_option(const char *key) {
    static const char *const map[][2] = {
        {"batch", "--batch"}, {"seed", "--seed"}, {"optimizer", "--optimizer"}, {"lr", "--lr"},
        {"momentum", "--momentum"}, {"nesterov", "--nesterov"}, {"class_weight", "--class-weight"},
        {"early_stopping", "--early-stopping"}, {"monitor", "--monitor"},
        {"restore_best_weights", "--restore-best-weights"}, {"validation_split", "--validation-split"},
        {"hidden", "--hidden"}, {"dropout", "--dropout"}, {"unfreeze", "--unfreeze"}, {"head", "--head"},
        {"weights", "--weights"}, {"augment", "--augment / --no-augment"}, {"augment_ranges", "--augment"},
        {"data", "--data / --cache"}, {"data_content", "--data / --cache"}, {"train_content", "--cache"},
        {"train_items", "--data / --cache, --validation-split"}, {"val", "--val-data / --val-cache"},
        {"val_content", "--val-data / --val-cache"}, {"validation", "--val-cache"},
        {"validation_content", "--val-cache"}, {"train_records", "--cache, --validation-split"},
        // The features' settings, from the cache (extract's options).
        {"train_cache_weights", "--cache (its features' settings)"}, {"model", "--cache (its features' settings)"},
        {"input_size", "--cache (its features' settings)"}, {"layer", "--cache (its features' settings)"},
        {"preprocess", "--cache (its features' settings)"}, {"interpolation", "--cache (its features' settings)"},
        {"classes", "--cache (its classes)"}, {"class_mode", "--cache (its classes)"},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(key, map[k][0])) return map[k][1];
    if (!strncmp(key, "class", 5) && key[5] >= '0' && key[5] <= '9') return "--cache (its classes)";
    return "";
}

// 0 when checkpoint c (at path) was written by this tool with these
// settings; -1 with err_set naming the first that differs and, with advise
// (--resume; --resume-if-same starts over by itself, with a note of the
// setting alone), the option behind it and what to do.
static int check_settings(const Checkpoint *c, const char *settings, const char *path, int advise) {
    // A checkpoint of the other tool (older ones record no "tool": known by
    // a key only that tool writes).
    if (!strncmp(settings, "tool=", 5)) {
        char *tool = checkpoint_setting(c, "tool");
        const char *was = tool;
        if (!tool && checkpoint_has(c, "train_cache_weights")) was = "train";
        else if (!tool && checkpoint_has(c, "unfreeze")) was = "finetune";
        size_t n = strcspn(settings + 5, "\n");
        int other = was && (strlen(was) != n || strncmp(was, settings + 5, n));
        if (other)
            err_set("--resume %s: the checkpoint was written by %s, not %.*s: give the --out of a %.*s run", path, was,
                    (int)n, settings + 5, (int)n, settings + 5);
        free(tool);
        if (other) return -1;
    }
    // Line by line; name the first setting that differs.
    for (const char *p = settings; *p;) {
        const char *nl = strchr(p, '\n'), *eq = strchr(p, '=');
        if (!nl || !eq || eq > nl) break;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
        char *have = checkpoint_setting(c, key);
        size_t vl = (size_t)(nl - eq - 1);
        // Settings older checkpoints did not record (the tool, the caches'
        // "*_content" digests, an image folder's, recorded empty): not compared.
        size_t kl = strlen(key);
        int content = kl > 8 && !strcmp(key + kl - 8, "_content");
        if ((!have && (!strcmp(key, "tool") || content)) || (content && have && !have[0])) {
            free(have);
            p = nl + 1;
            continue;
        }
        // Settings added since, absent from older checkpoints: equal when
        // this run has the value they stood for.
        static const char *const added[][2] = {{"monitor", "val_loss"}, {"restore_best_weights", "0"}};
        int as_before = 0;
        for (size_t k = 0; !have && k < sizeof added / sizeof added[0]; k++)
            as_before |= !strcmp(key, added[k][0]) && strlen(added[k][1]) == vl && !strncmp(added[k][1], eq + 1, vl);
        if (as_before) {
            p = nl + 1;
            continue;
        }
        if (!have || ((strlen(have) != vl || strncmp(have, eq + 1, vl)) && !same_path(have, eq + 1, vl))) {
            const char *why = "";
            if (content && !strncmp(eq + 1, "images:", 7))
                why = " (the digest of the image folder's files, classes and sizes: images were added, removed, "
                      "renamed, moved to another class or replaced since the checkpoint's run began)";
            else if (content)
                why = " (the digest of a cache's records: this cache holds other records than the one the "
                      "checkpoint's run began with)";
            else if (!strcmp(key, "head"))
                why = " (the digest of the --head file: it was trained again or replaced since the checkpoint's "
                      "run began)";
            else if (!strcmp(key, "weights") && have && !strncmp(have, "sha256:", 7))
                why = " (the digest of the base weights file: another file, or it changed since the checkpoint's "
                      "run began)";
            else if (!have && !strcmp(key, "augment_ranges"))
                why = " (an earlier vggft drew the augmentation from float ranges: its run cannot be continued with "
                      "the same draws; start over)";
            else if (have && have[0] && have[0] != '/' && vl && eq[1] == '/')
                why = " (an older checkpoint's path, relative to the folder its run started in: resume from there)";
            // The option, in the reason's parentheses when there is one:
            // " (--head: the digest of ...)".
            const char *opt = advise ? setting_option(key) : "";
            char reason[600];
            if (*opt && *why) snprintf(reason, sizeof reason, " (%s: %s", opt, why + 2);
            else if (*opt) snprintf(reason, sizeof reason, " (%s)", opt);
            else snprintf(reason, sizeof reason, "%s", why);
            err_set("--resume %s: %s is %s in the checkpoint, %.*s in this run%s%s", path, key,
                    !have ? "(absent)" : have[0] ? have : "(none)", vl ? (int)vl : 6, vl ? eq + 1 : "(none)", reason,
                    !advise                           ? ""
                    : !strcmp(key, "augment_ranges") ? ": leave out --resume"
                                                      : ": to continue that run give its settings and data again; to "
                                                        "start over (replacing the checkpoint) leave out --resume");
            free(have);
            return -1;
        }
        free(have);
        p = nl + 1;
    }
    return 0;
}

// fit_load on a checkpoint already read. With `other` (--resume-if-same),
// a checkpoint of another run (other settings, or more training than
// --epochs) sets *other before s is touched; -1 either way, with err_set.
static int load_from(FitState *s, const char *settings, const char *path, const Checkpoint *cp, int *other) {
    int rc = -1;
    if (check_settings(cp, settings, path, other == NULL) < 0) {
        if (other) *other = 1;
        return -1;
    }
    double v[9];
    const char *keys[9] = {"epochs_done", "step", "steps_in_epoch", "run_loss_sum", "run_n",
                           "run_correct", "epoch_secs", "wait", "stopped"};
    for (int k = 0; k < 9; k++) {
        // Checkpoints of train before mid-epoch resume lack the in-epoch keys: 0.
        if (k >= 2 && k <= 6) {
            char *t = checkpoint_setting(cp, keys[k]);
            if (!t) {
                v[k] = 0;
                continue;
            }
            free(t);
        }
        if (setting_num(cp, path, keys[k], &v[k]) < 0) goto done;
    }
    // More training than --epochs asks for (also part of the epoch after
    // it): a resume would return a model trained beyond it.
    if (v[0] < 0 || v[0] > s->max_epochs || (v[0] == s->max_epochs && v[2] > 0)) {
        char advice[160] = "";
        if (!other && v[0] >= 0)
            snprintf(advice, sizeof advice,
                     ": give --epochs %.0f or more to continue that run (--epochs counts its epochs too), or leave "
                     "out --resume to start over",
                     v[0] + (v[2] > 0));
        err_set("--resume %s: %.0f epoch%s%s done, more than --epochs %d%s", path, v[0], v[0] == 1 ? "" : "s",
                v[2] > 0 ? " and part of the next" : "", s->max_epochs, advice);
        if (other) *other = 1;
        goto done;
    }
    s->epochs_done = (int)v[0];
    s->opt.step = (long)v[1];
    s->steps_in_epoch = (long)v[2];
    s->run.loss_sum = v[3], s->run.n = v[4], s->run.correct = (long)v[5];
    s->epoch_secs = v[6];
    s->wait = (int)v[7];
    s->stopped = v[8] != 0;
    char *t = checkpoint_setting(cp, "threads");
    int was = t ? atoi(t) : 0;
    free(t);
    if (was > 0 && s->threads > 0 && was != s->threads)
        log_printf(stderr, "note: %s was written by a run on %d threads, this one has %d: training continues "
                           "correctly, but not bit for bit as the same thread count would\n",
                   path, was, s->threads);
    // The best epoch (absent before restore_best_weights: none) and, when
    // its weights were kept, their buffers for each_array to fill.
    t = checkpoint_setting(cp, "best_epoch");
    s->best_epoch = t ? atoi(t) : -1;
    free(t);
    if (s->restore_best && s->best_epoch >= 0 && alloc_best(s) < 0) goto done;
    GetCtx g = {cp, path};
    rc = each_array(s, get_array, &g);
    float before[2];
    if (rc == 0 && checkpoint_get(cp, path, "before_val", before, 2) == 0)  // absent in older checkpoints
        s->before_val_loss = before[0], s->before_val_acc = before[1];
done:
    return rc;
}

int fit_load(FitState *s, const char *settings, const char *path) {
    Checkpoint c;
    if (checkpoint_read(&c, path) < 0) return -1;
    int rc = load_from(s, settings, path, &c, NULL);
    checkpoint_free(&c);
    return rc;
}

int fit_begin(FitState *s, const char *settings, const char *out, int resume, const char *title, char *ckpt,
              size_t size) {
    fit_sibling(out, ".ckpt", ckpt, size);
    atomic_remove_stale(ckpt);  // left by a run killed while writing one
    atomic_remove_stale(out);
    char csv[4200], svg[4200];
    fit_sibling(out, ".history.csv", csv, sizeof csv);
    fit_sibling(out, ".history.svg", svg, sizeof svg);
    free(s->history_path), free(s->history_svg), free(s->history_title);
    s->history_path = strdup(csv), s->history_svg = strdup(svg), s->history_title = strdup(title);
    if (!s->history_path || !s->history_svg || !s->history_title) return err_set("out of memory");
    atomic_remove_stale(csv);
    atomic_remove_stale(svg);
    const char *path = ckpt;
    int exists = access(path, F_OK) == 0;
    // These lines are not progress: they show even with --quiet (a job log
    // should say where a run started).
    if (!resume) {
        // An earlier run's OUT.history.csv and .svg stay until this run's
        // first epoch replaces them (fit_save), as its OUT.h5 and confusion
        // plot stay until this run writes its own: a run that fails before
        // then leaves the earlier run's outputs whole, not its model beside
        // an emptied history.
        if (exists)
            log_printf(stderr,
                       "note: %s is from an earlier run: starting over and replacing it (--resume would continue that run, or add epochs to it)\n",
                       path);
        return 0;
    }
    if (!exists) {
        // (--resume-if-same, what make and job scripts pass on every run:
        // a first run is the usual case, not worth a note.)
        if (resume == FIT_RESUME)
            log_printf(stderr, "note: --resume: no checkpoint at %s yet, starting from the beginning\n", path);
        return 0;
    }
    if (resume == FIT_RESUME_IF_SAME) {
        // Another run's checkpoint (other settings, data or head, more
        // epochs than asked): a new run, which replaces it. An unreadable
        // one stays an error.
        Checkpoint c;
        if (checkpoint_read(&c, path) < 0)
            return err_set("%s (remove it to start over; under the make pipeline RESUME=0 does)", err_msg());
        int other = 0, rc = load_from(s, settings, path, &c, &other);
        checkpoint_free(&c);
        if (other) {
            // The reason without its advice (the checkpoint is replaced).
            char why[ERR_MSG_MAX];
            const char *colon = strstr(err_msg(), ": ");
            snprintf(why, sizeof why, "%s", colon ? colon + 2 : err_msg());
            char *advice = strstr(why, ": give the --out");
            if (advice) *advice = '\0';
            log_printf(stderr, "note: %s is of another run (%s): starting over and replacing it\n", path, why);
            return 0;
        }
        if (rc < 0) return -1;
    } else if (fit_load(s, settings, path) < 0) {
        return -1;
    }
    if (s->steps_in_epoch)
        log_printf(stderr, "Resuming from %s at epoch %d, after step %ld\n", path, s->epochs_done + 1,
                   s->steps_in_epoch);
    else if (s->epochs_done >= s->max_epochs || s->stopped)
        log_printf(stderr, "Resuming from %s: training had ended (%d epoch%s%s); writing the outputs again\n", path,
                   s->epochs_done, s->epochs_done == 1 ? "" : "s", s->stopped ? ", early stopping" : "");
    else log_printf(stderr, "Resuming from %s after epoch %d\n", path, s->epochs_done);
    return 0;
}

// --- outputs ---------------------------------------------------------------------

void fit_sibling(const char *out, const char *suffix, char *buf, size_t size) {
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".h5")) n -= 3;
    snprintf(buf, size, "%.*s%s", (int)n, out, suffix);
}

// Keras 3's load_weights picks its reader by the name: "*.weights.h5" is
// its own format and ".keras" its zip archive (both refused here: Keras
// would fail to read the file), ".h5" and ".hdf5" the Keras 2 HDF5 layout
// these files have; any other name it reads as a TensorFlow checkpoint
// (a warning). Keras 3, keras/src/models/model.py, load_weights.
int fit_check_out_name(const char *out) {
    const size_t n = strlen(out);
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    char stem[4200];
    if (n >= 11 && !strcmp(out + n - 11, ".weights.h5")) {
        snprintf(stem, sizeof stem, "%.*s.h5", (int)(n - 11), out);
        return err_set("--out %s: Keras 3 reads a file named *.weights.h5 as its own weights format, which this "
                       "file is not (it has Keras 2's HDF5 layout, which load_weights reads from a name ending in .h5 "
                       "or .hdf5): give --out %s",
                       out, stem);
    }
    if (n >= 6 && !strcmp(out + n - 6, ".keras")) {
        snprintf(stem, sizeof stem, "%.*s.h5", (int)(n - 6), out);
        return err_set("--out %s: a .keras file is Keras 3's zip archive of a whole model, which this file is not "
                       "(HDF5 weights, which load_weights reads from a name ending in .h5 or .hdf5): give --out %s",
                       out, stem);
    }
    if (!*base) return 0;  // a folder: check_output_path says so
    if ((n < 3 || strcmp(out + n - 3, ".h5")) && (n < 5 || strcmp(out + n - 5, ".hdf5")))
        log_printf(stderr, "note: --out %s: Keras's load_weights reads HDF5 weights only from a name ending in .h5 "
                           "or .hdf5 (rename the file before loading it in Keras)\n",
                   out);
    return 0;
}

int fit_check_out(const char *out, const char *const *inputs, const char *const *names, int n,
                  const char *const *dirs, const char *const *dir_names, int nd) {
    // Outside first: check_output_path makes the folder (to see that it can).
    if (check_output_outside("--out", out, dirs, dir_names, nd) < 0 ||
        check_output_path("--out", out, inputs, names, n) < 0)
        return -1;
    // The stems, where they would land (links and ".." resolved).
    char stem[PATH_MAX], out_stem[PATH_MAX], in_stem[PATH_MAX];
    fit_sibling(out, "", stem, sizeof stem);
    path_absolute(stem, out_stem, sizeof out_stem);
    for (int i = 0; i < n; i++) {
        if (!inputs[i]) continue;
        // Only an input with such files beside it (a head from train: its
        // checkpoint, its history); not a weights file, not "imagenet".
        char ckpt[PATH_MAX + 16], csv[PATH_MAX + 16];
        fit_sibling(inputs[i], ".ckpt", ckpt, sizeof ckpt);
        fit_sibling(inputs[i], ".history.csv", csv, sizeof csv);
        if (access(ckpt, F_OK) != 0 && access(csv, F_OK) != 0) continue;
        fit_sibling(inputs[i], "", stem, sizeof stem);
        path_absolute(stem, in_stem, sizeof in_stem);
        if (!strcmp(in_stem, out_stem))
            return err_set("--out %s: its checkpoint, history and plots (%s.ckpt, %s.history.csv, ...) would replace "
                           "those of %s %s; give --out another name",
                           out, stem, stem, names[i], inputs[i]);
    }
    return 0;
}

static int lock_fd = -1;
static char lock_path[4200];

// A lock file's text as fit_lock_out writes it: empty (a holder that has
// not named itself yet) or "PID on HOST" and a newline, nothing else.
static int lock_text_ours(const char *t, size_t n) {
    if (n == 0) return 1;
    if (memchr(t, '\0', n) || t[n - 1] != '\n') return 0;
    size_t i = 0;
    while (i < n && t[i] >= '0' && t[i] <= '9') i++;
    if (i == 0 || n - i < 6 || strncmp(t + i, " on ", 4) || t[i + 4] == '\n') return 0;
    return memchr(t + i + 4, '\n', n - i - 4) == t + n - 1;
}

void fit_unlock_out(void) {
    if (lock_fd < 0) return;
    // Removed while still held: a process that opened it meanwhile finds,
    // once it has the lock, that the name no longer leads to it, and retries.
    // Only when the name still leads to ours: another run may have written
    // an output of its own there since (train --out X.lock).
    struct stat a, b;
    if (fstat(lock_fd, &a) == 0 && lstat(lock_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        unlink(lock_path);
    close(lock_fd);
    lock_fd = -1;
}

int fit_lock_out(const char *out) {
    if (lock_fd >= 0) return 0;
    fit_sibling(out, ".lock", lock_path, sizeof lock_path);
    if (make_parent_dirs(lock_path) < 0) return -1;
    for (int tries = 0; tries < 100; tries++) {
        // 0666 less the umask, as the outputs beside it (atomic_open): a
        // lock file a killed run left in a group's folder does not lock the
        // group's other members out of it (EACCES on O_RDWR).
        // (O_NONBLOCK: a FIFO planted there is refused below, not waited on.)
        int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0666);
        // One another user's run left, not writable by us (their umask):
        // a lock all the same (flock needs no write access); once held, it
        // is replaced by one of ours (below).
        int read_only = 0;
        if (fd < 0 && errno == EACCES) fd = open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), read_only = 1;
        if (fd < 0) return err_set("--out %s: cannot make its lock file %s: %s", out, lock_path, strerror(errno));
        // Only ever our own kind of file ("PID on HOST", or empty): a file
        // of another kind at that name (an output named so) is never
        // truncated or removed.
        char text[320];
        ssize_t got = pread(fd, text, sizeof text, 0);
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || got < 0 || got == (ssize_t)sizeof text ||
            !lock_text_ours(text, (size_t)got)) {
            close(fd);
            return err_set("--out %s: %s, where its lock file goes, is another file (%s, %lld bytes): rename it, "
                           "or give --out another name",
                           out, lock_path, S_ISREG(st.st_mode) ? "not a lock file" : "not a regular file",
                           (long long)st.st_size);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int e = errno;
            if (e != EWOULDBLOCK) {  // no locks on this file system: go on without (and leave no file)
                unlink(lock_path);
                close(fd);
                return 0;
            }
            // "PID on HOST": on a shared file system the holder may run on
            // another node, and a node that died can leave its lock held
            // (NFSv3's lock manager keeps it until that node is back):
            // the message names it, and the way out.
            // (Read again: the holder may have named itself just now.)
            char holder[320] = "";
            ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
            holder[n > 0 ? n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
            close(fd);
            char who[400];
            if (holder[0]) snprintf(who, sizeof who, "process %s holds", holder);
            else snprintf(who, sizeof who, "a process that has not named itself holds");
            return err_set("--out %s: another train or finetune is writing it now (%s %s): two jobs given one "
                           "--out? Wait for it to end, or give each its own --out (if that process is gone, its "
                           "node down, remove %s)",
                           out, who, lock_path, lock_path);
        }
        // Still the file at that name (not one a finishing run just removed)?
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lock_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            // Held, but not writable: put one of ours in its place (held
            // before the old one is let go), so that the name we write is
            // what a refused run reads, not the old file's stale one. When
            // that fails, the old file stays our lock, nameless.
            if (read_only && unlink(lock_path) == 0) {
                int mine = open(lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
                if (mine >= 0 && flock(mine, LOCK_EX | LOCK_NB) == 0) {
                    close(fd);
                    fd = mine;
                } else {
                    // Another run took the name first (it holds OUT now, or
                    // will): the old file, gone from the name, locks nothing.
                    if (mine >= 0) close(mine);
                    close(fd);
                    continue;
                }
            }
            char host[256] = "?", holder[320];
            if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
            host[sizeof host - 1] = '\0';
            int n = snprintf(holder, sizeof holder, "%ld on %s\n", (long)getpid(), host);
            if (n >= (int)sizeof holder) n = (int)sizeof holder - 1;
            if (ftruncate(fd, 0) == 0 && pwrite(fd, holder, (size_t)n, 0) == n) {}  // (it only names us)
            lock_fd = fd;
            static int registered;
            if (!registered++) atexit(fit_unlock_out);
            return 0;
        }
        close(fd);
    }
    return err_set("--out %s: cannot take its lock file %s (it keeps being replaced)", out, lock_path);
}

int fit_write_history(const FitState *s, const char *path) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    // Keras's CSVLogger columns: epoch, then the metrics in sorted order,
    // each value in full (%.9g: the float32 exactly, as CSVLogger writes
    // Python floats, so a val_loss of 1e-10 is not 0.000000), "NA" for the
    // validation figures of a fit without validation (as Keras 3's
    // CSVLogger writes them); then ours, seconds, after Keras's columns.
    fprintf(f, "epoch,accuracy,loss,val_accuracy,val_loss,seconds\n");
    for (int e = 0; e < s->epochs_done; e++) {
        fprintf(f, "%d,%.9g,%.9g,", e, s->acc[e], s->loss[e]);
        if (isnan(s->val_acc[e])) fprintf(f, "NA,NA,");
        else fprintf(f, "%.9g,%.9g,", s->val_acc[e], s->val_loss[e]);
        fprintf(f, "%.3f\n", s->secs[e]);
    }
    return atomic_commit(&af);
}

int fit_plot_history(const FitState *s, const char *path, const char *title) {
    if (s->epochs_done == 0) return 0;
    int has_val = !isnan(s->val_loss[0]);
    return plot_history_svg(path, title, s->epochs_done, s->loss, s->acc, has_val ? s->val_loss : NULL,
                            has_val ? s->val_acc : NULL, s->before_val_loss, s->before_val_acc);
}

int fit_write_history_files(const FitState *s) {
    // Before this run's first epoch ends (a stop in it saves a checkpoint),
    // an earlier run's history and plot stay as they are, together.
    if (s->epochs_done == 0) return 0;
    if (fit_write_history(s, s->history_path) < 0) return -1;
    return fit_plot_history(s, s->history_svg, s->history_title);
}

void confusion_add(long *conf, int K, const int32_t *labels, const int32_t *pred, int n) {
    for (int i = 0; i < n; i++) conf[labels[i] * K + pred[i]]++;
}

// In place of a matrix too big to print: its largest off-diagonal cells.
static void print_top_confusions(FILE *out, int K, char *const *names, const long *conf) {
    int t[FIT_REPORT_TOP_CONFUSIONS], p[FIT_REPORT_TOP_CONFUSIONS];
    int n = metrics_top_confusions(conf, K, FIT_REPORT_TOP_CONFUSIONS, t, p);
    fprintf(out, "Confusion matrix not shown for %d classes (more than %d); per-class figures below.\n", K,
            FIT_REPORT_MATRIX_MAX);
    if (n == 0) {
        fprintf(out, "No confusions: every record's prediction is its true class.\n");
        return;
    }
    fprintf(out, "Most frequent confusions (true -> predicted: count, share of the true class):\n");
    for (int i = 0; i < n; i++) {
        long row = 0;
        for (int j = 0; j < K; j++) row += conf[(long)t[i] * K + j];
        fprintf(out, "  %s -> %s: %ld (%.4f)\n", names[t[i]], names[p[i]], conf[(long)t[i] * K + p[i]],
                row ? (double)conf[(long)t[i] * K + p[i]] / row : 0.0);
    }
}

void fit_print_report(FILE *out, const char *what, const Running *r, int K, char *const *names, const long *conf) {
    // The loss as the epoch lines print val_loss (1.8753e-06, not 0.0000).
    char lv[KERAS_VALUE_MAX];
    fprintf(out, "\n%s: loss %s - accuracy %.4f (%ld/%.0f)\n", what, keras_value(running_loss(r), lv), running_acc(r), r->correct,
            r->n);
    // Widths in display columns (utf8.h), not bytes: names in UTF-8 line up.
    int longest = 0;
    for (int k = 0; k < K; k++) longest = utf8_width(names[k]) > longest ? utf8_width(names[k]) : longest;
    int w = longest < 10 ? 10 : longest > 24 ? 24 : longest;  // row label width
    int cw = longest < 8 ? 8 : longest > 16 ? 16 : longest;   // column width
    if (K > FIT_REPORT_MATRIX_MAX) {
        print_top_confusions(out, K, names, conf);
    } else {
        fprintf(out, "Confusion matrix (rows: true class, columns: predicted):\n%*s", w + 2, "");
        for (int k = 0; k < K; k++) {
            fputc(' ', out);
            utf8_put_padded(out, names[k], cw, 1);
        }
        fprintf(out, "\n");
        for (int t = 0; t < K; t++) {
            fputs("  ", out);
            utf8_put_padded(out, names[t], w, 0);
            for (int p = 0; p < K; p++) fprintf(out, " %*ld", cw, conf[t * K + p]);
            fprintf(out, "\n");
        }
    }
    // scikit-learn's classification_report: per class precision, recall,
    // F1 and support, then the macro and weighted averages (metrics_print).
    const int lw = metrics_label_width(K, names);
    fprintf(out, "%-*s precision   recall       f1  support\n", lw + 2, "");
    ClassMetrics *cm = malloc(sizeof *cm * (size_t)K);
    if (!cm) {
        fprintf(out, "  (out of memory for the per-class figures)\n");
        return;
    }
    metrics_per_class(conf, K, cm);
    int absent = 0;
    for (int k = 0; k < K; k++) {
        fputs("  ", out);
        utf8_put_padded(out, names[k], lw, 0);
        // A class with no image and none predicted as it: no figures (and
        // not in the averages, as scikit-learn leaves it out).
        if (!cm[k].support && !cm[k].predicted) {
            fprintf(out, " %9s %8s %8s %8ld\n", "-", "-", "-", 0L);
            absent++;
            continue;
        }
        fprintf(out, " %9.4f %8.4f %8.4f %8ld\n", cm[k].precision, cm[k].recall, cm[k].f1, cm[k].support);
    }
    metrics_print(out, K, names, cm);  // the averages, in the same columns
    free(cm);
    if (absent)
        fprintf(out, "  (-: no image of that class, and none predicted as it; not in the averages)\n");
}

int fit_diverged(int epoch, long step, float loss) {
    return err_set("epoch %d step %ld: the loss is %s (diverged: lower --lr)", epoch + 1, step + 1,
                   isnan(loss) ? "nan" : loss > 0 ? "inf" : "-inf");
}

int fit_finish(const char *out, const char *what, int has_val, const Running *r, int K, char *const *class_names,
               const long *conf) {
    char path[4200], title[4300];
    fit_sibling(out, ".confusion.svg", path, sizeof path);
    snprintf(title, sizeof title, "%s: accuracy %.4f on %s", out, running_acc(r), has_val ? "validation" : "training");
    if (plot_confusion_svg(path, title, K, class_names, conf) < 0) return -1;
    fit_sibling(out, "", path, sizeof path);
    printf("\nWrote %s (%s), %s.history.csv, %s.history.svg, %s.confusion.svg, %s.ckpt (the state --resume continues "
           "from)\n",
           out, what, path, path, path, path);
    return 0;
}
