#include "weights_h5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"

// HDF5's object header messages (where attributes live) are limited to
// 64 KiB; Keras splits string lists above this many bytes, and so do we.
#define ATTR_LIMIT 64000
// Largest string we store in one attribute; a longer value is split into
// key0, key1, ... (see the header).
#define ATTR_VALUE_MAX H5_ATTR_CHUNK_MAX

// HDF5 prints its whole error stack to stderr by default; we report our own
// messages instead. The setting is global in the serial library, so setting
// it on every entry is cheap and keeps callers from having to remember it.
static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void close_attr(hid_t *id) { if (*id >= 0) H5Aclose(*id); *id = -1; }
static void close_type(hid_t *id) { if (*id >= 0) H5Tclose(*id); *id = -1; }
static void close_space(hid_t *id) { if (*id >= 0) H5Sclose(*id); *id = -1; }
static void close_group(hid_t *id) { if (*id >= 0) H5Gclose(*id); *id = -1; }
static void close_dset(hid_t *id) { if (*id >= 0) H5Dclose(*id); *id = -1; }

// "(3,3,3,64)", "(64,)" like numpy prints shapes.
static void fmt_shape(char *buf, size_t cap, int ndim, const unsigned long long *dims) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", i ? "," : "", dims[i]);
    if (k < cap) snprintf(buf + k, cap - k, ndim == 1 ? ",)" : ")");
}

// --- string lists (attributes) ---------------------------------------------

typedef struct {
    char **s;
    int n;
} StrList;

static void strlist_free(StrList *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->s = NULL;
    l->n = 0;
}

static int strlist_push(StrList *l, const char *s, size_t len) {
    char **ns = realloc(l->s, (size_t)(l->n + 1) * sizeof *ns);
    if (!ns) return err_set("out of memory");
    l->s = ns;
    char *c = malloc(len + 1);
    if (!c) return err_set("out of memory");
    memcpy(c, s, len);
    c[len] = '\0';
    l->s[l->n++] = c;
    return 0;
}

// Appends the strings of attribute `name` of obj to out. Keras files hold
// fixed-length byte strings (numpy 'S', Keras 1/2) or variable-length ones
// (h5py str, Keras 3), scalar or 1-D. An attribute with no elements, of any
// type, is an empty list: Keras writes np.asarray([]) (float64) for the
// weight_names of weightless layers.
static int attr_append_strings(hid_t obj, const char *name, StrList *out) {
    hid_t attr = -1, space = -1, type = -1, mem = -1;
    int rc = 0;
    char *fixed = NULL;
    char **vl = NULL;
    attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) return err_set("cannot open attribute %s", name);
    space = H5Aget_space(attr);
    type = H5Aget_type(attr);
    if (space < 0 || type < 0) {
        rc = err_set("cannot read attribute %s", name);
        goto done;
    }
    hssize_t n = H5Sget_simple_extent_type(space) == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(space);
    if (n < 0) {
        rc = err_set("cannot read the size of attribute %s", name);
        goto done;
    }
    if (n == 0) goto done;
    if (H5Tget_class(type) != H5T_STRING) {
        rc = err_set("attribute %s is not a list of strings", name);
        goto done;
    }
    if (H5Tis_variable_str(type) > 0) {
        mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5Tget_cset(type));
        vl = calloc((size_t)n, sizeof *vl);
        if (!vl) {
            rc = err_set("out of memory");
            goto done;
        }
        if (H5Aread(attr, mem, vl) < 0) {
            free(vl);
            vl = NULL;
            rc = err_set("cannot read attribute %s", name);
            goto done;
        }
        for (hssize_t i = 0; i < n && rc == 0; i++)
            rc = strlist_push(out, vl[i] ? vl[i] : "", vl[i] ? strlen(vl[i]) : 0);
        H5Dvlen_reclaim(mem, space, H5P_DEFAULT, vl);
        free(vl);
    } else {
        size_t size = H5Tget_size(type);
        mem = H5Tcopy(type);
        fixed = malloc((size_t)n * size + 1);
        if (!fixed || size == 0) {
            rc = err_set("cannot read attribute %s", name);
            goto done;
        }
        if (H5Aread(attr, mem, fixed) < 0) {
            rc = err_set("cannot read attribute %s", name);
            goto done;
        }
        int spacepad = H5Tget_strpad(type) == H5T_STR_SPACEPAD;
        for (hssize_t i = 0; i < n && rc == 0; i++) {
            const char *s = fixed + (size_t)i * size;
            size_t len = strnlen(s, size);
            while (spacepad && len > 0 && s[len - 1] == ' ') len--;
            rc = strlist_push(out, s, len);
        }
    }
done:
    free(fixed);
    close_type(&mem);
    close_type(&type);
    close_space(&space);
    close_attr(&attr);
    return rc;
}

// Reads string-list attribute `name`, or its split form name0, name1, ...
// Returns 1 if found, 0 if absent (out untouched), -1 on error.
static int read_str_list(hid_t obj, const char *name, StrList *out) {
    htri_t e = H5Aexists(obj, name);
    if (e < 0) return err_set("cannot query attribute %s", name);
    if (e > 0) return attr_append_strings(obj, name, out) < 0 ? -1 : 1;
    int found = 0;
    for (int k = 0;; k++) {
        char chunk[300];
        snprintf(chunk, sizeof chunk, "%s%d", name, k);
        e = H5Aexists(obj, chunk);
        if (e < 0) return err_set("cannot query attribute %s", chunk);
        if (e == 0) break;
        if (attr_append_strings(obj, chunk, out) < 0) return -1;
        found = 1;
    }
    return found;
}

