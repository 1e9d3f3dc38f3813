// finetune: the top of the conv base trained together with the head.
#pragma once
#include <stddef.h>

#include "../common/model_io.h"

typedef struct {
    // Data: images (--data, with --val-data or --validation-split) or cached
    // features of the layer just below --unfreeze (--cache, --val-cache).
    const char *data, *val_data, *cache, *val_cache;
    double validation_split;
    // unfreeze NULL: the default, the first conv of the last block the
    // head's base has (finetune_default_unfreeze).
    const char *weights, *head, *out, *unfreeze;
    const char *optimizer, *class_weight, *augment, *save_augmented, *device, *precision;
    float lr, momentum;
    int nesterov, epochs, batch, threads, early_stopping, resume, resume_if_same, quiet, no_augment, save_augmented_n;
    // Keras's EarlyStopping(monitor, restore_best_weights): monitor "val_loss" or
    // "val_accuracy" (--early-stopping and --restore-best-weights watch it).
    const char *monitor;
    int restore_best;
    long seed, checkpoint_every, memory_budget_mb;
    double checkpoint_seconds;  // also a checkpoint once this long has passed since the last (0: off)
    int lr_given, momentum_given, augment_given;
    const char *command_line;
} FinetuneOptions;

// 0 when done, -1 (err_set) on failure, EXIT_USAGE (cli.h; err_set) when
// --unfreeze names a layer the head's base does not have (known only after
// reading the head), EXIT_STOPPED (stop.h) when a signal stopped it after
// saving MODEL.ckpt (rerun with --resume to continue).
int finetune_run(const FinetuneOptions *o);

// The settings of --head PATH (train's --out: a dense head with the
// settings vggft records); -1 (err_set, naming --head and what to give
// instead) for a whole model, a Keras weights file or a head without class
// names.
int finetune_read_head(const char *path, ModelMeta *hm);

// The default --unfreeze for a base cut at `cut`: the first conv of the last
// block the base has ("block2_pool" -> "block2_conv1", "block5_pool" ->
// "block5_conv1", the seeds' choice). buf: at least LAYER_NAME_MAX bytes.
// -1 (err_set) when cut is not a "blockN_pool" name.
int finetune_default_unfreeze(const char *cut, char *buf, size_t size);
