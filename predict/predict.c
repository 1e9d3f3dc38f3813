// predict: a model file -> the image chain the model was trained with ->
// conv base (CPU or GPU, the code extract runs) -> head -> per-image top k;
// with --eval (a labelled folder) or --cache (cached features) also the
// evaluation report and its pictures.
//
// Flow: the model (a finetune model, or a train head on the base weights it
// was trained on, checked by SHA-256) -> the inputs (files, folders listed
// the way flow_from_directory lists a class folder, or an --eval folder) ->
// loader threads read, decode, resize and preprocess (common/loader.h,
// image_chain) -> batches through the base and the head -> one line per
// image as it comes, the running loss, accuracy and confusion matrix ->
// the report. Memory does not grow with the folder beyond its file list:
// misclassified files go to a temporary file as they come, and only the
// --max-errors most confident mistakes are kept for the contact sheet, whose
// images are read again at the end. results.c writes the lines, the report
// and the pictures.
#include "predict.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blas_setup.h"
#include "cache.h"
#include "cli.h"
#include "dataset.h"
#include "device.h"
#include "error.h"
#include "feature_set.h"
#include "fileutil.h"
#include "fit.h"
#include "forward.h"
#include "gpu_base.h"
#include "image.h"
#include "loader.h"
#include "model.h"
#include "model_io.h"
#include "parallel.h"
#include "progress.h"
#include "stop.h"
#include "results.h"
#include "weights_source.h"


// --- the model --------------------------------------------------------------------

// The file was not one of ours: say what predict needs.
static int not_a_model(const char *opt, const char *path) {
    struct stat st;
    if (stat(path, &st) < 0 && errno == ENOENT) return err_set("%s %s: no such file", opt, path);
    if (!S_ISREG(st.st_mode)) return err_prefix("%s ", opt);  // a folder, a FIFO: the reason says it
    if (strstr(err_msg(), "locked by another process")) return err_prefix("%s ", opt);  // ours, but in use
    if (strstr(err_msg(), "vggft_class_names")) return err_prefix("%s: ", opt);  // ours, but damaged
    return err_set("%s %s: %s. predict needs a whole model written by `finetune` (--model MODEL.h5) or a head "
                   "written by `train` (--head HEAD.h5 --weights BASE.h5). A file Keras wrote (save_weights, save) "
                   "lacks the settings these record (input size, cut, preprocessing, class names), and Keras's "
                   "ImageNet file of the conv base has no classifier",
                   opt, path, err_msg());
}

// Reads the model or head file's settings and builds the model; loads its
// weights (and, for a head, the base weights it was trained on).
static int load_model(const PredictOptions *o, Model *m, ModelMeta *meta, char *weights_id, size_t id_size) {
    const char *opt = o->model ? "--model" : "--head", *path = o->model ? o->model : o->head;
    if (model_meta_read(path, meta) < 0) return not_a_model(opt, path);
    if (o->model && strcmp(meta->contents, "full"))
        return err_set("--model %s holds only the %s (trained by `train`): give it as --head %s --weights BASE "
                       "(the base weights it was trained on)",
                       path, !strcmp(meta->contents, "head") ? "dense head" : meta->contents, path);
    if (o->head && strcmp(meta->contents, "head"))
        return err_set("--head %s holds a %s model (from `finetune`): give it as --model %s (it carries its own "
                       "base)",
                       path, meta->contents, path);
    if (!meta->class_names) return err_set("%s %s has no class names", opt, path);
    ModelConfig cfg;
    model_meta_to_config(meta, &cfg);
    cfg.unfreeze = NULL;  // inference: nothing trains
    if (model_build(m, &cfg) < 0) return err_prefix("%s %s: ", opt, path);
    weights_id[0] = '\0';
    if (o->model) {
        if (model_load_full(m, path) < 0) return -1;
        snprintf(weights_id, id_size, "%s", meta->weights);
    } else if (!o->cache) {
        // (load_base_weights refuses a FIFO before the hash that would block on it.)
        if (load_head_base_weights(m, o->weights, o->seed, o->quiet, path, meta, weights_id, id_size) < 0)
            return -1;
        if (model_load_head(m, path) < 0) return -1;
    } else {
        if (model_load_head(m, path) < 0) return -1;
    }
    int from = o->cache ? model_head_start(m) : 1;
    if (model_check_finite(m, from, m->n_layers) < 0) return err_prefix("%s %s: ", opt, path);
    return 0;
}

