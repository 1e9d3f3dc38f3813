// Running the model on the CPU: the frozen conv base (inference) and the
// dense head (forward, loss, backward). Buffers are allocated once for a
// batch size and reused.
#pragma once
#include <stdint.h>

#include "model.h"
#include "optim.h"

// --- conv base, inference only ---------------------------------------------
// Two ping-pong activation buffers sized for the largest layer of one image
// plus the conv scratch: memory is bounded by one image whatever the batch.
// One image at a time also keeps every image's features independent of which
// images share its batch (OpenBLAS picks kernels by matrix size), so resumed
// runs and merged shards equal a single run bit for bit. Batching the late
// 18x18 and 9x9 blocks would be ~10% faster but would lose that.
//
// Frozen conv layers run by Winograd's method (winograd.h), the tile chosen
// per layer by conv_method (docs/DEVELOPMENT.md has the measurements):
// block1_conv1 (3 input channels) direct; every other the fastest tile for
// its map: F(4x4) from 24x24 up, F(3x3) from 16x16 and where it tiles the
// map exactly, F(2x2) on the others (at 150x150 F(4x4) on blocks 1-3,
// F(3x3) on block4's 18x18 and block5's 9x9; at 224x224 F(4x4) on blocks
// 1-4, F(2x2) on block5's 14x14). One thread, the 13 convs of one image
// (medians): 70 ms against 154 ms direct at 150x150, 142 against 357 at
// 224x224. Block5_pool features on
// real photos with the ImageNet weights: within 3.3e-6 of Keras (direct:
// 1.9e-6; docs/DEVELOPMENT.md); tests/test_model.c holds them to 5e-5 on
// its formula weights.
// The workspace keeps each such layer's transformed kernel from its first
// use (VGG16, all frozen: 164 MiB at 150x150 and at 224x224; 1.8x,
// 2.8x or 4x the kernel for F(2x2), F(3x3), F(4x4)): these are frozen
// layers, so it stays valid; allocate a new workspace after loading other
// weights.
//
// Threads: with as many images as threads (N >= parallel_threads() > 1),
// the images run side by side, one per pool thread, each layer on its
// thread alone (OpenBLAS, which only a forced direct conv of a large layer
// uses, set to one thread meanwhile): no pool wake-ups per layer and band,
// which is what keeps many cores busy. With fewer images, one image at a
// time, each layer's work spread over the pool. Both give an image's
// features the same bits (each value is one fixed sequence of operations
// on any thread: winograd.h, dense.h), so a run's features depend neither
// on --threads nor on --batch, nor on the SIMD level or OPENBLAS_CORETYPE
// (conv3x3_forward_frozen). The
// side-by-side mode needs a/b/scratch per extra thread, allocated on first
// use (VGG16 at 150x150: 36 MiB each; at 224x224: 56 MiB); if that fails,
// they are freed and the one-at-a-time mode runs from then on. (A cgroup
// memory limit does not fail malloc: it kills the job; size --threads.)
typedef struct {
    float *a, *b, *scratch;
    float **wino;        // per model layer: transformed kernel, or NULL (direct / not yet made)
    const float **wino_of;  // the kernel each was made from
    int n_layers;
    size_t floats;  // what the buffers hold together (transformed kernels included)
    // For images side by side: one method and transformed kernel per layer,
    // and a/b/scratch for pool tasks 1..n_extra (task 0 uses a/b/scratch).
    size_t act_floats, image_scratch_floats;
    float **extra;  // 3 * n_extra buffers: a, b, scratch of task 1, then task 2, ...
    int n_extra;
    int no_side_by_side;  // their allocation failed once: one image at a time from then on
} BaseWorkspace;
// How base_forward_layers runs layer i of m if it is a conv layer: 0 the
// direct convolution (conv3x3_forward; always for trainable layers), or the
// output tile of Winograd F(t x t, 3x3) (2, 3 or 4). For comparisons, read
// from the environment once: VGGFT_WINOGRAD=0, 2, 3 or 4 forces that method
// on every frozen conv layer (=fast, the name of the default when it was
// not, is accepted); VGGFT_WINOGRAD_PLAN=0222... gives one digit per conv
// layer of the base in order (VGG16: 13).
int conv_method(const Model *m, int i);
// For base_forward_cpu: the whole base [1, n_base).
int base_workspace_alloc(BaseWorkspace *ws, const Model *m);
// For base_forward_layers over layers [from, to) only: two buffers of the
// largest activation there plus the largest conv scratch there
// (conv3x3_scratch_floats, at most 32 MiB).
int base_workspace_alloc_layers(BaseWorkspace *ws, const Model *m, int from, int to);
void base_workspace_free(BaseWorkspace *ws);
// in: N preprocessed images, each input_h x input_w x 3 (H,W,C).
// out: N feature vectors of model_feature_size(m) floats, H,W,C order (the
// order Keras's Flatten uses). Weights of layers [1, n_base) must be loaded.
// = base_forward_layers(m, 1, m->n_base, ...).
void base_forward_cpu(const Model *m, const float *in, int N, float *out, BaseWorkspace *ws);
// The one per-image forward pass of the base, which base_forward_cpu and the
// frozen part of a BaseWalk (walk.h) both run: layers [from, to) (1 <= from
// < to <= n_base), conv + ReLU or max pool, one image at a time. in: N items
// of layer from-1's output size; out: N items of layer to-1's output size.
void base_forward_layers(const Model *m, int from, int to, const float *in, int N, float *out, BaseWorkspace *ws);

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
} Grads;

