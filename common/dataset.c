// flow_from_directory's scan: class folders, recursive listing in Keras's
// os.walk order, extension filter, validation split, class weights.
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "error.h"
#include "progress.h"
#include "hash.h"
#include "utf8.h"

// --- small growable lists -------------------------------------------------------

typedef struct {
    char **v;
    int n, cap;
} StrList;

static int strlist_push(StrList *l, char *s) {  // takes ownership of s
    if (!s) return err_set("out of memory");
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, sizeof(char *) * cap);
        if (!v) {
            free(s);
            return err_set("out of memory");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return 0;
}

static void strlist_free(StrList *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

int keras_name_cmp(const char *a, const char *b) {
    while (*a && *b) {
        int la, lb;
        unsigned x = utf8_decode_escape(a, &la), y = utf8_decode_escape(b, &lb);
        if (x != y) return x < y ? -1 : 1;
        a += la, b += lb;
    }
    return !!*a - !!*b;  // a prefix first
}

static int cmp_str(const void *a, const void *b) {
    return keras_name_cmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    size_t k = la;
    if (la && a[la - 1] != '/') s[k++] = '/';
    memcpy(s + k, b, lb + 1);
    return s;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

// --- the scan state ----------------------------------------------------------

typedef struct {
    char *rel;      // directory relative to root ("cls/sub")
    StrList files;  // file names in it
} DirFiles;

typedef struct {
    const char *root;
    DirFiles *dirs;
    int n_dirs, cap_dirs;
    StrList items, skipped, reasons, ignored, ignored_reasons;
    int *labels;
    int cap_labels;
} Scan;

static int skip(Scan *s, char *rel, const char *reason) {
    if (strlist_push(&s->skipped, rel) != 0) return -1;
    return strlist_push(&s->reasons, dup_or_null(reason));
}

// Something Keras does not list: reported, but not a skipped image.
static int ignore(Scan *s, char *rel, const char *reason) {
    if (strlist_push(&s->ignored, rel) != 0) return -1;
    return strlist_push(&s->ignored_reasons, dup_or_null(reason));
}

// Keras keeps a file when fname.lower().endswith(white_list_formats).
static int is_image_name(const char *name) {
    static const char *const exts[] = {"png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff"};
    size_t n = strlen(name);
    for (int e = 0; e < 7; e++) {
        size_t k = strlen(exts[e]);
        if (n < k) continue;
        size_t i = 0;
        while (i < k) {
            char c = name[n - k + i];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != exts[e][i]) break;
            i++;
        }
        if (i == k) return 1;
    }
    return 0;
}

// Is root/rel a directory, and is it a symlink? d_type saves a stat per
// file on filesystems that fill it in.
static void classify(const char *path, unsigned char d_type, int *is_dir, int *is_link) {
    struct stat st;
    *is_dir = *is_link = 0;
    if (d_type == DT_DIR) {
        *is_dir = 1;
        return;
    }
    if (d_type == DT_REG) return;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) *is_link = 1;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) *is_dir = 1;  // follows links
}

