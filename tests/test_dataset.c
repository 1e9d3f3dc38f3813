// flow_from_directory semantics on a tree built in a temp dir. Expected
// orders and counts are worked out by hand from Keras's rules (sorted class
// names; os.walk directories sorted by whole path, files sorted per folder;
// lower-cased name ends with png/jpg/jpeg/bmp/ppm/tif/tiff).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "error.h"
#include "testutil.h"

static char *tmp, *data;  // tmp/ holds data/ (DIR) and ext/ (symlink target)

static void mk(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    cr_assert_eq(mkdir(p, 0755), 0, "mkdir %s", p);
}

static void touch(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    write_file(p, "x", 1);
}

static void build_tree(void) {
    tmp = make_temp_dir("dataset");
    data = malloc(strlen(tmp) + 8);
    sprintf(data, "%s/data", tmp);
    mk("data");
    // Created out of order; readdir order is arbitrary anyway.
    mk("data/zebra");
    for (int i = 99; i >= 0; i--) {
        char n[64];
        sprintf(n, "data/zebra/z%03d.jpg", i);
        touch(n);
    }
    mk("data/apple");
    const char *apple[] = {"b.jpg", "with space.jpg", "A.PNG", "c.JpEg", "notes.txt",
                           "anim.gif", "noext", ".hidden.jpg", "img.apng",
                           "\xff\xfe.jpg"};  // not UTF-8
    for (size_t i = 0; i < sizeof apple / sizeof *apple; i++) {
        char n[128];
        sprintf(n, "data/apple/%s", apple[i]);
        touch(n);
    }
    mk("data/apple/sub");
    touch("data/apple/sub/y.tif");
    touch("data/apple/sub/x.bmp");
    mk("data/apple/sub/deeper");
    touch("data/apple/sub/deeper/d.png");
    mk("data/apple/sub-1");
    touch("data/apple/sub-1/z.ppm");
    mk("data/apple/sub 2");
    touch("data/apple/sub 2/q.tiff");
    mk("data/Banana");
    touch("data/Banana/b3.jpeg");
    touch("data/Banana/b1.jpg");
    touch("data/Banana/b2.png");
    touch("data/Banana/Thumbs.db");
    mk("data/caf\xe9");  // Latin-1 byte: not UTF-8
    const char *cafe[] = {"e.JPG", "a.jpg", "d.jpg", "c.jpg", "b.jpg"};
    for (int i = 0; i < 5; i++) {
        char n[128];
        sprintf(n, "data/caf\xe9/%s", cafe[i]);
        touch(n);
    }
    mk("data/empty");
    touch("data/empty/readme.md");
    touch("data/labels.csv");
    mk("ext");
    touch("ext/l2.png");
    touch("ext/l1.png");
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/data/linked", tmp);
    cr_assert_eq(symlink("../ext", p), 0);  // a class folder that is a symlink: a class
    snprintf(q, sizeof q, "%s/data/apple/link", tmp);
    cr_assert_eq(symlink("../zebra", q), 0);  // inside a class: not entered
}

static void cleanup(void) {
    remove_tree(tmp);
    free(tmp);
    free(data);
}

TestSuite(dataset, .init = build_tree, .fini = cleanup);

static const char *const classes_sorted[] = {"Banana", "apple", "caf\xe9", "empty", "linked", "zebra"};
static const int counts_sorted[] = {3, 12, 5, 0, 2, 100};

static const char *const apple_order[] = {
    "apple/.hidden.jpg", "apple/A.PNG", "apple/b.jpg", "apple/c.JpEg", "apple/img.apng",
    "apple/with space.jpg", "apple/\xff\xfe.jpg",
    // then the subfolders by whole path: "sub" < "sub 2" < "sub-1" < "sub/deeper"
    "apple/sub/x.bmp", "apple/sub/y.tif", "apple/sub 2/q.tiff", "apple/sub-1/z.ppm",
    "apple/sub/deeper/d.png"};

