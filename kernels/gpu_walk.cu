// The trainable walk on the GPU (see gpu_walk.h): the frozen layers of
// gpu_frozen.cuh, then cuDNN convolutions and our kernels for bias + ReLU,
// ReLU backward, the bias gradient, max pooling and the optimizer update.
// Everything of a step is queued on the walk's stream, in order, with one
// wait per step (gpu_walk_end): the host queues the next step's ~100
// operations while the GPU runs, instead of the GPU waiting for each
// (fine-tuning at batch 20 on an H200 spent about half of each 3.5 ms step
// on such gaps, 2026-11-30). The next batch's upload runs on a second
// stream (gpu_walk_stage) while the step before it computes, and so do its
// frozen layers (their weights never change, so the next batch's frozen
// forward pass need not wait for this step's update): at batch 20 the
// trainable block5's small kernels leave most of the GPU idle, which the
// frozen layers' large ones fill. The weights'
// and slots' host copies (checkpoints, the model) stay synchronous
// cudaMemcpy calls on the legacy default stream, which waits for the walk's
// streams (created blocking, not cudaStreamNonBlocking).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_frozen.cuh"

extern "C" {
#include "cli.h"      // env_flag
#include "forward.h"  // HEAD_SLOTS
#include "progress.h"  // progress_now
#include "gpu.h"
#include "gpu_head.h"
#include "gpu_walk.h"
}

enum { PENDING_STEP = 1, PENDING_PREDICT = 2 };

// The step's parts a profile times: from mark k to mark k + 1.
#define PROFILE_MARKS 6
static const char *const profile_parts[PROFILE_MARKS - 1] = {
    "input (its upload, or the wait for the one staged during the step before)", "frozen layers", "trainable layers forward", "head (forward, backward, update)",
    "trainable layers backward and update"};

struct GpuWalk {
    const Model *m;
    int from, ft, nb, cap;  // ft: first trainable layer (nb when none)
    long in_size, feat_size;
    int deterministic;
    cudnnHandle_t cudnn;
    GpuFrozen frozen;    // layers [from, ft) when ft > from (has_frozen)
    int has_frozen;
    // Indexed like m->layers.
    GpuConv *convs;                               // convs of [ft, nb)
    cudnnConvolutionFwdAlgo_t *fwd;               // convs of [ft, nb)
    cudnnConvolutionBwdDataAlgo_t *bwd_data;      // convs of (ft, nb)
    cudnnConvolutionBwdFilterAlgo_t *bwd_filter;  // convs of [ft, nb)
    float **act;         // [ft, nb): each layer's output for cap items (act[nb-1] = feat)
    int32_t **argmax;    // pools of [ft, nb)
    float **dkernel, **dbias;  // convs of [ft, nb), K,R,S,C like the kernel
    float **slot;        // HEAD_SLOTS layout: two device slots per trainable tensor
    float *d_in[2];      // cap x in_size each: steps alternate between them (gpu_walk_stage)
    int cur;             // the one the last step read
    float *t_in;         // input of layer ft (= d_in[cur] when from == ft, else t_in_buf[cur])
    float *t_in_buf[2];  // the frozen layers' output for d_in[0] and d_in[1] (one buffer, twice, without overlap)
    // VGGFT_GPU_OVERLAP (on unless 0): a staged batch's frozen layers run
    // on copy_s during the step before it (gpu_walk_stage), with a cuDNN
    // handle of their own; they share the frozen layers' scratch with a
    // frozen pass queued on s, hence frozen_free (recorded on s after one).
    int overlap;
    cudnnHandle_t cudnn_copy;
    cudaEvent_t frozen_free;
    int staged_frozen;   // the staged batch's frozen layers were queued with its upload
    cudaEvent_t stage_mark[2][2];  // profiling: around a staged frozen pass, per input buffer
    double staged_frozen_ms;
    long staged_frozen_n;
    int frozen_in_step;            // the step begun last ran its frozen layers itself (queue_batch),
                                   // else (overlap) they ran staged: stage_mark[cur] times them
    long frozen_in_step_n;         // of the steps timed one by one (profile: part 1 is theirs)
    float *feat;         // cap x feat_size: the cut's output
    float *d_feat;       // its gradient
    float *d_a, *d_b;    // gradient ping-pong (largest output of [ft, nb-1))
    void *work;
    size_t work_size;
    size_t bytes;
    GpuHead *head;       // the head on the device, or NULL (VGGFT_GPU_HEAD=0): on the host
    cudaStream_t s;      // every operation of a step
    cudaStream_t copy_s; // the next batch's upload (gpu_walk_stage)
    cudaEvent_t done;    // recorded after a step's last operation
    cudaEvent_t staged_ev;       // after the staged batch's upload
    int stage_pending;           // an upload into d_in[1 - cur] no step has waited for yet
    const float *staged;         // the host batch it sends, N items (NULL: none, or forgotten)
    int staged_N;
    int pending;         // a step (PENDING_STEP) or a prediction (PENDING_PREDICT) begun and not ended
    // The step's optimizer rule, read by the update kernels from device
    // memory (rule_dev), sent there from host_rule by a copy queued with
    // the step, so that a captured step follows each step's rule.
    OptimRule *rule_dev, *host_rule;
    int host_rule_pinned;
    long steps_ended;    // training steps ended without an error
    // VGGFT_GPU_GRAPH=1 (read at creation): a whole batch's step after its
    // input (queue_step) captured once per input buffer as a CUDA graph and
    // replayed: one launch instead of ~100 (graph_for).
    int use_graph;
    cudaGraphExec_t graph[2];  // for d_in[0] and d_in[1]
    int graph_weighted[2];     // captured with sample weights
    int capturing;             // queue_step is being captured (no events then)
    int step_graphed;          // the step begun last was a graph's launch
    double capture_s;          // time spent capturing and instantiating (profile)
    int captures;
    int capture_relaxed;       // captures in relaxed mode (a thread-local one failed)
    // VGGFT_GPU_PROFILE=1 (read at creation): each step's parts timed on
    // the GPU by events (gpu_walk_profile).
    int profiling;
    cudaEvent_t mark[PROFILE_MARKS];
    double part_ms[PROFILE_MARKS - 1], queue_s;  // sums over the steps timed, queued one by one
    long timed_steps;
    double graph_ms[2], graph_queue_s;  // the same for steps launched as a graph: input, the graph
    long graph_steps;
};

static size_t out_floats(const Layer *l) { return (size_t)l->out_h * l->out_w * l->out_c; }
static size_t in_floats(const Layer *l) { return (size_t)l->in_h * l->in_w * l->in_c; }

// cudaMalloc that counts what it took.
static int dalloc(GpuWalk *g, void **p, size_t bytes, const char *what) {
    CUDA_OK(cudaMalloc(p, bytes ? bytes : 4), what);
    g->bytes += bytes;
    return 0;
}
#define DALLOC(g, p, bytes, what) dalloc(g, (void **)&(p), bytes, what)

// --- kernels (grid-stride loops; CPU references in common/layers.c) ----------

