// The feature cache: one LMDB environment (a folder holding data.mdb and
// lock.mdb, readable by mdb_stat and friends) per extract run.
//
//   database "meta"      setting name -> text (model, weights, sizes, classes...),
//                        with "checksum": sha256 of all the others (format 2)
//   database "features"  %010d key -> one record per image:
//       magic "VGF1" | label i32 | dtype u8 + 3 pad | n_features u32
//       | sha256 of the image file [32] | path_len u16 | path (relative to DIR)
//       | zlen u32 | zstd frame of the features (H,W,C; f16 or f32; the frame
//       carries zstd's own content checksum) | crc32 of all bytes before it
// Little-endian throughout. Keys are the image's index in the folder's
// flow_from_directory order, so shards of one folder merge into exactly the
// records a single run writes.
//
// Damage (a flipped bit on disk, a truncated copy) is found before it is
// used, never as a crash or a silent change: every open checks data.mdb's
// pages before LMDB walks them (lmdb_check.h); each record carries a crc32;
// the settings carry a checksum; a finished run records its records' count,
// keys and a digest, which readers compare with what they find.
#pragma once
#include <limits.h>
#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FEAT_F16 = 1, FEAT_F32 = 2 } FeatDtype;

// The settings a cache was made with; all of them but the counts, version
// and command line must match for a run to add to an existing cache.
typedef struct {
    char model[16];          // "vgg16"
    char weights[96];        // "sha256:<hex>" of the weights file, or "random:seed=N"
    int input_h, input_w;
    char interpolation[16];
    char preprocess[16];
    char layer[48];          // "block5_pool"
    int feat_h, feat_w, feat_c;
    FeatDtype dtype;
    int n_classes;
    char **class_names;
    char shard[32];          // "" for a whole folder, "I/N" for a shard
    char decode[64];         // "full" or "reduced", and the pixel budget: both change pixels
    // Not compared when adding to a cache (the folder may have changed since):
    char folder[96];         // the listing the run saw: "<files> files, sha256:<of the sorted list>"
    char data_dir[PATH_MAX]; // absolute path of the image folder ("" when unknown: older caches)
    int complete;            // 1 once a run finished (set with the counts); 0 while one runs
    long *class_counts;      // records per class (n_classes), written at the end of a run
    long *class_files;       // files Keras lists per class in the whole folder (n_classes), skipped
                             // ones included: where each class's keys start, for validation_split
                             // (NULL when unknown: caches made before it was recorded)
    // What a finished run wrote (cache_store_counts; "" while one runs):
    // "<n> records, keys <ranges>, sha256:<hex>" (see cache_content_end).
    char content[512];
    char version[32];
    char command[8192];      // the extract command line; a longer one ends in "..."
    int checksummed;         // read: the settings carried a checksum and it matched (0: a cache
                             // made before checksums, whose settings cannot be verified)
} CacheMeta;

void cache_meta_free(CacheMeta *m);
// Warns on stderr when the cache at path is incomplete (its extract run did
// not finish) or one shard of its folder: training on it uses part of the data.
void cache_meta_warn_partial(const CacheMeta *m, const char *path);
const char *feat_dtype_name(FeatDtype d);
// First setting where a and b differ ("input size: cache has 150x150, this run
// 224x224"), written to buf; returns 0 if they agree.
int cache_meta_diff(const CacheMeta *have, const CacheMeta *want, char *buf, size_t size);
// The same with the two sides named ("layer: --cache has block5_pool,
// --val-cache block4_pool"): have_is and want_is replace "the cache" and
// "this run".
int cache_meta_diff_as(const CacheMeta *have, const CacheMeta *want, const char *have_is, const char *want_is,
                       char *buf, size_t size);

typedef struct {
    int32_t label;
    const char *path;        // relative to the image folder
    uint8_t sha256[32];      // of the image file's bytes
    const float *features;   // n_features floats (encode) / decoded into caller's buffer
} CacheRecord;

