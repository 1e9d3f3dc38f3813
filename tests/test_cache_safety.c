// Caches that are damaged, another folder's, or on a full disk: never a
// crash, never a silent change, never another folder's records deleted.
//
// The damage sweep flips one bit of data.mdb at many offsets of small caches
// (records inside the leaf pages, and records on overflow pages) and reads
// each copy the way train does (features_load), checks it the way extract
// --verify does (cache_verify), and runs the train and extract executables on
// some of them: each read either fails with a message that says the cache is
// damaged, or returns exactly the records and settings of the undamaged cache.
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "error.h"
#include "feature_set.h"
#include "fileutil.h"
#include "testutil.h"

// Slower under the sanitizers: visit fewer offsets there.
#if defined(__SANITIZE_ADDRESS__)
#define SWEEP_SCALE 3
#else
#define SWEEP_SCALE 1
#endif

// DIR/data/{circles,squares}/img NN.jpg (n per class); returns DIR.
static char *make_images(const char *tag, int n) { return make_shape_folder(tag, n, 50); }

static void extract_ok(const char *args) {
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "extract %s:\n%s", args, out);
    free(out);
}

// --- a cache belongs to its folder ------------------------------------------------

typedef struct {
    long n;
    size_t bytes;
    uint32_t sum;
} Fingerprint;

static int fp_visit(void *ctx, uint64_t key, const void *val, size_t len) {
    Fingerprint *f = ctx;
    f->n++;
    f->bytes += len;
    for (size_t i = 0; i < len; i++) f->sum = f->sum * 31 + ((const uint8_t *)val)[i] + (uint32_t)key;
    return 0;
}

static Fingerprint fingerprint(const char *cache, CacheMeta *m) {
    Fingerprint f = {0};
    Cache c;
    cr_assert_eq(cache_open_read(&c, cache, m), 0, "%s", err_msg());
    cr_assert_eq(cache_visit(&c, fp_visit, &f), 0, "%s", err_msg());
    cache_close(&c);
    return f;
}

// --- an extract killed at its very start --------------------------------------------

// An LMDB folder as an extract killed (SIGKILL) at its start leaves it:
// stage 0: data.mdb's two meta pages and one more page, never committed;
// stage 1: the 'meta' and 'features' databases made, no setting, no record;
// stage 2 (someone else's LMDB): a database of another name;
// stage 3: data.mdb of 4096 bytes, its meta pages cut short (the disk filled
// while LMDB wrote them).
static void make_killed_start(const char *dir, int stage) {
    cr_assert_eq(make_dirs(dir), 0, "%s", err_msg());
    MDB_env *env;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    cr_assert_eq(mdb_env_open(env, dir, MDB_NOTLS, 0664), 0);
    if (stage > 0) {
        MDB_txn *txn;
        MDB_dbi d;
        cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
        if (stage == 1) {
            cr_assert_eq(mdb_dbi_open(txn, "meta", MDB_CREATE, &d), 0);
            cr_assert_eq(mdb_dbi_open(txn, "features", MDB_CREATE, &d), 0);
        } else {
            cr_assert_eq(mdb_dbi_open(txn, "someone_elses", MDB_CREATE, &d), 0);
        }
        cr_assert_eq(mdb_txn_commit(txn), 0);
    }
    mdb_env_close(env);
    if (stage == 3) {
        char data[1100];
        snprintf(data, sizeof data, "%s/data.mdb", dir);
        cr_assert_eq(truncate(data, 4096), 0);
    }
    if (stage == 0) {  // the page a commit that never finished wrote
        char data[1100];
        snprintf(data, sizeof data, "%s/data.mdb", dir);
        cr_assert_eq(truncate(data, 3 * sysconf(_SC_PAGESIZE)), 0);
    }
}

