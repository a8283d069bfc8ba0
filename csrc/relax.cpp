// Relaxation ops (sparsestmax family, packed softmax, forest ordering penalty): schemas and CPU kernels.
//
// Schemas (namespace trilevelnas; the Python layer in trilevelnas/ops/relax.py adds autograd and
// fake kernels and exposes the public functions):
//   sparsestmax_packed(values, offsets, radius?, radius_scalar) -> (out, gain)
//   sparsestmax_rows(x, radius?, radius_scalar) -> (out, gain)      groups = rows of the last dim
//   sparsestmax_packed_backward(grad, out, gain, offsets) -> grad_values
//   sparsestmax_rows_backward(grad, out, gain) -> grad_x
//   softmax_packed(values, offsets) -> out;  softmax_packed_backward(grad, out, offsets) -> grad
//   order_penalty_packed(q, offsets, parent) -> out [G]: sum over each group's edges of
//       max(0, q_child - q_parent) (the ordering term of sorted sparsestmax, docs/ops.md)
//   order_penalty_packed_backward(grad [G], q, offsets, parent) -> grad_q
// `radius` is a per-group tensor; when absent the scalar applies to every group. `gain` is per
// group (float64 for float64 inputs, float32 otherwise): 1/Z when the circle is active, else 0.
// CPU kernels run in parallel over groups; each group is handled by the routines of relax.h.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <tuple>

#include "relax.h"

namespace trilevelnas {
namespace {

using at::Tensor;
using c10::optional;

at::ScalarType gain_dtype(const Tensor& v) {
  return v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

int64_t grain_for(int64_t groups, int64_t elements) {
  // about 16K elements per task, so the ~26 tiny groups of a search step stay on one thread
  const int64_t per_group = std::max<int64_t>(1, elements / std::max<int64_t>(1, groups));
  return std::max<int64_t>(1, 16384 / per_group);
}

void check_values(const char* op, const Tensor& v, const char* name) {
  TORCH_CHECK(v.device().is_cpu(), op, ": ", name, " must be a CPU tensor here, got ", v.device());
  TORCH_CHECK(v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64 on CPU, got ", v.scalar_type());
}

// Validates offsets (int64 [G+1], 0 = o[0] <= ... <= o[G] = n); returns a contiguous copy.
Tensor check_offsets(const char* op, const Tensor& offsets, int64_t n) {
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1 && offsets.scalar_type() == at::kLong, op,
              ": offsets must be a 1-D int64 tensor [G+1], got ", offsets.scalar_type(), " of shape ",
              offsets.sizes());
  TORCH_CHECK(offsets.device().is_cpu(), op, ": offsets must be on the CPU like values");
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

// A per-group parameter (the radius) as a contiguous float64 tensor, or undefined.
Tensor per_group(const char* op, const optional<Tensor>& t, int64_t groups, const char* name,
                 bool nonnegative) {
  if (!t.has_value() || !t->defined()) return Tensor();
  TORCH_CHECK(t->numel() == groups, op, ": ", name, " must have one entry per group (", groups, "), got ",
              t->numel());
  TORCH_CHECK(t->device().is_cpu(), op, ": ", name, " must be on the CPU like values");
  Tensor d = t->to(at::kDouble).contiguous().view({groups});
  const double* p = d.data_ptr<double>();
  for (int64_t i = 0; i < groups; ++i)
    TORCH_CHECK_VALUE(std::isfinite(p[i]) && (!nonnegative || p[i] >= 0), op, ": ", name, "[", i,
                      "] must be finite", nonnegative ? " and >= 0" : "", ", got ", p[i]);
  return d;
}

void check_scalar(const char* op, double v, const char* name, bool nonnegative) {
  TORCH_CHECK_VALUE(std::isfinite(v) && (!nonnegative || v >= 0), op, ": ", name, " must be finite",
                    nonnegative ? " and >= 0" : "", ", got ", v);
}

// Validates parent (1-D int64 shaped like the values, on the CPU, each entry -1 or an earlier index
// of its own group, given validated offsets); returns a contiguous copy.
Tensor check_parent(const char* op, const Tensor& parent_in, const Tensor& offsets, int64_t n) {
  TORCH_CHECK(parent_in.scalar_type() == at::kLong && parent_in.dim() == 1 && parent_in.numel() == n, op,
              ": parent must be a 1-D int64 tensor shaped like the values, got ", parent_in.scalar_type(),
              " of shape ", parent_in.sizes());
  TORCH_CHECK(parent_in.device().is_cpu(), op, ": parent must be on the CPU like the values");
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
// Forward of the packed sparsestmax family.

std::tuple<Tensor, Tensor> sparsestmax_packed_cpu(const Tensor& values_in, const Tensor& offsets_in,
                                                  const optional<Tensor>& radius, double radius_scalar) {
  const char* op = "sparsestmax_packed";
  check_values(op, values_in, "values");
  TORCH_CHECK(values_in.dim() == 1, op, ": values must be 1-D (packed groups), got shape ", values_in.sizes());
  const int64_t n = values_in.numel();
  const Tensor offsets = check_offsets(op, offsets_in, n);
  const int64_t groups = offsets.numel() - 1;
  const Tensor r = per_group(op, radius, groups, "radius", true);
  if (!r.defined()) check_scalar(op, radius_scalar, "radius", true);

  const Tensor values = values_in.contiguous();
  Tensor out = at::empty_like(values);
  Tensor gain = at::empty({groups}, values.options().dtype(gain_dtype(values)));
  const int64_t* o = offsets.data_ptr<int64_t>();
  const double* rp = r.defined() ? r.data_ptr<double>() : nullptr;

  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparsestmax_packed_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = values.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    acc_t* gp = gain.data_ptr<acc_t>();
    at::parallel_for(0, groups, grain_for(groups, n), [&](int64_t g0, int64_t g1) {
      relax::Workspace ws;
      std::vector<double> xin;
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t start = o[g], k = o[g + 1] - o[g];
        if (static_cast<int64_t>(xin.size()) < k) xin.resize(k);
        for (int64_t i = 0; i < k; ++i) xin[i] = static_cast<double>(x[start + i]);
        scalar_t* yg = y + start;
        gp[g] = static_cast<acc_t>(relax::sparsestmax_group(
            ws, xin.data(), k, rp ? rp[g] : radius_scalar,
            [yg](int64_t i, double v) { yg[i] = static_cast<scalar_t>(v); }));
      }
    });
  });
  return {out, gain};
}

std::tuple<Tensor, Tensor> sparsestmax_rows_cpu(const Tensor& x_in, const optional<Tensor>& radius,
                                                double radius_scalar) {
  const char* op = "sparsestmax_rows";
  check_values(op, x_in, "x");
  TORCH_CHECK(x_in.dim() >= 1, op, ": x must have at least one dimension");
  const Tensor x = x_in.contiguous();
  const int64_t k = x.size(-1);
  std::vector<int64_t> gshape(x.sizes().begin(), x.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t s : gshape) rows *= s;
  const Tensor r = per_group(op, radius, rows, "radius", true);
  if (!r.defined()) check_scalar(op, radius_scalar, "radius", true);
  Tensor out = at::empty_like(x);
  Tensor gain = at::empty(gshape, x.options().dtype(gain_dtype(x)));
  const double* rp = r.defined() ? r.data_ptr<double>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparsestmax_rows_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    acc_t* gp = gain.data_ptr<acc_t>();
    at::parallel_for(0, rows, grain_for(rows, rows * k), [&](int64_t r0, int64_t r1) {
      relax::Workspace ws;
      std::vector<double> xin(k);
      for (int64_t row = r0; row < r1; ++row) {
        for (int64_t i = 0; i < k; ++i) xin[i] = static_cast<double>(xp[row * k + i]);
        scalar_t* yg = y + row * k;
        gp[row] = static_cast<acc_t>(relax::sparsestmax_group(
            ws, xin.data(), k, rp ? rp[row] : radius_scalar,
            [yg](int64_t i, double v) { yg[i] = static_cast<scalar_t>(v); }));
      }
    });
  });
  return {out, gain};
}

