#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "error.h"
#include "progress.h"
#include "fileutil.h"
#include "half.h"
#include "hash.h"
#include "lmdb_check.h"

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
static int write_cause(const char *path, int rc);

const char *feat_dtype_name(FeatDtype d) { return d == FEAT_F32 ? "f32" : "f16"; }

void cache_meta_free(CacheMeta *m) {
    if (m->class_names)
        for (int i = 0; i < m->n_classes; i++) free(m->class_names[i]);
    free(m->class_names);
    free(m->class_counts);
    free(m->class_files);
    m->class_names = NULL;
    m->class_counts = NULL;
    m->class_files = NULL;
}

void cache_meta_warn_partial(const CacheMeta *m, const char *path) {
    if (!m->complete)
        log_printf(stderr, "warning: %s is incomplete: its extract run did not finish (rerun the same extract command)\n",
                   path);
    if (m->shard[0])
        log_printf(stderr, "warning: %s is shard %s of its folder only (extract --merge joins the shards)\n", path,
                   m->shard);
}

static void key_text(uint64_t key, char out[24]) { snprintf(out, 24, "%010llu", (unsigned long long)key); }

// --- settings -------------------------------------------------------------

int cache_meta_diff_as(const CacheMeta *have, const CacheMeta *want, const char *have_is, const char *want_is,
                       char *buf, size_t size) {
    char a[128], b[128];
#define DIFF_STR(label, x, y)                                                                     \
    if (strcmp(x, y)) {                                                                           \
        snprintf(buf, size, "%s: %s has %s, %s %s", label, have_is, (x)[0] ? x : "(none)", want_is,   \
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
        int at = snprintf(buf, size, "classes: %s has %d classes, %s %d", have_is, have->n_classes, want_is,
                          want->n_classes);
        // The classes one side lacks (a validation folder without some
        // class's subfolder: Keras counts a class by its folder, even empty).
        for (int side = 0; side < 2 && at > 0 && (size_t)at < size; side++) {
            const CacheMeta *x = side ? want : have, *y = side ? have : want;
            int listed = 0;
            for (int i = 0; i < x->n_classes && at > 0 && (size_t)at < size; i++) {
                int found = 0;
                for (int j = 0; j < y->n_classes && !found; j++) found = !strcmp(x->class_names[i], y->class_names[j]);
                if (found) continue;
                if (listed < 5)
                    at += snprintf(buf + at, size - (size_t)at, "%s'%s'", listed ? ", " : "; ",
                                   x->class_names[i]);
                else if (listed == 5) at += snprintf(buf + at, size - (size_t)at, ", ...");
                listed++;
            }
            if (listed && at > 0 && (size_t)at < size)
                at += snprintf(buf + at, size - (size_t)at, " only in %s", side ? want_is : have_is);
        }
        if (at > 0 && (size_t)at < size)
            snprintf(buf + at, size - (size_t)at, ": both need the same class folders (an empty one counts, as in "
                                                  "Keras)");
        return 1;
    }
    for (int i = 0; i < have->n_classes; i++) {
        if (strcmp(have->class_names[i], want->class_names[i])) {
            snprintf(buf, size, "classes: class %d is '%s' in %s, '%s' in %s", i, have->class_names[i], have_is,
                     want->class_names[i], want_is);
            return 1;
        }
    }
    DIFF_STR("shard", have->shard, want->shard);
    DIFF_STR("decoding", have->decode, want->decode);
#undef DIFF_STR
    return 0;
}

int cache_meta_diff(const CacheMeta *have, const CacheMeta *want, char *buf, size_t size) {
    return cache_meta_diff_as(have, want, "the cache", "this run", buf, size);
}

// The settings, in the order their checksum covers them. Format 2 writes
// them all with "checksum"; format 1 (before checksums) had no data_dir,
// content or checksum.
static const char *const META_KEYS[] = {"format",  "model",        "weights",  "input_size", "interpolation",
                                        "preprocess", "layer",     "feature_shape", "layout", "dtype",
                                        "classes", "class_counts", "class_files", "shard", "decode", "folder",
                                        "data_dir", "complete",    "content",  "version",    "command"};
enum {
    MK_FORMAT, MK_MODEL, MK_WEIGHTS, MK_INPUT, MK_INTERP, MK_PREP, MK_LAYER, MK_SHAPE, MK_LAYOUT, MK_DTYPE,
    MK_CLASSES, MK_COUNTS, MK_FILES, MK_SHARD, MK_DECODE, MK_FOLDER, MK_DATADIR, MK_COMPLETE, MK_CONTENT, MK_VERSION,
    MK_COMMAND, N_META
};
#define META_FORMAT "2"

// sha256 over every setting (name, length and bytes; absent ones marked), so
// one changed byte in a name, a value or a length is seen. vals[i] NULL: absent.
static int meta_checksum(char *const vals[N_META], const size_t lens[N_META], char out[80]) {
    HashCtx *h = hash_begin(HASH_SHA256);
    if (!h) return -1;
    for (int i = 0; i < N_META; i++) {
        char head[64];
        int n = vals[i] ? snprintf(head, sizeof head, "%s %zu\n", META_KEYS[i], lens[i])
                        : snprintf(head, sizeof head, "%s -\n", META_KEYS[i]);
        hash_update(h, head, (size_t)n);
        if (vals[i]) hash_update(h, vals[i], lens[i]);
    }
    char hex[65];
    if (hash_end(h, hex) < 0) return -1;
    snprintf(out, 80, "sha256:%s", hex);
    return 0;
}

static int begin(Cache *c);

int cache_write_meta(Cache *c, const CacheMeta *m) {
    if (begin(c) < 0) return -1;
    // Class names one per line, counts comma-separated.
    size_t len = 1;
    for (int i = 0; i < m->n_classes; i++) len += strlen(m->class_names[i]) + 1;
    char *names = calloc(1, len), *counts = calloc(1, (size_t)m->n_classes * 21 + 1);
    char *files = calloc(1, (size_t)m->n_classes * 21 + 1);
    if (!names || !counts || !files) {
        free(names);
        free(counts);
        free(files);
        return err_set("out of memory");
    }
    for (int i = 0; i < m->n_classes; i++) {
        strcat(names, m->class_names[i]);
        if (i + 1 < m->n_classes) strcat(names, "\n");
        if (m->class_counts) sprintf(counts + strlen(counts), "%s%ld", i ? "," : "", m->class_counts[i]);
        if (m->class_files) sprintf(files + strlen(files), "%s%ld", i ? "," : "", m->class_files[i]);
    }
    char input[32], shape[48];
    snprintf(input, sizeof input, "%dx%d", m->input_w, m->input_h);
    snprintf(shape, sizeof shape, "%d,%d,%d", m->feat_h, m->feat_w, m->feat_c);
    char *v[N_META] = {
        [MK_FORMAT] = META_FORMAT, [MK_MODEL] = (char *)m->model, [MK_WEIGHTS] = (char *)m->weights,
        [MK_INPUT] = input, [MK_INTERP] = (char *)m->interpolation, [MK_PREP] = (char *)m->preprocess,
        [MK_LAYER] = (char *)m->layer, [MK_SHAPE] = shape, [MK_LAYOUT] = "HWC",
        [MK_DTYPE] = (char *)feat_dtype_name(m->dtype), [MK_CLASSES] = names, [MK_COUNTS] = counts, [MK_FILES] = files,
        [MK_SHARD] = (char *)m->shard, [MK_DECODE] = (char *)m->decode, [MK_FOLDER] = (char *)m->folder,
        [MK_DATADIR] = (char *)m->data_dir, [MK_COMPLETE] = m->complete ? "1" : "0",
        [MK_CONTENT] = (char *)m->content, [MK_VERSION] = (char *)m->version, [MK_COMMAND] = (char *)m->command};
    size_t lens[N_META];
    for (int i = 0; i < N_META; i++) lens[i] = strlen(v[i]);
    char sum[80];
    int rc = meta_checksum(v, lens, sum);
    // The settings go in one transaction: a commit by count (a small
    // VGGFT_CACHE_COMMIT_EVERY) between two of them would leave settings
    // without their checksum to a crash or a full disk.
    const int batch = c->batch;
    const size_t batch_bytes = c->batch_bytes;
    c->batch = INT32_MAX, c->batch_bytes = SIZE_MAX;
    for (int i = 0; i < N_META && rc == 0; i++)
        rc = queue_op(c, OP_PUT, c->dbi_meta, META_KEYS[i], strlen(META_KEYS[i]), v[i], lens[i]);
    if (rc == 0) rc = queue_op(c, OP_PUT, c->dbi_meta, "checksum", 8, sum, strlen(sum));
    c->batch = batch, c->batch_bytes = batch_bytes;
    free(names);
    free(counts);
    free(files);
    return rc ? -1 : 0;
}

// Parses the settings read (vals[N_META] = the checksum; NULL: absent) into m.
static int meta_parse(const char *path, char *vals[N_META + 1], const size_t lens[N_META + 1], CacheMeta *m) {
    memset(m, 0, sizeof *m);
    char **v = vals;
    if (!v[MK_FORMAT])
        return err_set("%s: not a feature cache made by extract, or its settings are damaged (no setting 'format'); "
                       "re-extract it",
                       path);
    if (!strcmp(v[MK_FORMAT], META_FORMAT)) {
        char sum[80];
        if (meta_checksum(v, lens, sum) < 0) return -1;
        if (!v[N_META] || lens[N_META] != strlen(sum) || memcmp(v[N_META], sum, lens[N_META]))
            return err_set("%s: the cache's settings are damaged (%s): re-extract it (extract --overwrite replaces it)",
                           path,
                           v[N_META] ? "their checksum does not match" : "their checksum is missing");
        m->checksummed = 1;
    } else if (strcmp(v[MK_FORMAT], "1")) {
        return err_set("%s: unknown cache format '%.20s' (damaged, or made by a newer vggft)", path, v[MK_FORMAT]);
    }
    for (int i = 0; i <= MK_CLASSES; i++)  // the settings up to the class list are required
        if (!v[i] && i != MK_LAYOUT)
            return err_set("%s: not a feature cache made by extract (no setting '%s')", path, META_KEYS[i]);
    snprintf(m->model, sizeof m->model, "%s", v[MK_MODEL]);
    snprintf(m->weights, sizeof m->weights, "%s", v[MK_WEIGHTS]);
    if (sscanf(v[MK_INPUT], "%dx%d", &m->input_w, &m->input_h) != 2)
        return err_set("%s: bad input_size '%.40s'", path, v[MK_INPUT]);
    snprintf(m->interpolation, sizeof m->interpolation, "%s", v[MK_INTERP]);
    snprintf(m->preprocess, sizeof m->preprocess, "%s", v[MK_PREP]);
    snprintf(m->layer, sizeof m->layer, "%s", v[MK_LAYER]);
    if (sscanf(v[MK_SHAPE], "%d,%d,%d", &m->feat_h, &m->feat_w, &m->feat_c) != 3 || m->feat_h < 1 || m->feat_w < 1 ||
        m->feat_c < 1 || (long long)m->feat_h * m->feat_w * m->feat_c > (1 << 28))
        return err_set("%s: bad feature_shape '%.40s'", path, v[MK_SHAPE]);
    if (strcmp(v[MK_DTYPE], "f32") && strcmp(v[MK_DTYPE], "f16"))
        return err_set("%s: unknown dtype '%.20s'", path, v[MK_DTYPE]);
    m->dtype = !strcmp(v[MK_DTYPE], "f32") ? FEAT_F32 : FEAT_F16;
    if (v[MK_SHARD]) snprintf(m->shard, sizeof m->shard, "%s", v[MK_SHARD]);
    if (v[MK_VERSION]) snprintf(m->version, sizeof m->version, "%s", v[MK_VERSION]);
    if (v[MK_COMMAND]) snprintf(m->command, sizeof m->command, "%s", v[MK_COMMAND]);
    if (v[MK_DECODE]) snprintf(m->decode, sizeof m->decode, "%s", v[MK_DECODE]);
    if (v[MK_FOLDER]) snprintf(m->folder, sizeof m->folder, "%s", v[MK_FOLDER]);
    if (v[MK_DATADIR]) snprintf(m->data_dir, sizeof m->data_dir, "%s", v[MK_DATADIR]);
    if (v[MK_CONTENT]) snprintf(m->content, sizeof m->content, "%s", v[MK_CONTENT]);
    m->complete = v[MK_COMPLETE] && !strcmp(v[MK_COMPLETE], "1");
    int n = 1;
    for (char *p = v[MK_CLASSES]; *p; p++) n += *p == '\n';
    m->n_classes = n;
    m->class_names = calloc((size_t)n, sizeof(char *));
    m->class_counts = calloc((size_t)n, sizeof(long));
    if (!m->class_names || !m->class_counts) {
        cache_meta_free(m);
        return err_set("out of memory");
    }
    char *p = v[MK_CLASSES];
    for (int i = 0; i < n; i++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        m->class_names[i] = strdup(p);
        p = nl ? nl + 1 : p + strlen(p);
    }
    char *q = v[MK_COUNTS] ? v[MK_COUNTS] : "";
    for (int i = 0; i < n && *q; i++) {
        m->class_counts[i] = strtol(q, &q, 10);
        if (*q == ',') q++;
    }
    if (v[MK_FILES] && v[MK_FILES][0]) {
        m->class_files = calloc((size_t)n, sizeof(long));
        if (!m->class_files) {
            cache_meta_free(m);
            return err_set("out of memory");
        }
        q = v[MK_FILES];
        for (int i = 0; i < n; i++) {
            char *end;
            m->class_files[i] = strtol(q, &end, 10);
            if (end == q || m->class_files[i] < 0 || (i + 1 < n ? *end != ',' : *end != '\0')) {
                cache_meta_free(m);
                return err_set("%s: bad class_files '%.60s': re-extract it", path, v[MK_FILES]);
            }
            q = end + 1;
        }
    }
    return 0;
}

// Reads a setting; *out malloc'd and NUL-terminated (*len its stored
// length), NULL when absent.
static int meta_get(Cache *c, MDB_txn *txn, const char *key, char **out, size_t *len) {
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, c->dbi_meta, &k, &v);
    *out = NULL;
    *len = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return err_set("%s: reading setting %s: %s", c->path, key, mdb_strerror(rc));
    *out = malloc(v.mv_size + 1);
    if (!*out) return err_set("out of memory reading setting %s", key);
    memcpy(*out, v.mv_data, v.mv_size);
    (*out)[v.mv_size] = '\0';
    *len = v.mv_size;
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
    char *v[N_META + 1] = {0};
    size_t lens[N_META + 1] = {0};
    int rc = 0;
    for (int i = 0; i <= N_META && rc >= 0; i++) rc = meta_get(c, txn, i < N_META ? META_KEYS[i] : "checksum", &v[i], &lens[i]);
    if (own) mdb_txn_abort(txn);
    if (rc >= 0) rc = meta_parse(c->path, v, lens, m);
    for (int i = 0; i <= N_META; i++) free(v[i]);
    return rc < 0 ? -1 : 0;
}