static int find_ignored(const Dataset *ds, const char *path, const char *reason) {
    for (int i = 0; i < ds->n_ignored; i++)
        if (!strcmp(ds->ignored_paths[i], path))
            return strstr(ds->ignored_reasons[i], reason) != NULL;
    return 0;
}

Test(dataset, scan_classes_order_labels_skipped) {
    Dataset ds;
    cr_assert_eq(dataset_scan(data, NULL, 0, &ds), 0, "%s", err_msg());
    cr_assert_eq(ds.n_classes, 6);
    for (int c = 0; c < 6; c++) {
        cr_expect_str_eq(ds.class_names[c], classes_sorted[c]);
        cr_expect_eq(ds.class_counts[c], counts_sorted[c], "class %s: %d images", classes_sorted[c],
                     ds.class_counts[c]);
    }
    cr_assert_eq(ds.n_items, 122);
    // Items grouped by class in class order.
    const char *banana[] = {"Banana/b1.jpg", "Banana/b2.png", "Banana/b3.jpeg"};
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(ds.items[i].path, banana[i]);
        cr_expect_eq(ds.items[i].label, 0);
    }
    for (int i = 0; i < 12; i++) {
        cr_expect_str_eq(ds.items[3 + i].path, apple_order[i], "apple item %d", i);
        cr_expect_eq(ds.items[3 + i].label, 1);
    }
    const char *cafe[] = {"caf\xe9/a.jpg", "caf\xe9/b.jpg", "caf\xe9/c.jpg", "caf\xe9/d.jpg",
                          "caf\xe9/e.JPG"};
    for (int i = 0; i < 5; i++) {
        cr_expect_str_eq(ds.items[15 + i].path, cafe[i]);
        cr_expect_eq(ds.items[15 + i].label, 2);
    }
    cr_expect_str_eq(ds.items[20].path, "linked/l1.png");
    cr_expect_str_eq(ds.items[21].path, "linked/l2.png");
    cr_expect_eq(ds.items[21].label, 4);
    for (int i = 0; i < 100; i++) {
        char want[32];
        sprintf(want, "zebra/z%03d.jpg", i);
        cr_expect_str_eq(ds.items[22 + i].path, want);
        cr_expect_eq(ds.items[22 + i].label, 5);
    }

    // What Keras does not list is ignored, not skipped: nothing was skipped.
    cr_expect_eq(ds.n_skipped, 0);
    cr_expect_eq(ds.n_ignored, 7);
    cr_expect(find_ignored(&ds, "labels.csv", "not in a class folder (ignored, as Keras does)"));
    cr_expect(find_ignored(&ds, "Banana/Thumbs.db", "unsupported file type (.db)"));
    cr_expect(find_ignored(&ds, "apple/anim.gif", "unsupported file type (.gif): not among the types Keras reads (ignored, as Keras does)"));
    cr_expect(find_ignored(&ds, "apple/notes.txt", "unsupported file type (.txt)"));
    cr_expect(find_ignored(&ds, "apple/noext", "unsupported file type (no extension)"));
    cr_expect(find_ignored(&ds, "apple/link", "symbolic link"));
    cr_expect(find_ignored(&ds, "empty/readme.md", "unsupported file type (.md)"));

    char line[128];
    dataset_found_line(&ds, line, sizeof line);
    cr_expect_str_eq(line, "Found 122 images belonging to 6 classes.");

    char *full = dataset_item_path(&ds, 8);  // apple/with space.jpg
    char want[1024];
    snprintf(want, sizeof want, "%s/apple/with space.jpg", data);
    cr_expect_str_eq(full, want);
    FILE *f = fopen(full, "rb");  // the path really names the file
    cr_expect_not_null(f);
    if (f) fclose(f);
    free(full);
    cr_expect_null(dataset_item_path(&ds, 122));

    // An empty class makes balanced weights undefined (scikit-learn raises).
    float w[6];
    cr_expect_eq(dataset_class_weights_balanced(&ds, w), -1);
    cr_expect(strstr(err_msg(), "empty"), "%s", err_msg());
    dataset_free(&ds);
    cr_expect_null(ds.items);
}

