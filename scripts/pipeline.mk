# The vggft pipeline as make targets: extract -> train -> finetune ->
# predict --eval, each a real file that is remade only when what it was made
# from changed.
#
#   make -f scripts/pipeline.mk DATA=data/train VAL=data/validation \
#        WEIGHTS=imagenet OUT=run1 TRAIN_ARGS='--lr 1e-3 --epochs 30'
#   make pipeline DATA=... VAL=... WEIGHTS=... OUT=...   (from the top Makefile)
# Partial targets (caches, head, model, report) go after the -f form:
#   make -f scripts/pipeline.mk BIN=build DATA=... OUT=... head
#
# What each target depends on:
#   OUT/cache/train.done  the training images (a listing of the files Keras
#                         lists in DATA: their paths, sizes and mtimes), the
#                         weights (WEIGHTS: the file's size and mtime, when
#                         it is one) and the extraction settings
#                         (EXTRACT_ARGS, DATA, WEIGHTS)
#   OUT/cache/val.done    the same for VAL
#   OUT/head.h5           both caches and the head settings (TRAIN_ARGS)
#   OUT/model.h5          the head, both caches (their content: the images'
#                         bytes, labels and the weights' features) and the
#                         fine-tuning settings (FINETUNE_ARGS)
#   OUT/eval_report.txt   predict --eval on VAL: the model (the head with
#                         FINETUNE=0), the validation cache (its images) and
#                         PREDICT_ARGS (only when BIN/predict exists and VAL
#                         is given)
# so changing TRAIN_ARGS reruns train and what follows, never extract; a
# second make with nothing changed does nothing.
#
# How make sees changes it cannot see in mtimes: every run of this file
# writes OUT/.pipeline/NAME.listing (the image files, `find -L`, with sizes
# and mtimes, sorted) and OUT/.pipeline/NAME.* settings (the variables a
# stage reads), each only when its text differs from the file's. That
# happens while make reads this file (before any rule runs); under make -n
# and make -q nothing is written. Files Keras does not list (notes.txt, a
# .csv) are not in the listing: they rerun nothing.
#
# What a target was made from: a stage's recipe, holding the stage's lock,
# writes the stage's key to OUT/.pipeline/STAGE.started before it starts the
# tool, and copies it to STAGE.made once the target is in place. The key is
# the settings text its make read (the listing's sha256 for a cache) and
# the name, size and mtime of each target the stage is made from (the
# caches' stamps, the head, the model). A make takes an existing target as
# made from what it sees when STAGE.made and STAGE.started both hold the key
# this make computes; else the target depends on the phony pipeline-changed
# and is remade. Contents, not mtimes: a make that only read this file and
# stopped (refused by a lock, killed) cannot make a target look up to date
# or out of date, however its timing falls against another make's tool. The
# key holds sizes and mtimes as numbers, not paths or local times: OUT
# spelled otherwise, moved, or read under another TZ is the same. An OUT of
# an earlier pipeline.mk, whose stages have no STAGE.made yet, goes by the
# settings files' mtimes until each stage runs. make -t records the keys
# of what it touches.
#
# Features, not files: a cache's stamp OUT/cache/NAME.done holds what
# `extract --info` says of the cache's content (settings, records per class,
# the records' count, keys and digest) and is rewritten only when that
# changed. A touched or copied-back image (same bytes), a moved folder, or
# a replaced weights file of the same values makes extract run (it keeps
# every record whose file is unchanged: a quick rerun) but leaves the stamp,
# and with it train, finetune and predict, alone (GNU make does not remake a
# target whose prerequisite's recipe left it unchanged, and their keys name
# the stamp's unchanged mtime); the cache's NAME.made then holds the new
# listing, so the next make does nothing.
#
# Interrupted runs: a cache is a folder that extract fills as it goes; its
# stamp is written only after extract exited 0 (and is out of date while a
# later run did not finish); the tools write their .h5 outputs atomically
# (temporary file, rename); the report is moved into place after its
# pictures; .DELETE_ON_ERROR removes a target whose recipe failed. Rerunning
# make continues an interrupted stage: extract always gets --overwrite (the
# pipeline's cache belongs to its DATA), which keeps every record when the
# cache has this run's settings and starts it over when they differ (renamed
# class, other weights, other EXTRACT_ARGS); train and finetune get
# --resume-if-same: they continue their checkpoint when it was written with
# the same settings, head and data (which they check themselves: a run with
# only more --epochs continues, also a finished one), else start over and
# replace it, with a note saying what differs (RESUME=0 or make -B: start
# over). A tool stopped by a signal with its state saved exits 75: its own
# line and the recipe's then say to rerun the same make.
#
# Forcing a stage: `make -B ...` redoes every stage (extract keeps its
# records: same features; train and finetune start over). One stage: remove
# its outputs, checkpoint included (rm OUT/head.h5 OUT/head.ckpt); a cache
# from scratch: rm -r OUT/cache/train OUT/cache/train.done.
#
# make -j is safe: each file is written by one rule only (the two caches run
# in parallel, each with its own threads: add --threads N to EXTRACT_ARGS to
# share the cores). Two makes on one OUT: each stage holds a lock
# (OUT/.pipeline/STAGE.lock, flock(1) of util-linux) while it runs (its tool
# keeps it, also after its make is gone), and a make that finds a stage's
# lock held stops with an error saying so; that make records nothing (see
# STAGE.made above), so the next make goes by what the target was made with.
#
# Refused before anything is written: paths (DATA, VAL, OUT, WEIGHTS, BIN)
# with spaces or quotes (make's own limit); an OUT with one of
# : % ; * ? [ (make's syntax) or ` | & < > ( ) (the shell's); OUT inside DATA
# or VAL (the listing would see the pipeline's own files); FINETUNE or RESUME
# other than one word, 1 or 0. Not tracked: the tools'
# binaries (a rebuilt tool does not rerun the pipeline: make -B) and what
# WEIGHTS=imagenet resolves to.

