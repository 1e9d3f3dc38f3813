// extract end to end on generated JPEGs with random weights: features equal
// a direct forward pass of the shared core, labels and classes are right, a
// crash then a rerun completes without duplicates, shards merge into the
// single run, other settings are refused, bad files are reported and skipped.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blas_setup.h"
#include "cache.h"
#include "error.h"
#include "fileutil.h"
#include "forward.h"
#include "image.h"
#include "model.h"
#include "parallel.h"
#include "testutil.h"

#define SIZE 32

// DIR/data/circles/*.jpg, DIR/data/squares/*.jpg (+ a nested folder), and
// bad files; caches go to DIR/<name>, outside the image folder.
static char *make_folder(int with_bad) {
    char *top = make_temp_dir("extract");
    char *dir = malloc(strlen(top) + 8);
    sprintf(dir, "%s/data", top);
    free(top);
    char path[1024];
    const char *classes[] = {"circles", "squares"};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 5; i++) {
            int w = 40 + 9 * i, h = 36 + 5 * i;
            uint8_t *rgb = malloc((size_t)w * h * 3);
            draw_shape(rgb, w, h, k, (unsigned)(k * 10 + i));
            snprintf(path, sizeof path, "%s/%s%s", dir, classes[k], i == 4 ? "/nested" : "");
            make_dirs(path);
            snprintf(path, sizeof path, "%s/%s%s/img %d.jpg", dir, classes[k], i == 4 ? "/nested" : "", i);
            write_jpeg(path, rgb, w, h, 90);
            free(rgb);
        }
    }
    if (with_bad) {
        // Truncated JPEG, zero bytes, text named .jpg, a GIF (not an image type for Keras).
        snprintf(path, sizeof path, "%s/circles/img 0.jpg", dir);
        FILE *f = fopen(path, "rb");
        char buf[400];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        snprintf(path, sizeof path, "%s/circles/truncated.jpg", dir);
        write_file(path, buf, n);
        snprintf(path, sizeof path, "%s/circles/empty.jpg", dir);
        write_file(path, "", 0);
        snprintf(path, sizeof path, "%s/squares/notes.jpg", dir);
        write_file(path, "not an image\n", 13);
        snprintf(path, sizeof path, "%s/squares/anim.gif", dir);
        write_file(path, "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
    }
    return dir;
}

static void remove_data_folder(char *dir) {
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    remove_tree(dir);
    free(dir);
}

typedef struct {
    int n;
    uint64_t keys[64];
    int32_t labels[64];
    char paths[64][128];
    float *feat[64];
    void *dctx;
    int D;
    size_t lens[64];
    uint8_t *raw[64];
} Records;

static int collect(void *ctx, uint64_t key, const void *val, size_t len) {
    Records *r = ctx;
    cr_assert_lt(r->n, 64);
    int i = r->n++;
    const char *p;
    int plen;
    r->feat[i] = malloc(sizeof(float) * (size_t)r->D);
    cr_assert_eq(cache_record_decode(r->dctx, key, val, len, r->D, &r->labels[i], &p, &plen, NULL, r->feat[i]), 0,
                 "%s", err_msg());
    r->keys[i] = key;
    snprintf(r->paths[i], sizeof r->paths[i], "%.*s", plen, p);
    r->raw[i] = malloc(len);
    memcpy(r->raw[i], val, len);
    r->lens[i] = len;
    return 0;
}

static Records read_all(const char *cache, CacheMeta *meta) {
    Records r = {0};
    Cache c;
    cr_assert_eq(cache_open_read(&c, cache, meta), 0, "%s", err_msg());
    r.D = meta->feat_h * meta->feat_w * meta->feat_c;
    r.dctx = c.dctx;
    cr_assert_eq(cache_visit(&c, collect, &r), 0, "%s", err_msg());
    cache_close(&c);
    return r;
}

static void free_records(Records *r) {
    for (int i = 0; i < r->n; i++) free(r->feat[i]), free(r->raw[i]);
}

static void extract_ok(const char *args) {
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "extract %s:\n%s", args, out);
    free(out);
}

