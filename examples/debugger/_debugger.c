/* _debugger.c: native half of coextra_debugger: the "holds breakpoints" slot and the observer that turns tracing on for marked code only. */

/*
 * Built like a third-party extension: only <coextra/coextra.h> and Python.h.
 *
 * What it does.  The debugger marks every code object that holds a breakpoint
 * in its coextra slot ("coextra_debugger").  One hook at
 * COEXTRA_PRIORITY_DEBUGGER with `only` = that slot sees the frames of marked
 * code and nothing else: for every other frame the dispatcher skips it, so
 * the program runs with no trace function at all (sys.gettrace() is None).
 * When a marked frame is entered on the debugged thread while that thread's
 * trace function is not the debugger's, the hook calls the Python `enter`
 * callback, which calls sys.settrace(debugger.trace_dispatch).  This works
 * because the hook runs BEFORE the frame's first RESUME instruction (3.11+;
 * on 3.9/3.10 before the frame's entry code in _PyEval_EvalFrameDefault):
 *   3.9/3.10  the evaluator checks tstate->use_tracing / cframe->use_tracing
 *             at entry and sends the 'call' event;
 *   3.11      the evaluator copies use_tracing from the caller's cframe
 *             (which sys.settrace updated: a callback's evaluator hands its
 *             use_tracing back to the previous cframe on exit), and RESUME
 *             under tracing sends the 'call' event;
 *   3.12/3.13 sys.settrace bumps the monitoring version; RESUME notices that
 *             the code is out of date, instruments it and re-executes as
 *             INSTRUMENTED_RESUME, whose PY_START is the legacy 'call' event.
 * bdb's dispatch_call then gives the frame its f_trace and line events flow.
 * That is the hook in the eval-frame chain (3.9-3.11, or 3.12+ when no
 * sys.monitoring tool id is free).  On 3.12+ the observer normally runs on
 * sys.monitoring local events of the marked code instead (coextra installs
 * no eval-frame function for it, so unmarked code runs at full speed): it
 * then runs inside the frame, after RESUME, and the callback gives the
 * running frame its f_trace itself (sys.settrace re-instruments the code,
 * so its line events follow).
 * When the outermost marked frame (entered through this hook) returns and the
 * thread's trace function is still the debugger's, the `exit` callback decides
 * whether tracing can be switched off again (not while stepping, not while
 * another marked frame is on the stack).
 *
 * State is process-global: one debugger per process, on one thread (pdb also
 * traces only the thread that started it), owned by the first interpreter
 * that loads the module; other interpreters are refused (see exec_module).
 */
#include <coextra/coextra.h>
#if PY_VERSION_HEX < 0x030B0000
/* PyFrame_GetBack (3.9+) is declared in the public cpython/frameobject.h,
 * which Python.h includes only from 3.11 on. */
#include <frameobject.h>
#endif

/* The value stored in the slot for marked code: any non-NULL pointer. */
static const char MARKED = 1;

typedef struct {
    int have_slot;
    coextra_slot slot;
    coextra_hook *hook;      /* NULL: not added (yet, or removed) */
    int active;
    PyObject *enter;         /* callable() (strong): turn tracing on */
    PyObject *exit;          /* callable() (strong): maybe turn tracing off */
    PyObject *tracer;        /* strong: the object the debugger passes to sys.settrace */
    unsigned long thread;    /* PyThread_get_thread_ident() of the debugged thread */
    long depth;              /* marked frames entered through the hook, still running */
    int monitored;           /* the observer runs on sys.monitoring (3.12+), not in the chain */
    int busy;                /* inside a callback: frames pass through untouched */
    unsigned long long frames; /* marked frames seen (statistics for tests) */
    unsigned long long enters; /* enter callbacks made */
} dbg_state;

static dbg_state S;
static PyInterpreterState *g_interp; /* the interpreter that owns S */

/* Slot values are the address of MARKED: nothing to free.  (CPython calls
 * co_extra free functions even for NULL entries; coextra does not pass those
 * on, and this one does nothing anyway.) */
static void free_mark(void *value, void *ctx) {
    (void)value;
    (void)ctx;
}

/* Run a callback with one argument without disturbing a pending exception
 * (a throw() into a generator sets it before the frame runs), unseen by the
 * tracer, and without letting its own errors escape: they go to
 * sys.unraisablehook and the frame runs normally. */
