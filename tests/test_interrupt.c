// Interrupted extract runs lose nothing: SIGTERM and SIGINT (what Slurm and
// Ctrl-C send) at several points store every image already taken, commit,
// leave the cache incomplete and exit 75; kill -9 loses at most the work
// since the last commit, which commits by time as well as by count; a rerun
// always ends with the records an uninterrupted run writes, byte for byte.
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "error.h"
#include "fileutil.h"
#include "stop.h"
#include "testutil.h"

#define N_PER_CLASS 18  // 36 images: a few dozen, as small as the signals need

// DIR/data/{circles,squares}/img NN.jpg; returns DIR (the caches go beside data).
static char *make_images(void) { return make_shape_folder("interrupt", N_PER_CLASS, 100); }

typedef struct {
    long n;
    uint64_t keys[64];
    size_t lens[64];
    uint8_t *raw[64];
} Raw;

static int collect_raw(void *ctx, uint64_t key, const void *val, size_t len) {
    Raw *r = ctx;
    cr_assert_lt(r->n, 64);
    r->keys[r->n] = key;
    r->lens[r->n] = len;
    r->raw[r->n] = malloc(len);
    memcpy(r->raw[r->n], val, len);
    r->n++;
    return 0;
}

static Raw read_raw(const char *cache, CacheMeta *meta) {
    Raw r = {0};
    Cache c;
    cr_assert_eq(cache_open_read(&c, cache, meta), 0, "%s", err_msg());
    cr_assert_eq(cache_visit(&c, collect_raw, &r), 0, "%s", err_msg());
    cache_close(&c);
    return r;
}

static void free_raw(Raw *r) {
    for (long i = 0; i < r->n; i++) free(r->raw[i]);
}

static void expect_same_records(const char *cache, const char *ref, const char *when) {
    CacheMeta m1, m2;
    Raw a = read_raw(cache, &m1), b = read_raw(ref, &m2);
    cr_expect_eq(a.n, b.n, "%s: %ld records, an uninterrupted run writes %ld", when, a.n, b.n);
    for (long i = 0; i < a.n && i < b.n; i++)
        cr_expect(a.keys[i] == b.keys[i] && a.lens[i] == b.lens[i] && !memcmp(a.raw[i], b.raw[i], a.lens[i]),
                  "%s: record %ld differs from an uninterrupted run's", when, i);
    cr_expect(m1.complete, "%s: the cache is not marked complete", when);
    cr_expect_str_eq(m1.content, m2.content, "%s", when);
    free_raw(&a), free_raw(&b);
    cache_meta_free(&m1), cache_meta_free(&m2);
}

static long count_records(const char *cache, int *complete) {
    CacheMeta m;
    Raw r = read_raw(cache, &m);
    long n = r.n;
    *complete = m.complete;
    free_raw(&r);
    cache_meta_free(&m);
    return n;
}

static int run_extract(const char *top, const char *cache, const char *extra, char **out) {
    char args[3000];
    snprintf(args, sizeof args,
             "--data '%s/data' --cache '%s' --weights random --input-size 32 --batch 4 --threads 2 %s 2>&1; exit $?", top,
             cache, extra);
    return run_tool("extract", args, out);
}

