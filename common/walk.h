// The conv base as a trainable walk, for fine-tuning (and inference).
//
// The walk runs base layers [from, n_base) of a Model (from = 1 when the
// input is preprocessed images; from = k+1 when it is the cached output of
// pooling layer k, e.g. block4_pool for --unfreeze block5_conv1):
//   - frozen layers [from, first_trainable) run forward only, one image at a
//     time (base_forward_layers: the very code of base_forward_cpu, so an
//     image's values equal extract's records bit for bit on the same thread
//     count, whatever else is in its batch) and keep nothing;
//   - trainable layers [first_trainable, n_base) (first_trainable =
//     max(from, m->first_trainable_base)) run on the whole batch and keep
//     what backward needs: their input, each conv's post-ReLU output and each
//     pool's argmax.
// The backward pass goes from the gradient of the cut's output down to the
// first trainable layer (whose input gradient is never computed).
//
// Batch composition: the trainable convs see the batch as one stack of N*H
// rows cut into bands that span images (sgemm's M stays large on 9x9 maps),
// so their values come from sgemm calls whose sizes depend on N. OpenBLAS
// may block or split a product differently by size, so an image's trainable
// activations MAY differ in the last bits with the batch it is in (measured
// equal for 1 vs 5 images with OpenBLAS 0.3.21, but not promised); the
// gradients are sums over the batch. From a cache of the frozen part's output
// (from = first trainable layer) the walk computes exactly what it computes
// from the images.
//
// Memory (BaseWalk.bytes): at 150x150 with block5 unfrozen and batch 20,
// 157.9 MiB from images, 56.3 MiB from a block4_pool cache. Of it, 32 MiB is
// the conv scratch (conv3x3_scratch_floats: the whole batch's patches for a
// block5 conv, 180 rows x 9 x 4608 floats = 28.5 MiB, fit in one band),
// 11 MiB the frozen per-image ping-pong (150x150x64 twice; only from
// images), 89 MiB the Winograd-transformed kernels of the frozen blocks 1-4
// (forward.h; only from images), and 26 MiB scales with the batch: the
// input batch (w->input: 5.2 MiB of images, 3.2 MiB of block4_pool
// features), block5's input, its three conv outputs, the gradient ping-pong
// (3.2 MiB each), features, their gradient and the pool argmax (0.6 MiB
// each). Not counted:
// the trainable weights, their Grads and optimizer slots (block5 + a 256-unit head: 9.2M
// parameters, 35 MiB per copy), nor, on T > 1 threads with a batch of at
// least T, the T-1 extra sets of frozen-layer buffers that run images side
// by side (forward.h: 36 MiB each at 150x150), made at the first step.
//
// Layouts are the model's (N,H,W,C activations, Keras kernels). The walk is
// one description shared by the CPU arithmetic here (the reference layers
// of layers.h) and the GPU's (kernels/gpu_walk.h), which runs the same op
// list: a walk made by walk_alloc_device(..., gpu = 1) keeps only features
// and d_features on the host and runs walk_forward, finetune_step and
// walk_predict on the GPU, with the trainable base layers' weights and
// optimizer slots on the device between steps (walk_download / walk_upload
// bring them to and from the host: checkpoints, the output model). On the GPU
// the head's weights and slots live on the device too (unless the
// environment variable VGGFT_GPU_HEAD=0 was set when the GPU walk was made:
// then the head runs on the CPU, as on the CPU walk), finetune_step runs the
// whole step there (the features never leave it) and walk_download /
// walk_upload move the head's weights and slots as well (kernels/gpu_head.h).
#pragma once
#include <stdint.h>

#include "forward.h"
#include "gpu.h"
#include "model.h"
#include "optim.h"

// Where a step's time goes (seconds, summed over calls; zero them at will).
typedef struct {
    double frozen;        // frozen layers, forward (per image; 0 on the GPU)
    double trainable;     // trainable base layers, forward and backward (GPU
                          // walk: the whole base, frozen layers and the
                          // trainable layers' updates included; with the
                          // head on the device, the whole step)
    double head;          // the head, forward and backward
    double update;        // optimizer updates of every trainable layer
} WalkTimes;

