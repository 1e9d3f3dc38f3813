// predict's results: per-image lines, the running evaluation, the report.
#include "results.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"
#include "image.h"
#include "metrics.h"
#include "plot.h"
#include "progress.h"

// Long side of the contact sheet's thumbnails, in pixels.
#define THUMB_SIDE 128

void skip_add(SkipList *s, const char *path, const char *reason) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **p = realloc(s->path, sizeof(char *) * (size_t)cap);
        if (p) s->path = p;
        char **r = realloc(s->reason, sizeof(char *) * (size_t)cap);
        if (r) s->reason = r;
        if (!p || !r) return;  // out of memory: the count in the summary still says it
        s->cap = cap;
    }
    s->path[s->n] = strdup(path);
    s->reason[s->n++] = strdup(reason);
}

void skip_free(SkipList *s) {
    for (int i = 0; i < s->n; i++) free(s->path[i]), free(s->reason[i]);
    free(s->path), free(s->reason);
    memset(s, 0, sizeof *s);
}

// Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), 0 when it is not one.
static int utf8_len(const unsigned char *p) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!n) return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;   // overlong
    if (c == 0xED && p[1] > 0x9F) return 0;   // surrogate
    if (c == 0xF0 && p[1] < 0x90) return 0;   // overlong
    if (c == 0xF4 && p[1] > 0x8F) return 0;   // above U+10FFFF
    return n;
}

// JSON string (RFC 8259): quotes, backslashes and control characters
// escaped; valid UTF-8 as it is. File names are bytes, not always UTF-8: a
// byte that is not part of valid UTF-8 is written as \u00XX, the character
// of its Latin-1 reading, so every line parses (a JSON reader then sees
// U+0080..U+00FF where the name had the raw byte 0x80..0xFF).
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_len(p);
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20 || *p == 0x7f || n == 0) fprintf(f, "\\u%04x", *p);
        else {
            fwrite(p, 1, (size_t)n, f);
            p += n;
            continue;
        }
        p++;
    }
    fputc('"', f);
}

// A JSON number; null for NaN and infinities, which JSON cannot write.
static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f);
}

// A file name in the text format, one line per image: control characters
// (a newline, a tab in a name) written as \n, \t, \r or \xNN.
static void text_path(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
}

// CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

// The K class probabilities of one model output row: a sigmoid's p is the
// probability of class 1 (Keras's binary class_mode), 1 - p class 0's.
static void class_probs(const Model *m, const float *row, float *probs) {
    if (m->n_outputs == 1) {
        probs[0] = 1.0f - row[0];
        probs[1] = row[0];
    } else {
        memcpy(probs, row, sizeof(float) * (size_t)m->n_outputs);
    }
}

void results_header(const Results *r) {
    if (r->fmt != FMT_CSV) return;
    fputs("path", r->out);
    if (r->eval) fputs(",true", r->out);
    for (int j = 1; j <= r->top_k; j++) fprintf(r->out, ",class_%d,prob_%d", j, j);
    fputc('\n', r->out);
}

// One image's line: its top k (probabilities as %.9g in csv and json: the
// float32 value exactly; %.4f in text, for people).
static void emit(Results *r, const char *path, int truth) {
    int k = metrics_top_k(r->probs, r->K, r->top_k, r->idx);
    FILE *f = r->out;
    if (r->fmt == FMT_TEXT) {
        text_path(f, path);
        fputc(':', f);
        for (int j = 0; j < k; j++) fprintf(f, "%s %s %.4f", j ? "," : "", r->names[r->idx[j]], r->probs[r->idx[j]]);
        if (truth >= 0) fprintf(f, " (true: %s)", r->names[truth]);
        fputc('\n', f);
    } else if (r->fmt == FMT_CSV) {
        csv_field(f, path);
        if (r->eval) fputc(',', f), csv_field(f, r->names[truth]);
        for (int j = 0; j < k; j++) {
            fputc(',', f);
            csv_field(f, r->names[r->idx[j]]);
            fprintf(f, ",%.9g", r->probs[r->idx[j]]);
        }
        fputc('\n', f);
    } else {
        fputs("{\"path\": ", f);
        json_string(f, path);
        fputs(", \"top_k\": [", f);
        for (int j = 0; j < k; j++) {
            fputs(j ? ", {\"class\": " : "{\"class\": ", f);
            json_string(f, r->names[r->idx[j]]);
            fputs(", \"prob\": ", f);
            json_num(f, r->probs[r->idx[j]]);
            fputc('}', f);
        }
        fputc(']', f);
        if (truth >= 0) {
            fputs(", \"true\": ", f);
            json_string(f, r->names[truth]);
        }
        fputs("}\n", f);
    }
}

