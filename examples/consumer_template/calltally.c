/* calltally.c: the smallest complete coextra tool: counts calls of the functions you watch, costing nothing elsewhere. */
#include <coextra/coextra.h>

/* One slot: a heap counter per watched code object. */
static coextra_slot g_counts;
static coextra_hook *g_hook;

static void free_count(void *value, void *ctx) {
    (void)ctx;
    PyMem_RawFree(value);
}

/* Runs only for code objects holding a counter (the hook's `only` slot). */
static PyObject *tally(coextra_frame *frame, int throwflag, void *ctx) {
    long *n = (long *)coextra_slot_get((PyObject *)coextra_frame_code(frame), g_counts);
    (void)ctx;
    if (n != NULL && !coextra_frame_is_resume(frame))
        ++*n;
    return coextra_eval_next(frame, throwflag);
}

static PyObject *code_of(PyObject *fn) {
    PyObject *code = PyObject_GetAttrString(fn, "__code__");
    if (code != NULL && !PyCode_Check(code)) {
        Py_DECREF(code);
        PyErr_SetString(PyExc_TypeError, "calltally: expected a Python function");
        return NULL;
    }
    return code;
}

static PyObject *watch(PyObject *m, PyObject *fn) {
    PyObject *code = code_of(fn);
    long *n;
    (void)m;
    if (code == NULL)
        return NULL;
    if (coextra_slot_get(code, g_counts) == NULL) {
        n = (long *)PyMem_RawCalloc(1, sizeof(long));
        if (n == NULL || coextra_slot_set(code, g_counts, n) < 0) {
            PyMem_RawFree(n);
            Py_DECREF(code);
            return n == NULL ? PyErr_NoMemory() : NULL;
        }
    }
    Py_DECREF(code);
    Py_RETURN_NONE;
}

static PyObject *count(PyObject *m, PyObject *fn) {
    PyObject *code = code_of(fn);
    long *n;
    (void)m;
    if (code == NULL)
        return NULL;
    n = (long *)coextra_slot_get(code, g_counts);
    Py_DECREF(code);
    return PyLong_FromLong(n ? *n : 0);
}

static PyObject *unwatch(PyObject *m, PyObject *fn) {
    PyObject *code = code_of(fn);
    int r;
    (void)m;
    if (code == NULL)
        return NULL;
    r = coextra_slot_clear(code, g_counts);
    Py_DECREF(code);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"watch", watch, METH_O, "watch(fn): count the calls of fn"},
    {"count", count, METH_O, "count(fn) -> calls since watch(fn)"},
    {"unwatch", unwatch, METH_O, "unwatch(fn): stop counting, drop the counter"},
    {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *m) {
    coextra_hook_def def = {"calltally", COEXTRA_PRIORITY_PROFILER, tally, NULL, {0, 0}};
    (void)m;
    if (coextra_import() < 0)
        return -1;
    if (coextra_slot_reserve("calltally.counts", free_count, NULL, &g_counts) < 0)
        return -1;
    def.only = g_counts;
    return coextra_hook_add(&def, &g_hook);
}

/* The hook and slot live as long as the process's interpreter: coextra
 * removes hooks and frees the remaining counters at finalization. */
static PyModuleDef_Slot slots[] = {{Py_mod_exec, (void *)exec_module}, {0, NULL}};
static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "calltally", "Count calls of watched functions.", 0,
                                    methods, slots, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_calltally(void) { return PyModuleDef_Init(&moddef); }