BIN      ?= build
DATA     ?=
VAL      ?=
WEIGHTS  ?= imagenet
OUT      ?= pipeline
# Options of each stage, passed as they are (see each tool's --help).
EXTRACT_ARGS  ?=
TRAIN_ARGS    ?=
FINETUNE_ARGS ?=
PREDICT_ARGS  ?=
# FINETUNE=0: stop after the head (the report then evaluates the head).
FINETUNE ?= 1
RESUME   ?= 1

# What a stopped tool tells its user: under make, not "--resume" (the
# pipeline adds it) but this (common/stop.h).
export VGGFT_RERUN_HINT := rerun the same make to continue (it resumes)

.DELETE_ON_ERROR:
.SUFFIXES:
.PHONY: all caches head model report plan
# Rules made while parsing (pipeline_commit) would otherwise be the default goal.
.DEFAULT_GOAL := all

# --- checks, before anything is created ---------------------------------------
# A path make can pass to the shell: one word, no quotes.
# (An empty value is not a bad path: VAL is optional, DATA's absence has its own message.)
pipeline_bad_path = $(or $(filter-out 0 1,$(words $2)),$(findstring ',$2),$(findstring ",$2))
$(foreach v,DATA VAL OUT WEIGHTS BIN,$(if $(call pipeline_bad_path,$v,$($v)),\
  $(error $v='$($v)': paths with spaces or quotes are not supported (make splits them); use a link without them)))
# OUT names make's targets: make reads : % ; * ? [ in them as its own syntax;
# and its recipes' shell ` | & < > ( ) (the shell runs what is in backticks,
# even in an echo; a | breaks the rule). (The parentheses are variables: make
# would read them as its own in a function's argument.)
pipeline_lparen := (
pipeline_rparen := )
$(if $(strip $(foreach c,: % ; * ? [ ` | & < > $(pipeline_lparen) $(pipeline_rparen),$(findstring $c,$(OUT)))),\
  $(error OUT='$(OUT)': make reads : % ; * ? [ in a target's path as its own syntax, the shell ` | & < > ( ) in its recipes; use a name without them))
# Flags: one word, 1 or 0 (make would take "yes" or "true" for 0; filter-out
# alone would take "0 1").
$(foreach v,FINETUNE RESUME,$(if $(filter-out 0 1,$($v))$(filter-out 1,$(words $($v))),\
  $(error $v='$($v)': want 1 or 0)))
ifeq ($(strip $(DATA)),)
  $(error DATA=DIR is required: the training images, one subfolder per class)
endif
ifeq ($(wildcard $(DATA)/.),)
  $(error DATA=$(DATA): no such folder$(if $(filter /%,$(DATA)),, (a relative path is read from the folder make runs in, $(CURDIR); with make -C give an absolute one)))
endif
ifneq ($(strip $(VAL)),)
  ifeq ($(wildcard $(VAL)/.),)
    $(error VAL=$(VAL): no such folder$(if $(filter /%,$(VAL)),, (a relative path is read from the folder make runs in, $(CURDIR); with make -C give an absolute one)))
  endif
endif
ifeq ($(strip $(OUT)),)
  $(error OUT=DIR must not be empty)
endif
# OUT inside DATA or VAL (or equal): the listing would take the pipeline's
# files for images. Compared as written (abspath) and with links resolved.
pipeline_out_abs := $(abspath $(OUT)) $(realpath $(OUT))
pipeline_inside = $(strip $(foreach d,$(abspath $2) $(realpath $2),$(filter $d $d/%,$(pipeline_out_abs))))
$(foreach v,DATA VAL,$(if $(strip $($v)),$(if $(call pipeline_inside,$v,$($v)),\
  $(error OUT=$(OUT) lies inside $v=$($v): its images' listing would include the pipeline's own files; put OUT elsewhere))))

ifeq ($(wildcard $(BIN)/extract),)
  $(error BIN=$(BIN): no extract there: build the tools (make), or give BIN=the folder that holds them$(if $(filter /%,$(BIN)),, (a relative path is read from $(CURDIR))))
endif

S := $(OUT)/.pipeline
# The weights as a file, when WEIGHTS names one (not imagenet, random).
WEIGHTS_FILE := $(filter-out imagenet random,$(WEIGHTS))
ifneq ($(WEIGHTS_FILE),)
  ifeq ($(wildcard $(WEIGHTS_FILE)),)
    $(error WEIGHTS=$(WEIGHTS): no such file (or imagenet, random))
  endif
endif
# make's one-letter flags (the first word of MAKEFLAGS; not a NAME=VALUE).
MAKE_FLAGS1 := $(filter-out --% %=%,$(firstword -$(MAKEFLAGS)))
# -B (make -B, --always-make): train and finetune start over too.
ifneq ($(findstring B,$(MAKE_FLAGS1)),)
  RESUME := 0
endif
# -n and -q only look: they must not record new settings or listings (a dry
# run with other TRAIN_ARGS would otherwise make the next real make retrain).
# There a file whose text would change is made out of date instead.
# So does the plan target (below), a goal of its own: beside others its dry
# reading would have them run without their settings recorded.
ifneq ($(filter plan,$(MAKECMDGOALS)),)
  ifneq ($(words $(MAKECMDGOALS)),1)
    $(error plan is a goal of its own: give it alone (make ... plan))
  endif
endif
PIPELINE_DRY := $(if $(findstring n,$(MAKE_FLAGS1))$(findstring q,$(MAKE_FLAGS1))$(filter plan,$(MAKECMDGOALS)),1)

# Temporary files are this make's own (its process id): two makes parsing at
# once never write one temporary file.
PIPELINE_TMP := .tmp$(shell echo $$PPID)
# $(call pipeline_keep,FILE,TEXT): FILE holds TEXT (plus a newline), rewritten
# only when it differs, so its mtime says when TEXT last changed.
# -n and -q write nothing under OUT (which may be someone else's, or not be
# there yet): their temporary files go to a folder of their own in TMPDIR,
# removed once this file is read.
PIPELINE_DRY_DIR := $(if $(PIPELINE_DRY),$(shell mktemp -d "$${TMPDIR:-/tmp}/vggft-pipeline.XXXXXX"))
pipeline_tmp = $(if $(PIPELINE_DRY),$(PIPELINE_DRY_DIR)/$(notdir $1),$1$(PIPELINE_TMP))
pipeline_commit = $(if $(PIPELINE_DRY),$(if $(shell cmp -s '$(call pipeline_tmp,$1)' '$1' || echo changed),$(eval $1: pipeline-changed ; @:))$(shell rm -f '$(call pipeline_tmp,$1)'),$(shell cmp -s '$1$(PIPELINE_TMP)' '$1' && rm -f '$1$(PIPELINE_TMP)' || mv -f '$1$(PIPELINE_TMP)' '$1'))
pipeline_keep = $(file >$(call pipeline_tmp,$1),$2)$(call pipeline_commit,$1)
# $(call pipeline_listing,FILE,DIR,NAME): FILE holds DIR's images (path, size,
# mtime, ctime), sorted; rewritten only when it differs; DIGEST_NAME is its sha256.
# Images: the files of the class folders whose names Keras lists
# (common/dataset.c: png, jpg, jpeg, bmp, ppm, tif, tiff, any case). find -L
# also follows links to folders inside a class, which Keras does not: at worst
# a needless extract run.
PIPELINE_IMAGES := \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.bmp' -o -iname '*.ppm' \
                      -o -iname '*.tif' -o -iname '*.tiff' \)
# The status-change time (%C@) too: an image skipped as unreadable and then
# made readable (chmod) has the same size and mtime, but must be extracted.
# The class folders too, by name: an empty one is a class (as Keras counts
# it), so adding one changes the cache.
pipeline_listing = $(shell { find -L '$2' -mindepth 1 -maxdepth 1 -type d -printf '%P/\n'; \
                     find -L '$2' -mindepth 2 -type f $(PIPELINE_IMAGES) -printf '%P %s %T@ %C@\n'; } | \
                     LC_ALL=C sort >'$(call pipeline_tmp,$1)')$(eval DIGEST_$3 := $(firstword $(shell \
                     sha256sum <'$(call pipeline_tmp,$1)')))$(call pipeline_commit,$1)
WEIGHTS_ID := $(if $(WEIGHTS_FILE),$(shell stat -L -c '%s %Y' '$(WEIGHTS_FILE)'))

CACHES := $(OUT)/cache/train.done $(if $(strip $(VAL)),$(OUT)/cache/val.done)
VAL_CACHE := $(if $(strip $(VAL)),$(OUT)/cache/val.done)
HEAD   := $(OUT)/head.h5
MODEL  := $(OUT)/model.h5
REPORT_EXT := $(if $(findstring json,$(PREDICT_ARGS)),json,txt)
REPORT := $(OUT)/eval_report.$(REPORT_EXT)

# Each stage's settings as this make reads them (TEXT_STAGE), and the targets
# it is made from (FROM_STAGE).
TEXT_train  := data=$(abspath $(DATA)) weights=$(WEIGHTS) $(WEIGHTS_ID) $(EXTRACT_ARGS)
TEXT_val    := data=$(abspath $(VAL)) weights=$(WEIGHTS) $(WEIGHTS_ID) $(EXTRACT_ARGS)
TEXT_head   := $(TRAIN_ARGS)
TEXT_model  := weights=$(WEIGHTS) $(FINETUNE_ARGS)
TEXT_report := finetune=$(FINETUNE) weights=$(WEIGHTS) $(PREDICT_ARGS)
FROM_head   := $(CACHES)
FROM_model  := $(HEAD) $(CACHES)
FROM_report := $(if $(filter 1,$(FINETUNE)),$(MODEL),$(HEAD)) $(VAL_CACHE)

$(if $(PIPELINE_DRY),,$(shell mkdir -p '$(S)' '$(OUT)/cache'))
$(call pipeline_listing,$(S)/train.listing,$(DATA),train)
$(call pipeline_keep,$(S)/train.extract,$(TEXT_train))
$(call pipeline_keep,$(S)/head.settings,$(TEXT_head))
$(call pipeline_keep,$(S)/model.settings,$(TEXT_model))
ifneq ($(strip $(VAL)),)
  $(call pipeline_listing,$(S)/val.listing,$(VAL),val)
  $(call pipeline_keep,$(S)/val.extract,$(TEXT_val))
  $(call pipeline_keep,$(S)/report.settings,$(TEXT_report))
endif
$(if $(PIPELINE_DRY_DIR),$(shell rm -rf '$(PIPELINE_DRY_DIR)'))

# --- what each run was made from ----------------------------------------------
# $(call pipeline_key,STAGE): a shell command that prints STAGE's key: its
# settings text as this make parsed it, its listing's digest (a cache), and
# the size and mtime (s since 1970, to the ns) of each target it is made from.
pipeline_quote = '$(subst ','\'',$1)'
pipeline_key = { printf '%s\n' $(call pipeline_quote,$(TEXT_$1)) $(DIGEST_$1); \
  $(if $(FROM_$1),stat -L -c '%s %.9Y' $(foreach f,$(FROM_$1),'$f');) }
# A stage's recipe writes its key to OUT/.pipeline/STAGE.started under the
# stage's lock before it starts the tool, and copies it to STAGE.made when
# the target is in place. The target was made from what this make sees when
# both equal this make's key: then the stage needs nothing else (its
# settings files are not prerequisites: a make that only parsed, refused by
# the lock or killed, cannot move them into it). Otherwise it depends on
# pipeline-changed (phony: out of date). Only reads: the same under -n and -q.
pipeline_current = $(shell $(call pipeline_key,$1) 2>/dev/null | cmp -s - '$(S)/$1.made' && \
  cmp -s '$(S)/$1.made' '$(S)/$1.started' && echo yes)
# $(call pipeline_inputs,STAGE,TARGET,FILES): TARGET's prerequisites besides
# the targets it is made from. FILES (the settings files, by mtime) where
# TARGET is missing (it is made anyway) or neither STAGE.made nor
# STAGE.started exists (an OUT of an older pipeline.mk, until the stage runs).
pipeline_inputs = $(if $(and $(wildcard $2),$(wildcard $(S)/$1.made $(S)/$1.started)),$(if \
  $(call pipeline_current,$1),,pipeline-changed),$3)
pipeline_started = $(call pipeline_key,$1) >'$(S)/$1.started' || exit 1;
pipeline_made = cp -f '$(S)/$1.started' '$(S)/$1.made$(PIPELINE_TMP)' && mv -f '$(S)/$1.made$(PIPELINE_TMP)' '$(S)/$1.made'
# make -t (touch): the targets are declared made from what this make sees,
# so each recipe's `+` line (run under -t too) records this make's key as
# made; otherwise that line does nothing.
pipeline_touched = $(if $(findstring t,$(MAKE_FLAGS1)),$(call pipeline_key,$1) >'$(S)/$1.made' && \
  cp -f '$(S)/$1.made' '$(S)/$1.started',:)

# The last stage there is: the report needs predict and a validation folder.
HAS_REPORT := $(and $(wildcard $(BIN)/predict),$(strip $(VAL)))
ifneq ($(HAS_REPORT),)
  all: $(REPORT)
else ifeq ($(FINETUNE),1)
  all: $(MODEL)
else
  all: $(HEAD)
endif
caches: $(CACHES)
head: $(HEAD)
model: $(MODEL)
report: $(REPORT)

# plan: each stage of `all`, and whether a make with these settings would
# run it now: `make -q` of its target alone, which only looks (as plan does:
# it records nothing), once as it is and once with the stages before it
# taken as done (-o): out of date only the first way, it runs if a stage
# before it changes what it makes (a rerun extract whose features are the
# same keeps what follows).
PLAN_STAGES := $(CACHES) $(HEAD) $(if $(filter 1,$(FINETUNE)),$(MODEL)) $(if $(HAS_REPORT),$(REPORT))
plan:
	@old=; for t in $(PLAN_STAGES); do \
	  q() { $(MAKE) --no-print-directory -s -q -f '$(firstword $(MAKEFILE_LIST))' "$$@" >/dev/null 2>&1; }; \
	  q "$$t"; rc=$$?; \
	  if [ $$rc = 1 ] && [ -n "$$old" ] && q $$old "$$t"; then rc=3; fi; \
	  case $$rc in 0) s="up to date" ;; 1) s="would run" ;; 3) s="would run if a stage before it changes what it makes" ;; \
	    *) s="unknown (make -q failed: make -n says why)" ;; esac; \
	  echo "$$t: $$s"; old="$$old -o $$t"; \
	done

