// An image folder read the way Keras's flow_from_directory reads it.
//
//   DIR/CLASS_A/x.jpg, DIR/CLASS_A/sub/y.png, DIR/CLASS_B/...
//
// - classes: the names of DIR's subdirectories (symlinks to directories
//   count), sorted by bytes; a class's index is its position. Or an explicit
//   list (Keras's classes=), used in the given order.
// - files: everything under a class folder, recursively, in os.walk order as
//   Keras sorts it: directories by their whole path, then files by name
//   within each directory. Symlinked subdirectories are not entered
//   (os.walk's followlinks=False). Sorting is by bytes, which is Python's
//   order for UTF-8 names.
// - a file is an image if its lower-cased name ends with png, jpg, jpeg, bmp,
//   ppm, tif or tiff (Keras's test: str.endswith, no dot required). Other
//   files are listed in `skipped` with a reason, as are files directly in DIR,
//   unreadable folders, and symlinked folders that were not entered.
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
    char **skipped_reasons;  // "unsupported file type (.gif)", ...
} Dataset;

// Scans dir. classes == NULL (n_classes 0): discover them; otherwise use the
// given names in the given order (an error if one is not a folder of dir,
// is empty, contains '/', or is repeated). Errors: dir missing, not a
// directory, unreadable, or without class subfolders. On error *ds is empty.
int dataset_scan(const char *dir, const char *const *classes, int n_classes, Dataset *ds);

// Keras's validation_split (0 < F < 1): for each class with n_c images, the
// first int(F * n_c) (in scan order) go to val, the rest to train. Both get
// copies of root, class names and their own counts; skipped lists stay with
// the full scan (n_skipped 0).
int dataset_split(const Dataset *all, double validation_split, Dataset *train, Dataset *val);

void dataset_free(Dataset *ds);

// "Found N images belonging to K classes." (Keras's words, no newline).
// Returns what snprintf returns.
int dataset_found_line(const Dataset *ds, char *buf, size_t size);

// scikit-learn's compute_class_weight('balanced'): w[c] = N / (K * N_c),
// computed in double. -1 (naming the class) if a class has no images, where
// scikit-learn raises too.
int dataset_class_weights_balanced(const Dataset *ds, float *w);
// The same from per-class counts (names for the error message).
int class_weights_balanced(const long *counts, int K, char *const *names, float *w);

// root + "/" + items[i].path, malloc'd (NULL if out of memory).
char *dataset_item_path(const Dataset *ds, int i);
