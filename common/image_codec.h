// Internal: one decoder per format, called by image_decode_memory once it has
// sniffed the format. Each sets a message WITHOUT the file name (the caller
// prefixes "NAME: ") and returns -1 on failure, leaving *out zeroed.
// max_pixels is already resolved (> 0).
#pragma once
#include "image.h"

// A big-endian 32-bit field (PNG's lengths and header fields).
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int jpeg_decode(const uint8_t *data, size_t n, const DecodeOptions *opt, long max_pixels,
                Image *out, DecodeInfo *info);
int png_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info);
// PNG as Pillow reads it (image_png_pil.c). png_pil_check: -1 with err_set
// where Pillow refuses a file that libpng would read (a bad CRC before the
// image data, a short field, a chunk cut short after it), else 0.
// png_pil_rebuild, for a file libpng refused: 1 with a PNG that libpng
// reads to Pillow's pixels in *out (malloc'd), 0 when Pillow refuses it
// too, -1 out of memory.
int png_pil_check(const uint8_t *data, size_t n, long max_pixels);
int png_pil_rebuild(const uint8_t *data, size_t n, long max_pixels, uint8_t **out, size_t *out_n);
int bmp_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info);
int pnm_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info);
// The block size of PIL's plain PNM reader (ImageFile.SAFEBLOCK, 1 MiB),
// which decides some files' pixels; tests set it smaller.
extern size_t pnm_plain_block;

// Checks a w x h image of format fmt against the budget before anything is
// allocated: -1 with "WxH FMT image is over the pixel budget (...)" or
// "invalid image size WxH".
int image_check_budget(long w, long h, long max_pixels, const char *fmt);
