#include "half.h"

#include <immintrin.h>

__attribute__((target("f16c,avx"))) static void f16_to_f32_f16c(const uint16_t *h, float *f, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) f[i] = f16_to_f32(h[i]);
}

__attribute__((target("f16c,avx"))) static void f32_to_f16_f16c(const float *f, uint16_t *h, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(f + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) h[i] = f32_to_f16(f[i]);
}

static int have_f16c(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    }
    return cached;
}

void f16_to_f32_array(const uint16_t *h, float *f, size_t n) {
    if (have_f16c()) return f16_to_f32_f16c(h, f, n);
    for (size_t i = 0; i < n; i++) f[i] = f16_to_f32(h[i]);
}

void f32_to_f16_array(const float *f, uint16_t *h, size_t n) {
    if (have_f16c()) return f32_to_f16_f16c(f, h, n);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_f16(f[i]);
}
