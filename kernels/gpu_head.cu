// The dense head on the GPU (see gpu_head.h): our kernels on the walk's
// stream, the step's small host copies queued through page-locked buffers.
// Written to be right the first time it meets a GPU: each kernel is a plain
// port of its CPU reference,
// named beside it, with every multiply-add that the CPU rounds twice written
// as explicit _rn intrinsics (nvcc would fuse them; the CPU build has
// -ffp-contract=off).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.cuh"

extern "C" {
#include "forward.h"  // HEAD_SLOTS
#include "gpu_head.h"
}

// --- the CPU's counter RNG and dropout, for the host and the device ------------------

// rng_hash of common/rng.h: the same 64-bit wrap-around integer arithmetic.
__host__ __device__ static inline uint64_t hd_rng_hash(uint64_t seed, uint64_t counter) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// rng_uniform of common/rng.h: 24 random bits, exact in float (an integer
// below 2^24 times a power of two).
__host__ __device__ static inline float hd_rng_uniform(uint64_t seed, uint64_t counter) {
    return (float)(hd_rng_hash(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

// dropout_forward's seed of one step (stream): the same derivation.
__host__ __device__ static inline uint64_t hd_dropout_seed(uint64_t seed, uint64_t stream) {
    return hd_rng_hash(seed ^ 0xD50D0D5EEDull, stream);
}

// How dropout runs for a batch, from dropout_forward's cases: 0 not at all
// (inference, no dropout layer, or rate <= 0: values and gradients pass),
// 1 the mask, 2 everything dropped (rate >= 1).
static int drop_mode(int applied, float rate) { return !applied || rate <= 0.0f ? 0 : rate >= 1.0f ? 2 : 1; }

// Element i of relu_forward then dropout_forward (common/layers.c): kept
// where rng_uniform(step_seed, i) >= rate, scaled by 1/keep (keep =
// (float)(1.0 - (double)rate), as the CPU forms it); *kept the mask.
__host__ __device__ static inline float hd_relu_dropout(float x, uint64_t i, int mode, float rate, float keep,
                                                       uint64_t step_seed, uint8_t *kept) {
    float v = x > 0.0f ? x : 0.0f;  // relu_forward: NaN -> 0 as there
    if (mode == 0) {
        *kept = 1;
        return v;
    }
    if (mode == 2) {
        *kept = 0;
        return 0.0f;
    }
    const int k = hd_rng_uniform(step_seed, i) >= rate;
    *kept = (uint8_t)k;
#ifdef __CUDA_ARCH__
    return k ? __fdiv_rn(v, keep) : 0.0f;
#else
    return k ? v / keep : 0.0f;
#endif
}

// --- kernels ----------------------------------------------------------------------------

#define TILE 16

// The product of the head's dense layers, 16 x 16 outputs per block through
// shared-memory tiles: for block kb = blockIdx.z,
//   C[kb][i][j] = sum over s in [kb*ks, min(kb*ks + ks, S)), ascending, of
//                 A(i, s) * B(s, j), one fmaf at a time from +0,
// A(i, s) = A[i*a_i + s*a_s], B(s, j) = B[s*b_s + j*b_j]; the blocks' C are
// M x Nc each, M*Nc apart. ks is a multiple of TILE. The per-element order
// is dense.c's product_ref (s ascending, fmaf, from 0), whose bits its SIMD
// kernels equal. CPU references: dense_forward's partial sum of one block of
// 512 rows of W (ks = 512), dense_backward's dW (one block over the batch),
// its din (cblas_sgemm there: another order).
__global__ static void product_kernel(const float *A, long a_i, long a_s, const float *B, long b_s, long b_j, int M,
                                      int Nc, int S, int ks, float *C) {
    __shared__ float As[TILE][TILE + 1];  // As[i][s]
    __shared__ float Bs[TILE][TILE + 1];  // Bs[s][j]
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
    const int s_begin = blockIdx.z * ks;
    const int s_end = min(s_begin + ks, S);
    float acc = 0.0f;
    for (int s0 = s_begin; s0 < s_end; s0 += TILE) {
        // Consecutive threads (tx) read along whichever index is contiguous.
        const int ai = a_i == 1 ? tx : ty, as = a_i == 1 ? ty : tx;
        As[ai][as] = i0 + ai < M && s0 + as < s_end ? A[(long)(i0 + ai) * a_i + (long)(s0 + as) * a_s] : 0.0f;
        const int bs = b_j == 1 ? ty : tx, bj = b_j == 1 ? tx : ty;
        Bs[bs][bj] = s0 + bs < s_end && j0 + bj < Nc ? B[(long)(s0 + bs) * b_s + (long)(j0 + bj) * b_j] : 0.0f;
        __syncthreads();
        const int n = min(TILE, s_end - s0);  // no padding term: fmaf(0, 0, -0) would turn -0 into +0
        for (int t = 0; t < n; t++) acc = __fmaf_rn(As[ty][t], Bs[t][tx], acc);
        __syncthreads();
    }
    const int i = i0 + ty, j = j0 + tx;
    if (i < M && j < Nc) C[(long)blockIdx.z * M * Nc + (long)i * Nc + j] = acc;
}

// out[e] = (bias ? bias[e % Nc] : 0) + P[0][e] + P[1][e] + ..., each add
// rounded, in block order. CPU references: run_blocks's reduction in
// dense.c (out = b, then += each block's partial sum); with one block and no
// bias, dense_backward's dW = 0 (grads_zero) + the product.
__global__ static void sum_blocks_kernel(const float *P, int blocks, long n, int Nc, const float *bias, float *out) {
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
        float o = bias ? bias[e % Nc] : 0.0f;
        for (int k = 0; k < blocks; k++) o = __fadd_rn(o, P[(long)k * n + e]);
        out[e] = o;
    }
}

// relu_forward then dropout_forward on n = N x units floats in place.
// step_seed: in device memory (the step's, read when the kernel runs: see
// gpu_head_step_queue); read only in mode 1.
__global__ static void relu_dropout_kernel(float *x, uint8_t *mask, long n, int mode, float rate, float keep,
                                           const uint64_t *step_seed) {
    const uint64_t seed = mode == 1 ? *step_seed : 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        uint8_t k;
        x[i] = hd_relu_dropout(x[i], (uint64_t)i, mode, rate, keep, seed, &k);
        mask[i] = k;
    }
}

// dropout_backward then relu_backward (forward.c's hidden_backward) on n
// floats of d in place: mode as the forward pass's; keep = 1.0f - rate as
// dropout_backward forms it; hidden the post-dropout output.
__global__ static void hidden_backward_kernel(const float *hidden, const uint8_t *mask, int mode, float keep, float *d,
                                              long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = d[i];
        if (mode == 1) v = mask[i] ? __fdiv_rn(v, keep) : 0.0f;
        else if (mode == 2) v = 0.0f;
        if (!(hidden[i] > 0.0f)) v = 0.0f;
        d[i] = v;
    }
}

