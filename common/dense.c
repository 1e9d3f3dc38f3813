// Dense layer: forward, backward and the optimizer step, as loops over
// panels of rows of W, on one product primitive (AVX-512 and AVX2 kernels
// next to their portable reference).
//
// Work is split by blocks of BLOCK_ROWS rows of W. A forward pass sums each
// block's share of the output separately (a partial sum, from zero, rows in
// order), then adds the blocks' sums to the bias in block order. The blocks
// are fixed, so the sums are the same on any number of threads. Splitting W
// by rows rather than columns also keeps each core on whole cache lines and
// pages of W: two cores writing alternate halves of the same rows slow each
// other down, each one's prefetcher pulling in the lines the other writes.
#include "dense.h"

#include "blas_setup.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "parallel.h"
#include "simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_KERNELS 1
#else
#define HAVE_X86_KERNELS 0
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
    // Columns per kernel block (two vectors), and rows: AVX2's 6 x 2
    // accumulators cover the FMA latency and leave registers for w and a
    // broadcast; AVX-512 has 32 registers, room for 12 x 2.
    AVX2_COLS = 16,
    AVX2_ROWS = 6,
    AVX512_COLS = 32,
    AVX512_ROWS = 12,
    // Row blocks of din (sgemm calls whose shape is fixed, see dense_backward).
    DIN_ROWS = 256,
};

static inline int min_int(int a, int b) { return a < b ? a : b; }

// --- the product ----------------------------------------------------------------
// Both passes are one product: p[i][c] = sum over s < S of x(s, i) * w[s][c]
// for i < M and c in [c0, c1), where x(s, i) = x[s * xs + i * xi], s
// ascending, one fused multiply-add at a time, and what is done with it:
//   ACC_ADD  out += p, each term added to out in turn (the forward pass:
//            out = the block's partial sum, w = W, s = row of W, i = sample)
//   ACC_SET  out = p, from zero (the gradient: out = rows of dW, w = dout,
//            s = sample, i = row of W)
//   ACC_SGD  out -= p * lr, the product from zero, then multiplied and
//            subtracted as optim_apply's plain SGD does (out = rows of W):
//            Keras's default optimizer, applied while the gradient is in
//            registers instead of stored and read back.
typedef enum { ACC_ADD, ACC_SET, ACC_SGD } Acc;

// The reference: fmaf, s outermost, so that each element sees exactly the
// operations of the SIMD kernels, in the same order. Its inner loop runs
// along columns, so compilers vectorise it where FMA is part of the base ISA
// (AArch64).
static void product_ref(const float *x, int xs, int xi, int S, int M, const float *w, int ldw, int c0, int c1,
                        float *out, int ldo, Acc acc, float lr) {
    if (acc == ACC_SGD) {  // the product into a tile (M <= PANEL_ROWS, c1 - c0 <= CHUNK_COLS), then the step
        float p[PANEL_ROWS * CHUNK_COLS];
        int n = c1 - c0;
        product_ref(x, xs, xi, S, M, w + c0, ldw, 0, n, p, n, ACC_SET, 0);
        for (int i = 0; i < M; i++)
            for (int c = 0; c < n; c++) out[(size_t)i * ldo + c0 + c] -= p[i * n + c] * lr;
        return;
    }
    for (int i = 0; acc == ACC_SET && i < M; i++) memset(out + (size_t)i * ldo + c0, 0, sizeof(float) * (c1 - c0));
    for (int s = 0; s < S; s++) {
        const float *ws = w + (size_t)s * ldw;
        for (int i = 0; i < M; i++) {
            float xv = x[(size_t)s * xs + (size_t)i * xi];
            float *o = out + (size_t)i * ldo;
            for (int c = c0; c < c1; c++) o[c] = fmaf(xv, ws[c], o[c]);
        }
    }
}

