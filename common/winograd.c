// Winograd F(2x2, 3x3) convolution: input transform -> 16 GEMMs -> output
// transform, over bands of 4x4 input tiles (stride 2, overlapping by 2).
//
//   B^T = | 1  0 -1  0 |     G = | 1    0    0   |     A^T = | 1  1  1  0 |
//         | 0  1  1  0 |         | 1/2  1/2  1/2 |           | 0  1 -1 -1 |
//         | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
//         | 0  1  0 -1 |         | 0    0    1   |
//
//   Y (2x2) = A^T [ (G g G^T) .* (B^T d B) ] A,   summed over input channels,
// where the channel sum of the elementwise product is, for each of the 16
// points, one GEMM: V_p (tiles x C) * U_p (C x K) = M_p (tiles x K).
#include "winograd.h"

#include <cblas.h>
#include <string.h>

#include "parallel.h"

#define WINO_MAX_SCRATCH_FLOATS (8u << 20)
#define WINO_BAND_MAX 1024
#define WINO_BAND_MIN 16

size_t winograd_kernel_floats(int C, int K) { return (size_t)16 * C * K; }

void winograd_kernel_transform(const float *w, int C, int K, float *U) {
    const size_t CK = (size_t)C * K;
    for (size_t ck = 0; ck < CK; ck++) {
        float g[3][3], r[4][3];
        for (int dy = 0; dy < 3; dy++)
            for (int dx = 0; dx < 3; dx++) g[dy][dx] = w[(size_t)(dy * 3 + dx) * CK + ck];
        for (int j = 0; j < 3; j++) {  // G g: rows of the 4x3 result
            r[0][j] = g[0][j];
            r[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
            r[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
            r[3][j] = g[2][j];
        }
        for (int i = 0; i < 4; i++) {  // (G g) G^T
            U[(size_t)(4 * i + 0) * CK + ck] = r[i][0];
            U[(size_t)(4 * i + 1) * CK + ck] = 0.5f * (r[i][0] + r[i][1] + r[i][2]);
            U[(size_t)(4 * i + 2) * CK + ck] = 0.5f * (r[i][0] - r[i][1] + r[i][2]);
            U[(size_t)(4 * i + 3) * CK + ck] = r[i][2];
        }
    }
}

// Tiles per band: as many as fit the scratch cap (a large GEMM M), at most
// WINO_BAND_MAX (beyond it the band's V and M stop fitting in L2 for the
// small-K early layers). A function of the shape only.
static int band_tiles(int C, int K) {
    size_t t = WINO_MAX_SCRATCH_FLOATS / ((size_t)16 * (C + K));
    if (t > WINO_BAND_MAX) t = WINO_BAND_MAX;
    if (t < WINO_BAND_MIN) t = WINO_BAND_MIN;
    return (int)t;
}

size_t winograd_scratch_floats(int H, int W, int C, int K) {
    (void)H, (void)W;
    return (size_t)band_tiles(C, K) * 16 * ((size_t)C + K);
}

// V_p[t][c] = (B^T d B)_p for the 4x4 window of tile t, channel c. The
// window starts at input row 2*ty - 1, column 2*tx - 1 (the 'same' padding);
// pixels outside the image are zeros. stride_p: floats between two points'
// matrices (the band's tiles x C).
static void input_transform(const float *in, int H, int W, int C, int tiles_w, int tiles_hw, long t0, int nt,
                            const float *zeros, float *V, size_t stride_p) {
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int n = (int)(tile / tiles_hw), r = (int)(tile % tiles_hw);
        int y0 = 2 * (r / tiles_w) - 1, x0 = 2 * (r % tiles_w) - 1;
        const float *d[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int y = y0 + i, x = x0 + j;
                d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? in + (((size_t)n * H + y) * W + x) * C : zeros;
            }
        float *v = V + (size_t)t * C;
        for (int c = 0; c < C; c++) {
            float b[4][4];  // B^T d: combine rows
            for (int j = 0; j < 4; j++) {
                b[0][j] = d[0][j][c] - d[2][j][c];
                b[1][j] = d[1][j][c] + d[2][j][c];
                b[2][j] = d[2][j][c] - d[1][j][c];
                b[3][j] = d[1][j][c] - d[3][j][c];
            }
            for (int i = 0; i < 4; i++) {  // (B^T d) B: combine columns
                v[(4 * i + 0) * stride_p + c] = b[i][0] - b[i][2];
                v[(4 * i + 1) * stride_p + c] = b[i][1] + b[i][2];
                v[(4 * i + 2) * stride_p + c] = b[i][2] - b[i][1];
                v[(4 * i + 3) * stride_p + c] = b[i][1] - b[i][3];
            }
        }
    }
}

// Y = A^T M A + bias for each tile of the band, written to the 2x2 outputs
// that lie inside the image.
static void output_transform(const float *M, const float *bias, int H, int W, int K, int tiles_w, int tiles_hw,
                             long t0, int nt, float *out, size_t stride_p) {
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int n = (int)(tile / tiles_hw), r = (int)(tile % tiles_hw);
        int y0 = 2 * (r / tiles_w), x0 = 2 * (r % tiles_w);
        const float *m = M + (size_t)t * K;
        float *o[2][2];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                int y = y0 + i < H ? y0 + i : y0, x = x0 + j < W ? x0 + j : x0;  // cropped: rewrite a kept one
                o[i][j] = out + (((size_t)n * H + y) * W + x) * K;
            }
        for (int k = 0; k < K; k++) {
            float s[2][4];  // A^T M
            for (int j = 0; j < 4; j++) {
                float m0 = m[(0 + j) * stride_p + k], m1 = m[(4 + j) * stride_p + k];
                float m2 = m[(8 + j) * stride_p + k], m3 = m[(12 + j) * stride_p + k];
                s[0][j] = m0 + m1 + m2;
                s[1][j] = m1 - m2 - m3;
            }
            // Cropped positions alias a kept output; write those last so
            // the kept value wins (order: (1,1), (1,0), (0,1), (0,0)).
            o[1][1][k] = s[1][1] - s[1][2] - s[1][3] + bias[k];
            o[1][0][k] = s[1][0] + s[1][1] + s[1][2] + bias[k];
            o[0][1][k] = s[0][1] - s[0][2] - s[0][3] + bias[k];
            o[0][0][k] = s[0][0] + s[0][1] + s[0][2] + bias[k];
        }
    }
}

