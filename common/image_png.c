// PNG through libpng 1.6's classic API (the simplified png_image API would
// composite alpha and apply gamma; PIL does neither).
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"
#include "image_codec.h"

// Everything touched after setjmp lives here, on the heap, so longjmp
// cannot leave it indeterminate.
typedef struct {
    const uint8_t *data;
    size_t n, pos;
    char msg[256];
    uint8_t *pix;        // libpng's output rows
    png_bytep *rows;
    uint8_t *rgb;        // final RGB (== pix unless 16-bit gray)
    png_uint_32 w, h;
    int gray16;
    int rows_done;       // every row read: what follows cannot fail the image
} PngCtx;

static void read_mem(png_structp png, png_bytep dst, png_size_t len) {
    PngCtx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) png_error(png, "file ends early (truncated)");
    memcpy(dst, c->data + c->pos, len);
    c->pos += len;
}

static void on_error(png_structp png, png_const_charp msg) {
    PngCtx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

// PIL does not report libpng-style warnings (bad ancillary chunks, iCCP
// profiles...), and a library must not print to stderr.
static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

// Unknown chunks, critical ones too, are dropped, as PIL drops them (libpng
// stops at an unknown critical chunk).
static int on_unknown_chunk(png_structp png, png_unknown_chunkp chunk) {
    (void)png, (void)chunk;
    return 1;
}

static int decode(PngCtx *c, png_structp png, png_infop pi, long max_pixels, Image *out,
                  DecodeInfo *info) {
    if (setjmp(png_jmpbuf(png))) {
        // Past the last row PIL reads quietly or not at all (load_end stops
        // at the first chunk it cannot read): a fault there leaves the image.
        if (c->rows_done) goto rows_read;
        return err_set("corrupt or truncated PNG data (libpng: %s)", c->msg);
    }
    png_set_read_fn(png, c, read_mem);
    // CRCs: those of the chunks before the image data were checked as PIL
    // checks them (png_pil_check); PIL never checks IDAT's or later ones.
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_set_read_user_chunk_fn(png, NULL, on_unknown_chunk);
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, ct, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    c->w = w, c->h = h;
    info->src_w = (int)w;
    info->src_h = (int)h;
    if (image_check_budget((long)w, (long)h, max_pixels, "PNG") != 0) return -1;

    // To 8-bit RGB the way PIL's convert('RGB') gets there.
    int gray16 = c->gray16 = ct == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !gray16) png_set_strip_16(png);  // PIL's ";16B" rawmodes: high byte
    // Also drops the alpha that palette expansion makes from a tRNS chunk.
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, pi, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if ((ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) && !gray16)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pi);

    size_t want = gray16 ? (size_t)w * 2 : (size_t)w * 3;
    size_t rowbytes = png_get_rowbytes(png, pi);
    if (rowbytes != want)
        return err_set("unexpected PNG layout (color type %d, depth %d: %zu bytes per row)",
                       ct, depth, rowbytes);
    c->pix = malloc(rowbytes * h);
    c->rows = malloc(sizeof(png_bytep) * h);
    if (!c->pix || !c->rows) return err_set("out of memory for a %ux%u PNG image", w, h);
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pix + (size_t)y * rowbytes;
    png_read_image(png, c->rows);
    c->rows_done = 1;
    png_read_end(png, NULL);

rows_read:
    // (After a longjmp only what lives in c is determinate.)
    w = c->w, h = c->h;
    if (c->gray16) {
        // PIL opens 16-bit gray as I;16, and I;16 -> RGB clips at 255.
        c->rgb = malloc((size_t)w * h * 3);
        if (!c->rgb) return err_set("out of memory for a %ux%u PNG image", w, h);
        for (size_t p = 0; p < (size_t)w * h; p++) {
            uint8_t v = c->pix[2 * p] ? 255 : c->pix[2 * p + 1];
            c->rgb[3 * p] = c->rgb[3 * p + 1] = c->rgb[3 * p + 2] = v;
        }
        free(c->pix);
    } else {
        c->rgb = c->pix;
    }
    c->pix = NULL;
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return 0;
}

