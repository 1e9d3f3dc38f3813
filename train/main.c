// train: the dense head on the CPU from cached features.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fileutil.h"
#include "blas_setup.h"
#include "cli.h"
#include "error.h"
#include "fit.h"
#include "model_options.h"
#include "progress.h"
#include "train.h"

static const char *EPILOG =
    "Trains Flatten -> Dense(hidden, relu) -> Dropout -> Dense(sigmoid|softmax) on\n"
    "features cached by `extract`, on the CPU, with Keras's fit() semantics.\n"
    "The seeds' stage 1:\n"
    "  build/train --cache cache/train --val-cache cache/val --out head.h5 \\\n"
    "      --optimizer sgd --lr 1e-3 --epochs 30 --batch 20\n"
    "Writes HEAD.h5 (Keras HDF5 weights, with the cache's settings), and beside it\n"
    "HEAD.history.csv and HEAD.history.svg (loss and accuracy per epoch),\n"
    "HEAD.confusion.svg, and HEAD.ckpt after every epoch: rerun with --resume to\n"
    "continue a killed run (or to add epochs) exactly where it stopped.\n"
    "Learning rate and momentum default to Keras's for the optimizer (SGD 0.01,\n"
    "Adam and RMSprop 0.001). The same --seed gives bit-identical results on\n"
    "any --threads.\n"
    "  build/train --summary --input-size 150 --classes 2\n"
    "Exit codes: 0 done; 1 failed; 2 usage error (unknown option, value out of\n"
    "range); 75 stopped by SIGTERM/SIGINT with HEAD.ckpt saved: rerun with --resume.";

// The model options train takes from the cache: they shape --summary only.
static const char *const SHAPE_ONLY[] = {"model", "input-size", "layer", "classes", NULL};

// Out-of-range or contradictory values: the usage error naming them, or NULL.
static const char *check_options(CliSpec *spec, const TrainOptions *o, const ModelOptions *mo, char *why, size_t n) {
    const char *given = cli_first_seen(spec, SHAPE_ONLY);
    if (given) return snprintf(why, n, "--%s is for --summary only: training takes it from the cache", given), why;
#define BAD(...) return snprintf(why, n, __VA_ARGS__), why
    // (Single values out of range were refused by cli_parse: see .range.)
    if (o->validation_split > 0 && o->val_cache) BAD("give either --val-cache or --validation-split, not both");
    if (mo->hidden < 0) BAD("--hidden must be >= 0, got %d", mo->hidden);
    if (!(mo->dropout >= 0 && mo->dropout < 1)) BAD("--dropout must be in [0, 1), got %g", mo->dropout);
    if (o->early_stopping > 0 && !o->val_cache && o->validation_split <= 0)
        BAD("--early-stopping watches %s: give --val-cache or --validation-split", o->monitor);
    if (o->restore_best && !o->val_cache && o->validation_split <= 0)
        BAD("--restore-best-weights watches %s: give --val-cache or --validation-split", o->monitor);
    if (o->nesterov && strcmp(o->optimizer, "sgd")) BAD("--nesterov applies to --optimizer sgd only");
    if (o->out && fit_check_out_name(o->out) < 0) BAD("%s", err_msg());
    if (o->momentum_given && !strcmp(o->optimizer, "adam")) BAD("--momentum applies to sgd and rmsprop, not adam");
#undef BAD
    return NULL;
}

// --summary --cache: the model train would fit on that cache (the shape
// options, which say the same thing, are refused beside it).
static int cache_summary(CliSpec *spec, const TrainOptions *o, const ModelOptions *mo) {
    const char *given = cli_first_seen(spec, SHAPE_ONLY);
    if (given) {
        cli_error("train", "--%s with --summary --cache: the shape comes from the cache; leave out one of them", given);
        return EXIT_USAGE;
    }
    Cache c;
    CacheMeta meta = {0};
    if (cache_open_read(&c, o->cache, &meta) < 0) {
        cli_error("train", NULL);
        return EXIT_FAILED;
    }
    cache_meta_warn_partial(&meta, o->cache);  // as training would
    TrainOptions t = *o;
    t.hidden = mo->hidden, t.dropout = mo->dropout, t.class_mode = mo->class_mode;
    ModelConfig cfg;
    int status = EXIT_FAILED;
    if (train_model_config(&meta, &t, &cfg) < 0) cli_error("train", "%s: %s", o->cache, err_msg());
    else status = model_config_summary("train", &cfg, SUMMARY_NESTED);
    cache_close(&c);
    cache_meta_free(&meta);
    return status;
}

