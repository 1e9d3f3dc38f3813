// Running the model on the CPU: the frozen conv base (inference) and the
// dense head (forward, loss, backward). Buffers are allocated once for a
// batch size and reused.
#pragma once
#include <stdint.h>

#include "model.h"

// --- conv base, inference only ---------------------------------------------
// Two ping-pong activation buffers sized for the largest layer of one image
// plus the conv scratch: memory is bounded by one image whatever the batch.
// One image at a time also keeps every image's features independent of which
// images share its batch (OpenBLAS picks kernels by matrix size), so resumed
// runs and merged shards equal a single run bit for bit. Batching the late
// 18x18 and 9x9 blocks would be ~10% faster but would lose that.
typedef struct {
    float *a, *b, *scratch;
} BaseWorkspace;
int base_workspace_alloc(BaseWorkspace *ws, const Model *m);
void base_workspace_free(BaseWorkspace *ws);
// in: N preprocessed images, each input_h x input_w x 3 (H,W,C).
// out: N feature vectors of model_feature_size(m) floats, H,W,C order (the
// order Keras's Flatten uses). Weights of layers [1, n_base) must be loaded.
void base_forward_cpu(const Model *m, const float *in, int N, float *out, BaseWorkspace *ws);

// --- dense head -------------------------------------------------------------
typedef struct {
    int cap;          // batch capacity
    float *hidden;    // N x hidden (relu output, dropout applied when training)
    uint8_t *mask;    // N x hidden dropout mask
    float *logits;    // N x n_outputs
    float *probs;     // N x n_outputs (sigmoid / softmax)
    float *d_logits;  // N x n_outputs
    float *d_hidden;  // N x hidden
    float *targets;   // N (binary targets as floats)
    int dropout_applied;  // set by head_forward: the mask holds this batch's dropout
} HeadBuffers;

// Gradients of the head's dense layers, indexed like model layers (NULL for
// layers without weights). Accumulated by head_backward; zero them per step.
typedef struct {
    int n_layers;
    float **dkernel, **dbias;
    // > 0: plain SGD with this learning rate is applied to the weights during
    // head_backward (dense_backward_sgd) instead of accumulating gradients.
    float sgd_lr;
} Grads;

int head_buffers_alloc(HeadBuffers *hb, const Model *m, int cap);
void head_buffers_free(HeadBuffers *hb);
int grads_alloc(Grads *g, const Model *m, int from, int to);
void grads_zero(Grads *g, const Model *m);
void grads_free(Grads *g);

// features: N x model_feature_size(m). training: apply dropout with the
// mask rng_hash(seed, stream*...) (see dropout_forward). Fills hb->probs.
void head_forward(const Model *m, const float *features, int N, int training, uint64_t seed, uint64_t stream,
                  HeadBuffers *hb);
// After head_forward: the mean (weighted) loss of labels (class indices)
// and, if g is not NULL, the gradients accumulated into g (and into
// d_features if not NULL: N x feature_size, for fine-tuning the base).
float head_backward(const Model *m, const float *features, const int32_t *labels, const float *sample_weights, int N,
                    HeadBuffers *hb, Grads *g, float *d_features);
// Predicted class of each row of hb->probs (binary: p > 0.5, as Keras).
void head_predict_classes(const Model *m, const HeadBuffers *hb, int N, int32_t *classes);