// Keeps mistake x if it is among the max_worst most confident so far.
static void keep_mistake(Results *r, const char *open_path, float prob, int truth, int pred) {
    if (r->max_worst <= 0) return;
    int at = r->n_worst;
    if (r->n_worst == r->max_worst) {
        at = 0;  // the least confident kept one (the latest of equals), replaced when x is more confident
        for (int i = 1; i < r->n_worst; i++)
            if (r->worst[i].prob < r->worst[at].prob ||
                (r->worst[i].prob == r->worst[at].prob && r->worst[i].order > r->worst[at].order))
                at = i;
        if (!(prob > r->worst[at].prob)) return;
    }
    char *copy = strdup(open_path);
    if (!copy) return;  // out of memory: this one is left off the sheet
    if (at < r->n_worst) free(r->worst[at].path);
    else r->n_worst++;
    r->worst[at] = (Mistake){copy, prob, r->order, truth, pred};
}

int results_take_batch(Results *r, HeadBuffers *hb, const float *features, int n, char *const *paths,
                       char *const *open_paths, const int32_t *labels, int32_t *pred) {
    const Model *m = r->m;
    if (r->eval) {
        float loss = head_backward(m, features, labels, NULL, n, hb, NULL, NULL);
        if (!isfinite(loss) && !r->nonfinite) {  // once, not a silent "loss nan" at the end
            log_printf(stderr, "warning: the model produced a non-finite loss (NaN or infinity), first in the batch "
                       "from %s: its outputs saturate at 0 or 1 (overflowing weights) or are broken; the loss is "
                       "printed as nan (null in JSON)\n", paths[0]);
            r->nonfinite = 1;
        }
        head_predict_classes(m, hb, n, pred);
        running_add(&r->run, loss, n, pred, labels);
        confusion_add(r->conf, r->K, labels, pred, n);
    }
    for (int i = 0; i < n; i++) {
        class_probs(m, hb->probs + (size_t)i * m->n_outputs, r->probs);
        if (!r->nonfinite)
            for (int k = 0; k < r->K; k++)
                if (!isfinite(r->probs[k])) {
                    // Once: the lines show nan (null in json), the loss too.
                    log_printf(stderr, "warning: the model produced non-finite outputs (NaN or infinity), first for "
                               "%s: its weights or this input are broken; such probabilities are printed as nan "
                               "(null in JSON)\n", paths[i]);
                    r->nonfinite = 1;
                    break;
                }
        emit(r, paths[i], r->eval ? labels[i] : -1);
        if (r->eval && pred[i] != labels[i]) {
            uint32_t len = (uint32_t)strlen(paths[i]);
            int32_t rec[2] = {labels[i], pred[i]};
            float p = r->probs[pred[i]];
            if (fwrite(&len, sizeof len, 1, r->wrong) != 1 || fwrite(paths[i], 1, len, r->wrong) != len ||
                fwrite(rec, sizeof rec, 1, r->wrong) != 1 || fwrite(&p, sizeof p, 1, r->wrong) != 1)
                return err_set("writing the list of misclassified files to a temporary file: %s", strerror(errno));
            r->n_wrong++;
            keep_mistake(r, open_paths[i], p, labels[i], pred[i]);
        }
        r->order++;
    }
    if (ferror(r->out)) return err_set("writing the predictions to stdout: %s", strerror(errno));
    return 0;
}

