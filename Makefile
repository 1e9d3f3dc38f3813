# vggft: Keras-style VGG transfer learning as C executables.
#
#   make                 build/extract build/train build/finetune (+ CUDA if found)
#   make CUDA=0          CPU-only build
#   make test            build and run every Criterion test
#   make SANITIZE=1 test the same under ASan + UBSan (separate build dir)
#   make test-valgrind   the image decoders' tests under valgrind
#   make test-emu        the GPU tests on the GPU emulation (tests/emu/; no GPU needed)
#   make test-emu-fma    its bit-for-bit tests with the kernels built with FMA contraction
#   make STATIC=1        link the Debian libraries statically (for GPU hosts
#                        that lack them; see scripts/device_build.sh)
#   make bench           benchmarks (scripts/bench.sh)
#   make fixtures        regenerate tests/fixtures/* (scripts/fixtures_*.py)
#   make CUDA_ARCHS="80 90"  GPU machine code to build (PTX of the last too)
#   make pipeline DATA=... VAL=... WEIGHTS=... OUT=...   the stages as make targets
#   make pipeline-plan DATA=...  (same variables) which stages that make would run
#   make test-slurm      the Slurm job scripts on a one-node cluster (root)

CC      ?= gcc
NVCC    ?= nvcc
CUDA_HOME ?= /usr/local/cuda

# CUDA is built in when nvcc and the cuDNN header are found, unless CUDA=0.
ifeq ($(origin CUDA), undefined)
  CUDA := $(if $(and $(shell command -v $(NVCC) 2>/dev/null),$(wildcard $(CUDA_HOME)/include/cudnn.h)),1,0)
endif

BUILD := build
ifeq ($(SANITIZE),1)
  BUILD := build/san
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(CUDA),0)
  ifneq ($(SANITIZE),1)
    BUILD := build/cpu
  endif
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
PKGS    := hdf5 libjpeg libturbojpeg lmdb libzstd openblas libcurl libpng libcrypto zlib

# -O3 vectorises the elementwise loops (optimizer updates, conversions); it
# never reorders float sums (that needs -ffast-math), so results are unchanged.
# -fno-math-errno (below) lets sqrtf vectorise: we never read errno from math.
# -ffp-contract=off: a * b + c stays two roundings, as written, even in code
# built for FMA targets (the AVX-512 clone of optim_apply); our FMAs are
# explicit (fmaf, intrinsics), so every path rounds as its reference does.
CFLAGS  ?= -O3 -g
# Option tables use positional initialisers with trailing fields left zero, and
# snprintf truncation of messages is intended, hence the two -Wno- flags.
CFLAGS  += -fno-math-errno -ffp-contract=off -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-format-truncation -pthread $(SANFLAGS) \
           -I. -Icommon -Ikernels $(shell pkg-config --cflags $(PKGS)) \
           -DVGGFT_VERSION='"$(VERSION)"'
# Each object lists the headers it includes in its .d file (included below),
# so touching a header rebuilds exactly the objects that include it.
DEPFLAGS := -MMD -MP
LDFLAGS += -pthread $(SANFLAGS)

ifeq ($(STATIC),1)
  # Debian's static archives (hdf5's szip filter needs libsz and libaec);
  # glibc's libm/libdl/libpthread, libgfortran and libstdc++ stay dynamic, and
  # so does libcurl: its static closure needs Kerberos and LDAP archives that
  # Debian does not ship. (The CUDA runtime is always static and cuDNN is
  # loaded at run time: see below.)
  STATIC_LIBS := $(filter-out -lm -lpthread -ldl -lgfortran -pthread,$(shell pkg-config --static --libs $(filter-out libcurl,$(PKGS))))
  LDLIBS  += -Wl,-Bstatic $(STATIC_LIBS) -lsz -laec -Wl,-Bdynamic $(shell pkg-config --libs libcurl) -lgfortran -ldl
else
  LDLIBS  += $(shell pkg-config --libs $(PKGS))
endif
LDLIBS  += -lm

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)

