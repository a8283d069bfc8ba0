// Standalone test of kernels/sparsestmax.cuh against a host implementation of docs/ops.md "Definitions" and of
// the forest ordering penalty (docs/ops.md). Runs forward and backward of every launcher (float and
// double; half/bf16 at a loose tolerance) on random groups with degenerate cases mixed in (K = 1,
// empty groups, ties, uniform groups, radius beyond the circumradius, 1e4 magnitudes; for the
// penalty: tied parent/child weights, forests of several roots, parents that are not earlier
// indices, which count as roots). Exits 1 on any mismatch or CUDA error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "sparsestmax.cuh"
#include "test_util.cuh"

namespace k = trilevelnas::kernels;

namespace {

using trilevelnas::test::to_device;
using trilevelnas::test::to_host;

int failures = 0;

// ---- host reference ------------------------------------------------------------------------

double host_group(const double* x, int n, double r, double* q) {
  if (n == 0) return 0;
  int arg = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[arg]) arg = i;
  const double c = r * r + 1.0 / n;
  if (n == 1 || c >= 1 - k::kOneHotTol) {
    for (int i = 0; i < n; ++i) q[i] = i == arg ? 1 : 0;
    return 0;
  }
  std::vector<double> b(n);
  std::vector<int> idx(n);
  for (int i = 0; i < n; ++i) b[i] = x[i] - x[arg];
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int d) { return b[a] > b[d]; });
  double s1 = 0, s2 = 0, tau = -INFINITY, tmax = -INFINITY;
  int n_top = 0;
  for (int s = 1; s <= n; ++s) {
    const double v = b[idx[s - 1]];
    if (v == 0) n_top = s;
    s1 += v;
    s2 += v * v;
    const double m = s1 / s, var = std::max(s2 / s - m * m, 0.0);
    tau = std::max(tau, (s1 - 1) / s);
    if (s * c > 1 && var > 0) tmax = std::max(tmax, m - std::sqrt(var / (s * c - 1)));
  }
  std::fill(q, q + n, 0.0);
  double z = 0;
  if (n_top >= 2 && n_top * c > 1) {
    double t = -INFINITY;
    for (int s = 2; s <= n_top; ++s)
      if (s * c > 1) t = std::max(t, -(s - 1) / 2.0 - std::sqrt((double(s) * s - 1) / 12.0 / (s * c - 1)));
    for (int p = 0; p < n_top; ++p) z += q[idx[p]] = std::max(-p - t, 0.0);
    for (int i = 0; i < n; ++i) q[i] /= z;
    return 1 / z;
  }
  const double t = std::max(tau, tmax);
  for (int i = 0; i < n; ++i) z += q[i] = std::max(b[i] - t, 0.0);
  for (int i = 0; i < n; ++i) q[i] /= z;
  return tmax > tau ? 1 / z : 0;
}

void host_backward(const double* g, const double* q, int n, double gain, double* dx) {
  int s = 0;
  double gs = 0, ee = 0, eg = 0;
  for (int i = 0; i < n; ++i)
    if (q[i] > 0) ++s, gs += g[i];
  for (int i = 0; i < n; ++i)
    if (q[i] > 0) ee += (q[i] - 1.0 / s) * (q[i] - 1.0 / s), eg += (q[i] - 1.0 / s) * g[i];
  const double proj = gain > 0 && ee > 0 ? eg / ee : 0, scale = gain > 0 ? gain : 1;
  for (int i = 0; i < n; ++i) dx[i] = q[i] > 0 ? scale * (g[i] - gs / s - (q[i] - 1.0 / s) * proj) : 0;
}

