#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT
#include "blas_setup.h"

#include <cblas.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "error.h"
#include "parallel.h"

// Provided by OpenBLAS but not declared in every cblas.h.
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

static char blas_note[160];  // why the kernel is what it is

// --- under an address-space limit ----------------------------------------------------
//
// OpenBLAS 0.3.21 (Debian 12) takes a buffer of BLAS_BUFFER_BYTES of address
// space for each worker thread as it starts it (when the library loads: one
// per core, or OPENBLAS_NUM_THREADS) and for each calling thread at its
// first call (kept in its pool for the next calls). Under an address-space
// limit (ulimit -v, RLIMIT_AS: some clusters set one for every job) that
// leaves no room, blas_memory_alloc retries for ever, ignoring SIGTERM, and
// the library's shutdown then waits for the stuck worker: the process never
// ends, not even `--version` (OpenMathLib/OpenBLAS#5289, fixed in 0.3.30);
// on 2 cores that was below about 300 MB (64 cores: 8.7 GB by the same
// sum). So under such a limit:
//   - the buffers are planned into half of the address space left at start:
//     OpenBLAS threads fewer if need be (the library restarted with
//     OPENBLAS_NUM_THREADS, as for OPENBLAS_CORETYPE; a user's own setting
//     too: a hang is worse);
//   - the main thread's buffer is taken at once (a warm-up product), so that
//     no later call allocates one after the program's own memory has used up
//     the room;
//   - only the main thread calls BLAS (blas_main_thread_only: dense.c's din
//     blocks run one after the other, forward.c runs images side by side only
//     where no layer needs BLAS), the same bits as on the pool;
//   - with no room even for that one buffer, nothing calls BLAS: train and
//     finetune stop at once with the reason (blas_check_usable), and the
//     frozen direct convolution runs on our own product (blas_usable).
#define BLAS_BUFFER_BYTES (128LL << 20)  // BUFFER_SIZE, 32 << 22 on x86-64

static int blas_buffers_fit = -1;  // buffers the limit leaves room for; -1: no limit
static int blas_reserved;          // the main thread's buffer is taken

// The most OpenBLAS threads: its workers and the main thread, one buffer
// each (0: no limit, no cap).
static int blas_thread_cap(void) { return blas_buffers_fit < 0 ? 0 : blas_buffers_fit > 1 ? blas_buffers_fit : 1; }

// RLIMIT_AS in bytes, -1 when there is none.
static long long address_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return -1;
    return (long long)rl.rlim_cur;
}

// Address space left under RLIMIT_AS in bytes, -1 when there is no limit.
// System calls only (no stdio, no malloc): blas_preinit runs it before libc
// is initialised.
static long long address_room(void) {
    long long limit = address_limit();
    if (limit < 0) return -1;
    long long pages = 0;
    char text[64];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);  // first field: the process's size, in pages
    ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0) close(fd);
    for (ssize_t i = 0; i < n && text[i] >= '0' && text[i] <= '9'; i++) pages = pages * 10 + (text[i] - '0');
    long long room = limit - pages * sysconf(_SC_PAGESIZE);
    return room > 0 ? room : 0;
}

// One buffer and the stack of the thread that holds it.
static long long bytes_per_buffer(void) {
    struct rlimit st;
    long long stack = 8LL << 20;
    if (getrlimit(RLIMIT_STACK, &st) == 0 && st.rlim_cur != RLIM_INFINITY) stack = (long long)st.rlim_cur;
    return BLAS_BUFFER_BYTES + stack;
}

// The buffers that fit in half of the address space left (0: no room for
// one), -1 without a limit.
static long long buffers_fitting(void) {
    long long room = address_room();
    if (room < 0) return -1;
    long long fit = room / 2 / bytes_per_buffer();
    return fit > 4096 ? 4096 : fit;
}

