// At home on a cluster node (issue 15): the tools use the CPUs the job was
// given (its affinity mask), write logs that read well in a job's output
// file (timestamps, no rates from nothing, --quiet keeps warnings, the
// history CSV after every epoch), share one exit-code convention, and say
// what is wrong in words a user can act on.
//
// The runs use random weights at 32x32 cut at block1_pool: a second or two.
#define _GNU_SOURCE  // sched_setaffinity, CPU_* macros
#include <criterion/criterion.h>
#include <math.h>
#include <regex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "error.h"
#include "fileutil.h"
#include "fit.h"
#include "parallel.h"
#include "progress.h"
#include "testutil.h"

#define EXTRACT_ARGS "--weights random --input-size 32 --layer block1_pool --batch 2"

// extract of TOP/data into TOP/NAME (extra: more options); asserts success.
static void make_cache(const char *top, const char *name, const char *extra) {
    char args[4096], *out;
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s/%s' " EXTRACT_ARGS " %s", top, top, name, extra);
    int rc = run_tool_timeout("extract", args, 120, &out);
    cr_assert_eq(rc, 0, "extract %s: %s", args, out);
    free(out);
}

// Runs TOOL with printf-style arguments; returns the exit code, output in *out.
static int run(const char *tool, char **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(const char *tool, char **out, const char *fmt, ...) {
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return run_tool_timeout(tool, args, 300, out);
}

// Lines of text that contain needle.
static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++) n++;
    return n;
}

// Every line of text that contains one of the needles starts with an ISO
// 8601 timestamp; returns the first line that does not (malloc'd) or NULL.
static char *unstamped_line(const char *text, const char *const *needles) {
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2} ", REG_EXTENDED | REG_NOSUB), 0);
    char *bad = NULL;
    for (const char *p = text; *p && !bad;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *line = strndup(p, len);
        int wanted = 0;
        for (const char *const *n = needles; *n; n++) wanted |= strstr(line, *n) != NULL;
        if (wanted && regexec(&re, line, 0, NULL, 0) != 0) bad = line;
        else free(line);
        p += len + (e ? 1 : 0);
    }
    regfree(&re);
    return bad;
}

static long file_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

// --- the CPUs the job was given -------------------------------------------------

Test(cluster, default_threads_follow_the_affinity_mask) {
    cpu_set_t all;
    cr_assert_eq(sched_getaffinity(0, sizeof all, &all), 0);
    int n_all = CPU_COUNT(&all);
    cr_expect_eq(parallel_cpus(), n_all);
    if (n_all < 2) cr_skip_test("this process may run on one CPU only: nothing to restrict");
    char *top = make_shape_folder("cluster_cpus", 3, 5);
    char *out;
    // As `taskset -c K` or a Slurm allotment of one CPU: the children inherit it.
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all)) {
            CPU_SET(c, &one);
            break;
        }
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    cr_expect_eq(parallel_cpus(), 1);
    const char *tools[] = {"extract", "train", "finetune"};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(run(tools[i], &out, "--version"), 0);
        cr_expect(strstr(out, ", 1 thread\n") != NULL, "%s --version under a one-CPU mask: %s", tools[i], out);
        free(out);
    }
    // The tools' own thread pools: extract's loader and BLAS, train's pool.
    int rc = run("extract", &out, "--data '%s/data' --cache '%s/c' " EXTRACT_ARGS, top, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "; 1 thread; ") != NULL, "extract under a one-CPU mask: %s", out);
    free(out);
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4", top, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "; 1 thread\n") != NULL, "train under a one-CPU mask: %s", out);
    free(out);
    rc = run("finetune", &out, "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/f.h5' --epochs 1", top,
             top, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "; 1 thread\n") != NULL, "finetune under a one-CPU mask: %s", out);
    free(out);
    // --threads still wins over the mask.
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4 --threads 2", top, top);
    cr_expect(rc == 0 && strstr(out, "; 2 threads\n") != NULL, "%s", out);
    free(out);
    // And without the mask, all of the CPUs this test may use.
    cr_assert_eq(sched_setaffinity(0, sizeof all, &all), 0);
    char want[64];
    snprintf(want, sizeof want, ", %d threads\n", n_all);
    cr_expect_eq(run("train", &out, "--version"), 0);
    cr_expect(strstr(out, want) != NULL, "want '%s': %s", want, out);
    free(out);
    remove_tree(top);
    free(top);
}

// --- logs ---------------------------------------------------------------------------

Test(cluster, progress_rates_come_from_this_runs_work) {
    FILE *devnull = fopen("/dev/null", "w");
    Progress p;
    progress_start(&p, devnull, 100, "img");
    char line[256];
    // A handful of items in a few milliseconds: no rate, no ETA.
    progress_format(&p, 3, 0.004, 0, NULL, line, sizeof line);
    cr_expect(!strstr(line, "ETA") && !strstr(line, "img/s") && !strstr(line, "s/img"), "%s", line);
    // 90 of 95 were found in the cache: the rate is 5 images in 2 s, and the
    // 5 left take 2 s more (not "47 img/s, ETA 0s").
    p.free_items = 90;
    progress_format(&p, 95, 2.0, 0, NULL, line, sizeof line);
    cr_expect(strstr(line, "ETA: 2s - 2.5 img/s") != NULL, "%s", line);
    // One item (a skipped file) in half a millisecond: no rate in the final
    // line either (a newcomer saw "1/1 ... 1940 img/s").
    progress_start(&p, devnull, 1, "img");
    progress_format(&p, 1, 0.0005, 1, NULL, line, sizeof line);
    cr_expect(!strstr(line, "img/s") && !strstr(line, "s/img"), "%s", line);
    // A short epoch, 150 steps in 0.09 s: its rate all the same (a
    // newcomer saw none on train's epochs of 0.1 s).
    progress_start(&p, devnull, 150, "step");
    progress_format(&p, 150, 0.09, 1, NULL, line, sizeof line);
    cr_expect(strstr(line, " - 1667 step/s") != NULL, "%s", line);
    progress_start(&p, devnull, 100, "img");
    p.free_items = 90;
    // Nothing new at all: no rate even in the final line.
    progress_format(&p, 90, 2.0, 1, NULL, line, sizeof line);
    cr_expect(!strstr(line, "img/s") && !strstr(line, "s/img"), "%s", line);
    // A resumed epoch: 50 of 100 steps and 10 s done by the earlier run; 10
    // steps in the 2 s of this one: 5 step/s, 40 left -> ETA 8s.
    progress_start(&p, devnull, 100, "step");
    p.free_items = 50, p.t_before = 10;
    progress_format(&p, 60, 12.0, 0, NULL, line, sizeof line);
    cr_expect(strstr(line, "ETA: 8s - 5.0 step/s") != NULL, "%s", line);
    fclose(devnull);
}

// A bad VGGFT_PROGRESS or VGGFT_PROGRESS_INTERVAL is warned of at the
// tool's start (a newcomer saw the warning only at the first bar, after
// "Epoch 1/3"): here a run that fails before any bar still warns, first.
Test(cluster, bad_progress_variables_are_warned_of_at_the_start) {
    setenv("VGGFT_PROGRESS", "maybe", 1);
    setenv("VGGFT_PROGRESS_INTERVAL", "5s", 1);
    char *out;
    int rc = run_tool("train", "--cache /nonexistent/cache --out /nonexistent/head.h5", &out);
    cr_expect_eq(rc, 1, "rc %d: %s", rc, out);
    const char *a = strstr(out, "warning: VGGFT_PROGRESS=maybe is not one of"),
               *b = strstr(out, "warning: VGGFT_PROGRESS_INTERVAL=5s is not a positive number"),
               *e = strstr(out, "/nonexistent/cache");
    cr_expect(a && b && e && a < e && b < e, "%s", out);
    free(out);
}

Test(cluster, log_lines_are_stamped_and_none_come_before_there_is_news) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    setenv("VGGFT_PROGRESS_INTERVAL", "0", 1);
    Progress p;
    progress_start(&p, f, 15, "step");
    double t0 = p.t_start;
    // The first steps of an epoch: within PROGRESS_MIN_SECONDS nothing to say
    // (this was train's stray "1/15" line every epoch).
    progress_update_at(&p, 1, NULL, t0 + 0.01);
    progress_update_at(&p, 2, NULL, t0 + 0.02);
    fflush(f);
    cr_expect_eq(len, 0, "a line before there was anything to report: %s", text);
    progress_update_at(&p, 9, NULL, t0 + PROGRESS_MIN_SECONDS + 0.5);
    progress_finish(&p, "loss: 0.5000");
    log_printf(f, "\nwarning: something\n");  // the newline ends a terminal's bar: not in a log
    fclose(f);
    cr_expect_eq(count_lines_with(text, "\n"), 3, "%s", text);
    cr_expect(strstr(text, "\n\n") == NULL, "%s", text);
    const char *all[] = {"", NULL};
    char *bad = unstamped_line(text, all);
    cr_expect(bad == NULL, "unstamped line '%s' in:\n%s", bad, text);
    free(bad);
    free(text);
    char stamp[40];
    log_stamp_format(0, stamp, sizeof stamp);
    cr_expect_eq(strlen(stamp), 19, "%s", stamp);
    cr_expect_eq(stamp[10], 'T', "%s", stamp);
}

