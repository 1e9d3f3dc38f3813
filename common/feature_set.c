#include "feature_set.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "error.h"
#include "progress.h"
#include "half.h"
#include "parallel.h"

typedef struct {
    FeatureSet *fs;
    const void **vals;
    size_t *lens;
    int keep;        // store the features (in memory) or only check them
    int next;        // next record to decode (shared)
    int failed;
    char msg[ERR_MSG_MAX];
    pthread_mutex_t mu;
} DecodeJob;

// Worker: decodes records into fs->data (or a scratch buffer when only checking).
static void *decode_worker(void *arg) {
    DecodeJob *job = arg;
    FeatureSet *fs = job->fs;
    void *dctx = ZSTD_createDCtx();
    float *tmp = malloc(sizeof(float) * (size_t)fs->D);
    for (;;) {
        pthread_mutex_lock(&job->mu);
        int i = job->failed ? fs->n : job->next++;
        pthread_mutex_unlock(&job->mu);
        if (i >= fs->n) break;
        const char *p;
        int plen;
        if (cache_record_decode(dctx, fs->keys[i], job->vals[i], job->lens[i], fs->D, &fs->labels[i], &p, &plen,
                                NULL, tmp) < 0) {
            pthread_mutex_lock(&job->mu);
            if (!job->failed) snprintf(job->msg, sizeof job->msg, "%s", err_msg());
            job->failed = 1;
            pthread_mutex_unlock(&job->mu);
            break;
        }
        fs->paths[i] = strndup(p, (size_t)plen);
        if (!job->keep) continue;
        if (fs->dtype == FEAT_F16) {
            // Exact: the values came from halves.
            f32_to_f16_array(tmp, (uint16_t *)fs->data + (size_t)i * fs->D, (size_t)fs->D);
        } else {
            memcpy((float *)fs->data + (size_t)i * fs->D, tmp, sizeof(float) * (size_t)fs->D);
        }
    }
    free(tmp);
    ZSTD_freeDCtx(dctx);
    return NULL;
}

typedef struct {
    FeatureSet *fs;
    const void **vals;
    size_t *lens;
    int cap;
    CacheContent cc;
    char content[512];
} Collect;

static int collect(void *ctx, uint64_t key, const void *val, size_t len) {
    Collect *c = ctx;
    FeatureSet *fs = c->fs;
    if (fs->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        fs->keys = realloc(fs->keys, sizeof(uint64_t) * (size_t)c->cap);
        c->vals = realloc(c->vals, sizeof(void *) * (size_t)c->cap);
        c->lens = realloc(c->lens, sizeof(size_t) * (size_t)c->cap);
        if (!fs->keys || !c->vals || !c->lens) return err_set("out of memory listing records");
    }
    fs->keys[fs->n] = key;
    c->vals[fs->n] = val;  // valid while the read transaction... see below
    c->lens[fs->n] = len;
    fs->n++;
    return 0;
}

// The content found against what the run recorded (cache.h); for caches
// made before contents were recorded, the records per class.
static int check_content_of(const FeatureSet *fs, const char *path, const CacheMeta *meta, const char *content) {
    if (cache_content_check(path, meta, content, fs->keys, fs->n) < 0) return -1;
    if (meta->content[0] || !meta->complete) return 0;
    long *per = calloc((size_t)meta->n_classes, sizeof(long));
    if (!per) return err_set("out of memory");
    for (int i = 0; i < fs->n; i++) per[fs->labels[i]]++;
    int rc = 0;
    for (int k = 0; k < meta->n_classes && rc == 0; k++)
        if (per[k] != meta->class_counts[k])
            rc = err_set("%s: class '%s' has %ld records where its extract run wrote %ld: the cache is damaged; "
                         "re-extract it (extract --overwrite replaces it)",
                         path, meta->class_names[k], per[k], meta->class_counts[k]);
    free(per);
    return rc;
}

