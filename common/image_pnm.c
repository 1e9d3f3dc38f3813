// Netpbm P1-P6, read the way PIL's PpmImagePlugin reads them: its header
// tokenizer, its rescaling of maxval != 255 (round half to even, as Python's
// round()), and its mode I for gray with maxval > 255 (clipped at 255 by
// convert('RGB')).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image_codec.h"

static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

typedef struct {
    const uint8_t *d;
    size_t n, pos;
} Reader;

// PIL's _read_token: skips leading whitespace, drops '#' comments (up to and
// including CR or LF) wherever they occur, stops after one whitespace byte.
static int read_token(Reader *r, char *tok, const char *what) {
    int len = 0;
    while (len <= 10 && r->pos < r->n) {
        int c = r->d[r->pos++];
        if (is_ws(c)) {
            if (!len) continue;
            break;
        }
        if (c == '#') {
            while (r->pos < r->n) {
                c = r->d[r->pos++];
                if (c == '\r' || c == '\n') break;
            }
            continue;
        }
        tok[len++] = (char)c;
    }
    tok[len < 11 ? len : 11] = '\0';
    if (!len) return err_set("truncated PNM header (no %s)", what);
    if (len > 10) return err_set("PNM header token too long (%s)", what);
    return 0;
}

static int read_int(Reader *r, long *v, const char *what) {
    char tok[12];
    if (read_token(r, tok, what) != 0) return -1;
    char *end;
    *v = strtol(tok, &end, 10);
    if (*end || end == tok || *v < 0) return err_set("invalid PNM %s '%s'", what, tok);
    return 0;
}

// Plain-format (P2/P3) sample: decimal digits separated by whitespace, with
// comments anywhere. Returns -1 at the end of the data.
static long next_plain(Reader *r) {
    for (;;) {
        while (r->pos < r->n && is_ws(r->d[r->pos])) r->pos++;
        if (r->pos >= r->n) return -1;
        if (r->d[r->pos] != '#') break;
        while (r->pos < r->n && r->d[r->pos] != '\n' && r->d[r->pos] != '\r') r->pos++;
    }
    long v = 0;
    int digits = 0;
    while (r->pos < r->n && !is_ws(r->d[r->pos]) && r->d[r->pos] != '#') {
        int c = r->d[r->pos++];
        if (c < '0' || c > '9' || ++digits > 10) return -2;
        v = v * 10 + (c - '0');
    }
    return v;
}

// A sample in 0..maxval to 8 bits as PIL does it. Gray with maxval > 255 is
// PIL mode I (0..65535), which convert('RGB') clips at 255.
static uint8_t scale_sample(long v, long maxval, int mode_i) {
    if (maxval == 255 && !mode_i) return (uint8_t)(v > 255 ? 255 : v);
    double out_max = mode_i ? 65535.0 : 255.0;
    double s = rint((double)v / (double)maxval * out_max);
    if (s > out_max) s = out_max;
    return (uint8_t)(s > 255.0 ? 255 : s);
}

int pnm_decode(const uint8_t *d, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    Reader r = {d, n, 0};
    // PIL reads the magic up to the first whitespace (at most 6 bytes).
    size_t m = 0;
    while (m < n && m < 6 && !is_ws(d[m])) m++;
    if (m != 2) return err_set("not a PNM file (bad magic number)");
    r.pos = m < n ? m + 1 : m;
    int kind = d[1] - '0';  // 1..6
    int bands = (kind == 3 || kind == 6) ? 3 : 1;
    int plain = kind <= 3;
    long w, h, maxval = 1;
    if (read_int(&r, &w, "width") != 0 || read_int(&r, &h, "height") != 0) return -1;
    info->src_w = (int)w;
    info->src_h = (int)h;
    if (kind != 1 && kind != 4) {
        if (read_int(&r, &maxval, "maxval") != 0) return -1;
        if (maxval <= 0 || maxval >= 65536)
            return err_set("PNM maxval %ld out of range (1..65535)", maxval);
    }
    if (image_check_budget(w, h, max_pixels, "PNM") != 0) return -1;
    int mode_i = bands == 1 && maxval > 255;
    size_t npix = (size_t)w * h;
    uint8_t *rgb = malloc(npix * 3);
    if (!rgb) return err_set("out of memory for a %ldx%ld PNM image", w, h);

    const char *fail = NULL;
    if (kind == 4) {  // packed bits, 1 = black, rows padded to a byte
        size_t stride = ((size_t)w + 7) / 8;
        if ((n - r.pos) / stride < (size_t)h) fail = "truncated PNM data";
        for (long y = 0; !fail && y < h; y++)
            for (long x = 0; x < w; x++) {
                int bit = (d[r.pos + y * stride + (x >> 3)] >> (7 - (x & 7))) & 1;
                memset(rgb + 3 * (y * w + x), bit ? 0 : 255, 3);
            }
    } else if (kind == 1) {  // '0'/'1' characters, whitespace optional
        for (size_t p = 0; !fail && p < npix;) {
            if (r.pos >= n) {
                fail = "truncated PNM data";
                break;
            }
            int c = d[r.pos++];
            if (is_ws(c)) continue;
            if (c == '#') {
                while (r.pos < n && d[r.pos] != '\n' && d[r.pos] != '\r') r.pos++;
                continue;
            }
            if (c != '0' && c != '1') fail = "invalid character in PBM data";
            else memset(rgb + 3 * p++, c == '1' ? 0 : 255, 3);
        }
    } else if (plain) {
        for (size_t i = 0; !fail && i < npix * bands; i++) {
            long v = next_plain(&r);
            if (v == -1) fail = "truncated PNM data";
            else if (v < 0) fail = "invalid number in PNM data";
            else if (v > maxval) fail = "PNM sample larger than maxval";
            else rgb[bands == 3 ? i : 3 * i] = scale_sample(v, maxval, mode_i);
        }
    } else {
        size_t bps = maxval < 256 ? 1 : 2;
        if ((n - r.pos) / (bps * bands) < npix) fail = "truncated PNM data";
        const uint8_t *s = d + r.pos;
        for (size_t i = 0; !fail && i < npix * bands; i++) {
            long v = bps == 1 ? s[i] : ((long)s[2 * i] << 8 | s[2 * i + 1]);
            rgb[bands == 3 ? i : 3 * i] = scale_sample(v, maxval, mode_i);
        }
    }
    if (fail) {
        free(rgb);
        return err_set("%s", fail);
    }
    if (bands == 1 && kind != 1 && kind != 4)
        for (size_t p = 0; p < npix; p++) rgb[3 * p + 1] = rgb[3 * p + 2] = rgb[3 * p];
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = rgb;
    return 0;
}
