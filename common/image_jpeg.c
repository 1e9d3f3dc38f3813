// JPEG through libjpeg-turbo's libjpeg API, driven the way Pillow drives it,
// so that the same files decode and the same files fail.
//
// Pillow (so Keras's load_img) decides a JPEG in two steps:
//  1. JpegImagePlugin._open walks the markers up to the first SOS in Python
//     and raises on what it cannot parse (pil_walk below is that walk);
//  2. ImageFile.load feeds the whole file to libjpeg (JpegDecode.c) with a
//     *suspending* source: when libjpeg wants bytes past the end of the file
//     the decode stops and Pillow raises "image file is truncated", and when
//     libjpeg calls error_exit Pillow raises "broken data stream". Warnings
//     (corrupt data it can step over, extraneous bytes...) are ignored, and
//     so are a suspension in jpeg_finish_decompress once every row was read.
// We do the same with our own error manager and source manager. TurboJPEG
// cannot tell these apart: its source invents an EOI marker at the end of
// the data (so truncation is only a warning, and the rest of the image is
// gray), and in libjpeg-turbo 2.1 a fatal error that follows a warning is
// reported as a warning (tjGetErrorCode), leaving rows of the output unwritten.
//
// Settings are Pillow's (and TurboJPEG's with flags 0): accurate integer IDCT
// and fancy upsampling (libjpeg's defaults), output RGB for 3 components,
// gray for 1 (replicated to RGB, as convert('RGB') does), CMYK for 4.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
// jpeglib.h needs size_t and FILE first.
#include <jpeglib.h>
#include <jerror.h>  // JERR_SOF_UNSUPPORTED

// jconfig.h's LIBJPEG_TURBO_VERSION (a bare 2.1.5) as a string.
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define LIBJPEG_TURBO_VERSION_STR STRINGIFY(LIBJPEG_TURBO_VERSION)

#include "error.h"
#include "image_codec.h"

// --- step 1: Pillow's marker walk (JpegImagePlugin.JpegImageFile._open) --------------

typedef struct {
    int w, h;    // from the last SOF, as Pillow's self.size
    int layers;  // 1, 3 or 4 (Pillow's mode L, RGB, CMYK)
} PilHeader;

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static int is_sof(unsigned m) {  // Pillow's MARKER table entries whose handler is SOF
    return (m >= 0xFFC0 && m <= 0xFFCF && m != 0xFFC4 && m != 0xFFC8 && m != 0xFFCC) || m == 0xFFDE;
}

// Bytes a < b as Python compares bytes objects (for icclist.sort()).
static int bytes_less(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    int c = memcmp(a, b, na < nb ? na : nb);
    return c < 0 || (c == 0 && na < nb);
}

// Pillow's APP13 "Photoshop 3.0" resource walk: only an IndexError (a
// resource name length past the end) escapes its try/except struct.error.
static int photoshop_ok(const uint8_t *s, size_t n) {
    size_t off = 14;
    while (off + 4 <= n && !memcmp(s + off, "8BIM", 4)) {
        off += 4;
        if (off + 2 > n) return 1;  // i16: struct.error, caught
        off += 2;
        if (off >= n) return 0;     // s[offset]: IndexError
        off += 1 + s[off];
        off += off & 1;
        if (off + 4 > n) return 1;  // i32: struct.error, caught
        uint32_t size = (uint32_t)s[off] << 24 | (uint32_t)s[off + 1] << 16 | (uint32_t)s[off + 2] << 8 | s[off + 3];
        off += 4;
        // (ResolutionInfo's fields are read in the same try: errors caught.)
        off += size;
        off += off & 1;
    }
    return 1;
}

