// Pictures people would rather look at than read, as self-contained SVG
// files (any browser shows them; no plotting library needed): training
// curves like the seeds' plot_history, and confusion matrices.
// Files are written atomically (temporary file, then rename).
#pragma once

// Two panels, loss and accuracy per epoch: training as dots, validation as a
// line (Chollet's style). val_* may be NULL.
int plot_history_svg(const char *path, const char *title, int n_epochs, const float *loss, const float *acc,
                     const float *val_loss, const float *val_acc);
// K x K counts (rows: true class, columns: predicted), cells shaded by the
// fraction of their row.
int plot_confusion_svg(const char *path, const char *title, int K, char *const *class_names, const long *counts);
