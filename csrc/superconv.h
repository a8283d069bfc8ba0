// Superkernel convolution (ops.superconv2d): argument checking and the device-independent parts
// (convolution over the leading weight block through ATen, which picks mkldnn on CPU and cuDNN on
// CUDA). The fused epilogues are per device: CPU loops in superconv.cpp, CUDA kernels in
// kernels/superconv.cuh launched from cuda/superconv.cu.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>

namespace trilevelnas {
namespace superconv {

// Activation codes shared with the Python wrapper (trilevelnas/ops/superconv.py).
enum Activation : int64_t { kNone = 0, kRelu = 1, kLeakyRelu = 2 };

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
