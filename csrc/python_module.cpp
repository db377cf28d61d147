// The Python module nf_kernels._C: empty on purpose. Importing it loads the shared library, whose static
// initializers register the nf_kernels_ext ops with the dispatcher (torch.ops.nf_kernels_ext.*).
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "nf_kernels' C++/CUDA kernels, as torch ops", -1,
                               nullptr};
  return PyModule_Create(&module);
}
