// Plots (common/plot.h), checked by looking at them: each SVG is rendered to
// PNG with rsvg-convert (testutil's assert_svg_readable) and must draw
// nothing outside its box (a title or label cut off at an edge would), must
// not be blank, and must hold every label. Plus what a program can read
// from the SVG text: the log axis for a spiky loss, no "-0" tick, nice tick
// values, the embedded thumbnails decoding back to their pixels.
// PLOT_TEST_KEEP=1 keeps the pictures (their paths are printed) to look at.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "image.h"
#include "image_write.h"
#include "plot.h"
#include "testutil.h"

static char *out_dir(const char *tag) { return make_temp_dir(tag); }

static void done(char *dir) {
    if (getenv("PLOT_TEST_KEEP")) cr_log_warn("kept %s", dir);
    else remove_tree(dir);
    free(dir);
}


// Writes a hand-made SVG of w x h whose body is BODY.
static void write_svg(const char *path, int w, int h, const char *body) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d'>"
                     "<rect width='100%%' height='100%%' fill='white'/>%s</svg>\n",
                     w, h, body);
    write_file(path, buf, (size_t)n);
}

// Asserts that text is shown whole as an element's text (not shortened).
static void assert_shown_whole(const char *svg, const char *text) {
    char want[1024];
    snprintf(want, sizeof want, ">%s</text>", text);
    cr_assert(strstr(svg, want), "\"%s\" is not shown whole", text);
}

// ---- the checker itself -------------------------------------------------------

Test(plot_check, sees_text_cut_off_at_an_edge) {
    char *dir = out_dir("plotchk");
    char p[4096], png[4200];
    snprintf(p, sizeof p, "%s/cut.svg", dir);
    snprintf(png, sizeof png, "%s/cut.png", dir);
    SvgCheck c;
    // Text that runs past the right edge, and text above the top.
    write_svg(p, 200, 100, "<text x='150' y='50' font-size='20'>a long label</text>");
    int rc = svg_render_check(p, png, &c);
    if (rc == 1) cr_skip_test("%s", c.why);
    cr_assert_eq(rc, 0, "%s", c.why);
    cr_assert_eq(c.w, 200);
    cr_assert_eq(c.h, 100);
    cr_assert_gt(c.ink_outside, 20, "the cut label was not seen (%ld pixels outside)", c.ink_outside);
    write_svg(p, 200, 100, "<text x='100' y='8' font-size='20' text-anchor='middle'>Title</text>");
    cr_assert_eq(svg_render_check(p, png, &c), 0, "%s", c.why);
    cr_assert_gt(c.ink_outside, 20, "the title over the top was not seen");
    // The same text inside: nothing outside, ink inside.
    write_svg(p, 200, 100, "<text x='10' y='50' font-size='20'>a long label</text>");
    cr_assert_eq(svg_render_check(p, png, &c), 0, "%s", c.why);
    cr_assert_eq(c.ink_outside, 0);
    cr_assert_gt(c.ink_inside, 100);
    // A blank picture has no ink.
    write_svg(p, 200, 100, "");
    cr_assert_eq(svg_render_check(p, png, &c), 0, "%s", c.why);
    cr_assert_eq(c.ink_inside, 0);
    done(dir);
}

// ---- confusion matrices ---------------------------------------------------------

// A K-class matrix: mostly right, some mistakes, a class with no images.
static void confusion_case(int K, const char *name_fmt, const char *title, int long_every) {
    char *dir = out_dir("plotconf");
    char p[4096];
    snprintf(p, sizeof p, "%s/confusion_%d.svg", dir, K);
    char **names = calloc((size_t)K, sizeof *names);
    const char **texts = calloc((size_t)K + 1, sizeof *texts);
    long *counts = calloc((size_t)K * K, sizeof *counts);
    for (int k = 0; k < K; k++) {
        names[k] = malloc(128);
        if (long_every && k % long_every == 0) snprintf(names[k], 128, "Chihuahua_long_name_here_%d", k);
        else snprintf(names[k], 128, name_fmt, k);
        texts[k] = names[k];
        for (int c = 0; c < K; c++) counts[k * K + c] = k == K - 1 ? 0 : c == k ? 40 + k : (k + c) % 7 == 0;
    }
    texts[K] = title;
    cr_assert_eq(plot_confusion_svg(p, title, K, names, counts), 0, "%s", err_msg());
    assert_svg_readable(p, texts, K + 1);
    char *svg = read_file(p, NULL);
    cr_assert(strstr(svg, ">predicted<") && strstr(svg, ">true<"), "axis names missing");
    assert_shown_whole(svg, title);
    free(svg);
    for (int k = 0; k < K; k++) free(names[k]);
    free(names), free(texts), free(counts);
    done(dir);
}

