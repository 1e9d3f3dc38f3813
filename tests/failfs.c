// LD_PRELOAD shim for tests: a file system that fails the way a sick NFS
// mount does, for folders whose path holds a given text.
//   FAILFS_OPENDIR=TEXT   opendir(path with TEXT) fails
//   FAILFS_READDIR=TEXT   readdir on such a folder fails after FAILFS_AFTER
//                         entries (default 2), as a listing broken off
//   FAILFS_OPEN=TEXT      open(path with TEXT) fails (a file)
//   FAILFS_ERRNO=N        the errno of each (default 5, EIO)
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int fail_errno(void) {
    const char *e = getenv("FAILFS_ERRNO");
    return e ? atoi(e) : EIO;
}

// The folders being listed that are to break off, and how far they got.
static DIR *broken[16];
static int seen[16];

DIR *opendir(const char *name) {
    static DIR *(*real)(const char *);
    if (!real) real = (DIR * (*)(const char *)) dlsym(RTLD_NEXT, "opendir");
    const char *o = getenv("FAILFS_OPENDIR"), *r = getenv("FAILFS_READDIR");
    if (o && *o && strstr(name, o)) {
        errno = fail_errno();
        return NULL;
    }
    DIR *d = real(name);
    if (d && r && *r && strstr(name, r))
        for (int i = 0; i < 16; i++)
            if (!broken[i]) {
                broken[i] = d, seen[i] = 0;
                break;
            }
    return d;
}

static int breaks(DIR *d) {
    const char *a = getenv("FAILFS_AFTER");
    for (int i = 0; i < 16; i++)
        if (broken[i] == d && seen[i]++ >= (a ? atoi(a) : 2)) return 1;
    return 0;
}

struct dirent *readdir(DIR *d) {
    static struct dirent *(*real)(DIR *);
    if (!real) real = (struct dirent * (*)(DIR *)) dlsym(RTLD_NEXT, "readdir");
    if (breaks(d)) {
        errno = fail_errno();
        return NULL;
    }
    return real(d);
}

struct dirent64 *readdir64(DIR *d) {
    static struct dirent64 *(*real)(DIR *);
    if (!real) real = (struct dirent64 * (*)(DIR *)) dlsym(RTLD_NEXT, "readdir64");
    if (breaks(d)) {
        errno = fail_errno();
        return NULL;
    }
    return real(d);
}

int open(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...);
    if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    const char *o = getenv("FAILFS_OPEN");
    if (o && *o && strstr(path, o)) {
        errno = fail_errno();
        return -1;
    }
    va_list ap;
    va_start(ap, flags);
    int mode = (flags & O_CREAT) ? va_arg(ap, int) : 0;
    va_end(ap);
    return real(path, flags, mode);
}

int closedir(DIR *d) {
    static int (*real)(DIR *);
    if (!real) real = (int (*)(DIR *))dlsym(RTLD_NEXT, "closedir");
    for (int i = 0; i < 16; i++)
        if (broken[i] == d) broken[i] = NULL;
    return real(d);
}
