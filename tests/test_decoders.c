// Decoders on inputs Pillow reads that we used to refuse: RLE8 / RLE4 BMPs
// (hand-made streams for each of Pillow's BmpRleDecoder rules, then random
// ones), palette BMPs, and PNGs without their IEND chunk or damaged where
// Pillow does not look (IDAT CRCs, after the image data). The fixtures record, per file,
// whether Pillow loads it and if so its pixels (scripts/fixtures_decoders.py).
// Also: image_read_file refuses FIFOs, sockets and devices without blocking,
// and image_chain with augmentation parameters.
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "image.h"
#include "image_codec.h"  // pnm_plain_block
#include "testutil.h"

// Every PREFIX_NN.EXT of the fixtures against Pillow's verdict and pixels.
static void check_against_pillow(const char *prefix, const char *ext, int min_cases) {
    Npy verdicts = fixture_npy("decoders/%s_verdicts.npy", prefix);
    cr_assert_str_eq(verdicts.dtype, "u1");
    cr_assert_geq((int)verdicts.count, min_cases);
    const uint8_t *v = verdicts.data;
    for (size_t i = 0; i < verdicts.count; i++) {
        char name[64];
        snprintf(name, sizeof name, "decoders/%s_%02zu.%s", prefix, i, ext);
        char *p = fixture_path(name);
        Image img;
        int rc = image_decode_file(p, NULL, &img, NULL);
        if (!v[i]) {
            cr_expect_eq(rc, -1, "%s: Pillow refuses it, we decoded %dx%d", name, img.w, img.h);
            if (rc == 0) image_free(&img);
            free(p);
            continue;
        }
        cr_expect_eq(rc, 0, "%s: Pillow loads it, we refuse it: %s", name, err_msg());
        if (rc == 0) {
            Npy want = fixture_npy("decoders/%s_%02zu.npy", prefix, i);
            cr_expect(want.ndim == 3 && want.shape[0] == img.h && want.shape[1] == img.w,
                      "%s: size %dx%d, Pillow %dx%d", name, img.w, img.h, want.shape[1], want.shape[0]);
            if (want.shape[0] == img.h && want.shape[1] == img.w) {
                size_t bad = 0, n = (size_t)img.w * img.h * 3;
                const uint8_t *e = want.data;
                for (size_t k = 0; k < n; k++) bad += img.rgb[k] != e[k];
                cr_expect_eq(bad, 0, "%s: %zu of %zu values differ from Pillow's", name, bad, n);
            }
            npy_free(&want);
            image_free(&img);
        }
        free(p);
    }
    npy_free(&verdicts);
}

Test(decoders, rle_bmp_as_pillow_reads_it) { check_against_pillow("rle", "bmp", 30); }

Test(decoders, damaged_png_as_pillow_reads_it) { check_against_pillow("png", "png", 18); }

// The image data as Pillow's ZipDecode inflates it: a stream without its
// Adler-32 or final block, or ending cleanly short of rows (those rows 0),
// loads; one ending inside a row, or whose end comes in a later IDAT than
// the last whole row, does not; and random images of every colour type.
Test(decoders, png_image_data_as_pillow_inflates_it) { check_against_pillow("pngz", "png", 53); }

// Chunks PIL itself checks: a short tRNS refused (before or after the image
// data), a bad chunk type after the image data ending its reading quietly;
// and headers libpng refuses and PIL reads (a chunk before IHDR, IHDR's
// compression byte, interlace byte 2, no PLTE: black, two IHDRs); what
// PIL's load_end reads after the chunk its decoder finished in (a later
// IDAT cut short refused; an APNG's next fcTL ends it); APNG frame rules
// (lengths, sequence numbers, frames within the image) and palettes as PIL
// keeps them (the last PLTE, whole entries, more than 256 refused).
Test(decoders, png_chunks_as_pillow_checks_them) { check_against_pillow("pngc", "png", 46); }

// Palette BMPs in PIL's modes: indices past a colour palette are black, a
// gray palette is dropped (the index is the level), a black-and-white one
// makes 4- and 8-bit rows read as 1-bit rows (what Keras is given).
Test(decoders, palette_bmp_as_pillow_reads_it) { check_against_pillow("pal", "bmp", 15); }

// Plain P1-P3 data as PIL's PpmPlainDecoder reads it: comments cut out with
// their line ends (joining the numbers around them), Python's int() for
// each token, P1's junk after the data; then the same with its block size
// at 16 bytes (fixtures_decoders.py sets PIL's alike), where tokens and
// comments cross blocks.
Test(decoders, plain_pnm_as_pillow_reads_it) { check_against_pillow("pnm", "pnm", 33); }

Test(decoders, plain_pnm_across_blocks_as_pillow_reads_it) {
    const size_t saved = pnm_plain_block;
    pnm_plain_block = 16;
    check_against_pillow("pnmb", "pnm", 67);
    pnm_plain_block = saved;
}

// BI_BITFIELDS layouts outside PIL's list refused, those in it read; a last
// row without its padding read as PIL's raw decoder reads it; a gray palette
// of more than 256 entries dropped (mode L), a colour one refused.
Test(decoders, bitfields_and_row_padding_as_pillow_reads_them) { check_against_pillow("bmpf", "bmp", 33); }

