// ReLU, 2x2 max pool, dropout and glorot_uniform (the conv is in
// conv.c, activations and losses in loss.c).
#include "layers.h"

#include <math.h>
#include <string.h>

#include "rng.h"

// --- ReLU -------------------------------------------------------------------

void relu_forward(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward(const float *y, float *dy, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(y[i] > 0.0f)) dy[i] = 0.0f;
}

// --- 2x2 max pool -----------------------------------------------------------

void maxpool2x2_forward(const float *in, int N, int H, int W, int C,
                        float *out, int32_t *argmax) {
    int Ho = H / 2, Wo = W / 2;
    size_t rowstride = (size_t)W * C;
    for (int n = 0; n < N; n++) {
        for (int yo = 0; yo < Ho; yo++) {
            for (int xo = 0; xo < Wo; xo++) {
                // The window's four pixels in row-major order; the first one
                // found wins ties (strict >), as Keras/XLA's gradient does.
                size_t p00 = (((size_t)n * H + 2 * yo) * W + 2 * xo) * C;
                size_t p[4] = {p00, p00 + C, p00 + rowstride, p00 + rowstride + C};
                size_t o = (((size_t)n * Ho + yo) * Wo + xo) * C;
                for (int c = 0; c < C; c++) {
                    size_t best = p[0] + c;
                    float v = in[best];
                    for (int j = 1; j < 4; j++) {
                        if (in[p[j] + c] > v) {
                            v = in[p[j] + c];
                            best = p[j] + c;
                        }
                    }
                    out[o + c] = v;
                    if (argmax) argmax[o + c] = (int32_t)best;
                }
            }
        }
    }
}

void maxpool2x2_backward(const float *dout, int N, int H, int W, int C,
                         const int32_t *argmax, float *din) {
    size_t nout = (size_t)N * (H / 2) * (W / 2) * C;
    memset(din, 0, (size_t)N * H * W * C * sizeof(float));
    for (size_t i = 0; i < nout; i++) din[argmax[i]] += dout[i];
}

// --- Dropout ----------------------------------------------------------------

// Element i is kept when its uniform draw is >= rate, so P(keep) = 1-rate up
// to the 2^-24 resolution of rng_uniform. Kept values are divided by the keep
// probability (not multiplied by its reciprocal) like Keras's backends.
void dropout_forward(float *x, size_t n, float rate, uint64_t seed,
                     uint64_t stream, uint8_t *mask) {
    if (rate <= 0.0f) {
        if (mask) memset(mask, 1, n);
        return;
    }
    if (rate >= 1.0f) {  // Keras rejects rate >= 1; dropping all is the limit
        memset(x, 0, n * sizeof(float));
        if (mask) memset(mask, 0, n);
        return;
    }
    // Keras forms 1 - rate in double from the Python float.
    float keep = (float)(1.0 - (double)rate);
    // Each stream (training step) draws from its own derived seed: steps of
    // different sizes (the last, partial batch) never share draws.
    uint64_t step_seed = rng_hash(seed ^ 0xD50D0D5EEDull, stream);
    for (size_t i = 0; i < n; i++) {
        int k = rng_uniform(step_seed, i) >= rate;
        x[i] = k ? x[i] / keep : 0.0f;
        if (mask) mask[i] = (uint8_t)k;
    }
}

void dropout_backward(float *dx, size_t n, float rate, const uint8_t *mask) {
    if (rate <= 0.0f) return;
    if (rate >= 1.0f) {
        memset(dx, 0, n * sizeof(float));
        return;
    }
    float keep = 1.0f - rate;
    for (size_t i = 0; i < n; i++) dx[i] = mask[i] ? dx[i] / keep : 0.0f;
}

// --- Initialisation ---------------------------------------------------------

void glorot_uniform(float *w, size_t n, int fan_in, int fan_out, uint64_t seed) {
    double limit = sqrt(6.0 / ((double)fan_in + (double)fan_out));
    for (size_t i = 0; i < n; i++)
        w[i] = (float)((2.0 * rng_uniform(seed, i) - 1.0) * limit);
}
