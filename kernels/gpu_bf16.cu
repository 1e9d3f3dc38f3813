// bfloat16 elementwise kernels of the conv base (see gpu_bf16.cuh).
#include "gpu_bf16.cuh"
#include "gpu_util.cuh"

__global__ static void bias_relu_bf16(__nv_bfloat16 *y, const float *bias, long n, int C) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = __bfloat162float(y[i]) + bias[i % C];
        y[i] = __float2bfloat16(v > 0.f ? v : 0.f);
    }
}

void gpu_bias_relu_bf16(__nv_bfloat16 *y, const float *bias, long n, int C, cudaStream_t s) {
    bias_relu_bf16<<<gpu_blocks(n), 256, 0, s>>>(y, bias, n, C);
}

__global__ static void bias_relu_to_bf16(const float *in, __nv_bfloat16 *out, const float *bias, long n, int C) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = in[i] + bias[i % C];
        out[i] = __float2bfloat16(v > 0.f ? v : 0.f);
    }
}

void gpu_bias_relu_to_bf16(const float *in, __nv_bfloat16 *out, const float *bias, long n, int C, cudaStream_t s) {
    bias_relu_to_bf16<<<gpu_blocks(n), 256, 0, s>>>(in, out, bias, n, C);
}

__global__ static void maxpool2x2_bf16(const __nv_bfloat16 *in, __nv_bfloat16 *out, int N, int H, int W, int C) {
    const int Ho = H / 2, Wo = W / 2;
    const long n = (long)N * Ho * Wo * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        long p = i / C;
        int x = (int)(p % Wo);
        p /= Wo;
        int y = (int)(p % Ho);
        long b = p / Ho;
        const __nv_bfloat16 *r0 = in + (((b * H + 2 * y) * W) + 2 * x) * C + c, *r1 = r0 + (long)W * C;
        float m = __bfloat162float(r0[0]);
        m = fmaxf(m, __bfloat162float(r0[C]));
        m = fmaxf(m, __bfloat162float(r1[0]));
        m = fmaxf(m, __bfloat162float(r1[C]));
        out[i] = __float2bfloat16(m);
    }
}

void gpu_maxpool2x2_bf16(const __nv_bfloat16 *in, __nv_bfloat16 *out, int N, int H, int W, int C, cudaStream_t s) {
    maxpool2x2_bf16<<<gpu_blocks((long)N * (H / 2) * (W / 2) * C), 256, 0, s>>>(in, out, N, H, W, C);
}

__global__ static void bf16_to_float(const __nv_bfloat16 *in, float *out, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(in[i]);
}

void gpu_bf16_to_float(const __nv_bfloat16 *in, float *out, long n, cudaStream_t s) {
    bf16_to_float<<<gpu_blocks(n), 256, 0, s>>>(in, out, n);
}

void gpu_float_to_bf16_host(const float *in, __nv_bfloat16 *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = __float2bfloat16(in[i]);
}
