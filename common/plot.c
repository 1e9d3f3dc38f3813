// SVG plots (see plot.h). Layout is computed, not fixed: every text's width
// is estimated from DejaVu Sans's advance widths (the font fontconfig gives
// for sans-serif on Debian; other common sans fonts are narrower), margins
// are sized from the widest label, and labels too long for their room are
// shortened with an ellipsis (the full text stays in a <title> tooltip). So
// titles and labels stay inside the picture for any class count and name.
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"
#include "image.h"
#include "image_write.h"
#include "metrics.h"

// ---- text --------------------------------------------------------------------

// Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one or
// encodes what an XML document may not hold: an overlong form, a surrogate
// (U+D800..DFFF), a code point past U+10FFFF, U+FFFE or U+FFFF (RFC 3629;
// XML 1.0's Char). Such bytes are then shown as Latin-1 characters.
static int utf8_len(const unsigned char *s) {
    int n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (n <= 1) return n;
    uint32_t cp = s[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] >> 6) != 2) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || cp == 0xfffe || cp == 0xffff) return 0;
    return n;
}

// Bytes of the character at s (an invalid byte counts as one character).
static int char_bytes(const unsigned char *s) {
    int n = utf8_len(s);
    return n > 1 ? n : 1;
}

// XML-escapes text. Class names are folder names, i.e. arbitrary bytes:
// valid UTF-8 passes through, other bytes are shown as Latin-1 characters.
// At most max_bytes bytes of text are written (whole characters).
static void text_escaped_n(FILE *f, const char *text, size_t max_bytes) {
    const unsigned char *s = (const unsigned char *)text, *end = s + max_bytes;
    while (*s && s < end) {
        int n = utf8_len(s);
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else if (*s == '\'') fputs("&apos;", f);
        else if (*s < 0x20 || *s == 0x7f) fputc('?', f);
        else if (n > 1) fwrite(s, 1, (size_t)n, f);
        else if (n == 0) fprintf(f, "&#%u;", *s);  // not UTF-8: never emit invalid bytes
        else fputc(*s, f);
        s += n > 1 ? n : 1;
    }
}

static void text_escaped(FILE *f, const char *text) { text_escaped_n(f, text, strlen(text)); }

// Advance width of one character in em (DejaVu Sans Book, /1000). Other
// characters count as 1 em: wider than any Latin letter, as wide as CJK.
static double char_em(const unsigned char *s) {
    static const short ascii[95] = {
        318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337,  //  !"#$%&'()*+,-./
        636, 636, 636, 636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531,  // 0-9:;<=>?
        1000, 684, 686, 698, 770, 632, 575, 775, 752, 295, 295, 656, 557, 863, 748, 787,  // @A-O
        603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838, 500,   // P-Z[\]^_
        500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612,   // `a-o
        635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838};       // p-z{|}~
    if (*s >= 0x20 && *s < 0x7f) return ascii[*s - 0x20] / 1000.0;
    if (*s < 0x20 || *s == 0x7f) return 0.531;  // drawn as '?'
    return 1.0;
}

// Estimated width in px of text at font size fs.
static double text_width(const char *text, double fs) {
    double w = 0;
    for (const unsigned char *s = (const unsigned char *)text; *s; s += char_bytes(s)) w += char_em(s);
    return w * fs;
}

#define ELLIPSIS "\xe2\x80\xa6"  // U+2026, 1 em in DejaVu Sans

