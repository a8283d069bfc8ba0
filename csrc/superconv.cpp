// Superkernel convolution: the op schemas, argument checking, the convolution over the leading
// weight block (shared by the CPU and CUDA kernels) and the CPU kernels with their fused epilogue.
// C++ holds the schemas (of the Triton variant too) and the one autograd formula (for both
// variants); Python registers the fake kernels and the Triton kernels
// (trilevelnas/ops/superconv.py).
//
//   superconv2d(...) -> (out, conv_out)
//     out      [N, C_out, H', W']: channels [:out_width] = accumulate + scale * act(conv),
//              channels [out_width:] = accumulate (zeros without one);
//     conv_out [N, out_width, H', W'] the raw convolution of the active block, kept for the
//              backward pass; an empty tensor when the backward pass does not need it
//              (activation "none" and no tensor scale).
//   superconv2d_backward(grad, x, weight, conv_out, ...) -> (grad_x, grad_weight, grad_bias,
//              grad_scale), each undefined (None) unless requested in output_mask.
#include "superconv.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace trilevelnas {
namespace superconv {

Geometry check_args(const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t in_width, int64_t out_width,
                    int64_t stride, int64_t padding, int64_t groups, int64_t activation,
                    const std::optional<at::Tensor>& scale,
                    const std::optional<at::Tensor>& accumulate) {
  TORCH_CHECK_VALUE(x.dim() == 4, "superconv2d: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(weight.dim() == 4, "superconv2d: weight must be 4-D [C_out, C_in/groups, kH, kW], got ",
                    weight.dim(), "-D");
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()),
                    "superconv2d: x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(weight.scalar_type() == x.scalar_type(), "superconv2d: weight dtype ",
                    weight.scalar_type(), " differs from x dtype ", x.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == x.device(), "superconv2d: weight is on ", weight.device(),
                    " but x is on ", x.device());
  TORCH_CHECK_VALUE(stride >= 1, "superconv2d: stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(padding >= 0, "superconv2d: padding must be >= 0, got ", padding);
  TORCH_CHECK_VALUE(kernels::is_activation(activation),
                    "superconv2d: activation code must be 0 (none), 1 (relu) or 2 (leaky_relu), got ",
                    activation);
  const int64_t c_in = x.size(1);
  const int64_t c_out = weight.size(0);
  TORCH_CHECK_VALUE(in_width >= 1 && in_width <= c_in, "superconv2d: in_width ", in_width,
                    " out of range [1, ", c_in, "] (x has ", c_in, " channels)");
  TORCH_CHECK_VALUE(out_width >= 1 && out_width <= c_out, "superconv2d: out_width ", out_width,
                    " out of range [1, ", c_out, "] (weight has ", c_out, " output channels)");
  int64_t conv_groups = 1;
  if (groups == 1) {
    TORCH_CHECK_VALUE(weight.size(1) == c_in, "superconv2d: weight has ", weight.size(1),
                      " input channels but x has ", c_in);
  } else {
    TORCH_CHECK_VALUE(groups == c_in && groups == c_out && weight.size(1) == 1,
                      "superconv2d: groups must be 1 or, for a depthwise convolution, equal to "
                      "C_in == C_out with weight [C, 1, kH, kW]; got groups=", groups, ", C_in=", c_in,
                      ", weight ", weight.sizes());
    TORCH_CHECK_VALUE(in_width == out_width, "superconv2d: depthwise convolution needs in_width == "
                      "out_width, got in_width=", in_width, " and out_width=", out_width);
    conv_groups = in_width;
  }
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const int64_t out_h = (x.size(2) + 2 * padding - kh) / stride + 1;
  const int64_t out_w = (x.size(3) + 2 * padding - kw) / stride + 1;
  TORCH_CHECK_VALUE(x.size(2) + 2 * padding >= kh && x.size(3) + 2 * padding >= kw,
                    "superconv2d: input ", x.size(2), "x", x.size(3), " with padding ", padding,
                    " is smaller than the kernel ", kh, "x", kw);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == c_out, "superconv2d: bias must be [",
                      c_out, "], got ", bias->sizes());
    TORCH_CHECK_VALUE(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                      "superconv2d: bias (", bias->scalar_type(), ", ", bias->device(),
                      ") must match x (", x.scalar_type(), ", ", x.device(), ")");
  }
  if (scale.has_value()) {
    TORCH_CHECK_VALUE(scale->numel() == 1 && scale->dim() == 0,
                      "superconv2d: scale must be a 0-dim tensor, got shape ", scale->sizes());
    TORCH_CHECK_VALUE(at::isFloatingType(scale->scalar_type()),
                      "superconv2d: scale must be floating-point, got ", scale->scalar_type());
    TORCH_CHECK_VALUE(scale->device() == x.device(), "superconv2d: scale is on ", scale->device(),
                      " but x is on ", x.device());
  }
  if (accumulate.has_value()) {
    const auto& a = *accumulate;
    TORCH_CHECK_VALUE(a.dim() == 4 && a.size(0) == x.size(0) && a.size(1) == c_out &&
                          a.size(2) == out_h && a.size(3) == out_w,
                      "superconv2d: accumulate must have the output shape [", x.size(0), ", ", c_out,
                      ", ", out_h, ", ", out_w, "], got ", a.sizes());
    TORCH_CHECK_VALUE(a.scalar_type() == x.scalar_type() && a.device() == x.device(),
                      "superconv2d: accumulate (", a.scalar_type(), ", ", a.device(),
                      ") must match x (", x.scalar_type(), ", ", x.device(), ")");
  }
  return Geometry{in_width, out_width, conv_groups, out_h, out_w};
}

