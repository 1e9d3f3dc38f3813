// Frozen base layers forward on the GPU (see gpu_frozen.cuh).
#include <stdlib.h>
#include <string.h>

#include "gpu_bf16.cuh"
#include "gpu_frozen.cuh"

static size_t out_floats(const Layer *l) { return (size_t)l->out_h * l->out_w * l->out_c; }

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
    if (!*k16) CUDA_OK(cudaMalloc(k16, (size_t)l->n_kernel * sizeof(__nv_bfloat16)), "allocating bf16 weights");
    return 0;
}

// The bf16 copy of l's kernel (K,R,S,C), from the host weights.
static int bf16_upload(const Layer *l, __nv_bfloat16 *k16) {
    size_t nk = (size_t)l->n_kernel;
    float *krsc = (float *)malloc(nk * sizeof(float));
    __nv_bfloat16 *h = (__nv_bfloat16 *)malloc(nk * sizeof(__nv_bfloat16));
    if (!krsc || !h) {
        free(krsc), free(h);
        return err_set("out of memory");
    }
    gpu_kernel_rsck_to_krsc(l->kernel, krsc, l->in_c, l->out_c);
    gpu_float_to_bf16_host(krsc, h, nk);
    cudaError_t e = cudaMemcpy(k16, h, nk * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice);
    free(krsc), free(h);
    CUDA_OK(e, "uploading bf16 weights");
    return 0;
}

int gpu_frozen_create(GpuFrozen *f, const Model *m, int from, int to, int cap, GpuPrecision precision,
                      cudnnHandle_t h) {
    memset(f, 0, sizeof *f);
    f->m = m, f->from = from, f->to = to, f->cap = cap, f->precision = precision, f->deterministic = 1;
    if (from < 1 || to <= from || to > m->n_base) return err_set("GPU: frozen layers [%d, %d) out of range", from, to);
    // The bf16 plan takes the run's first layer for its float-input conv.
    if (m->layers[from].kind != LAYER_CONV) return err_set("GPU: frozen layers start at %s, not at a conv", m->layers[from].name);
    if (device_gpu_batch_check(m, from, to, cap) < 0) return -1;
    const size_t L = (size_t)m->n_layers;
    f->convs = (GpuConv *)calloc(L, sizeof(GpuConv));
    f->algos = (cudnnConvolutionFwdAlgo_t *)calloc(L, sizeof *f->algos);
    f->pool_x = (cudnnTensorDescriptor_t *)calloc(L, sizeof(cudnnTensorDescriptor_t));
    f->pool_y = (cudnnTensorDescriptor_t *)calloc(L, sizeof(cudnnTensorDescriptor_t));
    f->k16 = (__nv_bfloat16 **)calloc(L, sizeof *f->k16);
    if (!f->convs || !f->algos || !f->pool_x || !f->pool_y || !f->k16) return err_set("out of memory");
    CUDNN_OK(dnn.cudnnCreatePoolingDescriptor(&f->pool), "pooling descriptor");
    CUDNN_OK(dnn.cudnnSetPooling2dDescriptor(f->pool, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2),
             "pooling descriptor");
    // Ping-pong: every output of the run but the last fits (float), and in
    // bf16 the last one too (converted from there into `out`).
    size_t act = 0;
    for (int i = from; i < to; i++)
        if ((i < to - 1 || precision == GPU_BF16) && out_floats(&m->layers[i]) > act) act = out_floats(&m->layers[i]);
    if (act) {
        const size_t bytes = act * (size_t)cap * sizeof(float);
        CUDA_OK(cudaMalloc(&f->d_a, bytes), "allocating activations");
        CUDA_OK(cudaMalloc(&f->d_b, bytes), "allocating activations");
        f->bytes += 2 * bytes;
    }
    for (int i = from; i < to; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_POOL) {
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&f->pool_x[i]), l->name);
            CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&f->pool_y[i]), l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(f->pool_x[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, cap, l->in_c,
                                                    l->in_h, l->in_w),
                     l->name);
            CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(f->pool_y[i], CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, cap, l->out_c,
                                                    l->out_h, l->out_w),
                     l->name);
            continue;
        }
        if (!l->kernel || !l->bias) return err_set("GPU: %s has no weights loaded", l->name);
        // bf16: every conv after the run's first; that one in TF32 (3 input
        // channels at layer 1 suit no bf16 tensor-core kernel).
        const int bf = precision == GPU_BF16 && i > from;
        cudnnMathType_t math = bf ? CUDNN_TENSOR_OP_MATH : gpu_math(precision);
        if (gpu_conv_create(&f->convs[i], l, cap, math) < 0) return -1;
        f->bytes += (size_t)(l->n_kernel + l->n_bias) * sizeof(float);
        if (bf) {
            if (bf16_conv(&f->convs[i], l, cap, &f->k16[i]) < 0 || bf16_upload(l, f->k16[i]) < 0) return -1;
            f->bytes += (size_t)l->n_kernel * sizeof(__nv_bfloat16);
        }
        size_t ws = 0;
        int det = 1;
        if (gpu_conv_pick_forward(h, &f->convs[i], l, &f->algos[i], &ws, &det) < 0) return -1;
        gpu_pick_done(l, "forward", (int)f->algos[i], ws, det, &f->work_size, &f->deterministic);
    }
    if (f->work_size) CUDA_OK(cudaMalloc(&f->work, f->work_size), "allocating the workspace");
    f->bytes += f->work_size;
    return 0;
}

