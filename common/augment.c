// ImageDataGenerator's random augmentation: the spec (--augment text), the
// per-image draw and the affine warp. See augment.h for the Keras sources.
#include "augment.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"
#include "simd.h"

// --- the spec -----------------------------------------------------------------

void augment_spec_none(AugmentSpec *s) {
    memset(s, 0, sizeof *s);
    s->zoom_lo = s->zoom_hi = 1.0;
}

void augment_spec_seeds(AugmentSpec *s) {
    // The seeds' train_datagen: rotation_range=30, width_shift_range=0.2,
    // height_shift_range=0.2, shear_range=0.2, zoom_range=0.2,
    // horizontal_flip=True, fill_mode='nearest'.
    augment_spec_none(s);
    s->rotation = 30.0;
    s->width_shift = s->height_shift = 0.2;
    s->shear = 0.2;
    s->zoom_lo = 1.0 - 0.2;
    s->zoom_hi = 1.0 + 0.2;
    s->hflip = 1;
}

int augment_spec_is_none(const AugmentSpec *s) {
    return s->rotation == 0 && s->width_shift == 0 && s->height_shift == 0 && s->shear == 0 &&
           s->zoom_lo == 1 && s->zoom_hi == 1 && !s->hflip;
}

#define KEYS "rotation, shift, width_shift, height_shift, shear, zoom, flip"

// A range value: a finite number >= 0 ("-0" becomes 0).
static int parse_range(const char *key, const char *val, const char *unit, double *out) {
    if (!val || !*val) return err_set("--augment: %s needs a value (%s=%s)", key, key, unit);
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (end == val || *end || !isfinite(v) || strpbrk(val, "xX \t") || (errno == ERANGE && v == 0))  // decimal only
        return err_set("--augment: bad value '%s' for %s (a number: %s)", val, key, unit);
    if (v < 0) return err_set("--augment: %s=%s: ranges cannot be negative", key, val);
    *out = v + 0.0;
    return 0;
}

// zoom=Z is Keras's zoom_range=Z: [1 - Z, 1 + Z] (in double, as Python
// computes it); zoom=LO:HI is Keras's zoom_range=[LO, HI].
static int parse_zoom(const char *val, AugmentSpec *s) {
    const char *colon = val ? strchr(val, ':') : NULL;
    if (!colon) {
        double z;
        if (parse_range("zoom", val, "Z for [1-Z, 1+Z], or LO:HI", &z)) return -1;
        if (z >= 1)
            return err_set("--augment: zoom=%s: must be below 1 (the range is [1-Z, 1+Z]); "
                           "use zoom=LO:HI for other ranges",
                           val);
        s->zoom_lo = 1.0 - z;
        s->zoom_hi = 1.0 + z;
        return 0;
    }
    char lo_text[64];
    snprintf(lo_text, sizeof lo_text, "%.*s", (int)(colon - val), val);
    char *end;
    double lo = strtod(lo_text, &end);
    int bad = end == lo_text || *end || !isfinite(lo);
    double hi = strtod(colon + 1, &end);
    bad |= end == colon + 1 || *end || !isfinite(hi);
    bad |= strpbrk(val, "xX \t") != NULL;  // decimal only
    if (bad) return err_set("--augment: bad value '%s' for zoom (Z, or LO:HI)", val);
    if (!(lo > 0 && lo <= hi))
        return err_set("--augment: zoom=%s: needs 0 < LO <= HI", val);
    s->zoom_lo = lo;
    s->zoom_hi = hi;
    return 0;
}

static int parse_item(char *item, AugmentSpec *s) {
    char *val = strchr(item, '=');
    if (val) {
        // Blanks around '=' ("rotation = 30").
        for (char *e = val; e > item && (e[-1] == ' ' || e[-1] == '\t'); e--) e[-1] = '\0';
        *val++ = '\0';
        while (*val == ' ' || *val == '\t') val++;
    }
    const char *key = item;
    if (!strcmp(key, "seeds") || !strcmp(key, "none")) {
        if (val) return err_set("--augment: '%s' takes no value", key);
        if (key[0] == 's') augment_spec_seeds(s);
        else augment_spec_none(s);
        return 0;
    }
    if (!strcmp(key, "rotation")) return parse_range(key, val, "degrees", &s->rotation);
    if (!strcmp(key, "shear")) return parse_range(key, val, "degrees", &s->shear);
    if (!strcmp(key, "width_shift") || !strcmp(key, "height_shift") || !strcmp(key, "shift")) {
        double v;
        if (parse_range(key, val, "a fraction of the size when < 1, pixels when >= 1", &v)) return -1;
        // Digits alone: a Python int in Keras (whole-pixel draws).
        const int whole = strspn(val, "0123456789") == strlen(val) && v >= 1;
        if (key[0] != 'h') s->width_shift = v, s->width_shift_int = whole;
        if (key[0] != 'w') s->height_shift = v, s->height_shift_int = whole;
        return 0;
    }
    if (!strcmp(key, "zoom")) return parse_zoom(val, s);
    if (!strcmp(key, "flip")) {
        if (!val || !strcmp(val, "1")) s->hflip = 1;
        else if (!strcmp(val, "0")) s->hflip = 0;
        else return err_set("--augment: bad value '%s' for flip (flip, flip=1 or flip=0)", val);
        return 0;
    }
    return err_set("--augment: unknown key '%s' (keys: " KEYS "; or 'seeds', 'none')", key);
}

