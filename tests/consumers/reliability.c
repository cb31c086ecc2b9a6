/* reliability.c: coextra_test_reliability, the C side of the reliability tests (raw C API, failing allocator, counters). */
#include <coextra/coextra.h>

#include "failalloc.h"
#include "test_module.h"
#include "test_consumer.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Built only against include/coextra/coextra.h, like any consumer.  Handles
 * live in small C tables indexed by integers chosen by the Python tests, so
 * that an operation under the failing allocator returns None (or raises) and
 * allocates nothing of its own after the coextra call: every failure the
 * sweep provokes is one of coextra's (or CPython's underneath it).
 *
 * Slot values are "tokens": addresses inside g_tokens.  The free function
 * counts frees per token, so the tests can check that each stored value was
 * freed exactly once.  Hook contexts live in g_hooks and are never freed (a
 * removed hook may still be finishing a frame on another thread).
 */

#define N_SLOTS 256
#define N_HOOKS 4096
#define N_TOKENS 65536

static coextra_slot g_slots[N_SLOTS];
static char g_tokens[N_TOKENS];
static long g_freed[N_TOKENS];
static long g_freed_total;
static long g_bad_ctx; /* free function called with a ctx that is not its slot's */
static long g_stored_total; /* successful set() of a new value (tests at exit compare) */

typedef struct hook_rec {
    coextra_hook *handle;
    long enter;
    long exit;
    int raise_mode;
} hook_rec;

static hook_rec g_hooks[N_HOOKS];

/* ---- helpers ------------------------------------------------------------- */

static int check_k(long k, long n, const char *what) {
    if (k < 0 || k >= n) {
        PyErr_Format(PyExc_IndexError, "%s index %ld out of range", what, k);
        return -1;
    }
    return 0;
}

/* The entry of g_slots / g_hooks that a one-index argument tuple names: NULL with
 * TypeError or IndexError set otherwise. */
static coextra_slot *slot_arg(PyObject *args) {
    long k;
    if (!PyArg_ParseTuple(args, "l", &k) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    return &g_slots[k];
}

static hook_rec *hook_arg(PyObject *args) {
    long j;
    if (!PyArg_ParseTuple(args, "l", &j) || check_k(j, N_HOOKS, "hook") < 0)
        return NULL;
    return &g_hooks[j];
}

/* The table, or NULL with the error coextra.h raises before coextra_import(). */
static const coextra_api *table(void) {
    if (coextra_api_ptr_ == NULL)
        coextra_not_imported_();
    return coextra_api_ptr_;
}

/* None -> NULL (bad input on purpose), anything else as is. */
static PyObject *code_or_null(PyObject *o) { return o == Py_None ? NULL : o; }

static void token_free(void *value, void *ctx) {
    char *t = (char *)value;
    if (t < g_tokens || t >= g_tokens + N_TOKENS) {
        g_bad_ctx++;
        return;
    }
    if (ctx == NULL || (coextra_slot *)ctx < g_slots || (coextra_slot *)ctx >= g_slots + N_SLOTS)
        g_bad_ctx++;
    __atomic_add_fetch(&g_freed[t - g_tokens], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_freed_total, 1, __ATOMIC_RELAXED);
}

static void *token(long i) { return i < 0 ? NULL : (void *)&g_tokens[i]; }

/* ---- slots --------------------------------------------------------------- */

/* reserve(k, name or None, free=True): g_slots[k] = the new handle. */
static PyObject *reserve(PyObject *Py_UNUSED(m), PyObject *args) {
    long k;
    PyObject *name_obj;
    int with_free = 1;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "lO|p", &k, &name_obj, &with_free) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    if (name_obj != Py_None && !(name = PyUnicode_AsUTF8(name_obj)))
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_reserve(name, with_free ? token_free : NULL, &g_slots[k], &g_slots[k]));
}

/* reserve_bytes(k, bytes): a name that need not be UTF-8. */
static PyObject *reserve_bytes(PyObject *Py_UNUSED(m), PyObject *args) {
    long k;
    const char *name;
    if (!PyArg_ParseTuple(args, "ly", &k, &name) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_reserve(name, token_free, &g_slots[k], &g_slots[k]));
}

