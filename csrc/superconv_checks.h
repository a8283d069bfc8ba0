// Argument checks of superconv2d and superconv2d_backward, made by the CPU kernels, the CUDA glue
// and the check op superconv2d_check of the Triton variant (csrc/check_ops.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "superconv.h"

namespace trilevelnas {
namespace superconv {

// Checks every argument of superconv2d and returns the geometry of the active block. Throws
// c10::Error (ValueError in Python) naming the offending argument.
inline Geometry check_args(const at::Tensor& x, const at::Tensor& weight,
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

// check_args for superconv2d_backward, plus the shapes of grad ([N, C_out, H', W']) and, when the
// backward pass needs it, conv_out (the saved [N, out_width, H', W'] convolution).
inline Geometry check_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
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

}  // namespace superconv
}  // namespace trilevelnas
