// The demo's data: Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist,
// /usr/share/datasets/fashion-mnist) -> class folders of PNG images in the
// flow_from_directory layout:
//
//   OUT/train/CLASS/NNNNN.png       the first --train images of each class of
//                                   train-images-idx3-ubyte (file order)
//   OUT/validation/CLASS/NNNNN.png  the first --val of each class of t10k-*
//
// NNNNN is the image's index in its IDX file. CLASS is Fashion-MNIST's label
// name made filesystem-safe ("T-shirt/top" -> "T-shirt_top"); all 10 class
// folders are made in both splits, so both have the same class list. The
// 28x28 gray images are replicated to RGB and enlarged to --size with
// Pillow's resize (common/image.h: image_resize), bilinear by default.
//
// OUT is written as a whole: everything goes to OUT.tmp.PID, renamed to OUT
// at the end, so an interrupted run never leaves a complete-looking OUT. An
// existing OUT is refused (remove it first).
//
// Each IDX file is read as SRC/NAME.gz or else SRC/NAME (zlib's gzread reads
// both). Format (http://yann.lecun.com/exdb/mnist/): big-endian header,
// magic 0x00000803 (unsigned bytes, 3 dims) + count, rows, cols for images,
// 0x00000801 + count for labels, then the bytes.
//
// `make` builds it with the tools (BUILD/fashion_mnist, linked to build/);
// scripts/demo.sh runs it, tests/test_demo_data.c tests it:
//   build/fashion_mnist [--size 48] [--train 300] [--val 100] SRC OUT
#define _GNU_SOURCE  // nftw
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"
#include "error.h"
#include "fileutil.h"
#include "image.h"
#include "image_write.h"

#define FMNIST_CLASSES 10
#define FMNIST_MAX_SIDE 4096  // IDX rows/cols above this are refused as implausible

// Fashion-MNIST's labels 0..9 (its README's table), '/' replaced by '_'.
static const char *const fmnist_class_names[FMNIST_CLASSES] = {
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
};

typedef struct {
    int size;            // output side in pixels (>= 1)
    int train_per_class; // images per class taken from train-*
    int val_per_class;   // images per class taken from t10k-*
    Interp interp;       // enlarging filter (Pillow's)
} FmnistOptions;

// An open IDX file: gz or plain, header read.
typedef struct {
    gzFile gz;
    char path[4096];
    uint32_t count;      // items the header announces
    uint32_t rows, cols; // images only (1, 1 for labels)
} IdxFile;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Reads exactly n bytes; what names the item for the message. 0 or -1.
static int idx_read(IdxFile *f, void *buf, size_t n, const char *what) {
    int got = gzread(f->gz, buf, (unsigned)n);
    if (got < 0) {
        int errnum;
        const char *m = gzerror(f->gz, &errnum);
        return err_set("%s: reading %s: %s", f->path, what, errnum == Z_ERRNO ? strerror(errno) : m);
    }
    if ((size_t)got != n) return err_set("%s: truncated: the file ends inside %s", f->path, what);
    return 0;
}

static void idx_close(IdxFile *f) {
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

// Opens SRC/NAME.gz, or SRC/NAME when that does not exist, and reads its
// header. dims: 3 for images, 1 for labels; the element type must be
// unsigned byte (0x08). -1 with err_set naming the file.
static int idx_open(IdxFile *f, const char *src, const char *name, int dims) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/%s.gz", src, name);
    if (access(f->path, F_OK) != 0) snprintf(f->path, sizeof f->path, "%s/%s", src, name);
    f->gz = gzopen(f->path, "rb");
    if (!f->gz) return err_set("%s: cannot open: %s", f->path, errno ? strerror(errno) : "out of memory");
    uint8_t h[16];
    if (idx_read(f, h, 4 + 4 * (size_t)dims, "the header") != 0) goto fail;
    if (h[0] != 0 || h[1] != 0 || h[2] != 0x08 || h[3] != dims) {
        err_set("%s: not an IDX file of unsigned bytes with %d dimension%s (magic %02x %02x %02x %02x)",
                f->path, dims, dims == 1 ? "" : "s", h[0], h[1], h[2], h[3]);
        goto fail;
    }
    f->count = be32(h + 4);
    f->rows = dims == 3 ? be32(h + 8) : 1;
    f->cols = dims == 3 ? be32(h + 12) : 1;
    if (f->rows == 0 || f->cols == 0 || f->rows > FMNIST_MAX_SIDE || f->cols > FMNIST_MAX_SIDE) {
        err_set("%s: implausible image size %ux%u", f->path, f->cols, f->rows);
        goto fail;
    }
    return 0;
fail:
    idx_close(f);
    return -1;
}

