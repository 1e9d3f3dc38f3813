// PNG writing through libpng 1.6's classic API, and Keras's array_to_img
// scaling (see image_write.h).
#include "image_write.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"

// Touched after setjmp, so on the heap (never an indeterminate local).
// mem/len/cap: the growing buffer of image_encode_png (f == NULL).
typedef struct {
    char msg[256];
    png_bytep *rows;
    uint8_t *mem;
    size_t len, cap;
} PngOut;

static void mem_write(png_structp png, png_bytep data, png_size_t n) {
    PngOut *c = png_get_io_ptr(png);
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n) cap *= 2;
        uint8_t *m = realloc(c->mem, cap);
        if (!m) png_error(png, "out of memory");
        c->mem = m, c->cap = cap;
    }
    memcpy(c->mem + c->len, data, n);
    c->len += n;
}

static void mem_flush(png_structp png) { (void)png; }

static void on_error(png_structp png, png_const_charp msg) {
    PngOut *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int encode(PngOut *c, png_structp png, png_infop pi, FILE *f, const uint8_t *rgb, int w,
                  int h) {
    if (setjmp(png_jmpbuf(png))) return -1;
    if (f) png_init_io(png, f);
    else png_set_write_fn(png, c, mem_write, mem_flush);
    png_set_IHDR(png, pi, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, pi);
    for (int y = 0; y < h; y++) c->rows[y] = (png_bytep)(rgb + (size_t)y * w * 3);
    png_write_image(png, c->rows);
    png_write_end(png, NULL);
    return 0;
}

int image_write_png(const char *path, const uint8_t *rgb, int w, int h) {
    if (w <= 0 || h <= 0 || w > 1000000 || h > 1000000)
        return err_set("%s: cannot write a %dx%d image", path, w, h);
    PngOut *c = calloc(1, sizeof *c);
    if (c) c->rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!c || !c->rows) {
        if (c) free(c);
        return err_set("%s: out of memory", path);
    }
    AtomicFile af;
    int rc = -1;
    if (atomic_open(&af, path)) {
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
        png_infop pi = png ? png_create_info_struct(png) : NULL;
        if (!png || !pi) rc = err_set("%s: cannot initialise libpng", path);
        else if (encode(c, png, pi, af.f, rgb, w, h)) rc = err_set("%s: %s", path, c->msg);
        else rc = 0;
        png_destroy_write_struct(png ? &png : NULL, pi ? &pi : NULL);
        if (rc == 0) rc = atomic_commit(&af);
        else atomic_abort(&af);
    }
    free(c->rows);
    free(c);
    return rc;
}

int image_encode_png(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *n_out) {
    *out = NULL, *n_out = 0;
    if (w <= 0 || h <= 0 || w > 1000000 || h > 1000000)
        return err_set("PNG encoding: cannot encode a %dx%d image", w, h);
    PngOut *c = calloc(1, sizeof *c);
    if (c) c->rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!c || !c->rows) {
        if (c) free(c);
        return err_set("PNG encoding: out of memory");
    }
    int rc;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop pi = png ? png_create_info_struct(png) : NULL;
    if (!png || !pi) rc = err_set("PNG encoding: cannot initialise libpng");
    else if (encode(c, png, pi, NULL, rgb, w, h)) rc = err_set("PNG encoding: %s", c->msg);
    else rc = 0;
    png_destroy_write_struct(png ? &png : NULL, pi ? &pi : NULL);
    if (rc == 0) *out = c->mem, *n_out = c->len;
    else free(c->mem);
    free(c->rows);
    free(c);
    return rc;
}

void image_f32_to_rgb8_keras(const float *x, size_t n, uint8_t *out) {
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
        }
    if (lo > hi) lo = hi = 0;  // nothing finite
    // numpy's float32 steps: x - min, then max of that, / max, * 255.
    float top = hi - lo;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            out[i] = 0;
            continue;
        }
        float v = x[i] - lo;
        if (top != 0) v /= top;
        v *= 255.0f;
        out[i] = (uint8_t)(v > 255.0f ? 255.0f : v);  // astype(uint8) truncates
    }
}