CUDA_ARCHS ?= 80 90
ifeq ($(CUDA),1)
  # Machine code for each of CUDA_ARCHS (80: A100, 90: H100/H200) and PTX of
  # the newest, which the driver compiles when the program starts on a newer
  # GPU: one binary for all of them.
  NVFLAGS ?= -O2 -std=c++17
  NVFLAGS += $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
             -gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS)) \
             -DVGGFT_CUDA_ARCHS='"$(CUDA_ARCHS)"' -Icommon -Ikernels -Xcompiler -Wall,-fPIC
  KERNEL_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard kernels/*.cu))
  # No CUDA library is needed to start (CPU nodes have none): the runtime is
  # linked in statically and finds the driver (libcuda.so.1) itself at run
  # time; cuDNN is dlopen'ed by kernels/cudnn_api.cu.
  LDLIBS  += $(CUDA_HOME)/lib64/libcudart_static.a -ldl -lrt -lstdc++
else
  KERNEL_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard kernels/*_none.c))
endif

LIB  := $(BUILD)/libvggft.a
BINS := $(BUILD)/extract $(BUILD)/train $(BUILD)/finetune $(BUILD)/predict
BINS += $(BUILD)/fashion_mnist  # the demo's data converter (scripts/fashion_mnist.c)
BINS += $(BUILD)/bench_gpu      # the GPU conv base alone (scripts/bench_gpu.c, scripts/device_run.sh)
BINS += $(BUILD)/bench_loader   # the image loader alone (scripts/bench_loader.c, scripts/device_run.sh)

.PHONY: all test test-valgrind clean bench fixtures print-link
all: $(BINS)
ifneq ($(BUILD),build)
	@mkdir -p build && for b in $(BINS); do ln -sf $$(realpath $$b) build/$$(basename $$b); done
endif

# Objects depend on the headers they include (.d files) and on the flags they
# were compiled with: $(BUILD)/flags is rewritten only when those change, so
# an edit elsewhere in this Makefile rebuilds nothing.
FLAGS_FILE := $(BUILD)/flags
FLAGS_NOW  := $(CC) $(CFLAGS) | $(NVCC) $(NVFLAGS)
ifneq ($(file <$(FLAGS_FILE)),$(FLAGS_NOW))
  $(shell mkdir -p $(BUILD))
  $(file >$(FLAGS_FILE),$(FLAGS_NOW))
endif
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

$(BUILD)/obj/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIB): $(COMMON_OBJ) $(KERNEL_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Each tool is the .c files of its folder on top of the shared library.
define TOOL_RULE
$(BUILD)/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c)) $(LIB)
	@rm -f $$@  # may be a link to the CPU-only build: never write through it
	$$(CC) $$^ -o $$@ $$(LDFLAGS) $$(LDLIBS)
endef
$(foreach t,extract train finetune predict,$(eval $(call TOOL_RULE,$(t))))

# Fashion-MNIST's IDX files -> class folders of PNGs (scripts/demo.sh,
# scripts/pipeline.mk); one file of scripts/ on top of the library.
$(BUILD)/fashion_mnist $(BUILD)/bench_gpu $(BUILD)/bench_loader: $(BUILD)/%: $(BUILD)/obj/scripts/%.o $(LIB)
	@rm -f $@  # may be a link to the CPU-only build: never write through it
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# --- tests ------------------------------------------------------------------
# One Criterion binary with every tests/test_*.c (one summary line), and one
# binary per file for focused runs: make build/tests/test_layers
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_UTIL := $(BUILD)/obj/tests/testutil.o
TEST_CFLAGS := -DTEST_FIXTURES='"$(CURDIR)/tests/fixtures"' -DTEST_BUILD='"$(CURDIR)/$(BUILD)"'

$(BUILD)/obj/tests/%.o: tests/%.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/test_%.o $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS) -lcriterion

$(BUILD)/tests/all: $(TEST_SRC:%.c=$(BUILD)/obj/%.o) $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS) -lcriterion

# Under the sanitizers, leaks inside Criterion itself are suppressed
# (tests/lsan.supp); every leak of ours still fails the run.
# A file system without locks, for the tests (tests/noflock.c): plain, not
# sanitized (it is preloaded into make and the shell too).
# ... and one that fails folder listings (tests/failfs.c).
$(BUILD)/tests/noflock.so $(BUILD)/tests/failfs.so: $(BUILD)/tests/%.so: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -shared -fPIC $< -o $@ -ldl

# The tools' start-up environment, as their children see it (tests/blas_env_probe.c).
$(BUILD)/tests/blas_env_probe: $(BUILD)/obj/tests/blas_env_probe.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

test: $(BUILD)/tests/all $(BINS) $(BUILD)/tests/noflock.so $(BUILD)/tests/failfs.so $(BUILD)/tests/blas_env_probe
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp VGGFT_BIN=$(CURDIR)/$(BUILD) $(BUILD)/tests/all -j2 --short-filename

# The decoders under valgrind: uninitialised reads (pixels a decoder did not
# write) are what ASan cannot see. The damaged-JPEG sweep and the other
# decoders' cases, about 20 s.
VALGRIND := valgrind -q --error-exitcode=9 --trace-children=yes
test-valgrind: $(BUILD)/tests/test_jpeg_damage $(BUILD)/tests/test_decoders
	$(VALGRIND) $(BUILD)/tests/test_jpeg_damage -j1 --short-filename
	$(VALGRIND) $(BUILD)/tests/test_decoders -j1 --short-filename

# The GPU emulation (tests/emu/): the GPU tests and the GPU paths of the
# tools on the host CPU, the CUDA runtime and cuDNN emulated, our kernels
# compiled by g++ as host code (tests/emu/launches.pl rewrites the launches).
# It needs CUDA's and cuDNN's headers only; no GPU, no driver, no libcudnn.
# Checks the host side and our kernels, not cuDNN's or the GPU's arithmetic:
# see tests/emu/gpu_emu.cpp. About 3 minutes here.
# EMU_FMA=1: the kernels built with FMA contraction (-mfma -ffp-contract=fast,
# in build/emu-fma), as nvcc builds them by default: the bit-for-bit tests
# then show a kernel that relies on a multiply and an add rounding apart
# without saying so with _rn intrinsics.
EMU := $(BUILD)/emu$(if $(EMU_FMA),-fma)
EMU_KERNEL_FLAGS := $(if $(EMU_FMA),-mfma -ffp-contract=fast)
CXX ?= g++
EMU_CXXFLAGS := -O2 -g -std=c++17 -ffp-contract=off -fno-math-errno -Wall -Wno-unused-parameter -Wno-sign-compare -pthread \
                -I. -Icommon -Ikernels -I$(CUDA_HOME)/include $(shell pkg-config --cflags openblas) \
                -DVGGFT_CUDA_ARCHS='"$(CUDA_ARCHS)"' $(SANFLAGS)
EMU_KERNEL_OBJ := $(patsubst kernels/%.cu,$(EMU)/obj/kernels/%.o,$(wildcard kernels/*.cu))
EMU_LIB := $(EMU)/libvggft.a
EMU_LDLIBS := $(filter-out %libcudart_static.a,$(LDLIBS)) -ldl -lrt -lstdc++
EMU_BINS := $(EMU)/extract $(EMU)/train $(EMU)/finetune $(EMU)/predict
EMU_TESTS := test_gpu test_gpu_walk

.SECONDARY: $(patsubst kernels/%.cu,$(EMU)/src/kernels/%.cpp,$(wildcard kernels/*.cu))
$(EMU)/src/kernels/%.cpp: kernels/%.cu tests/emu/launches.pl
	@mkdir -p $(dir $@)
	perl tests/emu/launches.pl $< > $@.tmp && mv $@.tmp $@

$(EMU)/obj/kernels/%.o: $(EMU)/src/kernels/%.cpp tests/emu/cuda_emu.h $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) $(EMU_KERNEL_FLAGS) $(DEPFLAGS) -include tests/emu/cuda_emu.h -c $< -o $@

# EMU_CUDNN_LIBRARY: the emulated binaries load the emulated cuDNN by default.
$(EMU)/obj/gpu_emu.o: tests/emu/gpu_emu.cpp tests/emu/cuda_emu.h $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -DEMU_CUDNN_LIBRARY='"$(CURDIR)/$(EMU)/libcudnn_emu.so"' $(DEPFLAGS) -c $< -o $@

$(EMU)/libcudnn_emu.so: tests/emu/cudnn_emu.cpp $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -fPIC -shared $< -o $@ $(shell pkg-config --libs openblas)

$(EMU_LIB): $(COMMON_OBJ) $(EMU_KERNEL_OBJ) $(EMU)/obj/gpu_emu.o
	@rm -f $@
	ar rcs $@ $^

# -rdynamic: libcudnn_emu.so calls the emulated runtime in the executable.
$(foreach t,extract train finetune predict,$(eval $(EMU)/$(t): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(t)/*.c)) $(EMU_LIB) ; \
	$$(CC) $$^ -o $$@ -rdynamic $$(LDFLAGS) $$(EMU_LDLIBS)))

$(EMU)/tests/gpu: $(EMU_TESTS:%=$(BUILD)/obj/tests/%.o) $(TEST_UTIL) $(EMU_LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ -rdynamic $(LDFLAGS) $(EMU_LDLIBS) -lcriterion

-include $(shell find $(EMU)/obj -name '*.d' 2>/dev/null)

# EMU_TEST_ARGS: more Criterion options, e.g. --filter 'gpu_walk/*'.
.PHONY: test-emu
ifneq ($(and $(wildcard $(CUDA_HOME)/include/cuda_runtime.h),$(wildcard $(CUDA_HOME)/include/cudnn.h)),)
test-emu: $(EMU)/tests/gpu $(EMU_BINS) $(EMU)/libcudnn_emu.so
	VGGFT_BIN=$(CURDIR)/$(EMU) $(EMU)/tests/gpu -j2 --short-filename $(EMU_TEST_ARGS)

# The bit-for-bit GPU tests again on kernels built with FMA contraction.
.PHONY: test-emu-fma
test-emu-fma:
	$(MAKE) test-emu EMU_FMA=1 EMU_TEST_ARGS="--filter '*/@(optimizer_kernel*|rgb8*|per_image*|rerun*|device_dropout*)'"