// extract of dir (random weights, f32, 2 threads, extra args) into
// dir/../NAME with environment variable KEY set to VALUE for it (key NULL:
// none, value NULL: unset); its output (malloc'd) after a successful run.
static char *extract_under(const char *dir, const char *name, const char *extra, const char *key, const char *value) {
    char args[3000], *out;
    snprintf(args, sizeof args, "--data '%s' --cache '%s/../%s' --weights random --seed 5 --input-size %d "
                                "--dtype f32 --threads 2 --quiet %s",
             dir, dir, name, SIZE, extra);
    if (key && value) setenv(key, value, 1);
    int rc = run_tool("extract", args, &out);
    if (key) unsetenv(key);
    cr_assert_eq(rc, 0, "extract %s:\n%s", args, out);
    return out;
}

// The records of dir/../A and dir/../B, byte for byte.
static void expect_same_records(const char *dir, const char *a, const char *b, const char *what) {
    char path[2][1100];
    Records r[2];
    CacheMeta meta[2];
    snprintf(path[0], sizeof path[0], "%s/../%s", dir, a);
    snprintf(path[1], sizeof path[1], "%s/../%s", dir, b);
    for (int k = 0; k < 2; k++) r[k] = read_all(path[k], &meta[k]);
    cr_assert_eq(r[0].n, r[1].n);
    for (int i = 0; i < r[0].n; i++) {
        cr_assert_eq(r[0].lens[i], r[1].lens[i]);
        cr_expect_arr_eq(r[0].raw[i], r[1].raw[i], r[0].lens[i], "record %d differs %s", i, what);
    }
    free_records(&r[0]), free_records(&r[1]);
}

// The frozen base runs no BLAS (forward.h): a node whose environment forces
// an old OpenBLAS kernel writes the same records, byte for byte, so caches
// and shards from different nodes agree.
Test(extract, records_do_not_depend_on_openblas_coretype) {
    char *dir = make_folder(0);
    free(extract_under(dir, "cache0", "--batch 3", "OPENBLAS_CORETYPE", NULL));
    free(extract_under(dir, "cache1", "--batch 3", "OPENBLAS_CORETYPE", "Prescott"));
    expect_same_records(dir, "cache0", "cache1", "under OPENBLAS_CORETYPE=Prescott");
    remove_data_folder(dir);
}

// A conv-method override that is not one is said, and ignored: the records
// are the default's.
Test(extract, bad_winograd_settings_are_warned_about_and_ignored) {
    char *dir = make_folder(0);
    free(extract_under(dir, "cache0", "", NULL, NULL));
    setenv("VGGFT_WINOGRAD_PLAN", "02x", 1);
    char *out = extract_under(dir, "cache1", "", "VGGFT_WINOGRAD", "7");
    unsetenv("VGGFT_WINOGRAD_PLAN");
    cr_expect(strstr(out, "warning: VGGFT_WINOGRAD=7 is not one of 0, 2, 3, 4: ignored"), "%s", out);
    cr_expect(strstr(out, "warning: VGGFT_WINOGRAD_PLAN=02x: one digit 0, 2, 3 or 4 per conv layer: ignored"), "%s",
              out);
    free(out);
    expect_same_records(dir, "cache0", "cache1", "from the default's");
    remove_data_folder(dir);
}

