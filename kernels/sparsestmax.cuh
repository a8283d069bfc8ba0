// CUDA kernels of the relaxation ops (sparsestmax family, packed softmax, forest ordering penalty).
// Torch-free: raw device pointers and a cudaStream_t; csrc/cuda/relax.cu launches them on PyTorch's
// current stream.
//
// Closed form (docs/ops.md "Definitions") per group of K values, c = r^2 + 1/K: one-hot at the first argmax if
// c >= 1 - kOneHotTol (or K == 1); else with b = x - max sorted descending (ties by index), prefix
// sums S1, S2, tau = max_s (S1_s - 1)/s, t_s = m_s - sqrt(V_s/(s c - 1)), T = max(tau, max t_s),
// q = relu(b - T) / Z. A maximum tied n_top >= 2 times with n_top c > 1 uses the rank vector
// -(0, 1, ..., n_top-1) on the tied entries instead (ties broken by index). `gain` = 1/Z when the
// circle is active, else 0; the backward needs only (out, gain).
//
// Kernels: (1) one thread per row for dense rows with K <= 32 (registers, bitonic sort); (2) one warp
// per group otherwise (packed groups of any size): each lane takes elements in chunks of 32 and gets
// its sorted position and prefix sums by comparing against all elements of the group (shuffles),
// O(K^2/32) per group: meant for the small groups of the relaxations.
//
// Ordering penalty of forest groups (sorted sparsestmax's ordering term, docs/ops.md):
// out[g] = sum over the group's edges (i, parent(i)) of max(0, q_i - q_parent), one warp per group
// (lane-strided edges, warp-shuffle sum); its backward gives each node +grad[g] for its own edge if
// q_i > q_parent and -grad[g] per child c with q_c > q_i (ties: 0), the children found by scanning
// the group with shuffles (O(K^2/32), no atomics, deterministic). A parent that is not an earlier
// index of its group counts as a root (parents are not validated on the device).
// Arithmetic in float (double for double inputs); storage float, double, __half or __nv_bfloat16.
#pragma once

#include "common.cuh"

namespace trilevelnas {
namespace kernels {

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename A>
__device__ __forceinline__ A warp_min(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Bounds of group g: offsets (clamped into [0, n]) or rows of length row_k.
__device__ __forceinline__ void group_bounds(const int64_t* offsets, int64_t row_k, int64_t n, int64_t g,
                                             int64_t& start, int64_t& k) {
  if (offsets != nullptr) {
    const int64_t a = min(max(offsets[g], int64_t(0)), n);
    const int64_t b = min(max(offsets[g + 1], a), n);
    start = a;
    k = b - a;
  } else {
    start = g * row_k;
    k = row_k;
  }
}

// Calls body(g, start, k, lane) for every group g given to this thread's warp (one warp per
// group, grid-stride over the groups); all lanes of the warp call it together.
template <typename Body>
__device__ __forceinline__ void for_each_group(const int64_t* offsets, int64_t row_k, int64_t n, int64_t groups,
                                               Body body) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t g = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; g < groups; g += warps) {
    int64_t start, k;
    group_bounds(offsets, row_k, n, g, start, k);
    body(g, start, k, lane);
  }
}

// Raises the thresholds tau and tmax with the sorted prefix of size s (prefix sums s1, s2).
template <typename A>
__device__ __forceinline__ void update_thresholds(A s, A s1, A s2, A c, A& tau, A& tmax) {
  const A m = s1 / s;
  const A var = max(s2 / s - m * m, A(0));
  tau = max(tau, (s1 - A(1)) / s);
  const A sc1 = s * c - A(1);
  if (sc1 > A(0) && var > A(0)) tmax = max(tmax, m - sqrt(var / sc1));
}

// Largest t_s (2 <= s <= n_top, s c > 1) of the rank vector -(0, 1, ..., n_top - 1).
template <typename A>
__device__ A tie_threshold(int64_t n_top, A c) {
  A best = neg_inf<A>();
  for (int64_t s = 2; s <= n_top; ++s) {
    const A sd = static_cast<A>(s);
    const A sc1 = sd * c - A(1);
    if (sc1 <= A(0)) continue;
    best = max(best, -(sd - A(1)) / A(2) - sqrt((sd * sd - A(1)) / A(12) / sc1));
  }
  return best;
}

// ------------------------------------------------------------------------------------------------
// One thread per row, K <= N (N a power of two <= 32).

template <typename T, int N>
__global__ void sparsestmax_rows_thread_kernel(const T* __restrict__ x, int64_t rows, int k,
                                               const acc_t<T>* __restrict__ radius, double radius_scalar,
                                               T* __restrict__ out, acc_t<T>* __restrict__ gain) {
  using A = acc_t<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const T* xr = x + row * k;
  T* yr = out + row * k;
  A v[N];
  int idx[N];
  A mx = neg_inf<A>();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    v[i] = i < k ? load_acc(xr + i) : neg_inf<A>();
    idx[i] = i;
    mx = max(mx, v[i]);
  }
  const A r = radius != nullptr ? radius[row] : static_cast<A>(radius_scalar);
  const A c = r * r + A(1) / static_cast<A>(k);
  if (k == 1 || c >= A(1) - static_cast<A>(kOneHotTol)) {
    bool done = false;
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (i < k) {
        const bool hot = !done && v[i] == mx;
        done = done || hot;
        store_acc(yr + i, hot ? A(1) : A(0));
      }
    gain[row] = A(0);
    return;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = i < k ? v[i] - mx : neg_inf<A>();
  // Bitonic sort, descending by value, ties by index ascending.
#pragma unroll
  for (int size = 2; size <= N; size <<= 1) {
#pragma unroll
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int j = i ^ stride;
        if (j > i) {
          const bool j_first = v[j] > v[i] || (v[j] == v[i] && idx[j] < idx[i]);
          const bool swap = ((i & size) == 0) ? j_first : !j_first;
          if (swap) {
            const A tv = v[i];
            v[i] = v[j];
            v[j] = tv;
            const int ti = idx[i];
            idx[i] = idx[j];
            idx[j] = ti;
          }
        }
      }
    }
  }
  A s1 = 0, s2 = 0, tau = neg_inf<A>(), tmax = neg_inf<A>();
  int n_top = 0;
