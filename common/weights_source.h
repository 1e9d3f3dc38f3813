// --weights FILE | imagenet | random, the same in every tool.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "model_io.h"

// Loads the conv base weights (layers [1, n_base)) of m from spec:
//   imagenet  Keras's ImageNet notop file for m's arch, found in Keras's cache
//             or downloaded there (a Keras-like progress bar on stderr unless
//             quiet; base URL from $VGGFT_WEIGHTS_URL when set)
//   random    Keras's glorot_uniform with zero biases, from seed
//   FILE      a Keras HDF5 weights file: ImageNet files with or without top,
//             Keras 2/3 files (the base possibly nested in a Sequential, as
//             save_weights writes the seeds' model), our model files (head +
//             base, e.g. a fine-tuned model); layers matched by name. A file
//             holding the other VGG's conv layers is refused, naming it
//             (model_check_conv_layers).
// id receives what identifies these weights in caches and model files:
// "sha256:<hex of the file>" or "random:seed=<seed>".
// Errors say what to do: a FILE that is not there is "--weights FILE: no
// such file"; an imagenet download that fails (no network on the node)
// names the path to copy Keras's file to, or --weights FILE. Warnings (a
// stale cached file) print even when quiet; quiet hides the progress and
// the "Downloading data from" note.
int load_base_weights(Model *m, const char *spec, uint64_t seed, int quiet, char *id, size_t id_size);

// The checks of a --weights FILE that cost nothing (it exists, it is a
// regular file: not a folder, FIFO or device, which would block the hash),
// for a tool to run before long work; 0 for "imagenet" and "random".
// -1 with err_set as load_base_weights's.
int weights_spec_check(const char *spec);

// The base weights a head (or a whole model's head) was trained on, for
// finetune and predict: load_base_weights from spec, then the check that
// they are the ones head_meta records (SHA-256 or random:seed=N), with an
// error that names the head, its weights and the extract command that made
// its features, and says what to give. seed < 0: for --weights random, the
// seed the head records (else 1). spec NULL (no --weights given): the
// weights the head records (random, or the --weights of the extract
// command that made its features), with a note unless quiet. -1 (err_set)
// on failure.
int load_head_base_weights(Model *m, const char *spec, long seed, int quiet, const char *head,
                           const ModelMeta *head_meta, char *id, size_t id_size);
