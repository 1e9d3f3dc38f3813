// cuDNN loaded at run time (dlopen), as the frameworks do, so that the
// executables start on CPU nodes where cuDNN is not installed: nothing links
// -lcudnn, and `readelf -d build/extract` lists no libcud* entry.
//
// Every cudnn* function kernels/ calls goes through the table `dnn`, e.g.
// dnn.cudnnCreate(&h). A function must be in CUDNN_API_FUNCTIONS to be
// called: a direct cudnnFoo() call fails to link (undefined reference),
// which is the reminder to add it there. The types come from cudnn.h
// (decltype), so the table cannot disagree with the header.
// C++ (CUDA) translation units only.
#pragma once
#include <cudnn.h>
#include <stddef.h>

#define CUDNN_API_FUNCTIONS(X)              \
    X(cudnnGetVersion)                      \
    X(cudnnGetCudartVersion)                \
    X(cudnnGetErrorString)                  \
    X(cudnnCreate)                          \
    X(cudnnDestroy)                         \
    X(cudnnSetStream)                       \
    X(cudnnCreateTensorDescriptor)          \
    X(cudnnDestroyTensorDescriptor)         \
    X(cudnnSetTensor4dDescriptor)           \
    X(cudnnCreateFilterDescriptor)          \
    X(cudnnDestroyFilterDescriptor)         \
    X(cudnnSetFilter4dDescriptor)           \
    X(cudnnCreateConvolutionDescriptor)     \
    X(cudnnDestroyConvolutionDescriptor)    \
    X(cudnnSetConvolution2dDescriptor)      \
    X(cudnnSetConvolutionMathType)          \
    X(cudnnFindConvolutionForwardAlgorithm) \
    X(cudnnGetConvolutionForwardAlgorithm_v7) \
    X(cudnnGetConvolutionForwardWorkspaceSize) \
    X(cudnnConvolutionForward)              \
    X(cudnnGetConvolutionBackwardDataAlgorithm_v7) \
    X(cudnnFindConvolutionBackwardDataAlgorithm) \
    X(cudnnGetConvolutionBackwardDataWorkspaceSize) \
    X(cudnnConvolutionBackwardData)         \
    X(cudnnGetConvolutionBackwardFilterAlgorithm_v7) \
    X(cudnnFindConvolutionBackwardFilterAlgorithm) \
    X(cudnnGetConvolutionBackwardFilterWorkspaceSize) \
    X(cudnnConvolutionBackwardFilter)       \
    X(cudnnCreatePoolingDescriptor)         \
    X(cudnnDestroyPoolingDescriptor)        \
    X(cudnnSetPooling2dDescriptor)          \
    X(cudnnPoolingForward)

struct CudnnApi {
#define CUDNN_API_MEMBER(name) decltype(&::name) name;
    CUDNN_API_FUNCTIONS(CUDNN_API_MEMBER)
#undef CUDNN_API_MEMBER
};

// The loaded functions: valid only after cudnn_api_load() returned 0.
extern CudnnApi dnn;

// Loads cuDNN once per process (thread-safe; later calls return the first
// answer): dlopen of "libcudnn.so.9", found the way the dynamic loader finds
// libraries (LD_LIBRARY_PATH, ld.so.cache, ...), or of $VGGFT_CUDNN_LIBRARY
// when set (a path or a name; tests point it at a missing file to see the
// CPU-node behaviour on a machine that has cuDNN). Checks that every
// function above is there, that the library is cuDNN CUDNN_MAJOR (9) and
// that it was built for this build's CUDA major version.
// 0 on success; -1 with why = "cuDNN not found: <dlerror>" or "cuDNN
// unusable: <the check that failed>" (no err_set: a missing cuDNN is the
// normal case on CPU nodes). Kept short: it is one of gpu_count's reasons.
int cudnn_api_load(char *why, size_t why_size);

// What was loaded, e.g. "9.13.0 for CUDA 13.0 (/usr/lib/libcudnn.so.9)", or
// "not found: <dlerror> (how to install or point at it)" / "unusable: <the
// check that failed>".
void cudnn_api_describe(char *buf, size_t size);
