// train: cached features -> dense head, on the CPU.
//
// Keras's fit() semantics: shuffled batches each epoch, loss averaged over
// samples (class-weighted when asked), accuracy as Keras computes it,
// validation after each epoch without dropout or class weights. Everything
// random (initialisation, shuffling, dropout) is a function of the seed and
// the epoch/step counters, so a run is bit-reproducible on any thread count
// and a resumed run equals an uninterrupted one.
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas_setup.h"
#include "checkpoint.h"
#include "dataset.h"
#include "error.h"
#include "feature_set.h"
#include "fileutil.h"
#include "forward.h"
#include "model.h"
#include "model_io.h"
#include "optim.h"
#include "parallel.h"
#include "plot.h"
#include "progress.h"
#include "rng.h"

// Keras's class-weighted mean loss and accuracy over a set of batches.
typedef struct {
    double loss_sum, n;
    long correct;
} Running;

static void running_add(Running *r, float batch_loss, int batch_n, const int32_t *pred, const int32_t *labels) {
    r->loss_sum += (double)batch_loss * batch_n;
    r->n += batch_n;
    for (int i = 0; i < batch_n; i++) r->correct += pred[i] == labels[i];
}

static float running_loss(const Running *r) { return r->n ? (float)(r->loss_sum / r->n) : NAN; }
static float running_acc(const Running *r) { return r->n ? (float)(r->correct / r->n) : NAN; }

