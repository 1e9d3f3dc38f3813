// Command line, progress bar, BLAS kernel choice, device selection and error messages.
#define _GNU_SOURCE  // posix_openpt, ptsname, cfmakeraw
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "blas_setup.h"
#include "cli.h"
#include "device.h"
#include "error.h"
#include "fileutil.h"
#include "gpu.h"
#include "progress.h"
#include "testutil.h"

typedef struct {
    const char *name, *mode;
    int n, flag;
    float lr;
} Opts;

static CliSpec make_spec(Opts *o, CliOption *opts) {
    CliOption t[] = {
        {"name", OPT_STRING, &o->name, NULL, "NAME", "a name"},
        {"mode", OPT_CHOICE, &o->mode, "caffe", NULL, "a mode", "caffe|rescale|torch"},
        {"n", OPT_INT, &o->n, "32", "N", "a count"},
        {"flag", OPT_FLAG, &o->flag, NULL, NULL, "a flag"},
        {"lr", OPT_FLOAT, &o->lr, "0.001", "LR", "a rate"},
    };
    memcpy(opts, t, sizeof t);
    return (CliSpec){"tool", "Does things.", "[options]", NULL, opts, 5};
}

Test(cli, defaults_and_values) {
    Opts o;
    CliOption opts[5];
    CliSpec s = make_spec(&o, opts);
    char *argv1[] = {"tool", NULL};
    cr_assert_eq(cli_parse(&s, 1, argv1, NULL, NULL), CLI_OK);
    cr_expect_str_eq(o.mode, "caffe");
    cr_expect_eq(o.n, 32);
    cr_expect_float_eq(o.lr, 0.001f, 1e-9);
    cr_expect_null(o.name);
    cr_expect_eq(o.flag, 0);

    char *argv2[] = {"tool", "--name", "x y", "--mode=torch", "--n", "-4", "--flag", "--lr=1e-5", NULL};
    cr_assert_eq(cli_parse(&s, 8, argv2, NULL, NULL), CLI_OK);
    cr_expect_str_eq(o.name, "x y");
    cr_expect_str_eq(o.mode, "torch");
    cr_expect_eq(o.n, -4);
    cr_expect_eq(o.flag, 1);
    cr_expect_float_eq(o.lr, 1e-5f, 1e-12);
    cr_expect_eq(cli_find(&s, "name")->seen, 1);
    cr_expect_eq(cli_find(&s, "n")->seen, 1);
}