int gpu_frozen_forward(GpuFrozen *f, cudnnHandle_t h, const float *in, float *out, cudaStream_t s) {
    const Model *m = f->m;
    const float one = 1.f, zero = 0.f;
    const long B = f->cap;
    // x: the current activations, float or (x_bf) bf16; each layer writes
    // into the ping-pong buffer x is not in, or, when it is the last layer
    // and writes float, into out.
    const void *x = in;
    int x_bf = 0;
#define OTHER(p) ((p) == f->d_a ? f->d_b : f->d_a)
    for (int i = f->from; i < f->to; i++) {
        const Layer *l = &m->layers[i];
        const int last = i == f->to - 1;
        const long n = B * (long)out_floats(l);
        void *y;
        if (l->kind == LAYER_CONV) {
            GpuConv *c = &f->convs[i];
            const void *w = x_bf ? (const void *)f->k16[i] : (const void *)c->d_kernel;
            // A float conv that goes on in bf16 writes its float output to
            // the other buffer and its bf16 activations back to this side.
            const int to_bf = !x_bf && f->precision == GPU_BF16 && !last;
            y = !x_bf && last ? (void *)out : OTHER(x);
            CUDNN_OK(dnn.cudnnConvolutionForward(h, &one, c->x, x, c->w, w, c->conv, f->algos[i], f->work,
                                                 f->work_size, &zero, c->y, y),
                     l->name);
            if (x_bf) {
                gpu_bias_relu_bf16((__nv_bfloat16 *)y, c->d_bias, n, l->out_c, s);
            } else if (to_bf) {
                gpu_bias_relu_to_bf16((const float *)y, (__nv_bfloat16 *)OTHER(y), c->d_bias, n, l->out_c, s);
                y = OTHER(y);
                x_bf = 1;
            } else {
                gpu_bias_relu((float *)y, c->d_bias, n, l->out_c, s);
            }
            CUDA_OK(cudaGetLastError(), l->name);
        } else if (x_bf) {
            y = OTHER(x);
            gpu_maxpool2x2_bf16((const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, (int)B, l->in_h, l->in_w, l->in_c, s);
            CUDA_OK(cudaGetLastError(), l->name);
        } else {
            y = last ? (void *)out : OTHER(x);
            CUDNN_OK(dnn.cudnnPoolingForward(h, f->pool, &one, f->pool_x[i], x, &zero, f->pool_y[i], y), l->name);
        }
        x = y;
    }
#undef OTHER
    if (x_bf) {
        gpu_bf16_to_float((const __nv_bfloat16 *)x, out, B * (long)out_floats(&m->layers[f->to - 1]), s);
        CUDA_OK(cudaGetLastError(), "converting the activations to float");
    }
    return 0;
}

int gpu_frozen_upload(GpuFrozen *f, const Model *m) {
    for (int i = f->from; i < f->to; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        if (gpu_conv_upload(&f->convs[i], l) < 0) return err_prefix("%s: ", l->name);
        if (f->k16[i] && bf16_upload(l, f->k16[i]) < 0) return err_prefix("%s: ", l->name);
    }
    return 0;
}

void gpu_frozen_free(GpuFrozen *f) {
    for (int i = 0; f->m && f->convs && i < f->m->n_layers; i++) {
        gpu_conv_free(&f->convs[i]);
        if (f->k16) cudaFree(f->k16[i]);
        if (f->pool_x && f->pool_x[i]) dnn.cudnnDestroyTensorDescriptor(f->pool_x[i]);
        if (f->pool_y && f->pool_y[i]) dnn.cudnnDestroyTensorDescriptor(f->pool_y[i]);
    }
    if (f->pool) dnn.cudnnDestroyPoolingDescriptor(f->pool);
    cudaFree(f->d_a);
    cudaFree(f->d_b);
    cudaFree(f->work);
    free(f->convs);
    free(f->algos);
    free(f->k16);
    free(f->pool_x);
    free(f->pool_y);
    memset(f, 0, sizeof *f);
}
