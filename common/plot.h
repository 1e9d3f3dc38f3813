// Pictures people would rather look at than read, as self-contained SVG
// files (any browser shows them; no plotting library needed): training
// curves like the seeds' plot_history, confusion matrices, and contact
// sheets of images (plot_example_errors). Files are written atomically
// (temporary file, then rename); every function returns 0, or -1 with
// err_set naming PATH. Layouts are sized from their text, so titles and
// labels stay inside the picture (tests/test_plot.c renders and checks).
#pragma once
#include <stdint.h>

// Two panels, loss and accuracy per epoch (n_epochs >= 1 values each, 1 to
// 500 and beyond): training as dots, validation as a line (Chollet's style).
// val_* may be NULL. before_val_*: the validation figures before the first
// epoch (finetune: the head alone), a hollow point at epoch 0 (NaN: none,
// and the axis starts at 1). The loss axis is log10 when its largest value
// is over 5 times its smallest (see plot.c for why), else linear; ticks are
// 1, 2 or 5 times a power of ten; non-finite values (a diverged epoch) are
// left out.
int plot_history_svg(const char *path, const char *title, int n_epochs, const float *loss, const float *acc,
                     const float *val_loss, const float *val_acc, float before_val_loss, float before_val_acc);
// K x K counts (rows: true class, columns: predicted), cells shaded by the
// fraction of their row. Sized for K from 2 to 50 and more: cells 80 to 16
// px, column names vertical when they do not fit a cell, names over 220 px
// shortened in the middle with an ellipsis, keeping the ends that tell
// names apart ("dog_breed_gol…variant_07"; the whole name as a tooltip),
// the title centred on the matrix, in two lines when long, and the matrix
// centred under it. Text is XML-escaped.
// Above PLOT_CONFUSION_MAX classes the matrix would be unreadable and huge
// (K * K cells: 182 MB for 1,000 classes), so the picture holds instead the
// title, a note "confusion matrix not drawn for K classes (more than 100)",
// and a table of the PLOT_CONFUSION_TOP most frequent confusions (true
// class, predicted class, count, share of the true class), a few KB.
#define PLOT_CONFUSION_MAX 100
#define PLOT_CONFUSION_TOP 25
int plot_confusion_svg(const char *path, const char *title, int K, char *const *class_names, const long *counts);

// One thumbnail of a contact sheet: RGB8, h x w, row-major HWC.
typedef struct {
    const uint8_t *rgb;
    int h, w;
    const char *line1, *line2;
    const char *line3;    // a third line in grey, e.g. the file name (NULL: none)
    const char *tooltip;  // shown on hover over the picture, e.g. the file's path (NULL: none)
} PlotThumb;
// A grid of captioned thumbnails (the seeds' plot_example_errors), `columns`
// per row (0: automatic), SVG with embedded PNGs (data: URIs, base64),
// written atomically. Each thumbnail is scaled (PIL-style bilinear, which
// averages when shrinking) to fit a 160 px box, keeping its aspect; its
// caption lines (e.g. "true: cats", "pred: dogs 0.97", "cat.123.jpg"; NULL:
// none; the second in dark red, as a mistake's prediction, the third in
// grey; the third row is there when any thumbnail has one) are
// XML-escaped and shortened in the middle when too long for the cell (so
// "pred: NAME 0.97" keeps its probability); a long title takes two lines.
// n = 0 writes a sheet that says there is nothing to show.
// -1 with err_set naming PATH (or the thumbnail) on any error.
int plot_contact_sheet_svg(const char *path, const char *title, int n, const PlotThumb *thumbs, int columns);