// maxpool2x2_forward: out is N, H/2, W/2, C; argmax (may be NULL) the index
// in the whole batch's input of each window's maximum, the four pixels tried
// in row-major order with strict > (the first maximum wins ties).
__global__ static void pool_forward_kernel(const float *in, int N, int H, int W, int C, float *out, int32_t *argmax) {
    const int Ho = H / 2, Wo = W / 2;
    const long n_out = (long)N * Ho * Wo * C;
    for (long o = blockIdx.x * (long)blockDim.x + threadIdx.x; o < n_out; o += (long)gridDim.x * blockDim.x) {
        long t = o / C;
        const int c = (int)(o % C);
        const int xo = (int)(t % Wo);
        t /= Wo;
        const int yo = (int)(t % Ho);
        const long n = t / Ho;
        const long p00 = ((n * H + 2 * yo) * W + 2 * xo) * C + c;
        const long p[4] = {p00, p00 + C, p00 + (long)W * C, p00 + (long)W * C + C};
        long best = p[0];
        float v = in[best];
        for (int j = 1; j < 4; j++)
            if (in[p[j]] > v) v = in[p[j]], best = p[j];
        out[o] = v;
        if (argmax) argmax[o] = (int32_t)best;
    }
}

// maxpool2x2_backward: din (N,H,W,C) = 0 except at each window's argmax,
// which gets 0 + dout (the windows do not overlap, so each input element
// has at most one output: a gather, no atomics). Rows and columns left over
// by an odd H or W get 0.
__global__ static void pool_backward_kernel(const float *dout, int N, int H, int W, int C, const int32_t *argmax,
                                            float *din) {
    const int Ho = H / 2, Wo = W / 2;
    const long n_in = (long)N * H * W * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n_in; i += (long)gridDim.x * blockDim.x) {
        long t = i / C;
        const int c = (int)(i % C);
        const int x = (int)(t % W);
        t /= W;
        const int y = (int)(t % H);
        const long n = t / H;
        float v = 0.f;
        if (y / 2 < Ho && x / 2 < Wo) {
            const long o = ((n * Ho + y / 2) * Wo + x / 2) * C + c;
            if ((long)argmax[o] == i) v = __fadd_rn(0.f, dout[o]);  // the CPU's 0 += dout
        }
        din[i] = v;
    }
}

// relu_backward: dy[i] = 0 where the post-ReLU output y[i] is not > 0.
__global__ static void relu_backward_kernel(const float *y, float *dy, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        if (!(y[i] > 0.f)) dy[i] = 0.f;
}

// The bias gradient of a conv (conv3x3_backward's dbias): db[c] = sum over
// the rows (N*H*W pixels) of dy[row * C + c]. One block per channel, a fixed
// assignment of rows to threads and a fixed tree: the same bits every run.
// OVERWRITES db (the walk's gradients live one step).
#define BIAS_THREADS 256
__global__ static void bias_grad_kernel(const float *dy, long rows, int C, float *db) {
    __shared__ float part[BIAS_THREADS];
    const int c = blockIdx.x;
    float s = 0.f;
    for (long r = threadIdx.x; r < rows; r += BIAS_THREADS) s += dy[r * C + c];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = BIAS_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[c] = part[0];
}

static int pool_forward(const Layer *l, const float *x, int N, float *y, int32_t *argmax, cudaStream_t s) {
    long n = (long)N * out_floats(l);
    pool_forward_kernel<<<gpu_blocks(n), 256, 0, s>>>(x, N, l->in_h, l->in_w, l->in_c, y, argmax);
    CUDA_OK(cudaGetLastError(), l->name);
    return 0;
}

// --- creation ------------------------------------------------------------------

