// extract --info PATH and extract --merge OUT IN...
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <signal.h>

#include "cache.h"
#include "error.h"
#include "extract.h"
#include "fileutil.h"
#include "utf8.h"
#include "progress.h"
#include "stop.h"

typedef struct {
    int n_classes;
    long *per_class;
    long long bytes;
    long records, damaged;
    int n_features;
    void *dctx;
    float *buf;
    long long nonzero, values;
} InfoStats;

static int info_visit(void *vctx, uint64_t key, const void *val, size_t len) {
    InfoStats *s = vctx;
    int32_t label;
    s->records++;
    s->bytes += (long long)len;
    if (cache_record_decode(s->dctx, key, val, len, s->n_features, &label, NULL, NULL, NULL, s->buf) < 0) {
        log_printf(stderr, "warning: %s\n", err_msg());
        s->damaged++;
        return 0;
    }
    if (label >= 0 && label < s->n_classes) s->per_class[label]++;
    for (int i = 0; i < s->n_features; i++) s->nonzero += s->buf[i] != 0.0f;
    s->values += s->n_features;
    return 0;
}

int extract_info(const char *path) {
    Cache c;
    CacheMeta m;
    if (cache_open_read(&c, path, &m) < 0) return -1;
    printf("cache:          %s\n", path);
    printf("model:          %s\n", m.model);
    printf("weights:        %s\n", m.weights);
    printf("input size:     %dx%d\n", m.input_w, m.input_h);
    printf("interpolation:  %s\n", m.interpolation);
    printf("preprocessing:  %s\n", m.preprocess);
    printf("layer:          %s\n", m.layer);
    printf("features:       %dx%dx%d (H,W,C), %s\n", m.feat_h, m.feat_w, m.feat_c, feat_dtype_name(m.dtype));
    if (m.decode[0]) printf("decoding:       %s\n", m.decode);
    if (m.shard[0]) printf("shard:          %s\n", m.shard);
    if (m.data_dir[0]) printf("image folder:   %s (%s)\n", m.data_dir, m.folder);
    printf("state:          %s\n", m.complete ? "complete" : "incomplete (its extract run did not finish: rerun it)");
    if (m.content[0]) printf("recorded:       %s\n", m.content);
    printf("checksums:      %s\n", m.checksummed ? "settings verified; pages checked"
                                                   : "none (made by an older extract: rerun it to add them)");
    printf("made by:        vggft %s: %s\n", m.version, m.command);
    InfoStats s = {0};
    s.n_classes = m.n_classes;
    s.per_class = calloc((size_t)m.n_classes, sizeof(long));
    s.n_features = m.feat_h * m.feat_w * m.feat_c;
    s.buf = malloc(sizeof(float) * (size_t)s.n_features);
    s.dctx = c.dctx;
    int rc = cache_visit(&c, info_visit, &s);
    if (rc == 0) {
        printf("classes:        %d\n", m.n_classes);
        for (int k = 0; k < m.n_classes; k++) {  // padded by display columns, never cut
            int pad = 24 - utf8_width(m.class_names[k]);
            printf("  %3d %s%*s %ld records\n", k, m.class_names[k], pad > 0 ? pad : 0, "", s.per_class[k]);
        }
        double raw = (double)s.n_features * (m.dtype == FEAT_F16 ? 2 : 4);
        printf("records:        %ld%s\n", s.records, s.damaged ? " (some damaged, see the warnings)" : "");
        if (s.damaged) printf("damaged:        %ld\n", s.damaged);
        if (s.records) {
            printf("stored:         %.2f MB, %.0f bytes per record (raw features %.0f bytes: ratio %.2fx)\n",
                   s.bytes / 1e6, (double)s.bytes / s.records, raw, raw * s.records / (double)s.bytes);
            printf("non-zero:       %.1f%% of feature values\n", s.values ? 100.0 * s.nonzero / s.values : 0.0);
        }
        char data[PATH_MAX + 32];
        struct stat st;
        snprintf(data, sizeof data, "%s/data.mdb", path);
        if (stat(data, &st) == 0) printf("on disk:        %.2f MB (data.mdb)\n", st.st_size / 1e6);
    }
    free(s.per_class);
    free(s.buf);
    cache_meta_free(&m);
    cache_close(&c);
    return rc < 0 ? -1 : (s.damaged ? err_set("%s: %ld damaged record%s", path, s.damaged, s.damaged == 1 ? "" : "s") : 0);
}