Test(cli, usage_errors, .init = cr_redirect_stderr) {
    Opts o;
    CliOption opts[5];
    CliSpec s = make_spec(&o, opts);
    char *bad_choice[] = {"tool", "--mode", "tf", NULL};
    cr_expect_eq(cli_parse(&s, 3, bad_choice, NULL, NULL), CLI_USAGE);
    char *bad_int[] = {"tool", "--n", "12x", NULL};
    cr_expect_eq(cli_parse(&s, 3, bad_int, NULL, NULL), CLI_USAGE);
    char *unknown[] = {"tool", "--nope", NULL};
    cr_expect_eq(cli_parse(&s, 2, unknown, NULL, NULL), CLI_USAGE);
    char *missing[] = {"tool", "--n", NULL};
    cr_expect_eq(cli_parse(&s, 2, missing, NULL, NULL), CLI_USAGE);
    char *positional[] = {"tool", "stray", NULL};
    cr_expect_eq(cli_parse(&s, 2, positional, NULL, NULL), CLI_USAGE);
    char *hex[] = {"tool", "--lr", "0x10", NULL};
    cr_expect_eq(cli_parse(&s, 3, hex, NULL, NULL), CLI_USAGE);
    char *after_dashes[] = {"tool", "--", "x", NULL};
    cr_expect_eq(cli_parse(&s, 3, after_dashes, NULL, NULL), CLI_USAGE);
    char *flag_typo[] = {"tool", "--flag=on", NULL};
    cr_expect_eq(cli_parse(&s, 2, flag_typo, NULL, NULL), CLI_USAGE);
    char *spaced[] = {"tool", "--n", " 3", NULL};
    cr_expect_eq(cli_parse(&s, 3, spaced, NULL, NULL), CLI_USAGE);
    // Numbers beyond the type: out of range, not "not a number" (and never
    // a float infinity or 0 passed on).
    char *huge[] = {"tool", "--lr", "1e400", NULL}, *float_inf[] = {"tool", "--lr", "1e39", NULL},
         *float_zero[] = {"tool", "--lr", "1e-50", NULL}, *big_int[] = {"tool", "--n", "99999999999", NULL};
    cr_expect_eq(cli_parse(&s, 3, huge, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, float_inf, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, float_zero, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, big_int, NULL, NULL), CLI_USAGE);
    // float32's own extremes pass (as numpy's float32() takes them).
    char *fmax[] = {"tool", "--lr", "3.4028235e38", NULL}, *fmin[] = {"tool", "--lr", "1e-45", NULL};
    cr_expect_eq(cli_parse(&s, 3, fmax, NULL, NULL), CLI_OK);
    cr_expect_eq(o.lr, FLT_MAX);
    cr_expect_eq(cli_parse(&s, 3, fmin, NULL, NULL), CLI_OK);
    cr_expect(o.lr > 0);
    fflush(stderr);
    cr_expect_stderr_eq_str(
        "tool: error: --mode: 'tf' is not one of caffe|rescale|torch\n"
        "tool: error: --n: '12x' is not an integer\n"
        "tool: error: unknown option '--nope' (see --help)\n"
        "tool: error: option '--n' needs a value (N)\n"
        "tool: error: unexpected argument 'stray' (see --help)\n"
        "tool: error: --lr: '0x10' is not a number\n"
        "tool: error: unexpected argument 'x' (see --help)\n"
        "tool: error: --flag=on: a flag takes 1/true/yes or 0/false/no\n"
        "tool: error: --n: ' 3' starts with a space\n"
        "tool: error: --lr: '1e400' is out of range (it would be infinite as a float32)\n"
        "tool: error: --lr: '1e39' is out of range (it would be infinite as a float32)\n"
        "tool: error: --lr: '1e-50' is out of range (it would be 0 as a float32)\n"
        "tool: error: --n: '99999999999' is out of range (at most 2147483647)\n");
}

// An unknown option says what was probably meant: Keras's underscores, the
// one option the name begins, the one nearest by two edits, another
// tool's option with why not here; nothing when two are as near.
Test(cli, unknown_options_name_what_was_meant, .init = cr_redirect_stderr) {
    int epochs = 0;
    float split = 0;
    const char *cache = NULL, *opt = NULL;
    CliOption opts[] = {
        {"epochs", OPT_INT, &epochs, "1", "N", "epochs"},
        {"validation-split", OPT_FLOAT, &split, "0", "F", "split"},
        {"val-cache", OPT_STRING, &cache, NULL, "VAL", "cache"},
        {"optimizer", OPT_CHOICE, &opt, "sgd", NULL, "optimizer", "sgd|adam"},
        {0},
    };
    static const char *const not_here[][2] = {{"input-size", "it comes from the model file"}, {NULL, NULL}};
    CliSpec s = {"tool", "Does things.", "[options]", NULL, opts, 0, not_here};
    char *a[] = {"tool", "--validation_split", "0.2", NULL}, *b[] = {"tool", "--epoch", "2", NULL},
         *c[] = {"tool", "--optimiser", "sgd", NULL}, *d[] = {"tool", "--input-size", "9", NULL},
         *e[] = {"tool", "--val", "x", NULL}, *f[] = {"tool", "--zzz", NULL},
         *g[] = {"tool", "--batch_size", "8", NULL}, *h[] = {"tool", "--horizontal-flip", NULL};
    cr_expect_eq(cli_parse(&s, 3, a, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, b, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, c, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, d, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 3, e, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 2, f, NULL, NULL), CLI_USAGE);
    // Keras's names of what every tool spells otherwise.
    cr_expect_eq(cli_parse(&s, 3, g, NULL, NULL), CLI_USAGE);
    cr_expect_eq(cli_parse(&s, 2, h, NULL, NULL), CLI_USAGE);
    fflush(stderr);
    cr_expect_stderr_eq_str(
        "tool: error: unknown option '--validation_split': did you mean --validation-split? (see --help)\n"
        "tool: error: unknown option '--epoch': did you mean --epochs? (see --help)\n"
        "tool: error: unknown option '--optimiser': did you mean --optimizer? (see --help)\n"
        "tool: error: unknown option '--input-size': it comes from the model file (see --help)\n"
        "tool: error: unknown option '--val' (see --help)\n"
        "tool: error: unknown option '--zzz' (see --help)\n"
        "tool: error: unknown option '--batch_size': Keras's batch_size is --batch here (see --help)\n"
        "tool: error: unknown option '--horizontal-flip': ImageDataGenerator's augmentation is finetune's --augment "
        "(e.g. --augment flip) (see --help)\n");
}

