// One build runs everywhere: the executables start without any CUDA library
// (no libcud* NEEDED entry: the runtime is linked in, cuDNN is dlopen'ed),
// --version says what was found, --device auto runs on the CPU and
// --device cuda names the missing library. cuDNN is hidden with the
// loader's test hook VGGFT_CUDNN_LIBRARY (kernels/cudnn_api.h), so these
// run the same on a machine that has it. Also: the GPU code in a CUDA build
// covers sm_80, sm_90 and PTX for newer GPUs (Makefile CUDA_ARCHS).
#include <criterion/criterion.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gpu.h"
#include "gpu_base.h"
#include "model.h"
#include "testutil.h"

#define HIDDEN_CUDNN "/nonexistent/libcudnn.so.9"

static const char *tools[] = {"extract", "train", "finetune", "predict"};

// The folder holding the executables (as run_tool uses it).
static const char *bin_dir(void) {
    const char *bin = getenv("VGGFT_BIN");
    return bin ? bin : TEST_BUILD;
}

// The whole file at bin_dir()/name, or NULL when there is none.
static unsigned char *read_tool(const char *name, size_t *size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", bin_dir(), name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n);
    cr_assert(data && fread(data, 1, (size_t)n, f) == (size_t)n, "reading %s", path);
    fclose(f);
    *size = (size_t)n;
    return data;
}

// The DT_NEEDED entries of a 64-bit ELF file ("libc.so.6", ...), as
// `readelf -d` lists them: the dynamic section's entries, named in the
// string table its sh_link points to. Returns their count (at most max).
static int elf_needed(const unsigned char *elf, size_t size, const char **needed, int max) {
    cr_assert(size > sizeof(Elf64_Ehdr) && !memcmp(elf, ELFMAG, SELFMAG) && elf[EI_CLASS] == ELFCLASS64,
              "not a 64-bit ELF file");
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    cr_assert(eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) <= size);
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(elf + eh->e_shoff);
    int n = 0;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNAMIC) continue;
        const Elf64_Shdr *str = &sh[sh[i].sh_link];
        cr_assert(sh[i].sh_offset + sh[i].sh_size <= size && str->sh_offset + str->sh_size <= size);
        const Elf64_Dyn *d = (const Elf64_Dyn *)(elf + sh[i].sh_offset);
        for (size_t k = 0; k < sh[i].sh_size / sizeof *d && d[k].d_tag != DT_NULL; k++)
            if (d[k].d_tag == DT_NEEDED && n < max) {
                cr_assert(d[k].d_un.d_val < str->sh_size);
                needed[n++] = (const char *)(elf + str->sh_offset + d[k].d_un.d_val);
            }
    }
    return n;
}

// A library of the CUDA toolkit, cuDNN or the driver (not libcurl).
static int is_cuda_library(const char *name) {
    static const char *prefixes[] = {"libcuda.",   "libcudart", "libcudnn", "libcublas", "libcufft", "libcurand",
                                     "libcusolver", "libcusparse", "libnv"};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (!strncmp(name, prefixes[i], strlen(prefixes[i]))) return 1;
    return 0;
}

Test(nocuda, no_cuda_library_is_needed_to_start) {
    int checked = 0;
    for (size_t t = 0; t < sizeof tools / sizeof *tools; t++) {
        size_t size;
        unsigned char *elf = read_tool(tools[t], &size);
        if (!elf && t >= 3) continue;  // a tool not built in this tree yet
        cr_assert_not_null(elf, "%s/%s is not built", bin_dir(), tools[t]);
        const char *needed[64];
        int n = elf_needed(elf, size, needed, 64);
        int libc = 0;
        for (int i = 0; i < n; i++) {
            cr_expect(!is_cuda_library(needed[i]), "%s needs %s: it would not start on a node without CUDA",
                      tools[t], needed[i]);
            libc |= !strcmp(needed[i], "libc.so.6");
        }
        cr_expect(libc, "%s: libc.so.6 not among its %d NEEDED entries (the ELF walk is broken)", tools[t], n);
        free(elf);
        checked++;
    }
    cr_expect_geq(checked, 3);
}

Test(nocuda, version_says_what_was_found) {
    setenv("VGGFT_CUDNN_LIBRARY", HIDDEN_CUDNN, 1);
    for (size_t t = 0; t < 3; t++) {
        char *out;
        int rc = run_tool_timeout(tools[t], "--version", 60, &out);
        cr_expect_eq(rc, 0, "%s --version:\n%s", tools[t], out);
        cr_expect(strstr(out, "\nGPU: none ("), "%s", out);
        if (gpu_built()) {
            cr_expect(strstr(out, "\nCUDA driver: "), "%s", out);
            cr_expect(strstr(out, "\nCUDA runtime: "), "%s", out);
            cr_expect(strstr(out, "\ncuDNN: not found: " HIDDEN_CUDNN ": cannot open shared object file"), "%s", out);
            cr_expect(strstr(out, "\nGPU code: sm_80 sm_90 + PTX compute_90"), "%s", out);
        } else {
            cr_expect(strstr(out, "\nCUDA: not built in"), "%s", out);
        }
        free(out);
    }
}

