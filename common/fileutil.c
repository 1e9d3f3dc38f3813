#include "fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

FILE *atomic_open(AtomicFile *af, const char *path) {
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%d", path, (int)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) err_set("%s: cannot write: %s", path, strerror(errno));
    return af->f;
}

int atomic_commit(AtomicFile *af) {
    int bad = ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0;
    int e = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, e = errno;
    af->f = NULL;
    if (!bad && rename(af->tmp, af->path) < 0) bad = 1, e = errno;
    if (bad) {
        unlink(af->tmp);
        return err_set("%s: cannot write: %s", af->path, strerror(e ? e : EIO));
    }
    // The rename itself reaches the disk with the folder's entry.
    char dir[4096];
    const char *slash = strrchr(af->path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - af->path) + (slash == af->path) : 1,
             slash ? af->path : ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    unlink(af->tmp);
}

int make_dirs(const char *path) {
    char tmp[4096];
    if (!path[0]) return err_set("empty path");
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return err_set("%.64s...: path too long", path);
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(tmp, 0775) < 0 && errno != EEXIST)
            return err_set("cannot create folder %s: %s", tmp, strerror(errno));
        if (stat(tmp, &st) == 0 && !S_ISDIR(st.st_mode)) return err_set("%s exists and is not a folder", tmp);
        *p = c;
        if (!c) break;
    }
    return 0;
}

int make_parent_dirs(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    return make_dirs(dir);
}
