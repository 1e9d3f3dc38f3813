#include "error.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>

static _Thread_local char err_buf[ERR_MSG_MAX];

// A message cut at the buffer's end says so.
static void mark_cut(int n) {
    if (n >= (int)sizeof err_buf) memcpy(err_buf + sizeof err_buf - 4, "...", 4);
}

int err_set(const char *fmt, ...) {
    // Formatted apart first: an argument may be err_buf itself.
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    memcpy(err_buf, msg, len);
    err_buf[len] = '\0';
    mark_cut(n);
    return -1;
}

int err_prefix(const char *fmt, ...) {
    char prefix[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return err_set("%s%s", prefix, err_buf);
}

const char *err_msg(void) { return err_buf; }

void err_clear(void) { err_buf[0] = '\0'; }

void err_keep(ErrKept *k) { memcpy(k->msg, err_buf, strlen(err_buf) + 1); }

int err_restore(const ErrKept *k) {
    memcpy(err_buf, k->msg, strlen(k->msg) + 1);
    return -1;
}

// The system's errors (err_is_system): resources, I/O, and the network
// under a network file system (NFS, a FUSE or sshfs mount whose server
// went away).
static const int system_codes[] = {ENOMEM,   EMFILE,       ENFILE,       ENOBUFS,    EAGAIN,
                                   EIO,      ESTALE,       ETIMEDOUT,    ENOLINK,    ENOTCONN,
                                   EREMOTEIO, EHOSTDOWN,   EHOSTUNREACH, ECONNABORTED, ECONNRESET,
                                   ENETDOWN, ENETUNREACH};

int err_errno_is_system(int e) {
    for (size_t i = 0; i < sizeof system_codes / sizeof system_codes[0]; i++)
        if (e == system_codes[i]) return 1;
    return 0;
}

// what, as a reason in msg: at its start or after ": " (not inside the path
// a message starts with: "data/Input/output error.jpg: ...: Permission
// denied" is the file's fault), and, when whole, ending the message or a
// clause.
static int says_reason(const char *msg, const char *what, int whole) {
    size_t n = strlen(what);
    for (const char *p = msg; (p = strstr(p, what)); p++)
        if ((p == msg || (p - msg >= 2 && p[-2] == ':' && p[-1] == ' ')) && (!whole || strchr(" ;,:)", p[n])))
            return 1;
    return 0;
}

int err_is_system(const char *msg) {
    if (!msg) return 0;
    if (err_is_out_of_memory(msg)) return 1;
    for (size_t i = 0; i < sizeof system_codes / sizeof system_codes[0]; i++)
        if (says_reason(msg, strerror(system_codes[i]), 1)) return 1;
    return 0;
}

int err_is_out_of_memory(const char *msg) {
    static const char *const says[] = {"out of memory", "Cannot allocate memory", "not enough memory",
                                       "Insufficient memory"};
    for (size_t i = 0; msg && i < sizeof says / sizeof says[0]; i++)
        if (says_reason(msg, says[i], 0)) return 1;
    return 0;
}
