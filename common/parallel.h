// A small persistent thread pool for loops whose iterations are independent
// tasks. The caller fixes the tasks (e.g. 64-column blocks of a matrix
// product), the pool only decides which thread runs which: results are then
// the same on any number of threads, which is what makes training
// bit-reproducible across --threads (OpenBLAS's own threading is not: it
// splits sums differently for different thread counts).
#pragma once

// The CPUs this process may run on: its affinity mask (sched_getaffinity,
// CPU_COUNT), which is what taskset, Slurm's --cpus-per-task and cgroup
// cpusets restrict, not the node's cores (sysconf only when the mask cannot
// be read); SLURM_CPUS_PER_TASK when it is set and smaller (a Slurm that
// does not bind CPUs leaves the mask at the whole node). >= 1. The default
// of every tool's --threads.
int parallel_cpus(void);

// Threads used by parallel_for (>= 1; default 1). Safe to call between loops.
void parallel_set_threads(int n);
int parallel_threads(void);
// Runs fn(ctx, t) for t in [0, n_tasks) on the pool and waits for all.
// Not reentrant: fn must not call parallel_for; and one caller thread at a
// time (extract's record encoder runs on a thread of its own while the main
// thread calls none).
void parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx);