int main(int argc, char **argv) {
    cli_process_setup();
    blas_setup(argv, 0, BLAS_NEEDED);
    TrainOptions o = {0};
    int summary = 0;
    ModelOptions mo;
    CliOption opts[] = {
        {"cache", OPT_STRING, &o.cache, NULL, "TRAIN", "training feature cache written by extract"},
        {"val-cache", OPT_STRING, &o.val_cache, NULL, "VAL", "validation feature cache"},
        {"validation-split", OPT_DOUBLE, &o.validation_split, "0", "F",
         "use the first fraction F of each class of --cache as validation\n(Keras's validation_split)",
         .range = "[0,1)"},
        {"out", OPT_STRING, &o.out, NULL, "HEAD.h5", "where to write the trained head (Keras HDF5)"},
        {"optimizer", OPT_CHOICE, &o.optimizer, "sgd", NULL, "optimizer, with Keras's defaults", "sgd|adam|rmsprop"},
        {"lr", OPT_FLOAT, &o.lr, NULL, "LR", "learning rate (default: Keras's for the optimizer; seeds: 1e-3)",
         .range = ">0"},
        {"momentum", OPT_FLOAT, &o.momentum, NULL, "M", "momentum (SGD, RMSprop; default 0)", .range = "[0,1)"},
        {"nesterov", OPT_FLAG, &o.nesterov, NULL, NULL, "Nesterov momentum (SGD)"},
        {"epochs", OPT_INT, &o.epochs, "30", "N", "training epochs (in all, when resuming)", .range = ">=1"},
        {"batch", OPT_INT, &o.batch, "20", "N", "batch size", .range = ">=1"},
        {"class-weight", OPT_CHOICE, &o.class_weight, "none", NULL,
         "balanced: weight_c = N / (K * N_c), like scikit-learn", "none|balanced"},
        FIT_EARLY_STOPPING_OPTIONS(o),
        {"seed", OPT_LONG, &o.seed, "1", "S", "seed of initialisation, shuffling and dropout", .range = ">=0"},
        {"threads", OPT_INT, &o.threads, "0", "N",
         "CPU threads (0: the CPUs this job may use, its affinity mask:\ntaskset, Slurm); results do not depend on it",
         .range = ">=0"},
        {"memory-budget", OPT_LONG, &o.memory_budget_mb, "4096", "MB",
         "keep features in memory up to this size, else stream them from the cache", .range = ">=0"},
        {"resume", OPT_FLAG, &o.resume, NULL, NULL, "continue from HEAD.ckpt (settings must match)"},
        {"resume-if-same", OPT_FLAG, &o.resume_if_same, NULL, NULL,
         "continue from HEAD.ckpt when it is of these settings and data, else\nstart over (a note says why): for make and job scripts"},
        {"quiet", OPT_FLAG, &o.quiet, NULL, NULL, "no progress bars: one line per epoch (warnings still print)"},
        {"summary", OPT_FLAG, &summary, NULL, NULL, "print the model (frozen base + head) and exit"},
        {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0},  // room for the model options (8 at most) and the end
    };
    int first_model_opt = cli_count(opts);
    int n = first_model_opt + model_options_add(opts + first_model_opt, &mo, MOPT_BASE | MOPT_HEAD);
    model_options_summary_only(opts + first_model_opt, n - first_model_opt, SHAPE_ONLY, "the cache");
    CliSpec spec = {"train", "Train the dense head on cached VGG features (CPU).",
                    "--cache TRAIN [--val-cache VAL | --validation-split F] --out HEAD.h5 [options]", EPILOG, opts,
                    0, cli_fit_not_here};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc == CLI_EXIT_OK) return EXIT_DONE;
    if (rc == CLI_USAGE) return EXIT_USAGE;
    if (summary && !o.cache) return model_options_summary("train", &mo, MOPT_BASE | MOPT_HEAD, SUMMARY_NESTED);
    if (summary) return cache_summary(&spec, &o, &mo);
    if (!o.cache || !o.out) {
        cli_error("train", "--cache and --out are required (see --help)");
        return EXIT_USAGE;
    }
    o.lr_given = cli_find(&spec, "lr")->seen;
    o.momentum_given = cli_find(&spec, "momentum")->seen;
    char why[ERR_MSG_MAX];
    const char *bad = check_options(&spec, &o, &mo, why, sizeof why);
    if (!bad && o.resume && o.resume_if_same) bad = "give --resume or --resume-if-same, not both";
    if (bad) {
        cli_error("train", "%s", bad);
        return EXIT_USAGE;
    }
    o.hidden = mo.hidden;
    o.dropout = mo.dropout;
    if (mo.hidden == 0 && cli_find(&spec, "dropout")->seen)
        log_printf(stderr, "note: --dropout applies to the hidden layer; with --hidden 0 there is none\n");
    if (cli_find(&spec, "monitor")->seen && o.early_stopping == 0 && !o.restore_best)
        log_printf(stderr, "note: --monitor is what --early-stopping and --restore-best-weights watch; without them "
                           "it changes nothing\n");
    o.class_mode = mo.class_mode;
    char *command = cli_command_line(argc, argv, NULL);
    o.command_line = command;
    cli_stdout_is_log();
    int status = train_run(&o);
    if (status < 0) cli_error("train", NULL), status = EXIT_FAILED;
    if (status != 0) remove_created_dirs();  // an --out folder made for outputs never written
    free(command);
    return status;
}
