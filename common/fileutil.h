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

// mkdir -p PATH.
int make_dirs(const char *path);
// mkdir -p of the folder holding the file PATH (nothing for a bare name).
int make_parent_dirs(const char *path);
