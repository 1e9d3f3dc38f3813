// finetune: unfreeze the top of the conv base and train it with the head,
// with on-the-fly augmentation.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fileutil.h"
#include "augment.h"
#include "blas_setup.h"
#include "cli.h"
#include "error.h"
#include "fit.h"
#include "finetune.h"
#include "model_io.h"
#include "model_options.h"
#include "parallel.h"
#include "progress.h"
#include "stop.h"

static const char *EPILOG =
    "Stage 2 of the seeds: the head trained by `train` (HEAD.h5 fixes the model,\n"
    "input size, preprocessing and classes) on top of the base weights it was\n"
    "trained with; the base is unfrozen from --unfreeze up and trained with the\n"
    "head, with ImageDataGenerator-style augmentation of the training images:\n"
    "  build/finetune --data data/train --val-data data/validation \\\n"
    "      --weights imagenet --head head.h5 --out model.h5 --lr 1e-4 --momentum 0.9 \\\n"
    "      --epochs 10\n"
    "\n"
    "From a cache, without images (no augmentation; the frozen layers never run\n"
    "again: about 3 times cheaper per epoch on the CPU at 150x150): the cache holds the output\n"
    "of the layer just below --unfreeze, e.g. for block5_conv1:\n"
    "  build/extract --data data/train --cache cache/train4 --layer block4_pool\n"
    "  build/finetune --cache cache/train4 --val-cache cache/val4 --head head.h5 ...\n"
    "\n"
    "--augment takes e.g. rotation=30,shift=0.2,shear=0.2,zoom=0.2,flip (the\n"
    "default, the seeds' generator; shear in degrees); keys: rotation, shift,\n"
    "width_shift, height_shift, shear, zoom (Z for [1-Z, 1+Z], or LO:HI), flip\n"
    "(horizontal: Keras's horizontal_flip; a shift below 1 is a fraction of the\n"
    "width or height, from 1 up pixels, as in Keras: shift=5, an int, draws whole\n"
    "pixels -4..4, shift=5.0 any in [-5, 5]); 'seeds' is the default set,\n"
    "'none' no augmentation, and later keys add to or change earlier ones\n"
    "(seeds,rotation=10). Validation images are never augmented. Not offered:\n"
    "vertical flips, brightness, fill modes other than Keras's default 'nearest',\n"
    "learning-rate schedules (--lr is constant, as in the seeds).\n"
    "\n"
    "Writes MODEL.h5 (the whole model as Keras HDF5: Keras's load_weights reads it\n"
    "into Sequential([VGG16(include_top=False), Flatten(), Dense, Dropout, Dense])),\n"
    "MODEL.history.csv, MODEL.history.svg, MODEL.confusion.svg, and MODEL.ckpt\n"
    "after every epoch, between steps every --checkpoint-seconds (2 minutes)\n"
    "and, if set, every --checkpoint-every steps; and at once on SIGTERM,\n"
    "SIGINT, SIGUSR1 or SIGHUP (what Slurm sends at the time limit or before\n"
    "preemption); the run then exits 75.\n"
    "Rerun the same command with --resume to continue: on the same --threads it\n"
    "ends with exactly the weights of an uninterrupted run.\n"
    "--unfreeze defaults to the first conv of the last block the head's base has\n"
    "(block5_conv1 for a head on block5_pool, block2_conv1 for block2_pool).\n"
    "\n"
    "Exit codes: 0 done; 1 failed; 2 usage error (unknown option, value out of\n"
    "range, --unfreeze naming no conv layer or a layer the head's base does not\n"
    "have, also when that is known only after reading HEAD.h5); 75 stopped by\n"
    "a signal with MODEL.ckpt saved: rerun with --resume.\n"
    "The model without training: build/finetune --summary --input-size 150\n"
    "--classes 2 --unfreeze block5_conv1";

// The model options finetune takes from the head: they shape --summary only.
static const char *const SHAPE_ONLY[] = {"model", "input-size", "layer", "classes", "class-mode", "hidden", "dropout",
                                         NULL};