/* reserve_null_out(name): out == NULL. */
static PyObject *reserve_null_out(PyObject *Py_UNUSED(m), PyObject *args) {
    return coextra_test_reserve_null_out(args, token_free);
}

static PyObject *handle(PyObject *Py_UNUSED(m), PyObject *args) {
    coextra_slot *s = slot_arg(args);
    return s == NULL ? NULL : coextra_test_slot_tuple(*s);
}

/* set_handle(k, index, generation): any raw value, e.g. one made elsewhere. */
static PyObject *set_handle(PyObject *Py_UNUSED(m), PyObject *args) {
    long k;
    unsigned int index, generation;
    if (!PyArg_ParseTuple(args, "lII", &k, &index, &generation) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    g_slots[k].index = index;
    g_slots[k].generation = generation;
    Py_RETURN_NONE;
}

/* set(code or None, k, token or -1 for NULL) */
static PyObject *set_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    long k, t;
    if (!PyArg_ParseTuple(args, "Oll", &code, &k, &t) || check_k(k, N_SLOTS, "slot") < 0 ||
        check_k(t < 0 ? 0 : t, N_TOKENS, "token") < 0)
        return NULL;
    if (coextra_slot_set(code_or_null(code), g_slots[k], token(t)) < 0)
        return NULL;
    if (t >= 0)
        g_stored_total++;
    Py_RETURN_NONE;
}

static PyObject *token_of(void *v) {
    char *t = (char *)v;
    if (v == NULL)
        Py_RETURN_NONE;
    if (t < g_tokens || t >= g_tokens + N_TOKENS) {
        PyErr_SetString(PyExc_AssertionError, "coextra returned a value that is not a token");
        return NULL;
    }
    return PyLong_FromLong((long)(t - g_tokens));
}

/* get(code or None, k) -> token or None: the inline fast path of coextra.h */
static PyObject *get_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    long k;
    void *v;
    if (!PyArg_ParseTuple(args, "Ol", &code, &k) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    v = coextra_slot_get(code_or_null(code), g_slots[k]);
    if (PyErr_Occurred())
        return NULL; /* the fast path must never set one: the test sees it */
    return token_of(v);
}

/* get_table(code or None, k): the table's slot_get (the path other interpreters take) */
static PyObject *get_table(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    long k;
    void *v;
    if (!PyArg_ParseTuple(args, "Ol", &code, &k) || check_k(k, N_SLOTS, "slot") < 0 || table() == NULL)
        return NULL;
    v = table()->slot_get(code_or_null(code), g_slots[k]);
    if (PyErr_Occurred())
        return NULL;
    return token_of(v);
}

static PyObject *clear_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    long k;
    if (!PyArg_ParseTuple(args, "Ol", &code, &k) || check_k(k, N_SLOTS, "slot") < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_clear(code_or_null(code), g_slots[k]));
}

static PyObject *release(PyObject *Py_UNUSED(m), PyObject *args) {
    coextra_slot *s = slot_arg(args);
    return s == NULL ? NULL : coextra_test_none_unless_failed(coextra_slot_release(*s));
}

/* live(k) -> code objects holding a value (coextra_slot_live) */
static PyObject *live(PyObject *Py_UNUSED(m), PyObject *args) {
    coextra_slot *s = slot_arg(args);
    Py_ssize_t n;
    if (s == NULL || (n = coextra_slot_live(*s)) < 0)
        return NULL;
    return PyLong_FromSsize_t(n);
}

static PyObject *freed(PyObject *Py_UNUSED(m), PyObject *args) {
    long t;
    if (!PyArg_ParseTuple(args, "l", &t) || check_k(t, N_TOKENS, "token") < 0)
        return NULL;
    return PyLong_FromLong(__atomic_load_n(&g_freed[t], __ATOMIC_RELAXED));
}

