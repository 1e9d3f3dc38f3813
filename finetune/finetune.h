// finetune: the top of the conv base trained together with the head.
#pragma once

typedef struct {
    // Data: images (--data, with --val-data or --validation-split) or cached
    // features of the layer just below --unfreeze (--cache, --val-cache).
    const char *data, *val_data, *cache, *val_cache;
    double validation_split;
    const char *weights, *head, *out, *unfreeze;
    const char *optimizer, *class_weight, *augment, *save_augmented, *device;
    float lr, momentum;
    int nesterov, epochs, batch, threads, early_stopping, resume, quiet, no_augment, save_augmented_n;
    long seed, checkpoint_every, memory_budget_mb;
    int lr_given, momentum_given, augment_given;
    const char *command_line;
} FinetuneOptions;

// 0 when done, -1 (err_set) on failure, EXIT_STOPPED (stop.h) when a signal
// stopped it after saving MODEL.ckpt (rerun with --resume to continue).
int finetune_run(const FinetuneOptions *o);
