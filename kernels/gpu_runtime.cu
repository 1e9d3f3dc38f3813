// Device discovery through the CUDA runtime. A missing driver or GPU is not
// an error here: it is the normal case on CPU nodes, reported in `why`.
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>

extern "C" {
#include "gpu.h"
}

extern "C" int gpu_built(void) { return 1; }

extern "C" int gpu_count(char *why, size_t why_size) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        // The usual cases on CPU nodes, in words a user can act on.
        if (why && e == cudaErrorInsufficientDriver)
            snprintf(why, why_size, "no NVIDIA driver, or one older than this build's CUDA %d.%d needs",
                     CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        else if (why && e == cudaErrorNoDevice)
            snprintf(why, why_size, "no CUDA-capable device is detected");
        else if (why)
            snprintf(why, why_size, "%s", cudaGetErrorString(e));
        cudaGetLastError();  // clear the sticky error for later calls
        return 0;
    }
    if (n == 0 && why) snprintf(why, why_size, "no CUDA-capable device is detected");
    return n;
}

extern "C" int gpu_name(int device, char *buf, size_t size) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return -1;
    snprintf(buf, size, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

extern "C" void gpu_cudnn_version(char *buf, size_t size) {
    size_t v = cudnnGetVersion();
    snprintf(buf, size, "cuDNN %d.%d.%d (built with %d.%d.%d)", (int)(v / 10000), (int)(v % 10000 / 100),
             (int)(v % 100), CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL);
}
