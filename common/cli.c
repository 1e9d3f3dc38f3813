#define _GNU_SOURCE  // program_invocation_short_name
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "blas_setup.h"
#include "simd.h"

// At exit: output that could not be written (a full disk under `> file`,
// /dev/full) is a failure, not exit 0 with the output lost; a pipeline
// that stamps a step from a tool's output would otherwise keep an empty
// stamp. A closed pipe (`| head`) ends predict, whose stdout is its
// output, with SIGPIPE before this, as it ends other filters.
static int error_reported;  // cli_error ran: the run failed and said why
static int stdout_is_log;   // cli_stdout_is_log: stdout only tells about the run

// A log whose reader went away (`train ... | head -3`, a closed terminal
// pipe) must not kill a training run before its outputs: without SIGPIPE
// the writes fail with EPIPE and the run goes on, as with /dev/full.
// Line-buffered, so that in a log that holds both streams (Slurm's
// slurm-JOBID.out, `> log 2>&1`) its lines stay in order with stderr's.
void cli_stdout_is_log(void) {
    stdout_is_log = 1;
    signal(SIGPIPE, SIG_IGN);
    fflush(stdout);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static void check_stdout(void) {
    if (fflush(stdout) == 0 && !ferror(stdout)) return;
    if (error_reported) _exit(1);  // its own message said it (predict names stdout itself)
    if (stdout_is_log) {  // the outputs are files, and they were written: the run's status stands
        fprintf(stderr, "%s: warning: its log on stdout could not be written (%s); the outputs are complete\n",
                program_invocation_short_name, strerror(errno ? errno : EIO));
        return;
    }
    fprintf(stderr, "%s: error: writing the output (stdout): %s\n", program_invocation_short_name,
            strerror(errno ? errno : EIO));
    _exit(1);
}

static int closed_at_start[3];

int cli_closed_at_start(int fd) { return fd >= 0 && fd <= 2 && closed_at_start[fd]; }

// A closed standard stream gets /dev/null in its place, so that no file we
// open takes its number (and our writes to it).
static void fill_closed(void) {
    for (int fd = 0; fd <= 2; fd++)
        if (closed_at_start[fd]) {
            int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (n >= 0 && n != fd) dup2(n, fd), close(n);  // n < fd only if a lower one was closed too
        }
}

void cli_before_exec(void) {
    for (int fd = 0; fd <= 2; fd++)
        if (closed_at_start[fd]) close(fd);
}

void cli_after_failed_exec(void) { fill_closed(); }

void cli_process_setup(void) {
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) closed_at_start[fd] = 1;
    fill_closed();
    signal(SIGXFSZ, SIG_IGN);
    atexit(check_stdout);
}

#include "device.h"
#include "error.h"
#include "fileutil.h"
#include "progress.h"  // log_printf

int env_flag(const char *name, int dflt) {
    static const char *const words[][4] = {{"0", "false", "no", "off"}, {"1", "true", "yes", "on"}};
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    for (int on = 0; on < 2; on++)
        for (int k = 0; k < 4; k++)
            if (!strcasecmp(v, words[on][k])) return on;
    // Warned once per variable (progress_start reads VGGFT_PROGRESS per
    // bar); the callers run on the main thread.
    static const char *warned[8];
    for (int k = 0; k < 8; k++) {
        if (warned[k] && !strcmp(warned[k], name)) return dflt;
        if (!warned[k]) {
            warned[k] = name;
            break;
        }
    }
    log_printf(stderr, "warning: %s=%s is not one of 1, true, yes, on, 0, false, no, off: using %s\n", name, v,
               dflt ? "1 (on)" : "0 (off)");
    return dflt;
}

int cli_count(const CliOption *opts) {
    int n = 0;
    while (opts[n].name) n++;
    return n;
}

CliOption *cli_find(CliSpec *spec, const char *name) {
    if (spec->n_opts == 0) spec->n_opts = cli_count(spec->opts);
    for (int i = 0; i < spec->n_opts; i++)
        if (strcmp(spec->opts[i].name, name) == 0) return &spec->opts[i];
    return NULL;
}

