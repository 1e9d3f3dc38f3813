#include "fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

FILE *atomic_open(AtomicFile *af, const char *path) {
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%d", path, (int)getpid());
    // Made new, never opened through what is already there: the name is
    // predictable, and a link planted at it on a shared folder must not turn
    // our write into one to the file it points at. What is there (a run of
    // an earlier process with our PID, or such a link) is removed first:
    // unlink removes a link, never its target.
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(af->tmp, flags, 0666);
    if (fd < 0 && errno == EEXIST && unlink(af->tmp) == 0) fd = open(af->tmp, flags, 0666);
    af->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!af->f) {
        err_set("%s: cannot write: %s", path, strerror(errno));
        if (fd >= 0) close(fd), unlink(af->tmp);
    }
    return af->f;
}

// The open group's files, written and synced, not yet renamed.
static struct {
    int open, n;
    char path[8][4096], tmp[8][4200];
} group;

void atomic_group_begin(void) { group.open = 1, group.n = 0; }

int atomic_group_end(int keep) {
    int rc = 0;
    for (int i = 0; i < group.n; i++) {
        if (keep && rc == 0 && rename(group.tmp[i], group.path[i]) < 0)
            rc = err_set("%s: cannot write: %s", group.path[i], strerror(errno));
        if (!keep || rc) unlink(group.tmp[i]);
    }
    group.open = 0, group.n = 0;
    return rc;
}

int atomic_commit(AtomicFile *af) {
    int bad = ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0;
    int e = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, e = errno;
    af->f = NULL;
    if (!bad && group.open) {  // renamed with the rest of the group
        if (group.n == 8) bad = 1, e = EMFILE;
        else {
            snprintf(group.path[group.n], sizeof group.path[0], "%s", af->path);
            snprintf(group.tmp[group.n], sizeof group.tmp[0], "%s", af->tmp);
            group.n++;
            return 0;
        }
    }
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

const char *temp_dir(void) {
    const char *d = getenv("TMPDIR");
    return d && d[0] ? d : "/tmp";
}

// The folders make_dirs created in this process, in order, for
// remove_created_dirs.
static char **created;
static int n_created, cap_created;
static int remove_at_exit;

// Deepest first; rmdir removes a folder only while it is empty.
static void remove_created(void) {
    while (remove_at_exit && n_created > 0) {
        char *d = created[--n_created];
        rmdir(d);
        free(d);
    }
}

void remove_created_dirs(void) {
    remove_at_exit = 1;
}

static void record_created(const char *dir) {
    // At exit: after the handlers registered later (fit's lock file beside
    // --out, removed at exit, lies in this folder).
    if (!cap_created) atexit(remove_created);
    if (n_created == cap_created) {
        int cap = cap_created ? 2 * cap_created : 16;
        char **grown = realloc(created, sizeof *created * (size_t)cap);
        if (!grown) return;  // not removed at exit: no harm
        created = grown, cap_created = cap;
    }
    if ((created[n_created] = strdup(dir))) n_created++;
}

// mkdir -p; with record, the folders it creates are remove_created_dirs's.
static int mkdirs(const char *path, int record) {
    char tmp[4096];
    if (!path[0]) return err_set("empty path");
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return err_set("%.64s...: path too long", path);
    int retries = 0;
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(tmp, 0775) == 0) {
            if (record) record_created(tmp);
        } else if (errno == ENOENT && retries++ < 5) {
            // A folder made a moment ago is gone: another run that made
            // it failed and removed it while empty (remove_created_dirs).
            // Start again from the top.
            *p = c;
            p = tmp;
            continue;
        } else if (errno != EEXIST) {
            return err_set("cannot create folder %s: %s", tmp, strerror(errno));
        }
        if (stat(tmp, &st) == 0 && !S_ISDIR(st.st_mode)) return err_set("%s exists and is not a folder", tmp);
        *p = c;
        if (!c) break;
    }
    return 0;
}

int make_dirs(const char *path) {
    return mkdirs(path, 1);
}

int make_lasting_dirs(const char *path) {
    return mkdirs(path, 0);
}

int make_parent_dirs(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    return make_dirs(dir);
}

int check_output_path(const char *opt, const char *path, const char *const *inputs, const char *const *names, int n) {
    size_t len = path ? strlen(path) : 0;
    if (!len) return err_set("%s: an empty path", opt);
    if (path[len - 1] == '/') return err_set("%s %s: names a folder; give a file name", opt, path);
    // Files are written beside it under longer names (NAME.confusion.svg,
    // then .tmp.PID while being written): a name with no room for those
    // would fail only after the work (an epoch, a whole folder).
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    const size_t longest = sizeof ".confusion.svg.tmp.4294967295" - 1;
    const size_t room = NAME_MAX - longest;
    if (strlen(base) > room)
        return err_set("%s %s: file name too long (%zu characters; at most %zu, for the files written beside it)", opt,
                       path, strlen(base), room);
    if (len + longest >= PATH_MAX)
        return err_set("%s %.80s...: path too long (%zu characters; at most %zu, for the files written beside it)",
                       opt, path, len, (size_t)PATH_MAX - 1 - longest);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return err_set("%s %s: is a folder; give a file name", opt, path);
        if (!S_ISREG(st.st_mode))
            return err_set("%s %s: exists and is not a regular file (a device, FIFO or socket): refusing to replace it",
                           opt, path);
        for (int i = 0; i < n; i++) {
            struct stat si;
            if (inputs[i] && stat(inputs[i], &si) == 0 && si.st_dev == st.st_dev && si.st_ino == st.st_ino)
                return err_set("%s %s: is this run's %s: writing it would destroy an input", opt, path, names[i]);
        }
    }
    if (make_parent_dirs(path) < 0) return err_prefix("%s: ", opt);
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    const char *dir = dirname(copy);
    if (access(dir, W_OK) != 0) return err_set("%s %s: cannot write in %s: %s", opt, path, dir, strerror(errno));
    return 0;
}

