// Dense layer: forward, backward and the optimizer step, as loops over
// panels of rows of W, on one product primitive (an AVX2 kernel next to its
// portable reference).
//
// Work is split by blocks of BLOCK_ROWS rows of W. A forward pass sums each
// block's share of the output separately (a partial sum, from zero, rows in
// order), then adds the blocks' sums to the bias in block order. The blocks
// are fixed, so the sums are the same on any number of threads. Splitting W
// by rows rather than columns also keeps each core on whole cache lines and
// pages of W: two cores writing alternate halves of the same rows slow each
// other down, each one's prefetcher pulling in the lines the other writes.
#include "dense.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_KERNELS 1
#else
#define HAVE_AVX2_KERNELS 0
#endif

enum {
    // Rows of W per task, and per partial sum of the forward pass.
    BLOCK_ROWS = 512,
    // A panel: rows of W whose share of `in` is copied to contiguous memory
    // (see pack_panel), and whose gradient is computed CHUNK_COLS columns at
    // a time. A panel's chunk of W, of the gradient and of out stay in L1.
    PANEL_ROWS = 32,
    CHUNK_COLS = 128,
    PACK_FLOATS = 4096,  // at most 16 KB of `in` per panel copy (stack)
    // Columns per AVX2 block (two vectors), and rows: 6 x 2 accumulators
    // cover the FMA latency and leave registers for w and a broadcast.
    KERNEL_COLS = 16,
    KERNEL_ROWS = 6,
    // Row blocks of din (sgemm calls whose shape is fixed, see dense_backward).
    DIN_ROWS = 256,
};

static int simd_state = -1;  // -1: not decided yet

static int cpu_has_avx2_fma(void) {
#if HAVE_AVX2_KERNELS
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int dense_simd(void) {
    if (simd_state < 0) simd_state = cpu_has_avx2_fma();
    return simd_state;
}

void dense_set_simd(int on) { simd_state = on && cpu_has_avx2_fma(); }

static inline int min_int(int a, int b) { return a < b ? a : b; }

// --- the product ----------------------------------------------------------------
// Both passes are one product: out[i][c] += sum over s < S of x(s, i) * w[s][c]
// for i < M and c in [c0, c1), where x(s, i) = x[s * xs + i * xi], s
// ascending, one fused multiply-add at a time.
//   forward:  s = row of W, i = sample:     out = the partial sum, w = W
//   gradient: s = sample,   i = row of W:   out = dW's rows (from 0), w = dout

// The reference: fmaf, s outermost, so that each element sees exactly the
// operations of the AVX2 kernel, in the same order. Its inner loop runs
// along columns, so compilers vectorise it where FMA is part of the base ISA
// (AArch64).
static void product_ref(const float *x, int xs, int xi, int S, int M, const float *w, int ldw, int c0, int c1,
                        float *out, int ldo) {
    for (int s = 0; s < S; s++) {
        const float *ws = w + (size_t)s * ldw;
        for (int i = 0; i < M; i++) {
            float xv = x[(size_t)s * xs + (size_t)i * xi];
            float *o = out + (size_t)i * ldo;
            for (int c = c0; c < c1; c++) o[c] = fmaf(xv, ws[c], o[c]);
        }
    }
}

#if HAVE_AVX2_KERNELS
// NN rows by 16 columns of out in registers while the rows of w stream past.
// NN is a constant at every call.
__attribute__((target("avx2,fma"), always_inline)) static inline void product_block_avx2(
    const float *x, int xs, int xi, int S, const float *w, int ldw, float *out, int ldo, const int NN) {
    __m256 a0[KERNEL_ROWS], a1[KERNEL_ROWS];
#pragma GCC unroll 6
    for (int i = 0; i < NN; i++) a0[i] = _mm256_loadu_ps(out + i * ldo), a1[i] = _mm256_loadu_ps(out + i * ldo + 8);
    for (int s = 0; s < S; s++, x += xs, w += ldw) {
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
#pragma GCC unroll 6
        for (int i = 0; i < NN; i++) {
            const __m256 xb = _mm256_broadcast_ss(x + i * xi);
            a0[i] = _mm256_fmadd_ps(xb, w0, a0[i]), a1[i] = _mm256_fmadd_ps(xb, w1, a1[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NN; i++) _mm256_storeu_ps(out + i * ldo, a0[i]), _mm256_storeu_ps(out + i * ldo + 8, a1[i]);
}

// All M rows of a 16-column block, in groups of at most 6 rows as even as
// possible (20 = 5+5+5+5: a group of 2 would leave the FMA units idle).
__attribute__((target("avx2,fma"))) static void product_cols_avx2(const float *x, int xs, int xi, int S, int M,
                                                                  const float *w, int ldw, float *out, int ldo) {
    int groups = (M + KERNEL_ROWS - 1) / KERNEL_ROWS;
    for (int g = 0, i = 0; g < groups; g++) {
        int nn = (M - i) / (groups - g);  // the rest, shared evenly by the groups left
        const float *xg = x + (size_t)i * xi;
        float *og = out + (size_t)i * ldo;
        switch (nn) {
        case 6: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 6); break;
        case 5: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 5); break;
        case 4: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 4); break;
        case 3: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 3); break;
        case 2: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 2); break;
        default: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, 1); break;
        }
        i += nn;
    }
}
#endif