Test(nocuda, device_cuda_names_the_missing_library) {
    setenv("VGGFT_CUDNN_LIBRARY", HIDDEN_CUDNN, 1);
    char *out;
    int rc = run_tool_timeout("extract", "--device cuda --data x --cache y", 60, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "extract: error: --device cuda: no usable GPU ("), "%s", out);
    if (gpu_built())
        cr_expect(strstr(out, "cuDNN not found: " HIDDEN_CUDNN ": cannot open shared object file"), "%s", out);
    else
        cr_expect(strstr(out, "built with CUDA=0"), "%s", out);
    free(out);
}

// The real thing, where the system allows it: cuDNN's folder hidden under
// an empty tmpfs in a private mount namespace (unshare -rm: no root needed
// where user namespaces are enabled), no hook. Skips where cuDNN is not
// installed or namespaces are not allowed (containers often forbid them).
Test(nocuda, starts_with_cudnn_folder_hidden) {
    if (!gpu_built()) cr_skip_test("built with CUDA=0");
    char *out;
    cr_assert_eq(run_tool_timeout("extract", "--version", 60, &out), 0, "%s", out);
    // "cuDNN: 9.19.0 for CUDA 13.1 (/usr/local/cuda-13.0/lib/libcudnn.so.9)"
    char *line = strstr(out, "\ncuDNN: "), *open_ = line ? strchr(line, '(') : NULL;
    char *slash = open_ ? strchr(open_, '\n') : NULL;
    if (!line || !open_ || !slash || strncmp(line, "\ncuDNN: not", 11) == 0) {
        free(out);
        cr_skip_test("cuDNN is not installed here: nothing to hide");
    }
    *slash = '\0';
    char *dir = open_ + 1, *last = strrchr(dir, '/');
    cr_assert_not_null(last);
    *last = '\0';
    // A cuDNN in a system folder (Debian's packages) cannot be hidden alone.
    size_t size;
    unsigned char *elf = read_tool("extract", &size);
    cr_assert_not_null(elf);
    const char *needed[64];
    int n_needed = elf_needed(elf, size, needed, 64);
    for (int i = 0; i < n_needed; i++) {
        char lib[2048];
        snprintf(lib, sizeof lib, "%s/%s", dir, needed[i]);
        if (access(lib, F_OK) == 0) {
            free(out), free(elf);
            cr_skip_test("cuDNN's folder %s also holds %s", dir, needed[i]);
        }
    }
    free(elf);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "unshare -rm sh -c 'mount -t tmpfs none \"%s\" && \"%s/extract\" --version' 2>&1", dir,
             bin_dir());
    if (system("unshare -rm sh -c 'mount -t tmpfs none /tmp' >/dev/null 2>&1") != 0) {
        free(out);
        cr_skip_test("mount namespaces are not allowed here");
    }
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, p);
    text[n] = '\0';
    int st = pclose(p);
    cr_expect_eq(st, 0, "%s:\n%s", cmd, text);
    // A second cuDNN elsewhere on the search path (a GPU machine with one in
    // the system and one in PyTorch's packages) is found instead: fine, and
    // nothing left to check.
    char *other = strstr(text, "\ncuDNN: ");
    if (other && strncmp(other, "\ncuDNN: not found", 18)) {
        char *end = strchr(other + 1, '\n');
        if (end) *end = '\0';
        char why[1200];  // dir points into out
        snprintf(why, sizeof why, "with %s hidden another cuDNN is found:%s", dir, other);
        free(out);
        cr_skip_test("%s", why);
    }
    cr_expect(strstr(text, "\ncuDNN: not found: libcudnn.so.9: cannot open shared object file"), "%s:\n%s", cmd,
              text);
    cr_expect(strstr(text, "\nGPU: none ("), "%s", text);
    free(out);
}

// The in-process view agrees: no usable GPU, and the reason names cuDNN.
Test(nocuda, gpu_count_gives_every_reason) {
    setenv("VGGFT_CUDNN_LIBRARY", HIDDEN_CUDNN, 1);
    char why[1024] = "";
    cr_expect_eq(gpu_count(why, sizeof why), 0);
    if (gpu_built()) cr_expect(strstr(why, "cuDNN not found: " HIDDEN_CUDNN), "%s", why);
    else cr_expect(strstr(why, "CUDA=0"), "%s", why);
}