// --- verify --------------------------------------------------------------------

static void verify_line(void *ctx, const char *msg) {
    long *n = ctx;
    if (++*n <= 1000) printf("damaged: %s\n", msg);
    else if (*n == 1001) printf("damaged: ... (further problems not listed)\n");
}

int extract_verify(const char *path) {
    long shown = 0, records = 0;
    long problems = cache_verify(path, verify_line, &shown, &records);
    if (problems < 0) {
        fprintf(stderr, "extract: error: %s\n", err_msg());
        return -1;
    }
    if (problems == 0) {
        // Sound pages: LMDB may read it now.
        Cache c;
        CacheMeta m;
        int legacy = 0;
        if (cache_open_read(&c, path, &m) == 0) {
            legacy = !m.checksummed;
            cache_meta_free(&m);
            cache_close(&c);
        }
        printf("%s: sound: %ld records; every page and record verified%s\n", path, records,
               legacy ? " (made by an older extract: its settings carry no checksum and could not be verified; rerun "
                        "its extract command to add one)"
                      : ", and the settings' checksum");
        return 0;
    }
    printf("%s: %ld problem%s found (%ld records read): the cache is damaged; re-extract it (extract --overwrite "
           "replaces it)\n",
           path, problems, problems == 1 ? "" : "s", records);
    return 1;
}

// --- merge ---------------------------------------------------------------------

struct MergeKey {
    uint64_t key;
    int input;
};

typedef struct {
    Cache *out;
    const char *in_path;
    long copied;
    char **paths;      // every record's path, to refuse duplicates
    struct MergeKey *keys;  // every record's key and input, the same
    long n_paths, cap_paths;
    int input;          // the index of the input being copied
    long signal_after;  // test hook: a real signal to ourselves after this many records (0: none)
    int test_signal;
} MergeCtx;

// What merge_visit returns when a stop signal arrived (cache_visit passes it on).
#define MERGE_STOPPED 1