// Out-of-range or contradictory values: the usage error naming them, or NULL.
static const char *check_options(CliSpec *spec, const FinetuneOptions *o, char *why, size_t n) {
    const char *given = cli_first_seen(spec, SHAPE_ONLY);
    if (given) return snprintf(why, n, "--%s is for --summary only: fine-tuning takes it from --head", given), why;
#define BAD(...) return snprintf(why, n, __VA_ARGS__), why
    if (!o->head) BAD("--head HEAD.h5 is required: the head trained by `train` (see --help)");
    if (o->resume && o->resume_if_same) BAD("give --resume or --resume-if-same, not both");
    if (!o->out) BAD("--out MODEL.h5 is required: where to write the fine-tuned model (see --help)");
    if (!o->data == !o->cache) BAD("give the training data as --data DIR (images) or --cache CACHE (features)");
    if (o->data && o->val_cache) BAD("--val-cache goes with --cache; with --data give --val-data");
    if (o->cache && o->val_data) BAD("--val-data goes with --data; with --cache give --val-cache");
    if (o->cache && (o->augment_given || o->save_augmented))
        BAD("--cache trains on cached features: there is no augmentation in this mode (use --data)");
    if (o->augment_given && o->no_augment) BAD("give either --augment or --no-augment");
    AugmentSpec aug;
    if (o->augment_given && augment_spec_parse(o->augment, &aug) < 0) BAD("%s", err_msg());
    // (Single values out of range were refused by cli_parse: see .range.)
    if (o->validation_split > 0 && (o->val_data || o->val_cache))
        BAD("give either --val-data/--val-cache or --validation-split, not both");
    if (o->early_stopping > 0 && !o->val_data && !o->val_cache && o->validation_split <= 0)
        BAD("--early-stopping watches %s: give --val-data, --val-cache or --validation-split", o->monitor);
    if (o->restore_best && !o->val_data && !o->val_cache && o->validation_split <= 0)
        BAD("--restore-best-weights watches %s: give --val-data, --val-cache or --validation-split", o->monitor);
    if (o->nesterov && strcmp(o->optimizer, "sgd")) BAD("--nesterov applies to --optimizer sgd only");
    if (o->out && fit_check_out_name(o->out) < 0) BAD("%s", err_msg());
    if (o->momentum_given && !strcmp(o->optimizer, "adam")) BAD("--momentum applies to sgd and rmsprop, not adam");
    // --unfreeze must name a conv layer: checked against VGG19's base, whose
    // names include VGG16's (the head decides which; a VGG16 head with
    // block5_conv4 is refused when the head is read).
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = ARCH_VGG19;
    cfg.unfreeze = o->unfreeze;
    Model m = {0};
    if (model_build(&m, &cfg) < 0)
        BAD("--unfreeze %s: not a conv layer of the VGG base (block1_conv1 ... block5_conv3; VGG19 also has "
            "block3_conv4, block4_conv4, block5_conv4)",
            o->unfreeze);
    model_free(&m);
#undef BAD
    return NULL;
}

// --summary --head: the model finetune would train with that head (the
// shape options, which say the same thing, are refused beside it).
static int head_summary(CliSpec *spec, const FinetuneOptions *o, const ModelOptions *mo) {
    const char *given = cli_first_seen(spec, SHAPE_ONLY);
    if (given) {
        cli_error("finetune", "--%s with --summary --head: the shape comes from the head; leave out one of them", given);
        return EXIT_USAGE;
    }
    ModelMeta hm = {0};
    int status = EXIT_FAILED;
    ModelConfig cfg;
    char def_unfreeze[LAYER_NAME_MAX];
    if (finetune_read_head(o->head, &hm) < 0) cli_error("finetune", "%s", err_msg());
    else {
        model_meta_to_config(&hm, &cfg);
        cfg.unfreeze = mo->unfreeze;
        if (!cfg.unfreeze && finetune_default_unfreeze(cfg.cut, def_unfreeze, sizeof def_unfreeze) == 0)
            cfg.unfreeze = def_unfreeze;
        status = model_config_summary("finetune", &cfg, SUMMARY_FLAT);
        if (status && mo->unfreeze) status = EXIT_USAGE;  // a valid head: the layer is what is wrong
    }
    model_meta_free(&hm);
    return status;
}