const char *cli_first_seen(CliSpec *spec, const char *const *names) {
    for (int i = 0; names[i]; i++)
        if (cli_find(spec, names[i])->seen) return names[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

// v against o->range (">=A", ">A", or an interval "[A,B]", "[A,B)", "(A,B]",
// "(A,B)"); -1 with err_set naming the option, the rule and the value.
static int check_range(const CliOption *o, double v, const char *text) {
    const char *r = o->range;
    if (!r) return 0;
    char *end;
    int ok;
    if (r[0] == '>') {
        int incl = r[1] == '=';
        double lo = strtod(r + 1 + incl, &end);
        ok = incl ? v >= lo : v > lo;
        if (!ok) return err_set("--%s must be %s %s, got %s", o->name, incl ? ">=" : ">", r + 1 + incl, text);
        return 0;
    }
    double lo = strtod(r + 1, &end);
    double hi = *end == ',' ? strtod(end + 1, &end) : lo;
    ok = (r[0] == '[' ? v >= lo : v > lo) && (*end == ']' ? v <= hi : v < hi);
    if (!ok) return err_set("--%s must be in %s, got %s", o->name, r, text);
    return 0;
}

// Stores text into the option's destination; -1 with err_set on bad text.
static int set_value(CliOption *o, const char *text) {
    char *end = NULL;
    errno = 0;
    // strtol/strtod skip leading spaces; a value is the number alone.
    if (o->type != OPT_FLAG && o->type != OPT_STRING && o->type != OPT_CHOICE && text && isspace((unsigned char)*text))
        return err_set("--%s: '%s' starts with a space", o->name, text);
    switch (o->type) {
    case OPT_FLAG: {
        // --flag, or --flag=VALUE with a yes/no VALUE: a typo ("=on") is an
        // error, not a quiet "off".
        static const char *const yes[] = {"1", "true", "yes"}, *const no[] = {"0", "false", "no"};
        for (int k = 0; k < 3; k++) {
            if (text && !strcmp(text, yes[k])) return *(int *)o->dest = 1, 0;
            if (text && !strcmp(text, no[k])) return *(int *)o->dest = 0, 0;
        }
        return err_set("--%s=%s: a flag takes 1/true/yes or 0/false/no", o->name, text ? text : "");
    }
    case OPT_INT: {
        long v = strtol(text, &end, 10);
        if (end == text || *end) return err_set("--%s: '%s' is not an integer", o->name, text);
        if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
            return err_set("--%s: '%s' is out of range (at most %d)", o->name, text, INT_MAX);
        if (check_range(o, (double)v, text) < 0) return -1;
        *(int *)o->dest = (int)v;
        return 0;
    }
    case OPT_LONG: {
        long v = strtol(text, &end, 10);
        if (end == text || *end) return err_set("--%s: '%s' is not an integer", o->name, text);
        if (errno == ERANGE) return err_set("--%s: '%s' is out of range (at most %ld)", o->name, text, LONG_MAX);
        if (check_range(o, (double)v, text) < 0) return -1;
        *(long *)o->dest = v;
        return 0;
    }
    case OPT_FLOAT:
    case OPT_DOUBLE: {
        double v = strtod(text, &end);
        // Decimal only: strtod also reads hexadecimal ("0x10" = 16), which a
        // learning rate typed by mistake should not quietly become.
        if (end == text || *end || isnan(v) || strpbrk(text, "xX"))
            return err_set("--%s: '%s' is not a number", o->name, text);
        // Beyond the type (1e400 in a double, 1e39 in a float: infinite; 1e-400,
        // 1e-50 in a float: 0): say so, not "not a number", and never pass
        // on an infinity or a 0 that was not typed. (Float rounding as numpy's
        // float32(): 3.4028235e38 is FLT_MAX, 1e-45 the smallest above 0.)
        const int is_float = o->type == OPT_FLOAT;
        const double as_type = is_float ? (double)(float)v : v;
        if ((errno == ERANGE && (v == 0 || isinf(v))) || isinf(v) || isinf(as_type) || (v != 0 && as_type == 0))
            return err_set("--%s: '%s' is out of range (it would be %s as a %s)", o->name, text,
                           isinf(as_type) || isinf(v) ? "infinite" : "0", is_float ? "float32" : "double");
        if (check_range(o, v, text) < 0) return -1;
        if (o->type == OPT_FLOAT) *(float *)o->dest = (float)v;
        else *(double *)o->dest = v;
        return 0;
    }
    case OPT_CHOICE:
        if (!choice_ok(o->choices, text))
            return err_set("--%s: '%s' is not one of %s", o->name, text, o->choices);
        /* fall through */
    case OPT_STRING:
        // Every string option names a file, folder, layer or spec: an empty
        // one is an unset shell variable, not a value to look up.
        if (!*text) return err_set("--%s: the value is empty", o->name);
        *(const char **)o->dest = text;
        return 0;
    }
    return 0;
}

void cli_error(const char *prog, const char *fmt, ...) {
    error_reported = 1;
    fprintf(stderr, "%s: error: ", prog);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    } else {
        const char *m = err_msg();
        fputs(m, stderr);
        // Memory or threads refused under an address-space limit: say so.
        char note[160];
        if ((err_is_out_of_memory(m) || strstr(m, "cannot start")) && address_limit_note(note, sizeof note))
            fputs(note, stderr);
    }
    fputc('\n', stderr);
}

// argv[i], an argument (not an option), into rest; -1 after the usage
// error when the tool takes none, or when it is empty (every tool's
// arguments are paths: an empty one is an unset shell variable).
static int take_argument(const CliSpec *spec, char ***rest, int *n_rest, char **argv, int i) {
    if (!rest) {
        cli_error(spec->prog, "unexpected argument '%s' (see --help)", argv[i]);
        return -1;
    }
    if (!argv[i][0]) {
        cli_error(spec->prog, "argument %d is empty (a shell variable that was not set?)", i);
        return -1;
    }
    (*rest)[(*n_rest)++] = argv[i];
    return 0;
}

const char *const cli_fit_not_here[][2] = {
    {"learning-rate", "Keras's learning_rate is --lr here"},
    {"learning_rate", "Keras's learning_rate is --lr here"},
    {"steps-per-epoch", "an epoch is every training image once, in batches of --batch, as Keras's default"},
    {"steps_per_epoch", "an epoch is every training image once, in batches of --batch, as Keras's default"},
    {"validation-data", "validation data is --val-cache (train) or --val-data / --val-cache (finetune)"},
    {"validation_data", "validation data is --val-cache (train) or --val-data / --val-cache (finetune)"},
    {NULL, NULL},
};

// Keras's names of what every tool spells otherwise (with dashes or
// underscores, as a Keras user types them): said whatever the tool.
static const char *const keras_names[][2] = {
    {"batch-size", "Keras's batch_size is --batch here"},
    {"target-size", "Keras's target_size is extract's --input-size (train, finetune and predict take it from the "
                    "cache or the head)"},
    {"rescale", "Keras's rescale=1./255 is extract's --preprocess rescale (the ImageNet weights want the default, "
                "caffe)"},
    {"rotation-range", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment "
                       "rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip)"},
    {"width-shift-range", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment shift=0.2)"},
    {"height-shift-range", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment shift=0.2)"},
    {"shear-range", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment shear=0.2)"},
    {"zoom-range", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment zoom=0.2)"},
    {"horizontal-flip", "ImageDataGenerator's augmentation is finetune's --augment (e.g. --augment flip)"},
    {"fill-mode", "finetune's --augment fills as Keras's default, fill_mode='nearest'"},
    {NULL, NULL},
};

// Levenshtein distance of a and b, capped: anything over 3 is 4.
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > 3) return 4;
    int row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up, row[j] = best;
        }
    }
    return row[lb] > 3 ? 4 : row[lb];
}