// The breaker's finding: SIGKILLed in its first 60 ms, a fresh extract left
// a folder that neither its rerun nor --overwrite would use ("an LMDB database
// without the 'meta' and 'features' databases"), so a requeued Slurm job or
// make failed until someone deleted it. Such a folder holds nothing: the
// rerun makes the cache in it; another program's LMDB is still refused.
Test(cache_folder, an_extract_killed_at_its_start_is_rerun) {
    char *top = make_images("cache_killed", 2);
    char args[3000], cache[1100];
    for (int stage = 0; stage < 4; stage++) {
        snprintf(cache, sizeof cache, "%s/c%d", top, stage);
        make_killed_start(cache, stage);
        // A reader says what it is.
        Cache c;
        CacheMeta none;
        cr_expect_lt(cache_open_read(&c, cache, &none), 0, "stage %d", stage);
        if (stage == 0) cr_expect(strstr(err_msg(), "stopped before the first commit"), "%s", err_msg());
        snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32 --threads 1 --quiet",
                 top, cache);
        char *out;
        int rc = run_tool("extract", args, &out);
        if (stage != 2) {
            cr_expect_eq(rc, 0, "stage %d: %s", stage, out);
            CacheMeta m;
            Fingerprint f = fingerprint(cache, &m);
            cr_expect_eq(f.n, 4, "stage %d", stage);
            cache_meta_free(&m);
        } else {
            cr_expect_eq(rc, 1, "%s", out);
            cr_expect(strstr(out, "not made by extract, or damaged (left untouched)") != NULL, "%s", out);
        }
        free(out);
    }
    remove_tree(top);
    free(top);
}

// --cache naming a folder that holds other files (an image folder, by a
// slip) is refused before anything is written into it.
Test(cache_folder, a_folder_of_other_files_is_not_made_a_cache) {
    char *top = make_images("cache_other", 2);
    char args[3000], dir[1100], file[1200];
    // Another image folder (not inside --data, which has its own refusal).
    snprintf(dir, sizeof dir, "%s/photos", top);
    make_dirs(dir);
    snprintf(file, sizeof file, "%s/img 01.jpg", dir);
    write_file(file, "x", 1);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32 --threads 1 --quiet",
             top, dir);
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "holds other files (img ") && strstr(out, "a cache needs a folder of its own"), "%s", out);
    free(out);
    char lock[1200];
    snprintf(lock, sizeof lock, "%s/data.mdb", dir);
    cr_expect(access(lock, F_OK) != 0, "LMDB's files were written into the image folder");
    remove_tree(top);
    free(top);
}

// Paths past 1,100 characters were cut short inside the cache code: extract
// reported success and wrote skipped.tsv outside the cache (over whatever
// had that name), and a data folder past 1,023 characters lost its identity
// check (the breaker's finding). Paths now work up to PATH_MAX.
Test(cache_folder, long_paths_are_not_cut_short) {
    char *top = make_images("cache_long", 2);
    char deep[3000], cache[3100], args[7000];
    int at = snprintf(deep, sizeof deep, "%s", top);
    for (int k = 0; k < 7; k++) at += snprintf(deep + at, sizeof deep - at, "/%0200d", k);
    cr_assert_eq(make_dirs(deep), 0, "%s", err_msg());
    snprintf(cache, sizeof cache, "%s/cache", deep);
    // What a cut-short path would name: make it, to see it left alone.
    char cut[1100];
    snprintf(cut, sizeof cut, "%.1099s", cache);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32 --threads 1 --quiet",
             top, cache);
    extract_ok(args);
    char skipped[3200];
    snprintf(skipped, sizeof skipped, "%s/skipped.tsv", cache);
    cr_expect_eq(access(skipped, F_OK), 0, "skipped.tsv is not in the cache");
    CacheMeta m;
    Fingerprint f = fingerprint(cache, &m);
    cr_expect_eq(f.n, 4);
    cr_expect(strlen(m.data_dir) > 0 && strstr(m.data_dir, "/data") != NULL, "%s", m.data_dir);
    cache_meta_free(&m);
    // A path with no room for the cache's file names is an error, not a cut.
    char toolong[PATH_MAX + 8];
    memset(toolong, 'x', sizeof toolong - 1);
    toolong[0] = '/', toolong[sizeof toolong - 1] = '\0';
    Cache c;
    cr_expect_lt(cache_open_read(&c, toolong, NULL), 0);
    cr_expect(strstr(err_msg(), "path too long for a cache") != NULL, "%s", err_msg());
    remove_tree(top);
    free(top);
}