static int create(GpuWalk *g, const Model *m, int from, int cap, GpuPrecision precision) {
    const int nb = m->n_base;
    g->m = m, g->from = from, g->nb = nb, g->cap = cap, g->deterministic = 1;
    g->ft = m->first_trainable_base > from ? m->first_trainable_base : from;
    const int ft = g->ft;
    if (cap < 1) return err_set("GPU walk: batch capacity must be at least 1, got %d", cap);
    if (device_gpu_batch_check(m, from, nb, cap) < 0) return -1;
    if (from < 1 || from >= nb || (from > 1 && m->layers[from - 1].kind != LAYER_POOL))
        return err_set("GPU walk: layer %d does not start the base or follow a pooling layer", from);
    if (m->layers[nb - 1].kind != LAYER_POOL)
        return err_set("GPU walk: the base ends at %s, not at a pooling layer", m->layers[nb - 1].name);
    g->in_size = (long)out_floats(&m->layers[from - 1]);
    g->feat_size = model_feature_size(m);
    const size_t C = (size_t)cap, F = (size_t)g->feat_size;

    char why[1000];
    if (gpu_count(why, sizeof why) == 0) return err_set("GPU: none usable: %s", why);
    if (cudnn_api_load(why, sizeof why) < 0) return err_set("GPU: %s", why);
    if (gpu_select_device() < 0) return -1;
    CUDNN_OK(dnn.cudnnCreate(&g->cudnn), "creating the handle");
    CUDA_OK(cudaStreamCreate(&g->s), "creating a stream");
    CUDA_OK(cudaStreamCreate(&g->copy_s), "creating a stream");
    CUDNN_OK(dnn.cudnnSetStream(g->cudnn, g->s), "setting the stream");
    // Blocking waits, as gpu_select_device's: the loader threads need the cores.
    CUDA_OK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming | cudaEventBlockingSync), "creating an event");
    CUDA_OK(cudaEventCreateWithFlags(&g->staged_ev, cudaEventDisableTiming | cudaEventBlockingSync),
            "creating an event");
    CUDA_OK(cudaEventCreateWithFlags(&g->frozen_free, cudaEventDisableTiming), "creating an event");

    const size_t L = (size_t)m->n_layers;
    g->convs = (GpuConv *)calloc(L, sizeof(GpuConv));
    g->fwd = (cudnnConvolutionFwdAlgo_t *)calloc(L, sizeof *g->fwd);
    g->bwd_data = (cudnnConvolutionBwdDataAlgo_t *)calloc(L, sizeof *g->bwd_data);
    g->bwd_filter = (cudnnConvolutionBwdFilterAlgo_t *)calloc(L, sizeof *g->bwd_filter);
    g->act = (float **)calloc(L, sizeof(float *));
    g->argmax = (int32_t **)calloc(L, sizeof(int32_t *));
    g->dkernel = (float **)calloc(L, sizeof(float *));
    g->dbias = (float **)calloc(L, sizeof(float *));
    g->slot = (float **)calloc(L * 4, sizeof(float *));
    if (!g->convs || !g->fwd || !g->bwd_data || !g->bwd_filter || !g->act || !g->argmax || !g->dkernel ||
        !g->dbias || !g->slot)
        return err_set("GPU walk: out of memory");

    // Activations.
    for (int k = 0; k < 2; k++)
        if (DALLOC(g, g->d_in[k], C * g->in_size * sizeof(float), "allocating the input") < 0) return -1;
    if (DALLOC(g, g->feat, C * F * sizeof(float), "allocating the features") < 0) return -1;
    if (DALLOC(g, g->d_feat, C * F * sizeof(float), "allocating the feature gradient") < 0) return -1;
    // The frozen layers: forward only, nothing kept (gpu_frozen.cuh, as extract's base).
    if (ft > from) {
        g->has_frozen = 1;
        if (gpu_frozen_create(&g->frozen, m, from, ft, cap, precision, g->cudnn) < 0) return -1;
        if (!g->frozen.deterministic) g->deterministic = 0;
        g->bytes += g->frozen.bytes;
    }
    // The next batch's frozen layers during the step (the default; not
    // where they write the features themselves: the head reads those).
    g->overlap = g->has_frozen && ft < nb && env_flag("VGGFT_GPU_OVERLAP", 1);
    if (ft < nb) {
        if (from == ft) g->t_in = g->d_in[0];
        else {
            for (int k = 0; k < 1 + g->overlap; k++)
                if (DALLOC(g, g->t_in_buf[k], C * in_floats(&m->layers[ft]) * sizeof(float),
                           "allocating activations") < 0)
                    return -1;
            if (!g->overlap) g->t_in_buf[1] = g->t_in_buf[0];
            g->t_in = g->t_in_buf[0];
        }
    }
    if (g->overlap) {
        CUDNN_OK(dnn.cudnnCreate(&g->cudnn_copy), "creating the handle");
        CUDNN_OK(dnn.cudnnSetStream(g->cudnn_copy, g->copy_s), "setting the stream");
    }
    size_t dmax = 0;
    for (int i = ft; i < nb; i++) {
        const Layer *l = &m->layers[i];
        if (i == nb - 1) g->act[i] = g->feat;
        else if (DALLOC(g, g->act[i], C * out_floats(l) * sizeof(float), "allocating activations") < 0) return -1;
        if (i < nb - 1 && out_floats(l) > dmax) dmax = out_floats(l);
        if (l->kind == LAYER_POOL) {
            if (C * in_floats(l) > INT32_MAX)
                return err_set("GPU walk: a batch of %d is too large for %s (at most %zu)", cap, l->name,
                               (size_t)INT32_MAX / in_floats(l));
            if (DALLOC(g, g->argmax[i], C * out_floats(l) * sizeof(int32_t), "allocating pool indices") < 0)
                return -1;
        }
    }
    if (dmax) {
        if (DALLOC(g, g->d_a, C * dmax * sizeof(float), "allocating gradients") < 0) return -1;
        if (DALLOC(g, g->d_b, C * dmax * sizeof(float), "allocating gradients") < 0) return -1;
    }

    // Trainable convs: descriptors, weights, algorithms, gradients and
    // slots. Strict float32, or TF32 tensor cores (also with bf16, which
    // applies to the frozen layers only).
    for (int i = ft; i < nb; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        if (!l->kernel || !l->bias) return err_set("GPU walk: %s has no weights loaded", l->name);
        GpuConv *c = &g->convs[i];
        if (gpu_conv_create(c, l, cap, gpu_math(precision)) < 0) return -1;
        g->bytes += (size_t)(l->n_kernel + l->n_bias) * sizeof(float);
        size_t ws = 0;
        int det = 1;
        if (gpu_conv_pick_forward(g->cudnn, c, l, &g->fwd[i], &ws, &det) < 0) return -1;
        gpu_pick_done(l, "forward", (int)g->fwd[i], ws, det, &g->work_size, &g->deterministic);
        if (gpu_conv_pick_backward_filter(g->cudnn, c, l, &g->bwd_filter[i], &ws, &det) < 0) return -1;
        gpu_pick_done(l, "backward-filter", (int)g->bwd_filter[i], ws, det, &g->work_size, &g->deterministic);
        if (i > ft) {
            if (gpu_conv_pick_backward_data(g->cudnn, c, l, &g->bwd_data[i], &ws, &det) < 0) return -1;
            gpu_pick_done(l, "backward-data", (int)g->bwd_data[i], ws, det, &g->work_size, &g->deterministic);
        }
        const size_t nk = (size_t)l->n_kernel * sizeof(float), nbias = (size_t)l->n_bias * sizeof(float);
        if (DALLOC(g, g->dkernel[i], nk, "allocating gradients") < 0) return -1;
        if (DALLOC(g, g->dbias[i], nbias, "allocating gradients") < 0) return -1;
        for (int s = 0; s < 2; s++) {
            float **sk = &HEAD_SLOTS(g->slot, i, 0)[s], **sb = &HEAD_SLOTS(g->slot, i, 1)[s];
            if (DALLOC(g, *sk, nk, "allocating optimizer slots") < 0) return -1;
            if (DALLOC(g, *sb, nbias, "allocating optimizer slots") < 0) return -1;
            CUDA_OK(cudaMemset(*sk, 0, nk), "zeroing optimizer slots");
            CUDA_OK(cudaMemset(*sb, 0, nbias), "zeroing optimizer slots");
        }
    }
    if (g->work_size && DALLOC(g, g->work, g->work_size, "allocating the cuDNN workspace") < 0) return -1;
    if (DALLOC(g, g->rule_dev, sizeof(OptimRule), "allocating the optimizer rule") < 0) return -1;
    g->host_rule = (OptimRule *)gpu_host_alloc(sizeof(OptimRule));
    g->host_rule_pinned = g->host_rule != NULL;
    if (!g->host_rule && !(g->host_rule = (OptimRule *)calloc(1, sizeof(OptimRule))))
        return err_set("GPU walk: out of memory");
    // The head on the device unless VGGFT_GPU_HEAD=0 (gpu_walk.h): read
    // here, once per walk.
    if (env_flag("VGGFT_GPU_PROFILE", 0)) {
        g->profiling = 1;
        for (int k = 0; k < PROFILE_MARKS; k++)
            CUDA_OK(cudaEventCreateWithFlags(&g->mark[k], cudaEventBlockingSync), "creating an event");
        for (int k = 0; k < 4 && g->overlap; k++)
            CUDA_OK(cudaEventCreateWithFlags(&g->stage_mark[k / 2][k % 2], cudaEventBlockingSync),
                    "creating an event");
    }
    if (env_flag("VGGFT_GPU_HEAD", 1)) {
        if (!(g->head = gpu_head_create(m, cap, g->s))) return err_prefix("the head on the GPU: ");
        g->bytes += gpu_head_bytes(g->head);
    }
    // Steps as CUDA graphs with VGGFT_GPU_GRAPH=1 (the head on the device,
    // and page-locked step inputs: a graph copies from them when it runs).
    if (env_flag("VGGFT_GPU_GRAPH", 0)) {
        g->use_graph = g->head && g->host_rule_pinned && gpu_head_pinned(g->head);
        if (!g->use_graph)
            log_printf(stderr, "warning: VGGFT_GPU_GRAPH: no CUDA graphs %s; each step's operations are queued\n",
                    !g->head ? "with the head on the host (VGGFT_GPU_HEAD=0)"
                             : "without page-locked host memory (cudaMallocHost failed)");
    }
    CUDA_OK(cudaDeviceSynchronize(), "setting up the walk");
    return 0;
}

extern "C" GpuWalk *gpu_walk_create(const Model *m, int from, int cap, GpuPrecision precision) {
    GpuWalk *g = (GpuWalk *)calloc(1, sizeof(GpuWalk));
    if (!g) return err_set("GPU walk: out of memory"), (GpuWalk *)NULL;
    if (create(g, m, from, cap, precision) < 0) {
        ErrKept keep;
        err_keep(&keep);
        gpu_walk_free(g);
        err_restore(&keep);
        return NULL;
    }
    return g;
}

