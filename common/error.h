// Error reporting for library code.
//
// Library functions never exit or abort: they return -1 (or NULL) and leave a
// message here that names the file, layer or value at fault. Executables print
// it as "NAME: error: MESSAGE". The buffer is thread-local, so worker threads
// (image decoding, decompression) report their own errors.
#pragma once
#include <stdarg.h>

// Room for a message naming three paths of PATH_MAX (4096) bytes; a longer
// one ends in "...".
#define ERR_MSG_MAX 12288

// Sets the message and returns -1, so callers can write `return err_set(...)`.
// Its arguments may include err_msg() itself: `err_set("%s (hint)", err_msg())`.
int err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prepends context to the current message ("reading x.h5: " + old message).
// Returns -1 like err_set.
int err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The last message set in this thread ("" if none).
const char *err_msg(void);
void err_clear(void);
// The message kept across cleanup code that may set its own:
//   ErrKept k; err_keep(&k); thing_free(t); return err_restore(&k);
typedef struct {
    char msg[ERR_MSG_MAX];
} ErrKept;
void err_keep(ErrKept *k);
// Sets the kept message back; returns -1 like err_set.
int err_restore(const ErrKept *k);
// 1 when msg says memory could not be had (ours "out of memory", strerror's
// "Cannot allocate memory", zstd's "not enough memory", libjpeg's
// "Insufficient memory"): the machine's fault, not the input's.
int err_is_out_of_memory(const char *msg);
// 1 when msg says an operation failed for the system's sake, not the
// file's: out of memory (above), out of file descriptors (EMFILE, ENFILE),
// buffers (ENOBUFS) or threads (EAGAIN), an I/O error (EIO), a stale NFS
// handle (ESTALE), a timeout or a lost link (ETIMEDOUT, ENOLINK), as
// strerror words them. The tools stop on such an image rather than skip it
// (and drop its record): a rerun reads it.
int err_is_system(const char *msg);
// The same for an errno value (a folder that cannot be listed).
int err_errno_is_system(int e);
