#include "cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include "error.h"
#include "fileutil.h"
#include "half.h"

#define RECORD_MAGIC 0x31464756u  // "VGF1" little-endian
#define INITIAL_MAP (64ul << 20)

// Every write of a transaction is logged, so that after LMDB reports a full
// map the transaction can be replayed on a bigger one: records, deletions,
// settings and drops alike.
typedef enum { OP_PUT, OP_DEL, OP_DROP } OpKind;
struct PendingPut {
    OpKind op;
    MDB_dbi dbi;
    char key[32];
    size_t klen;
    void *val;
    size_t len;
};

static int queue_op(Cache *c, OpKind op, MDB_dbi dbi, const char *key, size_t klen, const void *val, size_t len);

const char *feat_dtype_name(FeatDtype d) { return d == FEAT_F32 ? "f32" : "f16"; }

void cache_meta_free(CacheMeta *m) {
    if (m->class_names)
        for (int i = 0; i < m->n_classes; i++) free(m->class_names[i]);
    free(m->class_names);
    free(m->class_counts);
    m->class_names = NULL;
    m->class_counts = NULL;
}

static void key_text(uint64_t key, char out[24]) { snprintf(out, 24, "%010llu", (unsigned long long)key); }

// --- settings -------------------------------------------------------------

int cache_meta_diff(const CacheMeta *have, const CacheMeta *want, char *buf, size_t size) {
    char a[128], b[128];
#define DIFF_STR(label, x, y)                                                                     \
    if (strcmp(x, y)) {                                                                           \
        snprintf(buf, size, "%s: the cache has %s, this run %s", label, (x)[0] ? x : "(none)", \
                 (y)[0] ? y : "(none)");                                                          \
        return 1;                                                                                 \
    }
    DIFF_STR("model", have->model, want->model);
    DIFF_STR("weights", have->weights, want->weights);
    snprintf(a, sizeof a, "%dx%d", have->input_w, have->input_h);
    snprintf(b, sizeof b, "%dx%d", want->input_w, want->input_h);
    DIFF_STR("input size", a, b);
    DIFF_STR("layer", have->layer, want->layer);
    DIFF_STR("preprocessing", have->preprocess, want->preprocess);
    DIFF_STR("interpolation", have->interpolation, want->interpolation);
    DIFF_STR("dtype", feat_dtype_name(have->dtype), feat_dtype_name(want->dtype));
    snprintf(a, sizeof a, "%d,%d,%d", have->feat_h, have->feat_w, have->feat_c);
    snprintf(b, sizeof b, "%d,%d,%d", want->feat_h, want->feat_w, want->feat_c);
    DIFF_STR("feature shape", a, b);
    if (have->n_classes != want->n_classes) {
        snprintf(buf, size, "classes: the cache has %d classes, this run %d", have->n_classes, want->n_classes);
        return 1;
    }
    for (int i = 0; i < have->n_classes; i++) {
        if (strcmp(have->class_names[i], want->class_names[i])) {
            snprintf(buf, size, "classes: class %d is '%s' in the cache, '%s' in this run", i, have->class_names[i],
                     want->class_names[i]);
            return 1;
        }
    }
    DIFF_STR("shard", have->shard, want->shard);
    DIFF_STR("decoding", have->decode, want->decode);
#undef DIFF_STR
    return 0;
}

static int meta_put(Cache *c, const char *key, const char *value) {
    return queue_op(c, OP_PUT, c->dbi_meta, key, strlen(key), value, strlen(value));
}

static int begin(Cache *c);