Test(cache_folder, another_folder_is_refused_a_moved_one_accepted) {
    char *top = make_images("folder", 6);
    char args[4000], train[1100], val[1100], cache[1100], moved[1100];
    snprintf(train, sizeof train, "%s/data", top);
    snprintf(cache, sizeof cache, "%s/cache_train", top);
    // A second folder with the same classes and file names but other images
    // (train/ and val/ of one data set).
    snprintf(val, sizeof val, "%s/val", top);
    for (int k = 0; k < 2; k++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", val, k ? "squares" : "circles");
        make_dirs(p);
        for (int i = 0; i < 6; i++) {
            uint8_t rgb[40 * 40 * 3];
            draw_shape(rgb, 40, 40, k, (unsigned)(900 + 10 * k + i));
            snprintf(p, sizeof p, "%s/%s/img %02d.jpg", val, k ? "squares" : "circles", i);
            write_jpeg(p, rgb, 40, 40, 90);
        }
    }
    const char *common = "--weights random --input-size 32 --quiet";
    snprintf(args, sizeof args, "--data '%s' --cache '%s' %s", train, cache, common);
    extract_ok(args);
    CacheMeta m0;
    Fingerprint f0 = fingerprint(cache, &m0);
    cr_expect_eq(f0.n, 12);
    cr_expect_str_eq(m0.data_dir, train);

    // The typo: val's folder into train's cache. Refused, naming both, untouched.
    char *out;
    snprintf(args, sizeof args, "--data '%s' --cache '%s' %s", val, cache, common);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, train) && strstr(out, val) && strstr(out, "belongs to its folder") &&
                  strstr(out, "--overwrite"),
              "%s", out);
    free(out);
    CacheMeta m1;
    Fingerprint f1 = fingerprint(cache, &m1);
    cr_expect(f1.n == f0.n && f1.bytes == f0.bytes && f1.sum == f0.sum, "the refused run changed the cache");
    cr_expect_str_eq(m1.data_dir, train);
    cr_expect(m1.complete);
    cache_meta_free(&m1);

    // The folder moved (renamed): recognised by its files, the cache reused
    // as it is (nothing extracted again), now belonging to the new path.
    snprintf(moved, sizeof moved, "%s/moved", top);
    cr_assert_eq(rename(train, moved), 0);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size 32", moved, cache);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "taking it as the same folder") && strstr(out, "Extracted 0 images") &&
                  strstr(out, "12 unchanged"),
              "%s", out);
    free(out);
    f1 = fingerprint(cache, &m1);
    cr_expect(f1.n == f0.n && f1.sum == f0.sum);
    cr_expect_str_eq(m1.data_dir, moved);
    cache_meta_free(&m1);

    // The same folder with files added and removed: re-keyed as before, no question asked.
    char p[1200];
    snprintf(p, sizeof p, "%s/circles/img 00.jpg", moved);
    cr_assert_eq(unlink(p), 0);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' %s", moved, cache, common);
    extract_ok(args);
    f1 = fingerprint(cache, &m1);
    cr_expect_eq(f1.n, 11);
    cache_meta_free(&m1);

    // --overwrite: the other folder replaces it on purpose.
    snprintf(args, sizeof args, "--data '%s' --cache '%s' %s --overwrite", val, cache, common);
    extract_ok(args);
    f1 = fingerprint(cache, &m1);
    cr_expect_eq(f1.n, 12);
    cr_expect_str_eq(m1.data_dir, val);
    cache_meta_free(&m1);
    cache_meta_free(&m0);
    remove_tree(top);
    free(top);
}

