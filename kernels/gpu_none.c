// CPU-only build (make CUDA=0): every GPU entry point reports "unavailable".
#include <stdio.h>

#include "gpu.h"

int gpu_built(void) { return 0; }

int gpu_count(char *why, size_t why_size) {
    if (why) snprintf(why, why_size, "this build has no CUDA support (built with CUDA=0)");
    return 0;
}

int gpu_name(int device, char *buf, size_t size) { return -1; }

void gpu_libraries(char *buf, size_t size) { snprintf(buf, size, "CUDA: not built in (built with CUDA=0)"); }

#include "error.h"
#include "gpu_base.h"

GpuBase *gpu_base_create(const Model *m, int max_batch, GpuPrecision precision) {
    err_set("this build has no CUDA support (built with CUDA=0)");
    return NULL;
}

int gpu_base_forward(GpuBase *g, const float *in, int N, float *out) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

void gpu_base_free(GpuBase *g) {}
