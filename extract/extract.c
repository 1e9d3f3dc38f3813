// extract: images -> frozen conv base -> feature cache.
//
// Flow: scan the folder (flow_from_directory order) -> keep this shard's
// items -> read what the cache already holds (resume) -> worker threads read,
// hash, decode, resize and preprocess each image (skipping unchanged cached
// ones) -> batches through the conv base (CPU or GPU) -> zstd records into
// LMDB, committed every few hundred -> counts, summary and skipped list.
#include "extract.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <ctype.h>
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
#include "fileutil.h"
#include "utf8.h"
#include "forward.h"
#include "gpu_base.h"
#include "hash.h"
#include "image.h"
#include "loader.h"
#include "model.h"
#include "parallel.h"
#include "progress.h"
#include "resume.h"
#include "stop.h"
#include "weights_source.h"

// --- per-image loading (worker threads) ------------------------------------------------

typedef struct {
    const Dataset *ds;
    const long *items;       // dataset indices of this shard
    CachedSet *cached;
    LoadOptions load;
    int rgb8;                // 1: RGB8 pixels (the GPU preprocesses them), 0: preprocessed floats
} LoadCtx;

typedef struct {
    uint8_t sha256[32];
    int cached;       // unchanged in the cache: nothing to do
    int replaced;     // in the cache with other bytes: extracted again
    int reduced;      // decoded at a reduced scale (over the pixel budget)
    int src_w, src_h;
} ItemInfo;

static void hex_to_bytes(const char *hex, uint8_t *out, int n) {
    for (int i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static int load_item(void *vctx, long index, float *out, void *extra) {
    LoadCtx *ctx = vctx;
    ItemInfo *info = extra;
    memset(info, 0, sizeof *info);
    const DatasetItem *it = &ctx->ds->items[ctx->items[index]];
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", ctx->ds->root, it->path);
    uint8_t *data = NULL;
    size_t n = 0;
    if (image_read_file(full, &data, &n) < 0) return -1;
    char hex[65];
    hash_buf_hex(data, n, HASH_SHA256, hex);
    hex_to_bytes(hex, info->sha256, 32);
    CachedEntry *c = find_cached(ctx->cached, it->path);
    if (c && !memcmp(c->sha256, info->sha256, 32)) {
        info->cached = 1;
        free(data);
        return 0;
    }
    info->replaced = c != NULL;
    DecodeInfo dinfo;
    int rc = ctx->rgb8 ? image_chain_rgb8(data, n, full, &ctx->load, (uint8_t *)out, &dinfo)
                       : image_chain(data, n, full, &ctx->load, NULL, out, &dinfo);
    free(data);
    if (rc < 0) return -1;
    info->reduced = dinfo.over_budget;
    info->src_w = dinfo.src_w, info->src_h = dinfo.src_h;
    return 0;
}

// --- skipped files ---------------------------------------------------------------

typedef struct {
    char **path, **reason;
    int n, cap;
} SkipList;

static void skip_add(SkipList *s, const char *path, const char *reason) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->path = realloc(s->path, (size_t)s->cap * sizeof(char *));
        s->reason = realloc(s->reason, (size_t)s->cap * sizeof(char *));
    }
    s->path[s->n] = strdup(path);
    s->reason[s->n] = strdup(reason);
    s->n++;
}

// TSV with \t, \n and \\ escaped, so any file name survives.
static void tsv_field(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\t') fputs("\\t", f);
        else if (*s == '\n') fputs("\\n", f);
        else if (*s == '\\') fputs("\\\\", f);
        else fputc(*s, f);
    }
}

// Written atomically beside the records: PATH/skipped.tsv, the skipped
// images first, then what Keras does not list (reasons "... (ignored, as
// Keras does)").
static int write_skipped(const char *cache, const SkipList *s, const SkipList *ignored) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/skipped.tsv", cache);
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    fputs("path\treason\n", f);
    for (int pass = 0; pass < 2; pass++) {
        const SkipList *l = pass ? ignored : s;
        for (int i = 0; i < l->n; i++) {
            tsv_field(f, l->path[i]);
            fputc('\t', f);
            tsv_field(f, l->reason[i]);
            fputc('\n', f);
        }
    }
    return atomic_commit(&af);
}

static void skip_free(SkipList *s) {
    for (int k = 0; k < s->n; k++) free(s->path[k]), free(s->reason[k]);
    free(s->path), free(s->reason);
    memset(s, 0, sizeof *s);
}

// Classes of this run that end with no record although the folder lists
// images of theirs here (every one was skipped): out[k] = how many it
// listed, 0 otherwise. Returns the number of such classes.
static int classes_all_skipped(const Dataset *ds, const long *items, long n_items, const CacheMeta *meta, int *out) {
    for (int k = 0; k < ds->n_classes; k++) out[k] = 0;
    for (long i = 0; i < n_items; i++) out[ds->items[items[i]].label]++;
    int n = 0;
    for (int k = 0; k < ds->n_classes; k++) {
        if (meta->class_counts && meta->class_counts[k] > 0) out[k] = 0;
        n += out[k] > 0;
    }
    return n;
}

// --- the run -------------------------------------------------------------------