// --- before the libraries start ---------------------------------------------------------
//
// Under an address-space limit (ulimit -v) two things are settled before
// main, where blas_setup would come too late:
//   - OpenBLAS's constructor starts its worker threads (one per core, or
//     OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS, OMP_NUM_THREADS); on a
//     many-core node their stacks alone can exceed the limit: pthread_create
//     fails and OpenBLAS raise(SIGINT)s, so the tool died with exit 130
//     before main ("blas_thread_init: pthread_create failed for thread 12 of
//     16", a 16-core GPU node under ulimit -v 400 MiB; on 2 cores with
//     ulimit -s 256 MiB). OPENBLAS_NUM_THREADS is capped to the buffers
//     that fit, counted as blas_setup counts them (which counts again
//     after OpenBLAS took its buffers: see below).
//   - glibc gives each thread that mallocs an arena of its own, 64 MiB of
//     address space reserved apiece (up to 8 per core): on 16 cores train's
//     threads took a limit that 2 cores ran within. MALLOC_ARENA_MAX=1
//     unless the user set it (2 still failed at 400 MiB with --threads 16;
//     small blocks stay lock-free in each thread's tcache; mallopt in main
//     is too late: the limit on arenas is fixed when the first thread needs
//     one, OpenBLAS's threads before main).
// An executable's .preinit_array runs before any library's constructor (a
// statically linked OpenBLAS's too) but before libc is initialised: no
// getenv, setenv or malloc (a variable set there is lost). So blas_preinit
// reads the environment from its envp argument and re-executes the program
// at once with the variables set, and VGGFT_PREINIT saying what the user
// had ("PID|<a or ->|<= or - or v:VALUE>": this process's id, MALLOC_ARENA_MAX
// set by us or not; OPENBLAS_NUM_THREADS untouched, unset before, or its
// value), which blas_setup puts back for children. blas_setup may restart
// once more: it counts the room again after OpenBLAS took its buffers, and
// caps extract and predict, which do without BLAS, at one thread.
#define PREINIT_MAX_ENV 8192

// The value of NAME in envp, or NULL.
static const char *env_in(char **envp, const char *name) {
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

// A positive decimal, else 0 (OpenBLAS reads the variables so: atoi, <= 0 ignored).
static long positive(const char *s) {
    long v = 0;
    while (s && *s >= '0' && *s <= '9' && v < 1000000) v = v * 10 + (*s++ - '0');
    return v;
}

// n in decimal at p (no libc formatting, see below); returns the end.
static char *put_decimal(char *p, long n) {
    char digits[24];
    int d = 0;
    for (long v = n; v > 0 || d == 0; v /= 10) digits[d++] = (char)('0' + v % 10);
    while (d > 0) *p++ = digits[--d];
    *p = '\0';
    return p;
}

// 1 when /proc/self/exe is this program: not when it was started through
// the dynamic loader (`ld-linux-x86-64.so.2 build/train ...`, which some
// module systems and wrappers do): /proc/self/exe is then the loader, which
// would take the tool's options for its own. AT_BASE, the loader's address,
// is 0 then (the kernel loaded no interpreter).
static int can_reexec(char **argv) { return argv && argv[0] && getauxval(AT_BASE) != 0; }

static void blas_preinit(int argc, char **argv, char **envp) {
    (void)argc;
    long long fit = buffers_fitting();
    if (fit < 0 || !can_reexec(argv)) return;  // no limit (every start without one ends here)
    // Done already in this process (the restart keeps the pid; a child
    // started by a program that never calls blas_setup, tests/all say,
    // inherits the marker but not the pid).
    char pid[24];
    put_decimal(pid, (long)getpid());
    const char *done = env_in(envp, "VGGFT_PREINIT");
    if (done && !strncmp(done, pid, strlen(pid)) && done[strlen(pid)] == '|') return;
    const long cap = fit > 1 ? (long)fit : 1;
    // The threads OpenBLAS 0.3.21 will start (blas_get_cpu_number): its
    // variables, at most the CPUs this process may run on.
    static cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 4096;
    const char *own = env_in(envp, "OPENBLAS_NUM_THREADS");
    long asked = positive(own);
    if (!asked) asked = positive(env_in(envp, "GOTO_NUM_THREADS"));
    if (!asked) asked = positive(env_in(envp, "OMP_NUM_THREADS"));
    long threads = asked && asked < cpus ? asked : cpus;
    static char keep[340];
    int set_threads = threads > cap;
    if (set_threads && own && strlen(own) > sizeof keep - 64) set_threads = 0;  // not a count OpenBLAS reads
    const int set_arenas = !env_in(envp, "MALLOC_ARENA_MAX");
    if (!set_threads && !set_arenas) return;
    static char *env[PREINIT_MAX_ENV + 4];
    static char count[48];
    int n = 0;
    for (char **e = envp; *e; e++) {
        if (set_threads && !strncmp(*e, "OPENBLAS_NUM_THREADS=", 21)) continue;
        if (!strncmp(*e, "VGGFT_PREINIT=", 14)) continue;  // a parent's
        if (n == PREINIT_MAX_ENV) {
            static const char say[] = "warning: more than 8192 environment variables: OpenBLAS's threads and "
                                      "malloc's arenas are not planned for the address-space limit (ulimit -v)\n";
            (void)!write(STDERR_FILENO, say, sizeof say - 1);  // (stderr closed: nothing to do)
            return;
        }
        env[n++] = *e;
    }
    // Composed by hand: snprintf may need what libc sets up later.
    strcpy(keep, "VGGFT_PREINIT=");
    strcat(keep, pid);
    strcat(keep, set_arenas ? "|a|" : "|-|");
    strcat(keep, !set_threads ? "=" : own ? "v:" : "-");
    if (set_threads && own) strcat(keep, own);
    env[n++] = keep;
    if (set_arenas) env[n++] = (char *)"MALLOC_ARENA_MAX=1";
    if (set_threads) {
        strcpy(count, "OPENBLAS_NUM_THREADS=");
        put_decimal(count + strlen(count), cap);
        env[n++] = count;
    }
    env[n] = NULL;
    execve("/proc/self/exe", argv, env);
    // exec failed: carry on (OpenBLAS may fail as it would have).
}

__attribute__((section(".preinit_array"), used)) static void (*const blas_preinit_entry)(int, char **,
                                                                                        char **) = blas_preinit;

// Sets NAME back to what a marker kept: "v:VALUE" (that value) or "-"
// (unset); "=" (or anything else) leaves it.
static void put_back(const char *name, const char *kept) {
    char value[300];
    if (!strncmp(kept, "v:", 2)) snprintf(value, sizeof value, "%s", kept + 2), setenv(name, value, 1);
    else if (kept[0] == '-') unsetenv(name);
}

// blas_setup, last: the user's environment back (see blas_preinit).
static void restore_preinit_env(void) {
    const char *marker = getenv("VGGFT_PREINIT");
    if (!marker) return;
    char keep[340];
    snprintf(keep, sizeof keep, "%s", marker);
    unsetenv("VGGFT_PREINIT");
    // PID|ARENAS|THREADS; another process's (a parent that never reached
    // blas_setup) says nothing about this one.
    char *a = strchr(keep, '|'), *t = a ? strchr(a + 1, '|') : NULL;
    if (!a || strtol(keep, NULL, 10) != (long)getpid()) return;
    if (a[1] == 'a') unsetenv("MALLOC_ARENA_MAX");
    if (t) put_back("OPENBLAS_NUM_THREADS", t + 1);
}

int blas_main_thread_only(void) { return blas_buffers_fit >= 0; }
int blas_usable(void) { return blas_buffers_fit < 0 || blas_reserved; }

// Takes the calling thread's buffer now: one product too large for
// OpenBLAS's small-matrix path (which takes none).
static void reserve_main_buffer(void) {
    enum { S = 256 };
    float *a = calloc((size_t)S * S, sizeof(float)), *c = malloc((size_t)S * S * sizeof(float));
    if (a && c) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, a, S, a, S, 0.0f, c, S);
        blas_reserved = 1;
    }
    free(a), free(c);
}