// Lists root/rel and, recursively, its subdirectories that are not symlinks
// (os.walk with followlinks=False). Unreadable folders (no permission) are
// recorded as skipped, as os.walk silently ignores them; a folder the
// system failed to list (I/O, a stale NFS handle, out of descriptors:
// err_errno_is_system), or whose listing broke off part-way, is an error:
// taken for empty, its images' records would be dropped by extract's rerun.
static int walk(Scan *s, const char *rel) {
    char *abs = join(s->root, rel);
    if (!abs) return err_set("out of memory");
    DIR *d = opendir(abs);
    if (!d) {
        int e = errno;
        char reason[300];
        snprintf(reason, sizeof reason, "cannot read folder: %s", strerror(e));
        if (err_errno_is_system(e)) {
            int rc = err_set("%s: %s (the system's failure, not the folder's: rerun once it is well)", abs, reason);
            free(abs);
            return rc;
        }
        // A class folder itself (its name has no '/'): never an empty class
        // (an expired Kerberos ticket on NFS says EACCES); its subfolders
        // are skipped, as os.walk skips them.
        if (!strchr(rel, '/')) {
            int rc = err_set("%s: the class folder cannot be read: %s", abs, strerror(e));
            free(abs);
            return rc;
        }
        free(abs);
        return skip(s, dup_or_null(rel), reason);
    }
    if (s->n_dirs == s->cap_dirs) {
        int cap = s->cap_dirs ? 2 * s->cap_dirs : 16;
        DirFiles *v = realloc(s->dirs, sizeof(DirFiles) * cap);
        if (!v) {
            closedir(d);
            free(abs);
            return err_set("out of memory");
        }
        s->dirs = v;
        s->cap_dirs = cap;
    }
    int me = s->n_dirs++;
    s->dirs[me] = (DirFiles){dup_or_null(rel), {0}};
    StrList subdirs = {0};
    int rc = s->dirs[me].rel ? 0 : err_set("out of memory");
    struct dirent *e;
    while (rc == 0 && (errno = 0, e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *child = join(abs, e->d_name);
        if (!child) {
            rc = err_set("out of memory");
            break;
        }
        int is_dir, is_link;
        classify(child, e->d_type, &is_dir, &is_link);
        free(child);
        if (is_dir && is_link)
            rc = ignore(s, join(rel, e->d_name), "symbolic link to a folder (not followed, as in Keras)");
        else if (is_dir)
            rc = strlist_push(&subdirs, join(rel, e->d_name));
        else
            rc = strlist_push(&s->dirs[me].files, dup_or_null(e->d_name));
    }
    if (rc == 0 && !e && errno) rc = err_set("%s: listing the folder failed part-way: %s", abs, strerror(errno));
    closedir(d);
    free(abs);
    for (int i = 0; rc == 0 && i < subdirs.n; i++) rc = walk(s, subdirs.v[i]);
    strlist_free(&subdirs);
    return rc;
}

static int cmp_dir(const void *a, const void *b) {
    return keras_name_cmp(((const DirFiles *)a)->rel, ((const DirFiles *)b)->rel);
}

static void free_dirs(Scan *s) {
    for (int i = 0; i < s->n_dirs; i++) {
        free(s->dirs[i].rel);
        strlist_free(&s->dirs[i].files);
    }
    s->n_dirs = 0;
}

#define NOT_LISTED "not among the types Keras reads (ignored, as Keras does)"

// Walks one class folder and appends its images in Keras's order.
static int scan_class(Scan *s, const char *cls, int label) {
    s->n_dirs = 0;
    int rc = walk(s, cls);
    // Keras: sorted(os.walk(...), key=root path), then sorted(files).
    if (s->n_dirs > 1) qsort(s->dirs, s->n_dirs, sizeof(DirFiles), cmp_dir);
    for (int i = 0; rc == 0 && i < s->n_dirs; i++) {
        DirFiles *df = &s->dirs[i];
        if (df->files.n > 1) qsort(df->files.v, df->files.n, sizeof(char *), cmp_str);
        for (int f = 0; rc == 0 && f < df->files.n; f++) {
            const char *name = df->files.v[f];
            char *rel = join(df->rel, name);
            if (!is_image_name(name)) {
                char reason[300];
                const char *dot = strrchr(name, '.');
                if (dot && dot[1])
                    snprintf(reason, sizeof reason, "unsupported file type (%.200s): " NOT_LISTED, dot);
                else
                    snprintf(reason, sizeof reason, "unsupported file type (no extension): " NOT_LISTED);
                rc = ignore(s, rel, reason);
                continue;
            }
            if (s->items.n == s->cap_labels) {
                int cap = s->cap_labels ? 2 * s->cap_labels : 64;
                int *v = realloc(s->labels, sizeof(int) * cap);
                if (!v) {
                    free(rel);
                    rc = err_set("out of memory");
                    break;
                }
                s->labels = v;
                s->cap_labels = cap;
            }
            s->labels[s->items.n] = label;
            rc = strlist_push(&s->items, rel);
        }
    }
    free_dirs(s);
    return rc;
}

// The class names: DIR's subdirectories (following symlinks, like
// os.path.isdir), sorted; files directly in DIR are recorded as skipped.
static int discover_classes(Scan *s, StrList *classes) {
    DIR *d = opendir(s->root);
    if (!d) return err_set("%s: cannot read directory: %s", s->root, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (errno = 0, e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *child = join(s->root, e->d_name);
        if (!child) {
            rc = err_set("out of memory");
            break;
        }
        int is_dir, is_link;
        classify(child, e->d_type, &is_dir, &is_link);
        free(child);
        if (is_dir) rc = strlist_push(classes, dup_or_null(e->d_name));
        else rc = ignore(s, dup_or_null(e->d_name), "not in a class folder (ignored, as Keras does)");
    }
    if (rc == 0 && !e && errno) rc = err_set("%s: listing the folder failed part-way: %s", s->root, strerror(errno));
    closedir(d);
    if (rc == 0 && classes->n > 1) qsort(classes->v, classes->n, sizeof(char *), cmp_str);
    return rc;
}

static int check_classes(const char *root, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0] || strchr(names[i], '/') || !strcmp(names[i], ".") ||
            !strcmp(names[i], ".."))
            return err_set("%s: invalid class name '%s'", root, names[i] ? names[i] : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j]))
                return err_set("%s: class '%s' is listed twice", root, names[i]);
        char *p = join(root, names[i]);
        if (!p) return err_set("out of memory");
        struct stat st;
        int ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
        free(p);
        if (!ok) return err_set("%s: class folder '%s' not found", root, names[i]);
    }
    return 0;
}

