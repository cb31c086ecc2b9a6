/* native_hooks.c: native hooks for the chain tests, built only against include/coextra/coextra.h. */
#include <coextra/coextra.h>

#include "test_module.h"

#include <string.h>

/* What a hook does with the frame it gets. */
enum mode {
    MODE_PASS,        /* count, delegate */
    MODE_LOG,         /* append (name, "enter"/"exit", co_name, is_resume, throwflag, code) to a list, delegate */
    MODE_MEMO,        /* frames of code `arg` are finished with coextra_frame_return(42) */
    MODE_RETURN,      /* every frame: coextra_frame_return(None) (SystemError on resumptions) */
    MODE_DOUBLE_NEXT, /* delegate twice (the second must fail) */
    MODE_NO_CONSUME,  /* return None without delegating (the dispatcher must dispose) */
    MODE_FRAME_OBJ,   /* materialise the frame object, append (f_code is code, f_lineno) to list `arg` */
    MODE_RAISE,       /* return NULL with RuntimeError("native raise") without delegating */
    MODE_REMOVE_SELF, /* remove this hook's own handle on its first frame, then delegate */
    MODE_KEEP_FRAME,  /* append the frame object itself to list `arg` (it outlives the frame), delegate */
    MODE_FUNCTION,    /* append (coextra_frame_function or None, coextra_frame_globals) to list `arg`, delegate */
    MODE_NEXT_TWICE,  /* delegate, drop the result or error, delegate again and return that */
};

typedef struct hook_ctx {
    coextra_hook *handle;
    char name[64];
    enum mode mode;
    long count;
    PyObject *arg;  /* strong */
    PyObject *code; /* strong or NULL: the mode applies only to frames of this code object; others delegate */
    int self_removed; /* MODE_REMOVE_SELF did its removal */
} hook_ctx;