// db[c] = 0 + dout[0][c] + dout[1][c] + ... (N rows of U): dense.c's
// bias_grad into a zeroed db.
__global__ static void bias_grad_kernel(const float *dout, int N, int U, float *db) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < U; c += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int i = 0; i < N; i++) s = __fadd_rn(s, dout[(long)i * U + c]);
        db[c] = s;
    }
}

// loss.c's sigmoidf.
__device__ static float d_sigmoidf(float z) {
    if (z >= 0.0f) return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-z)));
    float e = expf(z);
    return __fdiv_rn(e, __fadd_rn(1.0f, e));
}

// loss.c's softmax_row: the row's probabilities into p (may be NULL), and
// log(sum(exp(z))) returned; sums in double.
__device__ static double d_softmax_row(const float *z, float *p, int K) {
    float m = z[0];
    for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
    double s = 0.0;
    for (int k = 0; k < K; k++) s = __dadd_rn(s, exp(__dsub_rn((double)z[k], (double)m)));
    if (p)
        for (int k = 0; k < K; k++) p[k] = (float)__ddiv_rn(exp(__dsub_rn((double)z[k], (double)m)), s);
    return __dadd_rn((double)m, log(s));
}

// sigmoid_forward / softmax_forward (loss.c): one thread per row.
__global__ static void output_act_kernel(const float *logits, int N, int K, int sigmoid, float *probs) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x) {
        if (sigmoid) probs[i] = d_sigmoidf(logits[i]);
        else d_softmax_row(logits + (long)i * K, probs + (long)i * K, K);
    }
}