# $(call pipeline_resume,STAGE,CKPT): r=--resume-if-same (RESUME=1): the
# tool continues CKPT when it was written with these settings, head and
# data, which it checks itself (more --epochs may continue a finished run),
# and starts over, with a note, from one of other settings; r= otherwise.
pipeline_resume = r=$(if $(filter 1,$(RESUME)),--resume-if-same);
# $(call pipeline_lock,STAGE): holds OUT/.pipeline/STAGE.lock (fd 9, kept by
# the tool the recipe starts, also when make is gone) or stops, when another
# make or its tool holds it. Without flock(1): no lock.
FLOCK := $(shell command -v flock 2>/dev/null)
# A file system without locks (Lustre without -o flock, NFS without lockd):
# flock fails otherwise than on a held lock (exit 200): go on without one,
# as the tools do, with a note.
pipeline_lock = $(if $(FLOCK),exec 9>'$(S)/$1.lock' && { flock -n -E 200 9 || { if [ $$? -eq 200 ]; then \
  echo "pipeline.mk: another make (or a tool it started) is running stage '$(or $2,$1)' on $(OUT) (it holds \
  $(S)/$1.lock): wait for it to finish and rerun" >&2; exit 1; fi; echo "pipeline.mk: note: no lock on \
  $(S)/$1.lock (this file system has none?): two makes on $(OUT) at once are not kept apart" >&2; }; };)
