// finetune: images (or cached features of the layer below --unfreeze) ->
// frozen base -> trainable base layers -> head, trained together, Keras's
// fit() semantics, on the CPU or the GPU (--device; the walk's arithmetic
// runs there, on the GPU the head's too; the data stay on the CPU: walk.h).
//
// Flow: the head file fixes the model (arch, input size, cut, classes,
// preprocessing) -> base weights (checked against the head's) -> the data:
// image folders read by loader threads that decode, resize, augment
// (seed, epoch, image) and preprocess, or a feature cache -> for each batch
// finetune_step (common/walk.h) -> per epoch validation, history,
// checkpoint -> the whole model as Keras HDF5, the report and the plots.
// Every random draw is a function of the seed and the epoch, step or image,
// so a resumed run ends with the weights of an uninterrupted one.
#include "finetune.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment.h"
#include "blas_setup.h"
#include "cache.h"
#include "cli.h"
#include "dataset.h"
#include "device.h"
#include "error.h"
#include "feature_set.h"
#include "fileutil.h"
#include "fit.h"
#include "gpu_walk.h"
#include "hash.h"
#include "image.h"
#include "image_write.h"
#include "loader.h"
#include "model_io.h"
#include "parallel.h"
#include "plot.h"
#include "progress.h"
#include "stop.h"
#include "walk.h"
#include "weights_source.h"

// --- data -----------------------------------------------------------------------

// One split (training or validation): an image folder's items, or a cache.
typedef struct {
    int from_cache;
    Dataset ds;          // images
    FeatureSet fs;       // cached features
    CacheMeta meta;
    int n;               // items
    int32_t *labels;     // n (points into ds or fs)
    uint8_t *reported;   // images: 1 once a failure to load was reported
    long skipped;        // images that failed to load (reported, not trained on)
} Split;

static void split_free(Split *s) {
    if (s->from_cache) {
        features_free(&s->fs);
        cache_meta_free(&s->meta);
    } else {
        free(s->labels);
        dataset_free(&s->ds);
    }
    free(s->reported);
    memset(s, 0, sizeof *s);
}

static int split_from_dataset(Split *s) {
    s->n = s->ds.n_items;
    s->labels = malloc(sizeof(int32_t) * (size_t)(s->n ? s->n : 1));
    s->reported = calloc((size_t)(s->n ? s->n : 1), 1);
    if (!s->labels || !s->reported) return err_set("out of memory");
    for (int i = 0; i < s->n; i++) s->labels[i] = s->ds.items[i].label;
    return 0;
}

// Loader context: item i of a run is the split's item order[start + i].
typedef struct {
    const Split *s;
    const int *order;
    long start;
    LoadOptions load;
    const AugmentSpec *aug;  // NULL: none
    uint64_t seed;
    int epoch;
} LoadCtx;

static int load_item(void *vctx, long index, float *out, void *extra) {
    LoadCtx *c = vctx;
    int item = c->order[c->start + index];
    *(int *)extra = item;
    char *path = dataset_item_path(&c->s->ds, item);
    if (!path) return err_set("out of memory");
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = image_read_file(path, &data, &n);
    if (rc == 0) {
        AugmentParams p;
        if (c->aug) augment_draw(c->aug, c->seed, c->epoch, item, c->load.h, c->load.w, &p);
        rc = image_chain(data, n, path, &c->load, c->aug ? &p : NULL, out, NULL);
    }
    free(data);
    free(path);
    return rc;
}

// Reads one pass over a split in a given order, batch by batch.
typedef struct {
    Split *s;
    const int *order;
    long pos, end;       // positions in order still to read: [pos, end)
    Loader *loader;      // images
    LoadCtx ctx;
    int *rows;           // cache: scratch for one batch
    LoaderItem **taken, **ok;  // images: one batch's items, and those that loaded
    int quiet;
} Reader;

static void reader_stop(Reader *r) {
    loader_stop(r->loader);
    free(r->rows), free(r->taken), free(r->ok);
    memset(r, 0, sizeof *r);
}

static int reader_start(Reader *r, Split *s, const int *order, long start, const LoadOptions *load,
                        const AugmentSpec *aug, uint64_t seed, int epoch, int cap, int threads, int quiet) {
    memset(r, 0, sizeof *r);
    if (start > s->n) start = s->n;  // resumed after an epoch's last step
    r->s = s, r->order = order, r->pos = start, r->end = s->n, r->quiet = quiet;
    r->rows = malloc(sizeof(int) * (size_t)cap);
    r->taken = malloc(sizeof(LoaderItem *) * (size_t)cap);
    r->ok = malloc(sizeof(LoaderItem *) * (size_t)cap);
    if (!r->rows || !r->taken || !r->ok) {
        reader_stop(r);
        return err_set("out of memory");
    }
    if (s->from_cache) return 0;
    r->ctx = (LoadCtx){s, order, start, *load, aug, seed, epoch};
    size_t floats = (size_t)load->w * load->h * 3;
    r->loader = loader_start(s->n - start, threads, 2 * cap + threads, floats, sizeof(int), load_item, &r->ctx);
    if (!r->loader) {
        ErrKept keep;
        err_keep(&keep);
        reader_stop(r);
        return err_restore(&keep);
    }
    return 0;
}


// Copies of a batch's loaded items into x, one task per item: on a GPU step
// the host's copy is time the GPU waits (5.4 MB for a 150x150 batch of 20;
// one memcpy of it took 0.13 ms on the development machine with both sides
// in cache, longer when the loader threads wrote it from other cores; the
// gain on a GPU node is not measured yet).
typedef struct {
    LoaderItem **items;
    float *x;
    long item_floats;
} BatchCopy;

static void copy_item(void *ctx, int i) {
    const BatchCopy *c = ctx;
    memcpy(c->x + (size_t)i * c->item_floats, c->items[i]->data, sizeof(float) * (size_t)c->item_floats);
}

