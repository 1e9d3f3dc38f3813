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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas_setup.h"
#include "dataset.h"
#include "error.h"
#include "feature_set.h"
#include "fit.h"
#include "fileutil.h"
#include "forward.h"
#include "model.h"
#include "model_io.h"
#include "optim.h"
#include "parallel.h"
#include "plot.h"
#include "progress.h"
#include "stop.h"

// The settings of the features' cache that a head depends on.
static int same_features(const CacheMeta *a, const char *pa, const CacheMeta *b, const char *pb) {
    CacheMeta x = *a;
    // dtype and shard do not change what the features mean.
    x.dtype = b->dtype;
    snprintf(x.shard, sizeof x.shard, "%s", b->shard);
    char diff[600];
    if (cache_meta_diff_as(&x, b, "--cache", "--val-cache", diff, sizeof diff))
        return err_set("--val-cache %s was made with other settings than --cache %s (%s)", pb, pa, diff);
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
            if (conf) confusion_add(conf, K, fs->labels + at, pred, n);
    }
    free(rows);
    return 0;
}

int train_model_config(const CacheMeta *meta, const TrainOptions *o, ModelConfig *cfg) {
    model_config_defaults(cfg);
    if (arch_from_name(meta->model, &cfg->arch) < 0) return -1;
    cfg->input_h = meta->input_h, cfg->input_w = meta->input_w;
    cfg->cut = meta->layer;
    cfg->hidden = o->hidden;
    cfg->dropout = o->dropout;
    cfg->n_classes = meta->n_classes;
    cfg->binary = !strcmp(o->class_mode, "binary") || (!strcmp(o->class_mode, "auto") && meta->n_classes == 2);
    return 0;
}