int cache_write_meta(Cache *c, const CacheMeta *m) {
    if (begin(c) < 0) return -1;
    char buf[256];
    // Class names one per line, counts comma-separated.
    size_t len = 1;
    for (int i = 0; i < m->n_classes; i++) len += strlen(m->class_names[i]) + 1;
    char *names = calloc(1, len), *counts = calloc(1, (size_t)m->n_classes * 21 + 1);
    if (!names || !counts) {
        free(names);
        free(counts);
        return err_set("out of memory");
    }
    for (int i = 0; i < m->n_classes; i++) {
        strcat(names, m->class_names[i]);
        if (i + 1 < m->n_classes) strcat(names, "\n");
        if (m->class_counts) sprintf(counts + strlen(counts), "%s%ld", i ? "," : "", m->class_counts[i]);
    }
    int rc = 0;
    rc |= meta_put(c, "format", "1");
    rc |= meta_put(c, "model", m->model);
    rc |= meta_put(c, "weights", m->weights);
    snprintf(buf, sizeof buf, "%dx%d", m->input_w, m->input_h);
    rc |= meta_put(c, "input_size", buf);
    rc |= meta_put(c, "interpolation", m->interpolation);
    rc |= meta_put(c, "preprocess", m->preprocess);
    rc |= meta_put(c, "layer", m->layer);
    snprintf(buf, sizeof buf, "%d,%d,%d", m->feat_h, m->feat_w, m->feat_c);
    rc |= meta_put(c, "feature_shape", buf);
    rc |= meta_put(c, "layout", "HWC");
    rc |= meta_put(c, "dtype", feat_dtype_name(m->dtype));
    rc |= meta_put(c, "classes", names);
    rc |= meta_put(c, "class_counts", counts);
    rc |= meta_put(c, "shard", m->shard);
    rc |= meta_put(c, "decode", m->decode);
    rc |= meta_put(c, "folder", m->folder);
    rc |= meta_put(c, "complete", m->complete ? "1" : "0");
    rc |= meta_put(c, "version", m->version);
    rc |= meta_put(c, "command", m->command);
    free(names);
    free(counts);
    return rc ? -1 : 0;
}

// Reads a setting; *out malloc'd, NULL when absent.
static int meta_get(Cache *c, MDB_txn *txn, const char *key, char **out) {
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, c->dbi_meta, &k, &v);
    *out = NULL;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return err_set("%s: reading setting %s: %s", c->path, key, mdb_strerror(rc));
    *out = malloc(v.mv_size + 1);
    if (!*out) return err_set("out of memory reading setting %s", key);
    memcpy(*out, v.mv_data, v.mv_size);
    (*out)[v.mv_size] = '\0';
    return 1;
}

