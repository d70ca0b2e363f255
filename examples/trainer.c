/*
 * dash-example-trainer: a small trainer that uses dashd through libdash
 * (dash.h only), as a model for bindings in other languages.
 *
 * It fits multinomial logistic regression (softmax) to a synthetic,
 * deterministic dataset with Shampoo: the gradient G of the 64x10 weight W
 * is preconditioned as L^(-1/4) G R^(-1/4), where L and R are EMAs of
 * G G^T (64x64) and G^T G (10x10). The two factors have different sizes,
 * so each lives in its own stack (N = 1, B = 64 and N = 1, B = 10). The
 * trainer asks for a refresh every few steps and adopts whatever root is
 * newest each step, never waiting for the math.
 */
#include <dash/dash.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  FEATURES = 64, /* the last one is a constant 1: the bias */
  CLASSES = 10,
  SAMPLES = 2000,
  REFRESH_EVERY = 10,
  PRINT_EVERY = 50
};

static const double BETA = 0.95; /* EMA of the statistics */
/* Tuned by hand: 0.02 decreases the loss steadily (to ~0.33 at step 300);
 * 0.1 and above overshoot, since the root-preconditioned step does not
 * shrink with the gradient. */
static const double LR = 0.02;
/* An absolute ridge for the roots: G G^T has rank <= 10 < 64, so L is
 * singular; the ridge bounds the root where the gradient has no energy. */
static const double RIDGE = 1e-6;

/* A seeded LCG (Knuth's MMIX constants): the same data on every machine. */
static uint64_t lcg_state = 12345;

static double lcg_uniform(void) {
  lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return ((double)(lcg_state >> 11) + 0.5) / 9007199254740992.0; /* (0,1) */
}

static double lcg_normal(void) { /* Box-Muller */
  double u = lcg_uniform(), v = lcg_uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Class means plus unit noise, the means close enough that the classes
 * overlap (accuracy stays near 90%), then each feature scaled by a factor
 * from 0.1 to 3: badly conditioned on purpose, where Shampoo helps. */
static void make_data(float *x, int *y) {
  static double mean[CLASSES][FEATURES];
  double scale[FEATURES];
  for (int j = 0; j < FEATURES; j++)
    scale[j] = 0.1 * pow(30.0, (double)j / (FEATURES - 2));
  for (int k = 0; k < CLASSES; k++)
    for (int j = 0; j < FEATURES; j++)
      mean[k][j] = 0.4 * lcg_normal();
  for (int i = 0; i < SAMPLES; i++) {
    int k = (int)(lcg_uniform() * CLASSES);
    y[i] = k;
    for (int j = 0; j < FEATURES - 1; j++)
      x[i * FEATURES + j] = (float)(scale[j] * (mean[k][j] + lcg_normal()));
    x[i * FEATURES + FEATURES - 1] = 1.0f;
  }
}

/* Loss, accuracy, and the gradient g (FEATURES x CLASSES, row-major) of
 * the mean cross-entropy at w. */
static void loss_and_grad(const float *x, const int *y, const float *w,
                          float *g, double *loss, double *acc) {
  double total = 0.0;
  int correct = 0;
  memset(g, 0, sizeof(float) * FEATURES * CLASSES);
  for (int i = 0; i < SAMPLES; i++) {
    const float *xi = x + i * FEATURES;
    double z[CLASSES], zmax = -INFINITY, sum = 0.0;
    int best = 0;
    for (int k = 0; k < CLASSES; k++) {
      z[k] = 0.0;
      for (int j = 0; j < FEATURES; j++)
        z[k] += (double)xi[j] * w[j * CLASSES + k];
      if (z[k] > zmax) {
        zmax = z[k];
        best = k;
      }
    }
    for (int k = 0; k < CLASSES; k++) { /* softmax, shifted for range */
      z[k] = exp(z[k] - zmax);
      sum += z[k];
    }
    total -= log(z[y[i]] / sum);
    correct += best == y[i];
    for (int k = 0; k < CLASSES; k++) {
      double d = (z[k] / sum - (k == y[i])) / SAMPLES;
      for (int j = 0; j < FEATURES; j++)
        g[j * CLASSES + k] += (float)(d * xi[j]);
    }
  }
  *loss = total / SAMPLES;
  *acc = (double)correct / SAMPLES;
}

/* l = BETA l + (1 - BETA) g g^T and r = BETA r + (1 - BETA) g^T g, written
 * straight into the stacks' statistics. */
static void update_stats(const float *g, float *l, float *r) {
  for (int a = 0; a < FEATURES; a++)
    for (int b = 0; b < FEATURES; b++) {
      double s = 0.0;
      for (int k = 0; k < CLASSES; k++)
        s += (double)g[a * CLASSES + k] * g[b * CLASSES + k];
      l[a * FEATURES + b] =
          (float)(BETA * l[a * FEATURES + b] + (1 - BETA) * s);
    }
  for (int a = 0; a < CLASSES; a++)
    for (int b = 0; b < CLASSES; b++) {
      double s = 0.0;
      for (int j = 0; j < FEATURES; j++)
        s += (double)g[j * CLASSES + a] * g[j * CLASSES + b];
      r[a * CLASSES + b] = (float)(BETA * r[a * CLASSES + b] + (1 - BETA) * s);
    }
}

/* dir = lroot g rroot (lroot: FEATURES^2, rroot: CLASSES^2). */
static void precondition(const float *lroot, const float *g, const float *rroot,
                         float *dir) {
  static double lg[FEATURES][CLASSES];
  for (int a = 0; a < FEATURES; a++)
    for (int k = 0; k < CLASSES; k++) {
      double s = 0.0;
      for (int b = 0; b < FEATURES; b++)
        s += (double)lroot[a * FEATURES + b] * g[b * CLASSES + k];
      lg[a][k] = s;
    }
  for (int a = 0; a < FEATURES; a++)
    for (int k = 0; k < CLASSES; k++) {
      double s = 0.0;
      for (int m = 0; m < CLASSES; m++)
        s += lg[a][m] * rroot[m * CLASSES + k];
      dir[a * CLASSES + k] = (float)s;
    }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: dash-example-trainer [--socket PATH] [--steps N]\n"
          "Trains softmax regression on synthetic data with Shampoo roots\n"
          "computed by dashd.\n"
          "  --socket PATH  dashd's socket (default: libdash's default)\n"
          "  --steps N      training steps (default 300)\n"
          "  --help         this text\n");
}