// --- index of a file's layers ----------------------------------------------

typedef struct {
    char *name;
    char *group;    // the nested model's group name holding it, NULL at the top level
    int n;          // weight tensors
    char **paths;   // absolute dataset paths, in order [kernel, bias, ...]
} Entry;

typedef struct {
    Entry *e;
    int n;
} Index;

static void index_free(Index *ix) {
    for (int i = 0; i < ix->n; i++) {
        for (int t = 0; t < ix->e[i].n; t++) free(ix->e[i].paths[t]);
        free(ix->e[i].paths);
        free(ix->e[i].name);
        free(ix->e[i].group);
    }
    free(ix->e);
    ix->e = NULL;
    ix->n = 0;
}

static char *join3(const char *a, const char *b, const char *c) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

// Adds an entry; takes ownership of nothing (copies name, group and paths).
static int index_add(Index *ix, const char *name, const char *group, const char *prefix, const StrList *wn) {
    Entry *ne = realloc(ix->e, (size_t)(ix->n + 1) * sizeof *ne);
    if (!ne) return err_set("out of memory");
    ix->e = ne;
    Entry *e = &ix->e[ix->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->group = group ? strdup(group) : NULL;
    e->paths = calloc((size_t)wn->n + 1, sizeof *e->paths);
    if (!e->name || !e->paths || (group && !e->group)) {
        free(e->name);
        free(e->group);
        free(e->paths);
        return err_set("out of memory");
    }
    ix->n++;
    for (int t = 0; t < wn->n; t++) {
        e->paths[t] = join3(prefix, "/", wn->s[t]);
        if (!e->paths[t]) return err_set("out of memory");
        e->n++;
    }
    return 0;
}

static int link_is_group(hid_t loc, const char *name) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return 0;
    H5O_info_t info;
    if (H5Oget_info_by_name(loc, name, &info, H5P_DEFAULT) < 0) return 0;
    return info.type == H5O_TYPE_GROUP;
}

static int has_list_attr(hid_t obj, const char *name) {
    char chunk[300];
    snprintf(chunk, sizeof chunk, "%s0", name);
    return H5Aexists(obj, name) > 0 || H5Aexists(obj, chunk) > 0;
}

// The layer that owns weight `w`: the path component before the weight's own
// name ("block1_conv1" in "block1_conv1/kernel:0" and in Keras 3's
// "vgg16/block1_conv1/kernel"); none (0) for Keras 1's flat
// "block1_conv1_W_1:0". Returns 1 with the component at *start, *len bytes.
static int weight_owner(const char *w, const char **start, size_t *len) {
    const char *last = strrchr(w, '/');
    if (!last || last == w) return 0;
    const char *b = last;
    while (b > w && b[-1] != '/') b--;
    *start = b;
    *len = (size_t)(last - b);
    return *len > 0;
}

static int same_name(const char *s, const char *o, size_t len) { return strlen(s) == len && !strncmp(s, o, len); }

// Indexes the layer group `name` at gpath with weight names wn. A group whose
// weights belong to two or more inner layers, none of them named like the
// group, is a nested model (Keras 2 writes the seeds' VGG16 base inside the
// Sequential this way): one entry per inner layer, in first-seen order. Any
// other group is one layer, whatever its weights' paths say.
static int index_group(Index *ix, const char *name, const char *gpath, const StrList *wn) {
    StrList owners = {0};
    int rc = 0, nested = 1;
    for (int t = 0; t < wn->n && rc == 0 && nested; t++) {
        const char *o;
        size_t len;
        if (!weight_owner(wn->s[t], &o, &len) || same_name(name, o, len)) {
            nested = 0;
            break;
        }
        int seen = 0;
        for (int k = 0; k < owners.n && !seen; k++) seen = same_name(owners.s[k], o, len);
        if (!seen) rc = strlist_push(&owners, o, len);
    }
    if (rc == 0 && (!nested || owners.n < 2)) {
        strlist_free(&owners);
        return index_add(ix, name, NULL, gpath, wn);
    }
    for (int k = 0; k < owners.n && rc == 0; k++) {
        StrList mine = {0};
        for (int t = 0; t < wn->n && rc == 0; t++) {
            const char *o;
            size_t len;
            if (weight_owner(wn->s[t], &o, &len) && same_name(owners.s[k], o, len))
                rc = strlist_push(&mine, wn->s[t], strlen(wn->s[t]));
        }
        if (rc == 0) rc = index_add(ix, owners.s[k], name, gpath, &mine);
        strlist_free(&mine);
    }
    strlist_free(&owners);
    return rc;
}

