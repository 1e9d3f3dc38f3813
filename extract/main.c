// extract: images -> frozen VGG conv base -> feature cache.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fileutil.h"
#include "blas_setup.h"
#include "cli.h"
#include "error.h"
#include "extract.h"
#include "model_options.h"
#include "parallel.h"
#include "stop.h"

static const char *EPILOG =
    "Runs the frozen convolutional base once over an image folder laid out as\n"
    "Keras's flow_from_directory expects (one subfolder per class, files found\n"
    "recursively) and caches the features of --layer for `train`:\n"
    "  build/extract --data data/train --cache cache/train --weights imagenet\n"
    "  build/extract --data data/validation --cache cache/val --weights imagenet\n"
    "\n"
    "The cache is an LMDB folder (mdb_stat works on it) with one zstd-compressed\n"
    "record per image and the settings it was made with. Running the same\n"
    "command again resumes: committed records are kept, only missing or changed\n"
    "images are extracted. A cache made with other settings is refused unless\n"
    "--overwrite, which starts it over; on a cache of the same settings and\n"
    "folder (or that folder moved) --overwrite is a plain rerun that keeps its\n"
    "records, so scripts may always pass it. Unreadable, corrupt or\n"
    "unsupported files are reported, listed in CACHE/skipped.tsv and skipped\n"
    "(--strict: exit 1 when any is; exit 1 too when no image could be read).\n"
    "\n"
    "Exit codes: 0 done; 1 failed (or --strict and a file was skipped); 2 usage\n"
    "error (unknown option, value out of range, a layer the model lacks, an\n"
    "option that does not go with --merge, --info or --verify);\n"
    "75 stopped by SIGTERM/SIGINT with its records committed: rerun.\n"
    "\n"
    "A cache belongs to the folder it was made from: a run on another folder\n"
    "is refused naming both (a typo in --cache must not re-key another\n"
    "folder's cache), unless --overwrite, or unless the folder moved: same\n"
    "classes, and most of a sample of the cached files are found at the same\n"
    "relative paths with the same bytes (then the cache is reused).\n"
    "\n"
    "Interrupted runs lose nothing: records are committed every 2 s, and on\n"
    "SIGTERM or SIGINT (Slurm's time limit, Ctrl-C) the images already read are\n"
    "stored and committed, the cache stays marked incomplete, and extract exits\n"
    "with code 75 (EX_TEMPFAIL): rerun the same command to continue. A second\n"
    "signal stops at once (what was committed stays).\n"
    "\n"
    "Every cache is checked before use: its pages, the checksum of its\n"
    "settings, each record's crc32, and the records' count, keys and digest\n"
    "recorded when the run finished. Damage is an error naming the page or\n"
    "record, never a crash.\n"
    "\n"
    "Other commands:\n"
    "  build/extract --info CACHE                print settings and statistics\n"
    "  build/extract --verify CACHE              check every page and record; list\n"
    "                                            all damage (exit 0 sound, 1 not)\n"
    "  build/extract --merge OUT IN1 IN2 ...     join the caches of --shard runs (a\n"
    "                                            stop signal: nothing written, exit 75)\n"
    "  build/extract --summary --input-size 150  print the conv base's layers\n"
    "Sharding over 4 jobs: --shard 0/4 ... --shard 3/4, then --merge.\n"
    "--weights imagenet looks for Keras's file in $KERAS_HOME/models or\n"
    "~/.keras/models and downloads it there (MD5-checked) when missing.";

// Values that parse but name nothing (a layer the model lacks, a malformed
// --shard, an input size VGG cannot take): usage errors, found before any
// work. -1 with err_set.
static int check_options(const ExtractOptions *o, const ModelOptions *mo) {
    int shard_i, shard_n;
    if (extract_parse_shard(o->shard, &shard_i, &shard_n) < 0) return -1;
    ModelConfig cfg;
    Model m = {0};
    if (model_options_config(mo, MOPT_BASE, &cfg) < 0 || model_build(&m, &cfg) < 0) return -1;
    model_free(&m);
    return 0;
}