// Calls fn for each misclassified record in input order.
typedef void (*WrongFn)(void *ctx, long i, const char *path, int truth, int pred, float prob);
static int each_wrong(Results *r, WrongFn fn, void *ctx) {
    // Written as the run went (a full $TMPDIR shows here first).
    const char *dir = temp_dir();
    if (fflush(r->wrong) != 0 || ferror(r->wrong))
        return err_set("writing the list of misclassified files in %s (TMPDIR): %s", dir, strerror(errno ? errno : EIO));
    rewind(r->wrong);
    char *path = NULL;
    int rc = 0;
    for (long i = 0; i < r->n_wrong; i++) {
        uint32_t len;
        int32_t rec[2];
        float p;
        if (fread(&len, sizeof len, 1, r->wrong) != 1 || !(path = realloc(path, len + 1)) ||
            fread(path, 1, len, r->wrong) != len || fread(rec, sizeof rec, 1, r->wrong) != 1 ||
            fread(&p, sizeof p, 1, r->wrong) != 1) {
            rc = err_set("reading back the list of misclassified files in %s (TMPDIR): %s", dir,
                         ferror(r->wrong) ? strerror(errno ? errno : EIO) : "cut short");
            break;
        }
        path[len] = '\0';
        fn(ctx, i, path, rec[0], rec[1], p);
    }
    free(path);
    return rc;
}

// --- the report -------------------------------------------------------------------

typedef struct {
    FILE *f;
    char *const *names;
} WrongOut;

static void wrong_text(void *ctx, long i, const char *path, int truth, int pred, float prob) {
    WrongOut *w = ctx;
    fputs("  ", w->f);
    text_path(w->f, path);
    fprintf(w->f, ": true %s, predicted %s (%.*f)\n", w->names[truth], w->names[pred], metrics_prob_digits(prob, 4),
            prob);
}

static void wrong_json(void *ctx, long i, const char *path, int truth, int pred, float prob) {
    WrongOut *w = ctx;
    fputs(i ? ",\n    {\"path\": " : "\n    {\"path\": ", w->f);
    json_string(w->f, path);
    fputs(", \"true\": ", w->f);
    json_string(w->f, w->names[truth]);
    fputs(", \"predicted\": ", w->f);
    json_string(w->f, w->names[pred]);
    fputs(", \"prob\": ", w->f);
    json_num(w->f, prob);
    fputc('}', w->f);
}

// The evaluation in words: fit_print_report's loss, accuracy, matrix,
// precision and recall (what train prints), the F1 and averages, the
// misclassified files and the skipped ones.
static int report_text(FILE *f, Results *r, const char *what, const SkipList *skipped) {
    for (const char *l = r->note; l && *l;) {  // one "Note: " per line
        const char *e = strchr(l, '\n');
        int len = e ? (int)(e - l) : (int)strlen(l);
        fprintf(f, "Note: %.*s\n", len, l);
        l += len + (e != NULL);
    }
    fit_print_report(f, what, &r->run, r->K, r->names, r->conf);  // (with the averages)
    fprintf(f, "Misclassified: %ld of %.0f\n", r->n_wrong, r->run.n);
    WrongOut w = {f, r->names};
    if (each_wrong(r, wrong_text, &w) < 0) return -1;
    if (skipped->n) {
        fprintf(f, "Skipped %d file%s (not counted above):\n", skipped->n, skipped->n == 1 ? "" : "s");
        for (int i = 0; i < skipped->n; i++) {
            fputs("  ", f);
            text_path(f, skipped->path[i]);
            fprintf(f, ": %s\n", skipped->reason[i]);
        }
    }
    return 0;
}

