// ImageDataGenerator's random augmentation (Keras, REFERENCE.md section 5),
// on one resized image before preprocessing:
//   rotation theta ~ U(-r, r) degrees; shifts tx ~ U(-hs, hs) * H and
//   ty ~ U(-ws, ws) * W when the range is < 1, U(-hs, hs) pixels when >= 1;
//   shear ~ U(-s, s) degrees (Keras >= 2.1.3); zoom zx, zy ~ U(1-z, 1+z)
//   independently; horizontal flip with p = 0.5.
// Keras quirk we keep: apply_transform moves the picture by tx along the
// columns and by ty along the rows (its x/y swap), so height_shift_range
// shifts horizontally by up to hs * H and width_shift_range vertically
// (keras-team/keras#17398, tf-keras#310; the same for square images like the
// seeds' 150x150 with equal ranges).
// Keras builds one matrix rotation . shift . shear . zoom about the image
// centre (transform_matrix_offset_center: o = size / 2 - 0.5 in Keras 3, the
// pixel grid's true centre; keras_preprocessing and tf.keras 2 had + 0.5, a
// one-pixel offset of the centre) and samples the input through it
// (scipy.ndimage.affine_transform, order 1 = bilinear, mode 'nearest' = edge
// pixels replicated); then flips; then preprocesses.
// Draws depend only on (seed, epoch, index): the same on any thread count,
// in any order, and again after a resume.
// Source: keras/src/legacy/preprocessing/image.py (Keras 3.x:
// get_random_transform, apply_transform, apply_affine_transform) and
// scipy/ndimage/src/ni_interpolation.c; checked against Keras 3 by
// tests/test_augment.c (fixtures from scripts/fixtures_augment.py).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    // Doubles, as Keras's Python floats: zoom=0.7:0.7 is zx = 0.7 exactly.
    double rotation;                  // degrees (0: none)
    double width_shift, height_shift; // < 1: fraction of W / H; >= 1: pixels (0: none)
    // A shift given as an integer ("shift=5", Keras's int range): whole
    // pixels, Keras's np.random.choice(N) * choice([-1, 1]) (-(N-1)..N-1);
    // "shift=5.0" (a float) draws U(-5, 5) pixels.
    int width_shift_int, height_shift_int;
    double shear;                     // degrees (0: none)
    double zoom_lo, zoom_hi;          // zx, zy ~ U(lo, hi); 1, 1: none
    int hflip;                       // random horizontal flips
} AugmentSpec;

// One image's draw: Keras's transform_parameters (theta and shear in
// degrees; tx drawn from height_shift, ty from width_shift, in pixels, and
// applied as Keras does: output (i, j) samples input (i + ty, j + tx) for a
// pure shift; zx, zy; flip = flip_horizontal).
typedef struct {
    double theta, tx, ty, shear, zx, zy;
    int flip;
} AugmentParams;

// The seeds' generator: rotation 30, shifts 0.2, shear 0.2, zoom 0.2, flip.
void augment_spec_seeds(AugmentSpec *s);
// No augmentation.
void augment_spec_none(AugmentSpec *s);
// "rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip" (shift sets both;
// width_shift= and height_shift= set one; zoom=Z is [1-Z, 1+Z] with
// 0 <= Z < 1, zoom=LO:HI is Keras's zoom_range=[LO, HI] with 0 < LO <= HI;
// flip, flip=1, flip=0), "seeds" for the seeds' generator, "none" for none.
// Items are comma-separated, applied left to right ("seeds,flip=0"); blanks
// around items and '=' are ignored. Unknown keys, bad, negative or missing
// values, empty items: -1 with err_set naming the key or value
// ("--augment: unknown key 'rotate' (keys: ...)"), *s unchanged.
int augment_spec_parse(const char *text, AugmentSpec *s);
// The canonical text form (parse(format(s)) == s bit for bit), keys in the
// order above, zero ranges left out, shortest numbers; "none" when none.
// Truncated to size - 1 characters (256 always suffice for parsed specs).
void augment_spec_format(const AugmentSpec *s, char *buf, size_t size);
// 1 when s changes no image.
int augment_spec_is_none(const AugmentSpec *s);
// Draws image `index`'s parameters for `epoch` for an h x w image, in
// Keras's get_random_transform order and meaning, from rng_hash of (seed,
// epoch, index) with one counter per parameter (53-bit uniforms, numpy's
// low + (high - low) * u): a range of 0 gives exactly Keras's 0 (zoom 1, 1;
// no flip) and leaves the other parameters' draws as they were.
void augment_draw(const AugmentSpec *s, uint64_t seed, long epoch, long index, int h, int w, AugmentParams *p);
// Keras's apply_transform(x, p) on an h x w x c float image (H,W,C; RGB in
// 0..255 as Keras's generator sees it) into out (same shape, out != in):
// the matrix as apply_affine_transform builds it, then per channel scipy's
// affine_transform(order=1, mode='nearest') with its double arithmetic in its
// order (coordinates clamped to the edge, weights 1 - x and 1 - (1 - x),
// the four taps summed row-major), rounded once to float32 -- bit-identical
// to Keras 3 + scipy 1.17 on the test fixtures -- then flip_axis on columns.
// Identity parameters copy the image exactly (Keras skips the transform);
// flip alone is an exact mirror. On CPUs with AVX2 four output columns
// go at a time through the same double operations (the same bits; 0.36 ->
// 0.18 ms for a 150x150 RGB image on the development machine): the
// fine-tuning loader's largest cost after decoding.
void augment_apply(const AugmentParams *p, const float *in, int h, int w, int c, float *out);