Test(cluster, train_log_has_no_stray_lines_and_timestamps) {
    char *top = make_shape_folder("cluster_log", 8, 3);
    make_cache(top, "c", "--threads 1");
    char *out;
    // 16 records, batch 4: 4 steps an epoch, 3 epochs, in well under a second.
    int rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 3 --batch 4 --hidden 4 --threads 1", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect_eq(count_lines_with(out, "4/4 ["), 3, "one final line per epoch: %s", out);
    cr_expect_eq(count_lines_with(out, "1/4 ["), 0, "a stray first-step line: %s", out);
    const char *log_lines[] = {"4/4 [", "Epoch ", NULL};
    char *bad = unstamped_line(out, log_lines);
    cr_expect(bad == NULL, "unstamped log line '%s' in:\n%s", bad, out);
    free(bad);
    free(out);
    // extract's own log lines too.
    rc = run("extract", &out, "--data '%s/data' --cache '%s/c' " EXTRACT_ARGS " --threads 1", top, top);
    cr_expect_eq(rc, 0, "%s", out);
    const char *ext_lines[] = {"extract: CPU", "16/16 [", NULL};
    cr_expect(strstr(out, "16/16 [") != NULL, "%s", out);
    bad = unstamped_line(out, ext_lines);
    cr_expect(bad == NULL, "unstamped log line '%s' in:\n%s", bad, out);
    free(bad);
    free(out);
    remove_tree(top);
    free(top);
}

Test(cluster, quiet_hides_progress_never_warnings) {
    char *top = make_shape_folder("cluster_quiet", 4, 9);
    char path[2048];
    snprintf(path, sizeof path, "%s/data/circles/broken.jpg", top);
    write_file(path, "\xff\xd8\xff\xe0 not a JPEG", 14);
    char *out;
    int rc = run("extract", &out, "--data '%s/data' --cache '%s/c' " EXTRACT_ARGS " --threads 1 --quiet", top, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "warning: skipped") && strstr(out, "broken.jpg"), "--quiet hid a warning: %s", out);
    cr_expect(strstr(out, "8/8 [") == NULL && strstr(out, "9/9 [") == NULL, "--quiet showed progress: %s", out);
    free(out);
    // train: a split that leaves no validation records is a warning.
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 2 --batch 4 --hidden 4 --quiet --threads 1 "
                            "--validation-split 0.01",
             top, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "warning: --validation-split 0.01 leaves no validation records") != NULL, "%s", out);
    cr_expect(strstr(out, "2/2 [") == NULL && strstr(out, "Epoch 2/2 - ") != NULL, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// The epochs drawn in a history plot: each is a training point in both
// panels, and the legend has one more (plot_history_svg). -1: no file.
static int svg_epochs(const char *path) {
    char *t = read_file(path, NULL);
    if (!t) return -1;
    int n = 0;
    for (const char *p = t; (p = strstr(p, "r='3.5'")); p++) n++;
    free(t);
    return (n - 1) / 2;
}

Test(cluster, history_csv_is_written_after_every_epoch) {
    char *top = make_shape_folder("cluster_csv", 8, 4);
    make_cache(top, "c", "--threads 1");
    char csv[2048], *out;
    snprintf(csv, sizeof csv, "%s/h.history.csv", top);
    // Killed (like kill -9) after the 2nd of 5 epochs: both rows are there.
    setenv("VGGFT_TEST_CRASH_AFTER_EPOCH", "2", 1);
    int rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 5 --batch 4 --hidden 4 --quiet", top, top);
    unsetenv("VGGFT_TEST_CRASH_AFTER_EPOCH");
    cr_expect_eq(rc, 137, "%s", out);
    free(out);
    cr_expect_eq(file_lines(csv), 3, "header and 2 epochs in %s", csv);
    // Its plot too: a long job's curve can be looked at while it runs.
    char svg[2048];
    snprintf(svg, sizeof svg, "%s/h.history.svg", top);
    cr_expect_eq(svg_epochs(svg), 2, "the plot beside 2 epochs of history: %s", svg);
    // A new run (no --resume) does not pass the old rows off as its own,
    // nor leave the old run's plot beside its history.
    setenv("VGGFT_TEST_CRASH_AFTER_EPOCH", "1", 1);
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 5 --batch 4 --hidden 4 --quiet", top, top);
    unsetenv("VGGFT_TEST_CRASH_AFTER_EPOCH");
    cr_expect_eq(rc, 137, "%s", out);
    free(out);
    cr_expect_eq(file_lines(csv), 2, "header and 1 epoch in %s", csv);
    cr_expect_eq(svg_epochs(svg), 1, "the earlier run's plot beside a history of 1 epoch: %s", svg);

    // finetune shares it (common/fit.c): killed in its 2nd epoch of 2 steps.
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --batch 4 --hidden 4 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    setenv("VGGFT_TEST_CRASH_AFTER_STEP", "3", 1);
    rc = run("finetune", &out,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/m.h5' --unfreeze block1_conv2 --no-augment "
             "--epochs 3 --batch 8 --threads 1 --quiet",
             top, top, top);
    unsetenv("VGGFT_TEST_CRASH_AFTER_STEP");
    cr_expect_eq(rc, 137, "%s", out);
    free(out);
    snprintf(csv, sizeof csv, "%s/m.history.csv", top);
    cr_expect_eq(file_lines(csv), 2, "header and 1 epoch in %s", csv);
    snprintf(svg, sizeof svg, "%s/m.history.svg", top);
    cr_expect_eq(svg_epochs(svg), 1, "%s", svg);
    // A run that fails before its first epoch ends (here: --save-augmented
    // names a file) leaves the earlier run's history whole, as it leaves
    // its other outputs.
    char file[1100];
    snprintf(file, sizeof file, "%s/a_file", top);
    write_file(file, "x", 1);
    rc = run("finetune", &out,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/m.h5' --unfreeze block1_conv2 "
             "--epochs 3 --batch 8 --threads 1 --quiet --save-augmented '%s'",
             top, top, top, file);
    cr_expect_eq(rc, 1, "%s", out);
    free(out);
    cr_expect_eq(file_lines(csv), 2, "the failed run emptied %s", csv);
    cr_expect_eq(svg_epochs(svg), 1, "the failed run removed %s", svg);
    // Nor does a new run stopped (SIGTERM, exit 75) in its first epoch: its
    // checkpoint is saved, the earlier history and plot stay, together (the
    // CSV was emptied beside the old plot).
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "1", 1);
    rc = run("finetune", &out,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/m.h5' --unfreeze block1_conv2 --no-augment "
             "--epochs 3 --batch 8 --lr 0.02 --threads 1 --quiet",
             top, top, top);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_expect_eq(rc, 75, "%s", out);
    free(out);
    cr_expect_eq(file_lines(csv), 2, "a run stopped in its first epoch emptied %s", csv);
    cr_expect_eq(svg_epochs(svg), 1, "%s", svg);
    remove_tree(top);
    free(top);
}

// --- exit codes -----------------------------------------------------------------------

typedef struct {
    const char *tool, *args;
    int code;
    const char *message;  // in the output
} ExitCase;

