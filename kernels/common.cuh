// Pieces shared by every kernel of the extension: the CPU kernels in csrc/*.cpp, the CUDA glue in
// csrc/cuda/*.cu and the torch-free device code in kernels/*.cuh. Torch-free.
//
// - constants shared with the Python side (ops/reference.py ONE_HOT_TOL, ops/superconv.py
//   ACTIVATIONS; tests/test_extension.py checks that trilevelnas._C reports the same values);
// - the activation codes and their value / derivative;
// - for device code only (nvcc): the arithmetic type of a storage type (AccType / acc_t) and
//   loads and stores that convert between them.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define TRILEVELNAS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TRILEVELNAS_HOST_DEVICE inline
#endif

namespace trilevelnas {
namespace kernels {

// A sparsestmax group is one-hot when c = r^2 + 1/K >= 1 - kOneHotTol (so that r at the
// circumradius, rounded to float32, still gives one-hot). Same value as ops/reference.py.
constexpr double kOneHotTol = 1e-6;

// Activation codes of the fused epilogues (superconv2d's `activation` argument).
enum Activation : int { kActNone = 0, kActRelu = 1, kActLeakyRelu = 2 };

constexpr bool is_activation(int64_t code) { return code == kActNone || code == kActRelu || code == kActLeakyRelu; }

// act(v) and act'(v) for a runtime activation code.
template <typename A>
TRILEVELNAS_HOST_DEVICE A activate(A v, int act, A slope) {
  if (act == kActRelu) return v > A(0) ? v : A(0);
  if (act == kActLeakyRelu) return v > A(0) ? v : v * slope;
  return v;
}

template <typename A>
TRILEVELNAS_HOST_DEVICE A activate_grad(A v, int act, A slope) {
  if (act == kActRelu) return v > A(0) ? A(1) : A(0);
  if (act == kActLeakyRelu) return v > A(0) ? A(1) : slope;
  return A(1);
}

// Arithmetic type of a storage type on the GPU: float, double for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

#if defined(__CUDACC__)

// Loads and stores in the arithmetic type, through the explicit conversion intrinsics (torch
// builds with __CUDA_NO_HALF_CONVERSIONS__, which removes the implicit ones).
__device__ __forceinline__ float load_acc(const float* p) { return *p; }
__device__ __forceinline__ double load_acc(const double* p) { return *p; }
__device__ __forceinline__ float load_acc(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_acc(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_acc(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_acc(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

#endif  // __CUDACC__

}  // namespace kernels
}  // namespace trilevelnas
