// The fused epilogue of the CPU kernels of superconv2d (superconv_cpu.cpp), forward and backward:
// plain loops over [N, C, H*W] planes, contiguous or channels-last, that the compiler vectorises.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "superconv.h"

namespace trilevelnas {
namespace superconv {

// act(v) and act'(v) as min / max / select, which the compiler vectorises (a product with
// static_cast<acc_t>(v > 0) was compiled to a branch, which mispredicts on random signs).
template <int64_t ACT, typename acc_t>
inline acc_t act_value(acc_t v, acc_t slope) {
  if constexpr (ACT == kRelu) return std::max(v, acc_t(0));
  if constexpr (ACT == kLeakyRelu) return std::max(v, acc_t(0)) + slope * std::min(v, acc_t(0));
  return v;
}

template <int64_t ACT, typename acc_t>
inline acc_t act_slope(acc_t v, acc_t slope) {
  if constexpr (ACT == kRelu) return v > acc_t(0) ? acc_t(1) : acc_t(0);
  if constexpr (ACT == kLeakyRelu) return v > acc_t(0) ? acc_t(1) : slope;
  return acc_t(1);
}

// Calls fn(std::integral_constant<int64_t, ACT>{}) for the runtime activation code.
template <typename F>
inline void dispatch_activation(int64_t act, F&& fn) {
  if (act == kRelu) {
    fn(std::integral_constant<int64_t, kRelu>{});
  } else if (act == kLeakyRelu) {
    fn(std::integral_constant<int64_t, kLeakyRelu>{});
  } else {
    fn(std::integral_constant<int64_t, kNone>{});
  }
}

// Pixels per task when a channels-last tensor is read or written plane by plane.
constexpr int64_t kTile = 32;

// Strides of an [N, C, H, W] tensor that is contiguous or channels-last, with H*W flattened.
struct PlaneStrides {
  int64_t n, c, i;
};

inline PlaneStrides plane_strides(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.stride(2) == t.size(3) * t.stride(3) || t.size(2) == 1);
  return {t.stride(0), t.stride(1), t.size(2) * t.size(3) == 1 ? 1 : t.stride(3)};
}

// out[i] = (acc[i]) + s * act(z[i * zi]) over one plane; the zi == 1 case vectorises.
template <int64_t ACT, bool HAS_ACC, typename scalar_t, typename acc_t>
inline void forward_plane(const scalar_t* __restrict__ z, int64_t zi,
                          const scalar_t* __restrict__ a, scalar_t* __restrict__ o, int64_t plane,
                          acc_t s, acc_t slope) {
  auto value = [&](acc_t v, int64_t i) {
    const acc_t y = s * act_value<ACT>(v, slope);
    if constexpr (HAS_ACC) return static_cast<scalar_t>(static_cast<acc_t>(a[i]) + y);
    return static_cast<scalar_t>(y);
  };
  if (zi == 1) {
    for (int64_t i = 0; i < plane; ++i) o[i] = value(static_cast<acc_t>(z[i]), i);
  } else {
    for (int64_t i = 0; i < plane; ++i) o[i] = value(static_cast<acc_t>(z[i * zi]), i);
  }
}

// out[n, c] = acc[n, c] + s * act(z[n, c]) for c < width, acc[n, c] (or 0) beyond: one pass that
// also turns a channels-last z into the contiguous output.
template <typename scalar_t>
void epilogue_forward(const scalar_t* z, PlaneStrides zs, const scalar_t* acc, scalar_t* out,
                      int64_t n_batch, int64_t channels, int64_t width, int64_t plane, int64_t act,
                      double slope, double s) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t slope_a = static_cast<acc_t>(slope), s_a = static_cast<acc_t>(s);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1));
  // Contiguous z: one task per plane. Channels-last z: tasks of kTile pixels × all channels, so
  // that the transposed reads of z stay in L1.
  const int64_t tile = zs.i == 1 ? plane : std::min<int64_t>(plane, kTile);
  const int64_t n_tiles = tile > 0 ? (plane + tile - 1) / tile : 0;
  dispatch_activation(act, [&](auto act_c) {
    constexpr int64_t ACT = decltype(act_c)::value;
    auto run = [&](int64_t n, int64_t c, int64_t i0, int64_t len) {
      const int64_t p = n * channels + c;
      scalar_t* o = out + p * plane + i0;
      const scalar_t* a = acc ? acc + p * plane + i0 : nullptr;
      if (c < width) {
        const scalar_t* zp = z + n * zs.n + c * zs.c + i0 * zs.i;
        if (a) {
          forward_plane<ACT, true>(zp, zs.i, a, o, len, s_a, slope_a);
        } else {
          forward_plane<ACT, false>(zp, zs.i, a, o, len, s_a, slope_a);
        }
      } else if (a) {
        std::memcpy(o, a, sizeof(scalar_t) * len);
      } else {
        std::memset(static_cast<void*>(o), 0, sizeof(scalar_t) * len);
      }
    };
    if (zs.i == 1) {
      at::parallel_for(0, n_batch * channels, grain, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) run(p / channels, p % channels, 0, plane);
      });
    } else {
      at::parallel_for(0, n_batch * n_tiles, 16, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t n = t / n_tiles, i0 = (t % n_tiles) * tile;
          for (int64_t c = 0; c < channels; ++c) run(n, c, i0, std::min(tile, plane - i0));
        }
      });
    }
  });
}

