// Superkernel convolution: the fused epilogue kernels used with a cuDNN convolution over the
// active weight block (torch-free; launched by csrc/cuda/superconv.cu, instantiated for the
// standalone build in superconv.cu).
//
// Layout: NCHW, contiguous. "plane" = H' * W'. z is the raw convolution of the active block,
// [N, width, plane]; out and grad have the full channel count, [N, channels, plane].
//
//   forward:  out[n, c] = acc[n, c] + s * act(z[n, c])   for c <  width
//             out[n, c] = acc[n, c]  (0 without acc)     for c >= width
//   backward: grad_z[n, c] = s * grad[n, c] * act'(z[n, c])              (c < width)
//             partial[n * width + c] = sum_i grad[n, c, i] * act(z[n, c, i])
// with s = scale_factor * (*scale) (scale: a device pointer, or null for 1).
#pragma once

#include "common.cuh"

namespace trilevelnas {
namespace kernels {

struct SuperconvEpilogue {
  int activation;        // Activation (common.cuh)
  float negative_slope;  // leaky relu slope
  float scale_factor;    // constant factor of the scale
  const float* scale;    // device pointer to a tensor scale, or nullptr
};

namespace detail {

template <typename T>
__global__ void superconv_forward_kernel(const T* __restrict__ z, const T* __restrict__ acc,
                                         T* __restrict__ out, int64_t total, int64_t channels,
                                         int64_t width, int64_t plane, SuperconvEpilogue ep) {
  using A = acc_t<T>;
  const A s = static_cast<A>(ep.scale_factor) * (ep.scale ? static_cast<A>(*ep.scale) : A(1));
  const A slope = static_cast<A>(ep.negative_slope);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += step) {
    const int64_t p = idx / plane;
    const int64_t i = idx - p * plane;
    const int64_t c = p % channels;
    A v = acc ? load_acc(acc + idx) : A(0);
    if (c < width) {
      const int64_t n = p / channels;
      v += s * activate<A>(load_acc(z + (n * width + c) * plane + i), ep.activation, slope);
    }
    store_acc(out + idx, v);
  }
}

// One block per active plane; blockDim.x must be a power of two <= 1024.
template <typename T>
__global__ void superconv_backward_kernel(const T* __restrict__ grad, const T* __restrict__ z,
                                          T* __restrict__ grad_z,
                                          acc_t<T>* __restrict__ partial,
                                          int64_t channels, int64_t width, int64_t plane,
                                          SuperconvEpilogue ep) {
  using A = acc_t<T>;
  __shared__ A shared[1024];
  const A s = static_cast<A>(ep.scale_factor) * (ep.scale ? static_cast<A>(*ep.scale) : A(1));
  const A slope = static_cast<A>(ep.negative_slope);
  const int64_t p = blockIdx.x;  // n * width + c
  const int64_t n = p / width, c = p % width;
  const T* gp = grad + (n * channels + c) * plane;
  const T* zp = z + p * plane;
  T* gzp = grad_z + p * plane;
  A sum = 0;
  for (int64_t i = threadIdx.x; i < plane; i += blockDim.x) {
    const A g = load_acc(gp + i);
    const A v = z ? load_acc(zp + i) : A(0);
    store_acc(gzp + i, z ? s * g * activate_grad<A>(v, ep.activation, slope) : s * g);
    sum += g * activate<A>(v, ep.activation, slope);
  }
  if (partial == nullptr) return;
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[p] = shared[0];
}

}  // namespace detail

// Launches the forward epilogue on `stream`; returns the launch status.
template <typename T>
cudaError_t superconv_epilogue_forward(const T* z, const T* acc, T* out, int64_t n_batch,
                                       int64_t channels, int64_t width, int64_t plane,
                                       SuperconvEpilogue ep, cudaStream_t stream) {
  const int64_t total = n_batch * channels * plane;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks_needed = (total + threads - 1) / threads;
  const int blocks = static_cast<int>(blocks_needed < 65535 * 8 ? blocks_needed : 65535 * 8);
  detail::superconv_forward_kernel<T>
      <<<blocks, threads, 0, stream>>>(z, acc, out, total, channels, width, plane, ep);
  return cudaGetLastError();
}

// Launches the backward epilogue on `stream`. z may be null when the activation is "none" and no
// partial sums are wanted; partial (n_batch * width entries) may be null. With empty planes
// nothing is written (callers zero-initialise partial).
template <typename T>
cudaError_t superconv_epilogue_backward(const T* grad, const T* z, T* grad_z,
                                        acc_t<T>* partial, int64_t n_batch,
                                        int64_t channels, int64_t width, int64_t plane,
                                        SuperconvEpilogue ep, cudaStream_t stream) {
  const int64_t planes = n_batch * width;
  if (planes == 0 || plane == 0) return cudaSuccess;  // nothing to write; partial untouched
  if (planes > 0x7fffffffLL) return cudaErrorInvalidValue;
  int threads = 32;
  while (threads < 256 && threads < plane) threads *= 2;
  detail::superconv_backward_kernel<T><<<static_cast<unsigned>(planes), threads, 0, stream>>>(
      grad, z, grad_z, partial, channels, width, plane, ep);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace trilevelnas
