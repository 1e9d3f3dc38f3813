// The feature cache: one LMDB environment (a folder holding data.mdb and
// lock.mdb, readable by mdb_stat and friends) per extract run.
//
//   database "meta"      setting name -> text (model, weights, sizes, classes...)
//   database "features"  %010d key -> one record per image:
//       magic "VGF1" | label i32 | dtype u8 + 3 pad | n_features u32
//       | sha256 of the image file [32] | path_len u16 | path (relative to DIR)
//       | zlen u32 | zstd frame of the features (H,W,C; f16 or f32; the frame
//       carries zstd's own content checksum) | crc32 of all bytes before it
// Little-endian throughout. Keys are the image's index in the folder's
// flow_from_directory order, so shards of one folder merge into exactly the
// records a single run writes.
#pragma once
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
    int complete;            // 1 once a run finished (set with the counts); 0 while one runs
    long *class_counts;      // records per class (n_classes), written at the end of a run
    char version[32];
    char command[2048];
} CacheMeta;

void cache_meta_free(CacheMeta *m);
const char *feat_dtype_name(FeatDtype d);
// First setting where a and b differ ("input size: cache has 150x150, this run
// 224x224"), written to buf; returns 0 if they agree.
int cache_meta_diff(const CacheMeta *have, const CacheMeta *want, char *buf, size_t size);

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
    char path[1024];
    size_t map_size;
    // Puts of the open transaction, kept to replay after growing the map.
    struct PendingPut *pending;
    int n_pending, cap_pending;
    int batch;               // puts per transaction
    void *zctx, *dctx;       // zstd contexts
    uint8_t *buf;            // encode/decode scratch
    size_t buf_cap;
    int level;               // zstd level
} Cache;

// Opens PATH for writing. A new cache gets `want`'s settings. An existing
// one must have the same settings (else an error naming the first
// difference and suggesting --overwrite), unless overwrite is set, which
// empties it first.
int cache_open_write(Cache *c, const char *path, const CacheMeta *want, int overwrite);
// Opens an existing cache read-only and reads its settings.
int cache_open_read(Cache *c, const char *path, CacheMeta *meta);
void cache_close(Cache *c);
int cache_read_meta(Cache *c, CacheMeta *meta);
int cache_write_meta(Cache *c, const CacheMeta *meta);

// Encodes and stores a record under key (replacing one there). Commits every
// c->batch puts; grows the map (doubling, as Caffe does) when LMDB says it
// is full.
int cache_put(Cache *c, uint64_t key, const CacheRecord *r, int n_features, FeatDtype dtype);
int cache_del(Cache *c, uint64_t key);
// Commits the open transaction (no-op when none).
int cache_commit(Cache *c);

// Record encoding, exposed for reading without an open Cache and for tests.
// Encodes into *buf (grown as needed); returns the length or -1.
long cache_record_encode(Cache *c, const CacheRecord *r, int n_features, FeatDtype dtype);
// Decodes a stored value. features: n_features floats (may be NULL, with
// n_features -1, to read only the header); path is returned pointing into val (not terminated: use
// *path_len). Checks magic, sizes, the crc32 and zstd's checksum; errors name
// the key and (when readable) the path.
int cache_record_decode(void *zstd_dctx, uint64_t key, const void *val, size_t len, int n_features,
                        int32_t *label, const char **path, int *path_len, uint8_t sha256[32], float *features);

// Iterates over all records in key order: calls fn for each raw value (no
// decoding). Stops and returns fn's value when it is non-zero. Records left
// half-moved by an interrupted resume (see cache_move) are not visited.
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
} CacheKey;
typedef int (*CacheKeyVisitFn)(void *ctx, const CacheKey *key, const void *val, size_t len);
// Like cache_visit, moving records included.
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
// (meta->class_counts is replaced by a malloc'd array the caller frees),
// marks the cache complete and commits.
int cache_store_counts(Cache *c, CacheMeta *meta);
