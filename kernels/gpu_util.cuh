// What every CUDA file of kernels/ shares: error macros, the grid size of an
// elementwise kernel, the conv layer's cuDNN descriptors and its weights on
// the device, the precision modes, and the elementwise kernels the frozen
// base and the trainable walk both run. C++ (CUDA) translation units only.
#pragma once
#include <cuda_runtime.h>

#include "cudnn_api.h"

extern "C" {
#include "device.h"  // device_gpu_batch_check
#include "error.h"
#include "gpu.h"
#include "model.h"
#include "optim.h"
}

// Return -1 with err_set("GPU: what: reason") / ("cuDNN: what: reason").
#define CUDA_OK(call, what)                                                                   \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) return err_set("GPU: %s: %s", what, cudaGetErrorString(e_));   \
    } while (0)
#define CUDNN_OK(call, what)                                                                  \
    do {                                                                                      \
        cudnnStatus_t s_ = (call);                                                            \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                       \
            return err_set("cuDNN: %s: %s", what, dnn.cudnnGetErrorString(s_));                \
    } while (0)

// Makes device 0 current, with the host blocking (not spinning) while it
// waits for the GPU (cudaDeviceScheduleBlockingSync): CUDA's default spins
// a core in every wait on a machine with fewer contexts than cores, the
// core that extract's and finetune's loader threads decode and augment on.
// A wait then costs a wake-up (tens of microseconds) against batches of
// milliseconds. -1 with err_set when there is no such device.
int gpu_select_device(void);

// Blocks of 256 threads for a grid-stride loop over n elements.
static inline int gpu_blocks(long n) {
    long b = (n + 255) / 256;
    return (int)(b < 65535 ? b : 65535);
}

