// The elementwise kernels of the bfloat16 conv base (--precision bf16):
// activations between convs are bf16 (NHWC), biases and sums float. Each
// has its float32 counterpart (gpu_util.cuh's gpu_bias_relu, cuDNN's max
// pool) and, below it, the CPU reference of common/layers.h. C++ (CUDA)
// translation units only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

// y[i] = bf16(max(float(y[i]) + bias[i % C], 0)), n elements.
void gpu_bias_relu_bf16(__nv_bfloat16 *y, const float *bias, long n, int C, cudaStream_t s);
// out[i] = bf16(max(in[i] + bias[i % C], 0)): the first conv runs in float
// (3 input channels suit no bf16 tensor-core kernel), its output goes bf16.
void gpu_bias_relu_to_bf16(const float *in, __nv_bfloat16 *out, const float *bias, long n, int C, cudaStream_t s);
// 2x2 max pool, stride 2, 'valid' (floor), NHWC: in N,H,W,C -> out
// N,H/2,W/2,C. CPU reference: maxpool2x2_forward.
void gpu_maxpool2x2_bf16(const __nv_bfloat16 *in, __nv_bfloat16 *out, int N, int H, int W, int C, cudaStream_t s);
// out[i] = float(in[i]).
void gpu_bf16_to_float(const __nv_bfloat16 *in, float *out, long n, cudaStream_t s);
// Host: float -> bf16, round to nearest even (what __float2bfloat16 does).
void gpu_float_to_bf16_host(const float *in, __nv_bfloat16 *out, size_t n);
