/* dashd: computes Shampoo inverse roots for training processes, out of
 * process, over shared memory. Command line, configuration, the loop. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dashd.h"
#include "log.h"
#include "paths.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: dashd [options]\n"
          "Computes Shampoo preconditioners (stacked inverse matrix roots)\n"
          "for training processes that connect through libdash.\n"
          "\n"
          "  --socket PATH      listen here (default: $DASHD_SOCKET, else\n"
          "                     /run/dashd/dashd.sock as root, else\n"
          "                     $XDG_RUNTIME_DIR/dashd.sock)\n"
          "  --backend B        auto, cpu or cuda (default auto)\n"
          "  --metrics-listen A serve GET /metrics (Prometheus text) on\n"
          "                     HOST:PORT, e.g. 127.0.0.1:9464 (default off)\n"
          "  --device D         the GPU of backend cuda: an ordinal or\n"
          "                     GPU-UUID as nvidia-smi prints it (default:\n"
          "                     CUDA's first visible device)\n"
          "  --threads N        CPU threads for the math, 0 = every core\n"
          "                     (default 0)\n"
          "  --config FILE      read key = value settings from FILE; the\n"
          "                     command line wins over it; SIGHUP reloads it\n"
          "  --check-config FILE  check FILE (and the other options), print\n"
          "                     the settings in effect and exit: 0 when\n"
          "                     valid, 2 naming file:line:key when not\n"
          "  --log-level L      error, warn, info or debug (default info)\n"
          "  --help             this text\n"
          "  --version          the version\n"
          "\n"
          "Signals: SIGTERM/SIGINT stop (in-flight work gets 2 s), SIGHUP\n"
          "reloads the configuration file's limits and log level.\n");
}

/* Settings from the command line, applied over the file's. */
struct cli {
  const char *config;
  const char *check_config; /* --check-config: check and exit */
  const char *pairs[8][2];
  int npairs;
};

