/* native_hooks.c: native hooks for the chain tests, built only against include/coextra/coextra.h. */
#include <coextra/coextra.h>

#include "test_module.h"
#include "test_consumer.h"

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

static int append_log(hook_ctx *c, const char *what, coextra_frame *f, int throwflag) {
    PyCodeObject *code = coextra_frame_code(f);
    return coextra_test_append_new(c->arg, Py_BuildValue("(ssOiiO)", c->name, what, code->co_name,
                                                         coextra_frame_is_resume(f), throwflag, (PyObject *)code));
}

/* set_table_delegation(on): every hook of this module delegates through the
 * table (api->eval_next), as a consumer built against ABI 1.0/1.1 does,
 * instead of the inline coextra_eval_next (direct evaluator, direct hops). */
static int g_table_delegation = 0;

static PyObject *next_of(coextra_frame *f, int throwflag) {
    return g_table_delegation ? coextra_api_ptr_->eval_next(f, throwflag) : coextra_eval_next(f, throwflag);
}

static PyObject *set_table_delegation(PyObject *Py_UNUSED(m), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
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
        if (append_log(c, "enter", f, throwflag) < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        r = next_of(f, throwflag);
        PyErr_Fetch(&et, &ev, &tb);
        if (append_log(c, "exit", f, throwflag) < 0)
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
            if (coextra_test_append_new(c->arg, t) < 0)
                PyErr_Clear();
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
        if (coextra_test_append_new(c->arg, Py_BuildValue("(OO)", fn ? fn : Py_None, coextra_frame_globals(f))) < 0)
            PyErr_Clear();
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

/* A new context of size bytes (a hook_ctx first) named name (NULL: none),
 * holding arg and, unless None, code: NULL with MemoryError. */
static hook_ctx *new_ctx(size_t size, const char *name, PyObject *arg, PyObject *code) {
    hook_ctx *c = (hook_ctx *)PyMem_RawCalloc(1, size);
    if (c == NULL) {
        PyErr_NoMemory();
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
    return c;
}

/* Frees a context that never reached the runtime (its add failed). */
static void free_ctx(hook_ctx *c) {
    Py_DECREF(c->arg);
    Py_XDECREF(c->code);
    PyMem_RawFree(c);
}

/* 0 if code is a code object or None; -1 with TypeError otherwise. */
static int check_code_or_none(PyObject *code) {
    if (code == Py_None || PyCode_Check(code))
        return 0;
    PyErr_SetString(PyExc_TypeError, "code must be a code object or None");
    return -1;
}

static const char *mode_names[] = {"pass",  "log",         "memo",       "return",   "double_next",
                                   "no_consume", "frame_object", "raise", "remove_self", "keep_frame",
                                   "function",   "next_twice", NULL};

/* add(name, priority, mode, arg=None, only=(0, 0), code=None) -> handle (int) */
static PyObject *add(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "priority", "mode", "arg", "only", "code", NULL};
    PyObject *name_obj, *arg = Py_None, *code = Py_None;
    const char *mode_name, *name = NULL;
    int priority, mode = -1, i;
    unsigned int only_index = 0, only_gen = 0;
    hook_ctx *c;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Ois|O(II)O", kwlist, &name_obj, &priority, &mode_name, &arg,
                                     &only_index, &only_gen, &code) ||
        check_code_or_none(code) < 0)
        return NULL;
    if (name_obj != Py_None && !(name = PyUnicode_AsUTF8(name_obj)))
        return NULL;
    for (i = 0; mode_names[i]; i++)
        if (strcmp(mode_names[i], mode_name) == 0)
            mode = i;
    if (mode < 0)
        return PyErr_Format(PyExc_ValueError, "unknown mode '%s'", mode_name);
    if (!(c = new_ctx(sizeof(hook_ctx), name, arg, code)))
        return NULL;
    c->mode = (enum mode)mode;
    coextra_hook_def def = {.name = name, .priority = priority, .eval = hook_eval, .ctx = c,
                            .only = {only_index, only_gen}};
    if (coextra_hook_add(&def, &c->handle) < 0) {
        free_ctx(c);
        return NULL;
    }
    return PyLong_FromVoidPtr(c);
}

