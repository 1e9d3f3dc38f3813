// Resuming an extract run: what the cache already holds, brought in line
// with the folder as it is now.
#pragma once
#include <stdint.h>

#include "cache.h"
#include "dataset.h"

typedef struct {
    char *path;          // relative to the image folder
    uint64_t key;        // = the file's index in the folder now
    uint8_t sha256[32];  // of the file's bytes when it was extracted
} CachedEntry;

typedef struct {
    CachedEntry *e;      // sorted by path
    long n;
    long removed;        // records deleted: files gone or duplicate records
    long damaged;        // records deleted because damaged (their images are extracted again)
    long moved;          // records moved to their file's new index
} CachedSet;

// Keys are the files' indices in flow_from_directory order, so a folder that
// changed (files added, removed, renamed) shifts them. Before extracting,
// every record of a file still in this shard (items: its folder indices)
// moves to the file's current index; records of files gone, damaged ones and
// duplicates left by an interrupted move are deleted. Moves go through
// temporary keys (cache_move), so a crash at any point loses nothing.
// Returns 0 with the kept records in *out.
int resume_plan(Cache *c, const Dataset *ds, const long *items, long n_items, CachedSet *out);
CachedEntry *find_cached(const CachedSet *s, const char *path);
void cached_set_free(CachedSet *s);

// cache_open_write_from's CacheMovedFn for extract (ctx: the Dataset of this
// run): is this run's folder the one the cache was made from, moved or
// mounted elsewhere? Yes when it has the same classes and most of a sample
// of the cache's records (up to 64, spread over the cache) have a file at
// the same relative path with the same bytes (sha256) in this folder: then
// the cache is reused (a note says so). Otherwise refused, naming both
// folders, how many sampled files matched, and --overwrite.
int resume_folder_moved(void *ctx, Cache *c, const CacheMeta *have, const CacheMeta *want);
