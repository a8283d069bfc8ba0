// CUDA glue of the relaxation ops: checks, output allocation, dtype dispatch, and one launch of the
// torch-free kernels in kernels/sparsestmax.cuh on the current stream. Schemas: csrc/relax.cpp.
// Offsets and parent are not validated on the device (that would need a host synchronisation):
// offsets are clamped into [0, numel] and a parent that is not an earlier index counts as a root
// (order_penalty_packed).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "sparsestmax.cuh"

namespace trilevelnas {
namespace {

using at::Tensor;
using c10::optional;

template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

at::ScalarType gain_dtype(const Tensor& v) { return v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_float_cuda(const char* op, const Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor here");
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
              " must be float32, float64, float16 or bfloat16 on CUDA, got ", s);
}

void check_index(const char* op, const Tensor& t, const Tensor& like, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 1, op, ": ", name, " must be a 1-D int64 tensor");
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on ", like.device(), ", got ", t.device());
}

// A per-group parameter in the kernels' accumulation dtype, or undefined.
Tensor per_group(const char* op, const optional<Tensor>& t, int64_t groups, const Tensor& like, const char* name) {
  if (!t.has_value() || !t->defined()) return Tensor();
  TORCH_CHECK(t->numel() == groups, op, ": ", name, " must have one entry per group (", groups, "), got ",
              t->numel());
  TORCH_CHECK(t->device() == like.device(), op, ": ", name, " must be on ", like.device());
  return t->to(gain_dtype(like)).contiguous().view({groups});
}

std::tuple<Tensor, Tensor> sparsestmax_packed_cuda(const Tensor& values_in, const Tensor& offsets_in,
                                                   const optional<Tensor>& radius, double radius_scalar) {
  const char* op = "sparsestmax_packed";
  check_float_cuda(op, values_in, "values");
  TORCH_CHECK(values_in.dim() == 1, op, ": values must be 1-D (packed groups)");
  check_index(op, offsets_in, values_in, "offsets");
  TORCH_CHECK(offsets_in.numel() >= 1, op, ": offsets must hold G+1 >= 1 entries");
  c10::cuda::CUDAGuard guard(values_in.device());
  const Tensor values = values_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t n = values.numel(), groups = offsets.numel() - 1;
  Tensor out = at::empty_like(values);
  Tensor gain = at::empty({groups}, values.options().dtype(gain_dtype(values)));
  const Tensor r = per_group(op, radius, groups, values, "radius");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "sparsestmax_packed_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using A = kernels::acc_t<T>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_packed<T>(
        reinterpret_cast<const T*>(values.data_ptr<scalar_t>()), offsets.data_ptr<int64_t>(), n, groups,
        r.defined() ? r.data_ptr<A>() : nullptr, radius_scalar, reinterpret_cast<T*>(out.data_ptr<scalar_t>()),
        gain.data_ptr<A>(), stream));
  });
  return {out, gain};
}

std::tuple<Tensor, Tensor> sparsestmax_rows_cuda(const Tensor& x_in, const optional<Tensor>& radius,
                                                 double radius_scalar) {
  const char* op = "sparsestmax_rows";
  check_float_cuda(op, x_in, "x");
  TORCH_CHECK(x_in.dim() >= 1, op, ": x must have at least one dimension");
  c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  const int64_t k = x.size(-1);
  const std::vector<int64_t> gshape(x.sizes().begin(), x.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t s : gshape) rows *= s;
  Tensor out = at::empty_like(x);
  Tensor gain = at::zeros(gshape, x.options().dtype(gain_dtype(x)));
  const Tensor r = per_group(op, radius, rows, x, "radius");
  if (k == 0 || rows == 0) return {out, gain};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparsestmax_rows_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using A = kernels::acc_t<T>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_rows<T>(
        reinterpret_cast<const T*>(x.data_ptr<scalar_t>()), rows, k, r.defined() ? r.data_ptr<A>() : nullptr,
        radius_scalar, reinterpret_cast<T*>(out.data_ptr<scalar_t>()), gain.data_ptr<A>(), stream));
  });
  return {out, gain};
}

