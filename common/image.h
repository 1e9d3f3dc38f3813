// Images the way Keras loads them: decode like PIL's Image.open(f).convert('RGB'),
// resize like PIL's Image.resize, preprocess like keras.applications.
//
// Pixels are 8-bit RGB, H,W,3 interleaved (row-major, channels last);
// preprocessed images are float32 H,W,3.
//
// Formats, detected from the file's first bytes (never its extension):
//   JPEG  libjpeg-turbo (libjpeg API), accurate integer IDCT and fancy
//         upsampling, the same decode PIL does. Grayscale is replicated;
//         CMYK/YCCK are read as Adobe-inverted CMYK (PIL always assumes that)
//         and converted with PIL's cmyk2rgb integer formula. Damaged files
//         are refused exactly when PIL refuses them (image_jpeg.c: PIL's
//         marker walk, then libjpeg with PIL's suspending source).
//   PNG   libpng. Palette expanded, gray replicated, alpha dropped (no
//         compositing, like PIL); 16-bit RGB/RGBA/LA keep the high byte; 16-bit
//         gray is clipped to 255 (PIL opens it as I;16 and convert('RGB')
//         clips, so it comes out mostly white: that is what Keras trains on).
//         A file that ends where its IEND chunk should be loads, as in PIL.
//   BMP   uncompressed 1/4/8-bit palette, 16-bit (5-5-5, 5-6-5 bitfields),
//         24-bit, 32-bit (BI_RGB, BI_BITFIELDS); bottom-up and top-down;
//         Windows 3.x-5 and OS/2 1.x headers; RLE8 and RLE4 (PIL's decoder
//         rules, including its refusal of a stream that sets too few pixels).
//   PNM   P1-P6 (PBM/PGM/PPM, plain and binary), any maxval < 65536,
//         rescaled like PIL (gray with maxval > 255 clips like 16-bit PNG).
// Other formats (GIF, TIFF, WebP, ...) give "PATH: unsupported image type
// (GIF)". Every error message starts with the path (or name) and says why:
// empty file, not an image, truncated or corrupt data, over the pixel budget.
// A truncated JPEG is an error (PIL raises "image file is truncated"), and so
// is one libjpeg cannot decode ("broken data stream"), while libjpeg's
// warnings (e.g. extraneous bytes before a marker, corrupt data it steps
// over) are ignored, as PIL ignores them. No decode returns pixels the
// decoder did not write.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "augment.h"

typedef struct {
    int w, h;
    uint8_t *rgb;  // h*w*3 bytes, malloc'd
} Image;

typedef enum { IMG_UNKNOWN = 0, IMG_JPEG, IMG_PNG, IMG_BMP, IMG_PNM } ImageFormat;

// PIL's Image.MAX_IMAGE_PIXELS (it warns above this, refuses at twice it).
#define IMAGE_MAX_PIXELS_DEFAULT 89478485L
// extract's --max-pixels default (and predict's for a model or head that
// records none).
#define EXTRACT_MAX_PIXELS_DEFAULT 50000000L

typedef struct {
    // Size the caller will resize to; only used to pick a JPEG DCT scale.
    // 0 means unknown (no reduction for reduced_decode).
    int target_w, target_h;
    // 1: decode JPEGs at the smallest scale 1/2, 1/4 or 1/8 whose output is
    // still >= target in both dimensions. A speed option: the pixels differ
    // from Keras's full decode + resize.
    int reduced_decode;
    // Pixel budget (w*h of the file). 0 means IMAGE_MAX_PIXELS_DEFAULT.
    // A JPEG over it is decoded at the largest of 1/2, 1/4, 1/8 that fits
    // (or smaller, if reduced_decode allows); other formats over it, or a
    // JPEG still over it at 1/8, are an error naming the file and its size.
    long max_pixels;
} DecodeOptions;

typedef struct {
    ImageFormat format;
    int src_w, src_h;   // size stored in the file
    int scale_denom;    // JPEG DCT scaling used: 1, 2, 4 or 8 (1 for others)
    int over_budget;    // 1: src_w*src_h > max_pixels forced a reduced decode
                        // (the caller should warn: these pixels are not Keras's)
} DecodeInfo;

// Decodes a file / a buffer to RGB8. opt and info may be NULL (defaults:
// full-size decode, default budget). name_for_errors prefixes messages.
// On error returns -1 with err_msg() set and *out zeroed; on success *out
// owns a malloc'd buffer (free with image_free).
int image_decode_file(const char *path, const DecodeOptions *opt, Image *out,
                      DecodeInfo *info);
int image_decode_memory(const uint8_t *data, size_t n, const char *name_for_errors,
                        const DecodeOptions *opt, Image *out, DecodeInfo *info);
