// The GPU emulation's cuDNN (make test-emu; build/emu/libcudnn_emu.so,
// loaded through VGGFT_CUDNN_LIBRARY as the real library is): the functions
// of kernels/cudnn_api.h on the host, from cuDNN's documented semantics.
//
// It checks what a real cuDNN would refuse (CUDNN_STATUS_BAD_PARAM, with a
// line on stderr saying why): output shapes that do not follow from the
// input, filter and convolution descriptors, mixed data types, a workspace
// smaller than the algorithm's, tensors larger than 2^31 - 1 values
// (CUDNN_STATUS_NOT_SUPPORTED), and, beyond what cuDNN checks, data that is
// not inside one device allocation of the emulated runtime (gpu_emu.cpp),
// which on a GPU would be an illegal address. Its arithmetic is float32
// im2col + sgemm (OpenBLAS): float inputs of a convolution whose math type
// allows tensor cores are first rounded to TF32 (10-bit mantissas, as the
// GPU's conversion does), bfloat16 tensors are read and written as
// bfloat16. A convolution runs as two operations on its stream, a begin
// that reads the inputs and an end that writes the output; between them the
// output holds 0x7F bytes and the workspace a pattern of the call's own
// (nothing may be kept there), and the end aborts with a line on stderr if
// another stream's work wrote the workspace, the inputs or the output
// meanwhile (seen with EMU_SCHEDULE=interleave, which runs all the work
// other streams have ready between the two: the end is emu_enqueue_late's).
// The heuristics list a non-deterministic backward-filter algorithm first,
// as cuDNN does, so the walk's choice is exercised; cudnnFind...Algorithm
// (VGGFT_GPU_AUTOTUNE) lists every algorithm in another order, with made-up
// times (the arithmetic is the same for all).
#include <cblas.h>
#include <cudnn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

// From the emulated runtime (tests/emu/gpu_emu.cpp), exported by the
// test executables (-rdynamic).
extern "C" void emu_enqueue(void (*run)(void *), void (*drop)(void *), void *ctx, cudaStream_t s);
extern "C" void emu_enqueue_late(void (*run)(void *), void (*drop)(void *), void *ctx, cudaStream_t s);
extern "C" size_t emu_device_extent(const void *p);

struct cudnnContext {
    cudaStream_t stream;  // cudnnSetStream's (0: the legacy default stream)
};
struct cudnnTensorStruct {
    int set;
    cudnnDataType_t type;
    int n, c, h, w;
    long ns, cs, hs, ws;  // strides in elements
};
struct cudnnFilterStruct {
    int set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int k, c, r, s;
};
struct cudnnConvolutionStruct {
    int set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};
struct cudnnPoolingStruct {
    int set;
    cudnnPoolingMode_t mode;
    cudnnNanPropagation_t nan;
    int wh, ww, ph, pw, sh, sw;
};