Geometry check_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& conv_out, int64_t in_width, int64_t out_width,
                             int64_t stride, int64_t padding, int64_t groups, int64_t activation,
                             const std::optional<at::Tensor>& scale) {
  const Geometry g = check_args(x, weight, std::nullopt, in_width, out_width, stride, padding,
                                groups, activation, scale, std::nullopt);
  const int64_t c_out = weight.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(1) == c_out &&
                  grad.size(2) == g.out_h && grad.size(3) == g.out_w,
              "superconv2d_backward: grad has shape ", grad.sizes(), ", expected [", x.size(0), ", ",
              c_out, ", ", g.out_h, ", ", g.out_w, "]");
  TORCH_CHECK(!needs_conv_output(activation, scale) ||
                  (conv_out.dim() == 4 && conv_out.size(1) == g.out_width),
              "superconv2d_backward: conv_out must be the saved [N, out_width, H', W'] convolution");
  return g;
}

namespace {

at::Tensor active_weight(const at::Tensor& weight, const Geometry& g, at::MemoryFormat format) {
  at::Tensor w = g.out_width == weight.size(0) ? weight : weight.narrow(0, 0, g.out_width);
  if (g.conv_groups == 1 && g.in_width != weight.size(1)) w = w.narrow(1, 0, g.in_width);
  return w.contiguous(format);
}

at::Tensor active_input(const at::Tensor& x, const Geometry& g, at::MemoryFormat format) {
  return (g.in_width == x.size(1) ? x : x.narrow(1, 0, g.in_width)).contiguous(format);
}

}  // namespace

at::Tensor conv_active(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const Geometry& g, int64_t stride,
                       int64_t padding, at::MemoryFormat format) {
  std::optional<at::Tensor> b;
  if (bias.has_value()) b = g.out_width == bias->size(0) ? *bias : bias->narrow(0, 0, g.out_width);
  at::Tensor z = at::convolution(active_input(x, g, format), active_weight(weight, g, format), b,
                                 {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0},
                                 g.conv_groups);
  return z.contiguous(format);
}

