// PNG as Pillow 13 reads it where libpng reads otherwise (PngImagePlugin.py,
// ImageFile.py, ZipDecode.c): the chunk rules PIL applies before and after
// the image data, and its row-by-row inflate of the image data, emulated.
// image_png.c decodes with libpng; these say what PIL refuses and, where
// libpng refuses what PIL reads, make a PNG that libpng reads to PIL's
// pixels. Fixtures: tests/fixtures/decoders/png*_ (scripts/fixtures_decoders.py).
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"
#include "image_codec.h"

// PIL's is_cid: a chunk type of 4 word characters.
static int is_word(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static int is_cid(const uint8_t *t) { return is_word(t[0]) && is_word(t[1]) && is_word(t[2]) && is_word(t[3]); }
static int is_type(const uint8_t *d, size_t pos, const char *t) { return !memcmp(d + pos + 4, t, 4); }

// (bit depth, colour type) pairs of PIL's _MODES: gray at 1-16 bits, a
// palette at 1-8, the others at 8 or 16.
static int pil_mode(int bd, int bc) {
    return bc == 0 ? (bd == 1 || bd == 2 || bd == 4 || bd == 8 || bd == 16)
         : bc == 3 ? (bd == 1 || bd == 2 || bd == 4 || bd == 8)
                   : (bc == 2 || bc == 4 || bc == 6) && (bd == 8 || bd == 16);
}

// The chunk at pos (whole in the file) against PIL's handlers that refuse a
// body shorter than the fields they read ("Truncated gAMA chunk"...; tRNS:
// 2 bytes for gray, 6 for RGB) or a field they do not take (IHDR's filter
// byte, iCCP's compression byte): -1 with err_set, or 0.
static int short_chunk(const uint8_t *d, size_t pos, int color_type) {
    static const struct { char type[5]; uint32_t min; } least[] = {
        {"IHDR", 13}, {"gAMA", 4}, {"cHRM", 32}, {"sRGB", 1}, {"pHYs", 9}, {"acTL", 8}, {"fcTL", 26}, {"fdAT", 4}};
    uint32_t need = 0, len = be32(d + pos);
    for (size_t k = 0; k < sizeof least / sizeof least[0]; k++)
        if (is_type(d, pos, least[k].type)) need = least[k].min;
    if (is_type(d, pos, "tRNS")) need = color_type == 0 ? 2 : color_type == 2 ? 6 : 0;
    if (len < need)
        return err_set("truncated %c%c%c%c chunk (%u bytes, %u needed: Pillow refuses it)", d[pos + 4], d[pos + 5],
                       d[pos + 6], d[pos + 7], len, need);
    const uint8_t *b = d + pos + 8;
    // chunk_IHDR: a filter byte but 0 is "unknown filter category".
    if (is_type(d, pos, "IHDR") && b[11]) return err_set("PNG IHDR with filter method %d (Pillow refuses it)", b[11]);
    // chunk_iCCP: the compression byte after the name's NUL (s[s.find(b"\0") + 1],
    // the first byte when there is no NUL) must be there and be 0.
    if (is_type(d, pos, "iCCP")) {
        const uint8_t *nul = memchr(b, 0, len);
        const size_t at = nul ? (size_t)(nul - b) + 1 : 0;
        if (at >= len || b[at]) return err_set("PNG iCCP chunk without compression method 0 (Pillow refuses it)");
    }
    return 0;
}

// PIL's APNG frame rules, in reading order (chunk_fcTL, chunk_fdAT): each
// fcTL's and fdAT's sequence number is one past the last (an fcTL's first 0),
// and a frame lies within the image's size as the IHDRs so far set it.
typedef struct {
    long seq;         // the last sequence number read, -1 none
    uint64_t w, h;    // the image's size so far
} Frames;

static int frame_chunk(const uint8_t *d, size_t pos, Frames *f) {
    const uint8_t *b = d + pos + 8;
    const int fctl = is_type(d, pos, "fcTL");
    if (!fctl && !is_type(d, pos, "fdAT")) return 0;
    const long seq = (long)be32(b);
    if (fctl ? (f->seq < 0 ? seq != 0 : f->seq != seq - 1) : (f->seq < 0 || f->seq != seq - 1))
        return err_set("APNG contains frame sequence errors (Pillow refuses it)");
    f->seq = seq;
    if (fctl && ((uint64_t)be32(b + 12) + be32(b + 4) > f->w || (uint64_t)be32(b + 16) + be32(b + 8) > f->h))
        return err_set("APNG contains invalid frames (a frame past the image; Pillow refuses it)");
    return 0;
}

// PngImageFile.load_end from `end`, the end of the image data chunk in which
// PIL's decoder finished (it skips that chunk's rest): for each chunk its CRC
// is skipped unread; a header cut short, a type that is no cid, IEND, or in
// an animated PNG fcTL end the reading quietly; a body cut short is
// "Truncated File Read" (ImageFile._safe_read); a short field is refused.
static int load_end(const uint8_t *d, size_t n, size_t end, int color_type, int animated, Frames *fr) {
    for (size_t pos = end;;) {
        if (pos > n || n - pos < 4 + 8) return 0;
        pos += 4;
        if (!is_cid(d + pos + 4) || is_type(d, pos, "IEND") || (animated && is_type(d, pos, "fcTL"))) return 0;
        const uint32_t len = be32(d + pos);
        if (len > n - pos - 8)
            return err_set("truncated PNG file (the %c%c%c%c chunk after the image data is cut short: %u bytes, %zu "
                           "left)",
                           d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7], len, n - pos - 8);
        if (short_chunk(d, pos, color_type) < 0 || frame_chunk(d, pos, fr) < 0) return -1;
        pos += 8 + (size_t)len;
    }
}

