// JPEG through TurboJPEG (libjpeg-turbo 2.1 API). Flags 0 means what PIL's
// full decode uses: accurate integer IDCT and fancy (smooth) upsampling.
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "error.h"
#include "image_codec.h"

// Output size at scale 1/denom, as TJSCALED computes it (rounds up).
static int scaled(int dim, int denom) { return (dim + denom - 1) / denom; }

// True when an EOI marker follows the first SOS. PIL rejects any JPEG whose
// data ends before EOI ("image file is truncated"); TurboJPEG only warns,
// and reports just the first warning, so this check does not depend on
// which warning came first.
static int has_eoi_after_sos(const uint8_t *d, size_t n) {
    size_t i = 2;  // after SOI
    for (;;) {
        while (i < n && d[i] != 0xFF) i++;  // junk before a marker (libjpeg skips it)
        while (i < n && d[i] == 0xFF) i++;  // fill bytes
        if (i >= n) return 0;
        uint8_t m = d[i++];
        if (m == 0xDA) break;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
        if (i + 2 > n) return 0;
        i += ((size_t)d[i] << 8) | d[i + 1];
    }
    // Entropy-coded data never contains FF D9 (0xFF is stuffed as FF 00).
    for (size_t j = n - 1; j > i; j--)
        if (d[j] == 0xD9 && d[j - 1] == 0xFF) return 1;
    return 0;
}

// PIL's cmyk2rgb (Convert.c) on PIL's CMYK values, which are the inverse of
// what libjpeg returns ("CMYK;I": PIL assumes Adobe polarity for every CMYK
// JPEG): R = (255-K) - (C * (255-K)) / 255 with PIL's rounding MULDIV255.
static void cmyk_inverted_to_rgb(const uint8_t *in, uint8_t *out, size_t n_pixels) {
    for (size_t p = 0; p < n_pixels; p++, in += 4, out += 3) {
        int nk = in[3];  // 255 - K, K = 255 - stored
        for (int c = 0; c < 3; c++) {
            int v = 255 - in[c];
            int tmp = v * nk + 128;
            int mul = ((tmp >> 8) + tmp) >> 8;
            int r = nk - mul;
            out[c] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        }
    }
}

int jpeg_decode(const uint8_t *data, size_t n, const DecodeOptions *opt, long max_pixels,
                Image *out, DecodeInfo *info) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return err_set("cannot initialise TurboJPEG: %s", tjGetErrorStr2(NULL));
    uint8_t *buf = NULL;
    int w = 0, h = 0, subsamp = -1, cs = -1;
    // A warning here (e.g. junk bytes before a marker) still fills in the
    // header; only a fatal error means there is no usable header.
    if (tjDecompressHeader3(tj, data, (unsigned long)n, &w, &h, &subsamp, &cs) != 0 &&
        (tjGetErrorCode(tj) == TJERR_FATAL || w <= 0 || h <= 0 || cs < 0)) {
        err_set("invalid or corrupt JPEG header (%s)", tjGetErrorStr2(tj));
        goto fail;
    }
    info->src_w = w;
    info->src_h = h;
    if (w <= 0 || h <= 0) {
        // TurboJPEG returns success and 0x0 for a tables-only stream, which
        // is what a file cut before its frame header looks like.
        err_set("truncated or invalid JPEG (no image header found)");
        goto fail;
    }

    // Scale: the smallest of 1/2, 1/4, 1/8 still >= target when asked, and
    // at least enough to fit the pixel budget.
    int denom = 1;
    if (opt->reduced_decode && opt->target_w > 0 && opt->target_h > 0) {
        for (int d = 2; d <= 8; d *= 2) {
            if (scaled(w, d) < opt->target_w || scaled(h, d) < opt->target_h) break;
            denom = d;
        }
    }
    if ((long)w * h > max_pixels) {
        int need = 0;
        for (int d = 2; d <= 8 && !need; d *= 2)
            if ((long)scaled(w, d) * scaled(h, d) <= max_pixels) need = d;
        if (!need) {
            err_set("%dx%d JPEG image is over the pixel budget (%ld > %ld pixels) "
                    "even at 1/8 scale", w, h, (long)w * h, max_pixels);
            goto fail;
        }
        info->over_budget = 1;
        if (need > denom) denom = need;
    }
    info->scale_denom = denom;
    int sw = scaled(w, denom), sh = scaled(h, denom);

    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    int ps = cmyk ? 4 : 3;
    buf = malloc((size_t)sw * sh * ps);
    if (!buf) {
        err_set("out of memory for a %dx%d JPEG image", sw, sh);
        goto fail;
    }
    if (tjDecompress2(tj, data, (unsigned long)n, buf, sw, 0, sh,
                      cmyk ? TJPF_CMYK : TJPF_RGB, 0) != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (tjGetErrorCode(tj) == TJERR_FATAL) {
            err_set("cannot decode JPEG data (%s)", msg);
            goto fail;
        }
        if (strstr(msg, "Premature end")) {
            err_set("truncated JPEG data (%s)", msg);
            goto fail;
        }
        // Other warnings ("extraneous bytes before marker", ...): PIL's
        // decoder ignores them and so do we.
    }
    if (!has_eoi_after_sos(data, n)) {
        err_set("truncated JPEG data (the file ends before its end-of-image marker)");
        goto fail;
    }
    if (cmyk) {
        uint8_t *rgb = malloc((size_t)sw * sh * 3);
        if (!rgb) {
            err_set("out of memory for a %dx%d JPEG image", sw, sh);
            goto fail;
        }
        cmyk_inverted_to_rgb(buf, rgb, (size_t)sw * sh);
        free(buf);
        buf = rgb;
    }
    tjDestroy(tj);
    out->w = sw;
    out->h = sh;
    out->rgb = buf;
    return 0;
fail:
    free(buf);
    tjDestroy(tj);
    return -1;
}