Test(cluster, one_exit_code_convention) {
    cr_assert_eq(EXIT_USAGE, CLI_USAGE);
    char *top = make_shape_folder("cluster_exit", 2, 6);
    char data[1100], cache[1100];
    snprintf(data, sizeof data, "--data '%s/data'", top);
    snprintf(cache, sizeof cache, "--cache '%s/c'", top);
    make_cache(top, "c", "--threads 1");
    const ExitCase cases[] = {
        // 2: usage errors, whatever the kind.
        {"extract", "--no-such-option", 2, "unknown option '--no-such-option'"},
        {"extract", "--batch", 2, "needs a value"},
        {"extract", "--batch many --data d --cache c", 2, "'many' is not an integer"},
        {"extract", "--batch 0 --data d --cache c", 2, "--batch must be >= 1, got 0"},
        {"extract", "--threads -2 --data d --cache c", 2, "--threads must be >= 0"},
        {"extract", "--max-pixels 0 --data d --cache c", 2, "--max-pixels must be >= 1"},
        {"extract", "--dtype f8 --data d --cache c", 2, "'f8' is not one of f16|f32"},
        {"extract", "--layer block5_conv3 --data d --cache c", 2, "--layer block5_conv3: not a pooling layer"},
        {"extract", "--input-size 16 --data d --cache c", 2, "at least 32x32"},
        {"extract", "--shard 4/4 --data d --cache c", 2, "--shard '4/4'"},
        {"extract", "--shard 0/4294967297 --data d --cache c", 2, "--shard '0/4294967297'"},  // (was 0/1)
        {"extract", "--data d", 2, "--data and --cache are required"},
        {"train", "--batch 0 --cache c --out o.h5", 2, "--batch must be >= 1, got 0"},
        {"train", "--lr -1 --cache c --out o.h5", 2, "--lr must be > 0, got -1"},
        {"train", "--epochs 0 --cache c --out o.h5", 2, "--epochs must be >= 1"},
        {"train", "--validation-split 1 --cache c --out o.h5", 2, "--validation-split must be in [0,1), got 1"},
        {"train", "--momentum 1.5 --cache c --out o.h5", 2, "--momentum must be in [0,1)"},
        {"train", "--optimizer adagrad --cache c --out o.h5", 2, "is not one of sgd|adam|rmsprop"},
        {"train", "--layer block4_pool --cache c --out o.h5", 2, "--layer is for --summary only"},
        {"train", "--cache c", 2, "--cache and --out are required"},
        {"finetune", "--batch 0 --data d --head h.h5 --out o.h5", 2, "--batch must be >= 1, got 0"},
        {"finetune", "--lr 0 --data d --head h.h5 --out o.h5", 2, "--lr must be > 0, got 0"},
        {"finetune", "--unfreeze block5_conv9 --data d --head h.h5 --out o.h5", 2,
         "--unfreeze block5_conv9: not a conv layer"},
        {"finetune", "--unfreeze block5_pool --data d --head h.h5 --out o.h5", 2, "not a conv layer"},
        {"finetune", "--checkpoint-every -1 --data d --head h.h5 --out o.h5", 2, "--checkpoint-every must be >= 0"},
        {"finetune", "--data d --out o.h5", 2, "--head HEAD.h5 is required"},
        // 0: --help and --version.
        {"extract", "--help", 0, "usage: extract"},
        {"train", "--version", 0, "train (vggft)"},
        // 1: failed, naming what.
        {"extract", "--data /nonexistent/vggft --cache /nonexistent/c", 1, "/nonexistent/vggft"},
        {"train", "--cache /nonexistent/vggft --out o.h5", 1, "/nonexistent/vggft"},
        {"finetune", "--data /nonexistent/vggft --head /nonexistent/h.h5 --out o.h5", 1, "/nonexistent/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        int rc = run(cases[i].tool, &out, "%s", cases[i].args);
        cr_expect_eq(rc, cases[i].code, "%s %s: exit %d, want %d: %s", cases[i].tool, cases[i].args, rc,
                     cases[i].code, out);
        cr_expect(strstr(out, cases[i].message) != NULL, "%s %s: want '%s' in: %s", cases[i].tool, cases[i].args,
                  cases[i].message, out);
        free(out);
    }
    char *out;
    // 75: stopped by a signal, state saved.
    setenv("VGGFT_TEST_SIGTERM_AFTER_STEP", "1", 1);
    int rc = run("train", &out, "%s --out '%s/h.h5' --epochs 3 --batch 1 --hidden 4 --quiet", cache, top);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_STEP");
    cr_expect_eq(rc, 75, "%s", out);
    cr_expect(strstr(out, "rerun with --resume") != NULL, "%s", out);
    free(out);
    // --strict keeps its rule: a skipped image fails the run (exit 1).
    char path[2048];
    snprintf(path, sizeof path, "%s/data/squares/bad.png", top);
    write_file(path, "not a PNG", 9);
    rc = run("extract", &out, "%s --cache '%s/c2' " EXTRACT_ARGS " --threads 1 --strict --quiet", data, top);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "--strict: 1 file was skipped") != NULL, "%s", out);
    free(out);
    // 2: an --out Keras would misread (Keras 3 picks its reader by the
    // name), refused before any work and naming the name to give; another
    // suffix than .h5 / .hdf5 gets a note.
    rc = run("train", &out, "%s --out '%s/head.weights.h5' --epochs 1 --hidden 4 --quiet", cache, top);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "Keras 3 reads a file named *.weights.h5") && strstr(out, "head.h5"), "%s", out);
    free(out);
    rc = run("finetune", &out, "--data %s --head %s/h.h5 --out '%s/model.keras' --quiet", top, top, top);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "zip archive") && strstr(out, "give --out"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/head.weights.h5", top);
    cr_expect_neq(access(path, F_OK), 0, "nothing written");
    rc = run("train", &out, "%s --out '%s/head.bin' --epochs 1 --hidden 4 --quiet", cache, top);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "reads HDF5 weights only from a name ending in .h5 or .hdf5"), "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// --- messages ---------------------------------------------------------------------------

// extract of TOP/data with --weights imagenet, Keras's cache at HOME and no
// network (a mirror that does not exist).
static int extract_offline(const char *top, const char *home, char **out) {
    setenv("KERAS_HOME", home, 1);
    setenv("VGGFT_WEIGHTS_URL", "/nonexistent/vggft-mirror", 1);
    int rc = run("extract", out, "--data '%s/data' --cache '%s/c' --weights imagenet --input-size 32 --quiet", top, top);
    unsetenv("KERAS_HOME");
    unsetenv("VGGFT_WEIGHTS_URL");
    return rc;
}

Test(cluster, messages_say_what_is_wrong) {
    char *a = make_shape_folder("cluster_msg_a", 2, 1), *b = make_shape_folder("cluster_msg_b", 2, 2);
    char *out;
    // A weights file that is not there.
    int rc = run("extract", &out, "--data '%s/data' --cache '%s/c' --weights '%s/nope.h5' --input-size 32", a, a, a);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "nope.h5: no such file") != NULL, "%s", out);
    cr_expect(strstr(out, "hashing") == NULL, "%s", out);
    free(out);
    // --weights imagenet without network: say how to do without.
    char home[2048];
    snprintf(home, sizeof home, "%s/keras", a);
    rc = extract_offline(a, home, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "--weights imagenet: ") && strstr(out, "--weights FILE"), "%s", out);
    free(out);
    // ... with a file in Keras's cache that is not Keras's: say so, not "copy Keras's file there".
    char stale[2200];
    snprintf(stale, sizeof stale, "%s/models", home);
    make_dirs(stale);
    snprintf(stale, sizeof stale, "%s/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", home);
    write_file(stale, "not Keras's", 11);
    rc = extract_offline(a, home, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "is not Keras's (its MD5 is not ") && !strstr(out, "copy Keras's file"), "%s", out);
    free(out);
    // Two unrelated caches (two folders, no --shard) are not "shard 0/1 given twice".
    make_cache(a, "c", "--threads 1");
    make_cache(b, "c", "--threads 1");
    // A head asks for its base weights by naming the extract command of its
    // features (the --weights file is in it), not only a hash.
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --quiet", a, a);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    rc = run("finetune", &out, "--data '%s/data' --head '%s/h.h5' --weights '%s/gone.h5' --out '%s/f.h5' --quiet", a,
             a, a, a);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "its features were made by: ") && strstr(out, "--weights random"), "%s", out);
    free(out);
    rc = run("extract", &out, "--merge '%s/m' '%s/c' '%s/c'", a, a, b);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "is a shard (both were made without --shard, from different folders") != NULL, "%s", out);
    cr_expect(strstr(out, "given twice") == NULL, "%s", out);
    free(out);
    // The same folder twice, neither a shard.
    make_cache(a, "c2", "--threads 1");
    rc = run("extract", &out, "--merge '%s/m' '%s/c' '%s/c2'", a, a, a);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "is a shard (both were made without --shard)") != NULL, "%s", out);
    free(out);
    // Shards of two different folders.
    make_cache(a, "s0", "--threads 1 --shard 0/2");
    make_cache(b, "s1", "--threads 1 --shard 1/2");
    char sa[2048];
    snprintf(sa, sizeof sa, "%s/data/circles/img 00.jpg", b);
    unlink(sa);  // b's listing differs from a's
    make_cache(b, "s1b", "--threads 1 --shard 1/2");
    rc = run("extract", &out, "--merge '%s/m' '%s/s0' '%s/s1b'", a, a, b);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "made from another folder") != NULL, "%s", out);
    free(out);
    // Shards of one folder made with other settings: the message names both sides.
    make_cache(a, "s1l", "--threads 1 --shard 1/2 --layer block2_pool");
    rc = run("extract", &out, "--merge '%s/m' '%s/s0' '%s/s1l'", a, a, a);
    cr_expect_eq(rc, 1, "%s", out);
    char want[2100];
    snprintf(want, sizeof want, "layer: %s/s0 has block1_pool, this one block2_pool", a);
    cr_expect(strstr(out, want) != NULL, "%s", out);
    free(out);
    // train's shape options say that they shape --summary only.
    rc = run("train", &out, "--help");
    cr_expect_eq(rc, 0);
    const char *opts[] = {"--model", "--input-size", "--layer"};
    for (int i = 0; i < 3; i++) {
        const char *l = strstr(out, opts[i]);
        cr_assert(l, "%s", out);
        const char *e = strstr(l, "(default");
        cr_expect(e && strstr(l, "with --summary only") && strstr(l, "with --summary only") < e, "%s: %.200s",
                  opts[i], l);
    }
    free(out);
    remove_tree(a), remove_tree(b);
    free(a), free(b);
}

