// Names as Python sees them (for Keras's order) and as a terminal shows them
// (for aligned tables). Names are byte strings that need not be UTF-8.
#pragma once
#include <stdio.h>

// The code point at s[0] (not NUL) as Python's os.listdir / os.fsdecode give
// it: bytes.decode('utf-8', 'surrogateescape'). A sequence CPython's strict
// UTF-8 decoder accepts (no overlong forms, no encoded surrogates
// U+D800..U+DFFF, nothing above U+10FFFF) is its code point; a byte that does
// not start one becomes U+DC00 + byte (only bytes >= 0x80 can; CPython's
// error ranges hold continuation bytes only, so escaping them one by one is
// what surrogateescape does with a whole range). *len: the bytes used.
unsigned utf8_decode_escape(const char *s, int *len);

// Display columns of s in a terminal, by a small rule of our own (wcwidth()
// would need a UTF-8 locale, which batch jobs often lack): 2 for East Asian
// wide and fullwidth characters (Hangul, CJK, kana, fullwidth forms) and the
// emoji blocks U+1F300..U+1F64F, U+1F900..U+1F9FF; 0 for combining marks
// (U+0300..U+036F: macOS writes "é" as e + U+0301), zero-width spaces and
// joiners U+200B..U+200F and variation selectors U+FE00..U+FE0F; 1 for
// anything else, tabs and control characters included (printed as they are)
// and each byte that is not UTF-8 (a terminal shows one U+FFFD for it).
int utf8_width(const char *s);

// Writes s in exactly `width` columns: cut after the last whole character
// that fits (never inside a UTF-8 sequence; zero-width marks stay with their
// character), then padded with spaces, after s (left-aligned) or before it
// (right = 1). printf's "%-*.*s" / "%*.*s" by columns instead of bytes.
void utf8_put_padded(FILE *out, const char *s, int width, int right);