/* Reports a failed dash call with the library's detail. */
static int dash_fail(const char *what, int rc) {
  fprintf(stderr, "dash-example-trainer: %s: %s (%s)\n", what,
          dash_last_error(), dash_strerror(rc));
  return 1;
}

/* One stack holding a single B x B block. */
static int make_stack(dash_client *c, size_t b, dash_stack **out) {
  dash_stack_options o = DASH_STACK_OPTIONS_INIT;
  o.num_blocks = 1;
  o.block_size = b;
  o.eps = RIDGE;
  int rc = dash_stack_create(c, &o, out);
  return rc < 0 ? dash_fail("cannot create a stack", rc) : 0;
}

static int train(dash_stack *ls, dash_stack *rs, long steps, const float *x,
                 const int *y, float *w, float *g, float *dir) {
  float *lstats = dash_stack_stats(ls), *rstats = dash_stack_stats(rs);
  dash_refresh_info linfo, rinfo;
  double loss = 0.0, acc = 0.0;
  uint64_t refreshes = 0;
  int rc;

  for (long step = 0; step < steps; step++) {
    loss_and_grad(x, y, w, g, &loss, &acc);
    update_stats(g, lstats, rstats);
    /* dash_step returns once the daemon holds a snapshot, so the
     * statistics may be written again next step. */
    if (step % REFRESH_EVERY == 0) {
      if ((rc = dash_step(ls, (uint64_t)step, NULL)) < 0 ||
          (rc = dash_step(rs, (uint64_t)step, NULL)) < 0)
        return dash_fail("dash_step", rc);
    }
    /* Timeout 0: adopt a newer root if one finished, never wait. */
    int lnew = dash_sync(ls, 0, &linfo);
    if (lnew < 0)
      return dash_fail("dash_sync (L)", lnew);
    int rnew = dash_sync(rs, 0, &rinfo);
    if (rnew < 0)
      return dash_fail("dash_sync (R)", rnew);
    refreshes += (uint64_t)lnew;

    const float *lroot = dash_stack_result(ls);
    const float *rroot = dash_stack_result(rs);
    const float *update = g; /* plain gradient until both roots exist */
    if (lroot != NULL && rroot != NULL) {
      precondition(lroot, g, rroot, dir);
      update = dir;
    }
    for (int i = 0; i < FEATURES * CLASSES; i++)
      w[i] -= (float)LR * update[i];

    if (step % PRINT_EVERY == 0) {
      printf("step %4ld  loss %.4f  accuracy %.3f  generation %" PRIu64, step,
             loss, acc, linfo.generation);
      if (linfo.generation > 0)
        printf("  staleness %" PRIu64 "\n", (uint64_t)step - linfo.step);
      else
        printf("  staleness -\n");
    }
  }
  loss_and_grad(x, y, w, g, &loss, &acc);
  printf("final loss %.4f accuracy %.3f refreshes %" PRIu64 "\n", loss, acc,
         refreshes);
  return 0;
}

int main(int argc, char **argv) {
  const char *socket_path = NULL;
  long steps = 300;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      steps = strtol(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || end == argv[i] || steps < 1 ||
          steps > 1000000) {
        fprintf(stderr, "dash-example-trainer: --steps %s: want 1..1000000\n",
                argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "dash-example-trainer: bad argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  float *x = malloc(sizeof(float) * SAMPLES * FEATURES);
  int *y = malloc(sizeof(int) * SAMPLES);
  float *w = calloc(FEATURES * CLASSES, sizeof(float)); /* W starts at 0 */
  float *g = malloc(sizeof(float) * FEATURES * CLASSES);
  float *dir = malloc(sizeof(float) * FEATURES * CLASSES);
  dash_client *c = NULL;
  dash_stack *ls = NULL, *rs = NULL;
  int status = 1, rc;

  if (x == NULL || y == NULL || w == NULL || g == NULL || dir == NULL) {
    fprintf(stderr, "dash-example-trainer: out of memory\n");
    goto out;
  }
  make_data(x, y);

  if ((rc = dash_connect(socket_path, &c)) < 0) {
    dash_fail("cannot reach dashd (is it running? see --socket)", rc);
    goto out;
  }
  if (make_stack(c, FEATURES, &ls) != 0 || make_stack(c, CLASSES, &rs) != 0)
    goto out;
  status = train(ls, rs, steps, x, y, w, g, dir);

out:
  /* dash_stack_destroy frees the memory even when the daemon is gone. */
  dash_stack_destroy(rs);
  dash_stack_destroy(ls);
  dash_disconnect(c);
  free(dir);
  free(g);
  free(w);
  free(y);
  free(x);
  return status;
}