int augment_spec_parse(const char *text, AugmentSpec *s) {
    AugmentSpec r;
    augment_spec_none(&r);
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    if (!buf) return err_set("--augment: out of memory");
    memcpy(buf, text, n + 1);
    int rc = 0;
    for (char *p = buf; rc == 0;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        // Trim blanks around the item ("rotation=30, flip").
        while (*p == ' ' || *p == '\t') p++;
        char *e = p + strlen(p);
        while (e > p && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
        if (!*p) rc = err_set("--augment: empty item in '%s' (e.g. rotation=30,shift=0.2,flip)", text);
        else rc = parse_item(p, &r);
        if (!comma) break;
        p = comma + 1;
    }
    free(buf);
    if (rc) return -1;
    *s = r;
    return 0;
}

// The shortest decimal form that strtod reads back as the same double
// (Python's repr), without an exponent where one is avoidable ("30", not
// "3e+01").
static void fmt_double(char *buf, size_t size, double v) {
    for (int pass = 0; pass < 2; pass++)
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v && (pass || !strchr(buf, 'e'))) return;
        }
}

// A shift as parse reads it back: an int-rule shift in digits, a float one
// of a whole number with ".0" ("5.0": U(-5, 5), not whole pixels).
static void fmt_shift(char *buf, size_t size, double v, int whole) {
    fmt_double(buf, size, v);
    if (!whole && v >= 1 && !strpbrk(buf, ".e")) strncat(buf, ".0", size - strlen(buf) - 1);
}

void augment_spec_format(const AugmentSpec *s, char *buf, size_t size) {
    if (size == 0) return;
    buf[0] = '\0';
    if (augment_spec_is_none(s)) {
        snprintf(buf, size, "none");
        return;
    }
    char out[512] = "", num[40], num2[40];
    size_t len = 0;
#define ADD(...) len += snprintf(out + len, sizeof out - len, __VA_ARGS__)
#define SEP (len ? "," : "")
    if (s->rotation != 0) fmt_double(num, sizeof num, s->rotation), ADD("%srotation=%s", SEP, num);
    if (s->width_shift == s->height_shift && s->width_shift_int == s->height_shift_int) {
        if (s->width_shift != 0) fmt_shift(num, sizeof num, s->width_shift, s->width_shift_int), ADD("%sshift=%s", SEP, num);
    } else {
        if (s->width_shift != 0)
            fmt_shift(num, sizeof num, s->width_shift, s->width_shift_int), ADD("%swidth_shift=%s", SEP, num);
        if (s->height_shift != 0)
            fmt_shift(num, sizeof num, s->height_shift, s->height_shift_int), ADD("%sheight_shift=%s", SEP, num);
    }
    if (s->shear != 0) fmt_double(num, sizeof num, s->shear), ADD("%sshear=%s", SEP, num);
    if (!(s->zoom_lo == 1 && s->zoom_hi == 1)) {
        // "zoom=Z" with the shortest Z that parses back to exactly these
        // bounds (1 - 0.2 rounds, so 1 - zoom_lo itself is not always it).
        int sym = 0;
        for (int prec = 1; prec <= 17 && !sym; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, 1.0 - s->zoom_lo);
            double z = strtod(num, NULL);
            sym = z >= 0 && z < 1 && 1.0 - z == s->zoom_lo && 1.0 + z == s->zoom_hi;
        }
        if (sym) {
            ADD("%szoom=%s", SEP, num);
        } else {
            fmt_double(num, sizeof num, s->zoom_lo);
            fmt_double(num2, sizeof num2, s->zoom_hi);
            ADD("%szoom=%s:%s", SEP, num, num2);
        }
    }
    if (s->hflip) ADD("%sflip", SEP);
#undef ADD
#undef SEP
    snprintf(buf, size, "%s", out);
}

