// scripts/pipeline.mk: the make-driven pipeline (extract -> train ->
// finetune [-> predict --eval]) remakes exactly what changed, and a run cut
// short leaves no target that looks complete.
//
// Each test makes two small shape folders (training and validation), runs
// `make -f scripts/pipeline.mk` on them with random weights cut at
// block1_pool at 32x32 (a second or two per pipeline), and compares the
// mtimes (nanoseconds) of every file under OUT between runs.
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

typedef struct {
    char *top_train, *top_val;  // make_shape_folder tops (data/ inside)
    char out[1024];
} Pipe;

static Pipe pipe_new(const char *tag, int n) {
    Pipe p;
    p.top_train = make_shape_folder(tag, n, 7);
    p.top_val = make_shape_folder(tag, 3, 11);
    snprintf(p.out, sizeof p.out, "%s/out", p.top_train);
    return p;
}

static void pipe_free(Pipe *p) {
    remove_tree(p->top_train);
    remove_tree(p->top_val);
    free(p->top_train);
    free(p->top_val);
}

// The repository: TEST_FIXTURES is REPO/tests/fixtures.
static const char *repo_root(void) {
    static char root[1024];
    snprintf(root, sizeof root, "%s", TEST_FIXTURES);
    char *end = strstr(root, "/tests/fixtures");
    cr_assert(end, "TEST_FIXTURES %s does not end in /tests/fixtures", TEST_FIXTURES);
    *end = 0;
    return root;
}

static const char *bin_dir(void) {
    const char *bin = getenv("VGGFT_BIN");
    return bin ? bin : TEST_BUILD;
}

// Runs the pipeline into p->out with ENV (e.g. "VGGFT_TEST_CRASH_AFTER=2",
// may be "") before make, MAKE_OPTS (e.g. "-q") and the head's TRAIN_ARGS.
// The settings are those of every test; `make test`'s own MAKEFLAGS (a
// jobserver this make cannot reach) are dropped. Returns make's exit status.
static const char *FINETUNE_ARGS = "--epochs 2 --batch 8 --unfreeze block1_conv2 --no-augment --threads 1";

// pipe_make with FINETUNE_ARGS of its own.
static int pipe_make_ft(const Pipe *p, const char *env, const char *make_opts, const char *train_args,
                        const char *finetune_args, char **output) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS %s timeout -s KILL 300 make --no-print-directory %s "
             "-f '%s/scripts/pipeline.mk' BIN='%s' DATA='%s/data' VAL='%s/data' WEIGHTS=random OUT='%s' "
             "EXTRACT_ARGS='--input-size 32 --layer block1_pool --threads 1 --batch 2' TRAIN_ARGS='%s' "
             "FINETUNE_ARGS='%s' 2>&1",
             p->top_train, env, make_opts, repo_root(), bin_dir(), p->top_train, p->top_val, p->out, train_args,
             finetune_args);
    return run_command(cmd, output);
}

static int pipe_make(const Pipe *p, const char *env, const char *make_opts, const char *train_args, char **output) {
    return pipe_make_ft(p, env, make_opts, train_args, FINETUNE_ARGS, output);
}

static const char *HEAD_ARGS = "--epochs 2 --hidden 8 --threads 1";


// The whole pipeline with every test's settings, asserted to succeed; 0.
static int pipe_first_make(const Pipe *p) {
    char *log = NULL;
    int rc = pipe_make(p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "the first make failed (%d):\n%s", rc, log);
    free(log);
    return rc;
}

// The first line of LOG that contains NEEDLE (malloc'd), or NULL.
static char *line_with(const char *log, const char *needle) {
    const char *hit = strstr(log, needle);
    if (!hit) return NULL;
    const char *a = hit, *b = strchr(hit, '\n');
    while (a > log && a[-1] != '\n') a--;
    if (!b) b = hit + strlen(hit);
    return strndup(a, (size_t)(b - a));
}

static int exists(const char *dir, const char *name) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

// --- mtimes of every file under OUT -----------------------------------------
typedef struct {
    char path[512];
    long long mtime_ns;
} Stamp;
typedef struct {
    Stamp s[512];
    int n;
} Snapshot;

static void snap_dir(Snapshot *snap, const char *root, const char *rel) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    cr_assert(d, "cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[512], full[2048];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        cr_assert_eq(lstat(full, &st), 0, "cannot stat %s", full);
        if (S_ISDIR(st.st_mode)) {
            snap_dir(snap, root, sub);
            continue;
        }
        cr_assert_lt(snap->n, 512);
        Stamp *s = &snap->s[snap->n++];
        snprintf(s->path, sizeof s->path, "%s", sub);
        s->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    }
    closedir(d);
}

