#include "metrics.h"

#include <math.h>
#include <string.h>

#include "utf8.h"

void metrics_per_class(const long *conf, int K, ClassMetrics *out) {
    for (int k = 0; k < K; k++) {
        ClassMetrics *c = &out[k];
        memset(c, 0, sizeof *c);
        c->tp = conf[(long)k * K + k];
        for (int j = 0; j < K; j++) c->predicted += conf[(long)j * K + k], c->support += conf[(long)k * K + j];
        c->precision = c->predicted ? (double)c->tp / c->predicted : 0.0;
        c->recall = c->support ? (double)c->tp / c->support : 0.0;
        double s = c->precision + c->recall;
        c->f1 = s > 0 ? 2.0 * c->precision * c->recall / s : 0.0;
    }
}

static void average(const ClassMetrics *c, int K, int weighted, double *p, double *r, double *f) {
    double sp = 0, sr = 0, sf = 0, w = 0;
    for (int k = 0; k < K; k++) {
        if (!c[k].support && !c[k].predicted) continue;  // in neither the truth nor the predictions
        double wk = weighted ? (double)c[k].support : 1.0;
        sp += wk * c[k].precision, sr += wk * c[k].recall, sf += wk * c[k].f1, w += wk;
    }
    if (p) *p = w > 0 ? sp / w : 0.0;
    if (r) *r = w > 0 ? sr / w : 0.0;
    if (f) *f = w > 0 ? sf / w : 0.0;
}

void metrics_macro(const ClassMetrics *c, int K, double *p, double *r, double *f) { average(c, K, 0, p, r, f); }
void metrics_weighted(const ClassMetrics *c, int K, double *p, double *r, double *f) { average(c, K, 1, p, r, f); }

int metrics_label_width(int K, char *const *names) {
    int w = 12;  // "weighted avg"
    for (int k = 0; k < K; k++) w = utf8_width(names[k]) > w ? utf8_width(names[k]) : w;
    return w > 24 ? 24 : w;
}

void metrics_print(FILE *out, int K, char *const *names, const ClassMetrics *c) {
    const int w = metrics_label_width(K, names);
    long n = 0;
    for (int k = 0; k < K; k++) n += c[k].support;
    double p, r, f;
    metrics_macro(c, K, &p, &r, &f);
    fprintf(out, "  %-*s %9.4f %8.4f %8.4f %8ld\n", w, "macro avg", p, r, f, n);
    metrics_weighted(c, K, &p, &r, &f);
    fprintf(out, "  %-*s %9.4f %8.4f %8.4f %8ld\n", w, "weighted avg", p, r, f, n);
}

// a ranks before b: larger, or equal with a lower index; NaN last.
static int before(const float *probs, int a, int b) {
    float x = probs[a], y = probs[b];
    if (isnan(x) || isnan(y)) return isnan(y) && (!isnan(x) || a < b);
    return x > y || (x == y && a < b);
}

int metrics_top_k(const float *probs, int n, int k, int *idx) {
    if (k > n) k = n;
    if (k < 0) k = 0;
    // Insertion into a sorted list of k: O(n k), k is small (a few classes).
    int m = 0;
    for (int i = 0; i < n; i++) {
        int at = m;
        while (at > 0 && before(probs, i, idx[at - 1])) at--;
        if (at >= k) continue;
        int last = m < k ? m : k - 1;
        for (int j = last; j > at; j--) idx[j] = idx[j - 1];
        idx[at] = i;
        if (m < k) m++;
    }
    return m;
}

int metrics_prob_digits(double p, int digits) {
    while (digits < 7 && p < 1 && p >= 1 - 0.5 * pow(10, -digits)) digits++;
    return digits;
}

int metrics_top_confusions(const long *conf, int K, int n, int *true_k, int *pred_k) {
    int have = 0;
    if (n <= 0) return 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++) {
            long c = conf[(long)t * K + p];
            if (t == p || c <= 0) continue;
            // Kept sorted by decreasing count; a later cell with an equal
            // count goes after the earlier ones (row-major order).
            if (have == n && c <= conf[(long)true_k[n - 1] * K + pred_k[n - 1]]) continue;
            int at = have < n ? have++ : n - 1;
            while (at > 0 && conf[(long)true_k[at - 1] * K + pred_k[at - 1]] < c) {
                true_k[at] = true_k[at - 1], pred_k[at] = pred_k[at - 1];
                at--;
            }
            true_k[at] = t, pred_k[at] = p;
        }
    return have;
}