// --- option tables ------------------------------------------------------------------------

Test(cluster, option_tables_count_themselves) {
    int x = 0, y = 0, z = 0;
    CliOption opts[] = {
        {"x", OPT_INT, &x, "1", "N", "x"},
        {"y", OPT_INT, &y, "2", "N", "y", .range = "[0,10]"},
        {"z", OPT_INT, &z, "3", "N", "z"},
        {0},
    };
    cr_expect_eq(cli_count(opts), 3);
    CliSpec spec = {"t", "test", "", NULL, opts, 0};
    char *argv[] = {"t", "--z", "7", "--y", "10", NULL};
    FILE *null = freopen("/dev/null", "w", stderr);
    (void)null;
    cr_expect_eq(cli_parse(&spec, 5, argv, NULL, NULL), CLI_OK);
    cr_expect_eq(z, 7, "the last option of the table was parsed");
    cr_expect_eq(x, 1, "the defaults of every option of the table applied");
    cr_expect_eq(y, 10);
    char *bad[] = {"t", "--y", "11", NULL};
    cr_expect_eq(cli_parse(&spec, 3, bad, NULL, NULL), CLI_USAGE);
    cr_expect_not_null(cli_find(&spec, "z"));
}

// --- merge of a partial shard set, and usage errors found late ---------------------

