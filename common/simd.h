// Which vector instructions the CPU code paths use (the dense layer's
// kernels, the optimizers' rules): the widest this CPU has, unless capped
// with simd_set_level. Every level gives the same bits (each SIMD path does
// its reference's operations in the same order), so the cap only serves
// tests and benchmarks that compare levels.
//
// Not thread-safe: set it between parallel loops, from one thread.
#pragma once

enum { SIMD_PORTABLE = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2 };

int simd_level(void);
// Caps the level at `level`; above what the CPU has gives the CPU's.
void simd_set_level(int level);
// The widest level this CPU has.
int simd_cpu_level(void);
const char *simd_level_name(int level);  // "AVX-512", "AVX2+FMA", "portable C"