// --merge, --info, --verify and --summary are commands of their own: one at
// a time, and with none of the options of an extract run, which they would
// silently ignore (`--merge OUT --cache X`: a typo of which cache?). Usage
// errors (exit 2), found before any work. -1 after printing the error.
static int check_command_options(CliSpec *spec, int n_rest, char **rest) {
    const char *const commands[] = {"merge", "info", "verify", "summary", NULL};
    const char *command = NULL;
    for (int i = 0; commands[i]; i++) {
        if (!cli_find(spec, commands[i])->seen) continue;
        if (command) {
            cli_error("extract", "--%s and --%s are separate commands: give one (see --help)", command, commands[i]);
            return -1;
        }
        command = commands[i];
    }
    // --summary takes the model options and ignores the rest, as before.
    if (!command || !strcmp(command, "summary")) return 0;
    // What each command does take: --threads and --quiet apply to any, --overwrite to --merge's OUT.
    const int merge = !strcmp(command, "merge");
    for (int i = 0; spec->opts[i].name; i++) {
        const char *name = spec->opts[i].name;
        if (!spec->opts[i].seen || !strcmp(name, command) || !strcmp(name, "threads") || !strcmp(name, "quiet") ||
            (merge && !strcmp(name, "overwrite")))
            continue;
        cli_error("extract", "--%s does not go with --%s%s (see --help)", name, command,
                  merge ? ", which joins the caches given as arguments into OUT" : "");
        return -1;
    }
    if (!merge && n_rest) {
        cli_error("extract", "unexpected argument '%s': --%s takes one cache (see --help)", rest[0], command);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    cli_process_setup();
    blas_setup(argv, 0, BLAS_UNUSED);
    ExtractOptions o = {0};
    const char *info = NULL, *merge = NULL, *verify = NULL;
    int summary = 0;
    ModelOptions mo;
    CliOption opts[] = {
        {"data", OPT_STRING, &o.data, NULL, "DIR", "image folder, one subfolder per class"},
        {"cache", OPT_STRING, &o.cache, NULL, "PATH", "feature cache to write (an LMDB folder)"},
        {"weights", OPT_STRING, &o.weights, "imagenet", "FILE|imagenet|random",
         "Keras HDF5 weights file of the base, Keras's ImageNet file,\nor Glorot-uniform random weights (--seed)"},
        {"preprocess", OPT_CHOICE, &o.preprocess, "caffe", NULL,
         "caffe: BGR minus ImageNet means (what the ImageNet weights\nexpect); rescale: x/255 (the seeds); torch: "
         "torchvision's",
         "caffe|rescale|torch"},
        {"interpolation", OPT_CHOICE, &o.interpolation, "nearest", NULL, "resize filter, Keras's interpolation (Keras's default too)",
         "nearest|bilinear"},
        {"dtype", OPT_CHOICE, &o.dtype, "f16", NULL, "precision of the stored features", "f16|f32"},
        {"batch", OPT_INT, &o.batch, "32", "N", "images per batch through the conv base (on the CPU, a batch\nof at least --threads runs its images side by side, one per thread)", .range = ">=1"},
        {"device", OPT_CHOICE, &o.device, "auto", NULL, "where to run the conv base", "auto|cpu|cuda"},
        {"precision", OPT_CHOICE, &o.precision, "fp32", NULL,
         "GPU convolution arithmetic: fp32 (strict float32: features within\n1e-5 of the CPU's), tf32 or bf16 (tensor "
         "cores: faster, further\nfrom Keras; need a GPU; recorded in the cache; see the README)",
         "fp32|tf32|bf16"},
        {"threads", OPT_INT, &o.threads, "0", "N",
         "CPU threads for decoding and the conv base (0: the CPUs this job may use,\nits affinity mask: taskset, Slurm)",
         .range = ">=0"},
        {"shard", OPT_STRING, &o.shard, NULL, "I/N", "process only shard I of N (0-based): files k with k % N == I"},
        {"strict", OPT_FLAG, &o.strict, NULL, NULL, "exit 1 if any file is skipped"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL, NULL, "start over a cache made with other settings or another folder\n(same settings: resume it, keeping its records)"},
        {"reduced-decode", OPT_FLAG, &o.reduced_decode, NULL, NULL,
         "decode JPEGs at 1/2, 1/4 or 1/8 scale when still >= the input size\n(faster; pixels differ from Keras's)"},
        {"max-pixels", OPT_LONG, &o.max_pixels, "50000000", "N",
         "pixel budget: larger JPEGs are decoded at a reduced scale (with a\nwarning), other larger images skipped",
         .range = ">=1"},
        {"seed", OPT_LONG, &o.seed, "1", "S", "seed of --weights random", .range = ">=0"},
        {"quiet", OPT_FLAG, &o.quiet, NULL, NULL, "no progress bar (warnings and errors still print)"},
        {"info", OPT_STRING, &info, NULL, "CACHE", "print a cache's settings and statistics and exit"},
        {"merge", OPT_STRING, &merge, NULL, "OUT", "merge the shard caches given as arguments into OUT and exit"},
        {"verify", OPT_STRING, &verify, NULL, "CACHE",
         "check every page, setting and record of a cache and report all\ndamage; exit 0 when sound, 1 otherwise"},
        {"summary", OPT_FLAG, &summary, NULL, NULL, "print the conv base's layers and parameter counts and exit"},
        {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0},  // room for the model options (8 at most) and the end
    };
    model_options_add(opts + cli_count(opts), &mo, MOPT_BASE);
    CliSpec spec = {"extract", "Run the frozen VGG conv base over an image folder and cache the features.",
                    "--data DIR --cache PATH [options]", EPILOG, opts, 0};
    int n_rest = 0;
    char **rest = NULL;
    int rc = cli_parse(&spec, argc, argv, &n_rest, &rest);
    int status = rc == CLI_EXIT_OK ? EXIT_DONE : EXIT_USAGE;
    if (rc != CLI_OK) goto out;
    // (status is EXIT_USAGE here: what the branches below that print a usage error return)
    if (check_command_options(&spec, n_rest, rest) < 0) goto out;
    if (merge && n_rest < 1) {
        cli_error("extract", "--merge OUT IN...: no input caches given (see --help)");
        goto out;
    }
    if (o.threads == 0) o.threads = parallel_cpus();
    blas_set_threads(o.threads);
    if (summary && n_rest) {
        // As the run would (a stray word in a job's EXTRACT_ARGS is found by
        // submit.sh's --summary check, not hours later).
        cli_error("extract", "unexpected argument '%s' (see --help)", rest[0]);
    } else if (summary) {
        status = model_options_summary("extract", &mo, MOPT_BASE, SUMMARY_BASE);
    } else if (info) {
        status = extract_info(info) < 0 ? (cli_error("extract", NULL), 1) : 0;
    } else if (verify) {
        status = extract_verify(verify) == 0 ? 0 : 1;
    } else if (merge) {
        cli_stdout_is_log();
        int m = extract_merge(merge, rest, n_rest, o.overwrite);
        status = m < 0 ? (cli_error("extract", NULL), EXIT_FAILED) : m == EXIT_STOPPED ? EXIT_STOPPED : EXIT_DONE;
    } else if (n_rest) {
        cli_error("extract", "unexpected argument '%s' (see --help)", rest[0]);
    } else if (!o.data || !o.cache || !o.data[0] || !o.cache[0]) {
        cli_error("extract", "--data and --cache are required and must not be empty (see --help)");
    } else if (check_options(&o, &mo) < 0) {
        cli_error("extract", NULL);
    } else {
        o.model = mo.model;
        o.layer = mo.layer;
        o.input_size = mo.input_size;
        // --weights FILE recorded as an absolute path: finetune and predict
        // take it from the head (the cache's command) in other folders.
        const int weights_file = o.weights && strcmp(o.weights, "imagenet") && strcmp(o.weights, "random");
        const char *const paths[] = {weights_file ? "weights" : NULL, NULL};
        char *command = cli_command_line(argc, argv, paths);
        o.command_line = command;
        cli_stdout_is_log();
        int run = extract_run(&o);
        status = run < 0 ? (cli_error("extract", NULL), EXIT_FAILED) : run == EXIT_STOPPED ? EXIT_STOPPED : EXIT_DONE;
        if (status != EXIT_DONE) remove_created_dirs();  // a --cache folder made for a cache never written
        free(command);
    }
out:
    free(rest);
    return status;
}