// JpegImageFile._open up to the first SOS, plus ImageFile.__init__'s checks
// (a mode and a size > 0). Every exception there makes Image.open fail, so
// each is an error here; what Pillow catches itself (JFIF density, Photoshop
// struct errors, Adobe transform) is not. Not modelled: Exif (parsed only for
// the DPI, with most errors caught) and MPF (jpeg_factory catches its
// TypeError and IndexError).
static int pil_walk(const uint8_t *d, size_t n, PilHeader *hd) {
    memset(hd, 0, sizeof *hd);
    size_t pos = 3;             // _accept() read FF D8 FF; s = b"\xff"
    int have = 1, s0 = 0xFF;   // s: at most one pending byte
    int sos = 0;
    const uint8_t *icc = NULL;  // smallest ICC_PROFILE chunk since the last SOF
    size_t icc_n = 0;
    int n_icc = 0;
    while (have && !sos) {
        unsigned m;
        if (s0 == 0xFF) {
            if (pos >= n) break;  // len(s) < 2
            m = 0xFF00 | d[pos++];
        } else {  // non-0xFF junk: read on
            if (pos >= n) break;
            s0 = d[pos++];
            continue;
        }
        if (m >= 0xFFC0 && m <= 0xFFFE) {
            int has_handler = !(m == 0xFFC8 || (m >= 0xFFD0 && m <= 0xFFD9) || (m >= 0xFFF0 && m <= 0xFFFD));
            if (has_handler) {
                // n = i16(fp.read(2)) - 2; s = _safe_read(fp, n)
                if (pos + 2 > n) return err_set("invalid JPEG header: marker 0x%04X has no length", m);
                long len = (long)be16(d + pos) - 2;
                pos += 2;
                const uint8_t *s = d + pos;
                size_t sn = len > 0 ? (size_t)len : 0;
                if (sn > n - pos)
                    return err_set("truncated JPEG header: segment 0x%04X runs past the end of the file", m);
                pos += sn;
                if (m == 0xFFE0 && sn >= 4 && !memcmp(s, "JFIF", 4)) {
                    if (sn < 7) return err_set("invalid JPEG header: JFIF segment too short");
                } else if (m == 0xFFEE && sn >= 5 && !memcmp(s, "Adobe", 5)) {
                    if (sn < 7) return err_set("invalid JPEG header: Adobe segment too short");
                } else if (m == 0xFFED && sn >= 14 && !memcmp(s, "Photoshop 3.0\0", 14)) {
                    if (!photoshop_ok(s, sn)) return err_set("invalid JPEG header: corrupt Photoshop resource");
                } else if (m == 0xFFE2 && sn >= 12 && !memcmp(s, "ICC_PROFILE\0", 12)) {
                    if (!icc || bytes_less(s, sn, icc, icc_n)) icc = s, icc_n = sn;
                    n_icc++;
                } else if (is_sof(m)) {
                    if (sn < 6) return err_set("invalid JPEG header: frame header (SOF) too short");
                    if (s[0] != 8) return err_set("unsupported JPEG: %d-bit samples (Pillow reads 8-bit only)", s[0]);
                    if (s[5] != 1 && s[5] != 3 && s[5] != 4)
                        return err_set("unsupported JPEG: %d components (Pillow reads 1, 3 or 4)", s[5]);
                    if (n_icc && icc_n <= 13) return err_set("invalid JPEG header: ICC profile chunk too short");
                    icc = NULL, icc_n = 0, n_icc = 0;
                    if ((sn - 6) % 3) return err_set("invalid JPEG header: frame header (SOF) length");
                    hd->h = (int)be16(s + 1);
                    hd->w = (int)be16(s + 3);
                    hd->layers = s[5];
                } else if (m == 0xFFDB) {  // DQT: each table must be whole
                    for (size_t k = 0; k < sn;) {
                        size_t qn = 1 + (s[k] >> 4 ? 128 : 64);
                        if (sn - k < qn) return err_set("invalid JPEG header: bad quantization table marker");
                        k += qn;
                    }
                }
            }
            if (m == 0xFFDA) sos = 1;
            else if (pos < n) s0 = d[pos++];
            else have = 0;
        } else if (m == 0xFFFF) {  // fill byte: the second FF starts a marker
            s0 = 0xFF;
        } else if (m == 0xFF00) {
            if (pos < n) s0 = d[pos++];
            else have = 0;
        } else {
            return err_set("invalid JPEG header: no marker found (0x%04X)", m);
        }
    }
    if (!hd->layers) return err_set("invalid or truncated JPEG: no frame header (SOF) before the data ends");
    if (hd->w <= 0 || hd->h <= 0) return err_set("invalid JPEG: image size %dx%d", hd->w, hd->h);
    if (!sos) return err_set("truncated JPEG: no start of scan (SOS) before the data ends");
    return 0;
}

