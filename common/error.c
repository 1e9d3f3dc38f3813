#include "error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[ERR_MSG_MAX];

// A message cut at the buffer's end says so.
static void mark_cut(int n) {
    if (n >= (int)sizeof err_buf) memcpy(err_buf + sizeof err_buf - 4, "...", 4);
}

int err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mark_cut(vsnprintf(err_buf, sizeof err_buf, fmt, ap));
    va_end(ap);
    return -1;
}

int err_prefix(const char *fmt, ...) {
    char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    mark_cut(snprintf(err_buf, sizeof err_buf, "%s%s", prefix, old));
    return -1;
}

const char *err_msg(void) { return err_buf; }

void err_clear(void) { err_buf[0] = '\0'; }

int err_is_out_of_memory(const char *msg) {
    static const char *const says[] = {"out of memory", "Cannot allocate memory", "not enough memory",
                                       "Insufficient memory"};
    for (size_t i = 0; msg && i < sizeof says / sizeof says[0]; i++)
        if (strstr(msg, says[i])) return 1;
    return 0;
}