static int report_json(FILE *f, Results *r, const char *what, const char *data, const ClassMetrics *cm,
                       const SkipList *skipped) {
    fputs("{\n  \"what\": ", f);
    json_string(f, what);
    fputs(",\n  \"data\": ", f);
    json_string(f, data);
    if (r->model) {
        fputs(",\n  \"model\": ", f);
        json_string(f, r->model);
    }
    if (r->note && r->note[0]) {
        fputs(",\n  \"note\": ", f);
        json_string(f, r->note);
    }
    fprintf(f, ",\n  \"n\": %.0f,\n  \"correct\": %ld,\n  \"loss\": ", r->run.n, r->run.correct);
    json_num(f, running_loss(&r->run));
    fputs(",\n  \"accuracy\": ", f);
    json_num(f, running_acc(&r->run));
    fputs(",\n  \"classes\": [", f);
    for (int k = 0; k < r->K; k++) {
        if (k) fputs(", ", f);
        json_string(f, r->names[k]);
    }
    fputs("],\n  \"confusion\": [", f);
    for (int t = 0; t < r->K; t++) {
        fputs(t ? ", [" : "[", f);
        for (int p = 0; p < r->K; p++) fprintf(f, "%s%ld", p ? ", " : "", r->conf[t * r->K + p]);
        fputc(']', f);
    }
    fputs("],\n  \"per_class\": [", f);
    for (int k = 0; k < r->K; k++) {
        fputs(k ? ",\n    {\"class\": " : "\n    {\"class\": ", f);
        json_string(f, r->names[k]);
        fputs(", \"precision\": ", f), json_num(f, cm[k].precision);
        fputs(", \"recall\": ", f), json_num(f, cm[k].recall);
        fputs(", \"f1\": ", f), json_num(f, cm[k].f1);
        fprintf(f, ", \"support\": %ld}", cm[k].support);
    }
    double p, rc, f1;
    metrics_macro(cm, r->K, &p, &rc, &f1);
    fputs("],\n  \"macro\": {\"precision\": ", f), json_num(f, p);
    fputs(", \"recall\": ", f), json_num(f, rc);
    fputs(", \"f1\": ", f), json_num(f, f1);
    metrics_weighted(cm, r->K, &p, &rc, &f1);
    fputs("},\n  \"weighted\": {\"precision\": ", f), json_num(f, p);
    fputs(", \"recall\": ", f), json_num(f, rc);
    fputs(", \"f1\": ", f), json_num(f, f1);
    fputc('}', f);
    fputs(",\n  \"misclassified\": [", f);
    WrongOut w = {f, r->names};
    if (each_wrong(r, wrong_json, &w) < 0) return -1;
    fputs("],\n  \"skipped\": [", f);
    for (int i = 0; i < skipped->n; i++) {
        fputs(i ? ",\n    {\"path\": " : "\n    {\"path\": ", f);
        json_string(f, skipped->path[i]);
        fputs(", \"reason\": ", f);
        json_string(f, skipped->reason[i]);
        fputc('}', f);
    }
    fputs("]\n}\n", f);
    return 0;
}

