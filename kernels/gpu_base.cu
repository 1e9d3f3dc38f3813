// Conv base inference with cuDNN: conv (cuDNN) -> bias + ReLU (our kernel,
// CPU reference: conv3x3_forward's bias + relu_forward) -> 2x2 max pool
// (cuDNN). Activations stay NHWC on the device, as on the CPU.
//
// Every batch runs at the planned size (max_batch): a smaller one is padded
// with zero images. With the algorithms fixed by shape (gpu_conv_pick_forward)
// an image's features are then the same bits whatever batch it is in and
// however often the run was stopped and resumed, as on the CPU.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_bf16.cuh"
#include "gpu_util.cuh"

extern "C" {
#include "gpu_base.h"
}

struct GpuBase {
    const Model *m;
    int max_batch;
    GpuPrecision precision;
    cudnnHandle_t cudnn;
    cudaStream_t stream;
    GpuConv *convs;                      // indexed like m->layers (only convs used)
    cudnnConvolutionFwdAlgo_t *algos;
    __nv_bfloat16 **k16;                 // --precision bf16: each conv's kernel (K,R,S,C) in bf16 (not the first)
    cudnnTensorDescriptor_t *pool_x, *pool_y;
    cudnnPoolingDescriptor_t pool;
    float *d_a, *d_b, *d_in;
    // Two pinned staging slots, so the host fills one batch (and stores the
    // last one's features) while the GPU runs the other: submit/collect.
    float *h_in[2], *h_out[2];           // max_batch images / feature vectors each
    cudaEvent_t done[2];                 // recorded after a slot's download
    int slot_n[2];                       // images in each slot's batch
    int next, pending;                   // slot the next submit uses; batches submitted, not collected
    void *d_workspace;
    size_t workspace_size;
};

// Turns c (made for float32) into a bfloat16 conv for batch N: bf16 tensors
// and filter, float compute; the kernel converted into *k16 (device).
static int bf16_conv(GpuConv *c, const Layer *l, int N, __nv_bfloat16 **k16) {
    CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(c->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, N, l->in_c, l->in_h, l->in_w),
             l->name);
    CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(c->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, N, l->out_c, l->out_h,
                                            l->out_w),
             l->name);
    CUDNN_OK(dnn.cudnnSetFilter4dDescriptor(c->w, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, l->out_c, l->in_c, 3, 3),
             l->name);
    size_t nk = (size_t)l->n_kernel;
    float *krsc = (float *)malloc(nk * sizeof(float));
    __nv_bfloat16 *h = (__nv_bfloat16 *)malloc(nk * sizeof(__nv_bfloat16));
    if (!krsc || !h) {
        free(krsc), free(h);
        return err_set("out of memory");
    }
    gpu_kernel_rsck_to_krsc(l->kernel, krsc, l->in_c, l->out_c);
    gpu_float_to_bf16_host(krsc, h, nk);
    cudaError_t e = cudaMalloc(k16, nk * sizeof(__nv_bfloat16));
    if (e == cudaSuccess) e = cudaMemcpy(*k16, h, nk * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice);
    free(krsc), free(h);
    CUDA_OK(e, "uploading bf16 weights");
    return 0;
}