Test(extract, features_equal_direct_forward_pass) {
    char *dir = make_folder(0);
    char cache[1100], args[3000];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --seed 5 --input-size %d --dtype f32 "
                                "--batch 3 --threads 2 --quiet",
             dir, cache, SIZE);
    extract_ok(args);

    CacheMeta meta;
    Records r = read_all(cache, &meta);
    cr_assert_eq(r.n, 10);
    cr_expect_eq(meta.n_classes, 2);
    cr_expect_str_eq(meta.class_names[0], "circles");
    cr_expect_str_eq(meta.class_names[1], "squares");
    cr_expect_eq(meta.class_counts[0], 5);
    cr_expect_eq(meta.class_counts[1], 5);
    cr_expect_str_eq(meta.weights, "random:seed=5");

    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = SIZE;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0);
    cr_assert_eq(model_alloc_weights(&m, 1, m.n_base), 0);
    model_init_random(&m, 1, m.n_base, 5);
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    // The tool ran with --threads 2: the same here, whatever the machine has
    // (OpenBLAS splits its products by thread count).
    blas_set_threads(2);
    parallel_set_threads(2);
    float *x = malloc(sizeof(float) * SIZE * SIZE * 3), *f = malloc(sizeof(float) * r.D);
    LoadOptions lo = {.w = SIZE, .h = SIZE, .interp = INTERP_NEAREST, .prep = PREP_CAFFE};
    for (int i = 0; i < r.n; i++) {
        // Keys are the folder order: circles first, files sorted, nested last.
        cr_expect_eq(r.keys[i], (uint64_t)i);
        cr_expect_eq(r.labels[i], i < 5 ? 0 : 1, "%s", r.paths[i]);
        cr_expect_eq(strncmp(r.paths[i], i < 5 ? "circles/" : "squares/", 8), 0, "%s", r.paths[i]);
        char full[2048];
        snprintf(full, sizeof full, "%s/%s", dir, r.paths[i]);
        cr_assert_eq(image_load(full, &lo, NULL, x, NULL), 0, "%s", err_msg());
        base_forward_cpu(&m, x, 1, f, &ws);
        // Same code, same order: identical floats.
        cr_expect_arr_eq(f, r.feat[i], sizeof(float) * (size_t)r.D, "%s", r.paths[i]);
    }
    cr_expect_str_eq(r.paths[4], "circles/nested/img 4.jpg");
    free(x), free(f);
    base_workspace_free(&ws);
    model_free(&m);
    free_records(&r);
    cache_meta_free(&meta);
    remove_data_folder(dir);
}

Test(extract, bad_files_reported_and_skipped) {
    char *dir = make_folder(1);
    char cache[1100], args[3000];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d", dir, cache, SIZE);
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Found 13 images belonging to 2 classes.") != NULL, "%s", out);
    cr_expect(strstr(out, "warning: skipped") && strstr(out, "truncated.jpg"), "%s", out);
    free(out);
    CacheMeta meta;
    Records r = read_all(cache, &meta);
    cr_expect_eq(r.n, 10, "every good image is cached");
    free_records(&r);
    cache_meta_free(&meta);

    char tsv[1200];
    snprintf(tsv, sizeof tsv, "%s/skipped.tsv", cache);
    FILE *f = fopen(tsv, "r");
    cr_assert_not_null(f, "no %s", tsv);
    char text[4096] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_expect(strstr(text, "path\treason\n") == text, "%s", text);
    cr_expect(strstr(text, "circles/truncated.jpg\t") != NULL, "%s", text);
    cr_expect(strstr(text, "circles/empty.jpg\t") != NULL, "%s", text);
    cr_expect(strstr(text, "squares/notes.jpg\t") != NULL, "%s", text);
    cr_expect(strstr(text, "squares/anim.gif\tunsupported file type") != NULL, "%s", text);

    // --strict turns any skipped image into a failure (anim.gif is not one:
    // Keras does not list it, so it is only ignored).
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --strict --quiet", dir,
             cache, SIZE);
    rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "--strict: 3 files were skipped") != NULL, "%s", out);
    free(out);
    remove_data_folder(dir);
}

Test(extract, crash_then_rerun_completes_without_duplicates) {
    char *dir = make_folder(0);
    char cache[1100], args[3000], ref[1100];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(ref, sizeof ref, "%s/../ref", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --batch 2 --quiet", dir,
             ref, SIZE);
    extract_ok(args);
    // Commit every 3 records and die after 6 new ones: some committed, some lost.
    snprintf(args, sizeof args,
             "--data '%s' --cache '%s' --weights random --input-size %d --batch 2 --quiet; exit $?", dir, cache,
             SIZE);
    setenv("VGGFT_CACHE_COMMIT_EVERY", "3", 1);
    setenv("VGGFT_TEST_CRASH_AFTER", "6", 1);
    char *out;
    int rc = run_tool("extract", args, &out);
    unsetenv("VGGFT_TEST_CRASH_AFTER");
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    cr_assert_eq(rc, 137, "the crash hook did not fire: %s", out);
    free(out);
    CacheMeta meta;
    Records partial = read_all(cache, &meta);
    cr_expect(partial.n >= 3 && partial.n < 10, "after the crash: %d records", partial.n);
    free_records(&partial);
    cache_meta_free(&meta);

    rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    CacheMeta ref_meta;
    Records r = read_all(cache, &meta), want = read_all(ref, &ref_meta);
    cache_meta_free(&ref_meta);
    cr_assert_eq(r.n, 10);
    for (int i = 0; i < 10; i++) {
        cr_expect_eq(r.keys[i], want.keys[i]);
        cr_expect_eq(r.lens[i], want.lens[i]);
        cr_expect_eq(memcmp(r.raw[i], want.raw[i], r.lens[i]), 0, "record %d differs from an uninterrupted run", i);
    }
    free_records(&r);
    free_records(&want);
    cache_meta_free(&meta);

    // A changed file is extracted again, and only that one.
    char img[2048];
    snprintf(img, sizeof img, "%s/squares/img 1.jpg", dir);
    uint8_t *rgb = malloc(50 * 40 * 3);
    draw_shape(rgb, 50, 40, 0, 99);
    write_jpeg(img, rgb, 50, 40, 85);
    free(rgb);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d", dir, cache, SIZE);
    rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Extracted 1 image ") && strstr(out, "9 unchanged") && strstr(out, "1 changed"), "%s", out);
    free(out);
    r = read_all(cache, &meta);
    cr_expect_eq(r.n, 10);
    free_records(&r);
    cache_meta_free(&meta);
    remove_data_folder(dir);
}

