#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"  // env_flag

// Seconds between log lines when not on a terminal (VGGFT_PROGRESS_INTERVAL).
#define PROGRESS_LOG_INTERVAL 15.0

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// VGGFT_PROGRESS_INTERVAL: seconds between log lines, a positive number;
// anything else ("abc", 0, -1, "5s") is ignored with one warning, keeping
// the default, rather than writing a line per step into a job's log.
static double progress_env_interval(void) {
    static int warned;
    const char *e = getenv("VGGFT_PROGRESS_INTERVAL");
    if (!e) return PROGRESS_LOG_INTERVAL;
    char *end;
    double v = strtod(e, &end);
    if (end != e && !*end && v > 0 && v < 1e9) return v;
    if (!warned) {
        warned = 1;
        log_printf(stderr, "warning: VGGFT_PROGRESS_INTERVAL=%s is not a positive number of seconds: using %g\n", e,
                   PROGRESS_LOG_INTERVAL);
    }
    return PROGRESS_LOG_INTERVAL;
}

void progress_check_env(void) {
    env_flag("VGGFT_PROGRESS", 1);
    progress_env_interval();
}

// Keras's bar width.
#define BAR_WIDTH 30

void progress_start(Progress *p, FILE *out, long total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->total = total;
    p->unit = unit ? unit : "step";
    p->tty = isatty(fileno(out));
    p->enabled = env_flag("VGGFT_PROGRESS", 1);
    p->log_interval = progress_env_interval();
    p->t_start = progress_now();
    p->t_last = -1e9;
    p->bar_width = BAR_WIDTH;
}

// Keras's ETA style: 1:02:03, 2:03, 45s.
static void format_seconds(double s, char *buf, size_t size) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
}

// progress_format with a bar `width` characters wide (0: no bar); without
// the rate when !with_rate (progress_status: the time after the counted
// items would lower it).
static void format_line(const Progress *p, long done, double elapsed, int final, int with_rate, const char *metrics,
                        int width, char *buf, size_t size) {
    size_t n = 0;
#define ADD(...) n += (size_t)snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__)
    if (p->total > 0) {
        int digits = snprintf(NULL, 0, "%ld", p->total);
        ADD("%*ld/%ld", digits, done, p->total);
        if (width > 0) {
            // Keras's Progbar: '=' * (filled-1), then '>' (or '=' when complete), then dots.
            int filled = (int)((double)width * done / p->total);
            if (filled > width) filled = width;
            ADD(" [");
            for (int i = 0; i < filled - 1; i++) ADD("=");
            if (filled > 0) ADD("%c", done < p->total ? '>' : '=');
            for (int i = filled; i < width; i++) ADD(".");
            ADD("]");
        }
    } else {
        ADD("%ld %s", done, p->unit);
    }
    char t[32];
    // The rate of this run's work only: free items (cached, done by an
    // earlier run) and an earlier run's seconds would inflate it.
    long work = done - p->free_items;
    double work_secs = elapsed - p->t_before;
    // A final line's rate from a tenth of a second or from 10 items at
    // least: one image skipped in half a millisecond is no "1940 img/s",
    // but a whole epoch of 150 steps in 0.09 s is 1,700 step/s (Keras
    // gives every epoch's time per step).
    int final_ok = work_secs >= 0.1 || work >= 10;
    int rate_ok = with_rate && work > 0 && work_secs > 0 && (final ? final_ok : work_secs >= PROGRESS_MIN_SECONDS);
    double rate = rate_ok ? work / work_secs : 0;
    if (final) {
        format_seconds(elapsed, t, sizeof t);
        ADD(" - %s", t);
    } else if (p->total > 0 && rate_ok && done < p->total) {
        format_seconds((p->total - done) / rate, t, sizeof t);
        ADD(" - ETA: %s", t);
    }
    if (rate_ok) {
        if (rate >= 100) ADD(" - %.0f %s/s", rate, p->unit);
        else if (rate >= 1) ADD(" - %.1f %s/s", rate, p->unit);
        else ADD(" - %.2f s/%s", work_secs / work, p->unit);
    }
    if (metrics && *metrics) ADD(" - %s", metrics);
#undef ADD
}

void progress_format(const Progress *p, long done, double elapsed, int final, const char *metrics, char *buf,
                     size_t size) {
    format_line(p, done, elapsed, final, 1, metrics, BAR_WIDTH, buf, size);
}

