#include "simd.h"

static int level = -1;  // -1: not decided yet

int simd_cpu_level(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return SIMD_AVX512;
    // Our AVX2 code uses FMA (the dense kernels); CPUs with AVX2 have it.
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SIMD_AVX2;
#endif
    return SIMD_PORTABLE;
}

int simd_level(void) {
    if (level < 0) level = simd_cpu_level();
    return level;
}

void simd_set_level(int want) {
    int most = simd_cpu_level();
    level = want < SIMD_PORTABLE ? SIMD_PORTABLE : want < most ? want : most;
}

const char *simd_level_name(int l) {
    switch (l) {
    case SIMD_AVX512: return "AVX-512";
    case SIMD_AVX2: return "AVX2+FMA";
    default: return "portable C";
    }
}