/* freed_all() -> {token: count} for every token freed at least once, plus totals */
static PyObject *freed_all(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    PyObject *d = PyDict_New();
    long t;
    if (d == NULL)
        return NULL;
    for (t = 0; t < N_TOKENS; t++) {
        if (g_freed[t] != 0) {
            PyObject *k = PyLong_FromLong(t), *v = PyLong_FromLong(g_freed[t]);
            if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0) {
                Py_XDECREF(k);
                Py_XDECREF(v);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(k);
            Py_DECREF(v);
        }
    }
    return d;
}

static PyObject *reset_freed(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    memset(g_freed, 0, sizeof g_freed);
    g_freed_total = 0;
    g_bad_ctx = 0;
    g_stored_total = 0;
    Py_RETURN_NONE;
}

static PyObject *counters(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return Py_BuildValue("{s:l,s:l,s:l}", "freed", g_freed_total, "bad_ctx", g_bad_ctx, "stored", g_stored_total);
}

/* ---- hooks --------------------------------------------------------------- */

static PyObject *count_eval(coextra_frame *f, int throwflag, void *ctx) {
    hook_rec *h = (hook_rec *)ctx;
    PyObject *r;
    __atomic_add_fetch(&h->enter, 1, __ATOMIC_RELAXED);
    if (h->raise_mode) {
        /* Finish the frame without running it, with an exception. */
        PyErr_SetString(PyExc_RuntimeError, "coextra_test_reliability: raise_mode hook");
        r = coextra_frame_return(f, NULL);
    } else {
        r = coextra_eval_next(f, throwflag);
    }
    __atomic_add_fetch(&h->exit, 1, __ATOMIC_RELAXED);
    return r;
}

/* hook_add(j, name or None, priority, only=-1, variant="ok")
 * variant: "ok", "null_def", "null_out", "null_eval", "raise" */
