// Model weights on disk: the base from Keras weights files, and our own model
// files (the trained head, or base + head) written as Keras-layout HDF5 with
// our metadata as root attributes, so that Keras's load_weights reads them
// and our tools can check that what they load fits what they run.
#pragma once
#include "model.h"

// What a model file records besides weights (root attributes vggft_*).
typedef struct {
    char arch[16];            // "vgg16"
    int input_h, input_w;
    char cut[LAYER_NAME_MAX];  // "block5_pool"
    char preprocess[16];      // "caffe", "rescale", "torch"
    char interpolation[16];   // "nearest", "bilinear"
    int n_classes;
    int binary;
    int hidden;
    float dropout;
    char **class_names;       // n_classes names (may be NULL when unknown)
    char contents[16];        // "head" or "full"
    char unfreeze[LAYER_NAME_MAX];  // first trainable base layer when fine-tuned
    char weights[96];         // base weights the features came from ("sha256:..."), "" if unknown
    const char *training;     // training settings, "key=value" lines (written only; may be NULL)
} ModelMeta;

// Fills the description of m (arch, sizes, cut, head) into meta; the caller
// sets preprocess, interpolation and class names.
void model_meta_from_model(const Model *m, ModelMeta *meta);
// The model configuration a file describes (to build the Model to load into).
void model_meta_to_config(const ModelMeta *meta, ModelConfig *cfg);
void model_meta_free(ModelMeta *meta);

// Loads the conv weights of layers [1, n_base) from a Keras weights file
// (either Keras layout, with or without top). Allocates them if needed.
int model_load_base(Model *m, const char *path);
// Writes layers [from, n_layers) (from = model_head_start(m) for a head file,
// 1 for base + head) and meta, atomically.
int model_save(const Model *m, const char *path, int from, const ModelMeta *meta);
// Reads the metadata of a model file written by model_save.
int model_meta_read(const char *path, ModelMeta *meta);
// Loads the head's dense layers from a model file (head or full) into m,
// after checking that the file was made for the same base, cut, input size
// and head shape; a difference is an error that names it.
int model_load_head(Model *m, const char *path);