#pragma unroll
  for (int p = 0; p < N; ++p) {
    if (p < k) {
      const A b = v[p];
      if (b == A(0)) n_top = p + 1;
      s1 += b;
      s2 += b * b;
      update_thresholds(static_cast<A>(p + 1), s1, s2, c, tau, tmax);
    }
  }
  const bool tie = n_top >= 2 && static_cast<A>(n_top) * c > A(1);
  const A t = tie ? tie_threshold<A>(n_top, c) : max(tau, tmax);
  A z = 0;
#pragma unroll
  for (int p = 0; p < N; ++p) {
    v[p] = p < k ? (tie ? (p < n_top ? max(-static_cast<A>(p) - t, A(0)) : A(0)) : max(v[p] - t, A(0))) : A(0);
    z += v[p];
  }
  const A inv_z = A(1) / z;
#pragma unroll
  for (int p = 0; p < N; ++p)
    if (p < k) store_acc(yr + idx[p], v[p] * inv_z);
  gain[row] = (tie || tmax > tau) ? inv_z : A(0);
}

// ------------------------------------------------------------------------------------------------
// One warp per group (packed or rows, any K).

// Number of elements j < i of the group equal to the maximum (rank of i within the tied block).
template <typename T>
__device__ int64_t tied_rank(const T* x, int64_t start, int64_t k, int64_t i, acc_t<T> mx, int lane) {
  int64_t rank = 0;
  for (int64_t j0 = 0; j0 < k; j0 += 32) {
    const int64_t jl = j0 + lane;
    const acc_t<T> bjl = jl < k ? load_acc(x + start + jl) - mx : neg_inf<acc_t<T>>();
    const int n = static_cast<int>(min(int64_t(32), k - j0));
    for (int t = 0; t < n; ++t) {
      const acc_t<T> bj = __shfl_sync(0xffffffffu, bjl, t);
      if (bj == acc_t<T>(0) && j0 + t < i) ++rank;
    }
  }
  return rank;
}