extern "C" void gpu_walk_free(GpuWalk *g) {
    if (!g) return;
    if (g->s) cudaStreamSynchronize(g->s);  // a step still under way reads what is freed below
    if (g->copy_s) cudaStreamSynchronize(g->copy_s);
    gpu_head_free(g->head);
    for (int k = 0; k < 2; k++)
        if (g->graph[k]) cudaGraphExecDestroy(g->graph[k]);
    cudaFree(g->rule_dev);
    if (g->host_rule_pinned) gpu_host_free(g->host_rule);
    else free(g->host_rule);
    if (g->has_frozen) gpu_frozen_free(&g->frozen);
    const int L = g->m->n_layers;
    for (int i = 0; i < L; i++) {
        if (g->convs) gpu_conv_free(&g->convs[i]);
        if (g->act && g->act[i] != g->feat) cudaFree(g->act[i]);
        if (g->argmax) cudaFree(g->argmax[i]);
        if (g->dkernel) cudaFree(g->dkernel[i]);
        if (g->dbias) cudaFree(g->dbias[i]);
    }
    if (g->slot)
        for (int i = 0; i < L * 4; i++) cudaFree(g->slot[i]);
    cudaFree(g->t_in_buf[0]);
    if (g->t_in_buf[1] != g->t_in_buf[0]) cudaFree(g->t_in_buf[1]);
    cudaFree(g->d_in[0]), cudaFree(g->d_in[1]);
    cudaFree(g->feat);
    cudaFree(g->d_feat);
    cudaFree(g->d_a);
    cudaFree(g->d_b);
    cudaFree(g->work);
    if (g->cudnn) dnn.cudnnDestroy(g->cudnn);
    if (g->cudnn_copy) dnn.cudnnDestroy(g->cudnn_copy);
    if (g->frozen_free) cudaEventDestroy(g->frozen_free);
    for (int k = 0; k < 4; k++)
        if (g->stage_mark[k / 2][k % 2]) cudaEventDestroy(g->stage_mark[k / 2][k % 2]);
    if (g->done) cudaEventDestroy(g->done);
    for (int k = 0; k < PROFILE_MARKS; k++)
        if (g->mark[k]) cudaEventDestroy(g->mark[k]);
    if (g->staged_ev) cudaEventDestroy(g->staged_ev);
    if (g->s) cudaStreamDestroy(g->s);
    if (g->copy_s) cudaStreamDestroy(g->copy_s);
    free(g->convs), free(g->fwd), free(g->bwd_data), free(g->bwd_filter);
    free(g->act), free(g->argmax), free(g->dkernel), free(g->dbias), free(g->slot);
    free(g);
}

extern "C" size_t gpu_walk_bytes(const GpuWalk *g) { return g->bytes; }

extern "C" void gpu_walk_describe(const GpuWalk *g, char *buf, size_t size) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = g->from; i < g->nb && at < size; i++) {
        const Layer *l = &g->m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        int n = i < g->ft ? snprintf(buf + at, size - at, "%s%s fwd %d", at ? ", " : "", l->name, (int)g->frozen.algos[i])
                          : snprintf(buf + at, size - at, "%s%s fwd %d bwd-filter %d bwd-data %d", at ? ", " : "",
                                     l->name, (int)g->fwd[i], (int)g->bwd_filter[i],
                                     i > g->ft ? (int)g->bwd_data[i] : -1);
        if (n < 0) break;
        at += (size_t)n;
    }
    // Whether the picks came from cuDNN's timing runs, as far as they did.
    char tuned[160] = "";
    int timed, untimed;
    gpu_autotune_counts(&timed, &untimed);
    if (gpu_autotune() && timed)
        snprintf(tuned, sizeof tuned, "; algorithms timed by cuDNN (VGGFT_GPU_AUTOTUNE)%s", untimed ? ", some from its heuristics (nothing usable timed)" : "");
    else if (gpu_autotune())
        snprintf(tuned, sizeof tuned, "; VGGFT_GPU_AUTOTUNE: nothing usable timed by cuDNN, algorithms from its heuristics");
    if (at < size) snprintf(buf + at, size - at, "; workspace %zu MB, %zu MB in all%s%s%s%s%s",
                            (g->work_size + (g->has_frozen ? g->frozen.work_size : 0)) >> 20, g->bytes >> 20, g->deterministic ? "" : "; NOT deterministic",
                            tuned,
                            g->head ? "; head on the GPU" : "", g->use_graph ? "; steps as CUDA graphs" : "",
                            g->overlap ? "; the next batch's frozen layers during the step" : "");
}
extern "C" int gpu_walk_deterministic(const GpuWalk *g) { return g->deterministic; }

// --- forward -------------------------------------------------------------------

// Conv layer i forward on cap items, x -> y, then bias + ReLU.
static int conv_forward(GpuWalk *g, int i, const float *x, float *y) {
    const Layer *l = &g->m->layers[i];
    GpuConv *c = &g->convs[i];
    const float one = 1.f, zero = 0.f;
    CUDNN_OK(dnn.cudnnConvolutionForward(g->cudnn, &one, c->x, x, c->w, c->d_kernel, c->conv, g->fwd[i], g->work,
                                         g->work_size, &zero, c->y, y),
             l->name);
    gpu_bias_relu(y, c->d_bias, (long)g->cap * (long)out_floats(l), l->out_c, g->s);
    CUDA_OK(cudaGetLastError(), l->name);
    return 0;
}

// Zeros for the padding items of a batch of N in input buffer dst, on stream s.
static int queue_padding(GpuWalk *g, float *dst, int N, cudaStream_t s) {
    const size_t item = (size_t)g->in_size;
    if (N < g->cap)
        CUDA_OK(cudaMemsetAsync(dst + (size_t)N * item, 0, (size_t)(g->cap - N) * item * sizeof(float), s),
                "padding the batch");
    return 0;
}

// The batch into the input buffer the last step did not read: the staged
// copy when gpu_walk_stage sent this very batch (the step waits for it,
// and for its frozen layers' output when it queued them), else a copy
// queued now; padding items zero (their features are dropped). Sets
// *frozen_done when the staged batch's frozen layers ran.
static int queue_input(GpuWalk *g, const float *in, int N, int *frozen_done) {
    const int next = 1 - g->cur;
    float *dst = g->d_in[next];
    const size_t item = (size_t)g->in_size;
    // A staged upload writes dst on the other stream: this step waits for
    // it, whether it sent this batch or (a caller that changed its mind)
    // another one, which the copy below then overwrites after it.
    const int use_staged = g->stage_pending && g->staged == in && g->staged_N == N;
    if (g->stage_pending) CUDA_OK(cudaStreamWaitEvent(g->s, g->staged_ev, 0), "waiting for the batch's upload");
    if (!use_staged)
        CUDA_OK(cudaMemcpyAsync(dst, in, (size_t)N * item * sizeof(float), cudaMemcpyHostToDevice, g->s),
                "uploading the batch");
    *frozen_done = use_staged && g->staged_frozen;
    g->stage_pending = 0, g->staged = NULL;
    // (A staged batch with its frozen layers was padded on copy_s.)
    if (!*frozen_done && queue_padding(g, dst, N, g->s) < 0) return -1;
    g->cur = next;
    // The trainable part reads (and backward re-reads) the input itself, or the frozen layers' output.
    if (g->ft < g->nb) g->t_in = g->from == g->ft ? dst : g->t_in_buf[next];
    return 0;
}