Test(plot_confusion, two_classes) { confusion_case(2, "class%d", "Confusion matrix (validation)", 0); }
Test(plot_confusion, two_short_classes_long_title) {
    confusion_case(2, "c%d", "Confusion matrix of the fine-tuned VGG16 on the validation folder, epoch 30", 0);
}
Test(plot_confusion, three_classes) { confusion_case(3, "ants_%d", "confusion", 0); }
Test(plot_confusion, ten_classes) { confusion_case(10, "flower_%d", "Confusion matrix (validation)", 0); }
Test(plot_confusion, fifty_classes_long_names) {
    confusion_case(50, "breed_%02d", "Confusion matrix (validation)", 5);
}
Test(plot_confusion, two_long_names) { confusion_case(2, "x%d", "confusion", 1); }

// The 2-class matrix is centred under its title, which is centred in the
// picture (the old one sat off-centre, its title cut off).
Test(plot_confusion, two_classes_centred) {
    char *dir = out_dir("plotconf");
    char p[4096];
    snprintf(p, sizeof p, "%s/c.svg", dir);
    char *names[] = {"cats", "dogs"};
    long counts[] = {40, 10, 5, 45};
    cr_assert_eq(plot_confusion_svg(p, "Confusion matrix (validation)", 2, names, counts), 0, "%s", err_msg());
    char *svg = read_file(p, NULL);
    double W, title_x, x0 = 1e9, x1 = -1e9;
    cr_assert_eq(sscanf(strstr(svg, "<svg ") , "<svg xmlns='http://www.w3.org/2000/svg' width='%lf'", &W), 1);
    const char *t = strstr(svg, "<text x='");
    cr_assert_eq(sscanf(t, "<text x='%lf'", &title_x), 1);
    for (const char *r = svg; (r = strstr(r, "<rect x='")); r++) {
        double x, w;
        if (sscanf(r, "<rect x='%lf' y='%*[^']' width='%lf'", &x, &w) == 2) x0 = fmin(x0, x), x1 = fmax(x1, x + w);
    }
    cr_assert_float_eq((x0 + x1) / 2, title_x, 0.5, "matrix centre %g, title at %g", (x0 + x1) / 2, title_x);
    cr_assert_float_eq(title_x, W / 2, W * 0.2, "title at %g of %g", title_x, W);
    cr_assert(strstr(svg, ">cats<") && strstr(svg, ">dogs<"), "short names are shown whole");
    free(svg);
    done(dir);
}

// Names are user data: XML is escaped, and bytes that are not UTF-8 do not
// make the file unreadable.
Test(plot_confusion, names_escaped) {
    char *dir = out_dir("plotconf");
    char p[4096];
    snprintf(p, sizeof p, "%s/c.svg", dir);
    // Besides plain bad bytes, sequences with UTF-8's shape that XML may not
    // hold: a surrogate, an overlong "/", U+FFFE, a code point past U+10FFFF.
    char *names[] = {"<b>&'\"", "caf\xc3\xa9", "bad\xff", "s\xed\xa0\x80", "o\xc0\xaf", "n\xef\xbf\xbe",
                     "b\xf4\x90\x80\x80"};
    long counts[49] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cr_assert_eq(plot_confusion_svg(p, "a < b & c", 7, names, counts), 0, "%s", err_msg());
    const char *texts[] = {"<b>&'\"", "caf\xc3\xa9", "a < b & c"};
    assert_svg_readable(p, texts, 3);
    char *svg = read_file(p, NULL);
    cr_assert(strstr(svg, "bad&#255;"), "a non-UTF-8 byte is written as a character reference");
    const char *refs[] = {"s&#237;&#160;&#128;", "o&#192;&#175;", "n&#239;&#191;&#190;", "b&#244;&#144;&#128;&#128;"};
    for (int i = 0; i < 4; i++) cr_expect(strstr(svg, refs[i]), "%s missing: each byte as a character", refs[i]);
    cr_assert_null(strstr(svg, "<b>"));
    free(svg);
    done(dir);
}

// ---- history -----------------------------------------------------------------

typedef struct {
    int n;
    float *loss, *acc, *vloss, *vacc;
} Hist;

