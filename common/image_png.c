// PNG through libpng 1.6's classic API (the simplified png_image API would
// composite alpha and apply gamma; PIL does neither).
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"
#include "image_codec.h"

// Everything touched after setjmp lives here, on the heap, so longjmp
// cannot leave it indeterminate.
typedef struct {
    const uint8_t *data;
    size_t n, pos;
    char msg[256];
    uint8_t *pix;        // libpng's output rows
    png_bytep *rows;
    uint8_t *rgb;        // final RGB (== pix unless 16-bit gray)
    png_uint_32 w, h;
    int gray16;
    int rows_done;       // every row read: what follows cannot fail the image
} PngCtx;

static void read_mem(png_structp png, png_bytep dst, png_size_t len) {
    PngCtx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) png_error(png, "file ends early (truncated)");
    memcpy(dst, c->data + c->pos, len);
    c->pos += len;
}

static void on_error(png_structp png, png_const_charp msg) {
    PngCtx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

// PIL does not report libpng-style warnings (bad ancillary chunks, iCCP
// profiles...), and a library must not print to stderr.
static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

// Unknown chunks, critical ones too, are dropped, as PIL drops them (libpng
// stops at an unknown critical chunk).
static int on_unknown_chunk(png_structp png, png_unknown_chunkp chunk) {
    (void)png, (void)chunk;
    return 1;
}

static int decode(PngCtx *c, png_structp png, png_infop pi, long max_pixels, Image *out,
                  DecodeInfo *info) {
    if (setjmp(png_jmpbuf(png))) {
        // Past the last row PIL reads quietly or not at all (load_end stops
        // at the first chunk it cannot read): a fault there leaves the image.
        if (c->rows_done) goto rows_read;
        return err_set("corrupt or truncated PNG data (libpng: %s)", c->msg);
    }
    png_set_read_fn(png, c, read_mem);
    // CRCs: those of the chunks before the image data were checked as PIL
    // checks them (check_chunks_as_pil); PIL never checks IDAT's or later ones.
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_set_read_user_chunk_fn(png, NULL, on_unknown_chunk);
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, ct, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    c->w = w, c->h = h;
    info->src_w = (int)w;
    info->src_h = (int)h;
    if (image_check_budget((long)w, (long)h, max_pixels, "PNG") != 0) return -1;

    // To 8-bit RGB the way PIL's convert('RGB') gets there.
    int gray16 = c->gray16 = ct == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !gray16) png_set_strip_16(png);  // PIL's ";16B" rawmodes: high byte
    // Also drops the alpha that palette expansion makes from a tRNS chunk.
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, pi, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if ((ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) && !gray16)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pi);

    size_t want = gray16 ? (size_t)w * 2 : (size_t)w * 3;
    size_t rowbytes = png_get_rowbytes(png, pi);
    if (rowbytes != want)
        return err_set("unexpected PNG layout (color type %d, depth %d: %zu bytes per row)",
                       ct, depth, rowbytes);
    c->pix = malloc(rowbytes * h);
    c->rows = malloc(sizeof(png_bytep) * h);
    if (!c->pix || !c->rows) return err_set("out of memory for a %ux%u PNG image", w, h);
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pix + (size_t)y * rowbytes;
    png_read_image(png, c->rows);
    c->rows_done = 1;
    png_read_end(png, NULL);