static Snapshot *snapshot(const char *root) {
    Snapshot *snap = calloc(1, sizeof *snap);
    snap_dir(snap, root, "");
    return snap;
}

// mtime of REL in the snapshot; -1 when absent.
static long long snap_mtime(const Snapshot *snap, const char *rel) {
    for (int i = 0; i < snap->n; i++)
        if (!strcmp(snap->s[i].path, rel)) return snap->s[i].mtime_ns;
    return -1;
}

// The last stage there is: the report when predict is built (pipeline.mk's
// `all`), else the model.
static const char *last_target(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/predict", bin_dir());
    return access(path, X_OK) == 0 ? "eval_report.txt" : "model.h5";
}

Test(pipeline, second_make_does_nothing) {
    Pipe p = pipe_new("pipeline_again", 6);
    char *log = NULL;
    int rc = pipe_first_make(&p);
    const char *want[] = {"cache/train.done", "cache/val.done", "cache/train/data.mdb", "cache/val/data.mdb",
                          "head.h5", "model.h5", last_target()};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(exists(p.out, want[i]), "the first make did not write %s", want[i]);
    Snapshot *before = snapshot(p.out);

    // make -q: every target is up to date; also with OUT spelled otherwise
    // (relative: make runs in the folder above it) and another time zone.
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make -q says something is out of date (%d):\n%s", rc, log);
    free(log);
    // make -q and -n on an OUT not made yet write nothing there.
    Pipe none = p;
    snprintf(none.out, sizeof none.out, "%s/none", p.top_train);
    rc = pipe_make(&none, "", "-q", HEAD_ARGS, &log);
    cr_assert_eq(rc, 1, "make -q on a new OUT says up to date (%d):\n%s", rc, log);
    free(log);
    rc = pipe_make(&none, "", "-n", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make -n on a new OUT failed (%d):\n%s", rc, log);
    free(log);
    cr_assert_neq(access(none.out, F_OK), 0, "make -q or -n made %s", none.out);
    Pipe rel = p;
    snprintf(rel.out, sizeof rel.out, "out/");
    rc = pipe_make(&rel, "TZ=Asia/Tokyo", "-q", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make -q with OUT=out/ and TZ=Asia/Tokyo says something is out of date (%d):\n%s", rc, log);
    free(log);
    // A second make runs nothing and moves no file.
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "the second make failed (%d):\n%s", rc, log);
    cr_assert(strstr(log, "Nothing to be done"), "the second make did something:\n%s", log);
    cr_assert(!strstr(log, "/extract ") && !strstr(log, "/train ") && !strstr(log, "/finetune "),
              "the second make ran a tool:\n%s", log);
    free(log);
    // make -n and -q with another head setting only look: they say the
    // head is out of date, and record nothing, so the settings still in
    // force are up to date afterwards (a dry run must not cost a retrain).
    const char *other = "--epochs 3 --hidden 8 --threads 1";
    rc = pipe_make(&p, "", "-q", other, &log);
    cr_assert_eq(rc, 1, "make -q with another TRAIN_ARGS says up to date (%d):\n%s", rc, log);
    free(log);
    rc = pipe_make(&p, "", "-n", other, &log);
    cr_assert_eq(rc, 0, "make -n failed (%d):\n%s", rc, log);
    cr_assert(strstr(log, "/train "), "make -n with another TRAIN_ARGS would not run train:\n%s", log);
    free(log);
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "after make -n, the settings in force are out of date (%d):\n%s", rc, log);
    free(log);
    Snapshot *after = snapshot(p.out);
    cr_assert_eq(after->n, before->n, "files were added or removed: %d -> %d", before->n, after->n);
    for (int i = 0; i < before->n; i++)
        cr_assert_eq(snap_mtime(after, before->s[i].path), before->s[i].mtime_ns, "%s was rewritten",
                     before->s[i].path);
    free(before);
    free(after);
    pipe_free(&p);
}

