#include "device.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "gpu.h"

const char *device_name(DeviceKind d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

void device_describe_gpus(char *buf, size_t size) {
    char why[1024] = "";
    int n = gpu_count(why, sizeof why);
    if (n == 0) {
        snprintf(buf, size, "none (%s)", why);
        return;
    }
    size_t used = 0;
    for (int i = 0; i < n && used < size; i++) {
        char name[200] = "?";
        gpu_name(i, name, sizeof name);
        used += (size_t)snprintf(buf + used, size - used, "%s%d: %s", i ? "; " : "", i, name);
    }
}

void device_describe_libraries(char *buf, size_t size) { gpu_libraries(buf, size); }

int device_select(const char *want, DeviceKind *out, char *note, size_t note_size) {
    char why[1024] = "";
    if (!want || !strcmp(want, "cpu")) {
        *out = DEVICE_CPU;
        if (note) snprintf(note, note_size, "CPU (--device cpu)");
        return 0;
    }
    if (strcmp(want, "auto") && strcmp(want, "cuda"))
        return err_set("--device: '%s' is not one of auto|cpu|cuda", want);
    int n = gpu_count(why, sizeof why);
    if (n > 0) {
        *out = DEVICE_CUDA;
        char name[200] = "GPU";
        gpu_name(0, name, sizeof name);
        if (note) snprintf(note, note_size, "GPU 0: %s", name);
        return 0;
    }
    if (!strcmp(want, "cuda"))
        return err_set("--device cuda: no usable GPU (%s); use --device auto or cpu to run on the CPU", why);
    *out = DEVICE_CPU;
    // A CPU node (no driver at all) in a few words, on every start line;
    // a GPU node that cannot use its GPU, with the whole reason.
    if (note && !strncmp(why, "NVIDIA driver not found", 23))
        snprintf(note, note_size, "CPU (no usable GPU: no NVIDIA driver on this node; --version says more)");
    else if (note)
        snprintf(note, note_size, "CPU (no usable GPU: %s)", why);
    return 0;
}

int gpu_precision_from_name(const char *name, GpuPrecision *p) {
    if (name && !strcmp(name, "fp32")) *p = GPU_FP32;
    else if (name && !strcmp(name, "tf32")) *p = GPU_TF32;
    else if (name && !strcmp(name, "bf16")) *p = GPU_BF16;
    else return err_set("--precision: '%s' is not one of fp32|tf32|bf16", name ? name : "");
    return 0;
}

const char *gpu_precision_name(GpuPrecision p) { return p == GPU_TF32 ? "tf32" : p == GPU_BF16 ? "bf16" : "fp32"; }

// The larger of a layer's input and output, in values per image.
static long long layer_values(const Layer *l) {
    long long in = (long long)l->in_h * l->in_w * l->in_c, out = (long long)l->out_h * l->out_w * l->out_c;
    return in > out ? in : out;
}

int device_gpu_batch_limit(const Model *m, int from, int to) {
    long long most = 1;
    for (int i = from; i < to; i++)
        if (layer_values(&m->layers[i]) > most) most = layer_values(&m->layers[i]);
    long long b = INT32_MAX / most;
    return b > INT32_MAX ? INT32_MAX : (int)b;
}

int device_gpu_batch_check(const Model *m, int from, int to, int batch) {
    if (batch <= device_gpu_batch_limit(m, from, to)) return 0;
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        if ((long long)batch * layer_values(l) <= INT32_MAX) continue;
        return err_set("a batch of %d is too large for the GPU at %dx%d: %s's tensors would hold %lld values, more "
                       "than cuDNN's 2^31 - 1 per tensor; at most --batch %d at this input size",
                       batch, m->cfg.input_w, m->cfg.input_h, l->name, (long long)batch * layer_values(l),
                       device_gpu_batch_limit(m, from, to));
    }
    return 0;
}

int device_select_precision(const char *want, const char *precision_name, DeviceKind *out,
                            GpuPrecision *precision, char *note, size_t note_size) {
    if (device_select(want, out, note, note_size) < 0) return -1;
    *precision = GPU_FP32;
    if (precision_name && gpu_precision_from_name(precision_name, precision) < 0) return -1;
    if (*precision != GPU_FP32 && *out != DEVICE_CUDA)
        return err_set("--precision %s needs a GPU, and this run has none: %s (the default, fp32, runs on the CPU)",
                       gpu_precision_name(*precision), note);
    return 0;
}
