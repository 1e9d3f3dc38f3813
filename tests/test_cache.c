// The feature cache: f16 conversion, record encoding, damage detection,
// settings checks, map growth.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "error.h"
#include "half.h"
#include "testutil.h"

Test(half, known_values_and_rounding) {
    // IEEE binary16 bit patterns worked by hand.
    cr_expect_eq(f32_to_f16(1.0f), 0x3c00);
    cr_expect_eq(f32_to_f16(-2.0f), 0xc000);
    cr_expect_eq(f32_to_f16(65504.0f), 0x7bff);        // largest finite half
    cr_expect_eq(f32_to_f16(65520.0f), 0x7c00);        // rounds up to infinity
    cr_expect_eq(f32_to_f16(0.0f), 0x0000);
    cr_expect_eq(f32_to_f16(5.9604645e-8f), 0x0001);   // smallest subnormal, 2^-24
    cr_expect_eq(f32_to_f16(6.1035156e-5f), 0x0400);   // smallest normal, 2^-14
    // 1 + 2^-11 is halfway between 1 and 1+2^-10: ties to even (1.0).
    cr_expect_eq(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);
    // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even).
    cr_expect_eq(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
    cr_expect_float_eq(f16_to_f32(0x3555), 0.33325195f, 1e-9);
    cr_expect_float_eq(f16_to_f32(0x0001), 5.9604645e-8f, 1e-15);
    cr_expect(isinf(f16_to_f32(0x7c00)));
    // Every finite half survives a round trip through float.
    for (uint32_t h = 0; h < 0x7c00; h++) cr_assert_eq(f32_to_f16(f16_to_f32((uint16_t)h)), h, "0x%04x", h);
}

static CacheMeta meta_for_test(char **names) { return test_cache_meta(2, 64, names, 2); }

static char *cats_dogs[] = {"cats", "dogs"};

// A new cache with settings want at PATH = DIR/c, DIR a new temporary
// folder (returned: remove_tree and free it).
static char *open_new_cache(Cache *c, const CacheMeta *want, char *path, size_t size) {
    char *dir = make_temp_dir("cache");
    snprintf(path, size, "%s/c", dir);
    cr_assert_eq(cache_open_write(c, path, want, 0), 0, "%s", err_msg());
    return dir;
}

Test(cache, records_round_trip_and_damage_is_named) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_new_cache(&c, &want, path, sizeof path);
    const int D = 256;
    float f[256], back[256];
    for (int i = 0; i < D; i++) f[i] = i % 3 ? 0.0f : 0.37f * i;  // sparse, like ReLU features
    for (int dt = 0; dt < 2; dt++) {
        FeatDtype dtype = dt ? FEAT_F32 : FEAT_F16;
        CacheRecord r = {.label = 1, .path = "dogs/a b.jpg", .features = f};
        for (int i = 0; i < 32; i++) r.sha256[i] = (uint8_t)i;
        long len = cache_record_encode(&c, &r, D, dtype);
        cr_assert_gt(len, 0);
        uint8_t *val = malloc((size_t)len);
        memcpy(val, c.buf + (size_t)D * (dtype == FEAT_F16 ? 2 : 4), (size_t)len);
        int32_t label;
        const char *p;
        int plen;
        uint8_t sha[32];
        cr_assert_eq(cache_record_decode(c.dctx, 7, val, (size_t)len, D, &label, &p, &plen, sha, back), 0, "%s",
                     err_msg());
        cr_expect_eq(label, 1);
        cr_expect_eq(plen, 12);
        cr_expect_eq(memcmp(p, "dogs/a b.jpg", 12), 0);
        cr_expect_arr_eq(sha, r.sha256, 32);
        for (int i = 0; i < D; i++)
            cr_assert_float_eq(back[i], dtype == FEAT_F32 ? f[i] : f16_to_f32(f32_to_f16(f[i])), 0, "%d", i);
        // One flipped bit anywhere is caught and reported with key and path.
        val[len / 2] ^= 0x10;
        cr_expect_eq(cache_record_decode(c.dctx, 7, val, (size_t)len, D, &label, &p, &plen, sha, back), -1);
        cr_expect(strstr(err_msg(), "0000000007") && strstr(err_msg(), "dogs/a b.jpg") &&
                      strstr(err_msg(), "damaged"),
                  "%s", err_msg());
        free(val);
    }
    cache_close(&c);
    remove_tree(dir);
    free(dir);
}

