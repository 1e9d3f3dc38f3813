// predict's results: the per-image lines (text, csv, JSON Lines), the
// running evaluation (loss, accuracy, confusion matrix), the misclassified
// files, and the report with its pictures. predict.c feeds it batches of
// model outputs; this file never sees images or features otherwise.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "fit.h"
#include "forward.h"
#include "model.h"

typedef enum { FMT_TEXT, FMT_CSV, FMT_JSON } Format;

// Reported and skipped files (path as shown, reason).
typedef struct {
    int n, cap;
    char **path, **reason;
} SkipList;

void skip_add(SkipList *s, const char *path, const char *reason);
void skip_free(SkipList *s);

// One of the most confident mistakes, for the contact sheet.
typedef struct {
    char *path;    // as opened (the cache's folder joined to its record path)
    float prob;    // of the predicted class
    long order;    // position among the inputs (ties: earlier first)
    int truth, pred;
} Mistake;

typedef struct {
    const Model *m;
    char *const *names;  // K class names
    int K, top_k, eval;
    Format fmt;
    FILE *out;           // per-image lines
    Running run;         // loss and accuracy (fit.h)
    long *conf;          // K x K
    FILE *wrong;         // misclassified: records (path length, path, true, predicted, prob), input order
    long n_wrong;
    Mistake *worst;      // the max_errors most confident mistakes (unordered)
    int n_worst, max_worst;
    long order;          // images classified so far
    float *probs;        // K scratch
    int *idx;            // K scratch
    const char *note;    // lines the report shows about its data (an incomplete cache...), or NULL
    const char *model;   // what was evaluated ("model.h5: a fine-tuned vgg16 ..."), or NULL
    int nonfinite;       // 1 once a non-finite model output was warned about
} Results;

// The csv header line (nothing for the other formats).
void results_header(const Results *r);
// A batch's model outputs (hb->probs, n rows; features: what the head read,
// for the loss): one line per image to r->out and, with labels (r->eval),
// the running figures. paths[i]: as shown; open_paths[i]: as opened again
// for the contact sheet's thumbnails (may be paths). pred: n ints scratch.
// -1 (err_set) when writing fails.
int results_take_batch(Results *r, HeadBuffers *hb, const float *features, int n, char *const *paths,
                       char *const *open_paths, const int32_t *labels, int32_t *pred);
// After the last batch: the evaluation report on screen (stdout with text,
// stderr with csv / json) and, when report is not NULL, REPORT_report.txt
// (.json with --format json), REPORT_confusion.svg and REPORT_errors.svg.
// what: "Evaluation"...; data: the folder or cache evaluated.
int results_finish(Results *r, const char *report, const char *what, const char *data, const SkipList *skipped);
// The report's files are REPORT + report_suffix(k, fmt), k = 0, 1, 2:
// "_report.txt" ("_report.json" with FMT_JSON), "_confusion.svg", "_errors.svg".
const char *report_suffix(int k, Format fmt);
// Frees what results_* and the caller allocated in r (worst, conf, probs,
// idx; closes wrong).
void results_free(Results *r);