// loss_sigmoid_bce (K = 1, targets = the labels as floats) or
// loss_softmax_cce (loss.c), one block: each row's weighted term in double
// into rows[i] and its gradient into d (N x K), then thread 0 sums the
// terms in row order (the CPU's order) and writes the mean into *loss.
__global__ static void loss_kernel(const float *logits, const int32_t *labels, const float *weights, int N, int K,
                                   int sigmoid, float *d, double *rows, float *loss) {
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const double w = weights ? (double)weights[i] : 1.0;
        if (sigmoid) {
            // l = max(z,0) - z*t + log1p(exp(-|z|)); d = w * (p - t) / N
            const double z = logits[i], t = (double)(float)labels[i];
            const double l = __dadd_rn(__dsub_rn(z > 0 ? z : 0.0, __dmul_rn(z, t)), log1p(exp(-fabs(z))));
            rows[i] = __dmul_rn(w, l);
            const float p = d_sigmoidf(logits[i]);
            d[i] = (float)__ddiv_rn(__dmul_rn(w, __dsub_rn((double)p, t)), (double)N);
            continue;
        }
        // l = logsumexp(z) - z[y]; d_k = w * (softmax_k - [k == y]) / N
        const float *z = logits + (long)i * K;
        float *dk = d + (long)i * K;
        const int y = labels[i];
        const double lse = d_softmax_row(z, NULL, K);
        if (y < 0 || y >= K) {  // as the CPU: the loss NaN, the row's gradient zero
            rows[i] = NAN;
            for (int k = 0; k < K; k++) dk[k] = 0.0f;
            continue;
        }
        rows[i] = __dmul_rn(w, __dsub_rn(lse, (double)z[y]));
        for (int k = 0; k < K; k++) {
            const double pk = exp(__dsub_rn((double)z[k], lse));
            dk[k] = (float)__ddiv_rn(__dmul_rn(w, __dsub_rn(pk, k == y ? 1.0 : 0.0)), (double)N);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum = __dadd_rn(sum, rows[i]);
        *loss = N > 0 ? (float)__ddiv_rn(sum, (double)N) : 0.0f;
    }
}

// --- the head -------------------------------------------------------------------------------

// What changes from one training step to the next besides the labels and
// sample weights, read by the kernels from device memory.
typedef struct {
    uint64_t step_seed;  // dropout_forward's seed of the step: hd_dropout_seed(seed, stream)
    OptimRule rule;      // the step's optimizer rule (Adam's alpha changes every step)
} StepIn;

// One dense layer on the device: kernel D x U (Keras's layout), bias U,
// their gradients, and two slots per tensor.
typedef struct {
    int index;  // in m->layers
    int in, units, trainable;
    float *W, *b, *dW, *db;
    float *slot[2][2];  // [tensor: 0 kernel, 1 bias][slot]
} DenseDev;

struct GpuHead {
    const Model *m;
    int cap, D, K, sigmoid;
    int n_dense;         // 1: the output layer reads the features; 2: hidden, output
    DenseDev dense[2];   // [0] reads the features, [n_dense - 1] is the output layer
    int has_dropout;
    float rate;
    float *hidden, *d_hidden;  // cap x H (n_dense == 2)
    uint8_t *mask;             // cap x H
    float *logits, *probs, *d_logits;  // cap x K
    float *partial;            // the products' per-block sums
    size_t partial_floats;
    // A step's inputs (StepIn, then cap labels, then cap sample weights),
    // sent from the host block in one copy: in_bytes from step_in.
    char *step_in;
    StepIn *in;
    int32_t *labels;
    float *weights;
    size_t in_bytes;
    double *rows;
    float *loss;
    size_t bytes;
    cudaStream_t s;       // every operation's (gpu_head_create's)
    // The host side of a step's small copies (the input block up; logits,
    // probabilities and the loss down), page-locked when the system allows,
    // so that a step is queued without a wait (else the copies down wait, as
    // CUDA's copies into pageable memory do). The block: the input block's
    // layout (host_in, host_labels, host_weights), then out: logits (cap x
    // K), probs (cap x K), the loss.
    StepIn *host_in;
    int32_t *host_labels;
    float *host_weights, *host_out;
    void *host_block;
    int host_pinned;
    int step_N, step_weighted;  // the step prepared (gpu_head_step_prepare; 0: none)
    cudaEvent_t host_free;   // after the last step's copy of the input block
    cudaEvent_t out_ready;   // after the last copies into host_out
    int out_N, out_loss;     // rows host_out holds (0: none yet), and whether a loss
};

