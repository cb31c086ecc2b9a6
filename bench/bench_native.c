/* bench_native.c: coextra_bench_native, N native pass-through coextra hooks, an `only` hook that skips every frame, a native observer, C loops timing coextra_slot_get vs raw GetExtra. */
/*
 * Built only against include/coextra/coextra.h (no link to libcoextra), the
 * way a third-party tool builds.  The loops are also meant to run under
 * callgrind (instruction counts per call), together with the client requests
 * of coextra_bench_raw.
 */
#include <coextra/coextra.h>

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#if PY_VERSION_HEX >= 0x030C0000
#  define REQUEST_INDEX PyUnstable_Eval_RequestCodeExtraIndex
#  define GET_EXTRA PyUnstable_Code_GetExtra
#  define SET_EXTRA PyUnstable_Code_SetExtra
#else
#  define REQUEST_INDEX _PyEval_RequestCodeExtraIndex
#  define GET_EXTRA _PyCode_GetExtra
#  define SET_EXTRA _PyCode_SetExtra
#endif

#define MAX_HOOKS 64
static coextra_hook *g_hooks[MAX_HOOKS];
static int g_nhooks;
static coextra_slot g_never;      /* the slot of the `only` hook: no code holds a value in it */
static coextra_slot g_get_slot;   /* the slot of the get loops */
static Py_ssize_t g_raw_index = -1;
static char g_value;              /* a static value: storing it allocates nothing */
static volatile uintptr_t g_sink; /* keeps the loops' loads alive */

/* The pass-through hook: nothing but delegation. */
static PyObject *pass_eval(coextra_frame *f, int throwflag, void *ctx) {
    (void)ctx;
    return coextra_eval_next(f, throwflag);
}

static int add_one(const char *name, coextra_slot only) {
    coextra_hook_def def;
    if (g_nhooks >= MAX_HOOKS) {
        PyErr_SetString(PyExc_RuntimeError, "too many bench hooks");
        return -1;
    }
    def.name = name;
    def.priority = COEXTRA_PRIORITY_DEFAULT;
    def.eval = pass_eval;
    def.ctx = NULL;
    def.only = only;
    if (coextra_hook_add(&def, &g_hooks[g_nhooks]) < 0)
        return -1;
    g_nhooks++;
    return 0;
}

/* add(k): add k pass-through hooks; returns the number of bench hooks now live. */
static PyObject *add(PyObject *m, PyObject *arg) {
    long k = PyLong_AsLong(arg), i;
    coextra_slot none = {0, 0};
    char name[64];
    (void)m;
    if (k == -1 && PyErr_Occurred())
        return NULL;
    for (i = 0; i < k; i++) {
        PyOS_snprintf(name, sizeof name, "coextra-bench-pass-%d", g_nhooks);
        if (add_one(name, none) < 0)
            return NULL;
    }
    return PyLong_FromLong(g_nhooks);
}

/* add_skip(): one hook whose `only` slot is held by no code object (skipped for every frame). */
static PyObject *add_skip(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    if (g_never.generation == 0 && coextra_slot_reserve("coextra-bench-never", NULL, NULL, &g_never) < 0)
        return NULL;
    if (add_one("coextra-bench-skip", g_never) < 0)
        return NULL;
    return PyLong_FromLong(g_nhooks);
}

/* A native observer (ABI 1.3) that counts: its `only` slot marks the code
 * objects given to add_observer. */
static coextra_slot g_observed;
static long g_observations;
static void count_observation(PyCodeObject *code, void *ctx) {
    (void)code;
    (void)ctx;
    g_observations++;
}

/* add_observer(code): mark code in a slot and add a counting observer with that `only`. */
static PyObject *add_observer(PyObject *m, PyObject *code) {
    coextra_observer_def def;
    (void)m;
    if (g_nhooks >= MAX_HOOKS) {
        PyErr_SetString(PyExc_RuntimeError, "too many bench hooks");
        return NULL;
    }
    if (g_observed.generation == 0 &&
        coextra_slot_reserve("coextra-bench-observed", NULL, NULL, &g_observed) < 0)
        return NULL;
    if (coextra_slot_set(code, g_observed, &g_value) < 0)
        return NULL;
    def.name = "coextra-bench-observer";
    def.priority = COEXTRA_PRIORITY_PROFILER;
    def.on_enter = count_observation;
    def.on_exit = count_observation;
    def.ctx = NULL;
    def.only = g_observed;
    if (coextra_observer_add(&def, &g_hooks[g_nhooks]) < 0)
        return NULL;
    g_nhooks++;
    return PyLong_FromLong(g_observations);
}

/* remove_all(): remove every bench hook (and the `only` slot). */
static PyObject *remove_all(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    while (g_nhooks > 0) {
        if (coextra_hook_remove(g_hooks[g_nhooks - 1]) < 0)
            return NULL;
        g_nhooks--;
    }
    if (g_never.generation != 0) {
        if (coextra_slot_release(g_never) < 0)
            return NULL;
        g_never.index = g_never.generation = 0;
    }
    if (g_observed.generation != 0) {
        if (coextra_slot_release(g_observed) < 0)
            return NULL;
        g_observed.index = g_observed.generation = 0;
    }
    Py_RETURN_NONE;
}

/* ---- coextra_slot_get vs raw GetExtra ----------------------------------- */

