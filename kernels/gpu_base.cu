// Conv base inference with cuDNN (gpu_base.h): the frozen layers of
// gpu_frozen.cuh over the whole base, with pinned host staging so the host
// fills one batch while the GPU runs the other. Activations stay NHWC on the
// device, as on the CPU.
//
// Every batch runs at the planned size (max_batch): a smaller one is padded
// with zero images. With the algorithms fixed by shape (gpu_conv_pick_forward)
// an image's features are then the same bits whatever batch it is in and
// however often the run was stopped and resumed, as on the CPU.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_frozen.cuh"

extern "C" {
#include "gpu_base.h"
#include "prep_pixel.h"
}

struct GpuBase {
    const Model *m;
    int max_batch;
    cudnnHandle_t cudnn;
    cudaStream_t stream;
    GpuFrozen base;                      // layers [1, n_base)
    float *d_in, *d_out;                 // max_batch images / feature vectors
    uint8_t *d_rgb;                      // max_batch RGB8 images (gpu_base_submit_rgb8)
    // Two pinned staging slots, so the host fills one batch (and stores the
    // last one's features) while the GPU runs the other: submit/collect.
    float *h_in[2], *h_out[2];           // max_batch images / feature vectors each
    cudaEvent_t done[2];                 // recorded after a slot's download
    int slot_n[2];                       // images in each slot's batch
    int next, pending;                   // slot the next submit uses; batches submitted, not collected
};

static int create(GpuBase *g, const Model *m, int max_batch, GpuPrecision precision) {
    g->m = m;
    g->max_batch = max_batch;
    char why[600];
    if (cudnn_api_load(why, sizeof why) < 0) return err_set("GPU: %s", why);
    if (gpu_select_device() < 0) return -1;
    CUDA_OK(cudaStreamCreate(&g->stream), "creating a stream");
    CUDNN_OK(dnn.cudnnCreate(&g->cudnn), "creating the handle");
    CUDNN_OK(dnn.cudnnSetStream(g->cudnn, g->stream), "setting the stream");
    const size_t in_n = (size_t)m->cfg.input_h * m->cfg.input_w * 3 * max_batch;
    const size_t out_n = (size_t)model_feature_size(m) * max_batch;
    CUDA_OK(cudaMalloc(&g->d_in, in_n * sizeof(float)), "allocating the input");
    CUDA_OK(cudaMalloc(&g->d_out, out_n * sizeof(float)), "allocating the features");
    CUDA_OK(cudaMalloc(&g->d_rgb, in_n), "allocating the input");
    // Pinned host buffers: copies at full bus speed, asynchronous to the host.
    for (int s = 0; s < 2; s++) {
        CUDA_OK(cudaMallocHost(&g->h_in[s], in_n * sizeof(float)), "allocating pinned host memory");
        CUDA_OK(cudaMallocHost(&g->h_out[s], out_n * sizeof(float)), "allocating pinned host memory");
        CUDA_OK(cudaEventCreateWithFlags(&g->done[s], cudaEventDisableTiming), "creating an event");
    }
    return gpu_frozen_create(&g->base, m, 1, m->n_base, max_batch, precision, g->cudnn);
}

extern "C" GpuBase *gpu_base_create(const Model *m, int max_batch, GpuPrecision precision) {
    GpuBase *g = (GpuBase *)calloc(1, sizeof(GpuBase));
    if (!g) return err_set("out of memory"), (GpuBase *)NULL;
    if (max_batch < 1) {
        free(g);
        return err_set("GPU: batch capacity must be at least 1, got %d", max_batch), (GpuBase *)NULL;
    }
    if (create(g, m, max_batch, precision) < 0) {
        ErrKept keep;
        err_keep(&keep);
        gpu_base_free(g);
        err_restore(&keep);
        return NULL;
    }
    return g;
}

// Checks a submit of N images: -1 with err_set when it cannot be taken.
static int submit_check(GpuBase *g, int N) {
    if (N < 1 || N > g->max_batch) return err_set("GPU: batch of %d images (at most %d)", N, g->max_batch);
    if (g->pending == 2) return err_set("GPU: two batches in flight: collect one first");
    return 0;
}