// Makes DIR/CLASS for every class; -1 with err_set.
static int make_class_dirs(const char *dir) {
    char path[4200];
    for (int k = 0; k < FMNIST_CLASSES; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, fmnist_class_names[k]);
        if (make_dirs(path) != 0) return -1;
    }
    return 0;
}

// One split: SRC/PREFIX-{images-idx3,labels-idx1}-ubyte[.gz] -> DIR/CLASS/NNNNN.png,
// the first per_class images of each class in file order (reading stops once
// every class has them). counts[k] receives the images written for class k
// (fewer than per_class when the file has fewer). -1 with err_set naming the
// file, the index or the label.
static int fmnist_convert_split(const char *src, const char *prefix, const char *dir,
                                int per_class, const FmnistOptions *o, int counts[FMNIST_CLASSES]) {
    char name[256];
    IdxFile im, lb;
    uint8_t *labels = NULL, *gray = NULL, *rgb = NULL, *big = NULL;
    int rc = -1;
    memset(counts, 0, FMNIST_CLASSES * sizeof *counts);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    if (idx_open(&lb, src, name, 1) != 0) return -1;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    if (idx_open(&im, src, name, 3) != 0) {
        idx_close(&lb);
        return -1;
    }
    if (im.count != lb.count) {
        err_set("%s holds %u images but %s %u labels", im.path, im.count, lb.path, lb.count);
        goto done;
    }
    if (make_class_dirs(dir) != 0) goto done;
    size_t npix = (size_t)im.rows * im.cols;
    labels = malloc(lb.count ? lb.count : 1);
    gray = malloc(npix);
    rgb = malloc(npix * 3);
    big = malloc((size_t)o->size * o->size * 3);
    if (!labels || !gray || !rgb || !big) {
        err_set("%s: out of memory", im.path);
        goto done;
    }
    if (idx_read(&lb, labels, lb.count, "the labels") != 0) goto done;
    int filled = 0;  // classes that have per_class images
    for (uint32_t i = 0; i < im.count && filled < FMNIST_CLASSES; i++) {
        char what[64], path[4400];
        snprintf(what, sizeof what, "image %u", i);
        if (idx_read(&im, gray, npix, what) != 0) goto done;
        int k = labels[i];
        if (k >= FMNIST_CLASSES) {
            err_set("%s: label %d of image %u is not one of Fashion-MNIST's %d classes", lb.path, k, i,
                    FMNIST_CLASSES);
            goto done;
        }
        if (counts[k] >= per_class) continue;
        // Gray -> RGB as PIL's convert('RGB') does: the value in every channel.
        for (size_t p = 0; p < npix; p++) rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = gray[p];
        if (image_resize(rgb, (int)im.cols, (int)im.rows, big, o->size, o->size, o->interp) != 0) goto done;
        snprintf(path, sizeof path, "%s/%s/%05u.png", dir, fmnist_class_names[k], i);
        if (image_write_png(path, big, o->size, o->size) != 0) goto done;
        if (++counts[k] == per_class) filled++;
    }
    rc = 0;
done:
    idx_close(&im);
    idx_close(&lb);
    free(labels);
    free(gray);
    free(rgb);
    free(big);
    return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    remove(path);
    return 0;
}