// "<n> files, sha256:<hex>" of the whole folder's listing (labels and paths
// in order): shards merge only when they saw the same folder.
static int folder_fingerprint(const Dataset *ds, char *out, size_t size) {
    HashCtx *h = hash_begin(HASH_SHA256);
    if (!h) return -1;
    for (int i = 0; i < ds->n_items; i++) {
        char label[16];
        int n = snprintf(label, sizeof label, "%d\t", ds->items[i].label);
        hash_update(h, label, (size_t)n);
        hash_update(h, ds->items[i].path, strlen(ds->items[i].path) + 1);  // with its NUL: unambiguous
    }
    char hex[65];
    if (hash_end(h, hex) < 0) return -1;
    snprintf(out, size, "%d files, sha256:%s", ds->n_items, hex);
    return 0;
}

int extract_parse_shard(const char *s, int *i, int *n) {
    *i = 0, *n = 1;
    if (!s) return 0;
    // Digits only, each number within an int (sscanf's %d would wrap
    // 4294967297 to 1 and take "+1" or " 1").
    char *end;
    errno = 0;
    long a = isdigit((unsigned char)s[0]) ? strtol(s, &end, 10) : -1;
    long b = a >= 0 && *end == '/' && isdigit((unsigned char)end[1]) ? strtol(end + 1, &end, 10) : -1;
    if (a < 0 || b < 1 || *end || errno == ERANGE || a > INT_MAX || b > INT_MAX || a >= b)
        return err_set("--shard '%s': expected I/N with 0 <= I < N, e.g. 0/4", s);
    *i = (int)a, *n = (int)b;
    return 0;
}

typedef struct {
    long records;
    long long bytes;
} SizeStats;

static int sum_sizes(void *ctx, uint64_t key, const void *val, size_t len) {
    SizeStats *s = ctx;
    s->records++;
    s->bytes += (long long)len;
    return 0;
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

// One batch of images waiting for the conv base.
typedef struct {
    int n, cap;
    float *in, *out;       // cap images in (floats; for the GPU RGB8 pixels), cap feature vectors out
    int in_owned;          // 0: in is the GPU's pinned staging buffer (filled in place)
    uint64_t *keys;
    int32_t *labels;
    const char **paths;    // into the Dataset
    uint8_t (*sha)[32];
} Batch;

// in: where the batch's images go (the GPU's pinned staging buffer), or
// NULL: a buffer of its own (none when image_floats is 0).
static int batch_alloc(Batch *b, int cap, size_t image_floats, long feat, float *in) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->in_owned = !in && image_floats;
    b->in = in ? in : image_floats ? malloc(sizeof(float) * image_floats * (size_t)cap) : NULL;
    b->out = malloc(sizeof(float) * (size_t)feat * (size_t)cap);
    b->keys = malloc(sizeof(uint64_t) * (size_t)cap);
    b->labels = malloc(sizeof(int32_t) * (size_t)cap);
    b->paths = malloc(sizeof(char *) * (size_t)cap);
    b->sha = malloc(32 * (size_t)cap);
    if ((image_floats && !b->in) || !b->out || !b->keys || !b->labels || !b->paths || !b->sha)
        return err_set("out of memory for a batch of %d images", cap);
    return 0;
}

static void batch_free(Batch *b) {
    if (b->in_owned) free(b->in);
    free(b->out), free(b->keys), free(b->labels), free(b->paths), free(b->sha);
    memset(b, 0, sizeof *b);
}

// Where the run's time goes (seconds), for the summary's "Time:" line.
typedef struct {
    double wait, base, store;
} ExtractTimes;

// Encoding records (f16 conversion, zstd, crc) is the host's biggest share
// of a GPU run: it is spread over the thread pool (parallel.h), one encoder
// per task, and the records are then stored in order, the same bytes as
// one cache_put after the other. On the GPU a batch's records are encoded on
// a thread of their own (store_batch with later = 1) while the main thread
// fills and sends the next batch, and stored when that one comes back
// (store_finish): an H200 run spent 0.5 s of 1.1 s storing with the
// encoding in line. Only the main thread writes to the cache (an LMDB write
// transaction belongs to the thread that began it), and the main thread
// calls no parallel_for meanwhile (the pool takes one caller at a time: on
// the GPU path nothing else uses it).
typedef struct {
    int n_enc;
    RecordEncoder *enc;   // one per task
    uint8_t **rec;        // cap encoded records of the batch being stored
    size_t *rec_cap, *rec_len;
    // The batch being encoded (read by the tasks): its features, keys,
    // labels, paths and digests, swapped out of the caller's batch (which
    // fills again meanwhile); n == 0: none.
    Batch held;
    const Batch *b;       // &held
    long D;
    FeatDtype dtype;
    int failed;
    char msg[ERR_MSG_MAX];
    pthread_t thread;     // encoding held, when running
    int running;
} Storer;

static int storer_init(Storer *st, const Cache *cache, int cap, long feat, int threads) {
    memset(st, 0, sizeof *st);
    if (batch_alloc(&st->held, cap, 0, feat, NULL) < 0) return -1;
    st->b = &st->held;
    st->n_enc = threads < cap ? threads : cap;
    st->enc = calloc((size_t)st->n_enc, sizeof *st->enc);
    st->rec = calloc((size_t)cap, sizeof *st->rec);
    st->rec_cap = calloc((size_t)cap, sizeof *st->rec_cap);
    st->rec_len = calloc((size_t)cap, sizeof *st->rec_len);
    if (!st->enc || !st->rec || !st->rec_cap || !st->rec_len) return err_set("out of memory");
    for (int t = 0; t < st->n_enc; t++)
        if (record_encoder_init(&st->enc[t], cache) < 0) return -1;
    return 0;
}