// --- opening -----------------------------------------------------------------

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

// The message for a cache the page check found damaged.
static int damaged(const char *path, const char *what) {
    return err_set("%s: the cache is damaged: %s. It cannot be read safely: re-extract it (extract with --overwrite "
                   "replaces it); `extract --verify %s` lists all the damage",
                   path, what, path);
}

// Checks data.mdb's pages for the snapshot `txn` reads (see lmdb_check.h)
// before LMDB walks them. Returns 0, -2 when damaged (message set), -1 on
// other errors.
static int check_pages(const char *path, MDB_txn **txn) {
    char data[PATH_MAX + 32];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    for (int attempt = 0;; attempt++) {
        LmdbCheck opt = {.txnid = mdb_txn_id(*txn)};
        long bad = lmdb_check(data, &opt);
        if (bad == 0) return 0;
        if (bad > 0) {
            damaged(path, err_msg());
            return -2;
        }
        // A writer committed twice since our snapshot began (its meta page
        // was reused): check a newer one.
        if (bad != -2 || attempt == 5) return -1;
        MDB_env *env = mdb_txn_env(*txn);
        mdb_txn_abort(*txn);
        *txn = NULL;
        int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
        if (rc) {
            *txn = NULL;
            return err_set("%s: %s", path, mdb_strerror(rc));
        }
    }
}