// The cache's features must be what the head was trained on: its cut
// layer, and the settings, weights and classes model_meta_check_cache
// compares. The message names both.
static int check_cache(const CacheMeta *c, const char *cache, const ModelMeta *hm, const char *head) {
    if (strcmp(c->layer, hm->cut))
        return err_set("--cache %s has %s features; the head %s was trained on %s", cache, c->layer, head, hm->cut);
    return model_meta_check_cache(hm, c, cache, NULL);
}

// --- the inputs -------------------------------------------------------------------

// What is classified: paths (as shown and as opened) and, with --eval,
// the model's class index of each.
typedef struct {
    int n, cap;
    char **path;
    int32_t *label;  // -1 without labels
} Inputs;

static int inputs_add(Inputs *in, char *path, int label) {  // takes path
    if (!path) return err_set("out of memory");
    if (in->n == in->cap) {
        int cap = in->cap ? 2 * in->cap : 64;
        char **p = realloc(in->path, sizeof(char *) * (size_t)cap);
        if (p) in->path = p;
        int32_t *l = realloc(in->label, sizeof(int32_t) * (size_t)cap);
        if (l) in->label = l;
        if (!p || !l) return free(path), err_set("out of memory");
        in->cap = cap;
    }
    in->path[in->n] = path;
    in->label[in->n++] = label;
    return 0;
}

static void inputs_free(Inputs *in) {
    for (int i = 0; i < in->n; i++) free(in->path[i]);
    free(in->path), free(in->label);
    memset(in, 0, sizeof *in);
}

// "DIR/sub/x.jpg" from a folder as given and an item path below it.
static char *join_path(const char *dir, const char *rel) {
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

// A folder of images to classify: every image file in it and below, in the
// order and with the extension rule of Keras's flow_from_directory for one
// class folder (dataset_scan of its parent with the folder as the only class).
static int add_folder(Inputs *in, SkipList *skipped, const char *arg, SkipList *ignored) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", arg);
    for (size_t k = strlen(dir); k > 1 && dir[k - 1] == '/'; k--) dir[k - 1] = '\0';
    char real[PATH_MAX];
    if (!realpath(dir, real)) return err_set("%s: %s", arg, strerror(errno));
    if (!strcmp(real, "/")) return err_set("%s: the root folder is too much to classify", arg);
    char parent_buf[PATH_MAX], base_buf[PATH_MAX];
    snprintf(parent_buf, sizeof parent_buf, "%s", real);
    snprintf(base_buf, sizeof base_buf, "%s", real);
    const char *parent = dirname(parent_buf), *base = basename(base_buf);
    Dataset ds;
    const char *cls[1] = {base};
    if (dataset_scan(parent, cls, 1, &ds) < 0) return err_prefix("%s: ", arg);
    size_t skip_len = strlen(base) + 1;  // items are "BASE/..."
    int rc = 0;
    for (int i = 0; rc == 0 && i < ds.n_items; i++) rc = inputs_add(in, join_path(dir, ds.items[i].path + skip_len), -1);
    for (int i = 0; i < ds.n_skipped; i++) {
        char *p = join_path(dir, ds.skipped_paths[i] + skip_len);
        skip_add(skipped, p ? p : arg, ds.skipped_reasons[i]);
        free(p);
    }
    for (int i = 0; i < ds.n_ignored; i++) {
        // Paths are "BASE/...", as the items'.
        char *p = strlen(ds.ignored_paths[i]) >= skip_len ? join_path(dir, ds.ignored_paths[i] + skip_len) : NULL;
        skip_add(ignored, p ? p : ds.ignored_paths[i], ds.ignored_reasons[i]);
        free(p);
    }
    dataset_free(&ds);
    return rc;
}

