// train: the dense head on cached features (CPU).
#pragma once
#include "cache.h"
#include "model.h"

typedef struct {
    const char *cache, *val_cache, *out, *optimizer, *class_weight, *class_mode, *command_line;
    double validation_split;
    float lr, momentum, dropout;
    int nesterov, epochs, batch, early_stopping, threads, hidden, quiet, resume, resume_if_same;
    // Keras's EarlyStopping(monitor, restore_best_weights): monitor "val_loss" or
    // "val_accuracy" (--early-stopping and --restore-best-weights watch it).
    const char *monitor;
    int restore_best;
    long seed, memory_budget_mb;
    int lr_given, momentum_given;
} TrainOptions;

// The model train fits on a cache: its base, input size and layer, its
// classes, and the head options of o (hidden, dropout, class mode: binary
// for two classes under "auto", as Keras's class_mode). -1 (err_set) for a
// model name the cache should not hold.
int train_model_config(const CacheMeta *meta, const TrainOptions *o, ModelConfig *cfg);

// 0 when done, -1 (err_set) on failure, EXIT_STOPPED (stop.h) when a signal
// stopped it after saving HEAD.ckpt (rerun with --resume to continue).
int train_run(const TrainOptions *o);
