// predict: a trained model applied to images (top-k per image), and its
// evaluation on a labelled folder or on cached features (loss, accuracy,
// confusion matrix, per-class precision / recall / F1, the misclassified
// files and the pictures of both).
#pragma once

typedef struct {
    const char *model;      // --model MODEL.h5: a whole model from finetune
    const char *head;       // --head HEAD.h5: a head from train ...
    const char *weights;    // ... on these base weights (FILE|imagenet|random)
    const char *cache;      // --cache CACHE (with --head): evaluate cached features
    const char *eval;       // --eval DIR: class folders as in training
    const char *report;     // --report PREFIX: PREFIX_confusion.svg, PREFIX_errors.svg, PREFIX_report.txt|json
    const char *format;     // text | csv | json
    const char *device;     // auto | cpu | cuda
    int top_k;              // 0: min(3, classes)
    int batch, threads, quiet, max_errors;
    long seed;              // for --weights random; < 0: the one the head records
    long memory_budget_mb;  // --cache: features kept in memory up to this
    long max_pixels;        // --max-pixels: extract's pixel budget (DecodeOptions)
    char **inputs;          // IMAGE|DIR arguments (not with --eval / --cache)
    int n_inputs;
} PredictOptions;

// EXIT_DONE, or EXIT_PARTIAL (cli.h) when every input that could be read
// was classified but some could not (reported and skipped, as extract skips
// them); -1 on error (err_msg() names the file, layer or value).
int predict_run(const PredictOptions *o);