// "unknown option" with what was probably meant: another tool's option
// (with why this one does not take it), Keras's spelling with underscores
// (--validation_split), the one option the name begins (--epoch), or the
// one nearest by at most two edits (--learning-rate is none; --optimiser is).
static void unknown_option(CliSpec *spec, const char *name) {
    if (spec->n_opts == 0) spec->n_opts = cli_count(spec->opts);
    for (int i = 0; spec->not_here && spec->not_here[i][0]; i++)
        if (!strcmp(spec->not_here[i][0], name)) {
            cli_error(spec->prog, "unknown option '--%s': %s (see --help)", name, spec->not_here[i][1]);
            return;
        }
    char dashed[128];
    snprintf(dashed, sizeof dashed, "%s", name);
    for (char *c = dashed; *c; c++)
        if (*c == '_') *c = '-';
    const CliOption *same = strcmp(dashed, name) ? cli_find(spec, dashed) : NULL;
    for (int i = 0; !same && keras_names[i][0]; i++)
        if (!strcmp(keras_names[i][0], dashed)) {
            cli_error(spec->prog, "unknown option '--%s': %s (see --help)", name, keras_names[i][1]);
            return;
        }
    const char *guess = same ? same->name : NULL;
    int n_prefix = 0, best = 3, n_best = 0;
    const char *prefix = NULL, *nearest = NULL;
    for (int i = 0; !guess && i < spec->n_opts; i++) {
        const char *o = spec->opts[i].name;
        if (!strncmp(o, dashed, strlen(dashed))) prefix = o, n_prefix++;
        int d = edit_distance(dashed, o);
        if (d < best) best = d, nearest = o, n_best = 1;
        else if (d == best) n_best++;
    }
    if (!guess && n_prefix == 1 && strlen(dashed) >= 3) guess = prefix;
    if (!guess && n_best == 1) guess = nearest;
    if (guess) cli_error(spec->prog, "unknown option '--%s': did you mean --%s? (see --help)", name, guess);
    else cli_error(spec->prog, "unknown option '--%s' (see --help)", name);
}