Test(pipeline, head_setting_reruns_train_and_what_follows) {
    Pipe p = pipe_new("pipeline_head", 6);
    char *log = NULL;
    int rc = pipe_first_make(&p);
    Snapshot *before = snapshot(p.out);

    // `plan` lists what a make would run, and only looks: first with the
    // settings made (nothing), then with another head setting.
    rc = pipe_make(&p, "", "plan", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "%s", log);
    cr_assert(!strstr(log, "would run") && strstr(log, "/head.h5: up to date") &&
                  strstr(log, "/cache/val.done: up to date") && strstr(log, "/model.h5: up to date"),
              "plan after the first make:\n%s", log);
    free(log);
    rc = pipe_make(&p, "", "plan", "--epochs 3 --hidden 8 --threads 1", &log);
    cr_assert_eq(rc, 0, "%s", log);
    cr_assert(strstr(log, "/cache/train.done: up to date") && strstr(log, "/head.h5: would run") &&
                  strstr(log, "/model.h5: would run"),
              "plan with another head setting:\n%s", log);
    free(log);
    Snapshot *planned = snapshot(p.out);
    cr_assert_eq(snap_mtime(planned, ".pipeline/head.settings"), snap_mtime(before, ".pipeline/head.settings"),
                 "plan recorded the head setting");
    free(planned);

    // Another head setting: train and finetune rerun, extract does not.
    rc = pipe_make(&p, "", "-q", "--epochs 3 --hidden 8 --threads 1", NULL);
    cr_assert_neq(rc, 0, "make -q did not see the head setting change");
    rc = pipe_make(&p, "", "", "--epochs 3 --hidden 8 --threads 1", &log);
    cr_assert_eq(rc, 0, "make after a head setting failed (%d):\n%s", rc, log);
    cr_assert(!strstr(log, "/extract "), "extract reran for a head setting:\n%s", log);
    cr_assert(strstr(log, "/train ") && strstr(log, "/finetune "), "train or finetune did not rerun:\n%s", log);
    free(log);
    Snapshot *after = snapshot(p.out);
    const char *kept[] = {"cache/train.done", "cache/val.done", "cache/train/data.mdb", "cache/val/data.mdb",
                          ".pipeline/train.listing", ".pipeline/train.extract", ".pipeline/model.settings"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        cr_assert_eq(snap_mtime(after, kept[i]), snap_mtime(before, kept[i]), "%s moved for a head setting",
                     kept[i]);
    const char *redone[] = {"head.h5", "model.h5", last_target(), ".pipeline/head.settings"};
    for (size_t i = 0; i < sizeof redone / sizeof *redone; i++)
        cr_assert_gt(snap_mtime(after, redone[i]), snap_mtime(before, redone[i]), "%s was not remade", redone[i]);
    // The head's history has the new epoch count.
    char path[2048];
    snprintf(path, sizeof path, "%s/head.history.csv", p.out);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    int lines = 0;
    for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
    fclose(f);
    cr_assert_eq(lines, 4, "head.history.csv: %d lines, want a header and 3 epochs", lines);
    free(before);
    free(after);

    // A new image in the validation folder: only its cache and what follows.
    before = snapshot(p.out);
    snprintf(path, sizeof path, "cp '%s/data/circles/img 00.jpg' '%s/data/circles/img new.jpg'", p.top_train,
             p.top_val);
    cr_assert_eq(system(path), 0);
    rc = pipe_make(&p, "", "", "--epochs 3 --hidden 8 --threads 1", &log);
    cr_assert_eq(rc, 0, "make after a new image failed (%d):\n%s", rc, log);
    char *val_line = line_with(log, "/cache/val --weights"), *train_line = line_with(log, "/cache/train --weights");
    cr_assert(val_line && !train_line, "want the validation cache alone extracted:\n%s", log);
    free(val_line);
    free(log);
    after = snapshot(p.out);
    cr_assert_eq(snap_mtime(after, "cache/train.done"), snap_mtime(before, "cache/train.done"),
                 "the training cache was remade for a validation image");
    cr_assert_gt(snap_mtime(after, "cache/val.done"), snap_mtime(before, "cache/val.done"),
                 "the validation cache was not remade after an image was added");
    cr_assert_gt(snap_mtime(after, "head.h5"), snap_mtime(before, "head.h5"));
    free(before);
    free(after);

    // A typo in TRAIN_ARGS: train refuses it, and the finished head stays
    // (the recipe removed it first, a breaker's loss).
    rc = pipe_make(&p, "", "", "--epoch 3 --hidden 8 --threads 1", &log);
    cr_expect_neq(rc, 0, "%s", log);
    cr_expect(strstr(log, "unknown option '--epoch'") && exists(p.out, "head.h5"), "head.h5 gone:\n%s", log);
    free(log);
    pipe_free(&p);
}

// A make whose extract dies (kill -9 after 2 records) or is stopped by
// SIGTERM leaves no cache stamp and nothing after it; the next make redoes
// the cache (resuming it after the SIGTERM) and finishes.
static void interrupted_extract(const char *tag, const char *env, int resumes) {
    Pipe p = pipe_new(tag, 6);
    char *log = NULL;
    int rc = pipe_make(&p, env, "", HEAD_ARGS, &log);
    cr_assert_neq(rc, 0, "make with a failing extract succeeded:\n%s", log);
    free(log);
    cr_assert(exists(p.out, "cache/train"), "extract did not start");
    const char *absent[] = {"cache/train.done", "cache/val.done", "head.h5", "model.h5"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        cr_assert(!exists(p.out, absent[i]), "%s exists after the interrupted make", absent[i]);
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, NULL);
    cr_assert_eq(rc, 1, "make -q after the interrupted make: %d, want 1 (out of date)", rc);

    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "the make after the interruption failed (%d):\n%s", rc, log);
    // extract always gets --overwrite: with the same settings it keeps the
    // records already committed.
    if (resumes) {
        cr_assert(strstr(log, "12 images, resuming"), "extract did not resume its cache:\n%s", log);
        cr_assert(!strstr(log, "starting it over"), "the training cache was started over:\n%s", log);
    }
    free(log);
    cr_assert(exists(p.out, "cache/train.done") && exists(p.out, "model.h5"));
    char args[2048];
    snprintf(args, sizeof args, "--info '%s/cache/train'", p.out);
    rc = run_tool_timeout("extract", args, 60, &log);
    cr_assert_eq(rc, 0, "%s", log);
    cr_assert(strstr(log, "state:          complete"), "the cache is not complete:\n%s", log);
    cr_assert(strstr(log, "records:        12"), "%s", log);
    free(log);
    pipe_free(&p);
}

