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

// The rule of utf8.h: the main wide blocks of Markus Kuhn's wcwidth.
static int cp_width(unsigned cp) {
    static const unsigned zero[][2] = {{0x0300, 0x036F}, {0x200B, 0x200F}, {0xFE00, 0xFE0F}};
    static const unsigned wide[][2] = {
        {0x1100, 0x115F},   {0x2E80, 0x303E},   {0x3040, 0xA4CF},   {0xAC00, 0xD7A3},  {0xF900, 0xFAFF},
        {0xFE30, 0xFE4F},   {0xFF00, 0xFF60},   {0xFFE0, 0xFFE6},   {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF},
        {0x20000, 0x2FFFD}, {0x30000, 0x3FFFD},
    };
    for (unsigned i = 0; i < sizeof zero / sizeof *zero; i++)
        if (cp >= zero[i][0] && cp <= zero[i][1]) return 0;
    for (unsigned i = 0; i < sizeof wide / sizeof *wide; i++)
        if (cp >= wide[i][0] && cp <= wide[i][1]) return 2;
    return 1;
}

int utf8_width(const char *s) {
    int w = 0, len;
    for (; *s; s += len) w += cp_width(utf8_decode_escape(s, &len));
    return w;
}

void utf8_put_padded(FILE *out, const char *s, int width, int right) {
    int used = 0, len;
    size_t n = 0;
    for (; s[n]; n += (size_t)len) {
        int w = cp_width(utf8_decode_escape(s + n, &len));
        if (used + w > width) break;
        used += w;
    }
    if (right) fprintf(out, "%*s", width - used, "");
    // Control characters (a folder named "\e[31mred") as '?': a table
    // must not drive the terminal, and each is the one column counted.
    for (size_t i = 0; i < n; i += (size_t)len) {
        unsigned cp = utf8_decode_escape(s + i, &len);
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) fputc('?', out);
        else fwrite(s + i, 1, (size_t)len, out);
    }
    if (!right) fprintf(out, "%*s", width - used, "");
}
