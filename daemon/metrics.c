/* Counters and gauges of the daemon, rendered as Prometheus text
 * exposition for `dashctl metrics`. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>

#include "dashd.h"

/* Upper bounds of the latency buckets, seconds. */
static const double kBucketsS[DASHD_LATENCY_BUCKETS] = {
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};

void dashd__metrics_record(struct dashd_server *srv,
                           const struct dashd_job *j) {
  struct dashd_metrics *m = &srv->metrics;
  int method = (int)j->stack->opts.method;
  if (method < 0 || method > 4)
    method = 0;
  if (j->rc < 0) {
    m->refreshes_failed[method]++;
    return;
  }
  method = (int)j->report.method;
  if (method < 0 || method > 4)
    method = 0;
  m->refreshes_ok[method]++;
  for (int i = 0; i < DASH_BLOCK_STATUS_COUNT; i++)
    m->blocks[i] += j->report.blocks_by_status[i];
  double s = j->report.ms_total / 1e3;
  int b = 0;
  while (b < DASHD_LATENCY_BUCKETS && s > kBucketsS[b])
    b++;
  m->latency_count[b]++;
  m->latency_sum_ms += j->report.ms_total;
  m->busy_ms += j->report.ms_total;
}

static void header(FILE *f, const char *name, const char *type,
                   const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *dashd__metrics_render(const struct dashd_server *srv) {
  const struct dashd_metrics *m = &srv->metrics;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL)
    return NULL;

  uint64_t stacks = 0, busy = 0, mapped = 0, snapshots = 0;
  for (const struct dashd_stack *st = srv->stacks; st != NULL;
       st = st->next_all) {
    if (st->owner == NULL)
      continue;
    uint64_t bytes = st->elems * sizeof(float);
    stacks++;
    mapped += 3 * bytes; /* statistics and two result slots */
    snapshots += 2 * bytes;
    if (st->computing >= 0 || st->pending >= 0)
      busy++;
  }

  header(f, "dashd_uptime_seconds", "gauge", "Seconds since dashd started.");
  fprintf(f, "dashd_uptime_seconds %.3f\n",
          ((double)uv_now(srv->loop) - srv->start_ms) / 1e3);
  header(f, "dashd_clients", "gauge", "Connected clients.");
  fprintf(f, "dashd_clients %u\n", srv->n_sessions);
  header(f, "dashd_stacks", "gauge", "Registered stacks.");
  fprintf(f, "dashd_stacks %llu\n", (unsigned long long)stacks);
  header(f, "dashd_queue_depth", "gauge",
         "Stacks with a refresh computing or waiting.");
  fprintf(f, "dashd_queue_depth %llu\n", (unsigned long long)busy);
  header(f, "dashd_mapped_bytes", "gauge",
         "Client shared memory mapped (statistics and result slots).");
  fprintf(f, "dashd_mapped_bytes %llu\n", (unsigned long long)mapped);
  header(f, "dashd_snapshot_bytes", "gauge",
         "Private snapshot buffers reserved (pages used on first write).");
  fprintf(f, "dashd_snapshot_bytes %llu\n", (unsigned long long)snapshots);
  header(f, "dashd_connections_total", "counter", "Connections accepted.");
  fprintf(f, "dashd_connections_total %llu\n",
          (unsigned long long)m->connections);
  header(f, "dashd_connections_refused_total", "counter",
         "Connections from users the configuration does not allow.");
  fprintf(f, "dashd_connections_refused_total %llu\n",
          (unsigned long long)m->refused);

  header(f, "dashd_refreshes_total", "counter",
         "Computations by method and outcome.");
  for (int i = 0; i <= 4; i++) {
    const char *name = dash_method_name((dash_method)i);
    fprintf(f, "dashd_refreshes_total{method=\"%s\",status=\"ok\"} %llu\n",
            name, (unsigned long long)m->refreshes_ok[i]);
    fprintf(f, "dashd_refreshes_total{method=\"%s\",status=\"failed\"} %llu\n",
            name, (unsigned long long)m->refreshes_failed[i]);
  }
  header(f, "dashd_blocks_total", "counter", "Blocks computed, by status.");
  for (int i = 0; i < DASH_BLOCK_STATUS_COUNT; i++)
    fprintf(f, "dashd_blocks_total{status=\"%s\"} %llu\n",
            dash_block_status_name((dash_block_status)i),
            (unsigned long long)m->blocks[i]);
  header(f, "dashd_fallbacks_total", "counter",
         "Blocks recomputed by EVD after their iteration was rejected.");
  fprintf(f, "dashd_fallbacks_total %llu\n",
          (unsigned long long)m->blocks[DASH_BLOCK_FALLBACK_EVD]);
  header(f, "dashd_coalesced_total", "counter",
         "Waiting refreshes replaced by a newer one (never computed).");
  fprintf(f, "dashd_coalesced_total %llu\n", (unsigned long long)m->coalesced);

  header(f, "dashd_refresh_duration_seconds", "histogram",
         "Time of each computation.");
  uint64_t cum = 0;
  for (int b = 0; b < DASHD_LATENCY_BUCKETS; b++) {
    cum += m->latency_count[b];
    fprintf(f, "dashd_refresh_duration_seconds_bucket{le=\"%g\"} %llu\n",
            kBucketsS[b], (unsigned long long)cum);
  }
  cum += m->latency_count[DASHD_LATENCY_BUCKETS];
  fprintf(f, "dashd_refresh_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
          (unsigned long long)cum);
  fprintf(f, "dashd_refresh_duration_seconds_sum %.6f\n",
          m->latency_sum_ms / 1e3);
  fprintf(f, "dashd_refresh_duration_seconds_count %llu\n",
          (unsigned long long)cum);
  header(f, "dashd_device_busy_seconds_total", "counter",
         "Time each device spent computing.");
  fprintf(f, "dashd_device_busy_seconds_total{device=\"cpu\"} %.6f\n",
          m->busy_ms / 1e3);
  if (fclose(f) != 0) {
    free(text);
    return NULL;
  }
  return text;
}