void check_backward(const char* op, const Tensor& grad, const Tensor& out, const Tensor& gain) {
  check_float_cuda(op, out, "out");
  TORCH_CHECK(grad.sizes() == out.sizes() && grad.scalar_type() == out.scalar_type() && grad.device() == out.device(),
              op, ": grad must match out in shape, dtype and device");
  TORCH_CHECK(gain.scalar_type() == gain_dtype(out) && gain.device() == out.device(), op,
              ": gain must be the forward's gain");
}

Tensor sparsestmax_packed_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in,
                                        const Tensor& offsets_in) {
  const char* op = "sparsestmax_packed_backward";
  check_backward(op, grad_in, out_in, gain_in);
  check_index(op, offsets_in, out_in, "offsets");
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), gain = gain_in.contiguous();
  const Tensor offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = out.numel();
  TORCH_CHECK(gain.numel() == groups, op, ": gain must have one entry per group");
  Tensor dx = at::empty_like(out);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsestmax_packed_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using A = kernels::acc_t<T>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_backward_packed<T>(
        reinterpret_cast<const T*>(grad.data_ptr<scalar_t>()), reinterpret_cast<const T*>(out.data_ptr<scalar_t>()),
        gain.data_ptr<A>(), offsets.data_ptr<int64_t>(), n, groups, reinterpret_cast<T*>(dx.data_ptr<scalar_t>()),
        stream));
  });
  return dx;
}

Tensor sparsestmax_rows_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in) {
  const char* op = "sparsestmax_rows_backward";
  check_backward(op, grad_in, out_in, gain_in);
  TORCH_CHECK(out_in.dim() >= 1, op, ": out must have at least one dimension");
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), gain = gain_in.contiguous();
  const int64_t k = out.size(-1);
  const int64_t rows = k > 0 ? out.numel() / k : 0;
  Tensor dx = at::empty_like(out);
  if (rows == 0) return dx;
  TORCH_CHECK(gain.numel() == rows, op, ": gain must have one entry per row");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsestmax_rows_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using A = kernels::acc_t<T>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_backward_rows<T>(
        reinterpret_cast<const T*>(grad.data_ptr<scalar_t>()), reinterpret_cast<const T*>(out.data_ptr<scalar_t>()),
        gain.data_ptr<A>(), rows, k, reinterpret_cast<T*>(dx.data_ptr<scalar_t>()), stream));
  });
  return dx;
}

Tensor softmax_packed_cuda(const Tensor& values_in, const Tensor& offsets_in) {
  const char* op = "softmax_packed";
  check_float_cuda(op, values_in, "values");
  TORCH_CHECK(values_in.dim() == 1, op, ": values must be 1-D (packed groups)");
  check_index(op, offsets_in, values_in, "offsets");
  c10::cuda::CUDAGuard guard(values_in.device());
  const Tensor values = values_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = values.numel();
  Tensor out = at::empty_like(values);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "softmax_packed_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    C10_CUDA_CHECK(kernels::launch_softmax_packed<T>(reinterpret_cast<const T*>(values.data_ptr<scalar_t>()),
                                                     offsets.data_ptr<int64_t>(), n, groups,
                                                     reinterpret_cast<T*>(out.data_ptr<scalar_t>()), stream));
  });
  return out;
}

Tensor softmax_packed_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& offsets_in) {
  const char* op = "softmax_packed_backward";
  check_float_cuda(op, out_in, "out");
  TORCH_CHECK(grad_in.sizes() == out_in.sizes() && grad_in.scalar_type() == out_in.scalar_type(), op,
              ": grad must match out in shape and dtype");
  check_index(op, offsets_in, out_in, "offsets");
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = out.numel();
  Tensor dx = at::empty_like(out);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "softmax_packed_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    C10_CUDA_CHECK(kernels::launch_softmax_packed_backward<T>(
        reinterpret_cast<const T*>(grad.data_ptr<scalar_t>()), reinterpret_cast<const T*>(out.data_ptr<scalar_t>()),
        offsets.data_ptr<int64_t>(), n, groups, reinterpret_cast<T*>(dx.data_ptr<scalar_t>()), stream));
  });
  return dx;
}