// LMDB keeps its reader table in lock.mdb, a sparse file it maps and writes
// through the map: where the disk is full (or the quota used up) a page of
// it cannot be had when first touched, and the process dies of SIGBUS
// without a word. Its blocks are taken here first (8 KiB: the size LMDB
// 0.9 gives it for its default 126 readers on x86-64, measured; LMDB only
// ever grows the file), so a full disk is an error that names the file
// instead. Returns 0, or the errno (EACCES, EROFS: a folder we may not
// write, where LMDB's own open decides).
#define LOCK_FILE_BYTES 8192
static int lock_file_ready(const char *path) {
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/lock.mdb", path);
    int created = 0, fd = open(lock, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) fd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0664), created = fd >= 0;
    if (fd < 0) return errno == EEXIST ? 0 : errno;  // EEXIST: another process made it just now
    int e = posix_fallocate(fd, 0, LOCK_FILE_BYTES);
    close(fd);
    if (e == EOPNOTSUPP || e == EINVAL) e = 0;  // a file system without it: as before
    if (e && created) unlink(lock);
    return e;
}

// Every file of a cache is PATH/NAME: a path that leaves no room for the
// longest name would be cut short (and the file written elsewhere).
static int cache_path_fits(const char *path) {
    if (strlen(path) + sizeof "/skipped.tsv.tmp.4294967295" > PATH_MAX)
        return err_set("%.80s...: path too long for a cache (%zu characters; at most %zu)", path, strlen(path),
                       (size_t)PATH_MAX - sizeof "/skipped.tsv.tmp.4294967295");
    return 0;
}