static void storer_free(Storer *st, int cap) {
    if (st->running) pthread_join(st->thread, NULL);
    batch_free(&st->held);
    for (int t = 0; st->enc && t < st->n_enc; t++) record_encoder_free(&st->enc[t]);
    for (int i = 0; st->rec && i < cap; i++) free(st->rec[i]);
    free(st->enc), free(st->rec), free(st->rec_cap), free(st->rec_len);
    memset(st, 0, sizeof *st);
}

// Task t encodes images t, t + n_enc, ... of the batch.
static void encode_task(void *ctx, int t) {
    Storer *st = ctx;
    const Batch *b = st->b;
    for (int i = t; i < b->n; i += st->n_enc) {
        CacheRecord r = {.label = b->labels[i], .path = b->paths[i], .features = b->out + (size_t)i * st->D};
        memcpy(r.sha256, b->sha[i], 32);
        const uint8_t *p;
        long len = record_encode(&st->enc[t], &r, (int)st->D, st->dtype, &p);
        if (len >= 0 && (size_t)len > st->rec_cap[i]) {
            uint8_t *g = realloc(st->rec[i], (size_t)len);
            if (g) st->rec[i] = g, st->rec_cap[i] = (size_t)len;
            else len = err_set("out of memory");
        }
        if (len < 0) {
            if (!__atomic_exchange_n(&st->failed, 1, __ATOMIC_SEQ_CST)) snprintf(st->msg, sizeof st->msg, "%s", err_msg());
            return;
        }
        memcpy(st->rec[i], p, (size_t)len);
        st->rec_len[i] = (size_t)len;
    }
}

static void encode_held(Storer *st) {
    parallel_for(st->n_enc < st->held.n ? st->n_enc : st->held.n, encode_task, st);
}

static void *encode_thread(void *arg) {
    encode_held(arg);
    return NULL;
}

// Stores the held batch's records (waiting for their encoding) and empties it.
static int store_finish(Storer *st, Cache *cache, ExtractTimes *t) {
    double t0 = progress_now();
    if (st->running) pthread_join(st->thread, NULL), st->running = 0;
    if (st->held.n == 0) return 0;
    if (st->failed) return err_set("%s", st->msg);
    for (int i = 0; i < st->held.n; i++)
        if (cache_put_raw(cache, st->held.keys[i], st->rec[i], st->rec_len[i]) < 0) return -1;
    st->held.n = 0;
    t->store += progress_now() - t0;
    return 0;
}

#define SWAP(a, b)              \
    do {                        \
        __typeof__(a) tmp_ = a; \
        a = b, b = tmp_;        \
    } while (0)

// Stores one record per image of b (its features in b->out) and empties
// it: the batch before it (if held) first; b's own records now, or with
// later = 1 when the next store_batch or store_finish comes (encoded
// meanwhile on a thread of their own).
static int store_batch(Storer *st, Batch *b, long D, Cache *cache, FeatDtype dtype, ExtractTimes *t, int later) {
    if (store_finish(st, cache, t) < 0) return -1;
    double t0 = progress_now();
    SWAP(st->held.out, b->out);
    SWAP(st->held.keys, b->keys);
    SWAP(st->held.labels, b->labels);
    SWAP(st->held.paths, b->paths);
    SWAP(st->held.sha, b->sha);
    st->held.n = b->n, b->n = 0;
    st->D = D, st->dtype = dtype, st->failed = 0;
    if (later) st->running = pthread_create(&st->thread, NULL, encode_thread, st) == 0;
    if (!st->running) encode_held(st);  // now (also when no thread could be had)
    t->store += progress_now() - t0;
    return later ? 0 : store_finish(st, cache, t);
}

// The conv base over the batches. On the CPU one batch at a time. On the GPU
// two are in flight: bt[*cur] fills with images while bt[*flying] (-1: none)
// runs, and the host stores a batch's records while the GPU runs the next.
typedef struct {
    Batch bt[2];
    int cur, flying;
    Storer st;
    size_t item_bytes;  // one image in a batch: floats (CPU), or RGB8 pixels (GPU: it preprocesses them)
    PrepMode prep;
} Batches;

// Waits for the batch on the GPU, if any, and stores it.
static int drain_batches(Batches *q, GpuBase *gpu, long D, Cache *cache, FeatDtype dtype, ExtractTimes *t) {
    if (q->flying < 0) return 0;
    Batch *f = &q->bt[q->flying];
    double t0 = progress_now();
    if (gpu_base_collect(gpu, f->out) < 0) return -1;
    t->base += progress_now() - t0;
    q->flying = -1;
    return store_batch(&q->st, f, D, cache, dtype, t, 1);
}

// Sends the filling batch through the conv base (stored now on the CPU; on
// the GPU when the next one is sent, or drained).
static int flush_batch(Batches *q, const Model *m, GpuBase *gpu, BaseWorkspace *ws, Cache *cache, FeatDtype dtype,
                       ExtractTimes *t) {
    Batch *b = &q->bt[q->cur];
    if (b->n == 0) return 0;
    const long D = model_feature_size(m);
    double t0 = progress_now();
    if (!gpu) {
        base_forward_cpu(m, b->in, b->n, b->out, ws);
        t->base += progress_now() - t0;
        return store_batch(&q->st, b, D, cache, dtype, t, 0);
    }
    if (gpu_base_submit_rgb8(gpu, (const uint8_t *)b->in, b->n, q->prep) < 0) return -1;
    t->base += progress_now() - t0;
    if (drain_batches(q, gpu, D, cache, dtype, t) < 0) return -1;  // the one before, while this one runs
    q->flying = q->cur;
    q->cur ^= 1;
    return 0;
}