// The on/off environment variables (VGGFT_GPU_GRAPH, VGGFT_PROGRESS, ...):
// the words for on and off in any case, the default when unset or empty,
// and a value that is neither (VGGFT_GPU_GRAPH=false turned graphs on
// before) the default with one warning per variable.
Test(cli, env_flags_take_on_off_words_and_warn_once_on_others, .init = cr_redirect_stderr) {
    static const char *const on[] = {"1", "true", "YES", "On"}, *const off[] = {"0", "False", "no", "OFF"};
    for (int k = 0; k < 4; k++) {
        setenv("VGGFT_TEST_FLAG", on[k], 1);
        cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 0), 1, "%s", on[k]);
        setenv("VGGFT_TEST_FLAG", off[k], 1);
        cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 1), 0, "%s", off[k]);
    }
    setenv("VGGFT_TEST_FLAG", "", 1);
    cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 1), 1);
    unsetenv("VGGFT_TEST_FLAG");
    cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 0), 0);
    cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 1), 1);
    setenv("VGGFT_TEST_FLAG", "flase", 1);
    cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 0), 0);
    cr_expect_eq(env_flag("VGGFT_TEST_FLAG", 0), 0);
    setenv("VGGFT_TEST_OTHER", "2", 1);
    cr_expect_eq(env_flag("VGGFT_TEST_OTHER", 1), 1);
    unsetenv("VGGFT_TEST_FLAG");
    unsetenv("VGGFT_TEST_OTHER");
    fflush(stderr);
    // Two lines, each after the log's time stamp (stderr is not a terminal here).
    char err[1000];
    size_t n = fread(err, 1, sizeof err - 1, cr_get_redirected_stderr());
    err[n] = 0;
    const char *a = strstr(err, " warning: VGGFT_TEST_FLAG=flase is not one of 1, true, yes, on, 0, false, no, off: "
                                "using 0 (off)\n"),
               *b = strstr(err, " warning: VGGFT_TEST_OTHER=2 is not one of 1, true, yes, on, 0, false, no, off: "
                                "using 1 (on)\n");
    cr_expect(a && b && b > a, "%s", err);
    int lines = 0;
    for (const char *c = err; *c; c++) lines += *c == '\n';
    cr_expect_eq(lines, 2, "%s", err);
}

// "--" ends the options: what follows is positional, "--flag" included; a
// "--" that is an option's value stays that value.
Test(cli, double_dash_ends_the_options) {
    Opts o;
    CliOption opts[5];
    CliSpec s = make_spec(&o, opts);
    char *argv[] = {"tool", "a", "--name", "--", "--n", "3", "--", "--flag", "b", NULL};
    int n_rest = 0;
    char **rest = NULL;
    cr_assert_eq(cli_parse(&s, 9, argv, &n_rest, &rest), CLI_OK);
    cr_expect_str_eq(o.name, "--");
    cr_expect_eq(o.n, 3);
    cr_expect_eq(o.flag, 0, "--flag after -- is an argument");
    cr_assert_eq(n_rest, 3);
    cr_expect_str_eq(rest[0], "a");
    cr_expect_str_eq(rest[1], "--flag");
    cr_expect_str_eq(rest[2], "b");
    free(rest);
}

Test(cli, help_lists_options_with_defaults) {
    Opts o;
    CliOption opts[5];
    CliSpec s = make_spec(&o, opts);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cli_print_help(&s, f);
    fclose(f);
    cr_expect(strstr(text, "usage: tool [options]") != NULL, "%s", text);
    cr_expect(strstr(text, "--mode {caffe|rescale|torch}") != NULL, "%s", text);
    cr_expect(strstr(text, "a count (default: 32)") != NULL, "%s", text);
    cr_expect(strstr(text, "--version") != NULL, "%s", text);
    free(text);
}

