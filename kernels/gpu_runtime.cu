// Device discovery through the CUDA runtime, linked in statically: it loads
// the driver (libcuda.so.1) itself at run time, so a node without one gets
// here and is told why. A missing driver, GPU or cuDNN is not an error here:
// it is the normal case on CPU nodes, reported in `why`.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudnn_api.h"

extern "C" {
#include "gpu.h"
}

// The -gencode targets (Makefile CUDA_ARCHS), e.g. "80 90": machine code for
// each, PTX of the last.
#ifndef VGGFT_CUDA_ARCHS
#define VGGFT_CUDA_ARCHS ""
#endif

extern "C" int gpu_built(void) { return 1; }

// Appends a reason to the "; "-separated list in buf (size bytes).
static void add_reason(char *buf, size_t size, const char *reason) {
    size_t used = strlen(buf);
    if (used + 2 >= size) return;
    snprintf(buf + used, size - used, "%s%s", used ? "; " : "", reason);
}

// The CUDA version the driver supports (e.g. 13000), or 0 with why ("not
// found: <the loader's message>") when there is no driver. The runtime
// reports 0 without saying why; the loader's own message for libcuda.so.1,
// the file the runtime looks for, does.
static int driver_version(char *why, size_t why_size) {
    int v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess && v > 0) return v;
    cudaGetLastError();
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, why_size, "not found: %s", dlerror());
    } else {
        dlclose(h);
        snprintf(why, why_size, "unusable: libcuda.so.1 reports no CUDA version");
    }
    return 0;
}

// Lowest compute capability this build has machine code for (80 for sm_80);
// GPUs below it cannot run our kernels (PTX only goes up).
static int lowest_arch(void) {
    int low = 0;
    for (const char *p = VGGFT_CUDA_ARCHS; *p;) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p) break;
        if (!low || a < low) low = (int)a;
        p = end;
    }
    return low;
}

extern "C" int gpu_count(char *why, size_t why_size) {
    char reasons[1500] = "", r[700];
    int n = 0;
    char drv_why[600];
    int drv = driver_version(drv_why, sizeof drv_why);
    if (drv == 0) {
        snprintf(r, sizeof r, "NVIDIA driver %s", drv_why);  // "NVIDIA driver not found: ..."
        add_reason(reasons, sizeof reasons, r);
    } else if (drv < CUDART_VERSION) {
        snprintf(r, sizeof r, "the NVIDIA driver supports CUDA %d.%d, this build needs %d.%d or newer: update the driver",
                 drv / 1000, drv % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        add_reason(reasons, sizeof reasons, r);
    } else {
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            add_reason(reasons, sizeof reasons, cudaGetErrorString(e));
            cudaGetLastError();  // clear the sticky error for later calls
            n = 0;
        } else if (n == 0) {
            add_reason(reasons, sizeof reasons, "no CUDA-capable device is detected");
        } else {
            // Device 0 is the one the tools use.
            cudaDeviceProp p;
            int low = lowest_arch();
            if (cudaGetDeviceProperties(&p, 0) == cudaSuccess && low && p.major * 10 + p.minor < low) {
                snprintf(r, sizeof r, "GPU 0 (%s) is sm_%d%d, this build has code for sm_%d and newer (make CUDA_ARCHS)",
                         p.name, p.major, p.minor, low);
                add_reason(reasons, sizeof reasons, r);
                n = 0;
            }
        }
    }
    // Every GPU path uses cuDNN: without it no GPU is usable.
    if (cudnn_api_load(r, sizeof r) < 0) {
        add_reason(reasons, sizeof reasons, r);
        n = 0;
    }
    if (n == 0 && why) snprintf(why, why_size, "%s", reasons);
    return n;
}

extern "C" void *gpu_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 4) != cudaSuccess) {
        cudaGetLastError();  // not sticky, but leave no error for the next check to find
        return NULL;
    }
    return p;
}

extern "C" void gpu_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

extern "C" int gpu_name(int device, char *buf, size_t size) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    snprintf(buf, size, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

extern "C" void gpu_libraries(char *buf, size_t size) {
    char drv_text[700], dnn_text[700], code[200] = "";
    int drv = driver_version(drv_text, sizeof drv_text);
    if (drv) {
        // The runtime has loaded libcuda.so.1 by now: name the file it found.
        const char *path = "libcuda.so.1";
        struct link_map *lm = NULL;
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (h && dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && *lm->l_name) path = lm->l_name;
        snprintf(drv_text, sizeof drv_text, "for CUDA %d.%d (%s)", drv / 1000, drv % 1000 / 10, path);
        if (h) dlclose(h);
    }
    cudnn_api_describe(dnn_text, sizeof dnn_text);
    // "sm_80 sm_90 + PTX compute_90" from "80 90".
    size_t used = 0;
    const char *last = "";
    char arch[16];
    for (const char *p = VGGFT_CUDA_ARCHS; *p;) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p) break;
        used += (size_t)snprintf(code + used, sizeof code - used, "%ssm_%ld", used ? " " : "", a);
        snprintf(arch, sizeof arch, "%ld", a);
        last = arch;
        p = end;
        if (used >= sizeof code) break;
    }
    if (*last && used < sizeof code) snprintf(code + used, sizeof code - used, " + PTX compute_%s", last);
    snprintf(buf, size, "CUDA driver: %s\nCUDA runtime: %d.%d (linked in)\ncuDNN: %s\nGPU code: %s", drv_text,
             CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, dnn_text, code);
}
