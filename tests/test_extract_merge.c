// extract --merge as the other commands: its OUT refused inside the image
// folder the shards were made from (it would become a class folder), the
// stop-signal protocol (a clean stop, nothing half-written, exit 75), and
// options that do not go with --merge, --info or --verify as usage errors
// (exit 2) found before any work.
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "error.h"
#include "stop.h"
#include "testutil.h"

#define EXTRACT_ARGS "--weights random --input-size 32 --layer block1_pool --batch 2 --threads 1 --quiet"

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return run_tool_timeout("extract", args, 120, out);
}

// TOP/data (n images per class) and its two shard caches TOP/s0, TOP/s1.
static char *make_shards(const char *tag, int n) {
    char *top = make_shape_folder(tag, n, 7);
    for (int i = 0; i < 2; i++) {
        char *out;
        int rc = run(&out, "--data '%s/data' --cache '%s/s%d' --shard %d/2 " EXTRACT_ARGS, top, top, i, i);
        cr_assert_eq(rc, 0, "shard %d: %s", i, out);
        free(out);
    }
    return top;
}

// Entries of folder dir whose name starts with prefix (a merge's leftovers).
static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static long records_of(const char *cache, char *content, size_t size) {
    Cache c;
    CacheMeta m;
    cr_assert_eq(cache_open_read(&c, cache, &m), 0, "%s", err_msg());
    long n = cache_count(&c);
    cr_expect(m.complete, "%s is not marked complete", cache);
    snprintf(content, size, "%s", m.content);
    cache_meta_free(&m);
    cache_close(&c);
    return n;
}