// --eval DIR: the folder's class folders, each one of the model's classes
// (by name: the folder may hold fewer classes, in any order of listing).
static int add_eval(Inputs *in, SkipList *skipped, const char *dir, const ModelMeta *meta, SkipList *ignored) {
    Dataset ds;
    if (dataset_scan(dir, NULL, 0, &ds) < 0) return err_prefix("--eval: ");
    int *map = malloc(sizeof(int) * (size_t)ds.n_classes);
    int rc = map ? 0 : err_set("out of memory");
    for (int c = 0; rc == 0 && c < ds.n_classes; c++) {
        map[c] = -1;
        for (int k = 0; k < meta->n_classes; k++)
            if (!strcmp(ds.class_names[c], meta->class_names[k])) map[c] = k;
        if (map[c] < 0) {
            char known[600] = "";
            for (int k = 0; k < meta->n_classes; k++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "",
                         meta->class_names[k]);
            rc = err_set("--eval %s: class folder '%s' is not one of the model's classes [%s]", dir,
                         ds.class_names[c], known);
        }
    }
    for (int i = 0; rc == 0 && i < ds.n_items; i++)
        rc = inputs_add(in, dataset_item_path(&ds, i), map[ds.items[i].label]);
    for (int i = 0; rc == 0 && i < ds.n_skipped; i++) {
        char *full = join_path(ds.root, ds.skipped_paths[i]);
        skip_add(skipped, full ? full : ds.skipped_paths[i], ds.skipped_reasons[i]);
        free(full);
    }
    for (int i = 0; i < ds.n_ignored; i++) {
        char *full = join_path(ds.root, ds.ignored_paths[i]);
        skip_add(ignored, full ? full : ds.ignored_paths[i], ds.ignored_reasons[i]);
        free(full);
    }
    if (rc == 0 && !in->n) rc = err_set("--eval %s: no images in its class folders", dir);
    if (rc == 0) {  // Keras prints it at any verbosity
        char found[128];
        dataset_found_line(&ds, found, sizeof found);
        log_printf(stderr, "%s\n", found);
    }
    free(map);
    dataset_free(&ds);
    return rc;
}

// --- the runs ---------------------------------------------------------------------

// The list of misclassified files: an unnamed file in $TMPDIR (default
// /tmp), created with mkstemp and unlinked at once. Its descriptor is kept
// above 2, so with stdin, stdout or stderr closed it can never take their
// place (and receive the predictions).
static FILE *temp_file(void) {
    const char *dir = temp_dir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/vggft-predict-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        err_set("cannot create a temporary file in %s (TMPDIR) for the list of misclassified files: %s", dir,
                strerror(errno));
        return NULL;
    }
    unlink(path);
    if (fd <= 2) {
        int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        fd = high;
        if (fd < 0) return err_set("temporary file in %s: %s", dir, strerror(errno)), NULL;
    }
    FILE *f = fdopen(fd, "w+b");
    if (!f) err_set("temporary file in %s: %s", dir, strerror(errno)), close(fd);
    return f;
}

// How many files the cache's extract run skipped: the lines of
// CACHE/skipped.tsv (after its header) other than those Keras does not list
// either ("... (ignored, as Keras does)"). 0 when there is no such file.
static long cache_skipped_count(const char *cache) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/skipped.tsv", cache);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long n = 0, line = 0;
    char buf[8192];
    int at_start = 1;
    while (fgets(buf, sizeof buf, f)) {
        size_t len = strlen(buf);
        int ends = len && buf[len - 1] == '\n';
        if (at_start) {
            if (line++ > 0) n++;
            at_start = 0;
        }
        if (ends) {
            buf[len - 1] = '\0';
            if (line > 1 && strstr(buf, "(ignored, as Keras does)")) n--;
            at_start = 1;
        }
    }
    fclose(f);
    return n;
}

typedef struct {
    const Inputs *in;
    LoadOptions load;
    int rgb8;  // 1: RGB8 pixels (the GPU preprocesses them, as extract's), 0: preprocessed floats
} LoadCtx;