// --- damage --------------------------------------------------------------------------

// What train reads from a cache, for comparison.
typedef struct {
    FeatureSet fs;
    CacheMeta meta;
} Loaded;

static void expect_same(const Loaded *a, const Loaded *b, long off, int bit) {
    const FeatureSet *x = &a->fs, *y = &b->fs;
    const CacheMeta *m = &a->meta, *n = &b->meta;
    int same = x->n == y->n && x->D == y->D && x->dtype == y->dtype;
    size_t item = x->dtype == FEAT_F16 ? 2 : 4;
    for (int i = 0; same && i < x->n; i++)
        same = x->keys[i] == y->keys[i] && x->labels[i] == y->labels[i] && !strcmp(x->paths[i], y->paths[i]) &&
               !memcmp((char *)x->data + item * x->D * i, (char *)y->data + item * y->D * i, item * x->D);
    same = same && !strcmp(m->model, n->model) && !strcmp(m->weights, n->weights) && m->input_h == n->input_h &&
           m->input_w == n->input_w && !strcmp(m->interpolation, n->interpolation) &&
           !strcmp(m->preprocess, n->preprocess) && !strcmp(m->layer, n->layer) && m->feat_h == n->feat_h &&
           m->feat_w == n->feat_w && m->feat_c == n->feat_c && m->dtype == n->dtype && m->n_classes == n->n_classes &&
           !strcmp(m->shard, n->shard) && !strcmp(m->decode, n->decode) && !strcmp(m->folder, n->folder) &&
           !strcmp(m->data_dir, n->data_dir) && m->complete == n->complete && !strcmp(m->content, n->content);
    for (int k = 0; same && k < m->n_classes; k++)
        same = !strcmp(m->class_names[k], n->class_names[k]) && m->class_counts[k] == n->class_counts[k];
    cr_assert(same, "byte %ld bit %d flipped: the cache was read without an error, but not as it was written", off,
              bit);
}

