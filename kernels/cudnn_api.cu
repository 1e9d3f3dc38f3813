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

// cuDNN 9's libcudnn.so.9 is a wrapper that dlopens its sub-libraries
// (libcudnn_graph, _ops, _cnn) when first used, and stops the process
// ("Unable to load any of {libcudnn_cnn.so.9...}") when one is missing:
// a partial install would kill a tool instead of leaving it on the CPU.
// They are opened here, beside the wrapper first (a later dlopen by soname
// then finds them loaded, whatever the library path), else by name; a
// missing one makes cuDNN unusable, with the reason in load_text. The
// emulation (tests/emu) has none, unless it says it wants them checked (2:
// beside it only, as on a machine whose library path holds no cuDNN).
static int open_sublibraries(void *h, const char *path) {
    int (*emulated)(void) = (int (*)(void))dlsym(h, "vggft_cudnn_emu_wants_sublibraries");
    const int want = emulated ? emulated() : 1;
    if (!want) return 0;
    char dir[512];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
    static const char *const subs[] = {"graph", "ops", "cnn"};  // each needs the ones before it
    for (int i = 0; i < 3; i++) {
        char name[64], file[600];
        snprintf(name, sizeof name, "libcudnn_%s.so.%d", subs[i], CUDNN_MAJOR);
        snprintf(file, sizeof file, "%s/%s", dir, name);
        void *s = slash ? dlopen(file, RTLD_NOW | RTLD_LOCAL) : NULL;
        if (!s && want == 1) s = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (!s) {
            snprintf(load_text, sizeof load_text,
                     "%s needs %s, found neither beside it nor on the library path (%s): install all of cuDNN %d, or "
                     "add the folder that holds it to LD_LIBRARY_PATH",
                     path, name, want == 1 ? dlerror() : "the emulation's test", CUDNN_MAJOR);
            return -1;
        }
        // s stays open for the life of the process, as the wrapper does.
    }
    return 0;
}

static void load(void) {
    char soname[32];
    snprintf(soname, sizeof soname, "libcudnn.so.%d", CUDNN_MAJOR);
    const char *name = getenv("VGGFT_CUDNN_LIBRARY");
    if (!name || !*name) name = soname;
    // RTLD_LOCAL: cuDNN's symbols stay out of the global namespace (its
    // sub-libraries: open_sublibraries).
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
    if (open_sublibraries(h, path) < 0) {
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