// Loader worker: one input through the chain extract and finetune use.
// extra: the file's DecodeInfo (over_budget: decoded at a reduced scale).
static int load_item(void *vctx, long index, float *out, void *extra) {
    const LoadCtx *c = vctx;
    const char *path = c->in->path[index];
    uint8_t *data = NULL;
    size_t n = 0;
    DecodeInfo *info = extra;
    memset(info, 0, sizeof *info);
    if (image_read_file(path, &data, &n) < 0) return -1;
    int rc = c->rgb8 ? image_chain_rgb8(data, n, path, &c->load, (uint8_t *)out, info)
                     : image_chain(data, n, path, &c->load, NULL, out, info);
    free(data);
    return rc;
}

// Test hook: VGGFT_TEST_SIGTERM_AFTER_BATCH=N raises SIGTERM once N batches
// are classified (as a job's time limit would, between two batches).
static void test_sigterm_after_batch(long batches_done) {
    const char *e = getenv("VGGFT_TEST_SIGTERM_AFTER_BATCH");
    if (e && atol(e) == batches_done) raise(SIGTERM);
}

// Images -> base -> head, batch by batch.
static int run_images(const PredictOptions *o, const Model *m, const ModelMeta *meta, const Inputs *in,
                      Results *r, SkipList *skipped, int threads) {
    int status = -1;
    DeviceKind dev;
    char dev_note[300];
    if (device_select(o->device, &dev, dev_note, sizeof dev_note) < 0) return -1;
    // extract's pixel budget rule (--max-pixels, same default), so a
    // prediction decodes a huge JPEG as training did.
    // JPEGs decoded as for the features the model learnt from: at a reduced
    // scale for a head trained on `extract --reduced-decode` features.
    // Without --max-pixels, the budget the model or head records (that of
    // the extract its features came from), as finetune decodes too.
    LoadOptions load = {.w = meta->input_w, .h = meta->input_h,
                        .max_pixels = o->max_pixels > 0 ? o->max_pixels : model_meta_pixel_budget(meta, EXTRACT_MAX_PIXELS_DEFAULT),
                        .reduced_decode = !strncmp(meta->decode, "reduced", 7)};
    if (interp_parse(meta->interpolation, &load.interp) < 0 || prep_parse(meta->preprocess, &load.prep) < 0)
        return err_prefix("%s: ", o->model ? o->model : o->head);
    int B = o->batch < in->n ? o->batch : in->n > 0 ? in->n : 1;  // no buffers beyond the inputs
    // cuDNN takes no tensor of more than 2^31 - 1 values: batches that fit.
    if (dev == DEVICE_CUDA && B > device_gpu_batch_limit(m, 1, m->n_base)) {
        B = device_gpu_batch_limit(m, 1, m->n_base);
        log_printf(stderr, "note: --batch %d runs on the GPU in batches of %d at %dx%d (cuDNN takes at most 2^31 - 1 "
                   "values per tensor)\n", o->batch, B, load.w, load.h);
    }
    const size_t image_floats = (size_t)load.w * load.h * 3;
    const long D = model_feature_size(m);
    GpuBase *gpu = NULL;
    BaseWorkspace ws = {0};
    HeadBuffers hb = {0};
    Loader *loader = NULL;
    // x: a batch of preprocessed images (for the GPU: of RGB8 pixels, which it preprocesses).
    float *x = malloc(sizeof(float) * image_floats * (size_t)B), *feat = malloc(sizeof(float) * (size_t)D * B);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)B), *pred = malloc(sizeof(int32_t) * (size_t)B);
    char **paths = malloc(sizeof(char *) * (size_t)B);
    if (!x || !feat || !labels || !pred || !paths) {
        err_set("out of memory for a batch of %d images", B);
        goto done;
    }
    if (dev == DEVICE_CUDA) {
        gpu = gpu_base_create(m, B, GPU_FP32);
        if (!gpu && strcmp(o->device, "auto")) goto done;
        if (!gpu) {
            log_printf(stderr, "warning: GPU unusable (%s); running on the CPU\n", err_msg());
            dev = DEVICE_CPU;
            snprintf(dev_note, sizeof dev_note, "CPU (GPU unusable)");
        }
    }
    if (dev == DEVICE_CPU && base_workspace_alloc(&ws, m) < 0) goto done;
    if (head_buffers_alloc(&hb, m, B) < 0) goto done;
    if (!o->quiet)  // the bar's heading (as extract's)
        log_printf(stderr, "predict: %s; %s %dx%d -> %s -> %d classes; %d image%s; %d thread%s\n", dev_note,
                   meta->arch, load.w, load.h, m->cut_name, r->K, in->n, in->n == 1 ? "" : "s", threads,
                   threads == 1 ? "" : "s");
    LoadCtx lctx = {in, load, gpu != NULL};
    const size_t item_bytes = gpu ? image_floats : image_floats * sizeof(float);
    loader = loader_start(in->n, threads, 2 * B + threads, (item_bytes + 3) / 4, sizeof(DecodeInfo), load_item, &lctx);
    if (!loader) goto done;
    Progress bar;
    progress_start(&bar, stderr, in->n, "img");
    // Lines on a terminal would tear an in-place bar.
    if (o->quiet || (bar.tty && isatty(fileno(stdout)))) bar.enabled = 0;
    // Warnings print even with --quiet; on a terminal they first wipe the
    // bar (log_wipe_line). Files skipped here are the bar's free items:
    // one that fails to decode in a fraction of a millisecond gives no rate.
    long done_items = 0, batches = 0;
    const int skipped_at_scan = skipped->n;  // the scan's (not among the loader's items)
    int nb = 0;
    LoaderItem *li;
    for (;;) {
        // SIGTERM/SIGINT: stop between batches (every line printed so far is
        // whole); the caller flushes stdout and exits EXIT_STOPPED.
        if (nb == 0 && stop_requested()) {
            status = EXIT_STOPPED;
            goto done;
        }
        li = loader_next(loader);
        if (li) {
            const char *path = in->path[li->index];
            if (!li->ok && li->system_error) {  // not the file's fault: stop, do not skip it
                err_set("%s", li->msg);
                loader_release(loader, li);
                goto done;
            }
            if (!li->ok) {
                // The message starts with the path: keep the reason alone for the list.
                const char *reason = li->msg;
                size_t plen = strlen(path);
                if (!strncmp(reason, path, plen) && reason[plen] == ':') reason += plen + (reason[plen + 1] == ' ' ? 2 : 1);
                skip_add(skipped, path, reason);
                bar.free_items = skipped->n - skipped_at_scan;
                log_wipe_line(stderr);
                log_printf(stderr, "warning: skipped %s\n", li->msg);
            } else {
                const DecodeInfo *info = li->extra;
                if (info->over_budget) {  // extract's warning, word for word
                    log_wipe_line(stderr);
                    log_printf(stderr,
                               "warning: %s is %dx%d, over the pixel budget of %ld: decoded at a reduced scale "
                               "(its pixels differ from Keras's full decode)\n",
                               path, info->src_w, info->src_h, load.max_pixels);
                }
                memcpy((uint8_t *)x + (size_t)nb * item_bytes, li->data, item_bytes);
                labels[nb] = in->label[li->index];
                paths[nb++] = in->path[li->index];
            }
            loader_release(loader, li);
            done_items++;
        }
        if (nb == B || (!li && nb > 0)) {
            if (gpu) {
                if (gpu_base_submit_rgb8(gpu, (const uint8_t *)x, nb, load.prep) < 0 || gpu_base_collect(gpu, feat) < 0)
                    goto done;
            } else {
                base_forward_cpu(m, x, nb, feat, &ws);
            }
            if (head_forward(m, feat, nb, 0, 0, 0, &hb) < 0) goto done;
            if (results_take_batch(r, &hb, feat, nb, paths, paths, labels, pred) < 0) goto done;
            nb = 0;
            test_sigterm_after_batch(++batches);
        }
        if (!li) break;
        char metrics[96] = "";
        if (r->eval && r->run.n > 0)
            snprintf(metrics, sizeof metrics, "accuracy: %.4f - skipped: %d", running_acc(&r->run), skipped->n);
        progress_update(&bar, done_items, metrics[0] ? metrics : NULL);
    }
    char metrics[96] = "";
    if (r->eval && r->run.n > 0)
        snprintf(metrics, sizeof metrics, "accuracy: %.4f - skipped: %d", running_acc(&r->run), skipped->n);
    progress_finish(&bar, metrics[0] ? metrics : NULL);
    status = 0;