// cuDNN's math type for a float32 conv at a GpuPrecision (gpu.h): strict
// float32 for GPU_FP32, else TF32 tensor cores allowed (a bf16 run's float
// convs: its first, and the walk's trainable ones).
static inline cudnnMathType_t gpu_math(int precision) {
    return precision == GPU_FP32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

// Workspace bound for any one cuDNN algorithm (forward or backward).
#define GPU_WORKSPACE_LIMIT (1ul << 30)

// One 3x3 same-padding conv layer's descriptors for batches of up to cap
// images, NHWC float32, and its weights on the device: the kernel in cuDNN's
// NHWC filter order K,R,S,C (Keras's R,S,C,K transposed), the bias (K).
// math: CUDNN_FMA_MATH (strict float32) or CUDNN_DEFAULT_MATH (TF32 tensor
// cores allowed on sm_80 and later, cuDNN's documented meaning).
typedef struct {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnMathType_t math;
    float *d_kernel, *d_bias;
} GpuConv;

// Creates the descriptors (tensors set for batch N) and uploads l's weights.
// -1 with err_set naming the layer.
int gpu_conv_create(GpuConv *c, const Layer *l, int N, cudnnMathType_t math);
// Re-sets x and y for batch N.
int gpu_conv_set_batch(GpuConv *c, const Layer *l, int N);
void gpu_conv_free(GpuConv *c);
// Keras R,S,C,K (host) <-> cuDNN K,R,S,C (device) for a 3x3 conv kernel, on
// the host: n = 9*C*K floats.
void gpu_kernel_rsck_to_krsc(const float *rsck, float *krsc, int C, int K);
void gpu_kernel_krsc_to_rsck(const float *krsc, float *rsck, int C, int K);
// Uploads l's host weights to c (after an update on the host) / downloads
// the device weights into l->kernel and l->bias.
int gpu_conv_upload(GpuConv *c, const Layer *l);
int gpu_conv_download(const GpuConv *c, Layer *l);

// 1 when VGGFT_GPU_AUTOTUNE is on (read once; default off): the picks below
// then rank cuDNN's candidates by timing them on this GPU
// (cudnnFind...Algorithm, as PyTorch's cudnn.benchmark), not by its
// heuristics (..._v7). Timing can rank differently from run to run, so two
// runs (a resumed one) may compute different last bits, and Find
// allocates buffers of its own and blocks while it times (hence opt-in).
// The rule over the ranked list (deterministic first, the workspace limit)
// is the same; a Find that fails, or times nothing in the descriptor's
// math, leaves the pick to the heuristics.
int gpu_autotune(void);
// How many picks so far (this process) came from cuDNN's timed list and
// how many, with gpu_autotune() on, fell back to its heuristics (Find
// failed or timed nothing usable in the descriptor's math).
void gpu_autotune_counts(int *timed, int *untimed);

// The conv algorithm for c at its current batch size, chosen by cuDNN's
// heuristics (cudnnGetConvolutionForwardAlgorithm_v7), not by timing
// (unless gpu_autotune()): the same shapes on the same GPU always get the
// same algorithm, so a rerun (a resumed extraction) computes the same bits.
// The first candidate
// labelled CUDNN_DETERMINISTIC that succeeds in c->math within
// GPU_WORKSPACE_LIMIT (*deterministic = 1), else the first that succeeds
// and fits (*deterministic = 0: the caller warns); its workspace in *ws.
int gpu_conv_pick_forward(cudnnHandle_t h, const GpuConv *c, const Layer *l, cudnnConvolutionFwdAlgo_t *algo,
                          size_t *ws, int *deterministic);

// After a pick of algorithm algo for layer l's pass ("forward",
// "backward-filter", "backward-data"): *work_size grows to its workspace
// ws; when it is not deterministic (det 0), a warning naming the layer, the
// pass and the algorithm, and *deterministic = 0.
void gpu_pick_done(const Layer *l, const char *pass, int algo, size_t ws, int det, size_t *work_size,
                   int *deterministic);

// The backward-data / backward-filter algorithms for c at its current batch
// size, from cuDNN's heuristics (..._v7, no timing), for training: the first
// candidate that is CUDNN_DETERMINISTIC (the same inputs give the same bits
// on every run; cuDNN's default backward-filter algorithm 0 sums with
// atomics and is not), runs in c->math and fits GPU_WORKSPACE_LIMIT; else
// algorithm 1 (deterministic by cuDNN's documentation, unless the
// heuristics label it otherwise) if it fits and the heuristics do not list
// it only as failing; else the
// first candidate that fits, with *deterministic = 0 (the caller says so).
// -1 (err_set naming the layer) when nothing fits.
int gpu_conv_pick_backward_data(cudnnHandle_t h, const GpuConv *c, const Layer *l,
                                cudnnConvolutionBwdDataAlgo_t *algo, size_t *ws, int *deterministic);
int gpu_conv_pick_backward_filter(cudnnHandle_t h, const GpuConv *c, const Layer *l,
                                  cudnnConvolutionBwdFilterAlgo_t *algo, size_t *ws, int *deterministic);

// y[i] = max(y[i] + bias[i % C], 0) on NHWC data of n floats, on stream s.
// CPU reference: conv3x3_forward's bias then relu_forward (common/layers.h).
void gpu_bias_relu(float *y, const float *bias, long n, int C, cudaStream_t s);

// The optimizer update on device arrays, n floats: w and the slots s0, s1
// (as many as r->n_slots; the others may be NULL) updated from the gradient
// g by rule r (in device memory: the kernel reads it when it runs, so a
// captured launch follows the step's rule), queued on stream s. CPU reference: optim_apply
// (common/optim.c), bit for bit (every operation an explicit _rn intrinsic,
// as the CPU build's -ffp-contract=off keeps them apart). One kernel for the
// walk's convs and the head's dense layers (gpu_walk.cu, gpu_head.cu).
// gpu_optim_launch checks the launch: -1 with err_set("GPU: what: ...").
int gpu_optim_launch(const OptimRule *r, float *w, const float *g, float *s0, float *s1, long n, const char *what,
                     cudaStream_t s);
