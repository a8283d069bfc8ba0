// The convolution over the leading weight block of superconv2d and its gradients, through ATen
// (mkldnn on CPU, cuDNN on CUDA): shared by the CPU kernels (superconv_cpu.cpp) and the CUDA glue
// (cuda/superconv.cu), which add their own epilogues.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>

#include "superconv.h"

namespace trilevelnas {
namespace superconv {

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
