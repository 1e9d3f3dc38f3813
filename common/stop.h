// Stopping on SIGTERM / SIGINT without losing work: what Slurm sends at the
// time limit or before preemption (then SIGKILL after KillWait, 30 s by
// default); SIGUSR1 (Slurm's --signal=USR1@N) and SIGHUP (a closed
// terminal) the same way. The handler only sets a flag; long loops check it at a point
// where their state is consistent, save it, and exit with EXIT_STOPPED.
// A second signal while stopping takes the default action (dies at once).
#pragma once

// Exit code of a run stopped by a signal after saving what it had done:
// rerun the same command (with --resume where the tool has it) to continue.
// 75 is EX_TEMPFAIL of sysexits.h ("try again later").
#define EXIT_STOPPED 75

// Installs the handlers (idempotent).
void stop_install(void);
// The signal that asked to stop (SIGTERM, SIGINT, SIGUSR1, SIGHUP), or 0.
int stop_requested(void);
// "SIGTERM" / "SIGINT" / "SIGUSR1" / "SIGHUP" / "signal N".
const char *stop_signal_name(int sig);
// What a stopped run tells its user to do: dflt ("rerun with --resume"),
// or VGGFT_RERUN_HINT when a driver that reruns the tool its own way sets
// it (scripts/pipeline.mk: "rerun the same make to continue").
const char *stop_rerun_hint(const char *dflt);
// Test hook: behave as if sig had arrived.
void stop_request(int sig);