Test(decoders, rle_refusal_names_the_reason) {
    // rle_03.bmp ends its bitmap after one row (Pillow: not enough image data).
    char *p = fixture_path("decoders/rle_03.bmp");
    Image img;
    cr_assert_eq(image_decode_file(p, NULL, &img, NULL), -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "RLE8") && strstr(err_msg(), "13 of 65"), "%s",
              err_msg());
    free(p);
}

// --- files that are not regular files ----------------------------------------------

// Runs image_read_file in a child with an alarm: blocking fails the test
// instead of hanging it.
static void expect_refused_without_blocking(const char *path, const char *kind) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(5);
        uint8_t *d = (uint8_t *)1;
        size_t n = 7;
        int rc = image_read_file(path, &d, &n);
        int ok = rc == -1 && d == NULL && n == 0 && strstr(err_msg(), path) &&
                 strstr(err_msg(), "not a regular file") && strstr(err_msg(), kind);
        if (!ok) fprintf(stderr, "%s: rc %d, message '%s'\n", path, rc, err_msg());
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status), "%s: reading it blocked (killed by signal %d)", path,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: not refused as a %s", path, kind);
}

Test(decoders, fifo_socket_device_are_refused_without_blocking) {
    char *dir = make_temp_dir("decoders");
    char p[1024];
    snprintf(p, sizeof p, "%s/y.jpg", dir);
    cr_assert_eq(mkfifo(p, 0600), 0);
    expect_refused_without_blocking(p, "FIFO");
    // Through the whole chain too.
    LoadOptions lo = {.w = 8, .h = 8};
    float out[8 * 8 * 3];
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        _exit(image_load(p, &lo, NULL, out, NULL) == -1 ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "image_load on a FIFO blocked or succeeded");

    snprintf(p, sizeof p, "%s/s.png", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", p);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    expect_refused_without_blocking(p, "socket");
    close(fd);
    expect_refused_without_blocking("/dev/null", "character device");
    expect_refused_without_blocking(dir, "directory");
    remove_tree(dir);
    free(dir);
}

Test(decoders, read_file_reads_regular_files_whole) {
    char *dir = make_temp_dir("decoders");
    char p[1024];
    snprintf(p, sizeof p, "%s/a.bin", dir);
    uint8_t buf[70000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 7);
    write_file(p, buf, sizeof buf);
    uint8_t *d;
    size_t n;
    cr_assert_eq(image_read_file(p, &d, &n), 0, "%s", err_msg());
    cr_expect(n == sizeof buf && !memcmp(d, buf, n));
    free(d);
    snprintf(p, sizeof p, "%s/empty.jpg", dir);
    write_file(p, "", 0);
    cr_assert_eq(image_read_file(p, &d, &n), 0, "%s", err_msg());
    cr_expect_eq(n, 0);
    free(d);
    snprintf(p, sizeof p, "%s/missing.jpg", dir);
    cr_expect_eq(image_read_file(p, &d, &n), -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "cannot open"), "%s", err_msg());
    remove_tree(dir);
    free(dir);
}

// --- the chain with augmentation ---------------------------------------------------

Test(decoders, chain_with_identity_augmentation_equals_without) {
    char *p = fixture_path("images/png_rgb.png");  // 64x48
    uint8_t *d;
    size_t n;
    cr_assert_eq(image_read_file(p, &d, &n), 0, "%s", err_msg());
    LoadOptions lo = {.w = 40, .h = 30, .interp = INTERP_BILINEAR, .prep = PREP_CAFFE};
    size_t nf = 40 * 30 * 3;
    float *a = malloc(nf * sizeof(float)), *b = malloc(nf * sizeof(float)), *c = malloc(nf * sizeof(float));
    cr_assert_eq(image_chain(d, n, p, &lo, NULL, a, NULL), 0, "%s", err_msg());
    AugmentParams id = {.theta = 0, .tx = 0, .ty = 0, .shear = 0, .zx = 1, .zy = 1, .flip = 0};
    cr_assert_eq(image_chain(d, n, p, &lo, &id, b, NULL), 0, "%s", err_msg());
    cr_expect_eq(memcmp(a, b, nf * sizeof(float)), 0, "identity augmentation changed the floats");
    // A flip alone mirrors each row exactly.
    AugmentParams flip = id;
    flip.flip = 1;
    cr_assert_eq(image_chain(d, n, p, &lo, &flip, c, NULL), 0, "%s", err_msg());
    size_t bad = 0;
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 40; x++)
            for (int ch = 0; ch < 3; ch++) bad += c[(y * 40 + x) * 3 + ch] != a[(y * 40 + 39 - x) * 3 + ch];
    cr_expect_eq(bad, 0, "flipped image is not the mirror image");
    // Errors carry the name.
    lo.w = 0;
    cr_expect_eq(image_chain(d, n, "named.png", &lo, NULL, a, NULL), -1);
    cr_expect(strstr(err_msg(), "named.png"), "%s", err_msg());
    free(a), free(b), free(c), free(d), free(p);
}
