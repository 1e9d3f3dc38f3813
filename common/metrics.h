// Classification figures from a confusion matrix, and the top k of a
// probability vector: what `predict --eval` reports beside fit.h's
// fit_print_report (loss, accuracy, the matrix, precision and recall).
#pragma once
#include <stdint.h>
#include <stdio.h>

// One class's figures from a K x K confusion matrix conf[t * K + p] (rows:
// true class t, columns: predicted class p, as fit.h's confusion_add fills it).
// scikit-learn's precision_recall_fscore_support(average=None, zero_division=0):
//   precision = tp / (column sum), recall = tp / (row sum),
//   f1 = 2 * precision * recall / (precision + recall),
// each 0 where its denominator is 0 (scikit-learn's zero_division=0).
typedef struct {
    long tp;         // conf[k * K + k]
    long predicted;  // column sum: samples predicted as k
    long support;    // row sum: samples whose true class is k
    double precision, recall, f1;
} ClassMetrics;

// out: K entries. Computed in double.
void metrics_per_class(const long *conf, int K, ClassMetrics *out);

// Averages over the classes (scikit-learn's average='macro': each class in
// the truth or the predictions counts once, as scikit-learn's default
// labels, the union of y_true and y_pred; a class in neither, as when an
// evaluation folder holds fewer classes, does not count) and weighted by
// support (average='weighted'). Any pointer may be NULL.
void metrics_macro(const ClassMetrics *c, int K, double *precision, double *recall, double *f1);
void metrics_weighted(const ClassMetrics *c, int K, double *precision, double *recall, double *f1);

// The width of the class-name column of the per-class table (display
// columns: the longest name, within 12..24), shared by fit_print_report and
// metrics_print so that their rows line up.
int metrics_label_width(int K, char *const *class_names);
// The last rows of fit_print_report's per-class table (fit.h: precision,
// recall, F1, support, as scikit-learn's classification_report): the macro
// and weighted averages of precision, recall and F1, to out.
void metrics_print(FILE *out, int K, char *const *class_names, const ClassMetrics *c);

// Indices of the k largest of probs[0..n) in decreasing order; equal values
// keep the lower index first (so top-1 is Keras's argmax, which takes the
// first maximum). k is clamped to [0, n]; returns the count written to idx.
// NaN sorts last.
int metrics_top_k(const float *probs, int n, int k, int *idx);

// Decimals to print probability p with: `digits`, more (up to 7) when those
// would round p < 1 up to 1 (a mistake's 0.99996 is not 1.0000).
int metrics_prob_digits(double p, int digits);

// A confusion matrix too big to show (thousands of classes: K * K cells)
// is summarised by its largest off-diagonal cells instead. Returns how many
// (at most n) of the largest nonzero conf[t * K + p], t != p, it writes to
// true_k[] and pred_k[], in decreasing count; equal counts in row-major
// order (lower true class, then lower predicted class, first).
int metrics_top_confusions(const long *conf, int K, int n, int *true_k, int *pred_k);