# The GPU tests again, the streams taking turns operation by operation at
# every synchronisation (EMU_SCHEDULE=interleave, tests/emu/gpu_emu.cpp):
# two streams sharing a buffer without an event between them show there.
.PHONY: test-emu-interleave
test-emu-interleave:
	EMU_SCHEDULE=interleave $(MAKE) test-emu
else
test-emu test-emu-fma test-emu-interleave:
	@echo "$@: skipped: the GPU emulation needs CUDA's and cuDNN's headers ($(CUDA_HOME)/include/cuda_runtime.h, cudnn.h)"
endif

# The link line of the tools (for scripts that link the library: bench.sh).
print-link:
	@echo $(LIB) $(LDFLAGS) $(LDLIBS)

bench: all
	bash scripts/bench.sh

# make pipeline DATA=DIR [VAL=DIR] [WEIGHTS=FILE|imagenet|random] [OUT=DIR]
# [EXTRACT_ARGS=...] [TRAIN_ARGS=...] [FINETUNE_ARGS=...]: extract -> train ->
# finetune (-> predict --eval) as file targets that redo only what changed
# (scripts/pipeline.mk).
.PHONY: pipeline pipeline-plan test-slurm
pipeline: all
	$(MAKE) -f scripts/pipeline.mk BIN=$(BUILD)
# The same variables: which stages a `make pipeline` would run now (the
# tools built first, as make pipeline builds them: the answer is for them).
pipeline-plan: all
	@$(MAKE) --no-print-directory -f scripts/pipeline.mk BIN=$(BUILD) plan

# The Slurm job chain (scripts/slurm/) on a one-node cluster started for it
# (as root; installs slurm-wlm and munge when missing): scripts/test_slurm.sh.
test-slurm: all
	bash scripts/test_slurm.sh $(BUILD)

# Regenerates the committed fixtures from Keras/Pillow/numpy: every
# scripts/fixtures_TOPIC.py writes tests/fixtures/TOPIC (make fixtures-TOPIC
# for one; FIXTURES_DIR=/tmp/x to write elsewhere and compare).
FIXTURES_DIR ?= tests/fixtures
FIXTURE_TOPICS := $(patsubst scripts/fixtures_%.py,%,$(wildcard scripts/fixtures_*.py))
fixtures: $(FIXTURE_TOPICS:%=fixtures-%)
fixtures-%: scripts/fixtures_%.py
	KERAS_BACKEND=jax python3 $< $(FIXTURES_DIR)/$*

clean:
	rm -rf build
