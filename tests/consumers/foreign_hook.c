/* foreign_hook.c: a PEP 523 tool that knows nothing of coextra (the "foreign" party in chain tests). */
#include "raw_eval_hook.h"
#include "test_module.h"

static raw_eval_hook g_hook = {"foreign hook", NULL, 0};
static int g_chain; /* 1: call what was installed before us (a well-behaved chaining tool); 0: call the default */
static long g_count;

static PyObject *foreign_eval(PyThreadState *ts, raw_frame *f, int throwflag) {
    g_count++;
    if (g_chain && g_hook.prev != NULL)
        return g_hook.prev(ts, f, throwflag);
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

static PyObject *install(PyObject *Py_UNUSED(m), PyObject *args) {
    int chain = 1;
    if (!PyArg_ParseTuple(args, "|p", &chain))
        return NULL;
    if (raw_eval_hook_install(&g_hook, foreign_eval) < 0)
        return NULL;
    g_chain = chain; /* no frame runs before this: the GIL is held */
    Py_RETURN_NONE;
}

static PyObject *uninstall(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return coextra_test_none_unless_failed(raw_eval_hook_uninstall(&g_hook));
}

static PyObject *count(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromLong(g_count);
}

static PyObject *reset(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    g_count = 0;
    Py_RETURN_NONE;
}

static PyObject *is_current(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyBool_FromLong(_PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()) ==
                           (_PyFrameEvalFunction)foreign_eval);
}

/* Address of the eval-frame function found at install() (comparable with
 * coextra_test_native.eval_frame_func()). */
static PyObject *prev_func(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromVoidPtr((void *)g_hook.prev);
}

static PyObject *func(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromVoidPtr((void *)foreign_eval);
}

static PyMethodDef methods[] = {
    COEXTRA_TEST_METHOD(install, METH_VARARGS, "install(chain=True): become the eval-frame function"),
    COEXTRA_TEST_METHOD(uninstall, METH_NOARGS, "restore the function found at install()"),
    COEXTRA_TEST_METHOD(count, METH_NOARGS, "frames seen"),
    COEXTRA_TEST_METHOD(reset, METH_NOARGS, "zero the counter"),
    COEXTRA_TEST_METHOD(prev_func, METH_NOARGS, "address of the function found at install()"),
    COEXTRA_TEST_METHOD(func, METH_NOARGS, "address of this tool's eval-frame function"),
    COEXTRA_TEST_METHOD(is_current, METH_NOARGS, "whether this hook is the interpreter's eval-frame function"),
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_test_foreign", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_test_foreign(void) { return PyModule_Create(&moddef); }
