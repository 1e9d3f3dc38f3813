// One pixel's preprocessing (Keras's float32 operations on img_to_array's
// output), shared by the host (image.c's image_preprocess) and the GPU
// (kernels/gpu_base.cu's RGB8 input): the same source, so the same floats.
// Each expression is the float32 operation sequence Keras performs on a
// float32 array:
//   caffe   x[..., ::-1]; x[..., c] -= mean[c]           (imagenet_utils, mode caffe)
//   rescale x *= 1./255                                   (ImageDataGenerator.standardize)
//   torch   x /= 255.; x[..., c] -= mean[c]; x[..., c] /= std[c]
// None is a multiply followed by an add, so no compiler may fuse them into
// an FMA (the host builds with -ffp-contract=off; nvcc contracts only
// a * b + c), and nvcc's default -prec-div=true keeps '/' IEEE-rounded.
#pragma once
#include "image.h"

#ifdef __CUDACC__
#define PREP_HOST_DEVICE __host__ __device__
#else
#define PREP_HOST_DEVICE
#endif

// r, g, b in 0..255 -> o[0..2] in mode's layout (caffe: BGR).
static inline PREP_HOST_DEVICE void prep_pixel(float r, float g, float b, PrepMode mode, float *o) {
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