// Ordering penalty of one group: sum over i with 0 <= parent[i] < i of max(0, q_i - q_parent), and
// its gradient for the upstream scalar g (+g to the child, -g to the parent when q_i > q_parent).
double host_order_penalty(const double* q, const long long* parent, int n, double g, double* dq) {
  double sum = 0;
  std::fill(dq, dq + n, 0.0);
  for (int i = 0; i < n; ++i) {
    const long long p = parent[i];
    if (p < 0 || p >= i) continue;
    if (q[i] > q[p]) {
      sum += q[i] - q[p];
      dq[i] += g;
      dq[p] -= g;
    }
  }
  return sum;
}

// ---- device helpers --------------------------------------------------------------------------

void expect_close(const char* what, const std::vector<double>& got, const std::vector<double>& want, double tol) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      std::fprintf(stderr, "FAIL %s [%zu]: got %.9g want %.9g\n", what, i, got[i], want[i]);
      ++failures;
      return;
    }
  }
}

struct Case {
  std::vector<long long> offsets;
  std::vector<double> x, radius;
  std::vector<long long> parent;
};

Case make_case(std::mt19937& rng, const std::vector<int>& sizes) {
  Case c;
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> ud(0, 1);
  c.offsets.push_back(0);
  for (int s : sizes) {
    const long long start = c.offsets.back();
    c.offsets.push_back(start + s);
    const int kind = static_cast<int>(ud(rng) * 5);
    for (int i = 0; i < s; ++i) {
      double v = nd(rng);
      if (kind == 1) v = std::round(v);  // ties
      if (kind == 2) v = 0.5;            // uniform
      if (kind == 3) v *= 1e4;           // large magnitudes
      c.x.push_back(v);
      c.parent.push_back(i == 0 || ud(rng) < 0.25 ? -1 : static_cast<long long>(ud(rng) * i));
    }
    const double rc = s > 0 ? std::sqrt(1.0 - 1.0 / s) : 0.0;
    c.radius.push_back(kind == 4 ? 1.5 * rc : ud(rng) * rc);
  }
  return c;
}

