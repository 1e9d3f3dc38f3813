// Augmentation (common/augment.c) against Keras 3's ImageDataGenerator
// (fixtures from scripts/fixtures_augment.py), its determinism, the --augment
// spec, and the PNG writer for --save-augmented (common/image_write.c).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment.h"
#include "error.h"
#include "image.h"
#include "image_write.h"
#include "rng.h"
#include "simd.h"
#include "testutil.h"

static AugmentParams params_row(const float *r) {
    AugmentParams p = {r[0], r[1], r[2], r[3], r[4], r[5], r[6] != 0};
    return p;
}

// Every case of one fixture image: ours vs Keras's apply_transform.
// Measured when written (Keras 3.15, scipy 1.17, numpy 2.4): 16 of the 17
// cases bit-identical (scipy's arithmetic is reproduced step by step in
// double); in the quarter turn (case 9, cos(90 deg) = 6e-17) 29 of 3219
// values differ by at most 1.1e-13, where a sample lands within 1e-15 of a
// pixel and numpy's 3x3 products round their last bit differently. The
// tolerance leaves room for another libm's sin/cos doing the same elsewhere.
#define KERAS_TOL 1e-4f  // of 255

static void check_fixture(const char *name) {
    Npy in = fixture_npy("augment/%s_in.npy", name);
    Npy par = fixture_npy("augment/%s_params.npy", name);
    Npy want = fixture_npy("augment/%s_out.npy", name);
    cr_assert_str_eq(in.dtype, "f4");
    cr_assert_eq(in.ndim, 3);
    int h = in.shape[0], w = in.shape[1], c = in.shape[2];
    int n = par.shape[0];
    cr_assert_eq(par.shape[1], 7);
    cr_assert(want.ndim == 4 && want.shape[0] == n && want.shape[1] == h && want.shape[2] == w);
    size_t sz = (size_t)h * w * c;
    float *out = malloc(sizeof(float) * sz);
    float worst = 0;
    for (int k = 0; k < n; k++) {
        AugmentParams p = params_row((const float *)par.data + 7 * k);
        augment_apply(&p, in.data, h, w, c, out);
        const float *e = (const float *)want.data + sz * k;
        float d = max_abs_diff(out, e, sz);
        if (d > worst) worst = d;
        cr_expect(d <= KERAS_TOL,
                  "%s case %d (theta %g tx %g ty %g shear %g zx %g zy %g flip %d): max diff %g "
                  "from Keras",
                  name, k, p.theta, p.tx, p.ty, p.shear, p.zx, p.zy, p.flip, d);
    }
    cr_log_info("%s: %d cases, max |ours - Keras| = %g", name, n, worst);
    free(out);
    npy_free(&in);
    npy_free(&par);
    npy_free(&want);
}

Test(augment, matches_keras_37x29) { check_fixture("r37x29"); }
Test(augment, matches_keras_seeds_draws_32x32) { check_fixture("r32x32"); }

// The fixture's cases exercise what they claim: Keras's output differs from
// the input (so a no-op would fail above), and the large shift is mostly
// edge replication (so mode 'nearest' is what is compared).
Test(augment, fixture_cases_are_meaningful) {
    Npy in = fixture_npy("augment/r37x29_in.npy");
    Npy want = fixture_npy("augment/r37x29_out.npy");
    size_t sz = 37 * 29 * 3;
    for (int k = 1; k < want.shape[0]; k++)
        cr_expect(max_abs_diff(in.data, (float *)want.data + sz * k, sz) > 10, "case %d", k);
    // case 8: tx = 20, ty = -25. Keras's row/column swap makes tx move
    // columns and ty rows: output (i, j) samples input (i - 25, j + 20), so
    // rows i < 25 and columns j >= 8 all repeat the corner input (0, 28).
    const float *o = (float *)want.data + sz * 8, *x = in.data;
    for (int i = 0; i < 25; i++)
        for (int j = 8; j < 29; j++)
            cr_expect_eq(o[(i * 29 + j) * 3], x[(0 * 29 + 28) * 3], "i=%d j=%d", i, j);
    npy_free(&in);
    npy_free(&want);
}