Test(pipeline, extract_killed_leaves_no_target) {
    interrupted_extract("pipeline_kill", "VGGFT_TEST_CRASH_AFTER=2", 0);
}

Test(pipeline, extract_stopped_resumes) {
    interrupted_extract("pipeline_term", "VGGFT_TEST_SIGNAL_AFTER=4", 1);
}

// finetune killed after its first epoch: no model; the next make resumes
// from the checkpoint and writes the model an uninterrupted run writes,
// byte for byte.
Test(pipeline, finetune_killed_resumes_to_the_same_model) {
    Pipe p = pipe_new("pipeline_resume", 8);  // 16 images, 2 steps an epoch
    // The reference: an uninterrupted run into the same OUT (the files record
    // the caches' paths), kept aside.
    char ref[1100], cmd[4096], *log = NULL;
    snprintf(ref, sizeof ref, "%s/ref.h5", p.top_train);
    int rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "the reference make failed (%d):\n%s", rc, log);
    free(log);
    snprintf(cmd, sizeof cmd, "mv '%s/model.h5' '%s' && rm -r '%s'", p.out, ref, p.out);
    cr_assert_eq(system(cmd), 0);

    rc = pipe_make(&p, "VGGFT_TEST_CRASH_AFTER_STEP=3", "", HEAD_ARGS, &log);
    cr_assert_neq(rc, 0, "make with a killed finetune succeeded:\n%s", log);
    free(log);
    cr_assert(exists(p.out, "head.h5") && exists(p.out, "model.ckpt"));
    cr_assert(!exists(p.out, "model.h5"), "model.h5 exists after finetune was killed");
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "the make after the kill failed (%d):\n%s", rc, log);
    char *line = line_with(log, "/finetune --data");
    cr_assert(line && strstr(line, " --resume"), "finetune was not resumed:\n%s", log);
    free(line);
    cr_assert(!strstr(log, "Epoch 1/2") && strstr(log, "Epoch 2/2"), "finetune did not continue at epoch 2:\n%s", log);
    cr_assert(!strstr(log, "/extract ") && !strstr(log, "/train "), "more than finetune reran:\n%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s/model.h5'", ref, p.out);
    cr_assert_eq(system(cmd), 0, "the resumed model differs from the uninterrupted one");
    pipe_free(&p);
}

// The mtimes of OUT's stamps and outputs, before and after.
static void expect_unmoved(const Snapshot *before, const Snapshot *after, const char *const *names, int n,
                           const char *why) {
    for (int i = 0; i < n; i++)
        cr_expect_eq(snap_mtime(after, names[i]), snap_mtime(before, names[i]), "%s moved after %s", names[i], why);
}