template <typename T>
__global__ void sparsestmax_warp_kernel(const T* __restrict__ x, const int64_t* __restrict__ offsets, int64_t row_k,
                                        int64_t n, int64_t groups, const acc_t<T>* __restrict__ radius,
                                        double radius_scalar, T* __restrict__ out, acc_t<T>* __restrict__ gain) {
  using A = acc_t<T>;
  for_each_group(offsets, row_k, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    if (k == 0) {
      if (lane == 0) gain[g] = A(0);
      return;
    }
    const A r = radius != nullptr ? radius[g] : static_cast<A>(radius_scalar);

    A mx = neg_inf<A>();
    for (int64_t i = lane; i < k; i += 32) mx = max(mx, load_acc(x + start + i));
    mx = warp_max(mx);
    const A c = r * r + A(1) / static_cast<A>(k);
    const bool one_hot = k == 1 || c >= A(1) - static_cast<A>(kOneHotTol);

    A tau = neg_inf<A>(), tmax = neg_inf<A>();
    int64_t n_top = 0, first = k;
    if (!one_hot) {
      for (int64_t i0 = 0; i0 < k; i0 += 32) {
        const int64_t i = i0 + lane;
        const bool mi = i < k;
        const A bi = mi ? load_acc(x + start + i) - mx : neg_inf<A>();
        int64_t rank = 0;
        A s1 = 0, s2 = 0;
        for (int64_t j0 = 0; j0 < k; j0 += 32) {
          const int64_t jl = j0 + lane;
          const A bjl = jl < k ? load_acc(x + start + jl) - mx : neg_inf<A>();
          const int cnt = static_cast<int>(min(int64_t(32), k - j0));
          for (int t = 0; t < cnt; ++t) {
            const A bj = __shfl_sync(0xffffffffu, bjl, t);
            if (bj > bi || (bj == bi && j0 + t < i)) {
              ++rank;
              s1 += bj;
              s2 += bj * bj;
            }
          }
        }
        if (mi) {
          s1 += bi;
          s2 += bi * bi;
          update_thresholds(static_cast<A>(rank + 1), s1, s2, c, tau, tmax);
          if (bi == A(0)) {
            ++n_top;
            first = min(first, i);
          }
        }
      }
      tau = warp_max(tau);
      tmax = warp_max(tmax);
      n_top = warp_sum(n_top);
    } else {
      for (int64_t i = lane; i < k; i += 32)
        if (load_acc(x + start + i) == mx) first = min(first, i);
    }
    first = warp_min(first);
    const bool tie = !one_hot && n_top >= 2 && static_cast<A>(n_top) * c > A(1);
    const A t = tie ? tie_threshold<A>(n_top, c) : max(tau, tmax);

    // Unnormalised output of element i (every lane of the warp calls this together).
    auto unnorm = [&](int64_t i, bool mi) -> A {
      const A bi = mi ? load_acc(x + start + i) - mx : neg_inf<A>();
      if (one_hot) return (mi && i == first) ? A(1) : A(0);
      if (tie) {
        const int64_t rk = tied_rank(x, start, k, i, mx, lane);
        return (mi && bi == A(0)) ? max(-static_cast<A>(rk) - t, A(0)) : A(0);
      }
      return mi ? max(bi - t, A(0)) : A(0);
    };
    A z = 0;
    for (int64_t i0 = 0; i0 < k; i0 += 32) z += unnorm(i0 + lane, i0 + lane < k);
    z = warp_sum(z);
    const A inv_z = A(1) / z;
    for (int64_t i0 = 0; i0 < k; i0 += 32) {
      const int64_t i = i0 + lane;
      const A p = unnorm(i, i < k);
      if (i < k) store_acc(out + start + i, p * inv_z);
    }
    if (lane == 0) gain[g] = (!one_hot && (tie || tmax > tau)) ? inv_z : A(0);
  });
}

// ------------------------------------------------------------------------------------------------
// Backward: dx = scale * (g - mean_S g - e <e, g>/<e, e>) on the support S = {q > 0}, e = q - 1/|S|,
// scale = gain when gain > 0 (circle active), else 1 without the e term (sparsemax Jacobian).

