// Writing images: augmented samples for finetune's --save-augmented DIR N
// (Keras's flow_from_directory(save_to_dir=DIR), which the seeds use to look
// at what the generator makes).
#pragma once
#include <stddef.h>
#include <stdint.h>

// Writes an h x w RGB8 image (H,W,3 interleaved) as an 8-bit RGB PNG
// (libpng, no interlacing, no timestamp: same pixels give the same bytes),
// atomically (common/fileutil.h: PATH.tmp.PID renamed over PATH once on
// disk). The folder must exist. -1 with err_set naming PATH on any error.
int image_write_png(const char *path, const uint8_t *rgb, int w, int h);

// Float pixels -> RGB8 the way Keras's save_to_dir does it:
// image_utils.array_to_img(x, scale=True), i.e. in float32
//   x = x - min(x); if (max(x) != 0) x /= max(x); x *= 255; astype(uint8)
// with min and max over all n values (all channels together) and the cast
// truncating. So the saved image is contrast-stretched: its darkest value
// becomes 0 and its brightest 255 (a truncation can make that 254).
//
// Keras applies this to the batch after standardize(), i.e. after rescale
// or preprocessing_function. Callers pass the augmented image in RGB 0..255
// before preprocessing: for the seeds' rescale=1./255 that is the same
// picture (the stretch undoes any positive scale; float32 roundings can move
// a value by one level), and for caffe preprocessing it shows true colours
// where Keras would save BGR channels with the mean subtracted.
// Non-finite values give 0. n is the count of floats (h * w * 3).
void image_f32_to_rgb8_keras(const float *x, size_t n, uint8_t *out);

// The same PNG encoding into memory (for embedding, e.g. base64 data: URIs
// in SVG): *out is malloc'd (free it), *n_out its length in bytes.
// -1 with err_set on bad sizes or out of memory.
int image_encode_png(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *n_out);