int cache_read_meta(Cache *c, CacheMeta *m) {
    memset(m, 0, sizeof *m);
    MDB_txn *txn = c->txn;
    int own = 0;
    if (!txn) {
        int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
        if (rc) return err_set("%s: %s", c->path, mdb_strerror(rc));
        own = 1;
    }
    const char *keys[] = {"format",  "model", "weights",      "input_size", "interpolation", "preprocess",
                          "layer",   "feature_shape", "dtype", "classes",    "class_counts",  "shard",
                          "version", "command", "decode", "folder", "complete"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    char *v[NKEYS] = {0};
    int rc = 0;
    for (int i = 0; i < NKEYS && rc >= 0; i++) rc = meta_get(c, txn, keys[i], &v[i]);
    if (own) mdb_txn_abort(txn);
    if (rc >= 0) {
        for (int i = 0; i < 10; i++)  // the settings up to the class list are required
            if (!v[i]) {
                rc = err_set("%s: not a feature cache made by extract (no setting '%s')", c->path, keys[i]);
                break;
            }
    }
    if (rc >= 0) {
        snprintf(m->model, sizeof m->model, "%s", v[1]);
        snprintf(m->weights, sizeof m->weights, "%s", v[2]);
        if (sscanf(v[3], "%dx%d", &m->input_w, &m->input_h) != 2) rc = err_set("%s: bad input_size '%s'", c->path, v[3]);
        snprintf(m->interpolation, sizeof m->interpolation, "%s", v[4]);
        snprintf(m->preprocess, sizeof m->preprocess, "%s", v[5]);
        snprintf(m->layer, sizeof m->layer, "%s", v[6]);
        if (sscanf(v[7], "%d,%d,%d", &m->feat_h, &m->feat_w, &m->feat_c) != 3)
            rc = err_set("%s: bad feature_shape '%s'", c->path, v[7]);
        if (strcmp(v[8], "f32") && strcmp(v[8], "f16")) rc = err_set("%s: unknown dtype '%s'", c->path, v[8]);
        m->dtype = !strcmp(v[8], "f32") ? FEAT_F32 : FEAT_F16;
        if (v[11]) snprintf(m->shard, sizeof m->shard, "%s", v[11]);
        if (v[12]) snprintf(m->version, sizeof m->version, "%s", v[12]);
        if (v[13]) snprintf(m->command, sizeof m->command, "%s", v[13]);
        if (v[14]) snprintf(m->decode, sizeof m->decode, "%s", v[14]);
        if (v[15]) snprintf(m->folder, sizeof m->folder, "%s", v[15]);
        m->complete = v[16] && !strcmp(v[16], "1");
        int n = 1;
        for (char *p = v[9]; *p; p++) n += *p == '\n';
        m->n_classes = n;
        m->class_names = calloc((size_t)n, sizeof(char *));
        m->class_counts = calloc((size_t)n, sizeof(long));
        if (!m->class_names || !m->class_counts) n = 0, rc = err_set("out of memory");
        char *p = v[9];
        for (int i = 0; i < n; i++) {
            char *nl = strchr(p, '\n');
            if (nl) *nl = '\0';
            m->class_names[i] = strdup(p);
            p = nl ? nl + 1 : p + strlen(p);
        }
        char *q = v[10] ? v[10] : "";
        for (int i = 0; i < n && *q; i++) {
            m->class_counts[i] = strtol(q, &q, 10);
            if (*q == ',') q++;
        }
    }
    for (int i = 0; i < NKEYS; i++) free(v[i]);
    if (rc < 0) cache_meta_free(m);
    return rc < 0 ? -1 : 0;
}

// --- opening -----------------------------------------------------------------

// Opens the environment and its two databases. create: make them (a new
// cache); otherwise an LMDB without them is someone else's and is left alone.
static int open_env(Cache *c, const char *path, unsigned flags, int create) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    c->batch = 256;
    c->level = 3;
    // Test hooks: a tiny first map exercises growth, a short commit interval
    // exercises resume after a crash between commits.
    const char *e = getenv("VGGFT_CACHE_MAP_MB");
    size_t initial = e && atol(e) > 0 ? (size_t)atol(e) << 20 : INITIAL_MAP;
    e = getenv("VGGFT_CACHE_COMMIT_EVERY");
    if (e && atoi(e) > 0) c->batch = atoi(e);
    int rc = mdb_env_create(&c->env);
    if (!rc) rc = mdb_env_set_maxdbs(c->env, 4);
    if (!rc) rc = mdb_env_set_mapsize(c->env, initial);
    if (!rc) rc = mdb_env_open(c->env, path, flags | MDB_NOTLS, 0664);
    if (rc == EACCES && (flags & MDB_RDONLY))  // a read-only folder: no lock file possible
        rc = mdb_env_open(c->env, path, flags | MDB_NOTLS | MDB_NOLOCK, 0664);
    if (rc) {
        err_set("%s: cannot open the cache: %s", path, mdb_strerror(rc));
        if (c->env) mdb_env_close(c->env);
        c->env = NULL;
        return -1;
    }
    // An existing file may be far larger than the first map: give writes
    // room to grow from the start (a map below the used size makes the first
    // transaction fail).
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(c->env, &info);
    mdb_env_stat(c->env, &st);
    size_t used = (size_t)(info.me_last_pgno + 1) * st.ms_psize;
    c->map_size = info.me_mapsize;
    if (!(flags & MDB_RDONLY) && c->map_size < 2 * used + initial) {
        c->map_size = 2 * used + initial;
        mdb_env_set_mapsize(c->env, c->map_size);
    }
    MDB_txn *txn = NULL;
    rc = mdb_txn_begin(c->env, NULL, (flags & MDB_RDONLY) || !create ? MDB_RDONLY : 0, &txn);
    unsigned dflags = create ? MDB_CREATE : 0;
    if (!rc) rc = mdb_dbi_open(txn, "meta", dflags, &c->dbi_meta);
    if (!rc) rc = mdb_dbi_open(txn, "features", dflags, &c->dbi_features);
    if (!rc) rc = mdb_txn_commit(txn);  // keeps the handles (read-only too)
    else if (txn) mdb_txn_abort(txn);
    if (rc) {
        err_set("%s: %s", path,
                rc == MDB_NOTFOUND ? "an LMDB database but not a feature cache made by extract (left untouched)"
                                   : mdb_strerror(rc));
        mdb_env_close(c->env);
        c->env = NULL;
        return -1;
    }
    c->zctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    return 0;
}

