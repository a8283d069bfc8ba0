// The CUDA storage type of a torch scalar type (at::Half -> __half, at::BFloat16 ->
// __nv_bfloat16) and typed device pointers of tensors, for the glue in csrc/cuda/*.cu that hands
// tensors to the torch-free kernels of kernels/ (whose arithmetic types are in kernels/common.cuh).
#pragma once

#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace trilevelnas {

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
using cuda_t = typename CudaType<scalar_t>::type;

// Device pointer of a tensor of scalar_t as its CUDA type; nullptr for an undefined tensor.
template <typename scalar_t>
const cuda_t<scalar_t>* cuda_ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const cuda_t<scalar_t>*>(t.const_data_ptr<scalar_t>()) : nullptr;
}

template <typename scalar_t>
cuda_t<scalar_t>* cuda_mutable_ptr(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<cuda_t<scalar_t>*>(t.mutable_data_ptr<scalar_t>()) : nullptr;
}

// Data pointer of an optional tensor of type A (nullptr when undefined).
template <typename A>
const A* maybe_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

}  // namespace trilevelnas
