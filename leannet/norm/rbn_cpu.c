/* Representative BatchNorm on the CPU: the training-mode forward and backward of FusedRBN
 * (leannet/norm/rbn.py, whose docstring derives the formulas) as two C functions.
 *
 * A tensor is N×C×HW in channels-last layout (element (n, c, i) at n·HW·C + i·C + c). Each full-tensor
 * pass reads its inputs from memory once: an instance's slab (HW·C values) is reduced or written while
 * it sits in cache, which separate PyTorch elementwise and reduction calls cannot do, and the N×C and
 * C arithmetic between the passes is a few loops instead of ~40 small tensor operations.
 *
 *   rbn_forward   X → Y and the instance moments m, v; updates the running statistics (if given)
 *   rbn_backward  ∂Y → ∂X and the gradients of w_m, w_v, w_b, γ, β        (first order only)
 *
 * Both return 0, or 1 when memory for their buffers could not be allocated. They trust their arguments:
 * every pointer holds the N×C×HW, N×C or C values named, of the element type, channels-last and contiguous,
 * the running statistics overlap nothing else, and N·C·HW fits a long. The caller (cpu_kernel.py,
 * `problem`) checks all of that before each call.
 *
 * Sums are accumulated in double; the N×C arithmetic runs in double, except k, the sigmoid and the
 * per-instance coefficients, which are stored in the element type. Instances are spread over
 * `threads` OpenMP threads (the OpenMP runtime PyTorch has loaded). The channels are walked in blocks
 * of BLOCK, so that the innermost loop has a fixed length and its accumulators stay in vector
 * registers. The file includes itself once per element type (float: _f32, double: _f64).
 */
#ifndef T
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16
#define MIN_PARALLEL 32768L /* elements below which waking other threads costs more than it saves */

/* sigmoid(z) = 1/(1 + e^−z). For float, e^x from the Cephes expf polynomial (range reduction by ln 2, a
 * degree-7 polynomial, the exponent set through the bits), written so that the compiler vectorizes it,
 * unlike a call to expf: relative error about 1e-7, close to float's own. */