// Shortening in the middle: the first *head bytes of text, an ellipsis, and
// the bytes from *tail on fit in max_w px at font size fs; the end gets up
// to half the room. So names that share a long prefix stay distinct
// ("dog_breed_gol…variant_07", "…variant_08") and a caption keeps its
// closing number ("pred: Ü_umlaut_na…_class 0.97"). Returns 1 when it had
// to shorten, 0 when the whole text fits (*head = *tail = its length).
static int text_fit_middle(const char *text, double fs, double max_w, size_t *head, size_t *tail) {
    const size_t len = strlen(text);
    *head = *tail = len;
    if (text_width(text, fs) <= max_w) return 0;
    const unsigned char *s = (const unsigned char *)text;
    size_t n = 0, *at = malloc(sizeof(size_t) * (len + 1));  // each character's first byte
    if (!at) {
        *head = 0;  // (out of memory: the ellipsis alone)
        return 1;
    }
    for (size_t i = 0; i < len; i += (size_t)char_bytes(s + i)) at[n++] = i;
    at[n] = len;
    const double room = max_w - fs * 1.0;  // less the ellipsis (1 em)
    size_t t = n, h = 0;                    // the tail starts at character t, the head ends before h
    double tw = 0, hw = 0;
    while (t > 0 && tw + char_em(s + at[t - 1]) * fs <= room / 2) tw += char_em(s + at[--t]) * fs;
    while (h < t && hw + tw + char_em(s + at[h]) * fs <= room) hw += char_em(s + at[h++]) * fs;
    *head = at[h];
    *tail = at[t];
    free(at);
    return 1;
}

// Writes <text ATTRS>TEXT</text>, shortened in the middle to max_w px
// (text_fit_middle; the whole text as a tooltip) when it is wider.
// attrs: x, y, anchor, ...
static void svg_text(FILE *f, const char *attrs, double fs, double max_w, const char *text) {
    size_t head, tail;
    int cut = text_fit_middle(text, fs, max_w, &head, &tail);
    fprintf(f, "<text %s font-size='%.1f'>", attrs, fs);
    if (cut) {
        fputs("<title>", f);
        text_escaped(f, text);
        fputs("</title>", f);
    }
    text_escaped_n(f, text, head);
    if (cut) {
        fputs(ELLIPSIS, f);
        text_escaped(f, text + tail);
    }
    fputs("</text>\n", f);
}

// A title in one line, or in two when it is wider than max_w px: broken at
// the space that best balances the lines (a line still too wide, such as a
// long path, is shortened in the middle when drawn). line[0], line[1]:
// malloc'd (line[1] NULL for one line; both NULL when out of memory).
// Returns the drawn width of the widest line (at most max_w).
static double title_lines(const char *title, double fs, double max_w, char *line[2]) {
    const double total = text_width(title, fs);
    line[1] = NULL;
    if (total <= max_w) return (line[0] = strdup(title)) ? total : 0;
    const unsigned char *s = (const unsigned char *)title;
    double acc = 0, best = total, w1 = total, w2 = 0;
    size_t split = 0;
    for (size_t i = 0; s[i]; i += (size_t)char_bytes(s + i)) {
        double cw = char_em(s + i) * fs;
        if (s[i] == ' ' && i > 0 && fmax(acc, total - acc - cw) < best)
            best = fmax(acc, total - acc - cw), split = i, w1 = acc, w2 = total - acc - cw;
        acc += cw;
    }
    if (!split) return (line[0] = strdup(title)) ? max_w : 0;  // no space: shortened in the middle
    line[0] = strndup(title, split);
    line[1] = strdup(title + split + 1);
    if (!line[0] || !line[1]) free(line[0]), free(line[1]), line[0] = line[1] = NULL;
    return fmin(fmax(w1, w2), max_w);
}

// Draws title_lines' lines centred on x, the first line's baseline at y.
static void title_draw(FILE *f, double x, double y, double fs, double max_w, char *line[2]) {
    char attrs[160];
    for (int k = 0; k < 2 && line[k]; k++) {
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle'", x, y + k * fs * 1.25);
        svg_text(f, attrs, fs, max_w, line[k]);
    }
    free(line[0]), free(line[1]);
}

static FILE *svg_begin(AtomicFile *af, const char *path, double w, double h, const char *background) {
    FILE *f = atomic_open(af, path);
    if (!f) return NULL;
    fprintf(f,
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
            "font-family='DejaVu Sans, sans-serif'>\n<rect width='100%%' height='100%%' fill='%s'/>\n",
            w, h, w, h, background);
    return f;
}

// ---- axes --------------------------------------------------------------------