// Keras 1/2 (and Keras 3 legacy) layout under group `root` ("" or
// "/model_weights").
static int index_legacy(hid_t file, const char *root, Index *ix) {
    hid_t rg = H5Gopen2(file, *root ? root : "/", H5P_DEFAULT);
    if (rg < 0) return err_set("cannot open group %s", *root ? root : "/");
    StrList names = {0};
    int rc = read_str_list(rg, "layer_names", &names);
    close_group(&rg);
    if (rc < 0) return -1;
    rc = 0;
    for (int i = 0; i < names.n && rc == 0; i++) {
        const char *name = names.s[i];
        if (!*name || strchr(name, '/')) {
            rc = err_set("layer_names lists an invalid layer name \"%s\"", name);
            break;
        }
        char *gpath = join3(root, "/", name);
        if (!gpath) {
            rc = err_set("out of memory");
            break;
        }
        if (!link_is_group(file, gpath)) {
            rc = err_set("layer_names lists %s but the file has no group of that name", name);
            free(gpath);
            break;
        }
        hid_t g = H5Gopen2(file, gpath, H5P_DEFAULT);
        StrList wn = {0};
        if (g < 0)
            rc = err_set("cannot open group %s", gpath);
        else if (read_str_list(g, "weight_names", &wn) < 0)
            rc = err_prefix("layer %s: ", name);
        else
            rc = index_group(ix, name, gpath, &wn);
        close_group(&g);
        strlist_free(&wn);
        free(gpath);
    }
    strlist_free(&names);
    return rc;
}

// Keras 3 ".weights.h5": layers/<auto name>/vars holds datasets "0", "1", ...
// and the layer's real name in its "name" attribute; nested models nest
// another layers/ group, so walk the whole tree.
typedef struct {
    Index *ix;
    int rc;
} Keras3Walk;

static herr_t keras3_visit(hid_t g, const char *rel, const H5L_info_t *info, void *op) {
    (void)info;
    Keras3Walk *w = op;
    const char *last = strrchr(rel, '/');
    last = last ? last + 1 : rel;
    if (strcmp(last, "vars") != 0 || !link_is_group(g, rel)) return 0;
    hid_t vg = H5Gopen2(g, rel, H5P_DEFAULT);
    if (vg < 0) return 0;
    StrList nm = {0}, wn = {0};
    int rc = 0;
    if (H5Aexists(vg, "name") > 0 && attr_append_strings(vg, "name", &nm) == 0 && nm.n == 1) {
        for (int k = 0;; k++) {
            char key[32];
            snprintf(key, sizeof key, "%d", k);
            if (H5Lexists(vg, key, H5P_DEFAULT) <= 0) break;
            if ((rc = strlist_push(&wn, key, strlen(key))) < 0) break;
        }
        if (rc == 0) {
            char *prefix = join3("/layers/", rel, "");
            rc = prefix ? index_add(w->ix, nm.s[0], NULL, prefix, &wn) : err_set("out of memory");
            free(prefix);
        }
    }
    strlist_free(&nm);
    strlist_free(&wn);
    close_group(&vg);
    if (rc < 0) {
        w->rc = -1;
        return -1;  // stops the walk
    }
    return 0;
}

static int index_keras3(hid_t file, Index *ix) {
    hid_t lg = H5Gopen2(file, "/layers", H5P_DEFAULT);
    if (lg < 0) return err_set("cannot open group /layers");
    Keras3Walk w = {ix, 0};
    herr_t r = H5Lvisit(lg, H5_INDEX_NAME, H5_ITER_INC, keras3_visit, &w);
    close_group(&lg);
    if (w.rc < 0) return -1;
    if (r < 0) return err_set("cannot walk group /layers");
    return 0;
}

static int build_index(hid_t file, Index *ix) {
    if (has_list_attr(file, "layer_names")) return index_legacy(file, "", ix);
    // model.save("x.h5") puts the weights file one group down.
    if (link_is_group(file, "/model_weights")) {
        hid_t g = H5Gopen2(file, "/model_weights", H5P_DEFAULT);
        int ok = g >= 0 && has_list_attr(g, "layer_names");
        close_group(&g);
        if (ok) return index_legacy(file, "/model_weights", ix);
    }
    if (link_is_group(file, "/layers")) return index_keras3(file, ix);
    return err_set("not a Keras weights file (no layer_names attribute, "
                   "no model_weights or layers group)");
}

static int index_count_weighted(const Index *ix) {
    int k = 0;
    for (int i = 0; i < ix->n; i++) k += ix->e[i].n > 0;
    return k;
}

static const Entry *index_find(const Index *ix, const char *name) {
    // Prefer an entry with weights when a name repeats (it should not).
    const Entry *any = NULL;
    for (int i = 0; i < ix->n; i++) {
        if (strcmp(ix->e[i].name, name) != 0) continue;
        if (ix->e[i].n > 0) return &ix->e[i];
        if (!any) any = &ix->e[i];
    }
    return any;
}

// "the file has 12 layers with weights: a, b, ..." (bounded length).
static void describe_layers(const Index *ix, char *buf, size_t cap) {
    int nw = index_count_weighted(ix);
    if (nw == 0) {
        snprintf(buf, cap, "the file has no layers with weights");
        return;
    }
    size_t k = (size_t)snprintf(buf, cap, "the file has %d layer%s with weights: ", nw, nw == 1 ? "" : "s");
    int first = 1;
    for (int i = 0; i < ix->n && k < cap; i++) {
        if (ix->e[i].n == 0) continue;
        if (k + strlen(ix->e[i].name) + 8 > 600 || k + strlen(ix->e[i].name) + 8 > cap) {
            snprintf(buf + k, cap - k, ", ...");
            return;
        }
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", first ? "" : ", ", ix->e[i].name);
        first = 0;
    }
}

