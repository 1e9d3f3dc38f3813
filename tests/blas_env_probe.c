// For tests/test_cluster.c (blas_setup_gives_children_the_users_environment):
// a program that starts as the tools start (cli_process_setup, blas_setup)
// and prints the variables blas_preinit and blas_setup set on the way, as
// its children would see them. An argument: BLAS_UNUSED (as extract).
#include <stdio.h>
#include <stdlib.h>

#include "blas_setup.h"
#include "cli.h"

int main(int argc, char **argv) {
    cli_process_setup();
    blas_setup(argv, 0, argc > 1 ? BLAS_UNUSED : BLAS_NEEDED);
    const char *names[] = {"OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX", "VGGFT_PREINIT", "VGGFT_BLAS_ROOM",
                           "VGGFT_BLAS_REEXEC"};
    for (int i = 0; i < 5; i++) printf("%s=%s\n", names[i], getenv(names[i]) ? getenv(names[i]) : "(unset)");
    printf("%s\n", blas_describe());
    return 0;
}
