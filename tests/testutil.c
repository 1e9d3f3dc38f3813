#include "testutil.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fileutil.h"

char *fixture_path(const char *name) {
    char *p = malloc(strlen(TEST_FIXTURES) + strlen(name) + 2);
    sprintf(p, "%s/%s", TEST_FIXTURES, name);
    return p;
}

Npy npy_load(const char *path) {
    Npy a = {0};
    FILE *f = fopen(path, "rb");
    if (!f) cr_assert_fail("cannot open fixture %s", path);
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0)
        cr_assert_fail("%s: not a .npy file", path);
    size_t hlen = magic[8] | (magic[9] << 8);
    if (magic[6] >= 2) {  // version 2+: 4-byte header length
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) cr_assert_fail("%s: short header", path);
        hlen = magic[8] | (magic[9] << 8) | (more[0] << 16) | ((size_t)more[1] << 24);
    }
    char *hdr = calloc(1, hlen + 1);
    if (fread(hdr, 1, hlen, f) != hlen) cr_assert_fail("%s: short header", path);
    char *d = strstr(hdr, "'descr':");
    cr_assert(d, "%s: no descr", path);
    d = strchr(d + 8, '\'');
    cr_assert(d, "%s: bad descr", path);
    // '<f4' / '|u1' / '<i4'
    snprintf(a.dtype, sizeof a.dtype, "%.2s", d + 2);
    cr_assert(strstr(hdr, "'fortran_order': False"), "%s: Fortran order not supported", path);
    char *s = strstr(hdr, "'shape':");
    cr_assert(s, "%s: no shape", path);
    s = strchr(s, '(') + 1;
    a.count = 1;
    while (*s && *s != ')') {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        a.shape[a.ndim++] = (int)strtol(s, &s, 10);
        a.count *= (size_t)a.shape[a.ndim - 1];
    }
    size_t item = a.dtype[1] - '0';
    a.data = malloc(a.count * item + 1);
    if (fread(a.data, item, a.count, f) != a.count) cr_assert_fail("%s: short data", path);
    fclose(f);
    free(hdr);
    return a;
}

void npy_free(Npy *a) {
    free(a->data);
    a->data = NULL;
}

char *make_temp_dir(const char *tag) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *p = malloc(strlen(base) + strlen(tag) + 32);
    sprintf(p, "%s/vggft-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) cr_assert_fail("mkdtemp %s failed", p);
    return p;
}

void remove_tree(const char *path) {
    if (!path || strncmp(path, "/", 1) != 0 || !strstr(path, "vggft-")) return;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) cr_assert_fail("cannot write %s", path);
    if (n && fwrite(data, 1, n, f) != n) cr_assert_fail("short write %s", path);
    fclose(f);
}

int run_tool(const char *name, const char *args, char **output) { return run_tool_timeout(name, args, 0, output); }

int run_tool_timeout(const char *name, const char *args, int seconds, char **output) {
    const char *bin = getenv("VGGFT_BIN");
    if (!bin) bin = TEST_BUILD;
    size_t cap = strlen(bin) + strlen(name) + strlen(args) + 96;
    char *cmd = malloc(cap);
    char limit[48] = "";
    if (seconds > 0) snprintf(limit, sizeof limit, "timeout -s KILL %d ", seconds);
    snprintf(cmd, cap, "%s%s/%s %s 2>&1", limit, bin, name, args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p) return -1;
    size_t len = 0, size = 4096;
    char *buf = malloc(size);
    size_t got;
    while ((got = fread(buf + len, 1, size - len - 1, p)) > 0) {
        len += got;
        if (size - len < 2) buf = realloc(buf, size *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (output) *output = buf; else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

#include <turbojpeg.h>

void draw_shape(uint8_t *rgb, int w, int h, int kind, unsigned seed) {
    unsigned s = seed * 2654435761u + 12345u;
    int cx = w / 4 + (int)(s % (unsigned)(w / 2 + 1)), cy = h / 4 + (int)((s >> 8) % (unsigned)(h / 2 + 1));
    int r = (w < h ? w : h) / 5 + 2;
    uint8_t fg[3] = {(uint8_t)(200 + s % 55), (uint8_t)(s >> 4), (uint8_t)(40 + (s >> 12) % 60)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1103515245u + 12345u;
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            int inside = kind == 0 ? (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r
                                   : abs(x - cx) <= r && abs(y - cy) <= r;
            for (int c = 0; c < 3; c++)
                p[c] = inside ? fg[c] : (uint8_t)(60 + (x * 3 + y * 2 + c * 40) % 120 + (s >> 28));
        }
}

void write_jpeg(const char *path, const uint8_t *rgb, int w, int h, int quality) {
    tjhandle tj = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long size = 0;
    if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, quality, 0) != 0)
        cr_assert_fail("tjCompress2: %s", tjGetErrorStr2(tj));
    write_file(path, buf, size);
    tjFree(buf);
    tjDestroy(tj);
}

#include <stdarg.h>

Npy fixture_npy(const char *fmt, ...) {
    char rel[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    char *p = fixture_path(rel);
    Npy a = npy_load(p);
    free(p);
    return a;
}

char *make_shape_folder(const char *tag, int n, unsigned seed_step) {
    char *top = make_temp_dir(tag);
    char path[1024];
    const char *classes[] = {"circles", "squares"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/data/%s", top, classes[k]);
        cr_assert_eq(make_dirs(path), 0, "cannot make %s", path);
        for (int i = 0; i < n; i++) {
            int w = 36 + 3 * i, h = 34 + 2 * i;
            uint8_t *rgb = malloc((size_t)w * h * 3);
            draw_shape(rgb, w, h, k, seed_step * (unsigned)k + (unsigned)i);
            snprintf(path, sizeof path, "%s/data/%s/img %02d.jpg", top, classes[k], i);
            write_jpeg(path, rgb, w, h, 90);
            free(rgb);
        }
    }
    return top;
}
