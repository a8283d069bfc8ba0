// Per-group CPU kernels of the relaxation ops (sparsestmax family, softmax, the forest ordering
// penalty), torch-free.
//
// The closed form is docs/ops.md "Definitions". One group is a contiguous run of K values. All arithmetic is in
// double whatever the storage type. The forward of the sparsestmax family also returns the group's
// "gain": 1/Z when the circle constraint is active (Z = sum of the unnormalised output), 0 when
// the output is the sparsemax projection (or one-hot); the backward needs only (out, gain).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common.cuh"

namespace trilevelnas {
namespace relax {

using kernels::kOneHotTol;  // a group is one-hot when c = r^2 + 1/K >= 1 - kOneHotTol

// Scratch space reused across the groups handled by one thread.
struct Workspace {
  std::vector<double> b, v;
  std::vector<int64_t> order;
  void reserve(int64_t k) {
    if (static_cast<int64_t>(b.size()) < k) {
      b.resize(k);
      v.resize(k);
      order.resize(k);
    }
  }
};

// Order of the sorted scan: b descending, ties by index ascending (deterministic).
inline bool precedes(const double* b, int64_t x, int64_t y) { return b[x] > b[y] || (b[x] == b[y] && x < y); }

// Puts the element of rank `pos` at position pos of (v, idx), given positions [0, pos) already hold
// ranks 0..pos-1; v mirrors b[idx]. The first kLazy ranks are found by (branch-free) selection, as
// the scan usually stops after a few; at position kLazy the rest is sorted once.
constexpr int64_t kLazy = 8;
inline void place_next(const double* b, double* v, int64_t* idx, int64_t pos, int64_t k) {
  if (pos < kLazy) {
    double bv = v[pos];
    int64_t bi = idx[pos], bp = pos;
    for (int64_t j = pos + 1; j < k; ++j) {
      const double vj = v[j];
      const int64_t ij = idx[j];
      const bool better = (vj > bv) | ((vj == bv) & (ij < bi));
      bv = better ? vj : bv;
      bi = better ? ij : bi;
      bp = better ? j : bp;
    }
    v[bp] = v[pos];
    idx[bp] = idx[pos];
    v[pos] = bv;
    idx[pos] = bi;
  } else if (pos == kLazy) {
    std::sort(idx + pos, idx + k, [b](int64_t x, int64_t y) { return precedes(b, x, y); });
    for (int64_t j = pos; j < k; ++j) v[j] = b[idx[j]];
  }
}

// Threshold of the tie rule: the largest t_s (s = 2..n_top, s*c > 1) of the rank vector
// -(0, 1, ..., n_top - 1), whose prefix mean and variance are -(s-1)/2 and (s^2-1)/12.
inline double tie_threshold(int64_t n_top, double c) {
  double best = -std::numeric_limits<double>::infinity();
  for (int64_t s = 2; s <= n_top; ++s) {
    const double sd = static_cast<double>(s);
    const double sc1 = sd * c - 1.0;
    if (sc1 <= 0) continue;
    const double t = -(sd - 1.0) / 2.0 - std::sqrt((sd * sd - 1.0) / 12.0 / sc1);
    best = std::max(best, t);
  }
  return best;
}

// Sparsestmax of one group. `x` holds the inputs in double; writes the output through
// `store(i, value)`; returns the gain.
template <typename Store>
double sparsestmax_group(Workspace& ws, const double* x, int64_t k, double r, Store store) {
  if (k <= 0) return 0.0;
  int64_t arg = 0;
  for (int64_t i = 1; i < k; ++i)
    if (x[i] > x[arg]) arg = i;
  const double c = r * r + 1.0 / static_cast<double>(k);
  if (k == 1 || c >= 1.0 - kOneHotTol) {
    for (int64_t i = 0; i < k; ++i) store(i, i == arg ? 1.0 : 0.0);
    return 0.0;
  }
  ws.reserve(k);
  double* b = ws.b.data();
  double* sv = ws.v.data();
  int64_t* idx = ws.order.data();
  const double mx = x[arg];
  for (int64_t i = 0; i < k; ++i) {
    b[i] = x[i] - mx;
    sv[i] = b[i];
    idx[i] = i;
  }

  const double inf = std::numeric_limits<double>::infinity();
  double s1 = 0, s2 = 0, tau = -inf, tmax = -inf;
  int64_t n_top = 0;
  for (int64_t s = 1; s <= k; ++s) {
    place_next(b, sv, idx, s - 1, k);
    const double v = sv[s - 1];
    // Once an element is at or below the best threshold so far, no later prefix can raise it (the
    // optimal threshold is attained at the support size, and the support is within this prefix).
    if (v < 0.0 && v <= std::max(tau, tmax)) break;
    if (v == 0.0) n_top = s;  // the maximum's ties lead the order
    s1 += v;
    s2 += v * v;
    const double sd = static_cast<double>(s);
    const double m = s1 / sd;
    const double var = std::max(s2 / sd - m * m, 0.0);
    tau = std::max(tau, (s1 - 1.0) / sd);
    const double sc1 = sd * c - 1.0;
    if (sc1 > 0 && var > 0) tmax = std::max(tmax, m - std::sqrt(var / sc1));
  }

  double z = 0;
  if (n_top >= 2 && static_cast<double>(n_top) * c > 1.0) {
    // Tied maximum with the circle active: the projection is not unique. Take the limit of the
    // tied entries perturbed by -eps * rank (docs/ops.md: ties broken by index).
    const double t = tie_threshold(n_top, c);
    for (int64_t p = 0; p < n_top; ++p) z += std::max(-static_cast<double>(p) - t, 0.0);
    for (int64_t p = 0; p < k; ++p)
      store(idx[p], p < n_top ? std::max(-static_cast<double>(p) - t, 0.0) / z : 0.0);
    return 1.0 / z;
  }
  const double t = std::max(tau, tmax);
  for (int64_t p = 0; p < k; ++p) z += std::max(b[idx[p]] - t, 0.0);
  for (int64_t i = 0; i < k; ++i) store(i, std::max(b[i] - t, 0.0) / z);
  return tmax > tau ? 1.0 / z : 0.0;
}

// Vector-Jacobian product of one group from its output and gain (docs/ops.md "Definitions", backward).
template <typename T>
void sparsestmax_group_backward(const T* g, const T* q, int64_t k, double gain, T* dx) {
  int64_t s = 0;
  double gsum = 0;
  for (int64_t i = 0; i < k; ++i)
    if (q[i] > 0) {
      ++s;
      gsum += static_cast<double>(g[i]);
    }
  if (s == 0) {
    for (int64_t i = 0; i < k; ++i) dx[i] = T(0);
    return;
  }
  const double inv_s = 1.0 / static_cast<double>(s);
  const double gmean = gsum * inv_s;
  double proj = 0;
  double scale = 1.0;
  if (gain > 0) {
    double ee = 0, eg = 0;
    for (int64_t i = 0; i < k; ++i)
      if (q[i] > 0) {
        const double e = static_cast<double>(q[i]) - inv_s;
        ee += e * e;
        eg += e * static_cast<double>(g[i]);
      }
    proj = ee > 0 ? eg / ee : 0.0;
    scale = gain;
  }
  for (int64_t i = 0; i < k; ++i) {
    if (q[i] > 0) {
      const double e = static_cast<double>(q[i]) - inv_s;
      dx[i] = static_cast<T>(scale * (static_cast<double>(g[i]) - gmean - e * proj));
    } else {
      dx[i] = T(0);
    }
  }
}

template <typename T>
void softmax_group(const T* x, T* y, int64_t k) {
  if (k <= 0) return;
  double mx = static_cast<double>(x[0]);
  for (int64_t i = 1; i < k; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double z = 0;
  for (int64_t i = 0; i < k; ++i) z += std::exp(static_cast<double>(x[i]) - mx);
  const double inv = 1.0 / z;
  for (int64_t i = 0; i < k; ++i) y[i] = static_cast<T>(std::exp(static_cast<double>(x[i]) - mx) * inv);
}

template <typename T>
void softmax_group_backward(const T* g, const T* y, int64_t k, T* dx) {
  double dot = 0;
  for (int64_t i = 0; i < k; ++i) dot += static_cast<double>(g[i]) * static_cast<double>(y[i]);
  for (int64_t i = 0; i < k; ++i)
    dx[i] = static_cast<T>(static_cast<double>(y[i]) * (static_cast<double>(g[i]) - dot));
}

// Ordering penalty of one forest group (docs/ops.md): sum over the non-root nodes i of
// max(0, q[i] - q[parent[i]]), accumulated in double. parent[i] is -1 (root) or in [0, i): the
// caller validates it.
template <typename T>
double order_penalty_group(const T* q, const int64_t* parent, int64_t k) {
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t p = parent[i];
    if (p < 0) continue;
    const double d = static_cast<double>(q[i]) - static_cast<double>(q[p]);
    if (d > 0) sum += d;
  }
  return sum;
}

// Vector-Jacobian product of order_penalty_group for the upstream scalar `grad`: every edge with
// q_child > q_parent adds +grad to the child and -grad to the parent; a tie adds nothing (the
// subgradient 0). `slope` is scratch of size k (per-node sum of the edges' +-1 slopes, exact).
template <typename T>
void order_penalty_group_backward(double grad, const T* q, const int64_t* parent, int64_t k, int64_t* slope,
                                  T* dq) {
  for (int64_t i = 0; i < k; ++i) slope[i] = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t p = parent[i];
    if (p >= 0 && static_cast<double>(q[i]) > static_cast<double>(q[p])) {
      ++slope[i];
      --slope[p];
    }
  }
  for (int64_t i = 0; i < k; ++i) dq[i] = static_cast<T>(grad * static_cast<double>(slope[i]));
}

}  // namespace relax
}  // namespace trilevelnas