static inline float sigmoid_f32(float z) {
  float x = -z;
  x = x < -87.0f ? -87.0f : x; /* e^x stays a normal float (vectorizes with -fno-trapping-math) */
  x = x > 88.0f ? 88.0f : x;
  int e = (int)(x * 1.44269504f + 128.5f) - 128; /* round(x / ln 2); the argument is positive */
  float n = (float)e, r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int bits = (e + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return 1.0f / (1.0f + p * scale);
}

static inline double sigmoid_f64(double z) { return 1.0 / (1.0 + exp(-z)); }

#define T float
#define NAME(f) f##_f32
#include "rbn_cpu.c"
#undef T
#undef NAME
#define T double
#define NAME(f) f##_f64
#include "rbn_cpu.c"

#else

/* One instance's slab: `rows` (= H·W) rows of `c` channels, walked in memory order four rows at a time;
 * within a row group the channels go in blocks of BLOCK. The four rows are combined in T (independent
 * additions), then added to per-channel double accumulators. INLINE lets each caller instantiate the
 * block loops for width == BLOCK, a constant the compiler turns into vector instructions. */
#define INLINE static inline __attribute__((always_inline))

INLINE void NAME(add_rows)(const T *restrict r, long stride, long width, long count, double *restrict acc) {
  if (count == 4)
    for (long k = 0; k < width; k++) acc[k] += (r[k] + r[stride + k]) + (r[2 * stride + k] + r[3 * stride + k]);
  else
    for (long k = 0; k < width; k++) acc[k] += r[k];
}

INLINE void NAME(add_squares)(const T *restrict r, const T *restrict mean, long stride, long width, long count,
                              double *restrict acc) {
  if (count == 4)
    for (long k = 0; k < width; k++) {
      T d0 = r[k] - mean[k], d1 = r[stride + k] - mean[k];
      T d2 = r[2 * stride + k] - mean[k], d3 = r[3 * stride + k] - mean[k];
      acc[k] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  else
    for (long k = 0; k < width; k++) {
      T d0 = r[k] - mean[k];
      acc[k] += d0 * d0;
    }
}

INLINE void NAME(add_products)(const T *restrict g, const T *restrict x, const T *restrict mean, long stride,
                               long width, long count, double *restrict s, double *restrict q) {
  if (count == 4)
    for (long k = 0; k < width; k++) {
      long k1 = stride + k, k2 = 2 * stride + k, k3 = 3 * stride + k;
      s[k] += (g[k] + g[k1]) + (g[k2] + g[k3]);
      q[k] += (g[k] * (x[k] - mean[k]) + g[k1] * (x[k1] - mean[k])) +
              (g[k2] * (x[k2] - mean[k]) + g[k3] * (x[k3] - mean[k]));
    }
  else
    for (long k = 0; k < width; k++) {
      s[k] += g[k];
      q[k] += g[k] * (x[k] - mean[k]);
    }
}

INLINE void NAME(write_affine)(const T *restrict x, const T *restrict g, const T *restrict a, const T *restrict b,
                               const T *restrict o, long width, T *restrict y) {
  if (g)
    for (long k = 0; k < width; k++) y[k] = a[k] * x[k] + b[k] * g[k] + o[k];
  else
    for (long k = 0; k < width; k++) y[k] = a[k] * x[k] + o[k];
}

/* Calls STEP(k, width, count) for every row group (count = 4 rows, then single rows) and channel block. */
#define FOR_BLOCKS(rows, c, STEP)                                              \
  for (long i = 0; i < (rows);) {                                              \
    long count = (rows) - i >= 4 ? 4 : 1, k = 0;                               \
    for (; k + BLOCK <= (c); k += BLOCK) STEP(i, k, BLOCK, count);             \
    if (k < (c)) STEP(i, k, (c) - k, count);                                   \
    i += count;                                                                \
  }

static void NAME(slab_moments)(const T *restrict x, long rows, long c, T *restrict m, T *restrict v,
                               double *restrict acc) {
  for (long k = 0; k < c; k++) acc[k] = 0;
#define SUM(i, k, width, count) NAME(add_rows)(x + (i) * c + (k), c, width, count, acc + (k))
  FOR_BLOCKS(rows, c, SUM)
#undef SUM
  for (long k = 0; k < c; k++) {
    m[k] = (T)(acc[k] / rows);
    acc[k] = 0;
  }
#define SQUARES(i, k, width, count) NAME(add_squares)(x + (i) * c + (k), m + (k), c, width, count, acc + (k))
  FOR_BLOCKS(rows, c, SQUARES)
#undef SQUARES
  for (long k = 0; k < c; k++) v[k] = (T)(acc[k] / rows);
}

static void NAME(slab_grad_sums)(const T *restrict g, const T *restrict x, const T *restrict m, long rows, long c,
                                 T *restrict s1, T *restrict s2, double *restrict acc) {
  for (long k = 0; k < 2 * c; k++) acc[k] = 0;
#define PRODUCTS(i, k, width, count) \
  NAME(add_products)(g + (i) * c + (k), x + (i) * c + (k), m + (k), c, width, count, acc + (k), acc + c + (k))
  FOR_BLOCKS(rows, c, PRODUCTS)
#undef PRODUCTS
  for (long k = 0; k < c; k++) {
    s1[k] = (T)acc[k];
    s2[k] = (T)acc[c + k];
  }
}

static void NAME(slab_affine)(const T *restrict x, const T *restrict g, const T *restrict a, const T *restrict b,
                              const T *restrict o, long rows, long c, T *restrict y) {
  for (long i = 0; i < rows; i++) {
    long at = i * c, k = 0;
    for (; k + BLOCK <= c; k += BLOCK) NAME(write_affine)(x + at + k, g ? g + at + k : 0, a + k, b + k, o + k, BLOCK, y + at + k);
    if (k < c) NAME(write_affine)(x + at + k, g ? g + at + k : 0, a + k, b + k, o + k, c - k, y + at + k);
  }
}

/* The three passes over all instances, `threads` OpenMP threads sharing the instances. The reductions
 * return 0, or 1 when a thread could not allocate its accumulators (then their results are incomplete). */
static int NAME(moments)(const T *restrict x, long n, long c, long hw, T *restrict m, T *restrict v, int threads) {
  int failed = 0;
#pragma omp parallel num_threads(threads) if (n * c * hw >= MIN_PARALLEL)
  {
    double *acc = malloc(sizeof(double) * (size_t)(c + 1));
    if (!acc) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (long b = 0; b < n; b++)
      if (acc) NAME(slab_moments)(x + b * c * hw, hw, c, m + b * c, v + b * c, acc);
    free(acc);
  }
  return failed;
}

static int NAME(grad_sums)(const T *restrict g, const T *restrict x, const T *restrict m, long n, long c, long hw,
                           T *restrict s1, T *restrict s2, int threads) {
  int failed = 0;
#pragma omp parallel num_threads(threads) if (n * c * hw >= MIN_PARALLEL)
  {
    double *acc = malloc(sizeof(double) * (2 * (size_t)c + 1));
    if (!acc) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (long b = 0; b < n; b++)
      if (acc) NAME(slab_grad_sums)(g + b * c * hw, x + b * c * hw, m + b * c, hw, c, s1 + b * c, s2 + b * c, acc);
    free(acc);
  }
  return failed;
}

static void NAME(affine)(const T *restrict x, const T *restrict g, const T *restrict a, const T *restrict bg,
                         const T *restrict o, long n, long c, long hw, T *restrict y, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (n * c * hw >= MIN_PARALLEL)
  for (long b = 0; b < n; b++)
    NAME(slab_affine)(x + b * c * hw, g ? g + b * c * hw : 0, a + b * c, g ? bg + b * c : 0, o + b * c, hw, c,
                      y + b * c * hw);
}

/* Per channel: a = 1 + w_m, r = 1/sqrt(σ² + ε), the mean of K(X) over instances and σ² of X_cm
 * (law of total variance: mean within-instance variance + a²·variance of the instance means). */
static void NAME(channel_stats)(const T *restrict m, const T *restrict v, const T *restrict wm, double eps, long n,
                                long c, double *restrict mean_m, double *restrict between, double *restrict var,
                                double *restrict r) {
  for (long j = 0; j < c; j++) mean_m[j] = between[j] = var[j] = 0;
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      mean_m[j] += m[b * c + j];
      var[j] += v[b * c + j];
    }
  for (long j = 0; j < c; j++) mean_m[j] /= n;
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      double d = m[b * c + j] - mean_m[j];
      between[j] += d * d;
    }
  for (long j = 0; j < c; j++) {
    double a = 1.0 + wm[j];
    between[j] /= n;
    var[j] = var[j] / n + a * a * between[j];
    r[j] = 1.0 / sqrt(var[j] + eps);
  }
}