Test(augment, identity_is_an_exact_copy) {
    Npy in = fixture_npy("augment/r37x29_in.npy");
    size_t sz = 37 * 29 * 3;
    float *x = malloc(sizeof(float) * sz), *out = malloc(sizeof(float) * sz);
    // Non-integer values too: any interpolation would round them.
    for (size_t i = 0; i < sz; i++) x[i] = ((float *)in.data)[i] + 0.123456f * (float)(i % 7);
    AugmentParams id = {0, 0, 0, 0, 1, 1, 0};
    augment_apply(&id, x, 37, 29, 3, out);
    cr_assert_eq(memcmp(x, out, sizeof(float) * sz), 0);
    // A drawn identity: the spec "none" draws exactly the identity.
    AugmentSpec none;
    augment_spec_none(&none);
    AugmentParams p;
    augment_draw(&none, 7, 3, 11, 37, 29, &p);
    cr_assert(p.theta == 0 && p.tx == 0 && p.ty == 0 && p.shear == 0 && p.zx == 1 && p.zy == 1 &&
              !p.flip);
    free(x);
    free(out);
    npy_free(&in);
}

Test(augment, flip_alone_is_an_exact_mirror) {
    int h = 5, w = 7, c = 3;
    float in[5 * 7 * 3], out[5 * 7 * 3];
    for (int i = 0; i < h * w * c; i++) in[i] = 0.37f * i + 0.001f * (i % 5);
    AugmentParams f = {0, 0, 0, 0, 1, 1, 1};
    augment_apply(&f, in, h, w, c, out);
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++)
            for (int k = 0; k < c; k++)
                cr_assert_eq(out[(i * w + j) * c + k], in[(i * w + (w - 1 - j)) * c + k]);
}

// Flip after a warp mirrors the warped image exactly (Keras flips last).
Test(augment, flip_after_warp_mirrors_the_warp) {
    Npy in = fixture_npy("augment/r32x32_in.npy");
    size_t sz = 32 * 32 * 3;
    float *a = malloc(sizeof(float) * sz), *b = malloc(sizeof(float) * sz);
    AugmentParams p = {12.5, 2.25, -3.5, 4, 1.1, 0.9, 0}, q = p;
    q.flip = 1;
    augment_apply(&p, in.data, 32, 32, 3, a);
    augment_apply(&q, in.data, 32, 32, 3, b);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++)
            for (int k = 0; k < 3; k++)
                cr_assert_eq(b[(i * 32 + j) * 3 + k], a[(i * 32 + 31 - j) * 3 + k]);
    free(a);
    free(b);
    npy_free(&in);
}

// The AVX2 warp (four output columns at a time) gives the portable warp's
// bits: random parameters far outside the seeds' ranges (samples clamped at
// every edge, zooms that repeat or skip pixels), widths that leave 1 to 3
// columns to the scalar tail, 1 to 4 channels, flips, negative zero and NaN
// coordinates (a NaN angle: scipy would fill there; we clamp to 0 on both).
Test(augment, avx2_warp_equals_portable_warp) {
    if (simd_cpu_level() < SIMD_AVX2) {
        cr_log_warn("this CPU has no AVX2: only the portable warp runs here");
        return;
    }
    uint64_t ctr = 0;  // rng_hash(7, ctr++): the draws
    for (int t = 0; t < 400; t++) {
        int h = 1 + (int)(rng_hash(7, ctr++) % 40), w = 1 + (int)(rng_hash(7, ctr++) % 41), c = 1 + (int)(rng_hash(7, ctr++) % 4);
        size_t sz = (size_t)h * w * c;
        float *in = malloc(sizeof(float) * sz), *a = malloc(sizeof(float) * sz), *b = malloc(sizeof(float) * sz);
        for (size_t i = 0; i < sz; i++) in[i] = (float)(rng_hash(7, ctr++) % 25600) / 100.0f;
        double u[6];
        for (int k = 0; k < 6; k++) u[k] = (double)(rng_hash(7, ctr++) >> 11) / 9007199254740992.0 * 2 - 1;
        AugmentParams p = {180 * u[0], w * 1.5 * u[1], h * 1.5 * u[2], 60 * u[3], 1 + 0.9 * u[4], 1 + 0.9 * u[5],
                           (int)(rng_hash(7, ctr++) & 1)};
        if (t == 1) p.theta = NAN;
        if (t == 2) p = (AugmentParams){0, -0.0, 0.5, 0, 1, 1, 1};
        simd_set_level(SIMD_PORTABLE);
        augment_apply(&p, in, h, w, c, a);
        simd_set_level(SIMD_AVX512);  // the widest the CPU has (the warp's AVX2)
        augment_apply(&p, in, h, w, c, b);
        cr_assert_eq(memcmp(a, b, sizeof(float) * sz), 0,
                     "%dx%dx%d theta %g tx %g ty %g shear %g zx %g zy %g flip %d: the AVX2 warp differs", h, w, c,
                     p.theta, p.tx, p.ty, p.shear, p.zx, p.zy, p.flip);
        free(in), free(a), free(b);
    }
}