// --- the draw -----------------------------------------------------------------

// Keeps augmentation's stream apart from the other users of --seed
// (initialisation, shuffling, dropout).
#define AUGMENT_DOMAIN 0xA9F3E17A5EED0001ull

// Uniform double in [0, 1) with 53 random bits (numpy's random() has 53 too).
static double u01(uint64_t key, uint64_t counter) {
    return (double)(rng_hash(key, counter) >> 11) * 0x1p-53;
}

// numpy's uniform(low, high) = low + (high - low) * random().
static double uniform(double lo, double hi, uint64_t key, uint64_t counter) {
    return lo + (hi - lo) * u01(key, counter);
}

// Keras's int shift range N: np.random.choice(N) (0..N-1) times
// np.random.choice([-1, 1]), in pixels (counters: the magnitude's, the sign's).
static double whole_shift(double n, uint64_t key, uint64_t counter, uint64_t sign_counter) {
    double k = floor(u01(key, counter) * n);  // (u01 < 1: at most n - 1)
    return u01(key, sign_counter) < 0.5 ? -k : k;
}

void augment_draw(const AugmentSpec *s, uint64_t seed, long epoch, long index, int h, int w,
                  AugmentParams *p) {
    uint64_t key = rng_hash(rng_hash(seed ^ AUGMENT_DOMAIN, (uint64_t)epoch), (uint64_t)index);
    // Each parameter has its own counter, so a range set to 0 leaves the
    // other parameters' draws unchanged; a 0 range gives exactly Keras's 0.
    double r = s->rotation, hs = s->height_shift, ws = s->width_shift, sh = s->shear;
    p->theta = r != 0 ? uniform(-r, r, key, 0) : 0.0;
    p->tx = hs == 0 ? 0.0 : s->height_shift_int ? whole_shift(hs, key, 1, 7) : uniform(-hs, hs, key, 1) * (hs < 1 ? h : 1);
    p->ty = ws == 0 ? 0.0 : s->width_shift_int ? whole_shift(ws, key, 2, 8) : uniform(-ws, ws, key, 2) * (ws < 1 ? w : 1);
    p->shear = sh != 0 ? uniform(-sh, sh, key, 3) : 0.0;
    if (s->zoom_lo == 1 && s->zoom_hi == 1) {
        p->zx = p->zy = 1.0;
    } else {
        p->zx = uniform(s->zoom_lo, s->zoom_hi, key, 4);
        p->zy = uniform(s->zoom_lo, s->zoom_hi, key, 5);
    }
    p->flip = s->hflip && u01(key, 6) < 0.5;
}

// --- the warp -----------------------------------------------------------------

typedef double Mat3[3][3];

// c = a . b, each element summed left to right as numpy's small dot does
// (a last-bit difference here moves a sample by ~1e-14 pixel).
static void mat3_mul(const Mat3 a, const Mat3 b, Mat3 c) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) c[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
}

// acc = acc . m (acc NULL-like on first use: *have == 0).
static void compose(Mat3 acc, int *have, const Mat3 m) {
    if (!*have) {
        memcpy(acc, m, sizeof(Mat3));
        *have = 1;
        return;
    }
    Mat3 t;
    mat3_mul((const double(*)[3])acc, m, t);
    memcpy(acc, t, sizeof(Mat3));
}

// Keras's apply_affine_transform up to the matrix scipy gets: input
// coordinate (row, col) = A . (out_row, out_col) + off. Returns 0 when Keras
// would skip the transform (every parameter at its identity value).
static int keras_matrix(const AugmentParams *p, int h, int w, double A[2][2], double off[2]) {
    Mat3 m;
    int have = 0;
    if (p->theta != 0) {
        double t = p->theta * (M_PI / 180.0);  // np.deg2rad
        const Mat3 rot = {{cos(t), -sin(t), 0}, {sin(t), cos(t), 0}, {0, 0, 1}};
        compose(m, &have, rot);
    }
    if (p->tx != 0 || p->ty != 0) {
        const Mat3 shift = {{1, 0, p->tx}, {0, 1, p->ty}, {0, 0, 1}};
        compose(m, &have, shift);
    }
    if (p->shear != 0) {
        double s = p->shear * (M_PI / 180.0);
        const Mat3 shear = {{1, -sin(s), 0}, {0, cos(s), 0}, {0, 0, 1}};
        compose(m, &have, shear);
    }
    if (p->zx != 1 || p->zy != 1) {
        const Mat3 zoom = {{p->zx, 0, 0}, {0, p->zy, 0}, {0, 0, 1}};
        compose(m, &have, zoom);
    }
    if (!have) return 0;
    // transform_matrix_offset_center(m, h, w): about the centre of the pixel
    // grid (Keras 3: size / 2 - 0.5).
    double ox = h / 2.0 - 0.5, oy = w / 2.0 - 0.5;
    const Mat3 offset = {{1, 0, ox}, {0, 1, oy}, {0, 0, 1}};
    const Mat3 reset = {{1, 0, -ox}, {0, 1, -oy}, {0, 0, 1}};
    Mat3 t, c;
    mat3_mul(offset, (const double(*)[3])m, t);
    mat3_mul((const double(*)[3])t, reset, c);
    // Keras swaps columns 0, 1 and then rows 0, 1 (M' = P M P: its matrix
    // speaks x, y while the array is indexed row, column).
    A[0][0] = c[1][1], A[0][1] = c[1][0], off[0] = c[1][2];
    A[1][0] = c[0][1], A[1][1] = c[0][0], off[1] = c[0][2];
    return 1;
}