static Hist hist_make(int n) {
    Hist h = {n, malloc(n * sizeof(float)), malloc(n * sizeof(float)), malloc(n * sizeof(float)),
              malloc(n * sizeof(float))};
    for (int i = 0; i < n; i++) {
        double t = (double)i / (n > 1 ? n - 1 : 1);
        h.loss[i] = (float)(0.7 * exp(-2.5 * t) + 0.05 + 0.01 * sin(i));
        h.vloss[i] = (float)(0.65 * exp(-2 * t) + 0.12 + 0.015 * cos(i));
        h.acc[i] = (float)(0.55 + 0.43 * (1 - exp(-3 * t)));
        h.vacc[i] = (float)(0.55 + 0.38 * (1 - exp(-3 * t)));
    }
    return h;
}

static void hist_free(Hist *h) { free(h->loss), free(h->acc), free(h->vloss), free(h->vacc); }

// Plots h (with the validation figures before training when finite),
// checks the rendering and returns the SVG text (free it).
static char *history_case_before(const Hist *h, const char *title, int with_val, const char *file,
                                 float before_loss, float before_acc) {
    char *dir = out_dir("plothist");
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    cr_assert_eq(plot_history_svg(p, title, h->n, h->loss, h->acc, with_val ? h->vloss : NULL,
                                  with_val ? h->vacc : NULL, before_loss, before_acc),
                 0, "%s", err_msg());
    const char *texts[] = {title, "loss", "accuracy", "epoch", "training", "validation"};
    assert_svg_readable(p, texts, with_val ? 6 : 5);
    char *svg = read_file(p, NULL);
    for (const char *s = svg; (s = strstr(s, ">-")); s++)  // "-0", "-0.00", but "-0.05" is fine
        cr_assert(atof(s + 1) != 0, "a negative zero tick: %.12s", s);
    cr_assert_null(strstr(svg, "nan"), "a NaN coordinate");
    if (!with_val) cr_assert_null(strstr(svg, "validation"));
    assert_shown_whole(svg, title);
    done(dir);
    return svg;
}

static char *history_case(const Hist *h, const char *title, int with_val, const char *file) {
    return history_case_before(h, title, with_val, file, NAN, NAN);
}

// The tick labels of the first panel (the loss), in order, as numbers.
static int loss_ticks(const char *svg, double *v, int cap) {
    int n = 0;
    const char *acc = strstr(svg, ">epoch<");  // under the loss panel, before the accuracy one
    for (const char *s = svg; (s = strstr(s, "text-anchor='end'>")) && (!acc || s < acc) && n < cap; s++)
        v[n++] = atof(s + strlen("text-anchor='end'>"));
    return n;
}

Test(plot_history, first_epoch_spike_gets_a_log_axis) {
    Hist h = hist_make(30);
    h.loss[0] = 9.5f, h.vloss[0] = 3.2f;  // a diverging first epoch
    char *svg = history_case(&h, "Training history (spike)", 1, "spike.svg");
    cr_assert(strstr(svg, "loss (log scale)"), "the spike should give a log axis");
    double v[64];
    int n = loss_ticks(svg, v, 64);
    cr_assert_geq(n, 3, "%d ticks", n);
    // Ticks 1, 2 or 5 times a power of ten, rising, covering 0.06 .. 9.5.
    for (int i = 0; i < n; i++) {
        double m = v[i] / pow(10, floor(log10(v[i]) + 1e-9));
        cr_assert(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6, "tick %g", v[i]);
        if (i) cr_assert_gt(v[i], v[i - 1]);
    }
    cr_assert_leq(v[0], 0.1);
    cr_assert_geq(v[n - 1], 5);
    free(svg);
    hist_free(&h);
}

Test(plot_history, ordinary_loss_linear_nice_ticks) {
    Hist h = hist_make(20);
    for (int i = 0; i < 20; i++) h.loss[i] = 0.30f + 0.02f * (float)(20 - i), h.vloss[i] = 0.35f + 0.015f * (float)(20 - i);
    char *svg = history_case(&h, "history", 1, "linear.svg");
    cr_assert_null(strstr(svg, "log scale"));
    double v[64];
    int n = loss_ticks(svg, v, 64);
    cr_assert_geq(n, 3);
    cr_assert_leq(n, 12);
    double step = v[1] - v[0];
    for (int i = 1; i < n; i++) cr_assert_float_eq(v[i] - v[i - 1], step, 1e-9, "even steps");
    double m = step / pow(10, floor(log10(step) + 1e-9));
    cr_assert(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6, "step %g", step);
    cr_assert_leq(v[0], 0.3201);
    cr_assert_geq(v[n - 1], 0.7);
    free(svg);
    hist_free(&h);
}

