// Explicit instantiations of the superconv epilogue launchers (kernels/superconv.cuh) for the
// standalone build; the torch extension instantiates them through csrc/cuda/superconv.cu.
#include "superconv.cuh"

namespace trilevelnas {
namespace kernels {

#define TRILEVELNAS_SUPERCONV_INSTANTIATE(T)                                                    \
  template cudaError_t superconv_epilogue_forward<T>(const T*, const T*, T*, int64_t, int64_t, \
                                                     int64_t, int64_t, SuperconvEpilogue,      \
                                                     cudaStream_t);                            \
  template cudaError_t superconv_epilogue_backward<T>(                                         \
      const T*, const T*, T*, acc_t<T>*, int64_t, int64_t, int64_t,      \
      int64_t, SuperconvEpilogue, cudaStream_t);

TRILEVELNAS_SUPERCONV_INSTANTIATE(float)
TRILEVELNAS_SUPERCONV_INSTANTIATE(double)
TRILEVELNAS_SUPERCONV_INSTANTIATE(__half)
TRILEVELNAS_SUPERCONV_INSTANTIATE(__nv_bfloat16)

#undef TRILEVELNAS_SUPERCONV_INSTANTIATE

}  // namespace kernels
}  // namespace trilevelnas
