// IEEE 754 binary16 <-> float32, round to nearest even, in plain C so the
// cache format does not depend on the CPU having F16C.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string.h>

static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) return (uint16_t)(sign | (mag > 0x7f800000u ? 0x7e00u : 0x7c00u));  // NaN / Inf
    if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: overflow to Inf
    if (mag < 0x38800000u) {  // subnormal half (or zero)
        if (mag < 0x33000000u) return (uint16_t)sign;  // < 2^-25: rounds to 0
        uint32_t m = (mag & 0x007fffffu) | 0x00800000u;
        int shift = 126 - (int)(mag >> 23);  // 14..24
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((mag - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
    uint32_t rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, x;
    if (exp == 0) {
        if (man == 0) x = sign;
        else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (man << 13);
    } else {
        x = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

// Bulk conversions: F16C instructions where the CPU has them (8 values per
// instruction, exact), the portable functions above elsewhere.
void f16_to_f32_array(const uint16_t *h, float *f, size_t n);
void f32_to_f16_array(const float *f, uint16_t *h, size_t n);