// SIGTERM and SIGINT (real signals, sent by the process to itself after N
// images were taken) at several points of one run and its reruns: each
// stop commits exactly the images taken (none lost), exits 75 and says how
// to resume; the last rerun ends with the uninterrupted run's records.
Test(interrupt, sigterm_and_sigint_lose_nothing) {
    char *top = make_images();
    char ref[1100], cache[1100];
    snprintf(ref, sizeof ref, "%s/ref", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    char *out;
    cr_assert_eq(run_extract(top, ref, "--quiet", &out), 0, "%s", out);
    free(out);

    // Stop after 1, then 6 more (not a multiple of the batch), then 9 more,
    // the last by SIGINT: the counts of new records are exact every time.
    // (SIGUSR1, Slurm's --signal=USR1@N, and SIGHUP stop the same way.)
    const long stops[] = {1, 6, 9, 2, 1, 13};
    const char *sig[] = {"TERM", "TERM", "INT", "USR1", "HUP", "TERM"};
    long total = 0;
    for (int s = 0; s < 6; s++) {
        // The rerun first takes the cached images (unchanged), then new ones:
        // stop after stops[s] new ones.
        char env[64];
        snprintf(env, sizeof env, "%ld", total + stops[s]);
        setenv("VGGFT_TEST_SIGNAL_AFTER", env, 1);
        setenv("VGGFT_TEST_SIGNAL", sig[s], 1);
        setenv("VGGFT_CACHE_COMMIT_SECONDS", "1000", 1);  // only the stop commits
        int rc = run_extract(top, cache, "", &out);
        unsetenv("VGGFT_TEST_SIGNAL_AFTER");
        unsetenv("VGGFT_TEST_SIGNAL");
        unsetenv("VGGFT_CACHE_COMMIT_SECONDS");
        cr_assert_eq(rc, EXIT_STOPPED, "stop %d: exit %d:\n%s", s, rc, out);
        char want[160];
        snprintf(want, sizeof want, "stopped by SIG%s after %ld of %d images: %ld new record%s committed", sig[s],
                 total + stops[s], 2 * N_PER_CLASS, stops[s], stops[s] == 1 ? "" : "s");
        cr_expect(strstr(out, want) && strstr(out, "incomplete): rerun the same command to continue."), "stop %d: expected '%s' in:\n%s", s,
                  want, out);
        free(out);
        total += stops[s];
        int complete;
        cr_expect_eq(count_records(cache, &complete), total, "stop %d: records lost to the signal", s);
        cr_expect(!complete, "stop %d: a stopped run left the cache marked complete", s);
        char verify[1200];
        snprintf(verify, sizeof verify, "--verify '%s'", cache);
        cr_expect_eq(run_tool("extract", verify, &out), 0, "%s", out);
        free(out);
    }
    cr_assert_eq(run_extract(top, cache, "--quiet", &out), 0, "%s", out);
    free(out);
    expect_same_records(cache, ref, "after four stops and a rerun");
    remove_tree(top);
    free(top);
}

// kill -9 (the crash hook: _exit after N new records) cannot be caught:
// what saves the work is the commit by time. With commits by count out of
// reach, a zero commit interval keeps every record stored before the kill,
// an interval longer than the run keeps none; both reruns complete the cache.
Test(interrupt, kill_9_keeps_what_the_timed_commits_saved) {
    char *top = make_images();
    char ref[1100], cache[1100];
    snprintf(ref, sizeof ref, "%s/ref", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    char *out;
    cr_assert_eq(run_extract(top, ref, "--quiet", &out), 0, "%s", out);
    free(out);
    setenv("VGGFT_CACHE_COMMIT_EVERY", "100000", 1);
    for (int timed = 1; timed >= 0; timed--) {
        setenv("VGGFT_CACHE_COMMIT_SECONDS", timed ? "0" : "1000", 1);
        setenv("VGGFT_TEST_CRASH_AFTER", "8", 1);
        remove_tree(cache);  // a fresh cache (--overwrite keeps the records of one of the same settings)
        int rc = run_extract(top, cache, "--quiet", &out);
        unsetenv("VGGFT_TEST_CRASH_AFTER");
        unsetenv("VGGFT_CACHE_COMMIT_SECONDS");
        cr_assert_eq(rc, 137, "the crash hook did not fire: %s", out);
        free(out);
        int complete;
        long n = count_records(cache, &complete);
        cr_expect_eq(n, timed ? 8 : 0, "commit interval %s: %ld records after kill -9", timed ? "0 s" : "1000 s", n);
        cr_expect(!complete);
        cr_assert_eq(run_extract(top, cache, "--quiet", &out), 0, "%s", out);
        free(out);
        expect_same_records(cache, ref, timed ? "kill -9 with timed commits, rerun" : "kill -9, rerun");
    }
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    remove_tree(top);
    free(top);
}

// Signals from outside at random moments (a real `kill`), SIGTERM and
// SIGINT, then kill -9 at a random moment, then a rerun: always exit 75
// after a signal (or 0 when the run had finished) and, in the end, the
// uninterrupted run's records.
Test(interrupt, signals_at_random_moments) {
    char *top = make_images();
    char ref[1100], cache[1100];
    snprintf(ref, sizeof ref, "%s/ref", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    char *out;
    cr_assert_eq(run_extract(top, ref, "--quiet", &out), 0, "%s", out);
    free(out);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    const char *bin = getenv("VGGFT_BIN");
    if (!bin) bin = TEST_BUILD;
    const int sigs[] = {SIGTERM, SIGINT, SIGTERM, SIGKILL};
    for (int s = 0; s < 4; s++) {
        // --batch 1 --threads 1: a slow run (~1 s) that a signal finds mid-way.
        char log[1200];
        snprintf(log, sizeof log, "%s/log%d", top, s);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            char exe[1200], data[1200];
            snprintf(exe, sizeof exe, "%s/extract", bin);
            snprintf(data, sizeof data, "%s/data", top);
            if (!freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr)) _exit(99);
            execl(exe, exe, "--data", data, "--cache", cache, "--weights", "random", "--input-size", "32", "--batch",
                  "1", "--threads", "1", (char *)NULL);
            _exit(98);
        }
        // Once it has opened the cache and starts on the images (its
        // "extract: ... images" line; before that a signal finds nothing
        // to save, which the other tests cover), a random moment.
        for (int waited = 0; waited < 30000; waited += 5) {
            FILE *f = fopen(log, "r");
            char text[4096] = "";
            if (f) {
                size_t n = fread(text, 1, sizeof text - 1, f);
                text[n] = '\0';
                fclose(f);
            }
            if (strstr(text, " images")) break;
            struct timespec poll = {0, 5000000L};
            nanosleep(&poll, NULL);
        }
        int delay_ms = rand() % 400;
        struct timespec ts = {0, delay_ms * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, sigs[s]);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        if (sigs[s] == SIGKILL)
            cr_expect(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "seed %u: kill -9: status 0x%x", seed,
                      st);
        else
            cr_expect(WIFEXITED(st) && (WEXITSTATUS(st) == EXIT_STOPPED || WEXITSTATUS(st) == 0),
                      "seed %u, signal %d after %d ms: status 0x%x (expected exit 75, or 0 when it had finished)", seed,
                      sigs[s], delay_ms, st);
    }
    cr_assert_eq(run_extract(top, cache, "--quiet", &out), 0, "seed %u: %s", seed, out);
    free(out);
    expect_same_records(cache, ref, "after random signals and a rerun");
    remove_tree(top);
    free(top);
}
