// predict: apply a trained model to images; evaluate it on a labelled
// folder or on cached features.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_setup.h"
#include "cli.h"
#include "predict.h"
#include "progress.h"

static const char *EPILOG =
    "Classifies images with a whole model from `finetune` (--model), or with a\n"
    "head from `train` (--head) on the base weights it was trained on (checked\n"
    "by SHA-256). Input size, interpolation, preprocessing and class names come\n"
    "from the model file; the images go through the chain extract and finetune\n"
    "use, so a prediction is what the model saw in training.\n"
    "  build/predict --model model.h5 photo.jpg more_photos/\n"
    "  build/predict --head head.h5 --weights imagenet --format json photos/ > preds.jsonl\n"
    "A folder argument is read like one class folder of flow_from_directory:\n"
    "the files Keras lists (jpg, jpeg, png, bmp, ppm, tif, tiff) in it and\n"
    "below, in Keras's order. One line per image on stdout, in input order:\n"
    "  text  PATH: bees 0.9731, ants 0.0269        (--eval adds \" (true: bees)\")\n"
    "  csv   a header path[,true],class_1,prob_1,...,class_k,prob_k, then a row\n"
    "  json  JSON Lines {\"path\": ..., \"top_k\": [{\"class\": ..., \"prob\": ...}],\n"
    "        \"true\": ... with --eval or --cache}\n"
    "        (a byte of a file or class name that is not UTF-8 is written as\n"
    "        \\u00XX, its Latin-1 reading; non-finite probabilities as null)\n"
    "A binary (sigmoid) model's p is the probability of the second class in\n"
    "folder order, as Keras's class_mode='binary' labels them.\n"
    "\n"
    "Evaluation on a labelled folder (class folders named as in training), or\n"
    "on features cached by `extract` (of the head's base, layer, size and\n"
    "weights; seconds instead of minutes):\n"
    "  build/predict --model model.h5 --eval data/validation --report out/val\n"
    "  build/predict --head head.h5 --cache cache/val --report out/val\n"
    "prints loss, accuracy, the confusion matrix, per-class precision, recall\n"
    "and F1 and the misclassified files (on stdout, or on stderr with --format\n"
    "csv|json); --report PREFIX also writes PREFIX_report.txt (.json with\n"
    "--format json), PREFIX_confusion.svg and PREFIX_errors.svg (the\n"
    "--max-errors most confident mistakes as captioned thumbnails).\n"
    "\n"
    "Files that cannot be read (corrupt, truncated, unsupported such as TIFF,\n"
    "missing) are reported with their reason on stderr, listed in the report\n"
    "and skipped; the rest is classified. Progress, notes and warnings go to\n"
    "stderr (with a timestamp when it is not a terminal); --quiet hides only\n"
    "the progress bar and its heading line.\n"
    "--weights imagenet looks for Keras's file in $KERAS_HOME/models or\n"
    "~/.keras/models and downloads it there when missing.\n"
    "\n"
    "Large images follow extract's pixel budget (--max-pixels, same default and\n"
    "warning), so a prediction decodes what training decoded. `--` ends the\n"
    "options. The list of misclassified files is kept in an unlinked file in\n"
    "$TMPDIR (default /tmp).\n"
    "\n"
    "Exit codes: 0 done; 1 failed (the message names the file, layer or value;\n"
    "also when stdout cannot be written, or no input image could be read);\n"
    "2 usage error (unknown option, value out of range, options that do not go\n"
    "together); 3 done, but some files could not be read (reported and skipped);\n"
    "75 stopped by SIGTERM/SIGINT: it stops between batches, the lines printed\n"
    "so far are complete and flushed, no report is written; rerun to classify all.";