int train_run(const TrainOptions *o) {
    int status = -1;
    // What a run stopped by a signal tells its user to do.
    const char *rerun = stop_rerun_hint(o->resume_if_same ? "rerun the same command to continue" : "rerun with --resume");
    // Default: the CPUs this process may run on (taskset, Slurm's allotment).
    const int threads = o->threads > 0 ? o->threads : parallel_cpus();
    // The head's products run on our pool, and give the same bits on any
    // --threads (see dense.h); BLAS single-threaded for the rest.
    blas_set_threads(1);
    if (blas_check_usable() < 0) return -1;
    parallel_set_threads(threads);
    stop_install();
    const size_t budget = (size_t)o->memory_budget_mb << 20;
    FeatureSet all = {0}, train = {0}, val = {0};
    CacheMeta meta = {0}, vmeta = {0};
    Model m = {0};
    HeadBuffers hb = {0};
    Grads g = {0};
    FitState fs = {0};
    Batch batch[2] = {0};  // this step's and the next one's
    float *class_w = NULL;
    int32_t *pred = NULL;
    int *perm = NULL, *rows = NULL;
    long *conf = NULL;
    char *settings = NULL;
    int has_val = 0;

    // Fail now, not after the first epoch, if the outputs cannot be written.
    const char *caches[2] = {o->cache, o->val_cache}, *cache_opts[2] = {"--cache", "--val-cache"};
    if (fit_check_out(o->out, NULL, NULL, 0, caches, cache_opts, 2) < 0) return -1;
    if (fit_lock_out(o->out) < 0) return -1;
    // --- data ---------------------------------------------------------------
    if (features_load(&all, o->cache, budget, threads, &meta) < 0) return -1;
    if (o->val_cache) {
        if (features_load(&val, o->val_cache, budget, threads, &vmeta) < 0) goto done;
        if (same_features(&meta, o->cache, &vmeta, o->val_cache) < 0) goto done;
        // The same records (the same cache, or a copy): legal, but the
        // validation figures would then be training figures.
        if (cache_content_id(&meta)[0] && !strcmp(cache_content_id(&meta), cache_content_id(&vmeta)))
            log_printf(stderr, "warning: --val-cache %s holds the very records of --cache %s: the validation figures "
                       "will measure the training data\n", o->val_cache, o->cache);
        train = all;
        memset(&all, 0, sizeof all);
        has_val = 1;
    } else if (o->validation_split > 0) {
        // Keras: the first int(F * n_c) files each class lists.
        int rc = features_split(&all, meta.n_classes, meta.class_files, o->validation_split, &train, &val);
        features_free(&all);
        if (rc < 0) goto done;
        has_val = val.n > 0;
        if (!has_val) {
            if (o->early_stopping > 0 || o->restore_best) {
                err_set("--validation-split %g leaves no validation records (int(F * n) is 0 for every class), so "
                        "%s has nothing to watch",
                        o->validation_split, o->early_stopping > 0 ? "--early-stopping" : "--restore-best-weights");
                goto done;
            }
            log_printf(stderr, "warning: --validation-split %g leaves no validation records (int(F * n) is 0 for "
                               "every class): training without validation\n",
                       o->validation_split);
        }
    } else {
        train = all;
        memset(&all, 0, sizeof all);
    }
    cache_meta_warn_partial(&meta, o->cache);
    if (o->val_cache) cache_meta_warn_partial(&vmeta, o->val_cache);
    const int K = meta.n_classes;
    if (K < 2) {
        err_set("%s: the cache has a single class (%s); a classifier needs at least 2", o->cache,
                meta.class_names[0]);
        goto done;
    }
    {
        // What the head file cannot record is refused now, not after the
        // last epoch.
        ModelMeta w = {.n_classes = K, .class_names = meta.class_names};
        if (model_meta_check_writable(&w, o->out) < 0) goto done;
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
    if (train_model_config(&meta, o, &cfg) < 0 || model_build(&m, &cfg) < 0) goto done;
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
    if (fit_init(&fs, &m, h0, &opt, o->epochs) < 0) goto done;  // (threads not recorded: any count gives the same bits)
    fit_set_monitor(&fs, !strcmp(o->monitor, "val_accuracy"), o->restore_best);

    // Settings that a resumed run must share with the checkpoint.
    {
        size_t cap = 8192;
        char f1[32], f2[32], f3[32];
        settings = malloc(cap);
        // The caches by their records' digest (another cache at the same
        // path, or the same one moved) and the validation folder by its
        // real path ("c_val" and "$PWD/c_val/" are one folder).
        char val_real[PATH_MAX];
        int n = snprintf(settings, cap,
                         "tool=train\ntrain_content=%s\n"
                         "train_cache_weights=%s\nmodel=%s\ninput_size=%dx%d\nlayer=%s\npreprocess=%s\n"
                         "interpolation=%s\nclasses=%d\nclass_mode=%s\nhidden=%d\ndropout=%s\noptimizer=%s\n"
                         "lr=%s\nmomentum=%s\nnesterov=%d\nbatch=%d\nseed=%ld\nclass_weight=%s\n"
                         "validation=%s\nvalidation_content=%s\nvalidation_split=%.9g\ntrain_records=%d\nearly_stopping=%d\n"
                         "monitor=%s\nrestore_best_weights=%d\n",
                         cache_content_id(&meta), meta.weights, meta.model, meta.input_w, meta.input_h, meta.layer, meta.preprocess,
                         meta.interpolation, K, cfg.binary ? "binary" : "categorical", cfg.hidden, fit_float_text(cfg.dropout, f1),
                         optim_kind_name(kind), fit_float_text(opt.lr, f2), fit_float_text(opt.momentum, f3), opt.nesterov, o->batch, o->seed, o->class_weight,
                         o->val_cache ? path_canonical(o->val_cache, val_real) : "",
                         o->val_cache ? cache_content_id(&vmeta) : "", o->validation_split, train.n,
                         o->early_stopping, o->early_stopping > 0 || o->restore_best ? o->monitor : "val_loss", o->restore_best);
        for (int k = 0; k < K && n < (int)cap - 300; k++) n += snprintf(settings + n, cap - n, "class%d=%s\n", k, meta.class_names[k]);
    }
    char ckpt_path[4200], title[512], opt_text[96];
    snprintf(title, sizeof title, "train %s: %s at %dx%d, %s, batch %d", o->cache, meta.layer, meta.input_w,
             meta.input_h, optim_text(&opt, opt_text, sizeof opt_text), o->batch);
    if (fit_begin(&fs, settings, o->out, o->resume ? FIT_RESUME : o->resume_if_same ? FIT_RESUME_IF_SAME : FIT_RESUME_NO,
                  title, ckpt_path, sizeof ckpt_path) < 0) goto done;

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
    printf("Train on %d samples, %d classes (%s); head %s; %s lr %g%s; %d thread%s\n", train.n, K,
           cfg.binary ? "binary, sigmoid" : "categorical, softmax", shape, optim_kind_name(kind), opt.lr,
           class_w ? "; balanced class weights" : "", threads, threads == 1 ? "" : "s");
    if (has_val) printf("Validate on %d sample%s\n", val.n, val.n == 1 ? "" : "s");
    fflush(stdout);
    const int steps = (train.n + B - 1) / B;
    int stopped_by = 0;
    const char *term = getenv("VGGFT_TEST_SIGTERM_AFTER_STEP");  // test hook: a SIGTERM after this step
    long term_step = term ? atol(term) : 0;
    while (fs.epochs_done < o->epochs && !fs.stopped) {
        const int epoch = fs.epochs_done;
        Progress bar;
        fit_epoch_start(&fs, &bar, steps, o->quiet, perm, train.n, (uint64_t)o->seed);
        // Each step also runs the next batch through the first dense layer
        // (head_train_step), so the next batch is loaded before the step.
        Batch *cur = &batch[0], *next = &batch[1];
        int s = (int)fs.steps_in_epoch;
        if (batch_load(&train, perm, s, B, class_w, rows, cur) < 0) goto done;
        if (head_forward_first(&m, cur->x, cur->n, &hb) < 0) goto done;
        for (; s < steps; s++) {
            int has_next = s + 1 < steps;
            if (has_next && batch_load(&train, perm, s + 1, B, class_w, rows, next) < 0) goto done;
            float loss;
            if (head_train_step(&m, &fs.opt, fs.slots, cur->x, cur->labels, class_w ? cur->weights : NULL, cur->n,
                                (uint64_t)o->seed, has_next ? next->x : NULL, has_next ? next->n : 0, &hb, &g,
                                &loss) < 0)
                goto done;
            if (!isfinite(loss)) {
                fit_diverged(epoch, s, loss);
                goto done;
            }
            optim_step_done(&fs.opt);
            if (term_step > 0 && fs.opt.step == term_step) raise(SIGTERM);
            head_predict_classes(&m, &hb, cur->n, pred);
            running_add(&fs.run, loss, cur->n, pred, cur->labels);
            Batch *t = cur;
            cur = next, next = t;
            char metrics[160], kv[2][KERAS_VALUE_MAX];
            snprintf(metrics, sizeof metrics, "loss: %s - accuracy: %s", keras_value(running_loss(&fs.run), kv[0]),
                     keras_value(running_acc(&fs.run), kv[1]));
            progress_update(&bar, s + 1, metrics);
            if ((stopped_by = stop_requested()) && s + 1 < steps) {
                // Between steps: the state is whole. Save it and stop.
                fs.steps_in_epoch = s + 1;
                fs.epoch_secs = progress_now() - bar.t_start;
                if (fit_save(&fs, settings, ckpt_path) < 0) goto done;
                log_printf(stderr, "\n%s: stopped after step %d/%d of epoch %d; state saved in %s: %s\n",
                           stop_signal_name(stopped_by), s + 1, steps, epoch + 1, ckpt_path,
                           rerun);
                status = EXIT_STOPPED;
                goto done;
            }
        }
        float tl = running_loss(&fs.run), ta = running_acc(&fs.run), vl = NAN, va = NAN;
        char metrics[320], kv[4][KERAS_VALUE_MAX];
        int len = snprintf(metrics, sizeof metrics, "loss: %s - accuracy: %s", keras_value(tl, kv[0]), keras_value(ta, kv[1]));
        if (has_val) {
            Running vr;
            if (evaluate(&m, &val, B, &hb, batch[0].x, pred, &vr, NULL) < 0) goto done;
            vl = running_loss(&vr), va = running_acc(&vr);
            snprintf(metrics + len, sizeof metrics - len, " - val_loss: %s - val_accuracy: %s", keras_value(vl, kv[2]),
                     keras_value(va, kv[3]));
        }
        float secs = (float)(progress_now() - bar.t_start);
        progress_finish(&bar, metrics);
        if (o->quiet) log_printf(stdout, "Epoch %d/%d - %.1fs - %s\n", epoch + 1, o->epochs, secs, metrics);
        fit_end_epoch(&fs, tl, ta, vl, va, secs);
        int stop = has_val ? fit_early_stop(&fs, o->early_stopping) : 0;
        if (stop < 0) goto done;

        // Checkpoint after every epoch: a killed run resumes from here.
        if (fit_save(&fs, settings, ckpt_path) < 0) goto done;
        // Test hook: die like kill -9 after this many epochs.
        const char *crash = getenv("VGGFT_TEST_CRASH_AFTER_EPOCH");
        if (crash && atoi(crash) == epoch + 1) _exit(137);
        if (stop)
            printf("Epoch %d: early stopping (%s has not improved for %d epochs)\n", epoch + 1, o->monitor,
                   o->early_stopping);
        if ((stopped_by = stop_requested()) && fs.epochs_done < o->epochs && !stop) {
            log_printf(stderr, "%s: stopped after epoch %d; state saved in %s: %s\n", stop_signal_name(stopped_by),
                       epoch + 1, ckpt_path, rerun);
            status = EXIT_STOPPED;
            goto done;
        }
    }

    // --- outputs -------------------------------------------------------------------
    // Keras's EarlyStopping.on_train_end with restore_best_weights (the
    // checkpoint keeps the last epoch's weights, which more epochs continue).
    if (fit_restore_best(&fs) < 0) goto done;
    ModelMeta mm;
    model_meta_from_model(&m, &mm);
    snprintf(mm.preprocess, sizeof mm.preprocess, "%s", meta.preprocess);
    snprintf(mm.interpolation, sizeof mm.interpolation, "%s", meta.interpolation);
    snprintf(mm.weights, sizeof mm.weights, "%s", meta.weights);
    snprintf(mm.decode, sizeof mm.decode, "%s", meta.decode);
    mm.class_names = meta.class_names;
    mm.training = settings;
    mm.features_made_by = meta.command;  // names the --weights file finetune and predict need
    if (model_save(&m, o->out, h0, &mm) < 0) goto done;
    if (fit_write_history_files(&fs) < 0) goto done;
    Running r;
    FeatureSet *eval_set = has_val ? &val : &train;
    if (evaluate(&m, eval_set, B, &hb, batch[0].x, pred, &r, conf) < 0) goto done;
    fit_print_report(stdout, has_val ? "Validation" : "Training set (no validation data)", &r, K, meta.class_names,
                     conf);
    if (fit_finish(o->out, "head weights, Keras HDF5", has_val, &r, K, meta.class_names, conf) < 0) goto done;
    status = 0;
done:
    batch_free(&batch[0]), batch_free(&batch[1]);
    free(pred), free(perm), free(rows), free(conf), free(class_w);
    free(settings);
    fit_free(&fs);
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