static PyObject *append_log(hook_ctx *c, const char *what, coextra_frame *f, int throwflag) {
    PyCodeObject *code = coextra_frame_code(f);
    PyObject *t = Py_BuildValue("(ssOiiO)", c->name, what, code->co_name, coextra_frame_is_resume(f), throwflag,
                                (PyObject *)code);
    if (t == NULL)
        return NULL;
    if (PyList_Append(c->arg, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(t);
    return Py_None;
}

/* set_table_delegation(on): every hook of this module delegates through the
 * table (api->eval_next), as a consumer built against ABI 1.0/1.1 does,
 * instead of the inline coextra_eval_next (direct evaluator, direct hops). */
static int g_table_delegation = 0;

static PyObject *next_of(coextra_frame *f, int throwflag) {
    return g_table_delegation ? coextra_api_ptr_->eval_next(f, throwflag) : coextra_eval_next(f, throwflag);
}

static PyObject *set_table_delegation(PyObject *m, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    (void)m;
    if (on < 0)
        return NULL;
    g_table_delegation = on;
    Py_RETURN_NONE;
}

static PyObject *hook_eval(coextra_frame *f, int throwflag, void *ctx_) {
    hook_ctx *c = (hook_ctx *)ctx_;
    PyObject *r, *r2;
    c->count++;
    if (c->code != NULL && (PyObject *)coextra_frame_code(f) != c->code)
        return next_of(f, throwflag);
    switch (c->mode) {
    case MODE_LOG: {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (append_log(c, "enter", f, throwflag) == NULL)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        r = next_of(f, throwflag);
        PyErr_Fetch(&et, &ev, &tb);
        if (append_log(c, "exit", f, throwflag) == NULL)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return r;
    }
    case MODE_MEMO:
        if ((PyObject *)coextra_frame_code(f) == c->arg)
            return coextra_frame_return(f, PyLong_FromLong(42));
        return next_of(f, throwflag);
    case MODE_RETURN:
        Py_INCREF(Py_None);
        return coextra_frame_return(f, Py_None);
    case MODE_DOUBLE_NEXT:
        r = next_of(f, throwflag);
        if (r == NULL)
            return NULL;
        r2 = next_of(f, throwflag);
        if (r2 != NULL) {
            Py_DECREF(r);
            return r2; /* must not happen: the test checks the SystemError */
        }
        /* Report the refusal through the result: keep the SystemError. */
        Py_DECREF(r);
        return NULL;
    case MODE_NO_CONSUME:
        Py_RETURN_NONE;
    case MODE_FRAME_OBJ: {
        PyFrameObject *fo = coextra_frame_object(f);
        if (fo == NULL) {
            PyErr_Clear();
        } else {
            PyCodeObject *fc = PyFrame_GetCode(fo);
            PyObject *t = Py_BuildValue("(Oi)", (PyObject *)fc == (PyObject *)coextra_frame_code(f) ? Py_True : Py_False,
                                        PyFrame_GetLineNumber(fo));
            Py_DECREF(fc);
            if (t == NULL || PyList_Append(c->arg, t) < 0)
                PyErr_Clear();
            Py_XDECREF(t);
        }
        return next_of(f, throwflag);
    }
    case MODE_RAISE:
        PyErr_SetString(PyExc_RuntimeError, "native raise");
        return NULL;
    case MODE_REMOVE_SELF:
        if (!c->self_removed) {
            c->self_removed = 1;
            if (coextra_hook_remove(c->handle) < 0)
                return NULL;
        }
        return next_of(f, throwflag);
    case MODE_KEEP_FRAME: {
        PyFrameObject *fo = coextra_frame_object(f);
        if (fo == NULL || PyList_Append(c->arg, (PyObject *)fo) < 0)
            PyErr_Clear();
        return next_of(f, throwflag);
    }
    case MODE_FUNCTION: {
        PyObject *fn = coextra_frame_function(f);
        PyObject *t = Py_BuildValue("(OO)", fn ? fn : Py_None, coextra_frame_globals(f));
        if (t == NULL || PyList_Append(c->arg, t) < 0)
            PyErr_Clear();
        Py_XDECREF(t);
        return next_of(f, throwflag);
    }
    case MODE_NEXT_TWICE:
        r = next_of(f, throwflag);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        return next_of(f, throwflag);
    case MODE_PASS:
    default:
        return next_of(f, throwflag);
    }
}

static const char *mode_names[] = {"pass",  "log",         "memo",       "return",   "double_next",
                                   "no_consume", "frame_object", "raise", "remove_self", "keep_frame",
                                   "function",   "next_twice", NULL};

/* add(name, priority, mode, arg=None, only=(0, 0), code=None) -> handle (int) */
static PyObject *add(PyObject *m, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "priority", "mode", "arg", "only", "code", NULL};
    PyObject *name_obj, *arg = Py_None, *code = Py_None;
    const char *mode_name, *name = NULL;
    int priority, i;
    unsigned int only_index = 0, only_gen = 0;
    hook_ctx *c;
    coextra_hook_def def;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Ois|O(II)O", kwlist, &name_obj, &priority, &mode_name, &arg,
                                     &only_index, &only_gen, &code))
        return NULL;
    if (code != Py_None && !PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "code must be a code object or None");
        return NULL;
    }
    if (name_obj != Py_None && !(name = PyUnicode_AsUTF8(name_obj)))
        return NULL;
    c = (hook_ctx *)PyMem_RawCalloc(1, sizeof(hook_ctx));
    if (c == NULL)
        return PyErr_NoMemory();
    c->mode = (enum mode)-1;
    for (i = 0; mode_names[i]; i++)
        if (strcmp(mode_names[i], mode_name) == 0)
            c->mode = (enum mode)i;
    if ((int)c->mode < 0) {
        PyMem_RawFree(c);
        PyErr_Format(PyExc_ValueError, "unknown mode '%s'", mode_name);
        return NULL;
    }
    if (name)
        strncpy(c->name, name, sizeof(c->name) - 1);
    Py_INCREF(arg);
    c->arg = arg;
    if (code != Py_None) {
        Py_INCREF(code);
        c->code = code;
    }
    def.name = name;
    def.priority = priority;
    def.eval = hook_eval;
    def.ctx = c;
    def.only.index = only_index;
    def.only.generation = only_gen;
    if (coextra_hook_add(&def, &c->handle) < 0) {
        Py_DECREF(c->arg);
        Py_XDECREF(c->code);
        PyMem_RawFree(c);
        return NULL;
    }
    return PyLong_FromVoidPtr(c);
}

