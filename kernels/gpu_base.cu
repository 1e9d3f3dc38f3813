// Conv base inference with cuDNN: conv (cuDNN) -> bias + ReLU (our kernel,
// CPU reference: conv3x3_forward's bias + relu_forward) -> 2x2 max pool
// (cuDNN). Activations stay NHWC on the device, as on the CPU.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudnn_api.h"  // every cudnn* call goes through dnn (loaded at run time)

extern "C" {
#include "error.h"
#include "gpu_base.h"
}

#define WORKSPACE_LIMIT (1ul << 30)  // per conv algorithm: bounded, 1 GiB

struct ConvPlan {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t algo;
    float *d_kernel, *d_bias;
};

struct GpuBase {
    const Model *m;
    int max_batch;
    cudnnHandle_t cudnn;
    cudaStream_t stream;
    ConvPlan *plans;            // indexed like m->layers (only convs used)
    cudnnTensorDescriptor_t *pool_x, *pool_y;
    cudnnPoolingDescriptor_t pool;
    float *d_a, *d_b, *d_in;
    void *d_workspace;
    size_t workspace_size;
    int planned_n;              // batch size the descriptors are set for
};

#define CUDA_OK(call, what)                                                               \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) return err_set("GPU: %s: %s", what, cudaGetErrorString(e_)); \
    } while (0)
#define CUDNN_OK(call, what)                                                                   \
    do {                                                                                       \
        cudnnStatus_t s_ = (call);                                                             \
        if (s_ != CUDNN_STATUS_SUCCESS) return err_set("cuDNN: %s: %s", what, dnn.cudnnGetErrorString(s_)); \
    } while (0)

// y[i] = max(y[i] + bias[i % C], 0) on NHWC data.
__global__ void bias_relu_nhwc(float *y, const float *bias, long n, int C) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    long stride = (long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        float v = y[i] + bias[i % C];
        y[i] = v > 0.f ? v : 0.f;
    }
}

// Sets the descriptors of every layer for batch size N.
static int plan_batch(GpuBase *g, int N) {
    const Model *m = g->m;
    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_CONV) {
            ConvPlan *p = &g->plans[i];
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->in_c, l->in_h, l->in_w),
                     l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->out_c, l->out_h,
                                                l->out_w),
                     l->name);
        } else {
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(g->pool_x[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->in_c, l->in_h,
                                                l->in_w),
                     l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(g->pool_y[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->out_c,
                                                l->out_h, l->out_w),
                     l->name);
        }
    }
    g->planned_n = N;
    return 0;
}

static int create(GpuBase *g, const Model *m, int max_batch) {
    g->m = m;
    g->max_batch = max_batch;
    char why[600];
    if (cudnn_api_load(why, sizeof why) < 0) return err_set("GPU: %s", why);
    CUDA_OK(cudaSetDevice(0), "selecting device 0");
    CUDA_OK(cudaStreamCreate(&g->stream), "creating a stream");
    CUDNN_OK(dnn.cudnnCreate(&g->cudnn), "creating the handle");
    CUDNN_OK(dnn.cudnnSetStream(g->cudnn, g->stream), "setting the stream");
    g->plans = (ConvPlan *)calloc((size_t)m->n_layers, sizeof(ConvPlan));
    g->pool_x = (cudnnTensorDescriptor_t *)calloc((size_t)m->n_layers, sizeof(cudnnTensorDescriptor_t));
    g->pool_y = (cudnnTensorDescriptor_t *)calloc((size_t)m->n_layers, sizeof(cudnnTensorDescriptor_t));
    if (!g->plans || !g->pool_x || !g->pool_y) return err_set("out of memory");
    CUDNN_OK(dnn.cudnnCreatePoolingDescriptor(&g->pool), "pooling descriptor");
    CUDNN_OK(dnn.cudnnSetPooling2dDescriptor(g->pool, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2),
             "pooling descriptor");

    size_t act = (size_t)model_max_activation(m, 0, m->n_base) * (size_t)max_batch;
    CUDA_OK(cudaMalloc(&g->d_a, act * sizeof(float)), "allocating activations");
    CUDA_OK(cudaMalloc(&g->d_b, act * sizeof(float)), "allocating activations");
    CUDA_OK(cudaMalloc(&g->d_in, (size_t)m->cfg.input_h * m->cfg.input_w * 3 * max_batch * sizeof(float)),
            "allocating the input");

    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_POOL) {
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&g->pool_x[i]), l->name);
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&g->pool_y[i]), l->name);
            continue;
        }
        ConvPlan *p = &g->plans[i];
        CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&p->x), l->name);
        CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&p->y), l->name);
        CUDNN_OK(dnn.cudnnCreateFilterDescriptor(&p->w), l->name);
        CUDNN_OK(dnn.cudnnCreateConvolutionDescriptor(&p->conv), l->name);
        // Filters in NHWC format are K,R,S,C: Keras's R,S,C,K transposed.
        CUDNN_OK(dnn.cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, l->out_c, l->in_c, 3, 3),
                 l->name);
        CUDNN_OK(dnn.cudnnSetConvolution2dDescriptor(p->conv, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                 l->name);
        CUDNN_OK(dnn.cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH), l->name);
        size_t nk = (size_t)l->n_kernel;
        float *krsc = (float *)malloc(nk * sizeof(float));
        if (!krsc) return err_set("out of memory");
        const int C = l->in_c, K = l->out_c;
        for (int rs = 0; rs < 9; rs++)
            for (int c = 0; c < C; c++)
                for (int k = 0; k < K; k++) krsc[((size_t)k * 9 + rs) * C + c] = l->kernel[((size_t)rs * C + c) * K + k];
        cudaError_t e = cudaMalloc(&p->d_kernel, nk * sizeof(float));
        if (e == cudaSuccess) e = cudaMemcpy(p->d_kernel, krsc, nk * sizeof(float), cudaMemcpyHostToDevice);
        free(krsc);
        CUDA_OK(e, "uploading weights");
        CUDA_OK(cudaMalloc(&p->d_bias, (size_t)l->n_bias * sizeof(float)), "uploading biases");
        CUDA_OK(cudaMemcpy(p->d_bias, l->bias, (size_t)l->n_bias * sizeof(float), cudaMemcpyHostToDevice),
                "uploading biases");
    }
    if (plan_batch(g, max_batch) < 0) return -1;
    // Let cuDNN time its algorithms for each conv at the full batch size.
    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        ConvPlan *p = &g->plans[i];
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int found = 0;
        CUDNN_OK(dnn.cudnnFindConvolutionForwardAlgorithm(g->cudnn, p->x, p->w, p->conv, p->y,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf),
                 l->name);
        int pick = -1;
        for (int k = 0; k < found && pick < 0; k++)
            if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].memory <= WORKSPACE_LIMIT &&
                perf[k].mathType == CUDNN_FMA_MATH)
                pick = k;
        if (pick < 0) return err_set("cuDNN: no float32 algorithm for %s within %lu MB of workspace", l->name,
                                     WORKSPACE_LIMIT >> 20);
        p->algo = perf[pick].algo;
        if (perf[pick].memory > g->workspace_size) g->workspace_size = perf[pick].memory;
    }
    if (g->workspace_size) CUDA_OK(cudaMalloc(&g->d_workspace, g->workspace_size), "allocating the workspace");
    return 0;
}

