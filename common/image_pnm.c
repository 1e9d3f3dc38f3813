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
// The token's bytes go to tok (NUL-terminated for messages; a NUL may be
// inside). Returns its length, or -1.
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
    return len;
}

// A sample in 0..maxval to 8 bits as PIL does it. Gray with maxval > 255 is
// PIL mode I (0..65535), which convert('RGB') clips at 255.
static uint8_t scale_sample(long long v, long maxval, int mode_i) {
    if (maxval == 255 && !mode_i) return (uint8_t)(v > 255 ? 255 : v);
    double out_max = mode_i ? 65535.0 : 255.0;
    double s = rint((double)v / (double)maxval * out_max);
    if (s > out_max) s = out_max;
    return (uint8_t)(s > 255.0 ? 255 : s);
}

// Python's int() of a token of n bytes (no whitespace in it): an optional
// sign, then decimal digits with single underscores between them ("+7",
// "2_55" and "-0" are numbers; "1__0", "_1", "7\0" are not). Tokens are at
// most 10 bytes, so the value fits. Returns 0, or -1 if it is no number.
static int py_int(const uint8_t *t, size_t n, long long *v) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (t[i] == '+' || t[i] == '-')) neg = t[i++] == '-';
    if (i >= n) return -1;
    long long x = 0;
    for (int prev_digit = 0; i < n; i++) {
        if (t[i] == '_' && prev_digit && i + 1 < n) {
            prev_digit = 0;
            continue;
        }
        if (t[i] < '0' || t[i] > '9') return -1;
        x = x * 10 + (t[i] - '0'), prev_digit = 1;
    }
    *v = neg ? -x : x;
    return 0;
}

// A header number: int() of the token; width, height and maxval must be
// above 0 (PIL: "not identified by this driver", "maxval must be greater
// than 0").
static int read_int(Reader *r, long *v, const char *what) {
    char tok[12];
    int len = read_token(r, tok, what);
    long long x;
    if (len < 0) return -1;
    if (py_int((const uint8_t *)tok, (size_t)len, &x) != 0 || x <= 0) {
        for (int i = 0; i < len; i++)  // shown whole: a NUL or control byte as '?'
            if ((uint8_t)tok[i] < 0x20 || (uint8_t)tok[i] >= 0x7F) tok[i] = '?';
        return err_set("invalid PNM %s '%s'", what, tok);
    }
    *v = (long)x;
    return 0;
}

// PIL's ImageFile.SAFEBLOCK: PpmPlainDecoder reads P1-P3 data in blocks of
// this size, and its rules (below) look at one block at a time, so where a
// block ends changes what a file decodes to. Tests set it smaller, as
// scripts/fixtures_decoders.py sets PIL's.
size_t pnm_plain_block = 1024 * 1024;

// PpmPlainDecoder._find_comment_end: the first LF or CR at or after from,
// quirk included (when one of them is at index 0 the other one, if found,
// wins). -1 if neither.
static long comment_end(const uint8_t *b, size_t n, size_t from) {
    long lf = -1, cr = -1;
    for (size_t i = from; i < n && (lf < 0 || cr < 0); i++) {
        if (b[i] == '\n' && lf < 0) lf = (long)i;
        if (b[i] == '\r' && cr < 0) cr = (long)i;
    }
    if (lf * cr > 0) return lf < cr ? lf : cr;
    return lf > cr ? lf : cr;
}

// PpmPlainDecoder._ignore_comments on one block, in place: a '#' and all up
// to its line end, the line end included, are cut out, so "1# c\n2" is the
// token "12"; a comment still open at the block's end runs into the next
// blocks (*spans) and is over at the end of the data (last). Returns the
// block's new length.
static size_t drop_comments(uint8_t *b, size_t n, int *spans, int last) {
    if (*spans) {
        long e = comment_end(b, n, 0);
        if (e < 0) {
            if (!last) return 0;
            *spans = 0;
            return 0;
        }
        memmove(b, b + e + 1, n - (size_t)e - 1);
        n -= (size_t)e + 1;
    }
    *spans = 0;
    for (;;) {
        const uint8_t *h = memchr(b, '#', n);
        if (!h) break;
        size_t s = (size_t)(h - b);
        long e = comment_end(b, n, s);
        if (e < 0) {
            *spans = 1;
            return s;
        }
        memmove(b + s, b + e + 1, n - (size_t)e - 1);
        n -= (size_t)e + 1 - s;
    }
    return n;
}

