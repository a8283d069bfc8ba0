// CUDA glue of the relaxation ops: argument checks (relax_checks.h), output allocation, dtype
// dispatch, and one launch of the torch-free kernels in kernels/sparsestmax.cuh on the current
// stream. Schemas: trilevelnas/ops/op_table.py.
// Offsets and parent are not validated on the device (that would need a host synchronisation):
// offsets are clamped into [0, numel] and a parent that is not an earlier index counts as a root
// (order_penalty_packed).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "dtypes.cuh"
#include "relax_checks.h"
#include "sparsestmax.cuh"

namespace trilevelnas {
namespace {

using at::Tensor;
using c10::optional;
using checks::gain_dtype;
constexpr checks::Kernel kKernel = checks::Kernel::kCuda;  // the kernels of this file
using kernels::acc_t;

// The storage types of the CUDA kernels (the lambda sees scalar_t; cuda_t<scalar_t> is its CUDA type).
#define TRILEVELNAS_DISPATCH_CUDA(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

std::tuple<Tensor, Tensor> sparsestmax_packed_cuda(const Tensor& values_in, const Tensor& offsets_in,
                                                   const optional<Tensor>& radius, double radius_scalar) {
  relax_checks::sparsestmax_packed(kKernel, values_in, offsets_in, radius, radius_scalar);
  c10::cuda::CUDAGuard guard(values_in.device());
  const Tensor values = values_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t n = values.numel(), groups = offsets.numel() - 1;
  Tensor out = at::empty_like(values);
  Tensor gain = at::empty({groups}, values.options().dtype(gain_dtype(values)));
  const Tensor r = checks::per_group_as(radius, groups, gain_dtype(values));
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(values.scalar_type(), "sparsestmax_packed_cuda", [&] {
    using A = acc_t<cuda_t<scalar_t>>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_packed(cuda_ptr<scalar_t>(values), offsets.const_data_ptr<int64_t>(), n, groups,
                                                     maybe_ptr<A>(r), radius_scalar, cuda_mutable_ptr<scalar_t>(out),
                                                     gain.mutable_data_ptr<A>(), stream));
  });
  return {out, gain};
}

std::tuple<Tensor, Tensor> sparsestmax_rows_cuda(const Tensor& x_in, const optional<Tensor>& radius,
                                                 double radius_scalar) {
  const checks::Rows shape = relax_checks::sparsestmax_rows(kKernel, x_in, radius, radius_scalar);
  const int64_t rows = shape.count, k = shape.k;
  c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  Tensor out = at::empty_like(x);
  Tensor gain = at::zeros(shape.shape, x.options().dtype(gain_dtype(x)));
  const Tensor r = checks::per_group_as(radius, rows, gain_dtype(x));
  if (k == 0 || rows == 0) return {out, gain};
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(x.scalar_type(), "sparsestmax_rows_cuda", [&] {
    using A = acc_t<cuda_t<scalar_t>>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_rows(cuda_ptr<scalar_t>(x), rows, k, maybe_ptr<A>(r), radius_scalar,
                                                   cuda_mutable_ptr<scalar_t>(out), gain.mutable_data_ptr<A>(), stream));
  });
  return {out, gain};
}

Tensor sparsestmax_packed_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in,
                                        const Tensor& offsets_in) {
  relax_checks::sparsestmax_packed_backward(kKernel, grad_in, out_in, gain_in, offsets_in);
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), gain = gain_in.contiguous();
  const Tensor offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = out.numel();
  Tensor dx = at::empty_like(out);
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(out.scalar_type(), "sparsestmax_packed_backward_cuda", [&] {
    using A = acc_t<cuda_t<scalar_t>>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_backward_packed(cuda_ptr<scalar_t>(grad), cuda_ptr<scalar_t>(out),
                                                               gain.const_data_ptr<A>(), offsets.const_data_ptr<int64_t>(),
                                                               n, groups, cuda_mutable_ptr<scalar_t>(dx), stream));
  });
  return dx;
}