// Changes that do not change the features rerun nothing after extract: an
// image touched (same bytes) runs extract, which keeps every record, and the
// cache stamp, head, model and report stay; a file Keras does not list
// (notes.txt) runs nothing at all. A renamed class does change the features:
// the caches start over and everything after them reruns.
Test(pipeline, same_features_rerun_nothing_after_extract) {
    Pipe p = pipe_new("pipeline_same", 6);
    char *log = NULL, cmd[4096];
    int rc = pipe_first_make(&p);
    const char *kept[] = {"cache/train.done", "cache/val.done", "head.h5", "model.h5", last_target()};
    Snapshot *before = snapshot(p.out);

    // An image touched into the future: extract runs (its listing changed), nothing else.
    snprintf(cmd, sizeof cmd, "touch -d '+1 hour' '%s/data/circles/img 01.jpg'", p.top_train);
    cr_assert_eq(system(cmd), 0);
    // plan says so: extract would run, what follows only if the features change.
    rc = pipe_make(&p, "", "plan", HEAD_ARGS, &log);
    cr_expect(rc == 0 && strstr(log, "/cache/train.done: would run\n") && strstr(log, "/cache/val.done: up to date") &&
                  strstr(log, "/head.h5: would run if a stage before it changes what it makes") &&
                  strstr(log, "/model.h5: would run if a stage before it changes what it makes"),
              "plan after a touch (%d):\n%s", rc, log);
    free(log);
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make after a touch failed (%d):\n%s", rc, log);
    cr_expect(strstr(log, "/cache/train --weights") && strstr(log, "12 unchanged"),
              "extract did not rerun (keeping its records) after a touch:\n%s", log);
    cr_expect(strstr(log, "the features did not change"), "%s", log);
    cr_expect(!strstr(log, "/train --cache") && !strstr(log, "/finetune --data") && !strstr(log, "/predict "),
              "a touched image reran what follows extract:\n%s", log);
    free(log);
    Snapshot *after = snapshot(p.out);
    expect_unmoved(before, after, kept, 5, "a touched image");
    free(after);
    // ... and then everything is up to date.
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, &log);
    cr_expect_eq(rc, 0, "make -q after the touch's make: %d\n%s", rc, log);
    free(log);
    // A chmod (size and mtime unchanged: an image skipped as unreadable and
    // then made readable) makes extract run again too (the breaker: make
    // said "Nothing to be done" and the image stayed out of the cache).
    snprintf(cmd, sizeof cmd, "chmod 600 '%s/data/circles/img 02.jpg'", p.top_train);
    cr_assert_eq(system(cmd), 0);
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, &log);
    cr_expect_neq(rc, 0, "make -q after a chmod: up to date\n%s", log);
    free(log);
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_expect(rc == 0 && strstr(log, "/cache/train --weights") && !strstr(log, "/train --cache"),
              "after a chmod: extract alone should run (%d):\n%s", rc, log);
    free(log);
    // An empty class folder is a class (as Keras counts it): make sees it.
    snprintf(cmd, sizeof cmd, "mkdir '%s/data/zebras'", p.top_val);
    cr_assert_eq(system(cmd), 0);
    rc = pipe_make(&p, "", "-q", HEAD_ARGS, &log);
    cr_expect_neq(rc, 0, "make -q after a new empty class folder: up to date\n%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "rmdir '%s/data/zebras'", p.top_val);
    cr_assert_eq(system(cmd), 0);

    // A file Keras does not list: nothing runs.
    snprintf(cmd, sizeof cmd, "echo notes > '%s/data/circles/notes.txt' && echo x > '%s/data/README'", p.top_train,
             p.top_train);
    cr_assert_eq(system(cmd), 0);
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make after notes.txt failed (%d):\n%s", rc, log);
    cr_expect(strstr(log, "Nothing to be done"), "notes.txt made make run something:\n%s", log);
    free(log);
    after = snapshot(p.out);
    expect_unmoved(before, after, kept, 5, "notes.txt");
    free(after);
    free(before);

    // A renamed class (in both folders): the caches start over, the head is retrained.
    before = snapshot(p.out);
    snprintf(cmd, sizeof cmd, "mv '%s/data/squares' '%s/data/boxes' && mv '%s/data/squares' '%s/data/boxes'",
             p.top_train, p.top_train, p.top_val, p.top_val);
    cr_assert_eq(system(cmd), 0);
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_assert_eq(rc, 0, "make after a renamed class failed (%d):\n%s", rc, log);
    cr_expect(strstr(log, "starting it over"), "the caches were not started over:\n%s", log);
    cr_expect(strstr(log, "/train --cache") && strstr(log, "/finetune --data"), "the head was not retrained:\n%s", log);
    free(log);
    after = snapshot(p.out);
    const char *redone[] = {"cache/train.done", "cache/val.done", "head.h5", "model.h5"};
    for (int i = 0; i < 4; i++)
        cr_expect_gt(snap_mtime(after, redone[i]), snap_mtime(before, redone[i]), "%s not remade", redone[i]);
    free(before);
    free(after);
    snprintf(cmd, sizeof cmd, "grep -q boxes '%s/cache/train.done'", p.out);
    cr_expect_eq(system(cmd), 0, "the stamp does not name the new class");
    pipe_free(&p);
}

