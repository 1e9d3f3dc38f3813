// Model weights on disk: the base from Keras weights files, and our own model
// files (the trained head, or base + head) written as Keras-layout HDF5 with
// our metadata as root attributes, so that Keras's load_weights reads them
// and our tools can check that what they load fits what they run.
#pragma once
#include "cache.h"
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
    char decode[64];          // how its images were decoded, as a cache's settings say it ("full, pixel
                              // budget 50000000", "reduced, ..."; a GPU precision may follow); "" if unknown
    const char *training;     // training settings, "key=value" lines (written only; may be NULL)
    char *features_made_by;   // the extract command whose cache the head was trained on (train's
                              // head files; NULL or "" when unknown): names the --weights file a
                              // later run needs. Read: malloc'd, freed by model_meta_free.
} ModelMeta;

// " (its features were made by: COMMAND)" into buf when meta knows it, else "".
const char *model_meta_made_by_note(const ModelMeta *meta, char *buf, size_t size);
// The pixel budget meta->decode records ("full, pixel budget N"), or
// fallback when it records none (older files).
long model_meta_pixel_budget(const ModelMeta *meta, long fallback);

// Fills the description of m (arch, sizes, cut, head) into meta; the caller
// sets preprocess, interpolation and class names.
void model_meta_from_model(const Model *m, ModelMeta *meta);
// The model configuration a file describes (to build the Model to load into).
void model_meta_to_config(const ModelMeta *meta, ModelConfig *cfg);
void model_meta_free(ModelMeta *meta);

// Loads the conv weights of layers [1, n_base) from a Keras weights file
// (any layout weights_h5.h reads: ImageNet files with or without top, Keras
// 2/3 files, our head+base model files, the base nested in a Sequential),
// matched by layer name. Allocates them if needed. A file holding the other
// VGG's conv base is refused before anything is read (model_check_conv_layers).
int model_load_base(Model *m, const char *path);

// Refuses a weights file whose conv layers are the other VGG's, judged from
// the names of its blockN_convM layers alone (other layers, e.g. a with-top
// file's fc1/fc2/predictions or a model file's head, do not matter): VGG19
// has a fourth conv in blocks 3-5, VGG16 does not. Loading by name would
// otherwise take VGG16's 13 layers out of a VGG19 file and ignore the rest, a
// silently mixed network; Keras's load_weights refuses it (layer count
// mismatch), and so does this, naming the model the file holds:
//   "w.h5 holds a VGG19 conv base (16 conv layers, with block3_conv4,
//    block4_conv4, block5_conv4); --model vgg16 needs VGG16's 13 (use --model vgg19)"
//   "w.h5 holds a VGG16 conv base (13 conv layers, without block3_conv4, ...);
//    --model vgg19 needs VGG19's 16 (use --model vgg16)"
// names: the file's layers with weights (h5_list_layers), n of them.
// Returns 0 when the file can be m's base, or -1 with that message.
int model_check_conv_layers(const Model *m, const char *path, const char *const *names, int n);

// The most classes a model file records (model_meta_read refuses more).
#define MODEL_MAX_CLASSES 100000

// What model_save would refuse in meta, checked before any work (train calls
// it before its first epoch): a class count outside 2..MODEL_MAX_CLASSES, a
// class name with a newline (names are stored one per line). Every size
// fits: long attributes (the class names of thousands of classes) are
// split as weights_h5.h describes. Returns 0, or -1 naming path and why.
int model_meta_check_writable(const ModelMeta *meta, const char *path);

// Writes layers [from, n_layers) (from = model_head_start(m) for a head file,
// 1 for base + head, "full") and meta, atomically, byte-reproducibly.
// A full file has the layout Keras 2's save_weights gives the seeds' model
//   Sequential([VGG16(include_top=False, input_shape=...), Flatten(),
//               Dense(hidden, relu), Dropout(rate), Dense(outputs)])
// so that Keras's model.load_weights(path) (which matches top-level layers by
// position) reads it into that model: layer_names = ["vgg16", "flatten",
// "dense", "dropout", "dense_1"], the base one nested group named after the
// arch ("vgg16"/"vgg19") with weight_names "block1_conv1/kernel:0",
// "block1_conv1/bias:0", ... (26 or 32 names), datasets at
// vgg16/block1_conv1/kernel:0. The order is the base's layer order, i.e. what
// Keras expects of a model whose base is entirely trainable or entirely
// frozen; Keras 2 lists a partly trainable base's trainable weights first, so
// load such a file before setting per-layer trainable flags.
// With a cut other than block5_pool the base holds only the conv layers up to
// the cut; its group is still named after the arch (the file records the cut
// in vggft_layer), and the Keras model to load it into has, in place of
// VGG16(...), keras.Model(vgg.input, vgg.get_layer(CUT).output, name="vgg16").
// Keras ignores the name (it matches by position); our readers find layers by
// their inner names wherever they are.
int model_save(const Model *m, const char *path, int from, const ModelMeta *meta);
// Reads the metadata of a model file written by model_save.
int model_meta_read(const char *path, ModelMeta *meta);
// Loads the head's dense layers from a model file (head or full) into m,
// after checking that the file was made for the same base, cut, input size
// and head shape; a difference is an error that names it.
int model_load_head(Model *m, const char *path);
// Loads the whole model, layers [1, n_layers) (base and head), from a full
// model file (model_save with from <= 1), after the same checks as
// model_load_head; a head-only file is refused ("holds only the head").
// Allocates the weights if needed.
int model_load_full(Model *m, const char *path);

// A class list must be the head's (same names, same order), e.g. a folder's
// or a cache's: "WHAT has classes [a, b]; the head was trained on [b, a]".
// Returns 0, or -1 with that message.
int model_meta_check_classes(const ModelMeta *head, const char *what, char *const *names, int n);
// A feature cache can feed this head (finetune --cache, predict --cache):
// same model, input size, preprocessing, interpolation and base weights
// (weights_id: the --weights in use, or NULL for the head's own record;
// not checked when both are unknown), and the head's classes. The layer is
// the caller's to check (finetune needs the one below --unfreeze, predict
// the head's cut). Returns 0, or -1 naming the cache, the setting and both
// values: "C: the cache's input size is 32x32; the head needs 48x48".
// The decoding part of a decode setting ("reduced, pixel budget N" without
// a GPU precision after it) into buf: what changes the pixels.
const char *model_decode_pixels(const char *decode, char *buf, size_t size);
int model_meta_check_cache(const ModelMeta *head, const CacheMeta *c, const char *cache_path, const char *weights_id);
