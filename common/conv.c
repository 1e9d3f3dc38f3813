// 3x3 'same' convolution (pad 1, stride 1) with bias, NHWC, Keras kernel
// layout (3,3,C,K), as im2col + OpenBLAS sgemm.
//
// The N images are seen as one stack of N*H output rows. A "band" is a run of
// consecutive rows of that stack (it may cross image boundaries, which is
// what keeps sgemm's M large for the small late-VGG feature maps: 9x9 maps
// alone would give M = 81). For a band of R rows the patch matrix is
// (R*W) x (9*C); with the kernel seen as a (9*C) x K matrix, the product is
// exactly the NHWC output of those rows, so no transposition is ever needed.
#include "layers.h"

#include <cblas.h>
#include <string.h>

#include "blas_setup.h"
#include "dense.h"

// Band height. Two costs pull in opposite directions (scripts/bench_conv.c,
// OpenBLAS 0.3.21 SkylakeX kernel, one thread, as % of a 1536^3 sgemm):
//  - every band repacks the whole (9C x K) kernel, so M = band rows * W must
//    be large when the kernel is large: block5_conv1 (9C x K = 4608 x 512)
//    runs at ~45% with M = 81, ~80% at 576, ~90% from ~1500;
//  - each patch float feeds only K multiply-adds, so when K is small the
//    band should stay in L2: block1_conv2 (K = 64) runs at ~65-75% with
//    M = 150-600 and drops to ~45% at M = 5000.
// M ~ 8*K serves both (600 rows for block1, ~2000 for block3, the scratch
// cap for blocks 4-5). The band depends on the shape only, so results are
// the same on every run with the same thread count. (Across thread counts
// OpenBLAS itself reorders some sums: dkernel differs in the last bits
// between 1 and 2 threads even at a fixed band.)
#define CONV_M_PER_K 8
#define CONV_M_MIN 256
#define CONV_M_MAX 4096
#define CONV_MAX_SCRATCH_FLOATS (8u << 20)

static int rows_for_m(long m, int W, int C) {
    size_t row_floats = (size_t)W * 9 * (size_t)C;
    int rows = (int)((m + W - 1) / W);
    size_t cap = CONV_MAX_SCRATCH_FLOATS / row_floats;
    if ((size_t)rows > cap) rows = (int)cap;
    if (rows < 1) rows = 1;  // one row is the minimum whatever it costs
    return rows;
}

int conv3x3_band_rows(int H, int W, int C, int K) {
    (void)H;  // bands run over the N*H row stack: the height does not matter
    long m = (long)CONV_M_PER_K * K;
    if (m < CONV_M_MIN) m = CONV_M_MIN;
    if (m > CONV_M_MAX) m = CONV_M_MAX;
    return rows_for_m(m, W, C);
}

// The bound for any K: the band for CONV_M_MAX rows.
size_t conv3x3_scratch_floats(int H, int W, int C) {
    (void)H;
    return (size_t)rows_for_m(CONV_M_MAX, W, C) * (size_t)W * 9 * (size_t)C;
}

// Patch rows for output rows [r0, r0+R) of the N*H stack. Patch column order
// is (dy, dx, c), matching the kernel's (3,3,C,K) row order. For a fixed dy
// the three taps dx = 0..2 of pixel x are input pixels x-1..x+1 of one row,
// which are contiguous in NHWC: each patch row is three copies of 3*C floats
// (less at the left/right edges, where the missing pixels are zero padding).
static void im2col_rows(const float *in, int H, int W, int C, long r0, int R,
                        float *patches) {
    size_t pc = 9 * (size_t)C;  // patch length
    for (int i = 0; i < R; i++) {
        long r = r0 + i;
        long n = r / H;
        int y = (int)(r % H);
        float *prow = patches + (size_t)i * W * pc;
        for (int dy = 0; dy < 3; dy++) {
            int yy = y + dy - 1;
            if (yy < 0 || yy >= H) {
                for (int x = 0; x < W; x++)
                    memset(prow + (size_t)x * pc + (size_t)dy * 3 * C, 0, 3 * C * sizeof(float));
                continue;
            }
            const float *src = in + ((size_t)n * H + yy) * (size_t)W * C;
            for (int x = 0; x < W; x++) {
                float *dst = prow + (size_t)x * pc + (size_t)dy * 3 * C;
                int x0 = x - 1, x1 = x + 1;  // input columns x0..x1 inclusive
                if (x0 < 0) { memset(dst, 0, C * sizeof(float)); dst += C; x0 = 0; }
                int pad_right = x1 >= W;
                if (pad_right) x1 = W - 1;
                size_t len = (size_t)(x1 - x0 + 1) * C;
                memcpy(dst, src + (size_t)x0 * C, len * sizeof(float));
                if (pad_right) memset(dst + len, 0, C * sizeof(float));
            }
        }
    }
}