// What PIL's _open makes of the chunks before the image data: each IHDR sets
// the size, the mode when its colour type and depth are one of _MODES (else
// the mode stays), and interlacing when its byte is not 0 (it stays set); a
// filter byte but 0 is refused, the compression byte unread; a PLTE counts
// when the mode is a palette's as it is read, the last one that does.
typedef struct {
    long w, h;
    int depth, ct, interlaced;
    size_t plte;        // the last PLTE read in a palette mode (its chunk), 0 none
    size_t first_idat;  // where the image data starts
    uint8_t *rows;      // the filtered rows (filter byte, bytes), zeros past those read
    size_t total, got;  // their bytes, and those of whole rows read
    size_t done_end;    // the end of the chunk in which the decoder finished
} PilPng;

// The header of d as above: 1, or 0 when PIL or libpng refuses it anyway.
static int read_header(const uint8_t *d, size_t n, long max_pixels, PilPng *p) {
    memset(p, 0, sizeof *p);
    p->ct = -1;
    int any_ihdr = 0;
    size_t pos = 8;
    while (pos <= n && n - pos >= 8 && !is_type(d, pos, "IDAT")) {
        const size_t len = be32(d + pos);
        if (len > n - pos - 8 || n - pos - 8 - len < 4) return 0;
        const uint8_t *b = d + pos + 8;
        if (is_type(d, pos, "IHDR")) {
            if (len < 13 || b[11]) return 0;
            any_ihdr = 1;
            p->w = (long)be32(b), p->h = (long)be32(b + 4);
            if (pil_mode(b[8], b[9])) p->depth = b[8], p->ct = b[9];
            p->interlaced |= b[12] != 0;
        }
        if (p->ct == 3 && is_type(d, pos, "PLTE")) p->plte = pos;
        pos += 12 + len;
    }
    p->first_idat = pos;
    if (!any_ihdr || p->ct < 0 || pos > n || n - pos < 8) return 0;
    if (p->w <= 0 || p->h <= 0 || p->w > 0x7fffffff || p->h > 0x7fffffff ||
        image_check_budget(p->w, p->h, max_pixels, "PNG") != 0)
        return 0;
    return 1;
}

