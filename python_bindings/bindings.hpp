// bindings.hpp: shared declarations of the coextra._coextra glue (module state, Slot and Hook types).
#pragma once

#include "coextra/coextra.h"

namespace coextra::py {

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
