/* native_hooks.c: native hooks for the chain tests, built only against include/coextra/coextra.h. */
#include <coextra/coextra.h>

#include <string.h>

/* What a hook does with the frame it gets. */
enum mode {
    MODE_PASS,        /* count, delegate */
    MODE_LOG,         /* append (name, "enter"/"exit", co_name, is_resume, throwflag) to a list, delegate */
    MODE_MEMO,        /* frames of code `arg` are finished with coextra_frame_return(42) */
    MODE_RETURN,      /* every frame: coextra_frame_return(None) (SystemError on resumptions) */
    MODE_DOUBLE_NEXT, /* delegate twice (the second must fail) */
    MODE_NO_CONSUME,  /* return None without delegating (the dispatcher must dispose) */
    MODE_FRAME_OBJ,   /* materialise the frame object, append (f_code is code, f_lineno) to list `arg` */
};

typedef struct hook_ctx {
    coextra_hook *handle;
    char name[64];
    enum mode mode;
    long count;
    PyObject *arg; /* strong */
} hook_ctx;

static PyObject *append_log(hook_ctx *c, const char *what, coextra_frame *f, int throwflag) {
    PyCodeObject *code = coextra_frame_code(f);
    PyObject *t = Py_BuildValue("(ssOii)", c->name, what, code->co_name, coextra_frame_is_resume(f), throwflag);
    if (t == NULL)
        return NULL;
    if (PyList_Append(c->arg, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(t);
    return Py_None;
}

static PyObject *hook_eval(coextra_frame *f, int throwflag, void *ctx_) {
    hook_ctx *c = (hook_ctx *)ctx_;
    PyObject *r, *r2;
    c->count++;
    switch (c->mode) {
    case MODE_LOG: {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (append_log(c, "enter", f, throwflag) == NULL)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        r = coextra_eval_next(f, throwflag);
        PyErr_Fetch(&et, &ev, &tb);
        if (append_log(c, "exit", f, throwflag) == NULL)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return r;
    }
    case MODE_MEMO:
        if ((PyObject *)coextra_frame_code(f) == c->arg)
            return coextra_frame_return(f, PyLong_FromLong(42));
        return coextra_eval_next(f, throwflag);
    case MODE_RETURN:
        Py_INCREF(Py_None);
        return coextra_frame_return(f, Py_None);
    case MODE_DOUBLE_NEXT:
        r = coextra_eval_next(f, throwflag);
        if (r == NULL)
            return NULL;
        r2 = coextra_eval_next(f, throwflag);
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
        return coextra_eval_next(f, throwflag);
    }
    case MODE_PASS:
    default:
        return coextra_eval_next(f, throwflag);
    }
}

static const char *mode_names[] = {"pass", "log", "memo", "return", "double_next", "no_consume", "frame_object", NULL};

/* add(name, priority, mode, arg=None, only=(0, 0)) -> handle (int) */
static PyObject *add(PyObject *m, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "priority", "mode", "arg", "only", NULL};
    PyObject *name_obj, *arg = Py_None;
    const char *mode_name, *name = NULL;
    int priority, i;
    unsigned int only_index = 0, only_gen = 0;
    hook_ctx *c;
    coextra_hook_def def;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Ois|O(II)", kwlist, &name_obj, &priority, &mode_name, &arg,
                                     &only_index, &only_gen))
        return NULL;
    if (name_obj != Py_None && !(name = PyUnicode_AsUTF8(name_obj)))
        return NULL;
    c = (hook_ctx *)PyMem_RawCalloc(1, sizeof(hook_ctx));
    if (c == NULL)
        return PyErr_NoMemory();
    c->mode = MODE_PASS;
    for (i = 0; mode_names[i]; i++)
        if (strcmp(mode_names[i], mode_name) == 0)
            c->mode = (enum mode)i;
    if (name)
        strncpy(c->name, name, sizeof(c->name) - 1);
    Py_INCREF(arg);
    c->arg = arg;
    def.name = name;
    def.priority = priority;
    def.eval = hook_eval;
    def.ctx = c;
    def.only.index = only_index;
    def.only.generation = only_gen;
    if (coextra_hook_add(&def, &c->handle) < 0) {
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
    {"remove", remove_hook, METH_O, "remove(handle)"},
    {"remove_raw", remove_raw, METH_O, "remove_raw(address): pass any pointer as a hook handle"},
    {"set_active", set_active, METH_VARARGS, "set_active(handle, flag)"},
    {"count", count, METH_O, "count(handle) -> frames seen"},
    {"eval_frame_func", eval_frame_func, METH_NOARGS, "address of the interpreter's eval-frame function"},
    {"default_eval_func", default_eval_func, METH_NOARGS, "address of _PyEval_EvalFrameDefault"},
    {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *m) {
    (void)m;
    return coextra_import();
}

static PyModuleDef_Slot mslots[] = {{Py_mod_exec, (void *)exec_module}, {0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_test_native", NULL, 0, methods, mslots,
                                    NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_test_native(void) { return PyModuleDef_Init(&moddef); }
