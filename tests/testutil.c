#include "testutil.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "error.h"
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
    int rc = run_command(cmd, output);
    free(cmd);
    return rc;
}

int run_command(const char *cmd, char **output) {
    if (output) *output = NULL;
    FILE *p = popen(cmd, "r");
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
    if (output) *output = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)size + 1);
    cr_assert_eq(fread(b, 1, (size_t)size, f), (size_t)size, "cannot read %s", path);
    b[size] = '\0';
    fclose(f);
    if (n) *n = (size_t)size;
    return b;
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

// --- rendered pictures ------------------------------------------------------------

#include "image.h"

// The number in attribute NAME='...' or NAME="..." of the tag at tag, or -1.
static double svg_attr_num(const char *tag, const char *tag_end, const char *name) {
    size_t n = strlen(name);
    for (const char *p = tag; p && p + n + 2 < tag_end; p++) {
        if (strncmp(p, name, n) == 0 && p[-1] == ' ' && p[n] == '=' && (p[n + 1] == '\'' || p[n + 1] == '"'))
            return atof(p + n + 2);
    }
    return -1;
}

static char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    if (s && fread(s, 1, (size_t)len, f) != (size_t)len) free(s), s = NULL;
    fclose(f);
    if (s) s[len] = 0, *n = (size_t)len;
    return s;
}

int svg_render_check(const char *svg_path, const char *png_out, SvgCheck *out) {
    memset(out, 0, sizeof *out);
    if (system("command -v rsvg-convert >/dev/null 2>&1") != 0) {
        snprintf(out->why, sizeof out->why, "rsvg-convert is not installed (Debian: librsvg2-bin)");
        return 1;
    }
    const int M = 40;
    size_t n;
    char *svg = read_whole(svg_path, &n);
    if (!svg) return snprintf(out->why, sizeof out->why, "cannot read %s", svg_path), -1;
    char *root = strstr(svg, "<svg"), *root_end = root ? strchr(root, '>') : NULL;
    if (!root_end) {
        free(svg);
        return snprintf(out->why, sizeof out->why, "%s: no <svg> tag", svg_path), -1;
    }
    double w = svg_attr_num(root, root_end, "width"), h = svg_attr_num(root, root_end, "height");
    if (w < 1 || h < 1 || w > 20000 || h > 20000) {
        free(svg);
        return snprintf(out->why, sizeof out->why, "%s: no usable width and height (%g x %g)", svg_path, w, h), -1;
    }
    out->w = (int)ceil(w), out->h = (int)ceil(h);
    char wrap_path[4200];
    snprintf(wrap_path, sizeof wrap_path, "%s.wrap.svg", png_out);
    FILE *f = fopen(wrap_path, "wb");
    if (!f) {
        free(svg);
        return snprintf(out->why, sizeof out->why, "cannot write %s", wrap_path), -1;
    }
    fprintf(f,
            "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
            "xmlns:xlink='http://www.w3.org/1999/xlink' width='%d' height='%d'>\n"
            "<rect width='100%%' height='100%%' fill='white'/>\n<svg x='%d' y='%d' overflow='visible'",
            out->w + 2 * M, out->h + 2 * M, M, M);
    fwrite(root + 4, 1, n - (size_t)(root + 4 - svg), f);  // the picture, from its root's attributes on
    fputs("\n</svg>\n", f);
    free(svg);
    fclose(f);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "rsvg-convert --background-color=white -o '%s' '%s' 2>&1", png_out, wrap_path);
    FILE *p = popen(cmd, "r");
    char msg[256] = "";
    size_t got = p ? fread(msg, 1, sizeof msg - 1, p) : 0;
    msg[got] = 0;
    int rc = p ? pclose(p) : -1;
    if (rc != 0) return snprintf(out->why, sizeof out->why, "rsvg-convert failed (%d): %s", rc, msg), -1;
    remove(wrap_path);
    Image img;
    if (image_decode_file(png_out, NULL, &img, NULL) != 0)
        return snprintf(out->why, sizeof out->why, "cannot read the rendering %s", png_out), -1;
    if (img.w != out->w + 2 * M || img.h != out->h + 2 * M) {
        snprintf(out->why, sizeof out->why, "rendered %dx%d, expected %dx%d", img.w, img.h, out->w + 2 * M,
                 out->h + 2 * M);
        image_free(&img);
        return -1;
    }
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) {
            const uint8_t *q = img.rgb + ((size_t)y * img.w + x) * 3;
            int lo = q[0] < q[1] ? q[0] : q[1];
            lo = lo < q[2] ? lo : q[2];
            int inside = x >= M && x < M + out->w && y >= M && y < M + out->h;
            int edge = x >= M - 1 && x <= M + out->w && y >= M - 1 && y <= M + out->h;  // the box's 1 px ring
            if (!inside && !edge && lo < 240) out->ink_outside++;
            if (inside && lo < 160) out->ink_inside++;
        }
    image_free(&img);
    return 0;
}

