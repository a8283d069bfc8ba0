// The convolution over the active block (declared in superconv_conv.h).
#include "superconv_conv.h"

#include <vector>

namespace trilevelnas {
namespace superconv {

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

}  // namespace superconv
}  // namespace trilevelnas