// A "nice" tick step for a range (1, 2 or 5 times a power of ten).
static double tick_step(double range, int want) {
    double raw = range / want, p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

// A value axis: ticks and the mapping of values to 0..1.
typedef struct {
    int log;          // log10 scale
    double lo, hi;    // axis ends (log10 of them when log)
    int n;            // ticks
    double tick[64];  // tick values (not logged)
    char label[64][24];
} Axis;

static double axis_pos(const Axis *a, double v) {
    double x = a->log ? log10(v) : v;
    return (x - a->lo) / (a->hi - a->lo);
}

// Linear axis over [lo, hi] with ends snapped to ticks k * step; a label
// shows as many decimals as the step needs, and the tick at k = 0 is exactly
// "0" (no "-0" from a rounding).
static void axis_linear(Axis *a, double lo, double hi, double clamp_lo, double clamp_hi) {
    if (hi - lo < 1e-9 * fmax(1, fabs(hi))) {  // flat: a range around the value
        double d = fmax(fabs(hi) * 0.1, 0.01);
        lo -= d, hi += d;
    }
    double pad = (hi - lo) * 0.04;
    lo = fmax(lo - pad, clamp_lo), hi = fmin(hi + pad, clamp_hi);
    double step = tick_step(hi - lo, 5);
    long k0 = (long)floor(lo / step + 1e-9), k1 = (long)ceil(hi / step - 1e-9);
    if (k1 <= k0) k1 = k0 + 1;
    int decimals = (int)fmax(0, -floor(log10(step) + 1e-9));
    a->log = 0, a->lo = k0 * step, a->hi = k1 * step, a->n = 0;
    for (long k = k0; k <= k1 && a->n < 64; k++) {
        double v = k == 0 ? 0.0 : (double)k * step;
        a->tick[a->n] = v;
        snprintf(a->label[a->n++], 24, "%.*f", decimals, v);
    }
}

// Log axis over [lo, hi] (both > 0). Ticks 1-2-3-5-7, 1-2-5 or 1 times the
// powers of ten depending on the decades spanned, every k-th decade beyond
// seven, so there are about 3 to 10 of them.
static void axis_log(Axis *a, double lo, double hi) {
    double llo = log10(lo), lhi = log10(hi), pad = (lhi - llo) * 0.04;
    llo -= pad, lhi += pad;
    double span = lhi - llo;
    static const double m5[] = {1, 2, 3, 5, 7}, m3[] = {1, 2, 5}, m1[] = {1};
    const double *m = span <= 1.3 ? m5 : span <= 3 ? m3 : m1;
    int nm = span <= 1.3 ? 5 : span <= 3 ? 3 : 1, every = span <= 7 ? 1 : (int)ceil(span / 7);
    a->log = 1, a->lo = llo, a->hi = lhi, a->n = 0;
    for (int d = (int)floor(llo); d <= (int)ceil(lhi); d++) {
        if (((d % every) + every) % every) continue;
        for (int i = 0; i < nm && a->n < 64; i++) {
            double v = m[i] * pow(10, d), lv = log10(v);
            if (lv < llo - 1e-9 || lv > lhi + 1e-9) continue;
            a->tick[a->n] = v;
            snprintf(a->label[a->n++], 24, "%g", v);
        }
    }
    // With ticks at whole decades only, the top of the axis may lie most of
    // a decade above the last one (a loss from 5.7 with ticks up to 1): a
    // 2 or 5 there keeps the top values readable.
    if (a->n && a->n < 64 && lhi - log10(a->tick[a->n - 1]) > 0.45) {
        const double last = a->tick[a->n - 1], v = log10(5 * last) <= lhi + 1e-9 ? 5 * last : 2 * last;
        a->tick[a->n] = v;
        snprintf(a->label[a->n++], 24, "%g", v);
    }
}

// ---- history -------------------------------------------------------------------

#define BLUE "#1f4fbf"
#define ORANGE "#e07b00"

// One panel: frame, grid, ticks, header, the training dots and the
// validation line. Values that are not finite (a diverged epoch) are left out.
static void panel(FILE *f, double x0, double y0, double w, double h, const char *what, int n, const float *train,
                  const float *val, double before, int is_accuracy) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isfinite(train[i])) lo = fmin(lo, train[i]), hi = fmax(hi, train[i]);
        if (val && isfinite(val[i])) lo = fmin(lo, val[i]), hi = fmax(hi, val[i]);
    }
    const int has_before = val && isfinite(before);
    if (has_before) lo = fmin(lo, before), hi = fmax(hi, before);
    Axis ax;
    char header[64];
    snprintf(header, sizeof header, "%s", what);
    if (!isfinite(lo)) axis_linear(&ax, 0, 1, 0, 1);
    else if (is_accuracy) axis_linear(&ax, lo, hi, 0, 1);
    // A loss whose largest value is over 5 times its smallest gets a log
    // axis: equal ratios are equal heights there, so a first-epoch spike
    // (say 8.0 before 0.7 -> 0.1) takes only its share of the height and the
    // fall that matters stays readable, as does a loss that falls by decades.
    // Below a ratio of 5 a log axis has too few ticks to read and looks much
    // like the linear one, the usual view.
    else if (lo > 0 && hi / lo > 5) {
        axis_log(&ax, lo, hi);
        snprintf(header, sizeof header, "%s (log scale)", what);
    } else axis_linear(&ax, lo, hi, -INFINITY, INFINITY);

    double label_w = 0;
    for (int i = 0; i < ax.n; i++) label_w = fmax(label_w, text_width(ax.label[i], 11));
    const double L = x0 + 12 + label_w + 6, R = x0 + w - 22, T = y0 + 26, B = y0 + h - 40;
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='white' stroke='#888'/>\n", L, T, R - L, B - T);
    for (int i = 0; i < ax.n; i++) {
        double y = B - axis_pos(&ax, ax.tick[i]) * (B - T);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", L, y, R, y);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%s</text>\n", L - 5, y + 4, ax.label[i]);
    }
    // Epochs: 1..n over the width, 2% in from the frame so the first and
    // last dots show whole (one epoch sits in the middle); ticks at 1 and at
    // multiples of a nice step.
    // With the model's figure before training (finetune: the head alone),
    // the axis starts at epoch 0, where that point stands.
    const int e_first = has_before ? 0 : 1;
    // One epoch alone sits in the middle; with few, a quarter epoch keeps
    // the end points and the one-epoch validation dash inside the frame.
    double e_pad = n == 1 && !has_before ? 1 : fmax((n - e_first) * 0.02, n <= 3 ? 0.25 : 0),
           e_lo = e_first - e_pad, e_hi = n + e_pad;