// Opens the environment and its two databases. create: make them (a new
// cache); otherwise an LMDB without them is someone else's and is left alone,
// and its pages are checked first. Returns 0, -2 when the cache is damaged,
// -3 when the LMDB holds nothing at all (never committed), -1 on other
// errors (err_set each time).
static int open_env(Cache *c, const char *path, unsigned flags, int create) {
    memset(c, 0, sizeof *c);  // path fits: the public openers checked it (cache_path_fits)
    snprintf(c->path, sizeof c->path, "%s", path);
    c->batch = 4096;
    c->batch_bytes = 32u << 20;
    c->commit_seconds = 2.0;
    // zstd level 1, not zstd's default 3: on 300 flowers5 photos at 150x150
    // (VGG16 block5_pool, f16) level 1 encoded a record in 100 us against
    // 157 us with random weights (dense features) and 58 against 60 with
    // ImageNet weights, into records no larger (11,290 against 11,386 and
    // 2,593 against 2,633 bytes): extract on a GPU encodes some 10,000
    // records a second. Any level decodes the same; it is not a setting.
    c->level = 1;
    // Test hooks: a tiny first map exercises growth, a short commit interval
    // exercises resume after a crash between commits.
    const char *e = getenv("VGGFT_CACHE_MAP_MB");
    size_t initial = e && atol(e) > 0 ? (size_t)atol(e) << 20 : INITIAL_MAP;
    e = getenv("VGGFT_CACHE_COMMIT_EVERY");
    if (e && atoi(e) > 0) c->batch = atoi(e);
    e = getenv("VGGFT_CACHE_COMMIT_SECONDS");
    if (e && atof(e) >= 0) c->commit_seconds = atof(e);
    if (!create) {
        // The meta pages before mdb_env_open reads them (a page size of 0 is
        // a division by zero inside it); the trees once a snapshot is pinned.
        char data[PATH_MAX + 32];
        snprintf(data, sizeof data, "%s/data.mdb", path);
        LmdbCheck metas = {.metas_only = 1};
        long bad = lmdb_check(data, &metas);
        if (bad < 0) return -1;
        if (bad > 0) {
            damaged(path, err_msg());
            return -2;
        }
    }
    // No room for the lock file (not a folder we may not write: LMDB's open
    // decides that): a writer stops, a reader reads without it, as below.
    int lock_e = lock_file_ready(path), no_room = lock_e && lock_e != EACCES && lock_e != EROFS;
    if (no_room && !(flags & MDB_RDONLY))
        return err_set("%s/lock.mdb: %s (LMDB's lock file: %s and rerun)", path, strerror(lock_e),
                       lock_e == EFBIG ? "raise the file size limit, ulimit -f," : "free some space");
    int rc = mdb_env_create(&c->env);
    if (!rc) rc = mdb_env_set_maxdbs(c->env, 4);
    if (!rc) rc = mdb_env_set_mapsize(c->env, initial);
    if (!rc) rc = no_room ? EACCES : mdb_env_open(c->env, path, flags | MDB_NOTLS, 0664);
    if (rc == EACCES && (flags & MDB_RDONLY)) {
        // A folder we may not write: no lock file possible (or a disk too
        // full for one). LMDB does not allow a second open on a handle
        // whose open failed: a new one.
        mdb_env_close(c->env);
        c->env = NULL;
        rc = mdb_env_create(&c->env);
        if (!rc) rc = mdb_env_set_maxdbs(c->env, 4);
        if (!rc) rc = mdb_env_set_mapsize(c->env, initial);
        if (!rc) rc = mdb_env_open(c->env, path, flags | MDB_NOTLS | MDB_NOLOCK, 0664);
    }
    if (rc) {
        err_set("%s: cannot open the cache: %s", path, mdb_strerror(write_cause(path, rc)));
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
    if (rc) txn = NULL;
    if (!rc && !create) {
        int bad = check_pages(path, &txn);
        if (bad < 0) {
            if (txn) mdb_txn_abort(txn);
            mdb_env_close(c->env);
            c->env = NULL;
            return bad;
        }
    }
    unsigned dflags = create ? MDB_CREATE : 0;
    if (!rc) rc = mdb_dbi_open(txn, "meta", dflags, &c->dbi_meta);
    if (!rc) rc = mdb_dbi_open(txn, "features", dflags, &c->dbi_features);
    // Nothing at all in it (no database, no key): an extract killed before
    // its first commit made it. Not someone else's: -3, a new cache's place.
    MDB_stat main_st;
    MDB_dbi main_dbi;
    int never = rc == MDB_NOTFOUND && txn && mdb_dbi_open(txn, NULL, 0, &main_dbi) == 0 &&
                mdb_stat(txn, main_dbi, &main_st) == 0 && main_st.ms_entries == 0;
    if (!rc) rc = mdb_txn_commit(txn);  // keeps the handles (read-only too)
    else if (txn) mdb_txn_abort(txn);
    if (rc) {
        if (never)
            err_set("%s: the cache holds nothing: its extract was stopped before the first commit (rerun extract)",
                    path);
        else
            err_set("%s: %s", path,
                    rc == MDB_NOTFOUND ? "an LMDB database without the 'meta' and 'features' databases of a feature "
                                         "cache: not made by extract, or damaged (left untouched)"
                                       : mdb_strerror(write_cause(path, rc)));
        mdb_env_close(c->env);
        c->env = NULL;
        return never ? -3 : -1;
    }
    c->zctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    return 0;
}

// Deletes a damaged cache's LMDB files (--overwrite): dropping its databases
// through LMDB would walk the damaged pages.
static int remove_damaged(const char *path) {
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/%s", path, files[i]);
        if (unlink(p) < 0 && errno != ENOENT) return err_set("%s: cannot remove the damaged cache: %s", p, strerror(errno));
    }
    return 0;
}

// 1 when the cache's two databases are both empty (no settings, no record).
static int cache_is_blank(Cache *c) {
    MDB_txn *txn;
    if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn)) return 0;
    MDB_stat a, b;
    int blank = mdb_stat(txn, c->dbi_meta, &a) == 0 && mdb_stat(txn, c->dbi_features, &b) == 0 && !a.ms_entries &&
                !b.ms_entries;
    mdb_txn_abort(txn);
    return blank;
}

// One writer at a time: two extract jobs given the same --cache both did
// all the work (LMDB serialises their commits) and printed contradicting
// summaries, and a merge could replace a cache being written. The writer
// holds flock on the cache's folder from before it opens (or repairs)
// anything in it until cache_close; readers take no lock. A file system
// without flock on folders: as before.
int cache_lock_folder(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -2;  // not there (yet): nothing to hold
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return err_set("%s: another extract is writing this cache now (two jobs given one --cache?): wait for it "
                           "to end, or give each its own --cache",
                           path);
        return -2;
    }
    return fd;
}

// A new cache goes into a new or empty folder: one holding other files (an
// image folder given as --cache by mistake) is refused, naming one of them,
// rather than filled with LMDB's files.
int cache_folder_usable(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;  // none yet (or unreadable: make_dirs and LMDB say why)
    struct dirent *e;
    const char *mine[] = {".", "..", "data.mdb", "lock.mdb", "skipped.tsv"};
    char names[600] = "";
    int n = 0;
    while ((e = readdir(d))) {
        int ours = 0;
        for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++) ours |= !strcmp(e->d_name, mine[i]);
        if (ours) continue;
        if (n < 3)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%.150s", n ? ", " : "", e->d_name);
        n++;
    }
    closedir(d);
    if (!n) return 0;
    return err_set("%s: holds other files (%s%s) and no feature cache: a cache needs a folder of its own, new or "
                   "empty (check --cache; --overwrite does not change this)",
                   path, names, n > 3 ? ", ..." : "");
}