Test(dataset, trailing_slash_and_explicit_classes) {
    char d2[1024];
    snprintf(d2, sizeof d2, "%s//", data);
    Dataset ds;
    const char *cls[] = {"zebra", "apple"};
    cr_assert_eq(dataset_scan(d2, cls, 2, &ds), 0, "%s", err_msg());
    cr_expect_str_eq(ds.root, data);
    cr_assert_eq(ds.n_classes, 2);
    cr_expect_str_eq(ds.class_names[0], "zebra");
    cr_expect_str_eq(ds.class_names[1], "apple");
    cr_expect_eq(ds.class_counts[0], 100);
    cr_expect_eq(ds.class_counts[1], 12);
    cr_assert_eq(ds.n_items, 112);
    cr_expect_str_eq(ds.items[0].path, "zebra/z000.jpg");
    cr_expect_eq(ds.items[0].label, 0);
    cr_expect_str_eq(ds.items[100].path, "apple/.hidden.jpg");
    cr_expect_eq(ds.items[100].label, 1);
    // Only the listed classes are looked at: no top-level or Banana entries.
    cr_expect_eq(ds.n_ignored, 4);
    cr_expect_eq(ds.n_skipped, 0);
    cr_expect(!find_ignored(&ds, "labels.csv", ""));

    // w_c = N / (K * N_c) = 112 / (2 * 100), 112 / (2 * 12).
    float w[2];
    cr_assert_eq(dataset_class_weights_balanced(&ds, w), 0, "%s", err_msg());
    cr_expect_float_eq(w[0], 0.56f, 1e-7);
    cr_expect_float_eq(w[1], 4.6666665f, 1e-6);
    char line[128];
    dataset_found_line(&ds, line, sizeof line);
    cr_expect_str_eq(line, "Found 112 images belonging to 2 classes.");
    dataset_free(&ds);

    const char *missing[] = {"apple", "nope"};
    cr_expect_eq(dataset_scan(data, missing, 2, &ds), -1);
    cr_expect(strstr(err_msg(), "nope") && strstr(err_msg(), "not found"), "%s", err_msg());
    cr_expect_null(ds.items);
    const char *twice[] = {"apple", "apple"};
    cr_expect_eq(dataset_scan(data, twice, 2, &ds), -1);
    cr_expect(strstr(err_msg(), "twice"), "%s", err_msg());
    const char *file[] = {"labels.csv"};
    cr_expect_eq(dataset_scan(data, file, 1, &ds), -1);
    const char *up[] = {"../ext"};
    cr_expect_eq(dataset_scan(data, up, 1, &ds), -1);
}

static void expect_split(const Dataset *all, double f, const int *want_val) {
    Dataset tr, va;
    cr_assert_eq(dataset_split(all, f, &tr, &va), 0, "%s", err_msg());
    int n_val = 0, n_tr = 0;
    for (int c = 0; c < all->n_classes; c++) {
        cr_expect_eq(va.class_counts[c], want_val[c], "F=%g class %s: val %d, want %d", f,
                     all->class_names[c], va.class_counts[c], want_val[c]);
        cr_expect_eq(tr.class_counts[c], all->class_counts[c] - want_val[c]);
        n_val += want_val[c];
        n_tr += all->class_counts[c] - want_val[c];
    }
    cr_assert_eq(va.n_items, n_val);
    cr_assert_eq(tr.n_items, n_tr);
    cr_expect_eq(tr.n_skipped + va.n_skipped + tr.n_ignored + va.n_ignored, 0);
    cr_expect_eq(va.n_classes, all->n_classes);
    cr_expect_str_eq(va.class_names[1], all->class_names[1]);
    // Validation = the first int(F*n_c) of each class, training = the rest,
    // both in scan order: walking the full list class by class reproduces them.
    int iv = 0, it = 0, seen[16] = {0};
    for (int i = 0; i < all->n_items; i++) {
        int l = all->items[i].label;
        const DatasetItem *got = seen[l]++ < want_val[l] ? &va.items[iv++] : &tr.items[it++];
        cr_expect_str_eq(got->path, all->items[i].path);
        cr_expect_eq(got->label, l);
    }
    char line[128];
    dataset_found_line(&va, line, sizeof line);
    char want[128];
    snprintf(want, sizeof want, "Found %d images belonging to 6 classes.", n_val);
    cr_expect_str_eq(line, want);
    dataset_free(&tr);
    dataset_free(&va);
}

