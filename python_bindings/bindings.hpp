// bindings.hpp: shared declarations of the coextra._coextra glue (module state, Slot and Hook types).
#pragma once

#include "coextra/coextra.h"

namespace coextra::py {

// Keeps the pending exception (if any) aside for the guard's life and puts it
// back at its end: around code that may raise and clear errors of its own
// while an exception is propagating (dealloc, finalizers, on_free).
class SavedError {
  public:
    SavedError() noexcept { PyErr_Fetch(&type_, &value_, &tb_); }
    ~SavedError() { PyErr_Restore(type_, value_, tb_); }
    SavedError(const SavedError &) = delete;
    SavedError &operator=(const SavedError &) = delete;

  private:
    PyObject *type_, *value_, *tb_;
};

struct ModuleState {
    const coextra_api *api; // the table of the runtime this interpreter uses
    PyObject *slot_type;
    PyObject *hook_type;
    PyObject *released_error;
    PyObject *hooks; // list of live Python Hook objects (the registry's strong references)
};

ModuleState *state_of(PyObject *module);
ModuleState *state_from_type(PyTypeObject *type); // for our heap types

// PySlot.cpp
extern PyType_Spec slot_spec;
struct SlotObject;
coextra_slot slot_handle(PyObject *obj, ModuleState *st); // {0,0} + error if not a live Slot
PyObject *slot_type_check(PyObject *obj, ModuleState *st);

// PyHook.cpp
extern PyType_Spec hook_spec;
PyObject *add_hook(PyObject *module, PyObject *args, PyObject *kwargs);
int remove_all_hooks(ModuleState *st);

} // namespace coextra::py
