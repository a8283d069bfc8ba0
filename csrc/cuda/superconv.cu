// CUDA kernels of trilevelnas::superconv2d / superconv2d_backward: cuDNN (through at::convolution)
// over the active weight block, then one fused epilogue pass (kernels/superconv.cuh) that writes
// the full-width output: activation, scale, accumulate and the zero channels. The Triton backend
// (trilevelnas/ops/triton/superconv.py) is the alternative, chosen in Python by gpu_backend().
#include "dtypes.cuh"
#include "superconv.cuh"
#include "superconv.h"
#include "superconv_checks.h"
#include "superconv_conv.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace trilevelnas {
namespace superconv {
namespace {

// The tensor scale as a float32 device tensor (undefined when there is none).
at::Tensor scale_as_float(const std::optional<at::Tensor>& scale) {
  return scale.has_value() ? scale->to(at::kFloat).contiguous() : at::Tensor();
}

kernels::SuperconvEpilogue make_epilogue(int64_t activation, double negative_slope,
                                         double scale_factor, const at::Tensor& scale_f) {
  return kernels::SuperconvEpilogue{static_cast<int>(activation),
                                    static_cast<float>(negative_slope),
                                    static_cast<float>(scale_factor),
                                    maybe_ptr<float>(scale_f)};
}

ForwardResult superconv2d_cuda(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  const Geometry g = check_args(x, weight, bias, in_width, out_width, stride, padding, groups,
                                activation, scale, accumulate);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor z = conv_active(x, weight, bias, g, stride, padding, at::MemoryFormat::Contiguous);
  at::Tensor saved = needs_conv_output(activation, scale) ? z : at::empty({0}, x.options());
  const int64_t c_out = weight.size(0);
  if (identity_epilogue(activation, scale, scale_factor, accumulate, g, c_out)) {
    return {z, saved};  // identity epilogue: saved is empty here, so nothing aliases
  }
  at::Tensor out = at::empty({x.size(0), c_out, g.out_h, g.out_w}, x.options());
  const at::Tensor acc = accumulate.has_value() ? accumulate->contiguous() : at::Tensor();
  const at::Tensor scale_f = scale_as_float(scale);
  const auto ep = make_epilogue(activation, negative_slope, scale_factor, scale_f);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "superconv2d_cuda", [&] {
    C10_CUDA_CHECK(kernels::superconv_epilogue_forward(
        cuda_ptr<scalar_t>(z), cuda_ptr<scalar_t>(acc), cuda_mutable_ptr<scalar_t>(out), x.size(0),
        c_out, g.out_width, g.out_h * g.out_w, ep, stream));
  });
  return {out, saved};
}

BackwardResult superconv2d_backward_cuda(TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS) {
  const Geometry g = check_backward_args(grad, x, weight, conv_out, in_width, out_width, stride,
                                         padding, groups, activation, scale);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t c_out = weight.size(0);
  const bool need_z = needs_conv_output(activation, scale);
  const bool want_scale = mask[3] && scale.has_value();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor zc = need_z ? conv_out.contiguous() : at::Tensor();
  at::Tensor grad_z = at::empty({x.size(0), g.out_width, g.out_h, g.out_w}, grad.options());
  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial =
      want_scale ? at::zeros({x.size(0) * g.out_width}, grad.options().dtype(acc_dtype)) : at::Tensor();
  const at::Tensor scale_f = scale_as_float(scale);
  const auto ep = make_epilogue(activation, negative_slope, scale_factor, scale_f);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "superconv2d_backward_cuda", [&] {
    using acc_t = kernels::acc_t<cuda_t<scalar_t>>;
    C10_CUDA_CHECK(kernels::superconv_epilogue_backward(
        cuda_ptr<scalar_t>(gc), cuda_ptr<scalar_t>(zc), cuda_mutable_ptr<scalar_t>(grad_z),
        partial.defined() ? partial.mutable_data_ptr<acc_t>() : nullptr, x.size(0), c_out,
        g.out_width, g.out_h * g.out_w, ep, stream));
  });
  auto [gx, gw, gb] =
      conv_active_backward(grad_z, x, weight, g, stride, padding, {mask[0], mask[1], mask[2]},
                           at::MemoryFormat::Contiguous);
  at::Tensor gs;
  if (want_scale) gs = (partial.sum() * scale_factor).to(scale->scalar_type());
  return {gx, gw, gb, gs};
}

}  // namespace
}  // namespace superconv
}  // namespace trilevelnas

TORCH_LIBRARY_IMPL(trilevelnas, CUDA, m) {
  m.impl("superconv2d", &trilevelnas::superconv::superconv2d_cuda);
  m.impl("superconv2d_backward", &trilevelnas::superconv::superconv2d_backward_cuda);
}