int head_buffers_alloc(HeadBuffers *hb, const Model *m, int cap);
void head_buffers_free(HeadBuffers *hb);
int grads_alloc(Grads *g, const Model *m, int from, int to);
void grads_zero(Grads *g, const Model *m);
void grads_free(Grads *g);

// features: N x model_feature_size(m). training: apply dropout with the
// mask rng_hash(seed, stream*...) (see dropout_forward). Fills hb->probs.
// Returns -1 (err_set) only when out of memory (see dense_forward).
int head_forward(const Model *m, const float *features, int N, int training, uint64_t seed, uint64_t stream,
                 HeadBuffers *hb);
// head_forward in two parts: the dense layer that reads the features (the
// hidden layer, or the output layer when there is none), into hb->hidden
// (or hb->logits), then the rest from there.
int head_forward_first(const Model *m, const float *features, int N, HeadBuffers *hb);
int head_forward_rest(const Model *m, int N, int training, uint64_t seed, uint64_t stream, HeadBuffers *hb);

// After head_forward: the mean (weighted) loss of labels (class indices)
// and, if g is not NULL, the gradients accumulated into g (and into
// d_features if not NULL: N x feature_size, for fine-tuning the base).
float head_backward(const Model *m, const float *features, const int32_t *labels, const float *sample_weights, int N,
                    HeadBuffers *hb, Grads *g, float *d_features);
// Optimizer state of the head: slots[(layer * 2 + tensor) * 2 + s] is slot s
// of the layer's kernel (tensor 0) or bias (tensor 1); HEAD_SLOTS gives the
// two slots of one tensor, as optim_update takes them.
#define HEAD_SLOTS(slots, layer, tensor) (&(slots)[((layer) * 2 + (tensor)) * 2])

// One training step of the head on a batch whose first dense layer already
// ran (head_forward_first, or the previous step): the rest of the forward
// pass with dropout (stream o->step), the loss (into *loss), the backward
// pass, and the update of every head layer by o (call optim_step_done
// after). The layer that reads the features (8192 x 256 in the seeds) is
// updated by dense_update_forward, which also runs next_features (next_N
// rows; NULL for none) through it, so that the next step can start at once.
// g holds the gradients of the layers after it (grads_alloc from there).
// Equals head_forward, head_backward, optim_update of each layer, then
// head_forward_first on the next batch, bit for bit. Returns -1 as
// head_forward.
int head_train_step(const Model *m, const Optimizer *o, float *const *slots, const float *features,
                    const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                    const float *next_features, int next_N, HeadBuffers *hb, Grads *g, float *loss);

// Predicted class of each row of hb->probs (binary: p > 0.5, as Keras).
void head_predict_classes(const Model *m, const HeadBuffers *hb, int N, int32_t *classes);
