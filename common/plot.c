#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"

// Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one.
static int utf8_len(const unsigned char *s) {
    int n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] >> 6) != 2) return 0;
    return n;
}

// XML-escapes text. Class names are folder names, i.e. arbitrary bytes:
// valid UTF-8 passes through, other bytes are shown as Latin-1 characters.
static void text_escaped(FILE *f, const char *text) {
    for (const unsigned char *s = (const unsigned char *)text; *s;) {
        int n = utf8_len(s);
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else if (*s < 0x20) fputc('?', f);
        else if (n > 1) fwrite(s, 1, (size_t)n, f);
        else if (n == 0) fprintf(f, "&#%u;", *s);  // not UTF-8: never emit invalid bytes
        else fputc(*s, f);
        s += n > 1 ? n : 1;
    }
}

// A "nice" tick step for a range (1, 2 or 5 times a power of ten).
static double tick_step(double range, int want) {
    double raw = range / want, p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void panel(FILE *f, double x0, double y0, double w, double h, const char *ylabel, int n, const float *train,
                  const float *val, int unit_range) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isfinite(train[i])) lo = fmin(lo, train[i]), hi = fmax(hi, train[i]);
        if (val && isfinite(val[i])) lo = fmin(lo, val[i]), hi = fmax(hi, val[i]);
    }
    if (!isfinite(lo)) lo = 0, hi = 1;
    if (unit_range) lo = fmin(lo, 0.5), hi = fmax(hi, 1.0), lo = lo < 0 ? 0 : lo;
    if (hi - lo < 1e-6) hi = lo + 1;
    double pad = (hi - lo) * 0.05;
    lo -= pad, hi += pad;
    if (unit_range && lo < 0) lo = 0;
    const double L = x0 + 55, R = x0 + w - 10, T = y0 + 30, B = y0 + h - 40;
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='white' stroke='#888'/>\n", L, T, R - L, B - T);
    double step = tick_step(hi - lo, 5);
    for (double v = ceil(lo / step) * step; v <= hi + 1e-12; v += step) {
        double y = B - (v - lo) / (hi - lo) * (B - T);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", L, y, R, y);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%.3g</text>\n", L - 4, y + 4, v);
    }
    int xstep = n <= 10 ? 1 : (int)tick_step(n, 8);
    for (int e = 1; e <= n; e += xstep) {
        double x = n == 1 ? (L + R) / 2 : L + (double)(e - 1) / (n - 1) * (R - L);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>%d</text>\n", x, B + 15, e);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>epoch</text>\n", (L + R) / 2, B + 32);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='14' text-anchor='middle'>%s</text>\n", (L + R) / 2, T - 10, ylabel);
#define PX(i) (n == 1 ? (L + R) / 2 : L + (double)(i) / (n - 1) * (R - L))
#define PY(v) (B - ((v) - lo) / (hi - lo) * (B - T))
    if (val) {
        fprintf(f, "<polyline fill='none' stroke='#1f4fbf' stroke-width='2' points='");
        for (int i = 0; i < n; i++)
            if (isfinite(val[i])) fprintf(f, "%.1f,%.1f ", PX(i), PY(val[i]));
        fprintf(f, "'/>\n");
    }
    for (int i = 0; i < n; i++)
        if (isfinite(train[i]))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='#1f4fbf' fill-opacity='0.55'/>\n", PX(i),
                    PY(train[i]));
#undef PX
#undef PY
    // Legend where the curves usually are not: top right for the loss
    // (it falls), bottom right for the accuracy (it rises).
    double ly = unit_range ? B - 44 : T;
    fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='#1f4fbf' fill-opacity='0.55'/>", R - 120, ly + 14);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='11'>training</text>\n", R - 110, ly + 18);
    if (val) {
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#1f4fbf' stroke-width='2'/>", R - 128,
                ly + 30, R - 112, ly + 30);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11'>validation</text>\n", R - 110, ly + 34);
    }
}

int plot_history_svg(const char *path, const char *title, int n, const float *loss, const float *acc,
                     const float *val_loss, const float *val_acc) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    const int W = 900, H = 380;
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
               "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='#fafafa'/>\n",
            W, H);
    fprintf(f, "<text x='%d' y='22' font-size='15' text-anchor='middle'>", W / 2);
    text_escaped(f, title);
    fprintf(f, "</text>\n");
    panel(f, 0, 20, W / 2.0, H - 20, "loss", n, loss, val_loss, 0);
    panel(f, W / 2.0, 20, W / 2.0, H - 20, "accuracy", n, acc, val_acc, 1);
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}

int plot_confusion_svg(const char *path, const char *title, int K, char *const *names, const long *counts) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    const int cell = K <= 10 ? 56 : K <= 30 ? 28 : 14, left = 150, top = 150;
    const int W = left + K * cell + 40, H = top + K * cell + 40;
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
               "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
            W, H);
    fprintf(f, "<text x='%d' y='22' font-size='15' text-anchor='middle'>", W / 2);
    text_escaped(f, title);
    fprintf(f, "</text>\n<text x='%d' y='44' font-size='12' text-anchor='middle'>predicted</text>\n",
            left + K * cell / 2);
    fprintf(f, "<text x='16' y='%d' font-size='12' transform='rotate(-90 16 %d)' text-anchor='middle'>true</text>\n",
            top + K * cell / 2, top + K * cell / 2);
    for (int r = 0; r < K; r++) {
        long row = 0;
        for (int c = 0; c < K; c++) row += counts[r * K + c];
        fprintf(f, "<text x='%d' y='%d' font-size='11' text-anchor='end'>", left - 6, top + r * cell + cell / 2 + 4);
        text_escaped(f, names[r]);
        fprintf(f, "</text>\n");
        for (int c = 0; c < K; c++) {
            double frac = row ? (double)counts[r * K + c] / row : 0;
            int shade = (int)(255 - frac * 200);
            const char *ink = frac > 0.5 ? "white" : "black";
            fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='rgb(%d,%d,255)' stroke='#ccc'/>", left + c * cell,
                    top + r * cell, cell, cell, shade, shade);
            if (cell >= 28)
                fprintf(f, "<text x='%d' y='%d' font-size='11' text-anchor='middle' fill='%s'>%ld</text>",
                        left + c * cell + cell / 2, top + r * cell + cell / 2 + 4, ink, counts[r * K + c]);
            fputc('\n', f);
        }
    }
    for (int c = 0; c < K; c++) {
        int x = left + c * cell + cell / 2, y = top - 6;
        fprintf(f, "<text x='%d' y='%d' font-size='11' transform='rotate(-60 %d %d)'>", x, y, x, y);
        text_escaped(f, names[c]);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    return atomic_commit(&af);
}