// Queues the frozen layers' forward pass over d_in[k] on stream s with
// handle h: into t_in_buf[k] (or the features, when nothing of the base
// trains). Nothing is kept.
static int queue_frozen(GpuWalk *g, int k, cudnnHandle_t h, cudaStream_t s) {
    return gpu_frozen_forward(&g->frozen, h, g->d_in[k], g->ft < g->nb ? g->t_in_buf[k] : g->feat, s);
}

// gpu_walk_stage's queued part: the upload into d_in[next] and, with
// overlap, its frozen layers; then staged_ev.
static int queue_stage(GpuWalk *g, const float *in, int N, int next) {
    const size_t item = (size_t)g->in_size;
    float *dst = g->d_in[next];
    CUDA_OK(cudaMemcpyAsync(dst, in, (size_t)N * item * sizeof(float), cudaMemcpyHostToDevice, g->copy_s),
            "uploading the next batch");
    if (g->overlap) {
        // Its frozen layers too, on this stream, beside the step under way.
        // Their scratch (gpu_frozen's ping-pong and workspace) is also used
        // by a frozen pass queued on s (a batch not staged): after it.
        if (queue_padding(g, dst, N, g->copy_s) < 0) return -1;
        CUDA_OK(cudaStreamWaitEvent(g->copy_s, g->frozen_free, 0), "waiting for the frozen layers' buffers");
        if (g->profiling) CUDA_OK(cudaEventRecord(g->stage_mark[next][0], g->copy_s), "recording an event");
        if (queue_frozen(g, next, g->cudnn_copy, g->copy_s) < 0) return -1;
        if (g->profiling) CUDA_OK(cudaEventRecord(g->stage_mark[next][1], g->copy_s), "recording an event");
    }
    CUDA_OK(cudaEventRecord(g->staged_ev, g->copy_s), "recording an event");
    return 0;
}

extern "C" int gpu_walk_stage(GpuWalk *g, const float *in, int N) {
    // Forgotten first, whatever follows (in NULL: only that; its work still
    // runs, and the next step still waits for it).
    g->staged = NULL;
    if (!in) return 0;
    if (N < 1 || N > g->cap) return err_set("GPU walk: batch of %d items (at most %d)", N, g->cap);
    // d_in[1 - cur] (and t_in_buf[1 - cur]) were read by the step before
    // the last, which has ended (steps end before the next begins), so the
    // copy may start at once.
    if (queue_stage(g, in, N, 1 - g->cur) < 0) {
        // Part of it may be queued, with no event to wait for: let it
        // finish before any step writes where it does.
        ErrKept keep;
        err_keep(&keep);
        cudaStreamSynchronize(g->copy_s);
        (void)cudaGetLastError();
        return err_restore(&keep);
    }
    g->stage_pending = 1, g->staged = in, g->staged_N = N, g->staged_frozen = g->overlap;
    return 0;
}

// Profiling: records mark k on the walk's stream (not while a step is
// captured: a graph's launch is timed as a whole).
static int mark(GpuWalk *g, int k) {
    if (g->profiling && !g->capturing) CUDA_OK(cudaEventRecord(g->mark[k], g->s), "recording an event");
    return 0;
}

// Queues the batch's upload (queue_input) and, unless they ran with its
// staged upload, its frozen layers (nothing kept); profiling marks 0, 1
// and 2 around them. Not part of a step's CUDA graph: whether a batch was
// staged changes from step to step.
static int queue_batch(GpuWalk *g, const float *in, int N) {
    int frozen_done = 0;
    if (mark(g, 0) < 0 || queue_input(g, in, N, &frozen_done) < 0 || mark(g, 1) < 0) return -1;
    g->frozen_in_step = g->has_frozen && !frozen_done;
    if (g->frozen_in_step) {
        if (queue_frozen(g, g->cur, g->cudnn, g->s) < 0) return -1;
        if (g->overlap) CUDA_OK(cudaEventRecord(g->frozen_free, g->s), "recording an event");
    }
    return mark(g, 2);
}

// Queues the trainable layers' forward pass over the batch queue_batch
// sent, keeping every output (and each pool's argmax).
static int queue_forward(GpuWalk *g) {
    const Model *m = g->m;
    const int nb = g->nb, ft = g->ft;
    for (int i = ft; i < nb; i++) {
        const float *xi = i == ft ? g->t_in : g->act[i - 1];
        int rc = m->layers[i].kind == LAYER_CONV
                     ? conv_forward(g, i, xi, g->act[i])
                     : pool_forward(&m->layers[i], xi, g->cap, g->act[i], g->argmax[i], g->s);
        if (rc < 0) return -1;
    }
    return 0;
}

// Before anything but gpu_walk_stage and gpu_walk_end: a step under way must end first.
static int idle(const GpuWalk *g) {
    if (g->pending) return err_set("GPU walk: a step is under way (gpu_walk_end first)");
    return 0;
}

static int check_batch(const GpuWalk *g, int N) {
    if (N < 1 || N > g->cap) return err_set("GPU walk: batch of %d items (at most %d)", N, g->cap);
    return idle(g);
}

static int record_done(GpuWalk *g) {
    CUDA_OK(cudaEventRecord(g->done, g->s), "recording an event");
    return 0;
}

// A begin that failed (err_set done) after queuing work: that work still
// reads the caller's batch and the walk's buffers; wait for it (its own
// error, if any, is not the one to report), then return the error.
static int begin_failed(GpuWalk *g) {
    ErrKept keep;
    err_keep(&keep);
    cudaStreamSynchronize(g->s);
    cudaStreamSynchronize(g->copy_s);
    return err_restore(&keep);
}

extern "C" int gpu_walk_forward(GpuWalk *g, const float *in, int N, float *features) {
    if (!features) return err_set("GPU walk: no buffer for the features");
    if (check_batch(g, N) < 0 || queue_batch(g, in, N) < 0 || queue_forward(g) < 0) return -1;
    CUDA_OK(cudaMemcpyAsync(features, g->feat, (size_t)N * g->feat_size * sizeof(float), cudaMemcpyDeviceToHost,
                            g->s),
            "running the conv base");
    CUDA_OK(cudaStreamSynchronize(g->s), "running the conv base");  // its errors here
    return 0;
}

// --- the head on the device ------------------------------------------------------

extern "C" int gpu_walk_has_head(const GpuWalk *g) { return g->head != NULL; }

static int need_head(const GpuWalk *g) {
    if (!g->head) return err_set("GPU walk: the head runs on the host (VGGFT_GPU_HEAD=0)");
    return 0;
}

extern "C" int gpu_walk_predict_begin(GpuWalk *g, const float *in, int N) {
    if (need_head(g) < 0 || check_batch(g, N) < 0) return -1;
    if (queue_batch(g, in, N) < 0 || queue_forward(g) < 0 || gpu_head_predict(g->head, g->feat, N) < 0)
        return begin_failed(g);
    if (record_done(g) < 0) return begin_failed(g);
    g->pending = PENDING_PREDICT;
    return 0;
}

// --- backward and update ----------------------------------------------------------