static int cmp_mistake(const void *a, const void *b) {
    const Mistake *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

// PREFIX_errors.svg: the kept mistakes, most confident first, as thumbnails
// of about THUMB_SIDE pixels on the long side, decoded again from their
// files (RGB before preprocessing). A file that cannot be read any more is
// left out with a warning.
static int write_contact_sheet(const char *path, Results *r, const char *title) {
    qsort(r->worst, (size_t)r->n_worst, sizeof(Mistake), cmp_mistake);
    PlotThumb *thumbs = calloc((size_t)(r->n_worst ? r->n_worst : 1), sizeof(PlotThumb));
    char (*lines)[2][160] = calloc((size_t)(r->n_worst ? r->n_worst : 1), sizeof *lines);
    int n = 0, rc = thumbs && lines ? 0 : err_set("out of memory");
    for (int i = 0; rc == 0 && i < r->n_worst; i++) {
        const Mistake *x = &r->worst[i];
        Image img;
        if (image_decode_file(x->path, NULL, &img, NULL) < 0) {
            log_printf(stderr, "warning: left out of %s: %s\n", path, err_msg());
            continue;
        }
        int side = img.w > img.h ? img.w : img.h;
        int w = img.w, h = img.h;
        if (side > THUMB_SIDE) {
            w = (int)lround((double)img.w * THUMB_SIDE / side), h = (int)lround((double)img.h * THUMB_SIDE / side);
            w = w < 1 ? 1 : w, h = h < 1 ? 1 : h;
        }
        uint8_t *rgb = malloc((size_t)w * h * 3);
        if (!rgb || image_resize(img.rgb, img.w, img.h, rgb, w, h, INTERP_BILINEAR) < 0) {
            free(rgb);
            image_free(&img);
            rc = err_set("out of memory for a thumbnail of %s", x->path);
            break;
        }
        image_free(&img);
        snprintf(lines[n][0], sizeof lines[n][0], "true: %s", r->names[x->truth]);
        snprintf(lines[n][1], sizeof lines[n][1], "pred: %s %.*f", r->names[x->pred], metrics_prob_digits(x->prob, 3),
                 x->prob);
        const char *slash = strrchr(x->path, '/');
        thumbs[n] = (PlotThumb){rgb, h, w, lines[n][0], lines[n][1], slash ? slash + 1 : x->path, x->path};
        n++;
    }
    if (rc == 0) rc = plot_contact_sheet_svg(path, title, n, thumbs, 0);
    for (int i = 0; i < n; i++) free((void *)thumbs[i].rgb);
    free(thumbs), free(lines);
    return rc;
}

const char *report_suffix(int k, Format fmt) {
    return k == 0 ? (fmt == FMT_JSON ? "_report.json" : "_report.txt") : k == 1 ? "_confusion.svg" : "_errors.svg";
}

int results_finish(Results *r, const char *report, const char *what, const char *data, const SkipList *skipped) {
    ClassMetrics *cm = malloc(sizeof(ClassMetrics) * (size_t)r->K);
    if (!cm) return err_set("out of memory");
    metrics_per_class(r->conf, r->K, cm);
    // stdout holds the csv or json lines: the report goes beside them.
    FILE *screen = r->fmt == FMT_TEXT ? stdout : stderr;
    fflush(stdout);
    int rc = report_text(screen, r, what, skipped);
    if (rc == 0 && (fflush(screen) != 0 || ferror(screen)))
        rc = err_set("writing the report to %s: %s", screen == stdout ? "stdout" : "stderr",
                     strerror(errno ? errno : EIO));
    if (rc == 0 && report) {
        // The three files replace the old three together: a failure part way
        // (a full disk) leaves the old set whole, not a mix of two runs.
        char path[PATH_MAX + 32], title[PATH_MAX + 200];
        // The folder check_output_path made at the start may be gone: a
        // train, finetune or extract that made it too and failed removes
        // it while empty (remove_created_dirs), and predict writes there
        // only now. Make it again (predict never removes it).
        snprintf(path, sizeof path, "%s%s", report, report_suffix(0, r->fmt));
        if (make_parent_dirs(path) < 0) rc = err_prefix("--report: ");
        for (int k = 0; rc == 0 && k < 3; k++) {  // left by a killed run
            snprintf(path, sizeof path, "%s%s", report, report_suffix(k, r->fmt));
            atomic_remove_stale(path);
        }
        atomic_group_begin();
        AtomicFile af;
        snprintf(path, sizeof path, "%s%s", report, report_suffix(0, r->fmt));
        FILE *f = rc == 0 ? atomic_open(&af, path) : NULL;
        if (!f) rc = -1;
        if (rc == 0) {
            if (r->fmt == FMT_JSON) rc = report_json(f, r, what, data, cm, skipped);
            else {
                fprintf(f, "%s on %s\n", what, data);
                if (r->model) fprintf(f, "Model: %s\n", r->model);
                rc = report_text(f, r, what, skipped);
            }
            if (rc == 0) rc = atomic_commit(&af);
            else atomic_abort(&af);
        }
        if (rc == 0) {
            snprintf(path, sizeof path, "%s_confusion.svg", report);
            snprintf(title, sizeof title, "%s: accuracy %.4f (%ld/%.0f)", data, running_acc(&r->run), r->run.correct,
                     r->run.n);
            rc = plot_confusion_svg(path, title, r->K, r->names, r->conf);
        }
        if (rc == 0) {
            snprintf(path, sizeof path, "%s_errors.svg", report);
            snprintf(title, sizeof title, "%s: %ld misclassified of %.0f%s", data, r->n_wrong, r->run.n,
                     !r->max_worst && r->n_wrong ? " (--max-errors 0: none shown)"
                     : r->n_wrong > r->n_worst  ? " (the most confident shown)"
                                                : "");
            rc = write_contact_sheet(path, r, title);
        }
        if (atomic_group_end(rc == 0) < 0) rc = -1;
        if (rc == 0)
            log_printf(stderr, "Wrote %s_report.%s, %s_confusion.svg, %s_errors.svg\n", report,
                       r->fmt == FMT_JSON ? "json" : "txt", report, report);
    }
    free(cm);
    return rc;
}

void results_free(Results *r) {
    if (r->wrong) fclose(r->wrong);
    for (int i = 0; i < r->n_worst; i++) free(r->worst[i].path);
    free(r->worst), free(r->conf), free(r->probs), free(r->idx);
    memset(r, 0, sizeof *r);
}