int main(int argc, char **argv) {
    cli_process_setup();
    blas_setup(argv, 0, BLAS_NEEDED);
    FinetuneOptions o = {0};
    int summary = 0;
    ModelOptions mo;
    CliOption opts[] = {
        {"data", OPT_STRING, &o.data, NULL, "DIR", "training images, one subfolder per class"},
        {"val-data", OPT_STRING, &o.val_data, NULL, "DIR", "validation images (never augmented)"},
        {"validation-split", OPT_DOUBLE, &o.validation_split, "0", "F",
         "use the first fraction F of each class as validation (Keras's\nvalidation_split)", .range = "[0,1)"},
        {"cache", OPT_STRING, &o.cache, NULL, "CACHE",
         "train from cached features of the layer just below --unfreeze\n(extract --layer block4_pool for "
         "block5_conv1) instead of images"},
        {"val-cache", OPT_STRING, &o.val_cache, NULL, "VAL", "validation features, with --cache"},
        {"weights", OPT_STRING, &o.weights, NULL, "FILE|imagenet|random",
         "weights of the conv base: the ones the head was trained on\n(default: those the head records)"},
        {"head", OPT_STRING, &o.head, NULL, "HEAD.h5", "head trained by `train` (required: train the head first)"},
        {"out", OPT_STRING, &o.out, NULL, "MODEL.h5", "where to write the fine-tuned model (Keras HDF5)"},
        {"optimizer", OPT_CHOICE, &o.optimizer, "sgd", NULL, "optimizer, Keras's update rules", "sgd|adam|rmsprop"},
        {"lr", OPT_FLOAT, &o.lr, "0.0001", "LR", "learning rate (keep it low: the base is pretrained; seeds: 1e-4)",
         .range = ">0"},
        {"momentum", OPT_FLOAT, &o.momentum, NULL, "M", "momentum (SGD, RMSprop; default 0)", .range = "[0,1)"},
        {"nesterov", OPT_FLAG, &o.nesterov, NULL, NULL, "Nesterov momentum (SGD)"},
        {"epochs", OPT_INT, &o.epochs, "10", "N", "training epochs (in all, when resuming)", .range = ">=1"},
        {"batch", OPT_INT, &o.batch, "20", "N", "batch size", .range = ">=1"},
        {"augment", OPT_STRING, &o.augment, NULL, "SPEC",
         "augmentation of the training images (default: the seeds'\nrotation=30,shift=0.2,shear=0.2,zoom=0.2,flip)"},
        {"no-augment", OPT_FLAG, &o.no_augment, NULL, NULL, "no augmentation"},
        {"save-augmented", OPT_STRING, &o.save_augmented, NULL, "DIR",
         "first write augmented training images to DIR as PNG (the seeds'\nsave_to_dir), then train"},
        {"save-augmented-count", OPT_INT, &o.save_augmented_n, "16", "N", "how many images --save-augmented writes",
         .range = ">=1"},
        {"class-weight", OPT_CHOICE, &o.class_weight, "none", NULL,
         "balanced: weight_c = N / (K * N_c), like scikit-learn", "none|balanced"},
        FIT_EARLY_STOPPING_OPTIONS(o),
        {"checkpoint-seconds", OPT_DOUBLE, &o.checkpoint_seconds, "120", "S",
         "also write MODEL.ckpt between steps once S seconds have passed\nsince the last one (0: not by time); "
         "what a kill -9 or a\nfailed node can cost",
         .range = ">=0"},
        {"checkpoint-every", OPT_LONG, &o.checkpoint_every, "0", "STEPS",
         "also write MODEL.ckpt every STEPS steps (0: not by steps)", .range = ">=0"},
        {"resume", OPT_FLAG, &o.resume, NULL, NULL, "continue from MODEL.ckpt (settings must match; without\nMODEL.ckpt it starts from the beginning, with a note)"},
        {"resume-if-same", OPT_FLAG, &o.resume_if_same, NULL, NULL,
         "continue from MODEL.ckpt when it is of these settings and data, else\nstart over (a note says why): for make and job scripts"},
        {"device", OPT_CHOICE, &o.device, "auto", NULL,
         "where the conv base trains: auto (the GPU when usable, else\nthe CPU), cpu, cuda (fails with the reason "
         "when there is\nno usable GPU); on the GPU the head trains there too, the data\nstay on the CPU",
         "auto|cpu|cuda"},
        {"precision", OPT_CHOICE, &o.precision, "fp32", NULL,
         "GPU convolution arithmetic: fp32 (strict float32: a step within\nrounding of the CPU's), tf32 (tensor "
         "cores, about 1e-3 of the\nfeatures) or bf16 (the frozen layers in bfloat16, as extract's\nbf16; the "
         "trainable ones in tf32; about 1e-2 of the features);\ntf32 and bf16 need a GPU",
         "fp32|tf32|bf16"},
        {"threads", OPT_INT, &o.threads, "0", "N",
         "CPU threads (0: the CPUs this job may use, its affinity mask:\ntaskset, Slurm)", .range = ">=0"},
        {"seed", OPT_LONG, &o.seed, "1", "S", "seed of augmentation, shuffling and dropout", .range = ">=0"},
        {"memory-budget", OPT_LONG, &o.memory_budget_mb, "4096", "MB",
         "--cache: keep features in memory up to this size, else stream them", .range = ">=0"},
        {"quiet", OPT_FLAG, &o.quiet, NULL, NULL, "no progress bars: one line per epoch (warnings still print)"},
        {"summary", OPT_FLAG, &summary, NULL, NULL, "print every layer with its trainable flag and exit"},
        {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0},  // room for the model options (8 at most) and the end
    };
    int first_model_opt = cli_count(opts);
    int n = first_model_opt + model_options_add(opts + first_model_opt, &mo, MOPT_BASE | MOPT_HEAD | MOPT_UNFREEZE);
    model_options_summary_only(opts + first_model_opt, n - first_model_opt, SHAPE_ONLY, "--head");
    // --unfreeze's default follows the head's cut (finetune_default_unfreeze):
    // no fixed default in the table, NULL until the head (or --layer, under
    // --summary) says where the base ends.
    for (int i = first_model_opt; i < n; i++)
        if (!strcmp(opts[i].name, "unfreeze")) {
            opts[i].def = NULL;
            opts[i].help = "first trainable base layer; the layers below stay frozen\n(default: the first conv of "
                           "the last block the head's base has:\nblock5_conv1 for a head cut at block5_pool, "
                           "block2_conv1 for\nblock2_pool)";
        }
    CliSpec spec = {"finetune", "Fine-tune the top of the VGG base together with the trained head.",
                    "(--data DIR | --cache CACHE) --head HEAD.h5 --out MODEL.h5 [options]", EPILOG, opts, 0,
                    cli_fit_not_here};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc == CLI_EXIT_OK) return EXIT_DONE;
    if (rc == CLI_USAGE) return EXIT_USAGE;
    if (summary && o.head) return head_summary(&spec, &o, &mo);
    if (summary) {
        char def_unfreeze[64];
        if (!mo.unfreeze) {
            if (finetune_default_unfreeze(mo.layer, def_unfreeze, sizeof def_unfreeze) < 0) {
                cli_error("finetune", "--layer: %s", err_msg());
                return EXIT_USAGE;
            }
            mo.unfreeze = def_unfreeze;
        }
        return model_options_summary("finetune", &mo, MOPT_BASE | MOPT_HEAD | MOPT_UNFREEZE, SUMMARY_FLAT);
    }
    o.unfreeze = mo.unfreeze;
    o.lr_given = cli_find(&spec, "lr")->seen;
    o.momentum_given = cli_find(&spec, "momentum")->seen;
    o.augment_given = cli_find(&spec, "augment")->seen;
    if (o.save_augmented && o.no_augment)
        log_printf(stderr, "note: --no-augment: the images --save-augmented writes are not augmented\n");
    if (cli_find(&spec, "save-augmented-count")->seen && !o.save_augmented)
        log_printf(stderr, "note: --save-augmented-count only goes with --save-augmented DIR; ignored here\n");
    char why[ERR_MSG_MAX];
    const char *bad = check_options(&spec, &o, why, sizeof why);
    if (bad) {
        cli_error("finetune", "%s", bad);
        return EXIT_USAGE;
    }
    char *command = cli_command_line(argc, argv, NULL);
    o.command_line = command;
    if (o.threads == 0) o.threads = parallel_cpus();  // the CPUs this job may use
    if (cli_find(&spec, "monitor")->seen && o.early_stopping == 0 && !o.restore_best)
        log_printf(stderr, "note: --monitor is what --early-stopping and --restore-best-weights watch; without them "
                           "it changes nothing\n");
    cli_stdout_is_log();
    int status = finetune_run(&o);
    if (status < 0) cli_error("finetune", NULL), status = EXIT_FAILED;
    else if (status == EXIT_USAGE) cli_error("finetune", NULL);
    if (status != 0) remove_created_dirs();  // an --out folder made for outputs never written
    free(command);
    return status;
}
