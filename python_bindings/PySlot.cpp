// PySlot.cpp: coextra.Slot, a per-code slot holding Python objects, with on_free callbacks.
#include "bindings.hpp"

#include <structmember.h>

#include <cstring>

namespace coextra::py {

// What the runtime's free function receives.  It lives on the heap, not in
// the Slot object, because code objects can die after the Slot: if the slot
// could not be released (the interpreter's runtime was already closed at
// finalization), the values left in code objects still find their on_free.
struct SlotCtx {
    PyObject *on_free; // strong, may be NULL
};

struct SlotObject {
    PyObject_HEAD
    const coextra_api *api;
    coextra_slot handle; // zero once released
    coextra_slot reserved; // the handle it was given, kept to name it in ReleasedError
    PyObject *name;
    SlotCtx *ctx;
    PyObject *weakrefs;
};

namespace {

// Runs whenever a value leaves the slot: replaced, deleted, its code object
// died (possibly inside code_dealloc, on any thread, with an exception
// pending), or the slot was released.  Never lets an exception escape.
void py_slot_free(void *value, void *ctx_) {
    auto *ctx = static_cast<SlotCtx *>(ctx_);
    auto *v = static_cast<PyObject *>(value);
    if (ctx != nullptr && ctx->on_free != nullptr) {
        // Our own reference: on_free may release its own slot, which frees
        // ctx and drops ctx->on_free while the call is still running.
        PyObject *fn = ctx->on_free;
        Py_INCREF(fn);
        {
            SavedError saved;
            PyObject *r = PyObject_CallOneArg(fn, v);
            if (r == nullptr)
                PyErr_WriteUnraisable(fn);
            Py_XDECREF(r);
        }
        Py_DECREF(fn);
    }
    Py_DECREF(v);
}

SlotObject *as_slot(PyObject *self) { return reinterpret_cast<SlotObject *>(self); }

int check_live(SlotObject *s) {
    if (s->handle.generation != 0)
        return 0;
    ModuleState *st = state_from_type(Py_TYPE(s));
    PyErr_Format(st ? st->released_error : PyExc_RuntimeError,
                 "coextra: slot %R (index %u, generation %u) has been released", s->name,
                 (unsigned)s->reserved.index, (unsigned)s->reserved.generation);
    return -1;
}

int check_code(PyObject *key) {
    if (PyCode_Check(key))
        return 0;
    PyErr_Format(PyExc_TypeError, "coextra.Slot keys must be code objects, not %.200s", Py_TYPE(key)->tp_name);
    return -1;
}

int do_release(SlotObject *s) {
    if (s->handle.generation == 0)
        return 0;
    // Retired before the on_free calls that the release makes: they see
    // `released` True, consistent with the ReleasedError they would get.
    coextra_slot h = s->handle;
    s->handle = coextra_slot{0, 0};
    if (s->api->slot_release(h) < 0) {
        s->handle = h;
        return -1;
    }
    Py_CLEAR(s->ctx->on_free);
    PyMem_RawFree(s->ctx);
    s->ctx = nullptr;
    return 0;
}

PyObject *slot_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static const char *kwlist[] = {"name", "on_free", nullptr};
    PyObject *name, *on_free = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|$O:Slot", const_cast<char **>(kwlist), &name, &on_free))
        return nullptr;
    if (on_free != Py_None && !PyCallable_Check(on_free)) {
        PyErr_SetString(PyExc_TypeError, "coextra.Slot: on_free must be callable or None");
        return nullptr;
    }
    ModuleState *st = state_from_type(type);
    if (st == nullptr)
        return nullptr;
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == nullptr)
        return nullptr;
    Py_ssize_t nbytes;
    PyUnicode_AsUTF8AndSize(name, &nbytes);
    if (static_cast<size_t>(nbytes) != std::strlen(cname)) {
        PyErr_SetString(PyExc_ValueError, "coextra.Slot: name contains a NUL character");
        return nullptr;
    }
    auto *ctx = static_cast<SlotCtx *>(PyMem_RawMalloc(sizeof(SlotCtx)));
    if (ctx == nullptr)
        return PyErr_NoMemory();
    ctx->on_free = nullptr;
    auto *self = as_slot(type->tp_alloc(type, 0));
    if (self == nullptr) {
        PyMem_RawFree(ctx);
        return nullptr;
    }
    self->api = st->api;
    self->handle = coextra_slot{0, 0};
    self->reserved = coextra_slot{0, 0};
    self->ctx = ctx;
    Py_INCREF(name);
    self->name = name;
    if (st->api->slot_reserve_ex(cname, py_slot_free, ctx, COEXTRA_FLAG_PYTHON, &self->handle) < 0) {
        Py_DECREF(self);
        return nullptr;
    }
    self->reserved = self->handle;
    if (on_free != Py_None) {
        Py_INCREF(on_free);
        ctx->on_free = on_free;
    }
    return reinterpret_cast<PyObject *>(self);
}

