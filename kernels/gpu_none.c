// CPU-only build (make CUDA=0): every GPU entry point reports "unavailable".
#include <stdio.h>

#include "gpu.h"

int gpu_built(void) { return 0; }

int gpu_count(char *why, size_t why_size) {
    if (why) snprintf(why, why_size, "this build has no CUDA support (built with CUDA=0)");
    return 0;
}

int gpu_name(int device, char *buf, size_t size) { return -1; }

void gpu_libraries(char *buf, size_t size) { snprintf(buf, size, "CUDA: not built in (built with CUDA=0)"); }

void *gpu_host_alloc(size_t bytes) { return NULL; }
void gpu_host_free(void *p) {}

#include "error.h"
#include "gpu_base.h"

GpuBase *gpu_base_create(const Model *m, int max_batch, GpuPrecision precision) {
    err_set("this build has no CUDA support (built with CUDA=0)");
    return NULL;
}

int gpu_base_forward(GpuBase *g, const float *in, int N, float *out) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_base_submit(GpuBase *g, const float *in, int N) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_base_collect(GpuBase *g, float *out) { return err_set("this build has no CUDA support (built with CUDA=0)"); }

float *gpu_base_staging(GpuBase *g, int k) { return NULL; }
uint8_t *gpu_base_staging_rgb8(GpuBase *g, int k) { return NULL; }

int gpu_base_submit_rgb8(GpuBase *g, const uint8_t *rgb, int N, PrepMode prep) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

void gpu_base_free(GpuBase *g) {}

#include "gpu_walk.h"

GpuWalk *gpu_walk_create(const Model *m, int from, int cap, GpuPrecision precision) {
    err_set("this build has no CUDA support (built with CUDA=0)");
    return NULL;
}

void gpu_walk_free(GpuWalk *g) {}
size_t gpu_walk_bytes(const GpuWalk *g) { return 0; }
void gpu_walk_describe(const GpuWalk *g, char *buf, size_t size) { snprintf(buf, size, "no CUDA support"); }
int gpu_walk_deterministic(const GpuWalk *g) { return 0; }

int gpu_walk_forward(GpuWalk *g, const float *in, int N, float *features) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_backward_update(GpuWalk *g, const float *d_features, int N, const OptimRule *r) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_download(GpuWalk *g, Model *m, float *const *slots) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_upload(GpuWalk *g, const Model *m, float *const *slots) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_optim_apply(const OptimRule *r, float *param, const float *grad, float *const *slots, size_t n) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_has_head(const GpuWalk *g) { return 0; }

int gpu_walk_stage(GpuWalk *g, const float *in, int N) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_step_begin(GpuWalk *g, const float *in, int N, const int32_t *labels, const float *sample_weights,
                        uint64_t seed, uint64_t stream, const OptimRule *r) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_predict_begin(GpuWalk *g, const float *in, int N) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_end(GpuWalk *g, float *logits, float *probs, float *loss) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_walk_profile(const GpuWalk *g, char *buf, size_t size) { return 0; }

#include "gpu_head.h"

GpuHead *gpu_head_create(const Model *m, int cap, void *stream) {
    err_set("this build has no CUDA support (built with CUDA=0)");
    return NULL;
}

void gpu_head_free(GpuHead *h) {}
size_t gpu_head_bytes(const GpuHead *h) { return 0; }
int gpu_head_pinned(const GpuHead *h) { return 0; }

int gpu_head_step_prepare(GpuHead *h, const int32_t *labels, const float *sample_weights, int N, uint64_t seed,
                          uint64_t stream, const OptimRule *r) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_step_queue(GpuHead *h, const float *feat, float *d_feat) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_step_queued(GpuHead *h) { return err_set("this build has no CUDA support (built with CUDA=0)"); }

int gpu_head_predict(GpuHead *h, const float *feat, int N) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_results(GpuHead *h, float *logits, float *probs, float *loss) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_download(GpuHead *h, Model *m, float *const *slots) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_upload(GpuHead *h, const Model *m, float *const *slots) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}

int gpu_head_dropout_host(float *x, size_t n, float rate, uint64_t seed, uint64_t stream, uint8_t *mask) {
    return err_set("this build has no CUDA support (built with CUDA=0)");
}