// Sums over the support of one group (or of one lane's share of it) that the backward needs.
template <typename A>
struct SupportSums {
  A cnt = 0, sg = 0, sq = 0, sqq = 0, sqg = 0;
  __device__ __forceinline__ void add(A qi, A gi) {
    if (qi > A(0)) {
      cnt += A(1);
      sg += gi;
      sq += qi;
      sqq += qi * qi;
      sqg += qi * gi;
    }
  }
  __device__ __forceinline__ void warp_reduce() {
    cnt = warp_sum(cnt);
    sg = warp_sum(sg);
    sq = warp_sum(sq);
    sqq = warp_sum(sqq);
    sqg = warp_sum(sqg);
  }
};

// dx_i of one group from its support sums and gain.
template <typename A>
struct BackwardCoefficients {
  A inv_s, gmean, proj, scale;
  __device__ __forceinline__ BackwardCoefficients(const SupportSums<A>& s, A gain) {
    inv_s = A(1) / max(s.cnt, A(1));
    gmean = s.sg * inv_s;
    const A ee = max(s.sqq - A(2) * inv_s * s.sq + inv_s, A(0));
    proj = (gain > A(0) && ee > A(0)) ? (s.sqg - inv_s * s.sg) / ee : A(0);
    scale = gain > A(0) ? gain : A(1);
  }
  __device__ __forceinline__ A dx(A qi, A gi) const {
    return qi > A(0) ? scale * (gi - gmean - (qi - inv_s) * proj) : A(0);
  }
};

template <typename T>
__global__ void sparsestmax_backward_warp_kernel(const T* __restrict__ grad, const T* __restrict__ q,
                                                 const acc_t<T>* __restrict__ gain,
                                                 const int64_t* __restrict__ offsets, int64_t row_k, int64_t n,
                                                 int64_t groups, T* __restrict__ dx) {
  using A = acc_t<T>;
  for_each_group(offsets, row_k, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    SupportSums<A> sums;
    for (int64_t i = lane; i < k; i += 32) sums.add(load_acc(q + start + i), load_acc(grad + start + i));
    sums.warp_reduce();
    const BackwardCoefficients<A> coef(sums, gain[g]);
    for (int64_t i = lane; i < k; i += 32)
      store_acc(dx + start + i, coef.dx(load_acc(q + start + i), load_acc(grad + start + i)));
  });
}

template <typename T>
__global__ void sparsestmax_backward_rows_thread_kernel(const T* __restrict__ grad, const T* __restrict__ q,
                                                        const acc_t<T>* __restrict__ gain, int64_t rows, int k,
                                                        T* __restrict__ dx) {
  using A = acc_t<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const T* gr = grad + row * k;
  const T* qr = q + row * k;
  SupportSums<A> sums;
  for (int i = 0; i < k; ++i) sums.add(load_acc(qr + i), load_acc(gr + i));
  const BackwardCoefficients<A> coef(sums, gain[row]);
  for (int i = 0; i < k; ++i) store_acc(dx + row * k + i, coef.dx(load_acc(qr + i), load_acc(gr + i)));
}

// ------------------------------------------------------------------------------------------------
// Packed softmax.

template <typename T>
__global__ void softmax_packed_kernel(const T* __restrict__ x, const int64_t* __restrict__ offsets, int64_t n,
                                      int64_t groups, T* __restrict__ y) {
  using A = acc_t<T>;
  for_each_group(offsets, 0, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    A mx = neg_inf<A>();
    for (int64_t i = lane; i < k; i += 32) mx = max(mx, load_acc(x + start + i));
    mx = warp_max(mx);
    A z = 0;
    for (int64_t i = lane; i < k; i += 32) z += exp(load_acc(x + start + i) - mx);
    z = warp_sum(z);
    for (int64_t i = lane; i < k; i += 32) store_acc(y + start + i, exp(load_acc(x + start + i) - mx) / z);
  });
}

template <typename T>
__global__ void softmax_packed_backward_kernel(const T* __restrict__ grad, const T* __restrict__ y,
                                               const int64_t* __restrict__ offsets, int64_t n, int64_t groups,
                                               T* __restrict__ dx) {
  for_each_group(offsets, 0, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    acc_t<T> dot = 0;  // <y, grad> over the group
    for (int64_t i = lane; i < k; i += 32) dot += load_acc(y + start + i) * load_acc(grad + start + i);
    dot = warp_sum(dot);
    for (int64_t i = lane; i < k; i += 32)
      store_acc(dx + start + i, load_acc(y + start + i) * (load_acc(grad + start + i) - dot));
  });
}

