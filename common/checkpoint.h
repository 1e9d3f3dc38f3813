// Training checkpoints for --resume: everything an uninterrupted run would
// still have in memory at the end of an epoch (head weights, optimizer
// state, epoch, history, early-stopping state) plus the settings it was made
// with, in one file written atomically and protected by a CRC.
//
//   "VGGFTCK1" | u32 text length | text: "key=value\n" settings
//   | u32 array count | per array: u32 name length, name, u64 floats, floats
//   | u32 crc32 of everything before
#pragma once
#include <stddef.h>

typedef struct {
    char *text;        // settings, "key=value\n" lines
    int n_arrays;
    char **names;
    size_t *sizes;     // floats per array
    float **data;
} Checkpoint;

// Adds an array (copied when saving: data is only read).
int checkpoint_add(Checkpoint *c, const char *name, const float *data, size_t n);
int checkpoint_write(const Checkpoint *c, const char *path);
int checkpoint_read(Checkpoint *c, const char *path);
void checkpoint_free(Checkpoint *c);
// Copies array `name` into dst (n floats); -1 naming the array if missing or
// of another size.
int checkpoint_get(const Checkpoint *c, const char *path, const char *name, float *dst, size_t n);
// Value of a setting (malloc'd) or NULL.
char *checkpoint_setting(const Checkpoint *c, const char *key);