#define PX(e) (L + ((e) - e_lo) / (e_hi - e_lo) * (R - L))
    int xstep = n <= 10 ? 1 : (int)fmax(1, round(tick_step(n - 1, 8)));
    // Ticks at the first epoch (0 or 1), then at multiples of the step (1
    // beside 0 would overprint it once the step is larger).
    for (int e = e_first; e <= n; e = e <= 1 && xstep > 1 ? xstep : e + xstep) {
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#888'/>", PX(e), B, PX(e), B + 4);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>%d</text>\n", PX(e), B + 16, e);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>epoch</text>\n", (L + R) / 2, B + 33);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle'>%s</text>\n", (L + R) / 2, T - 8, header);
#define PY(v) (B - axis_pos(&ax, (v)) * (B - T))
    if (val) {
        if (n == 1 && isfinite(val[0]))  // a line needs two points: a dash
            fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='" ORANGE "' stroke-width='2'/>\n",
                    PX(1) - 10, PY(val[0]), PX(1) + 10, PY(val[0]));
        fprintf(f, "<polyline fill='none' stroke='" ORANGE "' stroke-width='2' points='");
        for (int i = 0; i < n; i++)
            if (isfinite(val[i])) fprintf(f, "%.1f,%.1f ", PX(i + 1), PY(val[i]));
        fprintf(f, "'/>\n");
    }
    if (has_before)  // hollow: a measurement, not a training epoch
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='4.5' fill='white' stroke='" ORANGE "' stroke-width='2'/>\n", PX(0),
                PY(before));
    // Dots shrink with many epochs so 500 of them still show a curve.
    double r = fmin(3.5, fmax(1.2, (R - L) / n * 0.45));
    for (int i = 0; i < n; i++)
        if (isfinite(train[i]))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='%.1f' fill='" BLUE "' fill-opacity='0.6'/>\n", PX(i + 1),
                    PY(train[i]), r);
