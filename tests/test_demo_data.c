// The demo's data converter (scripts/fashion_mnist.c, built as
// BUILD/fashion_mnist) on hand-made IDX files, gzipped and plain: the class
// folders, which images each gets, their names and their pixels (read back
// with common/image.h), and the refusals (existing output, damaged files).
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "image.h"
#include "testutil.h"

static const char *const classes[10] = {"T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"};

#define SIDE 5  // the hand-made images are SIDE x SIDE

// Image i's pixel (x, y): distinct for every image and place.
static uint8_t pixel(int i, int x, int y) { return (uint8_t)(i * 25 + y * SIDE + x); }

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

// Writes DIR/NAME (gz: DIR/NAME.gz, gzip-compressed) holding header + body.
static void write_idx(const char *dir, const char *name, int gz, const uint8_t *hdr, size_t nh,
                      const uint8_t *body, size_t nb) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    if (!gz) {
        uint8_t *all = malloc(nh + nb + 1);
        memcpy(all, hdr, nh);
        if (nb) memcpy(all + nh, body, nb);
        write_file(path, all, nh + nb);
        free(all);
        return;
    }
    gzFile f = gzopen(path, "wb");
    cr_assert(f != NULL, "gzopen %s", path);
    cr_assert_eq(gzwrite(f, hdr, (unsigned)nh), (int)nh);
    if (nb) cr_assert_eq(gzwrite(f, body, (unsigned)nb), (int)nb);
    cr_assert_eq(gzclose(f), Z_OK);
}

// PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte with n images of
// SIDE x SIDE (pixel(i, x, y)) and the given labels. keep_bytes < 0: the
// whole images file; else only its first keep_bytes bytes (a truncated file).
static void write_split(const char *dir, const char *prefix, int gz, int n, const uint8_t *labels,
                        long keep_bytes) {
    char name[128];
    uint8_t hdr[16] = {0, 0, 8, 1};
    put32(hdr + 4, (uint32_t)n);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    write_idx(dir, name, gz, hdr, 8, labels, (size_t)n);
    hdr[3] = 3;
    put32(hdr + 8, SIDE);
    put32(hdr + 12, SIDE);
    uint8_t *px = malloc((size_t)n * SIDE * SIDE + 1);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) px[(size_t)i * SIDE * SIDE + y * SIDE + x] = pixel(i, x, y);
    size_t nb = (size_t)n * SIDE * SIDE;
    if (keep_bytes >= 0) nb = (size_t)keep_bytes - 16;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    write_idx(dir, name, gz, hdr, 16, px, nb);
    free(px);
}

// Files in DIR (-1 when DIR cannot be opened).
static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

// OUT/SPLIT/CLASS/NNNNN.png is image i of its IDX file, enlarged `scale`
// times by nearest (scale 1: as it is), gray in R, G and B.
static void expect_image(const char *out, const char *split, int k, int i, int scale) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s/%s/%05d.png", out, split, classes[k], i);
    Image im;
    cr_assert_eq(image_decode_file(path, NULL, &im, NULL), 0, "%s", path);
    cr_expect_eq(im.w, SIDE * scale, "%s: width %d", path, im.w);
    cr_expect_eq(im.h, SIDE * scale, "%s: height %d", path, im.h);
    int bad = 0;
    for (int y = 0; y < im.h && y < SIDE * scale; y++)
        for (int x = 0; x < im.w && x < SIDE * scale; x++) {
            const uint8_t *p = im.rgb + ((size_t)y * im.w + x) * 3;
            uint8_t want = pixel(i, x / scale, y / scale);
            if (p[0] != want || p[1] != want || p[2] != want) {
                if (!bad++) cr_expect_fail("%s (%d,%d): %d %d %d, expected %d", path, x, y, p[0], p[1], p[2], want);
            }
        }
    image_free(&im);
}

// Per class: how many images each split should hold.
static void expect_counts(const char *out, const char *split, const int want[10]) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", out, split);
    cr_expect_eq(count_files(dir), 10, "%s: %d entries, expected the 10 class folders", dir, count_files(dir));
    for (int k = 0; k < 10; k++) {
        snprintf(dir, sizeof dir, "%s/%s/%s", out, split, classes[k]);
        cr_expect_eq(count_files(dir), want[k], "%s: %d files, expected %d", dir, count_files(dir), want[k]);
    }
}

// train: 8 images, labels 3 0 3 9 3 0 1 3; t10k: 4 images, labels 9 0 3 9.
static const uint8_t train_labels[8] = {3, 0, 3, 9, 3, 0, 1, 3};
static const uint8_t val_labels[4] = {9, 0, 3, 9};

