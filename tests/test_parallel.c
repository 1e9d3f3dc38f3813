// parallel_cpus: the CPUs a job was given (affinity mask, Slurm's allotment).
#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT
#include <criterion/criterion.h>
#include <sched.h>
#include <stdlib.h>

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
