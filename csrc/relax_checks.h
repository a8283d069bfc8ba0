// The argument checks of each relaxation op, written once: the CPU kernels (relax_cpu.cpp), the
// CUDA glue (cuda/relax.cu) and the check ops `<op>_check` that the Triton variants run
// (check_ops.cpp) all call these, with their own checks::Kernel first and then the op's
// arguments. They read metadata and float arguments only. The CPU kernels then also check the
// values of offsets (0 = o[0] <= ... <= o[G] = n), parent (-1 or an earlier index of its group)
// and a per-group radius (finite, >= 0); the GPU kernels cannot without a host synchronisation
// (docs/ops.md).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "checks.h"

namespace trilevelnas {
namespace relax_checks {

using at::Tensor;
using checks::Kernel;

inline void radius(const char* op, const std::optional<Tensor>& r, double radius_scalar, int64_t groups,
                   const Tensor& like) {
  checks::per_group(op, r, groups, like, "radius");
  if (!r.has_value() || !r->defined()) checks::finite(op, radius_scalar, "radius", true);
}

// The forward's gain, as the backward receives it: gain dtype, one entry per group, on out's device.
inline void gain(const char* op, const Tensor& g, const Tensor& out, int64_t groups) {
  TORCH_CHECK_VALUE(g.scalar_type() == checks::gain_dtype(out) && g.device() == out.device() && g.numel() == groups,
                    op, ": gain must be the forward's gain (", checks::gain_dtype(out), ", one entry per group (",
                    groups, ") on ", out.device(), "), got ", g.scalar_type(), g.sizes(), " on ", g.device());
}

// parent: an index tensor shaped like the values `q`.
inline void parent(const char* op, const Tensor& p, const Tensor& q) {
  checks::index(op, p, q, "parent");
  TORCH_CHECK_VALUE(p.numel() == q.numel(), op, ": parent must be shaped like q ([", q.numel(), "]), got ",
                    p.sizes());
}

inline void sparsestmax_packed(Kernel kernel, const Tensor& values, const Tensor& offsets,
                               const std::optional<Tensor>& r, double radius_scalar) {
  const char* op = "sparsestmax_packed";
  checks::packed(op, values, offsets, kernel);
  radius(op, r, radius_scalar, offsets.numel() - 1, values);
}

inline checks::Rows sparsestmax_rows(Kernel kernel, const Tensor& x, const std::optional<Tensor>& r,
                                     double radius_scalar) {
  const char* op = "sparsestmax_rows";
  checks::Rows rows = checks::rows(op, x, "x", kernel);
  radius(op, r, radius_scalar, rows.count, x);
  return rows;
}

inline void sparsestmax_packed_backward(Kernel kernel, const Tensor& grad, const Tensor& out, const Tensor& g,
                                        const Tensor& offsets) {
  const char* op = "sparsestmax_packed_backward";
  checks::packed(op, out, offsets, kernel, "out");
  checks::matches(op, grad, "grad", out, "out");
  gain(op, g, out, offsets.numel() - 1);
}

inline checks::Rows sparsestmax_rows_backward(Kernel kernel, const Tensor& grad, const Tensor& out,
                                              const Tensor& g) {
  const char* op = "sparsestmax_rows_backward";
  checks::Rows rows = checks::rows(op, out, "out", kernel);
  checks::matches(op, grad, "grad", out, "out");
  gain(op, g, out, rows.count);
  return rows;
}

inline void softmax_packed(Kernel kernel, const Tensor& values, const Tensor& offsets) {
  checks::packed("softmax_packed", values, offsets, kernel);
}

inline void softmax_packed_backward(Kernel kernel, const Tensor& grad, const Tensor& out,
                                    const Tensor& offsets) {
  const char* op = "softmax_packed_backward";
  checks::packed(op, out, offsets, kernel, "out");
  checks::matches(op, grad, "grad", out, "out");
}

// q (1-D floating), offsets and parent of the ordering-penalty ops, named for `op`.
inline void order_inputs(const char* op, Kernel kernel, const Tensor& q, const Tensor& offsets, const Tensor& p) {
  checks::packed(op, q, offsets, kernel, "q");
  parent(op, p, q);
}

inline void order_penalty_packed(Kernel kernel, const Tensor& q, const Tensor& offsets, const Tensor& p) {
  order_inputs("order_penalty_packed", kernel, q, offsets, p);
}

inline void order_penalty_packed_backward(Kernel kernel, const Tensor& grad, const Tensor& q,
                                          const Tensor& offsets, const Tensor& p) {
  const char* op = "order_penalty_packed_backward";
  order_inputs(op, kernel, q, offsets, p);
  const int64_t groups = offsets.numel() - 1;
  TORCH_CHECK_VALUE(grad.scalar_type() == q.scalar_type() && grad.device() == q.device() && grad.dim() == 1 &&
                        grad.numel() == groups,
                    op, ": grad must be a 1-D tensor with one entry per group (", groups,
                    ") of q's dtype and device, got ", grad.scalar_type(), grad.sizes(), " on ", grad.device());
}

}  // namespace relax_checks
}  // namespace trilevelnas