static void call_callback(PyThreadState *ts, PyObject *cb, PyObject *arg) {
    PyObject *et, *ev, *tb, *r;
    if (cb == NULL)
        return;
    PyErr_Fetch(&et, &ev, &tb);
    S.busy = 1;
    Py_INCREF(cb); /* the callback may replace itself (install/uninstall) */
    /* Hidden from the tracer (the debugger's own, while stepping, or any
     * other) as a trace function is; a sys.settrace() inside takes effect
     * when the thread is shown again, for the frame about to run.  Hiding
     * the calling thread cannot fail once coextra is imported. */
    if (coextra_hide_from_tracing(ts) < 0) {
        r = NULL;
    } else {
        r = PyObject_CallOneArg(cb, arg);
        if (coextra_unhide_from_tracing(ts) < 0)
            Py_CLEAR(r);
    }
    S.busy = 0;
    if (r == NULL)
        PyErr_WriteUnraisable(cb);
    else
        Py_DECREF(r);
    Py_DECREF(cb);
    PyErr_Restore(et, ev, tb);
}

/* Whether this thread's frames reach the debugger now (only marked code gets
 * here at all: `only`).  Other threads and frames run by our own callbacks
 * pass untouched. */
static int ours(void) { return !S.busy && S.enter != NULL && PyThread_get_thread_ident() == S.thread; }

/* The observer's on_enter.  In the chain (3.9-3.11, or no sys.monitoring
 * tool id free) it runs before the frame's first instruction: turning
 * tracing on now gives the frame its 'call' event (see the top of this
 * file).  On sys.monitoring (3.12+) it runs inside the frame, at its
 * PY_START/PY_RESUME: the 'call' event is past, so the callback also gets
 * the frame, to give it the f_trace that event would have given it. */
static void observe_enter(PyCodeObject *code, void *ctx) {
    PyThreadState *ts;
    (void)code;
    (void)ctx;
    if (!ours())
        return;
    ts = PyThreadState_Get();
    S.frames++;
    /* c_traceobj is the object given to sys.settrace: tracing is already
     * ours while stepping, or when an outer marked frame switched it on.  A
     * public field of PyThreadState (cpython/pystate.h, 3.9-3.15); the C API
     * has no getter, and sys.gettrace() would be a call into Python on every
     * marked frame. */
    if (ts->c_traceobj != S.tracer) {
        S.enters++;
        call_callback(ts, S.enter, S.monitored ? (PyObject *)PyEval_GetFrame() : Py_None);
    }
    S.depth++;
}

/* The observer's on_exit.  When the outermost marked frame entered here
 * leaves with tracing still ours, `exit` decides whether tracing can go off
 * (not while stepping, not while marked code is still on the stack), given
 * the frame control returns to: on sys.monitoring the leaving frame is still
 * the current one, so its caller is passed; in the chain it is gone, and the
 * callback finds its caller itself. */
static void observe_exit(PyCodeObject *code, void *ctx) {
    PyThreadState *ts;
    PyObject *back = NULL;
    (void)code;
    (void)ctx;
    if (!ours() || S.depth == 0)
        return;
    ts = PyThreadState_Get();
    if (--S.depth > 0 || ts->c_traceobj != S.tracer || S.exit == NULL)
        return;
    if (S.monitored) {
        PyFrameObject *f = PyEval_GetFrame();
        back = f != NULL ? (PyObject *)PyFrame_GetBack(f) : NULL; /* new reference */
    }
    call_callback(ts, S.exit, back != NULL ? back : (S.monitored ? Py_False : Py_None)); /* False: no caller */
    Py_XDECREF(back);
}

static int ensure_slot(void) {
    if (S.have_slot)
        return 0;
    if (coextra_slot_reserve("coextra_debugger", free_mark, NULL, &S.slot) < 0)
        return -1;
    S.have_slot = 1;
    return 0;
}

static int check_code(PyObject *code) {
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "expected a code object, not %.100s", Py_TYPE(code)->tp_name);
        return -1;
    }
    return 0;
}

/* install(enter, exit, tracer, thread_id): add the hook (once), set the
 * callbacks and the debugged thread, activate. */