Test(dataset, validation_split) {
    Dataset ds;
    cr_assert_eq(dataset_scan(data, NULL, 0, &ds), 0, "%s", err_msg());
    // classes Banana 3, apple 12, café 5, empty 0, linked 2, zebra 100
    const int v25[] = {0, 3, 1, 0, 0, 25};  // int(.75)=0 int(3.0)=3 int(1.25)=1 int(.5)=0
    expect_split(&ds, 0.25, v25);
    // 0.29 * 100 = 28.999999999999996 in doubles: Keras's int() gives 28, not 29.
    const int v29[] = {0, 3, 1, 0, 0, 28};  // 0.87, 3.48, 1.45, 0.58
    expect_split(&ds, 0.29, v29);
    const int v70[] = {2, 8, 3, 0, 1, 70};  // 2.1, 8.4, 3.5, 1.4, 70.0
    expect_split(&ds, 0.7, v70);
    // apple's validation subset is its first 3 files in scan order.
    Dataset tr, va;
    cr_assert_eq(dataset_split(&ds, 0.25, &tr, &va), 0);
    cr_expect_str_eq(va.items[0].path, apple_order[0]);
    cr_expect_str_eq(va.items[2].path, apple_order[2]);
    cr_expect_str_eq(tr.items[3].path, apple_order[3]);
    dataset_free(&tr);
    dataset_free(&va);

    cr_expect_eq(dataset_split(&ds, 0.0, &tr, &va), -1);
    cr_expect(strstr(err_msg(), "validation_split"), "%s", err_msg());
    cr_expect_eq(dataset_split(&ds, 1.0, &tr, &va), -1);
    cr_expect_eq(dataset_split(&ds, NAN, &tr, &va), -1);
    dataset_free(&ds);
}

// Keras splits the file list before opening any file: a FIFO, an empty
// file or a corrupt "image" keeps its place in its class, so the split
// point (int(F * n_c), n_c counting them) and every other file's side are
// what Keras computes. Here each class lists 5 files of which 2 are junk.
Test(dataset, validation_split_is_of_the_listing) {
    char *top = make_temp_dir("split");
    char p[1024];
    const char *cls[] = {"a", "b"};
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/%s", top, cls[c]);
        cr_assert_eq(mkdir(p, 0755), 0);
        for (int i = 0; i < 5; i++) {
            snprintf(p, sizeof p, "%s/%s/%d.jpg", top, cls[c], i);
            if (c == 0 && i == 0) cr_assert_eq(mkfifo(p, 0600), 0);  // first file: a FIFO
            else if (i == 3) write_file(p, "", 0);                     // an empty file
            else write_file(p, "not decoded here", 16);
        }
        snprintf(p, sizeof p, "%s/%s/.DS_Store", top, cls[c]);
        write_file(p, "x", 1);
    }
    Dataset ds, tr, va;
    cr_assert_eq(dataset_scan(top, NULL, 0, &ds), 0, "%s", err_msg());
    cr_expect_eq(ds.n_items, 10, "the FIFO and the empty file are listed, as by Keras");
    cr_expect_eq(ds.n_ignored, 2);
    cr_assert_eq(dataset_split(&ds, 0.5, &tr, &va), 0, "%s", err_msg());
    // int(0.5 * 5) = 2 per class: files 0 and 1, the FIFO included.
    cr_assert_eq(va.n_items, 4);
    cr_expect_str_eq(va.items[0].path, "a/0.jpg");
    cr_expect_str_eq(va.items[1].path, "a/1.jpg");
    cr_expect_str_eq(va.items[2].path, "b/0.jpg");
    cr_expect_str_eq(tr.items[0].path, "a/2.jpg");
    cr_expect_eq(tr.n_items, 6);
    dataset_free(&tr), dataset_free(&va), dataset_free(&ds);
    // The rule for data read already (cache records): position in the
    // class's full listing against int(F * listed count).
    cr_expect_eq(dataset_split_val_count(0.5, 5), 2);
    cr_expect_eq(dataset_split_val_count(0.29, 100), 28);  // 28.999999999999996
    cr_expect_eq(dataset_split_val_count(0.2, 3), 0);
    cr_expect_eq(dataset_split_val_count(0.7, 10), 7);
    remove_tree(top);
    free(top);
}