int cache_open_write_from(Cache *c, const char *path, const CacheMeta *want, int overwrite, CacheMovedFn moved,
                          void *ctx) {
    struct stat st;
    char data[PATH_MAX + 32];
    if (cache_path_fits(path) < 0) return -1;
    snprintf(data, sizeof data, "%s/data.mdb", path);
    // A data.mdb of its two meta pages alone never had a commit: what an open
    // that failed after LMDB made the file leaves (out of memory, say, under
    // an address-space limit). It holds nothing: make the cache in it.
    int exists = stat(data, &st) == 0 && st.st_size > 2 * (off_t)sysconf(_SC_PAGESIZE);
    if (!exists && stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
        return err_set("%s: exists and is not a folder (a cache is an LMDB folder)", path);
    if (!exists && cache_folder_usable(path) < 0) return -1;
    if (make_dirs(path) < 0) return -1;
    int lock = cache_lock_folder(path);
    if (lock == -1) return -1;
    // Under the lock no other writer is making it: a data.mdb shorter than
    // its two meta pages (a disk that filled while LMDB wrote them) holds
    // nothing; emptied, LMDB starts it afresh (it refuses it as it is).
    if (stat(data, &st) == 0 && st.st_size > 0 && st.st_size < 2 * (off_t)sysconf(_SC_PAGESIZE) &&
        truncate(data, 0) < 0) {
        if (lock >= 0) close(lock);
        return err_set("%s: %s", data, strerror(errno));
    }
    // Again under the lock: a writer that held it until just now may have made it.
    exists = stat(data, &st) == 0 && st.st_size > 2 * (off_t)sysconf(_SC_PAGESIZE);
    int rc = open_env(c, path, 0, !exists);
    if (rc == -3) {  // made by an extract killed before its first commit: start it
        exists = 0;
        rc = open_env(c, path, 0, 1);
    }
    if (rc == -2 && overwrite) {
        log_printf(stderr, "warning: %s\n", err_msg());
        log_printf(stderr, "--overwrite: replacing the damaged cache\n");
        if (remove_damaged(path) < 0) return -1;
        exists = 0;
        rc = open_env(c, path, 0, 1);
    }
    if (rc < 0) {
        if (lock >= 0) close(lock);
        return -1;
    }
    c->writer_lock = lock >= 0 ? lock + 1 : 0;
    // Its databases made but no settings and no record yet: an extract killed
    // between its first two commits. Nothing to keep or to refuse.
    if (exists && cache_is_blank(c)) exists = 0;
    if (exists) {
        CacheMeta have;
        rc = cache_read_meta(c, &have);
        char diff[600];
        // Whose cache is it? Another folder's first: its settings may well
        // differ too, and --overwrite is not what a typo in --cache needs.
        if (rc == 0 && !overwrite && have.data_dir[0] && want->data_dir[0] && strcmp(have.data_dir, want->data_dir)) {
            int ok = 0;
            if (moved) ok = moved(ctx, c, &have, want);
            else
                err_set("%s: this cache was made from %s, and this run reads %s: a cache belongs to its folder "
                        "(check --cache; --overwrite replaces it)",
                        path, have.data_dir, want->data_dir);
            if (ok != 1) {
                cache_meta_free(&have);
                cache_close(c);
                return -1;
            }
        }
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

int cache_open_write(Cache *c, const char *path, const CacheMeta *want, int overwrite) {
    return cache_open_write_from(c, path, want, overwrite, NULL, NULL);
}

int cache_open_read(Cache *c, const char *path, CacheMeta *meta) {
    struct stat st;
    char data[PATH_MAX + 32];
    if (cache_path_fits(path) < 0) return -1;
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
    if (c->writer_lock) close(c->writer_lock - 1);
    c->writer_lock = 0;
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

// An LMDB error while writing, named by what was being done. A full disk
// (or quota) says so in the system's words, names the cache and says what
// is kept.
// What an LMDB write error means: LMDB reports a page write cut short as
// EIO. With (almost) no space left in the cache's file system, that is the
// full disk (ENOSPC); under a file size limit (ulimit -f) that data.mdb
// has reached, that limit (EFBIG). Other errors as they are.
static int write_cause(const char *path, int rc) {
    if (rc != EIO) return rc;
    struct statvfs fs;
    if (statvfs(path, &fs) == 0 && (double)fs.f_bavail * fs.f_frsize < 16.0 * 1024 * 1024) return ENOSPC;
    struct rlimit fl;
    struct stat st;
    char data[PATH_MAX + 32];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (getrlimit(RLIMIT_FSIZE, &fl) == 0 && fl.rlim_cur != RLIM_INFINITY && stat(data, &st) == 0 &&
        (rlim_t)st.st_size + (rlim_t)sysconf(_SC_PAGESIZE) >= fl.rlim_cur)
        return EFBIG;
    return rc;
}

static int write_error(Cache *c, int rc, const char *doing) {
    rc = write_cause(c->path, rc);
    if (rc == EFBIG)
        return err_set("%s: %s while %s (the file size limit, ulimit -f): the records committed before are kept; "
                       "raise the limit and rerun the same command to resume",
                       c->path, strerror(rc), doing);
    if (rc == ENOSPC || rc == EDQUOT)
        return err_set("%s: %s while %s: the records committed before are kept; free some space and rerun the same "
                       "command to resume",
                       c->path, strerror(rc), doing);
    return err_set("%s: %s: %s", c->path, doing, mdb_strerror(rc));
}

static int begin(Cache *c) {
    if (c->txn) return 0;
    int rc = mdb_txn_begin(c->env, NULL, 0, &c->txn);
    if (rc) {
        c->txn = NULL;
        return write_error(c, rc, "starting a write");
    }
    c->txn_start = now_seconds();
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
        if (rc) return write_error(c, rc, "writing");
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
        c->pending_bytes += len;
    }
    c->pending[c->n_pending++] = p;
    int rc = apply(c, &c->pending[c->n_pending - 1]);
    if (rc == MDB_MAP_FULL) {
        if (grow_and_replay(c) < 0) return -1;
    } else if (rc) {
        char doing[64];
        snprintf(doing, sizeof doing, "writing %.*s", (int)klen, key);
        return write_error(c, rc, doing);
    }
    return c->n_pending >= c->batch || c->pending_bytes >= c->batch_bytes ? cache_commit(c) : 0;
}

// Records commit by count (queue_op) and by time: an interrupted run loses
// at most commit_seconds of work (plus the batch in flight).
static int commit_if_due(Cache *c) {
    if (c->txn && c->commit_seconds >= 0 && now_seconds() - c->txn_start >= c->commit_seconds) return cache_commit(c);
    return 0;
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
    c->pending_bytes = 0;
    if (rc) return write_error(c, rc, "committing");
    return 0;
}

static int ensure_buf(uint8_t **buf, size_t *cap, size_t n) {
    if (*cap >= n) return 0;
    uint8_t *b = realloc(*buf, n);
    if (!b) return err_set("out of memory");
    *buf = b;
    *cap = n;
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// Encodes r with zstd context zctx at level into *buf (grown as needed):
// [raw features staging | record]; the record starts at *buf + raw features' size.
static long encode_record(void *zctx, uint8_t **buf, size_t *cap, int level, const CacheRecord *r, int n_features,
                          FeatDtype dtype) {
    size_t path_len = strlen(r->path);
    if (path_len > 65535) return err_set("%s: path too long for the cache", r->path);
    size_t item = dtype == FEAT_F16 ? 2 : 4;
    size_t raw = (size_t)n_features * item;
    size_t bound = ZSTD_compressBound(raw);
    size_t header = 50 + path_len + 4;
    if (ensure_buf(buf, cap, raw + header + bound + 4) < 0) return -1;
    uint8_t *stage = *buf, *rec = *buf + raw;
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
    ZSTD_CCtx_reset(zctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(zctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(zctx, ZSTD_c_checksumFlag, 1);
    size_t z = ZSTD_compress2(zctx, rec + header, bound, stage, raw);
    if (ZSTD_isError(z)) return err_set("%s: zstd: %s", r->path, ZSTD_getErrorName(z));
    put_u32(rec + header - 4, (uint32_t)z);
    size_t total = header + z;
    put_u32(rec + total, (uint32_t)crc32(crc32(0L, Z_NULL, 0), rec, (uInt)total));
    return (long)(total + 4);
}

long cache_record_encode(Cache *c, const CacheRecord *r, int n_features, FeatDtype dtype) {
    return encode_record(c->zctx, &c->buf, &c->buf_cap, c->level, r, n_features, dtype);
}

int record_encoder_init(RecordEncoder *e, const Cache *c) {
    memset(e, 0, sizeof *e);
    e->level = c->level;
    e->zctx = ZSTD_createCCtx();
    return e->zctx ? 0 : err_set("out of memory (zstd context)");
}

void record_encoder_free(RecordEncoder *e) {
    ZSTD_freeCCtx(e->zctx);
    free(e->buf);
    memset(e, 0, sizeof *e);
}

long record_encode(RecordEncoder *e, const CacheRecord *r, int n_features, FeatDtype dtype, const uint8_t **out) {
    long len = encode_record(e->zctx, &e->buf, &e->cap, e->level, r, n_features, dtype);
    *out = e->buf + (size_t)n_features * (dtype == FEAT_F16 ? 2 : 4);
    return len;
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
    if (queue_op(c, OP_PUT, c->dbi_features, k, 10, val, len) < 0) return -1;
    return commit_if_due(c);
}

int cache_del(Cache *c, uint64_t key) {
    char k[24];
    key_text(key, k);
    if (queue_op(c, OP_DEL, c->dbi_features, k, 10, NULL, 0) < 0) return -1;
    return commit_if_due(c);
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
    // Every length is checked against len before it is used: first the
    // fixed header, then the path, then (after the crc32 vouches for all
    // the bytes) the compressed frame.
    if (len < 58 || get_u32(p) != RECORD_MAGIC) return err_set("record %s: not a feature record (damaged)", k);
    if (len > UINT32_MAX) return err_set("record %s: %zu bytes, too large for a record (damaged)", k, len);
    int plen = p[48] | p[49] << 8;
    if ((size_t)plen + 58 > len) return err_set("record %s: its path runs past its end (damaged)", k);
    const char *rpath = (const char *)p + 50;
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)(len - 4));
    if (crc != get_u32(p + len - 4))
        return err_set("record %s (%.*s): checksum mismatch: the record is damaged", k, plen, rpath);
    uint32_t n = get_u32(p + 12);
    if (n_features >= 0 && (int64_t)n != n_features)
        return err_set("record %s (%.*s): %u features, the cache's shape says %d", k, plen, rpath, n, n_features);
    if (p[8] != FEAT_F16 && p[8] != FEAT_F32)
        return err_set("record %s (%.*s): unknown feature type %d", k, plen, rpath, p[8]);
    size_t zoff = 50 + (size_t)plen + 4;
    uint32_t zlen = get_u32(p + zoff - 4);
    if (zoff + (size_t)zlen + 4 != len) return err_set("record %s (%.*s): bad compressed length", k, plen, rpath);
    if (label) *label = (int32_t)get_u32(p + 4);
    if (path) *path = rpath;
    if (path_len) *path_len = plen;
    if (sha256) memcpy(sha256, p + 16, 32);
    if (!features) return 0;
    if (n_features < 0) return err_set("record %s: decoding features needs their count", k);
    FeatDtype dtype = p[8] == FEAT_F32 ? FEAT_F32 : FEAT_F16;
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
static int parse_key(const void *data, size_t n, CacheKey *out) {
    const char *p = data;
    size_t off = n == 11 && p[0] == 't';
    if (n != 10 + off) return 0;
    uint64_t v = 0;
    for (size_t i = off; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    memset(out, 0, sizeof *out);
    memcpy(out->key, p, n);
    out->key[n] = '\0';
    out->klen = n;
    out->index = v;
    out->moving = (int)off;
    return 1;
}

// A key for messages: printable bytes as they are, others as \xNN.
static const char *printable(const void *data, size_t n, char *out, size_t size) {
    const uint8_t *k = data;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        if (k[i] >= 0x20 && k[i] < 0x7f) out[o++] = (char)k[i];
        else o += (size_t)snprintf(out + o, size - o, "\\x%02x", k[i]);
    }
    out[o] = '\0';
    return out;
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
        if (!parse_key(k.mv_data, k.mv_size, &key)) {
            // Not a key we write: a damaged one. Resuming deletes it (and
            // extracts its image again); anything else must not skip it.
            if (include_moving && k.mv_size < sizeof key.key) {
                memset(&key, 0, sizeof key);
                memcpy(key.key, k.mv_data, k.mv_size);
                key.klen = k.mv_size;
                key.damaged = 1;
            } else {
                char kt[100];
                ret = err_set("%s: record key '%s' is damaged (not a record key): re-extract the cache (extract "
                              "--overwrite replaces it)",
                              c->path, printable(k.mv_data, k.mv_size, kt, sizeof kt));
                break;
            }
        }
        if (key.moving && !include_moving) continue;
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

// --- what a finished run wrote -------------------------------------------------------

int cache_content_begin(CacheContent *cc) {
    memset(cc, 0, sizeof *cc);
    cc->hash = hash_begin(HASH_SHA256);
    return cc->hash ? 0 : err_set("out of memory");
}

// Appends a run of keys: "a", "a-b" (every key) or "a-b/s" (every s-th).
static void emit_run(CacheContent *cc, uint64_t first, uint64_t step, long len) {
    if (cc->keys_full || len == 0) return;
    char r[80];
    unsigned long long a = first, b = first + step * (uint64_t)(len - 1);
    if (len == 2 && step != 1) {  // two keys far apart are no run
        emit_run(cc, first, 1, 1);
        emit_run(cc, first + step, 1, 1);
        return;
    }
    if (len == 1) snprintf(r, sizeof r, "%llu", a);
    else if (step == 1) snprintf(r, sizeof r, "%llu-%llu", a, b);
    else snprintf(r, sizeof r, "%llu-%llu/%llu", a, b, (unsigned long long)step);
    size_t have = strlen(cc->keys);
    if (have + strlen(r) + 2 > sizeof cc->keys) {
        cc->keys_full = 1;
        return;
    }
    snprintf(cc->keys + have, sizeof cc->keys - have, "%s%s", have ? "," : "", r);
}

void cache_content_add(CacheContent *cc, uint64_t key, const void *val, size_t len) {
    // The record's own crc32 stands for its bytes (it covers all of them).
    uint8_t item[12];
    for (int i = 0; i < 8; i++) item[i] = (uint8_t)(key >> (8 * i));
    memset(item + 8, 0, 4);
    if (len >= 4) memcpy(item + 8, (const uint8_t *)val + len - 4, 4);
    hash_update(cc->hash, item, sizeof item);
    cc->n++;
    // Keys arrive in increasing order: extend the current run or start one.
    if (cc->run_len == 0) {
        cc->run_first = cc->run_last = key, cc->run_len = 1;
    } else if (cc->run_len == 1 && key > cc->run_last) {
        cc->run_step = key - cc->run_first, cc->run_last = key, cc->run_len = 2;
    } else if (key > cc->run_last && key - cc->run_last == cc->run_step) {
        cc->run_last = key, cc->run_len++;
    } else if (cc->run_len == 2 && cc->run_step != 1) {  // two keys far apart: the second may start a run
        emit_run(cc, cc->run_first, 1, 1);
        cc->run_first = cc->run_last;
        cc->run_step = key - cc->run_first, cc->run_last = key;
    } else {
        emit_run(cc, cc->run_first, cc->run_step, cc->run_len);
        cc->run_first = cc->run_last = key, cc->run_len = 1;
    }
}

int cache_content_end(CacheContent *cc, char *out, size_t size) {
    emit_run(cc, cc->run_first, cc->run_step, cc->run_len);
    char hex[65];
    int rc = hash_end(cc->hash, hex);
    cc->hash = NULL;
    if (rc < 0) return -1;
    if (cc->keys_full) snprintf(out, size, "%ld records, sha256:%s", cc->n, hex);
    else snprintf(out, size, "%ld records, keys %s, sha256:%s", cc->n, cc->n ? cc->keys : "-", hex);
    return 0;
}

int cache_class_of_path(const CacheMeta *meta, int label, const char *path) {
    if (label < 0 || label >= meta->n_classes) return -1;
    size_t n = strlen(meta->class_names[label]);
    return !strncmp(path, meta->class_names[label], n) && path[n] == '/' ? 0 : -1;
}

long cache_content_count(const CacheMeta *meta) {
    long n;
    if (!meta->content[0] || sscanf(meta->content, "%ld records", &n) != 1) return -1;
    return n;
}

// Walks the keys listed in "a,b-c,d-e/s" form, in order. 0 at the end.
typedef struct {
    const char *p;
    uint64_t next, last, step;
    int in_run;
} KeyList;

static int keylist_next(KeyList *kl, uint64_t *key) {
    if (!kl->in_run) {
        if (!kl->p || *kl->p < '0' || *kl->p > '9') return 0;  // the end: ", sha256:..." (or "-": none)
        char *e;
        unsigned long long a = strtoull(kl->p, &e, 10), b = a, s = 1;
        if (*e == '-') b = strtoull(e + 1, &e, 10);
        if (*e == '/') s = strtoull(e + 1, &e, 10);
        if (s == 0 || b < a) return 0;
        kl->p = *e == ',' && e[1] >= '0' && e[1] <= '9' ? e + 1 : NULL;
        kl->next = a, kl->last = b, kl->step = s, kl->in_run = 1;
    }
    *key = kl->next;
    if (kl->next >= kl->last || kl->last - kl->next < kl->step) kl->in_run = 0;
    else kl->next += kl->step;
    return 1;
}

const char *cache_content_id(const CacheMeta *meta) {
    const char *id = strstr(meta->content, "sha256:");
    return id ? id : "";
}

int cache_content_check(const char *path, const CacheMeta *meta, const char *have, const uint64_t *keys, long n) {
    if (!meta->content[0] || !strcmp(meta->content, have)) return 0;
    long want_n = cache_content_count(meta);
    char msg[ERR_MSG_MAX];
    int o = snprintf(msg, sizeof msg, "%s: the cache holds %ld records where its extract run wrote %ld", path, n,
                     want_n);
    const char *list = strstr(meta->content, ", keys ");
    if (list) {
        // Name the keys missing and those the run did not write.
        KeyList kl = {list + 7, 0, 0, 0, 0};
        uint64_t want;
        int more = keylist_next(&kl, &want);
        long i = 0, missing = 0, extra = 0;
        char ms[160] = "", ex[160] = "";
        while (more || i < n) {
            int miss = more && (i >= n || want < keys[i]);
            int add = i < n && (!more || keys[i] < want);
            char k[24];
            if (miss) {
                key_text(want, k);
                if (missing++ < 5) snprintf(ms + strlen(ms), sizeof ms - strlen(ms), "%s%s", missing > 1 ? ", " : "", k);
                more = keylist_next(&kl, &want);
            } else if (add) {
                key_text(keys[i], k);
                if (extra++ < 5) snprintf(ex + strlen(ex), sizeof ex - strlen(ex), "%s%s", extra > 1 ? ", " : "", k);
                i++;
            } else {
                more = keylist_next(&kl, &want);
                i++;
            }
        }
        if (missing) o += snprintf(msg + o, sizeof msg - (size_t)o, "; missing: %s%s", ms, missing > 5 ? ", ..." : "");
        if (extra)
            o += snprintf(msg + o, sizeof msg - (size_t)o, "; not written by the run: %s%s", ex, extra > 5 ? ", ..." : "");
        if (!missing && !extra)
            o += snprintf(msg + o, sizeof msg - (size_t)o, "; the same keys, but some records differ from those written");
    }
    return err_set("%s: the cache is damaged; re-extract it (extract --overwrite replaces it)", msg);
}

typedef struct {
    long *per_class;
    int n;
    CacheContent cc;
} LabelCounts;

static int count_label(void *ctx, uint64_t key, const void *val, size_t len) {
    LabelCounts *c = ctx;
    int32_t label;
    if (cache_record_decode(NULL, key, val, len, -1, &label, NULL, NULL, NULL, NULL) == 0 && label >= 0 &&
        label < c->n)
        c->per_class[label]++;
    cache_content_add(&c->cc, key, val, len);
    return 0;
}

int cache_store_counts(Cache *c, CacheMeta *meta) {
    LabelCounts counts = {calloc((size_t)meta->n_classes, sizeof(long)), meta->n_classes};
    if (!counts.per_class) return err_set("out of memory");
    if (cache_content_begin(&counts.cc) < 0 || cache_visit(c, count_label, &counts) < 0 ||
        cache_content_end(&counts.cc, meta->content, sizeof meta->content) < 0) {
        hash_abort(counts.cc.hash);
        free(counts.per_class);
        return -1;
    }
    free(meta->class_counts);
    meta->class_counts = counts.per_class;
    meta->complete = 1;
    if (cache_write_meta(c, meta) < 0) return -1;
    return cache_commit(c);
}

// --- checking a whole cache ------------------------------------------------------

typedef struct {
    const char *path;
    CacheReportFn report;
    void *ctx;
    long problems, records;
    char *mv[N_META + 1];    // the settings as found
    size_t ml[N_META + 1];
    int meta_state;          // 0 not parsed yet, 1 parsed, -1 unreadable
    int has_meta, has_features;
    CacheMeta meta;
    int D;
    float *buf;
    void *dctx;
    CacheContent cc;
    uint64_t *keys;
    long n_keys, cap_keys;
    long *per_class;
} Verify;

static void vreport(Verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vreport(Verify *v, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->problems++;
    if (v->report) v->report(v->ctx, msg);
}

static void verify_problem(void *ctx, const char *msg) { vreport(ctx, "%s", msg); }

static void verify_named(void *ctx, const char *db) {
    Verify *v = ctx;
    v->has_meta |= !strcmp(db, "meta");
    v->has_features |= !strcmp(db, "features");
}

static void verify_parse_meta(Verify *v) {
    if (v->meta_state) return;
    if (meta_parse(v->path, v->mv, v->ml, &v->meta) < 0) {
        vreport(v, "%s", err_msg());
        v->meta_state = -1;
        return;
    }
    v->meta_state = 1;
    v->D = v->meta.feat_h * v->meta.feat_w * v->meta.feat_c;
    v->buf = malloc(sizeof(float) * (size_t)v->D);
    v->per_class = calloc((size_t)v->meta.n_classes, sizeof(long));
    if (!v->buf || !v->per_class) {
        vreport(v, "out of memory for a record of %d features", v->D);
        cache_meta_free(&v->meta);
        v->meta_state = -1;
    }
}

static int verify_entry(void *ctx, const char *db, const void *key, size_t klen, const void *val, size_t vlen) {
    Verify *v = ctx;
    if (!strcmp(db, "meta")) {
        for (int i = 0; i <= N_META; i++) {
            const char *name = i < N_META ? META_KEYS[i] : "checksum";
            if (klen != strlen(name) || memcmp(key, name, klen) || v->mv[i]) continue;
            v->mv[i] = malloc(vlen + 1);
            if (!v->mv[i]) return err_set("out of memory");
            memcpy(v->mv[i], val, vlen);
            v->mv[i][vlen] = '\0';
            v->ml[i] = vlen;
        }
        return 0;
    }
    if (strcmp(db, "features")) return 0;
    verify_parse_meta(v);
    CacheKey k;
    char kt[100];
    if (!parse_key(key, klen, &k)) {
        vreport(v, "record key '%s' is damaged (not a record key)", printable(key, klen, kt, sizeof kt));
        return 0;
    }
    if (k.moving) return 0;  // left by an interrupted resume: the next run puts it in place
    v->records++;
    int32_t label;
    const char *p;
    int plen;
    int ok = v->meta_state == 1
                 ? cache_record_decode(v->dctx, k.index, val, vlen, v->D, &label, &p, &plen, NULL, v->buf)
                 : cache_record_decode(NULL, k.index, val, vlen, -1, &label, &p, &plen, NULL, NULL);
    if (ok < 0) vreport(v, "%s", err_msg());
    else if (v->meta_state == 1 && (label < 0 || label >= v->meta.n_classes))
        vreport(v, "record %s (%.*s): label %d, but the cache has %d classes", k.key, plen, p, label,
                v->meta.n_classes);
    else if (v->meta_state == 1) {
        char rp[4200];
        snprintf(rp, sizeof rp, "%.*s", plen, p);
        if (cache_class_of_path(&v->meta, label, rp) < 0)
            vreport(v, "record %s (%s): label %d, but class %d is '%s' in the cache's settings", k.key, rp, label,
                    label, v->meta.class_names[label]);
        v->per_class[label]++;
    }
    if (v->n_keys == v->cap_keys) {
        v->cap_keys = v->cap_keys ? 2 * v->cap_keys : 1024;
        uint64_t *nk = realloc(v->keys, sizeof(uint64_t) * (size_t)v->cap_keys);
        if (!nk) return err_set("out of memory");
        v->keys = nk;
    }
    v->keys[v->n_keys++] = k.index;
    cache_content_add(&v->cc, k.index, val, vlen);
    return 0;
}

long cache_verify(const char *path, CacheReportFn report, void *ctx, long *records) {
    struct stat st;
    char data[PATH_MAX + 32];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (records) *records = 0;
    if (stat(path, &st) < 0) return err_set("%s: no such cache (%s)", path, strerror(errno));
    if (!S_ISDIR(st.st_mode) || stat(data, &st) < 0)
        return err_set("%s: not a feature cache (expected an LMDB folder with data.mdb, as extract writes)", path);
    Verify v;
    memset(&v, 0, sizeof v);
    v.path = path, v.report = report, v.ctx = ctx;
    v.dctx = ZSTD_createDCtx();
    if (!v.dctx || cache_content_begin(&v.cc) < 0) {
        ZSTD_freeDCtx(v.dctx);
        return err_set("out of memory");
    }
    // Everything is read through the checker (pread), never through LMDB, so
    // that no damage can crash it; the settings come first.
    LmdbCheck opt = {.all = 1,
                     .problem = verify_problem,
                     .entry = verify_entry,
                     .first_db = "meta",
                     .named = verify_named,
                     .ctx = &v};
    long pages_bad = lmdb_check(data, &opt);
    long ret = -1;
    if (pages_bad == 0 && (!v.has_meta || !v.has_features))
        vreport(&v, "no '%s' database: not a feature cache made by extract, or a damaged one",
                v.has_meta ? "features" : "meta");
    if (pages_bad >= 0) {
        verify_parse_meta(&v);
        char have[512];
        if (cache_content_end(&v.cc, have, sizeof have) == 0 && v.meta_state == 1 && !pages_bad) {
            if (cache_content_check(path, &v.meta, have, v.keys, v.n_keys) < 0) vreport(&v, "%s", err_msg());
            else if (v.meta.complete && !v.meta.content[0])  // made before contents were recorded
                for (int k = 0; k < v.meta.n_classes; k++)
                    if (v.meta.class_counts[k] != v.per_class[k])
                        vreport(&v, "class '%s' has %ld records where its extract run wrote %ld: the cache is damaged",
                                v.meta.class_names[k], v.per_class[k], v.meta.class_counts[k]);
        }
        ret = v.problems;
        if (records) *records = v.records;
    }
    hash_abort(v.cc.hash);
    for (int i = 0; i <= N_META; i++) free(v.mv[i]);
    if (v.meta_state == 1) cache_meta_free(&v.meta);
    free(v.buf);
    free(v.per_class);
    free(v.keys);
    ZSTD_freeDCtx(v.dctx);
    return ret;
}