int dataset_scan(const char *dir, const char *const *classes, int n_classes, Dataset *ds) {
    memset(ds, 0, sizeof *ds);
    struct stat st;
    if (stat(dir, &st) != 0)
        return err_set("%s: cannot open dataset directory: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return err_set("%s: not a directory", dir);

    char *root = strdup(dir);
    if (!root) return err_set("out of memory");
    for (size_t k = strlen(root); k > 1 && root[k - 1] == '/'; k--) root[k - 1] = '\0';
    Scan s = {.root = root};
    StrList names = {0};
    int rc = 0;
    if (classes && n_classes > 0) {
        rc = check_classes(root, classes, n_classes);
        for (int i = 0; rc == 0 && i < n_classes; i++) rc = strlist_push(&names, dup_or_null(classes[i]));
    } else {
        rc = discover_classes(&s, &names);
        if (rc == 0 && names.n == 0)
            rc = err_set("%s: no class subfolders (expected %s/CLASS_NAME/IMAGE files)", dir, root);
    }
    int *counts = rc == 0 ? calloc(names.n, sizeof(int)) : NULL;
    if (rc == 0 && !counts) rc = err_set("out of memory");
    for (int c = 0; rc == 0 && c < names.n; c++) {
        int before = s.items.n;
        rc = scan_class(&s, names.v[c], c);
        counts[c] = s.items.n - before;
    }
    DatasetItem *items = NULL;
    if (rc == 0 && s.items.n) {
        items = malloc(sizeof(DatasetItem) * s.items.n);
        if (!items) rc = err_set("out of memory");
    }
    free(s.dirs);
    if (rc != 0) {
        free(root);
        free(counts);
        free(items);
        strlist_free(&names);
        strlist_free(&s.items);
        strlist_free(&s.skipped);
        strlist_free(&s.reasons);
        strlist_free(&s.ignored);
        strlist_free(&s.ignored_reasons);
        free(s.labels);
        return -1;
    }
    for (int i = 0; i < s.items.n; i++) items[i] = (DatasetItem){s.items.v[i], s.labels[i]};
    free(s.items.v);
    free(s.labels);
    ds->root = root;
    ds->n_classes = names.n;
    ds->class_names = names.v;
    ds->class_counts = counts;
    ds->n_items = s.items.n;
    ds->items = items;
    ds->n_skipped = s.skipped.n;
    ds->skipped_paths = s.skipped.v;
    ds->skipped_reasons = s.reasons.v;
    ds->n_ignored = s.ignored.n;
    ds->ignored_paths = s.ignored.v;
    ds->ignored_reasons = s.ignored_reasons.v;
    return 0;
}

void dataset_free(Dataset *ds) {
    if (!ds) return;
    free(ds->root);
    for (int c = 0; c < ds->n_classes; c++) free(ds->class_names[c]);
    free(ds->class_names);
    free(ds->class_counts);
    for (int i = 0; i < ds->n_items; i++) free(ds->items[i].path);
    free(ds->items);
    for (int i = 0; i < ds->n_skipped; i++) {
        free(ds->skipped_paths[i]);
        free(ds->skipped_reasons[i]);
    }
    free(ds->skipped_paths);
    free(ds->skipped_reasons);
    for (int i = 0; i < ds->n_ignored; i++) {
        free(ds->ignored_paths[i]);
        free(ds->ignored_reasons[i]);
    }
    free(ds->ignored_paths);
    free(ds->ignored_reasons);
    memset(ds, 0, sizeof *ds);
}

// An empty dataset with all's root and classes, room for n items.
static int dataset_like(const Dataset *all, int n, Dataset *out) {
    memset(out, 0, sizeof *out);
    out->root = dup_or_null(all->root);
    out->class_names = calloc(all->n_classes ? all->n_classes : 1, sizeof(char *));
    out->class_counts = calloc(all->n_classes ? all->n_classes : 1, sizeof(int));
    out->items = malloc(sizeof(DatasetItem) * (n ? n : 1));
    if (!out->root || !out->class_names || !out->class_counts || !out->items) goto oom;
    for (int c = 0; c < all->n_classes; c++) {
        out->class_names[c] = dup_or_null(all->class_names[c]);
        if (!out->class_names[c]) goto oom;
        out->n_classes = c + 1;
    }
    return 0;
oom:
    dataset_free(out);
    return err_set("out of memory");
}

static int add_item(Dataset *d, const DatasetItem *it) {
    char *p = dup_or_null(it->path);
    if (!p) return err_set("out of memory");
    d->items[d->n_items++] = (DatasetItem){p, it->label};
    d->class_counts[it->label]++;
    return 0;
}

int dataset_split(const Dataset *all, double f, Dataset *train, Dataset *val) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(f > 0.0 && f < 1.0))
        return err_set("validation_split must be strictly between 0 and 1 (got %g)", f);
    int *seen = calloc(all->n_classes ? all->n_classes : 1, sizeof(int));
    int *total = calloc(all->n_classes ? all->n_classes : 1, sizeof(int));
    if (!seen || !total) {
        free(seen), free(total);
        return err_set("out of memory");
    }
    int rc = 0;
    for (int i = 0; i < all->n_items; i++) {
        int l = all->items[i].label;
        if (l < 0 || l >= all->n_classes) {
            rc = err_set("%s: item %d has label %d outside 0..%d", all->root, i, l, all->n_classes - 1);
            break;
        }
        total[l]++;
    }
    if (rc == 0) rc = dataset_like(all, all->n_items, train);
    if (rc == 0 && dataset_like(all, all->n_items, val) != 0) {
        dataset_free(train);
        rc = -1;
    }
    // Keras: split (0, F) / (F, 1) of each class's files, start/stop = int(x * n).
    for (int i = 0; rc == 0 && i < all->n_items; i++) {
        int l = all->items[i].label;
        rc = add_item(seen[l]++ < dataset_split_val_count(f, total[l]) ? val : train, &all->items[i]);
    }
    free(seen), free(total);
    if (rc != 0) {
        dataset_free(train);
        dataset_free(val);
    }
    return rc;
}