static void convert_and_check(int gz) {
    char *top = make_temp_dir(gz ? "demo_data_gz" : "demo_data_plain");
    char src[512], out[512], args[1200];
    snprintf(src, sizeof src, "%s/src", top);
    snprintf(out, sizeof out, "%s/out", top);
    cr_assert_eq(mkdir(src, 0755), 0);
    write_split(src, "train", gz, 8, train_labels, -1);
    write_split(src, "t10k", gz, 4, val_labels, -1);

    // At the images' own size: the pixels as they are. The first 2 of each
    // class in file order for train, the first 1 for validation.
    char *log;
    snprintf(args, sizeof args, "--size %d --train 2 --val 1 '%s' '%s'", SIDE, src, out);
    int rc = run_tool_timeout("fashion_mnist", args, 60, &log);
    cr_assert_eq(rc, 0, "%s", log);
    cr_expect(strstr(log, "/train: 6 images in 10 classes (0 to 2 per class)") != NULL, "%s", log);
    cr_expect(strstr(log, "/validation: 3 images in 10 classes (0 to 1 per class)") != NULL, "%s", log);
    free(log);
    const int want_train[10] = {[0] = 2, [1] = 1, [3] = 2, [9] = 1};
    const int want_val[10] = {[0] = 1, [3] = 1, [9] = 1};
    expect_counts(out, "train", want_train);
    expect_counts(out, "validation", want_val);
    expect_image(out, "train", 3, 0, 1);
    expect_image(out, "train", 0, 1, 1);
    expect_image(out, "train", 3, 2, 1);
    expect_image(out, "train", 9, 3, 1);
    expect_image(out, "train", 0, 5, 1);
    expect_image(out, "train", 1, 6, 1);
    expect_image(out, "validation", 9, 0, 1);
    expect_image(out, "validation", 0, 1, 1);
    expect_image(out, "validation", 3, 2, 1);
    char path[600];
    snprintf(path, sizeof path, "%s/train/%s/00004.png", out, classes[3]);  // class 3's third: not taken
    cr_expect(access(path, F_OK) != 0, "%s should not exist (--train 2)", path);

    // An existing OUT is refused and left as it was.
    rc = run_tool_timeout("fashion_mnist", args, 60, &log);
    cr_expect_eq(rc, 1, "%s", log);
    cr_expect(strstr(log, "exists: remove it first") != NULL, "%s", log);
    free(log);
    expect_counts(out, "train", want_train);

    // Enlarged twice by nearest: each pixel becomes a 2x2 square.
    snprintf(out, sizeof out, "%s/out2", top);
    snprintf(args, sizeof args, "--size %d --interpolation nearest --train 5 --val 5 '%s' '%s'", 2 * SIDE, src, out);
    rc = run_tool_timeout("fashion_mnist", args, 60, &log);
    cr_assert_eq(rc, 0, "%s", log);
    free(log);
    const int all_train[10] = {[0] = 2, [1] = 1, [3] = 4, [9] = 1};
    const int all_val[10] = {[0] = 1, [3] = 1, [9] = 2};
    expect_counts(out, "train", all_train);
    expect_counts(out, "validation", all_val);
    expect_image(out, "train", 3, 7, 2);
    expect_image(out, "validation", 9, 3, 2);
    remove_tree(top);
    free(top);
}

Test(demo_data, gzipped_idx_to_class_folders) { convert_and_check(1); }
Test(demo_data, plain_idx_to_class_folders) { convert_and_check(0); }

// A damaged source fails naming the file and what is wrong, and leaves
// neither OUT nor its temporary folder behind.
static void expect_refused(const char *top, const char *src, const char *want) {
    char out[512], args[1200], *log;
    snprintf(out, sizeof out, "%s/out", top);
    snprintf(args, sizeof args, "--size %d '%s' '%s'", SIDE, src, out);
    int rc = run_tool_timeout("fashion_mnist", args, 60, &log);
    cr_expect_eq(rc, 1, "%s", log);
    cr_expect(strstr(log, want) != NULL, "expected \"%s\" in: %s", want, log);
    free(log);
    cr_expect_eq(count_files(top), 1, "%s should hold only src/ (no out, no out.tmp.*)", top);
}

Test(demo_data, damaged_sources_refused) {
    char *top = make_temp_dir("demo_data_bad");
    char src[512];
    snprintf(src, sizeof src, "%s/src", top);
    cr_assert_eq(mkdir(src, 0755), 0);

    // t10k missing altogether (train fine): names the file.
    write_split(src, "train", 1, 8, train_labels, -1);
    expect_refused(top, src, "t10k-labels-idx1-ubyte: cannot open");

    // Truncated inside image 2 (the images file ends early), gzipped.
    write_split(src, "t10k", 1, 4, val_labels, 16 + 2 * SIDE * SIDE + 3);
    expect_refused(top, src, "t10k-images-idx3-ubyte.gz: truncated: the file ends inside image 2");

    // A label beyond Fashion-MNIST's 10 classes.
    const uint8_t bad_labels[4] = {9, 0, 12, 9};
    write_split(src, "t10k", 1, 4, bad_labels, -1);
    expect_refused(top, src, "label 12 of image 2 is not one of Fashion-MNIST's 10 classes");

    // Counts that disagree: 4 labels, 3 images.
    write_split(src, "t10k", 1, 3, val_labels, -1);
    uint8_t hdr[8] = {0, 0, 8, 1};
    put32(hdr + 4, 4);
    write_idx(src, "t10k-labels-idx1-ubyte", 1, hdr, 8, val_labels, 4);
    expect_refused(top, src, "holds 3 images but");

    // Not IDX at all: a labels file with an image header's magic.
    write_split(src, "t10k", 1, 4, val_labels, -1);
    hdr[3] = 3;
    write_idx(src, "t10k-labels-idx1-ubyte", 1, hdr, 8, val_labels, 4);
    expect_refused(top, src, "not an IDX file of unsigned bytes with 1 dimension (magic 00 00 08 03)");
    remove_tree(top);
    free(top);
}