// OUT inside DATA (its listing would take the pipeline's files for images),
// paths with spaces, an OUT with a backtick (the recipes' shell would run what
// is in it) and a flag of two words (FINETUNE='0 1' passed a filter-out
// check) are refused before anything is created.
Test(pipeline, out_inside_data_and_spaces_refused) {
    Pipe p = pipe_new("pipeline_refuse", 2);
    char *log = NULL;
    snprintf(p.out, sizeof p.out, "%s/data/circles/out", p.top_train);
    int rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_expect_eq(rc, 2, "make with OUT inside DATA: %d\n%s", rc, log);
    cr_expect(strstr(log, "lies inside DATA"), "%s", log);
    free(log);
    cr_expect(access(p.out, F_OK) != 0, "OUT was created before the refusal");
    // OUT = VAL, written another way.
    snprintf(p.out, sizeof p.out, "%s/data/../data", p.top_val);
    rc = pipe_make(&p, "", "", HEAD_ARGS, &log);
    cr_expect_eq(rc, 2, "make with OUT = VAL: %d\n%s", rc, log);
    cr_expect(strstr(log, "lies inside VAL"), "%s", log);
    free(log);
    // A space or a backtick in OUT, a FINETUNE of two words: refused, OUT
    // not created.
    const struct {
        const char *out, *make_opts, *says;
    } bad[] = {
        {"my out", "", "spaces or quotes are not supported"},
        {"out`id`", "", "the shell ` | & < > ( ) in its recipes"},
        {"out", "FINETUNE='0 1'", "FINETUNE='0 1': want 1 or 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(p.out, sizeof p.out, "%s/%s", p.top_train, bad[i].out);
        rc = pipe_make(&p, "", bad[i].make_opts, HEAD_ARGS, &log);
        cr_expect_eq(rc, 2, "make with OUT=%s %s: %d\n%s", bad[i].out, bad[i].make_opts, rc, log);
        cr_expect(strstr(log, bad[i].says), "%s", log);
        free(log);
        cr_expect(access(p.out, F_OK) != 0, "OUT=%s was created before %s was refused", p.out, bad[i].says);
    }
    pipe_free(&p);
}

// VAL is optional (no validation cache, no report): an empty VAL was taken
// for a path with spaces and the pipeline refused to start (a newcomer's
// finding); without DATA the message says DATA is required.
Test(pipeline, val_is_optional_data_is_required) {
    Pipe p = pipe_new("pipeline_noval", 2);
    char cmd[8192], *log = NULL;
    const char *make = "cd '%s' && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS timeout -s KILL 300 make --no-print-directory "
                       "-f '%s/scripts/pipeline.mk' BIN='%s' %s WEIGHTS=random OUT='%s' "
                       "EXTRACT_ARGS='--input-size 32 --layer block1_pool --threads 1 --batch 2' "
                       "TRAIN_ARGS='--epochs 1 --hidden 8 --threads 1' "
                       "FINETUNE_ARGS='--epochs 1 --batch 8 --unfreeze block1_conv2 --no-augment --threads 1' 2>&1";
    char data[1200];
    snprintf(data, sizeof data, "DATA='%s/data'", p.top_train);
    snprintf(cmd, sizeof cmd, make, p.top_train, repo_root(), bin_dir(), data, p.out);
    int rc = run_command(cmd, &log);
    cr_expect_eq(rc, 0, "make without VAL: %d\n%s", rc, log);
    cr_expect(exists(p.out, "head.h5") && exists(p.out, "model.h5"), "%s", log);
    cr_expect(!exists(p.out, "eval_report.txt"), "a report without VAL");
    free(log);
    snprintf(cmd, sizeof cmd, make, p.top_train, repo_root(), bin_dir(), "", p.out);
    rc = run_command(cmd, &log);
    cr_expect_eq(rc, 2, "%s", log);
    cr_expect(strstr(log, "DATA=DIR is required") != NULL, "%s", log);
    free(log);
    pipe_free(&p);
}

// A file system without locks (NFS without lockd, Lustre without -o
// flock; here flock(2) failing with ENOLCK in every process): make stopped
// every stage as "another make is running" and finetune read the head as
// "locked by another process". Now the whole pipeline runs, with a note.
Test(pipeline, runs_where_the_file_system_has_no_locks) {
    char shim[1100];
    snprintf(shim, sizeof shim, "%s/tests/noflock.so", TEST_BUILD);
    if (access(shim, F_OK) != 0) cr_skip_test("%s not built (make test builds it)", shim);
    Pipe p = pipe_new("pipeline_noflock", 2);
    char env[1400], *log = NULL;
    // (Our tools built with ASan want its runtime first among preloads.)
    snprintf(env, sizeof env, "LD_PRELOAD='%s' ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0\"",
             shim);
    int rc = pipe_make(&p, env, "", HEAD_ARGS, &log);
    cr_expect_eq(rc, 0, "%s", log);
    cr_expect(strstr(log, "pipeline.mk: note: no lock on") && !strstr(log, "another make"), "%s", log);
    cr_expect(exists(p.out, "model.h5") && exists(p.out, "eval_report.txt"), "%s", log);
    free(log);
    pipe_free(&p);
}

// Another make's stage running: holds OUT/.pipeline/STAGE.lock in the
// background (as that make's tool does) until lock_release (at most a
// minute), which first touches OUT/TOUCH (that tool writing its output,
// after the other makes read their settings; NULL: nothing). The test
// releases the lock before it asserts anything.
static void lock_hold(const Pipe *p, const char *stage) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && rm -f held stop && (flock .pipeline/%s.lock sh -c 'touch held; i=0; "
             "while [ ! -e stop ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
             "[ ! -s touch ] || touch \"$(cat touch)\"' </dev/null >/dev/null 2>&1 &) && "
             "for i in $(seq 200); do [ -e held ] && exit 0; sleep 0.05; done; exit 1",
             p->out, stage);
    cr_assert_eq(system(cmd), 0, "could not hold %s's lock", stage);
}