Test(cluster, merge_refuses_a_partial_shard_set_and_empty_values_are_usage_errors) {
    char *top = make_shape_folder("cluster_merge", 2, 6);
    make_cache(top, "s0", "--threads 1 --quiet --shard 0/2");
    char *out, path[1400];
    // Only shard 0 of 2: a merged cache is marked complete, so it is refused,
    // naming what is missing, and nothing is left at OUT.
    int rc = run("extract", &out, "--merge '%s/m' '%s/s0'", top, top);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "missing shard 1/2") != NULL, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/m/data.mdb", top);
    cr_expect(access(path, F_OK) != 0, "the refused merge left %s", path);
    // An empty path names no file: a usage error naming the option, in every tool.
    make_cache(top, "c", "--threads 1 --quiet");
    const char *empty[][3] = {{"train", "--cache '%s/c' --val-cache '' --out x.h5", "--val-cache: the value is empty"},
                              {"finetune", "--data '' --head '%s/h.h5' --out m.h5", "--data: the value is empty"},
                              {"predict", "--model '%s/m.h5' --report '' x.jpg", "--report: the value is empty"},
                              {"predict", "--model '%s/m.h5' ''", "argument 3 is empty"}};
    for (int i = 0; i < 4; i++) {
        char args[1200];
        snprintf(args, sizeof args, empty[i][1], top);
        rc = run(empty[i][0], &out, "%s", args);
        cr_expect_eq(rc, 2, "%s %s: %s", empty[i][0], args, out);
        cr_expect(strstr(out, empty[i][2]) != NULL, "%s %s: %s", empty[i][0], args, out);
        free(out);
    }
    // A VGGFT_PROGRESS_INTERVAL that is not a positive number: the default, one warning.
    setenv("VGGFT_PROGRESS_INTERVAL", "abc", 1);
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 2 --batch 1 --hidden 4 --threads 1", top, top);
    unsetenv("VGGFT_PROGRESS_INTERVAL");
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect_eq(count_lines_with(out, "VGGFT_PROGRESS_INTERVAL=abc is not a positive number"), 1, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// predict on SIGTERM: stops between batches with the lines it printed whole,
// exit 75 like the other tools.
Test(cluster, predict_stops_between_batches_on_sigterm) {
    char *top = make_shape_folder("cluster_pstop", 3, 6);
    make_cache(top, "c", "--threads 1 --quiet");
    char *out;
    int rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4 --threads 1 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    setenv("VGGFT_TEST_SIGTERM_AFTER_BATCH", "2", 1);
    rc = run("predict", &out, "--head '%s/h.h5' --weights random --batch 2 --threads 1 --format csv '%s/data'", top, top);
    unsetenv("VGGFT_TEST_SIGTERM_AFTER_BATCH");
    cr_expect_eq(rc, 75, "%s", out);
    cr_expect_eq(count_lines_with(out, ".jpg,"), 4, "two batches of 2 printed, no more: %s", out);
    cr_expect(strstr(out, "stopped by SIGTERM after 4 images") != NULL, "%s", out);
    free(out);
    rc = run("predict", &out, "--help");
    cr_expect(strstr(out, "75 stopped by SIGTERM/SIGINT") != NULL, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// The history CSV keeps small values (CSVLogger writes Python floats in
// full): a val_loss of 1e-10 is not 0.000000. seconds is ours, after Keras's
// columns.
Test(cluster, history_csv_keeps_small_values) {
    char *dir = make_temp_dir("cluster_hist");
    float loss[2] = {0.6931472f, 1e-10f}, acc[2] = {0.5f, 1.0f}, vloss[2] = {1e-10f, 2.5e-7f}, vacc[2] = {1.0f, 1.0f},
          secs[2] = {1.25f, 2.5f};
    FitState s = {0};
    s.loss = loss, s.acc = acc, s.val_loss = vloss, s.val_acc = vacc, s.secs = secs;
    s.epochs_done = 2;
    char path[700];
    snprintf(path, sizeof path, "%s/h.history.csv", dir);
    cr_assert_eq(fit_write_history(&s, path), 0);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    char text[1000];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_expect(strstr(text, "epoch,accuracy,loss,val_accuracy,val_loss,seconds\n") == text, "%s", text);
    cr_expect(strstr(text, "0,0.5,0.693147182,1,1.00000001e-10,1.250\n") != NULL, "%s", text);
    cr_expect(strstr(text, "1,1,1.00000001e-10,1,2.49999999e-07,2.500\n") != NULL, "%s", text);
    // Without validation: "NA", as Keras 3's CSVLogger writes the missing keys.
    float none[2] = {NAN, NAN};
    s.val_loss = s.val_acc = none;
    cr_assert_eq(fit_write_history(&s, path), 0);
    f = fopen(path, "r");
    cr_assert(f);
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_expect(strstr(text, "0,0.5,0.693147182,NA,NA,1.250\n") != NULL, "%s", text);
    remove_tree(dir);
    free(dir);
}

// Under an address-space limit (ulimit -v; some clusters set one for every
// job) OpenBLAS 0.3.21 waited for ever for its 128 MiB buffer per thread,
// deaf to SIGTERM: even --version hung below about 300 MB on 2 cores (8.7 GB
// on 64 by the same sum), and, once that was planned for, extract, finetune and predict
// still did where a later BLAS call found the room gone, or where the job
// set OMP_NUM_THREADS. Now no tool hangs under any limit it can start in:
// each runs, or stops with a message that names the limit; train's names a
// limit that would do, and with it (and room for the data) train and
// finetune run.
static int run_limited(int mib, const char *env, const char *bin, const char *tool, const char *args, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "ulimit -v %d; %s timeout -s KILL 120 '%s/%s' %s 2>&1", mib << 10, env, bin, tool, args);
    return run_command(cmd, out);
}

Test(cluster, address_space_limit_never_hangs, .timeout = 900) {
    SKIP_UNDER_ASAN();
    char *top = make_shape_folder("ulimit", 2, 3);
    make_cache(top, "c", "--threads 1");
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char args[4096], *out;
    // A head to fine-tune and predict with.
    snprintf(args, sizeof args, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --quiet", top, top);
    int rc = run_tool_timeout("train", args, 120, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    // train under 160 MiB stops at once and names a limit that would do.
    snprintf(args, sizeof args, "--cache '%s/c' --out '%s/t.h5' --epochs 1 --quiet", top, top);
    rc = run_limited(160, "", bin, "train", args, &out);
    cr_expect_eq(rc, 1, "train under ulimit -v 160 MiB: exit %d (137: it hung): %s", rc, out);
    const char *at = out ? strstr(out, "raise the limit to at least ") : NULL;
    cr_assert(at && strstr(out, "ulimit -v 163840 = 160 MiB"), "names the limit and what would do: %s", out);
    int need = atoi(at + strlen("raise the limit to at least "));
    cr_expect_gt(need, 160, "%s", out);
    // ... also in ulimit -v's unit (KiB), ready to paste.
    char in_kib[64];
    snprintf(in_kib, sizeof in_kib, "MiB (ulimit -v %d)", need << 10);
    cr_expect(strstr(at, in_kib) != NULL, "%s", out);
    free(out);
    struct {
        const char *env, *tool, *fmt;
    } runs[] = {
        {"", "extract", "--version"},
        {"OMP_NUM_THREADS=4", "extract", "--help"},
        {"", "extract", "--data '%s/data' --cache '%s/x' " EXTRACT_ARGS " --threads 1 --quiet"},
        {"", "extract", "--data '%s/data' --cache '%s/x8' --weights random --input-size 48 --threads 8 --quiet"},
        {"OMP_NUM_THREADS=2", "train", "--cache '%s/c' --out '%s/t.h5' --epochs 1 --quiet"},
        {"", "finetune", "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/f.h5' --epochs 1 --threads 1 "
                         "--quiet"},
        {"", "finetune", "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/f8.h5' --epochs 1 --threads 8 "
                         "--quiet"},
        {"", "predict", "--head '%s/h.h5' --weights random --threads 8 --quiet '%s/data'"},
    };
    // extract and predict take no OpenBLAS buffer under a limit (they do
    // without BLAS): the room goes to their own work; train keeps one.
    rc = run_limited(400, "", bin, "extract", "--version", &out);
    cr_expect(rc == 0 && strstr(out, "not used under the address-space limit: this tool does without it"), "%s", out);
    free(out);
    rc = run_limited(400, "", bin, "train", "--version", &out);
    cr_expect(rc == 0 && strstr(out, "at most 1 thread for the address-space limit"), "%s", out);
    free(out);
    const int limits[] = {160, 300, 400, need};
    for (int li = 0; li < 4; li++)
        for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
            snprintf(args, sizeof args, runs[k].fmt, top, top, top);
            rc = run_limited(limits[li], runs[k].env, bin, runs[k].tool, args, &out);
            cr_expect(rc == 0 || (rc == 1 && out && strstr(out, "ulimit -v")),
                      "%s %s %s under ulimit -v %d MiB: exit %d (137: it hung): %s", runs[k].env, runs[k].tool, args,
                      limits[li], rc, out);
            free(out);
        }
    // With the limit train named (and room for the data), train and finetune run.
    for (int k = 4; k < 6; k++) {
        snprintf(args, sizeof args, runs[k].fmt, top, top, top);
        rc = run_limited(need + 256, runs[k].env, bin, runs[k].tool, args, &out);
        cr_expect_eq(rc, 0, "%s under ulimit -v %d MiB: exit %d: %s", runs[k].tool, need + 256, rc, out);
        free(out);
    }
    // ... also with 16 threads, a 16-core node's default: glibc gave each
    // thread's mallocs an arena of its own, 64 MiB of address space apiece,
    // and train failed there (on an H200 node) with room that 2 cores had
    // plenty of (here, replacing the checkpoint the runs above left: it
    // failed at need + 128 MiB, and runs since at need + 65).
    snprintf(args, sizeof args, "--cache '%s/c' --out '%s/t.h5' --epochs 1 --threads 16 --quiet", top, top);
    rc = run_limited(need + 128, "", bin, "train", args, &out);
    cr_expect_eq(rc, 0, "train --threads 16 under ulimit -v %d MiB: exit %d: %s", need + 128, rc, out);
    free(out);
    remove_tree(top);
    free(top);
}

// OpenBLAS starts its worker threads before main; under an address-space
// limit on a many-core node their stacks alone exceeded it, pthread_create
// failed and OpenBLAS raised SIGINT: every tool died with exit 130 before it
// could say a word (a 16-core node under ulimit -v 400 MiB). Here the same
// with 2 CPUs and 256 MiB stacks: the tools start, with fewer threads.
Test(cluster, blas_threads_fit_the_limit_before_main, .timeout = 120) {
    SKIP_UNDER_ASAN();
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    const char *tools[] = {"extract", "train", "finetune", "predict"};
    const char *envs[] = {"", "OPENBLAS_NUM_THREADS=64", "OMP_NUM_THREADS=8"};
    for (int t = 0; t < 4; t++)
        for (int e = 0; e < 3; e++) {
            char cmd[2000], *out;
            snprintf(cmd, sizeof cmd, "ulimit -s 262144; ulimit -v %d; %s timeout -s KILL 60 '%s/%s' --version 2>&1",
                     300 << 10, envs[e], bin, tools[t]);
            int rc = run_command(cmd, &out);
            cr_expect_eq(rc, 0, "%s %s --version under ulimit -s 256 MiB, -v 300 MiB: exit %d: %s", envs[e], tools[t],
                         rc, out);
            cr_expect(out && !strstr(out, "pthread_create failed") && strstr(out, "address-space limit"), "%s",
                      out);
            free(out);
        }
}

// What blas_preinit and blas_setup set on the way (OPENBLAS_NUM_THREADS,
// MALLOC_ARENA_MAX, their markers) is the user's again once the tool runs:
// its children (a tool's helpers, a shell it starts) see what the job gave.
Test(cluster, blas_setup_gives_children_the_users_environment, .timeout = 120) {
    SKIP_UNDER_ASAN();
    char probe[600];
    snprintf(probe, sizeof probe, "%s/tests/blas_env_probe", TEST_BUILD);
    if (access(probe, X_OK) != 0) cr_skip_test("%s not built (make test builds it)", probe);
    const struct {
        const char *env, *args, *want[2];
    } cases[] = {
        {"", "", {"OPENBLAS_NUM_THREADS=(unset)", "MALLOC_ARENA_MAX=(unset)"}},
        {"", "unused", {"OPENBLAS_NUM_THREADS=(unset)", "MALLOC_ARENA_MAX=(unset)"}},
        {"OPENBLAS_NUM_THREADS=7", "", {"OPENBLAS_NUM_THREADS=7\n", "MALLOC_ARENA_MAX=(unset)"}},
        {"OPENBLAS_NUM_THREADS=7", "unused", {"OPENBLAS_NUM_THREADS=7\n", "MALLOC_ARENA_MAX=(unset)"}},
        {"MALLOC_ARENA_MAX=3 OMP_NUM_THREADS=64", "", {"OPENBLAS_NUM_THREADS=(unset)", "MALLOC_ARENA_MAX=3\n"}},
    };
    // 160 MiB: room for no OpenBLAS buffer (one thread); 2 GiB: several;
    // 256 MiB stacks: not even one worker's stack fits at 160.
    const char *limits[] = {"ulimit -s 262144; ulimit -v 163840", "ulimit -v 2097152"};
    for (int l = 0; l < 2; l++)
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            char cmd[1500], *out;
            snprintf(cmd, sizeof cmd, "%s; %s VGGFT_PREINIT='1|a|-' timeout -s KILL 60 '%s' %s 2>&1", limits[l],
                     cases[k].env, probe, cases[k].args);
            int rc = run_command(cmd, &out);
            cr_expect_eq(rc, 0, "%s: exit %d: %s", cmd, rc, out);
            for (int w = 0; w < 2; w++) cr_expect(out && strstr(out, cases[k].want[w]), "%s: want %s in:\n%s", cmd,
                                                  cases[k].want[w], out);
            cr_expect(out && strstr(out, "VGGFT_PREINIT=(unset)") && strstr(out, "VGGFT_BLAS_ROOM=(unset)") &&
                          strstr(out, "address-space limit"),
                      "%s:\n%s", cmd, out);
            free(out);
        }
}

// Started through the dynamic loader (`ld-linux-x86-64.so.2 train ...`, as
// some module systems and wrappers do), /proc/self/exe is the loader: the
// tools' restarts (OpenBLAS's kernel, the address-space limit) ran the
// loader with the tool's options ("unrecognized option '--cache'"). They
// now run without restarting, and say what that costs.
Test(cluster, started_through_the_dynamic_loader, .timeout = 120) {
    SKIP_UNDER_ASAN();
    const char *loader = "/lib64/ld-linux-x86-64.so.2";
    if (access(loader, X_OK) != 0) cr_skip_test("no %s here", loader);
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    const char *limits[] = {"", "ulimit -v 4000000;"};
    const char *tools[] = {"train", "predict"};
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < 2; t++) {
            char cmd[1500], *out;
            snprintf(cmd, sizeof cmd, "%s timeout -s KILL 60 %s '%s/%s' --version 2>&1", limits[l], loader, bin,
                     tools[t]);
            int rc = run_command(cmd, &out);
            cr_expect_eq(rc, 0, "%s: exit %d: %s", cmd, rc, out);
            cr_expect(out && strstr(out, "BLAS: OpenBLAS") && !strstr(out, "unrecognized option"), "%s:\n%s", cmd,
                      out);
            free(out);
        }
}

// An image that cannot be read for want of memory (under a job's memory
// limit, say) is not a bad file: extract, predict and finetune stop with
// the reason instead of skipping it (extract with 24 images, under a limit,
// had exited 0 with 20 of them "skipped"), and extract's rerun does the
// rest. VGGFT_TEST_LOADER_OOM=N makes the loader fail item N so.
Test(cluster, out_of_memory_stops_rather_than_skips, .timeout = 300) {
    char *top = make_shape_folder("oom", 4, 3);
    char args[4096], *out;
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "VGGFT_TEST_LOADER_OOM=3 '%s/extract' --data '%s/data' --cache '%s/c' " EXTRACT_ARGS
             " --threads 1 2>&1", bin, top, top);
    int rc = run_command(cmd, &out);
    cr_expect_eq(rc, 1, "extract: exit %d: %s", rc, out);
    cr_expect(out && strstr(out, "out of memory") && strstr(out, "rerun"), "%s", out);
    cr_expect(out && !strstr(out, "warning: skipped"), "not reported as a skipped file: %s", out);
    free(out);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s/c' " EXTRACT_ARGS " --threads 1", top, top);
    rc = run("extract", &out, "%s", args);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(out && strstr(out, "Cache ") && strstr(out, ": 8 records"), "the rerun has all 8: %s", out);
    free(out);
    snprintf(args, sizeof args, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --quiet", top, top);
    cr_assert_eq(run("train", &out, "%s", args), 0, "%s", out);
    free(out);
    const char *later[2][2] = {{"predict", "--head '%s/h.h5' --weights random --threads 1 '%s/data'"},
                               {"finetune", "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/f.h5' "
                                            "--epochs 1 --threads 1 --quiet"}};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, later[k][1], top, top, top);
        snprintf(cmd, sizeof cmd, "VGGFT_TEST_LOADER_OOM=3 '%s/%s' %s 2>&1", bin, later[k][0], args);
        rc = run_command(cmd, &out);
        cr_expect_eq(rc, 1, "%s: exit %d: %s", later[k][0], rc, out);
        cr_expect(out && strstr(out, "out of memory"), "%s: %s", later[k][0], out);
        free(out);
    }
    // finetune past its first steps (batch 2: item 5 is in step 3) keeps
    // the steps done, and --resume continues from them.
    snprintf(args, sizeof args,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/g.h5' --epochs 1 --batch 2 --threads 1 "
             "--no-augment --quiet",
             top, top, top);
    snprintf(cmd, sizeof cmd, "VGGFT_TEST_LOADER_OOM=5 '%s/finetune' %s 2>&1", bin, args);
    rc = run_command(cmd, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(out && strstr(out, "out of memory") && strstr(out, "the state after step 2 of epoch 1 is saved in") &&
                  strstr(out, "rerun with --resume"),
              "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/finetune' %s --resume 2>&1", bin, args);
    rc = run_command(cmd, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(out && strstr(out, "at epoch 1, after step 2"), "resumed after step 2: %s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// A job submitted twice: two trains (or finetunes) on one --out ran side by
// side, exit 0, leaving one's head beside the other's history and
// checkpoint (the breaker). The second is now refused before any work,
// naming the process that holds OUT's lock; once it ends, the lock file is
// gone and a run goes ahead. (The test process holds the lock itself.)
Test(cluster, one_writer_per_out) {
    char *top = make_shape_folder("outlock", 4, 3);
    make_cache(top, "c", "--threads 1");
    char out_path[1100], lock[1100], *out;
    snprintf(out_path, sizeof out_path, "%s/run/h.h5", top);
    snprintf(lock, sizeof lock, "%s/run/h.lock", top);
    int rc = run("train", &out, "--cache '%s/c' --out '%s/head.h5' --epochs 1 --hidden 4 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    // Under a group's umask the lock file is group-writable, as the outputs
    // are: one a killed run left does not lock the group's others out.
    mode_t mask = umask(002);
    cr_assert_eq(fit_lock_out(out_path), 0, "%s", err_msg());
    umask(mask);
    struct stat st;
    cr_assert_eq(stat(lock, &st), 0, "%s", lock);
    cr_expect_eq(st.st_mode & 0777, 0664, "%s: mode %o", lock, (unsigned)(st.st_mode & 0777));
    // The holder by PID and host (it may run on another node), and what to
    // do when it is gone.
    char host[256] = "", want[400];
    gethostname(host, sizeof host);
    snprintf(want, sizeof want, "(process %ld on %s holds ", (long)getpid(), host);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "another train or finetune is writing it now") && strstr(out, want), "%s", out);
    cr_expect(strstr(out, "if that process is gone, its node down, remove ") && strstr(out, "/run/h.lock)"), "%s", out);
    free(out);
    rc = run("finetune", &out, "--data '%s/data' --head '%s/head.h5' --weights random --out '%s' --epochs 1 --quiet",
             top, top, out_path);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "another train or finetune is writing it now") && strstr(out, want), "%s", out);
    free(out);
    char path[1100];
    snprintf(path, sizeof path, "%s/run/h.ckpt", top);
    cr_expect_neq(access(path, F_OK), 0, "the refused run wrote %s", path);
    // Another run's output written at the lock's name meanwhile (train
    // --out run/h.lock): unlocking leaves it (it removed it by name).
    char other[1100];
    snprintf(other, sizeof other, "%s/run/other", top);
    write_file(other, "a head", 6);
    cr_assert_eq(rename(other, lock), 0);
    fit_unlock_out();
    size_t n_other = 0;
    free(read_file(lock, &n_other));
    cr_expect_eq(n_other, 6, "unlocking removed another run's file at %s", lock);
    remove(lock);
    cr_assert_eq(fit_lock_out(out_path), 0, "%s", err_msg());
    fit_unlock_out();
    cr_expect_neq(access(lock, F_OK), 0, "unlocking left %s", lock);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    cr_expect_neq(access(lock, F_OK), 0, "train left its lock file %s", lock);
    // A file of another kind at the lock's name (an output named h.lock):
    // refused, never truncated or removed.
    write_file(lock, "\x89HDF\r\n\x1a\n model", 14);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect(rc == 1 && strstr(out, "where its lock file goes, is another file (not a lock file, 14 bytes)"), "%s",
              out);
    free(out);
    size_t kept = 0;
    free(read_file(lock, &kept));
    cr_expect_eq(kept, 14, "the other file at %s was changed", lock);
    // Nor a number alone, or a FIFO (the breaker's).
    write_file(lock, "12345\n", 6);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect(rc == 1 && strstr(out, "(not a lock file, 6 bytes)"), "%s", out);
    free(out);
    remove(lock);
    cr_assert_eq(mkfifo(lock, 0644), 0);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect(rc == 1 && strstr(out, "(not a regular file"), "%s", out);
    free(out);
    remove(lock);
    // A lock file left by a killed run (no process holds it) is taken over.
    write_file(lock, "999999 on gone-node\n", 20);
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --hidden 4 --quiet", top, out_path);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    cr_expect_neq(access(lock, F_OK), 0, "%s", lock);
    remove_tree(top);
    free(top);
}