std::array<at::Tensor, 3> conv_active_backward(const at::Tensor& grad_z, const at::Tensor& x,
                                               const at::Tensor& weight, const Geometry& g,
                                               int64_t stride, int64_t padding,
                                               std::array<bool, 3> mask, at::MemoryFormat format) {
  std::array<at::Tensor, 3> out;
  if (!(mask[0] || mask[1] || mask[2])) return out;
  const std::vector<int64_t> bias_sizes{g.out_width};
  at::OptionalIntArrayRef bias_ref;
  if (mask[2]) bias_ref = at::IntArrayRef(bias_sizes);
  auto [gx, gw, gb] = at::convolution_backward(
      grad_z.contiguous(format), active_input(x, g, format), active_weight(weight, g, format),
      bias_ref, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, g.conv_groups,
      {mask[0], mask[1], mask[2]});
  if (mask[0]) {
    if (g.in_width == x.size(1)) {
      out[0] = gx.contiguous();
    } else {
      out[0] = at::empty(x.sizes(), gx.options().memory_format(at::MemoryFormat::Contiguous));
      out[0].narrow(1, 0, g.in_width).copy_(gx);
      out[0].narrow(1, g.in_width, x.size(1) - g.in_width).zero_();
    }
  }
  if (mask[1]) {
    out[1] = at::zeros(weight.sizes(), gw.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor block = out[1].narrow(0, 0, g.out_width);
    if (g.conv_groups == 1) block = block.narrow(1, 0, g.in_width);
    block.copy_(gw);
  }
  if (mask[2]) {
    out[2] = at::zeros({weight.size(0)}, gb.options());
    out[2].narrow(0, 0, g.out_width).copy_(gb);
  }
  return out;
}

namespace {

// oneDNN runs narrow NCHW convolutions far slower than channels-last ones (it reorders to blocked
// layouts); a narrowed input has to be copied anyway, so the copy goes to channels-last.
at::MemoryFormat cpu_format(const at::Tensor& x, const Geometry& g) {
  const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             g.in_width < x.size(1);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

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
void dispatch_activation(int64_t act, F&& fn) {
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

PlaneStrides plane_strides(const at::Tensor& t) {
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

double effective_scale(const std::optional<at::Tensor>& scale, double scale_factor) {
  return scale.has_value() ? scale_factor * scale->item<double>() : scale_factor;
}

ForwardResult superconv2d_cpu(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  const Geometry g = check_args(x, weight, bias, in_width, out_width, stride, padding, groups,
                                activation, scale, accumulate);
  at::Tensor z = conv_active(x, weight, bias, g, stride, padding, cpu_format(x, g));
  at::Tensor saved = needs_conv_output(activation, scale) ? z : at::empty({0}, x.options());
  const int64_t c_out = weight.size(0);
  if (identity_epilogue(activation, scale, scale_factor, accumulate, g, c_out) && z.is_contiguous()) {
    return {z, saved};  // the epilogue is the identity: saved is empty here, so nothing aliases
  }
  const double s = effective_scale(scale, scale_factor);
  at::Tensor out = at::empty({x.size(0), c_out, g.out_h, g.out_w}, x.options());
  at::Tensor acc = accumulate.has_value() ? accumulate->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "superconv2d_cpu", [&] {
    epilogue_forward<scalar_t>(z.const_data_ptr<scalar_t>(), plane_strides(z),
                               acc.defined() ? acc.const_data_ptr<scalar_t>() : nullptr,
                               out.mutable_data_ptr<scalar_t>(), x.size(0), c_out, g.out_width,
                               g.out_h * g.out_w, activation, negative_slope, s);
  });
  return {out, saved};
}

BackwardResult superconv2d_backward_cpu(TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS) {
  const Geometry g = check_backward_args(grad, x, weight, conv_out, in_width, out_width, stride,
                                         padding, groups, activation, scale);
  const int64_t c_out = weight.size(0);
  const bool need_z = needs_conv_output(activation, scale);
  const bool want_scale = mask[3] && scale.has_value();
  const at::MemoryFormat format = cpu_format(x, g);
  const double s = effective_scale(scale, scale_factor);
  BackwardSums sums;
  at::Tensor grad_z;
  if (!need_z && s == 1.0 && !mask[2]) {
    // Identity epilogue: the gradient of the convolution is grad's active block itself.
    grad_z = g.out_width == c_out ? grad : grad.narrow(1, 0, g.out_width);
  } else {
    const at::Tensor gc = grad.contiguous();
    const at::Tensor zc = need_z ? conv_out.contiguous(format) : at::Tensor();
    grad_z = at::empty({x.size(0), g.out_width, g.out_h, g.out_w},
                       grad.options().memory_format(format));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "superconv2d_backward_cpu", [&] {
      sums = epilogue_backward<scalar_t>(
          gc.const_data_ptr<scalar_t>(), need_z ? zc.const_data_ptr<scalar_t>() : nullptr,
          need_z ? plane_strides(zc) : plane_strides(grad_z),
          grad_z.mutable_data_ptr<scalar_t>(), plane_strides(grad_z), x.size(0), c_out,
          g.out_width, g.out_h * g.out_w, activation, negative_slope, s);
    });
  }
  auto [gx, gw, unused_gb] = conv_active_backward(grad_z, x, weight, g, stride, padding,
                                                  {mask[0], mask[1], false}, format);
  at::Tensor gb, gs;
  if (mask[2]) {
    gb = at::zeros({c_out}, x.options().dtype(at::kDouble));
    gb.narrow(0, 0, g.out_width).copy_(at::tensor(sums.bias, gb.options()));
    gb = gb.to(x.scalar_type());
  }
  if (want_scale) gs = at::scalar_tensor(sums.scale * scale_factor, scale->options());
  return {gx, gw, gb, gs};
}

// The argument checks of superconv2d as an op of their own, for the kernels written outside C++
// (the Triton variant, trilevelnas/ops/superconv.py), so that every implementation checks alike;
// plus the Triton kernels' one restriction, their dtypes (no float64).
void superconv2d_check(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  (void)negative_slope;
  (void)scale_factor;
  check_args(x, weight, bias, in_width, out_width, stride, padding, groups, activation, scale,
             accumulate);
  const auto s = x.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kHalf || s == at::kBFloat16,
                    "superconv2d: the Triton kernels take float32, float16 or bfloat16, got x of ", s);
}

// ---------------------------------------------------------------------------------------------
// The one autograd formula, in C++ so that a call costs no Python (a Python autograd formula made
// a small fwd+bwd call about 100 µs slower, a third of its time; docs/superconv.md). It serves
// superconv2d and its Triton variant alike: the forward redispatches below autograd to the
// variant's kernels, the backward calls the variant's backward op.

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr char kCxx[] = "";
constexpr char kTriton[] = "_triton";

template <const char* Suffix>
ForwardResult call_forward(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow((std::string("trilevelnas::superconv2d") + Suffix).c_str(), "")
                       .typed<ForwardResult(const at::Tensor&, const at::Tensor&,
                                            const std::optional<at::Tensor>&, c10::SymInt, c10::SymInt,
                                            int64_t, int64_t, int64_t, int64_t, double,
                                            const std::optional<at::Tensor>&, double,
                                            const std::optional<at::Tensor>&)>();
  return op.call(x, weight, bias, c10::SymInt(in_width), c10::SymInt(out_width), stride, padding,
                 groups, activation, negative_slope, scale, scale_factor, accumulate);
}

template <const char* Suffix>
BackwardResult call_backward(TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow((std::string("trilevelnas::superconv2d_backward") + Suffix).c_str(), "")
          .typed<BackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, c10::SymInt, c10::SymInt, int64_t, int64_t,
                                int64_t, int64_t, double, const std::optional<at::Tensor>&, double,
                                std::array<bool, 4>)>();
  return op.call(grad, x, weight, conv_out, c10::SymInt(in_width), c10::SymInt(out_width), stride,
                 padding, groups, activation, negative_slope, scale, scale_factor, mask);
}

template <const char* Suffix>
class SuperconvFunction : public torch::autograd::Function<SuperconvFunction<Suffix>> {
 public:
  static variable_list forward(AutogradContext* ctx, TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, conv_out] = call_forward<Suffix>(x, weight, bias, in_width, out_width, stride,
                                                padding, groups, activation, negative_slope, scale,
                                                scale_factor, accumulate);
    // Edges exist for x, weight and the optional tensors that are present, in argument order.
    const bool has_scale = scale.has_value() && scale->defined();
    int64_t edge = 2;
    ctx->saved_data["bias_edge"] = bias.has_value() && bias->defined() ? edge++ : int64_t(-1);
    ctx->saved_data["scale_edge"] = has_scale ? edge++ : int64_t(-1);
    ctx->saved_data["acc_edge"] =
        accumulate.has_value() && accumulate->defined() ? edge++ : int64_t(-1);
    ctx->saved_data["args"] =
        std::vector<int64_t>{in_width, out_width, stride, padding, groups, activation};
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->saved_data["scale_factor"] = scale_factor;
    ctx->save_for_backward({x, weight, conv_out, has_scale ? *scale : at::Tensor()});
    ctx->mark_non_differentiable({conv_out});
    return {out, conv_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto args = ctx->saved_data["args"].toIntVector();
    auto needs = [&](const char* key) {
      const int64_t edge = ctx->saved_data[key].toInt();
      return edge >= 0 && ctx->needs_input_grad(edge);
    };
    const std::array<bool, 4> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   needs("bias_edge"), needs("scale_edge")};
    at::Tensor gx, gw, gb, gs;
    if (mask[0] || mask[1] || mask[2] || mask[3]) {
      std::optional<at::Tensor> scale;
      if (saved[3].defined()) scale = saved[3];
      std::tie(gx, gw, gb, gs) = call_backward<Suffix>(
          grads[0], saved[0], saved[1], saved[2], args[0], args[1], args[2], args[3], args[4],
          args[5], ctx->saved_data["negative_slope"].toDouble(), scale,
          ctx->saved_data["scale_factor"].toDouble(), mask);
    }
    const at::Tensor none;
    return {gx, gw, gb, none, none, none, none, none, none, none, gs, none,
            needs("acc_edge") ? grads[0] : none};
  }
};