// --help fits an 80-column terminal: descriptions wrap at word boundaries
// (the authors' own line breaks are only spaces), a long option name gets
// a line of its own, and "(default: X)" stays whole.
Test(cli, help_wraps_to_80_columns) {
    int n = 0;
    float lr = 0;
    CliOption opts[] = {
        {"a-rather-long-option-name-indeed", OPT_INT, &n, "123456", "COUNT",
         "how many of the things that this option counts there are,\nwith a description far longer than a "
         "line of any terminal, so that it wraps more than once at word boundaries"},
        {"lr", OPT_FLOAT, &lr, "0.001", "LR", "a rate"},
        {0},
    };
    CliSpec s = {"tool", "Does things.", "[options]", NULL, opts, 0};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cli_print_help(&s, f);
    fclose(f);
    int lines = 0;
    for (char *line = text, *end; *line; line = end + 1) {
        end = strchr(line, '\n');
        if (!end) break;
        cr_expect_leq(end - line, 80, "a line of %d columns: %.*s", (int)(end - line), (int)(end - line), line);
        lines++;
    }
    cr_expect(strstr(text, "(default: 123456)") != NULL, "%s", text);
    cr_expect(strstr(text, "are, with a description") != NULL, "the author's newline is a space: %s", text);
    cr_expect(strstr(text, "  --a-rather-long-option-name-indeed COUNT\n") != NULL, "%s", text);
    cr_expect(strstr(text, "a rate (default: 0.001)") != NULL, "%s", text);
    cr_expect_gt(lines, 8, "%s", text);
    free(text);
}

Test(cli, command_line_is_shell_quoted) {
    char *argv[] = {"extract", "--data", "my photos", "--x", "it's", NULL};
    char *s = cli_command_line(5, argv, NULL);
    cr_expect_str_eq(s, "extract --data 'my photos' --x 'it'\\''s'");
    free(s);
}