Test(extract, shards_merge_into_the_single_run) {
    char *dir = make_folder(0);
    char args[6000], one[1100], merged[1100], shard[3][1100];
    snprintf(one, sizeof one, "%s/../one", dir);
    snprintf(merged, sizeof merged, "%s/../merged", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --quiet", dir, one, SIZE);
    extract_ok(args);
    for (int i = 0; i < 3; i++) {
        snprintf(shard[i], sizeof shard[i], "%s/../shard%d", dir, i);
        snprintf(args, sizeof args, "--data '%s' --cache '%s' --shard %d/3 --weights random --input-size %d --quiet",
                 dir, shard[i], i, SIZE);
        extract_ok(args);
    }
    // What a merge killed part way left (a PID that no longer runs): removed by the next merge.
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char stale[1200], stale_file[1300];
    snprintf(stale, sizeof stale, "%s.tmp.%d", merged, (int)dead);
    cr_assert_eq(make_dirs(stale), 0);
    snprintf(stale_file, sizeof stale_file, "%s/data.mdb", stale);
    write_file(stale_file, "x", 1);
    snprintf(args, sizeof args, "--merge '%s' '%s' '%s' '%s'", merged, shard[2], shard[0], shard[1]);
    extract_ok(args);
    cr_expect(access(stale, F_OK) != 0, "a killed merge's folder %s stayed", stale);
    CacheMeta m1, m2;
    Records a = read_all(one, &m1), b = read_all(merged, &m2);
    cr_assert_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        cr_expect_eq(a.keys[i], b.keys[i]);
        cr_expect(a.lens[i] == b.lens[i] && !memcmp(a.raw[i], b.raw[i], a.lens[i]), "record %d", i);
    }
    cr_expect_eq(m2.class_counts[0], 5);
    cr_expect_str_eq(m2.shard, "");
    free_records(&a);
    free_records(&b);
    cache_meta_free(&m1);
    cache_meta_free(&m2);

    // OUT an image folder (a slip): refused, nothing moved.
    char imgs[1200], kept[1300];
    snprintf(imgs, sizeof imgs, "%s/../not_a_cache", dir);
    cr_assert_eq(make_dirs(imgs), 0);
    snprintf(kept, sizeof kept, "%s/photo.jpg", imgs);
    write_file(kept, "x", 1);
    snprintf(args, sizeof args, "--merge '%s' '%s' '%s' '%s'", imgs, shard[0], shard[1], shard[2]);
    char *out;
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "holds other files (photo.jpg)") != NULL, "%s", out);
    free(out);
    cr_expect_eq(access(kept, F_OK), 0, "the folder's file was moved");
    // OUT being written by an extract (its folder lock held): refused, even with --overwrite.
    int go[2], done[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(done), 0);
    pid_t holder = fork();
    if (holder == 0) {
        char x;
        int fd = cache_lock_folder(merged);
        if (write(go[1], fd >= 0 ? "1" : "0", 1) != 1 || read(done[0], &x, 1) != 1) _exit(2);
        _exit(0);
    }
    char ok;
    cr_assert_eq(read(go[0], &ok, 1), 1);
    cr_assert_eq(ok, '1');
    snprintf(args, sizeof args, "--merge '%s' '%s' '%s' '%s' --overwrite", merged, shard[0], shard[1], shard[2]);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "another extract is writing this cache now") != NULL, "%s", out);
    free(out);
    cr_assert_eq(write(done[1], "x", 1), 1);
    waitpid(holder, NULL, 0);

    // Overlapping inputs are refused.
    snprintf(args, sizeof args, "--merge '%s/../bad' '%s' '%s'", dir, shard[0], shard[0]);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "shard 0/3 is given twice") != NULL, "%s", out);
    free(out);
    // A failed merge leaves nothing at OUT.
    char bad[1200];
    snprintf(bad, sizeof bad, "%s/../bad/data.mdb", dir);
    cr_expect(access(bad, F_OK) != 0, "a failed merge left %s", bad);

    // Shards of another state of the folder: refused.
    char path[2048];
    snprintf(path, sizeof path, "%s/circles/img 9.jpg", dir);
    uint8_t *rgb = malloc(40 * 40 * 3);
    draw_shape(rgb, 40, 40, 0, 123);
    write_jpeg(path, rgb, 40, 40, 90);
    free(rgb);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --shard 1/3 --weights random --input-size %d --quiet --overwrite",
             dir, shard[1], SIZE);
    extract_ok(args);
    snprintf(args, sizeof args, "--merge '%s/../m2' '%s' '%s' '%s'", dir, shard[0], shard[1], shard[2]);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "another state of the folder") != NULL, "%s", out);
    free(out);
    remove_data_folder(dir);
}

