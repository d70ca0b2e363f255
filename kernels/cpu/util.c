/* Small matrix helpers of the CPU backend. */
#include <math.h>

#include "cpu.h"

void dash__cpu_set_identity(float *m, int b, float c) {
  for (size_t i = 0; i < (size_t)b * b; i++)
    m[i] = 0.0f;
  for (int i = 0; i < b; i++)
    m[(size_t)i * b + i] = c;
}

void dash__cpu_add_identity(float *m, int b, float c) {
  for (int i = 0; i < b; i++)
    m[(size_t)i * b + i] += c;
}

void dash__cpu_scale(float *x, size_t n, float c) {
  for (size_t i = 0; i < n; i++)
    x[i] *= c;
}

double dash__cpu_frobenius(const float *m, int b) {
  double acc = 0.0;
  for (size_t i = 0; i < (size_t)b * b; i++)
    acc += (double)m[i] * m[i];
  return sqrt(acc);
}
