// Shared CUDA plumbing of kernels/ (see gpu_util.cuh).
#include <stdlib.h>
#include <string.h>

#include "gpu_util.cuh"

extern "C" {
#include "cli.h"  // env_flag
}

int gpu_autotune(void) {
    static int on = -1;
    if (on < 0) on = env_flag("VGGFT_GPU_AUTOTUNE", 0);
    return on;
}

// Picks made so far from a timed list and, with VGGFT_GPU_AUTOTUNE on, from
// the heuristics because Find gave nothing usable (candidates).
static int picks_timed, picks_untimed;

void gpu_autotune_counts(int *timed, int *untimed) { *timed = picks_timed, *untimed = picks_untimed; }

void gpu_kernel_rsck_to_krsc(const float *rsck, float *krsc, int C, int K) {
    for (int rs = 0; rs < 9; rs++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++) krsc[((size_t)k * 9 + rs) * C + c] = rsck[((size_t)rs * C + c) * K + k];
}

void gpu_kernel_krsc_to_rsck(const float *krsc, float *rsck, int C, int K) {
    for (int rs = 0; rs < 9; rs++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++) rsck[((size_t)rs * C + c) * K + k] = krsc[((size_t)k * 9 + rs) * C + c];
}

int gpu_conv_set_batch(GpuConv *c, const Layer *l, int N) {
    CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(c->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->in_c, l->in_h, l->in_w),
             l->name);
    CUDNN_OK(dnn.cudnnSetTensor4dDescriptor(c->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, l->out_c, l->out_h, l->out_w),
             l->name);
    return 0;
}

int gpu_conv_upload(GpuConv *c, const Layer *l) {
    size_t nk = (size_t)l->n_kernel;
    float *krsc = (float *)malloc(nk * sizeof(float));
    if (!krsc) return err_set("out of memory");
    gpu_kernel_rsck_to_krsc(l->kernel, krsc, l->in_c, l->out_c);
    cudaError_t e = cudaMemcpy(c->d_kernel, krsc, nk * sizeof(float), cudaMemcpyHostToDevice);
    free(krsc);
    CUDA_OK(e, "uploading weights");
    CUDA_OK(cudaMemcpy(c->d_bias, l->bias, (size_t)l->n_bias * sizeof(float), cudaMemcpyHostToDevice),
            "uploading biases");
    return 0;
}

int gpu_conv_download(const GpuConv *c, Layer *l) {
    size_t nk = (size_t)l->n_kernel;
    float *krsc = (float *)malloc(nk * sizeof(float));
    if (!krsc) return err_set("out of memory");
    cudaError_t e = cudaMemcpy(krsc, c->d_kernel, nk * sizeof(float), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) gpu_kernel_krsc_to_rsck(krsc, l->kernel, l->in_c, l->out_c);
    free(krsc);
    CUDA_OK(e, "downloading weights");
    CUDA_OK(cudaMemcpy(l->bias, c->d_bias, (size_t)l->n_bias * sizeof(float), cudaMemcpyDeviceToHost),
            "downloading biases");
    return 0;
}

int gpu_select_device(void) {
    CUDA_OK(cudaSetDevice(0), "selecting device 0");
    // Once the device is initialised, the flags replace the earlier ones
    // (CUDA runtime API, cudaSetDeviceFlags).
    CUDA_OK(cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync), "setting the device's flags");
    return 0;
}

int gpu_conv_create(GpuConv *c, const Layer *l, int N, cudnnMathType_t math) {
    memset(c, 0, sizeof *c);
    c->math = math;
    CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&c->x), l->name);
    CUDNN_OK(dnn.cudnnCreateTensorDescriptor(&c->y), l->name);
    CUDNN_OK(dnn.cudnnCreateFilterDescriptor(&c->w), l->name);
    CUDNN_OK(dnn.cudnnCreateConvolutionDescriptor(&c->conv), l->name);
    CUDNN_OK(dnn.cudnnSetFilter4dDescriptor(c->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, l->out_c, l->in_c, 3, 3), l->name);
    CUDNN_OK(dnn.cudnnSetConvolution2dDescriptor(c->conv, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             l->name);
    CUDNN_OK(dnn.cudnnSetConvolutionMathType(c->conv, math), l->name);
    if (gpu_conv_set_batch(c, l, N) < 0) return -1;
    CUDA_OK(cudaMalloc(&c->d_kernel, (size_t)l->n_kernel * sizeof(float)), "allocating weights");
    CUDA_OK(cudaMalloc(&c->d_bias, (size_t)l->n_bias * sizeof(float)), "allocating biases");
    return gpu_conv_upload(c, l);
}

