// Where the arithmetic runs. Every executable takes --device auto|cpu|cuda:
// auto uses a GPU when one is usable and falls back to the CPU otherwise;
// cuda without a usable GPU is an error that says why.
#pragma once
#include <stddef.h>

#include "gpu.h"
#include "model.h"

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } DeviceKind;

// want: "auto", "cpu" or "cuda". On success *out is the device to use and
// `note` (may be NULL) says what was chosen and why, e.g.
// "CPU (no usable GPU: no CUDA-capable device is detected)". cuda without a
// usable GPU: -1 with err_set naming every reason (missing driver, cuDNN...).
int device_select(const char *want, DeviceKind *out, char *note, size_t note_size);
// device_select, then --precision (NULL: fp32) into *precision: tf32 and
// bf16 change the numbers, so they need a GPU (no quiet fallback to the
// CPU): -1 with err_set naming the precision and why there is no GPU.
int device_select_precision(const char *want, const char *precision_name, DeviceKind *out,
                            GpuPrecision *precision, char *note, size_t note_size);
// One line listing the usable GPUs ("0: NVIDIA H200 (sm_90, 139.8 GiB)"), or
// "none (why)" with every reason (kernels/gpu.h gpu_count).
void device_describe_gpus(char *buf, size_t size);
// What was found of CUDA, one "name: what" a line: driver, runtime, cuDNN
// (each with its version and file, or "not found: " and the loader's reason)
// and the GPU code built in; "CUDA: not built in" for CUDA=0 (kernels/gpu.h
// gpu_libraries).
void device_describe_libraries(char *buf, size_t size);
const char *device_name(DeviceKind d);

// cuDNN's legacy API takes no tensor of more than 2^31 - 1 values (a larger
// one fails with CUDNN_STATUS_NOT_SUPPORTED or BAD_PARAM when it is
// described), and the GPU code describes each layer's input and output for
// the whole batch: block1_conv1's output at 512x512 is 16.8 M values per
// image, so a batch of 128 is one too many. device_gpu_batch_limit: the
// largest batch whose every tensor of base layers [from, to) fits.
// device_gpu_batch_check: 0, or -1 with err_set naming the batch, the layer,
// its size in values and the largest batch that fits at this input size.
int device_gpu_batch_limit(const Model *m, int from, int to);
int device_gpu_batch_check(const Model *m, int from, int to, int batch);