static void print_summary(const char *cache_path, Cache *cache, const CacheMeta *meta, const SkipList *skipped,
                          const SkipList *ignored, const int *all_skipped, long written, long unchanged,
                          long replaced, long removed, double seconds) {
    SizeStats sizes = {0, 0};
    cache_visit(cache, sum_sizes, &sizes);
    char data[PATH_MAX + 32];
    snprintf(data, sizeof data, "%s/data.mdb", cache_path);
    long long disk = file_size(data);
    // A rerun with nothing new says so, not "in 0.0 s (0.0 img/s)".
    if (written) printf("Extracted %ld image%s in %.1f s (%.1f img/s)", written, written == 1 ? "" : "s", seconds,
                        seconds > 0 ? written / seconds : 0.0);
    else printf("Extracted 0 images");
    if (unchanged) printf("; %ld unchanged from an earlier run", unchanged);
    if (replaced) printf("; %ld changed and re-extracted", replaced);
    if (removed) printf("; %ld removed (no longer in the folder)", removed);
    printf(".\nRecords per class:\n");
    for (int k = 0; k < meta->n_classes; k++) {  // padded by display columns, never cut
        const char *name = meta->class_names[k];
        int pad = 24 - utf8_width(name);
        printf("  %s%*s %ld\n", name, pad > 0 ? pad : 0, "", meta->class_counts ? meta->class_counts[k] : 0);
    }
    printf("Cache %s: %ld records, %.2f MB on disk, %.0f bytes per image (features %s, raw %ld bytes)\n", cache_path,
           sizes.records, disk / 1e6, sizes.records ? (double)sizes.bytes / sizes.records : 0.0,
           feat_dtype_name(meta->dtype),
           (long)meta->feat_h * meta->feat_w * meta->feat_c * (meta->dtype == FEAT_F16 ? 2 : 4));
    if (skipped->n) {
        printf("Skipped %d file%s (listed in %s/skipped.tsv):\n", skipped->n, skipped->n == 1 ? "" : "s", cache_path);
        for (int i = 0; i < skipped->n; i++) printf("  %s: %s\n", skipped->path[i], skipped->reason[i]);
    }
    // Not skipped images: Keras does not list these either (and --strict
    // does not count them).
    if (ignored->n) {
        printf("Ignored %d file%s that Keras does not list either (also in %s/skipped.tsv):\n", ignored->n,
               ignored->n == 1 ? "" : "s", cache_path);
        for (int i = 0; i < ignored->n && i < 10; i++) printf("  %s: %s\n", ignored->path[i], ignored->reason[i]);
        if (ignored->n > 10) printf("  ... and %d more\n", ignored->n - 10);
    }
    fflush(stdout);  // the summary before the warnings that follow it
    for (int k = 0; k < meta->n_classes; k++)
        if (all_skipped[k])
            log_printf(stderr,
                       all_skipped[k] == 1 ? "WARNING: class '%s' has no records: its only image here was skipped. "
                                             "A head trained on this cache never sees the class.\n"
                                           : "WARNING: class '%s' has no records: all %d of its images here were "
                                             "skipped. A head trained on this cache never sees the class.\n",
                       meta->class_names[k], all_skipped[k]);
}

// resume_folder_moved already said yes (overwrite_needed asked it).
static int moved_accepted(void *ctx, Cache *c, const CacheMeta *have, const CacheMeta *want) {
    (void)ctx, (void)c, (void)have, (void)want;
    return 1;
}

// --overwrite: does the cache at path need replacing? 0 when it holds
// records this run can keep: the same settings (cache_meta_diff) and the
// same folder, or this folder moved (resume_folder_moved; *moved is then set
// so that it is not asked twice). 1 when it differs, is damaged or
// unreadable (cache_open_write_from replaces it), or does not exist. Never
// -1 for a cache it cannot read: replacing it is what --overwrite is for.
static int overwrite_needed(const char *path, const CacheMeta *want, const Dataset *ds, CacheMovedFn *moved) {
    char data[PATH_MAX + 32];
    struct stat st;
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (stat(data, &st) < 0) return 1;
    Cache c = {0};
    CacheMeta have;
    if (cache_open_read(&c, path, &have) < 0) return 1;  // damaged: replaced
    char diff[600];
    int replace = cache_meta_diff(&have, want, diff, sizeof diff) != 0;
    if (replace) {
        log_printf(stderr, "note: --overwrite: %s was made with other settings (%s): starting it over\n", path, diff);
    } else if (have.data_dir[0] && strcmp(have.data_dir, want->data_dir)) {
        int ok = resume_folder_moved((void *)ds, &c, &have, want);  // prints its note when it says yes
        if (ok == 1) *moved = moved_accepted;
        else log_printf(stderr, "note: --overwrite: %s was made from %s, not %s: starting it over\n", path,
                        have.data_dir, want->data_dir);
        replace = ok != 1;
    }
    cache_meta_free(&have);
    cache_close(&c);
    return replace;
}

// A cache inside the image folder would be listed as one of its class
// folders by every later run (and by Keras): refused.
static int cache_outside_data(const char *cache, const char *data) {
    if (path_within(cache, data))  // (a --data that does not resolve: the scan says what is wrong with it)
        return err_set("--cache %s lies inside --data %s: later runs (and Keras) would read it as a class folder; "
                       "put the cache elsewhere",
                       cache, data);
    return 0;
}

