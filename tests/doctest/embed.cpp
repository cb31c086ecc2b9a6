// embed.cpp: the embedded interpreter behind the doctest suite.
#define COEXTRA_API_DEFINE
#include "embed.hpp"
#include "coextra_runtime.h"

#include <cstdio>

namespace embed {

bool start() {
    Py_InitializeEx(0);
    // This program links libcoextra itself (the embedding route): it creates
    // the interpreter's runtime with its own copy.  A later `import coextra`
    // loads the extension's copy, which finds this runtime published and
    // uses it: the "second build of the runtime" path (docs/c-api.md, "One runtime per interpreter").
    coextra_api_ptr_ = coextra_runtime_attach();
    if (coextra_api_ptr_ == nullptr) {
        PyErr_Print();
        std::fprintf(stderr, "embed: cannot create the coextra runtime\n");
        return false;
    }
    coextra_fast_ptr_ = coextra_api_ptr_->fast; // what coextra_import() does too
    return true;
}

bool stop() { return Py_FinalizeEx() == 0; }

bool restart() { return stop() && start(); }

bool exec(const std::string &src) {
    PyObject *main = PyImport_AddModule("__main__"); // borrowed
    PyObject *globals = PyModule_GetDict(main);
    PyObject *r = PyRun_String(src.c_str(), Py_file_input, globals, globals);
    if (r == nullptr) {
        PyErr_Print();
        return false;
    }
    Py_DECREF(r);
    return true;
}

PyObject *eval(const std::string &expr) {
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *globals = PyModule_GetDict(main);
    return PyRun_String(expr.c_str(), Py_eval_input, globals, globals);
}

PyObject *code_of(const std::string &src, const std::string &name) {
    PyObject *code = Py_CompileString(src.c_str(), "<doctest>", Py_file_input);
    if (code == nullptr || name.empty())
        return code;
    PyObject *globals = PyDict_New();
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    PyObject *r = PyEval_EvalCode(code, globals, globals);
    Py_DECREF(code);
    if (r == nullptr) {
        Py_DECREF(globals);
        return nullptr;
    }
    Py_DECREF(r);
    PyObject *fn = PyDict_GetItemString(globals, name.c_str());
    PyObject *c = fn ? PyObject_GetAttrString(fn, "__code__") : nullptr;
    Py_DECREF(globals);
    return c;
}

} // namespace embed
