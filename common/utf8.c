#include "utf8.h"

static int is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

unsigned utf8_decode_escape(const char *str, int *len) {
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0];
    *len = 1;
    if (c < 0x80) return c;
    // The bytes that may follow c (the Unicode standard's table 3-7, which
    // CPython follows): a narrower second byte after E0 (overlong), ED
    // (surrogates), F0 (overlong) and F4 (above U+10FFFF).
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        lo = c == 0xE0 ? 0xA0 : lo;
        hi = c == 0xED ? 0x9F : hi;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        lo = c == 0xF0 ? 0x90 : lo;
        hi = c == 0xF4 ? 0x8F : hi;
    } else {
        return 0xDC00 + c;  // a stray continuation byte, C0, C1, F5..FF
    }
    if (s[1] < lo || s[1] > hi) return 0xDC00 + c;
    unsigned cp = c & (0x3Fu >> n);
    for (int i = 1; i <= n; i++) {
        if (!is_continuation(s[i])) return 0xDC00 + c;  // truncated (a NUL ends it too)
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    *len = n + 1;
    return cp;
}