template <const char* Suffix>
ForwardResult superconv2d_autograd(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  auto outs = SuperconvFunction<Suffix>::apply(x, weight, bias, in_width, out_width, stride,
                                               padding, groups, activation, negative_slope, scale,
                                               scale_factor, accumulate);
  return {outs[0], outs[1]};
}

}  // namespace
}  // namespace superconv
}  // namespace trilevelnas

// The schemas of superconv2d and of its Triton variant (kernels registered in Python by
// trilevelnas/ops/superconv.py, which also registers the fake kernels): one argument list for all.
namespace {
constexpr const char* kForwardArgs =
    "(Tensor x, Tensor weight, Tensor? bias, SymInt in_width, SymInt out_width, int stride, "
    "int padding, int groups, int activation, float negative_slope, Tensor? scale, "
    "float scale_factor, Tensor? accumulate)";
constexpr const char* kBackwardArgs =
    "(Tensor grad, Tensor x, Tensor weight, Tensor conv_out, SymInt in_width, SymInt out_width, "
    "int stride, int padding, int groups, int activation, float negative_slope, Tensor? scale, "
    "float scale_factor, bool[4] output_mask)";
}  // namespace

TORCH_LIBRARY_FRAGMENT(trilevelnas, m) {
  for (const char* suffix : {"", "_triton"}) {
    m.def((std::string("superconv2d") + suffix + kForwardArgs + " -> (Tensor, Tensor)").c_str());
    m.def((std::string("superconv2d_backward") + suffix + kBackwardArgs +
           " -> (Tensor, Tensor, Tensor, Tensor)")
              .c_str());
  }
  m.def((std::string("superconv2d_check") + kForwardArgs + " -> ()").c_str());
}

TORCH_LIBRARY_IMPL(trilevelnas, Autograd, m) {
  using trilevelnas::superconv::superconv2d_autograd;
  m.impl("superconv2d", &superconv2d_autograd<trilevelnas::superconv::kCxx>);
  m.impl("superconv2d_triton", &superconv2d_autograd<trilevelnas::superconv::kTriton>);
}

TORCH_LIBRARY_IMPL(trilevelnas, CompositeExplicitAutograd, m) {
  m.impl("superconv2d_check", &trilevelnas::superconv::superconv2d_check);
}

TORCH_LIBRARY_IMPL(trilevelnas, CPU, m) {
  m.impl("superconv2d", &trilevelnas::superconv::superconv2d_cpu);
  m.impl("superconv2d_backward", &trilevelnas::superconv::superconv2d_backward_cpu);
}