done:
    loader_stop(loader);
    gpu_base_free(gpu);
    base_workspace_free(&ws);
    head_buffers_free(&hb);
    free(x), free(feat), free(labels), free(pred), free(paths);
    return status;
}

// Cached features -> head.
static int run_cache(const PredictOptions *o, const Model *m, FeatureSet *fs, const CacheMeta *cm, Results *r) {
    const int B = o->batch < fs->n ? o->batch : fs->n > 0 ? fs->n : 1;
    const int D = fs->D;
    HeadBuffers hb = {0};
    float *x = malloc(sizeof(float) * (size_t)D * B);
    int32_t *pred = malloc(sizeof(int32_t) * (size_t)B);
    int *rows = malloc(sizeof(int) * (size_t)B);
    char **open = malloc(sizeof(char *) * (size_t)B);
    int rc = x && pred && rows && open ? 0 : err_set("out of memory for a batch of %d", B);
    if (rc == 0) rc = head_buffers_alloc(&hb, m, B);
    if (rc == 0) memset(open, 0, sizeof(char *) * (size_t)B);
    Progress bar;
    progress_start(&bar, stderr, fs->n, "rec");
    if (o->quiet || (bar.tty && isatty(fileno(stdout)))) bar.enabled = 0;
    for (int at = 0; rc == 0 && at < fs->n; at += B) {
        if (stop_requested()) {  // between batches, as run_images
            rc = EXIT_STOPPED;
            break;
        }
        int n = fs->n - at < B ? fs->n - at : B;
        for (int i = 0; i < n; i++) rows[i] = at + i;
        // Thumbnails are read from the cache's image folder, where it knows it.
        for (int i = 0; i < n; i++) {
            free(open[i]);
            open[i] = cm->data_dir[0] ? join_path(cm->data_dir, fs->paths[at + i]) : strdup(fs->paths[at + i]);
            if (!open[i]) rc = err_set("out of memory");
        }
        if (rc == 0) rc = features_gather(fs, rows, n, x);
        if (rc == 0) rc = head_forward(m, x, n, 0, 0, 0, &hb);
        if (rc == 0) rc = results_take_batch(r, &hb, x, n, fs->paths + at, open, fs->labels + at, pred);
        if (rc == 0) test_sigterm_after_batch(at / B + 1);
        progress_update(&bar, at + n, NULL);
    }
    if (rc == 0) progress_finish(&bar, NULL);
    for (int i = 0; open && i < B; i++) free(open[i]);
    head_buffers_free(&hb);
    free(x), free(pred), free(rows), free(open);
    return rc;
}

