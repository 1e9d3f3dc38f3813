// An image folder read the way Keras's flow_from_directory reads it.
//
//   DIR/CLASS_A/x.jpg, DIR/CLASS_A/sub/y.png, DIR/CLASS_B/...
//
// - classes: the names of DIR's subdirectories (symlinks to directories
//   count), sorted by keras_name_cmp; a class's index is its position. Or an
//   explicit list (Keras's classes=), used in the given order.
// - files: everything under a class folder, recursively, in os.walk order as
//   Keras sorts it: directories by their whole path, then files by name
//   within each directory. Symlinked subdirectories are not entered
//   (os.walk's followlinks=False). Sorted by keras_name_cmp too.
// - a file is an image if its lower-cased name ends with png, jpg, jpeg, bmp,
//   ppm, tif or tiff (Keras's test: str.endswith, no dot required). Anything
//   in a class folder that is not a folder counts, FIFOs and sockets too
//   (os.walk lists them as files): the reader must refuse those.
// - what Keras does not list is `ignored`, with a reason: other files
//   (.DS_Store, notes.txt), files directly in DIR, symlinked folders that
//   were not entered. These are not skipped images.
// - `skipped` holds what Keras would silently miss although it may hold
//   images: folders that cannot be read (os.walk drops them without a word).
// - items are grouped by class, in class order; paths are relative to DIR
//   ("CLASS_A/sub/y.png", Keras's `filenames`).
// Names are byte strings: spaces and non-UTF-8 bytes are fine.
#pragma once
#include <stddef.h>

typedef struct {
    char *path;  // relative to root: "CLASS/.../FILE"
    int label;   // class index
} DatasetItem;

typedef struct {
    char *root;           // DIR as given, without trailing slashes
    int n_classes;
    char **class_names;   // n_classes
    int *class_counts;    // images per class (0 is possible: check it)
    int n_items;
    DatasetItem *items;
    int n_skipped;
    char **skipped_paths;    // relative to root
    char **skipped_reasons;  // "cannot read folder: Permission denied"
    int n_ignored;
    char **ignored_paths;    // relative to root
    char **ignored_reasons;  // "unsupported file type (.gif): not an image file (ignored, as Keras does)", ...
} Dataset;

// Python's order of two names, as sorted() puts the str values os.listdir
// gives (Keras sorts those): the names decoded by utf8_decode_escape (UTF-8,
// each byte that is not UTF-8 as U+DC00 + byte) and compared code point by
// code point, a prefix first. strcmp's byte order is the same for valid
// UTF-8 only: Python puts "\xc3\xa9" (U+00E9) before "\xc0" (U+DCC0), and
// U+E000..U+10FFFF after the escaped bytes U+DC80..U+DCFF.
int keras_name_cmp(const char *a, const char *b);

// Scans dir. classes == NULL (n_classes 0): discover them; otherwise use the
// given names in the given order (an error if one is not a folder of dir,
// is empty, contains '/', or is repeated). Errors: dir missing, not a
// directory, unreadable, or without class subfolders. On error *ds is empty.
int dataset_scan(const char *dir, const char *const *classes, int n_classes, Dataset *ds);

// Keras's validation_split (0 < F < 1): for each class with n_c images, the
// first int(F * n_c) (in scan order) go to val, the rest to train. Both get
// copies of root, class names and their own counts; skipped and ignored
// lists stay with the full scan (n_skipped, n_ignored 0).
// The split is of the file LIST, as Keras's DirectoryIterator makes it
// before any file is opened: a file found unreadable or corrupt later still
// holds its place (n_c counts it), so the other files land where Keras
// puts them. Splitting only the images that decoded would move the boundary.
int dataset_split(const Dataset *all, double validation_split, Dataset *train, Dataset *val);

// The number of validation files of a class of n listed files: int(F * n),
// computed in double as Python does (0.29 * 100 -> 28). A file at position
// p (0-based, scan order) within its class is validation iff p < this.
// For splitting data that was read already (e.g. cache records): n must be
// the class's listed count, skipped files included, and p the file's
// position in that list.
long dataset_split_val_count(double validation_split, long n);

void dataset_free(Dataset *ds);

// "Found N images belonging to K classes." (Keras's words, no newline).
// Returns what snprintf returns.
int dataset_found_line(const Dataset *ds, char *buf, size_t size);
// 1 when every class folder of ds has the name of a dataset split (train,
// training, val, valid, validation, test, testing, any case): --data given
// the folder above the splits, which Keras, too, reads as classes. Then
// buf holds the warning's text ("... did you mean --data DIR/train?").
int dataset_looks_like_splits(const Dataset *ds, char *buf, size_t size);
// What finetune's checkpoint records of an image folder, to refuse a resume
// on other images: "images:" + the SHA-256 of every item's path, class,
// size in bytes and first and last 4 KiB, in order (not mtimes: a folder
// copied again to a node's scratch space is the same data). An image
// added, removed, renamed, moved to another class or replaced changes it
// (unless the new one has the same size and the same first and last 4
// KiB). out: at least 72 bytes. -1 with err_set on a hashing failure.
int dataset_content_id(const Dataset *ds, char *out, size_t size);
// A warning on stderr for each folder the scan skipped (unreadable
// subfolders of a class), for tools that keep no list of their own.
void dataset_warn_skipped(const Dataset *ds);

// scikit-learn's compute_class_weight('balanced'): w[c] = N / (K * N_c),
// computed in double. -1 (naming the class) if a class has no images, where
// scikit-learn raises too.
int dataset_class_weights_balanced(const Dataset *ds, float *w);
// The same from per-class counts (names for the error message).
int class_weights_balanced(const long *counts, int K, char *const *names, float *w);

// root + "/" + items[i].path, malloc'd (NULL if out of memory).
char *dataset_item_path(const Dataset *ds, int i);