// A loss falling to zero and below (a regression loss can): linear, and the
// zero tick reads "0", never "-0".
Test(plot_history, around_zero_no_minus_zero) {
    Hist h = hist_make(12);
    for (int i = 0; i < 12; i++) h.loss[i] = 0.3f - 0.03f * (float)i, h.vloss[i] = 0.25f - 0.025f * (float)i;
    char *svg = history_case(&h, "history", 1, "zero.svg");
    cr_assert(strstr(svg, "text-anchor='end'>0.0<") || strstr(svg, "text-anchor='end'>0<") ||
                  strstr(svg, "text-anchor='end'>0.00<"),
              "a zero tick");
    free(svg);
    hist_free(&h);
}

Test(plot_history, flat_loss) {
    Hist h = hist_make(10);
    for (int i = 0; i < 10; i++) h.loss[i] = h.vloss[i] = 0.6931f, h.acc[i] = h.vacc[i] = 0.5f;
    free(history_case(&h, "flat", 1, "flat.svg"));
    hist_free(&h);
}

Test(plot_history, one_epoch) {
    Hist h = hist_make(1);
    char *svg = history_case(&h, "one epoch", 1, "one.svg");
    cr_assert(strstr(svg, ">1<"), "the epoch is labelled");
    free(svg);
    hist_free(&h);
}

Test(plot_history, one_epoch_no_validation) {
    Hist h = hist_make(1);
    free(history_case(&h, "one epoch", 0, "one_noval.svg"));
    hist_free(&h);
}

Test(plot_history, many_epochs) {
    int sizes[] = {300, 500};
    for (int k = 0; k < 2; k++) {
        Hist h = hist_make(sizes[k]);
        char file[32];
        snprintf(file, sizeof file, "epochs%d.svg", sizes[k]);
        char *svg = history_case(&h, "Training history, many epochs", 1, file);
        char last[16];
        snprintf(last, sizeof last, ">%d<", sizes[k]);
        cr_assert(strstr(svg, last), "the last epoch %d is a tick", sizes[k]);
        // Epoch ticks stay few.
        int ticks = 0;
        for (const char *s = svg; (s = strstr(s, "text-anchor='middle'>")); s++)
            if (s[21] >= '0' && s[21] <= '9') ticks++;
        cr_assert_leq(ticks, 2 * 14, "%d epoch ticks", ticks);
        free(svg);
        hist_free(&h);
    }
}

// Diverged epochs (NaN, inf) are left out instead of breaking the axes.
Test(plot_history, non_finite_values) {
    Hist h = hist_make(8);
    h.loss[3] = NAN, h.vloss[5] = INFINITY;
    free(history_case(&h, "diverged", 1, "nan.svg"));
    hist_free(&h);
}

Test(plot_history, loss_spanning_decades) {
    Hist h = hist_make(40);
    for (int i = 0; i < 40; i++) h.loss[i] = 2.0f * powf(0.75f, (float)i), h.vloss[i] = 2.2f * powf(0.8f, (float)i);
    char *svg = history_case(&h, "decades", 1, "decades.svg");
    cr_assert(strstr(svg, "log scale"));
    free(svg);
    hist_free(&h);
}

// A loss falling from 5.7 to 3e-5 (SGD fitting the training set) beside a
// validation loss near 1: ticks are whole decades, and the top one (1)
// lies most of a decade under the axis' top, so a 5 is labelled there.
Test(plot_history, top_of_a_log_axis_is_labelled) {
    Hist h = hist_make(30);
    for (int i = 0; i < 30; i++) h.loss[i] = 5.7f * powf(0.68f, (float)i), h.vloss[i] = 1.1f + 0.014f * (float)i;
    char *svg = history_case(&h, "top tick", 1, "top_tick.svg");
    cr_assert(strstr(svg, "log scale"));
    cr_expect(strstr(svg, "text-anchor='end'>1<"), "a tick at 1");
    cr_expect(strstr(svg, "text-anchor='end'>5<"), "a tick at 5, under the top at 5.7");
    free(svg);
    hist_free(&h);
}

// ---- PNG in memory and the contact sheet ---------------------------------------

Test(plot_png, encodes_to_memory) {
    int w = 7, h = 5;
    uint8_t rgb[7 * 5 * 3];
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 37);
    uint8_t *png;
    size_t n;
    cr_assert_eq(image_encode_png(rgb, w, h, &png, &n), 0, "%s", err_msg());
    Image img;
    cr_assert_eq(image_decode_memory(png, n, "mem", NULL, &img, NULL), 0, "%s", err_msg());
    cr_assert_eq(img.w, w);
    cr_assert_eq(img.h, h);
    cr_assert_eq(memcmp(img.rgb, rgb, sizeof rgb), 0);
    image_free(&img);
    free(png);
    cr_assert_eq(image_encode_png(rgb, 0, 5, &png, &n), -1);
}