#if HAVE_X86_KERNELS
// The kernels: NN rows by two vectors of out in registers while the rows of
// w stream past; NN is a constant at every call (always_inline into a
// switch). One definition for both widths: SFX is the intrinsics' 256 or
// 512, WIDTH the floats per vector. AVX2's 16 registers hold 6 x 2
// accumulators besides w and a broadcast; AVX-512's 32 hold 12 x 2.
// The multiply and the subtraction of ACC_SGD stay two roundings, as in
// optim_apply: the empty asm keeps the compiler from fusing them (the build's
// -ffp-contract=off does too; this does not depend on it).
#define DEFINE_PRODUCT_BLOCK(NAME, TARGET, VEC, SFX, WIDTH, ROWS)                                                  \
    __attribute__((target(TARGET), always_inline)) static inline void NAME(                                        \
        const float *x, int xs, int xi, int S, const float *w, int ldw, float *out, int ldo, Acc acc, float lr,    \
        const int NN) {                                                                                            \
        VEC a0[ROWS], a1[ROWS];                                                                                    \
        _Pragma("GCC unroll 12") for (int i = 0; i < NN; i++)                                                      \
            a0[i] = acc != ACC_ADD ? _mm##SFX##_setzero_ps() : _mm##SFX##_loadu_ps(out + i * ldo),                  \
            a1[i] = acc != ACC_ADD ? _mm##SFX##_setzero_ps() : _mm##SFX##_loadu_ps(out + i * ldo + WIDTH);          \
        for (int s = 0; s < S; s++, x += xs, w += ldw) {                                                           \
            const VEC w0 = _mm##SFX##_loadu_ps(w), w1 = _mm##SFX##_loadu_ps(w + WIDTH);                             \
            _Pragma("GCC unroll 12") for (int i = 0; i < NN; i++) {                                                \
                const VEC xb = _mm##SFX##_set1_ps(x[i * xi]);                                                      \
                a0[i] = _mm##SFX##_fmadd_ps(xb, w0, a0[i]), a1[i] = _mm##SFX##_fmadd_ps(xb, w1, a1[i]);            \
            }                                                                                                      \
        }                                                                                                          \
        if (acc == ACC_SGD) {                                                                                      \
            const VEC r = _mm##SFX##_set1_ps(lr);                                                                  \
            _Pragma("GCC unroll 12") for (int i = 0; i < NN; i++) {                                                \
                VEC d0 = _mm##SFX##_mul_ps(a0[i], r), d1 = _mm##SFX##_mul_ps(a1[i], r);                            \
                __asm__("" : "+v"(d0), "+v"(d1));                                                                  \
                a0[i] = _mm##SFX##_sub_ps(_mm##SFX##_loadu_ps(out + i * ldo), d0);                                  \
                a1[i] = _mm##SFX##_sub_ps(_mm##SFX##_loadu_ps(out + i * ldo + WIDTH), d1);                          \
            }                                                                                                      \
        }                                                                                                          \
        _Pragma("GCC unroll 12") for (int i = 0; i < NN; i++)                                                      \
            _mm##SFX##_storeu_ps(out + i * ldo, a0[i]), _mm##SFX##_storeu_ps(out + i * ldo + WIDTH, a1[i]);         \
    }

DEFINE_PRODUCT_BLOCK(product_block_avx2, "avx2,fma", __m256, 256, 8, AVX2_ROWS)
DEFINE_PRODUCT_BLOCK(product_block_avx512, "avx512f", __m512, 512, 16, AVX512_ROWS)

// All M rows of a block of columns, in groups of at most ROWS rows as even
// as possible (20 = 5+5+5+5 for AVX2: a group of 2 would leave the FMA units
// idle).
#define GROUP_ROWS(x, xi, M, out, ldo, ROWS, CALL)                                                                    \
    for (int g = 0, i = 0, groups = ((M) + (ROWS)-1) / (ROWS); g < groups; g++) {                                      \
        int nn = ((M)-i) / (groups - g); /* the rest, shared evenly by the groups left */                              \
        const float *xg = (x) + (size_t)i * (xi);                                                                      \
        float *og = (out) + (size_t)i * (ldo);                                                                         \
        CALL;                                                                                                          \
        i += nn;                                                                                                       \
    }

__attribute__((target("avx2,fma"))) static void product_cols_avx2(const float *x, int xs, int xi, int S, int M,
                                                                  const float *w, int ldw, float *out, int ldo, Acc acc,
                                                                  float lr) {
    GROUP_ROWS(x, xi, M, out, ldo, AVX2_ROWS, switch (nn) {
        case 6: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 6); break;
        case 5: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 5); break;
        case 4: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 4); break;
        case 3: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 3); break;
        case 2: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 2); break;
        default: product_block_avx2(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 1); break;
    })
}