# $(call pipeline_stopped,STAGE): after `TOOL ... ||`: exits with the tool's
# status, saying what to do when it is 75 (stopped by a signal, its state
# saved; the tool says so too, through VGGFT_RERUN_HINT).
pipeline_stopped = { rc=$$?; [ $$rc -ne 75 ] || echo "pipeline.mk: stage '$1' stopped (exit 75), its state \
  saved: rerun the same make to continue" >&2; exit $$rc; }

# --- extract: one cache per folder -------------------------------------------
# extract always gets --overwrite: the same settings resume the cache (only new
# or changed images are extracted, the rest kept), others start it over. The
# stamp is the cache's content (extract --info, less the lines about where and
# when), rewritten only when it changed; when it did not, the stamp stays
# current (and the listing and settings are set back to its mtime, for
# makes that go by them: an OUT without NAME.made).
$(OUT)/cache/train.done: DIR := $(DATA)
$(OUT)/cache/val.done:   DIR := $(VAL)
$(OUT)/cache/train.done: $(call pipeline_inputs,train,$(OUT)/cache/train.done,$(S)/train.listing $(S)/train.extract)
ifneq ($(strip $(VAL)),)
$(OUT)/cache/val.done: $(call pipeline_inputs,val,$(OUT)/cache/val.done,$(S)/val.listing $(S)/val.extract)
endif
$(CACHES): $(OUT)/cache/%.done:
	@$(call pipeline_lock,$*,extract of $*) $(call pipeline_started,$*) \
	echo "$(BIN)/extract --data $(DIR) --cache $(OUT)/cache/$* --weights $(WEIGHTS) $(EXTRACT_ARGS) --overwrite"; \
	'$(BIN)/extract' --data '$(DIR)' --cache '$(OUT)/cache/$*' --weights '$(WEIGHTS)' $(EXTRACT_ARGS) --overwrite \
	    || $(call pipeline_stopped,extract of $*); \
	'$(BIN)/extract' --info '$(OUT)/cache/$*' >'$(S)/$*.info' || exit $$?; \
	grep -v -e '^cache:' -e '^image folder:' -e '^made by:' -e '^on disk:' '$(S)/$*.info' >'$(S)/$*.content' \
	    || { rm -f '$(S)/$*.content'; echo "$(OUT)/cache/$*: cannot write the stamp (disk full?)" >&2; exit 1; }; \
	if [ -f '$@' ] && cmp -s '$(S)/$*.content' '$@'; then \
	    rm -f '$(S)/$*.content'; touch -r '$@' '$(S)/$*.listing' '$(S)/$*.extract'; \
	    echo "$(OUT)/cache/$*: the features did not change: what was made from them is kept"; \
	else mv -f '$(S)/$*.content' '$@'; fi && $(call pipeline_made,$*)
	+@$(call pipeline_touched,$*)