// A pure integer shift copies pixels: no interpolation error at all.
Test(augment, integer_shift_copies_pixels) {
    int h = 9, w = 11;
    float in[9 * 11], out[9 * 11];
    for (int i = 0; i < h * w; i++) in[i] = (float)(i * 7 % 23) + 0.5f;
    // As in Keras, tx moves columns and ty rows: out (i, j) = in (i + ty, j + tx).
    AugmentParams p = {0, 2, -3, 0, 1, 1, 0};
    augment_apply(&p, in, h, w, 1, out);
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            int si = i - 3 < 0 ? 0 : i - 3, sj = j + 2 > w - 1 ? w - 1 : j + 2;
            cr_assert_eq(out[i * w + j], in[si * w + sj], "i=%d j=%d", i, j);
        }
}

static int params_eq(const AugmentParams *a, const AugmentParams *b) {
    return a->theta == b->theta && a->tx == b->tx && a->ty == b->ty && a->shear == b->shear &&
           a->zx == b->zx && a->zy == b->zy && a->flip == b->flip;
}

Test(augment, draws_depend_only_on_seed_epoch_index) {
    AugmentSpec s;
    augment_spec_seeds(&s);
    AugmentParams a, b, c;
    augment_draw(&s, 42, 3, 17, 150, 150, &a);
    // Other draws in between (another thread's images, another order) change nothing.
    for (long i = 0; i < 50; i++) augment_draw(&s, 42, 3 + i % 2, i, 150, 150, &c);
    augment_draw(&s, 42, 3, 17, 150, 150, &b);
    cr_assert(params_eq(&a, &b));
    // Same params, same pixels.
    Npy in = fixture_npy("augment/r32x32_in.npy");
    size_t sz = 32 * 32 * 3;
    float *x = malloc(sizeof(float) * sz), *y = malloc(sizeof(float) * sz);
    augment_apply(&a, in.data, 32, 32, 3, x);
    augment_apply(&b, in.data, 32, 32, 3, y);
    cr_assert_eq(memcmp(x, y, sizeof(float) * sz), 0);
    // Another epoch, index or seed: other parameters (every one of them).
    const long other[3][3] = {{42, 4, 17}, {42, 3, 18}, {43, 3, 17}};
    for (int k = 0; k < 3; k++) {
        augment_draw(&s, (uint64_t)other[k][0], other[k][1], other[k][2], 150, 150, &c);
        cr_expect(c.theta != a.theta && c.tx != a.tx && c.ty != a.ty && c.shear != a.shear &&
                      c.zx != a.zx && c.zy != a.zy,
                  "draw %d repeats a parameter", k);
    }
    // Flips differ across indices (about half are set).
    int flips = 0;
    for (long i = 0; i < 64; i++) augment_draw(&s, 42, 3, i, 150, 150, &c), flips += c.flip;
    cr_expect(flips > 16 && flips < 48, "%d of 64 flipped", flips);
    free(x);
    free(y);
    npy_free(&in);
}