// Queues the copy of the step's rule (host_rule, which the host wrote
// before; the step before has ended) into rule_dev, which the update
// kernels read.
static int queue_rule(GpuWalk *g) {
    CUDA_OK(cudaMemcpyAsync(g->rule_dev, g->host_rule, sizeof(OptimRule), cudaMemcpyHostToDevice, g->s),
            "uploading the optimizer rule");
    return 0;
}

// Queues the backward pass from the feature gradient in d_feat (padding
// rows zero) down to ft, then the update of every trainable conv by the
// rule in rule_dev (queue_rule).
static int queue_backward_update(GpuWalk *g) {
    const Model *m = g->m;
    const int nb = g->nb, ft = g->ft;
    const float one = 1.f, zero = 0.f;
    const long B = g->cap;
    // As walk_backward: from the cut down to ft; below the cut the gradients
    // ping-pong between d_a and d_b, each conv's ReLU backward in place on
    // its output gradient; the input gradient of ft is never computed.
    const float *dout = g->d_feat;
    float *cur = NULL, *spare = g->d_a;
    for (int i = nb - 1; i >= ft; i--) {
        const Layer *l = &m->layers[i];
        const float *x = i == ft ? g->t_in : g->act[i - 1];
        float *din = i > ft ? spare : NULL;
        if (l->kind == LAYER_CONV) {
            GpuConv *c = &g->convs[i];
            const long n_out = B * (long)out_floats(l);
            relu_backward_kernel<<<gpu_blocks(n_out), 256, 0, g->s>>>(g->act[i], cur, n_out);
            CUDA_OK(cudaGetLastError(), l->name);
            CUDNN_OK(dnn.cudnnConvolutionBackwardFilter(g->cudnn, &one, c->x, x, c->y, cur, c->conv,
                                                        g->bwd_filter[i], g->work, g->work_size, &zero, c->w,
                                                        g->dkernel[i]),
                     l->name);
            bias_grad_kernel<<<l->out_c, BIAS_THREADS, 0, g->s>>>(cur, B * l->out_h * l->out_w, l->out_c,
                                                                  g->dbias[i]);
            CUDA_OK(cudaGetLastError(), l->name);
            if (din)
                CUDNN_OK(dnn.cudnnConvolutionBackwardData(g->cudnn, &one, c->w, c->d_kernel, c->y, cur, c->conv,
                                                          g->bwd_data[i], g->work, g->work_size, &zero, c->x, din),
                         l->name);
        } else if (din) {
            const long n_in = B * (long)in_floats(l);
            pool_backward_kernel<<<gpu_blocks(n_in), 256, 0, g->s>>>(dout, (int)B, l->in_h, l->in_w, l->in_c,
                                                                     g->argmax[i], din);
            CUDA_OK(cudaGetLastError(), l->name);
        }
        if (!din) break;
        spare = din == g->d_a ? g->d_b : g->d_a;
        dout = cur = din;
    }
    // Every trainable conv's kernel and bias, after the whole backward pass
    // (which read the old kernels), as finetune_step does on the CPU.
    for (int i = ft; i < nb; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind != LAYER_CONV) continue;
        GpuConv *c = &g->convs[i];
        float **sk = HEAD_SLOTS(g->slot, i, 0), **sb = HEAD_SLOTS(g->slot, i, 1);
        if (gpu_optim_launch(g->rule_dev, c->d_kernel, g->dkernel[i], sk[0], sk[1], l->n_kernel, l->name, g->s) < 0 ||
            gpu_optim_launch(g->rule_dev, c->d_bias, g->dbias[i], sb[0], sb[1], l->n_bias, l->name, g->s) < 0)
            return -1;
    }
    return 0;
}

// The feature gradient's padding rows: zeros, so the padding items add
// nothing to the weights' gradients.
static int pad_feature_gradient(GpuWalk *g, int N) {
    const size_t F = (size_t)g->feat_size;
    if (N < g->cap)
        CUDA_OK(cudaMemsetAsync(g->d_feat + (size_t)N * F, 0, (size_t)(g->cap - N) * F * sizeof(float), g->s),
                "padding the feature gradient");
    return 0;
}

extern "C" int gpu_walk_backward_update(GpuWalk *g, const float *d_features, int N, const OptimRule *r) {
    if (check_batch(g, N) < 0) return -1;
    if (!d_features) return err_set("GPU walk: no feature gradient");
    if (g->ft >= g->nb) return 0;  // nothing trainable in the base
    CUDA_OK(cudaMemcpyAsync(g->d_feat, d_features, (size_t)N * g->feat_size * sizeof(float), cudaMemcpyHostToDevice,
                            g->s),
            "uploading the feature gradient");
    *g->host_rule = *r;
    if (queue_rule(g) < 0 || pad_feature_gradient(g, N) < 0 || queue_backward_update(g) < 0) return -1;
    CUDA_OK(cudaStreamSynchronize(g->s), "the backward pass and update");
    return 0;
}

// --- a whole step with the head on the device ----------------------------------------

// Queues a training step's device work after its batch's upload and frozen
// layers (queue_batch): the trainable layers' forward pass, the head's step (prepared by gpu_head_step_prepare), the
// base's backward pass and update. No host wait and no event but the
// profile's marks (skipped in a capture), and every value that changes from
// step to step comes from device memory (the head's input block, rule_dev),
// so that graph_for can capture it once and replay it.
static int queue_step(GpuWalk *g, int N) {
    // The feature gradient only when the base has something to train.
    const int base_trains = g->ft < g->nb;
    if (queue_forward(g) < 0 || mark(g, 3) < 0) return -1;
    if (base_trains && (queue_rule(g) < 0 || pad_feature_gradient(g, N) < 0)) return -1;
    if (gpu_head_step_queue(g->head, g->feat, base_trains ? g->d_feat : NULL) < 0) return -1;
    if (mark(g, 4) < 0 || (base_trains && queue_backward_update(g) < 0) || mark(g, 5) < 0) return -1;
    return 0;
}

// Steps queued one by one from now on (after a failed capture or launch:
// a warning said why).
static void graphs_off(GpuWalk *g) {
    for (int k = 0; k < 2; k++)
        if (g->graph[k]) cudaGraphExecDestroy(g->graph[k]), g->graph[k] = NULL;
    g->use_graph = 0;
}

// Captures queue_step for a whole batch read from d_in[k] into graph[k],
// in capture mode `mode`.
static int capture_in(GpuWalk *g, int N, int k, int weighted, cudaStreamCaptureMode mode) {
    cudaGraph_t graph = NULL;
    CUDA_OK(cudaStreamBeginCapture(g->s, mode), "capturing the step as a CUDA graph");
    g->capturing = 1;
    int rc = queue_step(g, N);
    g->capturing = 0;
    cudaError_t e = cudaStreamEndCapture(g->s, &graph);
    if (rc == 0 && e != cudaSuccess)
        rc = err_set("GPU: capturing the step as a CUDA graph: %s", cudaGetErrorString(e));
    if (rc == 0 && (e = cudaGraphInstantiate(&g->graph[k], graph, 0)) != cudaSuccess) {
        g->graph[k] = NULL;
        rc = err_set("GPU: instantiating the step's CUDA graph: %s", cudaGetErrorString(e));
    }
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // a failed capture's error is the one above, not the next launch's
    if (rc == 0) g->graph_weighted[k] = weighted;
    return rc;
}

