// Winograd F(m x m, 3x3) convolution, m = 2, 3 or 4: input transform ->
// (m+2)^2 GEMMs -> output transform, over bands of (m+2) x (m+2) input tiles
// (stride m, overlapping by 2). With a = m + 2 points per side:
//
//   Y (m x m) = A^T [ (G g G^T) .* (B^T d B) ] A,   summed over input channels,
//
// where the channel sum of the elementwise product is, for each of the a^2
// points, one GEMM: V_p (tiles x C) * U_p (C x K) = M_p (tiles x K).
//
// F(2x2), points 0, 1, -1, infinity:
//   B^T = | 1  0 -1  0 |     G = | 1    0    0   |     A^T = | 1  1  1  0 |
//         | 0  1  1  0 |         | 1/2  1/2  1/2 |           | 0  1 -1 -1 |
//         | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
//         | 0  1  0 -1 |         | 0    0    1   |
// F(3x3), points 0, 1, -1, 2, infinity:
//   B^T = | 2 -1 -2  1  0 |   G = |  1/2   0     0   |   A^T = | 1  1  1  1  0 |
//         | 0 -2 -1  1  0 |       | -1/2  -1/2  -1/2 |         | 0  1 -1  2  0 |
//         | 0  2 -3  1  0 |       | -1/6   1/6  -1/6 |         | 0  1  1  4  1 |
//         | 0 -1  0  1  0 |       |  1/6   1/3   2/3 |
//         | 0  2 -1 -2  1 |       |  0     0     1   |
// F(4x4), points 0, 1, -1, 2, -2, infinity (Lavin & Gray 2016, section 4.2):
//   B^T = | 4  0 -5  0  1  0 |   G = |  1/4     0     0   |   A^T = | 1  1  1  1  1  0 |
//         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6  |         | 0  1 -1  2 -2  0 |
//         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6  |         | 0  1  1  4  4  0 |
//         | 0 -2 -1  2  1  0 |       |  1/24  1/12  1/6  |         | 0  1 -1  8 -8  1 |
//         | 0  2 -1 -2  1  0 |       |  1/24 -1/12  1/6  |
//         | 0  4  0 -5  0  1 |       |  0     0     1    |
// (scripts/winograd_matrices.py derives them from the points and checks
// these tables exactly.) The transforms work on LANES channels at a time in
// local arrays, so that the compiler vectorises them across channels.
#include "winograd.h"

#include <stdlib.h>
#include <string.h>

#include "dense.h"
#include "parallel.h"
#include "simd.h"

#define WINO_MAX_SCRATCH_FLOATS (8u << 20)
#define WINO_BAND_MIN 16
#define LANES 16  // channels transformed together: one AVX-512 register
#define AMAX 6    // points per tile side, at most (F(4x4))
// Each point's matrix starts PAD floats after the previous one ends: with
// power-of-two band sizes the a^2 matrices would otherwise start at the same
// cache set, and the transforms' a^2 load and store streams would evict
// each other.
#define PAD 16

typedef float Lanes[LANES];
// The transforms are compiled into each vector width's task functions below.
#define ALWAYS_INLINE __attribute__((always_inline)) static inline

// --- the 1D transforms, on LANES channels: x[i*sx] -> y[i*sy] ---------------
ALWAYS_INLINE void bt_f2(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x1 = x[sx][l], x2 = x[2 * sx][l], x3 = x[3 * sx][l];
        y[0][l] = x0 - x2;
        y[sy][l] = x1 + x2;
        y[2 * sy][l] = x2 - x1;
        y[3 * sy][l] = x1 - x3;
    }
}

ALWAYS_INLINE void at_f2(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x1 = x[sx][l], x2 = x[2 * sx][l], x3 = x[3 * sx][l];
        y[0][l] = x0 + x1 + x2;
        y[sy][l] = x1 - x2 - x3;
    }
}

ALWAYS_INLINE void bt_f3(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x1 = x[sx][l], x2 = x[2 * sx][l], x3 = x[3 * sx][l], x4 = x[4 * sx][l];
        y[0][l] = 2.0f * (x0 - x2) + (x3 - x1);
        y[sy][l] = (x3 - x2) - 2.0f * x1;
        y[2 * sy][l] = (x3 - x2) + 2.0f * (x1 - x2);
        y[3 * sy][l] = x3 - x1;
        y[4 * sy][l] = 2.0f * (x1 - x3) + (x4 - x2);
    }
}