static int parse_cli(int argc, char **argv, struct cli *c) {
  static const struct option opts[] = {
      {"socket", required_argument, NULL, 's'},
      {"backend", required_argument, NULL, 'b'},
      {"device", required_argument, NULL, 'd'},
      {"metrics-listen", required_argument, NULL, 'm'},
      {"threads", required_argument, NULL, 't'},
      {"config", required_argument, NULL, 'c'},
      {"check-config", required_argument, NULL, 'C'},
      {"log-level", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    const char *key = NULL;
    switch (ch) {
      case 's':
        key = "socket";
        break;
      case 'b':
        key = "backend";
        break;
      case 'd':
        key = "device";
        break;
      case 'm':
        key = "metrics_listen";
        break;
      case 't':
        key = "threads";
        break;
      case 'l':
        key = "log_level";
        break;
      case 'c':
        c->config = optarg;
        continue;
      case 'C':
        c->check_config = optarg;
        continue;
      case 'h':
        usage(stdout);
        exit(0);
      case 'V':
        printf("dashd %s\n", DASH_VERSION);
        exit(0);
      default:
        usage(stderr);
        return -1;
    }
    c->pairs[c->npairs][0] = key;
    c->pairs[c->npairs][1] = optarg;
    c->npairs++;
  }
  if (optind < argc) {
    fprintf(stderr, "dashd: unexpected argument '%s' (see --help)\n",
            argv[optind]);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static struct dashd_server srv;
  struct cli cli = {0};
  char err[512];

  if (parse_cli(argc, argv, &cli) < 0)
    return 2;
  if (cli.check_config != NULL)
    cli.config = cli.check_config;
  if (getenv("JOURNAL_STREAM") != NULL || getenv("NOTIFY_SOCKET") != NULL)
    dashd__log_set_syslog_prefix(1);
  dashd__config_defaults(&srv.cfg);
  if (cli.config != NULL) {
    if (dashd__config_load(&srv.cfg, cli.config, err, sizeof(err)) < 0) {
      fprintf(stderr, "dashd: %s\n", err);
      return 2;
    }
    srv.config_path = cli.config;
  }
  for (int i = 0; i < cli.npairs; i++) {
    if (dashd__config_set(&srv.cfg, cli.pairs[i][0], cli.pairs[i][1], err,
                          sizeof(err)) < 0) {
      fprintf(stderr, "dashd: on the command line: %s\n", err);
      return 2;
    }
  }
  if (cli.check_config != NULL) {
    /* What the daemon would run with; nothing is started. */
    dashd__config_dump(&srv.cfg, stdout);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  srv.cli_pairs = cli.pairs;
  srv.n_cli_pairs = cli.npairs;
  dashd__log_set_level(srv.cfg.log_level);

  if (srv.cfg.socket_path[0] != '\0') {
    snprintf(srv.socket_path, sizeof(srv.socket_path), "%s",
             srv.cfg.socket_path);
  } else if (dash__default_socket_path(srv.socket_path,
                                       sizeof(srv.socket_path)) < 0) {
    fprintf(stderr, "dashd: %s\n", dash_last_error());
    return 2;
  }
  if (geteuid() == 0 && strcmp(srv.socket_path, "/run/dashd/dashd.sock") == 0)
    /* The default directory of a root daemon; under systemd the unit
     * makes it, with the group that may reach it. */
    if (mkdir("/run/dashd", 0750) != 0 && errno != EEXIST)
      fprintf(stderr, "dashd: cannot create /run/dashd: %s\n", strerror(errno));

  if (srv.cfg.device[0] != '\0' && srv.cfg.backend == DASH_BACKEND_CPU) {
    fprintf(stderr, "dashd: device %s needs backend cuda (or auto)\n",
            srv.cfg.device);
    return 2;
  }
  if (srv.cfg.device[0] != '\0') {
    /* Plans are made on this (the loop) thread, on its current device;
     * a device that is not there is a configuration error. */
    if (dash_roots_cuda_select(srv.cfg.device) < 0) {
      const char *why = dash_last_error();
      /* The reason names the device unless it is about CUDA itself. */
      if (strstr(why, srv.cfg.device) != NULL)
        fprintf(stderr, "dashd: %s\n", why);
      else
        fprintf(stderr, "dashd: device %s: %s\n", srv.cfg.device, why);
      return 2;
    }
    if (srv.cfg.backend == DASH_BACKEND_AUTO)
      srv.cfg.backend = DASH_BACKEND_CUDA;
  }
  if (srv.cfg.backend == DASH_BACKEND_CUDA && !dash_roots_cuda_available()) {
    /* The library says why: no plugin, no driver, no device. */
    char text[8];
    if (dash_roots_cuda_describe(text, sizeof(text)) < 0)
      fprintf(stderr, "dashd: backend cuda: %s\n", dash_last_error());
    else
      fprintf(stderr, "dashd: backend cuda: no CUDA device is present\n");
    return 2;
  }
  /* auto: the GPU when there is one (CUDA stacks need it), else the
   * CPU. */
  if (srv.cfg.backend == DASH_BACKEND_AUTO)
    srv.cfg.backend =
        dash_roots_cuda_available() ? DASH_BACKEND_CUDA : DASH_BACKEND_CPU;
  snprintf(srv.device, sizeof(srv.device), "cpu");
  if (srv.cfg.backend == DASH_BACKEND_CUDA &&
      dash_roots_cuda_describe(srv.device, sizeof(srv.device)) < 0)
    snprintf(srv.device, sizeof(srv.device), "cuda");

  uv_loop_t *loop = uv_default_loop();
  if (dashd__server_start(&srv, loop) < 0)
    return 1;
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  dashd__log(
      DASHD_LOG_INFO, "stopped%s",
      srv.exit_code ? " after a failure; exit status for a restart" : "");
  return srv.exit_code;
}