// capture_in in thread-local mode: unsafe calls (cudaMalloc...) by other
// threads do not invalidate it (work on the legacy default stream from any
// thread still would: the walk's streams are blocking; the loader threads
// make no CUDA calls). Where that fails, once more in relaxed mode, kept
// for the walk's later captures, with a note: a library that makes a
// "potentially unsafe" call (cudaMalloc, a query) inside a captured
// operation invalidates a thread-local capture but not a relaxed one
// (PyTorch offers the same, capture_error_mode="relaxed"). None is known
// of cuDNN after a first call (made outside captures: graph_for), so this
// is for the GPU run that would otherwise show only the warning; relaxed
// mode drops CUDA's check against a graph that keeps memory a library
// allocated during the capture and frees later, so the graph's steps are
// checked against queued ones on a GPU (tests/test_gpu_walk.c, `graph_*`).
static int capture(GpuWalk *g, int N, int k, int weighted) {
    if (g->capture_relaxed) return capture_in(g, N, k, weighted, cudaStreamCaptureModeRelaxed);
    if (capture_in(g, N, k, weighted, cudaStreamCaptureModeThreadLocal) == 0) return 0;
    char first[512];
    snprintf(first, sizeof first, "%s", err_msg());
    if (capture_in(g, N, k, weighted, cudaStreamCaptureModeRelaxed) < 0)
        return err_set("%s (thread-local mode); %s (relaxed mode)", first, err_msg());
    g->capture_relaxed = 1;
    log_wipe_line(stderr);  // a progress bar's line (these come during training)
    log_printf(stderr, "note: GPU: the step's CUDA graph was captured in relaxed mode (in thread-local mode: %s)\n",
               first);
    return 0;
}

// The CUDA graph of this step (VGGFT_GPU_GRAPH=1) for the input buffer
// queue_input chose, captured at its first use; NULL: queue the step's
// operations one by one. Only whole batches (a graph's N is fixed), and only
// after one step has ended (CUDA and cuDNN load kernels and plans at a
// first call, which a capture must not see). A failed capture (an
// operation that cannot be captured) warns and turns graphs off for the
// walk: the steps are the same either way.
static cudaGraphExec_t graph_for(GpuWalk *g, int N, int weighted) {
    if (!g->use_graph || N != g->cap || !g->steps_ended) return NULL;
    const int k = g->cur;
    if (g->graph[k] && g->graph_weighted[k] != weighted) {
        cudaGraphExecDestroy(g->graph[k]);
        g->graph[k] = NULL;
    }
    if (!g->graph[k]) {
        const double t0 = progress_now();
        const int rc = capture(g, N, k, weighted);
        g->capture_s += progress_now() - t0, g->captures++;
        if (rc < 0) {
            log_wipe_line(stderr);
            log_printf(stderr, "warning: %s; queuing each step's operations instead\n", err_msg());
            graphs_off(g);
            return NULL;
        }
    }
    return g->graph[k];
}

extern "C" int gpu_walk_step_begin(GpuWalk *g, const float *in, int N, const int32_t *labels,
                                   const float *sample_weights, uint64_t seed, uint64_t stream, const OptimRule *r) {
    if (need_head(g) < 0 || check_batch(g, N) < 0) return -1;
    const double t0 = g->profiling ? progress_now() : 0;
    // The host's part: the step's rule and the head's inputs into
    // page-locked memory, which the step's copies read when they run (the
    // step before has ended: check_batch).
    *g->host_rule = *r;
    if (gpu_head_step_prepare(g->head, labels, sample_weights, N, seed, stream, r) < 0) return -1;
    if (queue_batch(g, in, N) < 0) return begin_failed(g);
    const double captured_before = g->capture_s;
    cudaGraphExec_t exec = graph_for(g, N, sample_weights != NULL);
    cudaError_t e = exec ? cudaGraphLaunch(exec, g->s) : cudaSuccess;
    if (e != cudaSuccess) {
        // A launch that fails queues nothing: this step and the next ones
        // are queued one by one (a real fault shows there too).
        (void)cudaGetLastError();
        log_wipe_line(stderr);
        log_printf(stderr, "warning: GPU: launching the step's CUDA graph: %s; queuing each step's operations instead\n",
                   cudaGetErrorString(e));
        graphs_off(g);
        exec = NULL;
    }
    if (exec ? mark(g, 5) < 0 : queue_step(g, N) < 0) return begin_failed(g);
    if (gpu_head_step_queued(g->head) < 0 || record_done(g) < 0) return begin_failed(g);
    g->pending = PENDING_STEP, g->step_graphed = exec != NULL;
    // The host's time to queue the step, a capture's not counted (profiled apart).
    if (g->profiling)
        *(exec ? &g->graph_queue_s : &g->queue_s) += progress_now() - t0 - (g->capture_s - captured_before);
    return 0;
}

extern "C" int gpu_walk_end(GpuWalk *g, float *logits, float *probs, float *loss) {
    if (!g->pending) return err_set("GPU walk: no step under way (gpu_walk_step_begin first)");
    const int step = g->pending == PENDING_STEP;
    g->pending = 0;
    // Every operation of the step, and with it any error of theirs.
    CUDA_OK(cudaEventSynchronize(g->done), step ? "the training step" : "the prediction");
    if (step && g->profiling) {
        float ms = 0;
        if (g->overlap && !g->frozen_in_step) {
            // The batch's frozen layers, staged beside the step before.
            CUDA_OK(cudaEventElapsedTime(&ms, g->stage_mark[g->cur][0], g->stage_mark[g->cur][1]), "timing the step");
            g->staged_frozen_ms += ms, g->staged_frozen_n++;
        }
        if (g->step_graphed) {
            // Marks 0, 2 around the upload and the frozen layers, 5 after the graph.
            CUDA_OK(cudaEventElapsedTime(&ms, g->mark[0], g->mark[2]), "timing the step");
            g->graph_ms[0] += ms;
            CUDA_OK(cudaEventElapsedTime(&ms, g->mark[2], g->mark[5]), "timing the step");
            g->graph_ms[1] += ms;
            g->graph_steps++;
        } else {
            for (int k = 0; k + 1 < PROFILE_MARKS; k++) {
                CUDA_OK(cudaEventElapsedTime(&ms, g->mark[k], g->mark[k + 1]), "timing the step");
                g->part_ms[k] += ms;
            }
            g->timed_steps++;
            g->frozen_in_step_n += g->frozen_in_step;
        }
    }
    if (step) g->steps_ended++;
    return gpu_head_results(g->head, logits, probs, loss);
}

