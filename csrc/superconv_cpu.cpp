// CPU kernels of superconv2d and superconv2d_backward: the convolution over the active block
// (superconv_conv.h, oneDNN through ATen), then one pass of the fused epilogue
// (superconv_cpu_epilogue.h). Schemas: trilevelnas/ops/op_table.py.
//
//   superconv2d(...) -> (out, conv_out)
//     out      [N, C_out, H', W']: channels [:out_width] = accumulate + scale * act(conv),
//              channels [out_width:] = accumulate (zeros without one);
//     conv_out [N, out_width, H', W'] the raw convolution of the active block, kept for the
//              backward pass; an empty tensor when the backward pass does not need it
//              (activation "none" and no tensor scale).
//   superconv2d_backward(grad, x, weight, conv_out, ...) -> (grad_x, grad_weight, grad_bias,
//              grad_scale), each undefined (None) unless requested in output_mask.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "superconv.h"
#include "superconv_checks.h"
#include "superconv_conv.h"
#include "superconv_cpu_epilogue.h"

namespace trilevelnas {
namespace superconv {
namespace {

// oneDNN runs narrow NCHW convolutions far slower than channels-last ones (it reorders to blocked
// layouts); a narrowed input has to be copied anyway, so the copy goes to channels-last.
at::MemoryFormat cpu_format(const at::Tensor& x, const Geometry& g) {
  const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             g.in_width < x.size(1);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
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

}  // namespace

TORCH_LIBRARY_IMPL(trilevelnas, CPU, m) {
  m.impl("superconv2d", &superconv2d_cpu);
  m.impl("superconv2d_backward", &superconv2d_backward_cpu);
}

}  // namespace superconv
}  // namespace trilevelnas
