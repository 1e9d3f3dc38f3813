#include "stop.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig) {
    if (stop_sig) {  // a second signal: the user insists
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_sig = sig;
}

void stop_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // reads and writes in flight complete
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    // Slurm's --signal=USR1@N (a warning before the time limit, often chosen
    // so that the job script can trap it) and a hung-up terminal or ssh
    // session: the same clean stop, not death without a checkpoint.
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int stop_requested(void) { return (int)stop_sig; }

void stop_request(int sig) { stop_sig = sig; }

const char *stop_signal_name(int sig) {
    static char buf[32];
    if (sig == SIGTERM) return "SIGTERM";
    if (sig == SIGINT) return "SIGINT";
    if (sig == SIGUSR1) return "SIGUSR1";
    if (sig == SIGHUP) return "SIGHUP";
    snprintf(buf, sizeof buf, "signal %d", sig);
    return buf;
}

const char *stop_rerun_hint(const char *dflt) {
    const char *h = getenv("VGGFT_RERUN_HINT");
    return h && h[0] ? h : dflt;
}