ALWAYS_INLINE void at_f3(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x3 = x[3 * sx][l], x4 = x[4 * sx][l];
        float s12 = x[sx][l] + x[2 * sx][l], d12 = x[sx][l] - x[2 * sx][l];
        y[0][l] = x0 + s12 + x3;
        y[sy][l] = d12 + 2.0f * x3;
        y[2 * sy][l] = s12 + 4.0f * x3 + x4;
    }
}

ALWAYS_INLINE void bt_f4(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x1 = x[sx][l], x2 = x[2 * sx][l], x3 = x[3 * sx][l], x4 = x[4 * sx][l],
              x5 = x[5 * sx][l];
        y[0][l] = 4.0f * x0 - 5.0f * x2 + x4;
        y[sy][l] = (x3 + x4) - 4.0f * (x1 + x2);
        y[2 * sy][l] = (x4 - x3) + 4.0f * (x1 - x2);
        y[3 * sy][l] = (x4 - x2) + 2.0f * (x3 - x1);
        y[4 * sy][l] = (x4 - x2) - 2.0f * (x3 - x1);
        y[5 * sy][l] = 4.0f * x1 - 5.0f * x3 + x5;
    }
}

ALWAYS_INLINE void at_f4(const Lanes *restrict x, int sx, Lanes *restrict y, int sy) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0][l], x5 = x[5 * sx][l];
        float s12 = x[sx][l] + x[2 * sx][l], d12 = x[sx][l] - x[2 * sx][l];
        float s34 = x[3 * sx][l] + x[4 * sx][l], d34 = x[3 * sx][l] - x[4 * sx][l];
        y[0][l] = x0 + s12 + s34;
        y[sy][l] = d12 + 2.0f * d34;
        y[2 * sy][l] = s12 + 4.0f * s34;
        y[3 * sy][l] = d12 + 8.0f * d34 + x5;
    }
}

// --- the 2D transforms of one tile: row-major a x a (or m x m) arrays --------
// B^T d B: the 1D transform down each column, then along each row; A^T M A:
// m x a after the columns, m x m after the rows. One definition per tile,
// its sizes constants (the compiler unrolls and vectorises each).
#define DEFINE_TILE_TRANSFORMS(M, A)                                              \
    ALWAYS_INLINE void input_f##M(const Lanes *d, Lanes *v) {                     \
        Lanes t[A * A];                                                           \
        for (int j = 0; j < A; j++) bt_f##M(d + j, A, t + j, A);                  \
        for (int i = 0; i < A; i++) bt_f##M(t + A * i, 1, v + A * i, 1);          \
    }                                                                             \
    ALWAYS_INLINE void output_f##M(const Lanes *mm, Lanes *y) {                   \
        Lanes s[M * A];                                                           \
        for (int j = 0; j < A; j++) at_f##M(mm + j, A, s + j, A);                 \
        for (int i = 0; i < M; i++) at_f##M(s + A * i, 1, y + M * i, 1);          \
    }
DEFINE_TILE_TRANSFORMS(2, 4)
DEFINE_TILE_TRANSFORMS(3, 5)
DEFINE_TILE_TRANSFORMS(4, 6)

typedef struct {
    int m;              // output tile side
    double G[AMAX][3];  // kernel transform, a x 3
} Method;

static const Method F2 = {2, {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}}};
static const Method F3 = {
    3, {{1 / 2., 0, 0}, {-1 / 2., -1 / 2., -1 / 2.}, {-1 / 6., 1 / 6., -1 / 6.}, {1 / 6., 1 / 3., 2 / 3.}, {0, 0, 1}}};
static const Method F4 = {4,
                          {{1 / 4., 0, 0},
                           {-1 / 6., -1 / 6., -1 / 6.},
                           {-1 / 6., 1 / 6., -1 / 6.},
                           {1 / 24., 1 / 12., 1 / 6.},
                           {1 / 24., -1 / 12., 1 / 6.},
                           {0, 0, 1}}};

static const Method *method(int m) { return m == 4 ? &F4 : m == 3 ? &F3 : &F2; }

// Within one point's C x K matrix, U is stored in panels of U_PANEL output
// channels (the last one narrower when K is not a multiple), each panel
// C rows of its width: the GEMM (dense_product) then streams one panel's
// contiguous rows, as a BLAS would after packing it, but packed once here
// instead of at every call.
#define U_PANEL 32
static inline size_t u_offset(size_t c, size_t k, int C, int K) {
    size_t k0 = k / U_PANEL * U_PANEL, w = (size_t)K - k0 < U_PANEL ? (size_t)K - k0 : U_PANEL;
    return k0 * C + c * w + (k - k0);
}