template <typename T>
std::vector<double> as_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <typename T>
void run_packed(const Case& c, double tol) {
  using A = k::acc_t<T>;
  const int64_t groups = static_cast<int64_t>(c.offsets.size()) - 1, n = static_cast<int64_t>(c.x.size());
  // host
  std::vector<double> want(n), gain_want(groups), dx_want(n), grad(n);
  for (int64_t i = 0; i < n; ++i) grad[i] = std::sin(1.7 * i);
  std::vector<T> xt(c.x.begin(), c.x.end());
  const std::vector<double> xr(xt.begin(), xt.end());  // the values the device sees
  for (int64_t g = 0; g < groups; ++g) {
    const int s = static_cast<int>(c.offsets[g + 1] - c.offsets[g]);
    gain_want[g] = host_group(xr.data() + c.offsets[g], s, c.radius[g], want.data() + c.offsets[g]);
  }
  // device
  std::vector<A> rad(c.radius.begin(), c.radius.end());
  std::vector<long long> off(c.offsets);
  T* dx_in = to_device(xt);
  int64_t* doff = reinterpret_cast<int64_t*>(to_device(off));
  A* drad = to_device(rad);
  T* dout = to_device(std::vector<T>(n));
  A* dgain = to_device(std::vector<A>(groups));
  CHECK_CUDA(k::launch_sparsestmax_packed<T>(dx_in, doff, n, groups, drad, 0.0, dout, dgain, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> got = as_double(to_host(dout, n)), gain_got = as_double(to_host(dgain, groups));
  expect_close("packed forward", got, want, tol);
  // backward from the device output and gain
  for (int64_t g = 0; g < groups; ++g)
    host_backward(grad.data() + c.offsets[g], got.data() + c.offsets[g],
                  static_cast<int>(c.offsets[g + 1] - c.offsets[g]), gain_got[g], dx_want.data() + c.offsets[g]);
  std::vector<T> gt(grad.begin(), grad.end());
  T* dgrad = to_device(gt);
  T* ddx = to_device(std::vector<T>(n));
  CHECK_CUDA(k::launch_sparsestmax_backward_packed<T>(dgrad, dout, dgain, doff, n, groups, ddx, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  expect_close("packed backward", as_double(to_host(ddx, n)), dx_want, tol * 100);
  // softmax
  std::vector<double> sm(n), smdx(n);
  for (int64_t g = 0; g < groups; ++g) {
    double mx = -INFINITY, z = 0, dot = 0;
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) mx = std::max(mx, double(xt[i]));
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) z += std::exp(double(xt[i]) - mx);
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) sm[i] = std::exp(double(xt[i]) - mx) / z;
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) dot += sm[i] * grad[i];
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) smdx[i] = sm[i] * (grad[i] - dot);
  }
  CHECK_CUDA(k::launch_softmax_packed<T>(dx_in, doff, n, groups, dout, 0));
  CHECK_CUDA(k::launch_softmax_packed_backward<T>(dgrad, dout, doff, n, groups, ddx, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  expect_close("softmax forward", as_double(to_host(dout, n)), sm, tol);
  expect_close("softmax backward", as_double(to_host(ddx, n)), smdx, tol * 10);
  for (void* p : {static_cast<void*>(dx_in), static_cast<void*>(doff), static_cast<void*>(drad),
                  static_cast<void*>(dout), static_cast<void*>(dgain), static_cast<void*>(dgrad),
                  static_cast<void*>(ddx)})
    CHECK_CUDA(cudaFree(p));
}

// Ordering penalty forward and backward of the case's forests. The weights are c.x rounded to a
// coarse grid in every other group (ties between parents and children), and a few parents are made
// invalid (not an earlier index): those nodes count as roots.
template <typename T>
void run_order_penalty(const Case& c, double tol) {
  const int64_t groups = static_cast<int64_t>(c.offsets.size()) - 1, n = static_cast<int64_t>(c.x.size());
  std::vector<T> qt(n);
  std::vector<long long> parent(c.parent);
  for (int64_t g = 0; g < groups; ++g)
    for (long long i = c.offsets[g]; i < c.offsets[g + 1]; ++i) {
      qt[i] = static_cast<T>(g % 2 ? std::round(4 * c.x[i]) / 4 : c.x[i]);
      if ((i * 7 + g) % 19 == 0) parent[i] = i - c.offsets[g];  // itself: counts as a root
    }
  const std::vector<double> qr = as_double(qt);  // the values the device sees
  std::vector<T> gt(groups);
  for (int64_t g = 0; g < groups; ++g) gt[g] = static_cast<T>(std::cos(0.9 * g) + 0.25);
  const std::vector<double> gr = as_double(gt);  // the upstream gradient the device sees
  std::vector<double> want(groups), dq_want(n);
  for (int64_t g = 0; g < groups; ++g)
    want[g] = host_order_penalty(qr.data() + c.offsets[g], parent.data() + c.offsets[g],
                                 static_cast<int>(c.offsets[g + 1] - c.offsets[g]), gr[g], dq_want.data() + c.offsets[g]);
  std::vector<long long> off(c.offsets);
  T* dq_in = to_device(qt);
  int64_t* doff = reinterpret_cast<int64_t*>(to_device(off));
  int64_t* dpar = reinterpret_cast<int64_t*>(to_device(parent));
  T* dout = to_device(std::vector<T>(std::max<int64_t>(groups, 1)));
  T* dgrad = to_device(gt);
  T* ddq = to_device(std::vector<T>(n));
  CHECK_CUDA(k::launch_order_penalty_packed<T>(dq_in, doff, dpar, n, groups, dout, 0));
  CHECK_CUDA(k::launch_order_penalty_packed_backward<T>(dgrad, dq_in, doff, dpar, n, groups, ddq, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> rel(groups);
  const std::vector<double> got = as_double(to_host(dout, groups));
  for (int64_t g = 0; g < groups; ++g) rel[g] = (got[g] - want[g]) / std::max(1.0, std::fabs(want[g]));
  expect_close("order penalty forward (relative)", rel, std::vector<double>(groups, 0.0), tol);
  expect_close("order penalty backward", as_double(to_host(ddq, n)), dq_want, tol);
  for (void* p : {static_cast<void*>(dq_in), static_cast<void*>(doff), static_cast<void*>(dpar),
                  static_cast<void*>(dout), static_cast<void*>(dgrad), static_cast<void*>(ddq)})
    CHECK_CUDA(cudaFree(p));
}

template <typename T>
void run_rows(std::mt19937& rng, int64_t rows, int kk, double tol) {
  using A = k::acc_t<T>;
  Case c = make_case(rng, std::vector<int>(rows, kk));
  std::vector<double> want(rows * kk), gains(rows), dx_want(rows * kk), grad(rows * kk);
  for (int64_t i = 0; i < rows * kk; ++i) grad[i] = std::cos(0.3 * i);
  std::vector<T> xt(c.x.begin(), c.x.end());
  std::vector<double> xr(xt.begin(), xt.end());  // the values the device sees
  for (int64_t r = 0; r < rows; ++r) gains[r] = host_group(xr.data() + r * kk, kk, c.radius[r], want.data() + r * kk);
  std::vector<A> rad(c.radius.begin(), c.radius.end());
  T* dx_in = to_device(xt);
  A* drad = to_device(rad);
  T* dout = to_device(std::vector<T>(rows * kk));
  A* dgain = to_device(std::vector<A>(rows));
  CHECK_CUDA(k::launch_sparsestmax_rows<T>(dx_in, rows, kk, drad, 0.0, dout, dgain, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> got = as_double(to_host(dout, rows * kk)), gain_got = as_double(to_host(dgain, rows));
  expect_close("rows forward", got, want, tol);
  for (int64_t r = 0; r < rows; ++r)
    host_backward(grad.data() + r * kk, got.data() + r * kk, kk, gain_got[r], dx_want.data() + r * kk);
  std::vector<T> gt(grad.begin(), grad.end());
  T* dgrad = to_device(gt);
  T* ddx = to_device(std::vector<T>(rows * kk));
  CHECK_CUDA(k::launch_sparsestmax_backward_rows<T>(dgrad, dout, dgain, rows, kk, ddx, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  expect_close("rows backward", as_double(to_host(ddx, rows * kk)), dx_want, tol * 100);
  for (void* p : {static_cast<void*>(dx_in), static_cast<void*>(drad), static_cast<void*>(dout),
                  static_cast<void*>(dgain), static_cast<void*>(dgrad), static_cast<void*>(ddx)})
    CHECK_CUDA(cudaFree(p));
}

}  // namespace

int main() {
  if (!trilevelnas::test::have_device("test_sparsestmax")) return 1;
  std::mt19937 rng(1234);
  std::vector<int> search_space(25, 4);
  search_space.push_back(83);
  std::vector<int> mixed = {0, 1, 2, 3, 5, 0, 7, 16, 31, 32, 33, 64, 100};
  for (int rep = 0; rep < 5; ++rep) {
    for (const auto& sizes : {search_space, mixed}) {
      Case c = make_case(rng, sizes);
      run_packed<double>(c, 1e-12);
      run_packed<float>(c, 2e-5);
      run_order_penalty<double>(c, 1e-12);
      run_order_penalty<float>(c, 1e-5);
      run_order_penalty<__half>(c, 2e-2);
      run_order_penalty<__nv_bfloat16>(c, 5e-2);
    }
  }
  for (int kk : {1, 2, 3, 4, 5, 8, 16, 17, 32, 33, 83}) {
    run_rows<double>(rng, 300, kk, 1e-12);
    run_rows<float>(rng, 300, kk, 2e-5);
  }
  run_rows<__half>(rng, 64, 16, 2e-2);
  run_rows<__nv_bfloat16>(rng, 64, 16, 5e-2);
  if (failures) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::printf("test_sparsestmax: all passed\n");
  return 0;
}