// Decodes the base64 of the i-th embedded PNG of svg.
static int embedded_png(const char *svg, int i, Image *img) {
    const char *s = svg;
    for (int k = 0; k <= i; k++) {
        s = strstr(s, "base64,");
        if (!s) return -1;
        s += 7;
    }
    size_t len = strcspn(s, "'\"");
    uint8_t *out = malloc(len);
    size_t n = 0;
    uint32_t v = 0;
    int bits = 0;
    for (size_t k = 0; k < len && s[k] != '='; k++) {
        const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *q = strchr(abc, s[k]);
        if (!q) return free(out), -1;
        v = v << 6 | (uint32_t)(q - abc), bits += 6;
        if (bits >= 8) out[n++] = (uint8_t)(v >> (bits - 8)), bits -= 8;
    }
    int rc = image_decode_memory(out, n, "embedded", NULL, img, NULL);
    free(out);
    return rc;
}

static uint8_t *solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) p[3 * i] = r, p[3 * i + 1] = g, p[3 * i + 2] = b;
    return p;
}

Test(plot_sheet, thumbnails_fit_and_decode) {
    char *dir = out_dir("plotsheet");
    char p[4096];
    snprintf(p, sizeof p, "%s/errors.svg", dir);
    // Wide, tall, tiny, large; drawn shapes and solid colours.
    int sizes[][2] = {{300, 200}, {90, 240}, {1, 1}, {640, 480}, {224, 224}, {40, 33}, {500, 120}};
    int n = 7;
    PlotThumb t[7];
    uint8_t *pix[7];
    char l1[7][96], l2[7][96];
    for (int i = 0; i < n; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        if (i % 2) pix[i] = solid(w, h, (uint8_t)(40 * i), 200, (uint8_t)(250 - 30 * i));
        else pix[i] = malloc((size_t)w * h * 3), draw_shape(pix[i], w, h, i % 4 == 0, (unsigned)i);
        snprintf(l1[i], 96, "true: %s", i == 2 ? "Chihuahua_long_name_here_and_longer_still" : "cats");
        snprintf(l2[i], 96, "pred: %s 0.9%d", i == 4 ? "<dogs & co>" : "dogs", i);
        t[i] = (PlotThumb){pix[i], h, w, l1[i], l2[i]};
    }
    cr_assert_eq(plot_contact_sheet_svg(p, "Misclassified images (most confident first)", n, t, 0), 0, "%s",
                 err_msg());
    const char *texts[] = {"Misclassified images (most confident first)", "true: cats", "pred: dogs 0.91",
                           "pred: <dogs & co> 0.94", "true: Chihuahua_long_name_here_and_longer_still"};
    assert_svg_readable(p, texts, 5);
    char *svg = read_file(p, NULL);
    for (int i = 0; i < n; i++) {
        Image img;
        cr_assert_eq(embedded_png(svg, i, &img), 0, "thumbnail %d does not decode", i);
        int w = sizes[i][0], h = sizes[i][1];
        int big = w > h ? w : h;
        cr_assert_eq(big == w ? img.w : img.h, 160, "thumbnail %d: %dx%d", i, img.w, img.h);
        cr_assert_float_eq((double)img.w / img.h, (double)w / h, 0.05 * w / h + 2.0 / 160, "aspect of %d", i);
        if (i % 2) {  // a solid colour stays that colour
            const uint8_t *c = img.rgb + ((size_t)(img.h / 2) * img.w + img.w / 2) * 3;
            cr_assert(c[0] == 40 * i && c[1] == 200 && c[2] == 250 - 30 * i, "thumbnail %d: %d,%d,%d", i, c[0], c[1],
                      c[2]);
        }
        image_free(&img);
    }
    cr_assert_eq(embedded_png(svg, n, &(Image){0}), -1, "no more thumbnails than given");
    free(svg);
    for (int i = 0; i < n; i++) free(pix[i]);
    done(dir);
}

