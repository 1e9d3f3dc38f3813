// A Keras-style progress bar on stderr:
//   63/100 [==================>...........] - ETA: 4s - 41.2 img/s - loss: 0.4100 - acc: 0.8300
// On a terminal it is redrawn in place (at most 10 times a second). When the
// stream is not a terminal (batch jobs, log files) it prints a plain line at
// most every `log_interval` seconds and at the end, each starting with a
// timestamp (log_stamp), so logs stay readable and show when a job slowed.
//
// Rates and ETAs come from work this run did: items the caller marks as
// free (records found in the cache, steps of a resumed epoch) count towards
// done but not towards the rate, and nothing is estimated before
// PROGRESS_MIN_SECONDS of work (a handful of fast items says nothing about
// the rest). The ETA is what is left (total - done) at that rate.
#pragma once
#include <stdio.h>

// Seconds of this run's work before a rate or an ETA is shown, and before
// the first line of a log (a job's first seconds are start-up, not speed).
#define PROGRESS_MIN_SECONDS 1.0

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
    int bar_width;        // a terminal's redrawn bar: the narrowest it had to be so far (progress.c)
    // Set by the caller: how many of `done` cost no work now (cached
    // records, the steps a resumed epoch had done), and how many seconds of
    // the elapsed time an earlier run spent (t_start was moved back by them).
    long free_items;
    double t_before;
} Progress;

// tty detection from `out`; VGGFT_PROGRESS_INTERVAL overrides the log
// interval (default 15 s); VGGFT_PROGRESS=0 disables the bar.
void progress_start(Progress *p, FILE *out, long total, const char *unit);
// Reads VGGFT_PROGRESS and VGGFT_PROGRESS_INTERVAL now, for their warnings
// (one each, on stderr) to come at a tool's start (cli_parse calls it).
void progress_check_env(void);
// metrics: "loss: 0.4100 - acc: 0.8300" or NULL. In a log (not a
// terminal) the update that reaches the total writes nothing: call
// progress_finish for the last line.
void progress_update(Progress *p, long done, const char *metrics);
// Final line: "100/100 [====...] - 12s 8.3 img/s - loss: ..." and a newline.
void progress_finish(Progress *p, const char *metrics);
// The bar at its count with other metrics, for work after the items it
// counts (an epoch's validation after its last step: "... - validating
// 40/153 - loss: 0.41"): drawn when progress_update would draw (a terminal
// at most 10 times a second, a log every log_interval seconds once
// PROGRESS_MIN_SECONDS have passed), also at the total, without an ETA or
// a rate (the time after the counted items would lower it).
void progress_status(Progress *p, const char *metrics);
// Test hook: progress_status as if the clock read `now`.
void progress_status_at(Progress *p, const char *metrics, double now);
// The end of a bar whose result the caller prints on a line of its own: a
// terminal's bar erased (its line blanked, the cursor at its start); in a
// log, the finished line (progress_finish's) if the bar wrote any line, so
// that the log does not stop at "20/153", else nothing.
void progress_close(Progress *p, const char *metrics);

// The line for `done` items after `elapsed` seconds (no newline); exposed
// for tests and for callers that log it themselves.
void progress_format(const Progress *p, long done, double elapsed, int final, const char *metrics, char *buf,
                     size_t size);
// Same clock the bar uses (monotonic seconds).
double progress_now(void);
// Test hook: update as if the clock read `now`.
void progress_update_at(Progress *p, long done, const char *metrics, double now);

// --- log lines ----------------------------------------------------------------
// Writes "2026-11-29T22:17:07 " (ISO 8601, local time, seconds) when out is
// not a terminal: every line a tool writes to a job's log starts with one.
// Nothing on a terminal (its redrawn bar and messages stay as Keras's).
void log_stamp(FILE *out);
// A log line (warning, note, "Epoch 3/10", a stop message): the stamp, then
// the text. Leading newlines, which end a terminal's redrawn bar, are
// written only on a terminal. Flushes out.
void log_printf(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// On a terminal, the line a bar is drawn on blanked ("\r", erase to the
// end of the line) for a warning to take its place (the bar is drawn again
// below it at its next update; no stale copy is left above the warning);
// nothing in a log. Harmless with no bar on the line: every other line a
// tool writes ends with its newline.
void log_wipe_line(FILE *out);
// The stamp text for the given time (buf: at least 21 bytes); for tests.
void log_stamp_format(long t, char *buf, size_t size);

// A metric's value as Keras's progress bar prints it: %.4f when |v| > 1e-3,
// else %.4e ("1.6900e-05"; an accuracy of 0 as "0.0000e+00"), from
// keras/src/utils/progbar.py; a diverging loss in full, all its digits.
// Returns buf (KERAS_VALUE_MAX bytes: %.4f of the largest float fits).
#define KERAS_VALUE_MAX 48
const char *keras_value(double v, char buf[KERAS_VALUE_MAX]);