static PyObject *install(PyObject *m, PyObject *args) {
    PyObject *enter, *exit_, *tracer;
    unsigned long thread;
    (void)m;
    if (!PyArg_ParseTuple(args, "OOOk:install", &enter, &exit_, &tracer, &thread))
        return NULL;
    if (!PyCallable_Check(enter) || !PyCallable_Check(exit_)) {
        PyErr_SetString(PyExc_TypeError, "install: enter and exit must be callable");
        return NULL;
    }
    if (ensure_slot() < 0)
        return NULL;
    if (S.hook == NULL) {
        coextra_observer_def def;
        int monitored;
        def.name = "coextra_debugger";
        def.priority = COEXTRA_PRIORITY_DEBUGGER;
        def.on_enter = observe_enter;
        def.on_exit = observe_exit;
        def.ctx = NULL;
        def.only = S.slot;
        if (coextra_observer_add(&def, &S.hook) < 0) {
            S.hook = NULL;
            return NULL;
        }
        if ((monitored = coextra_hook_is_monitored(S.hook)) < 0)
            return NULL;
        S.monitored = monitored;
        S.depth = 0;
    } else if (coextra_hook_set_active(S.hook, 1) < 0) {
        return NULL;
    }
    S.active = 1;
    Py_INCREF(enter);
    Py_INCREF(exit_);
    Py_INCREF(tracer);
    Py_XSETREF(S.enter, enter);
    Py_XSETREF(S.exit, exit_);
    Py_XSETREF(S.tracer, tracer);
    S.thread = thread;
    Py_RETURN_NONE;
}

static PyObject *set_active(PyObject *m, PyObject *arg) {
    int flag = PyObject_IsTrue(arg);
    (void)m;
    if (flag < 0)
        return NULL;
    if (S.hook != NULL && coextra_hook_set_active(S.hook, flag) < 0)
        return NULL;
    S.active = S.hook != NULL && flag;
    Py_RETURN_NONE;
}

/* uninstall(): remove the hook, release the slot (unmarks everything). */
static PyObject *uninstall(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    if (S.hook != NULL) {
        coextra_hook *h = S.hook;
        S.hook = NULL;
        if (coextra_hook_remove(h) < 0)
            return NULL;
    }
    S.active = 0;
    if (S.have_slot) {
        S.have_slot = 0;
        if (coextra_slot_release(S.slot) < 0)
            return NULL;
    }
    Py_CLEAR(S.enter);
    Py_CLEAR(S.exit);
    Py_CLEAR(S.tracer);
    Py_RETURN_NONE;
}

static PyObject *mark(PyObject *m, PyObject *code) {
    (void)m;
    if (check_code(code) < 0 || ensure_slot() < 0)
        return NULL;
    if (coextra_slot_set(code, S.slot, (void *)&MARKED) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Whether code is marked: 1 or 0, or -1 with TypeError if it is not a code object. */
static int marked(PyObject *code) {
    if (check_code(code) < 0)
        return -1;
    return S.have_slot && coextra_slot_get(code, S.slot) != NULL;
}

static PyObject *unmark(PyObject *m, PyObject *code) {
    int was = marked(code);
    (void)m;
    if (was < 0 || (was && coextra_slot_clear(code, S.slot) < 0))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *is_marked(PyObject *m, PyObject *code) {
    int is = marked(code);
    (void)m;
    return is < 0 ? NULL : PyBool_FromLong(is);
}

static PyObject *stats(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return Py_BuildValue("{s:O,s:O,s:O,s:l,s:K,s:K}", "installed", S.hook ? Py_True : Py_False, "active",
                         S.active ? Py_True : Py_False, "monitored", S.monitored ? Py_True : Py_False, "depth",
                         S.depth, "frames", S.frames, "enters", S.enters);
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS,
     "install(enter, exit, tracer, thread_id): add/activate the observer; enter(frame)/exit(frame) are called "
     "around marked frames of that thread when its trace function is not / is `tracer`"},
    {"set_active", set_active, METH_O, "set_active(flag): (de)activate the hook (inactive: zero cost)"},
    {"uninstall", uninstall, METH_NOARGS, "remove the hook and release the slot (unmarks all code)"},
    {"mark", mark, METH_O, "mark(code): frames of this code object reach the hook"},
    {"unmark", unmark, METH_O, "unmark(code)"},
    {"is_marked", is_marked, METH_O, "is_marked(code) -> bool"},
    {"stats", stats, METH_NOARGS, "stats() -> dict(installed, active, monitored, depth, frames, enters)"},
    {NULL, NULL, 0, NULL}};

/* Multi-phase init, as every coextra example; the state is process-wide
 * (S), so only the first interpreter that runs this may use it. */
static int exec_module(PyObject *m) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    (void)m;
    if (g_interp != NULL && g_interp != interp) {
        PyErr_SetString(PyExc_ImportError,
                        "coextra_debugger: already loaded by another interpreter (its state is process-wide)");
        return -1;
    }
    if (coextra_import() < 0)
        return -1;
    g_interp = interp;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)exec_module},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED}, /* process-wide state */
#endif
    {0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "coextra_debugger._debugger",
                                    "Native half of coextra_debugger (slot + eval-frame hook).", 0, methods,
                                    module_slots, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__debugger(void) { return PyModuleDef_Init(&module_def); }
