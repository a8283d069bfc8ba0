// Python module entry of trilevelnas._C. Importing it loads this shared library, whose static
// initialisers register the op schemas and kernels (TORCH_LIBRARY / TORCH_LIBRARY_IMPL) with the
// PyTorch dispatcher. The module itself only reports how it was built.
#include <Python.h>

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

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