Test(augment, draws_stay_in_range_and_cover_it) {
    AugmentSpec s;
    augment_spec_seeds(&s);
    const int N = 20000, H = 150, W = 120;
    double mn[6], mx[6], sum[6] = {0};
    for (int k = 0; k < 6; k++) mn[k] = INFINITY, mx[k] = -INFINITY;
    int flips = 0, zx_eq_zy = 0;
    for (int i = 0; i < N; i++) {
        AugmentParams p;
        augment_draw(&s, 1, i / 1000, i, H, W, &p);
        double v[6] = {p.theta, p.tx, p.ty, p.shear, p.zx, p.zy};
        for (int k = 0; k < 6; k++) {
            if (v[k] < mn[k]) mn[k] = v[k];
            if (v[k] > mx[k]) mx[k] = v[k];
            sum[k] += v[k];
        }
        flips += p.flip;
        zx_eq_zy += p.zx == p.zy;
    }
    // tx is a fraction of the height (rows), ty of the width (columns).
    const double lo[6] = {-30, -0.2 * H, -0.2 * W, -0.2, 1 - 0.2f, 1 - 0.2f};
    const double hi[6] = {30, 0.2 * H, 0.2 * W, 0.2, 1 + 0.2f, 1 + 0.2f};
    const char *name[6] = {"theta", "tx", "ty", "shear", "zx", "zy"};
    for (int k = 0; k < 6; k++) {
        double span = hi[k] - lo[k], mean = sum[k] / N;
        cr_expect(mn[k] >= lo[k] - 1e-9 * span && mx[k] <= hi[k] + 1e-9 * span,
                  "%s outside [%g, %g]: %g..%g", name[k], lo[k], hi[k], mn[k], mx[k]);
        cr_expect(mn[k] < lo[k] + 0.01 * span && mx[k] > hi[k] - 0.01 * span,
                  "%s does not cover [%g, %g]: %g..%g", name[k], lo[k], hi[k], mn[k], mx[k]);
        // Uniform: the mean's standard error is span / sqrt(12 N) = 0.002 span.
        cr_expect(fabs(mean - (lo[k] + hi[k]) / 2) < 0.01 * span, "%s mean %g", name[k], mean);
    }
    cr_expect(flips > N * 0.48 && flips < N * 0.52, "%d of %d flipped", flips, N);
    cr_expect_eq(zx_eq_zy, 0, "zx and zy are drawn independently");

    // Shifts >= 1 are pixels, not fractions.
    AugmentSpec px;
    augment_spec_none(&px);
    px.width_shift = 5;
    double tmax = 0;
    for (int i = 0; i < 2000; i++) {
        AugmentParams p;
        augment_draw(&px, 1, 0, i, H, W, &p);
        cr_assert(fabs(p.ty) <= 5 && p.tx == 0);
        if (fabs(p.ty) > tmax) tmax = fabs(p.ty);
    }
    cr_expect(tmax > 4.9);
}

// A range of 0 draws exactly Keras's neutral value, and leaves the other
// parameters' draws as they were.
Test(augment, zero_ranges_give_exact_neutral_values) {
    AugmentSpec all, some;
    augment_spec_seeds(&all);
    some = all;
    some.rotation = 0;
    some.shear = 0;
    some.zoom_lo = some.zoom_hi = 1;
    some.hflip = 0;
    for (long i = 0; i < 100; i++) {
        AugmentParams a, b;
        augment_draw(&all, 5, 1, i, 64, 64, &a);
        augment_draw(&some, 5, 1, i, 64, 64, &b);
        cr_assert(b.theta == 0 && b.shear == 0 && b.zx == 1 && b.zy == 1 && b.flip == 0);
        cr_assert(b.tx == a.tx && b.ty == a.ty);
    }
}

// --- the spec -------------------------------------------------------------------

static void roundtrip(const char *text, const char *canonical) {
    AugmentSpec s, t;
    cr_assert_eq(augment_spec_parse(text, &s), 0, "%s: %s", text, err_msg());
    char buf[256];
    augment_spec_format(&s, buf, sizeof buf);
    cr_expect_str_eq(buf, canonical, "format(parse(%s))", text);
    cr_assert_eq(augment_spec_parse(buf, &t), 0, "%s: %s", buf, err_msg());
    cr_expect_eq(memcmp(&s, &t, sizeof s), 0, "parse(format(s)) != s for %s", text);
}

Test(augment, spec_parse_format_roundtrip) {
    roundtrip("rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip", "rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip");
    roundtrip("seeds", "rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip");
    roundtrip("none", "none");
    roundtrip("flip=0", "none");
    roundtrip(" rotation = 10 , flip ", "rotation=10,flip");
    roundtrip("width_shift=0.1,height_shift=12", "width_shift=0.1,height_shift=12");
    roundtrip("height_shift=0.3", "height_shift=0.3");
    roundtrip("shift=0.2,width_shift=0.25", "width_shift=0.25,height_shift=0.2");
    roundtrip("zoom=0.9:1.5", "zoom=0.9:1.5");
    roundtrip("zoom=0.8:1.2", "zoom=0.2");  // the same bounds as zoom=0.2
    roundtrip("zoom=0", "none");
    roundtrip("seeds,rotation=0,flip=0", "shift=0.2,shear=0.2,zoom=0.2");
    roundtrip("rotation=12.345678,shear=1e-3", "rotation=12.345678,shear=0.001");

    AugmentSpec s, seeds;
    augment_spec_seeds(&seeds);
    cr_assert_eq(augment_spec_parse("rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip", &s), 0);
    cr_expect_eq(memcmp(&s, &seeds, sizeof s), 0, "the seeds' text is augment_spec_seeds");
    cr_expect(s.zoom_lo == 1 - 0.2 && s.zoom_hi == 1 + 0.2 && s.hflip == 1);
    cr_expect(!augment_spec_is_none(&s));
    augment_spec_none(&s);
    cr_expect(augment_spec_is_none(&s));
    // A too-small buffer is truncated, never overrun.
    char tiny[8];
    augment_spec_format(&seeds, tiny, sizeof tiny);
    cr_expect_eq(strlen(tiny), 7);
}