Test(plot_sheet, columns_and_edge_cases) {
    char *dir = out_dir("plotsheet");
    char p[4096];
    snprintf(p, sizeof p, "%s/s.svg", dir);
    uint8_t *px = solid(50, 40, 10, 20, 30);
    PlotThumb t[12];
    for (int i = 0; i < 12; i++) t[i] = (PlotThumb){px, 40, 50, "true: a", NULL};
    // One per row: the picture is one cell wide (plus margins), 12 tall.
    cr_assert_eq(plot_contact_sheet_svg(p, "one column", 12, t, 1), 0, "%s", err_msg());
    const char *texts[] = {"one column", "true: a"};
    assert_svg_readable(p, texts, 2);
    SvgCheck c;
    char png[4200];
    snprintf(png, sizeof png, "%s.png", p);
    cr_assert_eq(svg_render_check(p, png, &c), 0);
    cr_assert_gt(c.h, 6 * c.w, "%dx%d", c.w, c.h);
    // Automatic: 12 -> 4 columns, 3 rows.
    cr_assert_eq(plot_contact_sheet_svg(p, "auto", 12, t, 0), 0, "%s", err_msg());
    cr_assert_eq(svg_render_check(p, png, &c), 0);
    cr_assert_gt(c.w, c.h);
    // Nothing to show, and a single image with a long title.
    cr_assert_eq(plot_contact_sheet_svg(p, "no mistakes", 0, NULL, 0), 0, "%s", err_msg());
    const char *t0[] = {"no mistakes", "nothing to show"};
    assert_svg_readable(p, t0, 2);
    const char *long_title = "Misclassified images of the validation folder, most confident first, epoch 30";
    cr_assert_eq(plot_contact_sheet_svg(p, long_title, 1, t, 0), 0, "%s", err_msg());
    assert_svg_readable(p, &long_title, 1);
    // A thumbnail without pixels: an error naming it, the old file kept.
    PlotThumb bad[2] = {t[0], {NULL, 10, 10, "x", "y"}};
    cr_assert_eq(plot_contact_sheet_svg(p, "bad", 2, bad, 0), -1);
    cr_assert(strstr(err_msg(), "thumbnail 1"), "%s", err_msg());
    char *svg = read_file(p, NULL);
    cr_assert(strstr(svg, long_title), "the old picture stays");
    free(svg);
    free(px);
    done(dir);
}

// Counts too wide for 16 px cells are left out (the shading stays), small
// ones are shown; either way the picture stays readable.
Test(plot_confusion, counts_shown_only_when_they_fit) {
    char *dir = out_dir("plotconf");
    char p[4096];
    snprintf(p, sizeof p, "%s/c.svg", dir);
    const int K = 40;
    char *names[40];
    long counts[40 * 40];
    for (int k = 0; k < K; k++) {
        names[k] = malloc(16);
        snprintf(names[k], 16, "c%02d", k);
        for (int c = 0; c < K; c++) counts[k * K + c] = c == k ? 98765 : 3;
    }
    cr_assert_eq(plot_confusion_svg(p, "large counts", K, names, counts), 0, "%s", err_msg());
    assert_svg_readable(p, (const char *const *)names, K);
    char *svg = read_file(p, NULL);
    cr_assert_null(strstr(svg, ">98765<"), "a 5-digit count cannot be read in a 16 px cell");
    free(svg);
    for (int k = 0; k < K; k++) counts[k * K + k] = 42;
    cr_assert_eq(plot_confusion_svg(p, "small counts", K, names, counts), 0, "%s", err_msg());
    assert_svg_readable(p, (const char *const *)names, K);
    svg = read_file(p, NULL);
    cr_assert(strstr(svg, ">42<"), "two-digit counts fit");
    free(svg);
    for (int k = 0; k < K; k++) free(names[k]);
    done(dir);
}

// ---- long names and titles (breaker's cases) -------------------------------------

// Names that share a long prefix are shortened in the middle, so the ends
// that tell them apart stay ("dog_breed_gol…variant_07").
Test(plot_long_text, shared_prefix_names_stay_distinct) {
    char *dir = out_dir("plotlong");
    char p[4096];
    snprintf(p, sizeof p, "%s/c50.svg", dir);
    enum { K = 50 };
    char *names[K];
    long *counts = calloc((size_t)K * K, sizeof *counts);
    for (int k = 0; k < K; k++) {
        names[k] = malloc(80);
        snprintf(names[k], 80, "dog_breed_golden_retriever_with_long_hair_variant_%02d", k);
        counts[k * K + (k * 7) % K] = 1;
    }
    cr_assert_eq(plot_confusion_svg(p, "validation", K, names, counts), 0, "%s", err_msg());
    assert_svg_readable(p, (const char *const *)names, K);
    char *svg = read_file(p, NULL);
    for (int k = 0; k < K; k++) {
        char want[64];
        snprintf(want, sizeof want, "variant_%02d</text>", k);
        const char *at = strstr(svg, want);
        cr_expect(at != NULL, "the end of class %d's name is shown", k);
        cr_expect(at && strstr(at + 1, want), "class %d's name shown as row and column", k);
        cr_expect(strstr(svg, ">dog_breed_"), "the start is shown too");
    }
    free(svg);
    for (int k = 0; k < K; k++) free(names[k]);
    free(counts);
    done(dir);
}

