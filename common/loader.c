#include "loader.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "error.h"
#include "progress.h"

typedef enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_TAKEN } SlotState;

struct Loader {
    long n_items;
    int capacity, n_threads;
    size_t slot_floats, extra_bytes;
    LoadFn fn;
    void *ctx;
    LoaderItem *items;      // capacity slots; slot of index i is i % capacity
    SlotState *state;
    long *slot_index;       // which index a slot holds / is reserved for
    long next_claim;        // next index a worker takes
    long next_deliver;      // next index the consumer gets
    int stopping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
};

static void *worker(void *arg) {
    Loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        // An index may be claimed once its slot is free, i.e. the consumer
        // released index - capacity: at most `capacity` items in flight.
        while (!l->stopping && l->next_claim < l->n_items && l->state[l->next_claim % l->capacity] != SLOT_FREE)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stopping || l->next_claim >= l->n_items) break;
        long i = l->next_claim++;
        int s = (int)(i % l->capacity);
        l->state[s] = SLOT_BUSY;
        l->slot_index[s] = i;
        pthread_mutex_unlock(&l->mu);

        LoaderItem *it = &l->items[s];
        it->index = i;
        err_clear();
        // Test hooks: VGGFT_TEST_LOADER_OOM=N fails item N as out of
        // memory, VGGFT_TEST_LOADER_EMFILE=N as out of file descriptors.
        const char *oom = getenv("VGGFT_TEST_LOADER_OOM"), *emfile = getenv("VGGFT_TEST_LOADER_EMFILE");
        if (oom && atol(oom) == i) it->ok = err_set("item %ld: out of memory (VGGFT_TEST_LOADER_OOM)", i) == 0;
        else if (emfile && atol(emfile) == i)
            it->ok = err_set("item %ld: cannot open: %s (VGGFT_TEST_LOADER_EMFILE)", i, strerror(EMFILE)) == 0;
        else it->ok = l->fn(l->ctx, i, it->data, it->extra) == 0;
        if (!it->ok) snprintf(it->msg, sizeof it->msg, "%s", err_msg());
        else it->msg[0] = '\0';
        it->system_error = !it->ok && err_is_system(it->msg);

        pthread_mutex_lock(&l->mu);
        l->state[s] = SLOT_READY;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

Loader *loader_start(long n_items, int n_threads, int capacity, size_t slot_floats, size_t extra_bytes, LoadFn fn,
                     void *ctx) {
    if (n_threads < 1) n_threads = 1;
    if (capacity < 1) capacity = 1;
    Loader *l = calloc(1, sizeof *l);
    if (!l) return err_set("out of memory"), NULL;
    l->n_items = n_items, l->capacity = capacity, l->n_threads = n_threads;
    l->slot_floats = slot_floats, l->extra_bytes = extra_bytes;
    l->fn = fn, l->ctx = ctx;
    l->items = calloc((size_t)capacity, sizeof(LoaderItem));
    l->state = calloc((size_t)capacity, sizeof(SlotState));
    l->slot_index = calloc((size_t)capacity, sizeof(long));
    l->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!l->items || !l->state || !l->slot_index || !l->threads) goto oom;
    for (int s = 0; s < capacity; s++) {
        l->items[s].data = malloc((slot_floats ? slot_floats : 1) * sizeof(float));
        l->items[s].extra = calloc(1, extra_bytes ? extra_bytes : 1);
        if (!l->items[s].data || !l->items[s].extra) goto oom;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    // A shared node can be out of threads for a moment (ulimit -u, the
    // job's pids limit: EAGAIN): each thread is retried for up to 10 s, then
    // the loader goes on with those that started (the same items in the same
    // order, only slower, with a warning); none at all is an error.
    // Test hook: threads past VGGFT_TEST_LOADER_THREADS fail with EAGAIN at once.
    const char *hook = getenv("VGGFT_TEST_LOADER_THREADS");
    int rc = 0, started = 0;
    for (int t = 0; t < n_threads && !rc; t++) {
        for (int tries = 0;; tries++) {
            rc = hook && t >= atoi(hook) ? EAGAIN : pthread_create(&l->threads[t], NULL, worker, l);
            if (rc != EAGAIN || hook || tries == 50) break;
            usleep(200 * 1000);
        }
        if (!rc) started++;
    }
    l->n_threads = started;
    // EAGAIN is also what a thread's stack gets under an address-space
    // limit (ulimit -v; each stack takes ulimit -s of it).
    struct rlimit as;
    const char *which = started == n_threads ? NULL
                        : getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY
                            ? "the limit on processes and threads, ulimit -u, or the address space for their "
                              "stacks, ulimit -v and -s, is reached"
                            : "the limit on processes and threads, ulimit -u, is reached";
    if (started == 0) {
        loader_stop(l);
        return err_set("cannot start an image loader thread: %s (%s: fewer --threads, or fewer jobs on this node)",
                       strerror(rc), which),
               NULL;
    }
    if (started < n_threads)
        log_printf(stderr, "warning: %d of %d image loader threads started (%s: %s); going on with %d\n", started,
                   n_threads, strerror(rc), which, started);
    return l;
oom:
    if (l->items)
        for (int s = 0; s < capacity; s++) free(l->items[s].data), free(l->items[s].extra);
    free(l->items), free(l->state), free(l->slot_index), free(l->threads), free(l);
    return err_set("out of memory for %d loader slots of %zu floats", capacity, slot_floats), NULL;
}

LoaderItem *loader_next(Loader *l) {
    pthread_mutex_lock(&l->mu);
    if (l->next_deliver >= l->n_items) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    int s = (int)(l->next_deliver % l->capacity);
    while (!(l->state[s] == SLOT_READY && l->slot_index[s] == l->next_deliver)) pthread_cond_wait(&l->cv, &l->mu);
    l->state[s] = SLOT_TAKEN;
    l->next_deliver++;
    pthread_mutex_unlock(&l->mu);
    return &l->items[s];
}

void loader_release(Loader *l, LoaderItem *item) {
    pthread_mutex_lock(&l->mu);
    l->state[item - l->items] = SLOT_FREE;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void loader_stop(Loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->n_threads; t++) pthread_join(l->threads[t], NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int s = 0; s < l->capacity; s++) free(l->items[s].data), free(l->items[s].extra);
    free(l->items), free(l->state), free(l->slot_index), free(l->threads), free(l);
}