# --- train: the head, from the caches ----------------------------------------
# The head (and the model below) stay in place while their tool runs: the
# tools replace them atomically when done, and a run that fails (a typo in
# TRAIN_ARGS, a lock held) leaves the finished one, not none. That it is of
# other settings the stage's keys say (pipeline_inputs: not current until
# its STAGE.made is this make's).
$(HEAD): $(CACHES) $(call pipeline_inputs,head,$(HEAD),$(S)/head.settings)
	@$(call pipeline_lock,head) \
	$(call pipeline_resume,head,$(OUT)/head.ckpt) $(call pipeline_started,head) \
	echo "$(BIN)/train --cache $(OUT)/cache/train $(if $(strip $(VAL)),--val-cache $(OUT)/cache/val) --out $@ $(TRAIN_ARGS) $$r"; \
	'$(BIN)/train' --cache '$(OUT)/cache/train' $(if $(strip $(VAL)),--val-cache '$(OUT)/cache/val') --out '$@' \
	    $(TRAIN_ARGS) $$r || $(call pipeline_stopped,head); \
	$(call pipeline_made,head)
	+@$(call pipeline_touched,head)

# --- finetune: the top of the base with the head, from the images ------------
# The images of DATA and VAL through the caches' stamps: they change with the
# images' bytes and labels (and the weights' features), not with mtimes.
$(MODEL): $(HEAD) $(CACHES) $(call pipeline_inputs,model,$(MODEL),$(S)/model.settings)
	@$(call pipeline_lock,model) \
	$(call pipeline_resume,model,$(OUT)/model.ckpt) $(call pipeline_started,model) \
	echo "$(BIN)/finetune --data $(DATA) $(if $(strip $(VAL)),--val-data $(VAL)) --weights $(WEIGHTS) --head $(HEAD) --out $@ $(FINETUNE_ARGS) $$r"; \
	'$(BIN)/finetune' --data '$(DATA)' $(if $(strip $(VAL)),--val-data '$(VAL)') --weights '$(WEIGHTS)' \
	    --head '$(HEAD)' --out '$@' $(FINETUNE_ARGS) $$r || $(call pipeline_stopped,model); \
	$(call pipeline_made,model)
	+@$(call pipeline_touched,model)

