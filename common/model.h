// The model: a VGG16/VGG19 convolutional base with Keras layer names, cut at
// a pooling layer (block5_pool by default), and the seeds' dense head:
//   Flatten (H,W,C order) -> Dense(hidden, relu) -> Dropout(rate)
//   -> Dense(outputs, sigmoid for binary / softmax otherwise)
// One flat list of layers; each layer knows its output shape, parameter
// count and whether it is trainable. Weights are flat float arrays in Keras
// layout (see layers.h).
#pragma once
#include <stdint.h>
#include <stdio.h>

typedef enum { ARCH_VGG16, ARCH_VGG19 } Arch;
typedef enum { LAYER_INPUT, LAYER_CONV, LAYER_POOL, LAYER_FLATTEN, LAYER_DENSE, LAYER_DROPOUT } LayerKind;
typedef enum { ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_SOFTMAX } Activation;

#define LAYER_NAME_MAX 48

typedef struct {
    char name[LAYER_NAME_MAX];
    LayerKind kind;
    Activation act;     // conv: relu; dense: relu / sigmoid / softmax
    int in_h, in_w, in_c;
    int out_h, out_w, out_c;  // flatten/dense/dropout: out_h = out_w = 1
    int units;          // dense: units; conv: filters
    float rate;         // dropout
    long n_kernel, n_bias;    // parameter counts (0 for weightless layers)
    int trainable;
    float *kernel;      // conv 3,3,Cin,Cout ; dense D,U (NULL until allocated)
    float *bias;
} Layer;

typedef struct {
    Arch arch;
    int input_h, input_w;
    const char *cut;         // base layer whose output feeds the head ("block5_pool")
    int hidden;              // units of the hidden dense layer; 0 = no hidden layer
    float dropout;           // rate of the dropout after the hidden layer (0 = none)
    int n_classes;           // >= 2
    int binary;              // 1: one sigmoid output (n_classes must be 2); 0: softmax
    const char *unfreeze;    // first trainable base layer ("block5_conv1"), NULL = base frozen
} ModelConfig;

typedef struct {
    ModelConfig cfg;   // as given to model_build: its strings are the caller's (use cut_name, unfreeze_name)
    char cut_name[LAYER_NAME_MAX];
    char unfreeze_name[LAYER_NAME_MAX];
    int n_layers;
    Layer *layers;
    int n_base;        // layers[0..n_base-1]: input + conv base up to the cut
    int first_trainable_base;  // index of the first trainable base layer (n_base if none)
    int n_outputs;     // 1 for binary, n_classes otherwise
} Model;

// Defaults: VGG16, 150x150, block5_pool, hidden 256, dropout 0.5, 2 classes,
// binary, base frozen (the seeds' model).
void model_config_defaults(ModelConfig *cfg);
int arch_from_name(const char *name, Arch *arch);
const char *arch_name(Arch arch);

// Builds the layer list and shapes (no weights allocated). Errors name the
// offending value: input smaller than 32, an unknown cut or unfreeze layer
// (listing the valid names), a cut that is not a pooling layer, an unfreeze
// layer above the cut, binary with other than 2 classes.
int model_build(Model *m, const ModelConfig *cfg);
void model_free(Model *m);
// Allocates (zeroed) weights for layers [from, to).
// n zeroed floats on a 64-byte boundary, for weights and optimizer state
// (free() them): the dense layer's row blocks then start on cache lines,
// and its vector loads never straddle two. NULL when out of memory.
float *model_floats_alloc(size_t n);
int model_alloc_weights(Model *m, int from, int to);
// Keras's default initialisation (glorot_uniform kernels, zero biases),
// seeded, for layers [from, to) that have weights.
void model_init_random(Model *m, int from, int to, uint64_t seed);

int model_find_layer(const Model *m, const char *name);
// -1 (err_set naming the layer) when a weight of layers [from, to) is NaN or
// infinite: such a file would train to NaN weights without a finite loss
// ever showing it.
int model_check_finite(const Model *m, int from, int to);
// Index of the first head layer (flatten) = n_base.
static inline int model_head_start(const Model *m) { return m->n_base; }
// Per-image float count at the cut (the feature vector the cache stores).
long model_feature_size(const Model *m);
long model_max_activation(const Model *m, int from, int to);

// Parameter totals over all layers.
typedef struct { long total, trainable, non_trainable; } ParamCounts;
ParamCounts model_param_counts(const Model *m);

// Keras-style summaries (the Keras 2 text layout the seeds show).
//   SUMMARY_BASE:   the conv base alone (conv_base.summary())
//   SUMMARY_NESTED: base as one row, then the head (the seeds' Sequential)
//   SUMMARY_FLAT:   every layer, with a Trainable column (fine-tuning)
typedef enum { SUMMARY_BASE, SUMMARY_NESTED, SUMMARY_FLAT } SummaryStyle;
void model_print_summary(const Model *m, SummaryStyle style, FILE *out);

// "1,234,567"
const char *format_thousands(long v, char *buf, size_t size);
