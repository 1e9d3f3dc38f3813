// Cached features for training: every record of a cache, decompressed in
// parallel and kept in memory in the cache's dtype (f16 halves the memory),
// or, when that would exceed a memory budget, read from LMDB batch by batch
// (the file is memory-mapped, so the OS caches what fits).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

typedef struct {
    int n;                 // records
    int D;                 // floats per record
    int32_t *labels;       // n
    char **paths;          // n, relative to the image folder
    uint64_t *keys;        // n, cache keys
    FeatDtype dtype;
    void *data;            // n*D halves or floats when in memory; NULL when streaming
    Cache cache;           // open while streaming
    void **dctx;           // one zstd context per thread (streaming)
    int threads;
} FeatureSet;

// Reads every record of the cache at path (settings into meta). Keeps them in
// memory when n*D*itemsize <= budget_bytes, else streams. Damaged records are
// an error naming key and path.
int features_load(FeatureSet *fs, const char *path, size_t budget_bytes, int threads, CacheMeta *meta);
void features_free(FeatureSet *fs);
// rows[i] -> out[i*D .. ] as float32.
int features_gather(FeatureSet *fs, const int *rows, int n, float *out);
// A new set holding the given rows of fs (in memory only); for validation_split.
int features_subset(const FeatureSet *fs, const int *rows, int n, FeatureSet *out);
// Keras's validation_split on the records of a cache. Keras splits the file
// list before reading any file: the first int(F * n_c) of the n_c files that
// class c lists go to val, whether or not they turn out to be readable. With
// class_files (CacheMeta's: the files each class lists, skipped ones
// included) a record goes to val when its file's position in its class
// (its key, a folder index, minus the files of the classes before) is below
// int(F * class_files[c]): the same files as Keras's split. Without it
// (older caches) the first int(F * n_c) of the class's n_c records.
// K: number of classes. fs must be in memory; it is left as it was.
int features_split(const FeatureSet *fs, int K, const long *class_files, double validation_split, FeatureSet *train,
                   FeatureSet *val);