static PyObject *hook_add(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"j", "name", "priority", "only", "variant", NULL};
    long j, only = -1;
    int priority;
    PyObject *name_obj;
    const char *name = NULL, *variant = "ok";
    coextra_hook_def def;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "lOi|ls", kwlist, &j, &name_obj, &priority, &only, &variant) ||
        check_k(j, N_HOOKS, "hook") < 0)
        return NULL;
    if (only >= 0 && check_k(only, N_SLOTS, "slot") < 0)
        return NULL;
    if (name_obj != Py_None && !(name = PyUnicode_AsUTF8(name_obj)))
        return NULL;
    memset(&def, 0, sizeof def);
    def.name = name;
    def.priority = priority;
    def.eval = strcmp(variant, "null_eval") == 0 ? NULL : count_eval;
    def.ctx = &g_hooks[j];
    if (only >= 0)
        def.only = g_slots[only];
    g_hooks[j].raise_mode = strcmp(variant, "raise") == 0;
    if (coextra_hook_add(strcmp(variant, "null_def") == 0 ? NULL : &def,
                         strcmp(variant, "null_out") == 0 ? NULL : &g_hooks[j].handle) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *hook_remove(PyObject *Py_UNUSED(m), PyObject *args) {
    hook_rec *h = hook_arg(args);
    return h == NULL ? NULL : coextra_test_none_unless_failed(coextra_hook_remove(h->handle));
}

static PyObject *hook_set_active(PyObject *Py_UNUSED(m), PyObject *args) {
    long j;
    int active;
    if (!PyArg_ParseTuple(args, "li", &j, &active) || check_k(j, N_HOOKS, "hook") < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_hook_set_active(g_hooks[j].handle, active));
}

static PyObject *hook_get_active(PyObject *Py_UNUSED(m), PyObject *args) {
    hook_rec *h = hook_arg(args);
    int a;
    if (h == NULL || table() == NULL || (a = table()->hook_get_active(h->handle)) < 0)
        return NULL;
    return PyBool_FromLong(a);
}

/* hook_counts(j) -> (enter, exit) */
static PyObject *hook_counts(PyObject *Py_UNUSED(m), PyObject *args) {
    hook_rec *h = hook_arg(args);
    if (h == NULL)
        return NULL;
    return Py_BuildValue("(ll)", __atomic_load_n(&h->enter, __ATOMIC_RELAXED),
                         __atomic_load_n(&h->exit, __ATOMIC_RELAXED));
}

/* hook_handle(j) -> the raw handle value; hook_set_handle(j, value) stores any value */
static PyObject *hook_handle(PyObject *Py_UNUSED(m), PyObject *args) {
    hook_rec *h = hook_arg(args);
    return h == NULL ? NULL : PyLong_FromVoidPtr(h->handle);
}

static PyObject *hook_set_handle(PyObject *Py_UNUSED(m), PyObject *args) {
    long j;
    PyObject *v;
    void *p;
    if (!PyArg_ParseTuple(args, "lO", &j, &v) || check_k(j, N_HOOKS, "hook") < 0)
        return NULL;
    p = v == Py_None ? NULL : PyLong_AsVoidPtr(v);
    if (p == NULL && PyErr_Occurred())
        return NULL;
    g_hooks[j].handle = (coextra_hook *)p;
    Py_RETURN_NONE;
}

static PyObject *hook_reset(PyObject *Py_UNUSED(m), PyObject *args) {
    hook_rec *h = hook_arg(args);
    if (h == NULL)
        return NULL;
    h->enter = h->exit = 0;
    Py_RETURN_NONE;
}

/* ---- calls before coextra_import() ----------------------------------------- */

/* unimported(op) -> calls the API entry `op` as an extension that never
 * imported coextra would (the hidden table pointer NULL). */
static PyObject *unimported(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *op;
    const coextra_api *saved = coextra_api_ptr_;
    const coextra_fast_entry *saved_fast = coextra_fast_ptr_;
    PyCodeObject *code;
    int rc = 0;
    void *v = NULL;
    coextra_slot s = {1, 1}, out;
    coextra_hook_def def;
    coextra_hook *h = NULL;
    if (!PyArg_ParseTuple(args, "s", &op))
        return NULL;
    memset(&def, 0, sizeof def);
    def.name = "x";
    def.eval = count_eval;
    code = PyCode_NewEmpty("unimported.py", "unimported", 1); /* a real code object for "get" */
    if (code == NULL)
        return NULL;
    coextra_api_ptr_ = NULL;
    coextra_fast_ptr_ = &coextra_fast_none_;
    if (strcmp(op, "reserve") == 0)
        rc = coextra_slot_reserve("x", NULL, NULL, &out);
    else if (strcmp(op, "release") == 0)
        rc = coextra_slot_release(s);
    else if (strcmp(op, "set") == 0)
        rc = coextra_slot_set(Py_None, s, &g_tokens[0]);
    else if (strcmp(op, "clear") == 0)
        rc = coextra_slot_clear(Py_None, s);
    else if (strcmp(op, "get") == 0)
        v = coextra_slot_get((PyObject *)code, s);
    else if (strcmp(op, "hook_add") == 0)
        rc = coextra_hook_add(&def, &h);
    else if (strcmp(op, "hook_remove") == 0)
        rc = coextra_hook_remove(h);
    else if (strcmp(op, "hook_set_active") == 0)
        rc = coextra_hook_set_active(h, 1);
    else {
        coextra_api_ptr_ = saved;
        coextra_fast_ptr_ = saved_fast;
        Py_DECREF(code);
        PyErr_Format(PyExc_ValueError, "unknown op %s", op);
        return NULL;
    }
    coextra_api_ptr_ = saved;
    coextra_fast_ptr_ = saved_fast;
    Py_DECREF(code);
    if (strcmp(op, "get") == 0) {
        if (PyErr_Occurred())
            return NULL;
        return PyBool_FromLong(v == NULL); /* True: NULL and no error, as documented */
    }
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the failing allocator ------------------------------------------------- */

static PyObject *py_fa_install(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    fa_install();
    Py_RETURN_NONE;
}

static PyObject *py_fa_uninstall(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    fa_track(0);
    fa_uninstall();
    Py_RETURN_NONE;
}

static PyObject *py_fa_track(PyObject *Py_UNUSED(m), PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on))
        return NULL;
    fa_track(on);
    Py_RETURN_NONE;
}

