// extract's three commands: a run over an image folder, --info, --merge.
#pragma once

typedef struct {
    const char *data, *cache, *weights, *preprocess, *interpolation, *dtype, *device, *shard;
    const char *model, *layer, *command_line;
    int input_size, batch, threads, strict, overwrite, reduced_decode, quiet;
    long seed, max_pixels;
} ExtractOptions;

int extract_run(const ExtractOptions *o);
int extract_info(const char *path);
int extract_merge(const char *out, char **inputs, int n_inputs, int overwrite);