Test(cache, settings_mismatch_refused_and_overwrite) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_new_cache(&c, &want, path, sizeof path);
    float f[256] = {1.0f};
    CacheRecord r = {.label = 0, .path = "cats/x.jpg", .features = f};
    cr_assert_eq(cache_put(&c, 0, &r, 256, FEAT_F16), 0, "%s", err_msg());
    cr_assert_eq(cache_commit(&c), 0);
    cache_close(&c);

    CacheMeta other = want;
    char *names2[] = {"cats", "wolves"};
    other.class_names = names2;
    cr_expect_eq(cache_open_write(&c, path, &other, 0), -1);
    cr_expect(strstr(err_msg(), "class 1 is 'dogs' in the cache, 'wolves' in this run") &&
                  strstr(err_msg(), "--overwrite"),
              "%s", err_msg());
    other = want;
    other.dtype = FEAT_F32;
    cr_expect_eq(cache_open_write(&c, path, &other, 0), -1);
    cr_expect(strstr(err_msg(), "dtype: the cache has f16, this run f32"), "%s", err_msg());

    // The refused runs changed nothing.
    CacheMeta back;
    cr_assert_eq(cache_open_read(&c, path, &back), 0, "%s", err_msg());
    cr_expect_eq(cache_count(&c), 1);
    cr_expect_eq(back.dtype, FEAT_F16);
    cache_meta_free(&back);
    cache_close(&c);

    cr_assert_eq(cache_open_write(&c, path, &other, 1), 0, "%s", err_msg());
    cr_expect_eq(cache_count(&c), 0, "--overwrite empties the cache");
    cache_close(&c);
    remove_tree(dir);
    free(dir);
}

// A new cache of 4096-float f32 records in a temporary folder (returned),
// with a 1 MB first map and a commit every `commit_every` writes.
static char *open_small_map(Cache *c, CacheMeta *want, const char *commit_every, char *path, size_t size) {
    setenv("VGGFT_CACHE_MAP_MB", "1", 1);
    setenv("VGGFT_CACHE_COMMIT_EVERY", commit_every, 1);
    want->feat_h = want->feat_w = 1, want->feat_c = 4096;
    want->dtype = FEAT_F32;
    return open_new_cache(c, want, path, size);
}

// n records of 16 KB that zstd cannot shrink much, keys 0..n-1.
static void put_noise_records(Cache *c, int n) {
    float *f = malloc(sizeof(float) * 4096);
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < 4096; i++) f[i] = (float)((k * 7919 + i * 104729) % 10007) * 1.2345e-3f;
        CacheRecord r = {.label = k % 2, .path = "x.jpg", .features = f};
        cr_assert_eq(cache_put(c, (uint64_t)k, &r, 4096, FEAT_F32), 0, "record %d: %s", k, err_msg());
    }
    free(f);
}

// One writer at a time: a second process opening the cache for writing
// while the first holds it is refused at once (two extract jobs given one
// --cache both did all the work before); readers are not held up.
Test(cache, one_writer_at_a_time) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_new_cache(&c, &want, path, sizeof path);
    cache_close(&c);
    int go[2], done[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(done), 0);
    pid_t child = fork();
    if (child == 0) {  // the first writer: holds the cache until told
        Cache w;
        char x;
        int ok = cache_open_write(&w, path, &want, 0) == 0;
        if (write(go[1], ok ? "1" : "0", 1) != 1 || read(done[0], &x, 1) != 1) _exit(2);
        cache_close(&w);
        _exit(0);
    }
    char ok;
    cr_assert_eq(read(go[0], &ok, 1), 1);
    cr_assert_eq(ok, '1', "the first writer could not open the cache");
    cr_expect_eq(cache_open_write(&c, path, &want, 0), -1);
    cr_expect(strstr(err_msg(), "another extract is writing this cache now"), "%s", err_msg());
    CacheMeta m;
    cr_expect_eq(cache_open_read(&c, path, &m), 0, "a reader is not held up: %s", err_msg());
    cache_meta_free(&m);
    cache_close(&c);
    cr_assert_eq(write(done[1], "x", 1), 1);
    int st;
    waitpid(child, &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_expect_eq(cache_open_write(&c, path, &want, 0), 0, "once the first is done: %s", err_msg());
    cache_close(&c);
    remove_tree(dir);
}

