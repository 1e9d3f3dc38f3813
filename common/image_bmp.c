// BMP, read the way PIL's BmpImagePlugin reads it (the header fields it
// trusts, its pixel-data offset rule, its 16-bit scaling): uncompressed,
// BI_BITFIELDS, and RLE8 / RLE4 (PIL's BmpRleDecoder, rule for rule).
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image_codec.h"

static uint32_t u16le(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8; }
static uint32_t u32le(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// One colour channel described by a bit mask, scaled to 8 bits like PIL's
// unpackers: 5 and 6-bit fields as v * 255 / max (integer division), 8-bit
// fields as they are.
typedef struct { uint32_t mask; int shift, bits; } Field;

static Field field(uint32_t mask) {
    Field f = {mask, 0, 0};
    if (!mask) return f;
    while (!((mask >> f.shift) & 1)) f.shift++;
    for (uint32_t m = mask >> f.shift; m & 1; m >>= 1) f.bits++;
    return f;
}

static uint8_t field_get(Field f, uint32_t px) {
    if (!f.mask) return 0;
    uint32_t v = (px & f.mask) >> f.shift;
    if (f.bits == 8) return (uint8_t)v;
    if (f.bits > 8) return (uint8_t)(v >> (f.bits - 8));
    return (uint8_t)(v * 255 / ((1u << f.bits) - 1));
}

// BmpImagePlugin's SUPPORTED bitfields layouts (R, G, B, A masks; the alpha
// mask counts at 32 bits only); any other it refuses ("Unsupported BMP
// bitfields layout"), and so does Keras's load_img.
static int pil_bitfields(int bits, const uint32_t m[4]) {
    static const uint32_t l32[][4] = {
        {0xFF0000, 0xFF00, 0xFF, 0},          {0xFF000000, 0xFF0000, 0xFF00, 0}, {0xFF000000, 0xFF00, 0xFF, 0},
        {0xFF000000, 0xFF0000, 0xFF00, 0xFF}, {0xFF, 0xFF00, 0xFF0000, 0xFF000000}, {0xFF0000, 0xFF00, 0xFF, 0xFF000000},
        {0xFF000000, 0xFF00, 0xFF, 0xFF0000}, {0, 0, 0, 0}};
    static const uint32_t l16[][3] = {{0xF800, 0x7E0, 0x1F}, {0x7C00, 0x3E0, 0x1F}};
    if (bits == 32) {
        for (size_t k = 0; k < sizeof l32 / sizeof l32[0]; k++)
            if (!memcmp(m, l32[k], sizeof l32[k])) return 1;
        return 0;
    }
    if (bits == 24) return m[0] == 0xFF0000 && m[1] == 0xFF00 && m[2] == 0xFF;
    if (bits == 16) return !memcmp(m, l16[0], sizeof l16[0]) || !memcmp(m, l16[1], sizeof l16[1]);
    return 0;
}

static const char *compression_name(uint32_t c) {
    switch (c) {
    case 1: return "RLE8";
    case 2: return "RLE4";
    case 4: return "embedded JPEG";
    case 5: return "embedded PNG";
    case 6: return "alpha bitfields";
    default: return "unknown";
    }
}

// PIL's BmpRleDecoder.decode: palette indices into idx (w*h, zeroed, in
// file row order), from d[pos] on; d is the whole file, since the 16-bit
// alignment after an absolute run is on the file position. Returns how many
// pixels the stream set (PIL refuses the image when that is short of w*h:
// "not enough image data"). Its rules, kept here exactly:
// - an encoded run (count, value) is cut at the end of the row (count is
//   then max(0, w - x)); RLE4 alternates the value's high and low nibbles;
// - escape 0 (end of line) pads the row with index 0; 1 ends the bitmap;
//   2 (delta dx, dy) adds dx + dy * w pixels of index 0;
// - an absolute run of c pixels is NOT cut at the row end (it wraps), and
//   adds c to x, so a wrapped row takes no encoded pixels until the next
//   end of line; the run's bytes are followed by padding to an even file
//   offset; data that ends inside a run or a delta ends the stream.
static size_t rle_decode(const uint8_t *d, size_t n, size_t pos, long w, long h, int rle4, uint8_t *idx) {
    const size_t dest = (size_t)w * (size_t)h;
    size_t len = 0;
    long x = 0;
    while (len < dest) {
        if (pos >= n || pos + 1 >= n) break;  // pixels or byte missing
        unsigned count = d[pos], byte = d[pos + 1];
        pos += 2;
        if (count) {  // encoded run
            long np = (long)count;
            if (x + np > w) np = w - x > 0 ? w - x : 0;
            for (long i = 0; i < np; i++) idx[len++] = (uint8_t)(!rle4 ? byte : (i % 2 == 0 ? byte >> 4 : byte & 15));
            x += np;
        } else if (byte == 0) {  // end of line
            while (len % (size_t)w) len++;
            x = 0;
        } else if (byte == 1) {  // end of bitmap
            break;
        } else if (byte == 2) {  // delta
            if (pos + 2 > n) break;
            size_t add = (size_t)d[pos] + (size_t)d[pos + 1] * (size_t)w;
            pos += 2;
            len += add < dest - len ? add : dest - len;
            x = (long)(len % (size_t)w);
        } else {  // absolute run of `byte` pixels
            size_t c = byte < dest - len ? byte : dest - len;
            size_t want = rle4 ? (c + 1) / 2 : c;
            size_t got = want < n - pos ? want : n - pos;
            for (size_t i = 0; i < got; i++) {
                if (!rle4) {
                    idx[len++] = d[pos + i];
                } else {
                    idx[len++] = d[pos + i] >> 4;
                    if (i * 2 + 1 < c) idx[len++] = d[pos + i] & 15;
                }
            }
            pos += got;
            if (got < want || len == dest) break;
            x += (long)byte;
            if (pos % 2) pos++;
        }
    }
    return len;
}

int bmp_decode(const uint8_t *d, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    if (n < 18) return err_set("truncated BMP header");
    uint32_t offset = u32le(d + 10);
    uint32_t hsize = u32le(d + 14);
    const uint8_t *h = d + 14;
    long w, ht;
    int bits, topdown = 0, pal_entry;
    uint32_t compression = 0, colors = 0;
    uint32_t masks[4] = {0, 0, 0, 0};  // red, green, blue, alpha
    if (hsize == 12) {  // OS/2 1.x / BITMAPCOREHEADER
        if (n < 14 + 12) return err_set("truncated BMP header");
        w = u16le(h + 4);
        ht = u16le(h + 6);
        bits = (int)u16le(h + 10);
        pal_entry = 3;
    } else if (hsize == 40 || hsize == 52 || hsize == 56 || hsize == 64 || hsize == 108 ||
               hsize == 124) {
        if (n < 14 + (size_t)hsize) return err_set("truncated BMP header");
        w = (int32_t)u32le(h + 4);
        ht = (int32_t)u32le(h + 8);
        if (ht < 0) {
            ht = -ht;
            topdown = 1;
        }
        bits = (int)u16le(h + 14);
        compression = u32le(h + 16);
        colors = u32le(h + 32);
        pal_entry = 4;
        if (compression == 3) {  // BI_BITFIELDS: masks in the header, or after a 40-byte one
            if (n < 14 + 40 + 12) return err_set("truncated BMP header");
            for (int i = 0; i < 3; i++) masks[i] = u32le(h + 40 + 4 * i);
            // PIL reads an alpha mask from headers of 56 bytes and more.
            if (hsize >= 56) masks[3] = u32le(h + 52);
        }
    } else {
        return err_set("unsupported BMP header type (%u bytes)", hsize);
    }
    info->src_w = (int)w;
    info->src_h = (int)ht;
    const int rle = compression == 1 || compression == 2;
    if (compression != 0 && compression != 3 && !rle)
        return err_set("unsupported BMP compression (%s)", compression_name(compression));
    // PIL reads RLE data as palette indices (its "P" raw mode).
    if (rle && bits > 8)
        return err_set("unsupported BMP compression (%s with %d-bit pixels)", compression_name(compression), bits);
    if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
        return err_set("unsupported BMP pixel depth (%d bits)", bits);
    if (compression == 3 && !pil_bitfields(bits, masks))
        return err_set("unsupported BMP bitfields layout (%d bits, masks R %#x G %#x B %#x A %#x: Pillow reads only "
                       "its list of layouts)",
                       bits, masks[0], masks[1], masks[2], masks[3]);
    if (image_check_budget(w, ht, max_pixels, "BMP") != 0) return -1;

    // Palette: colors entries (all 1 << bits when the header says 0) right
    // after the header. PIL reads pixels from the header's offset, except that
    // an offset pointing at the palette itself is moved past it.
    //
    // PIL's mode for a palette image (BmpImagePlugin): when every entry i is
    // the gray (i, i, i) (black and white for 2 colours, or fewer) the
    // palette is dropped: mode "L", the index is the gray level (past the
    // palette too), or mode "1" for 2 colours (bilevel, below); else mode
    // "P", whose entries past the palette are black.
    uint8_t pal[256][3];
    int bilevel = 0, gray_bytes = 0;
    size_t pbytes = 0;  // the palette's bytes read
    if (bits <= 8) {
        // PIL reads colors entries (all 1 << bits when the header says 0)
        // from the end of the header on, as far as the file goes (they may
        // run into the pixel data), and refuses more than 65536 listed
        // ("Unsupported BMP Palette size") or more than 256 read ("invalid
        // palette size").
        if (colors == 0) colors = 1u << bits;
        if (colors > 65536) return err_set("unsupported BMP palette size (%u entries)", colors);
        const size_t pstart = 14 + hsize, avail = n > pstart ? n - pstart : 0;
        pbytes = (size_t)colors * pal_entry < avail ? (size_t)colors * pal_entry : avail;
        const size_t entries = pbytes / pal_entry;
        // Gray: entry i is (i & 255) three times (PIL's o8(i)), black and
        // white for 2 colours; a gray palette is dropped, of any length.
        int gray = 1;
        memset(pal, 0, sizeof pal);
        for (uint32_t i = 0; i < colors && gray; i++) {
            const uint8_t *e = d + pstart + (size_t)i * pal_entry;
            const int v = colors <= 2 ? (i ? 255 : 0) : (int)(i & 255);
            // An entry the file ends in (or before) is no gray.
            if ((size_t)i * pal_entry + 3 > pbytes || e[0] != v || e[1] != v || e[2] != v) gray = 0;
        }
        if (!gray && entries > 256)
            return err_set("unsupported BMP palette size (%u entries; Pillow reads at most 256)", colors);
        for (size_t i = 0; i < entries && !gray; i++) {
            const uint8_t *e = d + pstart + i * pal_entry;
            pal[i][0] = e[2];
            pal[i][1] = e[1];
            pal[i][2] = e[0];
        }
        if (gray)
            for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
        // Mode "1": 0 black, anything else white (PIL's 1-bit pixels); a
        // 4- or 8-bit file's rows are then read as 1-bit rows (PIL's raw
        // mode "1" over the file's 4- or 8-bit stride), as Keras sees them.
        bilevel = gray && colors <= 2;
        if (bilevel) pal[1][0] = pal[1][1] = pal[1][2] = 255;
        // Mode "L" at 1 or 4 bits: PIL reads 8-bit bytes over the file's
        // stride, so a row is its first w bytes (index = byte), and a row
        // narrower than w bytes is PIL's "codec configuration error".
        gray_bytes = gray && !bilevel && bits < 8 && !rle;
        if (offset == 14 + hsize) offset += colors * pal_entry;
    }
    // PIL: an offset of 0 means "where the header (and palette) reading stopped".
    if (offset == 0)
        offset = (uint32_t)(14 + hsize + (compression == 3 && hsize == 40 ? 12 : 0) + pbytes);

    Field f[3];
    if (compression != 3) {
        if (bits == 16) masks[0] = 0x7C00, masks[1] = 0x3E0, masks[2] = 0x1F;
        else masks[0] = 0xFF0000, masks[1] = 0xFF00, masks[2] = 0xFF;
    } else if (bits == 32 && !masks[0] && !masks[1] && !masks[2]) {
        masks[0] = 0xFF0000, masks[1] = 0xFF00, masks[2] = 0xFF;  // PIL: BGRA
    }
    for (int i = 0; i < 3; i++) f[i] = field(masks[i]);

    if (rle) {
        uint8_t *idx = calloc((size_t)w * ht, 1);
        uint8_t *rgb = malloc((size_t)w * ht * 3);
        if (!idx || !rgb) {
            free(idx), free(rgb);
            return err_set("out of memory for a %ldx%ld BMP image", w, ht);
        }
        size_t got = offset <= n ? rle_decode(d, n, offset, w, ht, compression == 2, idx) : 0;
        if (got < (size_t)w * ht) {
            free(idx), free(rgb);
            return err_set("truncated or incomplete %s BMP data (%zu of %ld pixels)", compression_name(compression), got,
                           w * ht);
        }
        // Mode "1" (bilevel): PIL unpacks the RLE indices into it as "L"
        // bytes: any index but 0 is white.
        for (long y = 0; y < ht; y++) {
            const uint8_t *row = idx + (size_t)w * (size_t)(topdown ? y : ht - 1 - y);
            for (long x = 0; x < w; x++)
                memcpy(rgb + ((size_t)y * w + x) * 3, pal[bilevel && row[x] ? 1 : row[x]], 3);
        }
        free(idx);
        out->w = (int)w;
        out->h = (int)ht;
        out->rgb = rgb;
        return 0;
    }

    size_t stride = (((size_t)w * bits + 31) >> 3) & ~(size_t)3;
    if (gray_bytes && stride < (size_t)w)
        return err_set("unsupported BMP: a gray palette at %d bits in rows of %zu bytes, %ld pixels wide (Pillow reads "
                       "them as 8-bit rows and fails: codec configuration error)",
                       bits, stride, w);
    // PIL's raw decoder needs every row but the file's last whole with its
    // padding, and of the last row only the bytes its raw mode unpacks
    // (8-bit bytes for a gray palette read as bytes, 1-bit for mode "1").
    const size_t last = ((size_t)w * (gray_bytes ? 8 : bilevel ? 1 : bits) + 7) / 8;
    const size_t need = stride * (size_t)(ht - 1) + last;
    if (offset > n || n - offset < need)
        return err_set("truncated BMP pixel data (%zu bytes, need %zu from offset %u)", n, need, offset);
    uint8_t *rgb = malloc((size_t)w * ht * 3);
    if (!rgb) return err_set("out of memory for a %ldx%ld BMP image", w, ht);
    for (long y = 0; y < ht; y++) {
        const uint8_t *row = d + offset + stride * (size_t)(topdown ? y : ht - 1 - y);
        uint8_t *o = rgb + (size_t)y * w * 3;
        for (long x = 0; x < w; x++, o += 3) {
            if (bits <= 8) {
                int idx;
                if (gray_bytes) idx = row[x];
                else if (bits == 1 || bilevel) idx = (row[x >> 3] >> (7 - (x & 7))) & 1;
                else if (bits == 8) idx = row[x];
                else idx = (row[x >> 1] >> ((x & 1) ? 0 : 4)) & 15;
                memcpy(o, pal[idx], 3);
                continue;
            }
            uint32_t px;
            if (bits == 16) px = u16le(row + 2 * x);
            else if (bits == 24) px = row[3 * x] | (uint32_t)row[3 * x + 1] << 8 |
                                      (uint32_t)row[3 * x + 2] << 16;
            else px = u32le(row + 4 * x);
            for (int c = 0; c < 3; c++) o[c] = field_get(f[c], px);
        }
    }
    out->w = (int)w;
    out->h = (int)ht;
    out->rgb = rgb;
    return 0;
}