// The path options' values become absolute when they name existing files
// (relative to the folder the tool ran in), in both forms; other values,
// other options and words after "--" stay as given.
Test(cli, command_line_makes_path_options_absolute) {
    char *dir = make_temp_dir("cmdline"), cwd[4096], want[8192];
    cr_assert(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    write_file("w.h5", "x", 1);
    write_file("v 2.h5", "x", 1);
    cr_assert_eq(mkdir("sub", 0755), 0);
    char *argv[] = {"extract", "--weights", "sub/../w.h5", "--weights=v 2.h5", "--cache", "w.h5", "--weights",
                    "missing.h5", "--", "--weights", "w.h5", NULL};
    const char *const paths[] = {"weights", NULL};
    char *s = cli_command_line(11, argv, paths);
    char *real = realpath(dir, NULL);  // (TMPDIR may lead through a link)
    snprintf(want, sizeof want, "extract --weights %s/w.h5 '--weights=%s/v 2.h5' --cache w.h5 --weights missing.h5 -- "
             "--weights w.h5", real, real);
    free(real);
    cr_expect_str_eq(s, want);
    free(s);
    cr_assert_eq(chdir(cwd), 0);
    remove_tree(dir);
    free(dir);
}

Test(progress, keras_bar_format) {
    Progress p;
    FILE *devnull = fopen("/dev/null", "w");
    progress_start(&p, devnull, 100, "img");
    char line[256];
    progress_format(&p, 63, 6.3, 0, "loss: 0.4100 - acc: 0.8300", line, sizeof line);
    // 63% of a 30-wide bar: 18 '=' then '>' then 11 '.'; 10 img/s -> ETA 4s.
    cr_expect_str_eq(line, " 63/100 [=================>............] - ETA: 4s - 10.0 img/s - loss: 0.4100 - acc: 0.8300");
    progress_format(&p, 100, 125, 1, NULL, line, sizeof line);
    cr_expect_str_eq(line, "100/100 [==============================] - 2:05 - 1.25 s/img");
    progress_format(&p, 0, 0, 0, NULL, line, sizeof line);
    cr_expect_str_eq(line, "  0/100 [..............................]");
    fclose(devnull);
}

// A bar of `total` items writing to a memory stream (a log, not a
// terminal) at 10-second intervals; log_bar_text flushes it and gives what
// it wrote; log_bar_close frees it all.
typedef struct {
    Progress p;
    FILE *f;
    char *text;
    size_t len;
    double t0;  // the bar's start, for progress_update_at
} LogBar;

static void log_bar(LogBar *b, long total) {
    memset(b, 0, sizeof *b);
    b->f = open_memstream(&b->text, &b->len);
    setenv("VGGFT_PROGRESS_INTERVAL", "10", 1);
    progress_start(&b->p, b->f, total, "img");
    b->t0 = b->p.t_start;
}

static const char *log_bar_text(LogBar *b) {
    fflush(b->f);
    return b->text;
}

static void log_bar_close(LogBar *b) {
    fclose(b->f);
    free(b->text);
    unsetenv("VGGFT_PROGRESS_INTERVAL");
}

static int count_lines(const char *text) {
    int lines = 0;
    for (const char *c = text; *c; c++) lines += *c == '\n';
    return lines;
}

Test(progress, log_mode_prints_lines_at_intervals) {
    LogBar b;
    log_bar(&b, 50);
    Progress *p = &b.p;
    cr_assert_eq(p->tty, 0);
    progress_update_at(p, 1, NULL, b.t0 + 1);   // first update prints
    progress_update_at(p, 5, NULL, b.t0 + 5);   // within 10 s: silent
    progress_update_at(p, 20, NULL, b.t0 + 12); // prints
    progress_update_at(p, 30, NULL, b.t0 + 13); // silent
    const char *text = log_bar_text(&b);
    cr_expect_eq(count_lines(text), 2, "%s", text);
    cr_expect(strstr(text, "\r") == NULL, "log mode must not use carriage returns");
    cr_expect(strstr(text, "20/50 [") != NULL, "%s", text);
    log_bar_close(&b);
}

// A log's last line is the finished one only: the update that reaches the
// total is the finish's line, without ETA (predict wrote both).
Test(progress, log_mode_prints_the_last_line_once) {
    LogBar b;
    log_bar(&b, 50);
    Progress *p = &b.p;
    progress_update_at(p, 20, NULL, b.t0 + 12);  // prints
    progress_update_at(p, 50, NULL, b.t0 + 30);  // the total: left to the finish
    progress_finish(p, NULL);
    const char *text = log_bar_text(&b);
    cr_expect_eq(count_lines(text), 2, "%s", text);
    cr_expect(strstr(text, "ETA: 0s") == NULL, "%s", text);
    char *last = strstr(text, "50/50 [");
    cr_expect(last && !strstr(last + 1, "50/50 ["), "the last line once: %s", text);
    log_bar_close(&b);
}

// Work after the counted items (finetune's validation after an epoch's
// last step): the bar at its total with other metrics, in a log at the
// log's intervals, without an ETA; erasing is for terminals only.
Test(progress, status_redraws_the_finished_bar_with_other_metrics) {
    LogBar b;
    log_bar(&b, 50);
    Progress *p = &b.p;
    progress_update_at(p, 50, "loss: 0.5", b.t0 + 2);              // the total: nothing in a log
    progress_status_at(p, "loss: 0.5 - validating 8/40", b.t0 + 3);   // prints
    progress_status_at(p, "loss: 0.5 - validating 16/40", b.t0 + 5);  // within 10 s: silent
    progress_status_at(p, "loss: 0.5 - validating 32/40", b.t0 + 14); // prints
    const char *text = log_bar_text(&b);
    cr_expect_eq(count_lines(text), 2, "%s", text);
    cr_expect(strstr(text, "50/50 [==============================] - loss: 0.5 - validating 8/40\n"),
              "no rate either (validating would lower it): %s", text);
    cr_expect(strstr(text, "validating 32/40") && !strstr(text, "16/40"), "%s", text);
    cr_expect(!strstr(text, "ETA") && !strchr(text, '\r'), "%s", text);
    log_bar_close(&b);
}

// A bar whose result the caller prints itself (finetune's validation
// before the first epoch): in a log, ended by a finished line when it
// wrote any, so the log does not stop at "20/50"; nothing when it wrote none.
Test(progress, close_ends_a_log_bar_that_wrote_a_line) {
    LogBar b;
    log_bar(&b, 50);
    Progress *p = &b.p;
    progress_update_at(p, 20, "validating", b.t0 + 12);  // prints
    progress_update_at(p, 50, "validating", b.t0 + 20);  // the total: silent
    progress_close(p, "validated");
    const char *text = log_bar_text(&b);
    cr_expect_eq(count_lines(text), 2, "%s", text);
    cr_expect(strstr(text, "20/50 [") && strstr(text, "50/50 [==============================] - ") &&
                  strstr(text, " - validated\n"),
              "%s", text);
    log_bar_close(&b);
    log_bar(&b, 50);
    progress_update_at(&b.p, 50, "validating", b.t0 + 0.5);  // a fast one: no line
    progress_close(&b.p, "validated");
    cr_expect_str_eq(log_bar_text(&b), "");
    log_bar_close(&b);
}

// A pseudo-terminal: its master in *master (what was written, to read
// back), its slave returned (a terminal to write to).
static int open_pty(int *master) {
    *master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert(*master >= 0 && grantpt(*master) == 0 && unlockpt(*master) == 0);
    int slave = open(ptsname(*master), O_RDWR | O_NOCTTY);
    cr_assert(slave >= 0);
    return slave;
}

// A pseudo-terminal of `cols` columns in raw mode (bytes as written, no
// \n -> \r\n), opened for writing; its master in *master.
static FILE *open_pty_cols(int *master, int cols) {
    int slave = open_pty(master);
    struct termios t;
    cr_assert_eq(tcgetattr(slave, &t), 0);
    cfmakeraw(&t);
    cr_assert_eq(tcsetattr(slave, TCSANOW, &t), 0);
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    cr_assert_eq(ioctl(slave, TIOCSWINSZ, &ws), 0);
    FILE *f = fdopen(slave, "w");
    cr_assert(f);
    return f;
}

// What the terminal was sent (the writer has closed), as a string; the
// master closed. A read may return part (the line discipline's chunks):
// read until none is left (0, or EIO once the closed slave is drained).
static void pty_read(int master, char *buf, size_t size) {
    size_t got = 0;
    ssize_t n;
    while (got < size - 1 && (n = read(master, buf + got, size - 1 - got)) > 0) got += (size_t)n;
    close(master);
    cr_assert(got > 0);
    buf[got] = '\0';
}

// On a terminal a redrawn line fits its width (a line that wraps is
// redrawn a row lower each time, scrolling); the final line is whole.
Test(progress, terminal_lines_fit_its_width) {
    int master;
    FILE *f = open_pty_cols(&master, 72);
    Progress p;
    progress_start(&p, f, 10, "img");
    cr_assert(p.tty);
    const char *long_metrics = "validating 40/153 - loss: 0.4100 - accuracy: 0.8300";
    progress_update_at(&p, 10, long_metrics, p.t_start + 2);
    progress_finish(&p, long_metrics);
    fclose(f);
    char buf[1024];
    pty_read(master, buf, sizeof buf);
    char *redrawn = strtok(buf, "\r\n"), *final = strtok(NULL, "\r\n");
    cr_assert(redrawn && final, "%s", buf);
    // The bar gave up its place to the figures: all of them fit in 71.
    cr_expect(strlen(redrawn) <= 71 && strstr(redrawn, long_metrics) && !strchr(redrawn, '['),
              "the figures in the width less one: '%s'", redrawn);
    cr_expect(strstr(final, long_metrics) && strstr(final, "[====="), "the final line is whole: '%s'", final);
}

// Lines a little too wide narrow the bar, which stays that narrow; lines
// that would not fit even without it lose whole fields from the end (no
// figure cut short) to fit the width less one (a full row would wrap on
// some terminals).
Test(progress, terminal_bars_narrow_then_lines_are_cut) {
    const int cols[2] = {60, 30};
    for (int k = 0; k < 2; k++) {
        int master;
        FILE *f = open_pty_cols(&master, cols[k]);
        Progress p;
        progress_start(&p, f, 100, "img");
        progress_update_at(&p, 50, "loss: 0.4100", p.t_start + 2);
        progress_update_at(&p, 60, NULL, p.t_start + 3);  // a shorter line
        fclose(f);
        char buf[1024];
        pty_read(master, buf, sizeof buf);
        char *redrawn = strtok(buf, "\r\n"), *next = strtok(NULL, "\r\n");
        cr_assert(redrawn && next, "%s", buf);
        // 60 columns: " 50/100 [" + a bar narrowed from 30 to 11 + "] - ETA: 2s - 25.0 img/s - loss: 0.4100".
        if (k == 0) {
            cr_expect(strlen(redrawn) == 59 && strstr(redrawn, "loss: 0.4100") && strstr(redrawn, "[====>......]"),
                      "the bar narrowed to fit: '%s' (%zu)", redrawn, strlen(redrawn));
            cr_expect(strstr(next, " 60/100 [=====>.....]"), "the bar stays narrow: '%s'", next);
        } else {
            // " 50/100 - ETA: 2s - 25.0 img/s" is 30: the rate goes whole.
            cr_expect_str_eq(redrawn, " 50/100 - ETA: 2s", "no bar, then whole fields only");
        }
    }
}

// A warning takes a terminal bar's line (no stale copy of the bar above
// it); a log's lines are left alone.
Test(progress, warnings_wipe_a_terminal_bar_not_a_log) {
    int master, slave = open_pty(&master);
    FILE *tty = fdopen(slave, "w");
    setvbuf(tty, NULL, _IONBF, 0);
    fputs("\r 3/10 [=====>", tty);
    log_wipe_line(tty);
    fclose(tty);
    char buf[256];
    pty_read(master, buf, sizeof buf);
    cr_expect(strstr(buf, "[=====>\r\033[K"), "the bar's line blanked: '%s'", buf);
    char *text = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&text, &len);
    log_wipe_line(log);
    fclose(log);
    cr_expect_str_eq(text, "");
    free(text);
}