#undef PX
#undef PY
}

int plot_history_svg(const char *path, const char *title, int n, const float *loss, const float *acc,
                     const float *val_loss, const float *val_acc, float before_val_loss, float before_val_acc) {
    if (n < 1) return err_set("%s: no epochs to plot", path);
    const double W = 900, H = 400;
    AtomicFile af;
    FILE *f = svg_begin(&af, path, W, H, "#fafafa");
    if (!f) return -1;
    svg_text(f, "x='450' y='22' text-anchor='middle'", 15, W - 20, title ? title : "");
    // The legend sits under the title, outside both panels, so it never
    // hides a curve.
    static const char before_label[] = "validation before training";
    const int has_before = val_loss && (isfinite(before_val_loss) || isfinite(before_val_acc));
    double lw = 16 + text_width("training", 11) + (val_loss ? 30 + 22 + text_width("validation", 11) : 0) +
                (has_before ? 30 + 16 + text_width(before_label, 11) : 0);
    double lx = (W - lw) / 2;
    fprintf(f, "<circle cx='%.1f' cy='40' r='3.5' fill='" BLUE "' fill-opacity='0.6'/>", lx + 4);
    fprintf(f, "<text x='%.1f' y='44' font-size='11'>training</text>\n", lx + 14);
    if (val_loss) {
        double vx = lx + 16 + text_width("training", 11) + 30;
        fprintf(f, "<line x1='%.1f' y1='40' x2='%.1f' y2='40' stroke='" ORANGE "' stroke-width='2'/>", vx, vx + 16);
        fprintf(f, "<text x='%.1f' y='44' font-size='11'>validation</text>\n", vx + 22);
        if (has_before) {
            double bx = vx + 22 + text_width("validation", 11) + 30;
            fprintf(f, "<circle cx='%.1f' cy='40' r='4.5' fill='white' stroke='" ORANGE "' stroke-width='2'/>", bx + 4);
            fprintf(f, "<text x='%.1f' y='44' font-size='11'>%s</text>\n", bx + 16, before_label);
        }
    }
    panel(f, 0, 50, W / 2, H - 50, "loss", n, loss, val_loss, has_before ? before_val_loss : NAN, 0);
    panel(f, W / 2, 50, W / 2, H - 50, "accuracy", n, acc, val_acc, has_before ? before_val_acc : NAN, 1);
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}

// ---- confusion matrix --------------------------------------------------------