/* outstanding() -> (raw, mem, obj) tracked blocks still live */
static PyObject *py_fa_outstanding(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    long r = fa_outstanding(PYMEM_DOMAIN_RAW), me = fa_outstanding(PYMEM_DOMAIN_MEM),
         o = fa_outstanding(PYMEM_DOMAIN_OBJ);
    return Py_BuildValue("(lll)", r, me, o);
}

/* fail_call(n, from_, mask, fn, *args) -> (exception or None, result, seen, failed)
 * Arms the allocator, calls fn(*args), disarms; the argument tuple is built
 * before arming, the result tuple after disarming. */
static PyObject *fail_call(PyObject *Py_UNUSED(m), PyObject *args) {
    long n;
    int from;
    unsigned int mask;
    PyObject *fn, *rest, *r, *et = NULL, *ev = NULL, *tb = NULL, *out;
    long seen, failed;
    if (PyTuple_GET_SIZE(args) < 4) {
        PyErr_SetString(PyExc_TypeError, "fail_call(n, from_, mask, fn, *args)");
        return NULL;
    }
    n = PyLong_AsLong(PyTuple_GET_ITEM(args, 0));
    from = PyObject_IsTrue(PyTuple_GET_ITEM(args, 1));
    mask = (unsigned int)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(args, 2));
    fn = PyTuple_GET_ITEM(args, 3);
    if (PyErr_Occurred())
        return NULL;
    rest = PyTuple_GetSlice(args, 4, PyTuple_GET_SIZE(args));
    if (rest == NULL)
        return NULL;
    if (!fa_.installed) {
        Py_DECREF(rest);
        PyErr_SetString(PyExc_RuntimeError, "install() first");
        return NULL;
    }
    fa_arm(n, from, mask);
    r = PyObject_Call(fn, rest, NULL);
    fa_disarm();
    seen = fa_seen();
    failed = fa_failed();
    Py_DECREF(rest);
    if (r == NULL) {
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        if (ev == NULL) {
            ev = Py_None;
            Py_INCREF(ev);
        }
        if (tb != NULL)
            PyException_SetTraceback(ev, tb);
        out = Py_BuildValue("(OOll)", ev, Py_None, seen, failed);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return out;
    }
    out = Py_BuildValue("(OOll)", Py_None, r, seen, failed);
    Py_DECREF(r);
    return out;
}

/* ---- a C callable counter (Python hooks' callbacks without Python frames) -- */

typedef struct {
    PyObject_HEAD
    long calls;
} CounterObject;

static PyObject *counter_call(PyObject *self, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw)) {
    ((CounterObject *)self)->calls++;
    Py_RETURN_NONE;
}

static PyObject *counter_value(PyObject *self, void *Py_UNUSED(c)) {
    return PyLong_FromLong(((CounterObject *)self)->calls);
}

static PyGetSetDef counter_getset[] = {{"value", counter_value, NULL, "number of calls", NULL},
                                       {NULL, NULL, NULL, NULL, NULL}};

static void counter_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot counter_slots[] = {{Py_tp_call, (void *)counter_call},
                                      {Py_tp_dealloc, (void *)counter_dealloc},
                                      {Py_tp_getset, counter_getset},
                                      {Py_tp_new, (void *)PyType_GenericNew},
                                      {Py_tp_doc, (void *)"Counter(): a callable that counts its calls."},
                                      {0, NULL}};

static PyType_Spec counter_spec = {"coextra_test_reliability.Counter", sizeof(CounterObject), 0, Py_TPFLAGS_DEFAULT,
                                   counter_slots};

/* Recorder(log, tag): calling it with x appends (tag, x) to the list log (no Python frame). */
typedef struct {
    PyObject_HEAD
    PyObject *log;
    PyObject *tag;
} RecorderObject;

static PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *Py_UNUSED(kw)) {
    PyObject *log, *tag;
    RecorderObject *self;
    if (!PyArg_ParseTuple(args, "O!O:Recorder", &PyList_Type, &log, &tag))
        return NULL;
    self = (RecorderObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(log);
    Py_INCREF(tag);
    self->log = log;
    self->tag = tag;
    return (PyObject *)self;
}

static PyObject *recorder_call(PyObject *self_, PyObject *args, PyObject *Py_UNUSED(kw)) {
    RecorderObject *self = (RecorderObject *)self_;
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "Recorder takes one argument");
        return NULL;
    }
    return coextra_test_none_unless_failed(
        coextra_test_append_new(self->log, PyTuple_Pack(2, self->tag, PyTuple_GET_ITEM(args, 0))));
}