typedef struct {
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_features;
    MDB_txn *txn;            // open write transaction, if any
    char path[PATH_MAX];
    size_t map_size;
    // Puts of the open transaction, kept to replay after growing the map.
    struct PendingPut *pending;
    int n_pending, cap_pending;
    int batch;               // puts per transaction
    size_t batch_bytes;      // ... or this many bytes of them
    size_t pending_bytes;    // bytes of the puts kept in pending
    double commit_seconds;   // ... and at most this long between commits
    double txn_start;        // when the open transaction began (monotonic seconds)
    void *zctx, *dctx;       // zstd contexts
    uint8_t *buf;            // encode/decode scratch
    size_t buf_cap;
    int level;               // zstd level
    int writer_lock;         // 1 + the descriptor holding flock on the folder (writers), 0: none
} Cache;

// A new cache's folder PATH: missing, empty, or holding only a cache's own
// files. 0, or -1 with err_set naming a file that should not be there (an
// image folder given as the cache by a slip).
int cache_folder_usable(const char *path);

// flock on the cache folder PATH, which every writer holds while it writes
// (cache_open_write ... cache_close): the descriptor to close when done, -1
// with err_set naming PATH when another process holds it, -2 when PATH is
// not a folder or the file system has no such locks (nothing held).
int cache_lock_folder(const char *path);

// Opens PATH for writing. A new cache gets `want`'s settings. An existing
// one must have the same settings (else an error naming the first
// difference and suggesting --overwrite), unless overwrite is set, which
// empties it first (a damaged one is deleted and made anew).
// It must also come from the same folder (want->data_dir, when both know
// theirs): a cache belongs to its folder, so that `--cache` given another
// folder's cache does not re-key and delete its records. A run on another
// folder is refused naming both, unless overwrite, or unless `moved` (may be
// NULL: refused) says the folder moved: 1 accept, 0 refuse (err_set naming
// both folders), -1 error. The cache is open for reading while it decides.
typedef int (*CacheMovedFn)(void *ctx, Cache *c, const CacheMeta *have, const CacheMeta *want);
int cache_open_write_from(Cache *c, const char *path, const CacheMeta *want, int overwrite, CacheMovedFn moved,
                          void *ctx);
int cache_open_write(Cache *c, const char *path, const CacheMeta *want, int overwrite);
// Opens an existing cache read-only and reads its settings (checked against
// their checksum). Damage found by the page check is an error naming the page
// and telling to re-extract.
int cache_open_read(Cache *c, const char *path, CacheMeta *meta);
void cache_close(Cache *c);
int cache_read_meta(Cache *c, CacheMeta *meta);
int cache_write_meta(Cache *c, const CacheMeta *meta);

// Encodes and stores a record under key (replacing one there). Commits every
// c->batch puts (4,096), c->batch_bytes of them (32 MiB: each commit syncs
// the file, milliseconds that a GPU run would wait for) or
// c->commit_seconds (2 s; VGGFT_CACHE_COMMIT_SECONDS), whichever comes
// first, so an interrupted run loses seconds of work at
// most; grows the map (doubling, as Caffe does) when LMDB says it is full.
// A full disk is an error that says "No space left on device" and names the
// cache; what was committed before stays (rerun to resume).
int cache_put(Cache *c, uint64_t key, const CacheRecord *r, int n_features, FeatDtype dtype);
// A record encoder of its own (zstd context and buffer, the cache's level),
// so that records can be encoded on several threads and then stored in
// order with cache_put_raw: the same bytes as cache_put. init: -1 (err_set)
// when out of memory. record_encode returns the record's length and points
// *out at it (valid until the next call), or -1 as cache_record_encode.
typedef struct {
    void *zctx;
    uint8_t *buf;
    size_t cap;
    int level;
} RecordEncoder;
int record_encoder_init(RecordEncoder *e, const Cache *c);
void record_encoder_free(RecordEncoder *e);
long record_encode(RecordEncoder *e, const CacheRecord *r, int n_features, FeatDtype dtype, const uint8_t **out);
int cache_del(Cache *c, uint64_t key);
// Commits the open transaction (no-op when none).
int cache_commit(Cache *c);

// Record encoding, exposed for reading without an open Cache and for tests.
// Encodes into *buf (grown as needed); returns the length or -1.
long cache_record_encode(Cache *c, const CacheRecord *r, int n_features, FeatDtype dtype);
// Decodes a stored value. features: n_features floats (may be NULL, with
// n_features -1, to read only the header); path is returned pointing into val (not terminated: use
// *path_len). Checks every length against len before using it, then the
// crc32 of the whole record, then zstd's checksum; errors name the key and
// (when readable) the path, and say the record is damaged.
int cache_record_decode(void *zstd_dctx, uint64_t key, const void *val, size_t len, int n_features,
                        int32_t *label, const char **path, int *path_len, uint8_t sha256[32], float *features);

