// PNG through libpng 1.6's classic API (the simplified png_image API would
// composite alpha and apply gamma; PIL does neither).
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int decode(PngCtx *c, png_structp png, png_infop pi, long max_pixels, Image *out,
                  DecodeInfo *info) {
    if (setjmp(png_jmpbuf(png)))
        return err_set("corrupt or truncated PNG data (libpng: %s)", c->msg);
    png_set_read_fn(png, c, read_mem);
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, ct, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    info->src_w = (int)w;
    info->src_h = (int)h;
    if (image_check_budget((long)w, (long)h, max_pixels, "PNG") != 0) return -1;

    // To 8-bit RGB the way PIL's convert('RGB') gets there.
    int gray16 = ct == PNG_COLOR_TYPE_GRAY && depth == 16;
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
    png_read_end(png, NULL);

    if (gray16) {
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

int png_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
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
