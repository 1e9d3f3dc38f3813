#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT_S
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

// The CPUs in this process's affinity mask (sysconf when it cannot be read).
static int affinity_cpus(void) {
    // Masks of more than 1024 CPUs need a larger set: grow until it fits.
    for (int n = 1024; n <= (1 << 16); n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (!set) break;
        size_t size = CPU_ALLOC_SIZE(n);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count > 0 ? count : 1;
        }
        CPU_FREE(set);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int parallel_cpus(void) {
    int cpus = affinity_cpus();
    // A Slurm cluster that does not bind tasks to CPUs (no task/affinity or
    // task/cgroup plugin) leaves the mask at the whole node while the job
    // was given --cpus-per-task: the allotment is then SLURM_CPUS_PER_TASK.
    const char *e = getenv("SLURM_CPUS_PER_TASK");
    char *end;
    long slurm = e ? strtol(e, &end, 10) : 0;
    if (e && *e && *end == '\0' && slurm > 0 && slurm < cpus) cpus = (int)slurm;
    return cpus;
}

// One pool per process: created on first use, resized by parallel_set_threads.
static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t *threads;
    int n_threads;          // workers besides the calling thread
    int wanted;             // parallel_set_threads value
    void (*fn)(void *, int);
    void *ctx;
    int n_tasks, next, finished;
    long generation;
    int quit;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 1};

// Claims and runs tasks until none are left; called with the lock held.
static void run_tasks(void) {
    while (pool.next < pool.n_tasks) {
        int t = pool.next++;
        pthread_mutex_unlock(&pool.mu);
        pool.fn(pool.ctx, t);
        pthread_mutex_lock(&pool.mu);
        if (++pool.finished == pool.n_tasks) pthread_cond_broadcast(&pool.done);
    }
}

static void *worker(void *arg) {
    long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.quit && pool.generation == seen) pthread_cond_wait(&pool.work, &pool.mu);
        if (pool.quit) break;
        seen = pool.generation;
        run_tasks();
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.n_threads; i++) pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.n_threads = 0;
    pool.quit = 0;
}

// A forked child has none of the parent's threads: start afresh.
static void after_fork_in_child(void) {
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.threads = NULL;
    pool.n_threads = 0;
}

void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

void parallel_set_threads(int n) {
    pool.wanted = n < 1 ? 1 : n;
}

int parallel_threads(void) { return pool.wanted; }

void parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx) {
    if (n_tasks <= 0) return;
    int workers = (pool.wanted < n_tasks ? pool.wanted : n_tasks) - 1;
    if (workers <= 0) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    if (pool.n_threads != pool.wanted - 1) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        void register_atfork(void);
        pthread_once(&once, register_atfork);
        if (pool.n_threads) stop_workers();
        pool.threads = calloc((size_t)pool.wanted, sizeof(pthread_t));
        for (int i = 0; pool.threads && i < pool.wanted - 1; i++)
            if (pthread_create(&pool.threads[i], NULL, worker, NULL) == 0) pool.n_threads++;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn, pool.ctx = ctx;
    pool.n_tasks = n_tasks, pool.next = 0, pool.finished = 0;
    pool.generation++;
    pthread_cond_broadcast(&pool.work);
    run_tasks();  // the caller works too
    while (pool.finished < pool.n_tasks) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}