/* Per instance and channel: k = K(X_s) = a·(m − mean m)·r and s = sigmoid(w_v·k + w_b) (Eq. 4). */
static void NAME(calibration)(const T *restrict m, const double *restrict mean_m, const double *restrict r,
                              const T *restrict wm, const T *restrict wv, const T *restrict wb, long n, long c,
                              T *restrict k, T *restrict s) {
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      long at = b * c + j;
      k[at] = (T)((m[at] - mean_m[j]) * (1.0 + wm[j]) * r[j]);
      s[at] = wb[j] + wv[j] * k[at];
    }
  for (long at = 0; at < n * c; at++) s[at] = NAME(sigmoid)(s[at]);
}

int NAME(rbn_forward)(const T *restrict x, const T *restrict wm, const T *restrict wv, const T *restrict wb,
                       const T *restrict weight, const T *restrict bias, double eps, long n, long c, long hw,
                       T *restrict y, T *restrict m, T *restrict v, T *restrict running_mean,
                       T *restrict running_var, double momentum, int threads) {
  double *stats = malloc(sizeof(double) * (4 * (size_t)c + 1));
  double *mean_m = stats, *between = stats + c, *var = stats + 2 * c, *r = stats + 3 * c;
  T *coef = malloc(sizeof(T) * (4 * (size_t)(n * c) + 1)), *gain = coef, *shift = coef + n * c;
  T *kk = coef + 2 * n * c, *ss = coef + 3 * n * c;
  if (!stats || !coef || NAME(moments)(x, n, c, hw, m, v, threads)) {
    free(coef);
    free(stats);
    return 1; /* out of memory: nothing written but (part of) m and v */
  }
  NAME(channel_stats)(m, v, wm, eps, n, c, mean_m, between, var, r);
  NAME(calibration)(m, mean_m, r, wm, wv, wb, n, c, kk, ss);
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      long at = b * c + j;
      double k = kk[at], s = ss[at];
      double gs = weight ? s * weight[j] : s;
      gain[at] = (T)(gs * r[j]);
      shift[at] = (T)((bias ? bias[j] : 0.0) + gs * k - gs * r[j] * m[at]);
    }
  if (running_mean) /* running statistics of X_cm, the variance unbiased, as nn.BatchNorm2d keeps them */
    for (long j = 0; j < c; j++) {
      running_mean[j] += (T)(momentum * ((1.0 + wm[j]) * mean_m[j] - running_mean[j]));
      running_var[j] += (T)(momentum * (var[j] * (n * hw) / (n * hw - 1) - running_var[j]));
    }
  NAME(affine)(x, 0, gain, 0, shift, n, c, hw, y, threads);
  free(coef);
  free(stats);
  return 0;
}

