// finetune: unfreeze the top of the conv base and train it with the head,
// with on-the-fly augmentation.
#include <stdio.h>
#include <string.h>

#include "blas_setup.h"
#include "cli.h"
#include "device.h"
#include "model_options.h"

static const char *EPILOG =
    "Stage 2 of the seeds: start from the base weights and the head trained by\n"
    "`train`, unfreeze the base from --unfreeze up, and train with augmentation.\n"
    "  build/finetune --data data/train --val-data data/validation \\\n"
    "      --weights imagenet --head head.h5 --out model.h5 --lr 1e-4\n"
    "  build/finetune --summary --input-size 150 --classes 2 --unfreeze block5_conv1";

int main(int argc, char **argv) {
    blas_setup(argv, 0);
    struct {
        const char *data, *val_data, *weights, *head, *out, *optimizer, *device;
        float lr, rotation, shift, shear, zoom;
        int flip, epochs, batch, threads, summary;
        long seed;
        ModelOptions mo;
    } o;
    CliOption opts[40] = {
        {"data", OPT_STRING, &o.data, NULL, "DIR", "training images, one subfolder per class"},
        {"val-data", OPT_STRING, &o.val_data, NULL, "DIR", "validation images"},
        {"weights", OPT_STRING, &o.weights, "imagenet", "FILE|imagenet", "weights of the conv base"},
        {"head", OPT_STRING, &o.head, NULL, "HEAD.h5", "head trained by `train` (required: train the head first)"},
        {"out", OPT_STRING, &o.out, NULL, "MODEL.h5", "where to write the fine-tuned model"},
        {"optimizer", OPT_CHOICE, &o.optimizer, "sgd", NULL, "optimizer, with Keras's defaults", "sgd|adam|rmsprop"},
        {"lr", OPT_FLOAT, &o.lr, "0.0001", "LR", "learning rate (keep it low: the base is pretrained)"},
        {"epochs", OPT_INT, &o.epochs, "10", "N", "training epochs"},
        {"batch", OPT_INT, &o.batch, "20", "N", "batch size"},
        {"rotation", OPT_FLOAT, &o.rotation, "30", "DEG", "random rotation range (degrees)"},
        {"shift", OPT_FLOAT, &o.shift, "0.2", "F", "random width/height shift (fraction of the size)"},
        {"shear", OPT_FLOAT, &o.shear, "0.2", "DEG", "random shear range (degrees, as Keras >= 2.1.3)"},
        {"zoom", OPT_FLOAT, &o.zoom, "0.2", "F", "random zoom range [1-F, 1+F]"},
        {"flip", OPT_FLAG, &o.flip, NULL, NULL, "random horizontal flips"},
        {"device", OPT_CHOICE, &o.device, "auto", NULL, "where to train", "auto|cpu|cuda"},
        {"threads", OPT_INT, &o.threads, "0", "N", "CPU threads (0: all cores)"},
        {"seed", OPT_LONG, &o.seed, "1", "S", "seed of augmentation, shuffling and dropout"},
        {"summary", OPT_FLAG, &o.summary, NULL, NULL, "print every layer with its trainable flag and exit"},
    };
    int n = 18;
    n += model_options_add(opts + n, &o.mo, MOPT_BASE | MOPT_HEAD | MOPT_UNFREEZE);
    CliSpec spec = {"finetune", "Fine-tune the top of the VGG base together with the trained head (GPU).",
                    "--data DIR --head HEAD.h5 --out MODEL.h5 [options]", EPILOG, opts, n};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc == CLI_EXIT_OK) return 0;
    if (rc == CLI_USAGE) return 2;
    blas_set_threads(o.threads);
    if (o.summary)
        return model_options_summary("finetune", &o.mo, MOPT_BASE | MOPT_HEAD | MOPT_UNFREEZE, SUMMARY_FLAT);
    DeviceKind dev;
    if (device_select(o.device, &dev, NULL, 0) < 0) {
        cli_error("finetune", NULL);
        return 1;
    }
    if (!o.data || !o.head || !o.out) {
        cli_error("finetune", "--data, --head and --out are required (see --help)");
        return 2;
    }
    cli_error("finetune", "fine-tuning is not built yet (the finetune issue); --summary, --help and --version work");
    return 1;
}
