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
    long removed;        // records deleted: files gone, damaged or duplicate records
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