/* A native observer (ABI 1.3): appends (name, "enter"/"exit", co_name) to the list arg. */
static void observe(hook_ctx *c, const char *what, PyCodeObject *code) {
    PyObject *t;
    c->count++;
    t = Py_BuildValue("(ssO)", c->name, what, code->co_name);
    if (t == NULL || PyList_Append(c->arg, t) < 0)
        PyErr_Clear(); /* an observer must not raise */
    Py_XDECREF(t);
}
static void observe_enter(PyCodeObject *code, void *ctx) { observe((hook_ctx *)ctx, "enter", code); }
static void observe_exit(PyCodeObject *code, void *ctx) { observe((hook_ctx *)ctx, "exit", code); }
/* An observer that raises: the runtime must report it and keep the frame running. */
static void observe_raise(PyCodeObject *code, void *ctx) {
    (void)code;
    ((hook_ctx *)ctx)->count++;
    PyErr_SetString(PyExc_RuntimeError, "native observer raise");
}

/* add_observer(name, priority, log, only=(0, 0), raise_=False) -> handle (int) */
static PyObject *add_observer(PyObject *m, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "priority", "log", "only", "raise_", NULL};
    const char *name;
    int priority, raise_ = 0;
    PyObject *log;
    unsigned int only_index = 0, only_gen = 0;
    hook_ctx *c;
    coextra_observer_def def;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "siO!|(II)p", kwlist, &name, &priority, &PyList_Type, &log,
                                     &only_index, &only_gen, &raise_))
        return NULL;
    c = (hook_ctx *)PyMem_RawCalloc(1, sizeof(hook_ctx));
    if (c == NULL)
        return PyErr_NoMemory();
    c->mode = MODE_LOG;
    strncpy(c->name, name, sizeof(c->name) - 1);
    Py_INCREF(log);
    c->arg = log;
    def.name = name;
    def.priority = priority;
    def.on_enter = raise_ ? observe_raise : observe_enter;
    def.on_exit = observe_exit;
    def.ctx = c;
    def.only.index = only_index;
    def.only.generation = only_gen;
    if (coextra_observer_add(&def, &c->handle) < 0) {
        Py_DECREF(c->arg);
        PyMem_RawFree(c);
        return NULL;
    }
    return PyLong_FromVoidPtr(c);
}

static hook_ctx *ctx_of(PyObject *h) {
    hook_ctx *c = (hook_ctx *)PyLong_AsVoidPtr(h);
    if (c == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "null hook");
    return c;
}