static void parse_error(const char *text, const char *needle) {
    AugmentSpec s;
    augment_spec_seeds(&s);
    AugmentSpec before = s;
    err_clear();
    cr_assert_eq(augment_spec_parse(text, &s), -1, "'%s' was accepted", text);
    cr_expect(strstr(err_msg(), needle), "'%s': message '%s' lacks '%s'", text, err_msg(), needle);
    cr_expect_eq(memcmp(&s, &before, sizeof s), 0, "'%s': spec changed on error", text);
}

Test(augment, spec_errors_name_the_key_or_value) {
    parse_error("rotate=30",
                "--augment: unknown key 'rotate' (keys: rotation, shift, width_shift, height_shift, "
                "shear, zoom, flip");
    parse_error("rotation=-5", "rotation=-5: ranges cannot be negative");
    parse_error("shift=-0.1", "shift=-0.1");
    parse_error("rotation=abc", "bad value 'abc' for rotation");
    parse_error("rotation=30x", "bad value '30x'");
    parse_error("rotation=0x10", "bad value '0x10'");  // decimal only, as the options
    parse_error("zoom=0x1:2", "bad value '0x1:2' for zoom");
    parse_error("rotation=inf", "bad value 'inf'");
    parse_error("shear=nan", "bad value 'nan'");
    parse_error("rotation", "rotation needs a value");
    parse_error("rotation=", "rotation needs a value");
    parse_error("zoom=1.5", "zoom=1.5: must be below 1");
    parse_error("zoom=-0.2", "ranges cannot be negative");
    parse_error("zoom=1.2:0.8", "zoom=1.2:0.8: needs 0 < LO <= HI");
    parse_error("zoom=0:1", "needs 0 < LO <= HI");
    parse_error("zoom=a:b", "bad value 'a:b' for zoom");
    parse_error("flip=yes", "bad value 'yes' for flip");
    parse_error("rotation=30,,flip", "empty item");
    parse_error("", "empty item");
    parse_error("seeds=1", "'seeds' takes no value");
}

// --- PNG writing and Keras's array_to_img scaling ----------------------------

Test(augment, png_roundtrip_and_atomic_errors) {
    char *dir = make_temp_dir("augpng");
    int w = 13, h = 7;
    uint8_t rgb[13 * 7 * 3];
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 37 + 11);
    char path[4096];
    snprintf(path, sizeof path, "%s/a.png", dir);
    cr_assert_eq(image_write_png(path, rgb, w, h), 0, "%s", err_msg());
    Image img;
    cr_assert_eq(image_decode_file(path, NULL, &img, NULL), 0, "%s", err_msg());
    cr_assert(img.w == w && img.h == h);
    cr_expect_eq(memcmp(img.rgb, rgb, sizeof rgb), 0);
    image_free(&img);
    // Overwriting keeps the file whole; no temporary left behind.
    rgb[0] ^= 0xff;
    cr_assert_eq(image_write_png(path, rgb, w, h), 0, "%s", err_msg());
    cr_assert_eq(image_decode_file(path, NULL, &img, NULL), 0, "%s", err_msg());
    cr_expect_eq(img.rgb[0], rgb[0]);
    image_free(&img);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", dir);
    cr_expect_eq(system(cmd), 0, "only a.png in the folder");
    // A missing folder: an error naming the path.
    snprintf(path, sizeof path, "%s/missing/b.png", dir);
    cr_assert_eq(image_write_png(path, rgb, w, h), -1);
    cr_expect(strstr(err_msg(), path), "%s", err_msg());
    remove_tree(dir);
    free(dir);
}