// scipy's order-1 spline along one axis in mode 'nearest' (ni_interpolation.c):
// the coordinate is clamped to [0, len-1] (map_coordinate), start = floor,
// weights w0 = 1 - x and w1 = 1 - w0 (get_spline_interpolation_weights). At
// cc == len-1 scipy mirrors the second index to len-2 with weight exactly 0;
// we clamp it to len-1, which adds the same +-0.
static inline void axis_taps(double cc, int len, int *i0, int *i1, double *w0, double *w1) {
    if (!(cc >= 0)) cc = 0;  // NaN too (scipy would fill with cval there)
    else if (cc > len - 1) cc = len - 1;
    double fl = floor(cc);
    int s = (int)fl;
    *w0 = 1.0 - (cc - fl);
    *w1 = 1.0 - *w0;
    *i0 = s;
    *i1 = s + 1 < len ? s + 1 : len - 1;
}

// One output pixel of the warp: scipy's order-1 sum at warped column j of
// row i, into o[0..c).
static inline void warp_pixel(const double A[2][2], const double off[2], const float *in, int h, int w, int c,
                              int i, int j, float *o) {
    size_t row = (size_t)w * c;
    // scipy: icoor = (0 + i * A[k][0] + j * A[k][1]) + off[k], in double.
    double r = (0.0 + i * A[0][0] + j * A[0][1]) + off[0];
    double q = (0.0 + i * A[1][0] + j * A[1][1]) + off[1];
    int r0, r1, q0, q1;
    double wr0, wr1, wq0, wq1;
    axis_taps(r, h, &r0, &r1, &wr0, &wr1);
    axis_taps(q, w, &q0, &q1, &wq0, &wq1);
    const float *p00 = in + r0 * row + (size_t)q0 * c, *p01 = in + r0 * row + (size_t)q1 * c;
    const float *p10 = in + r1 * row + (size_t)q0 * c, *p11 = in + r1 * row + (size_t)q1 * c;
    for (int k = 0; k < c; k++) {
        // scipy's sum over the 2x2 taps, last axis fastest, each
        // coefficient value * w_row * w_col, in double; then a cast.
        double t = 0.0;
        t += (double)p00[k] * wr0 * wq0;
        t += (double)p01[k] * wr0 * wq1;
        t += (double)p10[k] * wr1 * wq0;
        t += (double)p11[k] * wr1 * wq1;
        o[k] = (float)t;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_WARP_AVX2 1

// axis_taps on 4 coordinates: the same operations on each lane (clamp with
// NaN to 0, floor, 1 - (cc - fl), 1 - w0), so the same bits.
__attribute__((target("avx2"))) static inline void axis_taps4(__m256d cc, int len, __m128i *i0, __m128i *i1,
                                                              __m256d *w0, __m256d *w1) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), last = _mm256_set1_pd(len - 1);
    cc = _mm256_and_pd(cc, _mm256_cmp_pd(cc, zero, _CMP_GE_OQ));  // !(cc >= 0), NaN too: 0
    cc = _mm256_min_pd(cc, last);
    __m256d fl = _mm256_floor_pd(cc);
    *w0 = _mm256_sub_pd(one, _mm256_sub_pd(cc, fl));
    *w1 = _mm256_sub_pd(one, *w0);
    *i0 = _mm256_cvttpd_epi32(fl);
    *i1 = _mm_min_epi32(_mm_add_epi32(*i0, _mm_set1_epi32(1)), _mm_set1_epi32(len - 1));
}

