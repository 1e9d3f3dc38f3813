// Output activations and the two cross-entropy losses, from logits.
//
// Sums run in double: a batch's loss is a handful of terms, so it costs
// nothing and keeps the reported loss independent of summation order.
#include "layers.h"

#include <math.h>

static inline float sigmoidf(float z) {
    // Never evaluates exp of a large positive number.
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

void sigmoid_forward(const float *logits, float *probs, size_t n) {
    for (size_t i = 0; i < n; i++) probs[i] = sigmoidf(logits[i]);
}

// Softmax of one row of K logits; returns log(sum(exp(z))) for the loss.
static double softmax_row(const float *z, float *p, int K) {
    float m = z[0];
    for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
    double s = 0.0;
    for (int k = 0; k < K; k++) s += exp((double)z[k] - m);
    if (p) {
        for (int k = 0; k < K; k++) p[k] = (float)(exp((double)z[k] - m) / s);
    }
    return m + log(s);
}

void softmax_forward(const float *logits, float *probs, int N, int K) {
    for (int i = 0; i < N; i++)
        softmax_row(logits + (size_t)i * K, probs + (size_t)i * K, K);
}

// Per sample: l = -t*log(sigmoid(z)) - (1-t)*log(1-sigmoid(z)), written as
// max(z,0) - z*t + log1p(exp(-|z|)), which never overflows and never loses
// the small tail where sigmoid(z) rounds to 0 or 1.
float loss_sigmoid_bce(const float *logits, const float *targets,
                       const float *weights, int N, float *d_logits,
                       float *probs) {
    double sum = 0.0;
    for (int i = 0; i < N; i++) {
        double z = logits[i], t = targets[i];
        double w = weights ? weights[i] : 1.0;
        double l = (z > 0 ? z : 0) - z * t + log1p(exp(-fabs(z)));
        sum += w * l;
        float p = sigmoidf(logits[i]);
        if (probs) probs[i] = p;
        if (d_logits) d_logits[i] = (float)(w * (p - t) / N);
    }
    return N > 0 ? (float)(sum / N) : 0.0f;
}

// Per sample: l = logsumexp(z) - z[label]. A label outside [0, K) makes the
// loss NaN (and that sample's gradient zero) rather than reading out of
// bounds: the caller validated labels, so this is a bug detector only.
float loss_softmax_cce(const float *logits, const int32_t *labels,
                       const float *weights, int N, int K, float *d_logits,
                       float *probs) {
    double sum = 0.0;
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * K;
        double w = weights ? weights[i] : 1.0;
        int y = labels[i];
        float *p = probs ? probs + (size_t)i * K : NULL;
        float *d = d_logits ? d_logits + (size_t)i * K : NULL;
        double lse = softmax_row(z, p, K);
        if (y < 0 || y >= K) {
            sum = NAN;
            if (d) for (int k = 0; k < K; k++) d[k] = 0.0f;
            continue;
        }
        sum += w * (lse - z[y]);
        if (d) {
            // d/dz_k = w * (softmax_k - [k == y]) / N
            for (int k = 0; k < K; k++) {
                double pk = exp((double)z[k] - lse);
                d[k] = (float)(w * (pk - (k == y)) / N);
            }
        }
    }
    return N > 0 ? (float)(sum / N) : 0.0f;
}