const char *blas_better_coretype(const char *current, int has_avx512, int has_avx2) {
    // Kernels at least as good as what the CPU supports, lower-cased by OpenBLAS
    // in some versions, so compare case-insensitively.
    static const char *avx512_ok[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
    static const char *avx2_ok[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", NULL};
    const char **ok = has_avx512 ? avx512_ok : has_avx2 ? avx2_ok : NULL;
    if (!ok || !current) return NULL;
    for (int i = 0; ok[i]; i++)
        if (strcasecmp(current, ok[i]) == 0) return NULL;
    return has_avx512 ? "SkylakeX" : "Haswell";
}

void blas_setup(char **argv, int threads, BlasUse use) {
    const char *marker = getenv("VGGFT_BLAS_REEXEC"), *room_marker = getenv("VGGFT_BLAS_ROOM");
    long long fit = buffers_fitting();
    // The buffers: OpenBLAS's workers (threads - 1) and the main thread's.
    // A tool that does without BLAS takes none: its room goes to its own work.
    if (fit >= 0) blas_buffers_fit = use == BLAS_UNUSED ? 0 : (int)fit;
    if (marker || room_marker) {
        // Second run: we set OPENBLAS_CORETYPE and/or OPENBLAS_NUM_THREADS
        // ourselves; remember why, and keep our settings from children.
        if (marker && *marker)
            snprintf(blas_note, sizeof blas_note, "set by vggft: the library chose %s for this CPU", marker);
        if (room_marker) {
            // Not more threads than the restart was given: this run's room
            // is measured after those threads took their buffers, and more
            // would leave too little for the rest (a model not written).
            const char *given = getenv("OPENBLAS_NUM_THREADS");
            int n = given ? atoi(given) : 0;
            if (n >= 1 && blas_buffers_fit > n) blas_buffers_fit = n;
            put_back("OPENBLAS_NUM_THREADS", room_marker);
        }
        unsetenv("VGGFT_BLAS_REEXEC");
        unsetenv("VGGFT_BLAS_ROOM");
    } else {
        const char *want = NULL, *current = openblas_get_corename();
        if (getenv("OPENBLAS_CORETYPE")) {
            snprintf(blas_note, sizeof blas_note, "OPENBLAS_CORETYPE=%s from the environment",
                     getenv("OPENBLAS_CORETYPE"));
        } else {
            __builtin_cpu_init();
            int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
            int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
            want = blas_better_coretype(current, avx512, avx2);
        }
        // The library started its worker threads (and their buffers) as it
        // loaded: too many for the address-space limit means a restart.
        int cap = blas_thread_cap() && openblas_get_num_threads() > blas_thread_cap() ? blas_thread_cap() : 0;
        if ((want || cap) && !can_reexec(argv)) {
            if (want)
                snprintf(blas_note, sizeof blas_note,
                         "not re-executed to select %s: started through the dynamic loader; slow kernel in use", want);
        } else if (want || cap) {
            if (want) setenv("OPENBLAS_CORETYPE", want, 1);
            setenv("VGGFT_BLAS_REEXEC", want ? current : "", 1);
            // VGGFT_BLAS_ROOM: the OPENBLAS_NUM_THREADS the cap replaces ("v:" and
            // its value, or "-": none), put back after the restart.
            char n[16], prev[300];
            const char *had = getenv("OPENBLAS_NUM_THREADS");
            snprintf(n, sizeof n, "%d", cap);
            snprintf(prev, sizeof prev, "%s%s", had ? "v:" : "-", had ? had : "");
            if (cap) setenv("VGGFT_BLAS_ROOM", prev, 1), setenv("OPENBLAS_NUM_THREADS", n, 1);
            fflush(NULL);
            cli_before_exec();
            execv("/proc/self/exe", argv);
            // exec failed: carry on with the slow kernel, and say so.
            cli_after_failed_exec();
            if (want) unsetenv("OPENBLAS_CORETYPE");
            if (cap) put_back("OPENBLAS_NUM_THREADS", prev), unsetenv("VGGFT_BLAS_ROOM");
            unsetenv("VGGFT_BLAS_REEXEC");
            if (want)
                snprintf(blas_note, sizeof blas_note, "could not re-execute to select %s; slow kernel in use", want);
        }
    }
    restore_preinit_env();
    blas_set_threads(threads);
    if (blas_buffers_fit >= 1) reserve_main_buffer();
    if (blas_buffers_fit >= 0) {
        size_t n = strlen(blas_note);
        if (blas_usable())
            snprintf(blas_note + n, sizeof blas_note - n, "%sat most %d thread%s for the address-space limit",
                     n ? "; " : "", blas_thread_cap(), blas_thread_cap() == 1 ? "" : "s");
        else if (use == BLAS_UNUSED)
            snprintf(blas_note + n, sizeof blas_note - n,
                     "%snot used under the address-space limit: this tool does without it", n ? "; " : "");
        else
            snprintf(blas_note + n, sizeof blas_note - n,
                     "%snot usable under the address-space limit: train and finetune stop", n ? "; " : "");
    }
}

int address_limit_note(char *buf, size_t size) {
    long long limit = address_limit();
    if (limit < 0) return 0;
    // ulimit -v counts KiB: the note gives that figure and the MiB.
    snprintf(buf, size, " (under an address-space limit, ulimit -v %lld = %lld MiB: raise it, or lower --threads)",
             limit >> 10, limit >> 20);
    return 1;
}

int blas_check_usable(void) {
    if (blas_usable()) return 0;
    const long long limit = address_limit(), mib = 1 << 20, per = bytes_per_buffer();
    const long long need = (limit - address_room() + 2 * per) / mib + 1;
    return err_set("the address-space limit (ulimit -v %lld = %lld MiB) leaves too little room for OpenBLAS, which "
                   "takes %lld MiB per thread and, short of it, waits for ever: raise the limit to at least %lld MiB "
                   "(ulimit -v %lld), or lift it (Slurm limits memory without one)",
                   limit >> 10, limit / mib, per / mib, need, need << 10);
}

void blas_set_threads(int threads) {
    // OpenBLAS starts one thread per core it counts; under a CPU allotment
    // (taskset, Slurm) that oversubscribes the CPUs the job was given.
    int n = threads > 0 ? threads : parallel_cpus();
    // More threads than the address-space limit leaves buffers for would hang.
    if (blas_thread_cap() && n > blas_thread_cap()) n = blas_thread_cap();
    openblas_set_num_threads(n);
}

const char *blas_describe(void) {
    static char buf[384];
    // openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64"
    char version[32] = "OpenBLAS";
    sscanf(openblas_get_config(), "%31s", version);
    char ver2[32] = "";
    sscanf(openblas_get_config(), "%*s %31s", ver2);
    snprintf(buf, sizeof buf, "%s %s, kernel %s%s%s%s, %d thread%s", version, ver2, openblas_get_corename(),
             blas_note[0] ? " (" : "", blas_note, blas_note[0] ? ")" : "", openblas_get_num_threads(),
             openblas_get_num_threads() == 1 ? "" : "s");
    return buf;
}