int features_load(FeatureSet *fs, const char *path, size_t budget_bytes, int threads, CacheMeta *meta) {
    memset(fs, 0, sizeof *fs);
    if (threads < 1) threads = 1;
    fs->threads = threads;
    if (cache_open_read(&fs->cache, path, meta) < 0) return -1;
    fs->D = meta->feat_h * meta->feat_w * meta->feat_c;
    fs->dtype = meta->dtype;
    // A read transaction keeps the mmap'd values valid while we decode them.
    MDB_txn *txn;
    int rc = mdb_txn_begin(fs->cache.env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        cache_close(&fs->cache);
        return err_set("%s: %s", path, mdb_strerror(rc));
    }
    fs->cache.txn = txn;
    Collect col = {fs, NULL, NULL, 0};
    rc = cache_visit(&fs->cache, collect, &col);
    // The digest reads each record's stored crc32 while the values are mapped.
    if (rc == 0) rc = cache_content_begin(&col.cc);
    if (rc == 0) {
        for (int i = 0; i < fs->n; i++) cache_content_add(&col.cc, fs->keys[i], col.vals[i], col.lens[i]);
        rc = cache_content_end(&col.cc, col.content, sizeof col.content);
    }
    if (rc == 0 && fs->n == 0)
        rc = err_set("%s: the cache holds no records%s", path,
                     meta->complete ? "" : " (it is incomplete: its extract run did not finish; rerun that extract "
                                           "command to continue it)");
    size_t item = fs->dtype == FEAT_F16 ? 2 : 4;
    size_t bytes = (size_t)fs->n * fs->D * item;
    int keep = bytes <= budget_bytes;
    if (rc == 0) {
        fs->labels = calloc((size_t)fs->n, sizeof(int32_t));
        fs->paths = calloc((size_t)fs->n, sizeof(char *));
        if (keep) fs->data = malloc(bytes ? bytes : 1);
        if (!fs->labels || !fs->paths || (keep && !fs->data))
            rc = err_set("out of memory for %d records of %d features", fs->n, fs->D);
    }
    if (rc == 0) {
        // Decompress in parallel; when streaming this pass still checks every
        // record once, so damage is found before training starts.
        DecodeJob job = {fs, col.vals, col.lens, keep, 0, 0, "", PTHREAD_MUTEX_INITIALIZER};
        pthread_t *t = calloc((size_t)threads, sizeof(pthread_t));
        int started = 0;
        for (; started < threads; started++)
            if (pthread_create(&t[started], NULL, decode_worker, &job)) break;
        if (started == 0) decode_worker(&job);
        for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
        free(t);
        if (job.failed) rc = err_set("%s: %s", path, job.msg);
    }
    mdb_txn_abort(txn);
    fs->cache.txn = NULL;
    free(col.vals);
    free(col.lens);
    if (rc == 0) {
        for (int i = 0; i < fs->n && rc == 0; i++) {
            int32_t l = fs->labels[i];
            if (l < 0 || l >= meta->n_classes)
                rc = err_set("%s: record %010llu (%s) has label %d, but the cache has %d classes: the cache is "
                             "damaged; re-extract it",
                             path, (unsigned long long)fs->keys[i], fs->paths[i], l, meta->n_classes);
            // Paths start with their class folder: a class name that differs
            // (a damaged setting, in a cache too old to have their checksum)
            // would be written into the head.
            else if (cache_class_of_path(meta, l, fs->paths[i]) < 0)
                rc = err_set("%s: record %010llu (%s) has label %d, but class %d is '%s' in the cache's settings: "
                             "the cache is damaged; re-extract it",
                             path, (unsigned long long)fs->keys[i], fs->paths[i], l, l, meta->class_names[l]);
        }
    }
    // The records found are those the run wrote: none lost (a record a
    // damaged key hid), none added, none swapped.
    if (rc == 0) rc = check_content_of(fs, path, meta, col.content);
    if (rc == 0 && !keep) {
        fs->dctx = calloc((size_t)threads, sizeof(void *));
        for (int i = 0; i < threads; i++) fs->dctx[i] = ZSTD_createDCtx();
    }
    if (rc < 0 || keep) cache_close(&fs->cache);
    if (rc < 0) {
        features_free(fs);
        cache_meta_free(meta);
        return -1;
    }
    if (!meta->checksummed)
        log_printf(stderr,
                   "warning: %s was made by an older extract, without a checksum of its settings or a record of its "
                   "contents: damage to them cannot be detected; rerun its extract command to add them (its records "
                   "are kept)\n",
                   path);
    return 0;
}

void features_free(FeatureSet *fs) {
    if (fs->paths)
        for (int i = 0; i < fs->n; i++) free(fs->paths[i]);
    free(fs->paths);
    free(fs->labels);
    free(fs->keys);
    free(fs->data);
    if (fs->dctx)
        for (int i = 0; i < fs->threads; i++) ZSTD_freeDCtx(fs->dctx[i]);
    free(fs->dctx);
    if (fs->cache.env) cache_close(&fs->cache);
    memset(fs, 0, sizeof *fs);
}

static int gather_streamed(FeatureSet *fs, const int *rows, int n, float *out) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(fs->cache.env, NULL, MDB_RDONLY, &txn);
    if (rc) return err_set("%s: %s", fs->cache.path, mdb_strerror(rc));
    for (int i = 0; i < n && rc == 0; i++) {
        char k[24];
        snprintf(k, sizeof k, "%010llu", (unsigned long long)fs->keys[rows[i]]);
        MDB_val key = {10, k}, val;
        rc = mdb_get(txn, fs->cache.dbi_features, &key, &val);
        if (rc) {
            rc = err_set("%s: record %s (%s) disappeared: %s", fs->cache.path, k, fs->paths[rows[i]],
                         mdb_strerror(rc));
            break;
        }
        rc = cache_record_decode(fs->dctx[0], fs->keys[rows[i]], val.mv_data, val.mv_size, fs->D, NULL, NULL, NULL,
                                 NULL, out + (size_t)i * fs->D);
    }
    mdb_txn_abort(txn);
    return rc;
}

