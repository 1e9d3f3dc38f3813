// Helpers shared by the Criterion tests: fixtures, temporary folders, and
// running the built executables.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "model.h"

// Path of a committed fixture: tests/fixtures/NAME (static buffer per call
// site is not needed: the result is malloc'd; free it).
char *fixture_path(const char *name);

// A .npy array (little-endian float32 '<f4', uint8 '|u1' or int32 '<i4',
// C order). data is malloc'd; nbytes = count * itemsize.
typedef struct {
    char dtype[8];   // "f4", "u1", "i4"
    int ndim;
    int shape[8];
    size_t count;
    void *data;
} Npy;
// Loads a .npy file; aborts the test with a message when it cannot.
Npy npy_load(const char *path);
void npy_free(Npy *a);

// A fresh empty directory under $TMPDIR (or /tmp); malloc'd path.
char *make_temp_dir(const char *tag);
// rm -rf of a directory made by make_temp_dir.
void remove_tree(const char *path);
// Writes bytes to a file (creates parents: no). Aborts the test on failure.
void write_file(const char *path, const void *data, size_t n);

// Runs a built executable (NAME is "extract", "train", ...) with a shell
// argument string; captures stdout+stderr into *output (malloc'd, may be
// NULL). Returns the exit status (or -1 if it did not exit normally).
int run_tool(const char *name, const char *args, char **output);
// The same under `timeout -s KILL SECONDS` (0: none): a run that blocks
// comes back as 137 instead of hanging the suite.
int run_tool_timeout(const char *name, const char *args, int seconds, char **output);
// Runs a shell command line (popen), capturing its stdout into *output
// (malloc'd; may be NULL); returns its exit status, -1 if it did not exit.
int run_command(const char *cmd, char **output);
// A whole file, NUL-terminated (malloc'd), its size in *n (may be NULL);
// aborts the test when it cannot be read.
char *read_file(const char *path, size_t *n);

// Max |a-b| and max |a-b| / (|b| + 1) over n floats.
float max_abs_diff(const float *a, const float *b, size_t n);

// Draws a test picture: a noisy background with a filled disc (kind 0) or
// square (kind 1) whose place and colours depend on seed. rgb: h*w*3.
void draw_shape(uint8_t *rgb, int w, int h, int kind, unsigned seed);
// A fresh temporary folder TOP (make_temp_dir(tag)) holding an image folder
// TOP/data/{circles,squares}/"img NN.jpg", n per class: image i of class k
// is (36 + 3i) x (34 + 2i), draw_shape(kind k, seed seed_step * k + i).
// Returns TOP (malloc'd).
char *make_shape_folder(const char *tag, int n, unsigned seed_step);
// Saves RGB8 as a baseline JPEG (libjpeg-turbo, 4:2:0).
void write_jpeg(const char *path, const uint8_t *rgb, int w, int h, int quality);

// Loads the .npy fixture tests/fixtures/<printf(fmt, ...)>.
Npy fixture_npy(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// --- rendered pictures (SVG plots) -------------------------------------------
// What svg_render_check found.
typedef struct {
    int w, h;          // the SVG's width and height (px, from its root tag)
    long ink_outside;  // pixels drawn outside the picture's box
    long ink_inside;   // dark pixels (a channel < 160) inside it
    char why[512];     // the failure, when it returns -1
} SvgCheck;
// Embeds the SVG file at svg_path, translated by a 40 px margin, in a larger
// white canvas (as a nested <svg overflow='visible'>, so whatever the picture
// draws beyond its own box shows instead of being clipped), renders that to
// png_out with rsvg-convert (librsvg2-bin) and counts ink outside the
// picture's box (text cut off at an edge draws there; anti-aliasing of the
// box's own edge is not counted) and dark pixels inside it.
// Returns 0 when rendered, 1 when rsvg-convert is not installed (the caller
// skips), -1 on any other failure (why says).
int svg_render_check(const char *svg_path, const char *png_out, SvgCheck *out);
// The Criterion form: asserts that the SVG renders, with no ink outside its
// box and some ink inside (not blank), and that each of texts[0..n) occurs in
// the file (XML-escaped, as text or tooltip); skips the test (cr_skip_test)
// when rsvg-convert is missing. The rendering is kept as svg_path + ".png"
// (where a failing test leaves it to look at).
void assert_svg_readable(const char *svg_path, const char *const *texts, int n);

// The GPU is hidden from every test (CUDA_VISIBLE_DEVICES="" from the
// runner on, so the executables the tests start see none either): results
// that tests compare bit for bit, with fixtures or between runs, must not
// depend on whether the test machine has a GPU. A GPU test calls
// test_show_gpus() first, before any CUDA call, to see the devices the
// runner was started with; it returns gpu_count() then (0: skip the test,
// the reason in why).
int test_show_gpus(char *why, size_t why_size);
// 1 when GPU 0 is the GPU emulation (make test-emu, tests/emu/): our code
// and kernels run, on the host CPU, so timings and memory sizes mean nothing
// there. Call after test_show_gpus().
int test_gpu_emulated(void);

// ROOT/{discs,squares}/NN.jpg: per_class 40x40 JPEGs of each shape (draw_shape
// with seeds from seed), the two-class folder of the fine-tuning tests.
void make_disc_square_folder(const char *root, int per_class, unsigned seed);

// A model file written by train or finetune, built from its own settings and
// loaded whole into m (aborts the test when it cannot be read). The
// returned model's cfg strings are the model's own copies (cut_name).
void load_model_file(const char *path, Model *m);

// Cache settings for tests: VGG16 random:seed=1 at 32x32, nearest, caffe,
// block5_pool features of FEAT_HW x FEAT_HW x FEAT_C in f16, and the K
// class names given (not copied).
CacheMeta test_cache_meta(int feat_hw, int feat_c, char **names, int k);

// The N of "Restoring model weights from the end of the best epoch: N." in a
// train or finetune log, or -1 when it says no such thing.
int restored_best_epoch(const char *log);

// The history CSVs a and b (train's, finetune's) hold the same rows but for
// the last column (an epoch's seconds): each row a Criterion expectation.
// Returns the rows compared, the header included.
int expect_same_history(const char *a, const char *b);

// The tests that set ulimit -v: ASan reserves terabytes of address space,
// so no limit fits it.
#ifdef __SANITIZE_ADDRESS__
#define SKIP_UNDER_ASAN() cr_skip_test("ASan reserves terabytes of address space: no ulimit -v fits it")
#else
#define SKIP_UNDER_ASAN() ((void)0)
#endif
