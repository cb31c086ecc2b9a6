/* _memo.c: the engine of coextra_memo — a JIT-shaped memoizer that finishes cached calls through coextra_frame_return. */
/*
 * Built ONLY against include/ (coextra.h) and CPython's public headers.
 *
 * memoize(fn) stores a memo_entry in this module's coextra slot for
 * fn.__code__.  One native hook at COEXTRA_PRIORITY_OPTIMIZER with
 * `only` = that slot sees only frames of memoized code (the dispatcher skips
 * it for every other frame).  For each call it reads the arguments from the
 * frame before it runs (coextra_frame_arguments), and:
 *   hit   finishes the frame with coextra_frame_return(cached) — the body
 *         never runs (the frame is disposed of as each CPython version
 *         requires: caller-owned on 3.9–3.11, callee-owned on 3.12+);
 *   miss  runs it (coextra_eval_next) and stores the result; exceptions are
 *         not stored.
 * Hooks further out (debugger, profiler, Python hooks) see a hit frame enter
 * and exit like any other: they wrap us.
 */
#include <coextra/coextra.h>

/* Code flags of functions whose frames must never be skipped or cached. */
#define MEMO_GEN_FLAGS (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)

/* The value stored in the slot for a memoized code object. */
typedef struct memo_entry {
    PyObject *cache;    /* dict: call_key() -> result */
    PyObject *fn_ref;   /* weakref to the memoized function (a code object may be shared) */
    Py_ssize_t hits;
    Py_ssize_t misses;
    uint64_t id;   /* process-unique: tells a re-memoized code from the entry a miss started with */
} memo_entry;

/* Process-wide state, owned by the interpreter that loaded the module first
 * (g_interp; the module refuses to load in another, see exec_module). */
static PyInterpreterState *g_interp;
static coextra_slot g_slot;
static coextra_hook *g_hook;
static uint64_t g_next_id;

/* Slot free function: runs when the value is replaced or cleared, when the
 * code object dies (code_dealloc calls co_extra free functions before the
 * code's fields are released), and when the slot is released.  It must not
 * touch module state (which may be gone at interpreter exit). */
static void entry_free(void *value, void *ctx) {
    memo_entry *e = (memo_entry *)value;
    (void)ctx;
    if (e == NULL)
        return;
    Py_XDECREF(e->cache);
    Py_XDECREF(e->fn_ref);
    PyMem_Free(e);
}