// PEP 442: the GC runs every finalizer of a garbage cycle before it clears
// anything in it.  Releasing here, not only in dealloc, means an on_free that
// is part of a cycle with its Slot (a closure over it) still runs with its
// closure and globals intact instead of after tp_clear emptied them.
void slot_finalize(PyObject *self_) {
    SavedError saved;
    if (do_release(as_slot(self_)) < 0)
        PyErr_Clear(); // runtime gone: slot_dealloc handles the leftovers
}

void slot_dealloc(PyObject *self_) {
    SlotObject *s = as_slot(self_);
    PyTypeObject *tp = Py_TYPE(self_);
    if (PyObject_CallFinalizerFromDealloc(self_) < 0)
        return; // an on_free resurrected the Slot
    PyObject_GC_UnTrack(self_);
    if (s->weakrefs)
        PyObject_ClearWeakRefs(self_);
    if (s->handle.generation != 0) {
        SavedError saved;
        if (s->api->slot_release(s->handle) < 0) {
            // The runtime is gone (late finalization): the values left in code
            // objects still need ctx, so it is deliberately not freed.
            PyErr_Clear();
            s->ctx = nullptr;
        }
    }
    if (s->ctx != nullptr) {
        Py_CLEAR(s->ctx->on_free);
        PyMem_RawFree(s->ctx);
    }
    Py_CLEAR(s->name);
    tp->tp_free(self_);
    Py_DECREF(tp);
}

int slot_traverse(PyObject *self, visitproc visit, void *arg) {
    SlotObject *s = as_slot(self);
    Py_VISIT(Py_TYPE(self));
    if (s->ctx)
        Py_VISIT(s->ctx->on_free);
    return 0;
}

PyObject *slot_getitem(PyObject *self, PyObject *key) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || check_code(key) < 0)
        return nullptr;
    auto *v = static_cast<PyObject *>(s->api->slot_get(key, s->handle));
    if (v == nullptr) {
        PyErr_SetObject(PyExc_KeyError, key);
        return nullptr;
    }
    Py_INCREF(v);
    return v;
}

int slot_setitem(PyObject *self, PyObject *key, PyObject *value) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || check_code(key) < 0)
        return -1;
    if (value == nullptr) {
        if (s->api->slot_get(key, s->handle) == nullptr) {
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        return s->api->slot_clear(key, s->handle);
    }
    // Storing the object already there frees nothing (the runtime never
    // frees a value it keeps), so it must not take a second reference.
    if (s->api->slot_get(key, s->handle) == value)
        return 0;
    Py_INCREF(value);
    if (s->api->slot_set(key, s->handle, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

Py_ssize_t slot_len(PyObject *self) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0)
        return -1;
    return s->api->slot_live(s->handle);
}

int slot_contains(PyObject *self, PyObject *key) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || check_code(key) < 0)
        return -1;
    return s->api->slot_get(key, s->handle) != nullptr;
}

PyObject *slot_get_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
        return nullptr;
    }
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || check_code(args[0]) < 0)
        return nullptr;
    auto *v = static_cast<PyObject *>(s->api->slot_get(args[0], s->handle));
    if (v == nullptr)
        v = nargs == 2 ? args[1] : Py_None;
    Py_INCREF(v);
    return v;
}

// Iteration (ABI 1.4): the code objects are taken first (coextra_slot_foreach
// into a list of strong references), then each is looked up again as its turn
// comes, so the loop body may set, delete or replace values: a code object
// whose value went meanwhile is skipped, and a release stops the loop with
// ReleasedError (from __contains__ / _item).
int collect_code(PyObject *code, void *, void *list) { return PyList_Append(static_cast<PyObject *>(list), code); }

PyObject *snapshot_codes(SlotObject *s) {
    PyObject *list = PyList_New(0);
    if (list == nullptr)
        return nullptr;
    if (s->api->slot_foreach(s->handle, collect_code, list) != 0) {
        Py_DECREF(list);
        return nullptr;
    }
    return list;
}

// filter(fn, map(...) or codes): builtins that hold the list and call back per item.
PyObject *lazy_over_snapshot(PyObject *self, const char *per_item, bool pairs) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0)
        return nullptr;
    PyObject *codes = snapshot_codes(s);
    if (codes == nullptr)
        return nullptr;
    PyObject *fn = PyObject_GetAttrString(self, per_item);
    PyObject *it = nullptr;
    if (fn != nullptr && pairs) {
        PyObject *mapped = PyObject_CallFunctionObjArgs(reinterpret_cast<PyObject *>(&PyMap_Type), fn, codes, nullptr);
        if (mapped != nullptr)
            it = PyObject_CallFunctionObjArgs(reinterpret_cast<PyObject *>(&PyFilter_Type), Py_None, mapped, nullptr);
        Py_XDECREF(mapped);
    } else if (fn != nullptr) {
        it = PyObject_CallFunctionObjArgs(reinterpret_cast<PyObject *>(&PyFilter_Type), fn, codes, nullptr);
    }
    Py_XDECREF(fn);
    Py_DECREF(codes);
    return it;
}