size_t winograd_tile_kernel_floats(int m, int C, int K) { return (size_t)(m + 2) * (m + 2) * C * K; }

void winograd_tile_kernel_transform(int m, const float *w, int C, int K, float *U) {
    const Method *f = method(m);
    const int a = m + 2;
    const size_t CK = (size_t)C * K;
    for (size_t ck = 0; ck < CK; ck++) {
        double g[3][3], r[AMAX][3];
        for (int dy = 0; dy < 3; dy++)
            for (int dx = 0; dx < 3; dx++) g[dy][dx] = w[(size_t)(dy * 3 + dx) * CK + ck];
        for (int i = 0; i < a; i++)  // G g
            for (int j = 0; j < 3; j++) r[i][j] = f->G[i][0] * g[0][j] + f->G[i][1] * g[1][j] + f->G[i][2] * g[2][j];
        for (int i = 0; i < a; i++)  // (G g) G^T
            for (int j = 0; j < a; j++)
                U[(size_t)(a * i + j) * CK + u_offset(ck / K, ck % K, C, K)] =
                    (float)(r[i][0] * f->G[j][0] + r[i][1] * f->G[j][1] + r[i][2] * f->G[j][2]);
    }
}

// Tiles per band, a function of the shape only. Three costs pull apart: the
// transformed kernel U (P C K floats, P = (m+2)^2 points) is read once per
// band; the band's V and M (nt P (C + K) floats) are written by one
// transform and read back by the GEMMs or the other transform, cheaply
// while they stay in cache; and each band is three rounds of the thread
// pool, whose wake-ups cost tens of microseconds. So: bands of
// WINO_BAND_FLOATS of V and M (the early layers, whose U is small), unless
// U is larger, whose re-reading then costs more than the band's spill (the
// late layers): then the band as large as U, up to the scratch cap.
// Measured (a sweep of 0.25 to 4 MiB, scripts/bench_base.c's conditions):
// on one thread within 10% of each other; on two, 4 MiB bands made
// block1_conv2 1.3x (F(4x4)) to 1.4x (F(2x2)) faster than 1 MiB bands.
#define WINO_BAND_FLOATS (1u << 20)  // 4 MiB
static int band_tiles(int m, int C, int K) {
    const size_t P = (size_t)(m + 2) * (m + 2);
    size_t t = WINO_BAND_FLOATS / (P * (C + K)), u = (size_t)C * K / (C + K);
    if (u > t) t = u;
    size_t cap = WINO_MAX_SCRATCH_FLOATS / (P * (C + K));
    if (t > cap) t = cap;
    if (t < WINO_BAND_MIN) t = WINO_BAND_MIN;
    return (int)t;
}

size_t winograd_tile_scratch_floats(int m, int H, int W, int C, int K) {
    (void)H, (void)W;
    return ((size_t)band_tiles(m, C, K) * ((size_t)C + K) + 2 * PAD) * (m + 2) * (m + 2);
}

// V_p[t][c] = (B^T d B)_p for the a x a window of tile t, channel c. The
// window starts at input row m*ty - 1, column m*tx - 1 (the 'same'
// padding); pixels outside the image are zeros. stride_p: floats between two
// points' matrices (the band's tiles x C).
ALWAYS_INLINE void input_transform(const Method *f, const float *in, int H, int W, int C, int tiles_w, int tiles_hw,
                            long t0, int nt, const float *zeros, float *V, size_t stride_p) {
    const int m = f->m, a = m + 2, P = a * a;
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int n = (int)(tile / tiles_hw), r = (int)(tile % tiles_hw);
        int y0 = m * (r / tiles_w) - 1, x0 = m * (r % tiles_w) - 1;
        const float *src[AMAX * AMAX];
        for (int i = 0; i < a; i++)
            for (int j = 0; j < a; j++) {
                int y = y0 + i, x = x0 + j;
                src[a * i + j] = (y >= 0 && y < H && x >= 0 && x < W) ? in + (((size_t)n * H + y) * W + x) * C : zeros;
            }
        float *v = V + (size_t)t * C;
        for (int c0 = 0; c0 < C; c0 += LANES) {
            const int nl = C - c0 < LANES ? C - c0 : LANES;
            Lanes d[AMAX * AMAX], tv[AMAX * AMAX];
            if (nl == LANES) {
                for (int p = 0; p < P; p++)
                    for (int l = 0; l < LANES; l++) d[p][l] = src[p][c0 + l];
            } else {  // the last channels: the unused lanes are zeros
                for (int p = 0; p < P; p++)
                    for (int l = 0; l < LANES; l++) d[p][l] = l < nl ? src[p][c0 + l] : 0.0f;
            }
            if (m == 4) input_f4(d, tv);
            else if (m == 3) input_f3(d, tv);
            else input_f2(d, tv);
            for (int p = 0; p < P; p++)
                for (int l = 0; l < nl; l++) v[p * stride_p + c0 + l] = tv[p][l];
        }
    }
}