int cli_parse(CliSpec *spec, int argc, char **argv, int *n_rest, char ***rest) {
    // A table that ends with {0} counts itself: an option added to it can
    // never fall outside a hand-kept count.
    if (spec->n_opts == 0) spec->n_opts = cli_count(spec->opts);
    for (int i = 0; i < spec->n_opts; i++) {
        CliOption *o = &spec->opts[i];
        o->seen = 0;
        if (o->type == OPT_FLAG) *(int *)o->dest = 0;
        else if (o->def && set_value(o, o->def) < 0) {
            cli_error(spec->prog, "bad built-in default: %s", err_msg());
            return CLI_USAGE;
        } else if (!o->def && (o->type == OPT_STRING || o->type == OPT_CHOICE))
            *(const char **)o->dest = NULL;
    }
    if (n_rest) *n_rest = 0;
    if (rest) *rest = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help(spec, stdout);
            return CLI_EXIT_OK;
        }
        if (!strcmp(a, "--version")) {
            cli_print_version(spec->prog, stdout);
            return CLI_EXIT_OK;
        }
        // "--" ends the options (POSIX): what follows are arguments, even
        // "--x". (A "--" that is an option's value was taken with it above.)
        if (!strcmp(a, "--")) {
            for (int j = i + 1; j < argc; j++)
                if (take_argument(spec, rest, n_rest, argv, j) < 0) return CLI_USAGE;
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (take_argument(spec, rest, n_rest, argv, i) < 0) return CLI_USAGE;
            continue;
        }
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, a + 2, len);
        name[len] = '\0';
        CliOption *o = cli_find(spec, name);
        if (!o) {
            unknown_option(spec, name);
            return CLI_USAGE;
        }
        const char *value;
        if (o->type == OPT_FLAG) {
            value = eq ? eq + 1 : "1";
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            cli_error(spec->prog, "option '--%s' needs a value (%s)", name, o->metavar ? o->metavar : "VALUE");
            return CLI_USAGE;
        }
        if (set_value(o, value) < 0) {
            cli_error(spec->prog, "%s", err_msg());
            return CLI_USAGE;
        }
        o->seen = 1;
    }
    // A bad VGGFT_PROGRESS or _INTERVAL is warned of now, before the
    // tool's first line, rather than at its first bar.
    progress_check_env();
    return CLI_OK;
}

// --help's layout: option names in the first HELP_LEFT columns, their
// descriptions wrapped at word boundaries to end by column HELP_WIDTH (a
// terminal's 80); a name too long for its column gets a line of its own.
#define HELP_LEFT 28
#define HELP_WIDTH 80

// Prints the words of text (spaces and newlines both separate them) from
// column *col on, breaking lines before HELP_WIDTH; continuation lines
// start at column HELP_LEFT.
// One word (len bytes at w), on a new line if it would pass HELP_WIDTH.
static void put_word(FILE *out, const char *w, int len, int *col) {
    if (*col > HELP_LEFT && *col + 1 + len > HELP_WIDTH) {
        fprintf(out, "\n%*s", HELP_LEFT, "");
        *col = HELP_LEFT;
    } else if (*col > HELP_LEFT) {
        fputc(' ', out);
        (*col)++;
    }
    fwrite(w, 1, (size_t)len, out);
    *col += len;
}

static void print_wrapped(FILE *out, const char *text, int *col) {
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\n') p++;
        int len = (int)strcspn(p, " \n");
        if (len) put_word(out, p, len, col);
        p += len;
    }
}

static void print_option(FILE *out, const char *left, const char *help, const char *def) {
    fprintf(out, "%-*s", HELP_LEFT, left);
    if ((int)strlen(left) >= HELP_LEFT) fprintf(out, "\n%*s", HELP_LEFT, "");
    int col = HELP_LEFT;
    print_wrapped(out, help, &col);
    if (def) {  // "(default: X)" kept on one line
        char d[320];
        snprintf(d, sizeof d, "(default: %s)", def);
        put_word(out, d, (int)strlen(d), &col);
    }
    fputc('\n', out);
}

