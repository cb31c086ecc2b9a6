/* foreign_hook.c: a PEP 523 tool that knows nothing of coextra (the "foreign" party in chain tests). */
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame FRAME;
#else
typedef PyFrameObject FRAME;
#endif
typedef PyObject *(*eval_fn)(PyThreadState *, FRAME *, int);

static eval_fn g_prev;    /* what was installed before us */
static int g_chain;       /* 1: call g_prev (a well-behaved chaining tool); 0: call the default */
static long g_count;
static int g_installed;

static PyObject *foreign_eval(PyThreadState *ts, FRAME *f, int throwflag) {
    g_count++;
    if (g_chain && g_prev != NULL)
        return g_prev(ts, f, throwflag);
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

static PyObject *install(PyObject *m, PyObject *args) {
    int chain = 1;
    PyInterpreterState *interp = PyInterpreterState_Get();
    (void)m;
    if (!PyArg_ParseTuple(args, "|p", &chain))
        return NULL;
    if (g_installed) {
        PyErr_SetString(PyExc_RuntimeError, "foreign hook already installed");
        return NULL;
    }
    g_chain = chain;
    g_prev = (eval_fn)_PyInterpreterState_GetEvalFrameFunc(interp);
    _PyInterpreterState_SetEvalFrameFunc(interp, (_PyFrameEvalFunction)foreign_eval);
    g_installed = 1;
    Py_RETURN_NONE;
}

/* Put back what we found (as a typical tool does on exit). */
static PyObject *uninstall(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    if (!g_installed) {
        PyErr_SetString(PyExc_RuntimeError, "foreign hook not installed");
        return NULL;
    }
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), (_PyFrameEvalFunction)g_prev);
    g_installed = 0;
    Py_RETURN_NONE;
}

static PyObject *count(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromLong(g_count);
}

static PyObject *reset(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    g_count = 0;
    Py_RETURN_NONE;
}

static PyObject *is_current(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyBool_FromLong(_PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()) ==
                           (_PyFrameEvalFunction)foreign_eval);
}

/* Address of the eval-frame function found at install() (comparable with
 * coextra_test_native.eval_frame_func()). */
static PyObject *prev_func(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromVoidPtr((void *)g_prev);
}

static PyObject *func(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromVoidPtr((void *)foreign_eval);
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS, "install(chain=True): become the eval-frame function"},
    {"uninstall", uninstall, METH_NOARGS, "restore the function found at install()"},
    {"count", count, METH_NOARGS, "frames seen"},
    {"reset", reset, METH_NOARGS, "zero the counter"},
    {"prev_func", prev_func, METH_NOARGS, "address of the function found at install()"},
    {"func", func, METH_NOARGS, "address of this tool's eval-frame function"},
    {"is_current", is_current, METH_NOARGS, "whether this hook is the interpreter's eval-frame function"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_test_foreign", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_test_foreign(void) { return PyModule_Create(&moddef); }