// ------------------------------------------------------------------------------------------------
// Backward passes.

void check_like(const char* op, const Tensor& a, const char* an, const Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(), op, ": ", an,
              " must match out in shape and dtype, got ", a.scalar_type(), a.sizes(), " vs ", b.scalar_type(),
              b.sizes());
}

Tensor sparsestmax_packed_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in,
                                       const Tensor& offsets_in) {
  const char* op = "sparsestmax_packed_backward";
  check_values(op, out_in, "out");
  check_like(op, grad_in, "grad", out_in);
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  const Tensor offsets = check_offsets(op, offsets_in, out.numel());
  const int64_t groups = offsets.numel() - 1;
  TORCH_CHECK(gain_in.numel() == groups, op, ": gain must have one entry per group");
  const Tensor gain = gain_in.to(at::kDouble).contiguous();
  Tensor dx = at::empty_like(out);
  const int64_t* o = offsets.data_ptr<int64_t>();
  const double* gp = gain.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "sparsestmax_packed_backward_cpu", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* q = out.data_ptr<scalar_t>();
    scalar_t* d = dx.data_ptr<scalar_t>();
    at::parallel_for(0, groups, grain_for(groups, out.numel()), [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; ++gi)
        relax::sparsestmax_group_backward(g + o[gi], q + o[gi], o[gi + 1] - o[gi], gp[gi], d + o[gi]);
    });
  });
  return dx;
}

