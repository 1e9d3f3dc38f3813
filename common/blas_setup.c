#include "blas_setup.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parallel.h"

// Provided by OpenBLAS but not declared in every cblas.h.
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

static char blas_note[160];  // why the kernel is what it is

const char *blas_better_coretype(const char *current, int has_avx512, int has_avx2) {
    // Kernels at least as good as what the CPU supports, lower-cased by OpenBLAS
    // in some versions, so compare case-insensitively.
    static const char *avx512_ok[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
    static const char *avx2_ok[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", NULL};
    const char **ok = has_avx512 ? avx512_ok : has_avx2 ? avx2_ok : NULL;
    if (!ok || !current) return NULL;
    for (int i = 0; ok[i]; i++)
        if (strcasecmp(current, ok[i]) == 0) return NULL;
    return has_avx512 ? "SkylakeX" : "Haswell";
}

void blas_setup(char **argv, int threads) {
    const char *marker = getenv("VGGFT_BLAS_REEXEC");
    if (marker) {
        // Second run: we set OPENBLAS_CORETYPE ourselves; remember why.
        snprintf(blas_note, sizeof blas_note, "set by vggft: the library chose %s for this CPU", marker);
        unsetenv("VGGFT_BLAS_REEXEC");
    } else if (getenv("OPENBLAS_CORETYPE")) {
        snprintf(blas_note, sizeof blas_note, "OPENBLAS_CORETYPE=%s from the environment", getenv("OPENBLAS_CORETYPE"));
    } else {
        __builtin_cpu_init();
        int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
        int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const char *current = openblas_get_corename();
        const char *want = blas_better_coretype(current, avx512, avx2);
        if (want && argv && argv[0]) {
            setenv("OPENBLAS_CORETYPE", want, 1);
            setenv("VGGFT_BLAS_REEXEC", current, 1);
            fflush(NULL);
            execv("/proc/self/exe", argv);
            // exec failed: carry on with the slow kernel, and say so.
            unsetenv("OPENBLAS_CORETYPE");
            unsetenv("VGGFT_BLAS_REEXEC");
            snprintf(blas_note, sizeof blas_note, "could not re-execute to select %s; slow kernel in use", want);
        }
    }
    blas_set_threads(threads);
}

void blas_set_threads(int threads) {
    // OpenBLAS starts one thread per core it counts; under a CPU allotment
    // (taskset, Slurm) that oversubscribes the CPUs the job was given.
    openblas_set_num_threads(threads > 0 ? threads : parallel_cpus());
}

const char *blas_describe(void) {
    static char buf[384];
    // openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64"
    char version[32] = "OpenBLAS";
    sscanf(openblas_get_config(), "%31s", version);
    char ver2[32] = "";
    sscanf(openblas_get_config(), "%*s %31s", ver2);
    snprintf(buf, sizeof buf, "%s %s, kernel %s%s%s%s, %d thread%s", version, ver2, openblas_get_corename(),
             blas_note[0] ? " (" : "", blas_note, blas_note[0] ? ")" : "", openblas_get_num_threads(),
             openblas_get_num_threads() == 1 ? "" : "s");
    return buf;
}