int check_output_outside(const char *opt, const char *path, const char *const *dirs, const char *const *dir_names,
                         int n) {
    for (int i = 0; i < n; i++)
        if (dirs[i] && path_within(path, dirs[i]))
            return err_set("%s %s: lies inside %s %s: writing it there would damage that folder; write it elsewhere",
                           opt, path, dir_names[i], dirs[i]);
    return 0;
}

void remove_stale(const char *path, const char *infix, void (*remove_fn)(const char *)) {
    char copy[4096], copy2[4096];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(copy2, sizeof copy2, "%s", path);
    const char *dir = dirname(copy), *base = basename(copy2);
    char prefix[4200];
    int pl = snprintf(prefix, sizeof prefix, "%s%s", base, infix);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, (size_t)pl)) continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || *end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still run
        char full[8400];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        remove_fn(full);
    }
    closedir(d);
}

static void unlink_quietly(const char *p) { unlink(p); }

void atomic_remove_stale(const char *path) { remove_stale(path, ".tmp.", unlink_quietly); }


void path_absolute(const char *path, char *out, size_t size) {
    char head[PATH_MAX], tail[PATH_MAX] = "";
    snprintf(head, sizeof head, "%s", path);
    for (;;) {
        char real[PATH_MAX];
        if (realpath(head, real)) {
            snprintf(out, size, "%s%s", real, tail);
            return;
        }
        if (!strcmp(head, ".") || !strcmp(head, "/")) {  // a working directory since removed
            snprintf(out, size, "%s", path);
            return;
        }
        char *slash = strrchr(head, '/');
        char t[PATH_MAX];
        snprintf(t, sizeof t, "/%s%s", slash ? slash + 1 : head, tail);
        snprintf(tail, sizeof tail, "%s", t);
        if (!slash) snprintf(head, sizeof head, ".");
        else if (slash == head) snprintf(head, sizeof head, "/");
        else *slash = '\0';
    }
}

// path with ".", ".." and repeated slashes removed by text alone (no
// links followed), prefixed with the working directory when relative and
// known; a relative result when it is not (both sides of a comparison are
// then relative to the same directory).
static void path_lexical(const char *path, char *out, size_t size) {
    char buf[2 * PATH_MAX], cwd[PATH_MAX];
    if (path[0] != '/' && getcwd(cwd, sizeof cwd)) snprintf(buf, sizeof buf, "%s/%s", cwd, path);
    else snprintf(buf, sizeof buf, "%s", path);
    size_t n = 0;
    const int absolute = buf[0] == '/';
    if (size) out[0] = '\0';
    for (char *save = NULL, *part = strtok_r(buf, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, ".")) continue;
        if (!strcmp(part, "..")) {  // up one (a leading ".." of a relative path stays)
            char *last = strrchr(out, '/');
            if (n && strcmp(last ? last + 1 : out, "..")) {
                n = last ? (size_t)(last - out) : 0;
                out[n] = '\0';
                continue;
            }
        }
        int w = snprintf(out + n, size - n, "%s%s", n || absolute ? "/" : "", part);
        if (w < 0 || (size_t)w >= size - n) break;
        n += (size_t)w;
    }
    if (!n && size > 1) snprintf(out, size, "%s", absolute ? "/" : ".");
}

const char *path_canonical(const char *path, char *out) {
    if (!realpath(path, out)) path_lexical(path, out, PATH_MAX);
    return out;
}

static int within(const char *p, const char *d) {
    size_t n = strlen(d);
    if (!strcmp(d, "/")) return p[0] == '/';
    if (!strcmp(d, ".")) return p[0] != '/';
    return !strncmp(p, d, n) && (p[n] == '/' || p[n] == '\0');
}

int path_within(const char *path, const char *dir) {
    char p[PATH_MAX], d[PATH_MAX];
    // As written: a class folder that is a link is still inside its folder.
    path_lexical(path, p, sizeof p);
    path_lexical(dir, d, sizeof d);
    if (within(p, d)) return 1;
    // As resolved: the folder behind a link, "..", a second name.
    if (!realpath(dir, d)) return 0;
    path_absolute(path, p, sizeof p);
    if (within(p, d)) return 1;
    // Or inside the folder a linked subfolder of dir points to (a class
    // folder linked from elsewhere).
    DIR *dd = opendir(dir);
    int inside = 0;
    for (struct dirent *e; dd && !inside && (e = readdir(dd));) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        char sub[2 * PATH_MAX], real[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISLNK(st.st_mode) && realpath(sub, real)) inside = within(p, real);
    }
    if (dd) closedir(dd);
    return inside;
}