/* prepare_get(code): store a value for `code` in a coextra slot and at a raw co_extra index. */
static PyObject *prepare_get(PyObject *m, PyObject *code) {
    (void)m;
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "expected a code object");
        return NULL;
    }
    if (g_get_slot.generation == 0 && coextra_slot_reserve("coextra-bench-get", NULL, NULL, &g_get_slot) < 0)
        return NULL;
    if (coextra_slot_set(code, g_get_slot, &g_value) < 0)
        return NULL;
    if (g_raw_index < 0) {
        g_raw_index = REQUEST_INDEX(NULL);
        if (g_raw_index < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "no co_extra index left");
            return NULL;
        }
    }
    if (SET_EXTRA(code, g_raw_index, &g_value) < 0)
        return NULL;
    if (coextra_slot_get(code, g_get_slot) != &g_value) {
        PyErr_SetString(PyExc_AssertionError, "coextra_slot_get does not return the stored value");
        return NULL;
    }
    Py_RETURN_NONE;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* loop_coextra(code, n) -> ns per coextra_slot_get (the inline fast path) */
static PyObject *loop_coextra(PyObject *m, PyObject *args) {
    PyObject *code, *arg_code;
    Py_ssize_t n, i;
    uintptr_t sum = 0;
    double t0, t1;
    coextra_slot slot = g_get_slot;
    (void)m;
    if (!PyArg_ParseTuple(args, "On", &code, &n))
        return NULL;
    arg_code = code; /* both loops read a local whose address never escapes */
    t0 = now_ns();
    for (i = 0; i < n; i++)
        sum += (uintptr_t)coextra_slot_get(arg_code, slot);
    t1 = now_ns();
    g_sink = sum;
    if (sum != (uintptr_t)n * (uintptr_t)&g_value) {
        PyErr_SetString(PyExc_AssertionError, "coextra loop read the wrong value (prepare_get first)");
        return NULL;
    }
    return PyFloat_FromDouble(n > 0 ? (t1 - t0) / (double)n : 0.0);
}

/* loop_raw(code, n) -> ns per PyUnstable_Code_GetExtra / _PyCode_GetExtra */
static PyObject *loop_raw(PyObject *m, PyObject *args) {
    PyObject *code, *arg_code;
    Py_ssize_t n, i, idx = g_raw_index;
    uintptr_t sum = 0;
    double t0, t1;
    (void)m;
    if (!PyArg_ParseTuple(args, "On", &code, &n))
        return NULL;
    arg_code = code; /* both loops read a local whose address never escapes */
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        void *v = NULL;
        GET_EXTRA(arg_code, idx, &v);
        sum += (uintptr_t)v;
    }
    t1 = now_ns();
    g_sink = sum;
    if (sum != (uintptr_t)n * (uintptr_t)&g_value) {
        PyErr_SetString(PyExc_AssertionError, "raw loop read the wrong value (prepare_get first)");
        return NULL;
    }
    return PyFloat_FromDouble(n > 0 ? (t1 - t0) / (double)n : 0.0);
}

/* ---- memory rows: k tools' data in coextra slots ------------------------- */

#define MAX_TOOLS 8
static coextra_slot g_mem[MAX_TOOLS];
static int g_nmem;

/* mem_reserve(k): make sure k native slots exist (each a "tool"). */
static PyObject *mem_reserve(PyObject *m, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    char name[64];
    (void)m;
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (k < 0 || k > MAX_TOOLS) {
        PyErr_Format(PyExc_ValueError, "k must be 0..%d", MAX_TOOLS);
        return NULL;
    }
    while (g_nmem < k) {
        PyOS_snprintf(name, sizeof name, "coextra-bench-mem-%d", g_nmem);
        if (coextra_slot_reserve(name, NULL, NULL, &g_mem[g_nmem]) < 0)
            return NULL;
        g_nmem++;
    }
    Py_RETURN_NONE;
}

/* mem_set(codes, k): store a static value in the first k slots of every code object. */
static PyObject *mem_set(PyObject *m, PyObject *args) {
    PyObject *codes, *seq;
    int k, i;
    Py_ssize_t j, n;
    (void)m;
    if (!PyArg_ParseTuple(args, "Oi", &codes, &k))
        return NULL;
    if (k < 0 || k > g_nmem) {
        PyErr_SetString(PyExc_ValueError, "mem_reserve(k) first");
        return NULL;
    }
    if (!(seq = PySequence_Fast(codes, "codes must be a sequence")))
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (j = 0; j < n; j++) {
        PyObject *code = PySequence_Fast_GET_ITEM(seq, j);
        for (i = 0; i < k; i++) {
            if (coextra_slot_set(code, g_mem[i], &g_value) < 0) {
                Py_DECREF(seq);
                return NULL;
            }
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"add", add, METH_O, "add(k): add k native pass-through hooks -> number of bench hooks"},
    {"add_skip", add_skip, METH_NOARGS, "add one hook whose `only` slot no code holds"},
    {"remove_all", remove_all, METH_NOARGS, "remove every bench hook"},
    {"add_observer", add_observer, METH_O, "add_observer(code): a counting native observer with `only` on code"},
    {"prepare_get", prepare_get, METH_O, "prepare_get(code): store a value in a coextra slot and a raw index"},
    {"loop_coextra", loop_coextra, METH_VARARGS, "loop_coextra(code, n) -> ns per coextra_slot_get"},
    {"loop_raw", loop_raw, METH_VARARGS, "loop_raw(code, n) -> ns per raw GetExtra"},
    {"mem_reserve", mem_reserve, METH_O, "mem_reserve(k): reserve k native slots"},
    {"mem_set", mem_set, METH_VARARGS, "mem_set(codes, k): store a static value in k slots of each code"},
    {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *m) {
    (void)m;
    return coextra_import();
}

static PyModuleDef_Slot mslots[] = {{Py_mod_exec, (void *)exec_module}, {0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "coextra_bench_native", NULL, 0, methods, mslots,
                                    NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_coextra_bench_native(void) { return PyModuleDef_Init(&moddef); }
