// train: the dense head on the CPU from cached features.
#include <stdio.h>
#include <string.h>

#include "blas_setup.h"
#include "cli.h"
#include "model_options.h"

static const char *EPILOG =
    "Trains Flatten -> Dense(hidden, relu) -> Dropout -> Dense(sigmoid|softmax) on\n"
    "features cached by `extract`, on the CPU. Example (the seeds' stage 1):\n"
    "  build/train --cache cache/train --val-cache cache/val --out head.h5 \\\n"
    "      --optimizer sgd --lr 1e-3 --epochs 30 --batch 20\n"
    "  build/train --summary --input-size 150 --classes 2";

int main(int argc, char **argv) {
    blas_setup(argv, 0);
    struct {
        const char *cache, *val_cache, *out, *optimizer, *class_weight, *resume;
        double validation_split;
        float lr, momentum;
        int nesterov, epochs, batch, early_stopping, threads, summary;
        long seed;
        ModelOptions mo;
    } o;
    CliOption opts[40] = {
        {"cache", OPT_STRING, &o.cache, NULL, "TRAIN", "training feature cache written by extract"},
        {"val-cache", OPT_STRING, &o.val_cache, NULL, "VAL", "validation feature cache"},
        {"validation-split", OPT_DOUBLE, &o.validation_split, "0", "F",
         "use the first fraction F of each class of --cache as validation\n(Keras's validation_split)"},
        {"out", OPT_STRING, &o.out, NULL, "HEAD.h5", "where to write the trained head (Keras HDF5)"},
        {"optimizer", OPT_CHOICE, &o.optimizer, "sgd", NULL, "optimizer, with Keras's defaults", "sgd|adam|rmsprop"},
        {"lr", OPT_FLOAT, &o.lr, "0.001", "LR", "learning rate (the seeds' SGD: 1e-3)"},
        {"momentum", OPT_FLOAT, &o.momentum, "0", "M", "SGD momentum"},
        {"nesterov", OPT_FLAG, &o.nesterov, NULL, NULL, "Nesterov momentum (SGD)"},
        {"epochs", OPT_INT, &o.epochs, "30", "N", "training epochs"},
        {"batch", OPT_INT, &o.batch, "20", "N", "batch size"},
        {"class-weight", OPT_CHOICE, &o.class_weight, "none", NULL,
         "balanced: weight_c = N / (K * N_c), like scikit-learn", "none|balanced"},
        {"early-stopping", OPT_INT, &o.early_stopping, "0", "PATIENCE",
         "stop after PATIENCE epochs without val_loss improvement (0: off)"},
        {"seed", OPT_LONG, &o.seed, "1", "S", "seed of initialisation, shuffling and dropout"},
        {"threads", OPT_INT, &o.threads, "0", "N", "CPU threads (0: all cores); results do not depend on it"},
        {"resume", OPT_STRING, &o.resume, NULL, "FILE", "continue from a checkpoint written by an earlier run"},
        {"summary", OPT_FLAG, &o.summary, NULL, NULL, "print the model (frozen base + head) and exit"},
    };
    int n = 16;
    n += model_options_add(opts + n, &o.mo, MOPT_BASE | MOPT_HEAD);
    CliSpec spec = {"train", "Train the dense head on cached VGG features (CPU).",
                    "--cache TRAIN [--val-cache VAL | --validation-split F] --out HEAD.h5 [options]", EPILOG, opts,
                    n};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc == CLI_EXIT_OK) return 0;
    if (rc == CLI_USAGE) return 2;
    blas_set_threads(o.threads);
    if (o.summary) return model_options_summary("train", &o.mo, MOPT_BASE | MOPT_HEAD, SUMMARY_NESTED);
    if (!o.cache || !o.out) {
        cli_error("train", "--cache and --out are required (see --help)");
        return 2;
    }
    cli_error("train", "training from a cache is not built yet (the train issue); --summary, --help and --version work");
    return 1;
}