// The next `count` positions of the order (fewer at the end) into x and
// labels; images that fail to load are reported once and left out, so *n
// may be less than count. Returns -1 on a cache read error, or when an
// image could not be read for want of memory (not the file's fault).
static int reader_fill(Reader *r, int count, long item_floats, float *x, int32_t *labels, int *n) {
    *n = 0;
    long stop = r->pos + count < r->end ? r->pos + count : r->end;
    if (r->s->from_cache) {
        for (long p = r->pos; p < stop; p++) r->rows[*n] = r->order[p], labels[*n] = r->s->labels[r->order[p]], (*n)++;
        r->pos = stop;
        return features_gather(&r->s->fs, r->rows, *n, x);
    }
    // Take the batch's items (the loader's ring holds 2 batches and more),
    // copy them side by side, then give their slots back.
    LoaderItem **taken = r->taken, **ok = r->ok, *oom = NULL;
    int n_taken = 0;
    for (; r->pos < stop; r->pos++) {
        LoaderItem *li = loader_next(r->loader);
        int item = *(int *)li->extra;
        taken[n_taken++] = li;
        if (!li->ok && li->system_error && !oom) oom = li;  // not the file's fault: stop, do not skip it
        if (li->ok) {
            ok[*n] = li;
            labels[(*n)++] = r->s->labels[item];
        } else if (!li->system_error && !r->s->reported[item]) {
            r->s->reported[item] = 1;
            r->s->skipped++;
            log_wipe_line(stderr);  // in the bar's place (a validation bar erased when done left one above)
            log_printf(stderr, "warning: skipped %s\n", li->msg);  // a warning: even with --quiet
        }
    }
    if (oom) err_set("%s", oom->msg);
    BatchCopy c = {ok, x, item_floats};
    if (!oom) parallel_for(*n, copy_item, &c);
    for (int i = 0; i < n_taken; i++) loader_release(r->loader, taken[i]);
    return oom ? -1 : 0;
}

// --- batches read ahead (GPU) -------------------------------------------------------

// The batch a step or a prediction reads and, on the GPU, the next one, read
// into the walk's other buffer and sent while the step runs (walk_prefetch).
// With x_next NULL (a CPU walk, where a step is done when it returns)
// batches are read one at a time. Training and validation share one.
typedef struct {
    float *x, *x_next;               // the walk's input and input_next
    int32_t *labels, *labels_next;
    int n;                           // items in x (batch_take)
    int n_next, rc_next, have_next;  // the batch read ahead, and its read's result
    ErrKept err_next;                // its error, reported when it is taken
} ReadAhead;

// The next batch into r->x, r->labels, r->n: the one read ahead, or one read
// now. -1 as reader_fill (a read-ahead's error at its own turn).
static int batch_take(ReadAhead *r, Reader *rd, int B, long item_floats) {
    if (!r->have_next) return reader_fill(rd, B, item_floats, r->x, r->labels, &r->n);
    float *tx = r->x;
    int32_t *tl = r->labels;
    r->x = r->x_next, r->x_next = tx, r->labels = r->labels_next, r->labels_next = tl;
    r->n = r->n_next, r->have_next = 0;
    return r->rc_next < 0 ? err_restore(&r->err_next) : 0;
}

// While a step or a prediction runs on r->x: the next batch (if the data has
// one; on a GPU walk only) into the other buffer, and its upload started. A
// read error is kept for batch_take; -1 (err_set) only on a GPU error.
static int batch_read_ahead(ReadAhead *r, Reader *rd, BaseWalk *w, int B, long item_floats) {
    if (!r->x_next || rd->pos >= rd->end) return 0;
    r->rc_next = reader_fill(rd, B, item_floats, r->x_next, r->labels_next, &r->n_next);
    r->have_next = 1;
    if (r->rc_next < 0) {
        err_keep(&r->err_next);
        return 0;
    }
    return r->n_next > 0 ? walk_prefetch(w, r->x_next, r->n_next) : 0;
}

// A batch read ahead and not taken (a stop, an error): forgotten, so that
// its buffer may be filled again.
static void batch_drop_ahead(ReadAhead *r, BaseWalk *w) {
    if (r->have_next) walk_prefetch(w, NULL, 0);
    r->have_next = 0;
}

// --- evaluation -------------------------------------------------------------------

typedef struct {
    BaseWalk *walk;
    HeadBuffers *hb;
    const LoadOptions *load;
    int batch, threads, quiet;
    long item_floats;
    ReadAhead *ra;               // the batch buffers (training's: no step is under way)
    int32_t *pred;
    const int *identity;
} Eval;

// Loss (unweighted), accuracy and (when conf) the confusion matrix of the
// model on a split, without dropout or augmentation. With interruptible, a
// SIGTERM/SIGINT ends it early and it returns 1 (the figures are partial).
// Progress (a CPU validates 153 photos in about 20 s): on epoch_bar, the
// epoch's finished bar, as "validating 40/153 - EPOCH_METRICS" (Keras's bar
// waits at its total while it validates); without one on a bar of its own
// labelled `doing`, erased on a terminal when done (the caller's line
// replaces it).
static int evaluate(Eval *e, Split *s, Running *r, long *conf, int interruptible, Progress *epoch_bar,
                    const char *epoch_metrics, const char *doing) {
    memset(r, 0, sizeof *r);
    Progress own;
    if (!epoch_bar) {
        progress_start(&own, stderr, s->n, s->from_cache ? "record" : "img");
        if (e->quiet) own.enabled = 0;
    }
    const Model *m = e->walk->m;
    int K = m->cfg.n_classes;
    if (conf) memset(conf, 0, sizeof(long) * (size_t)K * K);
    Reader rd;
    if (reader_start(&rd, s, e->identity, 0, e->load, NULL, 0, 0, e->batch, e->threads, e->quiet) < 0) return -1;
    int rc = 0;
    WalkTimes keep = e->walk->times;  // the training steps' breakdown leaves validation out
    // On the GPU the next batch is read (and sent) while the GPU runs this
    // one, as in training.
    ReadAhead *ra = e->ra;
    while (ra->have_next || rd.pos < rd.end) {
        if (interruptible && stop_requested()) {
            rc = 1;
            break;
        }
        if ((rc = batch_take(ra, &rd, e->batch, e->item_floats)) < 0) break;
        const long done = rd.pos;  // images of this batch and before, skipped ones too
        const int n = ra->n;
        if (n == 0) continue;
        if ((rc = walk_predict_begin(e->walk, e->hb, ra->x, n)) < 0 ||
            (rc = batch_read_ahead(ra, &rd, e->walk, e->batch, e->item_floats)) < 0 ||
            (rc = walk_predict_end(e->walk, e->hb)) < 0)
            break;
        float loss = head_backward(m, e->walk->features, ra->labels, NULL, n, e->hb, NULL, NULL);
        head_predict_classes(m, e->hb, n, e->pred);
        running_add(r, loss, n, e->pred, ra->labels);
        if (conf) confusion_add(conf, K, ra->labels, e->pred, n);
        if (epoch_bar) {
            char text[400];
            // (First: a narrow terminal cuts the line's end.)
            snprintf(text, sizeof text, "validating %ld/%d - %s", done, s->n, epoch_metrics);
            progress_status(epoch_bar, text);
        } else {
            progress_update(&own, done, doing);
        }
    }
    if (!epoch_bar) progress_close(&own, doing);
    batch_drop_ahead(ra, e->walk);
    e->walk->times = keep;
    reader_stop(&rd);
    return rc;
}

