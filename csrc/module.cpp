// Python module entry of trilevelnas._C. Importing it loads this shared library, whose static
// initialisers register the op schemas and kernels (TORCH_LIBRARY / TORCH_LIBRARY_IMPL) with the
// PyTorch dispatcher. The module itself only reports how it was built and the constants of
// kernels/common.cuh that the Python side mirrors (tests/test_extension.py compares them).
#include <Python.h>

#include "common.cuh"

namespace {

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef TRILEVELNAS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"with_cuda", with_cuda, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "trilevelnas compiled kernels", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  namespace k = trilevelnas::kernels;
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  if (PyModule_AddObject(m, "ONE_HOT_TOL", PyFloat_FromDouble(k::kOneHotTol)) < 0 ||
      PyModule_AddObject(m, "ACTIVATIONS",
                         Py_BuildValue("{s:i,s:i,s:i}", "none", int(k::kActNone), "relu", int(k::kActRelu),
                                       "leaky_relu", int(k::kActLeakyRelu))) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