// --- opening ----------------------------------------------------------------

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    // Closing the file closes everything opened in it, so an error path that
    // forgets an id cannot keep the file open (or unflushed).
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
    // Lock, but do not fail on filesystems without flock (NFS, Lustre).
    H5Pset_file_locking(fapl, 1, 1);
#endif
    return fapl;
}

// Opens path read-only with clear messages for the usual mistakes. The
// caller prefixes nothing: messages already name the path.
// Anything but a regular file is refused by stat before any open: opening
// a FIFO for reading blocks until a writer comes (forever, deaf to SIGTERM
// since the stop flag is only polled between batches), and a device or
// socket is no weights file either.
static hid_t open_read(const char *path) {
    h5_quiet();
    struct stat st;
    if (stat(path, &st) < 0) {
        err_set("%s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        err_set("%s: is a directory, not a weights file", path);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set("%s: not a regular file (%s)", path,
                S_ISFIFO(st.st_mode) ? "FIFO" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device"
                : S_ISSOCK(st.st_mode) ? "socket" : "special file");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        err_set("%s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    if (H5Fis_hdf5(path) <= 0) {
        err_set("%s: not an HDF5 file (Keras weights files are HDF5 .h5 files)", path);
        return -1;
    }
    hid_t fapl = make_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f >= 0) return f;
#if H5_VERSION_GE(1, 10, 7)
    // Was it the lock? A process that has the file open for writing (h5py's
    // 'r+' or 'a' in a notebook) holds it, and HDF5's error is "unable to
    // lock file": the file may be whole.
    // Or a file system without locks that says so otherwise than HDF5
    // expects (ENOLCK from NFS without lockd, where HDF5 ignores only
    // ENOSYS): our own flock tells the two apart, and the latter is read
    // without a lock, as HDF5 reads where locks are disabled.
    fapl = make_fapl();
    if (fapl >= 0 && H5Pset_file_locking(fapl, 0, 1) >= 0) {
        hid_t g = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        int held = 1;
        if (g >= 0 && (fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) >= 0) {
            held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
            close(fd);
        }
        if (g >= 0 && !held) {
            H5Pclose(fapl);
            return g;
        }
        if (g >= 0) {
            H5Fclose(g);
            H5Pclose(fapl);
            err_set("%s: locked by another process that has it open for writing (an h5py or Keras session?): close "
                    "it there, or set HDF5_USE_FILE_LOCKING=FALSE to read it anyway",
                    path);
            return -1;
        }
    }
    if (fapl >= 0) H5Pclose(fapl);
#endif
    err_set("%s: cannot open as HDF5 (damaged or truncated file?)", path);
    return -1;
}

// --- reading ------------------------------------------------------------------

static const char *tensor_label(int t) { return t == 0 ? "kernel" : t == 1 ? "bias" : "tensor"; }

static const char *class_name(H5T_class_t c) {
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    default: return "non-numeric";
    }
}

static int read_tensor(hid_t file, const char *dpath, const char *label, int ndim,
                       const int *shape, float *data) {
    hid_t d = -1, space = -1, type = -1;
    int rc = 0;
    d = H5Dopen2(file, dpath, H5P_DEFAULT);
    if (d < 0) return err_set("%s: cannot open dataset %s (listed in weight_names)", label, dpath);
    type = H5Dget_type(d);
    space = H5Dget_space(d);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (cls != H5T_FLOAT) {
        rc = err_set("%s: dataset %s holds %s data, expected float", label, dpath, class_name(cls));
        goto done;
    }
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[H5S_MAX_RANK];
    if (rank < 0 || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        rc = err_set("%s: cannot read the shape of dataset %s", label, dpath);
        goto done;
    }
    int same = rank == ndim;
    for (int i = 0; same && i < rank; i++) same = dims[i] == (hsize_t)shape[i];
    if (!same) {
        unsigned long long got[H5S_MAX_RANK], want[4];
        for (int i = 0; i < rank; i++) got[i] = dims[i];
        for (int i = 0; i < ndim && i < 4; i++) want[i] = (unsigned long long)(shape[i] < 0 ? 0 : shape[i]);
        char gs[256], ws[128];
        fmt_shape(gs, sizeof gs, rank, got);
        fmt_shape(ws, sizeof ws, ndim < 4 ? ndim : 4, want);
        rc = err_set("%s has shape %s, expected %s", label, gs, ws);
        goto done;
    }
    if (!data) {
        rc = err_set("%s: no destination buffer (data is NULL)", label);
        goto done;
    }
    // HDF5 converts float64/float16 (any IEEE-like float) to native float32.
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = err_set("%s: cannot read dataset %s (damaged file: its data or its checksum is wrong)", label, dpath);
done:
    close_type(&type);
    close_space(&space);
    close_dset(&d);
    return rc;
}