// --- checks -------------------------------------------------------------------------

int finetune_read_head(const char *path, ModelMeta *hm) {
    if (model_meta_read(path, hm) < 0) {
        // A Keras file (the ImageNet base's weights, a save_weights file):
        // readable HDF5 without vggft's settings.
        if (strstr(err_msg(), "not a vggft model file"))
            return err_set("--head %s: not a head trained by `train` (it lacks the settings train records: input "
                           "size, cut, preprocessing, class names): give the --out HEAD.h5 of train as --head (a "
                           "Keras weights file of the conv base goes to --weights)",
                           path);
        return err_prefix("--head: ");
    }
    if (strcmp(hm->contents, "head"))
        return err_set("--head %s holds a %s model, not a head trained by `train` (give the --out of train; "
                       "a model from finetune is predict's --model)",
                       path, hm->contents);
    if (!hm->class_names) return err_set("--head %s has no class names", path);
    return 0;
}

// The pooling layer whose output the trainable part starts from, for
// --cache: the layer just below the first trainable one.
static int cache_layer_for(const Model *m, char *why, size_t size) {
    int below = m->first_trainable_base - 1;
    if (below >= 1 && m->layers[below].kind == LAYER_POOL) return below;
    snprintf(why, size,
             "--cache needs the cached output of the layer just below --unfreeze %s, which is %s, not a pooling "
             "layer (extract caches pooling layers only): unfreeze from a block's first conv (blockN_conv1) or "
             "fine-tune from images (--data)",
             m->unfreeze_name, m->layers[below].name);
    return -1;
}

// A feature cache fit for this model: the head's settings, weights and
// classes (model_meta_check_cache), features of layer `need`.
static int check_cache(const CacheMeta *c, const char *path, const Model *m, const ModelMeta *hm, const char *weights_id,
                       int need) {
    if (model_meta_check_cache(hm, c, path, weights_id) < 0) return -1;
    if (strcmp(c->layer, m->layers[need].name))
        return err_set("%s holds %s features; --unfreeze %s needs %s (extract --layer %s)", path, c->layer,
                       m->unfreeze_name, m->layers[need].name, m->layers[need].name);
    return 0;
}

// --save-augmented DIR N: the first N training images of epoch 1 as the
// generator gives them (the seeds' save_to_dir), as PNG files.
static int save_augmented(const Split *s, const int *order, const LoadOptions *load, const AugmentSpec *aug,
                          uint64_t seed, const char *dir, int count) {
    if (make_dirs(dir) < 0) return -1;
    size_t px = (size_t)load->w * load->h;
    uint8_t *rgb = malloc(px * 3), *out8 = malloc(px * 3);
    float *f = malloc(sizeof(float) * px * 3), *g = malloc(sizeof(float) * px * 3);
    int rc = rgb && out8 && f && g ? 0 : err_set("out of memory");
    int written = 0;
    for (int i = 0; rc == 0 && i < s->n && written < count; i++) {
        int item = order[i];
        char *path = dataset_item_path(&s->ds, item);
        if (image_load_rgb8(path, load, rgb, NULL) < 0) {
            free(path);
            continue;  // reported when training reaches it
        }
        free(path);
        for (size_t k = 0; k < px * 3; k++) f[k] = rgb[k];
        AugmentParams p;
        augment_draw(aug, seed, 0, item, load->h, load->w, &p);
        augment_apply(&p, f, load->h, load->w, 3, g);
        image_f32_to_rgb8_keras(g, px * 3, out8);
        char name[4200];
        snprintf(name, sizeof name, "%s/aug_%05d_%s.png", dir, written, s->ds.class_names[s->labels[item]]);
        rc = image_write_png(name, out8, load->w, load->h);
        written++;
    }
    if (rc == 0)
        printf("Wrote %d augmented training image%s to %s%s\n", written, written == 1 ? "" : "s", dir,
               written < count ? " (every training image that could be read: one each)" : "");
    free(rgb), free(out8), free(f), free(g);
    return rc;
}

// --- the run -----------------------------------------------------------------------------

// fit_save of the host copies: on the GPU, the device's weights and slots
// are brought back first, so a checkpoint is the same file on either device.
static int save_state(FitState *fs, BaseWalk *walk, Model *m, const char *settings, const char *path) {
    if (walk_download(walk, m, fs->slots) < 0) return -1;
    return fit_save(fs, settings, path);
}

// After an image the system failed to read (err_is_system: memory,
// descriptors, I/O) between two steps, when the state is whole: saved, and
// the error (kept) says where, so a rerun with --resume loses nothing.
// what: the state saved, with its verb ("the state after step 3 of epoch 1
// is"). epoch_secs:
// the epoch's seconds so far.
static void save_after_system_error(FitState *fs, BaseWalk *walk, Model *m, const char *settings, const char *path,
                                    double epoch_secs, const char *what, const char *rerun) {
    char why[ERR_MSG_MAX];
    snprintf(why, sizeof why, "%s", err_msg());
    fs->epoch_secs = epoch_secs;
    if (save_state(fs, walk, m, settings, path) == 0) err_set("%s; %s saved in %s: %s", why, what, path, rerun);
}

int finetune_default_unfreeze(const char *cut, char *buf, size_t size) {
    int block = 0, used = 0;
    if (!cut || sscanf(cut, "block%d_pool%n", &block, &used) != 1 || cut[used] || block < 1)
        return err_set("the head's base is cut at %s, not at a block's pooling layer: give --unfreeze LAYER",
                       cut ? cut : "(none)");
    snprintf(buf, size, "block%d_conv1", block);
    return 0;
}

