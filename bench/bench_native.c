/* bench_native.c: coextra_bench_native, N native pass-through coextra hooks, an `only` hook that skips every frame, a native observer, C loops timing coextra_slot_get vs raw GetExtra. */
/*
 * Built only against include/coextra/coextra.h (no link to libcoextra), the
 * way a third-party tool builds, plus the test extensions' module helpers.  The loops are also meant to run under
 * callgrind (instruction counts per call), together with the client requests
 * of coextra_bench_raw.
 */
#include <coextra/coextra.h>

#include "bench_tools.h"
#include "test_consumer.h"
#include "test_module.h"

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
static PyObject *pass_eval(coextra_frame *f, int throwflag, void *Py_UNUSED(ctx)) {
    return coextra_eval_next(f, throwflag);
}

/* -1 with RuntimeError when g_hooks is full. */
static int check_room(void) {
    if (g_nhooks < MAX_HOOKS)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "too many bench hooks");
    return -1;
}

/* Reserves *s (no free function) unless it is already. */
static int ensure_slot(coextra_slot *s, const char *name) {
    return s->generation != 0 ? 0 : coextra_slot_reserve(name, NULL, NULL, s);
}

/* Releases *s if it was reserved, and forgets it. */
static int drop_slot(coextra_slot *s) {
    if (s->generation == 0)
        return 0;
    if (coextra_slot_release(*s) < 0)
        return -1;
    s->index = s->generation = 0;
    return 0;
}

static int add_one(const char *name, coextra_slot only) {
    coextra_hook_def def = {.name = name, .priority = COEXTRA_PRIORITY_DEFAULT, .eval = pass_eval, .only = only};
    if (check_room() < 0)
        return -1;
    if (coextra_hook_add(&def, &g_hooks[g_nhooks]) < 0)
        return -1;
    g_nhooks++;
    return 0;
}