// One plane of the backward epilogue: gz[i * gi] = s * g[i] * act'(z[i * zi]); returns the sums of
// gz (bias gradient) and of g * act(z) (scale gradient). Without z the activation is "none".
// The sums run in kLanes independent lanes so that the loop vectorises.
template <int64_t ACT, bool HAS_Z, bool CONTIGUOUS, typename scalar_t, typename acc_t>
inline std::pair<acc_t, acc_t> backward_plane(const scalar_t* __restrict__ g,
                                              const scalar_t* __restrict__ z, int64_t zi,
                                              scalar_t* __restrict__ gz, int64_t gi, int64_t plane,
                                              acc_t s, acc_t slope) {
  constexpr int kLanes = 16;
  acc_t sum_b[kLanes] = {}, sum_s[kLanes] = {};
  const int64_t z_step = CONTIGUOUS ? 1 : zi, g_step = CONTIGUOUS ? 1 : gi;
  auto body = [&](int64_t i, int j) {
    const acc_t gv = static_cast<acc_t>(g[i]);
    const acc_t v = HAS_Z ? static_cast<acc_t>(z[i * z_step]) : acc_t(0);
    const acc_t m = HAS_Z ? act_slope<ACT>(v, slope) : acc_t(1);
    const acc_t d = s * gv * m;
    gz[i * g_step] = static_cast<scalar_t>(d);
    sum_b[j] += d;
    if constexpr (HAS_Z) sum_s[j] += gv * act_value<ACT>(v, slope);
  };
  int64_t i = 0;
  for (; i + kLanes <= plane; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) body(i + j, j);
  }
  for (int j = 0; i < plane; ++i, ++j) body(i, j);
  acc_t total_b = 0, total_s = 0;
  for (int j = 0; j < kLanes; ++j) {
    total_b += sum_b[j];
    total_s += sum_s[j];
  }
  return {total_b, total_s};
}

struct BackwardSums {
  std::vector<double> bias;  // per active channel: sum of grad_z
  double scale = 0.0;        // sum of grad[:, :width] * act(z)
};

// grad_z = s * grad[:, :width] * act'(z) (grad_z, z: contiguous or channels-last), with the sums
// for the bias and scale gradients: per plane, then added in plane order (deterministic).
template <typename scalar_t>
BackwardSums epilogue_backward(const scalar_t* grad, const scalar_t* z, PlaneStrides zs,
                               scalar_t* grad_z, PlaneStrides gzs, int64_t n_batch,
                               int64_t channels, int64_t width, int64_t plane, int64_t act,
                               double slope, double s) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t slope_a = static_cast<acc_t>(slope), s_a = static_cast<acc_t>(s);
  std::vector<double> part_scale(n_batch * width, 0.0), part_bias(n_batch * width, 0.0);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1));
  const bool contiguous = (!z || zs.i == 1) && gzs.i == 1;
  dispatch_activation(act, [&](auto act_c) {
    constexpr int64_t ACT = decltype(act_c)::value;
    // Adds the sums of pixels [i0, i0 + len) of plane (n, c) to the plane's partials.
    auto run = [&](int64_t n, int64_t c, int64_t i0, int64_t len) {
      const scalar_t* gp = grad + (n * channels + c) * plane + i0;
      const scalar_t* zp = z ? z + n * zs.n + c * zs.c + i0 * zs.i : nullptr;
      scalar_t* gzp = grad_z + n * gzs.n + c * gzs.c + i0 * gzs.i;
      std::pair<acc_t, acc_t> sums;
      if (z && contiguous) {
        sums = backward_plane<ACT, true, true>(gp, zp, zs.i, gzp, gzs.i, len, s_a, slope_a);
      } else if (z) {
        sums = backward_plane<ACT, true, false>(gp, zp, zs.i, gzp, gzs.i, len, s_a, slope_a);
      } else if (contiguous) {
        sums = backward_plane<kNone, false, true>(gp, zp, zs.i, gzp, gzs.i, len, s_a, slope_a);
      } else {
        sums = backward_plane<kNone, false, false>(gp, zp, zs.i, gzp, gzs.i, len, s_a, slope_a);
      }
      part_bias[n * width + c] += static_cast<double>(sums.first);
      part_scale[n * width + c] += static_cast<double>(sums.second);
    };
    if (contiguous) {
      at::parallel_for(0, n_batch * width, grain, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) run(p / width, p % width, 0, plane);
      });
    } else {
      // Channels-last: one task per image (its planes' partials are only touched by it), walked
      // in tiles of kTile pixels × all active channels.
      at::parallel_for(0, n_batch, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          for (int64_t i0 = 0; i0 < plane; i0 += kTile) {
            for (int64_t c = 0; c < width; ++c) run(n, c, i0, std::min(kTile, plane - i0));
          }
        }
      });
    }
  });
  BackwardSums sums;
  sums.bias.assign(width, 0.0);
  for (int64_t p = 0; p < n_batch * width; ++p) {
    sums.scale += part_scale[p];
    sums.bias[p % width] += part_bias[p];
  }
  return sums;
}

}  // namespace superconv
}  // namespace trilevelnas
