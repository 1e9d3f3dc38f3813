#include "progress.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_start(Progress *p, FILE *out, long total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->total = total;
    p->unit = unit ? unit : "step";
    p->tty = isatty(fileno(out));
    const char *e = getenv("VGGFT_PROGRESS");
    p->enabled = !(e && !strcmp(e, "0"));
    e = getenv("VGGFT_PROGRESS_INTERVAL");
    p->log_interval = e ? atof(e) : 15.0;
    p->t_start = progress_now();
    p->t_last = -1e9;
}

// Keras's ETA style: 1:02:03, 2:03, 45s.
static void format_seconds(double s, char *buf, size_t size) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
}

void progress_format(const Progress *p, long done, double elapsed, int final, const char *metrics, char *buf,
                     size_t size) {
    size_t n = 0;
#define ADD(...) n += (size_t)snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__)
    if (p->total > 0) {
        int digits = snprintf(NULL, 0, "%ld", p->total);
        ADD("%*ld/%ld [", digits, done, p->total);
        // Keras's Progbar: '=' * (filled-1), then '>' (or '=' when complete), then dots.
        const int width = 30;
        int filled = (int)((double)width * done / p->total);
        if (filled > width) filled = width;
        for (int i = 0; i < filled - 1; i++) ADD("=");
        if (filled > 0) ADD("%c", done < p->total ? '>' : '=');
        for (int i = filled; i < width; i++) ADD(".");
        ADD("]");
    } else {
        ADD("%ld %s", done, p->unit);
    }
    char t[32];
    double rate = elapsed > 0 ? done / elapsed : 0;
    if (final) {
        format_seconds(elapsed, t, sizeof t);
        ADD(" - %s", t);
    } else if (p->total > 0 && done > 0) {
        format_seconds((p->total - done) / rate, t, sizeof t);
        ADD(" - ETA: %s", t);
    }
    if (done > 0 && elapsed > 0) {
        if (rate >= 100) ADD(" - %.0f %s/s", rate, p->unit);
        else if (rate >= 1) ADD(" - %.1f %s/s", rate, p->unit);
        else ADD(" - %.2f s/%s", elapsed / done, p->unit);
    }
    if (metrics && *metrics) ADD(" - %s", metrics);
#undef ADD
}

static void draw(Progress *p, long done, double now, int final, const char *metrics) {
    char line[512];
    progress_format(p, done, now - p->t_start, final, metrics, line, sizeof line);
    if (p->tty) {
        int len = (int)strlen(line);
        // Pad with spaces to wipe a longer previous line.
        fprintf(p->out, "\r%s%*s", line, p->last_len > len ? p->last_len - len : 0, "");
        p->last_len = len;
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    p->t_last = now;
}

void progress_update_at(Progress *p, long done, const char *metrics, double now) {
    p->done = done;
    if (!p->enabled) return;
    double gap = p->tty ? 0.1 : p->log_interval;
    if (now - p->t_last >= gap) draw(p, done, now, 0, metrics);
}

void progress_update(Progress *p, long done, const char *metrics) {
    progress_update_at(p, done, metrics, progress_now());
}

void progress_finish(Progress *p, const char *metrics) {
    if (!p->enabled) return;
    draw(p, p->done, progress_now(), 1, metrics);
}