Test(cache, map_grows_when_full) {
    // A 1 MB first map and ~6 MB of incompressible records: LMDB reports
    // MDB_MAP_FULL several times and every record must still be there.
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_small_map(&c, &want, "50", path, sizeof path);
    const int N = 400;
    put_noise_records(&c, N);
    cr_assert_eq(cache_commit(&c), 0, "%s", err_msg());
    cr_expect_gt(c.map_size, (size_t)4 << 20);
    cr_expect_eq(cache_count(&c), N);
    cr_assert_eq(cache_store_counts(&c, &want), 0, "%s", err_msg());
    cr_expect_eq(want.class_counts[0], N / 2);
    cr_expect_eq(want.class_counts[1], N / 2);
    free(want.class_counts);
    cache_close(&c);
    unsetenv("VGGFT_CACHE_MAP_MB");
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    remove_tree(dir);
    free(dir);
}

Test(cache, not_a_cache) {
    char *dir = make_temp_dir("cache");
    Cache c;
    CacheMeta m;
    cr_expect_eq(cache_open_read(&c, dir, &m), -1);
    cr_expect(strstr(err_msg(), dir) && strstr(err_msg(), "not a feature cache"), "%s", err_msg());
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none", dir);
    cr_expect_eq(cache_open_read(&c, missing, &m), -1);
    cr_expect(strstr(err_msg(), "no such cache"), "%s", err_msg());
    remove_tree(dir);
    free(dir);
}

// Records commit by bytes as well as by count: each commit syncs the file
// (milliseconds a GPU run waits for), so the count is large (4,096) and
// 32 MiB of pending records bound the memory kept for a replay.
Test(cache, commits_by_bytes_as_well_as_by_count) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_small_map(&c, &want, "100000", path, sizeof path);  // no commit by count
    cr_expect_eq(c.batch_bytes, (size_t)32 << 20, "the default byte budget");
    c.commit_seconds = -1;  // nor by time
    c.batch_bytes = 100 << 10;  // about 6 of these 16 KB records
    put_noise_records(&c, 40);
    cr_expect_lt(c.n_pending, 10, "%d puts pending: no commit by bytes", c.n_pending);
    cr_expect_lt(c.pending_bytes, c.batch_bytes);
    // Committed ones are visible to a reader while the rest are pending.
    Cache r;
    CacheMeta back;
    cr_assert_eq(cache_open_read(&r, path, &back), 0, "%s", err_msg());
    cr_expect_eq(cache_count(&r), 40 - c.n_pending);
    cache_close(&r);
    cache_meta_free(&back);
    c.batch_bytes = SIZE_MAX;
    put_noise_records(&c, 40);  // the same keys again
    cr_expect_geq(c.n_pending, 40, "without the budget the puts stay pending");
    cr_assert_eq(cache_commit(&c), 0, "%s", err_msg());
    cache_close(&c);
    unsetenv("VGGFT_CACHE_MAP_MB");
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    remove_tree(dir);
    free(dir);
}

// A transaction that outgrows the map is replayed on a bigger one: every
// write in it, settings included, not only the records.
Test(cache, map_growth_replays_settings_too) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_small_map(&c, &want, "100000", path, sizeof path);  // one transaction for everything
    size_t first_map = c.map_size;
    CacheMeta changed = want;
    snprintf(changed.weights, sizeof changed.weights, "sha256:changed");
    cr_assert_eq(cache_write_meta(&c, &changed), 0, "%s", err_msg());  // same transaction as the records
    put_noise_records(&c, 300);
    cr_assert_eq(cache_commit(&c), 0, "%s", err_msg());
    cr_expect_gt(c.map_size, first_map, "the map never grew: the test did not exercise the replay");
    cache_close(&c);
    unsetenv("VGGFT_CACHE_MAP_MB");
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    CacheMeta back;
    cr_assert_eq(cache_open_read(&c, path, &back), 0, "%s", err_msg());
    cr_expect_str_eq(back.weights, "sha256:changed");
    cr_expect_eq(cache_count(&c), 300);
    cache_meta_free(&back);
    cache_close(&c);
    remove_tree(dir);
    free(dir);
}