// Fisher-Yates with the counter-based RNG: the order of epoch e depends only
// on (seed, e).
static void shuffle(int *perm, int n, uint64_t seed, int epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    uint64_t s = rng_hash(seed, 0x5eed0000ull + (uint64_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_hash(s, (uint64_t)i) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

// The settings of the features' cache that a head depends on.
static int same_features(const CacheMeta *a, const char *pa, const CacheMeta *b, const char *pb) {
    CacheMeta x = *a;
    // dtype and shard do not change what the features mean.
    x.dtype = b->dtype;
    snprintf(x.shard, sizeof x.shard, "%s", b->shard);
    char diff[600];
    if (cache_meta_diff(&x, b, diff, sizeof diff))
        return err_set("--val-cache %s was made with other settings than --cache %s (%s; \"the cache\" is the "
                       "training one)", pb, pa, diff);
    return 0;
}

// A training batch: rows of the shuffled order, with labels and class weights.
typedef struct {
    float *x, *weights;
    int32_t *labels;
    int n;
} Batch;

static int batch_alloc(Batch *b, int B, int D) {
    b->x = malloc(sizeof(float) * (size_t)B * D);
    b->weights = malloc(sizeof(float) * (size_t)B);
    b->labels = malloc(sizeof(int32_t) * (size_t)B);
    return b->x && b->weights && b->labels ? 0 : -1;
}

static void batch_free(Batch *b) { free(b->x), free(b->weights), free(b->labels); }

// Batch number s of the epoch's order perm (rows: B ints of scratch).
static int batch_load(FeatureSet *fs, const int *perm, int s, int B, const float *class_w, int *rows, Batch *b) {
    int at = s * B;
    b->n = fs->n - at < B ? fs->n - at : B;
    for (int i = 0; i < b->n; i++) {
        rows[i] = perm[at + i];
        b->labels[i] = fs->labels[rows[i]];
        b->weights[i] = class_w ? class_w[b->labels[i]] : 1.0f;
    }
    return features_gather(fs, rows, b->n, b->x);
}

// Evaluates the head (no dropout) on every record: mean unweighted loss,
// accuracy, and the confusion matrix when conf is not NULL.
static int evaluate(const Model *m, FeatureSet *fs, int batch, HeadBuffers *hb, float *x, int32_t *pred,
                    Running *r, long *conf) {
    memset(r, 0, sizeof *r);
    int K = m->cfg.n_classes;
    if (conf) memset(conf, 0, sizeof(long) * (size_t)K * K);
    int *rows = malloc(sizeof(int) * (size_t)batch);
    for (int at = 0; at < fs->n; at += batch) {
        int n = fs->n - at < batch ? fs->n - at : batch;
        for (int i = 0; i < n; i++) rows[i] = at + i;
        if (features_gather(fs, rows, n, x) < 0) {
            free(rows);
            return -1;
        }
        if (head_forward(m, x, n, 0, 0, 0, hb) < 0) {
            free(rows);
            return -1;
        }
        float loss = head_backward(m, x, fs->labels + at, NULL, n, hb, NULL, NULL);
        head_predict_classes(m, hb, n, pred);
        running_add(r, loss, n, pred, fs->labels + at);
        if (conf)
            for (int i = 0; i < n; i++) conf[fs->labels[at + i] * K + pred[i]]++;
    }
    free(rows);
    return 0;
}

static void print_report(const Model *m, const CacheMeta *meta, const char *what, const Running *r,
                         const long *conf) {
    int K = m->cfg.n_classes;
    printf("\n%s: loss %.4f - accuracy %.4f (%ld/%.0f)\n", what, running_loss(r), running_acc(r), r->correct, r->n);
    int w = 10;
    for (int k = 0; k < K; k++) w = (int)strlen(meta->class_names[k]) > w ? (int)strlen(meta->class_names[k]) : w;
    if (w > 24) w = 24;
    int cw = 8;  // column width: the longest name, within 8..16
    for (int k = 0; k < K; k++) cw = (int)strlen(meta->class_names[k]) > cw ? (int)strlen(meta->class_names[k]) : cw;
    if (cw > 16) cw = 16;
    printf("Confusion matrix (rows: true class, columns: predicted):\n%*s", w + 2, "");
    for (int k = 0; k < K; k++) printf(" %*.*s", cw, cw, meta->class_names[k]);
    printf("\n");
    for (int t = 0; t < K; t++) {
        printf("  %-*.*s", w, w, meta->class_names[t]);
        for (int p = 0; p < K; p++) printf(" %*ld", cw, conf[t * K + p]);
        printf("\n");
    }
    printf("%-*s precision   recall  support\n", w + 2, "");
    for (int k = 0; k < K; k++) {
        long tp = conf[k * K + k], col = 0, row = 0;
        for (int j = 0; j < K; j++) col += conf[j * K + k], row += conf[k * K + j];
        printf("  %-*.*s %9.4f %8.4f %8ld\n", w, w, meta->class_names[k], col ? (double)tp / col : 0.0,
               row ? (double)tp / row : 0.0, row);
    }
}

// out.h5 -> out + suffix (".history.csv"...): the stem without .h5.
static void sibling(const char *out, const char *suffix, char *buf, size_t size) {
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".h5")) n -= 3;
    snprintf(buf, size, "%.*s%s", (int)n, out, suffix);
}

static int write_history_csv(const char *path, int n, const float *loss, const float *acc, const float *vloss,
                             const float *vacc, const float *secs) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    // Keras's CSVLogger columns: epoch, then the metrics in sorted order.
    fprintf(f, "epoch,accuracy,loss,val_accuracy,val_loss,seconds\n");
    for (int e = 0; e < n; e++) {
        fprintf(f, "%d,%.6f,%.6f,", e, acc[e], loss[e]);
        if (isnan(vacc[e])) fprintf(f, ",,");
        else fprintf(f, "%.6f,%.6f,", vacc[e], vloss[e]);
        fprintf(f, "%.3f\n", secs[e]);
    }
    return atomic_commit(&af);
}