PyObject *slot_iter(PyObject *self) { return lazy_over_snapshot(self, "__contains__", false); }

PyObject *slot_items_method(PyObject *self, PyObject *) { return lazy_over_snapshot(self, "_item", true); }

// (code, value), or None once code holds no value (skipped by items()).
PyObject *slot_item_method(PyObject *self, PyObject *code) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || check_code(code) < 0)
        return nullptr;
    auto *v = static_cast<PyObject *>(s->api->slot_get(code, s->handle));
    if (v == nullptr)
        Py_RETURN_NONE;
    return PyTuple_Pack(2, code, v);
}

PyObject *slot_release_method(PyObject *self, PyObject *) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0 || do_release(s) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyObject *slot_enter(PyObject *self, PyObject *) {
    if (check_live(as_slot(self)) < 0)
        return nullptr;
    Py_INCREF(self);
    return self;
}

PyObject *slot_exit(PyObject *self, PyObject *) {
    if (do_release(as_slot(self)) < 0)
        return nullptr;
    Py_RETURN_FALSE;
}

PyObject *slot_get_released(PyObject *self, void *) { return PyBool_FromLong(as_slot(self)->handle.generation == 0); }
PyObject *slot_get_index(PyObject *self, void *) {
    SlotObject *s = as_slot(self);
    if (check_live(s) < 0)
        return nullptr;
    return PyLong_FromUnsignedLong(s->handle.index);
}
PyObject *slot_get_name(PyObject *self, void *) {
    Py_INCREF(as_slot(self)->name);
    return as_slot(self)->name;
}

PyObject *slot_repr(PyObject *self) {
    SlotObject *s = as_slot(self);
    if (s->handle.generation == 0)
        return PyUnicode_FromFormat("<coextra.Slot %R released>", s->name);
    return PyUnicode_FromFormat("<coextra.Slot %R index=%u live=%zd>", s->name, (unsigned)s->handle.index,
                                s->api->slot_live(s->handle));
}

PyMethodDef slot_methods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(slot_get_method)), METH_FASTCALL,
     "get(code, default=None): the value stored for code, or default."},
    {"items", slot_items_method, METH_NOARGS,
     "items(): an iterator of (code, value) over the code objects holding a value when it is made; "
     "one whose value is deleted meanwhile is skipped."},
    {"_item", slot_item_method, METH_O, "_item(code): (code, value), or None if code holds no value."},
    {"release", slot_release_method, METH_NOARGS,
     "Drop the value of every code object (on_free runs for each) and retire the slot."},
    {"__enter__", slot_enter, METH_NOARGS, nullptr},
    {"__exit__", slot_exit, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef slot_getset[] = {
    {"released", slot_get_released, nullptr, "True once release() ran.", nullptr},
    {"index", slot_get_index, nullptr, "The slot's index in this interpreter's slot table.", nullptr},
    {"name", slot_get_name, nullptr, "The slot's unique name.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyMemberDef slot_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SlotObject, weakrefs), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyType_Slot slot_slots[] = {
    {Py_tp_new, reinterpret_cast<void *>(slot_new)},
    {Py_tp_dealloc, reinterpret_cast<void *>(slot_dealloc)},
    {Py_tp_finalize, reinterpret_cast<void *>(slot_finalize)},
    {Py_tp_traverse, reinterpret_cast<void *>(slot_traverse)},
    {Py_tp_repr, reinterpret_cast<void *>(slot_repr)},
    {Py_tp_methods, slot_methods},
    {Py_tp_getset, slot_getset},
    {Py_tp_members, slot_members},
    {Py_mp_subscript, reinterpret_cast<void *>(slot_getitem)},
    {Py_mp_ass_subscript, reinterpret_cast<void *>(slot_setitem)},
    {Py_mp_length, reinterpret_cast<void *>(slot_len)},
    {Py_sq_contains, reinterpret_cast<void *>(slot_contains)},
    {Py_tp_iter, reinterpret_cast<void *>(slot_iter)},
    {Py_tp_doc, const_cast<char *>("Slot(name, *, on_free=None)\n--\n\n"
                                   "A named per-code-object slot holding Python objects.")},
    {0, nullptr}};

} // namespace

PyType_Spec slot_spec = {"coextra.Slot", sizeof(SlotObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, slot_slots};

coextra_slot slot_handle(PyObject *obj, ModuleState *st) {
    if (!PyObject_TypeCheck(obj, reinterpret_cast<PyTypeObject *>(st->slot_type))) {
        PyErr_Format(PyExc_TypeError, "expected a coextra.Slot, got %.200s", Py_TYPE(obj)->tp_name);
        return coextra_slot{0, 0};
    }
    SlotObject *s = as_slot(obj);
    if (check_live(s) < 0)
        return coextra_slot{0, 0};
    return s->handle;
}

} // namespace coextra::py