// The AVX2 kernel on whole 16-column blocks, the reference for the rest.
static void product(const float *x, int xs, int xi, int S, int M, const float *w, int ldw, int c0, int c1,
                    float *out, int ldo) {
    int c = c0;
#if HAVE_AVX2_KERNELS
    if (simd_state == 1)
        for (; c + KERNEL_COLS <= c1; c += KERNEL_COLS) product_cols_avx2(x, xs, xi, S, M, w + c, ldw, out + c, ldo);
#endif
    if (c < c1) product_ref(x, xs, xi, S, M, w, ldw, c, c1, out, ldo);
}

// A panel's share of `in` (its N rows, columns r0..r1) copied to contiguous
// memory, buf[n][r - r0]: the kernel then reads a few KB instead of N rows D
// floats apart, which VGG's power-of-two D puts all in the same L1 set.
static void pack_panel(const float *in, int ldi, int N, int r0, int r1, float *buf) {
    for (int n = 0; n < N; n++) memcpy(buf + (size_t)n * (r1 - r0), in + (size_t)n * ldi + r0, sizeof(float) * (r1 - r0));
}

// --- tasks: blocks of rows of W -------------------------------------------------

typedef struct DenseJob DenseJob;
// What to do with rows of the gradient: g[k][0:n] = dW[row + k][c0:c0+n], k < R, row stride ldg.
typedef void (*UseGrad)(const DenseJob *j, int row, int R, int c0, int n, const float *g, int ldg);

struct DenseJob {
    int N, D, U;
    const float *in;     // N x D
    float *W;            // D x U
    const float *dout;   // N x U: for the gradient, when use_grad
    UseGrad use_grad;
    float *dW;           // add_grad's target
    const OptimRule *rule;
    float *const *slots; // apply_grad's
    const float *fwd_in; // fwd_N x D: the forward pass (the next batch, or in), when not NULL
    int fwd_N;
    float *partials;     // fwd_N x U per block, partial_stride floats apart
    size_t partial_stride;
    float *din;          // din_task's output
};

// One block of rows of W, a panel and a chunk of columns at a time: the
// gradient of the chunk (and its use), then the forward pass's partial sum
// over the chunk, while it is in L1.
static void block_task(void *ctx, int t) {
    const DenseJob job = *(const DenseJob *)ctx, *j = &job;  // a copy: ctx is on the calling thread's stack
    int rb0 = t * BLOCK_ROWS, rb1 = min_int(rb0 + BLOCK_ROWS, j->D);
    float g[PANEL_ROWS * CHUNK_COLS], xg[PACK_FLOATS], xf[PACK_FLOATS];
    float *P = j->fwd_in ? j->partials + t * j->partial_stride : NULL;
    if (P) memset(P, 0, sizeof(float) * (size_t)j->fwd_N * j->U);
    int most = j->use_grad && j->N > j->fwd_N ? j->N : j->fwd_N;
    int rows = min_int(PANEL_ROWS, PACK_FLOATS / (most > 0 ? most : 1));
    int packed = rows > 0;  // else a batch too large to copy: read `in` in place, a row of W at a time
    if (!packed) rows = 1;
    for (int p0 = rb0; p0 < rb1; p0 += rows) {
        int p1 = min_int(p0 + rows, rb1), pr = p1 - p0;
        // x(s, i) for the gradient (s = sample, i = row) and the forward pass (s = row, i = sample).
        const float *x = j->use_grad ? j->in + p0 : NULL, *xn = P ? j->fwd_in + p0 : NULL;
        int ld = j->D, ldn = j->D;
        if (packed && j->use_grad) pack_panel(j->in, j->D, j->N, p0, p1, xg), x = xg, ld = pr;
        if (packed && P) pack_panel(j->fwd_in, j->D, j->fwd_N, p0, p1, xf), xn = xf, ldn = pr;
        for (int c0 = 0; c0 < j->U; c0 += CHUNK_COLS) {
            int c1 = min_int(c0 + CHUNK_COLS, j->U), nc = c1 - c0;
            if (j->use_grad) {
                memset(g, 0, sizeof(float) * (size_t)pr * nc);
                product(x, ld, 1, j->N, pr, j->dout + c0, j->U, 0, nc, g, nc);
                j->use_grad(j, p0, pr, c0, nc, g, nc);
            }
            if (P) product(xn, 1, ldn, pr, j->fwd_N, j->W + (size_t)p0 * j->U, j->U, c0, c1, P, j->U);
        }
    }
}

static void add_grad(const DenseJob *j, int row, int R, int c0, int n, const float *g, int ldg) {
    for (int k = 0; k < R; k++) {
        float *dw = j->dW + (size_t)(row + k) * j->U + c0;
        for (int c = 0; c < n; c++) dw[c] += g[k * ldg + c];
    }
}