int train_run(const TrainOptions *o) {
    int status = -1;
    const int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    // The head's products run on our pool, and give the same bits on any
    // --threads (see dense.h); BLAS single-threaded for the rest.
    blas_set_threads(1);
    parallel_set_threads(threads);
    const size_t budget = (size_t)o->memory_budget_mb << 20;
    FeatureSet all = {0}, train = {0}, val = {0};
    CacheMeta meta = {0}, vmeta = {0};
    Model m = {0};
    HeadBuffers hb = {0};
    Grads g = {0};
    Checkpoint ck = {0};
    float **slots = NULL;
    Batch batch[2] = {0};  // this step's and the next one's
    float *class_w = NULL;
    float *h_loss = NULL, *h_acc = NULL, *h_vloss = NULL, *h_vacc = NULL, *h_secs = NULL;
    int32_t *pred = NULL;
    int *perm = NULL, *rows = NULL;
    long *conf = NULL;
    char *settings = NULL;
    int has_val = 0;

    // Fail now, not after the first epoch, if the outputs cannot be written.
    if (make_parent_dirs(o->out) < 0) return -1;
    // --- data ---------------------------------------------------------------
    if (features_load(&all, o->cache, budget, threads, &meta) < 0) return -1;
    if (o->val_cache) {
        if (features_load(&val, o->val_cache, budget, threads, &vmeta) < 0) goto done;
        if (same_features(&meta, o->cache, &vmeta, o->val_cache) < 0) goto done;
        train = all;
        memset(&all, 0, sizeof all);
        has_val = 1;
    } else if (o->validation_split > 0) {
        // Keras: the first int(F * n_c) records of each class (folder order).
        int K = meta.n_classes;
        int *n_c = calloc((size_t)K, sizeof(int)), *seen = calloc((size_t)K, sizeof(int));
        int *tr = malloc(sizeof(int) * (size_t)all.n), *va = malloc(sizeof(int) * (size_t)all.n);
        int nt = 0, nv = 0;
        for (int i = 0; i < all.n; i++) n_c[all.labels[i]]++;
        for (int i = 0; i < all.n; i++) {
            int c = all.labels[i];
            if (seen[c]++ < (int)(o->validation_split * n_c[c])) va[nv++] = i;
            else tr[nt++] = i;
        }
        int rc = features_subset(&all, tr, nt, &train);
        if (rc == 0) rc = features_subset(&all, va, nv, &val);
        free(n_c), free(seen), free(tr), free(va);
        features_free(&all);
        if (rc < 0) goto done;
        has_val = val.n > 0;
        if (!has_val) {
            if (o->early_stopping > 0) {
                err_set("--validation-split %g leaves no validation records (int(F * n) is 0 for every class), so "
                        "--early-stopping has nothing to watch",
                        o->validation_split);
                goto done;
            }
            fprintf(stderr, "warning: --validation-split %g leaves no validation records (int(F * n) is 0 for every "
                            "class): training without validation\n",
                    o->validation_split);
        }
    } else {
        train = all;
        memset(&all, 0, sizeof all);
    }
    if (!meta.complete)
        fprintf(stderr, "warning: %s is incomplete: its extract run did not finish (rerun the same extract command)\n",
                o->cache);
    if (meta.shard[0])
        fprintf(stderr, "warning: %s is shard %s of its folder only (extract --merge joins the shards)\n", o->cache,
                meta.shard);
    if (o->val_cache && !vmeta.complete)
        fprintf(stderr, "warning: %s is incomplete: its extract run did not finish\n", o->val_cache);
    const int K = meta.n_classes;
    if (K < 2) {
        err_set("%s: the cache has a single class (%s); a classifier needs at least 2", o->cache,
                meta.class_names[0]);
        goto done;
    }
    {
        long *count = calloc((size_t)K, sizeof(long));
        for (int i = 0; i < train.n; i++) count[train.labels[i]]++;
        for (int k = 0; k < K; k++)
            if (count[k] == 0) {
                err_set("%s: class '%s' has no training records%s", o->cache, meta.class_names[k],
                        o->validation_split > 0 ? " (after --validation-split)" : "");
                free(count);
                goto done;
            }
        if (!strcmp(o->class_weight, "balanced")) {
            class_w = malloc(sizeof(float) * (size_t)K);
            class_weights_balanced(count, K, meta.class_names, class_w);  // counts checked above
        }
        free(count);
    }

    // --- model ----------------------------------------------------------------
    ModelConfig cfg;
    model_config_defaults(&cfg);
    if (arch_from_name(meta.model, &cfg.arch) < 0) goto done;
    cfg.input_h = meta.input_h, cfg.input_w = meta.input_w;
    cfg.cut = meta.layer;
    cfg.hidden = o->hidden;
    cfg.dropout = o->dropout;
    cfg.n_classes = K;
    cfg.binary = !strcmp(o->class_mode, "binary") || (!strcmp(o->class_mode, "auto") && K == 2);
    if (model_build(&m, &cfg) < 0) goto done;
    if (model_feature_size(&m) != train.D) {
        err_set("%s: features have %d values, %s at %dx%d gives %ld", o->cache, train.D, meta.layer, meta.input_w,
                meta.input_h, model_feature_size(&m));
        goto done;
    }
    const int h0 = model_head_start(&m);
    if (model_alloc_weights(&m, h0, m.n_layers) < 0) goto done;
    model_init_random(&m, h0, m.n_layers, (uint64_t)o->seed);

    Optimizer opt;
    OptimKind kind;
    if (optim_kind_from_name(o->optimizer, &kind) < 0) goto done;
    optim_defaults(&opt, kind);
    if (o->lr_given) opt.lr = o->lr;
    if (o->momentum_given) opt.momentum = o->momentum;
    opt.nesterov = o->nesterov;

    // Optimizer slots per weight tensor of the head.
    int n_slots = optim_slots(&opt);
    slots = calloc((size_t)m.n_layers * 2 * 2, sizeof(float *));
    for (int i = h0; i < m.n_layers; i++) {
        const Layer *l = &m.layers[i];
        if (!l->n_kernel) continue;
        for (int t = 0; t < 2; t++)
            for (int s = 0; s < n_slots; s++)
                slots[(i * 2 + t) * 2 + s] = model_floats_alloc((size_t)(t ? l->n_bias : l->n_kernel));
    }

    // Settings that a resumed run must share with the checkpoint.
    {
        size_t cap = 8192;
        settings = malloc(cap);
        int n = snprintf(settings, cap,
                         "train_cache_weights=%s\nmodel=%s\ninput_size=%dx%d\nlayer=%s\npreprocess=%s\n"
                         "interpolation=%s\nclasses=%d\nclass_mode=%s\nhidden=%d\ndropout=%.9g\noptimizer=%s\n"
                         "lr=%.9g\nmomentum=%.9g\nnesterov=%d\nbatch=%d\nseed=%ld\nclass_weight=%s\n"
                         "validation=%s\nvalidation_split=%.9g\ntrain_records=%d\nearly_stopping=%d\n",
                         meta.weights, meta.model, meta.input_w, meta.input_h, meta.layer, meta.preprocess,
                         meta.interpolation, K, cfg.binary ? "binary" : "categorical", cfg.hidden, cfg.dropout,
                         optim_kind_name(kind), opt.lr, opt.momentum, opt.nesterov, o->batch, o->seed, o->class_weight,
                         o->val_cache ? o->val_cache : "", o->validation_split, train.n, o->early_stopping);
        for (int k = 0; k < K && n < (int)cap - 300; k++) n += snprintf(settings + n, cap - n, "class%d=%s\n", k, meta.class_names[k]);
    }

    h_loss = malloc(sizeof(float) * (size_t)o->epochs), h_acc = malloc(sizeof(float) * (size_t)o->epochs);
    h_vloss = malloc(sizeof(float) * (size_t)o->epochs), h_vacc = malloc(sizeof(float) * (size_t)o->epochs);
    h_secs = malloc(sizeof(float) * (size_t)o->epochs);
    int start_epoch = 0, wait = 0, stopped = 0;
    float best_val = INFINITY;
    char ckpt_path[4200];
    sibling(o->out, ".ckpt", ckpt_path, sizeof ckpt_path);

    // --- resume -----------------------------------------------------------------
    if (o->resume && access(ckpt_path, F_OK) != 0)
        fprintf(stderr, "note: --resume: no checkpoint at %s yet, starting from the beginning\n", ckpt_path);
    if (o->resume && access(ckpt_path, F_OK) == 0) {
        if (checkpoint_read(&ck, ckpt_path) < 0) goto done;
        // Compare line by line; name the first setting that differs.
        for (const char *p = settings; *p;) {
            const char *nl = strchr(p, '\n'), *eq = strchr(p, '=');
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            char *have = checkpoint_setting(&ck, key);
            int differs = !have || strncmp(have, eq + 1, (size_t)(nl - eq - 1)) || strlen(have) != (size_t)(nl - eq - 1);
            if (differs) {
                err_set("--resume %s: %s is %s in the checkpoint, %.*s in this run", ckpt_path, key,
                        have ? have : "(absent)", (int)(nl - eq - 1), eq + 1);
                free(have);
                goto done;
            }
            free(have);
            p = nl + 1;
        }
        char *v = checkpoint_setting(&ck, "epochs_done");
        start_epoch = v ? atoi(v) : 0;
        free(v);
        v = checkpoint_setting(&ck, "step");
        opt.step = v ? atol(v) : 0;
        free(v);
        v = checkpoint_setting(&ck, "wait");
        wait = v ? atoi(v) : 0;
        free(v);
        v = checkpoint_setting(&ck, "stopped");
        stopped = v && !strcmp(v, "1");  // early stopping had ended training: only the outputs are left
        free(v);
        float hist[5];
        if (start_epoch > o->epochs) {
            err_set("--resume: %s has %d epochs done, more than --epochs %d", ckpt_path, start_epoch, o->epochs);
            goto done;
        }
        if (checkpoint_get(&ck, ckpt_path, "best_val_loss", &best_val, 1) < 0) goto done;
        for (int e = 0; e < start_epoch; e++) {
            char name[32];
            snprintf(name, sizeof name, "history%d", e);
            if (checkpoint_get(&ck, ckpt_path, name, hist, 5) < 0) goto done;
            h_loss[e] = hist[0], h_acc[e] = hist[1], h_vloss[e] = hist[2], h_vacc[e] = hist[3], h_secs[e] = hist[4];
        }
        for (int i = h0; i < m.n_layers; i++) {
            Layer *l = &m.layers[i];
            if (!l->n_kernel) continue;
            char name[96];
            for (int t = 0; t < 2; t++) {
                size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
                snprintf(name, sizeof name, "%s/%s", l->name, t ? "bias" : "kernel");
                if (checkpoint_get(&ck, ckpt_path, name, t ? l->bias : l->kernel, n) < 0) goto done;
                for (int s = 0; s < n_slots; s++) {
                    snprintf(name, sizeof name, "%s/%s/slot%d", l->name, t ? "bias" : "kernel", s);
                    if (checkpoint_get(&ck, ckpt_path, name, slots[(i * 2 + t) * 2 + s], n) < 0) goto done;
                }
            }
        }
        checkpoint_free(&ck);
        if (!o->quiet) fprintf(stderr, "Resuming from %s after epoch %d\n", ckpt_path, start_epoch);
    }

    // --- training ---------------------------------------------------------------
    const int B = o->batch;
    // Gradients only for the layers after flatten and the first dense layer,
    // whose gradient head_train_step folds into its update.
    if (head_buffers_alloc(&hb, &m, B) < 0 || grads_alloc(&g, &m, h0 + 2, m.n_layers) < 0) goto done;
    int batches_ok = batch_alloc(&batch[0], B, train.D) == 0 && batch_alloc(&batch[1], B, train.D) == 0;
    pred = malloc(sizeof(int32_t) * (size_t)B);
    perm = malloc(sizeof(int) * (size_t)train.n);
    rows = malloc(sizeof(int) * (size_t)B);
    conf = malloc(sizeof(long) * (size_t)K * K);
    if (!batches_ok || !pred || !perm || !rows || !conf) {
        err_set("out of memory for batches of %d", B);
        goto done;
    }
    char shape[64];
    if (cfg.hidden > 0) snprintf(shape, sizeof shape, "%d -> %d -> %d", train.D, cfg.hidden, m.n_outputs);
    else snprintf(shape, sizeof shape, "%d -> %d", train.D, m.n_outputs);
    printf("Train on %d samples, %d classes (%s); head %s; %s lr %g%s\n", train.n, K,
           cfg.binary ? "binary, sigmoid" : "categorical, softmax", shape, optim_kind_name(kind), opt.lr,
           class_w ? "; balanced class weights" : "");
    if (has_val) printf("Validate on %d samples\n", val.n);
    fflush(stdout);
    const int steps = (train.n + B - 1) / B;
    int epoch = start_epoch;
    for (; epoch < o->epochs && !stopped; epoch++) {
        if (!o->quiet) fprintf(stderr, "Epoch %d/%d\n", epoch + 1, o->epochs);
        Progress bar;
        progress_start(&bar, stderr, steps, "step");
        if (o->quiet) bar.enabled = 0;
        shuffle(perm, train.n, (uint64_t)o->seed, epoch);
        Running run = {0};
        // Each step also runs the next batch through the first dense layer
        // (head_train_step), so the next batch is loaded before the step.
        Batch *cur = &batch[0], *next = &batch[1];
        if (batch_load(&train, perm, 0, B, class_w, rows, cur) < 0) goto done;
        if (head_forward_first(&m, cur->x, cur->n, &hb) < 0) goto done;
        for (int s = 0; s < steps; s++) {
            int has_next = s + 1 < steps;
            if (has_next && batch_load(&train, perm, s + 1, B, class_w, rows, next) < 0) goto done;
            float loss;
            if (head_train_step(&m, &opt, slots, cur->x, cur->labels, class_w ? cur->weights : NULL, cur->n,
                                (uint64_t)o->seed, has_next ? next->x : NULL, has_next ? next->n : 0, &hb, &g,
                                &loss) < 0)
                goto done;
            if (!isfinite(loss)) {
                err_set("epoch %d step %d: the loss is %g (diverged: lower --lr)", epoch + 1, s + 1, loss);
                goto done;
            }
            optim_step_done(&opt);
            head_predict_classes(&m, &hb, cur->n, pred);
            running_add(&run, loss, cur->n, pred, cur->labels);
            Batch *t = cur;
            cur = next, next = t;
            char metrics[96];
            snprintf(metrics, sizeof metrics, "loss: %.4f - accuracy: %.4f", running_loss(&run), running_acc(&run));
            progress_update(&bar, s + 1, metrics);
        }
        h_loss[epoch] = running_loss(&run), h_acc[epoch] = running_acc(&run);
        h_vloss[epoch] = h_vacc[epoch] = NAN;
        char metrics[160];
        int len = snprintf(metrics, sizeof metrics, "loss: %.4f - accuracy: %.4f", h_loss[epoch], h_acc[epoch]);
        if (has_val) {
            Running vr;
            if (evaluate(&m, &val, B, &hb, batch[0].x, pred, &vr, NULL) < 0) goto done;
            h_vloss[epoch] = running_loss(&vr), h_vacc[epoch] = running_acc(&vr);
            snprintf(metrics + len, sizeof metrics - len, " - val_loss: %.4f - val_accuracy: %.4f", h_vloss[epoch],
                     h_vacc[epoch]);
        }
        h_secs[epoch] = (float)(progress_now() - bar.t_start);
        progress_finish(&bar, metrics);
        if (o->quiet) printf("Epoch %d/%d - %.1fs - %s\n", epoch + 1, o->epochs, h_secs[epoch], metrics);

        // Early stopping on val_loss (Keras's EarlyStopping, min_delta 0).
        int stop = 0;
        if (has_val && o->early_stopping > 0) {
            if (h_vloss[epoch] < best_val) best_val = h_vloss[epoch], wait = 0;
            else if (++wait >= o->early_stopping) stop = 1;
        }

        // Checkpoint after every epoch: a killed run resumes from here.
        Checkpoint c = {0};
        size_t tl = strlen(settings) + 128;
        c.text = malloc(tl);
        snprintf(c.text, tl, "%sepochs_done=%d\nstep=%ld\nwait=%d\nstopped=%d\n", settings, epoch + 1, opt.step, wait,
                 stop);
        int rc = checkpoint_add(&c, "best_val_loss", &best_val, 1);
        for (int e = 0; e <= epoch && rc == 0; e++) {
            char name[32];
            float hist[5] = {h_loss[e], h_acc[e], h_vloss[e], h_vacc[e], h_secs[e]};
            snprintf(name, sizeof name, "history%d", e);
            rc = checkpoint_add(&c, name, hist, 5);
        }
        for (int i = h0; i < m.n_layers && rc == 0; i++) {
            const Layer *l = &m.layers[i];
            if (!l->n_kernel) continue;
            char name[96];
            for (int t = 0; t < 2 && rc == 0; t++) {
                size_t n = (size_t)(t ? l->n_bias : l->n_kernel);
                snprintf(name, sizeof name, "%s/%s", l->name, t ? "bias" : "kernel");
                rc = checkpoint_add(&c, name, t ? l->bias : l->kernel, n);
                for (int s = 0; s < n_slots && rc == 0; s++) {
                    snprintf(name, sizeof name, "%s/%s/slot%d", l->name, t ? "bias" : "kernel", s);
                    rc = checkpoint_add(&c, name, slots[(i * 2 + t) * 2 + s], n);
                }
            }
        }
        if (rc == 0) rc = checkpoint_write(&c, ckpt_path);
        checkpoint_free(&c);
        if (rc < 0) goto done;
        // Test hook: die like kill -9 after this many epochs.
        const char *crash = getenv("VGGFT_TEST_CRASH_AFTER_EPOCH");
        if (crash && atoi(crash) == epoch + 1) _exit(137);
        if (stop) {
            printf("Epoch %d: early stopping (val_loss has not improved for %d epochs)\n", epoch + 1,
                   o->early_stopping);
            epoch++;
            break;
        }
    }
    const int n_epochs = epoch;

    // --- outputs -------------------------------------------------------------------
    ModelMeta mm;
    model_meta_from_model(&m, &mm);
    snprintf(mm.preprocess, sizeof mm.preprocess, "%s", meta.preprocess);
    snprintf(mm.interpolation, sizeof mm.interpolation, "%s", meta.interpolation);
    snprintf(mm.weights, sizeof mm.weights, "%s", meta.weights);
    mm.class_names = meta.class_names;
    mm.training = settings;
    if (model_save(&m, o->out, h0, &mm) < 0) goto done;
    char path[4200];
    sibling(o->out, ".history.csv", path, sizeof path);
    if (write_history_csv(path, n_epochs, h_loss, h_acc, h_vloss, h_vacc, h_secs) < 0) goto done;
    sibling(o->out, ".history.svg", path, sizeof path);
    char title[512];
    snprintf(title, sizeof title, "train %s: %s, %s lr %g, batch %d", o->cache, meta.layer, optim_kind_name(kind),
             opt.lr, B);
    if (n_epochs > 0 && plot_history_svg(path, title, n_epochs, h_loss, h_acc, has_val ? h_vloss : NULL,
                                         has_val ? h_vacc : NULL) < 0)
        goto done;

    Running r;
    FeatureSet *eval_set = has_val ? &val : &train;
    if (evaluate(&m, eval_set, B, &hb, batch[0].x, pred, &r, conf) < 0) goto done;
    print_report(&m, &meta, has_val ? "Validation" : "Training set (no validation data)", &r, conf);
    sibling(o->out, ".confusion.svg", path, sizeof path);
    snprintf(title, sizeof title, "%s: accuracy %.4f on %s", o->out, running_acc(&r), has_val ? "validation" : "training");
    if (plot_confusion_svg(path, title, K, meta.class_names, conf) < 0) goto done;
    sibling(o->out, "", path, sizeof path);
    printf("\nWrote %s (head weights, Keras HDF5), %s.history.csv, %s.history.svg, %s.confusion.svg\n", o->out, path,
           path, path);
    status = 0;
done:
    if (slots)
        for (int i = 0; i < m.n_layers * 4; i++) free(slots[i]);
    free(slots);
    batch_free(&batch[0]), batch_free(&batch[1]);
    free(pred), free(perm), free(rows), free(conf), free(class_w);
    free(h_loss), free(h_acc), free(h_vloss), free(h_vacc), free(h_secs), free(settings);
    checkpoint_free(&ck);
    head_buffers_free(&hb);
    if (g.dkernel) grads_free(&g);
    model_free(&m);
    features_free(&all);
    features_free(&train);
    features_free(&val);
    cache_meta_free(&meta);
    cache_meta_free(&vmeta);
    return status;
}
