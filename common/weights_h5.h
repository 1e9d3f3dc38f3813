// Keras HDF5 weights files: read the layers a model asks for, write files
// that Keras loads with model.load_weights("x.h5").
//
// Spec-driven and model-agnostic: the caller describes each layer (Keras name,
// tensor shapes in Keras layout, buffers) and this module finds or stores the
// tensors. It knows the layouts users actually have:
//   - Keras 1/2 "legacy" weights files (the ImageNet files Keras downloads):
//     root attribute layer_names (or layer_names0, layer_names1, ... when
//     split for HDF5's 64 KiB attribute limit), one group per layer whose
//     attribute weight_names lists its datasets, relative to the group, in
//     order [kernel, bias]: "block1_conv1_W_1:0" (Keras 1),
//     "block1_conv1/kernel:0" (Keras 2), "block1_conv1/kernel" (Keras 3's
//     legacy writer). Names may be fixed-length or variable-length strings.
//   - full-model .h5 files (model.save("x.h5")): the same under /model_weights.
//   - a model nested in a model (the seeds' Sequential([VGG16(...), Flatten(),
//     Dense, Dropout, Dense]) saved by Keras 2's save_weights or model.save,
//     or by Keras 3's legacy writer): the nested model is ONE entry of
//     layer_names ("vgg16"), its group's weight_names lists the tensors of
//     all its inner layers, "block1_conv1/kernel:0", "block1_conv1/bias:0",
//     ..., and the datasets lie at vgg16/block1_conv1/kernel:0. The reader
//     splits such a group into its inner layers (named by the component
//     before each weight's own name), so they are found by name like the
//     others, in any order (Keras 2 lists a partly trainable nested model's
//     trainable weights first).
//   - Keras 3 ".weights.h5" files: layers/<auto name>/vars/{0,1}, the layer's
//     real name in the vars group's "name" attribute.
// Layers are matched by NAME, so a file may hold more layers than asked for
// (e.g. the with-top ImageNet file's fc1/fc2/predictions are ignored).
//
// libhdf5 (serial) is not thread-safe: call these from one thread at a time.
// HDF5's own error stacks are silenced; errors come back through err_msg().
#pragma once
#include <stddef.h>

// The largest string value stored in one attribute; longer ones are split.
#define H5_ATTR_CHUNK_MAX 60000

typedef struct {
    const char *layer;       // Keras layer name, e.g. "block1_conv1", "dense"
    int n_tensors;           // 0 (no weights: pools, flatten, dropout), or 2 (kernel, bias)
                             // (1 = kernel only, for layers without bias)
    int ndim[2];             // per tensor
    int shape[2][4];         // per tensor, Keras layout e.g. {3,3,3,64} and {64}
    float *data[2];          // read: destination buffers (caller-allocated); write: source
    const char *group;       // write only: NULL = a layer at the top level; else the name of
                             // the nested model holding it ("vgg16"); see h5_write_layers.
                             // Reading ignores it (layers are found wherever they are).
} H5Layer;

typedef struct {
    const char *key;
    const char *value;
} H5Attr;  // string attributes

// Reads the weights of layers[i] (those with n_tensors > 0) into data[],
// looking each layer up by name. Every tensor's shape must match exactly;
// float64/float16 datasets are converted to float32. Returns 0, or -1 with a
// message naming the file, the layer and what is wrong, e.g.
//   "w.h5: layer block1_conv1: kernel has shape (3,3,3,32), expected (3,3,3,64)"
//   "w.h5: no layer named block5_conv3 (the file has 12 layers with weights: block1_conv1, ...)"
// On error the buffers of layers already read hold their new values.
int h5_read_layers(const char *path, H5Layer *layers, int n_layers);

// Writes a Keras-2-layout weights file that Keras 2's and Keras 3's
// load_weights read (Keras 3 reads it as "legacy h5" when the name ends in
// .h5 but NOT in .weights.h5, which Keras 3 reserves for its own layout):
// root attributes layer_names (ALL layers in order, weightless ones too),
// backend="tensorflow", keras_version="2.15.0", plus attrs (string
// attributes for our own metadata; keys must not be those three, nor
// another key or one of those three followed by digits). HDF5 keeps each
// attribute in an object header message of at most 64 KiB, so a value over
// H5_ATTR_CHUNK_MAX bytes is stored as Keras stores a long layer_names:
// split into KEY0, KEY1, ... (each at most H5_ATTR_CHUNK_MAX bytes, cut
// after a newline where the piece has one), whose concatenation is the
// value; h5_read_attr joins them. Any length fits. One group
// per layer with weight_names = ["<layer>/kernel:0", "<layer>/bias:0"] (an
// empty list for weightless layers) and float32 datasets at those paths.
// Layers with a group (consecutive ones sharing the same name) are written as
// Keras 2 writes a model nested in a model: one entry, the group's name, in
// layer_names at the place of its first layer; one group whose weight_names
// lists "<layer>/kernel:0", "<layer>/bias:0" of its layers with weights, in
// order (its weightless layers, e.g. pools, leave no trace, as in Keras);
// datasets at "<group>/<layer>/kernel:0". The group name must differ from
// every top-level layer's name.
// No timestamps are stored, so the same input always gives the same bytes.
// Atomic: written to "<path>.tmp.<pid>", fsync'ed, then renamed over path, so
// path is either the old file or the complete new one. Inputs are validated
// (names, shapes, non-NULL data) before anything is created. Returns 0 or -1.
int h5_write_layers(const char *path, const H5Layer *layers, int n_layers,
                    const H5Attr *attrs, int n_attrs);

// Reads a root string attribute (fixed or variable length, scalar or a
// one-element array), or, when KEY is absent, its split form KEY0, KEY1, ...
// (see h5_write_layers), joined. Returns 1 and a malloc'd string in *value,
// 0 if the attribute is absent (*value = NULL), -1 on error.
int h5_read_attr(const char *path, const char *key, char **value);

// --- inspection -------------------------------------------------------------

#define H5_INFO_TENSORS 4   // tensors described per layer (BatchNorm has 4)
#define H5_INFO_DIMS 4      // dimensions described per tensor

typedef struct {
    char name[256];
    char group[256];                               // nested model holding it ("vgg16"), "" at the top
    int n_tensors;                                 // as stored (> 0)
    int ndim[H5_INFO_TENSORS];                     // true rank of each tensor
    long long shape[H5_INFO_TENSORS][H5_INFO_DIMS];  // first H5_INFO_DIMS dims
} H5LayerInfo;

// Describes the layers that have weights, in the file's order (layer_names
// order, a nested model's layers in its weight_names order at its place; for
// Keras 3 .weights.h5 files, HDF5's name order). *out is a malloc'd
// array (free() it; NULL when there are none). Returns the count or -1.
// Lets a caller tell VGG16 from VGG19 files or read a head's sizes.
int h5_list_layers(const char *path, H5LayerInfo **out);
