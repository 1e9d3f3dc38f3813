// The model options every executable shares (--model, --input-size, --layer,
// --classes, --class-mode, --hidden, --dropout, --unfreeze), defined once so
// that the tools agree on names, defaults and help text.
#pragma once
#include "cli.h"
#include "model.h"

typedef struct {
    const char *model;
    int input_size;
    const char *layer;
    int classes;
    const char *class_mode;
    int hidden;
    float dropout;
    const char *unfreeze;
} ModelOptions;

enum {
    MOPT_BASE = 1,      // --model --input-size --layer
    MOPT_HEAD = 2,      // --classes --class-mode --hidden --dropout
    MOPT_UNFREEZE = 4,  // --unfreeze
};

// Writes the selected options into opts (room for 8); returns how many.
int model_options_add(CliOption *opts, ModelOptions *mo, unsigned which);
// Marks the named options among opts[0..n) as shaping --summary only (the
// tool takes those values from `source`, e.g. "--head" or "the cache"):
// their --help text says so. names: NULL-terminated.
void model_options_summary_only(CliOption *opts, int n, const char *const *names, const char *source);
// ModelConfig from the options (defaults for what was not selected).
int model_options_config(const ModelOptions *mo, unsigned which, ModelConfig *cfg);

// --summary: builds the model from the options alone (no data, no weights)
// and prints its Keras-style table to stdout. Returns the exit code.
int model_options_summary(const char *prog, const ModelOptions *mo, unsigned which, SummaryStyle style);
// The same from a whole configuration (a head's, a cache's). Returns the
// exit code (1 when the model cannot be built).
int model_config_summary(const char *prog, const ModelConfig *cfg, SummaryStyle style);
