// What Keras's fit() keeps between steps, shared by `train` (the head on
// cached features) and `finetune` (the top of the base with the head): the
// optimizer and its slots for a range of layers, the running loss and
// accuracy of the epoch, the history (CSV and plot), early stopping, the
// checkpoint that a killed or stopped run resumes from, and the final
// report (confusion matrix, per-class precision and recall).
//
// The tools own their data and their step; this module owns everything that
// a resumed run must find again exactly as an uninterrupted run had it.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "optim.h"
#include "progress.h"

// Keras's class-weighted mean loss and accuracy over a set of batches.
typedef struct {
    double loss_sum, n;
    long correct;
} Running;
void running_add(Running *r, float batch_loss, int batch_n, const int32_t *pred, const int32_t *labels);
float running_loss(const Running *r);  // NaN when empty
float running_acc(const Running *r);

// The optimizer state and history of a training run over the trainable
// layers with weights in [from, n_layers) of a model.
typedef struct {
    const Model *m;
    int from;
    Optimizer opt;         // opt.step: updates done so far
    float **slots;         // HEAD_SLOTS layout (forward.h) over m's layer indices
    int max_epochs;
    // History of finished epochs (max_epochs entries; val_* NaN without validation).
    float *loss, *acc, *val_loss, *val_acc, *secs;
    int epochs_done;       // finished epochs
    // Inside an epoch (a checkpoint taken between steps, on a signal or
    // every N steps): steps done in epoch `epochs_done`, its running figures
    // and the seconds it has taken so far. All 0 at an epoch boundary.
    long steps_in_epoch;
    Running run;
    double epoch_secs;
    // Keras's EarlyStopping (min_delta 0) on val_loss, or on val_accuracy
    // (monitor_acc): the best value so far, the epochs since it, and with
    // restore_best (restore_best_weights=True) the trainable weights at the
    // end of that epoch (best_w, kept by fit_early_stop; in the checkpoint).
    int monitor_acc;
    float best_val;
    int best_epoch;        // 0-based, -1 before any validated epoch
    int wait;
    int stopped;           // 1 once early stopping ended training
    int restore_best;
    float **best_w;        // [layer * 2 + (0 kernel, 1 bias)] over covered layers; NULL until kept
    // Validation loss and accuracy before the first step (finetune reports
    // them beside the final ones); NaN when not measured.
    float before_val_loss, before_val_acc;
    // CPU threads of this run (0: not recorded). A resumed run on another
    // count continues correctly but not bit for bit (OpenBLAS's sums follow
    // the thread count): fit_load warns.
    int threads;
    // OUT.history.csv and OUT.history.svg, and the plot's title, set by
    // fit_begin (malloc'd; NULL before): fit_save rewrites both, so the
    // finished epochs are on disk, and drawn, after every epoch.
    char *history_path, *history_svg, *history_title;
} FitState;

// Zeroed slots for every trainable layer with weights in [from, n_layers)
// of m (its weights must be allocated), for opt's rule. -1 when out of memory.
int fit_init(FitState *s, const Model *m, int from, const Optimizer *opt, int max_epochs);
void fit_free(FitState *s);
// Records a finished epoch (and resets the in-epoch fields).
void fit_end_epoch(FitState *s, float loss, float acc, float val_loss, float val_acc, float secs);
// What Keras's EarlyStopping(monitor, patience, restore_best_weights)
// watches: val_loss (acc 0) or val_accuracy (acc 1). Before fit_begin.
void fit_set_monitor(FitState *s, int acc, int restore_best);
// Keras's EarlyStopping.on_epoch_end after the epoch just recorded: updates
// the best value and its epoch (with restore_best also copying the
// trainable weights, which must be on the host: walk_download first, into
// best_w), and returns 1 when training should stop (the monitored value has
// not improved for `patience` epochs; patience 0: never), 0 when not, -1
// (err_set) when out of memory for the copy. Call it only with validation
// figures.
int fit_early_stop(FitState *s, int patience);
// 1 when the epoch just recorded is the best so far.
int fit_epoch_is_best(const FitState *s);
// Keras's EarlyStopping.on_train_end with restore_best_weights: with
// restore_best and a validated epoch, the model's trainable weights set to
// best_w and Keras's "Restoring model weights from the end of the best
// epoch: N." on stdout; 1 then (a GPU walk must upload them), 0 when there
// is nothing to restore, -1 (err_set) when the best weights were not kept.
int fit_restore_best(FitState *s);