# --- predict --eval: the report on the validation folder ---------------------
# predict --report PREFIX writes PREFIX_report.txt (.json with --format json
# in PREDICT_ARGS), PREFIX_confusion.svg and PREFIX_errors.svg, one after the
# other; its per-image lines go to OUT/eval_predictions.txt. They are made in
# OUT/.pipeline/eval/ and moved into OUT with the report last, so the target
# exists only with all its pictures. Exit 3 (some images could not be read:
# reported, skipped, the rest evaluated) counts as done, as extract's skips do.
EVAL_FROM = $(if $(filter 1,$(FINETUNE)),--model '$(MODEL)',--head '$(HEAD)' --weights '$(WEIGHTS)')
$(REPORT): $(FROM_report) $(call pipeline_inputs,report,$(REPORT),$(S)/report.settings)
	@$(call pipeline_lock,report) rm -f '$(OUT)/eval_report.txt' '$(OUT)/eval_report.json'; rm -rf '$(S)/eval'; \
	mkdir -p '$(S)/eval'; $(call pipeline_started,report) \
	echo "$(BIN)/predict $(EVAL_FROM) --eval $(VAL) --report $(OUT)/eval $(PREDICT_ARGS)"; \
	'$(BIN)/predict' $(EVAL_FROM) --eval '$(VAL)' --report '$(S)/eval/eval' $(PREDICT_ARGS) \
	    >'$(S)/eval/predictions.txt'; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || (exit $$rc) || \
	    $(call pipeline_stopped,report); \
	mv -f '$(S)/eval/predictions.txt' '$(OUT)/eval_predictions.txt' && \
	mv -f '$(S)/eval/eval_confusion.svg' '$(S)/eval/eval_errors.svg' '$(OUT)/' && \
	mv -f '$(S)/eval/eval_report.$(REPORT_EXT)' '$@' && rmdir '$(S)/eval' && \
	echo "Wrote $@, $(OUT)/eval_confusion.svg, $(OUT)/eval_errors.svg, $(OUT)/eval_predictions.txt" && \
	$(call pipeline_made,report)
	+@$(call pipeline_touched,report)

# What a file whose text -n or -q found changed depends on (pipeline_commit):
# phony, so the file and what follows it count as out of date. Last in the
# file, so that it never is the default goal.
.PHONY: pipeline-changed
pipeline-changed:
