// Image decoding, resizing and preprocessing against what Pillow and Keras
// produce (fixtures from scripts/fixtures_images.py).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image.h"
#include "testutil.h"

static char *img_path(const char *name) {
    char buf[256];
    snprintf(buf, sizeof buf, "images/%s", name);
    return fixture_path(buf);
}

static Npy load_u8(const char *name) {
    char *p = img_path(name);
    Npy a = npy_load(p);
    free(p);
    cr_assert_str_eq(a.dtype, "u1", "%s: expected uint8", name);
    return a;
}

static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(len + 1);
    cr_assert_eq(fread(d, 1, len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return d;
}

// Compares an RGB8 image with an H,W,3 uint8 array; reports the first
// mismatch and the count.
static void expect_pixels(const char *what, const uint8_t *got, int w, int h, const Npy *want) {
    cr_assert_eq(want->ndim, 3, "%s: fixture is not H,W,3", what);
    cr_assert(want->shape[0] == h && want->shape[1] == w && want->shape[2] == 3,
              "%s: size %dx%d, PIL has %dx%d", what, w, h, want->shape[1], want->shape[0]);
    const uint8_t *e = want->data;
    size_t n = (size_t)w * h * 3, bad = 0, first = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != e[i]) {
            if (!bad++) first = i;
            int d = abs(got[i] - e[i]);
            if (d > maxd) maxd = d;
        }
    cr_expect_eq(bad, 0,
                 "%s: %zu of %zu values differ from PIL (max diff %d; first at y=%zu x=%zu "
                 "c=%zu: got %d, PIL %d)",
                 what, bad, n, maxd, first / 3 / w, first / 3 % w, first % 3, got[first],
                 e[first]);
}

// --- decoding ---------------------------------------------------------------

static const struct { const char *file, *npy; } decode_cases[] = {
    {"jpeg420.jpg", "jpeg420.npy"},
    {"jpeg422.jpg", "jpeg422.npy"},
    {"jpeg444.jpg", "jpeg444.npy"},
    {"jpeg_progressive.jpg", "jpeg_progressive.npy"},
    {"jpeg_odd.jpg", "jpeg_odd.npy"},
    {"jpeg_gray.jpg", "jpeg_gray.npy"},
    {"jpeg_cmyk.jpg", "jpeg_cmyk.npy"},
    {"png_rgb.png", "base_rgb.npy"},
    {"png_rgba.png", "base_rgb.npy"},
    {"png_interlaced.png", "base_rgb.npy"},
    {"png_pal8.png", "png_pal8.npy"},
    {"png_pal4.png", "png_pal4.npy"},
    {"png_pal_trns.png", "png_pal_trns.npy"},
    {"png_gray.png", "png_gray.npy"},
    {"png_gray_trns.png", "png_gray_trns.npy"},
    {"png_rgb_trns.png", "png_rgb_trns.npy"},
    {"png_gray1.png", "png_gray1.npy"},
    {"png_la.png", "png_la.npy"},
    {"png_gray16.png", "png_gray16.npy"},
    {"png_rgb16.png", "png_rgb16.npy"},
    {"png_la16.png", "png_la16.npy"},
    {"bmp24.bmp", "base_rgb.npy"},
    {"bmp32_topdown.bmp", "base_rgb.npy"},
    {"bmp32_v5.bmp", "base_rgb.npy"},
    {"bmp8.bmp", "bmp8.npy"},
    {"bmp_gray8.bmp", "bmp_gray8.npy"},
    {"bmp1.bmp", "bmp1.npy"},
    {"bmp4.bmp", "bmp4.npy"},
    {"bmp16_565.bmp", "bmp16_565.npy"},
    {"bmp16_555.bmp", "bmp16_555.npy"},
    {"bmp_core8.bmp", "bmp_core8.npy"},
    {"ppm_p6.ppm", "base_rgb.npy"},
    {"pgm_p5.pgm", "pgm_p5.npy"},
    {"ppm_p3.ppm", "ppm_p3.npy"},
    {"pgm_p2_max100.pgm", "pgm_p2_max100.npy"},
    {"pbm_p1.pbm", "pbm_p1.npy"},
    {"pbm_p4.pbm", "pbm_p4.npy"},
    {"ppm_p6_max1000.ppm", "ppm_p6_max1000.npy"},
    {"pgm_p5_max31.pgm", "pgm_p5_max31.npy"},
    {"pgm_p5_16bit.pgm", "pgm_p5_16bit.npy"},
    {"pgm_p5_max30.pgm", "pgm_p5_max30.npy"},
    {"pgm_p2_max30.pgm", "pgm_p2_max30.npy"},
};

Test(image, decode_matches_pil) {
    for (size_t i = 0; i < sizeof decode_cases / sizeof decode_cases[0]; i++) {
        char *p = img_path(decode_cases[i].file);
        Image img;
        DecodeInfo info;
        int rc = image_decode_file(p, NULL, &img, &info);
        cr_assert_eq(rc, 0, "%s: %s", decode_cases[i].file, err_msg());
        Npy want = load_u8(decode_cases[i].npy);
        expect_pixels(decode_cases[i].file, img.rgb, img.w, img.h, &want);
        cr_expect_eq(info.scale_denom, 1);
        cr_expect_eq(info.over_budget, 0);
        cr_expect(info.src_w == img.w && info.src_h == img.h);
        npy_free(&want);
        image_free(&img);
        free(p);
    }
}

Test(image, sniff_uses_content_not_extension) {
    // The same PNG bytes, from memory under a .jpg name, decode as PNG.
    char *p = img_path("png_rgb.png");
    size_t n;
    uint8_t *d = read_whole(p, &n);
    Image img;
    DecodeInfo info;
    cr_assert_eq(image_decode_memory(d, n, "photo.jpg", NULL, &img, &info), 0, "%s", err_msg());
    cr_expect_eq(info.format, IMG_PNG);
    cr_expect_str_eq(image_format_name(info.format), "PNG");
    Npy want = load_u8("base_rgb.npy");
    expect_pixels("png from memory", img.rgb, img.w, img.h, &want);
    const char *other = "x";
    cr_expect_eq(image_sniff(d, n, &other), IMG_PNG);
    cr_expect_null(other);
    cr_expect_eq(image_sniff((const uint8_t *)"GIF89a", 6, &other), IMG_UNKNOWN);
    cr_expect_str_eq(other, "GIF");
    cr_expect_eq(image_sniff((const uint8_t *)"II*\0\x08\0\0\0", 8, &other), IMG_UNKNOWN);
    cr_expect_str_eq(other, "TIFF");
    npy_free(&want);
    image_free(&img);
    free(d);
    free(p);
}

// --- reduced-scale JPEG decoding ----------------------------------------------

static Image decode_opt(const char *name, DecodeOptions opt, DecodeInfo *info) {
    char *p = img_path(name);
    Image img;
    int rc = image_decode_file(p, &opt, &img, info);
    cr_assert_eq(rc, 0, "%s: %s", name, err_msg());
    free(p);
    return img;
}

Test(image, reduced_decode_picks_smallest_scale_at_least_target) {
    // jpeg420.jpg is 64x48: 1/2 -> 32x24, 1/4 -> 16x12, 1/8 -> 8x6.
    static const struct { int tw, th, denom, w, h; } cases[] = {
        {20, 20, 2, 32, 24}, {32, 24, 2, 32, 24}, {33, 10, 1, 64, 48}, {16, 12, 4, 16, 12},
        {9, 6, 4, 16, 12},   {8, 6, 8, 8, 6},     {1, 1, 8, 8, 6},     {64, 48, 1, 64, 48},
        {100, 100, 1, 64, 48},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        DecodeInfo info;
        Image img = decode_opt("jpeg420.jpg", (DecodeOptions){cases[i].tw, cases[i].th, 1, 0}, &info);
        cr_expect(img.w == cases[i].w && img.h == cases[i].h && info.scale_denom == cases[i].denom,
                  "target %dx%d: got %dx%d at 1/%d, want %dx%d at 1/%d", cases[i].tw, cases[i].th,
                  img.w, img.h, info.scale_denom, cases[i].w, cases[i].h, cases[i].denom);
        cr_expect_eq(info.over_budget, 0);
        cr_expect(info.src_w == 64 && info.src_h == 48);
        image_free(&img);
    }
    // Odd size rounds up like TJSCALED: 37x29 at 1/4 -> 10x8.
    DecodeInfo info;
    Image img = decode_opt("jpeg_odd.jpg", (DecodeOptions){10, 8, 1, 0}, &info);
    cr_expect(img.w == 10 && img.h == 8 && info.scale_denom == 4, "got %dx%d", img.w, img.h);
    image_free(&img);
    // Without reduced_decode a target does not change anything.
    img = decode_opt("jpeg420.jpg", (DecodeOptions){8, 6, 0, 0}, &info);
    cr_expect(img.w == 64 && img.h == 48 && info.scale_denom == 1);
    image_free(&img);
}

Test(image, reduced_decode_content_is_a_downscale) {
    // The DCT-scaled image is not Keras's, but must be the same picture: close
    // to a 2x2 box average of PIL's full decode.
    DecodeInfo info;
    Image img = decode_opt("jpeg444.jpg", (DecodeOptions){32, 24, 1, 0}, &info);
    cr_assert(img.w == 32 && img.h == 24);
    Npy full = load_u8("jpeg444.npy");
    const uint8_t *f = full.data;
    double sum = 0;
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++) {
                int s = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) s += f[((2 * y + dy) * 64 + 2 * x + dx) * 3 + c];
                sum += fabs(s / 4.0 - img.rgb[(y * 32 + x) * 3 + c]);
            }
    double mad = sum / (32 * 24 * 3);
    cr_expect_lt(mad, 4.0, "mean abs diff vs 2x2 box of full decode: %f", mad);
    npy_free(&full);
    image_free(&img);
}

Test(image, pixel_budget) {
    DecodeInfo info;
    // 64x48 = 3072 pixels over a budget of 1000: 1/2 (768) fits.
    Image img = decode_opt("jpeg420.jpg", (DecodeOptions){0, 0, 0, 1000}, &info);
    cr_expect(img.w == 32 && img.h == 24 && info.scale_denom == 2 && info.over_budget == 1,
              "got %dx%d 1/%d over=%d", img.w, img.h, info.scale_denom, info.over_budget);
    image_free(&img);
    img = decode_opt("jpeg420.jpg", (DecodeOptions){0, 0, 0, 700}, &info);
    cr_expect(img.w == 16 && img.h == 12 && info.scale_denom == 4 && info.over_budget == 1);
    image_free(&img);
    // reduced_decode may go further than the budget needs.
    img = decode_opt("jpeg420.jpg", (DecodeOptions){8, 6, 1, 1000}, &info);
    cr_expect(img.w == 8 && img.h == 6 && info.scale_denom == 8 && info.over_budget == 1);
    image_free(&img);
    // Exactly at the budget is fine.
    img = decode_opt("jpeg420.jpg", (DecodeOptions){0, 0, 0, 3072}, &info);
    cr_expect(img.w == 64 && info.over_budget == 0);
    image_free(&img);

    // Too big even at 1/8 (8x6 = 48 pixels), and non-JPEG over budget: errors
    // naming the file and its size.
    const char *names[] = {"jpeg420.jpg", "png_rgb.png", "bmp24.bmp", "ppm_p6.ppm"};
    const long budgets[] = {40, 3071, 3071, 3071};
    for (int i = 0; i < 4; i++) {
        char *p = img_path(names[i]);
        Image bad;
        DecodeOptions opt = {0, 0, 0, budgets[i]};
        cr_expect_eq(image_decode_file(p, &opt, &bad, NULL), -1, "%s", names[i]);
        cr_expect_null(bad.rgb);
        cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "pixel budget") &&
                      strstr(err_msg(), "64x48") && strstr(err_msg(), "3072 pixels"),
                  "message: %s", err_msg());
        // A JPEG names the size it would still have at 1/8 scale, not only the full one.
        if (i == 0) cr_expect(strstr(err_msg(), "8x6 = 48 pixels"), "message: %s", err_msg());
        free(p);
    }
}

// --- bad input ----------------------------------------------------------------

static void expect_decode_error(const char *path, const char *reason) {
    Image img = {1, 1, (uint8_t *)"x"};
    err_clear();
    int rc = image_decode_file(path, NULL, &img, NULL);
    cr_expect_eq(rc, -1, "%s: decoded, expected an error (%s)", path, reason);
    cr_expect_null(img.rgb, "%s: output not cleared", path);
    cr_expect(strstr(err_msg(), path) != NULL, "message lacks the path: %s", err_msg());
    cr_expect(strstr(err_msg(), reason) != NULL, "message lacks '%s': %s", reason, err_msg());
    if (rc == 0) image_free(&img);
}

static void write_prefix(const char *dir, const char *name, const char *fixture, size_t keep,
                         size_t cut_end, char *out_path) {
    char *src = img_path(fixture);
    size_t n;
    uint8_t *d = read_whole(src, &n);
    size_t len = keep ? keep : n - cut_end;
    sprintf(out_path, "%s/%s", dir, name);
    write_file(out_path, d, len);
    free(d);
    free(src);
}

Test(image, bad_files_are_errors_with_path_and_reason) {
    char *dir = make_temp_dir("image");
    char p[1024];
    char *src = img_path("jpeg420.jpg");
    size_t n;
    uint8_t *jpg = read_whole(src, &n);
    free(src);

    sprintf(p, "%s/half.jpg", dir);
    write_file(p, jpg, n / 2);
    expect_decode_error(p, "truncated");

    // All scan data present, only the EOI marker missing: PIL still refuses.
    sprintf(p, "%s/no_eoi.jpg", dir);
    write_file(p, jpg, n - 2);
    expect_decode_error(p, "truncated");

    write_prefix(dir, "half_progressive.jpg", "jpeg_progressive.jpg", 0, 300, p);
    expect_decode_error(p, "truncated");

    sprintf(p, "%s/header_only.jpg", dir);
    write_file(p, jpg, 40);
    expect_decode_error(p, "JPEG");

    // A coding process libjpeg-turbo 2 lacks (the frame marker made SOF3,
    // lossless) is "unsupported", not damage.
    for (size_t k = 0; k + 1 < n; k++)
        if (jpg[k] == 0xFF && jpg[k + 1] == 0xC0) {
            jpg[k + 1] = 0xC3;
            sprintf(p, "%s/lossless.jpg", dir);
            write_file(p, jpg, n);
            jpg[k + 1] = 0xC0;
            expect_decode_error(p, "unsupported JPEG: lossless or hierarchical coding");
            break;
        }

    sprintf(p, "%s/empty.jpg", dir);
    write_file(p, "", 0);
    expect_decode_error(p, "empty file");

    sprintf(p, "%s/notes.jpg", dir);
    const char *txt = "these are not the pixels you are looking for\n";
    write_file(p, txt, strlen(txt));
    expect_decode_error(p, "not an image");

    sprintf(p, "%s/anim.gif", dir);
    write_file(p, "GIF89a", 6);
    expect_decode_error(p, "unsupported image type (GIF)");

    sprintf(p, "%s/scan.tif", dir);
    write_file(p, "II*\0\x08\0\0\0", 8);
    expect_decode_error(p, "unsupported image type (TIFF)");

    write_prefix(dir, "half.png", "png_rgb.png", 0, 4000, p);
    expect_decode_error(p, "PNG");
    write_prefix(dir, "half.bmp", "bmp24.bmp", 5000, 0, p);
    expect_decode_error(p, "truncated BMP");
    write_prefix(dir, "half.ppm", "ppm_p6.ppm", 5000, 0, p);
    expect_decode_error(p, "truncated PNM");
    write_prefix(dir, "half_plain.ppm", "ppm_p3.ppm", 600, 0, p);
    expect_decode_error(p, "truncated PNM");

    // A corrupted PNG (one IDAT byte flipped): the CRC check catches it.
    src = img_path("png_rgb.png");
    uint8_t *png = read_whole(src, &n);
    free(src);
    png[n / 2] ^= 0x55;
    sprintf(p, "%s/flipped.png", dir);
    write_file(p, png, n);
    expect_decode_error(p, "PNG");
    free(png);

    // A BMP holding a JPEG (BI_JPEG, printers only; Pillow refuses it too):
    // recognised, reported as unsupported. (RLE8 / RLE4: tests/test_decoders.c.)
    uint8_t bmp[60] = {'B', 'M'};
    bmp[10] = 54;
    bmp[14] = 40;
    bmp[18] = 4;      // width 4
    bmp[22] = 2;      // height 2
    bmp[26] = 1;      // planes
    bmp[28] = 24;     // bits
    bmp[30] = 4;      // BI_JPEG
    sprintf(p, "%s/jpeg_in.bmp", dir);
    write_file(p, bmp, sizeof bmp);
    expect_decode_error(p, "unsupported BMP compression (embedded JPEG)");

    sprintf(p, "%s/missing.png", dir);
    expect_decode_error(p, "cannot open");
    expect_decode_error(dir, "not a regular file");

    free(jpg);
    remove_tree(dir);
    free(dir);
}

Test(image, jpeg_with_trailing_bytes_decodes) {
    // Data after EOI (common from some cameras) is ignored by libjpeg and PIL.
    char *dir = make_temp_dir("image");
    char *src = img_path("jpeg420.jpg");
    size_t n;
    uint8_t *jpg = read_whole(src, &n);
    jpg = realloc(jpg, n + 16);
    memset(jpg + n, 0xAB, 16);
    Image img;
    cr_assert_eq(image_decode_memory(jpg, n + 16, "trailing.jpg", NULL, &img, NULL), 0, "%s",
                 err_msg());
    Npy want = load_u8("jpeg420.npy");
    expect_pixels("trailing", img.rgb, img.w, img.h, &want);
    npy_free(&want);
    image_free(&img);
    free(jpg);
    free(src);
    remove_tree(dir);
    free(dir);
}

Test(image, jpeg_warning_does_not_hide_truncation) {
    // Two junk bytes before SOS: libjpeg warns "extraneous bytes" and PIL
    // decodes normally; a warning must not hide that a copy is truncated.
    // (The whole sweep against Pillow: tests/test_jpeg_damage.c.)
    char *src = img_path("jpeg420.jpg");
    size_t n;
    uint8_t *jpg = read_whole(src, &n);
    size_t sos = 0;
    for (size_t i = 2; i + 1 < n; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA) {
            sos = i;
            break;
        }
    cr_assert(sos > 0);
    uint8_t *junk = malloc(n + 2);
    memcpy(junk, jpg, sos);
    junk[sos] = junk[sos + 1] = 0;
    memcpy(junk + sos + 2, jpg + sos, n - sos);
    Image img;
    cr_assert_eq(image_decode_memory(junk, n + 2, "junk.jpg", NULL, &img, NULL), 0, "%s", err_msg());
    Npy want = load_u8("jpeg420.npy");
    expect_pixels("junk before SOS", img.rgb, img.w, img.h, &want);
    image_free(&img);
    cr_expect_eq(image_decode_memory(junk, (n + 2) / 2, "junk_half.jpg", NULL, &img, NULL), -1);
    cr_expect(strstr(err_msg(), "junk_half.jpg") && strstr(err_msg(), "truncated"), "%s", err_msg());
    npy_free(&want);
    free(junk), free(jpg), free(src);
}

// --- resizing ----------------------------------------------------------------

