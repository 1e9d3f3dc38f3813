// OpenBLAS kernel selection.
//
// Debian 12's OpenBLAS 0.3.21 picks its sgemm kernel from the CPU id when the
// library loads and does not know recent Intel models: on AVX-512 machines it
// falls back to "Prescott" (SSE3) and runs ~5x slower. OPENBLAS_CORETYPE fixes
// that, but only if set before the library initialises, so blas_setup()
// re-executes the program once with it set. A user's own OPENBLAS_CORETYPE
// is never overridden. Under an address-space limit (ulimit -v) every
// program that links blas_setup.o also restarts before main (blas_preinit:
// OpenBLAS's threads and glibc's malloc arenas, blas_setup.c), and
// blas_setup may restart once more to cap OpenBLAS's threads; the user's
// OPENBLAS_NUM_THREADS and MALLOC_ARENA_MAX are theirs again afterwards.
#pragma once
#include <stddef.h>

// Whether a tool calls BLAS: train and finetune do (dense and conv
// backward passes); extract and predict do not by default (Winograd and our
// own products; VGGFT_WINOGRAD=0 would), so under an address-space limit
// they take no OpenBLAS buffer at all and leave the room to their own work.
typedef enum { BLAS_NEEDED = 0, BLAS_UNUSED = 1 } BlasUse;
// Call first thing in main(). May not return (re-exec). threads <= 0: the
// CPUs this process may run on (parallel_cpus(): the affinity mask that
// taskset or Slurm set, not the node's cores).
void blas_setup(char **argv, int threads, BlasUse use);
// Under an address-space limit (ulimit -v) OpenBLAS 0.3.21 hangs when it
// cannot have its 128 MiB buffer per thread (blas_setup.c explains what
// blas_setup does about it). Then BLAS may be called from the main thread
// only (blas_main_thread_only() is 1: callers that would spread calls over
// the pool run them one after the other, with the same bits), and only when
// blas_usable() (its buffer could be taken at start; always 1 without a
// limit). blas_check_usable: 0, or -1 with err_set naming the limit and
// one that would do, for tools that cannot do without BLAS (train, finetune).
int blas_main_thread_only(void);
int blas_usable(void);
int blas_check_usable(void);
// " (under an address-space limit, ulimit -v KIB = N MiB: raise it, or lower
// --threads)" into buf and 1 when the process has such a limit, else 0:
// for messages about memory or threads that could not be had.
int address_limit_note(char *buf, size_t size);
// Sets the number of BLAS threads (<= 0: parallel_cpus()).
void blas_set_threads(int threads);
// "OpenBLAS 0.3.21, kernel SkylakeX (set by vggft: library chose Prescott), 2 threads"
const char *blas_describe(void);
// The kernel OpenBLAS would pick for this CPU's features ("SkylakeX",
// "Haswell") if it is not already using an equal or better one, else NULL.
// Exposed for tests.
const char *blas_better_coretype(const char *current, int has_avx512, int has_avx2);