int h5_read_layers(const char *path, H5Layer *layers, int n_layers) {
    for (int i = 0; i < n_layers; i++) {
        const H5Layer *L = &layers[i];
        if (!L->layer) return err_set("%s: layer %d has no name", path, i);
        if (L->n_tensors < 0 || L->n_tensors > 2)
            return err_set("%s: layer %s: n_tensors %d (expected 0, 1 or 2)", path, L->layer, L->n_tensors);
        for (int t = 0; t < L->n_tensors; t++)
            if (L->ndim[t] < 1 || L->ndim[t] > 4)
                return err_set("%s: layer %s: %s rank %d (expected 1..4)", path, L->layer,
                               tensor_label(t), L->ndim[t]);
    }
    hid_t f = open_read(path);
    if (f < 0) return -1;
    Index ix = {0};
    int rc = build_index(f, &ix);
    if (rc < 0) err_prefix("%s: ", path);
    for (int i = 0; i < n_layers && rc == 0; i++) {
        H5Layer *L = &layers[i];
        if (L->n_tensors == 0) continue;
        const Entry *e = index_find(&ix, L->layer);
        if (!e || e->n == 0) {
            char have[700];
            describe_layers(&ix, have, sizeof have);
            if (!e)
                rc = err_set("%s: no layer named %s (%s)", path, L->layer, have);
            else
                rc = err_set("%s: layer %s has no weights in the file, expected %d tensors (%s)", path,
                             L->layer, L->n_tensors, have);
            break;
        }
        if (e->n != L->n_tensors) {
            rc = err_set("%s: layer %s: the file has %d weight tensors (%s%s%s), expected %d", path,
                         L->layer, e->n, e->paths[0], e->n > 1 ? ", " : "", e->n > 1 ? e->paths[1] : "",
                         L->n_tensors);
            break;
        }
        for (int t = 0; t < L->n_tensors && rc == 0; t++) {
            rc = read_tensor(f, e->paths[t], tensor_label(t), L->ndim[t], L->shape[t], L->data[t]);
            if (rc < 0) err_prefix("%s: layer %s: ", path, L->layer);
        }
    }
    index_free(&ix);
    H5Fclose(f);
    return rc;
}

int h5_list_layers(const char *path, H5LayerInfo **out) {
    *out = NULL;
    hid_t f = open_read(path);
    if (f < 0) return -1;
    Index ix = {0};
    int rc = build_index(f, &ix);
    if (rc < 0) err_prefix("%s: ", path);
    int nw = rc == 0 ? index_count_weighted(&ix) : 0;
    H5LayerInfo *info = NULL;
    if (rc == 0 && nw > 0) {
        info = calloc((size_t)nw, sizeof *info);
        if (!info) rc = err_set("out of memory");
    }
    int k = 0;
    for (int i = 0; i < ix.n && rc == 0; i++) {
        const Entry *e = &ix.e[i];
        if (e->n == 0) continue;
        H5LayerInfo *li = &info[k++];
        snprintf(li->name, sizeof li->name, "%s", e->name);
        snprintf(li->group, sizeof li->group, "%s", e->group ? e->group : "");
        li->n_tensors = e->n;
        for (int t = 0; t < e->n && t < H5_INFO_TENSORS && rc == 0; t++) {
            hid_t d = H5Dopen2(f, e->paths[t], H5P_DEFAULT);
            hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
            hsize_t dims[H5S_MAX_RANK];
            int rank = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
            if (rank < 0)
                rc = err_set("%s: layer %s: cannot open dataset %s (listed in weight_names)", path,
                             e->name, e->paths[t]);
            else {
                li->ndim[t] = rank;
                for (int j = 0; j < rank && j < H5_INFO_DIMS; j++) li->shape[t][j] = (long long)dims[j];
            }
            close_space(&sp);
            close_dset(&d);
        }
    }
    index_free(&ix);
    H5Fclose(f);
    if (rc < 0) {
        free(info);
        return -1;
    }
    *out = info;
    return nw;
}

// Appends the single string of attribute `name` of obj to *buf (length *len).
static int append_one_string(hid_t obj, const char *name, char **buf, size_t *len) {
    StrList l = {0};
    int rc = attr_append_strings(obj, name, &l);
    if (rc == 0 && l.n != 1) rc = err_set("attribute %s holds %d strings, expected one", name, l.n);
    if (rc == 0) {
        size_t n = strlen(l.s[0]);
        char *nb = realloc(*buf, *len + n + 1);
        if (!nb) rc = err_set("out of memory");
        else {
            memcpy(nb + *len, l.s[0], n + 1);
            *buf = nb;
            *len += n;
        }
    }
    strlist_free(&l);
    return rc;
}

int h5_read_attr(const char *path, const char *key, char **value) {
    *value = NULL;
    hid_t f = open_read(path);
    if (f < 0) return -1;
    int rc = 0;
    char *buf = NULL;
    size_t len = 0;
    htri_t e = H5Aexists(f, key);
    if (e < 0) {
        rc = err_set("%s: cannot query attribute %s", path, key);
    } else if (e > 0) {
        rc = append_one_string(f, key, &buf, &len) < 0 ? err_prefix("%s: ", path) : 1;
    } else {
        // The split form (a value over H5_ATTR_CHUNK_MAX bytes): key0, key1,
        // ... whose concatenation is the value, as Keras reads layer_names0...
        for (int k = 0; rc >= 0; k++) {
            char chunk[320];
            snprintf(chunk, sizeof chunk, "%s%d", key, k);
            e = H5Aexists(f, chunk);
            if (e < 0) rc = err_set("%s: cannot query attribute %s", path, chunk);
            else if (e == 0) break;
            else if (append_one_string(f, chunk, &buf, &len) < 0) rc = err_prefix("%s: ", path);
            else rc = 1;
        }
    }
    if (rc == 1) *value = buf;
    else free(buf);
    H5Fclose(f);
    return rc;
}

// --- writing ------------------------------------------------------------------