rows_read:
    // (After a longjmp only what lives in c is determinate.)
    w = c->w, h = c->h;
    if (c->gray16) {
        // PIL opens 16-bit gray as I;16, and I;16 -> RGB clips at 255.
        c->rgb = malloc((size_t)w * h * 3);
        if (!c->rgb) return err_set("out of memory for a %ux%u PNG image", w, h);
        for (size_t p = 0; p < (size_t)w * h; p++) {
            uint8_t v = c->pix[2 * p] ? 255 : c->pix[2 * p + 1];
            c->rgb[3 * p] = c->rgb[3 * p + 1] = c->rgb[3 * p + 2] = v;
        }
        free(c->pix);
    } else {
        c->rgb = c->pix;
    }
    c->pix = NULL;
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Pillow reads the chunks after the image data until IEND and stops quietly
// where the file ends in or before a chunk header (PngImageFile.load_end
// catches the struct.error / SyntaxError of a short header), so a PNG that
// lacks only its IEND chunk (or ends inside that chunk's 8-byte header)
// loads. libpng's png_read_end insists on IEND. When the chunk walk from the
// signature reaches the end of the file at (or inside) a chunk header, after
// an IDAT and without meeting IEND, returns the bytes up to that point plus
// an IEND chunk (malloc'd into *fixed); otherwise *fixed is NULL. The same
// when the file ends inside the CRC of its last chunk: Pillow never checks
// the CRC of IDAT and later chunks (it reads and drops those 4 bytes), so
// the chunk gets its CRC back. A chunk whose body runs past the end is left
// alone: that is a truncated file for Pillow too.
static int add_missing_iend(const uint8_t *d, size_t n, uint8_t **fixed, size_t *fixed_n) {
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    *fixed = NULL;
    size_t pos = 8, keep;
    int idat = 0, crc_cut = 0;
    for (;;) {
        if (n - pos < 8) {  // the file ends at or inside a chunk header
            keep = pos;
            break;
        }
        uint32_t len = be32(d + pos);
        if (!memcmp(d + pos + 4, "IEND", 4)) return 0;
        if (!memcmp(d + pos + 4, "IDAT", 4)) idat = 1;
        if (len > n - pos - 8) return 0;  // body cut
        if (n - pos - 8 - len < 4) {      // CRC cut
            keep = pos + 8 + len;
            crc_cut = 1;
            break;
        }
        pos += 12 + (size_t)len;
    }
    if (!idat) return 0;
    size_t total = keep + (crc_cut ? 4 : 0) + sizeof iend;
    uint8_t *f = malloc(total);
    if (!f) return err_set("out of memory");
    memcpy(f, d, keep);
    if (crc_cut) {
        uLong crc = crc32(0L, d + pos + 4, (uInt)(keep - pos - 4));
        for (int i = 0; i < 4; i++) f[keep + i] = (uint8_t)(crc >> (24 - 8 * i));
        keep += 4;
    }
    memcpy(f + keep, iend, sizeof iend);
    *fixed = f;
    *fixed_n = total;
    return 0;
}

// PIL reads the chunks before the image data itself and checks each one's
// CRC (ChunkStream.crc: "broken PNG file (bad header checksum in b'tEXt')"),
// ancillary ones too; libpng is told to ignore CRCs (PIL does not check
// IDAT's or later ones), so those are checked here. A chunk cut short is
// left to libpng to report.
//
// After the image data PIL reads each chunk's header and body (load_end):
// a header cut short ends the file quietly (add_missing_iend), a body cut
// short is "Truncated File Read" (ImageFile._safe_read), refused here too
// (libpng's complaint about it would come after the last row, and be kept).
//
// A chunk type that is not 4 word characters (PIL's is_cid) after the image
// data ends PIL's reading quietly (load_end), and a tRNS chunk shorter than
// its colour type's value (2 bytes for gray, 6 for RGB) is PIL's "Truncated
// tRNS chunk", before the image data or after it.
static int is_word(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }

static int check_chunks_as_pil(const uint8_t *d, size_t n) {
    int image_data = 0, color_type = -1;
    for (size_t pos = 8; n - pos >= 8;) {
        uint32_t len = be32(d + pos);
        const int idat = !memcmp(d + pos + 4, "IDAT", 4), iend = !memcmp(d + pos + 4, "IEND", 4);
        if (image_data && !idat && !(is_word(d[pos + 4]) && is_word(d[pos + 5]) && is_word(d[pos + 6]) && is_word(d[pos + 7])))
            return 0;
        image_data |= idat;
        if (iend) return 0;
        if (!memcmp(d + pos + 4, "IHDR", 4) && len >= 13 && n - pos - 8 >= 13) color_type = d[pos + 8 + 9];
        if (!memcmp(d + pos + 4, "tRNS", 4) && len <= n - pos - 8 &&
            ((color_type == 0 && len < 2) || (color_type == 2 && len < 6)))
            return err_set("truncated tRNS chunk (%u bytes for a %s image: Pillow refuses it)", len,
                           color_type ? "RGB" : "gray");
        if (len > n - pos - 8) {
            if (image_data && !idat)
                return err_set("truncated PNG file (the %c%c%c%c chunk after the image data is cut short: %u bytes, "
                               "%zu left)",
                               d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7], len, n - pos - 8);
            return 0;  // cut inside the header chunks or the image data: libpng says so
        }
        if (!image_data) {
            if (n - pos - 8 - len < 4) return 0;  // the CRC cut: libpng says so
            uLong crc = crc32(0L, d + pos + 4, (uInt)len + 4);
            if (crc != be32(d + pos + 8 + len))
                return err_set("broken PNG file (bad header checksum in %c%c%c%c)", d[pos + 4], d[pos + 5],
                               d[pos + 6], d[pos + 7]);
        }
        pos += 8 + (size_t)len + (n - pos - 8 - len >= 4 ? 4 : n - pos - 8 - len);
    }
    return 0;
}

