// The check ops <op>_check (the op's arguments, no results) that a Triton variant runs before its
// kernels, so that it rejects what the C++ kernels reject, with the same message: the C++ argument
// checks of each op (relax_checks.h, superconv_checks.h) as ops of their own. Schemas:
// trilevelnas/ops/op_table.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "relax_checks.h"
#include "superconv.h"
#include "superconv_checks.h"

namespace trilevelnas {
namespace {

// TritonCheck<&f>::run takes the arguments of the relaxation check f but its leading
// checks::Kernel, and calls f for the Triton kernels (on CUDA or, under TRITON_INTERPRET=1, the CPU).
template <auto F>
struct TritonCheck;

template <typename R, typename... Args, R (*F)(checks::Kernel, Args...)>
struct TritonCheck<F> {
  static void run(Args... args) { F(checks::Kernel::kTriton, args...); }
};

// The argument checks of superconv2d, plus the Triton kernels' one restriction: their dtypes (no
// float64).
void superconv2d_check(TRILEVELNAS_SUPERCONV_FORWARD_PARAMS) {
  (void)negative_slope;
  (void)scale_factor;
  superconv::check_args(x, weight, bias, in_width, out_width, stride, padding, groups, activation, scale,
                        accumulate);
  const auto s = x.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kHalf || s == at::kBFloat16,
                    "superconv2d: the Triton kernels take float32, float16 or bfloat16, got x of ", s);
}

}  // namespace
}  // namespace trilevelnas

TORCH_LIBRARY_IMPL(trilevelnas, CompositeExplicitAutograd, m) {
  using trilevelnas::TritonCheck;
  namespace rc = trilevelnas::relax_checks;
  m.impl("sparsestmax_packed_check", &TritonCheck<&rc::sparsestmax_packed>::run);
  m.impl("sparsestmax_rows_check", &TritonCheck<&rc::sparsestmax_rows>::run);
  m.impl("sparsestmax_packed_backward_check", &TritonCheck<&rc::sparsestmax_packed_backward>::run);
  m.impl("sparsestmax_rows_backward_check", &TritonCheck<&rc::sparsestmax_rows_backward>::run);
  m.impl("softmax_packed_check", &TritonCheck<&rc::softmax_packed>::run);
  m.impl("softmax_packed_backward_check", &TritonCheck<&rc::softmax_packed_backward>::run);
  m.impl("order_penalty_packed_check", &TritonCheck<&rc::order_penalty_packed>::run);
  m.impl("order_penalty_packed_backward_check", &TritonCheck<&rc::order_penalty_packed_backward>::run);
  m.impl("superconv2d_check", &trilevelnas::superconv2d_check);
}