long dataset_split_val_count(double f, long n) {
    // DirectoryIterator: start, stop = int(split[0] * n), int(split[1] * n)
    // with split = (0, F) for "validation", (F, 1) for "training".
    return (long)(f * (double)n);
}

int dataset_found_line(const Dataset *ds, char *buf, size_t size) {
    return snprintf(buf, size, "Found %d images belonging to %d classes.", ds->n_items,
                    ds->n_classes);
}

int class_weights_balanced(const long *counts, int K, char *const *names, float *w) {
    long n = 0;
    for (int c = 0; c < K; c++) {
        if (counts[c] == 0)
            return err_set("class '%s' has no images: balanced class weights are undefined", names[c]);
        n += counts[c];
    }
    for (int c = 0; c < K; c++) w[c] = (float)((double)n / ((double)K * counts[c]));
    return 0;
}

int dataset_class_weights_balanced(const Dataset *ds, float *w) {
    long *counts = malloc(sizeof(long) * (size_t)ds->n_classes);
    if (!counts) return err_set("out of memory");
    for (int c = 0; c < ds->n_classes; c++) counts[c] = ds->class_counts[c];
    int rc = class_weights_balanced(counts, ds->n_classes, ds->class_names, w);
    free(counts);
    return rc;
}

char *dataset_item_path(const Dataset *ds, int i) {
    if (i < 0 || i >= ds->n_items) return NULL;
    return join(ds->root, ds->items[i].path);
}