// Writes a chunk of type t and n data bytes at c (data NULL: the n bytes are
// already at c + 8) with its length and CRC; returns the end.
static uint8_t *put_chunk(uint8_t *c, const char *t, const uint8_t *data, size_t n) {
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(n >> (24 - 8 * i));
    memcpy(c + 4, t, 4);
    if (data) memcpy(c + 8, data, n);
    uLong crc = crc32(0L, c + 4, (uInt)n + 4);
    for (int i = 0; i < 4; i++) c[8 + n + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
    return c + 12 + n;
}

// Pillow's reading of the image data, emulated (PngImagePlugin's load_read
// feeding ZipDecode.c, Pillow 13): the IDAT chunks' bytes go to the decoder
// a piece at a time (each chunk in pieces of at most ImageFile's
// decodermaxblock, 64 KiB), and it inflates one row (or Adam7 pass row) at
// a time into a buffer of that row's size. The image is done at its last
// row, or at a whole row with which the zlib stream ended (the rows after
// it stay 0); an inflate error (a bad Adler-32 met in the call that gives
// the last row too), a filter type above 4, or the pieces running out first
// (the file or the IDAT chunks end) fail it. So Pillow reads a stream whose
// Adler-32 or final block is missing, or that ends cleanly short of rows;
// libpng refuses those. Called when libpng refused: returns 1 with a PNG
// that libpng reads to Pillow's pixels in *out (malloc'd: the chunks before
// the image data, one IDAT holding the rows Pillow read, recompressed, and
// zero rows for the others, IEND), 0 when Pillow fails too (or the header
// is for libpng to refuse), -1 out of memory.
static int pil_image_data(const uint8_t *d, size_t n, long max_pixels, uint8_t **out, size_t *out_n) {
    static const int start_row[7] = {0, 0, 4, 0, 2, 0, 1}, row_inc[7] = {8, 8, 8, 4, 4, 2, 2};
    static const int col_offset[7] = {7, 3, 3, 1, 1, 0, 0}, col_inc[7] = {8, 8, 4, 4, 2, 2, 1};
    *out = NULL;
    // The chunks before the image data, in PIL's reading (PngImageFile._open):
    // any order, the last IHDR of at least 13 bytes counts (its compression
    // byte unread, any interlace byte but 0 is Adam7, a filter byte but 0
    // refused), no PLTE leaves a palette image black.
    // A PLTE before any IHDR is read for no mode and dropped.
    size_t pos = 8, ihdr = 0, first_ihdr = 0;
    int has_plte = 0;
    while (n - pos >= 8 && memcmp(d + pos + 4, "IDAT", 4)) {
        size_t len = be32(d + pos);
        if (len > n - pos - 8 || n - pos - 8 - len < 4) return 0;
        if (!memcmp(d + pos + 4, "IHDR", 4)) {
            if (len < 13) return 0;
            ihdr = pos;
            if (!first_ihdr) first_ihdr = pos;
        }
        has_plte |= first_ihdr && !memcmp(d + pos + 4, "PLTE", 4);
        pos += 12 + len;
    }
    const size_t first_idat = pos;
    if (!ihdr || n - pos < 8) return 0;
    const uint8_t *ih = d + ihdr + 8;
    const long w = (long)be32(ih), h = (long)be32(ih + 4);
    const int depth = ih[8], ct = ih[9], interlaced = ih[12] != 0;
    const int channels = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : ct == 6 ? 4 : 0;
    // PIL's _MODES: gray at 1-16 bits, a palette at 1-8, the others at 8 or 16.
    const int depth_ok = ct == 0 ? (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)
                         : ct == 3 ? (depth == 1 || depth == 2 || depth == 4 || depth == 8)
                                   : (depth == 8 || depth == 16);
    if (!channels || !depth_ok || ih[11] || w <= 0 || h <= 0 || w > 0x7fffffff || h > 0x7fffffff ||
        image_check_budget(w, h, max_pixels, "PNG") != 0)
        return 0;
    const long bits = (long)channels * depth;
#define ROW_BYTES(cols) (((cols) * bits + 7) / 8)
    // The filtered data: every row with its filter byte, in stream order.
    size_t total = 0;
    for (int p = 0; p < (interlaced ? 7 : 1); p++) {
        long rows = interlaced ? (h > start_row[p] ? (h - start_row[p] + row_inc[p] - 1) / row_inc[p] : 0) : h;
        long cols = interlaced ? (w + col_offset[p]) / col_inc[p] : w;
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
    long y = 0, row_len = ROW_BYTES(interlaced ? (w + 7) / 8 : w);
    size_t at = 0, last = 0;
    // From the first IDAT, each chunk as long as it is one.
    while (!done && !fail && n - pos >= 8 && !memcmp(d + pos + 4, "IDAT", 4)) {
        const size_t len = be32(d + pos), have = len < n - pos - 8 ? len : n - pos - 8;
        for (size_t off = 0; off < have && !done && !fail;) {
            const size_t piece = have - off < 65536 ? have - off : 65536;
            z.next_in = (Bytef *)(d + pos + 8 + off);
            z.avail_in = (uInt)piece;
            off += piece;
            while (z.avail_in > 0) {
                z.next_out = f + at + last;
                z.avail_out = (uInt)(row_len + 1 - (long)last);
                const int err = inflate(&z, Z_NO_FLUSH);
                if (err < 0) {
                    fail = 1;
                    break;
                }
                const size_t got = (size_t)(row_len + 1) - z.avail_out;
                if (got < (size_t)row_len + 1) {  // more input needed
                    last = got;
                    break;
                }
                if (f[at] > 4) {  // "unknown" filter type
                    fail = 1;
                    break;
                }
                at += (size_t)row_len + 1, last = 0;
                if (interlaced) {
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
                    break;
                }
            }
        }
        if (have < len || n - pos - 8 - len < 4) break;  // the file ends inside this chunk
        pos += 12 + len;
    }
#undef ROW_BYTES
    inflateEnd(&z);
    // The rows read: the bytes after them (a row cut short) are no row.
    if (!done) {
        free(f);
        return 0;
    }
    memset(f + at, 0, total - at);
    // The new file: IHDR (compression and interlace bytes as libpng wants
    // them), the other chunks before the image data, a black PLTE where a
    // palette image has none, one IDAT, IEND.
    const size_t plte_n = ct == 3 && !has_plte ? (size_t)3 << depth : 0;
    uLongf zn = compressBound((uLong)total);
    const size_t cap = 8 + 25 + (first_idat - 8) + (plte_n ? 12 + plte_n : 0) + 12 + zn + 12;
    uint8_t *png = malloc(cap), *c = png;
    if (!png) {
        free(f);
        return -1;
    }
    memcpy(c, d, 8), c += 8;
    uint8_t hdr[13];
    memcpy(hdr, ih, 13);
    hdr[10] = 0, hdr[12] = (uint8_t)interlaced;
    c = put_chunk(c, "IHDR", hdr, 13);
    for (size_t q = 8; q < first_idat; q += 12 + be32(d + q))
        if (memcmp(d + q + 4, "IHDR", 4) && (q > first_ihdr || memcmp(d + q + 4, "PLTE", 4)))
            memcpy(c, d + q, 12 + be32(d + q)), c += 12 + be32(d + q);
    if (plte_n) {
        uint8_t black[768] = {0};
        c = put_chunk(c, "PLTE", black, plte_n);
    }
    if (compress2(c + 8, &zn, f, (uLong)total, 1) != Z_OK) {
        free(f), free(png);
        return -1;
    }
    free(f);
    c = put_chunk(c, "IDAT", NULL, zn);
    c = put_chunk(c, "IEND", NULL, 0);
    *out = png;
    *out_n = (size_t)(c - png);
    return 1;
}

// libpng on data (after check_chunks_as_pil and add_missing_iend).
static int decode_bytes(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    PngCtx *c = calloc(1, sizeof *c);
    if (!c) return err_set("out of memory");
    c->data = data;
    c->n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop pi = png ? png_create_info_struct(png) : NULL;
    int rc;
    if (!png || !pi) rc = err_set("cannot initialise libpng");
    else rc = decode(c, png, pi, max_pixels, out, info);
    png_destroy_read_struct(png ? &png : NULL, pi ? &pi : NULL, NULL);
    if (c->rgb != c->pix) free(c->rgb);
    free(c->pix);
    free(c->rows);
    free(c);
    return rc;
}

int png_decode(const uint8_t *data, size_t n, long max_pixels, Image *out, DecodeInfo *info) {
    if (n >= 8 && check_chunks_as_pil(data, n) < 0) return -1;
    uint8_t *fixed = NULL;
    size_t fixed_n = 0;
    if (n >= 8 && add_missing_iend(data, n, &fixed, &fixed_n) != 0) return -1;
    int rc = fixed ? decode_bytes(fixed, fixed_n, max_pixels, out, info) : decode_bytes(data, n, max_pixels, out, info);
    free(fixed);
    if (rc < 0) {
        // Refused by libpng: read as Pillow reads the image data, if it does.
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err_msg());
        uint8_t *again = NULL;
        size_t again_n = 0;
        if (pil_image_data(data, n, max_pixels, &again, &again_n) == 1)
            rc = decode_bytes(again, again_n, max_pixels, out, info);
        free(again);
        if (rc < 0) err_set("%s", why);
    }
    return rc;
}
