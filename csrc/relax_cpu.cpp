// CPU kernels of the relaxation ops (sparsestmax family, packed softmax, forest ordering penalty).
// Schemas and what the ops compute: trilevelnas/ops/op_table.py and docs/ops.md. Each kernel makes
// the argument checks of relax_checks.h, then the value checks below, and runs in parallel over
// the groups; each group is handled by the torch-free routines of relax_groups.h.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <tuple>

#include "checks.h"
#include "relax_groups.h"
#include "relax_checks.h"

namespace trilevelnas {
namespace {

using at::Tensor;
using c10::optional;

using checks::gain_dtype;
constexpr checks::Kernel kKernel = checks::Kernel::kCpu;  // the kernels of this file

int64_t grain_for(int64_t groups, int64_t elements) {
  // about 16K elements per task, so the ~26 tiny groups of a search step stay on one thread
  const int64_t per_group = std::max<int64_t>(1, elements / std::max<int64_t>(1, groups));
  return std::max<int64_t>(1, 16384 / per_group);
}

// The value checks of the CPU kernels, after the argument checks of relax_checks.h.

// offsets: 0 = o[0] <= ... <= o[G] = n; returns a contiguous copy.
Tensor check_offsets(const char* op, const Tensor& offsets, const Tensor& values) {
  const int64_t n = values.numel();
  Tensor o = offsets.contiguous();
  const int64_t* p = o.data_ptr<int64_t>();
  const int64_t g = o.numel() - 1;
  TORCH_CHECK_VALUE(p[0] == 0 && p[g] == n, op, ": offsets must start at 0 and end at values.numel() = ", n,
                    ", got ", p[0], " and ", p[g]);
  for (int64_t i = 0; i < g; ++i)
    TORCH_CHECK_VALUE(p[i] <= p[i + 1], op, ": offsets must be non-decreasing, offsets[", i, "] = ", p[i],
                      " > offsets[", i + 1, "] = ", p[i + 1]);
  return o;
}

// The per-group radius (finite and >= 0) as a contiguous float64 tensor, or undefined.
Tensor check_radius(const char* op, const optional<Tensor>& radius, int64_t groups) {
  Tensor d = checks::per_group_as(radius, groups, at::kDouble);
  if (!d.defined()) return d;
  const double* p = d.data_ptr<double>();
  for (int64_t i = 0; i < groups; ++i)
    TORCH_CHECK_VALUE(std::isfinite(p[i]) && p[i] >= 0, op, ": radius[", i, "] must be finite and >= 0, got ", p[i]);
  return d;
}

// parent: each entry -1 or an earlier index of its own group, given checked offsets; returns a
// contiguous copy.
Tensor check_parent(const char* op, const Tensor& parent_in, const Tensor& offsets) {
  Tensor parent = parent_in.contiguous();
  const int64_t* pa = parent.data_ptr<int64_t>();
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t groups = offsets.numel() - 1;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = o[g]; i < o[g + 1]; ++i)
      TORCH_CHECK_VALUE(pa[i] >= -1 && pa[i] < i - o[g], op, ": parent[", i, "] = ", pa[i],
                        " is not -1 or an earlier index of its group (", i - o[g], " within group ", g, ")");
  return parent;
}

// ------------------------------------------------------------------------------------------------
// Sparsestmax family, packed groups and rows. The groups are visited through `bounds(g)`, which
// gives {start, k} of group g: offsets for packed groups, rows of the last dimension otherwise.

struct Group {
  int64_t start, k;
};

// The groups of packed values given validated offsets.
auto packed_bounds(const Tensor& offsets) {
  const int64_t* o = offsets.data_ptr<int64_t>();
  return [o](int64_t g) { return Group{o[g], o[g + 1] - o[g]}; };
}

auto row_bounds(int64_t k) {
  return [k](int64_t g) { return Group{g * k, k}; };
}

// Calls fn(g, bounds(g)) for every group, in parallel over the groups.
template <typename Bounds, typename Fn>
void parallel_groups(int64_t groups, int64_t elements, Bounds bounds, Fn fn) {
  at::parallel_for(0, groups, grain_for(groups, elements), [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) fn(g, bounds(g));
  });
}

