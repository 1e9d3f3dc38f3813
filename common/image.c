// Mode names, Keras preprocessing, and the one-call image loader.
#include "image.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "prep_pixel.h"

static const char *const interp_names[] = {"nearest", "bilinear"};
static const char *const prep_names[] = {"caffe", "rescale", "torch"};

int interp_parse(const char *name, Interp *out) {
    for (int i = 0; i < 2; i++)
        if (name && strcmp(name, interp_names[i]) == 0) {
            *out = (Interp)i;
            return 0;
        }
    return err_set("unknown interpolation '%s' (choose nearest or bilinear)", name ? name : "");
}

const char *interp_name(Interp interp) {
    return (unsigned)interp < 2 ? interp_names[interp] : "unknown";
}

int prep_parse(const char *name, PrepMode *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, prep_names[i]) == 0) {
            *out = (PrepMode)i;
            return 0;
        }
    return err_set("unknown preprocessing '%s' (choose caffe, rescale or torch)",
                   name ? name : "");
}

const char *prep_name(PrepMode mode) {
    return (unsigned)mode < 3 ? prep_names[mode] : "unknown";
}

void image_preprocess(const uint8_t *rgb, size_t n_pixels, PrepMode mode, float *out) {
    for (size_t p = 0; p < n_pixels; p++)
        prep_pixel(rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2], mode, out + 3 * p);
}

void image_preprocess_f32(const float *rgb, size_t n_pixels, PrepMode mode, float *out) {
    for (size_t p = 0; p < n_pixels; p++) {
        float r = rgb[3 * p], g = rgb[3 * p + 1], b = rgb[3 * p + 2];
        prep_pixel(r, g, b, mode, out + 3 * p);
    }
}

int image_load_rgb8(const char *path, const LoadOptions *opt, uint8_t *out_rgb, DecodeInfo *info) {
    uint8_t *data;
    size_t n;
    if (image_read_file(path, &data, &n) != 0) return -1;
    int rc = image_chain_rgb8(data, n, path, opt, out_rgb, info);
    free(data);
    return rc;
}

// decode -> resize to opt's size (skipped when equal, like Keras): *rgb is
// img's pixels or *resized's (malloc'd, NULL when not needed). -1 with the
// message prefixed by name.
static int decode_to_size(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt, Image *img,
                          uint8_t **resized, const uint8_t **rgb, DecodeInfo *info) {
    *resized = NULL;
    if (opt->w <= 0 || opt->h <= 0) return err_set("%s: invalid target size %dx%d", name, opt->w, opt->h);
    DecodeOptions dopt = {opt->w, opt->h, opt->reduced_decode, opt->max_pixels};
    if (image_decode_memory(data, n, name, &dopt, img, info) != 0) return -1;
    *rgb = img->rgb;
    if (img->w == opt->w && img->h == opt->h) return 0;
    *resized = malloc((size_t)opt->w * opt->h * 3);
    int rc = 0;
    if (!*resized) rc = err_set("%s: out of memory resizing to %dx%d", name, opt->w, opt->h);
    else if (image_resize(img->rgb, img->w, img->h, *resized, opt->w, opt->h, opt->interp) != 0)
        rc = err_prefix("%s: ", name);
    if (rc < 0) {
        free(*resized), *resized = NULL;
        image_free(img);
        return -1;
    }
    *rgb = *resized;
    return 0;
}

int image_chain(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt,
                const AugmentParams *aug, float *out, DecodeInfo *info) {
    if (!name) name = "(memory)";
    Image img;
    uint8_t *resized;
    const uint8_t *rgb = NULL;
    if (decode_to_size(data, n, name, opt, &img, &resized, &rgb, info) < 0) return -1;
    const size_t np = (size_t)opt->w * opt->h;
    int rc = 0;
    if (!aug) {
        image_preprocess(rgb, np, opt->prep, out);
    } else {
        // img_to_array: float32 RGB in 0..255; then apply_transform, then
        // standardize (the preprocessing), in place.
        float *f = malloc(np * 3 * sizeof(float));
        if (!f) {
            rc = err_set("%s: out of memory augmenting a %dx%d image", name, opt->w, opt->h);
        } else {
            for (size_t i = 0; i < np * 3; i++) f[i] = rgb[i];
            augment_apply(aug, f, opt->h, opt->w, 3, out);
            image_preprocess_f32(out, np, opt->prep, out);
        }
        free(f);
    }
    free(resized);
    image_free(&img);
    return rc;
}

int image_chain_rgb8(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt, uint8_t *out_rgb,
                     DecodeInfo *info) {
    if (!name) name = "(memory)";
    Image img;
    uint8_t *resized;
    const uint8_t *rgb = NULL;
    if (decode_to_size(data, n, name, opt, &img, &resized, &rgb, info) < 0) return -1;
    memcpy(out_rgb, rgb, (size_t)opt->w * opt->h * 3);
    free(resized);
    image_free(&img);
    return 0;
}

int image_load(const char *path, const LoadOptions *opt, const AugmentParams *aug, float *out,
               DecodeInfo *info) {
    uint8_t *data;
    size_t n;
    if (image_read_file(path, &data, &n) != 0) return -1;
    int rc = image_chain(data, n, path, opt, aug, out, info);
    free(data);
    return rc;
}