// PIL's reading of the image data (PngImagePlugin's load_read feeding
// ZipDecode.c): the bytes of the IDAT chunks (then DDAT ones too) go to the
// decoder a piece at a time (each chunk in pieces of at most ImageFile's
// decodermaxblock, 64 KiB), and it inflates one row (or Adam7 pass row) at a
// time into a buffer of that row's size. It is done at the last row, or at a
// whole row with which the zlib stream ended (the rows after it stay 0); an
// inflate error (a bad Adler-32 met in the call that gives the last row
// too), a filter type above 4, or the pieces running out first (the file or
// the chunks end) fail it. So PIL reads a stream without its Adler-32 or
// final block, or one that ends cleanly short of rows; libpng refuses those.
// Fills p->rows, got, done_end; 1 done, 0 failed, -1 out of memory.
static int inflate_rows(const uint8_t *d, size_t n, PilPng *p) {
    static const int start_row[7] = {0, 0, 4, 0, 2, 0, 1}, row_inc[7] = {8, 8, 8, 4, 4, 2, 2};
    static const int col_offset[7] = {7, 3, 3, 1, 1, 0, 0}, col_inc[7] = {8, 8, 4, 4, 2, 2, 1};
    const long w = p->w, h = p->h;
    const long bits = (long)(p->ct == 0 ? 1 : p->ct == 2 ? 3 : p->ct == 3 ? 1 : p->ct == 4 ? 2 : 4) * p->depth;
#define ROW_BYTES(cols) (((cols) * bits + 7) / 8)
    size_t total = 0;
    for (int k = 0; k < (p->interlaced ? 7 : 1); k++) {
        long rows = p->interlaced ? (h > start_row[k] ? (h - start_row[k] + row_inc[k] - 1) / row_inc[k] : 0) : h;
        long cols = p->interlaced ? (w + col_offset[k]) / col_inc[k] : w;
        if (rows > 0 && cols > 0) total += (size_t)rows * (size_t)(1 + ROW_BYTES(cols));
    }
    uint8_t *f = calloc(total ? total : 1, 1);
    if (!f) return -1;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) {
        free(f);
        return -1;
    }
    int pass = 0, done = 0, fail = 0;
    long y = 0, row_len = ROW_BYTES(p->interlaced ? (w + 7) / 8 : w);
    size_t at = 0, last = 0, pos = p->first_idat;
    while (!done && !fail && pos <= n && n - pos >= 8 &&
           (is_type(d, pos, "IDAT") || (pos > p->first_idat && is_type(d, pos, "DDAT")))) {
        const size_t len = be32(d + pos), have = len < n - pos - 8 ? len : n - pos - 8;
        for (size_t off = 0; off < have && !done && !fail;) {
            const size_t piece = have - off < 65536 ? have - off : 65536;
            z.next_in = (Bytef *)(d + pos + 8 + off);
            z.avail_in = (uInt)piece;
            off += piece;
            while (z.avail_in > 0) {
                z.next_out = f + at + last;
                z.avail_out = (uInt)((size_t)row_len + 1 - last);
                const int err = inflate(&z, Z_NO_FLUSH);
                if (err < 0) {
                    fail = 1;
                    break;
                }
                const size_t got = (size_t)row_len + 1 - z.avail_out;
                if (got < (size_t)row_len + 1) {  // more input needed
                    last = got;
                    break;
                }
                if (f[at] > 4) {  // "unknown" filter type
                    fail = 1;
                    break;
                }
                at += (size_t)row_len + 1, last = 0;
                if (p->interlaced) {
                    y += row_inc[pass];
                    while (y >= h || row_len <= 0) {
                        if (++pass == 7) {
                            y = h;
                            break;
                        }
                        y = start_row[pass];
                        row_len = ROW_BYTES((w + col_offset[pass]) / col_inc[pass]);
                    }
                } else {
                    y++;
                }
                if (y >= h || err == Z_STREAM_END) {
                    done = 1;
                    p->done_end = pos + 8 + len;
                    break;
                }
            }
        }
        // The chunk's body or CRC cut: PIL's next read fails.
        if (have < len || n - pos - 8 - len < 4) break;
        pos += 12 + len;
    }
