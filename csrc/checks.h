// Argument checks shared by the CPU kernels (csrc/*.cpp) and the CUDA glue (csrc/cuda/*.cu).
//
// Every check names the op and the argument. TORCH_CHECK raises RuntimeError, TORCH_CHECK_VALUE
// ValueError in Python. These are the checks the dispatcher ops themselves make. The superconv
// wrapper checks only what a kernel cannot (Python types, floats given as tensors); the relax
// wrappers (trilevelnas/ops/relax.py) still repeat the metadata checks below, for their Triton
// variants, which have no C++ check op yet (docs/ops.md). Both raise OpArgumentError.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace trilevelnas {
namespace checks {

// Storage types the kernels take: float32 and float64 on the CPU, also float16 and bfloat16 on
// CUDA. `device` is the device type of the kernel that makes the check.
inline void floating(const char* op, const at::Tensor& t, const char* name, c10::DeviceType device) {
  TORCH_CHECK(t.device().type() == device, op, ": ", name, " must be a ", c10::DeviceTypeName(device),
              " tensor here, got ", t.device());
  const auto s = t.scalar_type();
  if (device == c10::DeviceType::CPU) {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble, op, ": ", name, " must be float32 or float64 on CPU, got ", s);
  } else {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
                " must be float32, float64, float16 or bfloat16 on CUDA, got ", s);
  }
}

// A 1-D int64 index tensor (offsets, parent) on the device of `like`.
inline void index(const char* op, const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, op, ": ", name, " must be a 1-D int64 tensor, got ",
              t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on ", like.device(), ", got ", t.device());
}

// Offsets [G+1] of packed groups: an index tensor with at least one entry.
inline void offsets(const char* op, const at::Tensor& t, const at::Tensor& like) {
  index(op, t, like, "offsets");
  TORCH_CHECK(t.numel() >= 1, op, ": offsets must hold G+1 >= 1 entries");
}

// Packed groups: 1-D floating values (named `name`) and their offsets, for a kernel on `device`.
inline void packed(const char* op, const at::Tensor& values, const at::Tensor& offsets_tensor,
                   c10::DeviceType device, const char* name = "values") {
  floating(op, values, name, device);
  TORCH_CHECK(values.dim() == 1, op, ": ", name, " must be 1-D (packed groups), got shape ", values.sizes());
  offsets(op, offsets_tensor, values);
}

// `t` has the shape and dtype (and device) of `like`, whose name is `like_name`.
inline void matches(const char* op, const at::Tensor& t, const char* name, const at::Tensor& like,
                    const char* like_name) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device(),
              op, ": ", name, " must match ", like_name, " in shape, dtype and device, got ", t.scalar_type(),
              t.sizes(), " on ", t.device(), " vs ", like.scalar_type(), like.sizes(), " on ", like.device());
}

// A per-group parameter (the radius): one entry per group, on the device of `like`; returned as a
// contiguous 1-D tensor of `dtype`, or undefined when absent.
inline at::Tensor per_group(const char* op, const std::optional<at::Tensor>& t, int64_t groups,
                            const at::Tensor& like, const char* name, at::ScalarType dtype) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  TORCH_CHECK(t->numel() == groups, op, ": ", name, " must have one entry per group (", groups, "), got ",
              t->numel());
  TORCH_CHECK(t->device() == like.device(), op, ": ", name, " must be on ", like.device(), " like the values, got ",
              t->device());
  return t->to(dtype).contiguous().view({groups});
}

// The rows of a dense tensor, the groups of the *_rows ops (rows of the last dimension).
struct Rows {
  int64_t count;               // number of rows (product of the leading dimensions)
  int64_t k;                   // row length
  std::vector<int64_t> shape;  // the leading dimensions
};

// Checks x (floating, for a kernel on `device`, at least 1-D) and returns its rows.
inline Rows rows(const char* op, const at::Tensor& x, const char* name, c10::DeviceType device) {
  floating(op, x, name, device);
  TORCH_CHECK(x.dim() >= 1, op, ": ", name, " must have at least one dimension");
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
