// A small persistent thread pool for loops whose iterations are independent
// tasks. The caller fixes the tasks (e.g. 64-column blocks of a matrix
// product), the pool only decides which thread runs which: results are then
// the same on any number of threads, which is what makes training
// bit-reproducible across --threads (OpenBLAS's own threading is not: it
// splits sums differently for different thread counts).
#pragma once

// Threads used by parallel_for (>= 1; default 1). Safe to call between loops.
void parallel_set_threads(int n);
int parallel_threads(void);
// Runs fn(ctx, t) for t in [0, n_tasks) on the pool and waits for all.
// Not reentrant: fn must not call parallel_for.
void parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx);