typedef struct {
    const FeatureSet *fs;
    const int *rows;
    float *out;
} GatherJob;

static void gather_row(void *ctx, int i) {
    const GatherJob *j = ctx;
    const FeatureSet *fs = j->fs;
    float *dst = j->out + (size_t)i * fs->D;
    if (fs->dtype == FEAT_F16)
        f16_to_f32_array((const uint16_t *)fs->data + (size_t)j->rows[i] * fs->D, dst, (size_t)fs->D);
    else
        memcpy(dst, (const float *)fs->data + (size_t)j->rows[i] * fs->D, sizeof(float) * (size_t)fs->D);
}

int features_gather(FeatureSet *fs, const int *rows, int n, float *out) {
    if (!fs->data) return gather_streamed(fs, rows, n, out);
    // A row per task on the pool: the rows are scattered over memory, and
    // the time goes into fetching them (a copy: any split, the same bits).
    GatherJob j = {fs, rows, out};
    parallel_for(n, gather_row, &j);
    return 0;
}

int features_subset(const FeatureSet *fs, const int *rows, int n, FeatureSet *out) {
    if (!fs->data) {
        size_t mb = ((size_t)fs->n * (size_t)fs->D * (fs->dtype == FEAT_F16 ? 2 : 4) + (1u << 20) - 1) >> 20;
        return err_set("--validation-split needs the cache's %d records in memory (%zu MB), more than "
                       "--memory-budget allows: give --memory-budget %zu or more, or a separate validation cache",
                       fs->n, mb, mb);
    }
    memset(out, 0, sizeof *out);
    out->n = n, out->D = fs->D, out->dtype = fs->dtype, out->threads = fs->threads;
    size_t item = fs->dtype == FEAT_F16 ? 2 : 4, row = item * (size_t)fs->D;
    out->labels = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    out->paths = calloc((size_t)(n ? n : 1), sizeof(char *));
    out->keys = malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    out->data = malloc(row * (size_t)(n ? n : 1));
    if (!out->labels || !out->paths || !out->keys || !out->data) {
        features_free(out);
        return err_set("out of memory");
    }
    for (int i = 0; i < n; i++) {
        out->labels[i] = fs->labels[rows[i]];
        out->paths[i] = strdup(fs->paths[rows[i]]);
        out->keys[i] = fs->keys[rows[i]];
        memcpy((char *)out->data + row * i, (const char *)fs->data + row * rows[i], row);
    }
    return 0;
}

int features_split(const FeatureSet *fs, int K, const long *class_files, double f, FeatureSet *train,
                   FeatureSet *val) {
    long *n_c = calloc((size_t)K, sizeof(long)), *start = calloc((size_t)K, sizeof(long));
    int *seen = calloc((size_t)K, sizeof(int));
    int *tr = malloc(sizeof(int) * (size_t)(fs->n + 1)), *va = malloc(sizeof(int) * (size_t)(fs->n + 1));
    int rc = n_c && start && seen && tr && va ? 0 : err_set("out of memory");
    int nt = 0, nv = 0;
    for (int i = 0; rc == 0 && i < fs->n; i++) n_c[fs->labels[i]]++;
    if (class_files) {
        for (int k = 1; k < K; k++) start[k] = start[k - 1] + class_files[k - 1];
        for (int k = 0; k < K; k++) n_c[k] = class_files[k];
    }
    for (int i = 0; rc == 0 && i < fs->n; i++) {
        int c = fs->labels[i];
        // Python's int(F * n): the product in double, truncated.
        long n_val = (long)(f * (double)n_c[c]);
        long pos = class_files ? (long)fs->keys[i] - start[c] : seen[c]++;
        if (pos < 0 || pos >= n_c[c]) {
            rc = err_set("record %llu (%s) is not among the %ld files of its class in the folder listing the cache "
                         "recorded: the cache is inconsistent; re-extract it",
                         (unsigned long long)fs->keys[i], fs->paths[i], n_c[c]);
            break;
        }
        if (pos < n_val) va[nv++] = i;
        else tr[nt++] = i;
    }
    if (rc == 0) rc = features_subset(fs, tr, nt, train);
    if (rc == 0 && (rc = features_subset(fs, va, nv, val)) < 0) features_free(train);
    free(n_c), free(start), free(seen), free(tr), free(va);
    return rc;
}