static int recorder_traverse(PyObject *self_, visitproc visit, void *arg) {
    RecorderObject *self = (RecorderObject *)self_;
    Py_VISIT(self->log);
    Py_VISIT(self->tag);
    return 0;
}

static int recorder_clear(PyObject *self_) {
    RecorderObject *self = (RecorderObject *)self_;
    Py_CLEAR(self->log);
    Py_CLEAR(self->tag);
    return 0;
}

static void recorder_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot recorder_slots[] = {{Py_tp_call, (void *)recorder_call},
                                       {Py_tp_new, (void *)recorder_new},
                                       {Py_tp_dealloc, (void *)recorder_dealloc},
                                       {Py_tp_traverse, (void *)recorder_traverse},
                                       {Py_tp_clear, (void *)recorder_clear},
                                       {Py_tp_doc, (void *)"Recorder(log, tag): calls append (tag, arg) to log."},
                                       {0, NULL}};

static PyType_Spec recorder_spec = {"coextra_test_reliability.Recorder", sizeof(RecorderObject), 0,
                                    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, recorder_slots};

/* ---- finalization ---------------------------------------------------------- */

static int g_report_registered;

/* Runs from Py_FinalizeEx's last step: no Python API, only write(2). */
static void report_at_exit(void) {
    char buf[160];
    int n = snprintf(buf, sizeof buf, "coextra-reliability-at-exit: stored=%ld freed=%ld bad_ctx=%ld\n",
                     g_stored_total, g_freed_total, g_bad_ctx);
    if (n > 0 && write(2, buf, (size_t)n) < 0) {
        /* nothing left to report to */
    }
}

static PyObject *report_at_exit_py(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    if (!g_report_registered) {
        if (Py_AtExit(report_at_exit) < 0) {
            PyErr_SetString(PyExc_RuntimeError, "Py_AtExit failed");
            return NULL;
        }
        g_report_registered = 1;
    }
    Py_RETURN_NONE;
}

/* stash_late(obj): keep obj in the interpreter's state dict, inserted after
 * coextra's published runtime, so it dies after the runtime was closed at
 * interpreter clear (the dict is cleared in insertion order). */
