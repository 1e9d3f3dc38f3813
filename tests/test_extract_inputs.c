// extract on folders with inputs that used to block it or be misjudged:
// a FIFO and a socket named like images (skipped as "not a regular file",
// never blocking: the run has a hard time limit here), a class whose every
// image is skipped (a warning in the summary; --strict fails), and files
// Keras does not list (.DS_Store, notes.txt: ignored, not skipped, so they
// do not fail --strict).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileutil.h"
#include "testutil.h"

// Under `timeout -s KILL 120`: a run that blocks comes back as 137 instead
// of hanging the suite.
static int run_extract(const char *args, char **output) { return run_tool_timeout("extract", args, 120, output); }

static void jpegs(const char *dir, const char *cls, int n, int kind) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, cls);
    make_dirs(p);
    for (int i = 0; i < n; i++) {
        uint8_t rgb[40 * 36 * 3];
        draw_shape(rgb, 40, 36, kind, (unsigned)(7 * i + kind));
        snprintf(p, sizeof p, "%s/%s/img%d.jpg", dir, cls, i);
        write_jpeg(p, rgb, 40, 36, 90);
    }
}

#define ARGS "--weights random --input-size 32 --threads 2"

Test(extract_inputs, fifo_and_socket_are_skipped_without_blocking) {
    char *top = make_temp_dir("xin");
    char data[1100], cache[1100], p[1200], args[4000];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    jpegs(data, "circles", 3, 0);
    jpegs(data, "squares", 3, 1);
    snprintf(p, sizeof p, "%s/circles/y.jpg", data);
    cr_assert_eq(mkfifo(p, 0600), 0);
    snprintf(p, sizeof p, "%s/squares/s.png", data);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", p);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0, "bind %s", p);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' " ARGS, data, cache);
    char *out;
    int rc = run_extract(args, &out);
    cr_assert_neq(rc, 137, "extract blocked on the FIFO (killed after 120 s):\n%s", out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Found 8 images belonging to 2 classes."), "Keras lists the FIFO and the socket:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/skipped.tsv", cache);
    char *tsv = read_file(p, NULL);
    cr_expect(strstr(tsv, "circles/y.jpg\tnot a regular file (FIFO)"), "%s", tsv);
    cr_expect(strstr(tsv, "squares/s.png\tnot a regular file (socket)"), "%s", tsv);
    free(tsv);
    close(fd);
    remove_tree(top);
    free(top);
}

Test(extract_inputs, class_with_every_image_skipped_warns_and_fails_strict) {
    char *top = make_temp_dir("xin");
    char data[1100], cache[1100], p[1200], args[4000];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    jpegs(data, "good", 3, 0);
    jpegs(data, "broken", 2, 1);
    // Both of broken's images cut in half: Pillow raises, we skip them.
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/broken/img%d.jpg", data, i);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0);
        cr_assert_eq(truncate(p, st.st_size / 2), 0);
    }
    snprintf(args, sizeof args, "--data '%s' --cache '%s' " ARGS, data, cache);
    char *out;
    int rc = run_extract(args, &out);
    cr_expect_eq(rc, 0, "without --strict a warning only:\n%s", out);
    cr_expect(strstr(out, "WARNING: class 'broken' has no records: all 2 of its images here were skipped"), "%s",
              out);
    cr_expect(!strstr(out, "class 'good' has no records"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' " ARGS " --strict --quiet", data, cache);
    rc = run_extract(args, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "--strict: 2 files were skipped") && strstr(out, "a class has no records"), "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

// Files skipped in a fraction of a millisecond each are no work to time:
// the final bar gives no "1840 img/s" for 16 files that are not images (a
// reviewer's find, when a final line's rate came from 10 items or more).
Test(extract_inputs, files_skipped_in_a_moment_give_the_bar_no_rate) {
    char *top = make_temp_dir("xin");
    char data[1100], cache[1100], p[1200], args[4000];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    mkdir(data, 0755);
    for (int i = 0; i < 16; i++) {
        snprintf(p, sizeof p, "%s/%s", data, i % 2 ? "a" : "b");
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/%s/%d.jpg", data, i % 2 ? "a" : "b", i);
        write_file(p, "not an image\n", 13);
    }
    snprintf(args, sizeof args, "--data '%s' --cache '%s' " ARGS, data, cache);
    char *out;
    run_extract(args, &out);
    const char *bar = strstr(out, "16/16 [");
    cr_expect(bar && strstr(bar, "skipped: 16"), "%s", out);
    cr_expect(!strstr(out, "img/s"), "%s", out);
    free(out);
    remove_tree(top);
    free(top);
}

Test(extract_inputs, files_keras_does_not_list_do_not_fail_strict) {
    char *top = make_temp_dir("xin");
    char data[1100], cache[1100], p[1200], args[4000];
    snprintf(data, sizeof data, "%s/data", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    jpegs(data, "a", 2, 0);
    jpegs(data, "b", 2, 1);
    snprintf(p, sizeof p, "%s/a/.DS_Store", data);
    write_file(p, "\0\0\0\1Bud1", 8);
    snprintf(p, sizeof p, "%s/b/notes.txt", data);
    write_file(p, "taken on a Tuesday\n", 19);
    snprintf(p, sizeof p, "%s/labels.csv", data);
    write_file(p, "a,b\n", 4);
    snprintf(args, sizeof args, "--data '%s' --cache '%s' " ARGS " --strict", data, cache);
    char *out;
    int rc = run_extract(args, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "Found 4 images belonging to 2 classes."), "%s", out);
    cr_expect(strstr(out, "Ignored 3 files that Keras does not list either"), "%s", out);
    cr_expect(!strstr(out, "Skipped "), "nothing was skipped:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/skipped.tsv", cache);
    char *tsv = read_file(p, NULL);
    cr_expect(strstr(tsv, "a/.DS_Store\tunsupported file type (.DS_Store): not among the types Keras reads (ignored, as Keras does)"),
              "%s", tsv);
    cr_expect(strstr(tsv, "b/notes.txt\tunsupported file type (.txt): not among the types Keras reads (ignored, as Keras does)"),
              "%s", tsv);
    cr_expect(strstr(tsv, "labels.csv\tnot in a class folder (ignored, as Keras does)"), "%s", tsv);
    free(tsv);
    remove_tree(top);
    free(top);
}