// The next block of the data from *off (at most pnm_plain_block bytes) into
// buf, comments dropped; its length, or -1 at the end of the data.
static long next_block(const uint8_t *d, size_t n, size_t *off, uint8_t *buf, int *spans) {
    if (*off >= n) return -1;
    size_t len = n - *off < pnm_plain_block ? n - *off : pnm_plain_block;
    memcpy(buf, d + *off, len);
    *off += len;
    return (long)drop_comments(buf, len, spans, *off >= n);
}

// P1 data as PpmPlainDecoder._decode_bitonal reads it: every byte but
// whitespace (and comments) is a pixel, '1' black, '0' white; any other
// byte in a block that is read is an error, even past the last pixel.
static const char *plain_bits(const uint8_t *d, size_t n, size_t off, size_t npix, uint8_t *buf, uint8_t *rgb) {
    int spans = 0;
    size_t got = 0;
    for (long len; got < npix && (len = next_block(d, n, &off, buf, &spans)) >= 0;) {
        for (long i = 0; i < len; i++)
            if (!is_ws(buf[i]) && buf[i] != '0' && buf[i] != '1') return "invalid character in PBM data";
        for (long i = 0; i < len && got < npix; i++)
            if (!is_ws(buf[i])) memset(rgb + 3 * got++, buf[i] == '1' ? 0 : 255, 3);
    }
    return got < npix ? "truncated PNM data" : NULL;
}

// P2/P3 samples as PpmPlainDecoder._decode_blocks reads them: the tokens of
// each block, a token cut by the block's end carried into the next (at most
// 10 bytes, checked before the block's other tokens), each token an int()
// in 0..maxval, until count samples; tokens after the last are not read.
// buf holds a block and 16 bytes before it.
static const char *plain_samples(const uint8_t *d, size_t n, size_t off, size_t count, long maxval, int mode_i,
                                 int bands, uint8_t *buf, uint8_t *rgb) {
    int spans = 0;
    uint8_t half[16];
    size_t nhalf = 0, got = 0;
    while (got < count) {
        uint8_t *b = buf + 16;
        long len = next_block(d, n, &off, b, &spans);
        if (len < 0) {
            if (!nhalf) break;
            b[0] = ' ';  // flush the carried token
            len = (long)drop_comments(b, 1, &spans, 1);
        }
        b -= nhalf;
        memcpy(b, half, nhalf);
        len += (long)nhalf;
        nhalf = 0;
        long end = len;
        if (len && !is_ws(b[len - 1])) {
            while (end > 0 && !is_ws(b[end - 1])) end--;
            nhalf = (size_t)(len - end);
            if (nhalf > 10) return "PNM data token too long (more than 10 bytes)";
            memcpy(half, b + end, nhalf);
        }
        for (long i = 0; i < end && got < count;) {
            while (i < end && is_ws(b[i])) i++;
            if (i >= end) break;
            long t = i;
            while (i < end && !is_ws(b[i])) i++;
            long long v;
            if (i - t > 10) return "PNM data token too long (more than 10 bytes)";
            if (py_int(b + t, (size_t)(i - t), &v) != 0) return "invalid number in PNM data";
            if (v < 0) return "negative PNM sample";
            if (v > maxval) return "PNM sample larger than maxval";
            rgb[bands == 3 ? got : 3 * got] = scale_sample(v, maxval, mode_i);
            got++;
        }
    }
    return got < count ? "truncated PNM data" : NULL;
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
    } else if (plain) {
        // A block of the data and room for a carried token before it.
        size_t room = n - r.pos < pnm_plain_block ? n - r.pos : pnm_plain_block;
        uint8_t *buf = malloc(room + 17);
        if (!buf) fail = "out of memory for a PNM block";
        else if (kind == 1) fail = plain_bits(d, n, r.pos, npix, buf, rgb);
        else fail = plain_samples(d, n, r.pos, npix * bands, maxval, mode_i, bands, buf, rgb);
        free(buf);
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
