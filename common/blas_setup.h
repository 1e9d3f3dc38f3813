// OpenBLAS kernel selection.
//
// Debian 12's OpenBLAS 0.3.21 picks its sgemm kernel from the CPU id when the
// library loads and does not know recent Intel models: on AVX-512 machines it
// falls back to "Prescott" (SSE3) and runs ~5x slower. OPENBLAS_CORETYPE fixes
// that, but only if set before the library initialises, so blas_setup()
// re-executes the program once with it set. A user's own OPENBLAS_CORETYPE
// is never overridden.
#pragma once

// Call first thing in main(). May not return (re-exec). threads <= 0: the
// CPUs this process may run on (parallel_cpus(): the affinity mask that
// taskset or Slurm set, not the node's cores).
void blas_setup(char **argv, int threads);
// Under an address-space limit (ulimit -v) OpenBLAS 0.3.21 hangs when it
// cannot have its 128 MiB buffer per thread (blas_setup.c): blas_setup
// restarts the program with fewer OpenBLAS threads when it must, and a tool
// whose threads call BLAS (train, finetune) calls blas_fit_threads with its
// thread count, after blas_set_threads: it lowers *threads (with a warning)
// to what the limit leaves room for, or returns -1 (err_set: the limit, and
// the limit that would do) when not even one thread fits. 0 without a limit.
int blas_fit_threads(int *threads);
// Sets the number of BLAS threads (<= 0: parallel_cpus()).
void blas_set_threads(int threads);
// "OpenBLAS 0.3.21, kernel SkylakeX (set by vggft: library chose Prescott), 2 threads"
const char *blas_describe(void);
// The kernel OpenBLAS would pick for this CPU's features ("SkylakeX",
// "Haswell") if it is not already using an equal or better one, else NULL.
// Exposed for tests.
const char *blas_better_coretype(const char *current, int has_avx512, int has_avx2);
