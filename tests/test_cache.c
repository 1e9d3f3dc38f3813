// The feature cache: f16 conversion, record encoding, damage detection,
// settings checks, map growth.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static CacheMeta meta_for_test(char **names) {
    CacheMeta m = {0};
    snprintf(m.model, sizeof m.model, "vgg16");
    snprintf(m.weights, sizeof m.weights, "random:seed=1");
    m.input_h = m.input_w = 32;
    snprintf(m.interpolation, sizeof m.interpolation, "nearest");
    snprintf(m.preprocess, sizeof m.preprocess, "caffe");
    snprintf(m.layer, sizeof m.layer, "block5_pool");
    m.feat_h = m.feat_w = 2, m.feat_c = 64;
    m.dtype = FEAT_F16;
    m.n_classes = 2;
    m.class_names = names;
    return m;
}

Test(cache, records_round_trip_and_damage_is_named) {
    char *dir = make_temp_dir("cache");
    char path[600];
    snprintf(path, sizeof path, "%s/c", dir);
    char *names[] = {"cats", "dogs"};
    CacheMeta want = meta_for_test(names);
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &want, 0), 0, "%s", err_msg());
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
    char *dir = make_temp_dir("cache");
    char path[600];
    snprintf(path, sizeof path, "%s/c", dir);
    char *names[] = {"cats", "dogs"};
    CacheMeta want = meta_for_test(names);
    Cache c;
    cr_assert_eq(cache_open_write(&c, path, &want, 0), 0, "%s", err_msg());
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
    char *dir = make_temp_dir("cache");
    snprintf(path, size, "%s/c", dir);
    want->feat_h = want->feat_w = 1, want->feat_c = 4096;
    want->dtype = FEAT_F32;
    cr_assert_eq(cache_open_write(c, path, want, 0), 0, "%s", err_msg());
    return dir;
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

Test(cache, map_grows_when_full) {
    // A 1 MB first map and ~6 MB of incompressible records: LMDB reports
    // MDB_MAP_FULL several times and every record must still be there.
    char path[600];
    char *names[] = {"cats", "dogs"};
    CacheMeta want = meta_for_test(names);
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

// A transaction that outgrows the map is replayed on a bigger one: every
// write in it, settings included, not only the records.
Test(cache, map_growth_replays_settings_too) {
    char path[600];
    char *names[] = {"cats", "dogs"};
    CacheMeta want = meta_for_test(names);
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