// Y = A^T M A + bias for each tile of the band, written to the m x m
// outputs that lie inside the image.
ALWAYS_INLINE void output_transform(const Method *f, const float *M, const float *bias, int H, int W, int K, int tiles_w,
                             int tiles_hw, long t0, int nt, float *out, size_t stride_p) {
    const int m = f->m, a = m + 2, P = a * a;
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int n = (int)(tile / tiles_hw), r = (int)(tile % tiles_hw);
        int y0 = m * (r / tiles_w), x0 = m * (r % tiles_w);
        int mh = H - y0 < m ? H - y0 : m, mw = W - x0 < m ? W - x0 : m;  // cropped at the bottom/right edge
        const float *mt = M + (size_t)t * K;
        float *dst = out + (((size_t)n * H + y0) * W + x0) * K;
        for (int k0 = 0; k0 < K; k0 += LANES) {
            const int nl = K - k0 < LANES ? K - k0 : LANES;
            Lanes mm[AMAX * AMAX], y[4 * 4];
            if (nl == LANES) {
                for (int p = 0; p < P; p++)
                    for (int l = 0; l < LANES; l++) mm[p][l] = mt[p * stride_p + k0 + l];
            } else {
                for (int p = 0; p < P; p++)
                    for (int l = 0; l < LANES; l++) mm[p][l] = l < nl ? mt[p * stride_p + k0 + l] : 0.0f;
            }
            if (m == 4) output_f4(mm, y);
            else if (m == 3) output_f3(mm, y);
            else output_f2(mm, y);
            for (int i = 0; i < mh; i++)
                for (int j = 0; j < mw; j++) {
                    float *o = dst + ((size_t)i * W + j) * K + k0;
                    for (int l = 0; l < nl; l++) o[l] = y[m * i + j][l] + bias[k0 + l];
                }
        }
    }
}

// A band in three steps on the thread pool (parallel.h): the input
// transform in chunks of tiles, the a^2 GEMMs one per task, the output
// transform in chunks of tiles. The GEMMs are dense.c's product (one
// sequential fused multiply-add chain per output, on every SIMD level), on
// U's panels packed once by winograd_tile_kernel_transform. OpenBLAS's
// sgemm did them until 2026-11-30: it packs U again at every call, which on
// VGG's per-image bands (tens to hundreds of rows against a C x K of up to
// 512 x 512) cost a third of its time, and its result depended on the
// kernel OPENBLAS_CORETYPE picks; ours is 1.1-1.3x faster end to end and
// the same bits everywhere. Each value depends on its tile or its GEMM
// alone, so the result is the same on any number of threads.
#define WINO_TILES_PER_TASK 32
typedef struct {
    const Method *f;
    const float *in, *U, *bias, *zeros;
    float *V, *M, *out;
    int H, W, C, K, tiles_w, tiles_hw, nt;
    long t0;
} Band;

// M_p = V_p U_p for point p of the band: per panel of U and GEMM_ROWS rows
// of V, the sums over channels in blocks of GEMM_SUM, each block a
// sequential chain (dense_product), the blocks added in order. One chain
// over all 512 channels of VGG's late layers would double F(4x4)'s float32
// error there (tests/test_winograd.c: 1.4e-5 of the largest output against
// 6e-6 in blocks of 128).
#define GEMM_SUM 128
#define GEMM_ROWS 64
static void gemm_task(void *ctx, int p) {
    Band *b = ctx;
    const size_t CK = (size_t)b->C * b->K;
    const float *V = b->V + p * ((size_t)b->nt * b->C + PAD), *U = b->U + p * CK;
    float *M = b->M + p * ((size_t)b->nt * b->K + PAD);
    const int C = b->C, K = b->K;
    float part[GEMM_ROWS * U_PANEL];
    for (int k0 = 0; k0 < K; k0 += U_PANEL) {
        const int w = K - k0 < U_PANEL ? K - k0 : U_PANEL;
        const float *Up = U + (size_t)k0 * C;
        for (int r0 = 0; r0 < b->nt; r0 += GEMM_ROWS) {
            const int nr = b->nt - r0 < GEMM_ROWS ? b->nt - r0 : GEMM_ROWS;
            float *out = M + (size_t)r0 * K + k0;
            dense_product(V + (size_t)r0 * C, C, nr, C < GEMM_SUM ? C : GEMM_SUM, Up, w, w, out, K);
            for (int c0 = GEMM_SUM; c0 < C; c0 += GEMM_SUM) {
                dense_product(V + (size_t)r0 * C + c0, C, nr, C - c0 < GEMM_SUM ? C - c0 : GEMM_SUM,
                              Up + (size_t)c0 * w, w, w, part, w);
                for (int i = 0; i < nr; i++)
                    for (int k = 0; k < w; k++) out[(size_t)i * K + k] += part[i * w + k];
            }
        }
    }
}

