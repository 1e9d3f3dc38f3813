// Damaged JPEGs: we decode exactly the ones Pillow (so Keras's load_img)
// decodes and refuse the others. scripts/fixtures_jpeg_damage.py made a few
// small JPEGs with Pillow and recorded Pillow's verdict on every variant of
// each (cut at every offset, every byte changed four ways, cut + EOI); this
// test makes the same variants from the same bytes and compares, variant by
// variant. It also checks that a refused decode leaves no output and that
// every decode that succeeds filled its pixels (the buffer starts zeroed,
// and the same decode twice gives the same bytes even when the heap around
// it was dirtied in between).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image.h"
#include "testutil.h"

#define KINDS 6
#define N_SOURCES 5

// The rule of scripts/fixtures_jpeg_damage.py's variant(); returns the length.
static size_t make_variant(const uint8_t *d, size_t n, int kind, size_t k, uint8_t *out) {
    if (kind == 0) {
        memcpy(out, d, k);
        return k;
    }
    if (kind == 5) {
        memcpy(out, d, k);
        out[k] = 0xFF, out[k + 1] = 0xD9;
        return k + 2;
    }
    memcpy(out, d, n);
    if (kind == 1) out[k] ^= 0xFF;
    else if (kind == 2) out[k] ^= (uint8_t)(1u << (k % 8));
    else if (kind == 3) out[k] = 0xFF;
    else out[k] = 0x00;
    return n;
}

static uint8_t *read_fixture(const char *name, size_t *n) {
    char *p = fixture_path(name);
    FILE *f = fopen(p, "rb");
    cr_assert(f, "cannot open %s", p);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)len);
    cr_assert_eq(fread(d, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    free(p);
    *n = (size_t)len;
    return d;
}

static const char *kind_name[KINDS] = {"cut", "byte^0xFF", "bit flip", "byte=0xFF", "byte=0x00", "cut+EOI"};

Test(jpeg_damage, verdicts_equal_pillows) {
    long total = 0, loads = 0, disagree = 0;
    for (int s = 0; s < N_SOURCES; s++) {
        char name[64];
        snprintf(name, sizeof name, "jpeg_damage/src%d.jpg", s);
        size_t n;
        uint8_t *d = read_fixture(name, &n);
        Npy want = fixture_npy("jpeg_damage/src%d.npy", s);
        cr_assert_str_eq(want.dtype, "u1");
        cr_assert(want.ndim == 2 && want.shape[0] == KINDS && (size_t)want.shape[1] == n,
                  "%s: verdicts do not match the source's size", name);
        const uint8_t *verdict = want.data;
        uint8_t *v = malloc(n + 2);
        for (int kind = 0; kind < KINDS; kind++)
            for (size_t k = 0; k < n; k++) {
                size_t len = make_variant(d, n, kind, k, v);
                Image img = {7, 7, (uint8_t *)"x"};
                int ok = image_decode_memory(v, len, "v.jpg", NULL, &img, NULL) == 0;
                if (!ok) cr_expect_null(img.rgb, "src%d %s at %zu: output left set", s, kind_name[kind], k);
                int pil = verdict[(size_t)kind * n + k];
                total++;
                loads += pil;
                if (ok != pil) {
                    disagree++;
                    cr_expect_eq(ok, pil, "src%d.jpg %s at byte %zu (0x%02X): Pillow %s, we %s (%s)", s,
                                 kind_name[kind], k, d[k], pil ? "loads it" : "refuses it",
                                 ok ? "decode it" : "refuse it", ok ? "" : err_msg());
                }
                image_free(&img);
            }
        free(v);
        free(d);
        npy_free(&want);
    }
    cr_log_info("%ld damaged JPEGs: Pillow loads %ld, refuses %ld; %ld disagreements", total, loads, total - loads,
                disagree);
    cr_expect_gt(loads, 1000, "the sweep should hold decodable damage too");
    cr_expect_gt(total - loads, 1000);
}

// A decode that succeeds must not depend on what the heap held before: run
// every variant Pillow loads twice, with the heap dirtied by a freed 0xA5
// block of the output's size in between, and compare.
Test(jpeg_damage, decoded_pixels_do_not_depend_on_the_heap) {
    size_t n;
    uint8_t *d = read_fixture("jpeg_damage/src0.jpg", &n);
    uint8_t *v = malloc(n + 2);
    long checked = 0;
    for (int kind = 1; kind < 5; kind++)
        for (size_t k = 0; k < n; k++) {
            size_t len = make_variant(d, n, kind, k, v);
            Image a, b;
            if (image_decode_memory(v, len, "a.jpg", NULL, &a, NULL) != 0) continue;
            size_t bytes = (size_t)a.w * a.h * 3;
            for (int r = 0; r < 4; r++) {  // several sizes of dirty blocks
                uint8_t *junk = malloc(bytes * (size_t)(r + 1));
                memset(junk, 0xA5, bytes * (size_t)(r + 1));
                free(junk);
            }
            cr_assert_eq(image_decode_memory(v, len, "b.jpg", NULL, &b, NULL), 0, "%s", err_msg());
            cr_expect(a.w == b.w && a.h == b.h && !memcmp(a.rgb, b.rgb, bytes), "%s at %zu: pixels differ", kind_name[kind],
                      k);
            image_free(&a);
            image_free(&b);
            checked++;
        }
    cr_expect_gt(checked, 100);
    free(v);
    free(d);
}