// The shortest decimal text of a float that reads back as the same float
// ("0.0001", not "9.99999975e-05"), for settings that people read and that
// a resumed run compares. buf: at least 32 bytes; returns buf.
const char *fit_float_text(float v, char *buf);

// Epoch `epoch`'s order of n samples: Fisher-Yates on the counter-based RNG,
// a function of (seed, epoch) only, so a resumed run shuffles alike.
void fit_shuffle(int *perm, int n, uint64_t seed, int epoch);

// The start of epoch s->epochs_done of a run of `steps` steps an epoch:
// prints "Epoch e/E" (unless quiet), starts the progress bar (counting the
// time and steps a resumed epoch already had, but not in its rate and ETA)
// and shuffles the n samples into perm.
void fit_epoch_start(const FitState *s, Progress *bar, int steps, int quiet, int *perm, int n, uint64_t seed);

// --- checkpoints ----------------------------------------------------------
// PATH holds the settings text ("key=value\n" lines that a resumed run must
// share), the state above, and the weights and slots of the trainable
// layers, written atomically and CRC-protected (checkpoint.h). Once
// fit_begin has run it also rewrites the history CSV and its plot
// (fit_write_history_files), as Keras's CSVLogger writes a row after every
// epoch: a killed job leaves its curve so far beside the checkpoint it
// resumes from, and a run that restarts never leaves an earlier run's plot
// beside its own history.
int fit_save(const FitState *s, const char *settings, const char *path);
// Restores a state saved by fit_save into s (fit_init'ed for the same model
// and optimizer) and the trainable layers' weights. A setting that differs
// from `settings` is an error naming it and both values; so is a
// checkpoint with more epochs than s->max_epochs.
int fit_load(FitState *s, const char *settings, const char *path);

// The start of a run that writes OUT: its checkpoint path (OUT's ".ckpt"
// sibling, into ckpt), temporary files left there by killed runs removed,
// and with resume the state restored from the checkpoint when it exists
// (fit_load; else a note that the run starts from the beginning). Says on
// stderr where it resumes, even when quiet: a job log should say. Without
// resume, notes that an existing checkpoint will be replaced. Sets
// s->history_path (OUT's ".history.csv" sibling). -1 as fit_load.
// resume: FIT_RESUME_NO (start over), FIT_RESUME (--resume: continue, a
// checkpoint of other settings an error naming them) or FIT_RESUME_IF_SAME
// (--resume-if-same: continue a checkpoint of these settings and data, start
// over, with a note, from one of others: for make and job scripts).
// title: the history plot's (OUT.history.svg) title.
enum { FIT_RESUME_NO = 0, FIT_RESUME = 1, FIT_RESUME_IF_SAME = 2 };
int fit_begin(FitState *s, const char *settings, const char *out, int resume, const char *title, char *ckpt,
              size_t size);

// --- outputs ----------------------------------------------------------------
// out.h5 -> out + suffix (".history.csv", ".ckpt"...): the stem without .h5.
void fit_sibling(const char *out, const char *suffix, char *buf, size_t size);
// Before any work, train's and finetune's --out: check_output_path's
// checks against the input files (inputs, names: n, NULL skipped), and
// also refused: an --out whose stem is that of an input with a checkpoint
// or history beside it (finetune --out run/head with --head run/head.h5
// would replace run/head.ckpt and its history and plots: the files of the
// run that made the input), and an --out inside
// one of the folders dirs (dir_names: nd; the feature caches). -1 with
// err_set naming the options.
int fit_check_out(const char *out, const char *const *inputs, const char *const *names, int n,
                  const char *const *dirs, const char *const *dir_names, int nd);
