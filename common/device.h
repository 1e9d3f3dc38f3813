// Where the arithmetic runs. Every executable takes --device auto|cpu|cuda:
// auto uses a GPU when one is usable and falls back to the CPU otherwise;
// cuda without a usable GPU is an error that says why.
#pragma once
#include <stddef.h>

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } DeviceKind;

// want: "auto", "cpu" or "cuda". On success *out is the device to use and
// `note` (may be NULL) says what was chosen and why, e.g.
// "CPU (no usable GPU: no CUDA-capable device is detected)". cuda without a
// usable GPU: -1 with err_set naming every reason (missing driver, cuDNN...).
int device_select(const char *want, DeviceKind *out, char *note, size_t note_size);
// One line listing the usable GPUs ("0: NVIDIA H200 (sm_90, 139.8 GiB)"), or
// "none (why)" with every reason (kernels/gpu.h gpu_count).
void device_describe_gpus(char *buf, size_t size);
// What was found of CUDA, one "name: what" a line: driver, runtime, cuDNN
// (each with its version and file, or "not found: " and the loader's reason)
// and the GPU code built in; "CUDA: not built in" for CUDA=0 (kernels/gpu.h
// gpu_libraries).
void device_describe_libraries(char *buf, size_t size);
const char *device_name(DeviceKind d);