Tensor sparsestmax_rows_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& gain_in) {
  const checks::Rows shape = relax_checks::sparsestmax_rows_backward(kKernel, grad_in, out_in, gain_in);
  const int64_t k = shape.k, rows = k > 0 ? shape.count : 0;
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), gain = gain_in.contiguous();
  Tensor dx = at::empty_like(out);
  if (rows == 0) return dx;
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(out.scalar_type(), "sparsestmax_rows_backward_cuda", [&] {
    using A = acc_t<cuda_t<scalar_t>>;
    C10_CUDA_CHECK(kernels::launch_sparsestmax_backward_rows(cuda_ptr<scalar_t>(grad), cuda_ptr<scalar_t>(out),
                                                             gain.const_data_ptr<A>(), rows, k,
                                                             cuda_mutable_ptr<scalar_t>(dx), stream));
  });
  return dx;
}

Tensor softmax_packed_cuda(const Tensor& values_in, const Tensor& offsets_in) {
  relax_checks::softmax_packed(kKernel, values_in, offsets_in);
  c10::cuda::CUDAGuard guard(values_in.device());
  const Tensor values = values_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = values.numel();
  Tensor out = at::empty_like(values);
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(values.scalar_type(), "softmax_packed_cuda", [&] {
    C10_CUDA_CHECK(kernels::launch_softmax_packed(cuda_ptr<scalar_t>(values), offsets.const_data_ptr<int64_t>(), n, groups,
                                                 cuda_mutable_ptr<scalar_t>(out), stream));
  });
  return out;
}

Tensor softmax_packed_backward_cuda(const Tensor& grad_in, const Tensor& out_in, const Tensor& offsets_in) {
  relax_checks::softmax_packed_backward(kKernel, grad_in, out_in, offsets_in);
  c10::cuda::CUDAGuard guard(out_in.device());
  const Tensor grad = grad_in.contiguous(), out = out_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t groups = offsets.numel() - 1, n = out.numel();
  Tensor dx = at::empty_like(out);
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(out.scalar_type(), "softmax_packed_backward_cuda", [&] {
    C10_CUDA_CHECK(kernels::launch_softmax_packed_backward(cuda_ptr<scalar_t>(grad), cuda_ptr<scalar_t>(out),
                                                          offsets.const_data_ptr<int64_t>(), n, groups,
                                                          cuda_mutable_ptr<scalar_t>(dx), stream));
  });
  return dx;
}

Tensor order_penalty_packed_cuda(const Tensor& q_in, const Tensor& offsets_in, const Tensor& parent_in) {
  relax_checks::order_penalty_packed(kKernel, q_in, offsets_in, parent_in);
  c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = q_in.contiguous(), offsets = offsets_in.contiguous(), parent = parent_in.contiguous();
  const int64_t n = q.numel(), groups = offsets.numel() - 1;
  Tensor out = at::empty({groups}, q.options());
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(q.scalar_type(), "order_penalty_packed_cuda", [&] {
    C10_CUDA_CHECK(kernels::launch_order_penalty_packed(cuda_ptr<scalar_t>(q), offsets.const_data_ptr<int64_t>(),
                                                       parent.const_data_ptr<int64_t>(), n, groups,
                                                       cuda_mutable_ptr<scalar_t>(out), stream));
  });
  return out;
}

Tensor order_penalty_packed_backward_cuda(const Tensor& grad_in, const Tensor& q_in, const Tensor& offsets_in,
                                          const Tensor& parent_in) {
  relax_checks::order_penalty_packed_backward(kKernel, grad_in, q_in, offsets_in, parent_in);
  const int64_t groups = offsets_in.numel() - 1;
  c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor grad = grad_in.contiguous(), q = q_in.contiguous(), offsets = offsets_in.contiguous();
  const Tensor parent = parent_in.contiguous();
  const int64_t n = q.numel();
  Tensor dq = at::empty_like(q);
  const cudaStream_t stream = current_stream();
  TRILEVELNAS_DISPATCH_CUDA(q.scalar_type(), "order_penalty_packed_backward_cuda", [&] {
    C10_CUDA_CHECK(kernels::launch_order_penalty_packed_backward(cuda_ptr<scalar_t>(grad), cuda_ptr<scalar_t>(q),
                                                                offsets.const_data_ptr<int64_t>(),
                                                                parent.const_data_ptr<int64_t>(), n, groups,
                                                                cuda_mutable_ptr<scalar_t>(dq), stream));
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
