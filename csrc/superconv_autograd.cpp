// The autograd of superconv2d and of its Triton variant superconv2d_triton: one formula, a C++
// torch::autograd::Function, registered for the Autograd key of both ops. Each instance
// redispatches its forward below autograd to its own op's kernels and calls its own backward op.
// It is in C++ (not Python, as the relaxation ops' is) for speed: docs/ops.md "Autograd".
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

#include "superconv.h"

namespace trilevelnas {
namespace superconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The forward and backward ops that one instance of the formula calls.
struct CxxOps {
  static constexpr const char* forward = "trilevelnas::superconv2d";
  static constexpr const char* backward = "trilevelnas::superconv2d_backward";
};
struct TritonOps {
  static constexpr const char* forward = "trilevelnas::superconv2d_triton";
  static constexpr const char* backward = "trilevelnas::superconv2d_backward_triton";
};

// The C++ signatures of the forward and backward ops (SymInt widths).
using ForwardSignature = ForwardResult(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                       c10::SymInt, c10::SymInt, int64_t, int64_t, int64_t, int64_t, double,
                                       const std::optional<at::Tensor>&, double, const std::optional<at::Tensor>&);
using BackwardSignature = BackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         c10::SymInt, c10::SymInt, int64_t, int64_t, int64_t, int64_t, double,
                                         const std::optional<at::Tensor>&, double, std::array<bool, 4>);

template <typename Ops>
ForwardResult call_forward(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow(Ops::forward, "").template typed<ForwardSignature>();
  return op.call(x, weight, bias, c10::SymInt(in_width), c10::SymInt(out_width), stride, padding,
                 groups, activation, negative_slope, scale, scale_factor, accumulate);
}

template <typename Ops>
BackwardResult call_backward(TRILEVELNAS_SUPERCONV_BACKWARD_PARAMS) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow(Ops::backward, "").template typed<BackwardSignature>();
  return op.call(grad, x, weight, conv_out, c10::SymInt(in_width), c10::SymInt(out_width), stride,
                 padding, groups, activation, negative_slope, scale, scale_factor, mask);
}

template <typename Ops>
class SuperconvFunction : public torch::autograd::Function<SuperconvFunction<Ops>> {
 public:
  static variable_list forward(AutogradContext* ctx, TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, conv_out] = call_forward<Ops>(x, weight, bias, in_width, out_width, stride,
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
      std::tie(gx, gw, gb, gs) = call_backward<Ops>(
          grads[0], saved[0], saved[1], saved[2], args[0], args[1], args[2], args[3], args[4],
          args[5], ctx->saved_data["negative_slope"].toDouble(), scale,
          ctx->saved_data["scale_factor"].toDouble(), mask);
    }
    const at::Tensor none;
    return {gx, gw, gb, none, none, none, none, none, none, none, gs, none,
            needs("acc_edge") ? grads[0] : none};
  }
};

template <typename Ops>
ForwardResult superconv2d_autograd(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  auto outs = SuperconvFunction<Ops>::apply(x, weight, bias, in_width, out_width, stride,
                                               padding, groups, activation, negative_slope, scale,
                                               scale_factor, accumulate);
  return {outs[0], outs[1]};
}

}  // namespace
}  // namespace superconv
}  // namespace trilevelnas

TORCH_LIBRARY_IMPL(trilevelnas, Autograd, m) {
  using namespace trilevelnas::superconv;
  m.impl("superconv2d", &superconv2d_autograd<CxxOps>);
  m.impl("superconv2d_triton", &superconv2d_autograd<TritonOps>);
}
