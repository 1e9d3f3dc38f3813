// Writes a small labelled image set for the demo, in the flow_from_directory
// layout: OUT/{train,validation}/{checkers,horizontal,vertical}/NNN.jpg:
// stripes and checkerboards of random colours, period and phase, with noise,
// in varied image sizes. Textures, because the demo may have to run with
// random weights (no ImageNet file offline), whose features still tell
// orientations apart but not shapes.
//   cc -O2 scripts/demo_images.c -o build/demo_images -lturbojpeg
//   build/demo_images OUT [TRAIN_PER_CLASS] [VAL_PER_CLASS]
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

static unsigned rng = 12345;
static unsigned next(void) { return rng = rng * 1103515245u + 12345u, rng >> 8; }

// Which of the two colours pixel (x, y) takes.
static int pattern(int kind, int x, int y, int period, int phase) {
    int u = (x + phase) / period % 2, v = (y + phase) / period % 2;
    return kind == 0 ? u ^ v : kind == 1 ? v : u;
}

static int write_image(const char *path, int shape) {
    int w = 96 + (int)(next() % 160), h = 96 + (int)(next() % 120);
    unsigned char *rgb = malloc((size_t)w * h * 3);
    int period = 6 + (int)(next() % 14), phase = (int)(next() % 20);
    unsigned char fg[3] = {(unsigned char)next(), (unsigned char)next(), (unsigned char)next()};
    unsigned char bg[3] = {(unsigned char)next(), (unsigned char)next(), (unsigned char)next()};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *p = rgb + ((size_t)y * w + x) * 3;
            int in = pattern(shape, x, y, period, phase);
            for (int c = 0; c < 3; c++) {
                int v = (in ? fg[c] : bg[c]) + (int)(next() % 41) - 20;
                p[c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long size = 0;
    int rc = tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &size, TJSAMP_420, 88, 0);
    FILE *f = rc == 0 ? fopen(path, "wb") : NULL;
    if (f) {
        rc = fwrite(jpg, 1, size, f) == size ? 0 : -1;
        fclose(f);
    } else {
        rc = -1;
    }
    tjFree(jpg);
    tjDestroy(tj);
    free(rgb);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT [TRAIN_PER_CLASS] [VAL_PER_CLASS]\n", argv[0]);
        return 2;
    }
    int counts[2] = {argc > 2 ? atoi(argv[2]) : 60, argc > 3 ? atoi(argv[3]) : 20};
    const char *splits[2] = {"train", "validation"}, *classes[3] = {"checkers", "horizontal", "vertical"};
    char path[4096];
    mkdir(argv[1], 0755);
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s", argv[1], splits[s]);
        mkdir(path, 0755);
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s/%s", argv[1], splits[s], classes[k]);
            if (mkdir(path, 0755) < 0 && errno != EEXIST) {
                fprintf(stderr, "demo_images: error: cannot create %s: %s\n", path, strerror(errno));
                return 1;
            }
            for (int i = 0; i < counts[s]; i++) {
                snprintf(path, sizeof path, "%s/%s/%s/%03d.jpg", argv[1], splits[s], classes[k], i);
                if (write_image(path, k) < 0) {
                    fprintf(stderr, "demo_images: error: cannot write %s\n", path);
                    return 1;
                }
            }
        }
    }
    printf("Wrote %d training and %d validation images per class to %s\n", counts[0], counts[1], argv[1]);
    return 0;
}