extern "C" int gpu_walk_profile(const GpuWalk *g, char *buf, size_t size) {
    if (!g->profiling || (!g->timed_steps && !g->graph_steps)) return 0;
    size_t at = (size_t)snprintf(buf, size, "GPU step profile (VGGFT_GPU_PROFILE), ms a step on the GPU:");
    if (g->timed_steps) {
        const double n = (double)g->timed_steps;
        double all = 0;
        for (int k = 0; k + 1 < PROFILE_MARKS; k++) all += g->part_ms[k];
        if (at < size) at += (size_t)snprintf(buf + at, size - at, " %ld steps queued one by one:", g->timed_steps);
        for (int k = 0; k + 1 < PROFILE_MARKS && at < size; k++) {
            if (k == 1) {
                // Only the steps that ran them (the others' batches had
                // theirs beside the step before: VGGFT_GPU_OVERLAP).
                if (g->frozen_in_step_n)
                    at += (size_t)snprintf(buf + at, size - at, ", %s (in %ld of these steps) %.3f", profile_parts[k],
                                           g->frozen_in_step_n, g->part_ms[k] / (double)g->frozen_in_step_n);
                continue;
            }
            at += (size_t)snprintf(buf + at, size - at, "%s %s %.3f", k ? "," : "", profile_parts[k], g->part_ms[k] / n);
        }
        if (at < size)
            at += (size_t)snprintf(buf + at, size - at, "; %.3f from its first operation to its last; the host queued it in %.3f",
                                   all / n, 1e3 * g->queue_s / n);
    }
    if (g->graph_steps && at < size) {
        const double n = (double)g->graph_steps;
        at += (size_t)snprintf(buf + at, size - at,
                 "%s %ld steps as a CUDA graph: input%s %.3f, the graph %.3f; the host queued it in %.3f (%d captures%s, "
                 "%.1f ms each, not counted)",
                 g->timed_steps ? ";" : "", g->graph_steps, g->has_frozen ? " and frozen layers" : "",
                 g->graph_ms[0] / n, g->graph_ms[1] / n,
                 1e3 * g->graph_queue_s / n, g->captures, g->capture_relaxed ? " in relaxed mode" : "",
                 g->captures ? 1e3 * g->capture_s / g->captures : 0.0);
    }
    // Not in the figures above: on the copy stream, beside the step before.
    if (g->staged_frozen_n && at < size)
        snprintf(buf + at, size - at, "; %ld steps' frozen layers beside the step before them (VGGFT_GPU_OVERLAP): %.3f",
                 g->staged_frozen_n, g->staged_frozen_ms / (double)g->staged_frozen_n);
    return 1;
}

// --- host copies -----------------------------------------------------------------

// One slot tensor of conv layer l (tensor 0: kernel, 1: bias) between host
// (Keras order) and device (K,R,S,C for the kernel).
static int slot_copy(const Layer *l, int tensor, float *host, float *dev, int to_device) {
    if (tensor == 1) {
        size_t bytes = (size_t)l->n_bias * sizeof(float);
        CUDA_OK(cudaMemcpy(to_device ? dev : host, to_device ? host : dev, bytes,
                           to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
                "copying optimizer slots");
        return 0;
    }
    size_t n = (size_t)l->n_kernel;
    float *tmp = (float *)malloc(n * sizeof(float));
    if (!tmp) return err_set("GPU walk: out of memory");
    cudaError_t e;
    if (to_device) {
        gpu_kernel_rsck_to_krsc(host, tmp, l->in_c, l->out_c);
        e = cudaMemcpy(dev, tmp, n * sizeof(float), cudaMemcpyHostToDevice);
    } else {
        e = cudaMemcpy(tmp, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
        if (e == cudaSuccess) gpu_kernel_krsc_to_rsck(tmp, host, l->in_c, l->out_c);
    }
    free(tmp);
    CUDA_OK(e, "copying optimizer slots");
    return 0;
}

static int slots_copy(GpuWalk *g, int i, float *const *slots, int to_device) {
    if (!slots) return 0;
    const Layer *l = &g->m->layers[i];
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 2; s++) {
            float *host = HEAD_SLOTS(slots, i, t)[s];
            if (host && slot_copy(l, t, host, HEAD_SLOTS(g->slot, i, t)[s], to_device) < 0) return -1;
        }
    return 0;
}

extern "C" int gpu_walk_download(GpuWalk *g, Model *m, float *const *slots) {
    if (m != g->m) return err_set("GPU walk: download into another model than the walk's");
    if (idle(g) < 0) return -1;
    for (int i = g->ft; i < g->nb; i++) {
        if (m->layers[i].kind != LAYER_CONV) continue;
        if (gpu_conv_download(&g->convs[i], &m->layers[i]) < 0) return err_prefix("%s: ", m->layers[i].name);
        if (slots_copy(g, i, slots, 0) < 0) return err_prefix("%s: ", m->layers[i].name);
    }
    return g->head ? gpu_head_download(g->head, m, slots) : 0;
}

extern "C" int gpu_walk_upload(GpuWalk *g, const Model *m, float *const *slots) {
    if (m != g->m) return err_set("GPU walk: upload from another model than the walk's");
    if (idle(g) < 0) return -1;
    // A batch staged already went through the old frozen weights: its
    // step runs them again (its upload stands).
    if (g->stage_pending) g->staged_frozen = 0;
    if (g->has_frozen && gpu_frozen_upload(&g->frozen, m) < 0) return -1;
    for (int i = g->ft; i < g->nb; i++) {
        if (m->layers[i].kind != LAYER_CONV) continue;
        if (gpu_conv_upload(&g->convs[i], &m->layers[i]) < 0) return err_prefix("%s: ", m->layers[i].name);
        if (slots_copy(g, i, slots, 1) < 0) return err_prefix("%s: ", m->layers[i].name);
    }
    return g->head ? gpu_head_upload(g->head, m, slots) : 0;
}

extern "C" int gpu_optim_apply(const OptimRule *r, float *param, const float *grad, float *const *slots, size_t n) {
    char why[1000];
    if (gpu_count(why, sizeof why) == 0) return err_set("GPU: none usable: %s", why);
    float *d[4] = {NULL, NULL, NULL, NULL};  // param, grad, slot 0, slot 1
    OptimRule *d_rule = NULL;
    const size_t bytes = n * sizeof(float);
    int rc = -1;
    cudaError_t e = cudaMalloc((void **)&d_rule, sizeof *d_rule);
    if (e == cudaSuccess) e = cudaMemcpy(d_rule, r, sizeof *d_rule, cudaMemcpyHostToDevice);
    for (int k = 0; k < 4 && e == cudaSuccess; k++) e = cudaMalloc((void **)&d[k], bytes ? bytes : 4);
    if (e == cudaSuccess) e = cudaMemcpy(d[0], param, bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(d[1], grad, bytes, cudaMemcpyHostToDevice);
    for (int s = 0; s < r->n_slots && e == cudaSuccess; s++) e = cudaMemcpy(d[2 + s], slots[s], bytes, cudaMemcpyHostToDevice);
    const int launched = e == cudaSuccess && gpu_optim_launch(d_rule, d[0], d[1], d[2], d[3], (long)n, "the optimizer kernel", 0) == 0;
    if (launched) e = cudaMemcpy(param, d[0], bytes, cudaMemcpyDeviceToHost);
    for (int s = 0; s < r->n_slots && launched && e == cudaSuccess; s++) e = cudaMemcpy(slots[s], d[2 + s], bytes, cudaMemcpyDeviceToHost);
    if (launched && e == cudaSuccess) rc = 0;
    else if (e != cudaSuccess) err_set("GPU: the optimizer kernel: %s", cudaGetErrorString(e));
    for (int k = 0; k < 4; k++) cudaFree(d[k]);
    cudaFree(d_rule);
    return rc;
}
