// Argument checks shared by the CPU kernels (csrc/*.cpp), the CUDA glue (csrc/cuda/*.cu) and the
// check ops of the Triton variants (docs/ops.md "Registration").
//
// Every check names the op and the argument and raises ValueError in Python (TORCH_CHECK_VALUE).
// They read only metadata (dtype, shape, device, a float argument), never a tensor's values, so a
// GPU kernel makes them without a host synchronisation.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

namespace trilevelnas {
namespace checks {

// The kernel that makes a check. The CPU kernels take float32 and float64 CPU tensors; the CUDA
// kernels also float16 and bfloat16, on CUDA; the Triton kernels the same four dtypes, on CUDA or,
// under TRITON_INTERPRET=1, on the CPU.
enum class Kernel { kCpu, kCuda, kTriton };

inline void floating(const char* op, const at::Tensor& t, const char* name, Kernel kernel) {
  const auto s = t.scalar_type();
  if (kernel == Kernel::kCpu) {
    TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor here, got ", t.device());
    TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble, op, ": ", name, " has dtype ", s,
                      "; supported on cpu: float32, float64");
    return;
  }
  if (kernel == Kernel::kCuda)
    TORCH_CHECK_VALUE(t.device().is_cuda(), op, ": ", name, " must be a CUDA tensor here, got ", t.device());
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
                    " has dtype ", s, "; supported on ", kernel == Kernel::kCuda ? "cuda" : "triton",
                    ": float32, float64, float16, bfloat16");
}

// A 1-D int64 index tensor (offsets, parent) on the device of `like`.
inline void index(const char* op, const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.scalar_type() == at::kLong, op, ": ", name,
                    " must be a 1-D int64 tensor, got ", t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but the values on ",
                    like.device());
}

// Packed groups: 1-D floating values (named `name`) and their offsets [G+1], G >= 0.
inline void packed(const char* op, const at::Tensor& values, const at::Tensor& offsets, Kernel kernel,
                   const char* name = "values") {
  floating(op, values, name, kernel);
  TORCH_CHECK_VALUE(values.dim() == 1, op, ": ", name, " must be 1-D (groups packed end to end), got shape ",
                    values.sizes());
  index(op, offsets, values, "offsets");
  TORCH_CHECK_VALUE(offsets.numel() >= 1, op, ": offsets must hold at least one entry (G+1 with G >= 0)");
}

// `t` has the shape and dtype (and device) of `like`, whose name is `like_name`.
inline void matches(const char* op, const at::Tensor& t, const char* name, const at::Tensor& like,
                    const char* like_name) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() &&
                        t.device() == like.device(),
                    op, ": ", name, " must match ", like_name, " in shape, dtype and device, got ", t.scalar_type(),
                    t.sizes(), " on ", t.device(), " vs ", like.scalar_type(), like.sizes(), " on ", like.device());
}

// A per-group parameter (the radius), when given: one entry per group, on the device of `like`.
inline void per_group(const char* op, const std::optional<at::Tensor>& t, int64_t groups, const at::Tensor& like,
                      const char* name) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK_VALUE(t->numel() == groups, op, ": ", name, " must have one entry per group (", groups, "), got ",
                    t->numel());
  TORCH_CHECK_VALUE(t->device() == like.device(), op, ": ", name, " is on ", t->device(), " but the values on ",
                    like.device());
}

// The per-group parameter (checked by per_group) as a contiguous 1-D tensor of `dtype`; undefined
// when absent.
inline at::Tensor per_group_as(const std::optional<at::Tensor>& t, int64_t groups, at::ScalarType dtype) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return t->to(dtype).contiguous().view({groups});
}

// A float argument: finite, and >= 0 when `nonnegative`.
inline void finite(const char* op, double v, const char* name, bool nonnegative) {
  TORCH_CHECK_VALUE(std::isfinite(v) && (!nonnegative || v >= 0), op, ": ", name, " must be finite",
                    nonnegative ? " and >= 0" : "", ", got ", v);
}

// The rows of a dense tensor, the groups of the *_rows ops (rows of the last dimension).
struct Rows {
  int64_t count;               // number of rows (product of the leading dimensions)
  int64_t k;                   // row length
  std::vector<int64_t> shape;  // the leading dimensions
};

// Checks x (floating, at least 1-D) and returns its rows.
inline Rows rows(const char* op, const at::Tensor& x, const char* name, Kernel kernel) {
  floating(op, x, name, kernel);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": ", name, " must have at least one dimension");
  Rows r{1, x.size(-1), std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1)};
  for (int64_t s : r.shape) r.count *= s;
  return r;
}

// dtype of the per-group gain of the sparsestmax family (and the kernels' arithmetic on the GPU).
inline at::ScalarType gain_dtype(const at::Tensor& v) {
  return v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace checks
}  // namespace trilevelnas