static void flip(const char *file, long off, int bit) {
    int fd = open(file, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= (uint8_t)(1u << bit);
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static long file_size(const char *path) {
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    return (long)st.st_size;
}

// Flips bit (off % 8) of every byte of the first `head` bytes of each page
// (page headers, node pointers, the meta pages) and of every step-th byte
// elsewhere in cache's data.mdb, and reads each copy in-process; returns how
// many flips were caught.
static long sweep(const char *cache, long head, long step, long *flips) {
    char data[1200];
    snprintf(data, sizeof data, "%s/data.mdb", cache);
    Loaded ref;
    cr_assert_eq(features_load(&ref.fs, cache, (size_t)1 << 30, 2, &ref.meta), 0, "%s", err_msg());
    long n = file_size(data), caught = 0;
    *flips = 0;
    for (long off = 0; off < n; off++) {
        if (off % 4096 >= (off < 8192 ? 160 : head) && off % step) continue;  // all of the meta pages' fields
        int bit = (int)(off % 8);
        flip(data, off, bit);
        (*flips)++;
        Loaded got;
        int rc = features_load(&got.fs, cache, (size_t)1 << 30, 2, &got.meta);
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err_msg());
        long records = 0;
        long problems = cache_verify(cache, NULL, NULL, &records);
        flip(data, off, bit);  // restore before any assertion can end the test
        if (rc == 0) {
            expect_same(&got, &ref, off, bit);
            features_free(&got.fs);
            cache_meta_free(&got.meta);
            cr_assert_eq(problems, 0, "byte %ld bit %d: read as undamaged, but --verify found %ld problems", off, bit,
                         problems);
        } else {
            caught++;
            cr_assert(strstr(msg, "damaged") && strstr(msg, cache),
                      "byte %ld bit %d flipped: the error does not say the cache is damaged: %s", off, bit, msg);
            cr_assert_gt(problems, 0, "byte %ld bit %d: '%s', but --verify found nothing", off, bit, msg);
        }
    }
    features_free(&ref.fs);
    cache_meta_free(&ref.meta);
    return caught;
}

// Two caches of 24 records: block5_pool at 32x32 (1 KB records inside the
// leaf pages) and block4_pool (4 KB records on overflow pages).
static void make_caches(char **top, char *inl, char *ovf, size_t size) {
    *top = make_images("damage", 12);
    setenv("VGGFT_CACHE_COMMIT_SECONDS", "1000", 1);  // one transaction of records: no stale page copies
    char args[4000];
    snprintf(inl, size, "%s/inline", *top);
    snprintf(ovf, size, "%s/overflow", *top);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32 --quiet", *top, inl);
    extract_ok(args);
    snprintf(args, sizeof args,
             "--data '%s/data' --cache '%s' --weights random --input-size 32 --layer block4_pool --quiet", *top, ovf);
    extract_ok(args);
    unsetenv("VGGFT_CACHE_COMMIT_SECONDS");
}

// Rewrites record `key` through LMDB with bit `bit` of byte `at` flipped.
static void damage_record(const char *cache, const char *key, size_t at, int bit) {
    Cache c;
    CacheMeta m;
    cr_assert_eq(cache_open_read(&c, cache, &m), 0, "%s", err_msg());
    cache_close(&c);
    cr_assert_eq(cache_open_write(&c, cache, &m, 0), 0, "%s", err_msg());
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(c.env, NULL, 0, &txn), 0);
    MDB_val k = {strlen(key), (void *)key}, v;
    cr_assert_eq(mdb_get(txn, c.dbi_features, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    cr_assert_lt(at, v.mv_size);
    copy[at] ^= (uint8_t)(1u << bit);
    MDB_val nv = {v.mv_size, copy};
    cr_assert_eq(mdb_put(txn, c.dbi_features, &k, &nv, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    free(copy);
    cache_close(&c);
    cache_meta_free(&m);
}

Test(cache_damage, bit_flips_anywhere_are_caught_or_harmless, .timeout = 300) {
    char *top, inl[1100], ovf[1100];
    make_caches(&top, inl, ovf, sizeof inl);
    long flips_a, flips_b;
    // Every byte of the page headers, and prime strides elsewhere: the flips
    // fall on the fields of nodes, keys, records and settings.
    long caught_a = sweep(inl, 64 / SWEEP_SCALE, 37 * SWEEP_SCALE, &flips_a);
    long caught_b = sweep(ovf, 64 / SWEEP_SCALE, 67 * SWEEP_SCALE, &flips_b);
    // Much of a small cache is live bytes (the rest: free pages, the free
    // space inside pages): many flips must have been caught, not found
    // harmless (about 1/3 and 2/3 of them).
    cr_expect_gt(caught_a, flips_a / 5, "%ld of %ld flips caught", caught_a, flips_a);
    cr_expect_gt(caught_b, flips_b / 2, "%ld of %ld flips caught", caught_b, flips_b);
    fprintf(stderr, "damage sweep: %ld of %ld flips caught (inline records), %ld of %ld (overflow records)\n",
            caught_a, flips_a, caught_b, flips_b);
    remove_tree(top);
    free(top);
}

// train's history (Keras CSVLogger columns) without its last column, the
// seconds each epoch took.
static void read_history(const char *path, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s was not written", path);
    char line[512];
    size_t o = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        char *last = strrchr(line, ',');
        if (last) *last = '\0';
        o += (size_t)snprintf(out + o, size - o, "%s\n", line);
    }
    fclose(f);
}

// The executables on damaged copies: train and extract --verify never die of
// a signal; either they say the cache is damaged, or train's results are
// those of the undamaged cache.
Test(cache_damage, tools_never_crash_on_damaged_caches, .timeout = 300) {
    char *top, inl[1100], ovf[1100];
    make_caches(&top, inl, ovf, sizeof inl);
    const char *caches[] = {inl, ovf};
    for (int c = 0; c < 2; c++) {
        char data[1200], args[4000], head[1200], hist[1300];
        snprintf(data, sizeof data, "%s/data.mdb", caches[c]);
        snprintf(head, sizeof head, "%s/head%d.h5", top, c);
        snprintf(hist, sizeof hist, "%s/head%d.history.csv", top, c);
        snprintf(args, sizeof args, "--cache '%s' --out '%s' --epochs 2 --threads 1 --quiet", caches[c], head);
        char *out;
        cr_assert_eq(run_tool("train", args, &out), 0, "%s", out);
        free(out);
        char ref[4096];
        read_history(hist, ref, sizeof ref);
        // A byte of every other page's header, and a byte every 4099 (a
        // different place in each page): ~80 copies, two processes each.
        long n = file_size(data);
        for (long off = 0; off < n; off++) {
            long page = off / 4096, in = off % 4096;
            if (!(page % (2 * SWEEP_SCALE) == 0 && in == (page * 7 + c) % 48) && off % (4099 * SWEEP_SCALE) != 17)
                continue;
            int bit = (int)((off / 3) % 8);
            flip(data, off, bit);
            unlink(hist);
            int rc = run_tool("train", args, &out);
            char verify[1200];
            snprintf(verify, sizeof verify, "--verify '%s'", caches[c]);
            char *vout;
            int vrc = run_tool("extract", verify, &vout);
            flip(data, off, bit);
            cr_assert(rc == 0 || rc == 1, "byte %ld bit %d: train ended with status %d (a signal?):\n%s", off, bit, rc,
                      out);
            cr_assert(vrc == 0 || vrc == 1, "byte %ld bit %d: extract --verify ended with %d:\n%s", off, bit, vrc,
                      vout);
            if (rc == 1) {
                cr_assert(strstr(out, "damaged"), "byte %ld bit %d: train failed without saying why:\n%s", off, bit, out);
                cr_assert_eq(vrc, 1, "byte %ld bit %d: train found damage, --verify did not:\n%s", off, bit, vout);
            } else {
                char got[4096];
                read_history(hist, got, sizeof got);
                cr_assert_str_eq(got, ref, "byte %ld bit %d: train ran on a changed cache", off, bit);
                cr_assert_eq(vrc, 0, "byte %ld bit %d: train read it as sound, --verify did not:\n%s", off, bit, vout);
            }
            free(out);
            free(vout);
        }
    }
    remove_tree(top);
    free(top);
}

// --verify lists every damaged record, by key and path, and exits 1; the
// same cache with its bytes restored verifies clean.
Test(cache_damage, verify_lists_every_damaged_record) {
    char *top, inl[1100], ovf[1100];
    make_caches(&top, inl, ovf, sizeof inl);
    char data[1200], args[1200];
    snprintf(data, sizeof data, "%s/data.mdb", inl);
    snprintf(args, sizeof args, "--verify '%s'", inl);
    char *out;
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "sound: 24 records"), "%s", out);
    free(out);
    // Damage the feature bytes of three records (keys = folder order).
    const char *names[] = {"circles/img 02.jpg", "circles/img 07.jpg", "squares/img 11.jpg"};
    const char *keys[] = {"0000000002", "0000000007", "0000000023"};
    for (int i = 0; i < 3; i++) damage_record(inl, keys[i], 50 + strlen(names[i]) + 40, 2);  // inside the zstd frame
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    for (int i = 0; i < 3; i++) cr_expect(strstr(out, names[i]) != NULL, "%s not listed:\n%s", names[i], out);
    cr_expect(strstr(out, "3 problems found") && strstr(out, "re-extract"), "%s", out);
    free(out);
    // train names the first, and refuses.
    snprintf(args, sizeof args, "--cache '%s' --out '%s/h.h5' --epochs 1 --quiet", inl, top);
    cr_expect_eq(run_tool("train", args, &out), 1, "%s", out);
    cr_expect((strstr(out, names[0]) || strstr(out, names[1]) || strstr(out, names[2])) && strstr(out, "damaged"),
              "%s", out);
    free(out);
    // extract on it again: the damaged records are deleted and extracted again.
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32", top, inl);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "3 damaged records deleted") && strstr(out, "Extracted 3 images"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--verify '%s'", inl);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// A damaged page: every reader refuses with the page named; --overwrite
// replaces the cache (LMDB is never asked to drop the damaged trees).
Test(cache_damage, damaged_pages_are_refused_and_overwrite_replaces_them) {
    char *top, inl[1100], ovf[1100];
    make_caches(&top, inl, ovf, sizeof inl);
    char data[1200], args[1200];
    snprintf(data, sizeof data, "%s/data.mdb", ovf);
    // Page 2 onwards: find a leaf page of the features tree (24 records keyed
    // "0000000000"...) and break its free-space bound (mp_lower), the damage
    // that made liblmdb read outside the page.
    long n = file_size(data), page = -1;
    uint8_t *bytes = malloc((size_t)n);
    FILE *f = fopen(data, "rb");
    cr_assert_eq(fread(bytes, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    for (long p = 2; p * 4096 < n && page < 0; p++) {
        const uint8_t *pg = bytes + p * 4096;
        for (int j = 16; pg[10] == 0x02 && j + 10 <= 4096 && page < 0; j++)
            if (!memcmp(pg + j, "0000000005", 10)) page = p;
    }
    free(bytes);
    cr_assert_geq(page, 0, "no leaf page with record 0000000005");
    flip(data, page * 4096 + 13, 6);  // mp_lower += 16384
    char *out;
    snprintf(args, sizeof args, "--cache '%s' --out '%s/h.h5' --epochs 1 --quiet", ovf, top);
    cr_expect_eq(run_tool("train", args, &out), 1, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "page %ld", page);
    cr_expect(strstr(out, "damaged") && strstr(out, want) && strstr(out, "--verify"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--info '%s'", ovf);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    free(out);
    const char *common = "--weights random --input-size 32 --layer block4_pool --quiet";
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' %s", top, ovf, common);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, want) && strstr(out, "--overwrite"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' %s --overwrite", top, ovf, common);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--verify '%s'", ovf);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// --- a full disk -------------------------------------------------------------------------

static char mounted[1200];

static void unmount_tmpfs(void) {
    if (mounted[0]) umount2(mounted, MNT_DETACH);
    mounted[0] = '\0';
}

// A file system of fs_size that the cache of input_size features fills part
// way: the error says so, and the rerun with room completes the cache.
static void full_disk(int input_size, const char *fs_size) {
    char *top = make_images("disk", 18);
    char ref[1100], mnt[1100], cache[1200], args[4000], common[200], opts[64];
    snprintf(ref, sizeof ref, "%s/ref", top);
    snprintf(mnt, sizeof mnt, "%s/mnt", top);
    snprintf(cache, sizeof cache, "%s/cache", mnt);
    snprintf(common, sizeof common, "--weights random --input-size %d --batch 4 --quiet", input_size);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' %s", top, ref, common);
    extract_ok(args);
    make_dirs(mnt);
    snprintf(opts, sizeof opts, "size=%s", fs_size);
    if (mount("tmpfs", mnt, "tmpfs", 0, opts) < 0) {
        int e = errno;
        remove_tree(top);
        free(top);
        cr_skip_test("cannot mount a small tmpfs to fill (%s): needs root (or CAP_SYS_ADMIN)", strerror(e));
    }
    snprintf(mounted, sizeof mounted, "%s", mnt);
    setenv("VGGFT_CACHE_COMMIT_EVERY", "4", 1);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' %s", top, cache, common);
    char *out;
    int rc = run_tool("extract", args, &out);
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "No space left on device") && strstr(out, cache) && strstr(out, "rerun"), "%s", out);
    free(out);
    // What was committed is a sound, resumable cache.
    char verify[1300];
    snprintf(verify, sizeof verify, "--verify '%s'", cache);
    cr_expect_eq(run_tool("extract", verify, &out), 0, "%s", out);
    free(out);
    // Room again: the rerun completes it, as an uninterrupted run would have.
    cr_assert_eq(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=8m"), 0, "%s", strerror(errno));
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    free(out);
    CacheMeta m1, m2;
    Fingerprint a = fingerprint(cache, &m1), b = fingerprint(ref, &m2);
    cr_expect(a.n == b.n && a.bytes == b.bytes && a.sum == b.sum, "%ld records after the rerun, %ld in one run", a.n,
              b.n);
    cr_expect_str_eq(m1.content, m2.content);
    cr_expect(m1.complete);
    cache_meta_free(&m1), cache_meta_free(&m2);
    unmount_tmpfs();
    remove_tree(top);
    free(top);
}

// Small records (32x32 inputs): LMDB sees ENOSPC. Larger ones: a page
// write cut short, which LMDB reports as EIO; both are a full disk.
Test(cache_disk, full_disk_names_the_cache_and_resumes, .fini = unmount_tmpfs) { full_disk(32, "48k"); }
Test(cache_disk, full_disk_with_larger_records, .fini = unmount_tmpfs) { full_disk(96, "160k"); }

// A disk already full when a cache is made, or when a cache copied without
// its lock file is read: LMDB maps lock.mdb, a sparse file, and writing its
// reader table through the map killed the process with SIGBUS (exit 135, no
// message; the breaker's finding). Now extract says which file and why, and
// readers (train, extract --info) read the cache without a lock file.
Test(cache_disk, full_disk_before_the_lock_file_is_an_error_not_sigbus, .fini = unmount_tmpfs) {
    char *top = make_images("disk_lock", 2);
    char mnt[1100], args[4000], src[1100], path[1300];
    snprintf(mnt, sizeof mnt, "%s/mnt", top);
    snprintf(src, sizeof src, "%s/src", top);
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s' --weights random --input-size 32 --quiet", top, src);
    extract_ok(args);
    make_dirs(mnt);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0) {
        int e = errno;
        remove_tree(top);
        free(top);
        cr_skip_test("cannot mount a small tmpfs to fill (%s): needs root (or CAP_SYS_ADMIN)", strerror(e));
    }
    snprintf(mounted, sizeof mounted, "%s", mnt);
    // A copy of the cache without lock.mdb, then a disk with no room left.
    snprintf(path, sizeof path, "%s/copy", mnt);
    make_dirs(path);
    char from[1300], to[1400];
    snprintf(from, sizeof from, "%s/data.mdb", src);
    snprintf(to, sizeof to, "%s/copy/data.mdb", mnt);
    size_t n;
    char *bytes = read_file(from, &n);
    write_file(to, bytes, n);
    free(bytes);
    snprintf(path, sizeof path, "%s/fill", mnt);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    static char zeros[4096];
    while (fwrite(zeros, 1, sizeof zeros, f) == sizeof zeros && fflush(f) == 0) {
    }
    fclose(f);
    char *out;
    snprintf(args, sizeof args, "--data '%s/data' --cache '%s/new' --weights random --input-size 32 --quiet", top, mnt);
    int rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 1, "exit %d (135: SIGBUS): %s", rc, out);
    cr_expect(strstr(out, "/new/lock.mdb: No space left on device") != NULL, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--info '%s/copy'", mnt);
    rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 0, "exit %d (135: SIGBUS): %s", rc, out);
    free(out);
    snprintf(args, sizeof args, "--cache '%s/copy' --out '%s/h.h5' --epochs 1 --quiet", mnt, top);
    rc = run_tool("train", args, &out);
    cr_expect_eq(rc, 0, "exit %d (135: SIGBUS): %s", rc, out);
    free(out);
    unmount_tmpfs();
    remove_tree(top);
    free(top);
}