static int merge_visit(void *vctx, uint64_t key, const void *val, size_t len) {
    MergeCtx *mc = vctx;
    // SIGTERM / SIGINT / SIGUSR1 / SIGHUP: copy no more; the caller removes
    // the partial output.
    if (stop_requested()) return MERGE_STOPPED;
    int32_t label;
    const char *path;
    int plen;
    // Verify each record before copying it: a damaged shard must not taint the merge.
    if (cache_record_decode(NULL, key, val, len, -1, &label, &path, &plen, NULL, NULL) < 0)
        return err_prefix("%s: ", mc->in_path);
    // Keys and paths are checked for duplicates once all are copied (a
    // record put twice replaces the first; the output is then dropped):
    // a lookup here needed a commit, an fsync, per record.
    if (mc->n_paths == mc->cap_paths) {
        mc->cap_paths = mc->cap_paths ? mc->cap_paths * 2 : 1024;
        char **p = realloc(mc->paths, sizeof(char *) * (size_t)mc->cap_paths);
        if (p) mc->paths = p;
        struct MergeKey *k = realloc(mc->keys, sizeof *k * (size_t)mc->cap_paths);
        if (k) mc->keys = k;
        if (!p || !k) return err_set("out of memory");
    }
    mc->keys[mc->n_paths] = (struct MergeKey){key, mc->input};
    mc->paths[mc->n_paths++] = strndup(path, (size_t)plen);
    if (cache_put_raw(mc->out, key, val, len) < 0) return -1;
    mc->copied++;
    if (mc->signal_after > 0 && mc->copied == mc->signal_after) raise(mc->test_signal);  // this thread, at once
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_key(const void *a, const void *b) {
    const struct MergeKey *x = a, *y = b;
    return x->key != y->key ? (x->key < y->key ? -1 : 1) : x->input - y->input;
}

// Removes a cache folder we made (its known files, then the folder).
static void remove_cache_dir(const char *dir) {
    const char *files[] = {"data.mdb", "lock.mdb", "skipped.tsv"};
    char p[4200];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

// The union of the inputs' skipped lists, each line once.
static int merge_skipped(const char *out_dir, char **inputs, int n) {
    char **lines = NULL;
    long nl = 0, cap = 0;
    char p[4200], buf[8192];
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/skipped.tsv", inputs[i]);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        int first = 1;
        while (fgets(buf, sizeof buf, f)) {
            if (first && !strcmp(buf, "path\treason\n")) {
                first = 0;
                continue;
            }
            first = 0;
            if (nl == cap) lines = realloc(lines, sizeof(char *) * (size_t)(cap = cap ? cap * 2 : 64));
            lines[nl++] = strdup(buf);
        }
        fclose(f);
    }
    if (nl) qsort(lines, (size_t)nl, sizeof(char *), cmp_str);
    snprintf(p, sizeof p, "%s/skipped.tsv", out_dir);
    AtomicFile af;
    FILE *f = atomic_open(&af, p);
    int rc = f ? 0 : -1;
    if (f) {
        fputs("path\treason\n", f);
        for (long i = 0; i < nl; i++)
            if (i == 0 || strcmp(lines[i], lines[i - 1])) fputs(lines[i], f);
        rc = atomic_commit(&af);
    }
    for (long i = 0; i < nl; i++) free(lines[i]);
    free(lines);
    return rc;
}

// The stop message: nothing was written at OUT (a partial merge is removed).
static int merge_stopped(const char *out, long copied, int had_out) {
    log_printf(stderr,
               "extract: stopped by %s after copying %ld record%s: the partial merge was removed (%s %s). Rerun "
               "the same command to merge.\n",
               stop_signal_name(stop_requested()), copied, copied == 1 ? "" : "s", out,
               had_out ? "is the cache it was" : "was not written");
    return EXIT_STOPPED;
}

int extract_merge(const char *out, char **inputs, int n_inputs, int overwrite) {
    if (n_inputs < 1) return err_set("--merge OUT IN...: no input caches given");
    // OUT one of the inputs (or inside one): with --overwrite the merge
    // would replace a shard that took GPU hours to make.
    for (int i = 0; i < n_inputs; i++)
        if (path_within(out, inputs[i]))
            return err_set("--merge %s: %s the input cache %s: merging there would replace it; merge into a new "
                           "folder",
                           out, path_within(inputs[i], out) ? "is" : "lies inside", inputs[i]);
    // SIGTERM / SIGINT (Slurm's time limit, Ctrl-C), SIGUSR1, SIGHUP: stop
    // between records, remove the partial output, exit EXIT_STOPPED.
    stop_install();
    struct stat st;
    char data[4200];
    snprintf(data, sizeof data, "%s/data.mdb", out);
    if (stat(data, &st) == 0 && !overwrite) return err_set("%s: already exists; merge into a new folder or use --overwrite", out);
    if (stat(data, &st) != 0 && cache_folder_usable(out) < 0) return err_prefix("--merge: ");
    int held = cache_lock_folder(out);  // fail now, not after the copying, while an extract writes OUT
    if (held == -1) return err_prefix("--merge: ");
    if (held >= 0) close(held);
    const int had_out = stat(data, &st) == 0;  // (the message of a stop says it is as it was)
    CacheMeta first = {0}, meta;
    int shards = 0, *seen_shard = NULL;
    // All inputs: finished shards of one run's settings on one folder.
    for (int i = 0; i < n_inputs; i++) {
        Cache c;
        if (cache_open_read(&c, inputs[i], &meta) < 0) goto fail;
        cache_close(&c);
        // As --cache inside --data (extract.c): a cache in the image folder
        // would be read as a class folder by every later run and by Keras.
        if (meta.data_dir[0] && path_within(out, meta.data_dir)) {
            err_set("--merge: %s lies inside the image folder %s that %s was made from: later runs (and Keras) "
                    "would read it as a class folder; put the merged cache elsewhere",
                    out, meta.data_dir, inputs[i]);
            cache_meta_free(&meta);
            goto fail;
        }
        if (stop_requested()) {
            cache_meta_free(&meta);
            free(seen_shard);
            cache_meta_free(&first);
            return merge_stopped(out, 0, had_out);
        }
        int si = 0, sn = 1;
        if (meta.shard[0]) sscanf(meta.shard, "%d/%d", &si, &sn);
        const char *why = NULL;
        char diff[2600];
        if (!meta.complete) why = "its extract run did not finish (rerun the same command to complete it)";
        else if (i == 0) {
            first = meta;
            shards = sn;
            seen_shard = calloc((size_t)sn, sizeof(int));
            seen_shard[si] = 1;
            continue;
        } else if (sn == 1 && shards == 1) {
            // Checked before the shard numbers: two unrelated caches are not
            // "shard 0/1 given twice".
            int other = meta.data_dir[0] && first.data_dir[0] && strcmp(meta.data_dir, first.data_dir);
            char where[2200] = "";
            if (other) snprintf(where, sizeof where, ", from different folders (%s and %s)", first.data_dir, meta.data_dir);
            snprintf(diff, sizeof diff,
                     "neither it nor %s is a shard (both were made without --shard%s): --merge joins the caches of "
                     "the --shard I/N runs of one folder",
                     inputs[0], where);
            why = diff;
        } else if (meta.data_dir[0] && first.data_dir[0] && strcmp(meta.data_dir, first.data_dir) &&
                   strcmp(meta.folder, first.folder)) {
            snprintf(diff, sizeof diff,
                     "it was made from another folder (%s) than %s (%s): --merge joins the caches of the --shard "
                     "I/N runs of one folder",
                     meta.data_dir, inputs[0], first.data_dir);
            why = diff;
        } else if (sn != shards) {
            snprintf(diff, sizeof diff, "it is a shard of %d, %s of %d", sn, inputs[0], shards);
            why = diff;
        } else if (seen_shard[si]) {
            snprintf(diff, sizeof diff, "shard %d/%d is given twice", si, sn);
            why = diff;
        } else if (strcmp(meta.folder, first.folder)) {
            snprintf(diff, sizeof diff, "it was made from another state of the folder (%s) than %s (%s): rerun the shards",
                     meta.folder, inputs[0], first.folder);
            why = diff;
        } else {
            snprintf(meta.shard, sizeof meta.shard, "%s", first.shard);  // shards differ by design
            if (cache_meta_diff_as(&first, &meta, inputs[0], "this one", diff, sizeof diff)) why = diff;
        }
        if (why) {
            err_set("--merge: %s: %s", inputs[i], why);
            cache_meta_free(&meta);
            goto fail;
        }
        seen_shard[si] = 1;
        cache_meta_free(&meta);
    }
    // The merged cache is marked complete (train, finetune and --info trust
    // that): every shard of the run must be there.
    if (n_inputs != shards) {
        char missing[1200] = "";
        size_t used = 0;
        int n_missing = 0;
        for (int k = 0; k < shards; k++)
            if (!seen_shard[k]) {
                if (n_missing < 20 && used < sizeof missing - 40)
                    used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d/%d", n_missing ? ", " : "",
                                             k, shards);
                else if (n_missing == 20)
                    used += (size_t)snprintf(missing + used, sizeof missing - used, ", ...");
                n_missing++;
            }
        err_set("--merge: %d of the %d shards given; missing shard%s %s: give every shard's cache (a merged cache "
                "covers the whole folder)",
                n_inputs, shards, n_missing == 1 ? "" : "s", missing);
        goto fail;
    }

    // Built in a temporary folder and renamed into place at the end: OUT is
    // never a half-merged cache.
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    CacheMeta want = first;
    want.shard[0] = '\0';
    want.class_counts = NULL;
    want.complete = 0;
    want.content[0] = '\0';  // recorded again once the records are in
    Cache dst;
    remove_stale(out, ".tmp.", remove_cache_dir);  // folders of merges that were killed
    remove_stale(out, ".old.", remove_cache_dir);
    if (cache_open_write(&dst, tmp, &want, 1) < 0) {
        remove_cache_dir(tmp);
        goto fail;
    }
    MergeCtx mc = {.out = &dst, .test_signal = SIGTERM};
    // Test hook: a real SIGTERM (or VGGFT_TEST_SIGNAL=INT, USR1, HUP) to
    // ourselves after N records were copied, as extract's run has.
    const char *signal_env = getenv("VGGFT_TEST_SIGNAL_AFTER"), *signal_kind = getenv("VGGFT_TEST_SIGNAL");
    mc.signal_after = signal_env ? atol(signal_env) : 0;
    if (signal_kind && !strcmp(signal_kind, "INT")) mc.test_signal = SIGINT;
    else if (signal_kind && !strcmp(signal_kind, "USR1")) mc.test_signal = SIGUSR1;
    else if (signal_kind && !strcmp(signal_kind, "HUP")) mc.test_signal = SIGHUP;
    int rc = 0;
    for (int i = 0; i < n_inputs && rc == 0; i++) {
        Cache src;
        if (cache_open_read(&src, inputs[i], NULL) < 0) {
            rc = -1;
            break;
        }
        mc.in_path = inputs[i], mc.input = i;
        long before = mc.copied;
        rc = cache_visit(&src, merge_visit, &mc);
        cache_close(&src);
        if (rc == 0) printf("%s: %ld records\n", inputs[i], mc.copied - before);
    }
    // Stopped while copying (or as the last record was): the records are
    // all that takes long; once they are in, the merge finishes.
    if (rc == MERGE_STOPPED || (rc == 0 && stop_requested())) {
        for (long i = 0; i < mc.n_paths; i++) free(mc.paths[i]);
        free(mc.paths), free(mc.keys);
        free(want.class_counts);
        cache_close(&dst);
        remove_cache_dir(tmp);
        free(seen_shard);
        cache_meta_free(&first);
        return merge_stopped(out, mc.copied, had_out);
    }
    if (rc == 0) {
        // A key twice names both inputs.
        struct MergeKey *k = mc.keys;
        if (mc.n_paths) qsort(k, (size_t)mc.n_paths, sizeof *k, cmp_key);
        for (long i = 1; i < mc.n_paths && rc == 0; i++)
            if (k[i].key == k[i - 1].key)
                rc = err_set("--merge: record %010llu is in %s and in %s: these caches are not disjoint shards of "
                             "one folder",
                             (unsigned long long)k[i].key, inputs[k[i - 1].input], inputs[k[i].input]);
    }
    if (rc == 0) {
        if (mc.n_paths) qsort(mc.paths, (size_t)mc.n_paths, sizeof(char *), cmp_str);
        for (long i = 1; i < mc.n_paths && rc == 0; i++)
            if (!strcmp(mc.paths[i], mc.paths[i - 1]))
                rc = err_set("--merge: %s is in two inputs: these caches are not disjoint shards of one folder",
                             mc.paths[i]);
    }
    for (long i = 0; i < mc.n_paths; i++) free(mc.paths[i]);
    free(mc.paths), free(mc.keys);
    if (rc == 0) rc = cache_store_counts(&dst, &want);
    free(want.class_counts);
    cache_close(&dst);
    if (rc == 0) rc = merge_skipped(tmp, inputs, n_inputs);
    if (rc == 0) {
        char old[4200];
        snprintf(old, sizeof old, "%s.old.%d", out, (int)getpid());
        int had_old = stat(out, &st) == 0;
        // Not while an extract writes the cache it would replace.
        int lock = had_old ? cache_lock_folder(out) : -2;
        if (lock == -1) rc = err_prefix("--merge: ");
        else if ((had_old && rename(out, old) < 0) || rename(tmp, out) < 0)
            rc = err_set("%s: cannot move the merged cache into place: %s", out, strerror(errno));
        else if (had_old)
            remove_cache_dir(old);
        if (lock >= 0) close(lock);
    }
    if (rc < 0) {
        remove_cache_dir(tmp);
        goto fail;
    }
    printf("Merged %ld records from %d caches into %s\n", mc.copied, n_inputs, out);
    free(seen_shard);
    cache_meta_free(&first);
    return 0;
fail:
    free(seen_shard);
    cache_meta_free(&first);
    return -1;
}