// The conv base on the images in d_in (max_batch of them, the N given then
// zeros), its N feature vectors to slot s's pinned buffer, and the slot's
// event; the batch is then in flight.
static int run_batch(GpuBase *g, int s, int N) {
    if (gpu_frozen_forward(&g->base, g->cudnn, g->d_in, g->d_out, g->stream) < 0) return -1;
    size_t out_size = (size_t)model_feature_size(g->m) * N;
    CUDA_OK(cudaMemcpyAsync(g->h_out[s], g->d_out, out_size * sizeof(float), cudaMemcpyDeviceToHost, g->stream),
            "downloading features");
    CUDA_OK(cudaEventRecord(g->done[s], g->stream), "recording an event");
    g->slot_n[s] = N;
    g->next = s ^ 1;
    g->pending++;
    return 0;
}

extern "C" int gpu_base_submit(GpuBase *g, const float *in, int N) {
    if (submit_check(g, N) < 0) return -1;
    const int s = g->next;
    const size_t image = (size_t)g->m->cfg.input_h * g->m->cfg.input_w * 3;
    const size_t B = (size_t)g->max_batch;
    if (in != g->h_in[s]) memcpy(g->h_in[s], in, image * N * sizeof(float));  // else filled in place
    // The padding images are zeros (their features are dropped).
    if ((size_t)N < B) memset(g->h_in[s] + image * N, 0, image * (B - N) * sizeof(float));
    CUDA_OK(cudaMemcpyAsync(g->d_in, g->h_in[s], image * B * sizeof(float), cudaMemcpyHostToDevice, g->stream),
            "uploading images");
    return run_batch(g, s, N);
}

// prep_pixel (the host's own code, prep_pixel.h) over n_pixels RGB8 pixels.
__global__ static void prep_kernel(const uint8_t *rgb, long n_pixels, PrepMode mode, float *out) {
    for (long p = blockIdx.x * (long)blockDim.x + threadIdx.x; p < n_pixels; p += (long)gridDim.x * blockDim.x)
        prep_pixel(rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2], mode, out + 3 * p);
}

extern "C" int gpu_base_submit_rgb8(GpuBase *g, const uint8_t *rgb, int N, PrepMode prep) {
    if (submit_check(g, N) < 0) return -1;
    const int s = g->next;
    const size_t pixels = (size_t)g->m->cfg.input_h * g->m->cfg.input_w, image = pixels * 3;
    const size_t B = (size_t)g->max_batch;
    uint8_t *h = (uint8_t *)g->h_in[s];
    if (rgb != h) memcpy(h, rgb, image * N);  // else filled in place
    CUDA_OK(cudaMemcpyAsync(g->d_rgb, h, image * N, cudaMemcpyHostToDevice, g->stream), "uploading images");
    prep_kernel<<<gpu_blocks((long)(pixels * N)), 256, 0, g->stream>>>(g->d_rgb, (long)(pixels * N), prep, g->d_in);
    CUDA_OK(cudaGetLastError(), "preprocessing images");
    // The padding images are zeros, as gpu_base_submit's.
    if ((size_t)N < B)
        CUDA_OK(cudaMemsetAsync(g->d_in + image * N, 0, image * (B - N) * sizeof(float), g->stream), "padding");
    return run_batch(g, s, N);
}

extern "C" float *gpu_base_staging(GpuBase *g, int k) { return g->h_in[k & 1]; }
extern "C" uint8_t *gpu_base_staging_rgb8(GpuBase *g, int k) { return (uint8_t *)g->h_in[k & 1]; }

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
    gpu_frozen_free(&g->base);
    cudaFree(g->d_in);
    cudaFree(g->d_out);
    cudaFree(g->d_rgb);
    for (int s = 0; s < 2; s++) {
        cudaFreeHost(g->h_in[s]);
        cudaFreeHost(g->h_out[s]);
        if (g->done[s]) cudaEventDestroy(g->done[s]);
    }
    if (g->cudnn) dnn.cudnnDestroy(g->cudnn);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}