#undef ROW_BYTES
    inflateEnd(&z);
    memset(f + at, 0, total - at);  // a row cut short is no row
    p->rows = f, p->total = total, p->got = at;
    return done;
}

int png_pil_check(const uint8_t *d, size_t n, long max_pixels) {
    // Before the image data PIL reads every chunk and checks its CRC
    // (ChunkStream.crc, ancillary chunks too: "broken PNG file (bad header
    // checksum in b'tEXt')"), which libpng is told to ignore; what is cut
    // short there libpng reports. An APNG (a valid acTL) is animated when it
    // has more than one frame, the IDAT image counting as one without an
    // fcTL before it.
    int color_type = -1, fctl = 0;
    long frames = -1;
    Frames fr = {-1, 0, 0};
    size_t pos = 8;
    for (; n - pos >= 8 && !is_type(d, pos, "IDAT"); pos += 12 + be32(d + pos)) {
        const uint32_t len = be32(d + pos);
        if (is_type(d, pos, "IEND") || len > n - pos - 8 || n - pos - 8 - len < 4) return 0;
        if (is_type(d, pos, "IHDR") && len >= 13) {
            const uint8_t *b = d + pos + 8;
            if (pil_mode(b[8], b[9])) color_type = b[9];  // the mode stays on an unknown pair
            fr.w = be32(b), fr.h = be32(b + 4);
        }
        if (short_chunk(d, pos, color_type) < 0 || frame_chunk(d, pos, &fr) < 0) return -1;
        if (crc32(crc32(0L, Z_NULL, 0), d + pos + 4, (uInt)len + 4) != be32(d + pos + 8 + len))
            return err_set("broken PNG file (bad header checksum in %c%c%c%c)", d[pos + 4], d[pos + 5], d[pos + 6],
                           d[pos + 7]);
        if (is_type(d, pos, "acTL")) {  // a second valid one unsets it (None), an invalid one is skipped
            const uint32_t nf = be32(d + pos + 8);
            if (frames >= 0) frames = -1;
            else if (nf && nf <= 0x80000000u) frames = (long)nf;
        }
        fctl |= is_type(d, pos, "fcTL");
    }
    if (n - pos < 8) return 0;  // no image data: libpng says so
    const int animated = frames > 1 || (frames == 1 && !fctl);
    // The image data chunks in a run, as load_read reads them. Whole, PIL's
    // decoder finishes in one of them (or the image is libpng's to refuse)
    // and load_end goes on after the run; the last one cut short by the end
    // of the file, where the decoder finishes decides.
    size_t run = pos, end = pos;
    while (run <= n && n - run >= 8 && (is_type(d, run, "IDAT") || (run > pos && is_type(d, run, "DDAT")))) {
        const size_t len = be32(d + run);
        if (len > n - run - 8) {
            PilPng p;
            int done = read_header(d, n, max_pixels, &p) ? inflate_rows(d, n, &p) : 0;
            free(p.rows);
            if (done < 0) return err_set("out of memory reading a PNG's image data");
            return done ? load_end(d, n, p.done_end, color_type, animated, &fr) : 0;
        }
        end = run + 8 + len;
        run = end + 4;
    }
    return load_end(d, n, end, color_type, animated, &fr);
}

