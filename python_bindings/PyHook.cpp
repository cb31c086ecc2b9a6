// PyHook.cpp: coextra.add_hook() and coextra.Hook: Python callbacks on frame entry and exit.
#include "bindings.hpp"
#include "frame_compat.h"

#include <cstring>

namespace coextra::py {

struct HookObject {
    PyObject_HEAD
    const coextra_api *api;
    coextra_hook *handle; // NULL once removed
    PyObject *name;
    int priority;
    PyObject *on_enter; // may be NULL
    PyObject *on_exit;  // may be NULL
    PyObject *only;     // the Slot, or NULL
    Py_ssize_t recursion_errors; // callback calls that hit the recursion limit (not reported)
};

namespace {

HookObject *as_hook(PyObject *o) { return reinterpret_cast<HookObject *>(o); }

// Frames created by a Python hook's own callback are not passed to that
// hook (otherwise a callback that calls any Python function would recurse
// forever).  The callbacks that are running on this OS thread form a stack of
// nodes on the C stack.  A thread that switches interpreters keeps its list:
// nodes name Hook objects, which never match another interpreter's hooks.
struct BusyNode {
    HookObject *hook;
    BusyNode *next;
};
thread_local BusyNode *tls_busy = nullptr;

bool is_busy(HookObject *h) {
    for (BusyNode *n = tls_busy; n != nullptr; n = n->next)
        if (n->hook == h)
            return true;
    return false;
}

// Call one callback with the code object; an exception goes to
// sys.unraisablehook and the frame runs normally.  Any exception already
// pending (gen.throw() sets it before the frame is evaluated) is preserved.
//
// The callback runs hidden from sys.settrace/setprofile/sys.monitoring, as a
// trace function itself does: an observer must not add events to the traces
// of debuggers, profilers and coverage tools (CPython's test_sys_settrace
// notices otherwise).
//
// Signals: the callback is the first Python code to run when the frame
// starts or resumes, so a pending SIGINT is handled inside it.  Its
// KeyboardInterrupt is not the callback's error: instead of reporting it as
// unraisable (which would swallow Ctrl-C), the interrupt is re-armed with
// PyErr_SetInterrupt() so that it is raised at the frame's own first check,
// where it would have been raised without the hook (CPython's
// test_generators SignalAndYieldFromTest relies on exactly that).
//
// Recursion: a callback called for a frame near the recursion limit runs one
// level deeper than that frame, and hits the limit first.  That
// RecursionError is not the tool's bug: it is counted in
// Hook.recursion_errors, not reported, and the frame runs (or raises its own
// RecursionError) exactly as without the hook.  Reporting it made CPython
// 3.13's test_traceback test_recursive_traceback differ from a raw PEP 523
// hook.
void call_guarded(HookObject *h, PyObject *fn, PyObject *code) {
    PyThreadState *tstate = PyThreadState_Get();
    BusyNode node{h, tls_busy};
    tls_busy = &node;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    coextra_fc_enter_tracing(tstate);
    PyObject *r = PyObject_CallOneArg(fn, code);
    coextra_fc_leave_tracing(tstate);
    if (r == nullptr) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            PyErr_Clear();
            PyErr_SetInterrupt();
        } else if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear();
            h->recursion_errors++;
        } else {
            PyErr_WriteUnraisable(fn);
        }
    }
    Py_XDECREF(r);
    PyErr_Restore(et, ev, tb);
    tls_busy = node.next;
}

PyObject *py_hook_eval(coextra_frame *frame, int throwflag, void *ctx) {
    HookObject *h = static_cast<HookObject *>(ctx);
    const coextra_api *api = h->api;
    if (is_busy(h))
        return api->eval_next(frame, throwflag);
    PyObject *code = reinterpret_cast<PyObject *>(api->frame_code(frame));
    // 3.12+: the evaluator releases the frame (and its code reference) before
    // returning, so keep our own references across the evaluation.
    Py_INCREF(code);
    Py_INCREF(h);
    if (h->on_enter != nullptr)
        call_guarded(h, h->on_enter, code);
    PyObject *r = api->eval_next(frame, throwflag);
    if (h->on_exit != nullptr)
        call_guarded(h, h->on_exit, code);
    Py_DECREF(h);
    Py_DECREF(code);
    return r;
}

// The same callbacks as observers on sys.monitoring (3.12+, with `only`):
// CPython calls them from inside the frame, after its RESUME, with tracing
// already off for the thread.
void py_observe_enter(PyCodeObject *code, void *ctx) {
    HookObject *h = static_cast<HookObject *>(ctx);
    if (h->on_enter != nullptr && !is_busy(h))
        call_guarded(h, h->on_enter, reinterpret_cast<PyObject *>(code));
}

void py_observe_exit(PyCodeObject *code, void *ctx) {
    HookObject *h = static_cast<HookObject *>(ctx);
    if (h->on_exit != nullptr && !is_busy(h))
        call_guarded(h, h->on_exit, reinterpret_cast<PyObject *>(code));
}

