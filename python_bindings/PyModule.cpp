// PyModule.cpp: the coextra._coextra module: multi-phase init, runtime attach, the _C_API capsule, module functions.
#include "bindings.hpp"
#include "coextra_runtime.h"

namespace coextra::py {
namespace {


PyObject *py_slots(PyObject *module, PyObject *) {
    ModuleState *st = state_of(module);
    return st ? st->api->slots_info() : nullptr;
}
PyObject *py_hooks(PyObject *module, PyObject *) {
    ModuleState *st = state_of(module);
    return st ? st->api->hooks_info() : nullptr;
}
PyObject *py_status(PyObject *module, PyObject *) {
    ModuleState *st = state_of(module);
    return st ? st->api->status_info() : nullptr;
}
PyObject *py_runtime_version(PyObject *module, PyObject *) {
    ModuleState *st = state_of(module);
    return st ? PyUnicode_FromString(st->api->runtime_version()) : nullptr;
}

PyMethodDef module_methods[] = {
    {"add_hook", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(add_hook)),
     METH_VARARGS | METH_KEYWORDS,
     "add_hook(name, *, on_enter=None, on_exit=None, priority=PRIORITY_DEFAULT, only=None) -> Hook"},
    {"_slots", py_slots, METH_NOARGS, "[(name, index, live, native)] of the live slots."},
    {"_hooks", py_hooks, METH_NOARGS, "[(name, priority, active, native)], outermost first."},
    {"_status", py_status, METH_NOARGS, "(installed, displaced, foreign_tail, active_hooks, co_extra_index, monitoring_tool_id, observers)."},
    {"_runtime_version", py_runtime_version, METH_NOARGS, "Version of the build that created the runtime."},
    {nullptr, nullptr, 0, nullptr}};

int add_int(PyObject *m, const char *name, long v) { return PyModule_AddIntConstant(m, name, v); }

int add_object(PyObject *m, const char *name, PyObject *o) {
    // PyModule_AddObject steals only on success (PyModule_AddObjectRef is 3.10+).
    if (PyModule_AddObject(m, name, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    return 0;
}

int module_exec(PyObject *m) {
    ModuleState *st = state_of(m);
    st->api = coextra_runtime_attach();
    if (st->api == nullptr)
        return -1;
    st->slot_type = PyType_FromModuleAndSpec(m, &slot_spec, nullptr);
    if (st->slot_type == nullptr)
        return -1;
    st->hook_type = PyType_FromModuleAndSpec(m, &hook_spec, nullptr);
    if (st->hook_type == nullptr)
        return -1;
    st->released_error = st->api->released_error_type();
    if (st->released_error == nullptr)
        return -1;
    st->hooks = PyList_New(0);
    if (st->hooks == nullptr)
        return -1;
    Py_INCREF(st->slot_type);
    Py_INCREF(st->hook_type);
    Py_INCREF(st->released_error);
    if (add_object(m, "Slot", st->slot_type) < 0 || add_object(m, "Hook", st->hook_type) < 0 ||
        add_object(m, "ReleasedError", st->released_error) < 0)
        return -1;
    // The table this interpreter uses (ours, or that of a compatible build
    // that got here first): consumers must all reach the same runtime.
    PyObject *cap = PyCapsule_New(const_cast<coextra_api *>(st->api), COEXTRA_CAPSULE_NAME, nullptr);
    if (add_object(m, "_C_API", cap) < 0)
        return -1;
    if (add_int(m, "PRIORITY_DEBUGGER", COEXTRA_PRIORITY_DEBUGGER) < 0 ||
        add_int(m, "PRIORITY_PROFILER", COEXTRA_PRIORITY_PROFILER) < 0 ||
        add_int(m, "PRIORITY_DEFAULT", COEXTRA_PRIORITY_DEFAULT) < 0 ||
        add_int(m, "PRIORITY_OPTIMIZER", COEXTRA_PRIORITY_OPTIMIZER) < 0 ||
        add_int(m, "PRIORITY_MIN", COEXTRA_PRIORITY_MIN) < 0 || add_int(m, "PRIORITY_MAX", COEXTRA_PRIORITY_MAX) < 0 ||
        add_int(m, "NAME_MAX", COEXTRA_NAME_MAX) < 0)
        return -1;
    if (add_object(m, "ABI_VERSION", Py_BuildValue("(ii)", COEXTRA_ABI_MAJOR, COEXTRA_ABI_MINOR)) < 0 ||
        add_object(m, "__version__", PyUnicode_FromString(COEXTRA_VERSION)) < 0)
        return -1;
    return 0;
}

int module_traverse(PyObject *m, visitproc visit, void *arg) {
    ModuleState *st = state_of(m);
    if (st == nullptr)
        return 0;
    Py_VISIT(st->slot_type);
    Py_VISIT(st->hook_type);
    Py_VISIT(st->released_error);
    Py_VISIT(st->hooks);
    return 0;
}

int module_clear(PyObject *m) {
    ModuleState *st = state_of(m);
    if (st == nullptr)
        return 0;
    if (st->hooks != nullptr && st->api != nullptr)
        remove_all_hooks(st);
    Py_CLEAR(st->hooks);
    Py_CLEAR(st->slot_type);
    Py_CLEAR(st->hook_type);
    Py_CLEAR(st->released_error);
    return 0;
}

void module_free(void *m) { module_clear(static_cast<PyObject *>(m)); }

PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, reinterpret_cast<void *>(module_exec)},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, nullptr}};

} // namespace

ModuleState *state_of(PyObject *module) {
    auto *st = static_cast<ModuleState *>(PyModule_GetState(module));
    if (st == nullptr && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "coextra: module state missing");
    return st;
}

ModuleState *state_from_type(PyTypeObject *type) {
    PyObject *m = PyType_GetModule(type); // borrowed; our heap types only
    return m ? state_of(m) : nullptr;
}

} // namespace coextra::py

namespace {
PyModuleDef coextra_module = {
    PyModuleDef_HEAD_INIT,
    "coextra._coextra",
    "coextra's runtime: shared PEP 523 eval-frame hooks and co_extra slots.",
    sizeof(coextra::py::ModuleState),
    coextra::py::module_methods,
    coextra::py::module_slots,
    coextra::py::module_traverse,
    coextra::py::module_clear,
    coextra::py::module_free,
};
} // namespace

PyMODINIT_FUNC PyInit__coextra(void) { return PyModuleDef_Init(&coextra_module); }