Test(image, resize_matches_pil_2d) {
    Npy base = load_u8("base_rgb.npy");
    static const int sizes[][2] = {{23, 17}, {97, 71}, {64, 31}, {41, 48}, {7, 5}, {1, 1}};
    for (int s = 0; s < 6; s++)
        for (int m = 0; m < 2; m++) {
            int w = sizes[s][0], h = sizes[s][1];
            char name[64];
            snprintf(name, sizeof name, "resize_%s_%dx%d.npy", m ? "bilinear" : "nearest", w, h);
            Npy want = load_u8(name);
            uint8_t *out = malloc((size_t)w * h * 3);
            cr_assert_eq(image_resize(base.data, 64, 48, out, w, h, m ? INTERP_BILINEAR : INTERP_NEAREST), 0);
            expect_pixels(name, out, w, h, &want);
            free(out);
            npy_free(&want);
        }
    // Same size: an exact copy.
    uint8_t *out = malloc(64 * 48 * 3);
    cr_assert_eq(image_resize(base.data, 64, 48, out, 64, 48, INTERP_BILINEAR), 0);
    cr_expect_eq(memcmp(out, base.data, 64 * 48 * 3), 0);
    free(out);
    npy_free(&base);
}

// Both orders of the two passes (Pillow 13 goes vertical first when the
// height loses more than twice the pixels the width does): each shape's
// bytes equal Pillow's.
Test(image, resize_2d_pass_order_matches_pil) {
    char *p = img_path("shapes_2d.npy");
    Npy shapes = npy_load(p);
    free(p);
    Npy src = load_u8("bilinear_2d_src.npy"), want = load_u8("bilinear_2d.npy");
    const int32_t *sh = shapes.data;
    size_t at_in = 0, at_out = 0;
    int vertical_first = 0;
    for (int i = 0; i < shapes.shape[0]; i++) {
        const int sw = sh[4 * i], shh = sh[4 * i + 1], dw = sh[4 * i + 2], dh = sh[4 * i + 3];
        vertical_first += dh < shh && shh - dh > 2 * (sw - dw);
        uint8_t *out = malloc((size_t)dw * dh * 3);
        cr_assert_eq(image_resize((const uint8_t *)src.data + at_in, sw, shh, out, dw, dh, INTERP_BILINEAR), 0);
        int bad = 0;
        for (size_t k = 0; k < (size_t)dw * dh * 3; k++) bad += out[k] != ((const uint8_t *)want.data)[at_out + k];
        cr_expect_eq(bad, 0, "bilinear %dx%d -> %dx%d: %d of %d bytes differ from Pillow's", sw, shh, dw, dh, bad,
                     dw * dh * 3);
        free(out);
        at_in += (size_t)sw * shh * 3, at_out += (size_t)dw * dh * 3;
    }
    cr_expect_eq(at_in, src.count, "shape table and source pixels disagree");
    cr_expect_eq(at_out, want.count, "shape table and Pillow's outputs disagree");
    cr_expect(vertical_first > 0 && vertical_first < shapes.shape[0], "both orders covered (%d vertical first)",
              vertical_first);
    npy_free(&shapes), npy_free(&src), npy_free(&want);
}

Test(image, resize_1d_tables_match_pil) {
    char *p = img_path("pairs_1d.npy");
    Npy pairs = npy_load(p);
    free(p);
    Npy near = load_u8("nearest_1d.npy"), bil = load_u8("bilinear_1d.npy");
    Npy src = load_u8("bilinear_src.npy");
    const int32_t *pr = pairs.data;
    const uint8_t *nt = near.data, *bt = bil.data, *row = src.data;
    uint8_t in[256 * 3], out[300 * 3], col_out[300 * 3];
    size_t off = 0;
    int bad_near = 0, bad_bil = 0, bad_col = 0;
    for (int i = 0; i < pairs.shape[0]; i++) {
        int a = pr[2 * i], b = pr[2 * i + 1];
        // Ramp: value = source index, so the output names the chosen column.
        for (int x = 0; x < a; x++) in[3 * x] = in[3 * x + 1] = in[3 * x + 2] = (uint8_t)x;
        image_resize(in, a, 1, out, b, 1, INTERP_NEAREST);
        image_resize(in, 1, a, col_out, 1, b, INTERP_NEAREST);  // rows: same rule
        for (int x = 0; x < b; x++) {
            if (out[3 * x] != nt[off + x] && bad_near++ < 5)
                cr_log_error("nearest %d->%d: x=%d got %d PIL %d", a, b, x, out[3 * x], nt[off + x]);
            if (col_out[3 * x] != nt[off + x] && bad_col++ < 5)
                cr_log_error("nearest rows %d->%d: y=%d got %d PIL %d", a, b, x, col_out[3 * x],
                             nt[off + x]);
        }
        image_resize(row, a, 1, out, b, 1, INTERP_BILINEAR);
        for (int x = 0; x < 3 * b; x++)
            if (out[x] != bt[3 * off + x] && bad_bil++ < 5)
                cr_log_error("bilinear %d->%d: i=%d got %d PIL %d", a, b, x, out[x], bt[3 * off + x]);
        off += b;
    }
    cr_expect_eq(off, near.count, "pair table and index table disagree");
    cr_expect_eq(bad_near + bad_col + bad_bil, 0, "mismatches: nearest %d, rows %d, bilinear %d",
                 bad_near, bad_col, bad_bil);
    npy_free(&pairs), npy_free(&near), npy_free(&bil), npy_free(&src);
}