// The tester's case: OUT = DATA/merged. A merged cache inside the image
// folder would be read as a class folder by every later run (and Keras), as
// --cache inside --data would: refused, by whatever path it is named,
// nothing written there.
Test(extract_merge, out_inside_the_shards_image_folder_is_refused) {
    char *top = make_shards("merge_inside", 3);
    char link[1100];
    snprintf(link, sizeof link, "%s/link", top);
    char target[1100];
    snprintf(target, sizeof target, "%s/data", top);
    cr_assert_eq(symlink(target, link), 0);
    const char *outs[] = {"data/merged", "data/circles/merged", "link/merged", "data/../data/m"};
    for (int i = 0; i < 4; i++) {
        char *out;
        int rc = run(&out, "--merge '%s/%s' '%s/s0' '%s/s1'", top, outs[i], top, top);
        cr_expect_eq(rc, 1, "--merge %s: exit %d: %s", outs[i], rc, out);
        cr_expect(strstr(out, "lies inside the image folder") && strstr(out, "s0 was made from"),
                  "--merge %s: %s", outs[i], out);
        free(out);
    }
    cr_expect_eq(count_entries(target, "m"), 0, "a refused merge left something in %s", target);
    cr_expect_eq(count_entries(target, "circles"), 1);
    // The folder is still what it was: a run over it works.
    char *out;
    int rc = run(&out, "--data '%s/data' --cache '%s/c2' " EXTRACT_ARGS, top, top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    // Beside it: merged.
    rc = run(&out, "--merge '%s/merged' '%s/s0' '%s/s1'", top, top, top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// The breaker's case: `--merge s0 s0 s1 --overwrite` replaced shard s0
// with the merge (the shard set was then lost). OUT that is an input, by
// any spelling, or lies inside one, is refused with or without
// --overwrite, and the shards stay as they were.
Test(extract_merge, out_that_is_an_input_is_refused) {
    char *top = make_shards("merge_self", 3);
    char content[2][200], c2[200], path[1100];
    long n[2];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/s%d", top, i);
        n[i] = records_of(path, content[i], sizeof content[i]);
    }
    const char *outs[] = {"s0", "s1/", "./s0/../s0", "s0/sub"};
    for (int i = 0; i < 4; i++)
        for (int ow = 0; ow < 2; ow++) {
            char *out;
            int rc = run(&out, "--merge '%s/%s' '%s/s0' '%s/s1'%s", top, outs[i], top, top, ow ? " --overwrite" : "");
            cr_expect_eq(rc, 1, "--merge %s: exit %d: %s", outs[i], rc, out);
            cr_expect(strstr(out, "the input cache") && strstr(out, "merge into a new folder"), "--merge %s: %s",
                      outs[i], out);
            free(out);
        }
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/s%d", top, i);
        cr_expect_eq(records_of(path, c2, sizeof c2), n[i], "%s changed", path);
        cr_expect_str_eq(c2, content[i]);
    }
    snprintf(path, sizeof path, "%s/s0/sub", top);
    cr_expect_neq(access(path, F_OK), 0, "a refused merge made %s", path);
    remove_tree(top);
    free(top);
}

// SIGTERM, SIGINT, SIGUSR1 and SIGHUP (real signals, sent by the merge to
// itself after N records were copied): exit 75 with the stop message,
// the partial output removed, OUT as it was (missing, or the old cache
// with --overwrite); the same command then completes.
Test(extract_merge, signals_stop_cleanly_with_exit_75) {
    char *top = make_shards("merge_stop", 4);  // 8 images: 4 records a shard
    char m[1100], fresh[1100], content[600], content2[600];
    snprintf(m, sizeof m, "%s/m", top);
    snprintf(fresh, sizeof fresh, "%s/fresh", top);
    char *out;
    int rc = run(&out, "--merge '%s' '%s/s0' '%s/s1'", m, top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    long n = records_of(m, content, sizeof content);
    cr_assert_eq(n, 8);
    const char *sig[] = {"TERM", "USR1", "HUP", "INT", "TERM"};
    const char *after[] = {"1", "4", "5", "7", "8"};
    for (int s = 0; s < 5; s++) {
        setenv("VGGFT_TEST_SIGNAL_AFTER", after[s], 1);
        setenv("VGGFT_TEST_SIGNAL", sig[s], 1);
        // Into the existing cache (--overwrite, as scripts/slurm/merge.sh), and into a new folder.
        for (int k = 0; k < 2; k++) {
            rc = run(&out, "--merge '%s' '%s/s0' '%s/s1'%s", k ? fresh : m, top, top, k ? "" : " --overwrite");
            cr_expect_eq(rc, EXIT_STOPPED, "SIG%s after %s records: exit %d: %s", sig[s], after[s], rc, out);
            char want[64];
            snprintf(want, sizeof want, "stopped by SIG%s", sig[s]);
            cr_expect(strstr(out, want) && strstr(out, "Rerun the same command"), "SIG%s: %s", sig[s], out);
            free(out);
        }
        unsetenv("VGGFT_TEST_SIGNAL_AFTER");
        unsetenv("VGGFT_TEST_SIGNAL");
        cr_expect_eq(count_entries(top, "m."), 0, "SIG%s: a stopped merge left its partial output", sig[s]);
        cr_expect_eq(count_entries(top, "fresh"), 0, "SIG%s: a stopped merge left its partial output", sig[s]);
        cr_expect_eq(records_of(m, content2, sizeof content2), 8, "SIG%s: the old merged cache changed", sig[s]);
        cr_expect_str_eq(content2, content, "SIG%s", sig[s]);
    }
    // Rerun: done.
    rc = run(&out, "--merge '%s' '%s/s0' '%s/s1'", fresh, top, top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    cr_expect_eq(records_of(fresh, content2, sizeof content2), 8);
    cr_expect_str_eq(content2, content);
    remove_tree(top);
    free(top);
}

// Options that do not go with --merge, --info or --verify (or two of those
// commands at once): usage errors (exit 2) naming the option, found before
// any work (inputs that do not exist are not even looked at), nothing
// written.
Test(extract_merge, options_that_do_not_apply_are_usage_errors) {
    char *top = make_shards("merge_usage", 2);
    typedef struct {
        const char *args;  // %1$s: TOP
        const char *message;
    } Case;
    const Case cases[] = {
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --cache '%1$s/x'", "--cache does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/nope0' '%1$s/nope1' --cache '%1$s/x'", "--cache does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --data '%1$s/data'", "--data does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --shard 0/2", "--shard does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --weights random", "--weights does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --layer block1_pool", "--layer does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --strict", "--strict does not go with --merge"},
        {"--merge '%1$s/m' '%1$s/s0' '%1$s/s1' --info '%1$s/s0'", "--merge and --info"},
        {"--summary --merge '%1$s/m' '%1$s/s0' '%1$s/s1'", "--merge and --summary"},
        {"--merge '%1$s/m'", "--merge OUT IN...: no input caches given"},
        {"--info '%1$s/s0' --cache '%1$s/x'", "--cache does not go with --info"},
        {"--info '%1$s/s0' --overwrite", "--overwrite does not go with --info"},
        {"--info '%1$s/s0' '%1$s/s1'", "unexpected argument"},
        {"--verify '%1$s/s0' --data '%1$s/data'", "--data does not go with --verify"},
        {"--verify '%1$s/s0' '%1$s/s1'", "unexpected argument"},
        {"--verify '%1$s/s0' --info '%1$s/s1'", "--info and --verify"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[4096], *out;
        snprintf(args, sizeof args, cases[i].args, top);
        int rc = run(&out, "%s", args);
        cr_expect_eq(rc, 2, "extract %s: exit %d, want 2: %s", args, rc, out);
        cr_expect(strstr(out, cases[i].message) != NULL, "extract %s: want '%s' in: %s", args, cases[i].message, out);
        free(out);
    }
    cr_expect_eq(count_entries(top, "m"), 0, "a refused merge wrote something");
    cr_expect_eq(count_entries(top, "x"), 0);
    // What does go with them: --overwrite, --quiet and --threads with --merge, --threads and --quiet with --info.
    char *out;
    int rc = run(&out, "--merge '%s/m' '%s/s0' '%s/s1' --overwrite --quiet --threads 1", top, top, top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    rc = run(&out, "--info '%s/m' --threads 1 --quiet", top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    rc = run(&out, "--verify '%s/m' --threads 1", top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}
