#!/usr/bin/env python3
"""Fixtures for tests/test_decoders.c: RLE8 / RLE4 BMPs, palette BMPs,
BI_BITFIELDS BMPs and BMPs cut in their last row's padding, plain PNMs
(P1-P3: comments, Python's int(), blocks), PNGs that lack their IEND chunk
or are damaged where Pillow does not look or whose image data Pillow's
row-by-row inflate reads and libpng refuses, and what Pillow (the library
Keras loads images with; 13.0.0 made the committed ones) makes of them.

    python3 scripts/fixtures_decoders.py tests/fixtures/decoders

Pillow cannot write RLE BMPs, so this script writes their bytes itself:
a few hand-made streams for each rule of Pillow's BmpRleDecoder (runs cut
at the row end, absolute runs that wrap, odd absolute runs and their
padding, end of line, delta, end of bitmap, a stream that ends early, a
top-down bitmap, a gray palette) and random streams of the same operations.
The expected result is always what Pillow reads from the file, never what
the script meant to write:

    rle_NN.bmp, png_NN.png, pal_NN.bmp, pnm_NN.pnm, pnmb_NN.pnm, bmpf_NN.bmp, pngz_NN.png,
    pngc_NN.png
                             the inputs (pnmb: read with PIL's block size at 16)
    PREFIX_verdicts.npy
                             uint8 per input: 1 = Pillow loads it, 0 = raises
    PREFIX_NN.npy
                             for those Pillow loads: uint8 H,W,3,
                             np.array(Image.open(f).convert('RGB')) (load_img)

Needs Pillow and numpy.
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/decoders"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20240611)


def path(name):
    return os.path.join(OUT, name)


def pillow_rgb(data, block=None):
    """load_img's pixels (None where Pillow raises); block: PIL's
    ImageFile.SAFEBLOCK for the call (its plain PNM reader reads blocks of it)."""
    from PIL import ImageFile
    saved = ImageFile.SAFEBLOCK
    if block:
        ImageFile.SAFEBLOCK = block
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))
    except Exception:
        return None
    finally:
        ImageFile.SAFEBLOCK = saved


def record(prefix, cases, ext=None, block=None):
    verdicts = []
    ext = ext or ("png" if prefix == "png" else "bmp")
    for i, data in enumerate(cases):
        with open(path(f"{prefix}_{i:02d}.{ext}"), "wb") as f:
            f.write(data)
        rgb = pillow_rgb(data, block)
        verdicts.append(rgb is not None)
        if rgb is not None:
            np.save(path(f"{prefix}_{i:02d}.npy"), rgb)
    np.save(path(f"{prefix}_verdicts.npy"), np.array(verdicts, np.uint8))
    print(f"{prefix}: {len(cases)} files, Pillow loads {sum(verdicts)}")


# ---------------------------------------------------------------- RLE BMP

def bmp_rle(w, h, rle4, stream, palette, topdown=False):
    """BITMAPINFOHEADER BMP with compression RLE8 (1) or RLE4 (2)."""
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if topdown else h, 1, 4 if rle4 else 8,
                       2 if rle4 else 1, len(stream), 2835, 2835, len(palette), 0)
    off = 14 + len(info) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(stream), 0, 0, off) + info + pal + stream


def enc(count, value):      # encoded run
    return bytes([count, value])


def absolute(values, rle4):  # absolute run, padded to a 16-bit boundary
    n = len(values)
    if rle4:
        v = list(values) + [0] * (n % 2)
        body = bytes((v[i] << 4) | v[i + 1] for i in range(0, len(v), 2))
    else:
        body = bytes(values)
    return bytes([0, n]) + body + b"\x00" * (len(body) % 2)


EOL, EOB = b"\x00\x00", b"\x00\x01"


def delta(dx, dy):
    return bytes([0, 2, dx, dy])


pal16 = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(16)]
pal40 = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(40)]
gray16 = [(i, i, i) for i in range(16)]
cases = []
W, H = 13, 5
for rle4 in (False, True):
    top = 16 if rle4 else 40
    pal = pal16 if rle4 else pal40
    # 0/1: every row full, encoded and absolute runs (odd lengths: padding).
    s = b""
    for y in range(H):
        s += enc(4, 0x12 if rle4 else 3 + y) + absolute([(y + k) % top for k in range(5)], rle4)
        s += enc(4, 0x9A if rle4 else 7) + EOL
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal))
    # 2/3: short rows closed by end of line, a delta, an end of bitmap after
    # the last row.
    s = enc(3, 0x35 if rle4 else 5) + EOL + delta(4, 1) + enc(2, 0x11 if rle4 else 9) + EOL
    s += enc(W, 0x77 if rle4 else 11) + EOL + enc(W, 0x21 if rle4 else 12) + EOL + EOB
    cases.append(bmp_rle(W, H, rle4, s, pal))
    # 4/5: an encoded run longer than the row (cut), then an absolute run
    # that wraps into the next row (and makes that row's encoded runs empty).
    s = enc(W + 7, 0x45 if rle4 else 6) + enc(3, 1) + EOL
    s += absolute([k % top for k in range(W + 4)], rle4) + enc(5, 0x33 if rle4 else 2) + EOL
    for y in range(H - 3):
        s += enc(W, 0x56 if rle4 else 8) + EOL
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal))
    # 6/7: end of bitmap before the last rows (Pillow: not enough image data).
    cases.append(bmp_rle(W, H, rle4, enc(W, 3) + EOL + EOB, pal))
    # 8/9: a stream cut inside an absolute run.
    full = (enc(W, 4) + EOL) * (H - 1) + absolute(list(range(W)), rle4)
    cases.append(bmp_rle(W, H, rle4, full[:-3], pal))
    # 10/11: top-down (negative height).
    s = b"".join(enc(W, (y * 17) % top) + EOL for y in range(H))
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal, topdown=True))
    # 12/13: a gray palette (Pillow: mode L, indices are the gray levels), a
    # delta past the end of the image.
    s = enc(W, 0x5A if rle4 else 10) + EOL + delta(200, 9)
    cases.append(bmp_rle(W, H, rle4, s + EOB, gray16))
    # 14/15: no end of bitmap at all, every pixel set: loads.
    s = b"".join(enc(W, 0x3C if rle4 else 13) + EOL for _ in range(H - 1)) + enc(W, 1)
    cases.append(bmp_rle(W, H, rle4, s, pal))
    # 16/17: a black and white palette (Pillow: mode "1"; indices above 1
    # come out white).
    s = b"".join(enc(3, 0x15 if rle4 else v) + enc(3, 0) + enc(W - 6, 0xF1 if rle4 else 200) + EOL
                 for v in (1, 5, 0, 255, 2)) + EOB
    cases.append(bmp_rle(W, H, rle4, s, [(0, 0, 0), (255, 255, 255)]))


def random_stream(w, h, rle4, top):
    ops = []
    for _ in range(int(rng.integers(h, 4 * h))):
        r = rng.random()
        if r < 0.40:
            ops.append(enc(int(rng.integers(1, w + 4)), int(rng.integers(0, 256 if rle4 else top))))
        elif r < 0.65:
            ops.append(absolute([int(v) for v in rng.integers(0, top, int(rng.integers(3, w + 6)))], rle4))
        elif r < 0.85:
            ops.append(EOL)
        elif r < 0.95:
            ops.append(delta(int(rng.integers(0, w)), int(rng.integers(0, 2))))
        else:
            ops.append(EOB)
    s = b"".join(ops)
    if rng.random() < 0.15:
        s = s[:int(rng.integers(0, len(s) + 1))]
    return s + (EOB if rng.random() < 0.7 else b"")


for i in range(24):
    rle4 = bool(i % 2)
    w, h = int(rng.integers(1, 19)), int(rng.integers(1, 9))
    pal = pal16 if rle4 else pal40
    cases.append(bmp_rle(w, h, rle4, random_stream(w, h, rle4, len(pal)), pal, topdown=rng.random() < 0.2))
record("rle", cases)

# ---------------------------------------------------------------- PNG without IEND

def chunks(png):
    pos, out = 8, []
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        out.append((png[pos + 4:pos + 8], png[pos:pos + 12 + n]))
        pos += 12 + n
    return out


def text_chunk(key, value):
    d = key + b"\x00" + value
    return struct.pack(">I", len(d)) + b"tEXt" + d + struct.pack(">I", zlib.crc32(b"tEXt" + d))


img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
buf = io.BytesIO()
Image.fromarray(img).save(buf, "PNG")
png = buf.getvalue()
sig, parts = png[:8], chunks(png)
assert parts[-1][0] == b"IEND"
body = sig + b"".join(c for _, c in parts[:-1])
# Several IDAT chunks: the image data split in three.
idat = b"".join(c[8:-4] for t, c in parts if t == b"IDAT")
split = b"".join(struct.pack(">I", len(p)) + b"IDAT" + p + struct.pack(">I", zlib.crc32(b"IDAT" + p))
                 for p in (idat[:10], idat[10:25], idat[25:]))
multi = sig + b"".join(c for t, c in parts[:-1] if t != b"IDAT") + split
pngs = [
    png,                                        # 00 complete
    body,                                       # 01 no IEND
    body + parts[-1][1][:5],                    # 02 IEND header cut
    body + text_chunk(b"Comment", b"after the image"),  # 03 a tEXt after IDAT, no IEND
    multi,                                      # 04 three IDATs, no IEND
    body[:-4],                                  # 05 last IDAT's CRC missing
    body[:-20],                                 # 06 cut inside the image data
    multi[:len(multi) - len(split) + 12 + 10],  # 07 only the first IDAT
]


def chunk(ctype, data, crc=None):
    c = zlib.crc32(ctype + data) if crc is None else crc
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", c & 0xFFFFFFFF)


# Damage PIL never looks at (IDAT's CRC and later chunks)
# and chunks it drops (unknown ones, critical too), and one it refuses (a
# bad CRC before the image data).
idat_c = [c for t, c in parts if t == b"IDAT"][0]
pre = sig + b"".join(c for t, c in parts if t not in (b"IDAT", b"IEND"))
bad_idat = idat_c[:-4] + bytes(b ^ 0xFF for b in idat_c[-4:])
split_bad = b"".join(chunk(b"IDAT", p, crc=0x12345678 if k == 0 else None)
                     for k, p in enumerate((idat[:10], idat[10:25], idat[25:])))
iend_c = parts[-1][1]
pngs += [
    pre + bad_idat + iend_c,                                  # 08 IDAT's CRC wrong
    pre + idat_c + iend_c[:-4] + b"\x00\x00\x00\x00",          # 09 IEND's CRC wrong
    pre + idat_c + iend_c[:-1],                               # 10 ends inside IEND's CRC
    pre + idat_c + iend_c[:-4],                               # 11 IEND's CRC missing
    pre + idat_c + b"\x00" * 4 + iend_c,                       # 12 junk before IEND
    pre + chunk(b"QXZW", b"critical, unknown") + idat_c + iend_c,  # 13 an unknown critical chunk
    pre + chunk(b"tEXt", b"Comment\x00x", crc=1) + idat_c + iend_c,  # 14 bad CRC before IDAT: PIL refuses
    pre + split_bad + iend_c,                                 # 15 the first of three IDATs with a wrong CRC
    pre + idat_c + chunk(b"ZZZZ", b"after", crc=7) + iend_c,   # 16 a damaged chunk after the image data
    pre + idat_c + chunk(b"tEXt", b"Comment\x00after the image")[:20],  # 17 one cut in its body: PIL refuses
]
record("png", pngs)

# ---------------------------------------------------------------- palette BMP
# Uncompressed 1/4/8-bit BMPs and PIL's palette modes: a palette of grays i
# (black and white for 2 colours) is dropped ("L": the index is the level,
# past the palette too; "1": the rows are read as 1-bit rows even at 4 or 8
# bits), any other is mode "P", whose entries past the palette are black.
# Its own generator, after the others: their bytes do not change.
prng = np.random.default_rng(20261130)


def bmp_plain(w, h, bits, palette, rows, topdown=False):
    """BITMAPINFOHEADER BMP, no compression; rows of indices, top first."""
    stride = ((w * bits + 31) >> 3) & ~3
    packed = []
    for r in rows:
        if bits == 8:
            b = bytes(r)
        elif bits == 4:
            v = list(r) + [0] * (len(r) % 2)
            b = bytes((v[i] << 4) | v[i + 1] for i in range(0, len(v), 2))
        else:
            v = list(r) + [0] * (-len(r) % 8)
            b = bytes(sum(v[i + k] << (7 - k) for k in range(8)) for i in range(0, len(v), 8))
        packed.append(b.ljust(stride, b"\0"))
    data = b"".join(packed if topdown else packed[::-1])
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if topdown else h, 1, bits, 0, len(data), 2835, 2835,
                       len(palette), 0)
    off = 14 + len(info) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + info + pal + data


def idx_rows(w, h, top):
    return [[int(v) for v in prng.integers(0, top, w)] for _ in range(h)]


colour3 = [(10, 20, 30), (200, 40, 60), (70, 250, 90)]
colour5 = [tuple(int(x) for x in prng.integers(0, 256, 3)) for _ in range(5)]
bw = [(0, 0, 0), (255, 255, 255)]
pals = [
    bmp_plain(13, 7, 8, colour3, idx_rows(13, 7, 256)),             # 00 indices past a 3-colour palette: black
    bmp_plain(11, 6, 4, colour5, idx_rows(11, 6, 16)),              # 01 the same at 4 bits
    bmp_plain(13, 5, 8, bw, idx_rows(13, 5, 2)),                    # 02 black and white at 8 bits: mode "1"
    bmp_plain(21, 4, 4, bw, idx_rows(21, 4, 16)),                   # 03 ... at 4 bits
    bmp_plain(9, 5, 8, [(i, i, i) for i in range(3)], idx_rows(9, 5, 256)),  # 04 3 grays: "L", level = index
    bmp_plain(17, 3, 1, [(255, 255, 255), (0, 0, 0)], idx_rows(17, 3, 2)),   # 05 white/black at 1 bit: "P"
    bmp_plain(17, 3, 1, bw, idx_rows(17, 3, 2), topdown=True),      # 06 black/white at 1 bit, top-down
    bmp_plain(10, 4, 8, [(0, 0, 0)], idx_rows(10, 4, 3)),           # 07 one black entry: "1"
    bmp_plain(12, 6, 8, [(i, i, i) for i in range(256)], idx_rows(12, 6, 256)),  # 08 a full gray ramp
    bmp_plain(12, 6, 8, [(3, 3, 3)] + [(i, i, i) for i in range(1, 40)], idx_rows(12, 6, 256)),  # 09 almost a ramp
]
# A gray palette at 1 or 4 bits: PIL reads its rows as bytes (mode "L"),
# failing where a row has fewer bytes than pixels.
pals += [
    bmp_plain(4, 3, 4, [(i, i, i) for i in range(16)], idx_rows(4, 3, 16)),  # 11 4 wide: the rows' bytes
    bmp_plain(3, 2, 1, [(i, i, i) for i in range(3)], idx_rows(3, 2, 2)),    # 12 1 bit, 3 grays, 3 wide
    bmp_plain(8, 2, 4, [(i, i, i) for i in range(16)], idx_rows(8, 2, 16)),  # 13 8 wide: PIL refuses
]
# A palette of more than 256 entries (PIL refuses it).
big = bmp_plain(5, 2, 8, colour3 * 100, idx_rows(5, 2, 3))
pals.append(big)
# RLE8 with indices past a colour palette (black, as uncompressed).
pals.append(bmp_rle(13, 4, False, enc(5, 1) + enc(8, 100) + EOL + absolute([0, 2, 7, 250, 1], False) + enc(8, 3) +
                    EOL + enc(13, 200) + EOL + enc(13, 2) + EOB, colour3))
record("pal", pals)


# ---------------------------------------------------------------- plain PNM
# P1-P3 data as PIL's PpmPlainDecoder reads it: a comment is cut out with
# its line end, so the number before it joins the one after ("1# c\n2" is
# 12); each token is Python's int() ("+1", "2_0" are numbers), at most 10
# bytes; P1's every byte in a block read must be 0, 1 or whitespace.
pnm = [
    b"P2\n2 1\n255\n1# note\n2 30\n",                # 00 a comment joins 1 and 2: 12, 30
    b"P3\n2 1\n255\n10 20 3#c\n0 40 50 60\n",        # 01 the same in P3
    b"P2 4 1 255\n+1 2_0 -0 0_0_1\n",                # 02 int()'s other spellings
    b"P2 2 1 255\n1__0 5\n",                         # 03 two underscores: no number
    b"P2 2 1 255\n_1 5\n",                           # 04 a leading underscore
    b"P2 2 1 255\n1_ 5\n",                           # 05 a trailing one
    b"P2 2 1 2_55\n7 9\n",                           # 06 maxval 2_55
    b"P2 2 1 +255\n7 9\n",                           # 07 maxval +255
    b"P5 1\x00 1 255\n\x05",                         # 08 a NUL inside a header number
    b"P1 2 1\n01x\n",                                # 09 P1: junk after the data
    b"P1 3 1\n0#c\n1 1",                             # 10 P1: a comment inside the data
    b"P1 3 1\n011",                                  # 11 P1: no whitespace needed
    b"P2 2 1 255\n1 2 AAAAAAAAAAAAA",                # 12 a long token after the data, at the end
    b"P2 2 1 255\n1 2 AAAAAAAAAAAAA\n",              # 13 the same with a line end: never read
    b"P2 2 1 255\n1 2 #c",                           # 14 a comment at the end, no line end
    b"P2 2 1 255\n1#c\r\n2",                         # 15 CR LF after a comment
    b"P2 2 1 255\n1#c\n\r2 3",                       # 16 LF CR
    b"P2 2 1 255\n-1 2\n",                           # 17 negative
    b"P2 2 1 100\n101 2\n",                          # 18 above maxval
    b"P2 2 1 255\n00000000001 2\n",                  # 19 an 11-byte token
    b"P2 2 1 255\n0000000001 2\n",                   # 20 a 10-byte token
    b"P2 2 1 65535\n65# x\n535 0\n",                 # 21 mode I, joined
    b"P2 +2 1 255\n3 4\n",                           # 22 width +2
    b"P2 -2 1 255\n3 4\n",                           # 23 width -2
    b"P2 0 1 255\n",                                 # 24 width 0
    b"P2\n2 1\n25# c\n5\n7 9\n",                     # 25 a comment inside the maxval: 255
    b"P3 1 2 255\t10\x0b20\x0c30\r40 50 60 ",       # 26 every whitespace byte
    b"P2 2 1 255\n1\x002 3\n",                       # 27 a NUL inside a sample
    b"P2 2 1 255\n1\x1c 3\n",                        # 28 a byte Python's int() does not strip
    b"P2 3 1 255\n1 2\n",                            # 29 too few samples
    b"P2 2 1 255\n1 2",                              # 30 the last sample at the end of the file
    b"P2 2 1 255\n1 2#\n",                           # 31 an empty comment glued to the last sample
    b"P2 2 1 255\n1 #\n#\n2",                        # 32 comment lines
]
record("pnm", pnm, ext="pnm")

# The same reader with PIL's block size at 16 bytes (tests set ours alike):
# a comment or a token cut by a block's end, a comment whose line end opens
# the next block with the other line end later in it (PIL's
# _find_comment_end then cuts up to the later one), and random files.
qrng = np.random.default_rng(20261201)
pnmb = [
    b"P2 4 1 255\n1 2 3 #comment that runs on\n4\n",     # 00 a comment across a block end
    b"P2 4 1 255\n1 2 3 12345678901\n",                  # 01 a long token across a block end
    b"P2 4 1 255\n1 2 3" + b" " * 9 + b"00245\n",          # 02 a token across a block end: 245
    b"P2 4 1 255\n# sixteen bytes!\n5 6\r7 8 9 10\n",  # 03 the LF opening a block, a CR later: 7 8 9 10
    b"P2 3 1 255\n" + b"#" * 40 + b"\n1 2 3\n",          # 04 a comment over three blocks
    b"P1 5 1\n" + b"#" * 20 + b"\n10101 junk\n",         # 05 P1: junk in the block after the data
    b"P1 5 1\n10101" + b" " * 40 + b"junk\n",            # 06 ... in a block never read
]


def rand_plain(kind):
    w, h = int(qrng.integers(1, 5)), int(qrng.integers(1, 4))
    maxval = int(qrng.choice([1, 15, 255, 1000]))
    n = w * h * (3 if kind == "P3" else 1)
    out = [f"{kind} {w} {h}" + ("" if kind == "P1" else f" {maxval}") + "\n"]
    for i in range(n + int(qrng.integers(0, 3))):
        v = int(qrng.integers(0, 2 if kind == "P1" else maxval + 1))
        out.append(str(v))
        r = qrng.random()
        sep = " " if r < 0.5 else "\n" if r < 0.6 else "\r\n" if r < 0.65 else "\t" if r < 0.7 else \
            "#" + "c" * int(qrng.integers(0, 20)) + str(qrng.choice(["\n", "\r", "\r\n", "\n\r"])) if r < 0.9 else \
            " #x\n" if r < 0.95 else ""
        out.append(sep)
    return "".join(out).encode()


for k in range(60):
    pnmb.append(rand_plain(str(qrng.choice(["P1", "P2", "P3"]))))
record("pnmb", pnmb, ext="pnm", block=16)

# ---------------------------------------------------------------- BMP bitfields, row padding
# BI_BITFIELDS: PIL reads only the layouts of its SUPPORTED list (R, G, B
# masks, and at 32 bits the alpha mask, which a header of 40 or 52 bytes
# leaves 0). And its raw decoder needs all rows but the file's last with
# their padding, of the last only the bytes it unpacks.
frng = np.random.default_rng(20261202)


def bmp_fields(w, h, bits, masks, hsize=40, compression=3, topdown=False, cut=0, colors=None, ncolors=0):
    """A BMP of random pixel bytes: masks (r, g, b[, a]) in the header (52
    bytes and more) or after a 40-byte one; cut bytes off the end."""
    stride = ((w * bits + 31) >> 3) & ~3
    data = frng.integers(0, 256, stride * h, dtype=np.uint8).tobytes()
    m = list(masks) + [0] * (4 - len(masks))
    info = struct.pack("<IiiHHIIiiII", hsize, w, -h if topdown else h, 1, bits, compression, len(data), 2835, 2835,
                       ncolors, 0)
    extra = b""
    if compression == 3 and hsize == 40:
        extra = struct.pack("<III", *m[:3])
    elif hsize > 40:
        info += struct.pack("<IIII", *m)[:min(16, hsize - 40)]
        info += b"\0" * (hsize - len(info))
    pal = b""
    if colors is not None:
        pal = b"".join(bytes([b, g, r, 0]) for r, g, b in colors)
    off = 14 + len(info) + len(extra) + len(pal)
    body = info + extra + pal + data
    whole = b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, off) + body
    return whole[:len(whole) - cut] if cut else whole


bmpf = [
    bmp_fields(5, 3, 16, (0xF800, 0x7E0, 0x1F)),                    # 00 565
    bmp_fields(5, 3, 16, (0x7C00, 0x3E0, 0x1F)),                    # 01 555
    bmp_fields(5, 3, 16, (0xF00, 0xF0, 0xF)),                       # 02 444: refused
    bmp_fields(5, 3, 16, (0x1F, 0x7E0, 0xF800)),                    # 03 565, red and blue swapped: refused
    bmp_fields(5, 3, 24, (0xFF0000, 0xFF00, 0xFF)),                 # 04 24-bit BGR
    bmp_fields(5, 3, 24, (0xFF, 0xFF00, 0xFF0000)),                 # 05 24-bit RGB: refused
    bmp_fields(5, 3, 32, (0xFF, 0xFF00, 0xFF0000)),                 # 06 RGB masks, 40 bytes (alpha 0): refused
    bmp_fields(5, 3, 32, (0xFF, 0xFF00, 0xFF0000, 0xFF000000), hsize=56),  # 07 RGBA
    bmp_fields(5, 3, 32, (0x3FF00000, 0xFFC00, 0x3FF), hsize=124),  # 08 10-10-10: refused
    bmp_fields(5, 3, 32, (0xFF0000, 0xFF00, 0xFF, 0xFF), hsize=124),  # 09 an alpha of 0xFF there: refused
    bmp_fields(5, 3, 32, (0xFF, 0xFF00, 0xFF0000, 0xFF000000), hsize=52),  # 10 RGBA in 52 bytes (alpha 0): refused
]
bmpf += [bmp_fields(4, 3, 32, m, hsize=124) for m in [                 # 11-18 every 32-bit layout PIL reads
    (0xFF0000, 0xFF00, 0xFF, 0), (0xFF000000, 0xFF0000, 0xFF00, 0), (0xFF000000, 0xFF00, 0xFF, 0),
    (0xFF000000, 0xFF0000, 0xFF00, 0xFF), (0xFF, 0xFF00, 0xFF0000, 0xFF000000), (0xFF0000, 0xFF00, 0xFF, 0xFF000000),
    (0xFF000000, 0xFF00, 0xFF, 0xFF0000), (0, 0, 0, 0)]]
bmpf += [
    bmp_fields(5, 3, 24, (), compression=0, cut=1),                  # 19 24-bit, the last row's pad byte missing
    bmp_fields(5, 3, 24, (), compression=0, cut=2),                  # 20 ... and a pixel byte: refused
    bmp_fields(5, 3, 24, (), compression=0, cut=1, topdown=True),    # 21 top-down, its last row's pad
    bmp_fields(3, 2, 16, (), compression=0, cut=2),                  # 22 16-bit, 3 wide: 2 pad bytes
    bmp_fields(3, 2, 8, (), compression=0, cut=1, colors=colour3),   # 23 8-bit palette, 3 wide: 1 pad byte
    bmp_fields(9, 2, 1, (), compression=0, cut=2, colors=[(9, 9, 9), (200, 10, 10)]),  # 24 1 bit: 2 of 4 bytes
    bmp_fields(3, 2, 4, (), compression=0, cut=1, colors=[(i, i, i) for i in range(16)]),  # 25 gray at 4 bits: bytes
    bmp_fields(3, 2, 4, (), compression=0, cut=2, colors=[(i, i, i) for i in range(16)]),  # 26 ... one byte short
    bmp_fields(13, 2, 8, (), compression=0, cut=3, colors=bw),       # 27 mode "1" at 8 bits: 2 bytes of 16 read
    bmp_fields(13, 2, 8, (), compression=0, cut=15, colors=bw),      # 28 ... one short of those: refused
]
# A gray palette (entry i is i & 255, PIL's o8) of more than 256 entries is
# dropped like any gray one: mode "L"; a colour one of more is refused.
bmpf += [
    bmp_fields(3, 2, 8, (), compression=0, colors=[(i & 255,) * 3 for i in range(257)], ncolors=257),  # 29 257 grays
    bmp_fields(3, 2, 8, (), compression=0, colors=[(i & 255,) * 3 for i in range(300)], ncolors=300),  # 30 300
    bmp_fields(9, 2, 1, (), compression=0, colors=[(i & 255,) * 3 for i in range(512)], ncolors=512),  # 31 512 at 1 bit
    bmp_fields(3, 2, 8, (), compression=0, colors=[(i & 255, 0, 0) for i in range(257)], ncolors=257),  # 32 257 colours: refused
]
record("bmpf", bmpf)

# ---------------------------------------------------------------- PNG image data as Pillow inflates it
# ZipDecode.c inflates one row at a time and is done at the last row, or at
# a whole row with which the zlib stream ended (the rest stays 0): so a
# stream without its Adler-32 or final block, or one that ends cleanly short
# of rows, loads; one that ends inside a row, has a bad Adler-32 in the
# piece that gives the last row, or whose IDAT chunks run out first does not.
zrng = np.random.default_rng(20261203)
ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]


def raw_rows(w, h, bits, interlaced):
    """Random filtered rows (filter byte, row bytes), in stream order, and
    the row length of each."""
    rows = []
    for (r0, c0, dr, dc) in (ADAM7 if interlaced else [(0, 0, 1, 1)]):
        nr, nc = max(0, (h - r0 + dr - 1) // dr), max(0, (w - c0 + dc - 1) // dc)
        if nr and nc:
            for _ in range(nr):
                rows.append(bytes([int(zrng.integers(0, 5))]) + zrng.integers(0, 256, (nc * bits + 7) // 8,
                                                                                dtype=np.uint8).tobytes())
    return rows


def png_of(w, h, ct, depth, interlaced, idat_payloads, cut=0):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ct]
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ct, 0, 0, int(interlaced)))
    if ct == 3:
        out += chunk(b"PLTE", zrng.integers(0, 256, 3 * (1 << depth), dtype=np.uint8).tobytes())
    out += b"".join(chunk(b"IDAT", p) for p in idat_payloads) + chunk(b"IEND", b"")
    return out[:len(out) - cut] if cut else out


def sync_flushed(data):
    c = zlib.compressobj()
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


def z_case(w, h, ct, depth, interlaced, how):
    bits = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ct] * depth
    rows = raw_rows(w, h, bits, interlaced)
    raw = b"".join(rows)
    comp = zlib.compress(raw)
    if how == "whole":
        return png_of(w, h, ct, depth, interlaced, [comp])
    if how.startswith("no_adler"):          # no_adler1..4: that many bytes of it gone
        return png_of(w, h, ct, depth, interlaced, [comp[:-int(how[-1])]])
    if how == "file_ends_in_adler":         # the file cut 2 bytes before the IDAT data's end
        return png_of(w, h, ct, depth, interlaced, [comp], cut=2 + 4 + 12)
    if how == "unfinished":
        return png_of(w, h, ct, depth, interlaced, [sync_flushed(raw)])
    k = max(1, len(rows) * 2 // 3)
    short = b"".join(rows[:k])
    if how == "short":                      # ends cleanly after k whole rows
        return png_of(w, h, ct, depth, interlaced, [zlib.compress(short)])
    if how == "short_end_apart":            # ... its Adler-32 in an IDAT of its own
        z = zlib.compress(short)
        return png_of(w, h, ct, depth, interlaced, [z[:-4], z[-4:]])
    if how == "mid_row":                    # ends cleanly inside a row
        return png_of(w, h, ct, depth, interlaced, [zlib.compress(short + rows[k][:1])])
    if how == "bad_adler":
        return png_of(w, h, ct, depth, interlaced, [comp[:-4] + bytes(b ^ 0x5A for b in comp[-4:])])
    if how == "bad_adler_apart":            # the bad Adler-32 in an IDAT after the rows'
        return png_of(w, h, ct, depth, interlaced, [comp[:-4], bytes(b ^ 0x5A for b in comp[-4:])])
    if how == "split":                      # whole, in random IDAT pieces
        cuts = sorted(int(x) for x in zrng.integers(0, len(comp), 3))
        return png_of(w, h, ct, depth, interlaced, [comp[a:b] for a, b in zip([0] + cuts, cuts + [len(comp)])])
    raise ValueError(how)


pngz = [
    z_case(13, 12, 2, 8, True, "whole"),             # 00 interlaced, whole
    z_case(13, 12, 2, 8, False, "no_adler4"),        # 01 no Adler-32
    z_case(13, 12, 2, 8, False, "no_adler2"),        # 02 half of it
    z_case(13, 12, 2, 8, False, "file_ends_in_adler"),  # 03 the file ends inside it
    z_case(13, 12, 2, 8, False, "unfinished"),       # 04 flushed, never finished
    z_case(13, 12, 2, 8, False, "short"),            # 05 ends cleanly 4 rows short: those rows 0
    z_case(13, 12, 6, 8, True, "short"),             # 06 the same, interlaced RGBA
    z_case(13, 12, 2, 8, False, "mid_row"),          # 07 ends inside a row: refused
    z_case(13, 12, 2, 8, False, "bad_adler"),        # 08 a bad Adler-32: refused
    z_case(13, 12, 2, 8, False, "bad_adler_apart"),  # 09 ... in an IDAT after the rows': never read
    z_case(13, 12, 2, 8, False, "short_end_apart"),  # 10 short, its end apart: the pieces run out
    z_case(9, 7, 0, 16, False, "short"),             # 11 16-bit gray, short
    z_case(11, 5, 3, 4, True, "no_adler4"),          # 12 4-bit palette, interlaced, no Adler-32
]
for k in range(40):
    ct = int(zrng.choice([0, 2, 3, 4, 6]))
    depth = int(zrng.choice({0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}[ct]))
    how = str(zrng.choice(["whole", "no_adler1", "no_adler3", "file_ends_in_adler", "unfinished", "short", "mid_row",
                           "bad_adler_apart", "short_end_apart", "split"]))
    pngz.append(z_case(int(zrng.integers(1, 20)), int(zrng.integers(1, 20)), ct, depth, bool(zrng.integers(0, 2)), how))
record("pngz", pngz, ext="png")

# ---------------------------------------------------------------- PNG chunks PIL checks
# A tRNS chunk shorter than its colour type's value (2 bytes gray, 6 RGB) is
# PIL's "Truncated tRNS chunk", before or after the image data; after the
# image data a chunk type that is no 4 word characters ends PIL's reading.
def png_with(mode, before=b"", after=b""):
    arr = zrng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    b = io.BytesIO()
    im.save(b, "PNG")
    parts = chunks(b.getvalue())
    head = b"\x89PNG\r\n\x1a\n" + b"".join(c for t, c in parts if t not in (b"IDAT", b"IEND"))
    return head + before + b"".join(c for t, c in parts if t == b"IDAT") + after + chunk(b"IEND", b"")


bad_cid = struct.pack(">I", 5000) + b"a\x01b!" + b"junk"
pngc = [
    png_with("RGB", before=chunk(b"tRNS", b"\x00\x01")),                  # 00 RGB, 2-byte tRNS: refused
    png_with("RGB", before=chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03")),  # 01 RGB, 6 bytes
    png_with("L", before=chunk(b"tRNS", b"\x07")),                        # 02 gray, 1 byte: refused
    png_with("I;16", before=chunk(b"tRNS", b"\x00\x07")),                 # 03 16-bit gray, 2 bytes
    png_with("P", before=chunk(b"tRNS", b"\x07")),                        # 04 palette, 1 byte
    png_with("RGB", after=chunk(b"tRNS", b"\x00\x01")),                   # 05 RGB, short tRNS after the data: refused
    png_with("RGB", after=bad_cid)[:-12],                                 # 06 a bad chunk type after the data, cut
    png_with("RGB", after=bad_cid[:8] + chunk(b"tRNS", b"\x00")),         # 07 ... then a short tRNS, never read
    png_with("RGB", before=chunk(b"a\x01b!", b"x")),                      # 08 a bad chunk type before it: refused
]
# Chunks libpng refuses and PIL reads: a chunk before IHDR, IHDR's
# compression byte (PIL does not read it), any interlace byte but 0 (Adam7),
# a palette image without PLTE (black; a PLTE before IHDR is read for no
# mode), an IHDR longer than 13 bytes, two IHDRs (the last counts).


def png_raw(ihdr_fields, rows_w_h_bits_il, pre=b"", post_ihdr=b"", ihdr_extra=b"", ihdrs=None):
    w, h, bits, il = rows_w_h_bits_il
    data = zlib.compress(b"".join(raw_rows(w, h, bits, il)))
    ih = ihdrs if ihdrs is not None else [chunk(b"IHDR", struct.pack(">IIBBBBB", *ihdr_fields) + ihdr_extra)]
    return b"\x89PNG\r\n\x1a\n" + pre + b"".join(ih) + post_ihdr + chunk(b"IDAT", data) + chunk(b"IEND", b"")


pngc += [
    png_raw((6, 4, 8, 0, 0, 0, 0), (6, 4, 8, False), pre=chunk(b"tEXt", b"a\x00b")),  # 09 tEXt before IHDR
    png_raw((6, 4, 8, 2, 1, 0, 0), (6, 4, 24, False)),                                  # 10 compression byte 1
    png_raw((6, 4, 8, 3, 0, 0, 0), (6, 4, 8, False)),                                   # 11 palette, no PLTE: black
    png_raw((9, 7, 4, 3, 0, 0, 1), (9, 7, 4, True)),                                    # 12 ... 4-bit, interlaced
    png_raw((9, 7, 8, 2, 0, 0, 2), (9, 7, 24, True)),                                   # 13 interlace byte 2: Adam7
    png_raw((6, 4, 8, 2, 0, 1, 0), (6, 4, 24, False)),                                  # 14 filter method 1: refused
    png_raw((6, 4, 8, 3, 0, 0, 0), (6, 4, 8, False), pre=chunk(b"PLTE", bytes(range(96)) * 8)),  # 15 PLTE before IHDR
    png_raw((6, 4, 8, 2, 0, 0, 0), (6, 4, 24, False), ihdr_extra=b"\x07"),              # 16 a 14-byte IHDR
    png_raw(None, (7, 5, 24, False), ihdrs=[chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 5, 8, 2, 0, 0, 0)),
                                            chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 2, 0, 0, 0))]),  # 17 two IHDRs
]
# Where PIL's decoder finishes decides what load_end reads after it: IDAT
# chunks after that one are read as chunks (one cut short is "Truncated File
# Read"), and an animated PNG's next fcTL ends the reading; chunks too short
# for their handler's fields are refused after the image data too.
one = zlib.compress(b"\x00\x10\x20\x30")
hdr1 = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
fctl = lambda seq: chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, 1, 1, 0, 0, 1, 1, 0, 0))
pngc += [
    hdr1 + chunk(b"IDAT", one[:-4]) + chunk(b"IDAT", b"\x02\x37\x00\x00")[:10],  # 18 rows in the 1st IDAT, 2nd cut
    hdr1 + chunk(b"IDAT", one) + b"\x00\x00\x00\x64IDATxyz",                     # 19 a whole image, then a cut IDAT
    hdr1 + chunk(b"IDAT", one)[:-6],                                               # 20 cut in its Adler-32: read
    hdr1 + chunk(b"gAMA", b"\x00\x01") + chunk(b"IDAT", one) + chunk(b"IEND", b""),  # 21 a 2-byte gAMA
    hdr1 + chunk(b"IDAT", one) + chunk(b"pHYs", b"\x00\x01") + chunk(b"IEND", b""),  # 22 ... pHYs after the data
    hdr1 + chunk(b"IDAT", one) + chunk(b"IHDR", b"\x01") + chunk(b"IEND", b""),      # 23 ... IHDR after the data
    hdr1 + chunk(b"acTL", struct.pack(">II", 2, 0)) + fctl(0) + chunk(b"IDAT", one) + fctl(1)
    + chunk(b"fdAT", struct.pack(">I", 2) + one)[:20],                             # 24 APNG: frame 2 cut, frame 1 read
    hdr1 + chunk(b"IDAT", one) + fctl(1) + chunk(b"tEXt", b"a\x00b")[:9],           # 25 not animated: read on, cut
]
# APNG frame rules PIL checks (fcTL and fdAT of their length, sequence
# numbers one past the last, frames within the image), and palettes as PIL
# keeps them (the last PLTE, its whole entries, more than 256 refused).
pal1 = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 1, 8, 3, 0, 0, 0))
idx = chunk(b"IDAT", zlib.compress(b"\x00\x00\x01\x02\x00")) + chunk(b"IEND", b"")
fctl_at = lambda seq, w, h, x, y: chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, x, y, 1, 1, 0, 0))
pngc += [
    hdr1 + chunk(b"fcTL", b"\x00" * 4) + chunk(b"IDAT", one) + chunk(b"IEND", b""),              # 26 a 4-byte fcTL
    hdr1 + chunk(b"IDAT", one) + chunk(b"fdAT", b"\x00\x00") + chunk(b"IEND", b""),             # 27 a 2-byte fdAT after
    hdr1 + chunk(b"acTL", struct.pack(">II", 1, 0)) + fctl(1) + chunk(b"IDAT", one) + chunk(b"IEND", b""),  # 28 seq 1 first
    hdr1 + fctl(0) + fctl(0) + chunk(b"IDAT", one) + chunk(b"IEND", b""),                       # 29 seq 0 twice
    hdr1 + fctl_at(0, 2, 2, 0, 0) + chunk(b"IDAT", one) + chunk(b"IEND", b""),                   # 30 a frame past the image
    hdr1 + fctl_at(0, 1, 1, 1, 0) + chunk(b"IDAT", one) + chunk(b"IEND", b""),                   # 31 ... by its offset
    hdr1 + chunk(b"IDAT", one) + fctl(0) + chunk(b"IEND", b""),                                  # 32 an fcTL after, seq 0: read
    pal1 + chunk(b"PLTE", b"\x0a\x14\x1e\x28") + idx,                                          # 33 a PLTE of 4 bytes
    pal1 + chunk(b"PLTE", b"\x0a\x14\x1e") + chunk(b"PLTE", b"\x28\x32\x3c\x01\x02\x03") + idx,  # 34 two PLTEs: the last
    pal1 + chunk(b"PLTE", b"\x0a\x14") + idx,                                                    # 35 a PLTE of 2 bytes: black
    pal1 + chunk(b"PLTE", b"\x0a\x14\x1e" * 257) + idx,                                         # 36 257 entries: refused
    pal1 + chunk(b"tRNS", b"\x00") + chunk(b"PLTE", b"\x0a\x14\x1e\x28\x32\x3c") + idx,         # 37 tRNS before PLTE
]
# An fdAT numbered 0 with no fcTL before it (PIL: None != -1), iCCP chunks
# PIL refuses (compression byte not 0, none) or reads (a bad stream), an
# IHDR after the image data with a filter byte.
fdat0 = chunk(b"fdAT", struct.pack(">I", 0) + one)
pngc += [
    hdr1 + fdat0 + chunk(b"IDAT", one) + chunk(b"IEND", b""),                          # 38 fdAT 0 before the data
    hdr1 + chunk(b"IDAT", one) + fdat0 + chunk(b"IEND", b""),                          # 39 ... after it
    hdr1 + chunk(b"iCCP", b"p\x00\x01" + zlib.compress(b"x")) + chunk(b"IDAT", one) + chunk(b"IEND", b""),  # 40 method 1
    hdr1 + chunk(b"iCCP", b"") + chunk(b"IDAT", one) + chunk(b"IEND", b""),            # 41 empty
    hdr1 + chunk(b"iCCP", b"x\x00") + chunk(b"IDAT", one) + chunk(b"IEND", b""),       # 42 no byte after the name
    hdr1 + chunk(b"iCCP", b"p\x00\x00junk") + chunk(b"IDAT", one) + chunk(b"IEND", b""),  # 43 a bad stream: read
    hdr1 + chunk(b"IDAT", one) + chunk(b"iCCP", b"p\x00\x02") + chunk(b"IEND", b""),  # 44 method 2 after the data
    hdr1 + chunk(b"IDAT", one) + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 1, 0)) + chunk(b"IEND", b""),  # 45
]
record("pngc", pngc, ext="png")
