// Explicit instantiations of the relaxation launchers (kernels/sparsestmax.cuh), so that the
// standalone CMake build compiles every kernel for every storage type.
#include "sparsestmax.cuh"

namespace trilevelnas {
namespace kernels {

#define TRILEVELNAS_INSTANTIATE_RELAX(T)                                                                      \
  template cudaError_t launch_sparsestmax_packed<T>(const T*, const int64_t*, int64_t, int64_t, const acc_t<T>*, \
                                                    double, T*, acc_t<T>*, cudaStream_t);                         \
  template cudaError_t launch_sparsestmax_rows<T>(const T*, int64_t, int64_t, const acc_t<T>*, double, T*,       \
                                                  acc_t<T>*, cudaStream_t);                                       \
  template cudaError_t launch_sparsestmax_backward_packed<T>(const T*, const T*, const acc_t<T>*, const int64_t*, \
                                                             int64_t, int64_t, T*, cudaStream_t);                 \
  template cudaError_t launch_sparsestmax_backward_rows<T>(const T*, const T*, const acc_t<T>*, int64_t, int64_t, \
                                                           T*, cudaStream_t);                                     \
  template cudaError_t launch_softmax_packed<T>(const T*, const int64_t*, int64_t, int64_t, T*, cudaStream_t);    \
  template cudaError_t launch_softmax_packed_backward<T>(const T*, const T*, const int64_t*, int64_t, int64_t, T*, \
                                                         cudaStream_t);                                           \
  template cudaError_t launch_order_penalty_packed<T>(const T*, const int64_t*, const int64_t*, int64_t, int64_t, \
                                                      T*, cudaStream_t);                                          \
  template cudaError_t launch_order_penalty_packed_backward<T>(const T*, const T*, const int64_t*, const int64_t*, \
                                                               int64_t, int64_t, T*, cudaStream_t);

TRILEVELNAS_INSTANTIATE_RELAX(float)
TRILEVELNAS_INSTANTIATE_RELAX(double)
TRILEVELNAS_INSTANTIATE_RELAX(__half)
TRILEVELNAS_INSTANTIATE_RELAX(__nv_bfloat16)

#undef TRILEVELNAS_INSTANTIATE_RELAX

}  // namespace kernels
}  // namespace trilevelnas