/* add(k): add k pass-through hooks; returns the number of bench hooks now live. */
static PyObject *add(PyObject *Py_UNUSED(m), PyObject *arg) {
    long k = PyLong_AsLong(arg), i;
    coextra_slot none = {0, 0};
    char name[64];
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
static PyObject *add_skip(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    if (ensure_slot(&g_never, "coextra-bench-never") < 0)
        return NULL;
    if (add_one("coextra-bench-skip", g_never) < 0)
        return NULL;
    return PyLong_FromLong(g_nhooks);
}

/* A native observer (ABI 1.3) that counts: its `only` slot marks the code
 * objects given to add_observer. */
static coextra_slot g_observed;
static long g_observations;
static void count_observation(PyCodeObject *Py_UNUSED(code), void *Py_UNUSED(ctx)) {
    g_observations++;
}

/* add_observer(code): mark code in a slot and add a counting observer with that `only`. */
static PyObject *add_observer(PyObject *Py_UNUSED(m), PyObject *code) {
    coextra_observer_def def = {.name = "coextra-bench-observer", .priority = COEXTRA_PRIORITY_PROFILER,
                                .on_enter = count_observation, .on_exit = count_observation};
    if (check_room() < 0 || ensure_slot(&g_observed, "coextra-bench-observed") < 0)
        return NULL;
    if (coextra_slot_set(code, g_observed, &g_value) < 0)
        return NULL;
    def.only = g_observed; /* reserved just now, the first time */
    if (coextra_observer_add(&def, &g_hooks[g_nhooks]) < 0)
        return NULL;
    g_nhooks++;
    return PyLong_FromLong(g_observations);
}

/* remove_all(): remove every bench hook (and the `only` slot). */
static PyObject *remove_all(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    while (g_nhooks > 0) {
        if (coextra_hook_remove(g_hooks[g_nhooks - 1]) < 0)
            return NULL;
        g_nhooks--;
    }
    if (drop_slot(&g_never) < 0 || drop_slot(&g_observed) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- coextra_slot_get vs raw GetExtra ----------------------------------- */

/* prepare_get(code): store a value for `code` in a coextra slot and at a raw co_extra index. */
static PyObject *prepare_get(PyObject *Py_UNUSED(m), PyObject *code) {
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "expected a code object");
        return NULL;
    }
    if (ensure_slot(&g_get_slot, "coextra-bench-get") < 0)
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

/* A loop's result: the time per read, once the sum of what its n reads
 * returned is checked (each must have read g_value). */
static PyObject *ns_per_read(uintptr_t sum, Py_ssize_t n, double elapsed_ns, const char *loop) {
    g_sink = sum;
    if (sum != (uintptr_t)n * (uintptr_t)&g_value)
        return PyErr_Format(PyExc_AssertionError, "%s loop read the wrong value (prepare_get first)", loop);
    return PyFloat_FromDouble(n > 0 ? elapsed_ns / (double)n : 0.0);
}

/* loop_coextra(code, n) -> ns per coextra_slot_get (the inline fast path) */
static PyObject *loop_coextra(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code, *arg_code;
    Py_ssize_t n, i;
    uintptr_t sum = 0;
    double t0, t1;
    coextra_slot slot = g_get_slot;
    if (!PyArg_ParseTuple(args, "On", &code, &n))
        return NULL;
    arg_code = code; /* both loops read a local whose address never escapes */
    t0 = now_ns();
    for (i = 0; i < n; i++)
        sum += (uintptr_t)coextra_slot_get(arg_code, slot);
    t1 = now_ns();
    return ns_per_read(sum, n, t1 - t0, "coextra");
}

/* loop_raw(code, n) -> ns per PyUnstable_Code_GetExtra / _PyCode_GetExtra */
static PyObject *loop_raw(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code, *arg_code;
    Py_ssize_t n, i, idx = g_raw_index;
    uintptr_t sum = 0;
    double t0, t1;
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
    return ns_per_read(sum, n, t1 - t0, "raw");
}

/* ---- memory rows: k tools' data in coextra slots ------------------------- */

static coextra_slot g_mem[BENCH_MAX_TOOLS];
static int g_nmem;

/* mem_reserve(k): make sure k native slots exist (each a "tool"). */
static PyObject *mem_reserve(PyObject *Py_UNUSED(m), PyObject *arg) {
    long k;
    char name[64];
    if (bench_tools_arg(arg, &k) < 0)
        return NULL;
    while (g_nmem < k) {
        PyOS_snprintf(name, sizeof name, "coextra-bench-mem-%d", g_nmem);
        if (coextra_slot_reserve(name, NULL, NULL, &g_mem[g_nmem]) < 0)
            return NULL;
        g_nmem++;
    }
    Py_RETURN_NONE;
}

static int store_in_slot(PyObject *code, int i) { return coextra_slot_set(code, g_mem[i], &g_value); }

/* mem_set(codes, k): store a static value in the first k slots of every code object. */
static PyObject *mem_set(PyObject *Py_UNUSED(m), PyObject *args) {
    return bench_store_all(args, g_nmem, "mem_reserve(k)", store_in_slot);
}

static PyMethodDef methods[] = {
    COEXTRA_TEST_METHOD(add, METH_O, "add(k): add k native pass-through hooks -> number of bench hooks"),
    COEXTRA_TEST_METHOD(add_skip, METH_NOARGS, "add one hook whose `only` slot no code holds"),
    COEXTRA_TEST_METHOD(remove_all, METH_NOARGS, "remove every bench hook"),
    COEXTRA_TEST_METHOD(add_observer, METH_O, "add_observer(code): a counting native observer with `only` on code"),
    COEXTRA_TEST_METHOD(prepare_get, METH_O, "prepare_get(code): store a value in a coextra slot and a raw index"),
    COEXTRA_TEST_METHOD(loop_coextra, METH_VARARGS, "loop_coextra(code, n) -> ns per coextra_slot_get"),
    COEXTRA_TEST_METHOD(loop_raw, METH_VARARGS, "loop_raw(code, n) -> ns per raw GetExtra"),
    COEXTRA_TEST_METHOD(mem_reserve, METH_O, "mem_reserve(k): reserve k native slots"),
    COEXTRA_TEST_METHOD(mem_set, METH_VARARGS, "mem_set(codes, k): store a static value in k slots of each code"),
    {NULL, NULL, 0, NULL}};

COEXTRA_TEST_MODULE(coextra_bench_native, methods, coextra_test_exec_import, NULL)
