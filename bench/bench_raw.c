/* bench_raw.c: coextra_bench_raw, the baseline: a raw do-nothing C PEP 523 hook, raw co_extra indices, callgrind client requests. */
/*
 * Knows nothing of coextra (built against Python only), like a tool that
 * grabs the eval-frame pointer for itself.  Also exports callgrind client
 * requests (no-ops when not running under valgrind) so that run_bench.py can
 * count instructions of the workload alone, and raw co_extra helpers for the
 * memory rows (one CPython co_extra index per tool).
 */
#include <Python.h>

#ifdef COEXTRA_BENCH_CALLGRIND
#  include <valgrind/callgrind.h>
#else
#  define RUNNING_ON_VALGRIND 0
#  define CALLGRIND_START_INSTRUMENTATION
#  define CALLGRIND_STOP_INSTRUMENTATION
#  define CALLGRIND_TOGGLE_COLLECT
#  define CALLGRIND_ZERO_STATS
#  define CALLGRIND_DUMP_STATS_AT(s) ((void)(s))
#endif

#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame FRAME; /* 3.11+ */
#else
typedef PyFrameObject FRAME; /* 3.9/3.10 */
#endif
typedef PyObject *(*eval_fn)(PyThreadState *, FRAME *, int);

#if PY_VERSION_HEX >= 0x030C0000
#  define REQUEST_INDEX PyUnstable_Eval_RequestCodeExtraIndex
#  define SET_EXTRA PyUnstable_Code_SetExtra
#else
#  define REQUEST_INDEX _PyEval_RequestCodeExtraIndex
#  define SET_EXTRA _PyCode_SetExtra
#endif

static eval_fn g_prev;
static int g_installed;
static unsigned long long g_frames;

/* The floor: the cheapest possible pass-through hook. */
static PyObject *raw_eval(PyThreadState *ts, FRAME *f, int throwflag) {
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

/* The same, counting frames (used once to know how many frames a workload runs). */
static PyObject *raw_eval_count(PyThreadState *ts, FRAME *f, int throwflag) {
    g_frames++;
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

static PyObject *install(PyObject *m, PyObject *args) {
    int count = 0;
    PyInterpreterState *interp = PyInterpreterState_Get();
    (void)m;
    if (!PyArg_ParseTuple(args, "|p", &count))
        return NULL;
    if (g_installed) {
        PyErr_SetString(PyExc_RuntimeError, "raw hook already installed");
        return NULL;
    }
    g_prev = (eval_fn)_PyInterpreterState_GetEvalFrameFunc(interp);
    _PyInterpreterState_SetEvalFrameFunc(interp, (_PyFrameEvalFunction)(count ? raw_eval_count : raw_eval));
    g_installed = 1;
    Py_RETURN_NONE;
}

static PyObject *uninstall(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    if (!g_installed) {
        PyErr_SetString(PyExc_RuntimeError, "raw hook not installed");
        return NULL;
    }
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), (_PyFrameEvalFunction)g_prev);
    g_installed = 0;
    Py_RETURN_NONE;
}

static PyObject *frames(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromUnsignedLongLong(g_frames);
}

static PyObject *reset_frames(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    g_frames = 0;
    Py_RETURN_NONE;
}

/* ---- callgrind client requests (no-ops outside valgrind) ----------------- */

static PyObject *cg_running(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyLong_FromLong((long)RUNNING_ON_VALGRIND);
}

static PyObject *cg_start(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    CALLGRIND_START_INSTRUMENTATION;
    Py_RETURN_NONE;
}

static PyObject *cg_toggle(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    CALLGRIND_TOGGLE_COLLECT;
    Py_RETURN_NONE;
}

static PyObject *cg_zero(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    CALLGRIND_ZERO_STATS;
    Py_RETURN_NONE;
}

/* cg_dump(name): write a profile dump of what was collected since the last one and zero the counters. */
static PyObject *cg_dump(PyObject *m, PyObject *arg) {
    const char *name;
    (void)m;
    if (!(name = PyUnicode_AsUTF8(arg)))
        return NULL;
    CALLGRIND_DUMP_STATS_AT(name);
    Py_RETURN_NONE;
}

/* ---- raw co_extra: one index per tool (memory rows) ---------------------- */

#define MAX_TOOLS 8
static Py_ssize_t g_index[MAX_TOOLS];
static int g_nindex;
static char g_dummy[MAX_TOOLS]; /* values stored: static, so storing allocates nothing */

static void noop_free(void *p) { (void)p; }

/* request(k): make sure k raw indices exist (each a "tool"); returns the list of indices. */
static PyObject *request(PyObject *m, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    PyObject *out;
    int i;
    (void)m;
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (k < 0 || k > MAX_TOOLS) {
        PyErr_Format(PyExc_ValueError, "k must be 0..%d", MAX_TOOLS);
        return NULL;
    }
    while (g_nindex < k) {
        Py_ssize_t idx = REQUEST_INDEX(noop_free);
        if (idx < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "no co_extra index left");
            return NULL;
        }
        g_index[g_nindex++] = idx;
    }
    if (!(out = PyList_New(k)))
        return NULL;
    for (i = 0; i < k; i++)
        PyList_SET_ITEM(out, i, PyLong_FromSsize_t(g_index[i]));
    return out;
}

/* set_all(codes, k): store a (static) value at each of the first k raw indices of every code object. */
static PyObject *set_all(PyObject *m, PyObject *args) {
    PyObject *codes, *seq;
    int k, i;
    Py_ssize_t j, n;
    (void)m;
    if (!PyArg_ParseTuple(args, "Oi", &codes, &k))
        return NULL;
    if (k < 0 || k > g_nindex) {
        PyErr_SetString(PyExc_ValueError, "request(k) first");
        return NULL;
    }
    if (!(seq = PySequence_Fast(codes, "codes must be a sequence")))
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (j = 0; j < n; j++) {
        PyObject *code = PySequence_Fast_GET_ITEM(seq, j);
        for (i = 0; i < k; i++) {
            if (SET_EXTRA(code, g_index[i], &g_dummy[i]) < 0) {
                Py_DECREF(seq);
                return NULL;
            }
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS, "install(count=False): become the eval-frame function (pass-through)"},
    {"uninstall", uninstall, METH_NOARGS, "restore the eval-frame function found at install()"},
    {"frames", frames, METH_NOARGS, "frames seen by the counting hook"},
    {"reset_frames", reset_frames, METH_NOARGS, "zero the frame counter"},
    {"cg_running", cg_running, METH_NOARGS, "RUNNING_ON_VALGRIND"},
    {"cg_start", cg_start, METH_NOARGS, "CALLGRIND_START_INSTRUMENTATION"},
    {"cg_toggle", cg_toggle, METH_NOARGS, "CALLGRIND_TOGGLE_COLLECT"},
    {"cg_zero", cg_zero, METH_NOARGS, "CALLGRIND_ZERO_STATS"},
    {"cg_dump", cg_dump, METH_O, "CALLGRIND_DUMP_STATS_AT(name)"},
    {"request", request, METH_O, "request(k) -> the first k raw co_extra indices of this module"},
    {"set_all", set_all, METH_VARARGS, "set_all(codes, k): store a static value at k raw indices of each code"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_bench_raw", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_bench_raw(void) { return PyModule_Create(&moddef); }