static PyObject *stash_late(PyObject *Py_UNUSED(m), PyObject *obj) {
    PyObject *d = PyInterpreterState_GetDict(PyInterpreterState_Get());
    PyObject *list;
    if (d == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no interpreter dict");
        return NULL;
    }
    list = PyDict_GetItemString(d, "zz.coextra_test_reliability.late");
    if (list == NULL) {
        list = PyList_New(0);
        if (list == NULL || PyDict_SetItemString(d, "zz.coextra_test_reliability.late", list) < 0) {
            Py_XDECREF(list);
            return NULL;
        }
        Py_DECREF(list);
    }
    if (PyList_Append(list, obj) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* fast_sole() -> bool: whether coextra_slot_get takes its call-free path
 * now (the main interpreter is the process's only one). */
static PyObject *fast_sole(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    if (coextra_api_ptr_ == NULL)
        return PyErr_Format(PyExc_RuntimeError, "coextra_import() has not run");
    return PyBool_FromLong(coextra_sole_interp_(coextra_api_ptr_->fast));
}

static PyMethodDef methods[] = {
    {"fast_sole", fast_sole, METH_NOARGS, "fast_sole() -> whether coextra_slot_get reads co_extra without a call"},
    {"reserve", reserve, METH_VARARGS, "reserve(k, name or None, free=True)"},
    {"reserve_bytes", reserve_bytes, METH_VARARGS, "reserve_bytes(k, name bytes)"},
    {"reserve_null_out", reserve_null_out, METH_VARARGS, "reserve_null_out(name): out == NULL"},
    {"handle", handle, METH_VARARGS, "handle(k) -> (index, generation)"},
    {"set_handle", set_handle, METH_VARARGS, "set_handle(k, index, generation)"},
    {"set", set_value, METH_VARARGS, "set(code or None, k, token or -1)"},
    {"get", get_value, METH_VARARGS, "get(code or None, k) -> token or None (inline fast path)"},
    {"get_table", get_table, METH_VARARGS, "get_table(code or None, k) -> token or None (table path)"},
    {"clear", clear_value, METH_VARARGS, "clear(code or None, k)"},
    {"release", release, METH_VARARGS, "release(k)"},
    {"live", live, METH_VARARGS, "live(k) -> code objects holding a value"},
    {"freed", freed, METH_VARARGS, "freed(token) -> times freed"},
    {"freed_all", freed_all, METH_NOARGS, "{token: times freed}"},
    {"reset_freed", reset_freed, METH_NOARGS, "zero the free counters"},
    {"counters", counters, METH_NOARGS, "{'freed', 'bad_ctx', 'stored'}"},
    {"hook_add", (PyCFunction)(void (*)(void))hook_add, METH_VARARGS | METH_KEYWORDS,
     "hook_add(j, name or None, priority, only=-1, variant='ok')"},
    {"hook_remove", hook_remove, METH_VARARGS, "hook_remove(j)"},
    {"hook_set_active", hook_set_active, METH_VARARGS, "hook_set_active(j, flag)"},
    {"hook_get_active", hook_get_active, METH_VARARGS, "hook_get_active(j) -> bool"},
    {"hook_counts", hook_counts, METH_VARARGS, "hook_counts(j) -> (enter, exit)"},
    {"hook_handle", hook_handle, METH_VARARGS, "hook_handle(j) -> raw handle"},
    {"hook_set_handle", hook_set_handle, METH_VARARGS, "hook_set_handle(j, value or None)"},
    {"hook_reset", hook_reset, METH_VARARGS, "hook_reset(j): zero the counters"},
    {"unimported", unimported, METH_VARARGS, "unimported(op): call op with no table"},
    {"install", py_fa_install, METH_NOARGS, "install the counting/failing allocator"},
    {"uninstall", py_fa_uninstall, METH_NOARGS, "put the original allocators back"},
    {"track", py_fa_track, METH_VARARGS, "track(flag): (re)start or stop tracking live blocks"},
    {"outstanding", py_fa_outstanding, METH_NOARGS, "(raw, mem, obj) tracked live blocks"},
    {"fail_call", fail_call, METH_VARARGS, "fail_call(n, from_, mask, fn, *args)"},
    {"report_at_exit", report_at_exit_py, METH_NOARGS, "print the free counters to stderr at Py_FinalizeEx"},
    {"stash_late", stash_late, METH_O, "stash_late(obj): keep obj alive until interpreter clear"},
    {NULL, NULL, 0, NULL}};

static int add_type(PyObject *m, const char *name, PyType_Spec *spec) {
    PyObject *t = PyType_FromSpec(spec);
    if (t == NULL)
        return -1;
    if (PyModule_AddObject(m, name, t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    return 0;
}

static int exec_module(PyObject *m) {
    if (coextra_import() < 0)
        return -1;
    if (add_type(m, "Counter", &counter_spec) < 0 || add_type(m, "Recorder", &recorder_spec) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "RAW", FA_RAW) < 0 || PyModule_AddIntConstant(m, "MEM", FA_MEM) < 0 ||
        PyModule_AddIntConstant(m, "OBJ", FA_OBJ) < 0 || PyModule_AddIntConstant(m, "ALL", FA_ALL) < 0 ||
        PyModule_AddIntConstant(m, "N_SLOTS", N_SLOTS) < 0 || PyModule_AddIntConstant(m, "N_HOOKS", N_HOOKS) < 0 ||
        PyModule_AddIntConstant(m, "N_TOKENS", N_TOKENS) < 0)
        return -1;
    return 0;
}

COEXTRA_TEST_MODULE(coextra_test_reliability, methods, exec_module, NULL)
