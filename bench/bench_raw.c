/* bench_raw.c: coextra_bench_raw, the baseline: a raw do-nothing C PEP 523 hook, raw co_extra indices, callgrind client requests. */
/*
 * Knows nothing of coextra (built against Python only), like a tool that
 * grabs the eval-frame pointer for itself.  Also exports callgrind client
 * requests (no-ops when not running under valgrind) so that run_bench.py can
 * count instructions of the workload alone, and raw co_extra helpers for the
 * memory rows (one CPython co_extra index per tool).
 */
#include "bench_tools.h"
#include "raw_eval_hook.h"
#include "test_module.h"

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

#if PY_VERSION_HEX >= 0x030C0000
#  define REQUEST_INDEX PyUnstable_Eval_RequestCodeExtraIndex
#  define SET_EXTRA PyUnstable_Code_SetExtra
#else
#  define REQUEST_INDEX _PyEval_RequestCodeExtraIndex
#  define SET_EXTRA _PyCode_SetExtra
#endif

static raw_eval_hook g_hook = {"raw hook", NULL, 0};
static unsigned long long g_frames;

/* The floor: the cheapest possible pass-through hook. */
static PyObject *raw_eval(PyThreadState *ts, raw_frame *f, int throwflag) {
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

/* The same, counting frames (used once to know how many frames a workload runs). */
static PyObject *raw_eval_count(PyThreadState *ts, raw_frame *f, int throwflag) {
    g_frames++;
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

static PyObject *install(PyObject *Py_UNUSED(m), PyObject *args) {
    int count = 0;
    if (!PyArg_ParseTuple(args, "|p", &count))
        return NULL;
    return coextra_test_none_unless_failed(raw_eval_hook_install(&g_hook, count ? raw_eval_count : raw_eval));
}

static PyObject *uninstall(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return coextra_test_none_unless_failed(raw_eval_hook_uninstall(&g_hook));
}

static PyObject *frames(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromUnsignedLongLong(g_frames);
}

static PyObject *reset_frames(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    g_frames = 0;
    Py_RETURN_NONE;
}

/* ---- callgrind client requests (no-ops outside valgrind) ----------------- */

static PyObject *cg_running(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromLong((long)RUNNING_ON_VALGRIND);
}

static PyObject *cg_start(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    CALLGRIND_START_INSTRUMENTATION;
    Py_RETURN_NONE;
}

static PyObject *cg_toggle(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    CALLGRIND_TOGGLE_COLLECT;
    Py_RETURN_NONE;
}

static PyObject *cg_zero(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    CALLGRIND_ZERO_STATS;
    Py_RETURN_NONE;
}

/* cg_dump(name): write a profile dump of what was collected since the last one and zero the counters. */
static PyObject *cg_dump(PyObject *Py_UNUSED(m), PyObject *arg) {
    const char *name;
    if (!(name = PyUnicode_AsUTF8(arg)))
        return NULL;
    CALLGRIND_DUMP_STATS_AT(name);
    Py_RETURN_NONE;
}

/* ---- raw co_extra: one index per tool (memory rows) ---------------------- */

static Py_ssize_t g_index[BENCH_MAX_TOOLS];
static int g_nindex;
static char g_dummy[BENCH_MAX_TOOLS]; /* values stored: static, so storing allocates nothing */

static void noop_free(void *Py_UNUSED(p)) {}

/* request(k): make sure k raw indices exist (each a "tool"); returns the list of indices. */
static PyObject *request(PyObject *Py_UNUSED(m), PyObject *arg) {
    long k;
    PyObject *out;
    int i;
    if (bench_tools_arg(arg, &k) < 0)
        return NULL;
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

static int store_raw(PyObject *code, int i) { return SET_EXTRA(code, g_index[i], &g_dummy[i]); }

/* set_all(codes, k): store a (static) value at each of the first k raw indices of every code object. */
static PyObject *set_all(PyObject *Py_UNUSED(m), PyObject *args) {
    return bench_store_all(args, g_nindex, "request(k)", store_raw);
}

static PyMethodDef methods[] = {
    COEXTRA_TEST_METHOD(install, METH_VARARGS, "install(count=False): become the eval-frame function (pass-through)"),
    COEXTRA_TEST_METHOD(uninstall, METH_NOARGS, "restore the eval-frame function found at install()"),
    COEXTRA_TEST_METHOD(frames, METH_NOARGS, "frames seen by the counting hook"),
    COEXTRA_TEST_METHOD(reset_frames, METH_NOARGS, "zero the frame counter"),
    COEXTRA_TEST_METHOD(cg_running, METH_NOARGS, "RUNNING_ON_VALGRIND"),
    COEXTRA_TEST_METHOD(cg_start, METH_NOARGS, "CALLGRIND_START_INSTRUMENTATION"),
    COEXTRA_TEST_METHOD(cg_toggle, METH_NOARGS, "CALLGRIND_TOGGLE_COLLECT"),
    COEXTRA_TEST_METHOD(cg_zero, METH_NOARGS, "CALLGRIND_ZERO_STATS"),
    COEXTRA_TEST_METHOD(cg_dump, METH_O, "CALLGRIND_DUMP_STATS_AT(name)"),
    COEXTRA_TEST_METHOD(request, METH_O, "request(k) -> the first k raw co_extra indices of this module"),
    COEXTRA_TEST_METHOD(set_all, METH_VARARGS, "set_all(codes, k): store a static value at k raw indices of each code"),
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_bench_raw", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_bench_raw(void) { return PyModule_Create(&moddef); }
