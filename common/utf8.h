// Names as Python sees them (for Keras's order). Names are byte strings that
// need not be UTF-8.
#pragma once

// The code point at s[0] (not NUL) as Python's os.listdir / os.fsdecode give
// it: bytes.decode('utf-8', 'surrogateescape'). A sequence CPython's strict
// UTF-8 decoder accepts (no overlong forms, no encoded surrogates
// U+D800..U+DFFF, nothing above U+10FFFF) is its code point; a byte that does
// not start one becomes U+DC00 + byte (only bytes >= 0x80 can; CPython's
// error ranges hold continuation bytes only, so escaping them one by one is
// what surrogateescape does with a whole range). *len: the bytes used.
unsigned utf8_decode_escape(const char *s, int *len);
