/* dash-bench --ipc, in its own file: it needs libdash and a daemon. */
#ifndef DASH_TOOLS_BENCH_IPC_H
#define DASH_TOOLS_BENCH_IPC_H

/* Runs the IPC benchmark with dash-bench's arguments; returns the exit
 * status. */
int dash__bench_ipc(int argc, char **argv);

#endif