// The adjoint of im2col_rows: adds each patch entry back to the input pixel
// it was copied from (padding entries are dropped).
static void col2im_rows(const float *patches, int H, int W, int C, long r0,
                        int R, float *din) {
    size_t pc = 9 * (size_t)C;
    for (int i = 0; i < R; i++) {
        long r = r0 + i;
        long n = r / H;
        int y = (int)(r % H);
        const float *prow = patches + (size_t)i * W * pc;
        for (int dy = 0; dy < 3; dy++) {
            int yy = y + dy - 1;
            if (yy < 0 || yy >= H) continue;
            float *dst = din + ((size_t)n * H + yy) * (size_t)W * C;
            for (int x = 0; x < W; x++) {
                const float *src = prow + (size_t)x * pc + (size_t)dy * 3 * C;
                int x0 = x - 1, x1 = x + 1;
                if (x0 < 0) { src += C; x0 = 0; }
                if (x1 >= W) x1 = W - 1;
                size_t len = (size_t)(x1 - x0 + 1) * C;
                float *d = dst + (size_t)x0 * C;
                for (size_t j = 0; j < len; j++) d[j] += src[j];
            }
        }
    }
}

// The bands: im2col, then the product, on OpenBLAS (bias first, sgemm
// accumulating onto it) or on dense_product (the sum, then the bias).
static void forward_bands(const float *in, int N, int H, int W, int C, const float *kernel, const float *bias, int K,
                          float *out, float *scratch, int band_rows, int own_product) {
    long rows = (long)N * H;
    int pc = 9 * C;
    for (long r0 = 0; r0 < rows; r0 += band_rows) {
        int R = rows - r0 < band_rows ? (int)(rows - r0) : band_rows;
        int M = R * W;
        float *o = out + (size_t)r0 * W * K;
        im2col_rows(in, H, W, C, r0, R, scratch);
        if (own_product) {
            dense_product(scratch, pc, M, pc, kernel, K, K, o, K);
            for (int m = 0; bias && m < M; m++)
                for (int k = 0; k < K; k++) o[(size_t)m * K + k] += bias[k];
            continue;
        }
        if (bias) {
            for (int m = 0; m < M; m++) memcpy(o + (size_t)m * K, bias, K * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, pc, 1.0f,
                    scratch, pc, kernel, K, bias ? 1.0f : 0.0f, o, K);
    }
}

void conv3x3_forward_banded(const float *in, int N, int H, int W, int C,
                            const float *kernel, const float *bias, int K,
                            float *out, float *scratch, int band_rows) {
    forward_bands(in, N, H, W, C, kernel, bias, K, out, scratch, band_rows, 0);
}

void conv3x3_forward(const float *in, int N, int H, int W, int C,
                     const float *kernel, const float *bias, int K,
                     float *out, float *scratch) {
    conv3x3_forward_banded(in, N, H, W, C, kernel, bias, K, out, scratch,
                           conv3x3_band_rows(H, W, C, K));
}

// dense_product reads the kernel unpacked, rows of K floats: fast while the
// kernel stays in cache (block1_conv1: 27 x 64), 2.3x slower than OpenBLAS
// on the whole base forced direct (VGGFT_WINOGRAD=0), whose 4608 x 512
// kernels OpenBLAS packs.
#define FROZEN_OWN_MAX_FLOATS 65536

void conv3x3_forward_frozen(const float *in, int N, int H, int W, int C, const float *kernel, const float *bias,
                            int K, float *out, float *scratch) {
    forward_bands(in, N, H, W, C, kernel, bias, K, out, scratch, conv3x3_band_rows(H, W, C, K),
                  !conv3x3_frozen_uses_blas(C, K));
}

int conv3x3_frozen_uses_blas(int C, int K) {
    // Under an address-space limit that leaves OpenBLAS no room (blas_setup.h)
    // our own product, whatever the size.
    return (size_t)9 * C * K > FROZEN_OWN_MAX_FLOATS && blas_usable();
}

void conv3x3_backward_banded(const float *in, int N, int H, int W, int C,
                             const float *kernel, int K, const float *dout,
                             float *din, float *dkernel, float *dbias,
                             float *scratch, int band_rows) {
    long rows = (long)N * H;
    int pc = 9 * C;
    if (dbias) {
        size_t P = (size_t)rows * W;
        for (size_t p = 0; p < P; p++) {
            const float *g = dout + p * K;
            for (int k = 0; k < K; k++) dbias[k] += g[k];
        }
    }
    if (din) memset(din, 0, (size_t)rows * W * C * sizeof(float));
    for (long r0 = 0; r0 < rows; r0 += band_rows) {
        int R = rows - r0 < band_rows ? (int)(rows - r0) : band_rows;
        int M = R * W;
        const float *g = dout + (size_t)r0 * W * K;
        if (dkernel) {
            // dkernel (9C x K) += patches^T (9C x M) @ dout (M x K)
            im2col_rows(in, H, W, C, r0, R, scratch);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, pc, K, M, 1.0f,
                        scratch, pc, g, K, 1.0f, dkernel, K);
        }
        if (din) {
            // dpatches (M x 9C) = dout (M x K) @ kernel^T, then scatter back.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, pc, K, 1.0f,
                        g, K, kernel, K, 0.0f, scratch, pc);
            col2im_rows(scratch, H, W, C, r0, R, din);
        }
    }
}

void conv3x3_backward(const float *in, int N, int H, int W, int C,
                      const float *kernel, int K, const float *dout,
                      float *din, float *dkernel, float *dbias, float *scratch) {
    conv3x3_backward_banded(in, N, H, W, C, kernel, K, dout, din, dkernel,
                            dbias, scratch, conv3x3_band_rows(H, W, C, K));
}