extern "C" GpuBase *gpu_base_create(const Model *m, int max_batch) {
    GpuBase *g = (GpuBase *)calloc(1, sizeof(GpuBase));
    if (!g) return err_set("out of memory"), (GpuBase *)NULL;
    if (create(g, m, max_batch) < 0) {
        char keep[ERR_MSG_MAX];
        snprintf(keep, sizeof keep, "%s", err_msg());
        gpu_base_free(g);
        err_set("%s", keep);
        return NULL;
    }
    return g;
}

extern "C" int gpu_base_forward(GpuBase *g, const float *in, int N, float *out) {
    const Model *m = g->m;
    if (N < 1 || N > g->max_batch) return err_set("GPU: batch of %d images (at most %d)", N, g->max_batch);
    if (N != g->planned_n && plan_batch(g, N) < 0) return -1;
    size_t in_size = (size_t)m->cfg.input_h * m->cfg.input_w * 3 * N;
    CUDA_OK(cudaMemcpyAsync(g->d_in, in, in_size * sizeof(float), cudaMemcpyHostToDevice, g->stream), "uploading images");
    const float one = 1.f, zero = 0.f;
    const float *x = g->d_in;
    float *y = g->d_a;
    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_CONV) {
            ConvPlan *p = &g->plans[i];
            CUDNN_OK(dnn.cudnnConvolutionForward(g->cudnn, &one, p->x, x, p->w, p->d_kernel, p->conv, p->algo,
                                             g->d_workspace, g->workspace_size, &zero, p->y, y),
                     l->name);
            long n = (long)N * l->out_h * l->out_w * l->out_c;
            int blocks = (int)((n + 255) / 256 < 65535 ? (n + 255) / 256 : 65535);
            bias_relu_nhwc<<<blocks, 256, 0, g->stream>>>(y, p->d_bias, n, l->out_c);
            CUDA_OK(cudaGetLastError(), l->name);
        } else {
            CUDNN_OK(dnn.cudnnPoolingForward(g->cudnn, g->pool, &one, g->pool_x[i], x, &zero, g->pool_y[i], y), l->name);
        }
        x = y;
        y = (y == g->d_a) ? g->d_b : g->d_a;
    }
    size_t out_size = (size_t)model_feature_size(m) * N;
    CUDA_OK(cudaMemcpyAsync(out, x, out_size * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "downloading features");
    CUDA_OK(cudaStreamSynchronize(g->stream), "running the conv base");
    return 0;
}

extern "C" void gpu_base_free(GpuBase *g) {
    if (!g) return;
    if (g->plans) {
        for (int i = 0; i < g->m->n_layers; i++) {
            ConvPlan *p = &g->plans[i];
            if (p->x) dnn.cudnnDestroyTensorDescriptor(p->x);
            if (p->y) dnn.cudnnDestroyTensorDescriptor(p->y);
            if (p->w) dnn.cudnnDestroyFilterDescriptor(p->w);
            if (p->conv) dnn.cudnnDestroyConvolutionDescriptor(p->conv);
            cudaFree(p->d_kernel);
            cudaFree(p->d_bias);
            if (g->pool_x && g->pool_x[i]) dnn.cudnnDestroyTensorDescriptor(g->pool_x[i]);
            if (g->pool_y && g->pool_y[i]) dnn.cudnnDestroyTensorDescriptor(g->pool_y[i]);
        }
    }
    if (g->pool) dnn.cudnnDestroyPoolingDescriptor(g->pool);
    cudaFree(g->d_a);
    cudaFree(g->d_b);
    cudaFree(g->d_in);
    cudaFree(g->d_workspace);
    if (g->cudnn) dnn.cudnnDestroy(g->cudnn);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g->plans);
    free(g->pool_x);
    free(g->pool_y);
    free(g);
}