void gpu_conv_free(GpuConv *c) {
    if (c->x) dnn.cudnnDestroyTensorDescriptor(c->x);
    if (c->y) dnn.cudnnDestroyTensorDescriptor(c->y);
    if (c->w) dnn.cudnnDestroyFilterDescriptor(c->w);
    if (c->conv) dnn.cudnnDestroyConvolutionDescriptor(c->conv);
    cudaFree(c->d_kernel);
    cudaFree(c->d_bias);
    memset(c, 0, sizeof *c);
}

// The arithmetic c's math type stands for here (gpu_math; the bf16 base's
// convs are the ones in CUDNN_TENSOR_OP_MATH), for messages.
static const char *math_name(const GpuConv *c) {
    return c->math == CUDNN_FMA_MATH ? "float32" : c->math == CUDNN_TENSOR_OP_MATH ? "bfloat16" : "TF32";
}

// VGGFT_GPU_AUTOTUNE: a cudnnFind...Algorithm call's status st and list
// perf[0, found) kept to the runs that succeeded in c->math, fastest first.
// Find times each algorithm in the descriptor's math and in
// CUDNN_DEFAULT_MATH (TF32 on Ampere and later), which a float32 or bfloat16
// descriptor never runs, so a ranking from those would be for other
// kernels; entries that failed (CUDNN_STATUS_ALLOC_FAILED: Find allocates
// its own buffers beside ours) are not "failing at this shape" either. 0
// when nothing is left or the call failed: the caller asks the heuristics.
template <typename Perf>
static int timed_in_math(cudnnStatus_t st, Perf *perf, int found, const GpuConv *c) {
    // An allocation that failed inside Find (the call, or an entry's
    // CUDNN_STATUS_ALLOC_FAILED) is not an error of the next kernel's.
    (void)cudaGetLastError();
    if (st != CUDNN_STATUS_SUCCESS) return 0;
    int n = 0;
    for (int k = 0; k < found; k++)
        if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].mathType == c->math) perf[n++] = perf[k];
    return n;
}

// The candidates of one pick into perf (room for 2 * count: Find lists each
// algorithm in two math types) and *found: find(room, &found, perf) (a
// cudnnFind...Algorithm call) kept by timed_in_math when gpu_autotune(),
// else, or when that leaves nothing, heuristics(count, &found, perf) (the
// ..._v7 call). -1 (err_set naming layer l) when the heuristics fail.
template <typename Perf, typename Find, typename Heuristics>
static int candidates(const GpuConv *c, const Layer *l, int count, Find find, Heuristics heuristics, Perf *perf,
                      int *found) {
    *found = 0;
    if (gpu_autotune()) {
        cudnnStatus_t st = find(2 * count, found, perf);
        *found = timed_in_math(st, perf, *found, c);
        (*found ? picks_timed : picks_untimed)++;
    }
    if (!*found) CUDNN_OK(heuristics(count, found, perf), l->name);
    return 0;
}