// Row i's output columns [0, n4) four at a time (n4 a multiple of 4):
// warp_pixel's double operations in its order on 4 lanes, no FMA (separate
// multiplies and adds are each rounded as the scalar code's), the taps read
// with gathers. -0.0 from a clamp of -0.0 behaves as in the scalar code.
__attribute__((target("avx2"))) static void warp_row_avx2(const double A[2][2], const double off[2],
                                                          const float *in, int h, int w, int c, int i, int flip,
                                                          int n4, float *out_row) {
    const int row = w * c;
    const __m256d ri = _mm256_set1_pd(0.0 + i * A[0][0]), qi = _mm256_set1_pd(0.0 + i * A[1][0]);
    const __m256d a01 = _mm256_set1_pd(A[0][1]), a11 = _mm256_set1_pd(A[1][1]);
    const __m256d off0 = _mm256_set1_pd(off[0]), off1 = _mm256_set1_pd(off[1]);
    const __m128i vrow = _mm_set1_epi32(row), vc = _mm_set1_epi32(c);
    for (int jo = 0; jo < n4; jo += 4) {
        // flip_axis after the warp: output column jo is warped column w-1-jo.
        __m256d j = flip ? _mm256_setr_pd(w - 1 - jo, w - 2 - jo, w - 3 - jo, w - 4 - jo)
                         : _mm256_setr_pd(jo, jo + 1, jo + 2, jo + 3);
        __m256d r = _mm256_add_pd(_mm256_add_pd(ri, _mm256_mul_pd(j, a01)), off0);
        __m256d q = _mm256_add_pd(_mm256_add_pd(qi, _mm256_mul_pd(j, a11)), off1);
        __m128i r0, r1, q0, q1;
        __m256d wr0, wr1, wq0, wq1;
        axis_taps4(r, h, &r0, &r1, &wr0, &wr1);
        axis_taps4(q, w, &q0, &q1, &wq0, &wq1);
        const __m128i R0 = _mm_mullo_epi32(r0, vrow), R1 = _mm_mullo_epi32(r1, vrow);
        const __m128i Q0 = _mm_mullo_epi32(q0, vc), Q1 = _mm_mullo_epi32(q1, vc);
        const __m128i i00 = _mm_add_epi32(R0, Q0), i01 = _mm_add_epi32(R0, Q1);
        const __m128i i10 = _mm_add_epi32(R1, Q0), i11 = _mm_add_epi32(R1, Q1);
        float *o = out_row + (size_t)jo * c;
        for (int k = 0; k < c; k++) {
            const float *b = in + k;
            __m256d v00 = _mm256_cvtps_pd(_mm_i32gather_ps(b, i00, 4));
            __m256d v01 = _mm256_cvtps_pd(_mm_i32gather_ps(b, i01, 4));
            __m256d v10 = _mm256_cvtps_pd(_mm_i32gather_ps(b, i10, 4));
            __m256d v11 = _mm256_cvtps_pd(_mm_i32gather_ps(b, i11, 4));
            __m256d t = _mm256_setzero_pd();
            t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(v00, wr0), wq0));
            t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(v01, wr0), wq1));
            t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(v10, wr1), wq0));
            t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(v11, wr1), wq1));
            float f[4];
            _mm_storeu_ps(f, _mm256_cvtpd_ps(t));
            o[k] = f[0], o[c + k] = f[1], o[2 * c + k] = f[2], o[3 * c + k] = f[3];
        }
    }
}
#endif

void augment_apply(const AugmentParams *p, const float *in, int h, int w, int c, float *out) {
    double A[2][2], off[2];
    size_t row = (size_t)w * c;
    if (!keras_matrix(p, h, w, A, off)) {
        // Keras returns x itself: an exact copy (or an exact mirror).
        if (!p->flip) {
            memcpy(out, in, sizeof(float) * row * h);
            return;
        }
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                memcpy(out + i * row + (size_t)j * c, in + i * row + (size_t)(w - 1 - j) * c,
                       sizeof(float) * c);
        return;
    }
    // The AVX2 lanes give warp_pixel's bits (tests: augment/avx2_warp_equals_portable_warp).
    int n4 = 0;
#ifdef HAVE_WARP_AVX2
    if (simd_level() >= SIMD_AVX2 && (size_t)h * row <= INT32_MAX) n4 = w & ~3;
#endif
    for (int i = 0; i < h; i++) {
#ifdef HAVE_WARP_AVX2
        if (n4) warp_row_avx2(A, off, in, h, w, c, i, p->flip, n4, out + i * row);
#endif
        for (int jo = n4; jo < w; jo++) warp_pixel(A, off, in, h, w, c, i, p->flip ? w - 1 - jo : jo, out + i * row + (size_t)jo * c);
    }
}