/* A native observer (ABI 1.3): appends (name, "enter"/"exit", co_name) to the list arg. */
static void observe(hook_ctx *c, const char *what, PyCodeObject *code) {
    c->count++;
    if (coextra_test_append_new(c->arg, Py_BuildValue("(ssO)", c->name, what, code->co_name)) < 0)
        PyErr_Clear(); /* an observer must not raise */
}
static void observe_enter(PyCodeObject *code, void *ctx) { observe((hook_ctx *)ctx, "enter", code); }
static void observe_exit(PyCodeObject *code, void *ctx) { observe((hook_ctx *)ctx, "exit", code); }
/* An observer that raises: the runtime must report it and keep the frame running. */
static void observe_raise(PyCodeObject *Py_UNUSED(code), void *ctx) {
    ((hook_ctx *)ctx)->count++;
    PyErr_SetString(PyExc_RuntimeError, "native observer raise");
}

/* add_observer(name, priority, log, only=(0, 0), raise_=False) -> handle (int) */
static PyObject *add_observer(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "priority", "log", "only", "raise_", NULL};
    const char *name;
    int priority, raise_ = 0;
    PyObject *log;
    unsigned int only_index = 0, only_gen = 0;
    hook_ctx *c;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "siO!|(II)p", kwlist, &name, &priority, &PyList_Type, &log,
                                     &only_index, &only_gen, &raise_) ||
        !(c = new_ctx(sizeof(hook_ctx), name, log, Py_None)))
        return NULL;
    c->mode = MODE_LOG;
    coextra_observer_def def = {.name = name, .priority = priority,
                                .on_enter = raise_ ? observe_raise : observe_enter, .on_exit = observe_exit,
                                .ctx = c, .only = {only_index, only_gen}};
    if (coextra_observer_add(&def, &c->handle) < 0) {
        free_ctx(c);
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
static PyObject *remove_hook(PyObject *Py_UNUSED(m), PyObject *h) {
    hook_ctx *c = ctx_of(h);
    if (c == NULL || coextra_hook_remove(c->handle) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *set_active(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *h;
    int active;
    hook_ctx *c;
    if (!PyArg_ParseTuple(args, "Op", &h, &active) || !(c = ctx_of(h)))
        return NULL;
    return coextra_test_none_unless_failed(coextra_hook_set_active(c->handle, active));
}

static PyObject *is_monitored(PyObject *Py_UNUSED(m), PyObject *h) {
    hook_ctx *c = ctx_of(h);
    int r;
    if (c == NULL || (r = coextra_hook_is_monitored(c->handle)) < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *count(PyObject *Py_UNUSED(m), PyObject *h) {
    hook_ctx *c = ctx_of(h);
    return c ? PyLong_FromLong(c->count) : NULL;
}

/* remove_raw(address): hand the runtime an arbitrary handle value. */
static PyObject *remove_raw(PyObject *Py_UNUSED(m), PyObject *addr) {
    void *p = PyLong_AsVoidPtr(addr);
    if (p == NULL && PyErr_Occurred())
        return NULL;
    return coextra_test_none_unless_failed(coextra_hook_remove((coextra_hook *)p));
}

/* raw_handle(handle): the coextra_hook* the runtime gave this hook, as an int. */
static PyObject *raw_handle(PyObject *Py_UNUSED(m), PyObject *handle) {
    hook_ctx *c = (hook_ctx *)PyLong_AsVoidPtr(handle);
    if (c == NULL)
        return NULL;
    return PyLong_FromVoidPtr(c->handle);
}

/* A native slot for `only` tests.  Values are a non-NULL marker (no free function needed). */
static char g_marker;

/* reserve_slot(name) -> (index, generation) */
static PyObject *reserve_slot(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    return coextra_test_reserve(name, NULL, NULL);
}

/* (code, (index, generation)) -> *code (borrowed), *s: 0, or -1 with TypeError. */
static int parse_code_slot(PyObject *args, PyObject **code, coextra_slot *s) {
    PyObject *slot;
    if (!PyArg_ParseTuple(args, "OO", code, &slot))
        return -1;
    return coextra_test_parse_slot(slot, s);
}

/* mark(code, slot): store the marker in `slot` for `code` */
static PyObject *mark(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_code_slot(args, &code, &s) < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_set(code, s, &g_marker));
}

/* unmark(code, slot) */
static PyObject *unmark(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_code_slot(args, &code, &s) < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_clear(code, s));
}

/* release_slot(slot) */
static PyObject *release_slot(PyObject *Py_UNUSED(m), PyObject *slot) {
    coextra_slot s;
    if (coextra_test_parse_slot(slot, &s) < 0 || coextra_slot_release(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* is_removed(h): the hook removed itself (mode remove_self) */
static PyObject *is_removed(PyObject *Py_UNUSED(m), PyObject *h) {
    hook_ctx *c = ctx_of(h);
    return c ? PyBool_FromLong(c->self_removed) : NULL;
}

static PyObject *eval_frame_func(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromVoidPtr((void *)_PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()));
}

static PyObject *default_eval_func(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromVoidPtr((void *)_PyEval_EvalFrameDefault);
}

/* ---- ABI 1.4: coextra_frame_arguments and hiding from tracing ----------- */

/* ("ok", result) for a new reference, else ("error", exception type,
 * message) for the exception set (cleared). */
static PyObject *outcome(PyObject *res) {
    PyObject *et, *ev, *tb, *t, *msg;
    if (res != NULL) {
        t = Py_BuildValue("(sO)", "ok", res);
        Py_DECREF(res);
        return t;
    }
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    msg = ev != NULL ? PyObject_Str(ev) : NULL;
    t = msg != NULL ? Py_BuildValue("(sOO)", "error", et, msg) : NULL;
    Py_XDECREF(msg);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
    return t;
}

static void append_outcome(PyObject *log, const char *when, PyObject *res) {
    PyObject *o = outcome(res);
    if (o == NULL || coextra_test_append_new(log, Py_BuildValue("(sO)", when, o)) < 0)
        PyErr_Clear();
    Py_XDECREF(o);
}

typedef struct args_ctx {
    hook_ctx base; /* first: remove() and count() take it as a hook_ctx */
    int frame_object_first;
    PyObject *fn; /* strong or NULL: also log coextra_frame_is_call_of(frame, fn) */
} args_ctx;

/* For frames of base.code (every frame if None): append ("before",
 * outcome of coextra_frame_arguments) to base.arg, delegate, then append
 * ("after", ...) (a finished frame: SystemError).  frame_object_first makes
 * the frame object first (3.13+ then runs MAKE_CELL). */
static PyObject *args_eval(coextra_frame *f, int throwflag, void *ctx_) {
    args_ctx *a = (args_ctx *)ctx_;
    hook_ctx *c = &a->base;
    PyObject *et, *ev, *tb, *r;
    if (c->code != NULL && (PyObject *)coextra_frame_code(f) != c->code)
        return next_of(f, throwflag);
    c->count++;
    PyErr_Fetch(&et, &ev, &tb); /* a throw() sets it before the frame runs */
    if (a->frame_object_first && coextra_frame_object(f) == NULL)
        PyErr_Clear();
    append_outcome(c->arg, "before", coextra_frame_arguments(f));
    if (a->fn != NULL) {
        int is = coextra_frame_is_call_of(f, a->fn);
        append_outcome(c->arg, "is_call_of", is < 0 ? NULL : PyBool_FromLong(is));
    }
    PyErr_Restore(et, ev, tb);
    r = next_of(f, throwflag);
    PyErr_Fetch(&et, &ev, &tb);
    append_outcome(c->arg, "after", coextra_frame_arguments(f));
    PyErr_Restore(et, ev, tb);
    return r;
}

/* add_args_hook(name, log, code=None, frame_object_first=False, fn=None) -> handle */
static PyObject *add_args_hook(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "log", "code", "frame_object_first", "fn", NULL};
    const char *name;
    PyObject *log, *code = Py_None, *fn = Py_None;
    int fo_first = 0;
    args_ctx *a;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sO!|OpO", kwlist, &name, &PyList_Type, &log, &code, &fo_first,
                                     &fn) ||
        check_code_or_none(code) < 0 || !(a = (args_ctx *)new_ctx(sizeof(args_ctx), name, log, code)))
        return NULL;
    a->frame_object_first = fo_first;
    if (fn != Py_None) {
        Py_INCREF(fn);
        a->fn = fn;
    }
    coextra_hook_def def = {.name = name, .priority = COEXTRA_PRIORITY_DEFAULT, .eval = args_eval, .ctx = a};
    if (coextra_hook_add(&def, &a->base.handle) < 0) {
        Py_XDECREF(a->fn);
        free_ctx(&a->base);
        return NULL;
    }
    return PyLong_FromVoidPtr(a);
}

/* frame_arguments_null(): coextra_frame_arguments(NULL) (must raise). */
static PyObject *frame_arguments_null(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return coextra_frame_arguments(NULL);
}

/* call_hidden(fn): fn() hidden from tracing; the thread is shown again even
 * when fn raises. */
static PyObject *call_hidden(PyObject *Py_UNUSED(m), PyObject *fn) {
    PyThreadState *ts = PyThreadState_Get();
    PyObject *r;
    if (coextra_hide_from_tracing(ts) < 0)
        return NULL;
    r = PyObject_CallNoArgs(fn);
    if (coextra_unhide_from_tracing(ts) < 0) {
        Py_XDECREF(r);
        return NULL;
    }
    return r;
}

/* hide_bad(what): "null" hides a NULL tstate, "other" another thread's of
 * this interpreter, "unhide" unhides a thread that is not hidden. */
static PyObject *hide_bad(PyObject *Py_UNUSED(m), PyObject *arg) {
    const char *what = PyUnicode_AsUTF8(arg);
    PyThreadState *ts = PyThreadState_Get(), *other;
    if (what == NULL)
        return NULL;
    if (strcmp(what, "null") == 0)
        return coextra_test_none_unless_failed(coextra_hide_from_tracing(NULL));
    if (strcmp(what, "unhide") == 0)
        return coextra_test_none_unless_failed(coextra_unhide_from_tracing(ts));
    for (other = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(ts)); other != NULL;
         other = PyThreadState_Next(other))
        if (other != ts)
            return coextra_test_none_unless_failed(coextra_hide_from_tracing(other));
    PyErr_SetString(PyExc_LookupError, "no other thread");
    return NULL;
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
    {"add_args_hook", (PyCFunction)(void (*)(void))add_args_hook, METH_VARARGS | METH_KEYWORDS,
     "add_args_hook(name, log, code=None, frame_object_first=False, fn=None) -> handle: logs "
     "coextra_frame_arguments (and coextra_frame_is_call_of(frame, fn))"},
    {"frame_arguments_null", frame_arguments_null, METH_NOARGS, "coextra_frame_arguments(NULL)"},
    {"call_hidden", call_hidden, METH_O, "call_hidden(fn): fn() hidden from tracing"},
    {"hide_bad", hide_bad, METH_O, "hide_bad('null'|'other'|'unhide'): misuse of the tracing switch"},
    {NULL, NULL, 0, NULL}};

COEXTRA_TEST_MODULE(coextra_test_native, methods, coextra_test_exec_import, NULL)