int predict_run(const PredictOptions *o) {
    int status = -1;
    const int threads = o->threads > 0 ? o->threads : parallel_cpus();  // the CPUs this job may use
    blas_set_threads(threads);
    parallel_set_threads(threads);
    stop_install();
    Format fmt = !strcmp(o->format, "csv") ? FMT_CSV : !strcmp(o->format, "json") ? FMT_JSON : FMT_TEXT;
    ModelMeta meta = {0};
    Model m = {0};
    Inputs in = {0};
    SkipList skipped = {0};
    FeatureSet fs = {0};
    CacheMeta cmeta = {0};
    Results r = {0};
    char weights_id[96];
    char cache_note[PATH_MAX + 400];
    SkipList ignored = {0};  // files Keras does not list: not skipped images

    // With stdout closed the predictions would go nowhere (or into the next
    // file opened, which takes descriptor 1).
    if (fcntl(STDOUT_FILENO, F_GETFD) < 0 || cli_closed_at_start(STDOUT_FILENO))
        return err_set("stdout is closed: predict writes its predictions there (redirect it to a file or "
                       "/dev/null)");
    if (o->report) {
        // Fail now, not after the whole folder, when the report cannot be written.
        char path[PATH_MAX + 32];
        const char *inputs[2] = {o->model ? o->model : o->head, o->weights};
        const char *names[2] = {o->model ? "--model" : "--head", "--weights"};
        const Format fmt = o->format && !strcmp(o->format, "json") ? FMT_JSON : FMT_TEXT;
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s%s", o->report, report_suffix(k, fmt));
            if (check_output_outside("--report", path, &o->cache, (const char *const[]){"--cache"}, 1) < 0 ||
                check_output_path("--report", path, inputs, names, 2) < 0)
                return -1;
        }
    }
    if (load_model(o, &m, &meta, weights_id, sizeof weights_id) < 0) goto done;
    const int K = meta.n_classes;

    // --- inputs ---------------------------------------------------------------------
    const char *what, *data;
    char data_buf[PATH_MAX + 64];
    if (o->cache) {
        if (features_load(&fs, o->cache, (size_t)o->memory_budget_mb << 20, threads, &cmeta) < 0) goto done;
        if (check_cache(&cmeta, o->cache, &meta, o->head) < 0) goto done;
        cache_meta_warn_partial(&cmeta, o->cache);
        {
            // The report says what the cache lacks, not only one warning.
            long files = 0, sk = cache_skipped_count(o->cache);
            for (int k = 0; cmeta.class_files && k < cmeta.n_classes; k++) files += cmeta.class_files[k];
            size_t at = 0;
            cache_note[0] = '\0';
            if (!cmeta.complete && files > 0)
                at += snprintf(cache_note + at, sizeof cache_note - at,
                               "the cache is incomplete: %d of %ld files (its extract run did not finish)\n", fs.n,
                               files);
            else if (!cmeta.complete)
                at += snprintf(cache_note + at, sizeof cache_note - at,
                               "the cache is incomplete: %d records (its extract run did not finish)\n", fs.n);
            if (cmeta.shard[0] && at < sizeof cache_note)
                at += snprintf(cache_note + at, sizeof cache_note - at,
                               "the cache is shard %s of its folder only\n", cmeta.shard);
            if (sk > 0 && at < sizeof cache_note)
                snprintf(cache_note + at, sizeof cache_note - at,
                         "extract skipped %ld file%s that could not be read (listed in %s/skipped.tsv; not "
                         "counted here)\n",
                         sk, sk == 1 ? "" : "s", o->cache);
            r.note = cache_note;
        }
        if (!fs.n) {
            err_set("--cache %s holds no records", o->cache);
            goto done;
        }
        what = "Evaluation (cached features)";
        snprintf(data_buf, sizeof data_buf, "%s", o->cache);
    } else if (o->eval) {
        if (add_eval(&in, &skipped, o->eval, &meta, &ignored) < 0) goto done;
        what = "Evaluation";
        snprintf(data_buf, sizeof data_buf, "%s", o->eval);
    } else {
        for (int i = 0; i < o->n_inputs; i++) {
            struct stat st;
            const char *a = o->inputs[i];
            if (stat(a, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (add_folder(&in, &skipped, a, &ignored) < 0) goto done;
            } else if (inputs_add(&in, strdup(a), -1) < 0) {
                goto done;  // (a missing file is reported by the loader and skipped)
            }
        }
        what = "Prediction";
        snprintf(data_buf, sizeof data_buf, "%d input%s", o->n_inputs, o->n_inputs == 1 ? "" : "s");
    }
    data = data_buf;
    // The report names what it evaluated (a pipeline's FINETUNE=0 and 1
    // write the same report files).
    char model_line[PATH_MAX + 300];
    if (o->model)
        snprintf(model_line, sizeof model_line, "%s, %s %dx%d fine-tuned from %s, base weights %s", o->model,
                 meta.arch, meta.input_w, meta.input_h, meta.unfreeze[0] ? meta.unfreeze : "?", weights_id);
    else
        snprintf(model_line, sizeof model_line, "%s, a head on %s %dx%d %s features, base weights %s", o->head,
                 meta.arch, meta.input_w, meta.input_h, meta.cut, weights_id[0] ? weights_id : meta.weights);
    r.model = model_line;
    // Not progress: shown even with --quiet.
    // Named, as extract names them (the first 10).
    if (ignored.n)
        log_printf(stderr, "note: %d file%s that Keras does not list (not images by name) ignored\n", ignored.n,
                   ignored.n == 1 ? "" : "s");
    for (int i = 0; i < ignored.n && i < 10; i++)
        log_printf(stderr, "note:   %s: %s\n", ignored.path[i], ignored.reason[i]);
    if (ignored.n > 10) log_printf(stderr, "note:   ... and %d more\n", ignored.n - 10);
    for (int i = 0; i < skipped.n; i++)
        log_printf(stderr, "warning: skipped %s: %s\n", skipped.path[i], skipped.reason[i]);
    const int scan_skipped = skipped.n;
    if (!o->cache && !in.n && !skipped.n) {
        err_set("no images to classify in %s", data);
        goto done;
    }

    // --- classify -------------------------------------------------------------------
    r.m = &m;
    r.names = meta.class_names;
    r.K = K;
    r.top_k = o->top_k > 0 ? (o->top_k < K ? o->top_k : K) : (K < 3 ? K : 3);
    r.eval = o->eval || o->cache;
    r.fmt = fmt;
    r.out = stdout;
    r.max_worst = o->report ? o->max_errors : 0;
    // No more mistakes than inputs (a huge --max-errors allocates no more).
    const long n_inputs = o->cache ? (long)fs.n : (long)in.n;
    if (r.max_worst > n_inputs) r.max_worst = (int)n_inputs;
    r.conf = calloc((size_t)K * K, sizeof(long));
    r.probs = malloc(sizeof(float) * (size_t)K);
    r.idx = malloc(sizeof(int) * (size_t)K);
    r.worst = calloc((size_t)(r.max_worst > 0 ? r.max_worst : 1), sizeof(Mistake));
    if (r.eval && !(r.wrong = temp_file())) goto done;
    if (!r.conf || !r.probs || !r.idx || !r.worst) {
        err_set("out of memory");
        goto done;
    }
    results_header(&r);
    int rc = o->cache ? run_cache(o, &m, &fs, &cmeta, &r) : run_images(o, &m, &meta, &in, &r, &skipped, threads);
    if ((fflush(stdout) != 0 || ferror(stdout)) && rc >= 0) {
        // (the lines are lost: a full disk, a closed pipe's reader)
        err_set("writing the predictions to stdout: %s", strerror(errno ? errno : EIO));
        goto done;
    }
    if (rc < 0) goto done;
    if (rc == EXIT_STOPPED) {
        // Nothing to resume: the lines printed are complete, the report is
        // not written (it would describe part of the data).
        log_printf(stderr, "\npredict: stopped by %s after %ld image%s (their lines are printed; no report): rerun "
                   "to classify all\n",
                   stop_signal_name(stop_requested()), r.order, r.order == 1 ? "" : "s");
        status = EXIT_STOPPED;
        goto done;
    }
    if (r.eval) {
        if (r.run.n == 0) {
            err_set("%s: no image could be read (%d skipped)", data, skipped.n);
            goto done;
        }
        if (results_finish(&r, o->report, what, data, &skipped) < 0) goto done;
    }
    if (!r.eval && r.order == 0) {
        err_set("no image could be read (%d skipped)", skipped.n);
        goto done;
    }
    if (skipped.n) {
        // (files the folder scan could not reach are not among the inputs)
        int total = in.n + scan_skipped;
        log_printf(stderr, "predict: %d of %d file%s could not be read and %s skipped (exit code %d)\n", skipped.n,
                   total, total == 1 ? "" : "s", skipped.n == 1 ? "was" : "were", EXIT_PARTIAL);
        status = EXIT_PARTIAL;
    } else {
        status = EXIT_DONE;
    }
done:
    results_free(&r);
    features_free(&fs);
    cache_meta_free(&cmeta);
    skip_free(&skipped);
    skip_free(&ignored);
    inputs_free(&in);
    model_free(&m);
    model_meta_free(&meta);
    return status;
}
