// CUDA kernels of trilevelnas::superconv2d / superconv2d_backward: cuDNN (through at::convolution)
// over the active weight block, then one fused epilogue pass (kernels/superconv.cuh) that writes
// the full-width output: activation, scale, accumulate and the zero channels. The Triton backend
// (trilevelnas/ops/triton/superconv.py) is the alternative, chosen in Python by gpu_backend().
#include "superconv.cuh"
#include "superconv.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace trilevelnas {
namespace superconv {
namespace {

template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<c10::Half> {
  using type = __half;
};
template <>
struct CudaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
const typename CudaType<scalar_t>::type* cuda_ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename CudaType<scalar_t>::type*>(
                           t.const_data_ptr<scalar_t>())
                     : nullptr;
}

template <typename scalar_t>
typename CudaType<scalar_t>::type* cuda_mutable_ptr(at::Tensor& t) {
  return reinterpret_cast<typename CudaType<scalar_t>::type*>(t.mutable_data_ptr<scalar_t>());
}

// The tensor scale as a float32 device tensor (undefined when there is none).
at::Tensor scale_as_float(const std::optional<at::Tensor>& scale) {
  return scale.has_value() ? scale->to(at::kFloat).contiguous() : at::Tensor();
}

kernels::SuperconvEpilogue make_epilogue(int64_t activation, double negative_slope,
                                         double scale_factor, const at::Tensor& scale_f) {
  return kernels::SuperconvEpilogue{static_cast<int>(activation),
                                    static_cast<float>(negative_slope),
                                    static_cast<float>(scale_factor),
                                    scale_f.defined() ? scale_f.const_data_ptr<float>() : nullptr};
}

std::tuple<at::Tensor, at::Tensor> superconv2d_cuda(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t in_width, int64_t out_width, int64_t stride, int64_t padding, int64_t groups,
    int64_t activation, double negative_slope, const std::optional<at::Tensor>& scale,
    double scale_factor, const std::optional<at::Tensor>& accumulate) {
  const Geometry g = check_args(x, weight, bias, in_width, out_width, stride, padding, groups,
                                activation, scale, accumulate);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor z = conv_active(x, weight, bias, g, stride, padding, at::MemoryFormat::Contiguous);
  at::Tensor saved = needs_conv_output(activation, scale) ? z : at::empty({0}, x.options());
  const int64_t c_out = weight.size(0);
  if (activation == kNone && !scale.has_value() && scale_factor == 1.0 && !accumulate.has_value() &&
      g.out_width == c_out) {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> superconv2d_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& conv_out, int64_t in_width, int64_t out_width, int64_t stride,
    int64_t padding, int64_t groups, int64_t activation, double negative_slope,
    const std::optional<at::Tensor>& scale, double scale_factor, std::array<bool, 4> mask) {
  const Geometry g = check_args(x, weight, std::nullopt, in_width, out_width, stride, padding,
                                groups, activation, scale, std::nullopt);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t c_out = weight.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(1) == c_out &&
                  grad.size(2) == g.out_h && grad.size(3) == g.out_w,
              "superconv2d_backward: grad has shape ", grad.sizes(), ", expected [", x.size(0), ", ",
              c_out, ", ", g.out_h, ", ", g.out_w, "]");
  const bool need_z = needs_conv_output(activation, scale);
  TORCH_CHECK(!need_z || (conv_out.dim() == 4 && conv_out.size(1) == g.out_width),
              "superconv2d_backward: conv_out must be the saved [N, out_width, H', W'] convolution");
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
    using acc_t = typename kernels::SuperconvAcc<typename CudaType<scalar_t>::type>::type;
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