// A matrix too big to draw: a note and its largest off-diagonal cells.
static int confusion_summary_svg(const char *path, const char *title, int K, char *const *names, const long *counts) {
    int t[PLOT_CONFUSION_TOP], p[PLOT_CONFUSION_TOP];
    const int n = metrics_top_confusions(counts, K, PLOT_CONFUSION_TOP, t, p);
    // Columns: true class, predicted class (names up to 260 px, longer ones
    // shortened in the middle), count and share, right-aligned.
    const double m = 12, fs = 12, name_max = 260, gap = 16, count_w = 70, share_w = 110, row_h = 18;
    const double x_true = m, x_pred = x_true + name_max + gap, x_count = x_pred + name_max + gap + count_w,
                 x_share = x_count + gap + share_w;
    const double W = x_share + m;
    const double title_fs = 15, title_max = W - 2 * m;
    char *tl[2];
    title_lines(title ? title : "", title_fs, title_max, tl);
    const double y_title = m + title_fs, y_note = y_title + (tl[1] ? title_fs * 1.25 : 0) + 24;
    const double y_head = y_note + 2 * fs * 1.4 + 12;
    const double H = y_head + (n ? n : 1) * row_h + 16;

    AtomicFile af;
    FILE *f = svg_begin(&af, path, W, H, "white");
    if (!f) return free(tl[0]), free(tl[1]), -1;
    title_draw(f, W / 2, y_title, title_fs, title_max, tl);
    char note[200], attrs[160];
    snprintf(note, sizeof note, "confusion matrix not drawn for %d classes (more than %d);", K, PLOT_CONFUSION_MAX);
    snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle'", W / 2, y_note);
    svg_text(f, attrs, fs, W - 2 * m, note);
    if (n) snprintf(note, sizeof note, "the %d most frequent confusions (per-class figures: the printed report)", n);
    else snprintf(note, sizeof note, "no confusions: every prediction is the true class");
    snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle' fill='#555'", W / 2, y_note + fs * 1.4);
    svg_text(f, attrs, fs, W - 2 * m, note);
    if (n) {
        fprintf(f, "<g font-weight='bold'>\n");
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f'", x_true, y_head);
        svg_text(f, attrs, fs, name_max, "true");
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f'", x_pred, y_head);
        svg_text(f, attrs, fs, name_max, "predicted");
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='end'", x_count, y_head);
        svg_text(f, attrs, fs, count_w, "count");
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='end'", x_share, y_head);
        svg_text(f, attrs, fs, share_w, "share of true");
        fprintf(f, "</g>\n<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#999'/>\n", m, y_head + 5, W - m,
                y_head + 5);
    }
    for (int i = 0; i < n; i++) {
        const double y = y_head + (i + 1) * row_h;
        long row = 0, c = counts[(long)t[i] * K + p[i]];
        for (int j = 0; j < K; j++) row += counts[(long)t[i] * K + j];
        char num[48];
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f'", x_true, y);
        svg_text(f, attrs, fs, name_max, names[t[i]]);
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f'", x_pred, y);
        svg_text(f, attrs, fs, name_max, names[p[i]]);
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='end'", x_count, y);
        snprintf(num, sizeof num, "%ld", c);
        svg_text(f, attrs, fs, count_w, num);
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='end'", x_share, y);
        snprintf(num, sizeof num, "%.4f", row ? (double)c / row : 0.0);
        svg_text(f, attrs, fs, share_w, num);
    }
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}