// Forward of `groups` groups of x into out and gain; r is the per-group radius (or undefined).
template <typename Bounds>
void sparsestmax_groups(const Tensor& x, Tensor& out, Tensor& gain, int64_t groups, const Tensor& r,
                        double radius_scalar, Bounds bounds) {
  const double* rp = r.defined() ? r.data_ptr<double>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparsestmax_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    acc_t* gp = gain.data_ptr<acc_t>();
    at::parallel_for(0, groups, grain_for(groups, x.numel()), [&](int64_t g0, int64_t g1) {
      relax::Workspace ws;
      std::vector<double> xin;
      for (int64_t g = g0; g < g1; ++g) {
        const Group grp = bounds(g);
        if (static_cast<int64_t>(xin.size()) < grp.k) xin.resize(grp.k);
        for (int64_t i = 0; i < grp.k; ++i) xin[i] = static_cast<double>(xp[grp.start + i]);
        scalar_t* yg = y + grp.start;
        gp[g] = static_cast<acc_t>(relax::sparsestmax_group(
            ws, xin.data(), grp.k, rp ? rp[g] : radius_scalar,
            [yg](int64_t i, double v) { yg[i] = static_cast<scalar_t>(v); }));
      }
    });
  });
}

// Backward of `groups` groups: dx from grad, the forward's out and its gain.
template <typename Bounds>
Tensor sparsestmax_groups_backward(const Tensor& grad_in, const Tensor& out, const Tensor& gain_in, int64_t groups,
                                   Bounds bounds) {
  const Tensor grad = grad_in.contiguous();
  const Tensor gain = gain_in.to(at::kDouble).contiguous();
  Tensor dx = at::empty_like(out);
  const double* gp = gain.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "sparsestmax_backward_cpu", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* q = out.data_ptr<scalar_t>();
    scalar_t* d = dx.data_ptr<scalar_t>();
    parallel_groups(groups, out.numel(), bounds, [&](int64_t gi, Group grp) {
      relax::sparsestmax_group_backward(g + grp.start, q + grp.start, grp.k, gp[gi], d + grp.start);
    });
  });
  return dx;
}

std::tuple<Tensor, Tensor> sparsestmax_packed_cpu(const Tensor& values_in, const Tensor& offsets_in,
                                                  const optional<Tensor>& radius, double radius_scalar) {
  const char* op = "sparsestmax_packed";
  relax_checks::sparsestmax_packed(kKernel, values_in, offsets_in, radius, radius_scalar);
  const Tensor offsets = check_offsets(op, offsets_in, values_in);
  const int64_t groups = offsets.numel() - 1;
  const Tensor r = check_radius(op, radius, groups);
  const Tensor values = values_in.contiguous();
  Tensor out = at::empty_like(values);
  Tensor gain = at::empty({groups}, values.options().dtype(gain_dtype(values)));
  sparsestmax_groups(values, out, gain, groups, r, radius_scalar, packed_bounds(offsets));
  return {out, gain};
}

std::tuple<Tensor, Tensor> sparsestmax_rows_cpu(const Tensor& x_in, const optional<Tensor>& radius,
                                                double radius_scalar) {
  const checks::Rows rows = relax_checks::sparsestmax_rows(kKernel, x_in, radius, radius_scalar);
  const Tensor r = check_radius("sparsestmax_rows", radius, rows.count);
  const Tensor x = x_in.contiguous();
  Tensor out = at::empty_like(x);
  Tensor gain = at::empty(rows.shape, x.options().dtype(gain_dtype(x)));
  sparsestmax_groups(x, out, gain, rows.count, r, radius_scalar, row_bounds(rows.k));
  return {out, gain};
}

Tensor sparsestmax_packed_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in,
                                       const Tensor& offsets_in) {
  const char* op = "sparsestmax_packed_backward";
  relax_checks::sparsestmax_packed_backward(kKernel, grad_in, out_in, gain_in, offsets_in);
  const Tensor out = out_in.contiguous();
  const Tensor offsets = check_offsets(op, offsets_in, out);
  return sparsestmax_groups_backward(grad_in, out, gain_in, offsets.numel() - 1, packed_bounds(offsets));
}

Tensor sparsestmax_rows_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in) {
  const checks::Rows rows = relax_checks::sparsestmax_rows_backward(kKernel, grad_in, out_in, gain_in);
  const int64_t groups = rows.k > 0 ? rows.count : 0;
  return sparsestmax_groups_backward(grad_in, out_in.contiguous(), gain_in, groups, row_bounds(rows.k));
}

Tensor softmax_packed_cpu(const Tensor& values_in, const Tensor& offsets_in) {
  relax_checks::softmax_packed(kKernel, values_in, offsets_in);
  const Tensor values = values_in.contiguous();
  const Tensor offsets = check_offsets("softmax_packed", offsets_in, values);
  const int64_t groups = offsets.numel() - 1;
  Tensor out = at::empty_like(values);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "softmax_packed_cpu", [&] {
    const scalar_t* x = values.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    parallel_groups(groups, values.numel(), packed_bounds(offsets), [&](int64_t, Group grp) {
      relax::softmax_group(x + grp.start, y + grp.start, grp.k);
    });
  });
  return out;
}