// ------------------------------------------------------------------------------------------------
// Forest ordering penalty.

// True when node i (index within its group) has a parent p, i.e. 0 <= p < i.
__device__ __forceinline__ bool has_parent(int64_t p, int64_t i) { return p >= 0 && p < i; }

template <typename T>
__global__ void order_penalty_kernel(const T* __restrict__ q, const int64_t* __restrict__ offsets,
                                     const int64_t* __restrict__ parent, int64_t n, int64_t groups,
                                     T* __restrict__ out) {
  using A = acc_t<T>;
  for_each_group(offsets, 0, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    A sum = 0;
    for (int64_t i = lane; i < k; i += 32) {
      const int64_t p = parent[start + i];
      if (has_parent(p, i)) {
        const A d = load_acc(q + start + i) - load_acc(q + start + p);
        if (d > A(0)) sum += d;
      }
    }
    sum = warp_sum(sum);
    if (lane == 0) store_acc(out + g, sum);
  });
}

template <typename T>
__global__ void order_penalty_backward_kernel(const T* __restrict__ grad, const T* __restrict__ q,
                                              const int64_t* __restrict__ offsets,
                                              const int64_t* __restrict__ parent, int64_t n, int64_t groups,
                                              T* __restrict__ dq) {
  using A = acc_t<T>;
  for_each_group(offsets, 0, n, groups, [&](int64_t g, int64_t start, int64_t k, int lane) {
    const A gr = load_acc(grad + g);
    for (int64_t i0 = 0; i0 < k; i0 += 32) {  // every lane runs the same iterations (shuffles below)
      const int64_t i = i0 + lane;
      const bool mi = i < k;
      const A qi = mi ? load_acc(q + start + i) : A(0);
      int slope = 0;
      if (mi) {
        const int64_t p = parent[start + i];
        if (has_parent(p, i) && qi > load_acc(q + start + p)) ++slope;
      }
      for (int64_t j0 = 0; j0 < k; j0 += 32) {
        const int64_t jl = j0 + lane;
        const int64_t pjl = jl < k ? parent[start + jl] : int64_t(-1);
        const A qjl = jl < k ? load_acc(q + start + jl) : A(0);
        const int cnt = static_cast<int>(min(int64_t(32), k - j0));
        for (int t = 0; t < cnt; ++t) {
          const int64_t pj = __shfl_sync(0xffffffffu, pjl, t);
          const A qj = __shfl_sync(0xffffffffu, qjl, t);
          if (mi && pj == i && i < j0 + t && qj > qi) --slope;  // child j0 + t of i rises above it
        }
      }
      if (mi) store_acc(dq + start + i, gr * static_cast<A>(slope));
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Launchers. Each is one kernel launch on `stream`; they return cudaGetLastError().

constexpr int kThreads = 128;

inline unsigned int warp_blocks(int64_t groups) {
  const int64_t warps_per_block = kThreads / 32;
  const int64_t blocks = (groups + warps_per_block - 1) / warps_per_block;
  return static_cast<unsigned int>(blocks < (int64_t(1) << 30) ? blocks : (int64_t(1) << 30));
}

// Launches `kernel` with one warp per group (nothing for no groups).
template <typename... Params, typename... Args>
inline cudaError_t launch_warps(void (*kernel)(Params...), int64_t groups, cudaStream_t stream, Args... args) {
  if (groups <= 0) return cudaSuccess;
  kernel<<<warp_blocks(groups), kThreads, 0, stream>>>(args...);
  return cudaGetLastError();
}

// Sparsestmax of packed groups. `radius` is a per-group device array or nullptr (then the scalar
// applies to every group).
template <typename T>
inline cudaError_t launch_sparsestmax_packed(const T* x, const int64_t* offsets, int64_t n, int64_t groups,
                                             const acc_t<T>* radius, double radius_scalar, T* out, acc_t<T>* gain,
                                             cudaStream_t stream) {
  return launch_warps(sparsestmax_warp_kernel<T>, groups, stream, x, offsets, int64_t(0), n, groups, radius,
                      radius_scalar, out, gain);
}

// Sparsestmax of `rows` contiguous rows of length k.
template <typename T>
inline cudaError_t launch_sparsestmax_rows(const T* x, int64_t rows, int64_t k, const acc_t<T>* radius,
                                           double radius_scalar, T* out, acc_t<T>* gain, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const unsigned int blocks = static_cast<unsigned int>((rows + kThreads - 1) / kThreads);
  const int ki = static_cast<int>(k);
  if (k <= 4) {
    sparsestmax_rows_thread_kernel<T, 4><<<blocks, kThreads, 0, stream>>>(x, rows, ki, radius, radius_scalar, out, gain);
  } else if (k <= 8) {
    sparsestmax_rows_thread_kernel<T, 8><<<blocks, kThreads, 0, stream>>>(x, rows, ki, radius, radius_scalar, out, gain);
  } else if (k <= 16) {
    sparsestmax_rows_thread_kernel<T, 16><<<blocks, kThreads, 0, stream>>>(x, rows, ki, radius, radius_scalar, out, gain);
  } else if (k <= 32) {
    sparsestmax_rows_thread_kernel<T, 32><<<blocks, kThreads, 0, stream>>>(x, rows, ki, radius, radius_scalar, out, gain);
  } else {
    sparsestmax_warp_kernel<T><<<warp_blocks(rows), kThreads, 0, stream>>>(
        x, nullptr, k, rows * k, rows, radius, radius_scalar, out, gain);
  }
  return cudaGetLastError();
}

template <typename T>
inline cudaError_t launch_sparsestmax_backward_packed(const T* grad, const T* q, const acc_t<T>* gain,
                                                      const int64_t* offsets, int64_t n, int64_t groups, T* dx,
                                                      cudaStream_t stream) {
  return launch_warps(sparsestmax_backward_warp_kernel<T>, groups, stream, grad, q, gain, offsets, int64_t(0), n,
                      groups, dx);
}

template <typename T>
inline cudaError_t launch_sparsestmax_backward_rows(const T* grad, const T* q, const acc_t<T>* gain, int64_t rows,
                                                    int64_t k, T* dx, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (k <= 32) {
    const unsigned int blocks = static_cast<unsigned int>((rows + kThreads - 1) / kThreads);
    sparsestmax_backward_rows_thread_kernel<T><<<blocks, kThreads, 0, stream>>>(grad, q, gain, rows,
                                                                                 static_cast<int>(k), dx);
  } else {
    sparsestmax_backward_warp_kernel<T><<<warp_blocks(rows), kThreads, 0, stream>>>(grad, q, gain, nullptr, k,
                                                                                    rows * k, rows, dx);
  }
  return cudaGetLastError();
}

template <typename T>
inline cudaError_t launch_softmax_packed(const T* x, const int64_t* offsets, int64_t n, int64_t groups, T* y,
                                         cudaStream_t stream) {
  return launch_warps(softmax_packed_kernel<T>, groups, stream, x, offsets, n, groups, y);
}

template <typename T>
inline cudaError_t launch_softmax_packed_backward(const T* grad, const T* y, const int64_t* offsets, int64_t n,
                                                  int64_t groups, T* dx, cudaStream_t stream) {
  return launch_warps(softmax_packed_backward_kernel<T>, groups, stream, grad, y, offsets, n, groups, dx);
}

// Ordering penalty of packed forest groups: out[g] (storage type T) for each of the `groups` groups.
template <typename T>
inline cudaError_t launch_order_penalty_packed(const T* q, const int64_t* offsets, const int64_t* parent, int64_t n,
                                               int64_t groups, T* out, cudaStream_t stream) {
  return launch_warps(order_penalty_kernel<T>, groups, stream, q, offsets, parent, n, groups, out);
}

// Vector-Jacobian product of the ordering penalty for the per-group upstream gradient `grad` [groups].
template <typename T>
inline cudaError_t launch_order_penalty_packed_backward(const T* grad, const T* q, const int64_t* offsets,
                                                        const int64_t* parent, int64_t n, int64_t groups, T* dq,
                                                        cudaStream_t stream) {
  return launch_warps(order_penalty_backward_kernel<T>, groups, stream, grad, q, offsets, parent, n, groups, dq);
}

}  // namespace kernels
}  // namespace trilevelnas