static cudnnStatus_t bad(const char *fn, const char *why) {
    fprintf(stderr, "emu cuDNN: %s: %s\n", fn, why);
    return CUDNN_STATUS_BAD_PARAM;
}

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }
size_t cudnnGetCudartVersion(void) { return CUDART_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    default: return "CUDNN_STATUS_(emulated: other)";
    }
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    *h = new cudnnContext{NULL};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
// The handle's calls are queued on s (gpu_emu.cpp orders them with the rest).
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    *d = new cudnnTensorStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t, int n,
                                         int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("cudnnSetTensor4dDescriptor", "a dimension <= 0");
    if (t != CUDNN_DATA_FLOAT && t != CUDNN_DATA_BFLOAT16)
        return bad("cudnnSetTensor4dDescriptor", "only float and bfloat16 tensors are emulated");
    if ((long long)n * c * h * w > 2147483647LL) {
        fprintf(stderr, "emu cuDNN: cudnnSetTensor4dDescriptor: %d x %d x %d x %d values, more than 2^31 - 1\n", n, c,
                h, w);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    *d = cudnnTensorStruct{1, t, n, c, h, w, 0, 0, 0, 0};
    if (f == CUDNN_TENSOR_NHWC) d->ns = (long)h * w * c, d->hs = (long)w * c, d->ws = c, d->cs = 1;
    else if (f == CUDNN_TENSOR_NCHW) d->ns = (long)c * h * w, d->cs = (long)h * w, d->hs = w, d->ws = 1;
    else return bad("cudnnSetTensor4dDescriptor", "only NHWC and NCHW are emulated");
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    *d = new cudnnFilterStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f, int k,
                                         int c, int h, int w) {
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("cudnnSetFilter4dDescriptor", "a dimension <= 0");
    if (t != CUDNN_DATA_FLOAT && t != CUDNN_DATA_BFLOAT16)
        return bad("cudnnSetFilter4dDescriptor", "only float and bfloat16 filters are emulated");
    if (f != CUDNN_TENSOR_NHWC && f != CUDNN_TENSOR_NCHW)
        return bad("cudnnSetFilter4dDescriptor", "only NHWC (K,R,S,C) and NCHW (K,C,R,S) are emulated");
    *d = cudnnFilterStruct{1, t, f, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = new cudnnConvolutionStruct();
    (*d)->math = CUDNN_DEFAULT_MATH;  // cuDNN's default
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dil_h, int dil_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0)
        return bad("cudnnSetConvolution2dDescriptor", "a negative padding or a stride or dilation <= 0");
    if (compute != CUDNN_DATA_FLOAT) return bad("cudnnSetConvolution2dDescriptor", "only float compute is emulated");
    cudnnMathType_t math = d->math;
    *d = cudnnConvolutionStruct{1, pad_h, pad_w, u, v, dil_h, dil_w, mode, compute, math};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreatePoolingDescriptor(cudnnPoolingDescriptor_t *d) {
    *d = new cudnnPoolingStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyPoolingDescriptor(cudnnPoolingDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetPooling2dDescriptor(cudnnPoolingDescriptor_t d, cudnnPoolingMode_t mode,
                                          cudnnNanPropagation_t nan, int wh, int ww, int ph, int pw, int sh, int sw) {
    if (mode != CUDNN_POOLING_MAX && mode != CUDNN_POOLING_MAX_DETERMINISTIC)
        return bad("cudnnSetPooling2dDescriptor", "only max pooling is emulated");
    if (wh <= 0 || ww <= 0 || sh <= 0 || sw <= 0 || ph < 0 || pw < 0)
        return bad("cudnnSetPooling2dDescriptor", "a window or stride <= 0, or a negative padding");
    *d = cudnnPoolingStruct{1, mode, nan, wh, ww, ph, pw, sh, sw};
    return CUDNN_STATUS_SUCCESS;
}

}  // extern "C"

// --- shapes and data ------------------------------------------------------------

static size_t elem_size(cudnnDataType_t t) { return t == CUDNN_DATA_BFLOAT16 ? 2 : 4; }

// Bytes a tensor's last element ends at, from its start.
static size_t tensor_bytes(const cudnnTensorStruct *d) {
    long last = (d->n - 1) * d->ns + (d->c - 1) * d->cs + (d->h - 1) * d->hs + (d->w - 1) * d->ws;
    return (size_t)(last + 1) * elem_size(d->type);
}

static cudnnStatus_t check_data(const char *fn, const char *name, const void *p, size_t bytes) {
    if (!p) return bad(fn, name);  // the name says which pointer is NULL
    size_t have = emu_device_extent(p);
    if (have >= bytes) return CUDNN_STATUS_SUCCESS;
    fprintf(stderr, "emu cuDNN: %s: %s: %zu bytes needed, %s\n", fn, name, bytes,
            have ? "past the end of its device allocation" : "not device memory");
    return CUDNN_STATUS_BAD_PARAM;
}

static float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t float_to_bf16(float f) {  // round to nearest even, as __float2bfloat16
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
// A float rounded to TF32 (10 mantissa bits): to nearest, ties away from
// zero, as the GPU's cvt.rna.tf32.f32; EMU_TF32=rz truncates instead, as
// tensor cores given float bits do (to see a tolerance's margin).
static float tf32(float f) {
    static const int rz = getenv("EMU_TF32") && !strcmp(getenv("EMU_TF32"), "rz");
    if (!isfinite(f)) return f;
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + (rz ? 0u : 0x1000u)) & ~0x1FFFu;
    memcpy(&f, &u, 4);
    return f;
}

static float get(const void *p, cudnnDataType_t t, long i) {
    return t == CUDNN_DATA_BFLOAT16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static void put(void *p, cudnnDataType_t t, long i, float v) {
    if (t == CUDNN_DATA_BFLOAT16) ((uint16_t *)p)[i] = float_to_bf16(v);
    else ((float *)p)[i] = v;
}

// A tensor as NHWC floats.
static std::vector<float> load_tensor(const cudnnTensorStruct *d, const void *p, int round_tf32) {
    std::vector<float> out((size_t)d->n * d->h * d->w * d->c);
    size_t o = 0;
    for (int n = 0; n < d->n; n++)
        for (int h = 0; h < d->h; h++)
            for (int w = 0; w < d->w; w++)
                for (int c = 0; c < d->c; c++) {
                    float v = get(p, d->type, n * d->ns + h * d->hs + w * d->ws + c * d->cs);
                    out[o++] = round_tf32 ? tf32(v) : v;
                }
    return out;
}
// y = alpha * v + beta * y (beta 0: y is not read, as cuDNN documents).
static void store_tensor(const cudnnTensorStruct *d, void *p, const std::vector<float> &v, float alpha, float beta) {
    size_t o = 0;
    for (int n = 0; n < d->n; n++)
        for (int h = 0; h < d->h; h++)
            for (int w = 0; w < d->w; w++)
                for (int c = 0; c < d->c; c++) {
                    long i = n * d->ns + h * d->hs + w * d->ws + c * d->cs;
                    float r = alpha * v[o++];
                    if (beta != 0.0f) r += beta * get(p, d->type, i);
                    put(p, d->type, i, r);
                }
}

// Offset of filter element (k, c, r, s) in its layout.
static long filter_at(const cudnnFilterStruct *f, int k, int c, int r, int s) {
    if (f->format == CUDNN_TENSOR_NHWC) return (((long)k * f->r + r) * f->s + s) * f->c + c;
    return (((long)k * f->c + c) * f->r + r) * f->s + s;
}
// The filter as K x (R*S*C) floats, flipped for CUDNN_CONVOLUTION (true
// convolution), so that every mode is a cross-correlation below.
static std::vector<float> load_filter(const cudnnFilterStruct *f, const cudnnConvolutionStruct *cv, const void *p,
                                      int round_tf32) {
    std::vector<float> out((size_t)f->k * f->r * f->s * f->c);
    int flip = cv->mode == CUDNN_CONVOLUTION;
    size_t o = 0;
    for (int k = 0; k < f->k; k++)
        for (int r = 0; r < f->r; r++)
            for (int s = 0; s < f->s; s++)
                for (int c = 0; c < f->c; c++) {
                    float v = get(p, f->type, filter_at(f, k, c, flip ? f->r - 1 - r : r, flip ? f->s - 1 - s : s));
                    out[o++] = round_tf32 ? tf32(v) : v;
                }
    return out;
}
static void store_filter(const cudnnFilterStruct *f, const cudnnConvolutionStruct *cv, void *p,
                         const std::vector<float> &v, float alpha, float beta) {
    int flip = cv->mode == CUDNN_CONVOLUTION;
    size_t o = 0;
    for (int k = 0; k < f->k; k++)
        for (int r = 0; r < f->r; r++)
            for (int s = 0; s < f->s; s++)
                for (int c = 0; c < f->c; c++) {
                    long i = filter_at(f, k, c, flip ? f->r - 1 - r : r, flip ? f->s - 1 - s : s);
                    float x = alpha * v[o++];
                    if (beta != 0.0f) x += beta * get(p, f->type, i);
                    put(p, f->type, i, x);
                }
}

// The shapes of one convolution, checked as cuDNN checks them.
struct ConvShape {
    int N, C, H, W, K, R, S, P, Q;
};
static cudnnStatus_t conv_shape(const char *fn, const cudnnTensorStruct *x, const cudnnFilterStruct *f,
                                const cudnnConvolutionStruct *cv, const cudnnTensorStruct *y, ConvShape *s) {
    if (!x || !f || !cv || !y || !x->set || !f->set || !cv->set || !y->set) return bad(fn, "a descriptor not set");
    if (x->type != f->type || y->type != x->type) return bad(fn, "tensors and filter of different data types");
    if (x->c != f->c) return bad(fn, "the input's channels are not the filter's");
    int P = (x->h + 2 * cv->pad_h - ((f->r - 1) * cv->dil_h + 1)) / cv->u + 1;
    int Q = (x->w + 2 * cv->pad_w - ((f->s - 1) * cv->dil_w + 1)) / cv->v + 1;
    if (P <= 0 || Q <= 0) return bad(fn, "the filter is larger than the padded input");
    if (y->n != x->n || y->c != f->k || y->h != P || y->w != Q) {
        fprintf(stderr, "emu cuDNN: %s: output %dx%dx%dx%d (NCHW), the descriptors give %dx%dx%dx%d\n", fn, y->n, y->c,
                y->h, y->w, x->n, f->k, P, Q);
        return CUDNN_STATUS_BAD_PARAM;
    }
    *s = ConvShape{x->n, x->c, x->h, x->w, f->k, f->r, f->s, P, Q};
    return CUDNN_STATUS_SUCCESS;
}

// Rows p0 .. p0+rows-1 of image X (H x W x C, NHWC) as im2col columns:
// col[(p - p0) * Q + q][(r * S + s) * C + c].
static void im2col(const float *X, const ConvShape &s, const cudnnConvolutionStruct *cv, int p0, int rows,
                   float *col) {
    const long RSC = (long)s.R * s.S * s.C;
    for (int p = p0; p < p0 + rows; p++)
        for (int q = 0; q < s.Q; q++) {
            float *row = col + ((long)(p - p0) * s.Q + q) * RSC;
            for (int r = 0; r < s.R; r++) {
                int h = p * cv->u - cv->pad_h + r * cv->dil_h;
                for (int t = 0; t < s.S; t++) {
                    int w = q * cv->v - cv->pad_w + t * cv->dil_w;
                    float *dst = row + ((long)r * s.S + t) * s.C;
                    if (h < 0 || h >= s.H || w < 0 || w >= s.W) memset(dst, 0, (size_t)s.C * sizeof(float));
                    else memcpy(dst, X + ((long)h * s.W + w) * s.C, (size_t)s.C * sizeof(float));
                }
            }
        }
}
static void col2im_add(const float *col, const ConvShape &s, const cudnnConvolutionStruct *cv, int p0, int rows,
                       float *X) {
    const long RSC = (long)s.R * s.S * s.C;
    for (int p = p0; p < p0 + rows; p++)
        for (int q = 0; q < s.Q; q++) {
            const float *row = col + ((long)(p - p0) * s.Q + q) * RSC;
            for (int r = 0; r < s.R; r++) {
                int h = p * cv->u - cv->pad_h + r * cv->dil_h;
                for (int t = 0; t < s.S; t++) {
                    int w = q * cv->v - cv->pad_w + t * cv->dil_w;
                    if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
                    const float *src = row + ((long)r * s.S + t) * s.C;
                    float *dst = X + ((long)h * s.W + w) * s.C;
                    for (int c = 0; c < s.C; c++) dst[c] += src[c];
                }
            }
        }
}
// Output rows per im2col chunk: about 64 MB of columns.
static int chunk_rows(const ConvShape &s) {
    long per_row = (long)s.Q * s.R * s.S * s.C;
    long rows = (16L << 20) / (per_row ? per_row : 1);
    return (int)(rows < 1 ? 1 : rows > s.P ? s.P : rows);
}

// The math a float convolution runs in: TF32 unless strict float32 is asked.
static int uses_tf32(const cudnnConvolutionStruct *cv, cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT && cv->math != CUDNN_FMA_MATH;
}

enum { FWD, BWD_DATA, BWD_FILTER };
struct ConvOp {
    int kind;
    ConvShape s;
    cudnnTensorStruct x, y;  // copies: a descriptor may change after the call
    cudnnFilterStruct f;
    cudnnConvolutionStruct cv;
    const void *in0, *in1;  // FWD: x, w; BWD_DATA: w, dy; BWD_FILTER: x, dy
    void *out;
    float alpha, beta;
    void *work;
    size_t work_bytes;
    // The call runs as two operations, conv_begin and conv_end, which
    // EMU_SCHEDULE=interleave may separate by other streams' work, as a
    // GPU runs a kernel while others run: what the begin saw and left.
    const char *fn;
    const char *names[3];    // of in0, in1, out
    size_t bytes[3];         // of in0, in1, out
    uint64_t in_hash[2];     // in0's and in1's bytes at the begin
    uint64_t stamp;          // the workspace's pattern from the begin on
    std::vector<unsigned char> result;  // the output's bytes, written at the end
};

static void run_conv(ConvOp *o) {
    const ConvShape &s = o->s;
    const int t32 = uses_tf32(&o->cv, o->x.type);
    const long RSC = (long)s.R * s.S * s.C, HWC = (long)s.H * s.W * s.C, PQK = (long)s.P * s.Q * s.K;
    const int rows = chunk_rows(s);
    std::vector<float> col((size_t)rows * s.Q * RSC);
    if (o->kind == FWD) {
        std::vector<float> X = load_tensor(&o->x, o->in0, t32), Wt = load_filter(&o->f, &o->cv, o->in1, t32);
        std::vector<float> Y((size_t)s.N * PQK);
        for (int n = 0; n < s.N; n++)
            for (int p0 = 0; p0 < s.P; p0 += rows) {
                int r = s.P - p0 < rows ? s.P - p0 : rows;
                im2col(&X[n * HWC], s, &o->cv, p0, r, col.data());
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r * s.Q, s.K, (int)RSC, 1.0f, col.data(),
                            (int)RSC, Wt.data(), (int)RSC, 0.0f, &Y[n * PQK + (long)p0 * s.Q * s.K], s.K);
            }
        store_tensor(&o->y, o->out, Y, o->alpha, o->beta);
    } else if (o->kind == BWD_DATA) {
        std::vector<float> Wt = load_filter(&o->f, &o->cv, o->in0, t32), DY = load_tensor(&o->y, o->in1, t32);
        std::vector<float> DX((size_t)s.N * HWC, 0.0f);
        for (int n = 0; n < s.N; n++)
            for (int p0 = 0; p0 < s.P; p0 += rows) {
                int r = s.P - p0 < rows ? s.P - p0 : rows;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r * s.Q, (int)RSC, s.K, 1.0f,
                            &DY[n * PQK + (long)p0 * s.Q * s.K], s.K, Wt.data(), (int)RSC, 0.0f, col.data(), (int)RSC);
                col2im_add(col.data(), s, &o->cv, p0, r, &DX[n * HWC]);
            }
        store_tensor(&o->x, o->out, DX, o->alpha, o->beta);
    } else {
        std::vector<float> X = load_tensor(&o->x, o->in0, t32), DY = load_tensor(&o->y, o->in1, t32);
        std::vector<float> DW((size_t)s.K * RSC, 0.0f);
        for (int n = 0; n < s.N; n++)
            for (int p0 = 0; p0 < s.P; p0 += rows) {
                int r = s.P - p0 < rows ? s.P - p0 : rows;
                im2col(&X[n * HWC], s, &o->cv, p0, r, col.data());
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s.K, (int)RSC, r * s.Q, 1.0f,
                            &DY[n * PQK + (long)p0 * s.Q * s.K], s.K, col.data(), (int)RSC, 1.0f, DW.data(), (int)RSC);
            }
        store_filter(&o->f, &o->cv, o->out, DW, o->alpha, o->beta);
    }
}
static void drop_conv(void *p) { delete (ConvOp *)p; }