Test(image, resize_rejects_bad_sizes) {
    uint8_t px[3] = {0}, out[3];
    cr_expect_eq(image_resize(px, 1, 1, out, 0, 1, INTERP_NEAREST), -1);
    cr_expect(strstr(err_msg(), "invalid size"));
    cr_expect_eq(image_resize(px, 0, 1, out, 1, 1, INTERP_BILINEAR), -1);
}

// --- preprocessing -------------------------------------------------------------

Test(image, preprocess_matches_keras) {
    Npy src = load_u8("prep_src.npy");
    size_t n = (size_t)src.shape[0] * src.shape[1];
    const char *names[] = {"caffe", "rescale", "torch"};
    float *out = malloc(n * 3 * sizeof(float)), *out2 = malloc(n * 3 * sizeof(float));
    for (int m = 0; m < 3; m++) {
        PrepMode mode;
        cr_assert_eq(prep_parse(names[m], &mode), 0);
        cr_expect_str_eq(prep_name(mode), names[m]);
        char fname[64];
        snprintf(fname, sizeof fname, "images/prep_%s.npy", names[m]);
        char *p = fixture_path(fname);
        Npy want = npy_load(p);
        free(p);
        cr_assert_str_eq(want.dtype, "f4");
        cr_assert_eq(want.count, n * 3);
        image_preprocess(src.data, n, mode, out);
        float d = max_abs_diff(out, want.data, n * 3);
        cr_expect_leq(d, 1e-5f, "%s: max diff %g from Keras", names[m], d);
        // Float input (after augmentation) gives the same numbers, in place too.
        for (size_t i = 0; i < n * 3; i++) out2[i] = ((uint8_t *)src.data)[i];
        image_preprocess_f32(out2, n, mode, out2);
        cr_expect_eq(memcmp(out, out2, n * 3 * sizeof(float)), 0, "%s: f32 path differs", names[m]);
        npy_free(&want);
    }
    free(out), free(out2);
    npy_free(&src);
}

Test(image, mode_names) {
    Interp ip;
    cr_expect_eq(interp_parse("nearest", &ip), 0);
    cr_expect_eq(ip, INTERP_NEAREST);
    cr_expect_eq(interp_parse("bilinear", &ip), 0);
    cr_expect_eq(ip, INTERP_BILINEAR);
    cr_expect_str_eq(interp_name(INTERP_BILINEAR), "bilinear");
    cr_expect_eq(interp_parse("bicubic", &ip), -1);
    cr_expect(strstr(err_msg(), "bicubic") && strstr(err_msg(), "nearest"), "%s", err_msg());
    PrepMode pm;
    cr_expect_eq(prep_parse("Caffe", &pm), -1);
    cr_expect(strstr(err_msg(), "Caffe") && strstr(err_msg(), "rescale"), "%s", err_msg());
    cr_expect_eq(prep_parse(NULL, &pm), -1);
}