// Cuts line to at most room characters at the end of a " - " field, so
// that no figure is shown cut short ("loss: 0" of "loss: 0.4100"); a first
// field longer than room is cut where it must be.
static void cut_fields(char *line, size_t room) {
    if (strlen(line) <= room) return;
    size_t keep = room;
    for (char *d = strstr(line, " - "); d && (size_t)(d - line) <= room; d = strstr(d + 3, " - ")) keep = (size_t)(d - line);
    line[keep] = '\0';
}

static void draw_line(Progress *p, long done, double now, int final, int with_rate, const char *metrics) {
    char line[512];
    // A line redrawn in place must fit the terminal: one that wraps is
    // redrawn below itself (\r goes back to the start of the last row), and
    // every redraw scrolls. The bar gives up its width first (down to 10,
    // then it goes), and keeps the narrowest width it had (no bar that
    // widens and narrows as the figures change); then whole fields are
    // dropped from the end. A final line, not redrawn, keeps all its figures
    // and Keras's bar.
    size_t room = 0;
    struct winsize ws;
    if (p->tty && !final && ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) room = ws.ws_col - 1u;
    int width = room ? p->bar_width : BAR_WIDTH;
    format_line(p, done, now - p->t_start, final, with_rate, metrics, width, line, sizeof line);
    if (room && strlen(line) > room) {
        const int w = width - (int)(strlen(line) - room);
        width = w >= 10 ? w : 0;
        format_line(p, done, now - p->t_start, final, with_rate, metrics, width, line, sizeof line);
        cut_fields(line, room);
    }
    if (room) p->bar_width = width;
    if (p->tty) {
        int len = (int)strlen(line);
        // Pad with spaces to wipe a longer previous line.
        fprintf(p->out, "\r%s%*s", line, p->last_len > len ? p->last_len - len : 0, "");
        p->last_len = len;
        if (final) fputc('\n', p->out);
    } else {
        log_stamp(p->out);
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    p->t_last = now;
}

static void draw(Progress *p, long done, double now, int final, const char *metrics) {
    draw_line(p, done, now, final, 1, metrics);
}

void progress_update_at(Progress *p, long done, const char *metrics, double now) {
    p->done = done;
    if (!p->enabled) return;
    if (p->tty) {
        if (now - p->t_last >= 0.1) draw(p, done, now, 0, metrics);
        return;
    }
    // A log gets no line before there is something to report: without this
    // every epoch of a fast run wrote its "1/15 [>....]" line. Nor one at
    // the total: progress_finish writes that one (with the time taken).
    if (p->total > 0 && done >= p->total) return;
    if (now - p->t_last >= p->log_interval && now - p->t_start - p->t_before >= PROGRESS_MIN_SECONDS)
        draw(p, done, now, 0, metrics);
}

void progress_update(Progress *p, long done, const char *metrics) {
    progress_update_at(p, done, metrics, progress_now());
}

void progress_finish(Progress *p, const char *metrics) {
    if (!p->enabled) return;
    draw(p, p->done, progress_now(), 1, metrics);
}

void progress_status_at(Progress *p, const char *metrics, double now) {
    if (!p->enabled) return;
    if (p->tty ? now - p->t_last >= 0.1
               : now - p->t_last >= p->log_interval && now - p->t_start - p->t_before >= PROGRESS_MIN_SECONDS)
        draw_line(p, p->done, now, 0, 0, metrics);
}

void progress_status(Progress *p, const char *metrics) {
    progress_status_at(p, metrics, progress_now());
}

void progress_close(Progress *p, const char *metrics) {
    if (!p->enabled) return;
    if (!p->tty) {
        if (p->t_last > p->t_start) draw(p, p->done, progress_now(), 1, metrics);  // it wrote a line: end it
        return;
    }
    if (!p->last_len) return;
    log_wipe_line(p->out);
    fflush(p->out);
    p->last_len = 0;
}

void log_stamp_format(long t, char *buf, size_t size) {
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
}

void log_stamp(FILE *out) {
    if (isatty(fileno(out))) return;
    char buf[40];
    log_stamp_format((long)time(NULL), buf, sizeof buf);
    fprintf(out, "%s ", buf);
}

void log_wipe_line(FILE *out) {
    if (isatty(fileno(out))) fputs("\r\033[K", out);
}

void log_printf(FILE *out, const char *fmt, ...) {
    char text[8192];  // messages name paths (PATH_MAX 4096) and more
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    const char *t = text;
    if (!isatty(fileno(out))) {
        while (*t == '\n') t++;
        log_stamp(out);
    }
    fputs(t, out);
    fflush(out);
}

const char *keras_value(double v, char buf[KERAS_VALUE_MAX]) {
    snprintf(buf, KERAS_VALUE_MAX, fabs(v) > 1e-3 ? "%.4f" : "%.4e", v);
    return buf;
}