int cache_open_write(Cache *c, const char *path, const CacheMeta *want, int overwrite) {
    struct stat st;
    char data[1100];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    int exists = stat(data, &st) == 0;
    if (!exists && stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
        return err_set("%s: exists and is not a folder (a cache is an LMDB folder)", path);
    if (make_dirs(path) < 0) return -1;
    if (open_env(c, path, 0, !exists) < 0) return -1;
    if (exists) {
        CacheMeta have;
        int rc = cache_read_meta(c, &have);
        char diff[600];
        if (rc == 0 && !overwrite && cache_meta_diff(&have, want, diff, sizeof diff)) {
            cache_meta_free(&have);
            cache_close(c);
            return err_set("%s: this cache was made with other settings (%s); use --overwrite to replace it", path,
                           diff);
        }
        if (rc == 0) cache_meta_free(&have);
        if (rc < 0 && !overwrite) {
            cache_close(c);
            return -1;
        }
        if (overwrite && (queue_op(c, OP_DROP, c->dbi_features, "", 0, NULL, 0) < 0 ||
                          queue_op(c, OP_DROP, c->dbi_meta, "", 0, NULL, 0) < 0)) {
            cache_close(c);
            return err_prefix("emptying the cache: ");
        }
    }
    if (cache_write_meta(c, want) < 0 || cache_commit(c) < 0) {
        cache_close(c);
        return -1;
    }
    return 0;
}

int cache_open_read(Cache *c, const char *path, CacheMeta *meta) {
    struct stat st;
    char data[1100];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (stat(path, &st) < 0) return err_set("%s: no such cache (%s)", path, strerror(errno));
    if (!S_ISDIR(st.st_mode) || stat(data, &st) < 0)
        return err_set("%s: not a feature cache (expected an LMDB folder with data.mdb, as extract writes)", path);
    if (open_env(c, path, MDB_RDONLY, 0) < 0) return -1;
    if (meta && cache_read_meta(c, meta) < 0) {
        cache_close(c);
        return -1;
    }
    return 0;
}

void cache_close(Cache *c) {
    if (c->txn) mdb_txn_abort(c->txn);
    c->txn = NULL;
    for (int i = 0; i < c->n_pending; i++) free(c->pending[i].val);
    free(c->pending);
    c->pending = NULL;
    c->n_pending = c->cap_pending = 0;
    if (c->env) mdb_env_close(c->env);
    c->env = NULL;
    ZSTD_freeCCtx(c->zctx);
    ZSTD_freeDCtx(c->dctx);
    c->zctx = c->dctx = NULL;
    free(c->buf);
    c->buf = NULL;
    c->buf_cap = 0;
}

// --- writing -------------------------------------------------------------------

static int begin(Cache *c) {
    if (c->txn) return 0;
    int rc = mdb_txn_begin(c->env, NULL, 0, &c->txn);
    if (rc) {
        c->txn = NULL;
        return err_set("%s: %s", c->path, mdb_strerror(rc));
    }
    return 0;
}

static int apply(Cache *c, const struct PendingPut *p) {
    MDB_val key = {p->klen, (void *)p->key};
    if (p->op == OP_DROP) return mdb_drop(c->txn, p->dbi, 0);
    if (p->op == OP_DEL) {
        int rc = mdb_del(c->txn, p->dbi, &key, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    MDB_val val = {p->len, p->val};
    return mdb_put(c->txn, p->dbi, &key, &val, 0);
}

// LMDB's map is a fixed-size reservation: when it is full, abort, double it
// and replay this transaction's writes (kept in memory until commit).
static int grow_and_replay(Cache *c) {
    mdb_txn_abort(c->txn);
    c->txn = NULL;
    for (;;) {
        c->map_size *= 2;
        int rc = mdb_env_set_mapsize(c->env, c->map_size);
        if (rc) return err_set("%s: growing the map to %zu MB: %s", c->path, c->map_size >> 20, mdb_strerror(rc));
        if (begin(c) < 0) return -1;
        rc = 0;
        for (int i = 0; i < c->n_pending && !rc; i++) rc = apply(c, &c->pending[i]);
        if (rc == MDB_MAP_FULL) {
            mdb_txn_abort(c->txn);
            c->txn = NULL;
            continue;
        }
        if (rc) return err_set("%s: %s", c->path, mdb_strerror(rc));
        return 0;
    }
}

static int queue_op(Cache *c, OpKind op, MDB_dbi dbi, const char *key, size_t klen, const void *val, size_t len) {
    if (klen >= sizeof c->pending[0].key) return err_set("%s: key too long", c->path);
    if (begin(c) < 0) return -1;
    if (c->n_pending == c->cap_pending) {
        int cap = c->cap_pending ? c->cap_pending * 2 : 64;
        struct PendingPut *p = realloc(c->pending, (size_t)cap * sizeof *p);
        if (!p) return err_set("out of memory");
        c->pending = p;
        c->cap_pending = cap;
    }
    struct PendingPut p = {op, dbi, "", klen, NULL, len};
    memcpy(p.key, key, klen);
    if (op == OP_PUT) {
        p.val = malloc(len ? len : 1);
        if (!p.val) return err_set("out of memory");
        memcpy(p.val, val, len);
    }
    c->pending[c->n_pending++] = p;
    int rc = apply(c, &c->pending[c->n_pending - 1]);
    if (rc == MDB_MAP_FULL) {
        if (grow_and_replay(c) < 0) return -1;
    } else if (rc) {
        return err_set("%s: writing %.*s: %s", c->path, (int)klen, key, mdb_strerror(rc));
    }
    return c->n_pending >= c->batch ? cache_commit(c) : 0;
}

int cache_commit(Cache *c) {
    if (!c->txn) return 0;
    int rc = mdb_txn_commit(c->txn);
    c->txn = NULL;
    if (rc == MDB_MAP_FULL) {
        if (grow_and_replay(c) < 0) return -1;
        return cache_commit(c);
    }
    for (int i = 0; i < c->n_pending; i++) free(c->pending[i].val);
    c->n_pending = 0;
    if (rc) return err_set("%s: committing: %s", c->path, mdb_strerror(rc));
    return 0;
}

static int ensure_buf(Cache *c, size_t n) {
    if (c->buf_cap >= n) return 0;
    uint8_t *b = realloc(c->buf, n);
    if (!b) return err_set("out of memory");
    c->buf = b;
    c->buf_cap = n;
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

long cache_record_encode(Cache *c, const CacheRecord *r, int n_features, FeatDtype dtype) {
    size_t path_len = strlen(r->path);
    if (path_len > 65535) return err_set("%s: path too long for the cache", r->path);
    size_t item = dtype == FEAT_F16 ? 2 : 4;
    size_t raw = (size_t)n_features * item;
    size_t bound = ZSTD_compressBound(raw);
    size_t header = 50 + path_len + 4;
    // Layout: [raw features staging | record]
    if (ensure_buf(c, raw + header + bound + 4) < 0) return -1;
    uint8_t *stage = c->buf, *rec = c->buf + raw;
    if (dtype == FEAT_F16) {
        f32_to_f16_array(r->features, (uint16_t *)stage, (size_t)n_features);
    } else {
        memcpy(stage, r->features, raw);
    }
    put_u32(rec, RECORD_MAGIC);
    put_u32(rec + 4, (uint32_t)r->label);
    rec[8] = (uint8_t)dtype, rec[9] = rec[10] = rec[11] = 0;
    put_u32(rec + 12, (uint32_t)n_features);
    memcpy(rec + 16, r->sha256, 32);
    rec[48] = (uint8_t)path_len, rec[49] = (uint8_t)(path_len >> 8);
    memcpy(rec + 50, r->path, path_len);
    ZSTD_CCtx_reset(c->zctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(c->zctx, ZSTD_c_compressionLevel, c->level);
    ZSTD_CCtx_setParameter(c->zctx, ZSTD_c_checksumFlag, 1);
    size_t z = ZSTD_compress2(c->zctx, rec + header, bound, stage, raw);
    if (ZSTD_isError(z)) return err_set("%s: zstd: %s", r->path, ZSTD_getErrorName(z));
    put_u32(rec + header - 4, (uint32_t)z);
    size_t total = header + z;
    put_u32(rec + total, (uint32_t)crc32(crc32(0L, Z_NULL, 0), rec, (uInt)total));
    return (long)(total + 4);
}

int cache_put(Cache *c, uint64_t key, const CacheRecord *r, int n_features, FeatDtype dtype) {
    long len = cache_record_encode(c, r, n_features, dtype);
    if (len < 0) return -1;
    size_t raw = (size_t)n_features * (dtype == FEAT_F16 ? 2 : 4);
    return cache_put_raw(c, key, c->buf + raw, (size_t)len);
}

int cache_put_raw(Cache *c, uint64_t key, const void *val, size_t len) {
    char k[24];
    key_text(key, k);
    return queue_op(c, OP_PUT, c->dbi_features, k, 10, val, len);
}

int cache_del(Cache *c, uint64_t key) {
    char k[24];
    key_text(key, k);
    return queue_op(c, OP_DEL, c->dbi_features, k, 10, NULL, 0);
}

// Moves go through "t" + the target key: a record being moved exists under
// its old key, its temporary key or its new one, never nowhere, whatever
// commit a crash interrupts.
static void temp_key_text(uint64_t key, char out[24]) { snprintf(out, 24, "t%010llu", (unsigned long long)key); }

int cache_move(Cache *c, const CacheKey *from, uint64_t to, int to_temp) {
    char target[24];
    if (to_temp) temp_key_text(to, target);
    else key_text(to, target);
    if (begin(c) < 0) return -1;
    MDB_val k = {from->klen, (void *)from->key}, v;
    int rc = mdb_get(c->txn, c->dbi_features, &k, &v);
    if (rc) return err_set("%s: moving record %.*s: %s", c->path, (int)from->klen, from->key, mdb_strerror(rc));
    // queue_op copies the value before any write invalidates v.
    if (queue_op(c, OP_PUT, c->dbi_features, target, strlen(target), v.mv_data, v.mv_size) < 0) return -1;
    return queue_op(c, OP_DEL, c->dbi_features, from->key, from->klen, NULL, 0);
}

int cache_del_key(Cache *c, const CacheKey *key) {
    return queue_op(c, OP_DEL, c->dbi_features, key->key, key->klen, NULL, 0);
}

// --- reading ---------------------------------------------------------------

int cache_record_decode(void *zstd_dctx, uint64_t key, const void *val, size_t len, int n_features,
                        int32_t *label, const char **path, int *path_len, uint8_t sha256[32], float *features) {
    const uint8_t *p = val;
    char k[24];
    key_text(key, k);
    if (len < 58 || get_u32(p) != RECORD_MAGIC) return err_set("record %s: not a feature record (damaged?)", k);
    int plen = p[48] | p[49] << 8;
    if ((size_t)plen + 58 > len) return err_set("record %s: truncated", k);
    const char *rpath = (const char *)p + 50;
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)(len - 4));
    if (crc != get_u32(p + len - 4))
        return err_set("record %s (%.*s): checksum mismatch: the record is damaged", k, plen, rpath);
    uint32_t n = get_u32(p + 12);
    if (n_features >= 0 && (int)n != n_features)
        return err_set("record %s (%.*s): %u features, the cache's shape says %d", k, plen, rpath, n, n_features);
    if (label) *label = (int32_t)get_u32(p + 4);
    if (path) *path = rpath;
    if (path_len) *path_len = plen;
    if (sha256) memcpy(sha256, p + 16, 32);
    if (!features) return 0;
    FeatDtype dtype = p[8] == FEAT_F32 ? FEAT_F32 : FEAT_F16;
    size_t zoff = 50 + (size_t)plen + 4;
    uint32_t zlen = get_u32(p + zoff - 4);
    if (zoff + zlen + 4 != len) return err_set("record %s (%.*s): bad compressed length", k, plen, rpath);
    size_t raw = (size_t)n * (dtype == FEAT_F16 ? 2 : 4);
    if (dtype == FEAT_F32) {
        size_t got = ZSTD_decompressDCtx(zstd_dctx, features, raw, p + zoff, zlen);
        if (ZSTD_isError(got) || got != raw)
            return err_set("record %s (%.*s): bad zstd frame: %s", k, plen, rpath,
                           ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong size");
        return 0;
    }
    // f16: decompress beside, then widen. Up to 64K values on the stack
    // (block5_pool is 8K at 150x150, 25K at 224x224), larger on the heap.
    uint16_t stack_buf[65536];
    uint16_t *h = n <= 65536 ? stack_buf : malloc(raw);
    if (!h) return err_set("record %s: out of memory", k);
    size_t got = ZSTD_decompressDCtx(zstd_dctx, h, raw, p + zoff, zlen);
    int bad = ZSTD_isError(got) || got != raw;
    if (!bad) f16_to_f32_array(h, features, n);
    if (h != stack_buf) free(h);
    if (bad)
        return err_set("record %s (%.*s): bad zstd frame: %s", k, plen, rpath,
                       ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong size");
    return 0;
}

// Parses a stored key: 10 digits (a record in place) or "t" + 10 digits (a
// record moving there). 0 for anything else.
static int parse_key(const MDB_val *k, CacheKey *out) {
    const char *p = k->mv_data;
    size_t n = k->mv_size, off = n == 11 && p[0] == 't';
    if (n != 10 + off) return 0;
    uint64_t v = 0;
    for (size_t i = off; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    memcpy(out->key, p, n);
    out->key[n] = '\0';
    out->klen = n;
    out->index = v;
    out->moving = (int)off;
    return 1;
}

static int visit(Cache *c, int include_moving, CacheVisitFn fn, CacheKeyVisitFn kfn, void *ctx) {
    MDB_txn *txn = c->txn;
    int own = 0, rc;
    if (!txn) {
        rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
        if (rc) return err_set("%s: %s", c->path, mdb_strerror(rc));
        own = 1;
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, c->dbi_features, &cur);
    if (rc) {
        if (own) mdb_txn_abort(txn);
        return err_set("%s: %s", c->path, mdb_strerror(rc));
    }
    MDB_val k, v;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        CacheKey key;
        if (!parse_key(&k, &key) || (key.moving && !include_moving)) continue;
        ret = fn ? fn(ctx, key.index, v.mv_data, v.mv_size) : kfn(ctx, &key, v.mv_data, v.mv_size);
        if (ret) break;
    }
    mdb_cursor_close(cur);
    if (own) mdb_txn_abort(txn);
    if (!ret && rc != MDB_NOTFOUND && rc != 0) return err_set("%s: %s", c->path, mdb_strerror(rc));
    return ret;
}

int cache_visit(Cache *c, CacheVisitFn fn, void *ctx) { return visit(c, 0, fn, NULL, ctx); }

int cache_visit_keys(Cache *c, CacheKeyVisitFn fn, void *ctx) { return visit(c, 1, NULL, fn, ctx); }

long cache_count(Cache *c) {
    MDB_txn *txn = c->txn;
    int own = 0;
    if (!txn) {
        if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn)) return -1;
        own = 1;
    }
    MDB_stat st;
    int rc = mdb_stat(txn, c->dbi_features, &st);
    if (own) mdb_txn_abort(txn);
    return rc ? -1 : (long)st.ms_entries;
}

typedef struct {
    long *per_class;
    int n;
} LabelCounts;

static int count_label(void *ctx, uint64_t key, const void *val, size_t len) {
    LabelCounts *c = ctx;
    int32_t label;
    if (cache_record_decode(NULL, key, val, len, -1, &label, NULL, NULL, NULL, NULL) == 0 && label >= 0 &&
        label < c->n)
        c->per_class[label]++;
    return 0;
}

int cache_store_counts(Cache *c, CacheMeta *meta) {
    LabelCounts counts = {calloc((size_t)meta->n_classes, sizeof(long)), meta->n_classes};
    if (!counts.per_class) return err_set("out of memory");
    if (cache_visit(c, count_label, &counts) < 0) {
        free(counts.per_class);
        return -1;
    }
    free(meta->class_counts);
    meta->class_counts = counts.per_class;
    meta->complete = 1;
    if (cache_write_meta(c, meta) < 0) return -1;
    return cache_commit(c);
}