Test(augment, keras_array_to_img_scaling) {
    // min..max stretched to 0..255 in float32, then truncated.
    const float a[6] = {0, 127.5f, 255, 64.2f, 1.99f, 254.9f};
    uint8_t o[6];
    image_f32_to_rgb8_keras(a, 6, o);
    const uint8_t ea[6] = {0, 127, 255, 64, 1, 254};
    cr_expect_eq(memcmp(o, ea, 6), 0, "%d %d %d %d %d %d", o[0], o[1], o[2], o[3], o[4], o[5]);
    const float b[3] = {10, 15, 20};  // a low-contrast image is stretched
    image_f32_to_rgb8_keras(b, 3, o);
    cr_expect(o[0] == 0 && o[1] == 127 && o[2] == 255, "%d %d %d", o[0], o[1], o[2]);
    const float k[3] = {50, 50, 50};  // constant: max(x - min) == 0, all black
    image_f32_to_rgb8_keras(k, 3, o);
    cr_expect(o[0] == 0 && o[1] == 0 && o[2] == 0);
    const float r[3] = {-0.5f, 0.25f, 0.5f};  // preprocessed ranges too
    image_f32_to_rgb8_keras(r, 3, o);
    cr_expect(o[0] == 0 && o[1] == 191 && o[2] == 255, "%d %d %d", o[0], o[1], o[2]);
}

// The ranges are Python floats (doubles) in Keras: zoom_range=[0.7, 0.7]
// gives zx = zy = 0.7 exactly, and zoom_range=0.2 the bounds 1 - 0.2 and
// 1 + 0.2 as Python computes them (a float32 spec gave 0.699999988).
Test(augment, ranges_are_keras_doubles) {
    AugmentSpec s;
    cr_assert_eq(augment_spec_parse("zoom=0.7:0.7,rotation=0.1", &s), 0, "%s", err_msg());
    AugmentParams p;
    augment_draw(&s, 1, 0, 0, 32, 32, &p);
    cr_expect_eq(p.zx, 0.7, "zx %.17g", p.zx);
    cr_expect_eq(p.zy, 0.7, "zy %.17g", p.zy);
    cr_expect(fabs(p.theta) <= 0.1, "theta %.17g", p.theta);
    cr_assert_eq(augment_spec_parse("zoom=0.2", &s), 0, "%s", err_msg());
    cr_expect(s.zoom_lo == 1.0 - 0.2 && s.zoom_hi == 1.0 + 0.2, "%.17g %.17g", s.zoom_lo, s.zoom_hi);
    roundtrip("zoom=0.7:0.7", "zoom=0.7:0.7");
    roundtrip("shear=0.1,shift=0.3", "shift=0.3,shear=0.1");
}

// shift=N in digits is Keras's int range: whole pixels, choice(N) times a
// random sign, so -(N-1)..N-1 (0 the likeliest); shift=N.0 is U(-N, N).
// Both read back from their text as they were.
Test(augment, integer_shift_range_draws_whole_pixels_as_keras) {
    AugmentSpec s, f;
    cr_assert_eq(augment_spec_parse("shift=5", &s), 0, "%s", err_msg());
    cr_assert_eq(augment_spec_parse("shift=5.0", &f), 0, "%s", err_msg());
    cr_expect(s.width_shift_int && s.height_shift_int && !f.width_shift_int && !f.height_shift_int);
    roundtrip("shift=5", "shift=5");
    roundtrip("shift=5.0", "shift=5.0");
    roundtrip("width_shift=3,height_shift=3.0", "width_shift=3,height_shift=3.0");
    int seen[9] = {0}, fractional = 0;
    for (long i = 0; i < 4000; i++) {
        AugmentParams p, q;
        augment_draw(&s, 7, 0, i, 32, 32, &p);
        augment_draw(&f, 7, 0, i, 32, 32, &q);
        cr_assert(p.tx == floor(p.tx) && p.ty == floor(p.ty) && fabs(p.tx) <= 4 && fabs(p.ty) <= 4, "%g %g", p.tx,
                  p.ty);
        seen[(int)p.tx + 4]++;
        fractional += q.tx != floor(q.tx);
        cr_assert(fabs(q.tx) <= 5 && fabs(q.ty) <= 5);
    }
    for (int k = 0; k < 9; k++) cr_expect(seen[k] > 0, "shift %d never drawn", k - 4);
    cr_expect(seen[4] > seen[0] && seen[4] > seen[8], "0 comes from both signs: %d vs %d, %d", seen[4], seen[0], seen[8]);
    cr_expect(fractional > 3900, "%d", fractional);
}