Test(extract, other_settings_refused_and_bad_folders) {
    char *dir = make_folder(0);
    char cache[1100], args[3000];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --quiet", dir, cache, SIZE);
    extract_ok(args);
    char *out;
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size 48 --quiet", dir, cache);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "input size: the cache has 32x32, this run 48x48") && strstr(out, "--overwrite"), "%s", out);
    free(out);
    // A cache inside the image folder (it would be read as a class folder): refused, nothing made.
    char inside[1200];
    snprintf(inside, sizeof inside, "%s/circles/../new/cache", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --quiet", dir, inside, SIZE);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "lies inside --data") != NULL, "%s", out);
    free(out);
    snprintf(inside, sizeof inside, "%s/new", dir);
    cr_expect(access(inside, F_OK) != 0, "the refused run made %s", inside);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --preprocess rescale --quiet",
             dir, cache, SIZE);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "preprocessing: the cache has caffe, this run rescale"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data '%s/nope' --cache '%s/../c2' --weights random --quiet", dir, dir);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "extract: error:") && strstr(out, "/nope"), "%s", out);
    free(out);
    // A class folder without images: a class all the same, as Keras counts
    // it (was an error), with a warning; its class index is kept.
    char empty[1100];
    snprintf(empty, sizeof empty, "%s/zebras", dir);
    make_dirs(empty);
    snprintf(args, sizeof args, "--data '%s' --cache '%s/../c3' --weights random --input-size %d --quiet", dir, dir, SIZE);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "WARNING: class 'zebras' has no images"), "%s", out);
    // The warning says what train then does (it said "a head trained on
    // this cache never sees it": train refuses such a --cache).
    cr_expect(strstr(out, "train refuses this cache as --cache"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--cache '%s/../c3' --out '%s/../h3.h5' --epochs 1 --quiet", dir, dir);
    cr_expect_eq(run_tool("train", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "class 'zebras' has no training records"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--info '%s/../c3'", dir);
    cr_expect_eq(run_tool("extract", args, &out), 0, "%s", out);
    cr_expect(strstr(out, "classes:        3\n") && strstr(out, "2 zebras "), "%s", out);
    free(out);
    // ... which --strict, "a class left without records", fails.
    snprintf(args, sizeof args, "--data '%s' --cache '%s/../c3' --weights random --input-size %d --quiet --strict", dir,
             dir, SIZE);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "--strict: 1 class folder of") && strstr(out, "holds no images"), "%s", out);
    free(out);
    // No image in any class folder: an error.
    char solo[1100];
    snprintf(solo, sizeof solo, "%s/../only_empty/zebras", dir);
    make_dirs(solo);
    snprintf(args, sizeof args, "--data '%s/../only_empty' --cache '%s/../c4' --weights random --quiet", dir, dir);
    cr_expect_eq(run_tool("extract", args, &out), 1, "%s", out);
    cr_expect(strstr(out, "only_empty: no images in any of its 1 class folders"), "%s", out);
    free(out);
    remove_data_folder(dir);
}

Test(extract, huge_image_odd_names_and_lmdb_tools) {
    char *dir = make_folder(0);
    // A non-UTF-8 name (Latin-1 'e acute') and an image far over a small
    // pixel budget: decoded at a reduced scale, with a warning, and cached.
    char path[2048];
    snprintf(path, sizeof path, "%s/squares/caf\xe9.jpg", dir);
    uint8_t *rgb = malloc(64 * 48 * 3);
    draw_shape(rgb, 64, 48, 1, 77);
    write_jpeg(path, rgb, 64, 48, 90);
    free(rgb);
    int W = 1600, H = 1200;
    rgb = malloc((size_t)W * H * 3);
    draw_shape(rgb, W, H, 0, 78);
    snprintf(path, sizeof path, "%s/circles/huge.jpg", dir);
    write_jpeg(path, rgb, W, H, 80);
    free(rgb);
    char cache[1100], args[3000];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --max-pixels 500000", dir,
             cache, SIZE);
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "huge.jpg is 1600x1200, over the pixel budget of 500000") != NULL, "%s", out);
    free(out);
    CacheMeta meta;
    Records r = read_all(cache, &meta);
    cr_expect_eq(r.n, 12);
    int found_latin1 = 0, found_huge = 0;
    for (int i = 0; i < r.n; i++) {
        found_latin1 |= !strcmp(r.paths[i], "squares/caf\xe9.jpg");
        found_huge |= !strcmp(r.paths[i], "circles/huge.jpg");
    }
    cr_expect(found_latin1 && found_huge);
    free_records(&r);
    cache_meta_free(&meta);
    // Standard LMDB tools read the cache (lmdb-utils: scripts/install_deps.sh
    // installs them; a machine without them, e.g. a GPU machine that runs
    // the packed test binary, skips this part and says so).
    if (system("command -v mdb_stat >/dev/null 2>&1") == 0) {
        snprintf(args, sizeof args, "mdb_stat -s features '%s' 2>&1", cache);
        FILE *p = popen(args, "r");
        char text[2048] = "";
        size_t n = fread(text, 1, sizeof text - 1, p);
        text[n] = '\0';
        cr_expect_eq(pclose(p), 0, "mdb_stat failed: %s", text);
        cr_expect(strstr(text, "Entries: 12") != NULL, "%s", text);
    } else {
        fprintf(stderr, "note: mdb_stat (lmdb-utils) not installed: the LMDB tools check is skipped\n");
    }
    // --info agrees.
    snprintf(args, sizeof args, "--info '%s'", cache);
    rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "records:        12") && strstr(out, "weights:        random:seed=1"), "%s", out);
    cr_expect(strstr(out, "decoding:       full, pixel budget ") && !strstr(out, "bilinear as Pillow 13"),
              "--info shows the decoding (and precision): %s", out);
    free(out);
    // A bilinear cache says it resized as Pillow 13 does: one made before
    // (the other pass order) differs in that setting and is refused.
    char bil[1200];
    snprintf(bil, sizeof bil, "%s-bilinear", cache);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --interpolation bilinear --input-size 32 "
             "--threads 1 --quiet", dir, bil);
    rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--info '%s'", bil);
    rc = run_tool("extract", args, &out);
    cr_expect(rc == 0 && strstr(out, "decoding:       full, pixel budget 50000000, bilinear as Pillow 13\n"), "%s", out);
    free(out);
    // A cache path that cannot be created: a clear error naming it.
    snprintf(args, sizeof args, "--data '%s' --cache '%s/circles/img 0.jpg/cache' --weights random --quiet", dir, dir);
    rc = run_tool("extract", args, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "extract: error:") && strstr(out, "img 0.jpg"), "%s", out);
    free(out);
    remove_data_folder(dir);
}