static int create(GpuBase *g, const Model *m, int max_batch, GpuPrecision precision) {
    g->m = m;
    g->max_batch = max_batch;
    g->precision = precision;
    char why[600];
    if (cudnn_api_load(why, sizeof why) < 0) return err_set("GPU: %s", why);
    CUDA_OK(cudaSetDevice(0), "selecting device 0");
    CUDA_OK(cudaStreamCreate(&g->stream), "creating a stream");
    CUDNN_OK(dnn.cudnnCreate(&g->cudnn), "creating the handle");
    CUDNN_OK(dnn.cudnnSetStream(g->cudnn, g->stream), "setting the stream");
    g->convs = (GpuConv *)calloc((size_t)m->n_layers, sizeof(GpuConv));
    g->algos = (cudnnConvolutionFwdAlgo_t *)calloc((size_t)m->n_layers, sizeof *g->algos);
    g->pool_x = (cudnnTensorDescriptor_t *)calloc((size_t)m->n_layers, sizeof(cudnnTensorDescriptor_t));
    g->pool_y = (cudnnTensorDescriptor_t *)calloc((size_t)m->n_layers, sizeof(cudnnTensorDescriptor_t));
    g->k16 = (__nv_bfloat16 **)calloc((size_t)m->n_layers, sizeof *g->k16);
    if (!g->convs || !g->algos || !g->pool_x || !g->pool_y || !g->k16) return err_set("out of memory");
    CUDNN_OK(dnn.cudnnCreatePoolingDescriptor(&g->pool), "pooling descriptor");
    CUDNN_OK(dnn.cudnnSetPooling2dDescriptor(g->pool, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2),
             "pooling descriptor");

    const size_t in_n = (size_t)m->cfg.input_h * m->cfg.input_w * 3 * max_batch;
    const size_t out_n = (size_t)model_feature_size(m) * max_batch;
    size_t act = (size_t)model_max_activation(m, 0, m->n_base) * (size_t)max_batch;
    CUDA_OK(cudaMalloc(&g->d_a, act * sizeof(float)), "allocating activations");
    CUDA_OK(cudaMalloc(&g->d_b, act * sizeof(float)), "allocating activations");
    CUDA_OK(cudaMalloc(&g->d_in, in_n * sizeof(float)), "allocating the input");
    // Pinned host buffers: copies at full bus speed, asynchronous to the host.
    for (int s = 0; s < 2; s++) {
        CUDA_OK(cudaMallocHost(&g->h_in[s], in_n * sizeof(float)), "allocating pinned host memory");
        CUDA_OK(cudaMallocHost(&g->h_out[s], out_n * sizeof(float)), "allocating pinned host memory");
        CUDA_OK(cudaEventCreateWithFlags(&g->done[s], cudaEventDisableTiming), "creating an event");
    }

    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_POOL) {
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&g->pool_x[i]), l->name);
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&g->pool_y[i]), l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(g->pool_x[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, max_batch,
                                                    l->in_c, l->in_h, l->in_w),
                     l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(g->pool_y[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, max_batch,
                                                    l->out_c, l->out_h, l->out_w),
                     l->name);
            continue;
        }
        const int bf = precision == GPU_BF16 && i > 1;
        cudnnMathType_t math = bf ? CUDNN_TENSOR_OP_MATH : precision == GPU_BF16 ? CUDNN_DEFAULT_MATH : gpu_math(precision);
        if (gpu_conv_create(&g->convs[i], l, max_batch, math) < 0) return -1;
        if (bf && bf16_conv(&g->convs[i], l, max_batch, &g->k16[i]) < 0) return -1;
        size_t ws = 0;
        if (gpu_conv_pick_forward(g->cudnn, &g->convs[i], l, &g->algos[i], &ws) < 0) return -1;
        if (ws > g->workspace_size) g->workspace_size = ws;
    }
    if (g->workspace_size) CUDA_OK(cudaMalloc(&g->d_workspace, g->workspace_size), "allocating the workspace");
    return 0;
}

extern "C" GpuBase *gpu_base_create(const Model *m, int max_batch, GpuPrecision precision) {
    GpuBase *g = (GpuBase *)calloc(1, sizeof(GpuBase));
    if (!g) return err_set("out of memory"), (GpuBase *)NULL;
    if (max_batch < 1) {
        free(g);
        return err_set("GPU: batch capacity must be at least 1, got %d", max_batch), (GpuBase *)NULL;
    }
    if (create(g, m, max_batch, precision) < 0) {
        char keep[ERR_MSG_MAX];
        snprintf(keep, sizeof keep, "%s", err_msg());
        gpu_base_free(g);
        err_set("%s", keep);
        return NULL;
    }
    return g;
}