/* A borrowed reference to the memoized function, or NULL if it died. */
static PyObject *entry_function(const memo_entry *e) {
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13 deprecates the borrowed PyWeakref_GetObject.  The function is
     * kept alive by whoever called it (or by the caller of memoize/stats),
     * so handing back a borrowed pointer after the temporary reference is
     * dropped is safe here. */
    PyObject *fn = NULL;
    if (PyWeakref_GetRef(e->fn_ref, &fn) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(fn);
    return fn;
#else
    PyObject *fn = PyWeakref_GetObject(e->fn_ref); /* borrowed; None when dead */
    return (fn == NULL || fn == Py_None) ? NULL : fn;
#endif
}

/* Is this frame a call of the memoized function itself?  Several function
 * objects can share one code object (closures made in a loop, FunctionType
 * copies with other globals); only the decorated one is cached. */
static int is_memoized_function(coextra_frame *frame, const memo_entry *e) {
    PyObject *fn = entry_function(e);
    int r;
    if (fn == NULL)
        return 0;
    r = coextra_frame_is_call_of(frame, fn);
    if (r < 0) {
        PyErr_Clear(); /* cannot tell: run the frame */
        return 0;
    }
    return r;
}

/* The cache key of a call, before its frame runs: the values bound to its
 * parameters (coextra_frame_arguments: defaults applied, keywords bound to
 * their parameters, so f(3), f(x=3) and f(3, 0) with a default 0 share a
 * key; positional, keyword-only, then the *args tuple), with the **kwargs
 * dict, when the function has one (the last value), turned into the tuple
 * of its items sorted by name, so that it hashes and f(a=1, b=2) and
 * f(b=2, a=1) share a key.  (Names are unique strings, so sorting the items
 * never compares two values.)  NULL with an exception if a step fails. */
static PyObject *call_key(coextra_frame *frame, const PyCodeObject *co) {
    PyObject *key = coextra_frame_arguments(frame), *items, *named;
    Py_ssize_t last;
    if (key == NULL || !(co->co_flags & CO_VARKEYWORDS))
        return key;
    last = PyTuple_GET_SIZE(key) - 1;
    items = PyDict_Items(PyTuple_GET_ITEM(key, last));
    if (items == NULL || PyList_Sort(items) < 0) {
        Py_XDECREF(items);
        Py_DECREF(key);
        return NULL;
    }
    named = PyList_AsTuple(items);
    Py_DECREF(items);
    /* key is a new tuple that nobody else has seen yet: its last item may
     * still be replaced (PyTuple_SetItem steals `named`, drops the dict). */
    if (named == NULL || PyTuple_SetItem(key, last, named) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    return key;
}

static PyObject *memo_eval(coextra_frame *frame, int throwflag, void *ctx) {
    PyObject *code, *key, *cached, *r;
    memo_entry *e;
    uint64_t id;
    (void)ctx;
    /* Generator/coroutine frames can never be skipped: their resumptions
     * (and throw()/close(), throwflag) belong to the generator, and on 3.11+
     * the creating call must run RETURN_GENERATOR.  memoize() refuses such
     * functions; this guard also covers code whose flags changed hands. */
    if (throwflag || coextra_frame_is_resume(frame))
        return coextra_eval_next(frame, throwflag);
    code = (PyObject *)coextra_frame_code(frame);
    if (((PyCodeObject *)code)->co_flags & MEMO_GEN_FLAGS)
        return coextra_eval_next(frame, throwflag);
    e = (memo_entry *)coextra_slot_get(code, g_slot);
    if (e == NULL || !is_memoized_function(frame, e))
        return coextra_eval_next(frame, throwflag);

    key = call_key(frame, (PyCodeObject *)code);
    if (key == NULL) {
        PyErr_Clear(); /* cannot read the arguments: just run the frame */
        e->misses++;
        return coextra_eval_next(frame, throwflag);
    }
    cached = PyDict_GetItemWithError(e->cache, key); /* borrowed */
    if (cached != NULL) {
        Py_DECREF(key);
        e->hits++;
        Py_INCREF(cached);
        /* The JIT path: the frame is finished without running; the
         * reference to `cached` is stolen. */
        return coextra_frame_return(frame, cached);
    }
    if (PyErr_Occurred()) {
        /* unhashable argument (TypeError from hash()) or a failing __eq__:
         * not cacheable, run the body */
        PyErr_Clear();
        Py_DECREF(key);
        e->misses++;
        return coextra_eval_next(frame, throwflag);
    }
    e->misses++;
    id = e->id;
    r = coextra_eval_next(frame, throwflag);
    /* The body may have cleared, unmemoized or re-memoized this code: store
     * only into the entry the call started with, if it is still there. */
    if (r != NULL) {
        e = (memo_entry *)coextra_slot_get(code, g_slot);
        if (e != NULL && e->id == id && PyDict_SetItem(e->cache, key, r) < 0)
            PyErr_Clear(); /* e.g. a key whose __eq__ raises: the result still stands */
    }
    Py_DECREF(key);
    return r;
}

/* ---- the hook is active only while something is memoized ---------------- */

/* With no memoized function nothing should pay even the `only` check: the
 * hook is deactivated and coextra then uninstalls its dispatcher (zero
 * overhead).  Code objects that die without unmemoize() leave it active
 * until the next call below notices. */
static int sync_hook(void) {
    Py_ssize_t live = coextra_slot_live(g_slot);
    if (live < 0)
        return -1;
    if (live > 0 && g_hook == NULL) {
        coextra_hook_def def;
        def.name = "coextra_memo";
        def.priority = COEXTRA_PRIORITY_OPTIMIZER;
        def.eval = memo_eval;
        def.ctx = NULL;
        def.only = g_slot;
        return coextra_hook_add(&def, &g_hook);
    }
    return coextra_hook_set_active(g_hook, live > 0);
}

/* ---- Python API ------------------------------------------------------------ */

static PyObject *code_of_function(PyObject *fn) {
    if (!PyFunction_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "coextra_memo: expected a Python function, got %.200s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    return PyFunction_GET_CODE(fn); /* borrowed */
}

static PyObject *memoize(PyObject *m, PyObject *fn) {
    PyObject *code = code_of_function(fn);
    PyCodeObject *co;
    memo_entry *e, *old;
    (void)m;
    if (code == NULL)
        return NULL;
    co = (PyCodeObject *)code;
    if (co->co_flags & MEMO_GEN_FLAGS) {
        PyErr_Format(PyExc_TypeError,
                     "coextra_memo: %R is a generator or coroutine function; its frames cannot be memoized", fn);
        return NULL;
    }
    old = (memo_entry *)coextra_slot_get(code, g_slot);
    if (old != NULL) {
        PyObject *owner = entry_function(old);
        if (owner == fn)
            goto done; /* already memoized */
        if (owner != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "coextra_memo: %R shares its code object with %R, which is already memoized", fn, owner);
            return NULL;
        }
        /* the previous owner died: the new function takes the code over */
    }
    e = (memo_entry *)PyMem_Calloc(1, sizeof(memo_entry));
    if (e == NULL)
        return PyErr_NoMemory();
    e->id = ++g_next_id;
    e->cache = PyDict_New();
    e->fn_ref = PyWeakref_NewRef(fn, NULL);
    if (e->cache == NULL || e->fn_ref == NULL) {
        entry_free(e, NULL);
        return NULL;
    }
    if (coextra_slot_set(code, g_slot, e) < 0) { /* frees `old` */
        entry_free(e, NULL);
        return NULL;
    }
done:
    if (sync_hook() < 0)
        return NULL;
    Py_INCREF(fn);
    return fn;
}

static memo_entry *entry_of(PyObject *fn) {
    PyObject *code = code_of_function(fn);
    memo_entry *e;
    if (code == NULL)
        return NULL;
    e = (memo_entry *)coextra_slot_get(code, g_slot);
    if (e == NULL || entry_function(e) != fn) {
        PyErr_Format(PyExc_ValueError, "coextra_memo: %R is not memoized", fn);
        return NULL;
    }
    return e;
}

static PyObject *stats(PyObject *m, PyObject *fn) {
    memo_entry *e = entry_of(fn);
    (void)m;
    return e ? Py_BuildValue("(nn)", e->hits, e->misses) : NULL;
}

static PyObject *clear(PyObject *m, PyObject *fn) {
    memo_entry *e = entry_of(fn);
    (void)m;
    if (e == NULL)
        return NULL;
    e->hits = e->misses = 0;
    PyDict_Clear(e->cache); /* may run arbitrary __del__: e is re-checked by callers of the hook */
    Py_RETURN_NONE;
}

static PyObject *cache_size(PyObject *m, PyObject *fn) {
    memo_entry *e = entry_of(fn);
    (void)m;
    return e ? PyLong_FromSsize_t(PyDict_GET_SIZE(e->cache)) : NULL;
}

static PyObject *is_memoized(PyObject *m, PyObject *fn) {
    PyObject *code = code_of_function(fn);
    memo_entry *e;
    (void)m;
    if (code == NULL)
        return NULL;
    e = (memo_entry *)coextra_slot_get(code, g_slot);
    return PyBool_FromLong(e != NULL && entry_function(e) == fn);
}

static PyObject *unmemoize(PyObject *m, PyObject *fn) {
    memo_entry *e = entry_of(fn);
    (void)m;
    if (e == NULL)
        return NULL;
    if (coextra_slot_clear(PyFunction_GET_CODE(fn), g_slot) < 0 || sync_hook() < 0)
        return NULL;
    Py_INCREF(fn);
    return fn;
}

static PyObject *slot_name(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    return PyUnicode_FromString("coextra_memo");
}

static PyMethodDef methods[] = {
    {"memoize", memoize, METH_O,
     "memoize(fn) -> fn: cache fn's results by positional arguments (fn itself is returned)."},
    {"unmemoize", unmemoize, METH_O, "unmemoize(fn) -> fn: stop caching and drop the cache."},
    {"stats", stats, METH_O, "stats(fn) -> (hits, misses)"},
    {"clear", clear, METH_O, "clear(fn): empty the cache and reset the counters."},
    {"cache_size", cache_size, METH_O, "cache_size(fn) -> number of cached results"},
    {"is_memoized", is_memoized, METH_O, "is_memoized(fn) -> bool"},
    {"_slot_name", slot_name, METH_NOARGS, "name of the coextra slot"},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase init, as every coextra example.  The slot and hook are
 * process-wide statics, owned by the first interpreter that runs this: they
 * are never released (code objects keep their entries until they die, the
 * free function needs no module state, and the hook's ctx is NULL), so
 * nothing dangles after a module object is gone, and executing the module
 * again (a re-import) reuses them. */
static int exec_module(PyObject *m) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    (void)m;
    if (g_interp != NULL && g_interp != interp) {
        PyErr_SetString(PyExc_ImportError,
                        "coextra_memo: already loaded by another interpreter (its state is process-wide)");
        return -1;
    }
    if (coextra_import() < 0)
        return -1;
    if (g_slot.generation == 0 && coextra_slot_reserve("coextra_memo", entry_free, NULL, &g_slot) < 0)
        return -1;
    g_interp = interp;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)exec_module},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED}, /* process-wide state */
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "coextra_memo._memo",
    "Engine of coextra_memo: a memoizing eval-frame hook (coextra PRIORITY_OPTIMIZER).", 0, methods,
    module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__memo(void) { return PyModuleDef_Init(&module_def); }