static int halloc(GpuHead *h, void **p, size_t bytes, const char *what) {
    CUDA_OK(cudaMalloc(p, bytes ? bytes : 4), what);
    h->bytes += bytes;
    return 0;
}
#define HALLOC(h, p, bytes, what) halloc(h, (void **)&(p), bytes, what)

static int round_tile(int n) { return (n + TILE - 1) / TILE * TILE; }

// dense.c's BLOCK_ROWS: the forward pass's fixed blocks of rows of W.
#define FWD_BLOCK 512

// Floats of the per-block sums a product of M x Nc outputs over S terms in
// blocks of ks takes.
static size_t partial_need(int M, int Nc, int S, int ks) { return (size_t)((S + ks - 1) / ks) * M * Nc; }

// out (M x Nc) = bias + the product (product_kernel's rule) in blocks of ks
// terms, their sums added in block order.
static int product(GpuHead *h, const float *A, long a_i, long a_s, const float *B, long b_s, long b_j, int M, int Nc,
                   int S, int ks, const float *bias, float *out, const char *what) {
    const int blocks = (S + ks - 1) / ks;
    if (M < 1 || Nc < 1 || S < 1) return err_set("GPU head: %s: empty product (%d x %d over %d)", what, M, Nc, S);
    if (partial_need(M, Nc, S, ks) > h->partial_floats)
        return err_set("GPU head: %s: the product needs %zu floats of partial sums, %zu allocated", what,
                       partial_need(M, Nc, S, ks), h->partial_floats);
    if ((M + TILE - 1) / TILE > 65535 || blocks > 65535)
        return err_set("GPU head: %s: a product of %d rows in %d blocks is too large for one grid", what, M, blocks);
    dim3 grid((unsigned)((Nc + TILE - 1) / TILE), (unsigned)((M + TILE - 1) / TILE), (unsigned)blocks);
    dim3 threads(TILE, TILE);
    product_kernel<<<grid, threads, 0, h->s>>>(A, a_i, a_s, B, b_s, b_j, M, Nc, S, ks, h->partial);
    CUDA_OK(cudaGetLastError(), what);
    const long n = (long)M * Nc;
    sum_blocks_kernel<<<gpu_blocks(n), 256, 0, h->s>>>(h->partial, blocks, n, Nc, bias, out);
    CUDA_OK(cudaGetLastError(), what);
    return 0;
}

static int create(GpuHead *h, const Model *m, int cap) {
    h->m = m, h->cap = cap;
    h->D = (int)model_feature_size(m);
    if (cap < 1) return err_set("GPU head: batch capacity must be at least 1, got %d", cap);
    // forward.c's head_layers: flatten, [dense (relu), [dropout]], output dense.
    int idx[2] = {-1, -1}, nd = 0;
    for (int i = m->n_base; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (l->kind == LAYER_FLATTEN) continue;
        if (l->kind == LAYER_DROPOUT && nd == 1 && i < m->n_layers - 1) {
            h->has_dropout = 1, h->rate = l->rate;
            continue;
        }
        if (l->kind != LAYER_DENSE || nd == 2)
            return err_set("GPU head: layer %s is not part of flatten, [dense, [dropout]], dense", l->name);
        idx[nd++] = i;
    }
    if (nd == 0 || idx[nd - 1] != m->n_layers - 1)
        return err_set("GPU head: the model does not end with a dense layer");
    h->n_dense = nd;
    const Layer *out = &m->layers[idx[nd - 1]];
    if (out->act != ACT_SIGMOID && out->act != ACT_SOFTMAX)
        return err_set("GPU head: %s: the output activation is neither sigmoid nor softmax", out->name);
    if (nd == 2 && m->layers[idx[0]].act != ACT_RELU)
        return err_set("GPU head: %s: the hidden layer's activation is not relu", m->layers[idx[0]].name);
    h->sigmoid = out->act == ACT_SIGMOID;
    h->K = out->units;
    if (h->sigmoid && h->K != 1) return err_set("GPU head: %s: a sigmoid output with %d units", out->name, h->K);
    size_t part = 0;
    for (int k = 0; k < nd; k++) {
        const Layer *l = &m->layers[idx[k]];
        DenseDev *d = &h->dense[k];
        d->index = idx[k], d->units = l->units, d->trainable = l->trainable;
        d->in = l->units > 0 ? (int)(l->n_kernel / l->units) : 0;
        const int want_in = k == 0 ? h->D : h->dense[0].units;
        if (d->in != want_in || l->n_bias != l->units || !l->kernel || !l->bias)
            return err_set("GPU head: %s: kernel %ld floats for %d inputs x %d units (or weights not loaded)", l->name,
                           l->n_kernel, want_in, l->units);
        const size_t nk = (size_t)l->n_kernel * sizeof(float), nb = (size_t)l->n_bias * sizeof(float);
        if (HALLOC(h, d->W, nk, l->name) < 0 || HALLOC(h, d->b, nb, l->name) < 0 ||
            HALLOC(h, d->dW, nk, l->name) < 0 || HALLOC(h, d->db, nb, l->name) < 0)
            return -1;
        for (int s = 0; s < 2; s++) {
            if (HALLOC(h, d->slot[0][s], nk, l->name) < 0 || HALLOC(h, d->slot[1][s], nb, l->name) < 0) return -1;
            CUDA_OK(cudaMemset(d->slot[0][s], 0, nk), "zeroing the head's optimizer slots");
            CUDA_OK(cudaMemset(d->slot[1][s], 0, nb), "zeroing the head's optimizer slots");
        }
        // The products this layer runs: forward, dW, din.
        size_t need[3] = {partial_need(cap, d->units, d->in, FWD_BLOCK),
                          partial_need(d->in, d->units, cap, round_tile(cap)),
                          partial_need(cap, d->in, d->units, round_tile(d->units))};
        for (int q = 0; q < 3; q++)
            if (need[q] > part) part = need[q];
    }
    const size_t C = (size_t)cap, H = nd == 2 ? (size_t)h->dense[0].units : 0, K = (size_t)h->K;
    if (H) {
        if (HALLOC(h, h->hidden, C * H * sizeof(float), "the head's buffers") < 0 ||
            HALLOC(h, h->d_hidden, C * H * sizeof(float), "the head's buffers") < 0 ||
            HALLOC(h, h->mask, C * H, "the head's buffers") < 0)
            return -1;
    }
    if (HALLOC(h, h->logits, C * K * sizeof(float), "the head's buffers") < 0 ||
        HALLOC(h, h->probs, C * K * sizeof(float), "the head's buffers") < 0 ||
        HALLOC(h, h->d_logits, C * K * sizeof(float), "the head's buffers") < 0 ||
        HALLOC(h, h->partial, part * sizeof(float), "the head's partial sums") < 0 ||
        HALLOC(h, h->rows, C * sizeof(double), "the head's buffers") < 0 ||
        HALLOC(h, h->loss, sizeof(float), "the head's buffers") < 0)
        return -1;
    h->partial_floats = part;
    // The step's input block (StepIn, labels, sample weights; 16-byte
    // aligned parts) on the device, and on the host followed by logits,
    // probs and the loss.
    const size_t at_labels = (sizeof(StepIn) + 15) / 16 * 16, at_weights = at_labels + (C * sizeof(int32_t) + 15) / 16 * 16;
    h->in_bytes = at_weights + (C * sizeof(float) + 15) / 16 * 16;
    if (HALLOC(h, h->step_in, h->in_bytes, "the head's buffers") < 0) return -1;
    h->in = (StepIn *)h->step_in;
    h->labels = (int32_t *)(h->step_in + at_labels), h->weights = (float *)(h->step_in + at_weights);
    const size_t host_bytes = h->in_bytes + (2 * C * K + 1) * sizeof(float);
    h->host_block = gpu_host_alloc(host_bytes);
    h->host_pinned = h->host_block != NULL;
    if (!h->host_block && !(h->host_block = malloc(host_bytes))) return err_set("GPU head: out of memory");
    memset(h->host_block, 0, host_bytes);  // the block is sent whole: no unwritten bytes
    h->host_in = (StepIn *)h->host_block;
    h->host_labels = (int32_t *)((char *)h->host_block + at_labels);
    h->host_weights = (float *)((char *)h->host_block + at_weights);
    h->host_out = (float *)((char *)h->host_block + h->in_bytes);
    // Blocking waits (cudaEventBlockingSync), as gpu_select_device's: the
    // loader threads need the cores.
    CUDA_OK(cudaEventCreateWithFlags(&h->host_free, cudaEventDisableTiming | cudaEventBlockingSync),
            "creating an event");
    CUDA_OK(cudaEventCreateWithFlags(&h->out_ready, cudaEventDisableTiming | cudaEventBlockingSync),
            "creating an event");
    if (gpu_head_upload(h, m, NULL) < 0) return -1;
    CUDA_OK(cudaDeviceSynchronize(), "setting up the head");
    return 0;
}

extern "C" GpuHead *gpu_head_create(const Model *m, int cap, void *stream) {
    GpuHead *h = (GpuHead *)calloc(1, sizeof(GpuHead));
    if (!h) return err_set("GPU head: out of memory"), (GpuHead *)NULL;
    h->s = (cudaStream_t)stream;
    if (create(h, m, cap) < 0) {
        ErrKept keep;
        err_keep(&keep);
        gpu_head_free(h);
        err_restore(&keep);
        return NULL;
    }
    return h;
}

extern "C" void gpu_head_free(GpuHead *h) {
    if (!h) return;
    for (int k = 0; k < 2; k++) {
        DenseDev *d = &h->dense[k];
        cudaFree(d->W), cudaFree(d->b), cudaFree(d->dW), cudaFree(d->db);
        for (int t = 0; t < 2; t++)
            for (int s = 0; s < 2; s++) cudaFree(d->slot[t][s]);
    }
    cudaFree(h->hidden), cudaFree(h->d_hidden), cudaFree(h->mask);
    cudaFree(h->logits), cudaFree(h->probs), cudaFree(h->d_logits), cudaFree(h->partial);
    cudaFree(h->step_in), cudaFree(h->rows), cudaFree(h->loss);
    if (h->host_pinned) gpu_host_free(h->host_block);
    else free(h->host_block);
    if (h->host_free) cudaEventDestroy(h->host_free);
    if (h->out_ready) cudaEventDestroy(h->out_ready);
    free(h);
}

extern "C" size_t gpu_head_bytes(const GpuHead *h) { return h->bytes; }
extern "C" int gpu_head_pinned(const GpuHead *h) { return h->host_pinned; }

// --- forward ----------------------------------------------------------------------------------

// Queues the copies of the logits, the probabilities and (with_loss) the
// loss of N rows into host_out (no event: a step's may be captured). The
// previous results must have been fetched (gpu_head_results) or dropped:
// they are overwritten.
static int queue_outputs(GpuHead *h, int N, int with_loss) {
    const size_t bytes = (size_t)N * h->K * sizeof(float), cap_k = (size_t)h->cap * h->K;
    CUDA_OK(cudaMemcpyAsync(h->host_out, h->logits, bytes, cudaMemcpyDeviceToHost, h->s), "the head's logits");
    CUDA_OK(cudaMemcpyAsync(h->host_out + cap_k, h->probs, bytes, cudaMemcpyDeviceToHost, h->s),
            "the head's probabilities");
    if (with_loss)
        CUDA_OK(cudaMemcpyAsync(h->host_out + 2 * cap_k, h->loss, sizeof(float), cudaMemcpyDeviceToHost, h->s),
                "the head's loss");
    return 0;
}

// The results queued last are N rows (with_loss: and a loss): out_ready
// after them.
static int outputs_queued(GpuHead *h, int N, int with_loss) {
    CUDA_OK(cudaEventRecord(h->out_ready, h->s), "recording an event");
    h->out_N = N, h->out_loss = with_loss;
    return 0;
}

// The forward pass of N rows of feat, dropout by mode (drop_mode; 1 reads
// the step's seed from the input block): head_forward.
static int forward(GpuHead *h, const float *feat, int N, int mode) {
    const Model *m = h->m;
    const DenseDev *first = &h->dense[0], *out = &h->dense[h->n_dense - 1];
    // The layer that reads the features: head_forward_first (dense_forward).
    float *y0 = h->n_dense == 2 ? h->hidden : h->logits;
    if (product(h, feat, h->D, 1, first->W, first->units, 1, N, first->units, h->D, FWD_BLOCK, first->b, y0,
                m->layers[first->index].name) < 0)
        return -1;
    if (h->n_dense == 2) {
        // head_forward_rest: relu, dropout (stream, seed), the output layer.
        const int H = first->units;
        const long n = (long)N * H;
        const float keep = (float)(1.0 - (double)h->rate);
        relu_dropout_kernel<<<gpu_blocks(n), 256, 0, h->s>>>(h->hidden, h->mask, n, mode, h->rate, keep,
                                                             &h->in->step_seed);
        CUDA_OK(cudaGetLastError(), "the head's relu and dropout");
        if (product(h, h->hidden, H, 1, out->W, out->units, 1, N, out->units, H, FWD_BLOCK, out->b, h->logits,
                    m->layers[out->index].name) < 0)
            return -1;
    }
    output_act_kernel<<<(N + 127) / 128, 128, 0, h->s>>>(h->logits, N, h->K, h->sigmoid, h->probs);
    CUDA_OK(cudaGetLastError(), "the head's output activation");
    return 0;
}

extern "C" int gpu_head_predict(GpuHead *h, const float *feat, int N) {
    if (N < 1 || N > h->cap) return err_set("GPU head: batch of %d rows (at most %d)", N, h->cap);
    if (forward(h, feat, N, 0) < 0 || queue_outputs(h, N, 0) < 0) return -1;
    return outputs_queued(h, N, 0);
}

// --- backward and update ------------------------------------------------------------------------

// dense_backward of layer d on N rows: dW = x^T dout, db = column sums of
// dout (both overwritten: the gradients live one step), and, if dx is not
// NULL, dx = dout W^T (from the weights before the update).
static int dense_backward_dev(GpuHead *h, const DenseDev *d, const float *x, int N, const float *dout, float *dx) {
    const char *name = h->m->layers[d->index].name;
    bias_grad_kernel<<<(d->units + 255) / 256, 256, 0, h->s>>>(dout, N, d->units, d->db);
    CUDA_OK(cudaGetLastError(), name);
    // dW[r][c] = sum over n of x[n][r] * dout[n][c]: A(r, n) = x[n*in + r], B(n, c) = dout[n*U + c].
    if (product(h, x, 1, d->in, dout, d->units, 1, d->in, d->units, N, round_tile(N), NULL, d->dW, name) < 0)
        return -1;
    // dx[n][r] = sum over c of dout[n][c] * W[r][c]: A(n, c) = dout[n*U + c], B(c, r) = W[r*U + c].
    if (dx && product(h, dout, d->units, 1, d->W, 1, d->units, N, d->in, d->units, round_tile(d->units), NULL, dx,
                      name) < 0)
        return -1;
    return 0;
}

extern "C" int gpu_head_step_prepare(GpuHead *h, const int32_t *labels, const float *sample_weights, int N,
                                     uint64_t seed, uint64_t stream, const OptimRule *r) {
    if (N < 1 || N > h->cap) return err_set("GPU head: batch of %d rows (at most %d)", N, h->cap);
    // The input block is free once the previous step's copy has read it.
    CUDA_OK(cudaEventSynchronize(h->host_free), "the head's previous step");
    h->host_in->step_seed = hd_dropout_seed(seed, stream);
    h->host_in->rule = *r;
    memcpy(h->host_labels, labels, (size_t)N * sizeof(int32_t));
    if (sample_weights) memcpy(h->host_weights, sample_weights, (size_t)N * sizeof(float));
    h->step_N = N, h->step_weighted = sample_weights != NULL;
    return 0;
}

extern "C" int gpu_head_step_queue(GpuHead *h, const float *feat, float *d_feat) {
    const int N = h->step_N;
    if (!N) return err_set("GPU head: no step prepared (gpu_head_step_prepare first)");
    CUDA_OK(cudaMemcpyAsync(h->step_in, h->host_block, h->in_bytes, cudaMemcpyHostToDevice, h->s),
            "uploading labels");
    const int mode = drop_mode(h->has_dropout, h->rate);
    if (forward(h, feat, N, mode) < 0) return -1;
    loss_kernel<<<1, 256, 0, h->s>>>(h->logits, h->labels, h->step_weighted ? h->weights : NULL, N, h->K, h->sigmoid,
                                     h->d_logits, h->rows, h->loss);
    CUDA_OK(cudaGetLastError(), "the head's loss");
    // head_backward: the output layer, then (dropout, relu and) the hidden one.
    const DenseDev *first = &h->dense[0], *out = &h->dense[h->n_dense - 1];
    if (h->n_dense == 2) {
        const long n = (long)N * first->units;
        if (dense_backward_dev(h, out, h->hidden, N, h->d_logits, h->d_hidden) < 0) return -1;
        hidden_backward_kernel<<<gpu_blocks(n), 256, 0, h->s>>>(h->hidden, h->mask, mode, 1.0f - h->rate, h->d_hidden, n);
        CUDA_OK(cudaGetLastError(), "the head's dropout and relu backward");
        if (dense_backward_dev(h, first, feat, N, h->d_hidden, d_feat) < 0) return -1;
    } else {
        if (dense_backward_dev(h, out, feat, N, h->d_logits, d_feat) < 0) return -1;
    }
    // finetune_step's optim_update of every trainable head layer, after the
    // whole backward pass (din read the old weights).
    for (int k = 0; k < h->n_dense; k++) {
        DenseDev *d = &h->dense[k];
        if (!d->trainable) continue;
        const char *name = h->m->layers[d->index].name;
        if (gpu_optim_launch(&h->in->rule, d->W, d->dW, d->slot[0][0], d->slot[0][1], (long)d->in * d->units, name,
                             h->s) < 0 ||
            gpu_optim_launch(&h->in->rule, d->b, d->db, d->slot[1][0], d->slot[1][1], d->units, name, h->s) < 0)
            return -1;
    }
    return queue_outputs(h, N, 1);
}

extern "C" int gpu_head_step_queued(GpuHead *h) {
    const int N = h->step_N;
    if (!N) return err_set("GPU head: no step prepared (gpu_head_step_prepare first)");
    h->step_N = 0;
    CUDA_OK(cudaEventRecord(h->host_free, h->s), "recording an event");
    return outputs_queued(h, N, 1);
}

extern "C" int gpu_head_results(GpuHead *h, float *logits, float *probs, float *loss) {
    if (!h->out_N) return err_set("GPU head: no step's results to fetch");
    // The wait for the copies is also the wait for every kernel queued
    // before them: an error of theirs shows here.
    CUDA_OK(cudaEventSynchronize(h->out_ready), "the head's step");
    const size_t n = (size_t)h->out_N * h->K, cap_k = (size_t)h->cap * h->K;
    if (logits) memcpy(logits, h->host_out, n * sizeof(float));
    if (probs) memcpy(probs, h->host_out + cap_k, n * sizeof(float));
    if (loss) *loss = h->out_loss ? h->host_out[2 * cap_k] : NAN;
    return 0;
}

// --- host copies ----------------------------------------------------------------------------------

static int copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, const char *name) {
    cudaError_t e = cudaMemcpy(dst, src, bytes, kind);
    if (e != cudaSuccess) return err_set("GPU: %s: copying weights or slots: %s", name, cudaGetErrorString(e));
    return 0;
}

// Weights and slots of every head layer, host <-> device.
static int head_copy(GpuHead *h, const Model *m, float *const *slots, int to_device) {
    if (m != h->m) return err_set("GPU head: copies with another model than the head's");
    const cudaMemcpyKind kind = to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    for (int k = 0; k < h->n_dense; k++) {
        DenseDev *d = &h->dense[k];
        const Layer *l = &m->layers[d->index];
        const size_t bytes[2] = {(size_t)l->n_kernel * sizeof(float), (size_t)l->n_bias * sizeof(float)};
        float *host[2] = {l->kernel, l->bias}, *dev[2] = {d->W, d->b};
        for (int t = 0; t < 2; t++) {
            if (copy(to_device ? (void *)dev[t] : (void *)host[t], to_device ? (void *)host[t] : (void *)dev[t],
                     bytes[t], kind, l->name) < 0)
                return -1;
            for (int s = 0; slots && s < 2; s++) {
                float *hs = HEAD_SLOTS(slots, d->index, t)[s];
                if (hs && copy(to_device ? (void *)d->slot[t][s] : (void *)hs,
                               to_device ? (void *)hs : (void *)d->slot[t][s], bytes[t], kind, l->name) < 0)
                    return -1;
            }
        }
    }
    return 0;
}

extern "C" int gpu_head_download(GpuHead *h, Model *m, float *const *slots) { return head_copy(h, m, slots, 0); }
extern "C" int gpu_head_upload(GpuHead *h, const Model *m, float *const *slots) { return head_copy(h, m, slots, 1); }

extern "C" int gpu_head_dropout_host(float *x, size_t n, float rate, uint64_t seed, uint64_t stream, uint8_t *mask) {
    const int mode = drop_mode(1, rate);
    const float keep = (float)(1.0 - (double)rate);
    const uint64_t step_seed = hd_dropout_seed(seed, stream);
    for (size_t i = 0; i < n; i++) {
        uint8_t k;
        x[i] = hd_relu_dropout(x[i], (uint64_t)i, mode, rate, keep, step_seed, &k);
        if (mask) mask[i] = k;
    }
    return 0;
}