static void lock_release(const Pipe *p, const char *stage, const char *touch) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && printf '%%s' '%s' >touch && touch stop && flock .pipeline/%s.lock true && "
             "rm -f held stop touch", p->out, touch ? touch : "", stage);
    cr_assert_eq(system(cmd), 0, "could not release %s's lock", stage);
}

// A make refused by a held lock records nothing: a make that finds another
// make (or its tool) running STAGE stops, and when that stage then finishes
// with the settings of the make that runs it, the next make goes by the
// settings the target was made with: the original ones rerun nothing, the
// refused ones rerun the stage. (The refused make used to record its
// settings: the original ones then reran the stage, the refused ones did not.)
static void refused_make(const char *tag, const char *stage, const char *target, const char *tool, int by_finetune) {
    Pipe p = pipe_new(tag, 6);
    const char *ft_other = "--epochs 2 --batch 8 --unfreeze block1_conv2 --no-augment --threads 1 --seed 6";
    const char *head_other = "--epochs 3 --hidden 8 --threads 1";
    const char *ft[2] = {FINETUNE_ARGS, by_finetune ? ft_other : FINETUNE_ARGS};
    const char *head[2] = {HEAD_ARGS, by_finetune ? HEAD_ARGS : head_other};
    char *log = NULL;
    int rc = pipe_first_make(&p);
    // Twice: made with settings 0, refused with 1, then 0 reruns nothing and 1
    // reruns the stage; then made with 1, refused with 0, then 0 reruns it.
    for (int round = 0; round < 2; round++) {
        int made = round == 0 ? 0 : 1, refused = 1 - made;
        lock_hold(&p, stage);
        rc = pipe_make_ft(&p, "", "", head[refused], ft[refused], &log);
        lock_release(&p, stage, target);
        cr_assert_neq(rc, 0, "a make ran while %s's lock was held:\n%s", stage, log);
        cr_expect(strstr(log, "another make (or a tool it started) is running stage"), "%s", log);
        free(log);
        if (round == 0) {
            rc = pipe_make_ft(&p, "", "", head[made], ft[made], &log);
            cr_assert_eq(rc, 0, "the make with the settings in force failed (%d):\n%s", rc, log);
            cr_expect(!strstr(log, tool), "the refused make's settings were recorded: the settings %s was made "
                      "with reran it:\n%s", target, log);
            free(log);
        }
        rc = pipe_make_ft(&p, "", "", head[refused], ft[refused], &log);
        cr_assert_eq(rc, 0, "the make with the refused settings failed (%d):\n%s", rc, log);
        cr_assert(strstr(log, tool), "the refused make's settings were recorded: they did not rerun %s:\n%s", target,
                  log);
        free(log);
    }
    pipe_free(&p);
}