// --- step 2: libjpeg as Pillow's JpegDecode.c runs it ------------------------------------

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} ErrMgr;

// Fatal errors: keep libjpeg's message and jump back (Pillow: "broken data stream").
static void on_error(j_common_ptr cinfo) {
    ErrMgr *e = (ErrMgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

// Warnings and traces: ignored, like Pillow's output() (and a library never prints).
static void on_output(j_common_ptr cinfo) { (void)cinfo; }

// The whole file is in memory from the start. Running out is a suspension
// (return FALSE), as in Pillow's source; since no more data will come, a
// suspension means the file is truncated. skip_input_data past the end
// leaves the buffer empty so the next read suspends.
static void src_init(j_decompress_ptr cinfo) { (void)cinfo; }
static boolean src_fill(j_decompress_ptr cinfo) {
    (void)cinfo;
    return FALSE;
}
static void src_skip(j_decompress_ptr cinfo, long num_bytes) {
    struct jpeg_source_mgr *src = cinfo->src;
    if (num_bytes <= 0) return;
    if ((size_t)num_bytes > src->bytes_in_buffer) num_bytes = (long)src->bytes_in_buffer;
    src->next_input_byte += num_bytes;
    src->bytes_in_buffer -= (size_t)num_bytes;
}
static void src_term(j_decompress_ptr cinfo) { (void)cinfo; }

// Everything that must survive a longjmp lives here, on the heap.
typedef struct {
    struct jpeg_decompress_struct cinfo;
    ErrMgr err;
    struct jpeg_source_mgr src;
    int created;
    uint8_t *pix;  // libjpeg's output (1, 3 or 4 bytes per pixel)
    uint8_t *rgb;  // the final RGB
} JpegCtx;

// Output size at scale 1/denom, as libjpeg computes it (rounds up).
static int scaled(int dim, int denom) { return (dim + denom - 1) / denom; }

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

static int decode(JpegCtx *c, const uint8_t *data, size_t n, const DecodeOptions *opt, long max_pixels,
                  const PilHeader *ph, Image *out, DecodeInfo *info) {
    struct jpeg_decompress_struct *ci = &c->cinfo;
    if (setjmp(c->err.jump)) {
        // A coding process libjpeg does not implement is not damage: lossless
        // (SOF3, which libjpeg-turbo reads from 3.0 on, and so does the Pillow
        // of PyPI wheels) or hierarchical.
        if (c->err.pub.msg_code == JERR_SOF_UNSUPPORTED)
            return err_set("unsupported JPEG: lossless or hierarchical coding, which this build's libjpeg-turbo %s "
                           "cannot read (libjpeg: %s)",
                           LIBJPEG_TURBO_VERSION_STR, c->err.msg);
        return err_set("broken JPEG data stream (libjpeg: %s)", c->err.msg);
    }
    ci->err = jpeg_std_error(&c->err.pub);
    c->err.pub.error_exit = on_error;
    c->err.pub.output_message = on_output;
    jpeg_create_decompress(ci);
    c->created = 1;
    c->src = (struct jpeg_source_mgr){.next_input_byte = data, .bytes_in_buffer = n, .init_source = src_init,
                                      .fill_input_buffer = src_fill, .skip_input_data = src_skip,
                                      .resync_to_restart = jpeg_resync_to_restart, .term_source = src_term};
    ci->src = &c->src;

    // Pillow: read_header until an image (tables-only streams are passed over).
    int rc;
    do {
        rc = jpeg_read_header(ci, FALSE);
    } while (rc == JPEG_HEADER_TABLES_ONLY);
    if (rc == JPEG_SUSPENDED) return err_set("truncated JPEG data (the file ends inside its header)");
    const int w = (int)ci->image_width, h = (int)ci->image_height;
    info->src_w = w;
    info->src_h = h;
    // The output Pillow asks for, from its own reading of the SOF (rawmode).
    const int comps = ph->layers;
    ci->out_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;

    // Scale: the smallest of 1/2, 1/4, 1/8 still >= target when asked, and
    // at least enough to fit the pixel budget.
    int denom = 1;
    if (opt->reduced_decode && opt->target_w > 0 && opt->target_h > 0)
        for (int k = 2; k <= 8; k *= 2) {
            if (scaled(w, k) < opt->target_w || scaled(h, k) < opt->target_h) break;
            denom = k;
        }
    if ((long)w * h > max_pixels) {
        int need = 0;
        for (int k = 2; k <= 8 && !need; k *= 2)
            if ((long)scaled(w, k) * scaled(h, k) <= max_pixels) need = k;
        if (!need)
            return err_set("%dx%d JPEG image is over the pixel budget (%ld pixels > %ld) even decoded at 1/8 scale "
                           "(%dx%d = %ld pixels)",
                           w, h, (long)w * h, max_pixels, scaled(w, 8), scaled(h, 8), (long)scaled(w, 8) * scaled(h, 8));
        info->over_budget = 1;
        if (need > denom) denom = need;
    }
    info->scale_denom = denom;
    ci->scale_num = 1;
    ci->scale_denom = (unsigned)denom;

    if (!jpeg_start_decompress(ci)) return err_set("truncated JPEG data (image file is truncated)");
    const int ow = (int)ci->output_width, oh = (int)ci->output_height;
    if (ci->output_components != comps)
        return err_set("unexpected JPEG output (%d components, expected %d)", ci->output_components, comps);
    // Zeroed: no row of the result can hold bytes the decoder did not write.
    c->pix = calloc((size_t)ow * oh, (size_t)comps);
    if (!c->pix) return err_set("out of memory for a %dx%d JPEG image", ow, oh);
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = c->pix + (size_t)ci->output_scanline * ow * comps;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return err_set("truncated JPEG data (image file is truncated: the data ends at row %u of %d)",
                           ci->output_scanline, oh);
    }
    // Pillow ignores a suspension here (every row is read); errors still count.
    if (!jpeg_finish_decompress(ci)) {
        // Suspended on a second SOF marker (a damaged byte in the data can
        // make one): libjpeg-turbo 3 (in Pillow's wheels) refuses it before
        // reading its segment (JERR_SOF_DUPLICATE); 2.1 reads the segment
        // first, so when the file ends inside it, it suspends instead.
        int m = ci->unread_marker;
        if (m == 0xC0 || m == 0xC1 || m == 0xC2 || m == 0xC9 || m == 0xCA)
            return err_set("broken JPEG data stream (libjpeg: Invalid JPEG file structure: two SOF markers)");
    }

    if (comps == 3) {
        c->rgb = c->pix;
        c->pix = NULL;
    } else {
        c->rgb = malloc((size_t)ow * oh * 3);
        if (!c->rgb) return err_set("out of memory for a %dx%d JPEG image", ow, oh);
        if (comps == 4) {
            cmyk_inverted_to_rgb(c->pix, c->rgb, (size_t)ow * oh);
        } else {
            for (size_t p = 0; p < (size_t)ow * oh; p++) c->rgb[3 * p] = c->rgb[3 * p + 1] = c->rgb[3 * p + 2] = c->pix[p];
        }
    }
    out->w = ow;
    out->h = oh;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return 0;
}

int jpeg_decode(const uint8_t *data, size_t n, const DecodeOptions *opt, long max_pixels, Image *out,
                DecodeInfo *info) {
    PilHeader ph;
    if (pil_walk(data, n, &ph) != 0) return -1;
    info->src_w = ph.w;
    info->src_h = ph.h;
    JpegCtx *c = calloc(1, sizeof *c);
    if (!c) return err_set("out of memory");
    int rc = decode(c, data, n, opt, max_pixels, &ph, out, info);
    if (c->created) jpeg_destroy_decompress(&c->cinfo);
    free(c->pix);
    free(c->rgb);
    free(c);
    if (rc != 0) memset(out, 0, sizeof *out);
    return rc;
}