int check_callable(PyObject *o, const char *what) {
    if (o == Py_None || PyCallable_Check(o))
        return 0;
    PyErr_Format(PyExc_TypeError, "coextra.add_hook: %s must be callable or None", what);
    return -1;
}

int do_remove(HookObject *h, ModuleState *st) {
    if (h->handle == nullptr) {
        PyErr_Format(st->released_error, "coextra: hook %R was already removed", h->name);
        return -1;
    }
    if (h->api->hook_remove(h->handle) < 0)
        return -1;
    h->handle = nullptr;
    // Drop the registry's strong reference (may deallocate h: do it last).
    Py_ssize_t n = PyList_GET_SIZE(st->hooks);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(st->hooks, i) == reinterpret_cast<PyObject *>(h))
            return PySequence_DelItem(st->hooks, i);
    }
    return 0;
}

PyObject *hook_remove_method(PyObject *self, PyObject *) {
    ModuleState *st = state_from_type(Py_TYPE(self));
    if (st == nullptr)
        return nullptr;
    Py_INCREF(self);
    int r = do_remove(as_hook(self), st);
    Py_DECREF(self);
    if (r < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyObject *hook_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *hook_exit(PyObject *self, PyObject *) {
    if (as_hook(self)->handle != nullptr) {
        PyObject *r = hook_remove_method(self, nullptr);
        if (r == nullptr)
            return nullptr;
        Py_DECREF(r);
    }
    Py_RETURN_FALSE;
}

PyObject *hook_get_active(PyObject *self, void *) {
    HookObject *h = as_hook(self);
    if (h->handle == nullptr)
        Py_RETURN_FALSE;
    int a = h->api->hook_get_active(h->handle);
    return a < 0 ? nullptr : PyBool_FromLong(a);
}

int hook_set_active(PyObject *self, PyObject *value, void *) {
    HookObject *h = as_hook(self);
    if (value == nullptr) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete Hook.active");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    if (h->handle == nullptr) {
        ModuleState *st = state_from_type(Py_TYPE(self));
        PyErr_Format(st ? st->released_error : PyExc_RuntimeError, "coextra: hook %R was removed", h->name);
        return -1;
    }
    return h->api->hook_set_active(h->handle, truth);
}

PyObject *hook_get_name(PyObject *self, void *) {
    Py_INCREF(as_hook(self)->name);
    return as_hook(self)->name;
}
PyObject *hook_get_priority(PyObject *self, void *) { return PyLong_FromLong(as_hook(self)->priority); }
PyObject *hook_get_recursion_errors(PyObject *self, void *) {
    return PyLong_FromSsize_t(as_hook(self)->recursion_errors);
}
PyObject *hook_get_removed(PyObject *self, void *) { return PyBool_FromLong(as_hook(self)->handle == nullptr); }
PyObject *hook_get_monitored(PyObject *self, void *) {
    HookObject *h = as_hook(self);
    if (h->handle == nullptr)
        Py_RETURN_FALSE;
    int m = h->api->hook_is_monitored(h->handle);
    return m < 0 ? nullptr : PyBool_FromLong(m);
}

PyObject *hook_repr(PyObject *self) {
    HookObject *h = as_hook(self);
    return PyUnicode_FromFormat("<coextra.Hook %R priority=%d%s>", h->name, h->priority,
                                h->handle ? "" : " removed");
}

int hook_traverse(PyObject *self, visitproc visit, void *arg) {
    HookObject *h = as_hook(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(h->on_enter);
    Py_VISIT(h->on_exit);
    Py_VISIT(h->only);
    return 0;
}

int hook_clear(PyObject *self) {
    HookObject *h = as_hook(self);
    Py_CLEAR(h->on_enter);
    Py_CLEAR(h->on_exit);
    Py_CLEAR(h->only);
    return 0;
}

void hook_dealloc(PyObject *self) {
    // Only reached once removed: while registered the module's hook list holds it.
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    HookObject *h = as_hook(self);
    if (h->handle != nullptr) {
        SavedError saved;
        if (h->api->hook_remove(h->handle) < 0)
            PyErr_Clear();
        h->handle = nullptr;
    }
    hook_clear(self);
    Py_CLEAR(h->name);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyMethodDef hook_methods[] = {
    {"remove", hook_remove_method, METH_NOARGS, "Remove the hook (frames already in flight finish)."},
    {"__enter__", hook_enter, METH_NOARGS, nullptr},
    {"__exit__", hook_exit, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef hook_getset[] = {
    {"active", hook_get_active, hook_set_active, "Whether the hook runs (settable).", nullptr},
    {"name", hook_get_name, nullptr, "The hook's unique name.", nullptr},
    {"priority", hook_get_priority, nullptr, "Lower = outer.", nullptr},
    {"removed", hook_get_removed, nullptr, "True once removed.", nullptr},
    {"recursion_errors", hook_get_recursion_errors, nullptr,
     "How many callback calls hit the recursion limit (a RecursionError not reported: the frame runs on).",
     nullptr},
    {"monitored", hook_get_monitored, nullptr,
     "True while the hook runs on sys.monitoring events (3.12+, with `only`) rather than in the eval-frame chain.",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

// Hooks are made by coextra.add_hook() only.  Without a tp_new of its own the
// type would inherit object's, and `coextra.Hook()` would make a zero-filled
// hook whose `.name` dereferenced NULL.
PyObject *hook_new(PyTypeObject *, PyObject *, PyObject *) {
    PyErr_SetString(PyExc_TypeError, "cannot create 'coextra.Hook' instances: use coextra.add_hook()");
    return nullptr;
}

PyType_Slot hook_slots[] = {
    {Py_tp_new, reinterpret_cast<void *>(hook_new)},
    {Py_tp_dealloc, reinterpret_cast<void *>(hook_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void *>(hook_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(hook_clear)},
    {Py_tp_repr, reinterpret_cast<void *>(hook_repr)},
    {Py_tp_methods, hook_methods},
    {Py_tp_getset, hook_getset},
    {Py_tp_doc, const_cast<char *>("A Python-level eval-frame hook; made by coextra.add_hook().")},
    {0, nullptr}};

} // namespace

PyType_Spec hook_spec = {"coextra.Hook", sizeof(HookObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, hook_slots};

PyObject *add_hook(PyObject *module, PyObject *args, PyObject *kwargs) {
    static const char *kwlist[] = {"name", "on_enter", "on_exit", "priority", "only", nullptr};
    PyObject *name, *on_enter = Py_None, *on_exit = Py_None, *only = Py_None;
    int priority = COEXTRA_PRIORITY_DEFAULT;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|$OOiO:add_hook", const_cast<char **>(kwlist), &name,
                                     &on_enter, &on_exit, &priority, &only))
        return nullptr;
    ModuleState *st = state_of(module);
    if (st == nullptr || check_callable(on_enter, "on_enter") < 0 || check_callable(on_exit, "on_exit") < 0)
        return nullptr;
    Py_ssize_t nbytes;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &nbytes);
    if (cname == nullptr)
        return nullptr;
    if (static_cast<size_t>(nbytes) != std::strlen(cname)) {
        PyErr_SetString(PyExc_ValueError, "coextra.add_hook: name contains a NUL character");
        return nullptr;
    }
    // An observer: on sys.monitoring where the runtime can (3.12+, `only`),
    // else in the chain through py_hook_eval.
    coextra_observer_def def{cname, priority, py_observe_enter, py_observe_exit, nullptr, coextra_slot{0, 0}};
    if (only != Py_None) {
        def.only = slot_handle(only, st);
        if (def.only.generation == 0)
            return nullptr;
    }
    auto *tp = reinterpret_cast<PyTypeObject *>(st->hook_type);
    HookObject *h = as_hook(tp->tp_alloc(tp, 0));
    if (h == nullptr)
        return nullptr;
    h->api = st->api;
    h->handle = nullptr;
    Py_INCREF(name);
    h->name = name;
    h->priority = priority;
    h->recursion_errors = 0;
    h->on_enter = on_enter == Py_None ? nullptr : (Py_INCREF(on_enter), on_enter);
    h->on_exit = on_exit == Py_None ? nullptr : (Py_INCREF(on_exit), on_exit);
    h->only = only == Py_None ? nullptr : (Py_INCREF(only), only);
    def.ctx = h;
    // The list entry first, so that a failure leaves nothing registered.
    if (PyList_Append(st->hooks, reinterpret_cast<PyObject *>(h)) < 0) {
        Py_DECREF(h);
        return nullptr;
    }
    if (st->api->observer_add_ex(&def, py_hook_eval, COEXTRA_FLAG_PYTHON, &h->handle) < 0) {
        {
            SavedError saved; // observer_add_ex's error, across dropping the list entry
            Py_ssize_t n = PyList_GET_SIZE(st->hooks);
            if (n > 0 && PyList_GET_ITEM(st->hooks, n - 1) == reinterpret_cast<PyObject *>(h))
                PySequence_DelItem(st->hooks, n - 1);
        }
        Py_DECREF(h);
        return nullptr;
    }
    return reinterpret_cast<PyObject *>(h);
}

// Module teardown: every Python hook of this interpreter goes.
int remove_all_hooks(ModuleState *st) {
    if (st->hooks == nullptr)
        return 0;
    while (PyList_GET_SIZE(st->hooks) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(st->hooks) - 1;
        PyObject *o = PyList_GET_ITEM(st->hooks, last);
        Py_INCREF(o);
        HookObject *h = as_hook(o);
        if (h->handle != nullptr && h->api->hook_remove(h->handle) < 0)
            PyErr_Clear();
        h->handle = nullptr;
        PySequence_DelItem(st->hooks, last);
        Py_DECREF(o);
    }
    return 0;
}

} // namespace coextra::py
