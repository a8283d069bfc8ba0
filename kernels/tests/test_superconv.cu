// Standalone test of the superconv epilogue kernels against a host reference, on random data, for
// every activation, with and without accumulate / tensor scale, in float, double, half and
// bfloat16. Exits 0 when every case agrees, 1 otherwise (also when no GPU is present).
#include "superconv.cuh"
#include "test_util.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace trilevelnas::kernels;

namespace {

using trilevelnas::test::to_device;
using trilevelnas::test::to_host;

double act(double v, int a, double slope) {
  if (a == kActRelu) return v > 0 ? v : 0;
  if (a == kActLeakyRelu) return v > 0 ? v : v * slope;
  return v;
}

double act_grad(double v, int a, double slope) {
  if (a == kActRelu) return v > 0 ? 1 : 0;
  if (a == kActLeakyRelu) return v > 0 ? 1 : slope;
  return 1;
}

// Values are rounded to T on the host first, so the reference sees exactly the kernel's inputs.
template <typename T>
std::vector<T> random_values(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<T> v(n);
  for (auto& e : v) e = static_cast<T>(dist(rng));
  return v;
}

template <typename T>
double as_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
double as_double<double>(double v) {
  return v;
}

template <typename T>
bool run_case(std::mt19937& rng, const char* name, double tol, int64_t n_batch, int64_t channels,
              int64_t width, int64_t plane, int activation, bool with_acc, bool with_scale) {
  const size_t full = n_batch * channels * plane, active = n_batch * width * plane;
  auto z = random_values<T>(rng, active);
  auto acc = random_values<T>(rng, full);
  auto grad = random_values<T>(rng, full);
  const float scale_value = 0.625f, factor = with_scale ? 1.0f : -1.5f, slope = 0.2f;
  T* dz = to_device(z);
  T* dacc = with_acc ? to_device(acc) : nullptr;
  T* dgrad = to_device(grad);
  T* dout = to_device(std::vector<T>(full));
  T* dgz = to_device(std::vector<T>(active));
  using A = acc_t<T>;
  A* dpartial = to_device(std::vector<A>(n_batch * width));
  float* dscale = to_device(std::vector<float>{scale_value});
  SuperconvEpilogue ep{activation, slope, factor, with_scale ? dscale : nullptr};
  CHECK_CUDA(superconv_epilogue_forward<T>(dz, dacc, dout, n_batch, channels, width, plane, ep, 0));
  CHECK_CUDA(superconv_epilogue_backward<T>(dgrad, dz, dgz, dpartial, n_batch, channels, width,
                                            plane, ep, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  auto out = to_host(dout, full);
  auto gz = to_host(dgz, active);
  auto partial = to_host(dpartial, n_batch * width);
  const double s = factor * (with_scale ? scale_value : 1.0);
  double err = 0;
  for (int64_t n = 0; n < n_batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      double psum = 0;
      for (int64_t i = 0; i < plane; ++i) {
        const size_t o = (n * channels + c) * plane + i;
        double ref = with_acc ? as_double(acc[o]) : 0.0;
        if (c < width) {
          const size_t a = (n * width + c) * plane + i;
          const double v = as_double(z[a]);
          ref += s * act(v, activation, slope);
          const double gref = s * as_double(grad[o]) * act_grad(v, activation, slope);
          err = std::fmax(err, std::fabs(as_double(gz[a]) - gref) / (1 + std::fabs(gref)));
          psum += as_double(grad[o]) * act(v, activation, slope);
        }
        err = std::fmax(err, std::fabs(as_double(out[o]) - ref) / (1 + std::fabs(ref)));
      }
      if (c < width) {
        const double got = static_cast<double>(partial[n * width + c]);
        err = std::fmax(err, std::fabs(got - psum) / (1 + std::fabs(psum)) / std::sqrt(plane + 1.0));
      }
    }
  }
  for (void* p : {static_cast<void*>(dz), static_cast<void*>(dacc), static_cast<void*>(dgrad),
                  static_cast<void*>(dout), static_cast<void*>(dgz), static_cast<void*>(dpartial),
                  static_cast<void*>(dscale)}) {
    if (p) CHECK_CUDA(cudaFree(p));
  }
  const bool ok = err <= tol;
  std::printf("%-5s %s N=%lld C=%lld width=%lld plane=%lld act=%d acc=%d scale=%d: err %.3g\n",
              ok ? "ok" : "FAIL", name, static_cast<long long>(n_batch),
              static_cast<long long>(channels), static_cast<long long>(width),
              static_cast<long long>(plane), activation, with_acc, with_scale, err);
  return ok;
}

template <typename T>
bool run_all(std::mt19937& rng, const char* name, double tol) {
  bool ok = true;
  for (int activation = 0; activation < 3; ++activation) {
    ok &= run_case<T>(rng, name, tol, 2, 16, 5, 37, activation, true, true);
    ok &= run_case<T>(rng, name, tol, 3, 8, 8, 1024, activation, false, false);
    ok &= run_case<T>(rng, name, tol, 1, 64, 24, 1029, activation, true, false);
  }
  ok &= run_case<T>(rng, name, tol, 0, 4, 2, 9, 1, true, true);  // empty batch
  return ok;
}

}  // namespace

int main() {
  if (!trilevelnas::test::have_device("test_superconv")) return 1;
  std::mt19937 rng(1234);
  bool ok = true;
  ok &= run_all<float>(rng, "float", 1e-5);
  ok &= run_all<double>(rng, "double", 1e-12);
  ok &= run_all<__half>(rng, "half", 2e-3);
  ok &= run_all<__nv_bfloat16>(rng, "bf16", 1.6e-2);
  std::printf(ok ? "all superconv epilogue checks passed\n" : "superconv epilogue checks FAILED\n");
  return ok ? 0 : 1;
}