// --- damage, settings checksums, contents -------------------------------------------

#include <fcntl.h>
#include <unistd.h>

#include "feature_set.h"
#include "lmdb_check.h"

// A finished cache of n small records (keys 0..n-1, both classes) in a new
// temporary folder (returned; the cache is DIR/c).
static char *make_finished_cache(int n, char *path, size_t size) {
    char *dir = make_temp_dir("cache");
    snprintf(path, size, "%s/c", dir);
    static char *names[] = {"cats", "dogs"};
    CacheMeta want = meta_for_test(names);
    want.feat_h = want.feat_w = 1, want.feat_c = 64;
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &want, 0), 0, "%s", err_msg());
    float f[64];
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < 64; i++) f[i] = (float)((k * 31 + i * 7) % 13);
        char p[32];
        snprintf(p, sizeof p, "%s/%03d.jpg", names[k % 2], k);
        CacheRecord r = {.label = k % 2, .path = p, .features = f};
        cr_assert_eq(cache_put(&c, (uint64_t)k, &r, 64, FEAT_F16), 0, "%s", err_msg());
    }
    cr_assert_eq(cache_store_counts(&c, &want), 0, "%s", err_msg());
    free(want.class_counts);
    cache_close(&c);
    return dir;
}

// Runs fn on the cache's LMDB inside one write transaction (raw damage that
// the cache API would never write).
static void raw_edit(const char *path, void (*fn)(MDB_txn *, Cache *)) {
    Cache c;
    CacheMeta m;
    cr_assert_eq(cache_open_read(&c, path, &m), 0, "%s", err_msg());
    cache_close(&c);
    cr_assert_eq(cache_open_write(&c, path, &m, 0), 0, "%s", err_msg());
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(c.env, NULL, 0, &txn), 0);
    fn(txn, &c);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    cache_close(&c);
    cache_meta_free(&m);
}

// The same, through LMDB alone (the cache's settings are not rewritten).
static void raw_edit_lmdb(const char *path, void (*fn)(MDB_txn *, Cache *)) {
    Cache c = {0};
    cr_assert_eq(mdb_env_create(&c.env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(c.env, 4), 0);
    cr_assert_eq(mdb_env_open(c.env, path, 0, 0664), 0);
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(c.env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &c.dbi_meta), 0);
    cr_assert_eq(mdb_dbi_open(txn, "features", 0, &c.dbi_features), 0);
    fn(txn, &c);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(c.env);
}

// Makes a cache as extract did before checksums (format 1).
static void make_format_1(MDB_txn *txn, Cache *c) {
    const char *gone[] = {"checksum", "content", "data_dir"};
    for (int i = 0; i < 3; i++) {
        MDB_val k = {strlen(gone[i]), (void *)gone[i]};
        cr_assert_eq(mdb_del(txn, c->dbi_meta, &k, NULL), 0);
    }
    MDB_val k = {6, "format"}, v = {1, "1"};
    cr_assert_eq(mdb_put(txn, c->dbi_meta, &k, &v, 0), 0);
}

static void rename_class(MDB_txn *txn, Cache *c) {
    MDB_val k = {7, "classes"}, v = {9, "cats\ndogz"};
    cr_assert_eq(mdb_put(txn, c->dbi_meta, &k, &v, 0), 0);
}

static void rename_class_back(MDB_txn *txn, Cache *c) {
    MDB_val k = {7, "classes"}, v = {9, "cats\ndogs"};
    cr_assert_eq(mdb_put(txn, c->dbi_meta, &k, &v, 0), 0);
}

static void drop_record_3(MDB_txn *txn, Cache *c) {
    MDB_val k = {10, "0000000003"};
    cr_assert_eq(mdb_del(txn, c->dbi_features, &k, NULL), 0);
}