// The GPU base refuses with the reason before touching the GPU.
Test(nocuda, gpu_base_says_cudnn_is_missing) {
    setenv("VGGFT_CUDNN_LIBRARY", HIDDEN_CUDNN, 1);
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 32;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_expect_null(gpu_base_create(&m, 2, GPU_FP32));
    if (gpu_built()) cr_expect(strstr(err_msg(), "GPU: cuDNN not found: " HIDDEN_CUDNN), "%s", err_msg());
    else cr_expect(strstr(err_msg(), "CUDA=0"), "%s", err_msg());
    model_free(&m);
}

Test(nocuda, auto_runs_on_the_cpu) {
    setenv("VGGFT_CUDNN_LIBRARY", HIDDEN_CUDNN, 1);
    char *top = make_shape_folder("nocuda", 3, 7);
    char args[4096], *out;
    snprintf(args, sizeof args,
             "--data '%s/data' --cache '%s/cache' --weights random --input-size 32 --batch 2 --threads 1 --device auto",
             top, top);
    int rc = run_tool_timeout("extract", args, 120, &out);
    cr_expect_eq(rc, 0, "extract %s:\n%s", args, out);
    cr_expect(strstr(out, "extract: CPU (no usable GPU: "), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--cache '%s/cache' --out '%s/head.h5' --epochs 1 --threads 1 --quiet", top, top);
    rc = run_tool_timeout("train", args, 120, &out);
    cr_expect_eq(rc, 0, "train %s:\n%s", args, out);
    free(out);
    snprintf(args, sizeof args, "%s/head.h5", top);
    cr_expect_eq(access(args, F_OK), 0, "no %s", args);
    remove_tree(top);
    free(top);
}

// The GPU code of a CUDA build: fatbins (CUDA's containers for a program's
// GPU code) hold one entry per -gencode target. A fatbin is a header {u32
// magic 0xBA55ED50, u16 version, u16 header size, u64 size of the entries}
// and entries {u16 kind (1 PTX, 2 ELF machine code), u16, u32 header size,
// u64 payload size, ..., u32 sm (80 for sm_80) at offset 28}.
typedef struct {
    int elf[32], n_elf;  // sm of each machine-code entry
    int max_ptx;         // newest PTX target, 0 if none
} GpuCode;

// Every fatbin in bin (one per .cu file), at most max; returns their count.
static int fatbins(const unsigned char *bin, size_t size, GpuCode *out, int max) {
    const unsigned char magic[4] = {0x50, 0xed, 0x55, 0xba};
    int n = 0;
    for (size_t i = 0; i + 16 <= size && n < max; i++) {
        if (memcmp(bin + i, magic, 4)) continue;
        uint16_t hs;
        uint64_t fs;
        memcpy(&hs, bin + i + 6, 2);
        memcpy(&fs, bin + i + 8, 8);
        if (hs < 16 || fs > size - i - hs) continue;  // the magic by chance, not a fatbin
        GpuCode *c = &out[n++];
        memset(c, 0, sizeof *c);
        size_t p = i + hs, end = p + fs;
        while (p + 32 <= end) {
            uint16_t kind;
            uint32_t ehs, sm;
            uint64_t payload;
            memcpy(&kind, bin + p, 2);
            memcpy(&ehs, bin + p + 4, 4);
            memcpy(&payload, bin + p + 8, 8);
            memcpy(&sm, bin + p + 28, 4);
            if (ehs < 32 || payload > end - p - ehs) break;
            if (kind == 2 && c->n_elf < 32) c->elf[c->n_elf++] = (int)sm;
            if (kind == 1 && (int)sm > c->max_ptx) c->max_ptx = (int)sm;
            p += ehs + payload;
        }
        i = end - 1;
    }
    return n;
}

static int has_elf(const GpuCode *c, int sm) {
    for (int i = 0; i < c->n_elf; i++)
        if (c->elf[i] == sm) return 1;
    return 0;
}

Test(nocuda, gpu_code_for_sm80_sm90_and_ptx) {
    if (!gpu_built()) cr_skip_test("built with CUDA=0");
    size_t size;
    unsigned char *bin = read_tool("extract", &size);
    cr_assert_not_null(bin);
    GpuCode code[64];
    int n = fatbins(bin, size, code, 64);
    cr_expect_geq(n, 1, "no GPU code found in extract (the fatbin walk is broken?)");
    for (int i = 0; i < n; i++) {  // every .cu file's code, the kernels' included
        cr_expect(has_elf(&code[i], 80), "fatbin %d: no sm_80 machine code (A100)", i);
        cr_expect(has_elf(&code[i], 90), "fatbin %d: no sm_90 machine code (H100/H200)", i);
        cr_expect_geq(code[i].max_ptx, 90, "fatbin %d: no PTX for compute_90 or newer: newer GPUs could not run it", i);
    }
    free(bin);
}