// Checks shared by the ordering penalty's forward and backward: q (1-D, float), offsets and parent
// (1-D int64 on q's device, parent shaped like q).
void check_order_penalty(const char* op, const Tensor& q, const Tensor& offsets, const Tensor& parent) {
  check_float_cuda(op, q, "q");
  TORCH_CHECK(q.dim() == 1, op, ": q must be 1-D (packed groups)");
  check_index(op, offsets, q, "offsets");
  TORCH_CHECK(offsets.numel() >= 1, op, ": offsets must hold G+1 >= 1 entries");
  check_index(op, parent, q, "parent");
  TORCH_CHECK(parent.numel() == q.numel(), op, ": parent must be shaped like q");
}

Tensor order_penalty_packed_cuda(const Tensor& q_in, const Tensor& offsets_in, const Tensor& parent_in) {
  const char* op = "order_penalty_packed";
  check_order_penalty(op, q_in, offsets_in, parent_in);
  c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = q_in.contiguous(), offsets = offsets_in.contiguous(), parent = parent_in.contiguous();
  const int64_t n = q.numel(), groups = offsets.numel() - 1;
  Tensor out = at::empty({groups}, q.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "order_penalty_packed_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    C10_CUDA_CHECK(kernels::launch_order_penalty_packed<T>(
        reinterpret_cast<const T*>(q.data_ptr<scalar_t>()), offsets.data_ptr<int64_t>(), parent.data_ptr<int64_t>(),
        n, groups, reinterpret_cast<T*>(out.data_ptr<scalar_t>()), stream));
  });
  return out;
}

Tensor order_penalty_packed_backward_cuda(const Tensor& grad_in, const Tensor& q_in, const Tensor& offsets_in,
                                          const Tensor& parent_in) {
  const char* op = "order_penalty_packed_backward";
  check_order_penalty(op, q_in, offsets_in, parent_in);
  const int64_t groups = offsets_in.numel() - 1;
  TORCH_CHECK(grad_in.scalar_type() == q_in.scalar_type() && grad_in.device() == q_in.device() && grad_in.dim() == 1 &&
                  grad_in.numel() == groups,
              op, ": grad must be a 1-D tensor with one entry per group (", groups, "), q's dtype and device");
  c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor grad = grad_in.contiguous(), q = q_in.contiguous(), offsets = offsets_in.contiguous();
  const Tensor parent = parent_in.contiguous();
  const int64_t n = q.numel();
  Tensor dq = at::empty_like(q);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "order_penalty_packed_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    C10_CUDA_CHECK(kernels::launch_order_penalty_packed_backward<T>(
        reinterpret_cast<const T*>(grad.data_ptr<scalar_t>()), reinterpret_cast<const T*>(q.data_ptr<scalar_t>()),
        offsets.data_ptr<int64_t>(), parent.data_ptr<int64_t>(), n, groups,
        reinterpret_cast<T*>(dq.data_ptr<scalar_t>()), stream));
  });
  return dq;
}

}  // namespace

TORCH_LIBRARY_IMPL(trilevelnas, CUDA, m) {
  m.impl("sparsestmax_packed", &sparsestmax_packed_cuda);
  m.impl("sparsestmax_rows", &sparsestmax_rows_cuda);
  m.impl("sparsestmax_packed_backward", &sparsestmax_packed_backward_cuda);
  m.impl("sparsestmax_rows_backward", &sparsestmax_rows_backward_cuda);
  m.impl("softmax_packed", &softmax_packed_cuda);
  m.impl("softmax_packed_backward", &softmax_packed_backward_cuda);
  m.impl("order_penalty_packed", &order_penalty_packed_cuda);
  m.impl("order_penalty_packed_backward", &order_penalty_packed_backward_cuda);
}

}  // namespace trilevelnas