int gpu_conv_pick_forward(cudnnHandle_t h, const GpuConv *c, const Layer *l, cudnnConvolutionFwdAlgo_t *algo,
                          size_t *ws, int *deterministic) {
    cudnnConvolutionFwdAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found;
    if (candidates(
            c, l, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
            [&](int n, int *f, cudnnConvolutionFwdAlgoPerf_t *p) {
                return dnn.cudnnFindConvolutionForwardAlgorithm(h, c->x, c->w, c->conv, c->y, n, f, p);
            },
            [&](int n, int *f, cudnnConvolutionFwdAlgoPerf_t *p) {
                return dnn.cudnnGetConvolutionForwardAlgorithm_v7(h, c->x, c->w, c->conv, c->y, n, f, p);
            },
            perf, &found) < 0)
        return -1;
    // Pass 0: deterministic candidates only (cuDNN labels each forward
    // candidate too: cudnnConvolutionFwdAlgoPerf_t.determinism; a split-K
    // kernel that sums with atomics would make an image's features differ
    // from run to run); pass 1: any, so that a shape without one still runs.
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < found; k++) {
            if (perf[k].status != CUDNN_STATUS_SUCCESS) continue;
            if (pass == 0 && perf[k].determinism != CUDNN_DETERMINISTIC) continue;
            // Strict float32: skip what is labelled tensor-core math (the descriptor's
            // math decides what runs; candidates may be labelled CUDNN_DEFAULT_MATH).
            if (c->math == CUDNN_FMA_MATH &&
                (perf[k].mathType == CUDNN_TENSOR_OP_MATH || perf[k].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
                continue;
            // The heuristics' memory figure can be 0 for "unknown": ask.
            size_t need = 0;
            if (dnn.cudnnGetConvolutionForwardWorkspaceSize(h, c->x, c->w, c->conv, c->y, perf[k].algo, &need) !=
                CUDNN_STATUS_SUCCESS)
                continue;
            if (need > GPU_WORKSPACE_LIMIT) continue;
            *algo = perf[k].algo;
            *ws = need;
            *deterministic = pass == 0;
            return 0;
        }
    return err_set("cuDNN: no %s algorithm for %s within %lu MB of workspace",
                   math_name(c), l->name, GPU_WORKSPACE_LIMIT >> 20);
}

void gpu_pick_done(const Layer *l, const char *pass, int algo, size_t ws, int det, size_t *work_size,
                   int *deterministic) {
    if (ws > *work_size) *work_size = ws;
    if (det) return;
    fprintf(stderr, "warning: %s: cuDNN offers no deterministic %s algorithm; using algorithm %d (reruns may differ "
                    "in the last bits)\n", l->name, pass, algo);
    *deterministic = 0;
}

// The two backward picks share this rule over the heuristics' list perf:
// the first deterministic candidate that succeeds and fits; else `fallback`
// (algorithm 1 of either, deterministic by cuDNN's documentation) when its
// workspace query succeeds and fits and the heuristics do not list it only
// as failing (*deterministic = 0 when they label it non-deterministic);
// else the first candidate that fits, *deterministic = 0. need_of(algo, &bytes) asks cuDNN for the workspace.
// A candidate labelled with a tensor-core math type is skipped in float32;
// one labelled CUDNN_DEFAULT_MATH is not: the math that runs is the conv
// descriptor's (c->math, never changed here), and an algorithm without such
// a kernel fails the workspace query. 0, or -1 when nothing fits (no err_set).
template <typename Perf, typename Algo, typename NeedOf>
static int pick_backward(const Perf *perf, int found, const GpuConv *c, Algo fallback, NeedOf need_of, Algo *algo,
                         size_t *ws, int *deterministic) {
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 1) {
            // Skipped when the heuristics list it for this shape and math
            // only as failing; taken as deterministic unless they label it
            // otherwise (their label is the authority: "deterministic by the
            // documentation" is the legacy algorithm's, not necessarily every
            // engine cuDNN 9 runs under its number).
            int ok = 0, bad = 0, nondet = 0, det = 0;
            for (int k = 0; k < found; k++) {
                if (perf[k].algo != fallback) continue;
                if (perf[k].status != CUDNN_STATUS_SUCCESS) {
                    bad = 1;
                    continue;
                }
                ok = 1;
                if (perf[k].determinism == CUDNN_DETERMINISTIC) det = 1;
                else nondet = 1;
            }
            size_t need = 0;
            if ((ok || !bad) && need_of(fallback, &need) == CUDNN_STATUS_SUCCESS && need <= GPU_WORKSPACE_LIMIT) {
                *algo = fallback, *ws = need, *deterministic = det || !nondet;
                return 0;
            }
            continue;
        }
        for (int k = 0; k < found; k++) {
            if (perf[k].status != CUDNN_STATUS_SUCCESS) continue;
            if (c->math == CUDNN_FMA_MATH &&
                (perf[k].mathType == CUDNN_TENSOR_OP_MATH || perf[k].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
                continue;
            int det = perf[k].determinism == CUDNN_DETERMINISTIC;
            if (pass == 0 && !det) continue;
            size_t need = 0;
            if (need_of(perf[k].algo, &need) != CUDNN_STATUS_SUCCESS || need > GPU_WORKSPACE_LIMIT) continue;
            *algo = perf[k].algo, *ws = need, *deterministic = det;
            return 0;
        }
    }
    return -1;
}

int gpu_conv_pick_backward_data(cudnnHandle_t h, const GpuConv *c, const Layer *l,
                                cudnnConvolutionBwdDataAlgo_t *algo, size_t *ws, int *deterministic) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int found;
    if (candidates(
            c, l, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
            [&](int n, int *f, cudnnConvolutionBwdDataAlgoPerf_t *p) {
                return dnn.cudnnFindConvolutionBackwardDataAlgorithm(h, c->w, c->y, c->conv, c->x, n, f, p);
            },
            [&](int n, int *f, cudnnConvolutionBwdDataAlgoPerf_t *p) {
                return dnn.cudnnGetConvolutionBackwardDataAlgorithm_v7(h, c->w, c->y, c->conv, c->x, n, f, p);
            },
            perf, &found) < 0)
        return -1;
    auto need_of = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *need) {
        return dnn.cudnnGetConvolutionBackwardDataWorkspaceSize(h, c->w, c->y, c->conv, c->x, a, need);
    };
    if (pick_backward(perf, found, c, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, need_of, algo, ws, deterministic) == 0)
        return 0;
    return err_set("cuDNN: no %s backward-data algorithm for %s within %lu MB of workspace",
                   math_name(c), l->name, GPU_WORKSPACE_LIMIT >> 20);
}

