// Mode names, Keras preprocessing, and the one-call image loader.
#include "image.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

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

// Each expression is the float32 operation sequence Keras performs on a
// float32 array, so the results are the same floats:
//   caffe   x[..., ::-1]; x[..., c] -= mean[c]           (imagenet_utils, mode caffe)
//   rescale x *= 1./255                                   (ImageDataGenerator.standardize)
//   torch   x /= 255.; x[..., c] -= mean[c]; x[..., c] /= std[c]
static inline void prep_pixel(float r, float g, float b, PrepMode mode, float *o) {
    switch (mode) {
    case PREP_CAFFE:
        o[0] = b - 103.939f;
        o[1] = g - 116.779f;
        o[2] = r - 123.68f;
        break;
    case PREP_RESCALE: {
        const float s = (float)(1.0 / 255);
        o[0] = r * s;
        o[1] = g * s;
        o[2] = b * s;
        break;
    }
    case PREP_TORCH:
        o[0] = (r / 255.0f - 0.485f) / 0.229f;
        o[1] = (g / 255.0f - 0.456f) / 0.224f;
        o[2] = (b / 255.0f - 0.406f) / 0.225f;
        break;
    }
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

int image_load_rgb8(const char *path, const LoadOptions *opt, uint8_t *out_rgb,
                    DecodeInfo *info) {
    if (opt->w <= 0 || opt->h <= 0)
        return err_set("%s: invalid target size %dx%d", path, opt->w, opt->h);
    DecodeOptions dopt = {opt->w, opt->h, opt->reduced_decode, opt->max_pixels};
    Image img;
    if (image_decode_file(path, &dopt, &img, info) != 0) return -1;
    int rc = image_resize(img.rgb, img.w, img.h, out_rgb, opt->w, opt->h, opt->interp);
    image_free(&img);
    if (rc != 0) return err_prefix("%s: ", path);
    return 0;
}

int image_chain(const uint8_t *data, size_t n, const char *name, const LoadOptions *opt,
                const AugmentParams *aug, float *out, DecodeInfo *info) {
    if (!name) name = "(memory)";
    if (opt->w <= 0 || opt->h <= 0)
        return err_set("%s: invalid target size %dx%d", name, opt->w, opt->h);
    DecodeOptions dopt = {opt->w, opt->h, opt->reduced_decode, opt->max_pixels};
    Image img;
    if (image_decode_memory(data, n, name, &dopt, &img, info) != 0) return -1;
    const size_t np = (size_t)opt->w * opt->h;
    uint8_t *rgb = img.rgb, *resized = NULL;
    float *f = NULL;
    int rc = 0;
    if (img.w != opt->w || img.h != opt->h) {
        resized = malloc(np * 3);
        if (!resized) rc = err_set("%s: out of memory resizing to %dx%d", name, opt->w, opt->h);
        else if (image_resize(img.rgb, img.w, img.h, resized, opt->w, opt->h, opt->interp) != 0)
            rc = err_prefix("%s: ", name);
        rgb = resized;
    }
    if (rc == 0 && !aug) {
        image_preprocess(rgb, np, opt->prep, out);
    } else if (rc == 0) {
        // img_to_array: float32 RGB in 0..255; then apply_transform, then
        // standardize (the preprocessing), in place.
        f = malloc(np * 3 * sizeof(float));
        if (!f) {
            rc = err_set("%s: out of memory augmenting a %dx%d image", name, opt->w, opt->h);
        } else {
            for (size_t i = 0; i < np * 3; i++) f[i] = rgb[i];
            augment_apply(aug, f, opt->h, opt->w, 3, out);
            image_preprocess_f32(out, np, opt->prep, out);
        }
    }
    free(f);
    free(resized);
    image_free(&img);
    return rc;
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