Tensor softmax_packed_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& offsets_in) {
  relax_checks::softmax_packed_backward(kKernel, grad_in, out_in, offsets_in);
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  const Tensor offsets = check_offsets("softmax_packed_backward", offsets_in, out);
  const int64_t groups = offsets.numel() - 1;
  Tensor dx = at::empty_like(out);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "softmax_packed_backward_cpu", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* y = out.data_ptr<scalar_t>();
    scalar_t* d = dx.data_ptr<scalar_t>();
    parallel_groups(groups, out.numel(), packed_bounds(offsets), [&](int64_t, Group grp) {
      relax::softmax_group_backward(g + grp.start, y + grp.start, grp.k, d + grp.start);
    });
  });
  return dx;
}

// ------------------------------------------------------------------------------------------------
// Forest ordering penalty (sorted sparsestmax's ordering term, docs/ops.md).

// The value-checked (offsets, parent) of the ordering-penalty ops (after relax_checks).
struct OrderInputs {
  int64_t n, groups;
  Tensor offsets, parent;
};

OrderInputs check_order_values(const char* op, const Tensor& q, const Tensor& offsets, const Tensor& parent) {
  Tensor o = check_offsets(op, offsets, q);
  Tensor p = check_parent(op, parent, o);
  return {q.numel(), o.numel() - 1, o, p};
}

Tensor order_penalty_packed_cpu(const Tensor& q_in, const Tensor& offsets_in, const Tensor& parent_in) {
  relax_checks::order_penalty_packed(kKernel, q_in, offsets_in, parent_in);
  const OrderInputs in = check_order_values("order_penalty_packed", q_in, offsets_in, parent_in);
  const int64_t n = in.n, groups = in.groups;
  const Tensor &offsets = in.offsets, &parent = in.parent;
  const Tensor q = q_in.contiguous();
  Tensor out = at::empty({groups}, q.options());
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t* pa = parent.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "order_penalty_packed_cpu", [&] {
    const scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, groups, grain_for(groups, n), [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g)
        y[g] = static_cast<scalar_t>(relax::order_penalty_group(qp + o[g], pa + o[g], o[g + 1] - o[g]));
    });
  });
  return out;
}

Tensor order_penalty_packed_backward_cpu(const Tensor& grad_in, const Tensor& q_in, const Tensor& offsets_in,
                                         const Tensor& parent_in) {
  const char* op = "order_penalty_packed_backward";
  relax_checks::order_penalty_packed_backward(kKernel, grad_in, q_in, offsets_in, parent_in);
  const OrderInputs in = check_order_values(op, q_in, offsets_in, parent_in);
  const int64_t n = in.n, groups = in.groups;
  const Tensor &offsets = in.offsets, &parent = in.parent;
  const Tensor grad = grad_in.contiguous(), q = q_in.contiguous();
  Tensor dq = at::empty_like(q);
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t* pa = parent.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "order_penalty_packed_backward_cpu", [&] {
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* d = dq.data_ptr<scalar_t>();
    at::parallel_for(0, groups, grain_for(groups, n), [&](int64_t g0, int64_t g1) {
      std::vector<int64_t> slope;
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t k = o[g + 1] - o[g];
        if (static_cast<int64_t>(slope.size()) < k) slope.resize(k);
        relax::order_penalty_group_backward(static_cast<double>(gp[g]), qp + o[g], pa + o[g], k, slope.data(),
                                            d + o[g]);
      }
    });
  });
  return dq;
}

}  // namespace

TORCH_LIBRARY_IMPL(trilevelnas, CPU, m) {
  m.impl("sparsestmax_packed", &sparsestmax_packed_cpu);
  m.impl("sparsestmax_rows", &sparsestmax_rows_cpu);
  m.impl("sparsestmax_packed_backward", &sparsestmax_packed_backward_cpu);
  m.impl("sparsestmax_rows_backward", &sparsestmax_rows_backward_cpu);
  m.impl("softmax_packed", &softmax_packed_cpu);
  m.impl("softmax_packed_backward", &softmax_packed_backward_cpu);
  m.impl("order_penalty_packed", &order_penalty_packed_cpu);
  m.impl("order_penalty_packed_backward", &order_penalty_packed_backward_cpu);
}

}  // namespace trilevelnas