void image_free(Image *img);

// Format from the first bytes (IMG_UNKNOWN if not one we decode); if
// other_name is not NULL it receives a name for known formats we do not
// decode ("GIF", "TIFF", ...) or NULL.
ImageFormat image_sniff(const uint8_t *data, size_t n, const char **other_name);
const char *image_format_name(ImageFormat f);  // "JPEG", "PNG", "BMP", "PNM", "unknown"

// --- resizing -----------------------------------------------------------------
typedef enum { INTERP_NEAREST = 0, INTERP_BILINEAR = 1 } Interp;
// "nearest" / "bilinear" -> enum; -1 with a message listing the choices.
int interp_parse(const char *name, Interp *out);
const char *interp_name(Interp interp);

// src (sw x sh RGB8) -> dst (dw x dh RGB8), exactly like PIL's
// Image.resize((dw, dh), NEAREST or BILINEAR) on an RGB image. Equal sizes
// copy. src and dst must not overlap. Returns -1 only on bad sizes or when
// the bilinear scratch cannot be allocated.
int image_resize(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                 Interp interp);

// --- preprocessing ----------------------------------------------------------
typedef enum {
    PREP_CAFFE = 0,    // keras vgg16.preprocess_input: BGR, minus ImageNet mean, 0..255
    PREP_RESCALE = 1,  // ImageDataGenerator(rescale=1./255): RGB in 0..1 (the seeds)
    PREP_TORCH = 2,    // RGB /255, minus mean (.485,.456,.406), over std (.229,.224,.225)
} PrepMode;
// "caffe" / "rescale" / "torch" -> enum; -1 with a message listing the choices.
int prep_parse(const char *name, PrepMode *out);
const char *prep_name(PrepMode mode);

// n_pixels RGB8 pixels -> n_pixels*3 floats in mode's layout (caffe: BGR).
// Float32 arithmetic in Keras's order, so results match Keras bit for bit.
void image_preprocess(const uint8_t *rgb, size_t n_pixels, PrepMode mode, float *out);
// The same on RGB float pixels in 0..255 (e.g. after augmentation); in may == out.
void image_preprocess_f32(const float *rgb, size_t n_pixels, PrepMode mode, float *out);

// --- one call per image -----------------------------------------------------
typedef struct {
    int w, h;            // output size (note: Keras's target_size is (h, w))
    Interp interp;       // Keras's default is nearest
    PrepMode prep;
    int reduced_decode;  // see DecodeOptions
    long max_pixels;     // see DecodeOptions (0: default)
} LoadOptions;

// The largest file image_read_file reads: each worker holds one whole file,
// and no image we decode comes near it.
#define IMAGE_FILE_MAX_BYTES (1L << 30)

// Reads a whole image file safely: refuses anything but a regular file without blocking
// (open with O_NONBLOCK|O_NOCTTY then fstat: a FIFO named y.jpg must never block),
// caps the size (1 GiB), error "PATH: not a regular file (FIFO)" etc. *data malloc'd.
// (A stat before the open keeps devices and sockets from being opened at all;
// the fstat after it catches a file swapped in between.) On error *data is
// NULL, *n 0, and the message starts with "PATH: ".
int image_read_file(const char *path, uint8_t **data, size_t *n);

// decode (memory) -> resize to opt->w x opt->h (skipped when equal, like Keras) -> augment (aug may be NULL: none)
// -> preprocess into out (h*w*3 floats). name prefixes errors. info may be NULL.
// Without aug the floats come straight from the RGB8 pixels (image_preprocess);
// with aug the RGB8 pixels become floats in 0..255, go through augment_apply
// (Keras's apply_transform on img_to_array's output) and then
// image_preprocess_f32: Keras's order in ImageDataGenerator (random_transform,
// then standardize).
int image_chain(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt,
                const AugmentParams *aug, float *out, DecodeInfo *info);

// image_chain's decode and resize without the preprocessing: opt->w x
// opt->h RGB8 pixels into out_rgb (w*h*3 bytes), for a GPU that
// preprocesses them itself (gpu_base_submit_rgb8: a quarter of the bytes to
// copy). opt->prep is not used. name prefixes errors; info may be NULL.
int image_chain_rgb8(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt, uint8_t *out_rgb,
                     DecodeInfo *info);
// image_read_file + image_chain_rgb8: one image file, decoded and resized,
// into out_rgb (h*w*3 bytes). info may be NULL.
int image_load_rgb8(const char *path, const LoadOptions *opt, uint8_t *out_rgb,
                    DecodeInfo *info);
// image_read_file + image_chain: one image file into out (h*w*3 floats).
int image_load(const char *path, const LoadOptions *opt, const AugmentParams *aug, float *out,
               DecodeInfo *info);