Test(blas, better_kernel_choice) {
    cr_expect_str_eq(blas_better_coretype("Prescott", 1, 1), "SkylakeX");
    cr_expect_str_eq(blas_better_coretype("Haswell", 1, 1), "SkylakeX");
    cr_expect_null(blas_better_coretype("SkylakeX", 1, 1));
    cr_expect_null(blas_better_coretype("cooperlake", 1, 1));
    cr_expect_str_eq(blas_better_coretype("Prescott", 0, 1), "Haswell");
    cr_expect_null(blas_better_coretype("Zen", 0, 1));
    cr_expect_null(blas_better_coretype("Prescott", 0, 0));  // an old CPU: nothing better
}

Test(device, auto_falls_back_and_cuda_explains) {
    char why[256];
    if (gpu_count(why, sizeof why) > 0) cr_skip_test("a GPU is present: the fallback path is not reachable here");
    DeviceKind d = DEVICE_CUDA;
    char note[256];
    cr_assert_eq(device_select("auto", &d, note, sizeof note), 0);
    cr_expect_eq(d, DEVICE_CPU);
    // The reason, or on a node without a driver at all, a short word of it
    // (it is on every start line; --version has the whole).
    if (!strncmp(why, "NVIDIA driver not found", 23))
        cr_expect(strstr(note, "CPU (no usable GPU: no NVIDIA driver on this node"), "%s", note);
    else
        cr_expect(strstr(note, "CPU") && strstr(note, why), "%s", note);
    cr_expect_eq(device_select("cuda", &d, NULL, 0), -1);
    cr_expect(strstr(err_msg(), "--device cuda") && strstr(err_msg(), why), "%s", err_msg());
    cr_expect_eq(device_select("tpu", &d, NULL, 0), -1);
    cr_expect_eq(device_select("cpu", &d, NULL, 0), 0);
    cr_expect_eq(d, DEVICE_CPU);
}

