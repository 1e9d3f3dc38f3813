// Format sniffing and the decode entry points; the decoders themselves are in
// image_jpeg.c, image_png.c, image_bmp.c and image_pnm.c.
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "image_codec.h"

ImageFormat image_sniff(const uint8_t *d, size_t n, const char **other_name) {
    const char *other = NULL;
    ImageFormat f = IMG_UNKNOWN;
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) f = IMG_JPEG;
    else if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) f = IMG_PNG;
    else if (n >= 2 && d[0] == 'B' && d[1] == 'M') f = IMG_BMP;
    else if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') f = IMG_PNM;
    else if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) other = "GIF";
    else if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) other = "TIFF";
    else if (n >= 4 && (memcmp(d, "II+\0", 4) == 0 || memcmp(d, "MM\0+", 4) == 0)) other = "BigTIFF";
    else if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) other = "WebP";
    else if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) {
        if (memcmp(d + 8, "avif", 4) == 0 || memcmp(d + 8, "avis", 4) == 0) other = "AVIF";
        else if (memcmp(d + 8, "hei", 3) == 0 || memcmp(d + 8, "mif1", 4) == 0 ||
                 memcmp(d + 8, "heix", 4) == 0) other = "HEIF";
    } else if (n >= 12 && memcmp(d, "\0\0\0\x0CjP  \r\n\x87\n", 12) == 0) other = "JPEG 2000";
    else if (n >= 4 && memcmp(d, "\xFF\x4F\xFF\x51", 4) == 0) other = "JPEG 2000";
    else if (n >= 4 && memcmp(d, "8BPS", 4) == 0) other = "PSD";
    else if (n >= 4 && memcmp(d, "\0\0\1\0", 4) == 0) other = "ICO";
    else if (n >= 4 && memcmp(d, "\x76\x2F\x31\x01", 4) == 0) other = "OpenEXR";
    else if (n >= 2 && d[0] == 'P' && (d[1] == 'f' || d[1] == 'F' || d[1] == '7')) other = "PFM/PAM";
    if (other_name) *other_name = other;
    return f;
}

const char *image_format_name(ImageFormat f) {
    switch (f) {
    case IMG_JPEG: return "JPEG";
    case IMG_PNG: return "PNG";
    case IMG_BMP: return "BMP";
    case IMG_PNM: return "PNM";
    default: return "unknown";
    }
}

int image_check_budget(long w, long h, long max_pixels, const char *fmt) {
    if (w <= 0 || h <= 0 || w > 1000000 || h > 1000000)
        return err_set("invalid %s image size %ldx%ld", fmt, w, h);
    if (w * h > max_pixels)
        return err_set("%ldx%ld %s image is over the pixel budget (%ld pixels > %ld)",
                       w, h, fmt, w * h, max_pixels);
    return 0;
}

void image_free(Image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

int image_decode_memory(const uint8_t *data, size_t n, const char *name,
                        const DecodeOptions *opt, Image *out, DecodeInfo *info) {
    static const DecodeOptions defaults = {0};
    DecodeInfo local;
    if (!opt) opt = &defaults;
    if (!info) info = &local;
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    info->scale_denom = 1;
    if (!name) name = "(memory)";
    long max_pixels = opt->max_pixels > 0 ? opt->max_pixels : IMAGE_MAX_PIXELS_DEFAULT;

    if (n == 0) return err_set("%s: empty file (0 bytes)", name);
    const char *other = NULL;
    ImageFormat f = image_sniff(data, n, &other);
    info->format = f;
    int rc;
    switch (f) {
    case IMG_JPEG: rc = jpeg_decode(data, n, opt, max_pixels, out, info); break;
    case IMG_PNG: rc = png_decode(data, n, max_pixels, out, info); break;
    case IMG_BMP: rc = bmp_decode(data, n, max_pixels, out, info); break;
    case IMG_PNM: rc = pnm_decode(data, n, max_pixels, out, info); break;
    default:
        if (other) return err_set("%s: unsupported image type (%s)", name, other);
        return err_set("%s: not an image file (unrecognised content, %zu bytes)", name, n);
    }
    if (rc != 0) {
        image_free(out);
        return err_prefix("%s: ", name);
    }
    return 0;
}

// Why a path is not a regular file, for the message.
static const char *file_kind(mode_t m) {
    if (S_ISFIFO(m)) return "FIFO";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISCHR(m)) return "character device";
    if (S_ISBLK(m)) return "block device";
    if (S_ISDIR(m)) return "directory";
    return "unknown file type";
}

int image_read_file(const char *path, uint8_t **data, size_t *n) {
    *data = NULL;
    *n = 0;
    // stat first: a FIFO, socket or device is refused without being opened
    // (opening a device can have side effects; a socket cannot be opened).
    struct stat st;
    if (stat(path, &st) != 0) return err_set("%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return err_set("%s: not a regular file (%s)", path, file_kind(st.st_mode));
    // O_NONBLOCK: should a FIFO have replaced the file since the stat, open
    // returns at once instead of waiting for a writer; fstat then refuses it.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return err_set("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set("%s: not a regular file (%s)", path, file_kind(st.st_mode));
    }
    if (st.st_size > IMAGE_FILE_MAX_BYTES) {
        close(fd);
        return err_set("%s: %.2f GiB is too large for an image file (limit 1 GiB)", path,
                       st.st_size / 1073741824.0);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return err_set("%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            close(fd);
            free(buf);
            return err_set("%s: read error: %s", path, e ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *n = size;
    return 0;
}

int image_decode_file(const char *path, const DecodeOptions *opt, Image *out,
                      DecodeInfo *info) {
    memset(out, 0, sizeof *out);
    uint8_t *data;
    size_t n;
    if (image_read_file(path, &data, &n) != 0) return -1;
    int rc = image_decode_memory(data, n, path, opt, out, info);
    free(data);
    return rc;
}
