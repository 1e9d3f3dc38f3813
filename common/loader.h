// Parallel, bounded, in-order item loading: worker threads run load_fn on
// items 0..n-1 (decode, resize, preprocess, augment...) into a ring of
// `capacity` slots while the caller consumes them in index order. Memory is
// capacity * slot size whatever n; results do not depend on thread count.
#pragma once
#include <stddef.h>

#include "error.h"

// Fills out (slot_floats floats) and extra (extra_bytes) for item index;
// returns 0, or -1 with err_set() to report the item as failed (the caller
// sees the message; the loader carries on with the next items).
typedef int (*LoadFn)(void *ctx, long index, float *out, void *extra);

typedef struct {
    long index;
    int ok;                   // 1 loaded, 0 failed (message in msg)
    int system_error;         // failed for the system's sake (err_is_system: memory, file
                              // descriptors, I/O), not the file's: the caller stops rather
                              // than skip it (a rerun reads it)
    char msg[ERR_MSG_MAX];
    float *data;
    void *extra;
} LoaderItem;

typedef struct Loader Loader;

// Starts n_threads workers (>= 1). A thread the system refuses for want of
// room (EAGAIN: ulimit -u, a pids limit) is retried for up to 10 s; then
// the loader runs with the threads that started (a warning on stderr).
// Returns NULL with err_set when none started (the reason and the limit
// named) or memory ran out.
Loader *loader_start(long n_items, int n_threads, int capacity, size_t slot_floats, size_t extra_bytes, LoadFn fn,
                     void *ctx);
// Blocks until the next item (in index order) is done; returns NULL after the
// last one. The item stays valid until loader_release.
LoaderItem *loader_next(Loader *l);
void loader_release(Loader *l, LoaderItem *item);
// Stops the workers (also mid-way) and frees everything.
void loader_stop(Loader *l);