// Pillow reads the chunks after the image data until IEND and stops quietly
// where the file ends in or before a chunk header (PngImageFile.load_end
// catches the struct.error / SyntaxError of a short header), so a PNG that
// lacks only its IEND chunk (or ends inside that chunk's 8-byte header)
// loads. libpng's png_read_end insists on IEND. When the chunk walk from the
// signature reaches the end of the file at (or inside) a chunk header, after
// an IDAT and without meeting IEND, returns the bytes up to that point plus
// an IEND chunk (malloc'd into *fixed); otherwise *fixed is NULL. The same
// when the file ends inside the CRC of its last chunk: Pillow never checks
// the CRC of IDAT and later chunks (it reads and drops those 4 bytes), so
// the chunk gets its CRC back. A chunk whose body runs past the end is left
// alone: that is a truncated file for Pillow too.
static int add_missing_iend(const uint8_t *d, size_t n, uint8_t **fixed, size_t *fixed_n) {
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    *fixed = NULL;
    size_t pos = 8, keep;
    int idat = 0, crc_cut = 0;
    for (;;) {
        if (n - pos < 8) {  // the file ends at or inside a chunk header
            keep = pos;
            break;
        }
        uint32_t len = be32(d + pos);
        if (!memcmp(d + pos + 4, "IEND", 4)) return 0;
        if (!memcmp(d + pos + 4, "IDAT", 4)) idat = 1;
        if (len > n - pos - 8) return 0;  // body cut
        if (n - pos - 8 - len < 4) {      // CRC cut
            keep = pos + 8 + len;
            crc_cut = 1;
            break;
        }
        pos += 12 + (size_t)len;
    }
    if (!idat) return 0;
    size_t total = keep + (crc_cut ? 4 : 0) + sizeof iend;
    uint8_t *f = malloc(total);
    if (!f) return err_set("out of memory");
    memcpy(f, d, keep);
    if (crc_cut) {
        uLong crc = crc32(0L, d + pos + 4, (uInt)(keep - pos - 4));
        for (int i = 0; i < 4; i++) f[keep + i] = (uint8_t)(crc >> (24 - 8 * i));
        keep += 4;
    }
    memcpy(f + keep, iend, sizeof iend);
    *fixed = f;
    *fixed_n = total;
    return 0;
}

// libpng on data (after png_pil_check and add_missing_iend).
static int decode_bytes(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    PngCtx *c = calloc(1, sizeof *c);
    if (!c) return err_set("out of memory");
    c->data = data;
    c->n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop pi = png ? png_create_info_struct(png) : NULL;
    int rc;
    if (!png || !pi) rc = err_set("cannot initialise libpng");
    else rc = decode(c, png, pi, max_pixels, out, info);
    png_destroy_read_struct(png ? &png : NULL, pi ? &pi : NULL, NULL);
    if (c->rgb != c->pix) free(c->rgb);
    free(c->pix);
    free(c->rows);
    free(c);
    return rc;
}

int png_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    if (n >= 8 && png_pil_check(data, n, max_pixels) < 0) return -1;
    uint8_t *fixed = NULL;
    size_t fixed_n = 0;
    if (n >= 8 && add_missing_iend(data, n, &fixed, &fixed_n) != 0) return -1;
    int rc = fixed ? decode_bytes(fixed, fixed_n, max_pixels, out, info) : decode_bytes(data, n, max_pixels, out, info);
    free(fixed);
    if (rc < 0) {
        // Refused by libpng: read as Pillow reads the image data, if it does.
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err_msg());
        uint8_t *again = NULL;
        size_t again_n = 0;
        if (png_pil_rebuild(data, n, max_pixels, &again, &again_n) == 1)
            rc = decode_bytes(again, again_n, max_pixels, out, info);
        free(again);
        if (rc < 0) err_set("%s", why);
    }
    return rc;
}