// A long title (a long --out path, then the accuracy) wraps onto two lines:
// its end is not cut, and the matrix stays centred in the picture.
Test(plot_long_text, long_title_wraps_and_matrix_stays_centred) {
    char *dir = out_dir("plotlong");
    char p[4096];
    snprintf(p, sizeof p, "%s/t.svg", dir);
    char *names[] = {"cats", "dogs"};
    long counts[] = {0, 5, 0, 5};
    const char *title = "/tmp/b2/fz/a_really_long_directory_name_for_the_experiment_runs/"
                        "2026-11-29_lr1e-3_batch20_vgg16_block5/head_with_a_long_name.h5: accuracy 0.5000 on "
                        "validation";
    cr_assert_eq(plot_confusion_svg(p, title, 2, names, counts), 0, "%s", err_msg());
    // (Each line whole in the file: the shortened path line as its tooltip.)
    const char *texts[] = {"accuracy 0.5000 on validation", "cats", "dogs",
                           "/tmp/b2/fz/a_really_long_directory_name_for_the_experiment_runs/"
                           "2026-11-29_lr1e-3_batch20_vgg16_block5/head_with_a_long_name.h5:"};
    assert_svg_readable(p, texts, 4);
    char *svg = read_file(p, NULL);
    assert_shown_whole(svg, "accuracy 0.5000 on validation");
    cr_expect(strstr(svg, ">/tmp/b2/fz/a_really"), "the path's start is shown");
    cr_expect(strstr(svg, "head_with_a_long_name.h5:</text>"), "the path's end is shown");
    double W, title_x, x0 = 1e9, x1 = -1e9;
    cr_assert_eq(sscanf(strstr(svg, "<svg "), "<svg xmlns='http://www.w3.org/2000/svg' width='%lf'", &W), 1);
    cr_assert_eq(sscanf(strstr(svg, "<text x='"), "<text x='%lf'", &title_x), 1);
    for (const char *r = svg; (r = strstr(r, "<rect x='")); r++) {
        double x, w;
        if (sscanf(r, "<rect x='%lf' y='%*[^']' width='%lf'", &x, &w) == 2) x0 = fmin(x0, x), x1 = fmax(x1, x + w);
    }
    cr_expect_float_eq((x0 + x1) / 2, title_x, 0.5, "matrix centre %g, title at %g", (x0 + x1) / 2, title_x);
    cr_expect_float_eq(title_x, W / 2, 10, "title and matrix at %g of %g", title_x, W);
    cr_expect_lt(W, 700, "the picture is not stretched by the title: %g px", W);
    free(svg);
    done(dir);
}

// The contact sheet keeps a caption's probability: the name is shortened.
Test(plot_long_text, sheet_caption_keeps_the_probability) {
    char *dir = out_dir("plotlong");
    char p[4096];
    snprintf(p, sizeof p, "%s/s.svg", dir);
    uint8_t *px = solid(50, 40, 10, 20, 30);
    const char *l2 = "pred: \xc3\x9c_umlaut_na\xc3\xafve_class_with_a_very_long_name_indeed 0.97";
    PlotThumb t[2] = {{px, 40, 50, "true: dog_breed_golden_retriever_with_long_hair_variant_07", l2},
                      {px, 40, 50, "true: dog_breed_golden_retriever_with_long_hair_variant_08", "pred: a 0.51"}};
    cr_assert_eq(plot_contact_sheet_svg(p, "errors", 2, t, 0), 0, "%s", err_msg());
    const char *texts[] = {l2, "pred: a 0.51"};
    assert_svg_readable(p, texts, 2);
    char *svg = read_file(p, NULL);
    cr_expect(strstr(svg, " 0.97</text>"), "the probability stays");
    cr_expect(strstr(svg, ">pred: \xc3\x9c_um"), "so does the start");
    cr_expect(strstr(svg, "variant_07</text>") && strstr(svg, "variant_08</text>"), "true names stay distinct");
    free(svg);
    free(px);
    done(dir);
}

static int count_of(const char *text, const char *what) {
    int n = 0;
    for (const char *s = text; (s = strstr(s, what)); s++) n++;
    return n;
}