__attribute__((target("avx512f"))) static void product_cols_avx512(const float *x, int xs, int xi, int S, int M,
                                                                   const float *w, int ldw, float *out, int ldo,
                                                                   Acc acc, float lr) {
#define B512(n) case n: product_block_avx512(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, n); break
    GROUP_ROWS(x, xi, M, out, ldo, AVX512_ROWS, switch (nn) {
        B512(12); B512(11); B512(10); B512(9); B512(8); B512(7); B512(6); B512(5); B512(4); B512(3); B512(2);
        default: product_block_avx512(xg, xs, xi, S, w, ldw, og, ldo, acc, lr, 1); break;
    })
#undef B512
}
#endif

// The widest kernel on whole blocks of its columns, the narrower ones on
// what is left, the reference for the last few columns.
static void product(const float *x, int xs, int xi, int S, int M, const float *w, int ldw, int c0, int c1,
                    float *out, int ldo, Acc acc, float lr) {
    int c = c0;
#if HAVE_X86_KERNELS
    int simd = simd_level();
    if (simd >= SIMD_AVX512)
        for (; c + AVX512_COLS <= c1; c += AVX512_COLS) product_cols_avx512(x, xs, xi, S, M, w + c, ldw, out + c, ldo, acc, lr);
    if (simd >= SIMD_AVX2)
        for (; c + AVX2_COLS <= c1; c += AVX2_COLS) product_cols_avx2(x, xs, xi, S, M, w + c, ldw, out + c, ldo, acc, lr);
#endif
    if (c < c1) product_ref(x, xs, xi, S, M, w, ldw, c, c1, out, ldo, acc, lr);
}

void dense_product(const float *x, int ldx, int M, int S, const float *w, int ldw, int N, float *out, int ldo) {
    product(x, 1, ldx, S, M, w, ldw, 0, N, out, ldo, ACC_SET, 0.0f);
}

// A panel's share of `in` (its N rows, columns r0..r1) copied to contiguous
// memory, buf[n][r - r0]: the kernel then reads a few KB instead of N rows D
// floats apart, which VGG's power-of-two D puts all in the same L1 set.
static void pack_panel(const float *in, int ldi, int N, int r0, int r1, float *buf) {
    int w = r1 - r0;
    for (int n = 0; n < N; n++)  // a loop, not memcpy: rows of 32 floats, where a call costs more than the copy
        for (int r = 0; r < w; r++) buf[(size_t)n * w + r] = in[(size_t)n * ldi + r0 + r];
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
    int sgd_in_kernel;   // plain SGD: the kernel updates W (ACC_SGD), use_grad unused
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
            if (j->sgd_in_kernel) {
                product(x, ld, 1, j->N, pr, j->dout + c0, j->U, 0, nc, j->W + (size_t)p0 * j->U + c0, j->U, ACC_SGD,
                        j->rule->lr);
            } else if (j->use_grad) {
                product(x, ld, 1, j->N, pr, j->dout + c0, j->U, 0, nc, g, nc, ACC_SET, 0);
                j->use_grad(j, p0, pr, c0, nc, g, nc);
            }
            if (P) product(xn, 1, ldn, pr, j->fwd_N, j->W + (size_t)p0 * j->U, j->U, c0, c1, P, j->U, ACC_ADD, 0);
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
    if (din) {
        // Under an address-space limit only the main thread calls BLAS
        // (blas_setup.h): the same blocks one after the other, the same bits.
        const int blocks = (D + DIN_ROWS - 1) / DIN_ROWS;
        if (blas_main_thread_only())
            for (int t = 0; t < blocks; t++) din_task(&j, t);
        else
            parallel_for(blocks, din_task, &j);
    }
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
    DenseJob j = {.N = N, .D = D, .U = U, .in = in, .W = W, .dout = dout, .use_grad = apply_grad,
                  .sgd_in_kernel = rule->kind == OPTIM_SGD && rule->n_slots == 0, .rule = rule,
                  .slots = kernel_slots, .fwd_in = next_in, .fwd_N = next_N};
    return run_blocks(&j, b, next_out);
}