Test(dataset, errors) {
    Dataset ds;
    char p[1024];
    snprintf(p, sizeof p, "%s/no_such_dir", tmp);
    cr_expect_eq(dataset_scan(p, NULL, 0, &ds), -1);
    cr_expect(strstr(err_msg(), p), "%s", err_msg());
    cr_expect_null(ds.items);

    snprintf(p, sizeof p, "%s/data/labels.csv", tmp);
    cr_expect_eq(dataset_scan(p, NULL, 0, &ds), -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "not a directory"), "%s", err_msg());

    // A folder of images but no class folders.
    snprintf(p, sizeof p, "%s/ext", tmp);
    cr_expect_eq(dataset_scan(p, NULL, 0, &ds), -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "no class subfolders"), "%s", err_msg());
}

// --data given the folder above train/ and val/: a warning naming the
// split to give instead; real classes (one named "train" among them) none.
Test(dataset, split_folders_taken_as_classes_are_named) {
    char *splits[] = {"train", "val"}, *mixed[] = {"cats", "train"}, *upper[] = {"Test", "Training"};
    Dataset ds = {.root = "data/hym", .n_classes = 2, .class_names = splits};
    char buf[512];
    cr_expect_eq(dataset_looks_like_splits(&ds, buf, sizeof buf), 1);
    cr_expect_str_eq(buf, "the class folders of data/hym are named train and val: the splits of a dataset, taken here "
                          "as its classes (did you mean --data data/hym/train?)");
    ds.class_names = upper;
    cr_expect_eq(dataset_looks_like_splits(&ds, buf, sizeof buf), 1);
    cr_expect(strstr(buf, "--data data/hym/Training?"), "%s", buf);
    ds.class_names = mixed;
    cr_expect_eq(dataset_looks_like_splits(&ds, buf, sizeof buf), 0);
}

// Keras sorts Python str values: os.listdir decodes a name with UTF-8 and
// 'surrogateescape' (a byte that is not UTF-8 becomes U+DC00 + byte) and
// sorted() compares code points. The order below is what Python 3 gave,
// both as sorted(os.listdir(d)) on folders with these names and as
// sorted(b.decode('utf-8', 'surrogateescape') for b in names); byte order
// differs (e.g. 'C0' 'pfel' before 'épinard', 'EE 80 80' before 'ED A0 80').
static const char *const python_order[] = {
    "Zebra",
    "abc",
    "abc\x80",                       // U+DC80 after the end of "abc"
    "apple",
    "a\xcc\x81",                     // a + U+0301 (macOS's decomposed á)
    "\xc3\xa1",                      // á U+00E1
    "\xc3\xa9pinard",                // épinard U+00E9
    "\xe4\xb8\xad",                  // 中 U+4E2D
    "\xe4\xb8\xad\xe6\x96\x87",      // 中文
    "\xed\x9f\xbf",                  // U+D7FF, the last before the surrogates
    "\x80lone",                      // lone continuation byte: U+DC80
    "\xc0pfel",                      // C0 never starts UTF-8: U+DCC0
    "\xc0\xaf",                      // overlong '/': U+DCC0 U+DCAF
    "\xe0\x80\x80",                  // overlong NUL: U+DCE0 U+DC80 U+DC80
    "\xe4\xb8x",                     // truncated 3-byte sequence: U+DCE4 U+DCB8 'x'
    "\xed\xa0\x80",                  // encoded surrogate U+D800: U+DCED U+DCA0 U+DC80
    "\xf4\x90\x80\x80",              // above U+10FFFF: escaped byte by byte
    "\xff" "end",                    // U+DCFF
    "\xee\x80\x80",                  // U+E000 (private use) sorts after the escapes
    "\xef\xbf\xbd",                  // U+FFFD
    "\xf0\x90\x80\x80",              // U+10000
    "\xf0\x9f\x90\xb1" "cat",        // U+1F431
    "\xf4\x8f\xbf\xbf",              // U+10FFFF
};
#define N_PYTHON_ORDER (int)(sizeof python_order / sizeof *python_order)