static void add_record_9(MDB_txn *txn, Cache *c) {
    // A copy of record 2 under a key the run never wrote.
    MDB_val k = {10, "0000000002"}, v, k9 = {10, "0000000009"};
    cr_assert_eq(mdb_get(txn, c->dbi_features, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    MDB_val nv = {v.mv_size, copy};
    cr_assert_eq(mdb_put(txn, c->dbi_features, &k9, &nv, 0), 0);
    free(copy);
}

static void damage_key(MDB_txn *txn, Cache *c) {
    // Record 4 moved to a key that is not one (what a flipped digit makes).
    MDB_val k = {10, "0000000004"}, v, bad = {10, "00000000\xcf" "4"};
    cr_assert_eq(mdb_get(txn, c->dbi_features, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    MDB_val nv = {v.mv_size, copy};
    cr_assert_eq(mdb_del(txn, c->dbi_features, &k, NULL), 0);
    cr_assert_eq(mdb_put(txn, c->dbi_features, &bad, &nv, 0), 0);
    free(copy);
}

Test(cache, changed_settings_fail_their_checksum) {
    char path[600];
    char *dir = make_finished_cache(6, path, sizeof path);
    Cache c;
    CacheMeta m;
    cr_assert_eq(cache_open_read(&c, path, &m), 0, "%s", err_msg());
    cr_expect(m.checksummed && m.complete);
    cr_expect(!strncmp(m.content, "6 records, keys 0-5, sha256:", 28), "%s", m.content);
    cache_meta_free(&m);
    cache_close(&c);
    raw_edit(path, rename_class);  // a class name changed behind the cache's back
    cr_expect_eq(cache_open_read(&c, path, &m), -1, "a changed class name was read without an error");
    cr_expect(strstr(err_msg(), "settings are damaged") && strstr(err_msg(), "re-extract") && strstr(err_msg(), path),
              "%s", err_msg());
    remove_tree(dir);
    free(dir);
}

Test(cache, lost_added_and_rekeyed_records_are_named) {
    char path[600];
    void (*edits[])(MDB_txn *, Cache *) = {drop_record_3, add_record_9, damage_key};
    const char *want[] = {"holds 5 records where its extract run wrote 6; missing: 0000000003",
                          "holds 7 records where its extract run wrote 6; not written by the run: 0000000009",
                          "record key '00000000\\xcf4' is damaged"};
    for (int e = 0; e < 3; e++) {
        char *dir = make_finished_cache(6, path, sizeof path);
        raw_edit(path, edits[e]);
        FeatureSet fs;
        CacheMeta m;
        cr_expect_eq(features_load(&fs, path, 1 << 20, 2, &m), -1, "edit %d was not noticed", e);
        cr_expect(strstr(err_msg(), want[e]) && strstr(err_msg(), "damaged"), "edit %d: %s", e, err_msg());
        long problems = cache_verify(path, NULL, NULL, NULL);
        cr_expect_gt(problems, 0, "edit %d: --verify found nothing", e);
        remove_tree(dir);
        free(dir);
    }
}

Test(cache, content_lists_key_runs) {
    CacheContent cc;
    cr_assert_eq(cache_content_begin(&cc), 0);
    uint64_t keys[] = {0, 1, 2, 3, 7, 10, 13, 16, 20, 21, 40};
    for (int i = 0; i < 11; i++) cache_content_add(&cc, keys[i], "abcd", 4);
    char out[512];
    cr_assert_eq(cache_content_end(&cc, out, sizeof out), 0);
    cr_expect(!strncmp(out, "11 records, keys 0-3,7-16/3,20-21,40, sha256:", 45), "%s", out);
    // The check names what differs, read back from that list.
    CacheMeta m = {0};
    snprintf(m.content, sizeof m.content, "%s", out);
    uint64_t got[] = {0, 1, 2, 3, 7, 10, 16, 20, 21, 40, 41};
    cr_expect_eq(cache_content_check("c", &m, "11 records, other", got, 11), -1);
    cr_expect(strstr(err_msg(), "missing: 0000000013") && strstr(err_msg(), "not written by the run: 0000000041"), "%s",
              err_msg());
    cr_expect_eq(cache_content_check("c", &m, out, keys, 11), 0);
}

Test(cache, decoder_checks_every_length_first) {
    char path[600];
    CacheMeta want = meta_for_test(cats_dogs);
    Cache c;
    char *dir = open_new_cache(&c, &want, path, sizeof path);
    float f[256] = {0.5f}, back[256];
    CacheRecord r = {.label = 1, .path = "dogs/x.jpg", .features = f};
    long len = cache_record_encode(&c, &r, 256, FEAT_F16);
    uint8_t *val = malloc((size_t)len);
    memcpy(val, c.buf + 512, (size_t)len);
    // Every prefix is refused (never read past its end: ASan would see it).
    for (long n = 0; n < len; n++) {
        uint8_t *cut = malloc((size_t)(n ? n : 1));
        memcpy(cut, val, (size_t)n);
        cr_assert_eq(cache_record_decode(c.dctx, 1, cut, (size_t)n, 256, NULL, NULL, NULL, NULL, back), -1, "%ld", n);
        free(cut);
    }
    // A path length past the end, before the crc is even computed.
    val[48] = 0xff, val[49] = 0xff;
    cr_expect_eq(cache_record_decode(c.dctx, 1, val, (size_t)len, 256, NULL, NULL, NULL, NULL, back), -1);
    cr_expect(strstr(err_msg(), "damaged"), "%s", err_msg());
    // Features need their count.
    memcpy(val, c.buf + 512, (size_t)len);
    cr_expect_eq(cache_record_decode(c.dctx, 1, val, (size_t)len, -1, NULL, NULL, NULL, NULL, back), -1);
    free(val);
    cache_close(&c);
    remove_tree(dir);
    free(dir);
}

// The four kinds of one-byte damage found in the field (../shared/cases/
// damaged-cache, made again here): a node's data size (SIGBUS in our decoder),
// a leaf page's mp_lower (SIGSEGV inside liblmdb), a key digit (a record
// silently skipped): each refused before LMDB walks the page, naming it.
Test(cache, damaged_pages_are_found_before_lmdb_reads_them) {
    char path[600], data[700];
    char *dir = make_finished_cache(24, path, sizeof path);
    snprintf(data, sizeof data, "%s/data.mdb", path);
    int fd = open(data, O_RDONLY);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t *file = malloc((size_t)size);
    cr_assert_eq(pread(fd, file, (size_t)size, 0), size);
    close(fd);
    // The leaf page holding key 0000000000 (written once: no stale copies).
    long page = -1, node = -1;
    for (long p = 2; p * 4096 < size && page < 0; p++)
        for (long j = 16; j + 18 <= 4096 && file[p * 4096 + 10] == 2; j++)
            if (!memcmp(file + p * 4096 + j, "0000000000", 10) && file[p * 4096 + j - 2] == 10) {
                page = p, node = j - 8;  // the node header precedes its key
                break;
            }
    cr_assert_geq(page, 0);
    struct {
        long off;
        uint8_t x;
        const char *want;
    } kinds[] = {
        {page * 4096 + node + 1, 0xff, "runs past the end of the page"},         // data size, high byte of mn_lo
        {page * 4096 + 12, 0xff, "impossible"},                                // mp_lower
        {page * 4096 + node + 8 + 9, 0xff, "key"},                             // last digit of the key
    };
    for (int i = 0; i < 3; i++) {
        fd = open(data, O_WRONLY);
        uint8_t b = file[kinds[i].off] ^ kinds[i].x;
        cr_assert_eq(pwrite(fd, &b, 1, kinds[i].off), 1);
        close(fd);
        LmdbCheck opt = {0};
        cr_expect_eq(lmdb_check(data, &opt), 1, "damage %d not found", i);
        char want_page[32];
        snprintf(want_page, sizeof want_page, "page %ld", page);
        cr_expect(strstr(err_msg(), want_page) && strstr(err_msg(), kinds[i].want), "damage %d: %s", i, err_msg());
        FeatureSet fs;
        CacheMeta m;
        cr_expect_eq(features_load(&fs, path, 1 << 20, 1, &m), -1);
        cr_expect(strstr(err_msg(), "the cache is damaged") && strstr(err_msg(), want_page), "%s", err_msg());
        fd = open(data, O_WRONLY);
        cr_assert_eq(pwrite(fd, file + kinds[i].off, 1, kinds[i].off), 1);
        close(fd);
    }
    LmdbCheck opt = {0};
    cr_expect_eq(lmdb_check(data, &opt), 0, "%s", err_msg());
    free(file);
    remove_tree(dir);
    free(dir);
}

// Caches made before checksums (format 1) are still read, flagged as such;
// a record they lost shows in the per-class counts they did record.
Test(cache, older_caches_without_checksums) {
    char path[600];
    char *dir = make_finished_cache(6, path, sizeof path);
    raw_edit_lmdb(path, make_format_1);
    CacheMeta m;
    FeatureSet fs;
    cr_assert_eq(features_load(&fs, path, 1 << 20, 1, &m), 0, "%s", err_msg());
    cr_expect(!m.checksummed);
    features_free(&fs);
    cache_meta_free(&m);
    // Their class names are checked against the records' paths.
    raw_edit_lmdb(path, rename_class);
    cr_expect_eq(features_load(&fs, path, 1 << 20, 1, &m), -1);
    cr_expect(strstr(err_msg(), "class 1 is 'dogz'") && strstr(err_msg(), "damaged"), "%s", err_msg());
    raw_edit_lmdb(path, rename_class_back);
    raw_edit_lmdb(path, drop_record_3);
    cr_expect_eq(features_load(&fs, path, 1 << 20, 1, &m), -1);
    cr_expect(strstr(err_msg(), "has 2 records where its extract run wrote 3") && strstr(err_msg(), "damaged"), "%s",
              err_msg());
    remove_tree(dir);
    free(dir);
}

// No false alarms: random LMDB workloads (small values in the leaves, large
// ones on overflow pages, values rewritten smaller in place, deletions,
// aborted transactions, a tree three levels deep, a free list in use) leave
// states the page check must find sound, after every commit.
Test(cache, page_check_accepts_whatever_lmdb_writes) {
    char *dir = make_temp_dir("cache");
    char data[600];
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    MDB_env *env;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, (size_t)1 << 30);
    cr_assert_eq(mdb_env_open(env, dir, MDB_NOTLS | MDB_NOSYNC, 0664), 0);
    char *buf = malloc(16384);
    unsigned s = 12345;
#define NEXT() (s = s * 1103515245u + 12345u, (s >> 8))
    for (int t = 0; t < 150; t++) {
        MDB_txn *txn;
        MDB_dbi f, m;
        cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
        cr_assert_eq(mdb_dbi_open(txn, "features", MDB_CREATE, &f), 0);
        cr_assert_eq(mdb_dbi_open(txn, "meta", MDB_CREATE, &m), 0);
        for (int o = 0, ops = 1 + NEXT() % 40; o < ops; o++) {
            char k[16];
            snprintf(k, sizeof k, "%010u", NEXT() % 1500);
            MDB_val key = {10, k};
            if (NEXT() % 4 == 0) {
                mdb_del(txn, f, &key, NULL);
                continue;
            }
            size_t len = NEXT() % 3 == 0 ? 100 + NEXT() % 12000 : 50 + NEXT() % 1500;
            for (size_t i = 0; i < len; i++) buf[i] = (char)NEXT();
            MDB_val v = {len, buf};
            cr_assert_eq(mdb_put(txn, f, &key, &v, 0), 0);
        }
        char mk[8];
        snprintf(mk, sizeof mk, "k%u", NEXT() % 30);
        MDB_val key = {strlen(mk), mk}, v = {5 + NEXT() % 3000, buf};
        cr_assert_eq(mdb_put(txn, m, &key, &v, 0), 0);
        if (NEXT() % 10 == 0) mdb_txn_abort(txn);
        else cr_assert_eq(mdb_txn_commit(txn), 0);
        MDB_txn *r;
        cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &r), 0);
        LmdbCheck opt = {.txnid = mdb_txn_id(r)};
        long bad = lmdb_check(data, &opt);
        mdb_txn_abort(r);
        cr_assert_eq(bad, 0, "after transaction %d: %s", t, err_msg());
    }
#undef NEXT
    MDB_txn *r;
    MDB_dbi f;
    MDB_stat st;
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &r), 0);
    cr_assert_eq(mdb_dbi_open(r, "features", 0, &f), 0);
    cr_assert_eq(mdb_stat(r, f, &st), 0);
    mdb_txn_abort(r);
    cr_expect(st.ms_depth >= 3 && st.ms_overflow_pages > 100, "depth %u, %zu overflow pages: too small a workload",
              st.ms_depth, st.ms_overflow_pages);
    free(buf);
    mdb_env_close(env);
    remove_tree(dir);
    free(dir);
}