enum { WALK_STEP = 1, WALK_PREDICT = 2 };  // BaseWalk.step_pending

typedef struct {
    const Model *m;
    int from;              // first layer the input enters
    int first_trainable;   // first layer that keeps activations (n_base if none)
    int cap;               // batch capacity
    long in_size;          // floats per input item (the output of layer from-1)
    // Saved for backward, indexed like m->layers (NULL for frozen layers):
    // act[i] = output of layer i for the batch (cap x out size of i).
    float **act;
    int32_t **argmax;      // pools in the trainable range
    float *t_in;           // input of first_trainable for the batch
    float *d_a, *d_b;      // gradient ping-pong buffers (largest trainable activation)
    BaseWorkspace ws;      // frozen per-image forward (ping-pong + conv scratch)
    float *scratch;        // conv scratch for every conv of the walk (= ws.scratch)
    float *features;       // cap x model_feature_size: the cut's output of the last forward
                           // (= act[n_base-1] when the cut is trainable)
    float *d_features;     // cap x model_feature_size: its gradient
    float *input;          // cap x in_size: a batch buffer for the caller to fill and pass to
                           // walk_forward (page-locked for a GPU walk when the system
                           // allows: its copy to the device then runs at full bus speed)
    float *input_next;     // GPU walk: cap x in_size, a second one, for the next batch while
                           // a step reads the other (finetune_step_begin, walk_prefetch);
                           // NULL on the CPU, where the step is done when begin returns
    int pinned;            // features, d_features, input and input_next are gpu_host_alloc'd
    int step_pending;      // WALK_STEP: finetune_step_begin called, finetune_step_end not yet;
                           // WALK_PREDICT: walk_predict_begin, walk_predict_end not yet
    float step_loss;       // the CPU step's loss, for finetune_step_end
    size_t bytes;          // what walk_alloc took, all buffers together (host)
    struct GpuWalk *gpu;   // the arithmetic on the GPU (walk_alloc_device), or NULL: the CPU
    WalkTimes times;       // seconds spent so far, accumulated by the calls below
} BaseWalk;

// Allocates everything for batches of up to cap items (the weights need not
// be allocated yet; m must outlive w). from must be 1 (the input is images)
// or follow a pooling layer (the input is its cached output), and less than
// n_base. -1 (err_set, naming the layer) when it is not, when cap < 1, or
// when out of memory.
int walk_alloc(BaseWalk *w, const Model *m, int from, int cap);
// walk_alloc (gpu = 0) or the GPU walk (gpu = 1; kernels/gpu_walk.h, in
// precision: fp32, tf32 or bf16, see gpu_walk_create): the
// same checks, then the host keeps only features and d_features and the GPU
// everything else (the weights of layers [from, n_base) are uploaded now:
// load them first). -1 (err_set with the reason: no usable GPU, no cuDNN,
// out of device memory, a CPU-only build) when the GPU cannot be set up.
int walk_alloc_device(BaseWalk *w, const Model *m, int from, int cap, int gpu, GpuPrecision precision);
void walk_free(BaseWalk *w);
// GPU walk: the device's weights of the trainable base layers into m's
// layers (Keras layout) and its optimizer slots into `slots` (HEAD_SLOTS
// layout over m's layer indices, NULL entries skipped; slots may be NULL),
// so the host copies are current (before a checkpoint or saving the model).
// m must be w->m. CPU walk: nothing to do, 0. -1 (err_set) on a GPU error.
int walk_download(BaseWalk *w, Model *m, float *const *slots);
// GPU walk: the host weights of layers [from, n_base) and the trainable
// ones' slots to the device (after a checkpoint was loaded on the host).
// CPU walk: 0.
int walk_upload(BaseWalk *w, float *const *slots);
// in: N <= cap items of w->in_size floats (copied: in may change after the
// call). Fills w->features (N x feature size) and, for the trainable layers,
// what backward needs. Weights of layers [from, n_base) must be loaded.
// Returns 0; -1 (err_set) only on a GPU error (GPU walk).
int walk_forward(BaseWalk *w, const float *in, int N);
// After walk_forward on the same batch: from dfeat (N x feature size, the
// gradient of the loss w.r.t. the cut's output; read only) ACCUMULATES the
// kernel and bias gradients of every trainable base layer into g (a layer
// whose g->dkernel is NULL gets none; the caller zeroes g once per step).
// Uses conv3x3_backward, maxpool2x2_backward and relu_backward on the saved
// post-ReLU outputs. CPU walk only (the GPU walk's gradients live on the
// device: finetune_step runs its backward pass and update there).
void walk_backward(BaseWalk *w, const float *dfeat, int N, Grads *g);

