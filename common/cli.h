// One command-line convention for every executable: GNU-style long options
// (--name VALUE or --name=VALUE), --help listing each option with its
// default, --version. Options are a table; defaults are strings parsed the
// same way as the command line, so --help shows exactly what applies.
#pragma once
#include <stdio.h>

// First thing in every tool's main, before anything opens a file:
// - descriptors 0, 1 and 2 that the caller closed (`2>&-`, `>&-`) are
//   opened on /dev/null: else the cache's lock.mdb or an output file would
//   get number 1 or 2 and the log would be written into it;
// - SIGXFSZ is ignored: past a file size limit (ulimit -f) a write then
//   fails with EFBIG ("File too large"), which the tool reports naming the
//   file and cleans up after, instead of dying without a word;
// - at exit, stdout that could not be written (a full disk, /dev/full)
//   makes the exit status 1 with a message, instead of 0, where stdout is
//   the product (--info, --summary, --help, predict's lines); see
//   cli_stdout_is_log.
void cli_process_setup(void);
// For runs whose products are files and whose stdout is only their log
// (extract's, train's and finetune's runs): stdout that could not be
// written is then a warning and the exit status stands, so that a full log
// disk does not fail a job whose outputs are complete (make would delete
// them, a Slurm afterok chain would stop). SIGPIPE is ignored from then
// on: a log piped to a reader that went away (`| head`) is the same case.
void cli_stdout_is_log(void);
// 1 when descriptor fd (0, 1 or 2) was closed when the process started
// (cli_process_setup opened it on /dev/null): predict refuses to write its
// predictions nowhere.
int cli_closed_at_start(int fd);
// Around an exec of the program itself (blas_setup's restart): the streams
// closed at start are closed again, so that the new image sees what the
// caller gave (with /dev/null in their place, predict would write its
// predictions there without a word); and /dev/null again if exec failed.
void cli_before_exec(void);
void cli_after_failed_exec(void);
// An on/off environment variable (VGGFT_GPU_HEAD, VGGFT_GPU_GRAPH,
// VGGFT_GPU_OVERLAP, VGGFT_GPU_PROFILE, VGGFT_PROGRESS): 1 for 1, true, yes or on, 0 for 0,
// false, no or off (any case); dflt when unset or empty. Any other value
// ("flase", "2") gives dflt with a warning on stderr naming the variable,
// its value and what is used, once per variable and process: a typo must
// not turn a setting on (VGGFT_GPU_GRAPH=false did, before).
int env_flag(const char *name, int dflt);

typedef enum {
    OPT_FLAG,    // no value; sets int dest to 1
    OPT_INT,     // int dest
    OPT_LONG,    // long dest
    OPT_FLOAT,   // float dest
    OPT_DOUBLE,  // double dest
    OPT_STRING,  // const char * dest (points into argv or the default)
    OPT_CHOICE,  // const char * dest, must be one of `choices` ("a|b|c")
} OptType;

typedef struct {
    const char *name;     // without the leading "--"
    OptType type;
    void *dest;
    const char *def;      // default as text, or NULL (none / flag off)
    const char *metavar;  // shown in --help, e.g. "DIR"
    const char *help;
    const char *choices;  // OPT_CHOICE only: "nearest|bilinear"
    int seen;             // set by cli_parse when given on the command line
    // Numeric options: the values allowed, checked when parsed (a value out
    // of range is a usage error, exit 2), e.g. ">=1", ">0", "[0,1)",
    // "[1,65536]". NULL: any. Write it as `.range = ">=1"` after the
    // positional fields.
    const char *range;
} CliOption;

typedef struct {
    const char *prog;         // "extract"
    const char *summary;      // one line: what the tool does
    const char *usage;        // "--data DIR --cache PATH [options]"
    const char *epilog;       // examples, notes (may be NULL)
    CliOption *opts;
    int n_opts;               // 0: the table ends with a {0} entry (counted by cli_parse)
    // Options of the other tools this one does not take, with why, for the
    // message (predict's --input-size: "comes from the model file"):
    // {name, why} pairs ending with {NULL}; NULL: none.
    const char *const (*not_here)[2];
} CliSpec;

enum { CLI_OK = 0, CLI_EXIT_OK = 1, CLI_USAGE = 2 };

// not_here for train and finetune: fit's arguments in Keras's words.
extern const char *const cli_fit_not_here[][2];

// Exit codes, one convention for every tool (README "Exit codes"):
//   EXIT_DONE 0     done
//   EXIT_FAILED 1   failed (the message names the file, layer or value)
//   EXIT_USAGE 2    usage error: unknown option, missing or out-of-range value
//   EXIT_PARTIAL 3  done, but some inputs were skipped (listed in the output)
//   75              stopped by SIGTERM/SIGINT with its state saved: rerun
//                   (EXIT_STOPPED, stop.h)
enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_PARTIAL = 3 };

// Counts the options of a table that ends with a {0} entry.
int cli_count(const CliOption *opts);

// Applies defaults, then parses argv (spec->n_opts 0: counts the table
// first, which must then end with {0}). Handles --help and --version itself
// (prints to stdout and returns CLI_EXIT_OK). On a bad option or value
// (including one outside its .range) prints
// "PROG: error: ..." plus a hint to stderr and returns CLI_USAGE (the caller
// exits 2). Positional arguments are collected in *rest (may be NULL to
// refuse them); "--" ends the options (POSIX), and every argument after it
// is positional, even one that starts with "--". Numbers are decimal
// ("0x10" is refused).
int cli_parse(CliSpec *spec, int argc, char **argv, int *n_rest, char ***rest);
void cli_print_help(const CliSpec *spec, FILE *out);
// Finds an option by name (NULL if absent), e.g. to ask whether it was given.
CliOption *cli_find(CliSpec *spec, const char *name);
// The first of names (NULL-terminated) given on the command line, or NULL.
const char *cli_first_seen(CliSpec *spec, const char *const *names);
// Prints "PROG: error: MESSAGE" (with err_msg() when msg is NULL) to stderr.
// No timestamp: the tools' last line keeps this exact form for scripts.
void cli_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prints the version block: tool, version, BLAS kernel, CUDA build/devices.
void cli_print_version(const char *prog, FILE *out);
// The whole command line as one shell-quoted string (recorded in outputs).
// The values of the options named in path_options (NULL-terminated, names
// without "--"; may be NULL), "--NAME V" or "--NAME=V", are written as
// absolute paths when they are relative paths to existing files: a tool that
// later reads the command back (finetune and predict take the base weights
// that the extract behind a head was given) may run in another folder.
char *cli_command_line(int argc, char **argv, const char *const *path_options);