int finetune_run(const FinetuneOptions *o) {
    int status = -1;
    // What a run stopped by a signal tells its user to do.
    const char *rerun = stop_rerun_hint(o->resume_if_same ? "rerun the same command to continue" : "rerun with --resume");
    // Default: the CPUs this job may use (taskset, Slurm's allotment).
    const int threads = o->threads > 0 ? o->threads : parallel_cpus();
    blas_set_threads(threads);
    if (blas_check_usable() < 0) return -1;
    parallel_set_threads(threads);
    stop_install();
    DeviceKind dev;
    char dev_note[300];
    GpuPrecision precision;
    if (device_select_precision(o->device, o->precision, &dev, &precision, dev_note, sizeof dev_note) < 0) return -1;

    ModelMeta hm = {0};
    Model m = {0};
    Split train = {0}, val = {0};
    BaseWalk walk = {0};
    HeadBuffers hb = {0};
    Grads g = {0};
    FitState fs = {0};
    float *class_w = NULL, *sw = NULL;
    int32_t *labels = NULL, *labels_next = NULL, *pred = NULL;
    int *perm = NULL, *identity = NULL;
    long *conf = NULL;
    char *settings = NULL;
    int has_val = 0;
    AugmentSpec aug;
    augment_spec_seeds(&aug);

    // Refused now, not after training: an --out that is an input, a folder or a device.
    const char *inputs[2] = {o->head, o->weights}, *names[2] = {"--head", "--weights"};
    // Nor inside the image folders: extract and Keras would read its folder
    // as a class (or a class's subfolder) of images.
    const char *dirs[4] = {o->cache, o->val_cache, o->data, o->val_data},
               *dir_opts[4] = {"--cache", "--val-cache", "--data", "--val-data"};
    if (fit_check_out(o->out, inputs, names, 2, dirs, dir_opts, 4) < 0) return -1;
    if (fit_lock_out(o->out) < 0) return -1;
    // Augmented images written into the data would be read as training (or
    // validation) images by every later run, under the class they landed in.
    const char *data_dirs[2] = {o->data, o->val_data}, *data_opts[2] = {"--data", "--val-data"};
    for (int i = 0; i < 2 && o->save_augmented; i++)
        if (data_dirs[i] && path_within(o->save_augmented, data_dirs[i])) {
            err_set("--save-augmented %s lies inside %s %s: later runs would read the augmented images as %s "
                    "images; write them elsewhere",
                    o->save_augmented, data_opts[i], data_dirs[i], i ? "validation" : "training");
            return EXIT_USAGE;
        }
    // --- the model, from the head file ---------------------------------------------
    if (finetune_read_head(o->head, &hm) < 0) goto done;
    ModelConfig cfg;
    model_meta_to_config(&hm, &cfg);
    char default_unfreeze[LAYER_NAME_MAX];
    cfg.unfreeze = o->unfreeze;
    if (!cfg.unfreeze) {
        if (finetune_default_unfreeze(cfg.cut, default_unfreeze, sizeof default_unfreeze) < 0) goto done;
        cfg.unfreeze = default_unfreeze;
    }
    if (model_build(&m, &cfg) < 0) {
        // A base that builds without --unfreeze: the layer is what is wrong,
        // a usage error (exit 2) like one main() could catch before the head.
        ErrKept keep;
        err_keep(&keep);
        ModelConfig frozen = cfg;
        frozen.unfreeze = NULL;
        Model probe = {0};
        if (model_build(&probe, &frozen) == 0) status = EXIT_USAGE;
        model_free(&probe);
        err_restore(&keep);
        goto done;
    }
    if (m.first_trainable_base >= m.n_base) {
        err_set("--unfreeze %s: nothing of the base below the cut (%s) would train", cfg.unfreeze, m.cut_name);
        status = EXIT_USAGE;
        goto done;
    }
    // The pixel budget the head's features were made with (extract's
    // --max-pixels): an image over it is decoded (or skipped) as it was.
    LoadOptions load = {.w = hm.input_w, .h = hm.input_h,
                        .max_pixels = model_meta_pixel_budget(&hm, IMAGE_MAX_PIXELS_DEFAULT)};
    if (interp_parse(hm.interpolation, &load.interp) < 0 || prep_parse(hm.preprocess, &load.prep) < 0) goto done;
    // Fine-tuning decodes JPEGs in full, as Keras does, whatever the head's
    // features were made from: say so when that was a reduced decode.
    if (!o->cache && !strncmp(hm.decode, "reduced", 7))
        log_printf(stderr,
                   "warning: --head %s was trained on features of JPEGs decoded at a reduced scale (extract "
                   "--reduced-decode); fine-tuning decodes them in full, as Keras does, so its figures before "
                   "fine-tuning differ from train's\n",
                   o->head);

    // --- data -------------------------------------------------------------------------
    const int from_cache = o->cache != NULL;
    int walk_from = 1;
    if (from_cache) {
        char why[400];
        int need = cache_layer_for(&m, why, sizeof why);
        if (need < 0) {
            err_set("%s", why);
            goto done;
        }
        walk_from = need + 1;
    } else {
        if (o->augment_given && augment_spec_parse(o->augment, &aug) < 0) goto done;
        if (o->no_augment) augment_spec_none(&aug);
    }

    // Base weights (the frozen part and the starting point of the trainable
    // one): the ones the head's features came from.
    char weights_id[96];
    // (--seed is the seed of augmentation, shuffling and dropout: random
    // base weights take the head's.)
    if (load_head_base_weights(&m, o->weights, -1, o->quiet, o->head, &hm, weights_id, sizeof weights_id) < 0)
        goto done;
    if (model_check_finite(&m, 1, m.n_base) < 0) {
        err_prefix("--weights %s: ", o->weights ? o->weights : "(the head's)");
        goto done;
    }
    if (model_load_head(&m, o->head) < 0) goto done;
    if (model_check_finite(&m, m.n_base, m.n_layers) < 0) {
        err_prefix("--head %s: ", o->head);
        goto done;
    }

    const size_t budget = (size_t)o->memory_budget_mb << 20;
    // The data's content for the resume settings: a cache's records digest,
    // an image folder's listing (dataset_content_id).
    char data_content[80] = "", val_content[80] = "";
    if (from_cache) {
        train.from_cache = 1;
        if (features_load(&train.fs, o->cache, budget, threads, &train.meta) < 0) goto done;
        if (check_cache(&train.meta, o->cache, &m, &hm, weights_id, walk_from - 1) < 0) goto done;
        snprintf(data_content, sizeof data_content, "%s", cache_content_id(&train.meta));
        cache_meta_warn_partial(&train.meta, o->cache);
        train.n = train.fs.n, train.labels = train.fs.labels;
        if (o->val_cache) {
            val.from_cache = 1;
            if (features_load(&val.fs, o->val_cache, budget, threads, &val.meta) < 0) goto done;
            if (check_cache(&val.meta, o->val_cache, &m, &hm, weights_id, walk_from - 1) < 0) goto done;
            snprintf(val_content, sizeof val_content, "%s", cache_content_id(&val.meta));
            cache_meta_warn_partial(&val.meta, o->val_cache);
            val.n = val.fs.n, val.labels = val.fs.labels;
        } else if (o->validation_split > 0) {
            // The first int(F * n_c) records of each class, as train does.
            Split all = train;
            memset(&train, 0, sizeof train);
            train.from_cache = val.from_cache = 1;
            int rc = features_split(&all.fs, hm.n_classes, all.meta.class_files, o->validation_split, &train.fs,
                                    &val.fs);
            train.n = train.fs.n, train.labels = train.fs.labels, val.n = val.fs.n, val.labels = val.fs.labels;
            // The cache's settings stay with the training split: the model
            // records its decoding from them (a reduced decode, the pixel
            // budget), as predict then decodes images alike.
            train.meta = all.meta;
            memset(&all.meta, 0, sizeof all.meta);
            split_free(&all);
            if (rc < 0) goto done;
        }
        printf("From the cache %s: %d records of %s features; the frozen layers below do not run again. "
               "No augmentation in this mode.\n",
               o->cache, train.n, m.layers[walk_from - 1].name);
    } else {
        Dataset all = {0};
        if (dataset_scan(o->data, NULL, 0, &all) < 0) {
            err_prefix("--data ");
            goto done;
        }
        dataset_warn_skipped(&all);
        if (model_meta_check_classes(&hm, o->data, all.class_names, all.n_classes) < 0) {
            dataset_free(&all);
            goto done;
        }
        if (o->validation_split > 0) {
            int rc = dataset_split(&all, o->validation_split, &train.ds, &val.ds);
            dataset_free(&all);
            if (rc < 0) goto done;
            if (split_from_dataset(&val) < 0) goto done;
        } else {
            train.ds = all;
        }
        if (split_from_dataset(&train) < 0) goto done;
        char found[128];
        dataset_found_line(&train.ds, found, sizeof found);
        printf("%s\n", found);
        if (o->val_data) {
            if (dataset_scan(o->val_data, NULL, 0, &val.ds) < 0) {
                err_prefix("--val-data ");
                goto done;
            }
            dataset_warn_skipped(&val.ds);
            if (model_meta_check_classes(&hm, o->val_data, val.ds.class_names, val.ds.n_classes) < 0)
                goto done;
            if (split_from_dataset(&val) < 0) goto done;
            dataset_found_line(&val.ds, found, sizeof found);
            printf("%s\n", found);
        } else if (o->validation_split > 0) {
            dataset_found_line(&val.ds, found, sizeof found);
            printf("%s (validation split)\n", found);
        }
    }
    if (!from_cache && (dataset_content_id(&train.ds, data_content, sizeof data_content) < 0 ||
                        (val.n && dataset_content_id(&val.ds, val_content, sizeof val_content) < 0)))
        goto done;
    // The same images (the same folder, or a copy): legal, but the
    // validation figures would then be training figures (train's warning
    // for --val-cache).
    if (!from_cache && o->val_data && val.n && !strcmp(data_content, val_content))
        log_printf(stderr, "warning: --val-data %s holds the very images of --data %s: the validation figures will "
                   "measure the training data\n", o->val_data, o->data);
    has_val = val.n > 0;
    if (!has_val && (o->val_data || o->val_cache || o->validation_split > 0)) {
        const char *why = o->validation_split > 0 ? "--validation-split leaves no validation images (int(F * n) is 0 "
                                                    "for every class)"
                                                  : "the validation data holds no images";
        if (o->early_stopping > 0 || o->restore_best) {
            err_set("%s, so %s has nothing to watch", why, o->early_stopping > 0 ? "--early-stopping" : "--restore-best-weights");
            goto done;
        }
        log_printf(stderr, "warning: %s: training without validation\n", why);
    }
    if (train.n == 0) {
        err_set("%s: no training images", from_cache ? o->cache : o->data);
        goto done;
    }
    const int K = hm.n_classes;
    {
        long *count = calloc((size_t)K, sizeof(long));
        for (int i = 0; i < train.n; i++) count[train.labels[i]]++;
        int rc = 0;
        for (int k = 0; k < K && rc == 0; k++)
            if (count[k] == 0) rc = err_set("class '%s' has no training images", hm.class_names[k]);
        if (rc == 0 && !strcmp(o->class_weight, "balanced")) {
            class_w = malloc(sizeof(float) * (size_t)K);
            rc = class_weights_balanced(count, K, hm.class_names, class_w);
        }
        free(count);
        if (rc < 0) goto done;
    }

    // --- training state ----------------------------------------------------------------
    Optimizer opt;
    OptimKind kind;
    if (optim_kind_from_name(o->optimizer, &kind) < 0) goto done;
    optim_defaults(&opt, kind);
    opt.lr = o->lr;
    if (o->momentum_given) opt.momentum = o->momentum;
    opt.nesterov = o->nesterov;
    if (fit_init(&fs, &m, m.first_trainable_base, &opt, o->epochs) < 0) goto done;
    fit_set_monitor(&fs, !strcmp(o->monitor, "val_accuracy"), o->restore_best);
    fs.threads = threads;
    char head_sha[65];
    if (hash_file_hex(o->head, HASH_SHA256, head_sha) < 0) goto done;
    char aug_text[200];
    augment_spec_format(from_cache ? &(AugmentSpec){0, 0, 0, 0, 1, 1, 0} : &aug, aug_text, sizeof aug_text);
    {
        size_t cap = 12000;
        char f1[32], f2[32];
        // Folders and caches by real path ("data" and "$PWD/data/" are one
        // folder), caches also by their records' digest (another cache at
        // the same path).
        char data_real[PATH_MAX], val_real[PATH_MAX];
        const char *val_path = o->val_cache ? o->val_cache : o->val_data;
        settings = malloc(cap);
        // (The split and the validation folder before the data's digest,
        // which they change: a refusal names the option that changed.)
        snprintf(settings, cap,
                 "tool=finetune\ndata=%s\nval=%s\nvalidation_split=%.9g\ndata_content=%s\nval_content=%s\nweights=%s\nhead=sha256:%s\nunfreeze=%s\noptimizer=%s\n"
                 "lr=%s\nmomentum=%s\nnesterov=%d\nbatch=%d\nseed=%ld\naugment=%s\nclass_weight=%s\n"
                 "train_items=%d\nearly_stopping=%d\nmonitor=%s\nrestore_best_weights=%d\n",
                 path_canonical(from_cache ? o->cache : o->data, data_real), val_path ? path_canonical(val_path, val_real) : "",
                 o->validation_split, data_content, val_content, weights_id, head_sha, m.unfreeze_name, optim_kind_name(kind),
                 fit_float_text(opt.lr, f1), fit_float_text(opt.momentum, f2), opt.nesterov, o->batch, o->seed, aug_text, o->class_weight, train.n,
                 o->early_stopping, o->early_stopping > 0 || o->restore_best ? o->monitor : "val_loss", o->restore_best);
        // Augmentation draws from ranges in double since vggft 0.2 (Keras's
        // Python floats): a checkpoint of an earlier augmented run drew from
        // float ranges and cannot continue as one run.
        if (!from_cache && !augment_spec_is_none(&aug)) {
            size_t at = strlen(settings);
            snprintf(settings + at, cap - at, "augment_ranges=double\n");
        }
    }
    char ckpt_path[4200], title[512], opt_text[96];
    snprintf(title, sizeof title, "finetune from %s: %s, batch %d, seed %ld", m.unfreeze_name,
             optim_text(&opt, opt_text, sizeof opt_text), o->batch, o->seed);
    if (fit_begin(&fs, settings, o->out, o->resume ? FIT_RESUME : o->resume_if_same ? FIT_RESUME_IF_SAME : FIT_RESUME_NO,
                  title, ckpt_path, sizeof ckpt_path) < 0) goto done;

    // --- buffers ---------------------------------------------------------------------------
    // A --batch larger than the data: one step of all the items, as Keras
    // runs; the buffers, the loader's ring and the GPU walk (which pads every
    // smaller batch to its size) are sized for the largest split, not for
    // --batch (--batch 100000 on 20 images took 3.6 GB and 8x the time).
    // The steps and their bits are the same; the settings keep --batch.
    const int most = train.n > val.n ? train.n : val.n;
    const int B = most > 0 && o->batch > most ? most : o->batch;
    if (walk_alloc_device(&walk, &m, walk_from, B, dev == DEVICE_CUDA, precision) < 0) {
        // A GPU that device_select found usable may still fail here (cuDNN,
        // device memory): --device cuda stops with the reason, auto says it
        // and goes on on the CPU.
        if (dev != DEVICE_CUDA || !strcmp(o->device, "cuda") || precision != GPU_FP32) {
            if (dev == DEVICE_CUDA) err_prefix("--device cuda: fine-tuning on the GPU: ");
            goto done;
        }
        log_printf(stderr, "warning: fine-tuning on the GPU failed to start (%s): training on the CPU\n", err_msg());
        dev = DEVICE_CPU;
        snprintf(dev_note, sizeof dev_note, "CPU (the GPU walk failed to start)");
        if (walk_alloc(&walk, &m, walk_from, B) < 0) goto done;
    }
    // The GPU walk took the weights as they are now (a resumed run's
    // included); the optimizer slots too. The base's gradients live on the
    // device then: the host's Grads start at the head.
    if (walk_upload(&walk, fs.slots) < 0 || head_buffers_alloc(&hb, &m, B) < 0 ||
        grads_alloc(&g, &m, walk.gpu ? m.n_base : walk.first_trainable, m.n_layers) < 0)
        goto done;
    const long item_floats = walk.in_size;
    sw = malloc(sizeof(float) * (size_t)B);
    labels = malloc(sizeof(int32_t) * (size_t)B);
    labels_next = malloc(sizeof(int32_t) * (size_t)B);
    pred = malloc(sizeof(int32_t) * (size_t)B);
    perm = malloc(sizeof(int) * (size_t)train.n);
    int n_id = train.n > val.n ? train.n : val.n;
    identity = malloc(sizeof(int) * (size_t)n_id);
    conf = malloc(sizeof(long) * (size_t)K * K);
    if (!sw || !labels || !labels_next || !pred || !perm || !identity || !conf) {
        err_set("out of memory for batches of %d", B);
        goto done;
    }
    for (int i = 0; i < n_id; i++) identity[i] = i;
    // The walk's batch buffers (page-locked on the GPU; there two: a step
    // reads one while the next batch is read into the other).
    ReadAhead ra = {.x = walk.input, .x_next = walk.input_next, .labels = labels, .labels_next = labels_next};
    Eval ev = {&walk, &hb, &load, B, threads, o->quiet, item_floats, &ra, pred, identity};

    if (o->save_augmented && !from_cache) {
        fit_shuffle(perm, train.n, (uint64_t)o->seed, 0);
        if (save_augmented(&train, perm, &load, &aug, (uint64_t)o->seed, o->save_augmented, o->save_augmented_n) < 0)
            goto done;
    }

    ParamCounts pc = model_param_counts(&m);
    char t1[32], t2[32];
    char mom[48] = "";
    if (opt.momentum > 0) snprintf(mom, sizeof mom, " momentum %g%s", opt.momentum, opt.nesterov ? " nesterov" : "");
    printf("Fine-tune %s from %s (%s trainable, %s frozen parameters) on %d %s, %d classes; %s lr %g%s; %s; %d "
           "thread%s\n",
           arch_name(m.cfg.arch), m.unfreeze_name, format_thousands(pc.trainable, t1, sizeof t1),
           format_thousands(pc.non_trainable, t2, sizeof t2), train.n, from_cache ? "cached records" : "images", K,
           optim_kind_name(kind), opt.lr, mom, dev_note, threads, threads == 1 ? "" : "s");
    if (walk.gpu) {  // (also with --quiet: where a job's steps ran is no progress)
        char plan[1500];
        gpu_walk_describe(walk.gpu, plan, sizeof plan);
        printf("GPU walk (cuDNN algorithms): %s\n", plan);
    }
    if (!from_cache) printf("Augmentation: %s\n", aug_text);
    if (has_val) printf("Validate on %d %s%s\n", val.n, from_cache ? "record" : "image", val.n == 1 ? "" : "s");
    fflush(stdout);

    // Where the head left off: the validation figures before any step.
    if (has_val && fs.epochs_done == 0 && fs.steps_in_epoch == 0) {
        Running r0;
        int rc = evaluate(&ev, &val, &r0, NULL, 1, NULL, NULL, "validating");
        if (rc < 0) goto done;
        if (rc == 1) {
            log_printf(stderr, "%s: stopped before the first step (nothing to save yet): rerun the same command\n",
                    stop_signal_name(stop_requested()));
            status = EXIT_STOPPED;
            goto done;
        }
        fs.before_val_loss = running_loss(&r0), fs.before_val_acc = running_acc(&r0);
        char kb[2][KERAS_VALUE_MAX];
        printf("Before fine-tuning: val_loss: %s - val_accuracy: %s\n", keras_value(fs.before_val_loss, kb[0]),
               keras_value(fs.before_val_acc, kb[1]));
        fflush(stdout);
    }

    // --- training -----------------------------------------------------------------------------
    const int steps = (train.n + B - 1) / B;
    // The last epoch's validation, with its confusion matrix in conf: the
    // final report's when the model keeps that epoch's weights (a CPU spends
    // as long on a validation pass as on a tenth of an epoch, or more).
    Running last_val;
    int last_val_fresh = 0;
    // Where the time goes (this run's steps; validation apart).
    double t_wait = 0, t_val = 0, t_run = progress_now(), last_save = t_run;
    memset(&walk.times, 0, sizeof walk.times);
    // Test hooks: after this many steps, die like kill -9 / send ourselves SIGTERM.
    const char *crash = getenv("VGGFT_TEST_CRASH_AFTER_STEP"), *term = getenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    long crash_step = crash ? atol(crash) : 0, term_step = term ? atol(term) : 0;
    int epochs_run = 0;  // by this run (a resumed finished one runs none)
    while (fs.epochs_done < o->epochs && !fs.stopped) {
        const int epoch = fs.epochs_done;
        epochs_run++;
        Progress bar;
        fit_epoch_start(&fs, &bar, steps, o->quiet, perm, train.n, (uint64_t)o->seed);
        Reader rd;
        if (reader_start(&rd, &train, perm, fs.steps_in_epoch * B, &load, augment_spec_is_none(&aug) ? NULL : &aug,
                         (uint64_t)o->seed, epoch, B, threads, o->quiet) < 0)
            goto done;
        for (long s = fs.steps_in_epoch; s < steps; s++) {
            double tw = progress_now();
            // The batch read during the last step (GPU; with its error, if
            // reading it failed), or one read now.
            if (batch_take(&ra, &rd, B, item_floats) < 0) {
                // An image the system failed to read (memory, descriptors,
                // I/O: err_is_system): the steps done so far are whole;
                // keep them, so a rerun loses nothing.
                reader_stop(&rd);
                if (fs.opt.step > 0) {
                    char what[96];
                    snprintf(what, sizeof what, "the state after step %ld of epoch %d is", s, epoch + 1);
                    save_after_system_error(&fs, &walk, &m, settings, ckpt_path, progress_now() - bar.t_start, what,
                                            rerun);
                }
                goto done;
            }
            t_wait += progress_now() - tw;
            const int n = ra.n;
            if (n > 0) {
                for (int i = 0; i < n; i++) sw[i] = class_w ? class_w[ra.labels[i]] : 1.0f;
                float loss;
                if (finetune_step_begin(&walk, &hb, &g, &fs.opt, fs.slots, ra.x, ra.labels, class_w ? sw : NULL, n,
                                        (uint64_t)o->seed) < 0) {
                    reader_stop(&rd);
                    goto done;
                }
                // On the GPU the step is queued: read the next batch into the
                // other buffer and start its upload meanwhile (on the CPU,
                // where the step is done already, the next batch is read at
                // the next step, as before). A checkpoint or a stop after
                // this step drops it (a resumed run reads it again), so the
                // state saved stays the state after this step.
                double tn = progress_now();
                if (batch_read_ahead(&ra, &rd, &walk, B, item_floats) < 0) {
                    reader_stop(&rd);
                    goto done;
                }
                t_wait += progress_now() - tn;
                if (finetune_step_end(&walk, &hb, &loss) < 0) {
                    reader_stop(&rd);
                    goto done;
                }
                if (!isfinite(loss)) {
                    reader_stop(&rd);
                    fit_diverged(epoch, s, loss);
                    goto done;
                }
                optim_step_done(&fs.opt);
                head_predict_classes(&m, &hb, n, pred);
                running_add(&fs.run, loss, n, pred, ra.labels);
            }
            fs.steps_in_epoch = s + 1;
            char metrics[160], kv[2][KERAS_VALUE_MAX];
            snprintf(metrics, sizeof metrics, "loss: %s - accuracy: %s", keras_value(running_loss(&fs.run), kv[0]),
                     keras_value(running_acc(&fs.run), kv[1]));
            progress_update(&bar, s + 1, metrics);
            if (term_step > 0 && fs.opt.step == term_step) raise(SIGTERM);
            int sig = stop_requested();
            // By steps, or by time: a checkpoint (the weights and slots
            // from the GPU, then a file of 37 to 160 MB for block5) takes
            // 0.05 to 0.1 s, which every 100 steps was 13 to 20% of
            // fine-tuning's time on an H200 (100 steps took 0.35 to 0.5 s
            // there, minutes on a CPU).
            int every = (o->checkpoint_every > 0 && fs.opt.step % o->checkpoint_every == 0) ||
                        (o->checkpoint_seconds > 0 && progress_now() - last_save >= o->checkpoint_seconds);
            if (s + 1 < steps && (sig || every)) {
                // Between steps the state is whole: weights, slots, step, and
                // the epoch's running figures.
                fs.epoch_secs = progress_now() - bar.t_start;
                if (save_state(&fs, &walk, &m, settings, ckpt_path) < 0) {
                    reader_stop(&rd);
                    goto done;
                }
                last_save = progress_now();
                if (sig) {
                    reader_stop(&rd);
                    log_printf(stderr, "\n%s: stopped after step %ld/%d of epoch %d; state saved in %s: %s\n",
                               stop_signal_name(sig), s + 1, steps, epoch + 1, ckpt_path,
                               rerun);
                    status = EXIT_STOPPED;
                    goto done;
                }
            }
            if (crash_step > 0 && fs.opt.step == crash_step) _exit(137);
        }
        reader_stop(&rd);
        if (fs.run.n == 0) {
            err_set("no training image of %s could be read (see the warnings above)", o->data);
            goto done;
        }
        float tl = running_loss(&fs.run), ta = running_acc(&fs.run), vl = NAN, va = NAN;
        char metrics[320], kv[4][KERAS_VALUE_MAX];
        int len = snprintf(metrics, sizeof metrics, "loss: %s - accuracy: %s", keras_value(tl, kv[0]), keras_value(ta, kv[1]));
        if (has_val) {
            Running vr;
            double tv = progress_now();
            int rc = evaluate(&ev, &val, &vr, conf, 1, &bar, metrics, "validating");
            if (rc < 0) {
                // A validation image the system failed to read (I/O, out of
                // memory): the epoch's training steps are whole; keep them
                // (a resumed run validates and ends the epoch).
                if (err_is_system(err_msg())) {
                    char what[96];
                    snprintf(what, sizeof what, "the training steps of epoch %d are", epoch + 1);
                    save_after_system_error(&fs, &walk, &m, settings, ckpt_path, progress_now() - bar.t_start, what,
                                            rerun);
                }
                goto done;
            }
            t_val += progress_now() - tv;
            if (rc == 1) {
                // The epoch's steps are done: save them; a resumed run
                // validates and ends the epoch.
                fs.epoch_secs = progress_now() - bar.t_start;
                if (save_state(&fs, &walk, &m, settings, ckpt_path) < 0) goto done;
                log_printf(stderr, "\n%s: stopped while validating epoch %d (its training steps are saved in %s): %s\n",
                           stop_signal_name(stop_requested()), epoch + 1, ckpt_path,
                           rerun);
                status = EXIT_STOPPED;
                goto done;
            }
            if (vr.n == 0) {
                err_set("none of the %d validation images could be read (see the warnings above)", val.n);
                goto done;
            }
            vl = running_loss(&vr), va = running_acc(&vr);
            last_val = vr, last_val_fresh = 1;
            snprintf(metrics + len, sizeof metrics - len, " - val_loss: %s - val_accuracy: %s", keras_value(vl, kv[2]),
                     keras_value(va, kv[3]));
        }
        float secs = (float)(progress_now() - bar.t_start);
        progress_finish(&bar, metrics);
        if (o->quiet) log_printf(stdout, "Epoch %d/%d - %.1fs - %s\n", epoch + 1, o->epochs, secs, metrics);
        fit_end_epoch(&fs, tl, ta, vl, va, secs);
        if (epoch == 0 && tl < 1e-6f && ta == 1.0f)
            log_printf(stderr, "warning: the training loss is %.2g and every training %s is right: the head already fits "
                            "these %s exactly, so their gradients vanish and fine-tuning cannot change much (train "
                            "the head with fewer epochs or a lower --lr, or fine-tune on other data)\n",
                    tl, from_cache ? "record" : "image", from_cache ? "records" : "images");
        // The state from the device (first: early stopping keeps the best
        // epoch's weights from the host copy), then into the checkpoint.
        if (walk_download(&walk, &m, fs.slots) < 0) goto done;
        int stop = has_val ? fit_early_stop(&fs, o->early_stopping) : 0;
        if (stop < 0 || fit_save(&fs, settings, ckpt_path) < 0) goto done;
        last_save = progress_now();
        if (stop)
            printf("Epoch %d: early stopping (%s has not improved for %d epochs)\n", epoch + 1, o->monitor,
                   o->early_stopping);
        int sig = stop_requested();
        if (sig && fs.epochs_done < o->epochs && !stop) {
            log_printf(stderr, "%s: stopped after epoch %d; state saved in %s: %s\n", stop_signal_name(sig),
                       epoch + 1, ckpt_path, rerun);
            status = EXIT_STOPPED;
            goto done;
        }
    }

    if (epochs_run) {
        const WalkTimes *wt = &walk.times;
        double total = progress_now() - t_run;
        if (walk.gpu && gpu_walk_has_head(walk.gpu))
            // The whole step is queued at once: its parts are not timed apart,
            // and the next batch is read while it runs.
            printf("Time: %.1f s in the epochs (training and their validation): reading %s %.1f s (while the GPU ran the step "
                   "before), steps on the GPU (queued, then waited for) %.1f s, validation %.1f s\n",
                   total, from_cache ? "the cache" : "images (decode, augment)", t_wait, wt->trainable, t_val);
        else
            printf("Time: %.1f s in the epochs (training and their validation): waiting for %s %.1f s, frozen layers %.1f s, "
                   "trainable base layers (forward, backward) %.1f s, head %.1f s, optimizer %.1f s, validation "
                   "%.1f s\n",
                   total, from_cache ? "the cache" : "images (decode, augment)", t_wait, wt->frozen, wt->trainable,
                   wt->head, wt->update, t_val);
        char prof[2000];
        if (walk.gpu && gpu_walk_profile(walk.gpu, prof, sizeof prof)) printf("%s\n", prof);
    }

    // --- outputs ---------------------------------------------------------------------------------
    if (walk_download(&walk, &m, NULL) < 0) goto done;  // the GPU's weights are the model's
    // Keras's EarlyStopping.on_train_end with restore_best_weights: the best
    // epoch's weights are the model's (and the walk's, for the evaluation
    // below); the checkpoint keeps the last epoch's, which more epochs
    // continue from.
    int restored = fit_restore_best(&fs);
    if (restored < 0 || (restored && walk_upload(&walk, NULL) < 0)) goto done;
    {
        ModelMeta mm;
        model_meta_from_model(&m, &mm);
        snprintf(mm.preprocess, sizeof mm.preprocess, "%s", hm.preprocess);
        snprintf(mm.interpolation, sizeof mm.interpolation, "%s", hm.interpolation);
        snprintf(mm.weights, sizeof mm.weights, "%s", weights_id);
        if (from_cache) snprintf(mm.decode, sizeof mm.decode, "%s", train.meta.decode);
        else snprintf(mm.decode, sizeof mm.decode, "full, pixel budget %ld", load.max_pixels);
        mm.class_names = hm.class_names;
        // The training settings, and where this run's steps ran and in what
        // arithmetic. Not resume settings (the checkpoint holds those): a
        // checkpoint resumes on the other device, whatever its precision, so
        // a resumed run records its last part's.
        size_t cap = strlen(settings) + 64;
        char *training = malloc(cap);
        if (!training) {
            err_set("out of memory");
            goto done;
        }
        snprintf(training, cap, "%sdevice=%s\nprecision=%s\n", settings, dev == DEVICE_CUDA ? "cuda" : "cpu",
                 gpu_precision_name(dev == DEVICE_CUDA ? precision : GPU_FP32));
        mm.training = training;
        int saved = model_save(&m, o->out, 1, &mm);
        free(training);
        if (saved < 0) goto done;
    }
    if (fit_write_history_files(&fs) < 0) goto done;
    Running r;
    Split *eval_set = has_val ? &val : &train;
    if (has_val && last_val_fresh && !restored) r = last_val;  // the same weights and images: the same figures
    else if (evaluate(&ev, eval_set, &r, conf, 0, NULL, NULL, has_val ? "validating" : "evaluating on the training set") < 0)
        goto done;
    fit_print_report(stdout, has_val ? "Validation" : "Training set (no validation data)", &r, K, hm.class_names,
                     conf);
    if (has_val && !isnan(fs.before_val_acc)) {
        printf("Validation accuracy: %.4f with the head alone (before fine-tuning), %.4f after\n", fs.before_val_acc,
               running_acc(&r));
        // The seeds' second stage does not always pay on a small set: say
        // which model to keep when it did not (nothing picks it for the user).
        if (fs.before_val_acc > running_acc(&r))
            printf("note: the head alone did better on the validation data: keep %s (predict --head %s) rather "
                   "than %s%s\n",
                   o->head, o->head, o->out,
                   fs.restore_best ? "" : ", or fine-tune again with --restore-best-weights (--monitor val_accuracy) "
                                          "to keep its best epoch");
    }
    long skipped = train.skipped + val.skipped;
    if (skipped)
        printf("%ld image%s could not be read and %s skipped (see the warnings above)\n", skipped,
               skipped == 1 ? "" : "s", skipped == 1 ? "was" : "were");
    if (fit_finish(o->out, "the whole model, Keras HDF5", has_val, &r, K, hm.class_names, conf) < 0) goto done;
    status = 0;
done:
    free(sw), free(labels), free(labels_next), free(pred), free(perm), free(identity), free(conf), free(class_w);
    free(settings);
    fit_free(&fs);
    if (g.dkernel) grads_free(&g);
    head_buffers_free(&hb);
    walk_free(&walk);
    split_free(&train);
    split_free(&val);
    model_free(&m);
    model_meta_free(&hm);
    return status;
}