// Iterates over all records in key order: calls fn for each raw value (no
// decoding). Stops and returns fn's value when it is non-zero. Records left
// half-moved by an interrupted resume (see cache_move) are not visited; a key
// that is neither is damage (an error naming it).
typedef int (*CacheVisitFn)(void *ctx, uint64_t key, const void *val, size_t len);
int cache_visit(Cache *c, CacheVisitFn fn, void *ctx);

// --- re-keying (resume after the folder changed) -----------------------------
// A stored key: "%010llu" for a record in place, "t%010llu" for one on its way
// to that index (moving = 1).
typedef struct {
    char key[24];
    size_t klen;
    uint64_t index;
    int moving;
    int damaged;             // not a record key (damaged): only to be deleted
} CacheKey;
typedef int (*CacheKeyVisitFn)(void *ctx, const CacheKey *key, const void *val, size_t len);
// Like cache_visit, moving records and damaged keys (up to 23 bytes) included.
int cache_visit_keys(Cache *c, CacheKeyVisitFn fn, void *ctx);
// Moves a record to index `to`, in place (to_temp 0) or to its temporary key
// (to_temp 1). Moving first to temporary keys, then in place, never
// overwrites a record still to be moved; a crash at any commit leaves each
// record under its old, temporary or new key.
int cache_move(Cache *c, const CacheKey *from, uint64_t to, int to_temp);
int cache_del_key(Cache *c, const CacheKey *key);
// Stores an already encoded record (merge).
int cache_put_raw(Cache *c, uint64_t key, const void *val, size_t len);
// Number of records.
long cache_count(Cache *c);
// Counts the records of each class, stores the counts with the settings
// (meta->class_counts is replaced by a malloc'd array the caller frees)
// together with the records' content (meta->content), marks the cache
// complete and commits.
int cache_store_counts(Cache *c, CacheMeta *meta);

// --- what a finished run wrote ---------------------------------------------------
// The content of a cache: its records' count, keys and a sha256 over each
// record's key and crc32 (so any record lost, added, re-keyed or swapped
// changes it), built from the records in key order.
typedef struct {
    void *hash;
    long n;
    char keys[400];          // "0-11,13-23", "0-297/3" (every 3rd): "" when too many runs to list
    int keys_full;
    uint64_t run_first, run_last, run_step;
    long run_len;
} CacheContent;
int cache_content_begin(CacheContent *cc);
void cache_content_add(CacheContent *cc, uint64_t key, const void *val, size_t len);
// "<n> records, keys <ranges>, sha256:<hex>" (keys left out when too long).
int cache_content_end(CacheContent *cc, char *out, size_t size);
// Compares the content found (`have`, from cache_content_end over the records
// whose keys are keys[0..n-1], ascending) with what the run recorded in
// meta->content. 0 when equal or nothing was recorded (a run that did not
// finish); else -1 with err_set naming the keys missing or unexpected (when
// the run listed its keys) and telling to re-extract.
// The content digest of a finished cache ("sha256:<hex>" of its records,
// from meta->content), or "" when none was recorded: what identifies its
// records whatever folder it is in.
const char *cache_content_id(const CacheMeta *meta);
int cache_content_check(const char *path, const CacheMeta *meta, const char *have, const uint64_t *keys, long n);
// The records the run recorded, or -1 when it did not.
long cache_content_count(const CacheMeta *meta);
// 0 when path (relative to the image folder, "CLASS/...") lies in the folder
// of class `label`, as every record's does; -1 otherwise.
int cache_class_of_path(const CacheMeta *meta, int label, const char *path);

// --- checking a whole cache ------------------------------------------------------
// extract --verify: checks every page (lmdb_check.h), the settings' checksum,
// every record (lengths, crc32, zstd frame and checksum, label, feature
// count) and the content against what the run recorded, without letting
// LMDB read anything before its pages were checked. Calls report for each
// problem (a sentence naming the page, record key and path, or setting).
// Returns the number of problems (0: sound), or -1 when the cache cannot
// be read at all (err_set); *records receives the records found.
typedef void (*CacheReportFn)(void *ctx, const char *msg);
long cache_verify(const char *path, CacheReportFn report, void *ctx, long *records);