// Metric values in the epoch lines as Keras's progress bar prints them
// (keras/src/utils/progbar.py: f"{v:.4f}" when abs(v) > 1e-3, else
// f"{v:.4e}"): a newcomer saw a real loss of 1.69e-5 shown as 0.0000.
Test(progress, metric_values_as_keras_prints_them) {
    char b[KERAS_VALUE_MAX];
    cr_expect_str_eq(keras_value(0.6642, b), "0.6642");
    cr_expect_str_eq(keras_value(-0.5, b), "-0.5000");
    cr_expect_str_eq(keras_value(1.69e-5, b), "1.6900e-05");
    cr_expect_str_eq(keras_value(0.0, b), "0.0000e+00");
    cr_expect_str_eq(keras_value(0.001, b), "1.0000e-03");
    cr_expect_str_eq(keras_value(0.0011, b), "0.0011");
    cr_expect_str_eq(keras_value(67.13157, b), "67.1316");
    // A diverging loss in full, not cut to 15 characters (a breaker saw
    // 1.72e23 printed as 172322925895537).
    cr_expect_str_eq(keras_value(1.72322926e+23, b), "172322926000000011862016.0000");
    cr_expect_str_eq(keras_value(14248738816.0, b), "14248738816.0000");
    cr_expect_str_eq(keras_value(-3.4028234663852886e38, b), "-340282346638528859811704183484516925440.0000");
}