int dataset_content_id(const Dataset *ds, char *out, size_t size) {
    HashCtx *h = hash_begin(HASH_SHA256);
    if (!h) return -1;
    for (int i = 0; i < ds->n_items; i++) {
        char full[2 * PATH_MAX], line[PATH_MAX + 64];
        snprintf(full, sizeof full, "%s/%s", ds->root, ds->items[i].path);
        struct stat st;
        long long bytes = stat(full, &st) == 0 ? (long long)st.st_size : -1;  // gone: read as such later
        // The system failing to say (I/O, a stale NFS handle, out of
        // descriptors): not a digest of another folder; a resume after the
        // failure would be refused as "images changed".
        if (bytes < 0 && err_errno_is_system(errno)) {
            hash_abort(h);
            return err_set("%s: %s (the system's failure: rerun once it is well)", full, strerror(errno));
        }
        int n = snprintf(line, sizeof line, "%s\t%d\t%lld\n", ds->items[i].path, ds->items[i].label, bytes);
        if (n >= (int)sizeof line) n = (int)sizeof line - 1;
        // And the file's first and last 4 KiB (headers, the first and last
        // pixels): an image replaced by another of the same size.
        unsigned char ends[8192];
        size_t got = 0;
        int fd = bytes > 0 ? open(full, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
        if (fd < 0 && bytes > 0 && err_errno_is_system(errno)) {
            hash_abort(h);
            return err_set("%s: cannot open: %s (the system's failure: rerun once it is well)", full, strerror(errno));
        }
        if (fd >= 0) {
            ssize_t a = pread(fd, ends, 4096, 0);
            ssize_t b = bytes > 4096 ? pread(fd, ends + 4096, 4096, bytes > 8192 ? bytes - 4096 : 4096) : 0;
            if ((a < 0 || b < 0) && err_errno_is_system(errno)) {
                int e = errno;
                close(fd);
                hash_abort(h);
                return err_set("%s: read error: %s (the system's failure: rerun once it is well)", full, strerror(e));
            }
            got = (size_t)(a > 0 ? a : 0);
            if (b > 0) memmove(ends + got, ends + 4096, (size_t)b), got += (size_t)b;
            close(fd);
        }
        if (hash_update(h, line, (size_t)n) < 0 || (got && hash_update(h, ends, got) < 0)) {
            hash_abort(h);
            return -1;
        }
    }
    char hex[65];
    if (hash_end(h, hex) < 0) return -1;
    snprintf(out, size, "images:%s", hex);
    return 0;
}

void dataset_warn_skipped(const Dataset *ds) {
    for (int i = 0; i < ds->n_skipped; i++)
        log_printf(stderr, "warning: skipped %s/%s: %s\n", ds->root, ds->skipped_paths[i], ds->skipped_reasons[i]);
}

int dataset_looks_like_splits(const Dataset *ds, char *buf, size_t size) {
    static const char *const splits[] = {"train", "training", "val", "valid", "validation", "test", "testing"};
    int first_train = -1;
    for (int k = 0; k < ds->n_classes; k++) {
        int hit = 0;
        for (size_t i = 0; i < sizeof splits / sizeof *splits && !hit; i++)
            hit = !strcasecmp(ds->class_names[k], splits[i]);
        if (!hit) return 0;
        if (first_train < 0 && !strncasecmp(ds->class_names[k], "train", 5)) first_train = k;
    }
    if (ds->n_classes == 0) return 0;
    int o = snprintf(buf, size, "the class folders of %s are named", ds->root);
    for (int k = 0; k < ds->n_classes && o > 0 && (size_t)o < size; k++)
        o += snprintf(buf + o, size - (size_t)o, "%s %s", k == 0 ? "" : k + 1 == ds->n_classes ? " and" : ",",
                      ds->class_names[k]);
    if (o > 0 && (size_t)o < size)
        snprintf(buf + o, size - (size_t)o,
                 ": the splits of a dataset, taken here as its classes (did you mean --data %s/%s?)", ds->root,
                 ds->class_names[first_train >= 0 ? first_train : 0]);
    return 1;
}