int NAME(rbn_backward)(const T *restrict g, const T *restrict x, const T *restrict m, const T *restrict v,
                        const T *restrict wm, const T *restrict wv, const T *restrict wb, const T *restrict weight,
                        double eps, long n, long c, long hw, T *restrict dx, T *restrict dwm, T *restrict dwv,
                        T *restrict dwb, T *restrict dweight, T *restrict dbias, int threads) {
  double *stats = malloc(sizeof(double) * (13 * (size_t)c + 1));
  double *mean_m = stats, *between = stats + c, *var = stats + 2 * c, *r = stats + 3 * c;
  double *g_var = stats + 4 * c, *mean_gd = stats + 5 * c, *sum_gkd = stats + 6 * c, *sum_gzk = stats + 7 * c;
  double *sum_gz = stats + 8 * c, *sum_sq = stats + 9 * c, *sum_s1 = stats + 10 * c, *g_var2 = stats + 11 * c;
  double *scale = stats + 12 * c;
  T *sums = malloc(sizeof(T) * (2 * (size_t)(n * c) + 1)), *s1 = sums, *s2 = sums + n * c;
  T *coef = malloc(sizeof(T) * (5 * (size_t)(n * c) + 1)), *gain = coef, *gk = coef + n * c;
  T *offset = coef + 2 * n * c, *kk = coef + 3 * n * c, *ss = coef + 4 * n * c;
  if (!stats || !sums || !coef || NAME(grad_sums)(g, x, m, n, c, hw, s1, s2, threads)) { /* Σ G, Σ G·X̂ */
    free(coef);
    free(sums);
    free(stats);
    return 1; /* out of memory: nothing written */
  }
  NAME(channel_stats)(m, v, wm, eps, n, c, mean_m, between, var, r);
  for (long j = 0; j < c; j++) g_var[j] = mean_gd[j] = sum_gkd[j] = sum_gzk[j] = sum_gz[j] = sum_sq[j] = sum_s1[j] = 0;
  NAME(calibration)(m, mean_m, r, wm, wv, wb, n, c, kk, ss);
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      long at = b * c + j;
      double d = m[at] - mean_m[j], k = kk[at], s = ss[at];
      double gs = weight ? s * weight[j] : s, gn = gs * r[j];
      double q = r[j] * s2[at] + k * s1[at];      /* ∂L/∂(γ·s) */
      double gz = gs * q * (1.0 - s);               /* ∂L/∂z, z = w_v·k + w_b */
      double gkk = gs * s1[at] + gz * wv[j];        /* ∂L/∂k */
      g_var[j] += gkk * k + gn * s2[at];
      sum_gkd[j] += gkk * d;
      sum_gzk[j] += gz * k;
      sum_gz[j] += gz;
      sum_sq[j] += s * q;
      sum_s1[j] += s1[at];
      gain[at] = (T)gn;
      gk[at] = (T)gkk;
    }
  for (long j = 0; j < c; j++) {
    g_var[j] *= -0.5 * r[j] * r[j];  /* ∂L/∂σ² */
    g_var2[j] = g_var[j] * 2.0 / n;
    scale[j] = g_var2[j] / hw;
  }
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      long at = b * c + j;
      double a = 1.0 + wm[j];
      offset[at] = (T)(gk[at] * a * r[j] + (m[at] - mean_m[j]) * g_var2[j] * a * a); /* ∂L/∂D, kept for below */
      mean_gd[j] += offset[at];
    }
  for (long j = 0; j < c; j++) mean_gd[j] /= n;
  for (long b = 0; b < n; b++)
    for (long j = 0; j < c; j++) {
      long at = b * c + j;
      double dm = offset[at] - mean_gd[j] - gain[at] * s1[at];
      offset[at] = (T)(dm / hw - m[at] * scale[j]);
      gk[at] = (T)scale[j]; /* reused: the coefficient of X in ∂X */
    }
  for (long j = 0; j < c; j++) {
    double a = 1.0 + wm[j];
    dwm[j] = (T)(sum_gkd[j] * r[j] + n * a * between[j] * g_var2[j]);
    dwv[j] = (T)sum_gzk[j];
    dwb[j] = (T)sum_gz[j];
    if (dweight) dweight[j] = (T)sum_sq[j];
    if (dbias) dbias[j] = (T)sum_s1[j];
  }
  if (dx) NAME(affine)(x, g, gk, gain, offset, n, c, hw, dx, threads);
  free(coef);
  free(sums);
  free(stats);
  return 0;
}

#endif
