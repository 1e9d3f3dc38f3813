// parallel_cpus: the CPUs a job was given (affinity mask, Slurm's allotment);
// the image loader when the system refuses some of its threads.
#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT
#include <criterion/criterion.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"

#include "parallel.h"

static int mask_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

Test(parallel, cpus_follow_the_affinity_mask_and_slurm) {
    unsetenv("SLURM_CPUS_PER_TASK");
    int all = mask_cpus();
    cr_expect_eq(parallel_cpus(), all);
    // A Slurm without CPU binding: the job's allotment is the smaller figure.
    setenv("SLURM_CPUS_PER_TASK", "1", 1);
    cr_expect_eq(parallel_cpus(), 1);
    // Never more than the mask, and nonsense is ignored.
    setenv("SLURM_CPUS_PER_TASK", "100000", 1);
    cr_expect_eq(parallel_cpus(), all);
    setenv("SLURM_CPUS_PER_TASK", "2x", 1);
    cr_expect_eq(parallel_cpus(), all);
    setenv("SLURM_CPUS_PER_TASK", "0", 1);
    cr_expect_eq(parallel_cpus(), all);
    unsetenv("SLURM_CPUS_PER_TASK");
}

static int load_square(void *ctx, long index, float *out, void *extra) {
    (void)ctx, (void)extra;
    out[0] = (float)(index * index);
    return 0;
}

// A node out of threads for a moment (EAGAIN; the test hook refuses every
// thread past the second at once): the loader goes on with two, every item
// in order; with none it fails naming the reason and the limit.
Test(parallel, loader_goes_on_with_the_threads_it_could_start) {
    setenv("VGGFT_TEST_LOADER_THREADS", "2", 1);
    Loader *l = loader_start(100, 6, 8, 1, 0, load_square, NULL);
    cr_assert(l, "%s", err_msg());
    long n = 0;
    for (LoaderItem *it; (it = loader_next(l)); n++) {
        cr_expect(it->ok && it->index == n && it->data[0] == (float)(n * n), "item %ld", n);
        loader_release(l, it);
    }
    cr_expect_eq(n, 100);
    loader_stop(l);
    setenv("VGGFT_TEST_LOADER_THREADS", "0", 1);
    cr_expect_null(loader_start(100, 6, 8, 1, 0, load_square, NULL));
    cr_expect(strstr(err_msg(), "Resource temporarily unavailable") && strstr(err_msg(), "ulimit -u"), "%s",
              err_msg());
    unsetenv("VGGFT_TEST_LOADER_THREADS");
}