// Writes a chunk of type t and n data bytes at c, with its length and CRC;
// returns its end.
static uint8_t *put_chunk(uint8_t *c, const char *t, const uint8_t *data, size_t n) {
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(n >> (24 - 8 * i));
    memcpy(c + 4, t, 4);
    if (n) memcpy(c + 8, data, n);
    uLong crc = crc32(0L, c + 4, (uInt)n + 4);
    for (int i = 0; i < 4; i++) c[8 + n + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
    return c + 12 + n;
}

// n bytes deflated (zlib format, level 1) into a buffer grown as needed, so
// that mostly-zero rows cost little; NULL when out of memory.
static uint8_t *deflate_all(const uint8_t *src, size_t n, size_t *out_n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit(&z, 1) != Z_OK) return NULL;
    size_t cap = n / 64 + 4096, fed = 0;
    uint8_t *buf = malloc(cap);
    int rc = Z_OK;
    while (buf && rc != Z_STREAM_END) {
        if (!z.avail_in && fed < n) {
            const size_t take = n - fed < ((size_t)1 << 30) ? n - fed : (size_t)1 << 30;
            z.next_in = (Bytef *)(src + fed), z.avail_in = (uInt)take, fed += take;
        }
        if (z.total_out == cap) {
            uint8_t *more = realloc(buf, cap * 2);
            if (!more) {
                free(buf), buf = NULL;
                break;
            }
            buf = more, cap *= 2;
        }
        z.next_out = buf + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out < ((size_t)1 << 30) ? cap - z.total_out : (size_t)1 << 30);
        rc = deflate(&z, fed < n ? Z_NO_FLUSH : Z_FINISH);
        if (rc == Z_STREAM_ERROR) free(buf), buf = NULL;
    }
    *out_n = z.total_out;
    deflateEnd(&z);
    return buf;
}

int png_pil_rebuild(const uint8_t *d, size_t n, long max_pixels, uint8_t **out, size_t *out_n) {
    *out = NULL;
    PilPng p;
    if (!read_header(d, n, max_pixels, &p)) return 0;
    const int done = inflate_rows(d, n, &p);
    if (done <= 0) {
        free(p.rows);
        return done;
    }
    // IHDR (as PIL's header reading left it, compression byte 0), the
    // palette: the whole entries of the PLTE PIL kept (more than 256 are its
    // "invalid palette size"; none, or no PLTE, black; indices past it are
    // black), the other chunks before the image data but PLTEs, one IDAT,
    // IEND.
    const size_t entries = p.plte ? be32(d + p.plte) / 3 : 0;
    if (entries > 256) {
        free(p.rows);
        return 0;
    }
    const size_t max_entries = (size_t)1 << (p.depth < 8 ? p.depth : 8);
    const size_t plte_n = p.ct != 3 ? 0 : 3 * (entries ? (entries < max_entries ? entries : max_entries) : max_entries);
    size_t zn = 0;
    uint8_t *zd = deflate_all(p.rows, p.total, &zn);
    free(p.rows);
    if (!zd) return -1;
    uint8_t *png = malloc(8 + 25 + (plte_n ? 12 + plte_n : 0) + (p.first_idat - 8) + 12 + zn + 12), *c = png;
    if (!png) {
        free(zd);
        return -1;
    }
    memcpy(c, d, 8), c += 8;
    uint8_t hdr[13] = {0};
    for (int i = 0; i < 4; i++) hdr[i] = (uint8_t)(p.w >> (24 - 8 * i)), hdr[4 + i] = (uint8_t)(p.h >> (24 - 8 * i));
    hdr[8] = (uint8_t)p.depth, hdr[9] = (uint8_t)p.ct, hdr[12] = (uint8_t)p.interlaced;
    c = put_chunk(c, "IHDR", hdr, 13);
    if (plte_n) {
        static const uint8_t black[768];
        c = put_chunk(c, "PLTE", entries ? d + p.plte + 8 : black, plte_n);
    }
    for (size_t q = 8; q < p.first_idat; q += 12 + (size_t)be32(d + q))
        if (!is_type(d, q, "IHDR") && !is_type(d, q, "PLTE"))
            memcpy(c, d + q, 12 + (size_t)be32(d + q)), c += 12 + (size_t)be32(d + q);
    c = put_chunk(c, "IDAT", zd, zn);
    free(zd);
    c = put_chunk(c, "IEND", NULL, 0);
    *out = png;
    *out_n = (size_t)(c - png);
    return 1;
}
