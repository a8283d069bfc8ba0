// Superkernel convolution (ops.superconv2d): what every file of it shares. The op's argument
// lists and results, the geometry of the active block and the two rules of the epilogue. The
// files, one job each: superconv_checks.h (argument checks), superconv_conv.* (the convolution
// over the leading weight block through ATen: mkldnn on CPU, cuDNN on CUDA; shared with the CUDA
// glue), superconv_cpu_epilogue.h and superconv_cpu.cpp (the CPU kernels), cuda/superconv.cu
// (the CUDA kernels, epilogue in kernels/superconv.cuh), superconv_autograd.cpp (the autograd).
// Schemas: trilevelnas/ops/op_table.py.
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

// The kernels of superconv2d and superconv2d_backward (CPU in superconv_cpu.cpp, CUDA in
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

}  // namespace superconv
}  // namespace trilevelnas