// text with & < > " ' as plot.c writes them.
static void xml_escape(const char *s, char *out, size_t cap) {
    size_t k = 0;
    for (; *s && k + 7 < cap; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '"' ? "&quot;"
                      : *s == '\'' ? "&apos;" : NULL;
        if (e) k += (size_t)sprintf(out + k, "%s", e);
        else out[k++] = *s;
    }
    out[k] = 0;
}

void assert_svg_readable(const char *svg_path, const char *const *texts, int n) {
    size_t len;
    char *svg = read_whole(svg_path, &len);
    cr_assert(svg, "cannot read %s", svg_path);
    for (int i = 0; i < n; i++) {
        char esc[2048];
        xml_escape(texts[i], esc, sizeof esc);
        cr_assert(strstr(svg, esc), "%s: the text \"%s\" is missing", svg_path, texts[i]);
    }
    free(svg);
    char png[4200];
    snprintf(png, sizeof png, "%s.png", svg_path);
    SvgCheck c;
    int rc = svg_render_check(svg_path, png, &c);
    if (rc == 1) cr_skip_test("%s", c.why);
    cr_assert_eq(rc, 0, "%s: %s", svg_path, c.why);
    cr_assert_eq(c.ink_outside, 0, "%s: %ld pixels drawn outside its %dx%d box (see %s)", svg_path, c.ink_outside,
                 c.w, c.h, png);
    cr_assert_gt(c.ink_inside, 200, "%s renders (nearly) blank: %ld dark pixels (see %s)", svg_path, c.ink_inside,
                 png);
}

// Saved before hiding: the runner's CUDA_VISIBLE_DEVICES, or "\x01unset".
#define GPUS_SAVED "VGGFT_TEST_CUDA_VISIBLE_DEVICES"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (getenv(GPUS_SAVED)) return;  // hidden already (a runner started by a test)
    setenv(GPUS_SAVED, v ? v : "\x01unset", 1);
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
}

#include "gpu.h"

int test_show_gpus(char *why, size_t why_size) {
    const char *v = getenv(GPUS_SAVED);
    if (v && !strcmp(v, "\x01unset")) unsetenv("CUDA_VISIBLE_DEVICES");
    else if (v) setenv("CUDA_VISIBLE_DEVICES", v, 1);
    return gpu_count(why, why_size);
}

int test_gpu_emulated(void) {
    char name[300];
    return gpu_name(0, name, sizeof name) == 0 && strstr(name, "emulated GPU") != NULL;
}

#include "model_io.h"

void make_disc_square_folder(const char *root, int per_class, unsigned seed) {
    const char *cls[2] = {"discs", "squares"};
    uint8_t rgb[40 * 40 * 3];
    char p[700];
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", root, cls[k]);
        cr_assert_eq(make_dirs(p), 0);
        for (int i = 0; i < per_class; i++) {
            draw_shape(rgb, 40, 40, k, seed + (unsigned)(k * 100 + i));
            snprintf(p, sizeof p, "%s/%s/%02d.jpg", root, cls[k], i);
            write_jpeg(p, rgb, 40, 40, 90);
        }
    }
}

void load_model_file(const char *path, Model *m) {
    ModelMeta meta;
    cr_assert_eq(model_meta_read(path, &meta), 0, "%s", err_msg());
    ModelConfig cfg;
    model_meta_to_config(&meta, &cfg);
    cr_assert_eq(model_build(m, &cfg), 0, "%s", err_msg());
    model_meta_free(&meta);
    // cfg's strings were meta's, freed now: point them at the model's copies.
    m->cfg.cut = m->cut_name;
    m->cfg.unfreeze = m->unfreeze_name[0] ? m->unfreeze_name : NULL;
    cr_assert_eq(model_load_full(m, path), 0, "%s", err_msg());
}

CacheMeta test_cache_meta(int feat_hw, int feat_c, char **names, int k) {
    CacheMeta m = {0};
    snprintf(m.model, sizeof m.model, "vgg16");
    snprintf(m.weights, sizeof m.weights, "random:seed=1");
    m.input_h = m.input_w = 32;
    snprintf(m.interpolation, sizeof m.interpolation, "nearest");
    snprintf(m.preprocess, sizeof m.preprocess, "caffe");
    snprintf(m.layer, sizeof m.layer, "block5_pool");
    m.feat_h = m.feat_w = feat_hw, m.feat_c = feat_c;
    m.dtype = FEAT_F16;
    m.n_classes = k;
    m.class_names = names;
    return m;
}

int restored_best_epoch(const char *log) {
    static const char said[] = "Restoring model weights from the end of the best epoch: ";
    const char *p = strstr(log, said);
    return p ? atoi(p + strlen(said)) : -1;
}

int expect_same_history(const char *a, const char *b) {
    FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
    cr_assert(fa && fb, "cannot open %s or %s", a, b);
    char la[256], lb[256];
    int rows = 0;
    while (fgets(la, sizeof la, fa) && fgets(lb, sizeof lb, fb)) {
        char *ca = strrchr(la, ','), *cb = strrchr(lb, ',');
        cr_assert(ca && cb, "%s: %s", a, la);
        *ca = '\0', *cb = '\0';  // drop the seconds
        cr_expect_str_eq(la, lb, "%s against %s", a, b);
        rows++;
    }
    fclose(fa), fclose(fb);
    return rows;
}