// train's and finetune's option-table entries (cli.h's CliOption) for
// Keras's EarlyStopping: --early-stopping, --monitor, --restore-best-weights,
// into the fields early_stopping, monitor and restore_best of o.
#define FIT_EARLY_STOPPING_OPTIONS(o)                                                                      \
    {"early-stopping", OPT_INT, &(o).early_stopping, "0", "PATIENCE",                                      \
     "stop after PATIENCE epochs without --monitor improving (0: off);\nthe last epoch's weights are "      \
     "written unless --restore-best-weights,\nas Keras's EarlyStopping",                                    \
     .range = ">=0"},                                                                                        \
    {"monitor", OPT_CHOICE, &(o).monitor, "val_loss", NULL,                                                \
     "what --early-stopping and --restore-best-weights watch (Keras's\nEarlyStopping monitor): the lowest " \
     "val_loss or the highest\nval_accuracy",                                                              \
     "val_loss|val_accuracy"},                                                                             \
    {"restore-best-weights", OPT_FLAG, &(o).restore_best, NULL, NULL,                                      \
     "write the weights of the epoch with the best --monitor value, not\nthe last (Keras's "                \
     "restore_best_weights=True; needs validation\ndata)"}

// --out's name as Keras 3's load_weights reads it: *.weights.h5 (its own
// format) and *.keras (a zip archive) refused (-1, err_set naming the .h5
// name to give: a usage error), another suffix than .h5 / .hdf5 a note.
int fit_check_out_name(const char *out);
// One writer per --out: two train or finetune jobs given one --out (a job
// submitted twice) would leave one's model beside the other's history and
// checkpoint. Takes an exclusive flock on OUT's ".lock" sibling (made, its
// folder too, holding "PID on HOST"), held until the process ends and removed at
// exit (atexit). 0 when held (or when the file system has no locks: a
// note-free no-op), -1 with err_set naming the other process when another
// holds it. A lock file left by a killed run is taken over.
int fit_lock_out(const char *out);
// Releases and removes the lock fit_lock_out took (tests; exit does it).
void fit_unlock_out(void);
// Keras's CSVLogger columns (epoch, accuracy, loss, val_accuracy, val_loss;
// values as %.9g, the float32 in full) plus ours, seconds (%.3f), after
// them, for the finished epochs; written atomically.
int fit_write_history(const FitState *s, const char *path);
// The two-panel loss/accuracy plot of the finished epochs (plot.h).
int fit_plot_history(const FitState *s, const char *path, const char *title);
// Both of the above, to the paths and with the title fit_begin set: what
// fit_save writes after every epoch and the tools at the end. -1 on a write
// error (named).
int fit_write_history_files(const FitState *s);
// conf[t * K + p] += 1 for each sample (true t, predicted p).
void confusion_add(long *conf, int K, const int32_t *labels, const int32_t *pred, int n);
// "WHAT: loss L - accuracy A (c/n)", the confusion matrix with class names,
// and per-class precision, recall and support, to out (names padded and cut
// by display columns, utf8.h: UTF-8 names line up). Above
// FIT_REPORT_MATRIX_MAX classes the matrix (K * K numbers: 110 MB for 2,600
// classes) is not printed: a line says so, then the FIT_REPORT_TOP_CONFUSIONS
// most frequent confusions (true -> predicted: count, share of the true
// class) stand in for it.
#define FIT_REPORT_MATRIX_MAX 50
#define FIT_REPORT_TOP_CONFUSIONS 20
void fit_print_report(FILE *out, const char *what, const Running *r, int K, char *const *class_names,
                      const long *conf);
// A run's last outputs: OUT.confusion.svg (conf as fit_print_report's,
// titled with r's accuracy on the validation data, or the training set
// without it), then on stdout the line naming every file the run wrote
// beside out, whose first is "OUT (what)". -1 on a write error (named).
int fit_finish(const char *out, const char *what, int has_val, const Running *r, int K, char *const *class_names,
               const long *conf);

// The error for a loss that is no longer finite at step (0-based) of epoch
// (0-based): "epoch 3 step 12: the loss is nan (diverged: lower --lr)".
// Returns -1.
int fit_diverged(int epoch, long step, float loss);