Test(pipeline, refused_make_records_no_finetune_settings) {
    refused_make("pipeline_lock_ft", "model", "model.h5", "/finetune --data", 1);
}

Test(pipeline, refused_make_records_no_train_settings) {
    refused_make("pipeline_lock_head", "head", "head.h5", "/train --cache", 0);
}

// finetune stopped by SIGTERM with --seed 3 saves its checkpoint (exit 75:
// the pipeline says to rerun make); a make with --seed 4 refused while that
// finetune still held the stage's lock (make itself was gone) and which
// finetune's checkpoint outlived, must not make the next make with --seed 4
// resume the seed 3 checkpoint (finetune refuses that: every make failed).
// It starts over; the same seed would have resumed.
Test(pipeline, stale_checkpoint_of_other_settings_starts_over) {
    Pipe p = pipe_new("pipeline_stale", 8);  // 16 images, 2 steps an epoch
    const char *seed3 = "--epochs 2 --batch 8 --unfreeze block1_conv2 --no-augment --threads 1 --seed 3";
    const char *seed4 = "--epochs 2 --batch 8 --unfreeze block1_conv2 --no-augment --threads 1 --seed 4";
    char *log = NULL;
    int rc = pipe_make_ft(&p, "", "head", HEAD_ARGS, seed3, &log);
    cr_assert_eq(rc, 0, "make head failed (%d):\n%s", rc, log);
    free(log);
    rc = pipe_make_ft(&p, "VGGFT_TEST_SIGTERM_AFTER_STEP=1", "", HEAD_ARGS, seed3, &log);
    cr_assert_neq(rc, 0, "make with a stopped finetune succeeded:\n%s", log);
    cr_expect(strstr(log, "saved in ") && strstr(log, "rerun the same make to continue (it resumes)") &&
                  !strstr(log, "rerun with --resume"),
              "the tool's own line gives make's advice, not --resume:\n%s", log);
    cr_expect(strstr(log, "pipeline.mk: stage 'model' stopped (exit 75), its state saved: rerun the same make"),
              "no word on rerunning make after exit 75:\n%s", log);
    free(log);
    cr_assert(exists(p.out, "model.ckpt") && !exists(p.out, "model.h5"));
    lock_hold(&p, "model");
    rc = pipe_make_ft(&p, "", "", HEAD_ARGS, seed4, &log);
    lock_release(&p, "model", "model.ckpt");
    cr_assert_neq(rc, 0, "a make ran while model's lock was held:\n%s", log);
    free(log);
    rc = pipe_make_ft(&p, "", "", HEAD_ARGS, seed4, &log);
    cr_assert_eq(rc, 0, "the make with --seed 4 after a --seed 3 checkpoint failed (%d):\n%s", rc, log);
    cr_assert(strstr(log, "model.ckpt is of another run (seed is 3 in the checkpoint, 4 in this run): starting over"),
              "finetune did not start over from a checkpoint of other settings:\n%s", log);
    free(log);
    cr_assert(exists(p.out, "model.h5"));
    pipe_free(&p);
}

// More epochs in TRAIN_ARGS continue the finished head (train resumes its
// checkpoint: --resume-if-same) instead of training it again from scratch.
Test(pipeline, more_epochs_continue_the_finished_stage) {
    Pipe p = pipe_new("pipeline_more", 6);
    char *log = NULL;
    int rc = pipe_first_make(&p);
    rc = pipe_make(&p, "", "", "--epochs 3 --hidden 8 --threads 1", &log);
    cr_assert_eq(rc, 0, "the make with more epochs failed (%d):\n%s", rc, log);
    cr_expect(strstr(log, "head.ckpt after epoch 2") && strstr(log, "Epoch 3/3") && !strstr(log, "Epoch 1/3"),
              "train did not continue its finished run:\n%s", log);
    // The fine-tuning after it starts over: its head changed.
    cr_expect(strstr(log, "model.ckpt is of another run (head is sha256:") &&
                  strstr(log, "(the digest of the --head file: it was trained again or replaced since"),
              "%s", log);
    free(log);
    pipe_free(&p);
}
