// A Keras-style progress bar on stderr:
//   63/100 [==================>...........] - ETA: 4s - 41.2 img/s - loss: 0.4100 - acc: 0.8300
// On a terminal it is redrawn in place (at most 10 times a second). When the
// stream is not a terminal (batch jobs, log files) it prints a plain line at
// most every `log_interval` seconds and at the end, so logs stay readable.
#pragma once
#include <stdio.h>

typedef struct {
    FILE *out;
    long total;           // 0 or less: unknown (no bar, no ETA)
    const char *unit;     // "img", "step", "MB", ...
    int tty;              // redraw in place
    int enabled;
    double log_interval;  // seconds between lines when not a tty
    double t_start, t_last;
    long done;
    int last_len;         // length of the last in-place line (to blank leftovers)
} Progress;

// tty detection from `out`; VGGFT_PROGRESS_INTERVAL overrides the log
// interval (default 15 s); VGGFT_PROGRESS=0 disables the bar.
void progress_start(Progress *p, FILE *out, long total, const char *unit);
// metrics: "loss: 0.4100 - acc: 0.8300" or NULL.
void progress_update(Progress *p, long done, const char *metrics);
// Final line: "100/100 [====...] - 12s 8.3 img/s - loss: ..." and a newline.
void progress_finish(Progress *p, const char *metrics);

// The line for `done` items after `elapsed` seconds (no newline); exposed
// for tests and for callers that log it themselves.
void progress_format(const Progress *p, long done, double elapsed, int final, const char *metrics, char *buf,
                     size_t size);
// Same clock the bar uses (monotonic seconds).
double progress_now(void);
// Test hook: update as if the clock read `now`.
void progress_update_at(Progress *p, long done, const char *metrics, double now);