// finetune's history: the head alone measured before the first step, a
// hollow point at epoch 0 in both panels, in the legend, inside the frame.
Test(plot_history, the_figure_before_training_at_epoch_zero) {
    Hist h = hist_make(10);
    char *svg = history_case_before(&h, "model.h5 (finetune)", 1, "before.svg", 0.05f, 0.99f);
    cr_expect(strstr(svg, ">validation before training<"), "legend:\n%.1500s", svg);
    cr_expect_eq(count_of(svg, "fill='white' stroke='#e07b00'"), 3, "a hollow point per panel and in the legend");
    cr_expect(strstr(svg, "text-anchor='middle'>0</text>"), "an epoch-0 tick");
    // The loss axis reaches down to the earlier figure (0.05, below every epoch's).
    double v[64];
    int n = loss_ticks(svg, v, 64);
    cr_expect(n > 0 && v[0] <= 0.05, "lowest loss tick %g", n ? v[0] : -1);
    free(svg);
    // Many epochs: the 0 tick, then the step's multiples (no 1 printed over the 0).
    Hist many = hist_make(150);
    svg = history_case_before(&many, "150 epochs", 1, "before_many.svg", 0.05f, 0.99f);
    cr_expect(strstr(svg, "text-anchor='middle'>0</text>") && !strstr(svg, "text-anchor='middle'>1</text>"),
              "epoch ticks 0, step, ...");
    free(svg);
    hist_free(&many);
    // Without validation there is nothing to compare it with: no point.
    svg = history_case_before(&h, "training only", 0, "before_noval.svg", 0.05f, 0.99f);
    cr_expect_null(strstr(svg, "before training"));
    free(svg);
    hist_free(&h);
}

// ---- confusion matrices of many classes ---------------------------------------

// K classes, each mostly right; class k's records also go to (k + 1) % K
// (k % 7 + 1 of them, so the largest confusions are known).
static long *many_counts(int K) {
    long *counts = calloc((size_t)K * K, sizeof *counts);
    for (int k = 0; k < K; k++) {
        counts[(long)k * K + k] = 10;
        counts[(long)k * K + (k + 1) % K] = k % 7 + 1;
    }
    return counts;
}

// Above PLOT_CONFUSION_MAX classes the matrix is not drawn (1,000 classes
// made a 182 MB SVG): a note says so and the largest confusions are listed,
// in a picture of a few KB that renders whole.
Test(plot_confusion, thousands_of_classes_give_a_note_and_the_top_confusions) {
    char *dir = out_dir("plotmany");
    const int K = 2100;
    char **names = calloc((size_t)K, sizeof *names);
    for (int k = 0; k < K; k++) {
        names[k] = malloc(48);
        snprintf(names[k], 48, "Quercus_robur_subspecies_%04d", k);
    }
    long *counts = many_counts(K);
    char p[4096];
    snprintf(p, sizeof p, "%s/confusion_%d.svg", dir, K);
    const char *title = "head.h5: accuracy 0.5000 on validation";
    cr_assert_eq(plot_confusion_svg(p, title, K, names, counts), 0, "%s", err_msg());
    size_t len;
    char *svg = read_file(p, &len);
    cr_assert_lt(len, 20000, "%zu bytes for %d classes", len, K);
    cr_assert(strstr(svg, "confusion matrix not drawn for 2100 classes (more than 100)"), "no note");
    // The largest: k % 7 == 6 gives 7 (k = 6, 13, 20, ...), first in row order.
    const char *texts[] = {title, "Quercus_robur_subspecies_0006", "Quercus_robur_subspecies_0007",
                           "Quercus_robur_subspecies_0013", "Quercus_robur_subspecies_0014", "0.4118"};
    assert_svg_readable(p, texts, 6);
    cr_assert(!strstr(svg, "Quercus_robur_subspecies_0000<"), "a 1-record confusion is not among the largest");
    free(svg);

    // Up to the limit, the whole matrix as before.
    const int K2 = PLOT_CONFUSION_MAX;
    long *c2 = many_counts(K2);
    snprintf(p, sizeof p, "%s/confusion_%d.svg", dir, K2);
    cr_assert_eq(plot_confusion_svg(p, "validation", K2, names, c2), 0, "%s", err_msg());
    svg = read_file(p, &len);
    cr_assert(strstr(svg, ">predicted<") && strstr(svg, ">true<") && !strstr(svg, "not drawn"),
              "%d classes are drawn as a matrix", K2);
    free(svg);
    free(c2);
    for (int k = 0; k < K; k++) free(names[k]);
    free(names), free(counts);
    done(dir);
}