// Out of file descriptors (or an I/O error, a stale NFS handle) on a
// rerun: the image's open failed, it was taken for a bad file, and its good
// record was deleted, exit 0 with the cache "complete" (the breaker: 777,
// then 623 of 800 records under ulimit -n 8). Now extract stops as on a
// want of memory, keeping every record, and says what to raise.
Test(cluster, out_of_descriptors_on_a_rerun_keeps_every_record, .timeout = 300) {
    char *top = make_shape_folder("emfile", 4, 3);
    make_cache(top, "c", "--threads 1");
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char cmd[8192], *out;
    snprintf(cmd, sizeof cmd, "VGGFT_TEST_LOADER_EMFILE=3 '%s/extract' --data '%s/data' --cache '%s/c' " EXTRACT_ARGS
             " --threads 1 2>&1", bin, top, top);
    int rc = run_command(cmd, &out);
    cr_expect_eq(rc, 1, "extract: exit %d: %s", rc, out);
    cr_expect(out && strstr(out, "Too many open files") && strstr(out, "ulimit -n"), "%s", out);
    cr_expect(out && !strstr(out, "warning: skipped") && !strstr(out, "removed"), "%s", out);
    free(out);
    rc = run("extract", &out, "--info '%s/c'", top);
    cr_expect(rc == 0 && strstr(out, "\nrecords:        8\n"), "every record kept: %s", out);
    free(out);
    // The message test of the rule itself.
    cr_expect(err_is_system("x.jpg: cannot open: Too many open files"));
    cr_expect(err_is_system("x.jpg: read error: Input/output error"));
    cr_expect(err_is_system("x.jpg: cannot open: Stale file handle"));
    cr_expect(!err_is_system("x.jpg: cannot open: Permission denied"));
    cr_expect(err_is_system("x.jpg: cannot open: Transport endpoint is not connected"), "a dead FUSE mount");
    cr_expect(!err_is_system("d/cat/out of memory.png: truncated JPEG data"), "the words in a file's name");
    cr_expect(err_is_system("d/cat/x.png: out of memory reading 12 bytes"));
    cr_expect(!err_is_system("x.jpg: truncated JPEG data (image file is truncated)"));
    // The words inside the path are not the reason.
    cr_expect(!err_is_system("data/Input/output error.jpg: cannot open: Permission denied"));
    cr_expect(!err_is_system("data/a: Connection timed out.png: not a PNG file"));
    cr_expect(err_is_system("x.jpg: cannot open: Too many open files in system; 3 new records"));
    remove_tree(top);
    free(top);
}