// The transforms of a band, in chunks of tiles on the thread pool
// (parallel.h): each tile's values depend on that tile alone, so the result
// is the same on any number of threads. The GEMMs between them use
// OpenBLAS's threads.
#define WINO_TILES_PER_TASK 32
typedef struct {
    const float *in, *U, *bias, *zeros;
    float *V, *M, *out;
    int H, W, C, K, tiles_w, tiles_hw, nt;
    long t0;
} Band;

static void input_task(void *ctx, int task) {
    Band *b = ctx;
    int first = task * WINO_TILES_PER_TASK, n = b->nt - first < WINO_TILES_PER_TASK ? b->nt - first : WINO_TILES_PER_TASK;
    // Tile t of the band goes to V + t*C within each point's (nt x C) matrix.
    input_transform(b->in, b->H, b->W, b->C, b->tiles_w, b->tiles_hw, b->t0 + first, n, b->zeros, b->V + (size_t)first * b->C,
                    (size_t)b->nt * b->C);
}

static void output_task(void *ctx, int task) {
    Band *b = ctx;
    int first = task * WINO_TILES_PER_TASK, n = b->nt - first < WINO_TILES_PER_TASK ? b->nt - first : WINO_TILES_PER_TASK;
    output_transform(b->M + (size_t)first * b->K, b->bias, b->H, b->W, b->K, b->tiles_w, b->tiles_hw, b->t0 + first, n,
                     b->out, (size_t)b->nt * b->K);
}

void winograd_forward(const float *in, int N, int H, int W, int C, const float *U, const float *bias, int K,
                      float *out, float *scratch) {
    const int tiles_h = (H + 1) / 2, tiles_w = (W + 1) / 2, tiles_hw = tiles_h * tiles_w;
    const long tiles = (long)N * tiles_hw;
    const int band = band_tiles(C, K);
    // A zero "pixel" for the padding (VGG's widest layer has 512 channels).
    static const float zeros[4096];
    Band b = {.in = in, .U = U, .bias = bias, .zeros = zeros, .V = scratch, .M = scratch + (size_t)band * 16 * C,
              .out = out, .H = H, .W = W, .C = C, .K = K, .tiles_w = tiles_w, .tiles_hw = tiles_hw};
    const size_t CK = (size_t)C * K;
    for (long t0 = 0; t0 < tiles; t0 += band) {
        b.t0 = t0;
        b.nt = (int)(tiles - t0 < band ? tiles - t0 : band);
        int tasks = (b.nt + WINO_TILES_PER_TASK - 1) / WINO_TILES_PER_TASK;
        parallel_for(tasks, input_task, &b);
        for (int p = 0; p < 16; p++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b.nt, K, C, 1.0f, b.V + (size_t)p * b.nt * C, C,
                        U + p * CK, K, 0.0f, b.M + (size_t)p * b.nt * K, K);
        parallel_for(tasks, output_task, &b);
    }
}