// One training step of the unfrozen base layers and the head, Keras's
// train_on_batch: forward (dropout stream o->step), the mean (weighted) loss
// into *loss, backward, and one update by o of every trainable layer with
// weights (slots: HEAD_SLOTS layout over the model's layer indices, for
// every trainable layer; may be NULL when optim_slots(o) is 0). The caller
// calls optim_step_done(o) after. g: grads_alloc(g, m, w->first_trainable,
// m->n_layers); finetune_step zeroes it, and a layer without gradients in g
// is not updated. Leaves the step's features in w->features and their
// gradient in w->d_features. Returns -1 only when out of memory (see
// dense_forward) or on a GPU error.
// GPU walk: the base's forward, backward and update on the device, the head
// on the CPU as here (features down, their gradient up); the trainable base
// layers are updated by optim_rule(o) on the device whatever g holds for
// them (g may then start at n_base). GPU walk holding the head
// (the default; not with VGGFT_GPU_HEAD=0): everything on the device; g and slots are not used
// (the device keeps the head's gradients and slots: walk_download brings
// the slots back), hb receives only logits and probs, and w->features /
// w->d_features are not written; w->times.trainable counts the whole step
// (queued as one, its parts overlap), w->times.head and .update nothing.
int finetune_step(BaseWalk *w, HeadBuffers *hb, Grads *g, const Optimizer *o, float *const *slots,
                  const float *in, const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                  float *loss);
// finetune_step in two halves, so that the caller can prepare the next
// batch while the GPU runs this one: begin takes finetune_step's arguments
// but the loss, end gives the loss (and hb's logits and probs). On the GPU
// with the device head, begin queues the whole step and returns at once
// (labels and sample_weights are read before it returns; `in` must not
// change until end returns: fill the other buffer, input / input_next), and
// end waits for it; hb is written by end. Elsewhere begin runs the whole
// step and end only gives its loss. Between the two only walk_prefetch may
// be called; -1 with err_set from begin twice or end without begin.
int finetune_step_begin(BaseWalk *w, HeadBuffers *hb, Grads *g, const Optimizer *o, float *const *slots,
                        const float *in, const int32_t *labels, const float *sample_weights, int N, uint64_t seed);
int finetune_step_end(BaseWalk *w, HeadBuffers *hb, float *loss);
// GPU walk: starts the upload of the next batch (in: N items, as
// walk_forward's) while a step runs (gpu_walk_stage); the next
// finetune_step_begin, walk_predict_begin or walk_forward with this same in
// and N then skips its upload. `in` must not change until that step ends,
// unless the batch is dropped first: walk_prefetch(w, NULL, 0). CPU walk:
// nothing to do, 0. -1 with err_set on a GPU error.
int walk_prefetch(BaseWalk *w, const float *in, int N);
// Inference (no dropout): walk_forward then head_forward; probabilities in
// hb->probs, logits in hb->logits (head_backward(..., g NULL, d_features
// NULL) then gives the loss). With the head on the device
// (the default on the GPU) the device head runs on the device's features (its
// weights are the current ones; the host's may be stale until
// walk_download), which are not brought to w->features. Returns -1 as
// head_forward, or on a GPU error.
int walk_predict(BaseWalk *w, HeadBuffers *hb, const float *in, int N);
// walk_predict in two halves, as finetune_step_begin / _end: on the GPU with
// the device head begin queues it (`in` unchanged until end returns) and end
// waits and fills hb->logits and hb->probs; elsewhere begin does it all.
// Only walk_prefetch between the two.
int walk_predict_begin(BaseWalk *w, HeadBuffers *hb, const float *in, int N);
int walk_predict_end(BaseWalk *w, HeadBuffers *hb);