// A class folder the system failed to list (opendir: EIO, a stale NFS
// handle), or whose listing broke off part-way, was taken for an empty
// (or smaller) class: extract's rerun then dropped its records, exit 0,
// and make went on to retrain on what was left (the breaker). Now an
// error naming the folder, every record kept. (tests/failfs.c fails them.)
Test(cluster, folder_listing_failures_stop_and_keep_records, .timeout = 300) {
    char shim[1100];
    snprintf(shim, sizeof shim, "%s/tests/failfs.so", TEST_BUILD);
    if (access(shim, F_OK) != 0) cr_skip_test("%s not built (make test builds it)", shim);
    char *top = make_shape_folder("failfs", 4, 3);
    make_cache(top, "c", "--threads 1");
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    // (Last: a class folder denied, as an expired Kerberos ticket on NFS
    // denies it: no empty class either.)
    const char *how[] = {"FAILFS_OPENDIR=data/circles", "FAILFS_OPENDIR=data/squares FAILFS_ERRNO=116",
                         "FAILFS_READDIR=data/circles FAILFS_AFTER=3", "FAILFS_READDIR=/data FAILFS_AFTER=1",
                         "FAILFS_OPENDIR=data/circles FAILFS_ERRNO=13"};
    const char *says[] = {"cannot read folder: Input/output error", "cannot read folder: Stale file handle",
                          "listing the folder failed part-way", "listing the folder failed part-way",
                          "the class folder cannot be read: Permission denied"};
    for (int i = 0; i < 5; i++) {
        char cmd[8192], *out;
        snprintf(cmd, sizeof cmd,
                 "LD_PRELOAD='%s' ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0\" %s "
                 "'%s/extract' --data '%s/data' --cache '%s/c' " EXTRACT_ARGS " --threads 1 --overwrite 2>&1",
                 shim, how[i], bin, top, top);
        int rc = run_command(cmd, &out);
        cr_expect_eq(rc, 1, "%s: exit %d: %s", how[i], rc, out);
        cr_expect(out && strstr(out, says[i]) && !strstr(out, "removed"), "%s: %s", how[i], out);
        free(out);
        rc = run("extract", &out, "--info '%s/c'", top);
        cr_expect(rc == 0 && strstr(out, "\nrecords:        8\n"), "%s: every record kept: %s", how[i], out);
        free(out);
    }
    // finetune: an image the system fails to open while the run takes the
    // digest of its folder (what a resume is checked against) stops it,
    // rather than leaving the image out of the digest (a later --resume
    // was then refused as "images changed").
    char cmd[8192], *out;
    int rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "LD_PRELOAD='%s' ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0\" "
             "FAILFS_OPEN='circles/img 01' '%s/finetune' --data '%s/data' --head '%s/h.h5' --out '%s/f.h5' "
             "--epochs 1 --threads 1 --quiet 2>&1",
             shim, bin, top, top, top);
    rc = run_command(cmd, &out);
    cr_expect(rc == 1 && strstr(out, "img 01") && strstr(out, "the system's failure"), "exit %d: %s", rc, out);
    free(out);
    remove_tree(top);
    free(top);
}