int gpu_conv_pick_backward_filter(cudnnHandle_t h, const GpuConv *c, const Layer *l,
                                  cudnnConvolutionBwdFilterAlgo_t *algo, size_t *ws, int *deterministic) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int found;
    if (candidates(
            c, l, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
            [&](int n, int *f, cudnnConvolutionBwdFilterAlgoPerf_t *p) {
                return dnn.cudnnFindConvolutionBackwardFilterAlgorithm(h, c->x, c->y, c->conv, c->w, n, f, p);
            },
            [&](int n, int *f, cudnnConvolutionBwdFilterAlgoPerf_t *p) {
                return dnn.cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, c->x, c->y, c->conv, c->w, n, f, p);
            },
            perf, &found) < 0)
        return -1;
    auto need_of = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *need) {
        return dnn.cudnnGetConvolutionBackwardFilterWorkspaceSize(h, c->x, c->y, c->conv, c->w, a, need);
    };
    if (pick_backward(perf, found, c, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, need_of, algo, ws, deterministic) == 0)
        return 0;
    return err_set("cuDNN: no %s backward-filter algorithm for %s within %lu MB of workspace",
                   math_name(c), l->name, GPU_WORKSPACE_LIMIT >> 20);
}

__global__ static void bias_relu_nhwc(float *y, const float *bias, long n, int C) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    long stride = (long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        float v = y[i] + bias[i % C];
        y[i] = v > 0.f ? v : 0.f;
    }
}

void gpu_bias_relu(float *y, const float *bias, long n, int C, cudaStream_t s) {
    bias_relu_nhwc<<<gpu_blocks(n), 256, 0, s>>>(y, bias, n, C);
}

// optim_apply (common/optim.c) element by element, every operation rounded
// as there: the CPU build keeps multiplies and adds apart
// (-ffp-contract=off), so here each one is an explicit _rn intrinsic (nvcc
// would otherwise fuse them into FMAs); sqrt and division are exact on both.
// s0, s1: the tensor's two slots (as many as the rule uses are read). The
// rule is read from device memory, not passed by value: a step captured
// once as a CUDA graph (gpu_walk.cu) replays its launches with their
// arguments frozen, and Adam's alpha changes every step.
__global__ static void optim_kernel(const OptimRule *rule, float *w, const float *g, float *s0, float *s1, long n) {
    const OptimRule r = *rule;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float gi = g[i];
        switch (r.kind) {
        case OPTIM_SGD:
            if (r.momentum == 0.0f) {
                w[i] = __fsub_rn(w[i], __fmul_rn(gi, r.lr));
            } else {
                // m = m*mu - g*lr; w += nesterov ? m*mu - g*lr : m
                float m = __fsub_rn(__fmul_rn(s0[i], r.momentum), __fmul_rn(gi, r.lr));
                s0[i] = m;
                float step = r.nesterov ? __fsub_rn(__fmul_rn(m, r.momentum), __fmul_rn(gi, r.lr)) : m;
                w[i] = __fadd_rn(w[i], step);
            }
            break;
        case OPTIM_ADAM: {
            // m += (g - m)*c1; v += (g*g - v)*c2; w -= (m*alpha) / (sqrt(v) + eps)
            float m = __fadd_rn(s0[i], __fmul_rn(__fsub_rn(gi, s0[i]), r.c1));
            float v = __fadd_rn(s1[i], __fmul_rn(__fsub_rn(__fmul_rn(gi, gi), s1[i]), r.c2));
            s0[i] = m, s1[i] = v;
            w[i] = __fsub_rn(w[i], __fdiv_rn(__fmul_rn(m, r.alpha), __fadd_rn(__fsqrt_rn(v), r.epsilon)));
            break;
        }
        case OPTIM_RMSPROP: {
            // v = rho*v + c*(g*g); inc = (lr*g) / sqrt(v + eps); with momentum
            // mom = mu*mom + inc, inc = mom; w -= inc
            float v = __fadd_rn(__fmul_rn(r.rho, s0[i]), __fmul_rn(r.c1, __fmul_rn(gi, gi)));
            s0[i] = v;
            float inc = __fdiv_rn(__fmul_rn(r.lr, gi), __fsqrt_rn(__fadd_rn(v, r.epsilon)));
            if (r.momentum > 0.0f) {
                float mom = __fadd_rn(__fmul_rn(r.momentum, s1[i]), inc);
                s1[i] = mom;
                inc = mom;
            }
            w[i] = __fsub_rn(w[i], inc);
            break;
        }
        }
    }
}


int gpu_optim_launch(const OptimRule *r, float *w, const float *g, float *s0, float *s1, long n, const char *what,
                     cudaStream_t s) {
    optim_kernel<<<gpu_blocks(n), 256, 0, s>>>(r, w, g, s0, s1, n);
    CUDA_OK(cudaGetLastError(), what);
    return 0;
}
