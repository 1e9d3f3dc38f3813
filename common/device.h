// Where the arithmetic runs. Every executable takes --device auto|cpu|cuda:
// auto uses a GPU when one is usable and falls back to the CPU otherwise;
// cuda without a usable GPU is an error that says why.
#pragma once
#include <stddef.h>

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } DeviceKind;

// want: "auto", "cpu" or "cuda". On success *out is the device to use and
// `note` (may be NULL) says what was chosen and why, e.g.
// "CPU (no GPU: no CUDA-capable device is detected)".
int device_select(const char *want, DeviceKind *out, char *note, size_t note_size);
// One line listing the GPUs, or why there are none.
void device_describe_gpus(char *buf, size_t size);
const char *device_name(DeviceKind d);