// The folder changes between runs: files added (shifting the indices of
// those after them), renamed, removed. The rerun must end with exactly one
// record per image, in folder order, identical to a fresh run.
Test(extract, rerun_after_the_folder_changed_equals_a_fresh_run) {
    char *dir = make_folder(0);
    char cache[1100], fresh[1100], args[3000], a[2048], b[2048];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    snprintf(fresh, sizeof fresh, "%s/../fresh", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --quiet", dir, cache, SIZE);
    extract_ok(args);
    // Add one that sorts first, rename one, remove one.
    uint8_t *rgb = malloc(44 * 44 * 3);
    draw_shape(rgb, 44, 44, 0, 321);
    snprintf(a, sizeof a, "%s/circles/a first.jpg", dir);
    write_jpeg(a, rgb, 44, 44, 90);
    free(rgb);
    snprintf(a, sizeof a, "%s/squares/img 2.jpg", dir);
    snprintf(b, sizeof b, "%s/squares/renamed.jpg", dir);
    cr_assert_eq(rename(a, b), 0);
    snprintf(a, sizeof a, "%s/circles/img 3.jpg", dir);
    cr_assert_eq(unlink(a), 0);
    char *out;
    int rc = run_tool("extract", args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size %d --quiet", dir, fresh, SIZE);
    extract_ok(args);
    CacheMeta m1, m2;
    Records r = read_all(cache, &m1), f = read_all(fresh, &m2);
    cr_assert_eq(r.n, f.n, "%d records for %d images", r.n, f.n);
    for (int i = 0; i < r.n; i++) {
        cr_expect_eq(r.keys[i], f.keys[i]);
        cr_expect_str_eq(r.paths[i], f.paths[i]);
        cr_expect(r.lens[i] == f.lens[i] && !memcmp(r.raw[i], f.raw[i], r.lens[i]), "record %d (%s)", i, r.paths[i]);
    }
    cr_expect(m1.complete && m1.class_counts[0] == 5 && m1.class_counts[1] == 5);
    free_records(&r), free_records(&f);
    cache_meta_free(&m1), cache_meta_free(&m2);
    remove_data_folder(dir);
}

// --overwrite of a cache far larger than LMDB's first map: the replacement
// must really happen (it once committed an empty transaction instead).
Test(extract, overwrite_of_a_cache_larger_than_the_first_map) {
    char *dir = make_folder(0);
    char cache[1100], args[3000];
    snprintf(cache, sizeof cache, "%s/../cache", dir);
    setenv("VGGFT_CACHE_MAP_MB", "1", 1);
    // block1_pool features at 64x64: 32x32x64 f32 = 256 KB each, 2.5 MB in all.
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --input-size 64 --layer block1_pool "
                                "--dtype f32 --quiet", dir, cache);
    extract_ok(args);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --weights random --seed 9 --input-size 64 "
                                "--layer block1_pool --dtype f32 --overwrite", dir, cache);
    char *out;
    int rc = run_tool("extract", args, &out);
    unsetenv("VGGFT_CACHE_MAP_MB");
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Extracted 10 images") != NULL, "%s", out);
    free(out);
    CacheMeta m;
    Records r = read_all(cache, &m);
    cr_expect_eq(r.n, 10);
    cr_expect_str_eq(m.weights, "random:seed=9");
    free_records(&r);
    cache_meta_free(&m);
    remove_data_folder(dir);
}

Test(extract, unfinished_shard_is_not_merged) {
    char *dir = make_folder(0);
    char s0[1100], s1[1100], args[3000];
    snprintf(s0, sizeof s0, "%s/../s0", dir);
    snprintf(s1, sizeof s1, "%s/../s1", dir);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --shard 0/2 --weights random --input-size %d --quiet", dir,
             s0, SIZE);
    extract_ok(args);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' --shard 1/2 --weights random --input-size %d --batch 1 "
                                "--quiet; exit $?", dir, s1, SIZE);
    setenv("VGGFT_CACHE_COMMIT_EVERY", "1", 1);
    setenv("VGGFT_TEST_CRASH_AFTER", "2", 1);
    char *out;
    cr_expect_eq(run_tool("extract", args, &out), 137);
    unsetenv("VGGFT_TEST_CRASH_AFTER");
    unsetenv("VGGFT_CACHE_COMMIT_EVERY");
    free(out);
    snprintf(args, sizeof args, "--merge '%s/../m' '%s' '%s'", dir, s0, s1);
    cr_expect_eq(run_tool("extract", args, &out), 1);
    cr_expect(strstr(out, "did not finish") != NULL, "%s", out);
    free(out);
    remove_data_folder(dir);
}
