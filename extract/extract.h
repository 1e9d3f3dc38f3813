// extract's three commands: a run over an image folder, --info, --merge.
#pragma once

typedef struct {
    const char *data, *cache, *weights, *preprocess, *interpolation, *dtype, *device, *precision, *shard;
    const char *model, *layer, *command_line;
    int input_size, batch, threads, strict, overwrite, reduced_decode, quiet;
    long seed, max_pixels;
} ExtractOptions;

// 0 done, -1 error (err_msg), EXIT_STOPPED (stop.h) when SIGTERM / SIGINT
// stopped it after committing what it had done.
int extract_run(const ExtractOptions *o);
int extract_info(const char *path);
// extract --verify: prints every problem of the cache at path (cache_verify)
// and a verdict. 0 sound, 1 damaged, -1 unreadable (message printed).
int extract_verify(const char *path);
// extract --merge OUT IN...: 0 done, -1 error (err_msg; nothing written at
// OUT), EXIT_STOPPED when a stop signal (stop.h) arrived before the records
// were all copied: the partial output removed, OUT as it was, a message
// printed.
int extract_merge(const char *out, char **inputs, int n_inputs, int overwrite);
// --shard "I/N" (NULL: 0/1) into *i, *n; -1 with err_set when malformed.
int extract_parse_shard(const char *s, int *i, int *n);
