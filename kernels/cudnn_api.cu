// cuDNN through dlopen: see cudnn_api.h. Host code only.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudnn_api.h"

CudnnApi dnn;

// The result of the one load: 0 loaded, -1 not; what was loaded, or the
// reason it was not, after load_kind ("not found" or "unusable").
static int load_status = -1;
static const char *load_kind = "not found";
static char load_text[600];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void) {
    char soname[32];
    snprintf(soname, sizeof soname, "libcudnn.so.%d", CUDNN_MAJOR);
    const char *name = getenv("VGGFT_CUDNN_LIBRARY");
    if (!name || !*name) name = soname;
    // RTLD_LOCAL: cuDNN's symbols stay out of the global namespace; it finds
    // its own sub-libraries (libcudnn_ops.so.9, ...) beside itself.
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_text, sizeof load_text, "%s", dlerror());
        return;
    }
    const char *path = name;
    struct link_map *lm = NULL;
    if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && *lm->l_name) path = lm->l_name;
#define CUDNN_API_LOAD(fn)                                                                                  \
    dnn.fn = (decltype(dnn.fn))dlsym(h, #fn);                                                               \
    if (!dnn.fn) {                                                                                          \
        snprintf(load_text, sizeof load_text, "%s has no %s (%s)", path, #fn, dlerror());                  \
        load_kind = "unusable";                                                                             \
        dlclose(h);                                                                                         \
        return;                                                                                             \
    }
    CUDNN_API_FUNCTIONS(CUDNN_API_LOAD)
#undef CUDNN_API_LOAD
    // cudnnGetVersion: major * 10000 + minor * 100 + patch (cuDNN 9);
    // cudnnGetCudartVersion: the CUDA it was built for, e.g. 13000.
    size_t v = dnn.cudnnGetVersion(), cv = dnn.cudnnGetCudartVersion();
    int major = (int)(v / 10000), minor = (int)(v % 10000 / 100), patch = (int)(v % 100);
    int cuda_major = (int)(cv / 1000), cuda_minor = (int)(cv % 1000 / 10);
    // Another major version has another ABI; a cuDNN built for another CUDA
    // major version is not supported with this runtime (NVIDIA ships one
    // cuDNN per CUDA major version).
    if (major != CUDNN_MAJOR || cuda_major != CUDART_VERSION / 1000) {
        snprintf(load_text, sizeof load_text,
                 "%s is cuDNN %d.%d.%d for CUDA %d.%d; this build needs cuDNN %d for CUDA %d", path,
                 major, minor, patch, cuda_major, cuda_minor, CUDNN_MAJOR, CUDART_VERSION / 1000);
        load_kind = "unusable";
        dlclose(h);
        return;
    }
    snprintf(load_text, sizeof load_text, "%d.%d.%d for CUDA %d.%d (%s)", major, minor, patch, cuda_major,
             cuda_minor, path);
    load_status = 0;  // h stays open for the life of the process
}

int cudnn_api_load(char *why, size_t why_size) {
    pthread_once(&load_once, load);
    if (load_status < 0 && why) snprintf(why, why_size, "cuDNN %s: %s", load_kind, load_text);
    return load_status;
}

void cudnn_api_describe(char *buf, size_t size) {
    if (cudnn_api_load(NULL, 0) == 0) snprintf(buf, size, "%s", load_text);
    else if (!strcmp(load_kind, "not found"))
        snprintf(buf, size, "not found: %s (install cuDNN %d for CUDA %d and add its folder to LD_LIBRARY_PATH, or "
                 "set VGGFT_CUDNN_LIBRARY to its libcudnn.so.%d)", load_text, CUDNN_MAJOR, CUDART_VERSION / 1000,
                 CUDNN_MAJOR);
    else snprintf(buf, size, "%s: %s", load_kind, load_text);
}