// A file size limit (ulimit -f) killed the tools with SIGXFSZ (exit 153, no
// word, a .tmp file left), and a .h5 that HDF5 failed to finish crashed the
// process at exit (SIGSEGV in HDF5's own clean-up); closed stdout or stderr
// (`>&-`, `2>&-`) let the cache's lock file take descriptor 1 or 2 and
// receive the log. (The breaker's findings.) Now: exit 1 naming the file and
// "File too large", no temporary file, the old output intact; a closed
// descriptor writes nowhere.
Test(cluster, file_size_limit_and_closed_descriptors) {
    char *top = make_shape_folder("fsize", 2, 3);
    make_cache(top, "c", "--threads 1");
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char cmd[8192], path[2048], *out;
    // A head to keep: train without a limit, then again under one too small
    // for its checkpoint and weights.
    int rc = run("train", &out, "--cache '%s/c' --out '%s/out/head.h5' --epochs 1 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/out/head.h5", top);
    size_t n_before;
    char *before = read_file(path, &n_before);
    for (int k = 0; k < 2; k++) {
        // ulimit -f counts KiB: 4 lets the history through but not a 1.5 MB head (k 0: train; 1: finetune).
        if (k == 0)
            snprintf(cmd, sizeof cmd, "ulimit -f 4; '%s/train' --cache '%s/c' --out '%s/out/head.h5' --epochs 1 --quiet 2>&1",
                     bin, top, top);
        else
            snprintf(cmd, sizeof cmd,
                     "ulimit -f 4; '%s/finetune' --data '%s/data' --head '%s/out/head.h5' --weights random "
                     "--out '%s/out/m.h5' --epochs 1 --threads 1 --quiet 2>&1",
                     bin, top, top, top);
        rc = run_command(cmd, &out);
        cr_expect_eq(rc, 1, "exit %d (153: SIGXFSZ, 139: SIGSEGV): %s", rc, out);
        cr_expect(strstr(out, "File too large") != NULL, "%s", out);
        free(out);
        snprintf(cmd, sizeof cmd, "ls -a '%s/out' | grep -c '\\.tmp\\.' 2>&1", top);
        run_command(cmd, &out);
        cr_expect_eq(atoi(out), 0, "temporary files left: %s", out);
        free(out);
    }
    // extract past the limit: the limit named, not "Input/output error".
    snprintf(cmd, sizeof cmd,
             "ulimit -f 16; '%s/extract' --data '%s/data' --cache '%s/fsz' " EXTRACT_ARGS " --threads 1 --quiet 2>&1", bin,
             top, top);
    rc = run_command(cmd, &out);
    cr_expect(rc == 1 && strstr(out, "File too large") && !strstr(out, "Input/output error"), "%s", out);
    free(out);
    size_t n_after;
    char *after = read_file(path, &n_after);
    cr_expect(n_before == n_after && !memcmp(before, after, n_before), "the head was changed by a failed write");
    free(before), free(after);
    // A name with no room for the files written beside it (NAME.history.csv.tmp.PID)
    // fails before the first epoch, not after it.
    char longname[300];
    memset(longname, 'h', 240);
    snprintf(longname + 240, sizeof longname - 240, ".h5");
    rc = run("train", &out, "--cache '%s/c' --out '%s/out/%s' --epochs 1 --quiet", top, top, longname);
    cr_expect(rc == 1 && strstr(out, "file name too long (243 characters") && !strstr(out, "Epoch"), "%s", out);
    free(out);
    // Output that cannot be written (a full disk under `> file`): exit 1,
    // not 0 with the output lost (a pipeline stamped a step from it).
    snprintf(cmd, sizeof cmd, "'%s/extract' --info '%s/c' 2>&1 >/dev/full; echo rc=$?", bin, top);
    run_command(cmd, &out);
    cr_expect(strstr(out, "rc=1") && strstr(out, "extract: error: writing the output (stdout): No space left on device"),
              "%s", out);
    free(out);
    // ... but where stdout is only the log of a run whose outputs are files
    // (train), a warning: a full log disk must not fail a finished job.
    snprintf(cmd, sizeof cmd, "'%s/train' --cache '%s/c' --out '%s/out/log.h5' --epochs 1 2>&1 >/dev/full; echo rc=$?",
             bin, top, top);
    run_command(cmd, &out);
    cr_expect(strstr(out, "rc=0") && strstr(out, "warning: its log on stdout could not be written"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/out/log.h5", top);
    cr_expect_eq(access(path, F_OK), 0, "the head was not written");
    // stderr and stdout closed: the run works and its log lands nowhere.
    snprintf(cmd, sizeof cmd,
             "'%s/extract' --data '%s/data' --cache '%s/closed' " EXTRACT_ARGS " --threads 1 >&- 2>&-; echo rc=$?", bin,
             top, top);
    rc = run_command(cmd, &out);
    cr_expect(strstr(out, "rc=0") != NULL, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/closed/lock.mdb", top);
    size_t n;
    char *lock = read_file(path, &n);
    cr_assert_not_null(lock);
    cr_expect(memmem(lock, n, "xtract", 6) == NULL && memmem(lock, n, "images", 6) == NULL,
              "the log went into lock.mdb");
    free(lock);
    remove_tree(top);
    free(top);
}

// Options in combination (a breaker's findings): --summary follows --cache
// and --head; --resume knows a cache by its records and a folder by its real
// path; finetune's --seed leaves random base weights alone; augmented images
// are not written into the data.
Test(cluster, summary_resume_and_seed_follow_the_data) {
    char *top = make_shape_folder("cluster_combo", 6, 4), *other = make_shape_folder("cluster_combo2", 6, 7);
    make_cache(top, "c", "--threads 1");
    make_cache(other, "c", "--threads 1");
    char *a, *b;
    // --summary --cache: the cache's model, as the shape options describe it.
    int rc = run("train", &a, "--summary --cache '%s/c' --hidden 4", top);
    cr_expect_eq(rc, 0, "%s", a);
    rc = run("train", &b, "--summary --input-size 32 --layer block1_pool --classes 2 --hidden 4");
    cr_expect_eq(rc, 0, "%s", b);
    cr_expect_str_eq(a, b);
    free(a), free(b);
    rc = run("train", &a, "--summary --cache '%s/c' --input-size 150", top);
    cr_expect_eq(rc, 2, "%s", a);
    cr_expect(strstr(a, "--input-size with --summary --cache") != NULL, "%s", a);
    free(a);

    // --resume: another cache with as many records is refused; another
    // spelling of the validation cache's folder is the same folder.
    rc = run("train", &a, "--cache '%s/c' --val-cache '%s/c' --out '%s/h.h5' --epochs 1 --hidden 4 --quiet", top, top,
             top);
    cr_assert_eq(rc, 0, "%s", a);
    free(a);
    rc = run("train", &a, "--cache '%s/c' --val-cache '%s/c' --out '%s/h.h5' --epochs 2 --hidden 4 --quiet --resume",
             other, top, top);
    cr_expect_eq(rc, 1, "%s", a);
    cr_expect(strstr(a, "train_content is sha256:") && strstr(a, "holds other records"), "%s", a);
    free(a);
    rc = run("train", &a,
             "--cache '%s/c' --val-cache '%s/./c/' --out '%s/h.h5' --epochs 2 --hidden 4 --quiet --resume", top, top,
             top);
    cr_expect_eq(rc, 0, "%s", a);
    cr_expect(strstr(a, "Resuming from") != NULL, "%s", a);
    free(a);

    // finetune --summary --head: the head's model.
    rc = run("finetune", &a, "--summary --head '%s/h.h5'", top);
    cr_expect_eq(rc, 0, "%s", a);
    rc = run("finetune", &b, "--summary --input-size 32 --layer block1_pool --classes 2 --hidden 4");
    cr_expect_eq(rc, 0, "%s", b);
    cr_expect_str_eq(a, b);
    free(a), free(b);
    // --seed is the fine-tuning's seed: random base weights are the head's.
    rc = run("finetune", &a,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/m.h5' --epochs 1 --batch 6 --threads 1 "
             "--quiet --seed 5",
             top, top, top);
    cr_expect_eq(rc, 0, "%s", a);
    free(a);
    // A checkpoint of the other tool is named as such.
    rc = run("train", &a, "--cache '%s/c' --out '%s/m.h5' --epochs 2 --hidden 4 --quiet --resume", top, top);
    cr_expect_eq(rc, 1, "%s", a);
    cr_expect(strstr(a, "the checkpoint was written by finetune, not train") != NULL, "%s", a);
    free(a);
    // Augmented images written into --data would be trained on next time.
    rc = run("finetune", &a,
             "--data '%s/data' --head '%s/h.h5' --weights random --out '%s/m2.h5' --epochs 1 --threads 1 --quiet "
             "--save-augmented '%s/data/circles/new'",
             top, top, top, top);
    cr_expect_eq(rc, 2, "%s", a);
    cr_expect(strstr(a, "lies inside --data") != NULL, "%s", a);
    free(a);
    char path[1100];
    snprintf(path, sizeof path, "%s/data/circles/new", top);
    cr_expect(access(path, F_OK) != 0, "%s was made", path);
    remove_tree(top), remove_tree(other);
    free(top), free(other);
}

// Outputs on a shared folder: nothing a run writes replaces an input's
// files, lands in a cache, or goes through a link planted at its temporary
// name; a path with no room for the files beside it fails before the work;
// a log piped to a reader that went away does not kill the run.
Test(cluster, outputs_never_replace_inputs_or_follow_links) {
    char *top = make_shape_folder("outsafe", 2, 3);
    make_cache(top, "c", "--threads 1");
    const char *bin = getenv("VGGFT_BIN") ? getenv("VGGFT_BIN") : TEST_BUILD;
    char cmd[8192], path[2048], *out;
    int rc = run("train", &out, "--cache '%s/c' --out '%s/run/head.h5' --epochs 1 --quiet", top, top);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/run/head.ckpt", top);
    size_t n_ckpt;
    char *ckpt = read_file(path, &n_ckpt);
    cr_assert(ckpt);
    // finetune --out run/head (no .h5): the head's checkpoint and history
    // would be its own.
    rc = run("finetune", &out, "--data '%s/data' --head '%s/run/head.h5' --weights random --out '%s/run/head' "
             "--epochs 1 --threads 1 --quiet", top, top, top);
    cr_expect(rc == 1 && strstr(out, "would replace those of --head") && !strstr(out, "Epoch"), "%s", out);
    free(out);
    size_t n_after;
    char *after = read_file(path, &n_after);
    cr_expect(after && n_after == n_ckpt && !memcmp(after, ckpt, n_ckpt), "the head's checkpoint was replaced");
    free(after), free(ckpt);
    // --out inside the cache (a typo for its folder): refused, the cache intact.
    rc = run("train", &out, "--cache '%s/c' --out '%s/c/data.mdb' --epochs 1 --quiet", top, top);
    cr_expect(rc == 1 && strstr(out, "lies inside --cache"), "%s", out);
    free(out);
    rc = run("extract", &out, "--verify '%s/c'", top);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    // A link planted at the temporary name the run will use (OUT.tmp.PID):
    // the file it points at keeps its bytes, OUT is a file of its own.
    snprintf(path, sizeof path, "%s/victim.txt", top);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("precious\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && bash -c 'ln -s victim.txt run/x.h5.tmp.$$ && exec \"%s/train\" --cache c --out run/x.h5 "
             "--epochs 1 --quiet' 2>&1",
             top, bin);
    rc = run_command(cmd, &out);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    size_t n_victim;
    char *victim = read_file(path, &n_victim);
    cr_expect(victim && n_victim == 9 && !memcmp(victim, "precious\n", 9), "the link's target was written");
    free(victim);
    struct stat st;
    snprintf(path, sizeof path, "%s/run/x.h5", top);
    cr_expect(lstat(path, &st) == 0 && S_ISREG(st.st_mode), "run/x.h5 is not a regular file");
    // A path whose every name fits but whose whole length leaves no room for
    // NAME.confusion.svg.tmp.PID: refused before the first epoch.
    char deep[4200];
    int len = snprintf(deep, sizeof deep, "%s", top);
    char name[201];
    memset(name, 'd', 200), name[200] = 0;
    while (len < 3860) len += snprintf(deep + len, sizeof deep - (size_t)len, "/%s", name);
    len += snprintf(deep + len, sizeof deep - (size_t)len, "/%.*s", 4068 - len, name);
    snprintf(deep + len, sizeof deep - (size_t)len, "/h.h5");  // 4074 characters
    rc = run("train", &out, "--cache '%s/c' --out '%s' --epochs 1 --quiet", top, deep);
    cr_expect(rc == 1 && strstr(out, "path too long") && !strstr(out, "Epoch"), "%s", out);
    free(out);
    // The log piped to `head -1`: train finishes and writes its head.
    snprintf(cmd, sizeof cmd,
             "bash -c '\"%s/train\" --cache \"%s/c\" --out \"%s/run/piped.h5\" --epochs 2 | head -1 >/dev/null; "
             "echo rc=${PIPESTATUS[0]}' 2>&1",
             bin, top, top);
    run_command(cmd, &out);
    cr_expect(strstr(out, "rc=0"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/run/piped.h5", top);
    cr_expect_eq(access(path, F_OK), 0, "the head was not written");
    remove_tree(top);
    free(top);
}

// A cache whose extract was killed after writing its settings and before its
// first records: train says it is incomplete and how to continue it.
Test(cluster, empty_incomplete_cache_says_rerun_extract) {
    char *top = make_shape_folder("emptyinc", 3, 3);
    char args[4096], *out;
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s/c' " EXTRACT_ARGS " --threads 1 --quiet", top, top);
    setenv("VGGFT_TEST_CRASH_AFTER", "1", 1);
    int rc = run_tool_timeout("extract", args, 120, &out);
    unsetenv("VGGFT_TEST_CRASH_AFTER");
    cr_assert_eq(rc, 137, "%s", out);
    free(out);
    rc = run("train", &out, "--cache '%s/c' --out '%s/h.h5' --epochs 1 --quiet", top, top);
    cr_expect(rc == 1 && strstr(out, "holds no records (it is incomplete") && strstr(out, "rerun that extract"), "%d: %s",
              rc, out);
    free(out);
    remove_tree(top);
    free(top);
}

// --val-cache that holds the training records (the same cache, or a copy):
// trained, with a warning that the validation figures are training figures.
Test(cluster, validation_on_the_training_records_warns) {
    char *top = make_shape_folder("valsame", 2, 3);
    make_cache(top, "c", "--threads 1");
    char *out;
    int rc = run("train", &out, "--cache '%s/c' --val-cache '%s/c' --out '%s/h.h5' --epochs 1 --quiet", top, top, top);
    cr_expect(rc == 0 && strstr(out, "holds the very records of --cache"), "%d: %s", rc, out);
    free(out);
    remove_tree(top);
    free(top);
}