int plot_confusion_svg(const char *path, const char *title, int K, char *const *names, const long *counts) {
    if (K < 1) return err_set("%s: no classes to plot", path);
    if (K > PLOT_CONFUSION_MAX) return confusion_summary_svg(path, title, K, names, counts);
    // Cells from 80 px (2 classes) down to 16 px (30 classes and more, still
    // room for a label line each); names up to 220 px, longer ones shortened.
    const double cell = fmax(16, fmin(80, floor(480.0 / K)));
    const double fs = cell >= 20 ? 12 : 11, name_max = 220, m = 12;
    double name_w = 0;
    for (int k = 0; k < K; k++) name_w = fmax(name_w, fmin(name_max, text_width(names[k], fs)));
    // Column names stand upright when they all fit in a cell, else they run
    // vertically (bottom to top) in a band as tall as the longest one.
    int upright = 1;
    for (int k = 0; k < K; k++)
        if (text_width(names[k], fs) > cell - 6) upright = 0;
    const double col_band = upright ? fs + 4 : name_w + 6;
    // Counts: one font size for all, as large as the widest count allows;
    // none when even 6 px would not fit (the shading still shows).
    long widest = 0;
    for (long i = 0; i < (long)K * K; i++) widest = counts[i] > widest ? counts[i] : widest;
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", widest);
    double count_fs = fmin(fmin(14, cell * 0.45), (cell - 4) / (text_width(buf, 1) + 1e-9));
    int show_counts = count_fs >= 6;

    const double side = K * cell, left = m + 22 + name_w + 8;  // matrix left edge at least: "true", the names, a gap
    // The title, in two lines when wider than the picture would be (at least
    // 640 px), is centred on the matrix; the matrix moves right as far as a
    // wide title needs, so both stay centred in the picture.
    const double title_fs = 15, title_max = fmax(640, left + side + m);
    char *tl[2];
    const double title_w = title_lines(title ? title : "", title_fs, title_max, tl);
    const double cx = fmax(left + side / 2, m + title_w / 2), mx = cx - side / 2;
    const double x_true = mx - 8 - name_w - 10;  // the rotated "true" label's baseline, next to the names
    const double W = fmax(mx + side, cx + title_w / 2) + m + 6;
    const double y_title = m + title_fs, y_pred = y_title + (tl[1] ? title_fs * 1.25 : 0) + 22,
                 my = y_pred + 8 + col_band;
    const double H = my + side + 30;

    AtomicFile af;
    FILE *f = svg_begin(&af, path, W, H, "white");
    if (!f) return free(tl[0]), free(tl[1]), -1;
    char attrs[160];
    title_draw(f, cx, y_title, title_fs, title_max, tl);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>predicted</text>\n", mx + side / 2,
            y_pred);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle' transform='rotate(-90 %.1f %.1f)'>"
               "true</text>\n",
            x_true, my + side / 2, x_true, my + side / 2);
    for (int r = 0; r < K; r++) {
        long row = 0;
        for (int c = 0; c < K; c++) row += counts[r * K + c];
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='end'", mx - 6, my + r * cell + cell / 2 + fs * 0.36);
        svg_text(f, attrs, fs, name_max, names[r]);
        for (int c = 0; c < K; c++) {
            double frac = row ? (double)counts[r * K + c] / row : 0;
            int shade = (int)(255 - frac * 200);
            fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='rgb(%d,%d,255)' stroke='#ccc'/>",
                    mx + c * cell, my + r * cell, cell, cell, shade, shade);
            if (show_counts)
                fprintf(f, "<text x='%.1f' y='%.1f' font-size='%.1f' text-anchor='middle' fill='%s'>%ld</text>",
                        mx + c * cell + cell / 2, my + r * cell + cell / 2 + count_fs * 0.36, count_fs,
                        frac > 0.5 ? "white" : "black", counts[r * K + c]);
            fputc('\n', f);
        }
    }
    for (int c = 0; c < K; c++) {
        double x = mx + c * cell + cell / 2, y = my - 6;
        if (upright) snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle'", x, y);
        else
            snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' transform='rotate(-90 %.1f %.1f)'", x + fs * 0.36, y,
                     x + fs * 0.36, y);
        svg_text(f, attrs, fs, name_max, names[c]);
    }
    // What the shading means, under the matrix (centred, within the picture).
    snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' fill='#555' text-anchor='middle'", mx + side / 2,
             my + side + 18);
    svg_text(f, attrs, 10, 2 * fmin(mx + side / 2 - m, W - m - (mx + side / 2)), "shade: share of the row");
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}

// ---- contact sheet -------------------------------------------------------------

// RFC 4648 base64 of n bytes, written to f.
static void base64_write(FILE *f, const uint8_t *p, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {abc[v >> 18 & 63], abc[v >> 12 & 63], i + 1 < n ? abc[v >> 6 & 63] : '=',
                     i + 2 < n ? abc[v & 63] : '='};
        fwrite(q, 1, 4, f);
    }
}

// Cells: a 160 px box for the picture, two caption lines under it.
#define SHEET_BOX 160
#define SHEET_CAPTION_FS 12

// Writes thumbnail t scaled to fit the box at (x, y), as an embedded PNG.
static int sheet_thumb(FILE *f, const PlotThumb *t, int i, double x, double y) {
    if (!t->rgb || t->w <= 0 || t->h <= 0)
        return err_set("contact sheet: thumbnail %d has no pixels (%dx%d)", i, t->w, t->h);
    // Fit, keeping the aspect; PIL's bilinear filter averages when shrinking.
    int tw = SHEET_BOX, th = SHEET_BOX;
    if (t->w >= t->h) th = (int)fmax(1, round((double)SHEET_BOX * t->h / t->w));
    else tw = (int)fmax(1, round((double)SHEET_BOX * t->w / t->h));
    uint8_t *small = malloc((size_t)tw * th * 3), *png = NULL;
    size_t n_png = 0;
    if (!small) return err_set("contact sheet: out of memory for thumbnail %d", i);
    int rc = image_resize(t->rgb, t->w, t->h, small, tw, th, INTERP_BILINEAR);
    if (rc == 0) rc = image_encode_png(small, tw, th, &png, &n_png);
    free(small);
    if (rc) return err_prefix("contact sheet: thumbnail %d", i);
    // Centred across, standing on the caption (a wide picture's caption
    // stays right under it).
    double ix = x + (SHEET_BOX - tw) / 2.0, iy = y + SHEET_BOX - th;
    fprintf(f, "<image x='%.1f' y='%.1f' width='%d' height='%d' href='data:image/png;base64,", ix, iy, tw, th);
    base64_write(f, png, n_png);
    fprintf(f, "'/>\n<rect x='%.1f' y='%.1f' width='%d' height='%d' fill='none' stroke='#bbb'/>\n", ix - 0.5,
            iy - 0.5, tw + 1, th + 1);
    free(png);
    return 0;
}