// err_set may quote the message it replaces (callers add a hint to a lower
// layer's error that way), err_prefix adds context before it, and a message
// kept across cleanup code survives what the cleanup reports.
Test(error, messages_wrap_prefix_and_survive_cleanup) {
    err_set("reading %s: %s", "a.h5", "truncated");
    err_set("%s (give the file with --weights FILE)", err_msg());
    cr_assert_str_eq(err_msg(), "reading a.h5: truncated (give the file with --weights FILE)");
    err_prefix("layer %s: ", "block5_conv1");
    cr_assert_str_eq(err_msg(), "layer block5_conv1: reading a.h5: truncated (give the file with --weights FILE)");

    ErrKept k;
    err_keep(&k);
    err_set("cleanup failed too");
    cr_assert_eq(err_restore(&k), -1);
    cr_assert_str_eq(err_msg(), "layer block5_conv1: reading a.h5: truncated (give the file with --weights FILE)");

    // Longer than the buffer: cut, and says so, also when quoting itself.
    static char big[ERR_MSG_MAX + 100];
    memset(big, 'x', sizeof big - 1);
    err_set("%s", big);
    err_set("%s", err_msg());
    size_t n = strlen(err_msg());
    cr_assert_eq(n, ERR_MSG_MAX - 1);
    cr_assert_str_eq(err_msg() + n - 3, "...");
}

// path_within decides whether an output would land inside an input folder
// (finetune's --save-augmented, extract's --cache): as written, as
// resolved, and below a class folder linked in from elsewhere.
Test(fileutil, path_within_written_resolved_and_linked) {
    char *top = make_temp_dir("within");
    char data[1100], real_cls[1100], link[1100], p[1200];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(real_cls, sizeof real_cls, "%s/elsewhere/ants", top);
    cr_assert_eq(make_dirs(data), 0);
    cr_assert_eq(make_dirs(real_cls), 0);
    snprintf(link, sizeof link, "%s/ants", data);
    cr_assert_eq(symlink(real_cls, link), 0);
    snprintf(p, sizeof p, "%s/data/ants/aug", top);  // through the link, as written
    cr_expect(path_within(p, data));
    snprintf(p, sizeof p, "%s/elsewhere/ants/aug/deeper", top);  // the folder behind the link
    cr_expect(path_within(p, data));
    snprintf(p, sizeof p, "%s/data/../data/new/x", top);  // ".." and not made yet
    cr_expect(path_within(p, data));
    snprintf(p, sizeof p, "%s/data//", top);  // the folder itself
    cr_expect(path_within(p, data));
    snprintf(p, sizeof p, "%s/data2/x", top);  // a longer name is not inside
    cr_expect(!path_within(p, data));
    snprintf(p, sizeof p, "%s/elsewhere/bees", top);
    cr_expect(!path_within(p, data));
    snprintf(p, sizeof p, "%s/data/../out", top);
    cr_expect(!path_within(p, data));
    // Relative to the working directory, on both sides.
    char cwd[1100];
    cr_assert(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(top), 0);
    cr_expect(path_within("data/aug", "data"));
    cr_expect(path_within("./data/ants/aug", "./data/"));
    cr_expect(!path_within("aug", "data"));
    cr_expect(path_within("data/aug", top));
    cr_assert_eq(chdir(cwd), 0);
    remove_tree(top);
    free(top);
}