int main(int argc, char **argv) {
    cli_process_setup();
    blas_setup(argv, 0, BLAS_UNUSED);
    PredictOptions o = {0};
    CliOption opts[] = {
        {"model", OPT_STRING, &o.model, NULL, "MODEL.h5", "a whole model written by `finetune` (or --head)"},
        {"head", OPT_STRING, &o.head, NULL, "HEAD.h5",
         "a dense head written by `train`, on the base of --weights\n(or on the features of --cache)"},
        {"weights", OPT_STRING, &o.weights, NULL, "FILE|imagenet|random",
         "with --head: the base weights the head was trained on: a\nKeras HDF5 file, Keras's ImageNet file, "
         "or random (--seed) (default: those the head records)"},
        {"eval", OPT_STRING, &o.eval, NULL, "DIR", "evaluate on a labelled folder (one subfolder per class)"},
        {"cache", OPT_STRING, &o.cache, NULL, "CACHE", "with --head: evaluate on features cached by `extract`"},
        {"report", OPT_STRING, &o.report, NULL, "PREFIX",
         "with --eval or --cache: write PREFIX_report.txt|json,\nPREFIX_confusion.svg and PREFIX_errors.svg"},
        {"max-errors", OPT_INT, &o.max_errors, "36", "N",
         "with --report: the most confident mistakes shown in\nPREFIX_errors.svg",
         .range = ">=0"},
        {"top-k", OPT_INT, &o.top_k, NULL, "K",
         "classes shown per image, most probable first\n(default: min(3, classes))", .range = ">=1"},
        {"format", OPT_CHOICE, &o.format, "text", NULL,
         "per-image output on stdout: text, CSV or JSON Lines", "text|csv|json"},
        {"batch", OPT_INT, &o.batch, "32", "N", "images per batch through the conv base (on the CPU, a batch\nof at least --threads runs its images side by side, one per thread)", .range = ">=1"},
        {"device", OPT_CHOICE, &o.device, "auto", NULL, "where the conv base runs; auto: the GPU when one is usable",
         "auto|cpu|cuda"},
        {"threads", OPT_INT, &o.threads, "0", "N",
         "CPU threads for decoding and the conv base (0: the CPUs this job may use,\nits affinity mask: taskset, Slurm)",
         .range = ">=0"},
        {"seed", OPT_LONG, &o.seed, NULL, "S", "with --weights random: the seed extract was given (default: the one\nthe head records)", .range = ">=0"},
        {"memory-budget", OPT_LONG, &o.memory_budget_mb, "4096", "MB",
         "with --cache: keep features in memory up to this size, else stream\nthem from the cache",
         .range = ">=0"},
        {"max-pixels", OPT_LONG, &o.max_pixels, NULL, "N",
         "pixel budget, as extract's: larger JPEGs are decoded at a reduced\nscale (with a warning), other larger images "
         "skipped (default: the\nbudget the model or head records, else 50000000)",
         .range = ">=1"},
        {"quiet", OPT_FLAG, &o.quiet, NULL, NULL, "no progress bar (warnings, notes and errors still print)"},
        {0},
    };
    static const char *const not_here[][2] = {
        {"input-size", "the input size comes from the model file, with the interpolation, preprocessing and layer"},
        {"interpolation", "the interpolation comes from the model file"},
        {"preprocess", "the preprocessing comes from the model file"},
        {"layer", "the layer comes from the model file"},
        {"data", "give images and folders as arguments, or --eval DIR for a labelled folder"},
        {"val-data", "give a labelled folder as --eval DIR"},
        {"out", "the predictions go to stdout; --report PREFIX writes the report files"},
        {NULL, NULL},
    };
    CliSpec spec = {"predict", "Classify images with a trained model; evaluate it on labelled data.",
                    "(--model MODEL.h5 | --head HEAD.h5 [--weights BASE])\n"
                    "               (IMAGE|DIR... | --eval DIR | --cache CACHE) [options]",
                    EPILOG, opts, 0, not_here};
    // cli_parse: "--" ends the options (inputs named "--x" follow it).
    int rc = cli_parse(&spec, argc, argv, &o.n_inputs, &o.inputs);
    if (rc != CLI_OK) {
        free(o.inputs);
        return rc == CLI_EXIT_OK ? EXIT_DONE : EXIT_USAGE;
    }
    const char *bad = NULL;
    char why[300];
#define BAD(...) (snprintf(why, sizeof why, __VA_ARGS__), bad = why)
    if (!o.model == !o.head) BAD("give the model as --model MODEL.h5 (from finetune) or --head HEAD.h5 (from train)");
    else if (o.model && cli_find(&spec, "weights")->seen)
        BAD("--weights goes with --head: a --model file carries its own base weights");
    else if (o.cache && !o.head) BAD("--cache goes with --head HEAD.h5 (cached features are the base's output)");
    else if (o.cache && o.eval) BAD("give either --eval DIR (images) or --cache CACHE (features), not both");
    else if ((o.cache || o.eval) && o.n_inputs) BAD("images to classify go without --eval or --cache");
    else if (!o.cache && !o.eval && !o.n_inputs) BAD("nothing to classify: give IMAGE or DIR arguments, --eval or --cache");
    else if (o.report && !o.cache && !o.eval) BAD("--report goes with --eval or --cache (it reports an evaluation)");
    else if (o.report && !o.report[0]) BAD("--report needs a PREFIX (an empty one would write _report.txt here)");
    else if (o.report && o.report[strlen(o.report) - 1] == '/')
        BAD("--report needs a PREFIX, not a folder (give DIR/val: DIR/val_report.txt, DIR/val_confusion.svg ...)");
    // (Single values out of range were refused by cli_parse: see .range.)
#undef BAD
    // The --head examples give --weights; with --cache it has no use (the
    // cache's own base weights are checked against the head's): a note.
    if (!bad && o.cache && cli_find(&spec, "weights")->seen)
        log_printf(stderr, "note: --weights %s is not used with --cache: the features are cached (the base weights "
                   "they came from are checked against the head's)\n", o.weights);
    if (bad) {
        cli_error("predict", "%s", bad);
        free(o.inputs);
        return EXIT_USAGE;
    }
    // Options given where they change nothing: say so (not an error).
    if (cli_find(&spec, "max-errors")->seen && !o.report)
        log_printf(stderr, "note: --max-errors only changes --report's PREFIX_errors.svg; no --report given\n");
    if (cli_find(&spec, "seed")->seen && (o.model || o.cache || (o.weights && strcmp(o.weights, "random"))))
        log_printf(stderr, "note: --seed only goes with --head ... --weights random; ignored here\n");
    if (cli_find(&spec, "memory-budget")->seen && !o.cache)
        log_printf(stderr, "note: --memory-budget only goes with --cache; ignored here\n");
    if (!cli_find(&spec, "seed")->seen) o.seed = -1;  // --weights random: the seed the head records
    int status = predict_run(&o);
    if (status < 0) cli_error("predict", NULL), status = EXIT_FAILED;
    free(o.inputs);
    return status;
}