int plot_contact_sheet_svg(const char *path, const char *title, int n, const PlotThumb *thumbs, int columns) {
    if (n < 0 || (n > 0 && !thumbs)) return err_set("%s: no thumbnails given", path);
    if (columns < 0) return err_set("%s: %d columns", path, columns);
    // Automatic: a near-square grid, 8 columns at most (1440 px).
    int cols = columns ? columns : n <= 4 ? n : (int)fmin(8, ceil(sqrt((double)n)));
    if (cols > n) cols = n;
    if (cols < 1) cols = 1;
    int rows = n ? (n + cols - 1) / cols : 0;
    int n_lines = 2;
    for (int i = 0; i < n; i++)
        if (thumbs[i].line3) n_lines = 3;
    const double m = 12, pad = 10, cw = SHEET_BOX + 2 * pad,
                 ch = SHEET_BOX + 8 + n_lines * (SHEET_CAPTION_FS + 4) + pad;
    // The title: in two lines when wider than the grid (at least 640 px).
    const double title_fs = 16, grid_w = cols * cw, title_max = fmax(grid_w, 640);
    char *tl[2];
    const double title_w = title_lines(title ? title : "", title_fs, title_max, tl);
    const double top = m + title_fs + (tl[1] ? title_fs * 1.25 : 0) + 14;
    const double W = fmax(grid_w, title_w) + 2 * m, H = top + (n ? rows * ch : 40) + m;
    const double gx = (W - grid_w) / 2;  // the grid, centred

    AtomicFile af;
    FILE *f = svg_begin(&af, path, W, H, "white");
    if (!f) return free(tl[0]), free(tl[1]), -1;
    char attrs[160];
    title_draw(f, W / 2, m + title_fs, title_fs, title_max, tl);
    if (n == 0) {
        snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle' fill='#555'", W / 2, top + 20);
        svg_text(f, attrs, 12, W - 2 * m, "nothing to show");
    }
    for (int i = 0; i < n; i++) {
        double x = gx + (i % cols) * cw + pad, y = top + (i / cols) * ch;
        if (thumbs[i].tooltip) {  // a group, so that hovering the picture shows it
            fputs("<g><title>", f);
            text_escaped(f, thumbs[i].tooltip);
            fputs("</title>\n", f);
        }
        if (sheet_thumb(f, &thumbs[i], i, x, y)) {
            err_prefix("%s", path);
            atomic_abort(&af);
            return -1;
        }
        if (thumbs[i].tooltip) fputs("</g>\n", f);
        const char *lines[3] = {thumbs[i].line1, thumbs[i].line2, thumbs[i].line3};
        static const char *const fill[3] = {"", " fill='#a00'", " fill='#777'"};
        double ly = y + SHEET_BOX + 8 + SHEET_CAPTION_FS;
        for (int k = 0; k < 3; k++) {
            if (!lines[k]) continue;
            snprintf(attrs, sizeof attrs, "x='%.1f' y='%.1f' text-anchor='middle'%s", x + SHEET_BOX / 2.0,
                     ly + k * (SHEET_CAPTION_FS + 4), fill[k]);
            svg_text(f, attrs, SHEET_CAPTION_FS, cw - 6, lines[k]);
        }
    }
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}