ALWAYS_INLINE void input_task_body(void *ctx, int task) {
    Band *b = ctx;
    int first = task * WINO_TILES_PER_TASK, n = b->nt - first < WINO_TILES_PER_TASK ? b->nt - first : WINO_TILES_PER_TASK;
    // Tile t of the band goes to V + t*C within each point's (nt x C) matrix.
    input_transform(b->f, b->in, b->H, b->W, b->C, b->tiles_w, b->tiles_hw, b->t0 + first, n, b->zeros,
                    b->V + (size_t)first * b->C, (size_t)b->nt * b->C + PAD);
}

ALWAYS_INLINE void output_task_body(void *ctx, int task) {
    Band *b = ctx;
    int first = task * WINO_TILES_PER_TASK, n = b->nt - first < WINO_TILES_PER_TASK ? b->nt - first : WINO_TILES_PER_TASK;
    output_transform(b->f, b->M + (size_t)first * b->K, b->bias, b->H, b->W, b->K, b->tiles_w, b->tiles_hw,
                     b->t0 + first, n, b->out, (size_t)b->nt * b->K + PAD);
}

// The tasks compiled for each vector width (simd.h): the same operations in
// the same order on LANES-wide arrays at every width, no fused multiply-adds
// (the build's -ffp-contract=off), hence the same bits.
#define DEFINE_TASKS(SFX, ATTR)                                                          \
    ATTR static void input_task_##SFX(void *ctx, int task) { input_task_body(ctx, task); } \
    ATTR static void output_task_##SFX(void *ctx, int task) { output_task_body(ctx, task); }
DEFINE_TASKS(portable, )
#if defined(__x86_64__)
DEFINE_TASKS(avx2, __attribute__((target("avx2"))))
DEFINE_TASKS(avx512, __attribute__((target("avx512f"))))
#endif

// parallel_for, or the same tasks in order on this thread.
static void run_tasks(int on_pool, int n, void (*fn)(void *, int), void *ctx) {
    if (on_pool) {
        parallel_for(n, fn, ctx);
        return;
    }
    for (int t = 0; t < n; t++) fn(ctx, t);
}

void winograd_tile_forward(int m, const float *in, int N, int H, int W, int C, const float *U, const float *bias,
                           int K, float *out, float *scratch, int on_pool) {
    const Method *f = method(m);
    const int P = (f->m + 2) * (f->m + 2);
    const int tiles_h = (H + f->m - 1) / f->m, tiles_w = (W + f->m - 1) / f->m, tiles_hw = tiles_h * tiles_w;
    const long tiles = (long)N * tiles_hw;
    const int band = band_tiles(f->m, C, K);
    // A zero "pixel" for the padding (VGG's widest layer has 512 channels).
    static const float zeros[4096];
    Band b = {.f = f, .in = in, .U = U, .bias = bias, .zeros = zeros, .V = scratch,
              .M = scratch + ((size_t)band * C + PAD) * P, .out = out, .H = H, .W = W, .C = C, .K = K,
              .tiles_w = tiles_w, .tiles_hw = tiles_hw};
    void (*input_task)(void *, int) = input_task_portable, (*output_task)(void *, int) = output_task_portable;
#if defined(__x86_64__)
    int simd = simd_level();
    if (simd >= SIMD_AVX2) input_task = input_task_avx2, output_task = output_task_avx2;
    if (simd >= SIMD_AVX512) input_task = input_task_avx512, output_task = output_task_avx512;
#endif
    for (long t0 = 0; t0 < tiles; t0 += band) {
        b.t0 = t0;
        b.nt = (int)(tiles - t0 < band ? tiles - t0 : band);
        int tasks = (b.nt + WINO_TILES_PER_TASK - 1) / WINO_TILES_PER_TASK;
        run_tasks(on_pool, tasks, input_task, &b);
        run_tasks(on_pool, P, gemm_task, &b);
        run_tasks(on_pool, tasks, output_task, &b);
    }
}