extern "C" int gpu_base_submit(GpuBase *g, const float *in, int N) {
    const Model *m = g->m;
    if (N < 1 || N > g->max_batch) return err_set("GPU: batch of %d images (at most %d)", N, g->max_batch);
    if (g->pending == 2) return err_set("GPU: two batches in flight: collect one first");
    const int s = g->next;
    const size_t image = (size_t)m->cfg.input_h * m->cfg.input_w * 3;
    const size_t B = (size_t)g->max_batch;
    if (in != g->h_in[s]) memcpy(g->h_in[s], in, image * N * sizeof(float));  // else filled in place
    // The padding images are zeros (their features are dropped).
    if ((size_t)N < B) memset(g->h_in[s] + image * N, 0, image * (B - N) * sizeof(float));
    CUDA_OK(cudaMemcpyAsync(g->d_in, g->h_in[s], image * B * sizeof(float), cudaMemcpyHostToDevice, g->stream),
            "uploading images");
    // Activations ping-pong between d_a and d_b: float32, or bf16 after the
    // first conv with --precision bf16 (then the features go back to float).
    const float one = 1.f, zero = 0.f;
    const int bf = g->precision == GPU_BF16;
    const void *x = g->d_in;
    float *y = g->d_a;
#define OTHER(p) ((p) == g->d_a ? g->d_b : g->d_a)
    for (int i = 1; i < m->n_base; i++) {
        const Layer *l = &m->layers[i];
        const long n = (long)B * l->out_h * l->out_w * l->out_c;
        if (l->kind == LAYER_CONV) {
            GpuConv *c = &g->convs[i];
            const void *w = bf && i > 1 ? (const void *)g->k16[i] : (const void *)c->d_kernel;
            CUDNN_OK(dnn.cudnnConvolutionForward(g->cudnn, &one, c->x, x, c->w, w, c->conv, g->algos[i],
                                                 g->d_workspace, g->workspace_size, &zero, c->y, y),
                     l->name);
            if (!bf) {
                gpu_bias_relu(y, c->d_bias, n, l->out_c, g->stream);
            } else if (i == 1) {
                gpu_bias_relu_to_bf16(y, (__nv_bfloat16 *)OTHER(y), c->d_bias, n, l->out_c, g->stream);
                y = OTHER(y);
            } else {
                gpu_bias_relu_bf16((__nv_bfloat16 *)y, c->d_bias, n, l->out_c, g->stream);
            }
            CUDA_OK(cudaGetLastError(), l->name);
        } else if (!bf) {
            CUDNN_OK(dnn.cudnnPoolingForward(g->cudnn, g->pool, &one, g->pool_x[i], x, &zero, g->pool_y[i], y),
                     l->name);
        } else {
            gpu_maxpool2x2_bf16((const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, (int)B, l->in_h, l->in_w, l->in_c,
                                g->stream);
            CUDA_OK(cudaGetLastError(), l->name);
        }
        x = y;
        y = OTHER(y);
    }
    if (bf) {
        gpu_bf16_to_float((const __nv_bfloat16 *)x, y, (long)model_feature_size(m) * (long)B, g->stream);
        CUDA_OK(cudaGetLastError(), "converting the features");
        x = y;
    }
#undef OTHER
    size_t out_size = (size_t)model_feature_size(m) * N;
    CUDA_OK(cudaMemcpyAsync(g->h_out[s], x, out_size * sizeof(float), cudaMemcpyDeviceToHost, g->stream),
            "downloading features");
    CUDA_OK(cudaEventRecord(g->done[s], g->stream), "recording an event");
    g->slot_n[s] = N;
    g->next = s ^ 1;
    g->pending++;
    return 0;
}

extern "C" float *gpu_base_staging(GpuBase *g, int k) { return g->h_in[k & 1]; }

extern "C" int gpu_base_collect(GpuBase *g, float *out) {
    if (g->pending == 0) return err_set("GPU: no batch in flight");
    const int s = g->pending == 2 ? g->next : g->next ^ 1;  // the older one
    CUDA_OK(cudaEventSynchronize(g->done[s]), "running the conv base");
    const int N = g->slot_n[s];
    memcpy(out, g->h_out[s], (size_t)model_feature_size(g->m) * N * sizeof(float));
    g->pending--;
    return N;
}

extern "C" int gpu_base_forward(GpuBase *g, const float *in, int N, float *out) {
    if (g->pending) return err_set("GPU: batches in flight: collect them first");
    if (gpu_base_submit(g, in, N) < 0) return -1;
    return gpu_base_collect(g, out) < 0 ? -1 : 0;
}

extern "C" void gpu_base_free(GpuBase *g) {
    if (!g) return;
    for (int i = 0; g->convs && i < g->m->n_layers; i++) {
        gpu_conv_free(&g->convs[i]);
        if (g->k16) cudaFree(g->k16[i]);
        if (g->pool_x && g->pool_x[i]) dnn.cudnnDestroyTensorDescriptor(g->pool_x[i]);
        if (g->pool_y && g->pool_y[i]) dnn.cudnnDestroyTensorDescriptor(g->pool_y[i]);
    }
    if (g->pool) dnn.cudnnDestroyPoolingDescriptor(g->pool);
    cudaFree(g->d_a);
    cudaFree(g->d_b);
    cudaFree(g->d_in);
    for (int s = 0; s < 2; s++) {
        cudaFreeHost(g->h_in[s]);
        cudaFreeHost(g->h_out[s]);
        if (g->done[s]) cudaEventDestroy(g->done[s]);
    }
    cudaFree(g->d_workspace);
    if (g->cudnn) dnn.cudnnDestroy(g->cudnn);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g->convs);
    free(g->algos);
    free(g->k16);
    free(g->pool_x);
    free(g->pool_y);
    free(g);
}
