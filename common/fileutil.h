// Files written so that nothing is ever half-written: an AtomicFile writes
// to "PATH.tmp.PID" and renames it over PATH only once everything reached
// the disk; on any error PATH keeps its old content and the temporary file is
// removed. And folders created as needed.
#pragma once
#include <stdio.h>

typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4200];
} AtomicFile;

// Opens the temporary file (binary mode). Returns af->f, or NULL with err_set.
FILE *atomic_open(AtomicFile *af, const char *path);
// Flushes, fsyncs, closes and renames; -1 with err_set naming PATH on any
// failure (a write error earlier included), leaving no temporary file.
int atomic_commit(AtomicFile *af);
// Closes and removes the temporary file.
void atomic_abort(AtomicFile *af);
// Files that replace their old versions together (predict's report, its
// confusion matrix and its contact sheet): between atomic_group_begin() and
// atomic_group_end(), atomic_commit writes and syncs each file but leaves it
// under its temporary name; atomic_group_end(1) renames them all (-1 with
// err_set if a rename fails), atomic_group_end(0) removes them, so a failure
// part way (a full disk) leaves the old set whole. At most 8 files; one
// group at a time, from one thread.
void atomic_group_begin(void);
int atomic_group_end(int keep);

// $TMPDIR, or /tmp when it is unset or empty.
const char *temp_dir(void);

// mkdir -p PATH, for this run's outputs: the folders it creates are
// remove_created_dirs's. A folder on the way that vanishes meanwhile
// (another run's cleanup) is made again.
int make_dirs(const char *path);
// mkdir -p PATH of folders that outlive the run whatever it does (Keras's
// cache folder, ~/.keras/models, that an error tells the user to copy a
// file into): never removed.
int make_lasting_dirs(const char *path);
// At exit, the folders make_dirs created in this process that are empty
// then are removed (deepest first; after the lock files that the exit
// handlers registered later remove): a tool that fails leaves no empty
// output folder behind (a folder with files in it stays). train, finetune
// and extract call it on failure: their output folders hold a lock file
// while they run, so a folder another run is using is never empty then;
// predict does not (several runs' --report files often share a folder,
// and one run's files come only at its end).
void remove_created_dirs(void);
// mkdir -p of the folder holding the file PATH (nothing for a bare name).
int make_parent_dirs(const char *path);

// An output path a tool may write (and replace atomically): not empty, not a
// folder, not a device or FIFO (a run as root must never turn /dev/null into
// a file), not one of the run's inputs (same file by device and inode), and
// in a folder that exists or can be made and that this user may write.
// inputs: n paths (NULL entries and missing files are skipped), names: the
// options they came from, for the message. -1 with err_set naming the option.
int check_output_path(const char *opt, const char *path, const char *const *inputs, const char *const *names, int n);
// 0 when path lies in none of the n folders dirs (NULL entries skipped;
// path_within's rule), else -1 with err_set naming the option and the
// folder's (dir_names): an output written into a feature cache's folder
// would replace its files or read as one of them.
int check_output_outside(const char *opt, const char *path, const char *const *dirs, const char *const *dir_names,
                         int n);
// Removes PATH.tmp.PID files left by killed runs (PID no longer running),
// as atomic_open makes them. Quiet: a file it cannot remove stays.
void atomic_remove_stale(const char *path);
// The same for PATH + INFIX + PID (infix ".tmp.", ".old."), each removed
// with remove_fn (unlink for files; a folder remover for folders).
void remove_stale(const char *path, const char *infix, void (*remove_fn)(const char *));

// path with symbolic links, "." and ".." resolved (realpath), so that two
// spellings of one folder compare equal; when it cannot be resolved (a
// working directory past PATH_MAX), "." and ".." and repeated or trailing
// slashes taken away by text alone. out: PATH_MAX bytes. Returns out.
const char *path_canonical(const char *path, char *out);
// path made absolute with its existing part resolved (links, "..") and the
// part not made yet appended as written: where a file or folder would land.
void path_absolute(const char *path, char *out, size_t size);
// 1 when path (existing or not) is dir or lies below it: as written (".."
// and "." taken away), as resolved (links followed), or below a linked
// subfolder of dir (a class folder linked from elsewhere); 0 otherwise.
int path_within(const char *path, const char *dir);