void cli_print_help(const CliSpec *spec, FILE *out) {
    fprintf(out, "usage: %s %s\n\n%s\n\noptions:\n", spec->prog, spec->usage, spec->summary);
    int n = spec->n_opts ? spec->n_opts : cli_count(spec->opts);
    for (int i = 0; i < n; i++) {
        const CliOption *o = &spec->opts[i];
        char left[96];
        if (o->type == OPT_FLAG) snprintf(left, sizeof left, "  --%s", o->name);
        else if (o->type == OPT_CHOICE) snprintf(left, sizeof left, "  --%s {%s}", o->name, o->choices);
        else snprintf(left, sizeof left, "  --%s %s", o->name, o->metavar ? o->metavar : "VALUE");
        print_option(out, left, o->help, o->def && o->type != OPT_FLAG ? o->def : NULL);
    }
    print_option(out, "  --help", "show this help and exit", NULL);
    print_option(out, "  --version", "show version, BLAS kernel, vector instructions in use and GPU support, and exit",
                 NULL);
    if (spec->epilog) fprintf(out, "\n%s\n", spec->epilog);
}

void cli_print_version(const char *prog, FILE *out) {
    fprintf(out, "%s (vggft) %s\n", prog, VGGFT_VERSION);
    fprintf(out, "BLAS: %s\n", blas_describe());
    fprintf(out, "Dense layers and optimizers: %s\n", simd_level_name(simd_level()));
    char gpu[1600];
    device_describe_gpus(gpu, sizeof gpu);
    fprintf(out, "GPU: %s\n", gpu);
    device_describe_libraries(gpu, sizeof gpu);
    fprintf(out, "%s\n", gpu);
}

// value as an absolute path when it is a relative one naming an existing
// file (path_canonical: "..", "." and links resolved; malloc'd), else NULL.
static char *absolute_file_path(const char *value) {
    if (!value[0] || value[0] == '/' || access(value, F_OK) != 0) return NULL;
    char buf[PATH_MAX];
    return strdup(path_canonical(value, buf));
}

static int is_path_option(const char *word, const char *const *names, size_t *eq) {
    for (int k = 0; names && names[k]; k++) {
        size_t n = strlen(names[k]);
        if (strncmp(word, "--", 2) || strncmp(word + 2, names[k], n)) continue;
        if (word[2 + n] == '\0') return *eq = 0, 1;
        if (word[2 + n] == '=') return *eq = 3 + n, 1;
    }
    return 0;
}

char *cli_command_line(int argc, char **argv, const char *const *path_options) {
    // The words to write: argv, with the path options' values made absolute
    // ("--NAME=V" rebuilt around the absolute V).
    char **words = malloc(sizeof(char *) * (size_t)(argc > 0 ? argc : 1));
    char **owned = calloc((size_t)(argc > 0 ? argc : 1), sizeof(char *));
    if (!words || !owned) {
        free(words), free(owned);
        return NULL;
    }
    for (int i = 0, options_end = 0; i < argc; i++) {
        words[i] = argv[i];
        if (i == 0 || options_end) continue;
        if (!strcmp(argv[i], "--")) {
            options_end = 1;
            continue;
        }
        size_t eq;
        if (!is_path_option(argv[i], path_options, &eq)) continue;
        if (eq) {
            char *abs = absolute_file_path(argv[i] + eq);
            if (abs && (owned[i] = malloc(eq + strlen(abs) + 1))) {
                memcpy(owned[i], argv[i], eq);
                strcpy(owned[i] + eq, abs);
                words[i] = owned[i];
            }
            free(abs);
        } else if (i + 1 < argc && (owned[i + 1] = absolute_file_path(argv[i + 1]))) {
            words[i + 1] = owned[i + 1];
            i++;
        }
    }
    size_t cap = 1;
    for (int i = 0; i < argc; i++) cap += strlen(words[i]) * 4 + 3;
    char *s = malloc(cap), *p = s;
    for (int i = 0; s && i < argc; i++) {
        const char *w = words[i];
        if (i) *p++ = ' ';
        int plain = w[0] != '\0';
        for (const char *c = w; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./,:+@", *c)) plain = 0;
        if (plain) {
            p += sprintf(p, "%s", w);
        } else {
            *p++ = '\'';
            for (const char *c = w; *c; c++) {
                if (*c == '\'') p += sprintf(p, "'\\''");
                else *p++ = *c;
            }
            *p++ = '\'';
        }
    }
    if (s) *p = '\0';
    for (int i = 0; i < argc; i++) free(owned[i]);
    free(words), free(owned);
    return s;
}