Test(dataset, names_sorted_as_python_sorts_them) {
    for (int i = 0; i < N_PYTHON_ORDER; i++)
        for (int j = 0; j < N_PYTHON_ORDER; j++) {
            int c = keras_name_cmp(python_order[i], python_order[j]);
            cr_expect_eq(c < 0 ? -1 : c > 0, i < j ? -1 : i > j, "keras_name_cmp(#%d, #%d) = %d", i, j, c);
        }

    // Class folders, created in reverse order, and the files of one class
    // (NAME.jpg: Python sorts those in the same order) with two subfolders
    // (os.walk's roots, sorted by whole path: "é" U+00E9 before C0 U+DCC0).
    char *top = make_temp_dir("names");
    char p[1024];
    snprintf(p, sizeof p, "%s/classes", top);
    cr_assert_eq(mkdir(p, 0755), 0);
    for (int i = N_PYTHON_ORDER - 1; i >= 0; i--) {
        snprintf(p, sizeof p, "%s/classes/%s", top, python_order[i]);
        cr_assert_eq(mkdir(p, 0755), 0, "mkdir #%d", i);
    }
    snprintf(p, sizeof p, "%s/files", top);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/files/c", top);
    cr_assert_eq(mkdir(p, 0755), 0);
    for (int i = N_PYTHON_ORDER - 1; i >= 0; i--) {
        snprintf(p, sizeof p, "%s/files/c/%s.jpg", top, python_order[i]);
        write_file(p, "x", 1);
    }
    const char *subs[] = {"\xc0sub", "\xc3\xa9sub"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/files/c/%s", top, subs[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/files/c/%s/x.jpg", top, subs[i]);
        write_file(p, "x", 1);
    }

    Dataset ds;
    snprintf(p, sizeof p, "%s/classes", top);
    cr_assert_eq(dataset_scan(p, NULL, 0, &ds), 0, "%s", err_msg());
    cr_assert_eq(ds.n_classes, N_PYTHON_ORDER);
    for (int c = 0; c < N_PYTHON_ORDER; c++)
        cr_expect_str_eq(ds.class_names[c], python_order[c], "class %d", c);
    dataset_free(&ds);

    snprintf(p, sizeof p, "%s/files", top);
    cr_assert_eq(dataset_scan(p, NULL, 0, &ds), 0, "%s", err_msg());
    cr_assert_eq(ds.n_items, N_PYTHON_ORDER + 2);
    for (int i = 0; i < N_PYTHON_ORDER; i++) {
        snprintf(p, sizeof p, "c/%s.jpg", python_order[i]);
        cr_expect_str_eq(ds.items[i].path, p, "file %d", i);
    }
    cr_expect_str_eq(ds.items[N_PYTHON_ORDER].path, "c/\xc3\xa9sub/x.jpg");
    cr_expect_str_eq(ds.items[N_PYTHON_ORDER + 1].path, "c/\xc0sub/x.jpg");
    // --validation-split (and --shard) take files by their place in this order.
    Dataset tr, va;
    cr_assert_eq(dataset_split(&ds, 0.25, &tr, &va), 0, "%s", err_msg());
    cr_assert_eq(va.n_items, 6);  // int(0.25 * 25)
    cr_expect_str_eq(va.items[5].path, "c/\xc3\xa1.jpg");
    cr_expect_str_eq(tr.items[0].path, "c/\xc3\xa9pinard.jpg");
    dataset_free(&tr), dataset_free(&va), dataset_free(&ds);
    remove_tree(top);
    free(top);
}
