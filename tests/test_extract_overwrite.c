// extract --overwrite replaces only what differs: on a cache of this run's
// settings and folder (or that folder moved) it is a plain rerun that keeps
// every record of an unchanged file; other settings or another folder start
// the cache over. And a run where no image at all could be read fails
// (exit 1) instead of leaving a cache without records.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *COMMON = "--weights random --input-size 32 --layer block1_pool --threads 1 --batch 4";

// Runs extract --data DIR --cache CACHE COMMON EXTRA; asserts exit 0 and
// returns the output (malloc'd).
static char *extract_ok(const char *dir, const char *cache, const char *extra) {
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "--data '%s' --cache '%s' %s %s", dir, cache, COMMON, extra);
    int rc = run_tool_timeout("extract", args, 120, &out);
    cr_assert_eq(rc, 0, "extract %s: exit %d\n%s", args, rc, out);
    return out;
}

static void expect_in(const char *out, const char *want, const char *when) {
    cr_expect(strstr(out, want) != NULL, "%s: want \"%s\" in:\n%s", when, want, out);
}

Test(extract_overwrite, same_settings_keep_records_others_start_over) {
    char *top = make_shape_folder("overwrite", 5, 7);  // 10 images
    char data[1100], moved[1100], cache[1100], cmd[4000];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(moved, sizeof moved, "%s/moved", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    char *out = extract_ok(data, cache, "--quiet");
    expect_in(out, "Extracted 10 images", "first run");
    cr_expect(!strstr(out, "unchanged"), "a first run has nothing unchanged to count: %s", out);
    free(out);

    // The same settings with --overwrite: nothing extracted, nothing lost.
    out = extract_ok(data, cache, "--quiet --overwrite");
    expect_in(out, "Extracted 0 images", "--overwrite, same settings");
    expect_in(out, "Extracted 0 images; 10 unchanged from an earlier run.", "--overwrite, same settings");
    cr_expect(!strstr(out, "img/s") && !strstr(out, "Time:"), "no rate or times of no work: %s", out);
    expect_in(out, "Cache ", "--overwrite, same settings");
    expect_in(out, ": 10 records", "--overwrite, same settings");
    free(out);

    // One image changed: only it is extracted again.
    uint8_t rgb[40 * 40 * 3];
    draw_shape(rgb, 40, 40, 0, 999);
    snprintf(cmd, sizeof cmd, "%s/circles/img 01.jpg", data);
    write_jpeg(cmd, rgb, 40, 40, 90);
    out = extract_ok(data, cache, "--quiet --overwrite");
    expect_in(out, "Extracted 1 image ", "--overwrite after one image changed");
    expect_in(out, "9 unchanged", "--overwrite after one image changed");
    free(out);

    // The folder moved: recognised, the records kept.
    snprintf(cmd, sizeof cmd, "mv '%s' '%s'", data, moved);
    cr_assert_eq(system(cmd), 0);
    out = extract_ok(moved, cache, "--quiet --overwrite");
    expect_in(out, "taking it as the same folder, moved", "--overwrite, moved folder");
    expect_in(out, "Extracted 0 images", "--overwrite, moved folder");
    free(out);

    // Other settings: started over.
    out = extract_ok(moved, cache, "--quiet --overwrite --dtype f32");
    expect_in(out, "was made with other settings (dtype: the cache has f16, this run f32): starting it over",
              "--overwrite, other settings");
    expect_in(out, "Extracted 10 images", "--overwrite, other settings");
    cr_expect(!strstr(out, "unchanged"), "started over: nothing kept: %s", out);
    free(out);

    // Another folder of the same classes (other images): started over.
    char *other = make_shape_folder("overwrite_other", 4, 31);
    snprintf(cmd, sizeof cmd, "%s/data", other);
    out = extract_ok(cmd, cache, "--quiet --overwrite --dtype f32");
    expect_in(out, "starting it over", "--overwrite, another folder");
    expect_in(out, "Extracted 8 images", "--overwrite, another folder");
    expect_in(out, ": 8 records", "--overwrite, another folder");
    free(out);
    remove_tree(other);
    free(other);
    remove_tree(top);
    free(top);
}

// Every image unreadable: exit 1 naming the cause (as predict), and the
// per-class warnings on stderr, the summary on stdout.
Test(extract_overwrite, no_image_readable_fails) {
    char *top = make_temp_dir("allskipped");
    char dir[1100], path[1300], args[4096], *out = NULL;
    snprintf(dir, sizeof dir, "%s/data", top);
    const char *cls[] = {"a", "b"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "mkdir -p '%s/%s'", dir, cls[k]);
        cr_assert_eq(system(path), 0);
        snprintf(path, sizeof path, "%s/%s/broken.jpg", dir, cls[k]);
        write_file(path, "not a jpeg", 10);
    }
    // stderr alone (stdout to /dev/null).
    snprintf(args, sizeof args, "--data '%s' --cache '%s/cache' %s --quiet 2>&1 >/dev/null; exit $?", dir, top,
             COMMON);
    int rc = run_tool_timeout("extract", args, 120, &out);
    cr_expect_eq(rc, 1, "extract with no readable image: exit %d, want 1\n%s", rc, out);
    expect_in(out, "no image could be read (2 skipped", "stderr");
    expect_in(out, "WARNING: class 'a' has no records", "stderr");
    free(out);
    // stdout alone: the summary, without the warnings.
    snprintf(args, sizeof args, "--data '%s' --cache '%s/cache2' %s --quiet 2>/dev/null; exit $?", dir, top, COMMON);
    rc = run_tool_timeout("extract", args, 120, &out);
    cr_expect_eq(rc, 1);
    expect_in(out, "Skipped 2 files", "stdout");
    cr_expect(!strstr(out, "WARNING"), "a warning went to stdout:\n%s", out);
    free(out);

    // One readable image is enough: exit 0 (the other class is warned about).
    uint8_t rgb[40 * 40 * 3];
    draw_shape(rgb, 40, 40, 1, 5);
    snprintf(path, sizeof path, "%s/b/good.jpg", dir);
    write_jpeg(path, rgb, 40, 40, 90);
    snprintf(args, sizeof args, "--data '%s' --cache '%s/cache3' %s --quiet", dir, top, COMMON);
    rc = run_tool_timeout("extract", args, 120, &out);
    cr_expect_eq(rc, 0, "%s", out);
    expect_in(out, "WARNING: class 'a' has no records", "one readable image");
    free(out);
    remove_tree(top);
    free(top);
}