// 1 when key is base followed by one or more digits (a name of base's split form).
static int split_name_of(const char *key, const char *base) {
    size_t n = strlen(base);
    if (strncmp(key, base, n) || !key[n]) return 0;
    for (const char *p = key + n; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

static int validate_write(const char *path, const H5Layer *layers, int n_layers, const H5Attr *attrs,
                          int n_attrs) {
    if (!path || !*path) return err_set("h5_write_layers: empty path");
    if (n_layers < 0 || n_attrs < 0 || (n_layers > 0 && !layers) || (n_attrs > 0 && !attrs))
        return err_set("%s: bad layer/attribute counts", path);
    for (int i = 0; i < n_layers; i++) {
        const H5Layer *L = &layers[i];
        if (!L->layer || !*L->layer) return err_set("%s: layer %d has no name", path, i);
        if (strchr(L->layer, '/') || !strcmp(L->layer, ".") || !strcmp(L->layer, ".."))
            return err_set("%s: layer name \"%s\" cannot be an HDF5 group name", path, L->layer);
        for (int j = 0; j < i; j++)
            if (!strcmp(layers[j].layer, L->layer))
                return err_set("%s: layer name %s appears twice", path, L->layer);
        if (L->n_tensors < 0 || L->n_tensors > 2)
            return err_set("%s: layer %s: n_tensors %d (expected 0, 1 or 2)", path, L->layer, L->n_tensors);
        for (int t = 0; t < L->n_tensors; t++) {
            if (L->ndim[t] < 1 || L->ndim[t] > 4)
                return err_set("%s: layer %s: %s rank %d (expected 1..4)", path, L->layer,
                               tensor_label(t), L->ndim[t]);
            for (int k = 0; k < L->ndim[t]; k++)
                if (L->shape[t][k] <= 0)
                    return err_set("%s: layer %s: %s dimension %d is %d", path, L->layer, tensor_label(t),
                                   k, L->shape[t][k]);
            if (!L->data[t])
                return err_set("%s: layer %s: %s data is NULL", path, L->layer, tensor_label(t));
        }
        // A nested model's group: a valid name, its layers consecutive, and
        // no top-level layer of the same name (they would share one group).
        const char *g = L->group;
        if (!g) continue;
        if (!*g || strchr(g, '/') || !strcmp(g, ".") || !strcmp(g, ".."))
            return err_set("%s: layer %s: group name \"%s\" cannot be an HDF5 group name", path, L->layer, g);
        if (i > 0 && layers[i - 1].group && !strcmp(layers[i - 1].group, g)) continue;
        for (int j = 0; j < n_layers; j++) {
            if (j < i && layers[j].group && !strcmp(layers[j].group, g))
                return err_set("%s: the layers of group %s are not consecutive (%s comes after others)", path, g,
                               L->layer);
            if (!layers[j].group && layers[j].layer && !strcmp(layers[j].layer, g))
                return err_set("%s: group %s has the name of a top-level layer", path, g);
        }
    }
    static const char *reserved[] = {"layer_names", "backend", "keras_version"};
    for (int i = 0; i < n_attrs; i++) {
        if (!attrs[i].key || !*attrs[i].key || !attrs[i].value)
            return err_set("%s: attribute %d has no key or value", path, i);
        for (size_t r = 0; r < sizeof reserved / sizeof *reserved; r++)
            if (!strcmp(attrs[i].key, reserved[r]))
                return err_set("%s: attribute %s is reserved for the Keras layout", path, attrs[i].key);
        for (int j = 0; j < i; j++)
            if (!strcmp(attrs[j].key, attrs[i].key))
                return err_set("%s: attribute %s given twice", path, attrs[i].key);
        // A long value is stored as KEY0, KEY1, ...: no other key may be
        // KEY followed by digits (nor a reserved name's split form).
        for (int j = 0; j < n_attrs; j++)
            if (j != i && attrs[j].key && split_name_of(attrs[i].key, attrs[j].key))
                return err_set("%s: attribute %s would clash with the split form of attribute %s", path,
                               attrs[i].key, attrs[j].key);
        for (size_t r = 0; r < sizeof reserved / sizeof *reserved; r++)
            if (split_name_of(attrs[i].key, reserved[r]))
                return err_set("%s: attribute %s would clash with the split form of %s", path, attrs[i].key,
                               reserved[r]);
    }
    return 0;
}

// Fixed-length, NUL-padded byte strings: what h5py stores for numpy 'S'
// arrays, i.e. what Keras 2 wrote. scalar: one string, scalar dataspace.
static int write_strings(hid_t obj, const char *name, const char *const *s, int n, int scalar) {
    size_t maxlen = 1;
    for (int i = 0; i < n; i++)
        if (strlen(s[i]) > maxlen) maxlen = strlen(s[i]);
    hid_t type = H5Tcopy(H5T_C_S1), space = -1, attr = -1;
    int rc = 0;
    char *buf = calloc((size_t)(n ? n : 1), maxlen);
    if (!buf || type < 0 || H5Tset_size(type, maxlen) < 0 || H5Tset_strpad(type, H5T_STR_NULLPAD) < 0) {
        rc = err_set("cannot make a string type for attribute %s", name);
        goto done;
    }
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * maxlen, s[i], strlen(s[i]));
    hsize_t dims[1] = {(hsize_t)n};
    space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    attr = space >= 0 ? H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (attr < 0 || H5Awrite(attr, type, buf) < 0) rc = err_set("cannot write attribute %s", name);
done:
    free(buf);
    close_attr(&attr);
    close_space(&space);
    close_type(&type);
    return rc;
}

// A string list, split into name0, name1, ... when it exceeds HDF5's
// attribute header limit, the way Keras's save_attributes_to_hdf5_group does
// (numpy array_split: the first n % c chunks get one more element).
static int write_string_list(hid_t obj, const char *name, const char *const *s, int n) {
    size_t maxlen = 1;
    for (int i = 0; i < n; i++)
        if (strlen(s[i]) > maxlen) maxlen = strlen(s[i]);
    int chunks = 1;
    while (chunks < n && ((size_t)(n + chunks - 1) / (size_t)chunks) * maxlen > ATTR_LIMIT) chunks++;
    if (chunks == 1) return write_strings(obj, name, s, n, 0);
    int at = 0;
    for (int c = 0; c < chunks; c++) {
        int len = n / chunks + (c < n % chunks);
        char key[300];
        snprintf(key, sizeof key, "%s%d", name, c);
        if (write_strings(obj, key, s + at, len, 0) < 0) return -1;
        at += len;
    }
    return 0;
}

// Length of the next piece of a long value s (strlen(s) > max): up to max
// bytes, ending after its last newline when it has one (so that a list of
// lines, e.g. class names, is split between lines), else not inside a UTF-8
// sequence.
static size_t piece_len(const char *s, size_t max) {
    for (size_t k = max; k > 0; k--)
        if (s[k - 1] == '\n') return k;
    size_t k = max;
    while (k > 1 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

// One string attribute (scalar, fixed-length): as one attribute when it fits
// in ATTR_VALUE_MAX bytes, else split into key0, key1, ..., each at most
// ATTR_VALUE_MAX bytes, whose concatenation is the value (HDF5 keeps an
// attribute in a 64 KiB object header message; Keras splits its lists the
// same way, layer_names0, layer_names1, ...). h5_read_attr joins them.
static int write_string_attr(hid_t obj, const char *key, const char *value) {
    size_t len = strlen(value);
    if (len <= ATTR_VALUE_MAX) return write_strings(obj, key, &value, 1, 1);
    char *piece = malloc(ATTR_VALUE_MAX + 1);
    if (!piece) return err_set("out of memory");
    int rc = 0;
    for (int c = 0; len > 0 && rc == 0; c++) {
        size_t n = len <= ATTR_VALUE_MAX ? len : piece_len(value, ATTR_VALUE_MAX);
        memcpy(piece, value, n);
        piece[n] = '\0';
        char name[320];
        snprintf(name, sizeof name, "%s%d", key, c);
        const char *p = piece;
        rc = write_strings(obj, name, &p, 1, 1);
        value += n, len -= n;
    }
    free(piece);
    return rc;
}

// weight_names of a weightless layer: Keras writes np.asarray([]), an empty
// float64 array; Keras (all versions) reads it as an empty list.
static int write_empty_list(hid_t obj, const char *name) {
    hsize_t dims[1] = {0};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t attr = space >= 0 ? H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int rc = attr < 0 ? err_set("cannot write attribute %s", name) : 0;
    close_attr(&attr);
    close_space(&space);
    return rc;
}

// Creation properties without modification times, so that the same weights
// always give the same file bytes (HDF5 stamps objects by default).
static hid_t timeless(hid_t cls) {
    hid_t p = H5Pcreate(cls);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}

// Keras 2's variable names end in ":0"; each lives under its layer's name.
static const char *const LEAF[2] = {"kernel:0", "bias:0"};

// The datasets of L at <parent>/<layer>/kernel:0 and .../bias:0: Keras 2
// stores each weight at its name relative to the entry's group, and the name
// starts with the layer's own name scope.
static int write_tensors(hid_t parent, const H5Layer *L, hid_t gcpl, hid_t dcpl) {
    hid_t sub = H5Gcreate2(parent, L->layer, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (sub < 0) return err_set("cannot create group %s", L->layer);
    int rc = 0;
    for (int t = 0; t < L->n_tensors && rc == 0; t++) {
        hsize_t dims[4];
        int empty = 0;
        for (int k = 0; k < L->ndim[t]; k++) dims[k] = (hsize_t)L->shape[t][k], empty |= dims[k] == 0;
        hid_t space = H5Screate_simple(L->ndim[t], dims, NULL);
        // Each tensor one chunk with HDF5's Fletcher-32 checksum: a read of
        // damaged bytes fails (HDF5 verifies it; h5py and Keras read such
        // files as they are) instead of loading wrong weights.
        hid_t tcpl = H5Pcopy(dcpl);
        if (tcpl >= 0 && !empty && (H5Pset_chunk(tcpl, L->ndim[t], dims) < 0 || H5Pset_fletcher32(tcpl) < 0))
            H5Pclose(tcpl), tcpl = -1;
        hid_t d = space >= 0 && tcpl >= 0
                      ? H5Dcreate2(sub, LEAF[t], H5T_IEEE_F32LE, space, H5P_DEFAULT, tcpl, H5P_DEFAULT)
                      : -1;
        if (d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, L->data[t]) < 0)
            // The file is built in memory (h5_write_layers: the core
            // driver), so a write fails for want of memory, not of disk.
            rc = err_set("cannot write dataset %s/%s: out of memory", L->layer, LEAF[t]);
        close_dset(&d);
        close_space(&space);
        if (tcpl >= 0) H5Pclose(tcpl);
    }
    close_group(&sub);
    return rc;
}

// One entry of layer_names: group `name` holding the weights of layers
// [0, n): a top-level layer (n = 1, name = its own), or a nested model's
// layers. weight_names lists "<layer>/kernel:0", "<layer>/bias:0" of each
// layer with weights, in order; an entry without any gets an empty list.
static int write_entry(hid_t file, const char *name, const H5Layer *layers, int n) {
    hid_t gcpl = timeless(H5P_GROUP_CREATE), dcpl = timeless(H5P_DATASET_CREATE);
    int nw = 0, rc = 0;
    for (int i = 0; i < n; i++) nw += layers[i].n_tensors;
    char **wn = calloc((size_t)nw + 1, sizeof *wn);
    hid_t g = H5Gcreate2(file, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (!wn) rc = err_set("out of memory");
    else if (g < 0) rc = err_set("cannot create group %s", name);
    for (int i = 0, k = 0; i < n && rc == 0; i++)
        for (int t = 0; t < layers[i].n_tensors && rc == 0; t++)
            if (!(wn[k++] = join3(layers[i].layer, "/", LEAF[t]))) rc = err_set("out of memory");
    if (rc == 0)
        rc = nw == 0 ? write_empty_list(g, "weight_names")
                     : write_string_list(g, "weight_names", (const char *const *)wn, nw);
    for (int i = 0; i < n && rc == 0; i++)
        if (layers[i].n_tensors > 0) rc = write_tensors(g, &layers[i], gcpl, dcpl);
    for (int k = 0; wn && k < nw; k++) free(wn[k]);
    free(wn);
    close_group(&g);
    H5Pclose(gcpl);
    H5Pclose(dcpl);
    if (rc < 0) err_prefix("layer %s: ", name);
    return rc;
}

// Length of the run of layers from i that form one entry: a top-level layer
// alone, or the consecutive layers of one nested group.
static int entry_run(const H5Layer *layers, int n_layers, int i) {
    int j = i + 1;
    if (layers[i].group)
        while (j < n_layers && layers[j].group && !strcmp(layers[j].group, layers[i].group)) j++;
    return j - i;
}

static int write_contents(hid_t f, const H5Layer *layers, int n_layers, const H5Attr *attrs, int n_attrs) {
    const char **names = malloc((size_t)(n_layers ? n_layers : 1) * sizeof *names);
    if (!names) return err_set("out of memory");
    int n_entries = 0;
    for (int i = 0; i < n_layers; i += entry_run(layers, n_layers, i))
        names[n_entries++] = layers[i].group ? layers[i].group : layers[i].layer;
    int rc = write_string_list(f, "layer_names", names, n_entries);
    free(names);
    if (rc < 0) return -1;
    const char *backend = "tensorflow", *version = "2.15.0";
    if (write_strings(f, "backend", &backend, 1, 1) < 0) return -1;
    if (write_strings(f, "keras_version", &version, 1, 1) < 0) return -1;
    for (int i = 0; i < n_attrs; i++)
        if (write_string_attr(f, attrs[i].key, attrs[i].value) < 0) return -1;
    for (int i = 0, run; i < n_layers; i += run) {
        run = entry_run(layers, n_layers, i);
        if (write_entry(f, layers[i].group ? layers[i].group : layers[i].layer, &layers[i], run) < 0) return -1;
    }
    return 0;
}

int h5_write_layers(const char *path, const H5Layer *layers, int n_layers, const H5Attr *attrs,
                    int n_attrs) {
    h5_quiet();
    if (validate_write(path, layers, n_layers, attrs, n_attrs) < 0) return -1;
    // HDF5 builds the file in memory (the core driver, no backing store) and
    // we write its image ourselves, atomically: a full disk or a file size
    // limit is then our write's error, with errno's reason, and a file HDF5
    // failed to close can no longer crash the process at exit (HDF5 closed
    // it again in its atexit handler and died of SIGSEGV).
    hid_t fapl = make_fapl();
    if (fapl >= 0 && H5Pset_fapl_core(fapl, 1 << 20, 0) < 0) H5Pclose(fapl), fapl = -1;
    hid_t f = fapl >= 0 ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : -1;
    if (fapl >= 0) H5Pclose(fapl);
    if (f < 0) return err_set("%s: HDF5 cannot make the file in memory", path);
    int rc = write_contents(f, layers, n_layers, attrs, n_attrs);
    if (rc < 0) err_prefix("%s: ", path);
    void *image = NULL;
    ssize_t size = -1;
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0 && (size = H5Fget_file_image(f, NULL, 0)) > 0 &&
        (image = malloc((size_t)size)) != NULL && H5Fget_file_image(f, image, (size_t)size) != size)
        size = -1;
    H5Fclose(f);  // in memory: nothing to fail
    // The file lives in memory (the core driver): HDF5 fails here when an
    // allocation does (under an address-space limit, say).
    if (rc == 0 && (size <= 0 || !image)) rc = err_set("%s: HDF5 could not give the file's image: out of memory", path);
    if (rc == 0) {
        AtomicFile af;
        if (!atomic_open(&af, path)) rc = -1;
        else fwrite(image, 1, (size_t)size, af.f), rc = atomic_commit(&af);  // a short write: its errno
    }
    free(image);
    return rc;
}