// FNV-1a over 8-byte words (a check that bytes did not change, not a digest).
static uint64_t words_hash(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 1469598103934665603ull, v;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) memcpy(&v, b + i, 8), h = (h ^ v) * 1099511628211ull;
    for (; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
static const unsigned char in_flight_ = 0x7F;  // what an output holds while its call runs (gpu_emu.cpp's unwritten bytes)

// The workspace pattern of call o: its stamp's 8 bytes over and over,
// copied (a workspace need not be 8-byte aligned: an emulated allocation
// ends at its guard page) and cut short at the end (nor a multiple of 8
// bytes long). fill: write it; else 1 when the workspace still holds it.
static int stamp_pattern(const ConvOp *o, int fill) {
    unsigned char *w = (unsigned char *)o->work;
    size_t n = w ? o->work_bytes : 0, i = 0;
    for (; i < n; i += 8) {
        size_t len = n - i < 8 ? n - i : 8;
        if (fill) memcpy(w + i, &o->stamp, len);
        else if (memcmp(w + i, &o->stamp, len)) return 0;
    }
    return 1;
}

// The first half of a convolution call: reads its inputs (and, with beta,
// its output), computes the result and keeps it; meanwhile the output holds
// 0x7F bytes (a GPU writes it piece by piece: whoever reads it before the
// call ends reads garbage) and the workspace a pattern of this call's own.
static void conv_begin(void *p) {
    ConvOp *o = (ConvOp *)p;
    static uint64_t calls;
    o->stamp = 0x9E3779B97F4A7C15ull * ++calls;
    for (int i = 0; i < 2; i++) o->in_hash[i] = words_hash(i ? o->in1 : o->in0, o->bytes[i]);
    run_conv(o);
    o->result.assign((const unsigned char *)o->out, (const unsigned char *)o->out + o->bytes[2]);
    memset(o->out, in_flight_, o->bytes[2]);
    stamp_pattern(o, 1);  // nothing may be kept there
}

// Aborts with a line that names the call and what happened to it (a race:
// a test's result would otherwise depend on the schedule).
static void conv_race(const ConvOp *o, const char *what) {
    fprintf(stderr,
            "emu cuDNN: %s: %s was written by other work while the call ran: two streams share it without an event "
            "between them\n",
            o->fn, what);
    abort();
}

// The second half: the workspace, the inputs and the output must be as the
// begin left them (no other stream's work wrote them meanwhile); then the
// output is written.
static void conv_end(void *p) {
    ConvOp *o = (ConvOp *)p;
    if (!stamp_pattern(o, 0)) conv_race(o, "its workspace");
    for (int i = 0; i < 2; i++)
        if (words_hash(i ? o->in1 : o->in0, o->bytes[i]) != o->in_hash[i]) conv_race(o, o->names[i]);
    const unsigned char *out = (const unsigned char *)o->out;
    for (size_t i = 0; i < o->bytes[2]; i++)
        if (out[i] != in_flight_) conv_race(o, o->names[2]);
    memcpy(o->out, o->result.data(), o->bytes[2]);
    std::vector<unsigned char>().swap(o->result);
}

// --- algorithms: what the heuristics list, and their workspaces ----------------

// Per kind (FWD, BWD_DATA, BWD_FILTER), in the heuristics' order: the
// algorithm numbers and whether each is deterministic (cuDNN's
// documentation: backward-filter 0 and 3 are not, 1 is; backward-data 0 is
// not). The forward list starts with an algorithm labelled
// non-deterministic (as cuDNN may list a split-K kernel), so the picks'
// deterministic-first pass runs (tests/test_gpu_walk.c checks it is passed
// over); the backward-data list leaves out algorithm 1, so the walk's
// fallback to it (gpu_util.cu) runs.
struct Algos {
    int n, algo[4], det[4];
    int other_math[4];  // timed lists: an entry for another math type than the descriptor's
    int failed[4];      // timed lists: CUDNN_STATUS_ALLOC_FAILED (Find allocates buffers of its own)
};
static const Algos algos_[3] = {
    {3, {2, 1, 0}, {0, 1, 1}},
    {1, {0}, {0}},
    {3, {0, 3, 1}, {0, 0, 1}},
};
// What cudnnFind...Algorithm lists, fastest first: every algorithm the
// emulation runs, as cuDNN's Find also in another math type (the
// descriptor's and CUDNN_DEFAULT_MATH), and one that failed to allocate.
// The forward's first deterministic one in the descriptor's math is not
// the heuristics' pick, so a pick by timing shows in the walk's
// description, and one that took the other math's entry (1, fastest) or
// did not pass over the failed one shows too.
static const Algos timed_[3] = {
    {4, {1, 0, 2, 1}, {1, 1, 0, 1}, {1, 0, 0, 0}, {0, 0, 0, 0}},
    {2, {1, 0}, {1, 0}, {0, 0}, {1, 0}},
    {3, {3, 1, 0}, {0, 1, 0}, {0, 0, 0}, {0, 0, 0}},
};
// Workspace bytes of an algorithm of a kind for shape s, growing with the
// batch and the layer as cuDNN's do (a workspace sized for another shape
// shows); -1: not emulated.
static long workspace_of(int kind, int algo, const ConvShape &s) {
    const long out = (long)s.N * s.P * s.Q * 4, in = (long)s.N * s.H * s.W * 4, filter = (long)s.K * s.R * s.S * s.C * 4;
    if (algo == 0) return 0;
    if (kind == FWD) return algo == 1 ? out : algo == 2 ? in : -1;
    if (kind == BWD_DATA) return algo == 1 ? in : -1;
    return algo == 1 ? filter : algo == 3 ? 2 * filter : -1;
}

static float scalar(const void *p) { return *(const float *)p; }

// Whether [a, a + an) and [b, b + bn) share a byte.
static int overlap(const void *a, size_t an, const void *b, size_t bn) {
    return a && b && (const char *)a < (const char *)b + bn && (const char *)b < (const char *)a + an;
}

// Checks a convolution call as cuDNN would (and its data as a GPU would)
// and queues it on the handle's stream.
static cudnnStatus_t enqueue_conv(const char *fn, int kind, cudnnHandle_t h, int algo, const cudnnTensorStruct *x,
                                  const cudnnFilterStruct *f, const cudnnConvolutionStruct *cv,
                                  const cudnnTensorStruct *y, const void *in0, const void *in1, void *out,
                                  const void *alpha, const void *beta, void *work, size_t work_bytes) {
    ConvShape s;
    cudnnStatus_t st = conv_shape(fn, x, f, cv, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    long need = workspace_of(kind, algo, s);
    if (need < 0) return bad(fn, "an algorithm the emulation does not list");
    if ((size_t)need > work_bytes || (need && !work)) {
        fprintf(stderr, "emu cuDNN: %s: algorithm %d needs %ld bytes of workspace at this shape, %zu given\n", fn, algo,
                need, work ? work_bytes : 0);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (work && work_bytes && (st = check_data(fn, "workspace", work, work_bytes)) != CUDNN_STATUS_SUCCESS) return st;
    size_t fb = (size_t)f->k * f->c * f->r * f->s * elem_size(f->type);
    const char *names[3][3] = {{"x", "w", "y"}, {"w", "dy", "dx"}, {"x", "dy", "dw"}};
    size_t sizes[3][3] = {{tensor_bytes(x), fb, tensor_bytes(y)},
                          {fb, tensor_bytes(y), tensor_bytes(x)},
                          {tensor_bytes(x), tensor_bytes(y), fb}};
    const void *ptrs[3] = {in0, in1, out};
    for (int i = 0; i < 3; i++)
        if ((st = check_data(fn, names[kind][i], ptrs[i], sizes[kind][i])) != CUDNN_STATUS_SUCCESS) return st;
    // cuDNN's convolutions are not in place, and the workspace is its own.
    for (int i = 0; i < 2; i++)
        if (overlap(ptrs[i], sizes[kind][i], out, sizes[kind][2])) {
            fprintf(stderr, "emu cuDNN: %s: %s and %s overlap\n", fn, names[kind][i], names[kind][2]);
            return CUDNN_STATUS_BAD_PARAM;
        }
    for (int i = 0; i < 3; i++)
        if (overlap(ptrs[i], sizes[kind][i], work, work_bytes)) {
            fprintf(stderr, "emu cuDNN: %s: %s and the workspace overlap\n", fn, names[kind][i]);
            return CUDNN_STATUS_BAD_PARAM;
        }
    ConvOp *o = new ConvOp{kind, s, *x, *y, *f, *cv, in0, in1, out, scalar(alpha), scalar(beta), work, work_bytes};
    o->fn = fn;
    for (int i = 0; i < 3; i++) o->names[i] = names[kind][i], o->bytes[i] = sizes[kind][i];
    // Two operations (the begin owns nothing: a graph's copy of it is
    // dropped with the end's).
    emu_enqueue(conv_begin, NULL, o, h->stream);
    emu_enqueue_late(conv_end, drop_conv, o, h->stream);
    return CUDNN_STATUS_SUCCESS;
}

// The heuristics' list (cudnnGet...Algorithm_v7) of a kind; timed: cudnnFind...Algorithm's.
template <typename Perf>
static cudnnStatus_t heuristics(const char *fn, int kind, const cudnnTensorStruct *x, const cudnnFilterStruct *f,
                                const cudnnConvolutionStruct *cv, const cudnnTensorStruct *y, int requested,
                                int *returned, Perf *perf, int timed = 0) {
    ConvShape s;
    cudnnStatus_t st = conv_shape(fn, x, f, cv, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const Algos &a = timed ? timed_[kind] : algos_[kind];
    int k = 0;
    for (; k < a.n && k < requested; k++) {
        memset(&perf[k], 0, sizeof perf[k]);
        perf[k].algo = (decltype(perf[k].algo))a.algo[k];
        perf[k].status = timed && a.failed[k] ? CUDNN_STATUS_ALLOC_FAILED : CUDNN_STATUS_SUCCESS;
        perf[k].time = timed ? 0.1f * (k + 1) : -1;  // ms
        perf[k].memory = (size_t)workspace_of(kind, a.algo[k], s);
        perf[k].determinism = a.det[k] ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[k].mathType = timed && a.other_math[k]
                               ? (cv->math == CUDNN_DEFAULT_MATH ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH)
                               : cv->math;
    }
    *returned = k;
    return CUDNN_STATUS_SUCCESS;
}

// cudnnGet...WorkspaceSize of a kind.
static cudnnStatus_t workspace(const char *fn, int kind, const cudnnTensorStruct *x, const cudnnFilterStruct *f,
                               const cudnnConvolutionStruct *cv, const cudnnTensorStruct *y, int algo, size_t *bytes) {
    ConvShape s;
    cudnnStatus_t st = conv_shape(fn, x, f, cv, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (workspace_of(kind, algo, s) < 0) return CUDNN_STATUS_NOT_SUPPORTED;
    *bytes = (size_t)workspace_of(kind, algo, s);
    return CUDNN_STATUS_SUCCESS;
}

extern "C" {

// cuDNN 9's wrapper needs its sub-libraries (kernels/cudnn_api.cu,
// open_sublibraries); the emulation is one library, so the loader checks
// for them only when EMU_CUDNN_SUBLIBRARIES is set (the test of a partial
// install), and then beside the emulation only (2): this machine's library
// path may hold a real cuDNN's.
int vggft_cudnn_emu_wants_sublibraries(void) { return getenv("EMU_CUDNN_SUBLIBRARIES") ? 2 : 0; }

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t cv,
                                                     const cudnnTensorDescriptor_t y, const int requested,
                                                     int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return heuristics("cudnnGetConvolutionForwardAlgorithm_v7", FWD, x, w, cv, y, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                   const cudnnFilterDescriptor_t w,
                                                   const cudnnConvolutionDescriptor_t cv,
                                                   const cudnnTensorDescriptor_t y, const int requested, int *returned,
                                                   cudnnConvolutionFwdAlgoPerf_t *perf) {
    return heuristics("cudnnFindConvolutionForwardAlgorithm", FWD, x, w, cv, y, requested, returned, perf, 1);
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t cv,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    return workspace("cudnnGetConvolutionForwardWorkspaceSize", FWD, x, w, cv, y, algo, bytes);
}
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                      const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cv, cudnnConvolutionFwdAlgo_t algo,
                                      void *work, size_t work_bytes, const void *beta,
                                      const cudnnTensorDescriptor_t yd, void *y) {
    return enqueue_conv("cudnnConvolutionForward", FWD, h, algo, xd, wd, cv, yd, x, w, y, alpha, beta,
                        work, work_bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t cv,
                                                          const cudnnTensorDescriptor_t dx, const int requested,
                                                          int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return heuristics("cudnnGetConvolutionBackwardDataAlgorithm_v7", BWD_DATA, dx, w, cv, dy, requested, returned,
                      perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                        const cudnnTensorDescriptor_t dy,
                                                        const cudnnConvolutionDescriptor_t cv,
                                                        const cudnnTensorDescriptor_t dx, const int requested,
                                                        int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return heuristics("cudnnFindConvolutionBackwardDataAlgorithm", BWD_DATA, dx, w, cv, dy, requested, returned, perf,
                      1);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                           const cudnnTensorDescriptor_t dy,
                                                           const cudnnConvolutionDescriptor_t cv,
                                                           const cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    return workspace("cudnnGetConvolutionBackwardDataWorkspaceSize", BWD_DATA, dx, w, cv, dy, algo, bytes);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                           const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *work, size_t work_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    return enqueue_conv("cudnnConvolutionBackwardData", BWD_DATA, h, algo, dxd, wd, cv, dyd, w,
                        dy, dx, alpha, beta, work, work_bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                            const cudnnTensorDescriptor_t dy,
                                                            const cudnnConvolutionDescriptor_t cv,
                                                            const cudnnFilterDescriptor_t dw, const int requested,
                                                            int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return heuristics("cudnnGetConvolutionBackwardFilterAlgorithm_v7", BWD_FILTER, x, dw, cv, dy, requested, returned,
                      perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t cv,
                                                          const cudnnFilterDescriptor_t dw, const int requested,
                                                          int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return heuristics("cudnnFindConvolutionBackwardFilterAlgorithm", BWD_FILTER, x, dw, cv, dy, requested, returned,
                      perf, 1);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                             const cudnnTensorDescriptor_t dy,
                                                             const cudnnConvolutionDescriptor_t cv,
                                                             const cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    return workspace("cudnnGetConvolutionBackwardFilterWorkspaceSize", BWD_FILTER, x, dw, cv, dy, algo, bytes);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                             const void *x, const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *work, size_t work_bytes,
                                             const void *beta, const cudnnFilterDescriptor_t dwd, void *dw) {
    return enqueue_conv("cudnnConvolutionBackwardFilter", BWD_FILTER, h, algo, xd, dwd, cv,
                        dyd, x, dy, dw, alpha, beta, work, work_bytes);
}

}  // extern "C"

// --- pooling --------------------------------------------------------------------

struct PoolOp {
    cudnnPoolingStruct pd;
    cudnnTensorStruct x, y;
    const void *in;
    void *out;
    float alpha, beta;
};

static void run_pool(void *p) {
    PoolOp *o = (PoolOp *)p;
    std::vector<float> X = load_tensor(&o->x, o->in, 0);
    std::vector<float> Y((size_t)o->y.n * o->y.h * o->y.w * o->y.c);
    const int H = o->x.h, W = o->x.w, C = o->x.c;
    size_t k = 0;
    for (int n = 0; n < o->y.n; n++)
        for (int p = 0; p < o->y.h; p++)
            for (int q = 0; q < o->y.w; q++)
                for (int c = 0; c < C; c++) {
                    float m = -INFINITY;
                    for (int r = 0; r < o->pd.wh; r++)
                        for (int s = 0; s < o->pd.ww; s++) {
                            int h = p * o->pd.sh - o->pd.ph + r, w = q * o->pd.sw - o->pd.pw + s;
                            if (h < 0 || h >= H || w < 0 || w >= W) continue;
                            float v = X[(((size_t)n * H + h) * W + w) * C + c];
                            if (v > m || (isnan(v) && o->pd.nan == CUDNN_PROPAGATE_NAN)) m = v;
                            if (isnan(m)) break;
                        }
                    Y[k++] = m;
                }
    store_tensor(&o->y, o->out, Y, o->alpha, o->beta);
}
static void drop_pool(void *p) { delete (PoolOp *)p; }

extern "C" cudnnStatus_t cudnnPoolingForward(cudnnHandle_t h, const cudnnPoolingDescriptor_t pd, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x, const void *beta,
                                             const cudnnTensorDescriptor_t yd, void *y) {
    const char *fn = "cudnnPoolingForward";
    if (!pd || !xd || !yd || !pd->set || !xd->set || !yd->set) return bad(fn, "a descriptor not set");
    if (xd->type != yd->type) return bad(fn, "input and output of different data types");
    int P = (xd->h + 2 * pd->ph - pd->wh) / pd->sh + 1, Q = (xd->w + 2 * pd->pw - pd->ww) / pd->sw + 1;
    if (yd->n != xd->n || yd->c != xd->c || yd->h != P || yd->w != Q) {
        fprintf(stderr, "emu cuDNN: %s: output %dx%dx%dx%d (NCHW), the descriptors give %dx%dx%dx%d\n", fn, yd->n,
                yd->c, yd->h, yd->w, xd->n, xd->c, P, Q);
        return CUDNN_STATUS_BAD_PARAM;
    }
    cudnnStatus_t st;
    if ((st = check_data(fn, "x", x, tensor_bytes(xd))) != CUDNN_STATUS_SUCCESS) return st;
    if ((st = check_data(fn, "y", y, tensor_bytes(yd))) != CUDNN_STATUS_SUCCESS) return st;
    if (overlap(x, tensor_bytes(xd), y, tensor_bytes(yd))) return bad(fn, "x and y overlap");
    emu_enqueue(run_pool, drop_pool, new PoolOp{*pd, *xd, *yd, x, y, scalar(alpha), scalar(beta)}, h->stream);
    return CUDNN_STATUS_SUCCESS;
}