/* remove(h): the ctx is kept (never freed) so that double removal is testable. */
static PyObject *remove_hook(PyObject *m, PyObject *h) {
    hook_ctx *c = ctx_of(h);
    (void)m;
    if (c == NULL || coextra_hook_remove(c->handle) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *set_active(PyObject *m, PyObject *args) {
    PyObject *h;
    int active;
    hook_ctx *c;
    (void)m;
    if (!PyArg_ParseTuple(args, "Op", &h, &active) || !(c = ctx_of(h)))
        return NULL;
    if (coextra_hook_set_active(c->handle, active) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *is_monitored(PyObject *m, PyObject *h) {
    hook_ctx *c = ctx_of(h);
    int r;
    (void)m;
    if (c == NULL || (r = coextra_hook_is_monitored(c->handle)) < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *count(PyObject *m, PyObject *h) {
    hook_ctx *c = ctx_of(h);
    (void)m;
    return c ? PyLong_FromLong(c->count) : NULL;
}

/* remove_raw(address): hand the runtime an arbitrary handle value. */
static PyObject *remove_raw(PyObject *m, PyObject *addr) {
    void *p = PyLong_AsVoidPtr(addr);
    (void)m;
    if (p == NULL && PyErr_Occurred())
        return NULL;
    if (coextra_hook_remove((coextra_hook *)p) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* raw_handle(handle): the coextra_hook* the runtime gave this hook, as an int. */
static PyObject *raw_handle(PyObject *m, PyObject *handle) {
    hook_ctx *c = (hook_ctx *)PyLong_AsVoidPtr(handle);
    (void)m;
    if (c == NULL)
        return NULL;
    return PyLong_FromVoidPtr(c->handle);
}

/* A native slot for `only` tests.  Values are a non-NULL marker (no free function needed). */
static int parse_slot(PyObject *o, coextra_slot *s) {
    unsigned int index, generation;
    if (!PyArg_ParseTuple(o, "II", &index, &generation))
        return -1;
    s->index = index;
    s->generation = generation;
    return 0;
}

static char g_marker;

/* reserve_slot(name) -> (index, generation) */
static PyObject *reserve_slot(PyObject *m, PyObject *args) {
    const char *name;
    coextra_slot s;
    (void)m;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (coextra_slot_reserve(name, NULL, NULL, &s) < 0)
        return NULL;
    return Py_BuildValue("(II)", s.index, s.generation);
}

/* mark(code, slot): store the marker in `slot` for `code` */
static PyObject *mark(PyObject *m, PyObject *args) {
    PyObject *code, *slot;
    coextra_slot s;
    (void)m;
    if (!PyArg_ParseTuple(args, "OO", &code, &slot) || parse_slot(slot, &s) < 0)
        return NULL;
    if (coextra_slot_set(code, s, &g_marker) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* unmark(code, slot) */
static PyObject *unmark(PyObject *m, PyObject *args) {
    PyObject *code, *slot;
    coextra_slot s;
    (void)m;
    if (!PyArg_ParseTuple(args, "OO", &code, &slot) || parse_slot(slot, &s) < 0)
        return NULL;
    if (coextra_slot_clear(code, s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* release_slot(slot) */
static PyObject *release_slot(PyObject *m, PyObject *slot) {
    coextra_slot s;
    (void)m;
    if (parse_slot(slot, &s) < 0 || coextra_slot_release(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* is_removed(h): the hook removed itself (mode remove_self) */
static PyObject *is_removed(PyObject *m, PyObject *h) {
    hook_ctx *c = ctx_of(h);
    (void)m;
    return c ? PyBool_FromLong(c->self_removed) : NULL;
}

static PyObject *eval_frame_func(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromVoidPtr((void *)_PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()));
}

static PyObject *default_eval_func(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromVoidPtr((void *)_PyEval_EvalFrameDefault);
}

static PyMethodDef methods[] = {
    {"add", (PyCFunction)(void (*)(void))add, METH_VARARGS | METH_KEYWORDS,
     "add(name, priority, mode, arg=None, only=(index, generation)) -> handle"},
    {"add_observer", (PyCFunction)(void (*)(void))add_observer, METH_VARARGS | METH_KEYWORDS,
     "add_observer(name, priority, log, only=(0, 0), raise_=False) -> handle: a native observer logging to log"},
    {"is_monitored", is_monitored, METH_O, "is_monitored(handle): runs on sys.monitoring"},
    {"remove", remove_hook, METH_O, "remove(handle)"},
    {"remove_raw", remove_raw, METH_O, "remove_raw(address): pass any pointer as a hook handle"},
    {"raw_handle", raw_handle, METH_O, "raw_handle(handle) -> the coextra_hook* value"},
    {"set_active", set_active, METH_VARARGS, "set_active(handle, flag)"},
    {"count", count, METH_O, "count(handle) -> frames seen"},
    {"reserve_slot", reserve_slot, METH_VARARGS, "reserve_slot(name) -> (index, generation)"},
    {"set_table_delegation", set_table_delegation, METH_O, "set_table_delegation(on): delegate as an ABI 1.1 consumer"},
    {"mark", mark, METH_VARARGS, "mark(code, slot): give code a value in slot"},
    {"unmark", unmark, METH_VARARGS, "unmark(code, slot)"},
    {"release_slot", release_slot, METH_O, "release_slot(slot)"},
    {"is_removed", is_removed, METH_O, "is_removed(handle): the hook removed itself"},
    {"eval_frame_func", eval_frame_func, METH_NOARGS, "address of the interpreter's eval-frame function"},
    {"default_eval_func", default_eval_func, METH_NOARGS, "address of _PyEval_EvalFrameDefault"},
    {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *m) {
    (void)m;
    return coextra_import();
}

COEXTRA_TEST_MODULE(coextra_test_native, methods, exec_module, NULL)
