#include "model_options.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

int model_options_add(CliOption *opts, ModelOptions *mo, unsigned which) {
    int n = 0;
    if (which & MOPT_BASE) {
        opts[n++] = (CliOption){"model", OPT_CHOICE, &mo->model, "vgg16", NULL,
                                "convolutional base: Keras's VGG16 or VGG19", "vgg16|vgg19"};
        opts[n++] = (CliOption){"input-size", OPT_INT, &mo->input_size, "150", "N",
                                "images are resized to N x N (at least 32), Keras's target_size"};
        opts[n++] = (CliOption){"layer", OPT_STRING, &mo->layer, "block5_pool", "NAME",
                                "pooling layer whose output are the features (e.g. block4_pool)"};
    }
    if (which & MOPT_HEAD) {
        opts[n++] = (CliOption){"classes", OPT_INT, &mo->classes, "2", "K",
                                "number of classes (otherwise taken from the data)"};
        opts[n++] = (CliOption){"class-mode", OPT_CHOICE, &mo->class_mode, "auto", NULL,
                                "binary: one sigmoid output; categorical: softmax;\nauto: binary for 2 classes",
                                "auto|binary|categorical"};
        opts[n++] = (CliOption){"hidden", OPT_INT, &mo->hidden, "256", "UNITS",
                                "units of the hidden Dense(relu) layer of the head (0: none)"};
        opts[n++] = (CliOption){"dropout", OPT_FLOAT, &mo->dropout, "0.5", "RATE",
                                "dropout rate after the hidden layer (0: none)"};
    }
    if (which & MOPT_UNFREEZE)
        opts[n++] = (CliOption){"unfreeze", OPT_STRING, &mo->unfreeze, "block5_conv1", "LAYER",
                                "first trainable base layer; the layers below stay frozen"};
    return n;
}

void model_options_summary_only(CliOption *opts, int n, const char *const *names, const char *source) {
    // Static texts: they live as long as the option table (the whole run).
    static char texts[8][320];
    int used = 0;
    for (int i = 0; i < n; i++)
        for (const char *const *p = names; *p && used < 8; p++) {
            if (strcmp(opts[i].name, *p)) continue;
            snprintf(texts[used], sizeof texts[used], "with --summary only (otherwise from %s): %s", source,
                     opts[i].help);
            opts[i].help = texts[used++];
        }
}

int model_options_config(const ModelOptions *mo, unsigned which, ModelConfig *cfg) {
    model_config_defaults(cfg);
    if (which & MOPT_BASE) {
        if (arch_from_name(mo->model, &cfg->arch) < 0) return -1;
        cfg->input_h = cfg->input_w = mo->input_size;
        cfg->cut = mo->layer;
    }
    if (which & MOPT_HEAD) {
        cfg->n_classes = mo->classes;
        cfg->hidden = mo->hidden;
        cfg->dropout = mo->dropout;
        if (!strcmp(mo->class_mode, "binary")) cfg->binary = 1;
        else if (!strcmp(mo->class_mode, "categorical")) cfg->binary = 0;
        else cfg->binary = mo->classes == 2;
    }
    if (which & MOPT_UNFREEZE) cfg->unfreeze = mo->unfreeze;
    return 0;
}

int model_options_summary(const char *prog, const ModelOptions *mo, unsigned which, SummaryStyle style) {
    ModelConfig cfg;
    if (model_options_config(mo, which, &cfg) < 0) {
        cli_error(prog, NULL);
        return 2;
    }
    int rc = model_config_summary(prog, &cfg, style);
    return rc ? 2 : 0;
}

int model_config_summary(const char *prog, const ModelConfig *cfg, SummaryStyle style) {
    Model m;
    if (model_build(&m, cfg) < 0) {
        cli_error(prog, NULL);
        return 1;
    }
    model_print_summary(&m, style, stdout);
    model_free(&m);
    return 0;
}