// --- one call per image ----------------------------------------------------------

Test(image, load_decodes_resizes_preprocesses) {
    // png_rgb.png decodes to base_rgb; 23x17 bilinear is resize_bilinear_23x17.
    char *p = img_path("png_rgb.png");
    Npy rs = load_u8("resize_bilinear_23x17.npy");
    LoadOptions opt = {.w = 23, .h = 17, .interp = INTERP_BILINEAR, .prep = PREP_CAFFE};
    float *out = malloc(23 * 17 * 3 * sizeof(float));
    DecodeInfo info;
    cr_assert_eq(image_load(p, &opt, NULL, out, &info), 0, "%s", err_msg());
    cr_expect(info.src_w == 64 && info.src_h == 48 && info.format == IMG_PNG);
    const uint8_t *e = rs.data;
    float maxd = 0;
    for (int i = 0; i < 23 * 17; i++) {
        float want[3] = {e[3 * i + 2] - 103.939f, e[3 * i + 1] - 116.779f, e[3 * i] - 123.68f};
        for (int c = 0; c < 3; c++) maxd = fmaxf(maxd, fabsf(out[3 * i + c] - want[c]));
    }
    cr_expect_leq(maxd, 1e-4f, "max diff %g", maxd);

    // Same size: no resize; rgb8 variant gives PIL's pixels.
    uint8_t *rgb = malloc(64 * 48 * 3);
    opt = (LoadOptions){.w = 64, .h = 48, .interp = INTERP_NEAREST, .prep = PREP_RESCALE};
    cr_assert_eq(image_load_rgb8(p, &opt, rgb, NULL), 0, "%s", err_msg());
    Npy base = load_u8("base_rgb.npy");
    expect_pixels("load_rgb8", rgb, 64, 48, &base);

    // Errors carry the path.
    opt.w = 0;
    cr_expect_eq(image_load(p, &opt, NULL, out, NULL), -1);
    cr_expect(strstr(err_msg(), p));
    free(rgb), free(out), free(p);
    npy_free(&rs), npy_free(&base);
}

// image_chain_rgb8 + image_preprocess (what the GPU gets, and preprocesses
// with the same prep_pixel) is image_chain bit for bit: every preprocessing,
// resized (nearest, bilinear) or not.
Test(image, rgb8_chain_then_preprocess_equals_chain) {
    char *p = img_path("png_rgb.png");
    uint8_t *data;
    size_t n;
    cr_assert_eq(image_read_file(p, &data, &n), 0, "%s", err_msg());
    const int sizes[3][2] = {{64, 48}, {23, 17}, {80, 70}};
    for (int k = 0; k < 3; k++)
        for (int prep = 0; prep < 3; prep++) {
            const int w = sizes[k][0], h = sizes[k][1];
            LoadOptions opt = {.w = w, .h = h, .interp = k == 1 ? INTERP_BILINEAR : INTERP_NEAREST,
                               .prep = (PrepMode)prep};
            float *a = malloc(sizeof(float) * w * h * 3), *b = malloc(sizeof(float) * w * h * 3);
            uint8_t *rgb = malloc((size_t)w * h * 3);
            cr_assert_eq(image_chain(data, n, p, &opt, NULL, a, NULL), 0, "%s", err_msg());
            cr_assert_eq(image_chain_rgb8(data, n, p, &opt, rgb, NULL), 0, "%s", err_msg());
            image_preprocess(rgb, (size_t)w * h, (PrepMode)prep, b);
            cr_expect(!memcmp(a, b, sizeof(float) * w * h * 3), "%dx%d %s: the RGB8 chain differs", w, h,
                      prep_name((PrepMode)prep));
            free(a), free(b), free(rgb);
        }
    // Errors name the file.
    LoadOptions bad = {.w = 8, .h = 8};
    cr_expect_eq(image_chain_rgb8(data, n / 2, p, &bad, (uint8_t[192]){0}, NULL), -1);
    cr_expect(strstr(err_msg(), p), "%s", err_msg());
    free(data), free(p);
}
