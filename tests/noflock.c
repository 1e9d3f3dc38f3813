// LD_PRELOAD shim for tests: flock(2) fails with ENOLCK, as on NFS without
// lockd or Lustre mounted without -o flock, in every program it is loaded
// into (make's shell, flock(1), our tools, HDF5 inside them).
#include <errno.h>

int flock(int fd, int op) {
    (void)fd, (void)op;
    errno = ENOLCK;
    return -1;
}