static void apply_grad(const DenseJob *j, int row, int R, int c0, int n, const float *g, int ldg) {
    for (int k = 0; k < R; k++) {
        size_t at = (size_t)(row + k) * j->U + c0;
        float *slots[2] = {j->rule->n_slots > 0 ? j->slots[0] + at : NULL,
                           j->rule->n_slots > 1 ? j->slots[1] + at : NULL};
        optim_apply(j->rule, j->W + at, g + k * ldg, slots, (size_t)n);
    }
}

// The blocks' partial sums of the forward pass live here between the
// parallel loop and the reduction. Kept and grown as needed: like the pool,
// the functions here are called from one thread at a time.
static float *partials;
static size_t partials_cap;

// Runs the blocks of j; with a forward pass, out = b + the blocks' partial
// sums in block order.
static int run_blocks(DenseJob *j, const float *b, float *out) {
    int blocks = (j->D + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if (j->fwd_in) {
        // Blocks 64 bytes apart: tasks never share a cache line.
        j->partial_stride = ((size_t)j->fwd_N * j->U + 15) / 16 * 16;
        size_t need = j->partial_stride * blocks;
        if (need > partials_cap) {
            free(partials);
            partials = aligned_alloc(64, need * sizeof(float));
            partials_cap = partials ? need : 0;
            if (!partials)
                return err_set("out of memory for the dense layer's partial sums (%zu MB)", need * 4 >> 20);
        }
        j->partials = partials;
    }
    dense_simd();
    parallel_for(blocks, block_task, j);
    if (!j->fwd_in) return 0;
    for (int n = 0; n < j->fwd_N; n++) {
        float *o = out + (size_t)n * j->U;
        if (b) memcpy(o, b, sizeof(float) * j->U);
        else memset(o, 0, sizeof(float) * j->U);
        for (int k = 0; k < blocks; k++) {
            const float *p = partials + k * j->partial_stride + (size_t)n * j->U;
            for (int c = 0; c < j->U; c++) o[c] += p[c];
        }
    }
    return 0;
}

int dense_forward(const float *in, int N, int D, const float *W, const float *b, int U, float *out) {
    DenseJob j = {.N = N, .D = D, .U = U, .W = (float *)W, .fwd_in = in, .fwd_N = N};
    return run_blocks(&j, b, out);
}

// din[:, rows] = dout @ W[rows]^T, one fixed block of rows per task.
static void din_task(void *ctx, int t) {
    const DenseJob *j = ctx;
    int r0 = t * DIN_ROWS, nr = min_int(DIN_ROWS, j->D - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->N, nr, j->U, 1.0f, j->dout, j->U,
                j->W + (size_t)r0 * j->U, j->U, 0.0f, j->din + r0, j->D);
}

// db[0:nc] += the column sums of dout's first nc columns (row stride ldd), n ascending.
static void bias_grad(const float *dout, int ldd, int N, int nc, float *db) {
    for (int i = 0; i < N; i++)
        for (int c = 0; c < nc; c++) db[c] += dout[(size_t)i * ldd + c];
}

void dense_backward(const float *in, int N, int D, const float *W, int U, const float *dout, float *din, float *dW,
                    float *db) {
    if (db) bias_grad(dout, U, N, U, db);
    DenseJob j = {.N = N, .D = D, .U = U, .in = in, .W = (float *)W, .dout = dout, .dW = dW, .din = din};
    if (dW) {
        j.use_grad = add_grad;
        run_blocks(&j, NULL, NULL);  // no forward pass: cannot fail
    }
    // din only matters when fine-tuning, where the GPU does the work; sgemm
    // in blocks whose shape does not depend on the thread count (call BLAS
    // single-threaded meanwhile, as train does) keeps it reproducible.
    if (din) parallel_for((D + DIN_ROWS - 1) / DIN_ROWS, din_task, &j);
}

int dense_update_forward(const float *in, int N, int D, float *W, float *b, int U, const float *dout,
                         const OptimRule *rule, float *const *kernel_slots, float *const *bias_slots,
                         const float *next_in, int next_N, float *next_out) {
    for (int c0 = 0; b && c0 < U; c0 += CHUNK_COLS) {  // a slice at a time: no allocation
        int nc = min_int(CHUNK_COLS, U - c0);
        float db[CHUNK_COLS] = {0};
        bias_grad(dout + c0, U, N, nc, db);
        float *slots[2] = {rule->n_slots > 0 ? bias_slots[0] + c0 : NULL, rule->n_slots > 1 ? bias_slots[1] + c0 : NULL};
        optim_apply(rule, b + c0, db, slots, (size_t)nc);
    }
    DenseJob j = {.N = N, .D = D, .U = U, .in = in, .W = W, .dout = dout, .use_grad = apply_grad, .rule = rule,
                  .slots = kernel_slots, .fwd_in = next_in, .fwd_N = next_N};
    return run_blocks(&j, b, next_out);
}
