// Superkernel convolution (ops.superconv2d): argument checking and the device-independent parts
// (convolution over the leading weight block through ATen, which picks mkldnn on CPU and cuDNN on
// CUDA). The fused epilogues are per device: CPU loops in superconv.cpp, CUDA kernels in
// kernels/superconv.cuh launched from cuda/superconv.cu.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common.cuh"

namespace trilevelnas {
namespace superconv {

// Activation codes (kernels/common.cuh; ops/superconv.py ACTIVATIONS maps the names to them).
constexpr int64_t kNone = kernels::kActNone, kRelu = kernels::kActRelu, kLeakyRelu = kernels::kActLeakyRelu;

// The kernels of superconv2d and superconv2d_backward (CPU in superconv.cpp, CUDA in
// cuda/superconv.cu) take the schemas' arguments (SymInt widths as int64_t):
//   ForwardResult superconv2d_<device>(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS)  -> (out, conv_out)
//   BackwardResult superconv2d_backward_<device>(TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS)
//                                                    -> (grad_x, grad_weight, grad_bias, grad_scale)
#define TRILEVELNAS_SUPERCONV_FORWARD_PARAMS                                                      \
  const at::Tensor &x, const at::Tensor &weight, const std::optional<at::Tensor> &bias,          \
      int64_t in_width, int64_t out_width, int64_t stride, int64_t padding, int64_t groups,      \
      int64_t activation, double negative_slope, const std::optional<at::Tensor> &scale,         \
      double scale_factor, const std::optional<at::Tensor> &accumulate
#define TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS                                                     \
  const at::Tensor &grad, const at::Tensor &x, const at::Tensor &weight,                         \
      const at::Tensor &conv_out, int64_t in_width, int64_t out_width, int64_t stride,           \
      int64_t padding, int64_t groups, int64_t activation, double negative_slope,                \
      const std::optional<at::Tensor> &scale, double scale_factor, std::array<bool, 4> mask
using ForwardResult = std::tuple<at::Tensor, at::Tensor>;
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

struct Geometry {
  int64_t in_width;     // active input channels
  int64_t out_width;    // active output channels
  int64_t conv_groups;  // groups of the convolution over the active block (1, or the width)
  int64_t out_h;
  int64_t out_w;
};

// Checks every argument of superconv2d and returns the geometry of the active block. Throws
// c10::Error (RuntimeError/ValueError in Python) naming the offending argument.
Geometry check_args(const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t in_width, int64_t out_width,
                    int64_t stride, int64_t padding, int64_t groups, int64_t activation,
                    const std::optional<at::Tensor>& scale,
                    const std::optional<at::Tensor>& accumulate);

// check_args for superconv2d_backward, plus the shapes of grad ([N, C_out, H', W']) and, when the
// backward pass needs it, conv_out (the saved [N, out_width, H', W'] convolution).
Geometry check_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& conv_out, int64_t in_width, int64_t out_width,
                             int64_t stride, int64_t padding, int64_t groups, int64_t activation,
                             const std::optional<at::Tensor>& scale);

// True when the forward epilogue is the identity (no activation, scale or accumulate, all output
// channels active): the convolution of the active block is the output.
inline bool identity_epilogue(int64_t activation, const std::optional<at::Tensor>& scale, double scale_factor,
                              const std::optional<at::Tensor>& accumulate, const Geometry& g, int64_t c_out) {
  return activation == kNone && !scale.has_value() && scale_factor == 1.0 && !accumulate.has_value() &&
         g.out_width == c_out;
}

// True when the backward pass needs the raw convolution output of the active block: for the
// derivative of the activation or for the gradient of a tensor scale.
inline bool needs_conv_output(int64_t activation, const std::optional<at::Tensor>& scale) {
  return activation != kNone || scale.has_value();
}

// Convolution of x[:, :in_width] with weight[:out_width, :in_width] (+ bias[:out_width]): a
// [N, out_width, H', W'] tensor, contiguous in `format` (the format the active input and weight
// are given to the backend in). Only the leading block is computed.
at::Tensor conv_active(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const Geometry& g, int64_t stride,
                       int64_t padding, at::MemoryFormat format);

// Gradients of conv_active given the gradient grad_z of its [N, out_width, H', W'] output, padded
// with zeros to the full shapes of x, weight and bias (x's gradient is contiguous). Entries of
// mask that are false give undefined tensors; `format` as in conv_active.
std::array<at::Tensor, 3> conv_active_backward(const at::Tensor& grad_z, const at::Tensor& x,
                                               const at::Tensor& weight, const Geometry& g,
                                               int64_t stride, int64_t padding,
                                               std::array<bool, 3> mask, at::MemoryFormat format);

}  // namespace superconv
}  // namespace trilevelnas