int extract_run(const ExtractOptions *o) {
    int status = -1;
    stop_install();  // SIGTERM / SIGINT: finish the batch in flight, commit, exit EXIT_STOPPED
    DeviceKind dev;
    char dev_note[300];
    GpuPrecision precision;  // TF32 and BF16 change the features, and the cache records it
    if (device_select_precision(o->device, o->precision, &dev, &precision, dev_note, sizeof dev_note) < 0) return -1;
    int shard_i, shard_n;
    if (extract_parse_shard(o->shard, &shard_i, &shard_n) < 0) return -1;
    if (o->batch < 1) return err_set("--batch must be >= 1, got %d", o->batch);

    LoadOptions load = {.w = o->input_size, .h = o->input_size, .reduced_decode = o->reduced_decode,
                        .max_pixels = o->max_pixels};
    if (interp_parse(o->interpolation, &load.interp) < 0 || prep_parse(o->preprocess, &load.prep) < 0) return -1;

    // Another extract writing this cache: say so now, before scanning the
    // folder (cache_open_write takes the lock for the run itself).
    if (cache_outside_data(o->cache, o->data) < 0) return -1;
    char cache_data[PATH_MAX + 32];
    snprintf(cache_data, sizeof cache_data, "%s/data.mdb", o->cache);
    if (access(cache_data, F_OK) != 0 && cache_folder_usable(o->cache) < 0) return -1;  // before the scan
    int busy = cache_lock_folder(o->cache);
    if (busy == -1) return -1;
    if (busy >= 0) close(busy);
    ModelConfig cfg;
    model_config_defaults(&cfg);
    if (arch_from_name(o->model, &cfg.arch) < 0) return -1;
    cfg.input_h = cfg.input_w = o->input_size;
    cfg.cut = o->layer;
    Model m = {0};
    Dataset ds = {0};
    CachedSet cached = {0};
    SkipList skipped = {0}, ignored = {0};
    Cache cache = {0};
    CacheMeta want = {0};
    Loader *loader = NULL;
    GpuBase *gpu = NULL;
    BaseWorkspace ws = {0};
    Batches q = {.flying = -1};
    long *items = NULL;
    int *all_skipped = NULL;  // per class: images listed here, when all were skipped

    if (model_build(&m, &cfg) < 0) return -1;

    // The folder first: a wrong --data fails before any weights are read
    // (or downloaded); but a --weights FILE that is not there, before the
    // scan of a large folder.
    if (weights_spec_check(o->weights) < 0) goto done;
    if (dataset_scan(o->data, NULL, 0, &ds) < 0) {
        err_prefix("--data ");
        goto done;
    }
    char found[128];
    dataset_found_line(&ds, found, sizeof found);
    printf("%s\n", found);
    fflush(stdout);
    char splits[1024];
    if (dataset_looks_like_splits(&ds, splits, sizeof splits)) log_printf(stderr, "warning: %s\n", splits);
    for (int k = 0; k < ds.n_classes; k++)
        if (strchr(ds.class_names[k], '\n')) {  // caches store class names one per line
            err_set("%s: class folder name contains a newline; rename it", ds.root);
            goto done;
        }
    // An empty class folder is a class all the same, as Keras's
    // flow_from_directory counts it ("Found 12 images belonging to 3
    // classes"): a validation folder missing a class keeps the training
    // folder's class indices. A warning, as for a class whose images were
    // all skipped; no image at all is an error.
    if (ds.n_items == 0) {
        err_set("%s: no images in any of its %d class folders (looked for jpg, jpeg, png, bmp, ppm, tif, tiff)",
                ds.root, ds.n_classes);
        goto done;
    }
    for (int k = 0; k < ds.n_classes; k++)
        if (ds.class_counts[k] == 0)
            log_printf(stderr,
                       "WARNING: class '%s' has no images (%s/%s; looked for jpg, jpeg, png, bmp, ppm, tif, tiff): "
                       "a class all the same, as in Keras (its index kept), but train refuses this cache as --cache "
                       "(a class with no training records); as --val-cache it is fine\n",
                       ds.class_names[k], ds.root, ds.class_names[k]);
    for (int k = 0; k < ds.n_skipped; k++) skip_add(&skipped, ds.skipped_paths[k], ds.skipped_reasons[k]);
    for (int k = 0; k < ds.n_ignored; k++) skip_add(&ignored, ds.ignored_paths[k], ds.ignored_reasons[k]);

    long n_items = 0;
    items = malloc(sizeof(long) * (size_t)(ds.n_items + 1));
    for (long k = 0; k < ds.n_items; k++)
        if (k % shard_n == shard_i) items[n_items++] = k;

    char weights_id[96];
    if (load_base_weights(&m, o->weights, (uint64_t)o->seed, o->quiet, weights_id, sizeof weights_id) < 0) goto done;

    const Layer *cut = &m.layers[m.n_base - 1];
    snprintf(want.model, sizeof want.model, "%s", arch_name(cfg.arch));
    snprintf(want.weights, sizeof want.weights, "%s", weights_id);
    want.input_h = want.input_w = o->input_size;
    snprintf(want.interpolation, sizeof want.interpolation, "%s", interp_name(load.interp));
    snprintf(want.preprocess, sizeof want.preprocess, "%s", prep_name(load.prep));
    snprintf(want.layer, sizeof want.layer, "%s", m.cut_name);
    want.feat_h = cut->out_h, want.feat_w = cut->out_w, want.feat_c = cut->out_c;
    want.dtype = !strcmp(o->dtype, "f32") ? FEAT_F32 : FEAT_F16;
    want.n_classes = ds.n_classes;
    want.class_names = ds.class_names;
    want.class_files = malloc(sizeof(long) * (size_t)ds.n_classes);
    if (!want.class_files) {
        err_set("out of memory");
        goto done;
    }
    for (int k = 0; k < ds.n_classes; k++) want.class_files[k] = ds.class_counts[k];
    if (o->shard) snprintf(want.shard, sizeof want.shard, "%d/%d", shard_i, shard_n);
    // Settings that change pixels, so a resumed run must use the same.
    // TF32 and BF16 convolutions change the values too (fp32, CPU or GPU,
    // adds nothing: its caches are one kind).
    char arith[40] = "";
    if (precision != GPU_FP32) snprintf(arith, sizeof arith, ", %s convolutions", gpu_precision_name(precision));
    // Bilinear resizing follows Pillow 13's pass order since vggft 0.2 (a
    // tall image's height first, image_resize.c): a cache made before by
    // this interpolation is of other pixels, refused until re-extracted.
    const char *resize = load.interp == INTERP_BILINEAR ? ", bilinear as Pillow 13" : "";
    snprintf(want.decode, sizeof want.decode, "%s, pixel budget %ld%s%s", o->reduced_decode ? "reduced" : "full",
             o->max_pixels, arith, resize);
    if (folder_fingerprint(&ds, want.folder, sizeof want.folder) < 0) goto done;
    snprintf(want.version, sizeof want.version, "%s", VGGFT_VERSION);
    if (snprintf(want.command, sizeof want.command, "%s", o->command_line ? o->command_line : "") >=
        (int)sizeof want.command)
        memcpy(want.command + sizeof want.command - 4, "...", 4);  // cut: say so
    // The cache belongs to this folder: a run on another one is refused
    // (a typo in --cache must not re-key another folder's cache), unless
    // the folder moved (resume_folder_moved decides).
    char real[PATH_MAX];
    if (!realpath(ds.root, real)) {
        err_set("%s: %s", ds.root, strerror(errno));
        goto done;
    }
    snprintf(want.data_dir, sizeof want.data_dir, "%s", real);
    // --overwrite replaces only what differs: a cache of these very settings
    // (and this folder, or this folder moved) is resumed as a plain rerun.
    CacheMovedFn moved_fn = resume_folder_moved;
    int overwrite = o->overwrite ? overwrite_needed(o->cache, &want, &ds, &moved_fn) : 0;
    if (overwrite < 0) goto done;
    if (cache_open_write_from(&cache, o->cache, &want, overwrite, moved_fn, &ds) < 0) goto done;
    // A list from an earlier run would describe files this run may not skip.
    char old_skipped[PATH_MAX + 32];
    snprintf(old_skipped, sizeof old_skipped, "%s/skipped.tsv", o->cache);
    atomic_remove_stale(old_skipped);  // left by a run killed while writing it
    unlink(old_skipped);

    // Records of earlier runs move to their files' current indices (the
    // folder may have changed); records of files gone are deleted.
    if (resume_plan(&cache, &ds, items, n_items, &cached) < 0) goto done;
    if (cached.damaged)
        log_printf(stderr, "warning: %s: %ld damaged record%s deleted; their images are extracted again\n", o->cache,
                cached.damaged, cached.damaged == 1 ? "" : "s");

    const size_t image_floats = (size_t)o->input_size * o->input_size * 3;
    // cuDNN takes no tensor of more than 2^31 - 1 values: a larger --batch
    // runs on the GPU in batches that fit (as if given; a resume with the
    // same --batch does the same).
    ExtractOptions fit;
    if (dev == DEVICE_CUDA && o->batch > device_gpu_batch_limit(&m, 1, m.n_base)) {
        fit = *o, fit.batch = device_gpu_batch_limit(&m, 1, m.n_base);
        log_printf(stderr, "note: --batch %d runs on the GPU in batches of %d at %dx%d (cuDNN takes at most 2^31 - 1 "
                   "values per tensor)\n", o->batch, fit.batch, o->input_size, o->input_size);
        o = &fit;
    }
    if (dev == DEVICE_CUDA) {
        gpu = gpu_base_create(&m, o->batch, precision);
        // --device auto: a GPU that cannot run the base is no reason to fail the job
        // (unless the cache is to hold TF32 features).
        if (!gpu && (strcmp(o->device, "auto") || precision != GPU_FP32)) goto done;
        if (!gpu) {
            log_printf(stderr, "warning: GPU unusable (%s); running on the CPU\n", err_msg());
            dev = DEVICE_CPU;
            snprintf(dev_note, sizeof dev_note, "CPU (GPU unusable)");
        }
    }
    // On the GPU two batches alternate, and the images go straight into its
    // pinned buffers: batch k fills the buffer the k-th submit reads (both
    // alternate 0, 1, 0, ...). On the CPU one batch.
    for (int k = 0; k < (gpu ? 2 : 1); k++)
        if (batch_alloc(&q.bt[k], o->batch, image_floats, model_feature_size(&m), gpu ? gpu_base_staging(gpu, k) : NULL) <
            0)
            goto done;
    if (dev == DEVICE_CPU && base_workspace_alloc(&ws, &m) < 0) goto done;
    // Default: the CPUs this process may run on (taskset, Slurm's allotment).
    int threads = o->threads > 0 ? o->threads : parallel_cpus();
    parallel_set_threads(threads);  // the Winograd transforms' pool (forward.h), record encoding
    if (storer_init(&q.st, &cache, o->batch, model_feature_size(&m), threads) < 0) goto done;
    if (!o->quiet)
        // The folders last: two extractions at once (make -j2) interleave their logs.
        log_printf(stderr, "extract: %s; %s %dx%d -> %s (%dx%dx%d, %s); %ld image%s%s; %d thread%s; %s -> %s\n",
                   dev_note, want.model, o->input_size, o->input_size, want.layer, want.feat_h, want.feat_w,
                   want.feat_c, o->dtype, n_items, n_items == 1 ? "" : "s", cached.n ? ", resuming" : "", threads,
                   threads == 1 ? "" : "s", o->data, o->cache);

    // On the GPU the workers only decode and resize: the pixels travel as
    // RGB8 (a quarter of the bytes to copy) and the GPU preprocesses them.
    LoadCtx lctx = {&ds, items, &cached, load, gpu != NULL};
    q.item_bytes = gpu ? image_floats : image_floats * sizeof(float);
    q.prep = load.prep;
    loader = loader_start(n_items, threads, 2 * o->batch + threads, (q.item_bytes + 3) / 4, sizeof(ItemInfo),
                          load_item, &lctx);
    if (!loader) goto done;

    Progress bar;
    progress_start(&bar, stderr, n_items, "img");
    if (o->quiet) bar.enabled = 0;
    // Warnings print even with --quiet; on a terminal they first wipe the
    // bar (log_wipe_line).
    long done_items = 0, written = 0, unchanged = 0, replaced = 0, removed = cached.removed;
    const int skipped_at_scan = skipped.n;  // the folder scan's (not among the loader's items)
    const char *crash_env = getenv("VGGFT_TEST_CRASH_AFTER");
    long crash_after = crash_env ? atol(crash_env) : 0;
    // Test hook: a real SIGTERM (or VGGFT_TEST_SIGNAL=INT, USR1, HUP) to
    // ourselves after N images were taken from the loader.
    const char *signal_env = getenv("VGGFT_TEST_SIGNAL_AFTER"), *signal_kind = getenv("VGGFT_TEST_SIGNAL");
    long signal_after = signal_env ? atol(signal_env) : 0;
    int test_signal = !signal_kind                   ? SIGTERM
                      : !strcmp(signal_kind, "INT")  ? SIGINT
                      : !strcmp(signal_kind, "USR1") ? SIGUSR1
                      : !strcmp(signal_kind, "HUP")  ? SIGHUP
                                                     : SIGTERM;
    ExtractTimes times = {0, 0, 0};
    char oom_msg[ERR_MSG_MAX] = "";  // an image that could not be read for the system's sake (err_is_system)
    LoaderItem *li;
    for (;;) {
        double tw = progress_now();
        li = loader_next(loader);
        times.wait += progress_now() - tw;
        if (!li) break;
        const ItemInfo *info = li->extra;
        const DatasetItem *it = &ds.items[items[li->index]];
        CachedEntry *c = find_cached(&cached, it->path);
        if (!li->ok && li->system_error) {
            // Not the file's fault: stop (what is done is stored) rather
            // than skip it and drop its record; a rerun (with more memory,
            // descriptors, a file system back) extracts the rest.
            snprintf(oom_msg, sizeof oom_msg, "%s", li->msg);
            loader_release(loader, li);
            break;
        }
        if (!li->ok) {
            // Reported and skipped. The message starts with the full path:
            // keep the reason alone for the list.
            const char *reason = li->msg;
            size_t plen = strlen(ds.root) + 1 + strlen(it->path);
            if (strlen(reason) > plen + 2 && reason[plen] == ':') reason += plen + 2;
            skip_add(&skipped, it->path, reason);
            log_wipe_line(stderr);
            log_printf(stderr, "warning: skipped %s\n", li->msg);
            // An old record no longer describes this file.
            if (c && cache_del(&cache, c->key) < 0) goto done;
        } else if (info->cached) {
            unchanged++;
        } else {
            if (info->reduced) {
                log_wipe_line(stderr);
                log_printf(stderr,
                           "warning: %s/%s is %dx%d, over the pixel budget of %ld: decoded at a reduced scale "
                           "(its pixels differ from Keras's full decode)\n",
                           ds.root, it->path, info->src_w, info->src_h, o->max_pixels);
            }
            Batch *bt = &q.bt[q.cur];
            int b = bt->n++;
            memcpy((uint8_t *)bt->in + b * q.item_bytes, li->data, q.item_bytes);
            // A changed file keeps its key; a new one takes its folder index.
            bt->keys[b] = c ? c->key : (uint64_t)items[li->index];
            bt->labels[b] = it->label;
            bt->paths[b] = it->path;
            memcpy(bt->sha[b], info->sha256, 32);
            replaced += info->replaced;
        }
        loader_release(loader, li);
        done_items++;
        if (q.bt[q.cur].n == q.bt[q.cur].cap) {
            written += q.bt[q.cur].n;
            if (flush_batch(&q, &m, gpu, &ws, &cache, want.dtype, &times) < 0) goto done;
            // Test hook: die like kill -9 after N new records, committed or not.
            if (crash_after > 0 && written >= crash_after) _exit(137);
        }
        // (raise: to this thread, handled before it returns; kill(getpid())
        // may land on a loader thread and be seen an image later.)
        if (signal_after > 0 && done_items == signal_after) raise(test_signal);
        char metrics[128];
        snprintf(metrics, sizeof metrics, "new: %ld - cached: %ld - skipped: %d", written, unchanged, skipped.n);
        // Found in the cache or skipped (a file that fails to decode in a
        // fraction of a millisecond): no rate from them.
        bar.free_items = unchanged + skipped.n - skipped_at_scan;
        progress_update(&bar, done_items, metrics);
        // SIGTERM / SIGINT (Slurm's time limit, Ctrl-C): take no more images.
        if (stop_requested()) break;
    }
    // The batch in flight (every image taken so far) is stored either way.
    written += q.bt[q.cur].n;
    if (flush_batch(&q, &m, gpu, &ws, &cache, want.dtype, &times) < 0 ||
        drain_batches(&q, gpu, model_feature_size(&m), &cache, want.dtype, &times) < 0 ||
        store_finish(&q.st, &cache, &times) < 0)
        goto done;
    char metrics[128];
    snprintf(metrics, sizeof metrics, "new: %ld - cached: %ld - skipped: %d", written, unchanged, skipped.n);
    if (oom_msg[0]) {
        if (cache_commit(&cache) < 0) goto done;
        progress_finish(&bar, metrics);
        err_set("%s; %ld new record%s committed, %ld in %s (marked incomplete): rerun %s to continue", oom_msg,
                written, written == 1 ? "" : "s", cache_count(&cache), o->cache,
                err_is_out_of_memory(oom_msg) ? "with more memory"
                : strstr(oom_msg, strerror(EMFILE)) || strstr(oom_msg, strerror(ENFILE))
                    ? "with more file descriptors (ulimit -n)"
                    : "once the file system is well (a file that fails so every time is damaged: move it away)");
        goto done;
    }
    if (stop_requested() && done_items < n_items) {
        // Commit and leave the cache marked incomplete (as opened): the rerun
        // keeps all of it and does the rest. (A signal after the last image
        // lets the run finish: that takes less than Slurm's grace period.)
        if (cache_commit(&cache) < 0) goto done;
        progress_finish(&bar, metrics);
        log_printf(stderr,
                "extract: stopped by %s after %ld of %ld images: %ld new record%s committed, %ld in %s (marked "
                "incomplete): %s.\n",
                stop_signal_name(stop_requested()), done_items, n_items, written, written == 1 ? "" : "s",
                cache_count(&cache), o->cache, stop_rerun_hint("rerun the same command to continue"));
        status = EXIT_STOPPED;
        goto done;
    }
    if (cache_commit(&cache) < 0 || cache_store_counts(&cache, &want) < 0) goto done;
    progress_finish(&bar, metrics);
    if (write_skipped(o->cache, &skipped, &ignored) < 0) goto done;
    all_skipped = calloc((size_t)ds.n_classes, sizeof(int));
    if (!all_skipped) {
        err_set("out of memory");
        goto done;
    }
    int n_empty = classes_all_skipped(&ds, items, n_items, &want, all_skipped);
    print_summary(o->cache, &cache, &want, &skipped, &ignored, all_skipped, written, unchanged, replaced, removed,
                  progress_now() - bar.t_start);
    // Where the time went: waiting for the decoding threads (raise --threads
    // when it dominates), the conv base, compressing and storing records.
    if (written)
        printf("Time: waiting for decoded images %.1f s, conv base (%s) %.1f s, storing %.1f s\n", times.wait,
               gpu ? "GPU" : "CPU", times.base, times.store);
    // Nothing at all could be read (as predict): a cache without records
    // is no result, whatever --strict says.
    if (n_items > 0 && cache_count(&cache) == 0) {
        err_set("%s: no image could be read (%d skipped, listed in %s/skipped.tsv): the cache holds no records",
                o->data, skipped.n, o->cache);
        goto done;
    }
    // Skipped images, or a class folder without any (files Keras does not
    // list are no failure).
    int n_no_images = 0;
    for (int k = 0; k < ds.n_classes; k++) n_no_images += ds.class_counts[k] == 0;
    if (o->strict && skipped.n) {
        err_set("--strict: %d file%s skipped (see %s/skipped.tsv)%s", skipped.n, skipped.n == 1 ? " was" : "s were",
                o->cache, n_empty || n_no_images ? "; a class has no records at all" : "");
        goto done;
    }
    if (o->strict && n_no_images) {
        err_set("--strict: %d class folder%s of %s hold%s no images: a class without records", n_no_images,
                n_no_images == 1 ? "" : "s", o->data, n_no_images == 1 ? "s" : "");
        goto done;
    }
    status = 0;
done:
    // An error after a batch went to its encoder: its records are whole
    // (unless the encoding failed), so they are stored with the rest.
    if (status < 0 && cache.env && q.st.held.n > 0) {
        ExtractTimes unused = {0, 0, 0};
        ErrKept keep;
        err_keep(&keep);
        store_finish(&q.st, &cache, &unused);
        err_restore(&keep);
    }
    loader_stop(loader);
    gpu_base_free(gpu);
    base_workspace_free(&ws);
    batch_free(&q.bt[0]);
    batch_free(&q.bt[1]);
    storer_free(&q.st, o->batch);
    free(items);
    free(want.class_counts);  // (class_names belong to the Dataset)
    free(want.class_files);
    cached_set_free(&cached);
    skip_free(&skipped);
    skip_free(&ignored);
    free(all_skipped);
    if (cache.env) {
        // On an error keep every record finished so far: a rerun resumes from
        // there (the batch held for storing too: above). If the commit
        // itself fails, LMDB keeps the last good state.
        if (status < 0 && cache.txn) {
            ErrKept keep;
            err_keep(&keep);
            cache_commit(&cache);
            err_restore(&keep);
        }
        cache_close(&cache);
    }
    dataset_free(&ds);
    model_free(&m);
    return status;
}
