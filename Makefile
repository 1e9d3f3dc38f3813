# vggft: Keras-style VGG transfer learning as C executables.
#
#   make                 build/extract build/train build/finetune (+ CUDA if found)
#   make CUDA=0          CPU-only build
#   make test            build and run every Criterion test
#   make SANITIZE=1 test the same under ASan + UBSan (separate build dir)
#   make test-valgrind   the image decoders' tests under valgrind
#   make STATIC=1        link the Debian libraries statically (for GPU hosts
#                        that lack them; see scripts/device_build.sh)
#   make bench           benchmarks (scripts/bench.sh)

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
           -DVGGFT_VERSION='"$(VERSION)"' -DVGGFT_CUDA=$(CUDA)
LDFLAGS += -pthread $(SANFLAGS)

ifeq ($(STATIC),1)
  # Debian's static archives; glibc, libstdc++ and the CUDA runtime stay dynamic.
  LDLIBS  += -Wl,-Bstatic $(shell pkg-config --static --libs $(PKGS)) -Wl,-Bdynamic -lgfortran -ldl
else
  LDLIBS  += $(shell pkg-config --libs $(PKGS))
endif
LDLIBS  += -lm

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)

ifeq ($(CUDA),1)
  NVFLAGS ?= -O2 -std=c++17 -arch=sm_90 -gencode arch=compute_90,code=compute_90
  NVFLAGS += -Icommon -Ikernels -Xcompiler -Wall,-fPIC
  KERNEL_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard kernels/*.cu))
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcudart -lstdc++
else
  KERNEL_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard kernels/*_none.c))
endif

LIB  := $(BUILD)/libvggft.a
BINS := $(BUILD)/extract $(BUILD)/train $(BUILD)/finetune

.PHONY: all test test-valgrind clean bench fixtures
all: $(BINS)
ifneq ($(BUILD),build)
	@mkdir -p build && for b in $(BINS); do ln -sf $$(realpath $$b) build/$$(basename $$b); done
endif

$(BUILD)/obj/%.o: %.c $(wildcard common/*.h kernels/*.h */*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(wildcard common/*.h kernels/*.h) Makefile
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(COMMON_OBJ) $(KERNEL_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Each tool is the .c files of its folder on top of the shared library.
define TOOL_RULE
$(BUILD)/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c)) $(LIB)
	@rm -f $$@  # may be a link to the CPU-only build: never write through it
	$$(CC) $$^ -o $$@ $$(LDFLAGS) $$(LDLIBS)
endef
$(foreach t,extract train finetune,$(eval $(call TOOL_RULE,$(t))))

# --- tests ------------------------------------------------------------------
# One Criterion binary with every tests/test_*.c (one summary line), and one
# binary per file for focused runs: make build/tests/test_layers
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_UTIL := $(BUILD)/obj/tests/testutil.o
TEST_CFLAGS := -DTEST_FIXTURES='"$(CURDIR)/tests/fixtures"' -DTEST_BUILD='"$(CURDIR)/$(BUILD)"'

$(BUILD)/obj/tests/%.o: tests/%.c tests/testutil.h $(wildcard common/*.h kernels/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) -c $< -o $@

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/test_%.o $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS) -lcriterion

$(BUILD)/tests/all: $(TEST_SRC:%.c=$(BUILD)/obj/%.o) $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS) -lcriterion

test: $(BUILD)/tests/all $(BINS)
	VGGFT_BIN=$(CURDIR)/$(BUILD) $(BUILD)/tests/all -j2 --short-filename

# The decoders under valgrind: uninitialised reads (pixels a decoder did not
# write) are what ASan cannot see. The damaged-JPEG sweep and the other
# decoders' cases, about 20 s.
VALGRIND := valgrind -q --error-exitcode=9 --trace-children=yes
test-valgrind: $(BUILD)/tests/test_jpeg_damage $(BUILD)/tests/test_decoders
	$(VALGRIND) $(BUILD)/tests/test_jpeg_damage -j1 --short-filename
	$(VALGRIND) $(BUILD)/tests/test_decoders -j1 --short-filename

bench: all
	bash scripts/bench.sh

fixtures:
	python3 scripts/make_fixtures.py tests/fixtures

clean:
	rm -rf build