// Both splits into OUT (see the top of this file): train-* -> OUT/train,
// t10k-* -> OUT/validation, through OUT.tmp.PID. counts[0] and counts[1]
// receive each split's images per class. -1 with err_set; an existing OUT
// is refused and left alone.
static int fmnist_convert(const char *src, const char *out, const FmnistOptions *o,
                          int counts[2][FMNIST_CLASSES]) {
    struct stat st;
    if (o->size < 1 || o->size > FMNIST_MAX_SIDE) return err_set("--size %d: must be 1 to %d", o->size, FMNIST_MAX_SIDE);
    if (o->train_per_class < 0 || o->val_per_class < 0) return err_set("--train and --val must be >= 0");
    if (lstat(out, &st) == 0) return err_set("%s exists: remove it first (it is written as a whole)", out);
    char tmp[4200], dir[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    snprintf(dir, sizeof dir, "%s/train", tmp);
    if (fmnist_convert_split(src, "train", dir, o->train_per_class, o, counts[0]) != 0) goto fail;
    snprintf(dir, sizeof dir, "%s/validation", tmp);
    if (fmnist_convert_split(src, "t10k", dir, o->val_per_class, o, counts[1]) != 0) goto fail;
    if (rename(tmp, out) != 0) {
        err_set("renaming %s to %s: %s", tmp, out, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);  // keeps the message: it never calls err_set
    return -1;
}

int main(int argc, char **argv) {
    FmnistOptions o = {0};
    const char *interp = NULL;
    CliOption opts[] = {
        {"size", OPT_INT, &o.size, "48", "N", "side of the output images (VGG needs at least 32)", .range = "[1,4096]"},
        {"train", OPT_INT, &o.train_per_class, "300", "N",
         "training images per class (first N of train-*; it has 6000)", .range = ">=0"},
        {"val", OPT_INT, &o.val_per_class, "100", "N", "validation images per class (first N of t10k-*; it has 1000)",
         .range = ">=0"},
        {"interpolation", OPT_CHOICE, &interp, "bilinear", "NAME", "Pillow's filter for enlarging", "nearest|bilinear"},
    };
    CliSpec spec = {"fashion_mnist",
                    "Fashion-MNIST IDX files -> OUT/{train,validation}/CLASS/NNNNN.png (RGB, enlarged)",
                    "[options] SRC OUT",
                    "SRC holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], e.g.\n"
                    "/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).\n"
                    "OUT must not exist; it is written through OUT.tmp.PID.",
                    opts, (int)(sizeof opts / sizeof opts[0])};
    int n_rest = 0;
    char **rest = NULL;
    int c = cli_parse(&spec, argc, argv, &n_rest, &rest);
    if (c != CLI_OK) return c == CLI_EXIT_OK ? 0 : 2;
    int status = 0, counts[2][FMNIST_CLASSES];
    if (n_rest != 2) {
        cli_error("fashion_mnist", "expected SRC and OUT, got %d argument%s", n_rest, n_rest == 1 ? "" : "s");
        status = 2;
    } else if (interp_parse(interp, &o.interp) != 0) {
        cli_error("fashion_mnist", NULL);
        status = 2;
    } else if (fmnist_convert(rest[0], rest[1], &o, counts) != 0) {
        cli_error("fashion_mnist", NULL);
        status = 1;
    } else {
        static const char *const split[2] = {"train", "validation"};
        for (int s = 0; s < 2; s++) {
            int total = 0, lo = counts[s][0], hi = counts[s][0];
            for (int k = 0; k < FMNIST_CLASSES; k++) {
                total += counts[s][k];
                if (counts[s][k] < lo) lo = counts[s][k];
                if (counts[s][k] > hi) hi = counts[s][k];
            }
            printf("%s/%s: %d images in %d classes (%d to %d per class), %dx%d RGB PNG\n", rest[1], split[s],
                   total, FMNIST_CLASSES, lo, hi, o.size, o.size);
        }
    }
    free(rest);
    return status;
}