Tensor sparsestmax_rows_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in) {
  const char* op = "sparsestmax_rows_backward";
  check_values(op, out_in, "out");
  check_like(op, grad_in, "grad", out_in);
  TORCH_CHECK(out_in.dim() >= 1, op, ": out must have at least one dimension");
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  const int64_t k = out.size(-1);
  const int64_t rows = k > 0 ? out.numel() / k : 0;
  TORCH_CHECK(k == 0 || gain_in.numel() == rows, op, ": gain must have one entry per row");
  const Tensor gain = gain_in.to(at::kDouble).contiguous();
  Tensor dx = at::empty_like(out);
  const double* gp = gain.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "sparsestmax_rows_backward_cpu", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* q = out.data_ptr<scalar_t>();
    scalar_t* d = dx.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_for(rows, rows * k), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row)
        relax::sparsestmax_group_backward(g + row * k, q + row * k, k, gp[row], d + row * k);
    });
  });
  return dx;
}

Tensor softmax_packed_cpu(const Tensor& values_in, const Tensor& offsets_in) {
  const char* op = "softmax_packed";
  check_values(op, values_in, "values");
  TORCH_CHECK(values_in.dim() == 1, op, ": values must be 1-D (packed groups), got shape ", values_in.sizes());
  const Tensor values = values_in.contiguous();
  const Tensor offsets = check_offsets(op, offsets_in, values.numel());
  const int64_t groups = offsets.numel() - 1;
  Tensor out = at::empty_like(values);
  const int64_t* o = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "softmax_packed_cpu", [&] {
    const scalar_t* x = values.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, groups, grain_for(groups, values.numel()), [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) relax::softmax_group(x + o[g], y + o[g], o[g + 1] - o[g]);
    });
  });
  return out;
}

Tensor softmax_packed_backward_cpu(const Tensor& grad_in, const Tensor& out_in, const Tensor& offsets_in) {
  const char* op = "softmax_packed_backward";
  check_values(op, out_in, "out");
  check_like(op, grad_in, "grad", out_in);
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  const Tensor offsets = check_offsets(op, offsets_in, out.numel());
  const int64_t groups = offsets.numel() - 1;
  Tensor dx = at::empty_like(out);
  const int64_t* o = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "softmax_packed_backward_cpu", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* y = out.data_ptr<scalar_t>();
    scalar_t* d = dx.data_ptr<scalar_t>();
    at::parallel_for(0, groups, grain_for(groups, out.numel()), [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; ++gi)
        relax::softmax_group_backward(g + o[gi], y + o[gi], o[gi + 1] - o[gi], d + o[gi]);
    });
  });
  return dx;
}

// ------------------------------------------------------------------------------------------------
// Forest ordering penalty (sorted sparsestmax's ordering term, docs/ops.md).

// The checked (q, offsets, parent) of the ordering-penalty ops: q 1-D float, offsets monotone, parents in range.
struct OrderInputs {
  int64_t n, groups;
  Tensor offsets, parent;
};

static OrderInputs check_order_inputs(const char* op, const Tensor& q, const Tensor& offsets, const Tensor& parent) {
  check_values(op, q, "q");
  TORCH_CHECK(q.dim() == 1, op, ": q must be 1-D (packed groups), got shape ", q.sizes());
  const int64_t n = q.numel();
  Tensor o = check_offsets(op, offsets, n);
  Tensor p = check_parent(op, parent, o, n);
  return {n, o.numel() - 1, o, p};
}

Tensor order_penalty_packed_cpu(const Tensor& q_in, const Tensor& offsets_in, const Tensor& parent_in) {
  const OrderInputs in = check_order_inputs("order_penalty_packed", q_in, offsets_in, parent_in);
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
  const OrderInputs in = check_order_inputs(op, q_in, offsets_in, parent_in);
  const int64_t n = in.n, groups = in.groups;
  const Tensor &offsets = in.offsets, &parent = in.parent;
  check_values(op, grad_in, "grad");
  TORCH_CHECK(grad_in.scalar_type() == q_in.scalar_type() && grad_in.dim() == 1 && grad_in.numel() == groups, op,
              ": grad must be a 1-D tensor with one entry per group (", groups, ") and q's dtype, got ",
              grad_in.scalar_type(), " of shape ", grad_in.sizes());
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

TORCH_LIBRARY_FRAGMENT(trilevelnas, m) {
  m.def("sparsestmax_packed(Tensor values, Tensor offsets, Tensor? radius, float radius_scalar) -> (Tensor, Tensor)");
  m.def("sparsestmax_rows(Tensor x, Tensor? radius, float radius_scalar) -> (Tensor, Tensor)");
  m.def("sparsestmax_packed_backward(Tensor grad, Tensor out, Tensor gain, Tensor offsets) -> Tensor");
  m.def("sparsestmax_rows_backward(Tensor grad, Tensor out, Tensor gain) -> Tensor");
  m.def("softmax_packed(Tensor values, Tensor offsets) -> Tensor");
  m.def("softmax_packed_backward(Tensor grad, Tensor out, Tensor offsets) -> Tensor");
  m.def("order_penalty_packed(Tensor q, Tensor offsets, Tensor parent) -> Tensor");
  m.def("order_penalty_packed_backward(Tensor grad, Tensor q, Tensor offsets, Tensor parent) -> Tensor");
}

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
