// _profiler.cpp: the engine of coextra_profiler — per-code statistics in a coextra slot, timing through a PRIORITY_PROFILER hook.
//
// Built ONLY against include/ (coextra.h): no link to libcoextra, no CPython
// internal header.  The accounting follows CPython's Modules/_lsprof.c
// (ProfilerEntry / ProfilerSubEntry / ProfilerContext), so that the numbers
// mean what cProfile's mean:
//   callcount     every evaluation of the code (a generator/coroutine
//                 resumption, including throw()/close(), is one)
//   reccallcount  evaluations that started while another evaluation of the
//                 same code was already running on this thread (recursion);
//                 primitive calls = callcount - reccallcount
//   inlinetime    time inside the code itself (pstats "tottime")
//   totaltime     time including callees, counted once per outermost
//                 evaluation (pstats "cumtime")
// and the same four per (caller, callee) pair for pstats' callers.
//
// What an eval-frame hook sees (the difference from cProfile): every
// evaluation of a Python code object (functions, methods, lambdas, class
// bodies, module code run by exec, generator/coroutine resumptions) and
// nothing else.  C functions and builtins never pass through PEP 523's
// eval-frame function, so they have no entry and their time counts as the
// calling Python function's own time.
#include <coextra/coextra.h>

#include <ctime>
#include <new>
#include <vector>

namespace {

// Code flags of the functions whose call only CREATES a generator/coroutine.
constexpr int kGenFlags = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR;

inline int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

struct Entry;

// Statistics of one (caller -> callee) pair, kept in the callee's entry
// (cProfile keeps them in the caller's; pstats wants them per callee).
struct CallerStat {
    Entry *caller;
    int64_t tt = 0; // total (cumulative) ns
    int64_t it = 0; // inline ns
    long callcount = 0;
    long reccallcount = 0;
    long recursion = 0; // evaluations of this pair currently running
};

// The value stored in the profiler's slot for one code object.  Entries are
// owned by their Profiler (a singly linked list), NOT by the code object: the
// slot's free function does nothing, so the statistics of a code object that
// dies during profiling survive until the Profile is dropped (cProfile keeps
// them too), and freeing them never races with a late slot cleanup.
struct Entry {
    Entry *next = nullptr;
    PyObject *filename = nullptr; // strong
    PyObject *name = nullptr;     // strong
    int firstlineno = 0;
    int64_t tt = 0;
    int64_t it = 0;
    long callcount = 0;
    long reccallcount = 0;
    long recursion = 0;
    std::vector<CallerStat> callers;
    std::size_t last_caller = 0; // most calls come from the same caller
};

struct Profiler;

// One running evaluation, on the C stack of the hook call that times it.
// The chain of contexts (t_current) mirrors the nesting of hook calls on this
// thread, whatever happens to the Profile meanwhile.
struct Context {
    Profiler *prof;
    Entry *entry;
    Context *previous;
    int64_t t0;
    int64_t subt; // ns spent in profiled callees
    uint64_t epoch;        // g_epoch when the evaluation started
    Py_ssize_t caller_idx; // index in entry->callers, -1 = no profiled caller
    bool flushed;          // already accounted for by disable()
};

// initial-exec: one %fs-relative load instead of a __tls_get_addr call per
// access (this module is dlopen'ed; 8 bytes fit glibc's static TLS surplus,
// which exists for exactly this).
#if defined(__GNUC__) && defined(__linux__)
__attribute__((tls_model("initial-exec")))
#endif
thread_local Context *t_current = nullptr;

struct Profiler {
    PyObject_HEAD
    coextra_slot slot;
    coextra_hook *hook;
    Entry *entries;
    unsigned long serial;
    bool enabled;
};

// The one enabled profiler of the process (like cProfile on 3.12+, which
// refuses a second active profiling tool).
Profiler *g_enabled = nullptr;
unsigned long g_serial = 0;

// Bumped by every enable(), disable() and clear(): a context whose epoch is
// still current belongs to the enabled Profile, which is alive (enable()
// holds a reference), and nothing was flushed or cleared since it started.
// Older contexts are not accounted, and their Profile is never touched: it
// may be gone (a function that disables the profiler and drops the last
// reference to it returns into our exit path).  This is what spares each
// evaluation a reference on the Profile.
uint64_t g_epoch = 1;

inline bool valid(const Context *c, const Profiler *p) noexcept {
    return c != nullptr && c->prof == p && c->epoch == g_epoch && !c->flushed;
}

void no_free(void *, void *) noexcept {}

Py_ssize_t caller_index_slow(Entry *e, Entry *caller) noexcept {
    std::size_t n = e->callers.size();
    for (std::size_t i = 0; i < n; i++) {
        if (e->callers[i].caller == caller) {
            e->last_caller = i;
            return static_cast<Py_ssize_t>(i);
        }
    }
    try {
        e->callers.push_back(CallerStat{caller});
    } catch (const std::bad_alloc &) {
        return -1; // the pair goes unrecorded; the entry's own numbers stay right
    }
    e->last_caller = n;
    return static_cast<Py_ssize_t>(n);
}

inline Py_ssize_t caller_index(Entry *e, Entry *caller) noexcept {
    const std::size_t i = e->last_caller;
    if (i < e->callers.size() && e->callers[i].caller == caller)
        return static_cast<Py_ssize_t>(i);
    return caller_index_slow(e, caller);
}

// First evaluation of `co` under this profiler: make its entry and store it
// in the slot.  Runs in the middle of a call (possibly a throw() with an
// exception pending), so the error state is preserved whatever happens.
Entry *new_entry(Profiler *p, PyCodeObject *co) noexcept {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    Entry *e = new (std::nothrow) Entry();
    if (e != nullptr) {
        // co_filename, co_name and co_firstlineno are public PyCodeObject
        // fields on 3.9–3.13 (Include/cpython/code.h).
        Py_INCREF(co->co_filename);
        e->filename = co->co_filename;
        Py_INCREF(co->co_name);
        e->name = co->co_name;
        e->firstlineno = co->co_firstlineno;
        if (coextra_slot_set(reinterpret_cast<PyObject *>(co), p->slot, e) < 0) {
            PyErr_Clear();
            Py_DECREF(e->filename);
            Py_DECREF(e->name);
            delete e;
            e = nullptr;
        } else {
            e->next = p->entries;
            p->entries = e;
        }
    }
    PyErr_Restore(et, ev, tb);
    return e;
}

// Account for one finished (or, from disable(), interrupted) evaluation.
inline void stop(Context *c, int64_t t1) noexcept {
    const int64_t tt = t1 - c->t0;
    const int64_t it = tt - c->subt;
    // Only into a live context of this Profile: with C-stack switching
    // (greenlet, gevent) t_current may point into another greenlet's stack,
    // whose memory now holds something else; reading it is harmless,
    // writing it is not.
    if (valid(c->previous, c->prof))
        c->previous->subt += tt;
    Entry *e = c->entry;
    if (--e->recursion == 0)
        e->tt += tt;
    else
        e->reccallcount++;
    e->it += it;
    e->callcount++;
    if (c->caller_idx >= 0) {
        CallerStat &s = e->callers[static_cast<std::size_t>(c->caller_idx)];
        if (--s.recursion == 0)
            s.tt += tt;
        else
            s.reccallcount++;
        s.it += it;
        s.callcount++;
    }
}

// The hook.  It wraps every evaluation: the exit path runs whether the frame
// returns, yields, or raises (eval_next returns NULL with the exception set;
// nothing below touches the error state).
PyObject *prof_eval(coextra_frame *frame, int throwflag, void *ctx) {
    Profiler *p = static_cast<Profiler *>(ctx);
    PyCodeObject *co = coextra_frame_code(frame);
    // 3.11+: calling a generator/coroutine function reaches the eval-frame
    // function with a frame whose only work is RETURN_GENERATOR (3.9/3.10 do
    // not call it at all).  cProfile counts no call there (its first call
    // event is the first resumption), so neither do we: on every version the
    // count is the number of resumptions.
    if ((co->co_flags & kGenFlags) && !coextra_frame_is_resume(frame))
        return coextra_eval_next(frame, throwflag);
    if (!p->enabled)
        return coextra_eval_next(frame, throwflag);
    Entry *e = static_cast<Entry *>(coextra_slot_get(reinterpret_cast<PyObject *>(co), p->slot));
    if (e == nullptr && (e = new_entry(p, co)) == nullptr)
        return coextra_eval_next(frame, throwflag);

    Context c;
    c.prof = p;
    c.entry = e;
    c.previous = t_current;
    c.epoch = g_epoch;
    c.subt = 0;
    c.flushed = false;
    c.caller_idx = valid(c.previous, p) ? caller_index(e, c.previous->entry) : -1;
    e->recursion++;
    if (c.caller_idx >= 0)
        e->callers[static_cast<std::size_t>(c.caller_idx)].recursion++;
    t_current = &c;
    c.t0 = now_ns();

    PyObject *r = coextra_eval_next(frame, throwflag);

    const int64_t t1 = now_ns();
    t_current = c.previous;
    if (c.epoch == g_epoch) // then p is alive and enabled: see g_epoch
        stop(&c, t1);
    return r;
}

// disable(): account for this thread's evaluations still running (cProfile's
// flush_unmatched), so that a function which disables the profiler, and its
// callers, are counted up to now; their later exits are ignored.
void flush(Profiler *p) noexcept {
    const int64_t t1 = now_ns();
    for (Context *c = t_current; c != nullptr; c = c->previous) {
        if (valid(c, p)) {
            stop(c, t1);
            c->flushed = true;
        }
    }
}

void reset_recursion(Profiler *p) noexcept {
    for (Entry *e = p->entries; e; e = e->next) {
        e->recursion = 0;
        for (auto &s : e->callers)
            s.recursion = 0;
    }
}

// ---- the Python type ------------------------------------------------------

PyObject *Profiler_new(PyTypeObject *type, PyObject *, PyObject *) {
    Profiler *p = reinterpret_cast<Profiler *>(type->tp_alloc(type, 0));
    if (p == nullptr)
        return nullptr;
    p->slot = coextra_slot{0, 0};
    p->hook = nullptr;
    p->entries = nullptr;
    p->serial = ++g_serial;
    p->enabled = false;
    return reinterpret_cast<PyObject *>(p);
}

int Profiler_init(PyObject *, PyObject *, PyObject *) {
    return 0; // accepts and ignores cProfile.Profile's (timer, timeunit, subcalls, builtins)
}

PyObject *Profiler_enable(PyObject *self, PyObject *, PyObject *) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    if (p->enabled)
        Py_RETURN_NONE;
    if (g_enabled != nullptr) {
        PyErr_SetString(PyExc_ValueError, "another coextra_profiler.Profile is already enabled");
        return nullptr;
    }
    if (p->hook != nullptr) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Profile's disable() failed to remove its hook: call disable() again first");
        return nullptr;
    }
    char name[64];
    if (p->slot.generation == 0) {
        PyOS_snprintf(name, sizeof name, "coextra_profiler.%lu", p->serial);
        if (coextra_slot_reserve(name, no_free, nullptr, &p->slot) < 0)
            return nullptr;
    }
    g_epoch++;
    reset_recursion(p);
    PyOS_snprintf(name, sizeof name, "coextra_profiler.%lu", p->serial);
    coextra_hook_def def{name, COEXTRA_PRIORITY_PROFILER, prof_eval, p, coextra_slot{0, 0}};
    if (coextra_hook_add(&def, &p->hook) < 0) {
        p->hook = nullptr;
        return nullptr;
    }
    p->enabled = true;
    g_enabled = p;
    Py_INCREF(self); // an enabled profiler stays alive, as cProfile's does under sys.setprofile
    Py_RETURN_NONE;
}

PyObject *Profiler_disable(PyObject *self, PyObject *) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    if (p->enabled) {
        flush(p);
        g_epoch++; // other threads' running evaluations are not accounted
        p->enabled = false;
        if (g_enabled == p)
            g_enabled = nullptr;
    }
    if (p->hook == nullptr)
        Py_RETURN_NONE;
    // Removing a hook from inside a hook is allowed: frames already running
    // finish through the chain they entered (our exit path runs and sees the
    // flushed/stale context).  If it fails (no memory for the new chain, or
    // called from another interpreter), the hook still runs with ctx = p:
    // keep enable()'s reference, so that p outlives it, and the handle, so
    // that calling disable() again retries.  Meanwhile it times nothing
    // (p->enabled is false).
    if (coextra_hook_remove(p->hook) < 0)
        return nullptr;
    p->hook = nullptr;
    Py_DECREF(self); // the reference taken by enable(); the caller still holds one
    Py_RETURN_NONE;
}

PyObject *Profiler_clear(PyObject *self, PyObject *) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    if (g_enabled == p)
        g_epoch++; // running evaluations started before clear() are not accounted
    // (Only the enabled Profile has running evaluations that count: those
    // of an earlier enable() went stale at its disable().)
    for (Entry *e = p->entries; e; e = e->next) {
        e->tt = e->it = 0;
        e->callcount = e->reccallcount = e->recursion = 0;
        e->callers.clear();
        e->last_caller = 0;
    }
    Py_RETURN_NONE;
}

PyObject *label_of(const Entry *e) {
    return Py_BuildValue("(OiO)", e->filename, e->firstlineno, e->name);
}

// getstats() -> [((filename, lineno, name), callcount, reccallcount,
//                 inlinetime, totaltime, [(caller_label, callcount,
//                 reccallcount, inlinetime, totaltime), ...]), ...]
// Times in seconds.  Entries never called are left out.
PyObject *Profiler_getstats(PyObject *self, PyObject *) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    PyObject *list = PyList_New(0);
    if (list == nullptr)
        return nullptr;
    for (Entry *e = p->entries; e; e = e->next) {
        if (e->callcount == 0)
            continue;
        PyObject *callers = PyList_New(0);
        if (callers == nullptr)
            goto fail;
        for (const CallerStat &s : e->callers) {
            if (s.callcount == 0)
                continue;
            PyObject *t = Py_BuildValue("(Nlldd)", label_of(s.caller), s.callcount, s.reccallcount, s.it * 1e-9,
                                        s.tt * 1e-9);
            if (t == nullptr || PyList_Append(callers, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(callers);
                goto fail;
            }
            Py_DECREF(t);
        }
        {
            PyObject *t = Py_BuildValue("(NllddN)", label_of(e), e->callcount, e->reccallcount, e->it * 1e-9,
                                        e->tt * 1e-9, callers);
            if (t == nullptr || PyList_Append(list, t) < 0) {
                Py_XDECREF(t);
                goto fail;
            }
            Py_DECREF(t);
        }
    }
    return list;
fail:
    Py_DECREF(list);
    return nullptr;
}

PyObject *Profiler_enter(PyObject *self, PyObject *) {
    PyObject *r = Profiler_enable(self, nullptr, nullptr);
    if (r == nullptr)
        return nullptr;
    Py_DECREF(r);
    Py_INCREF(self);
    return self;
}

PyObject *Profiler_exit(PyObject *self, PyObject *) {
    PyObject *r = Profiler_disable(self, nullptr);
    if (r == nullptr)
        return nullptr;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

PyObject *Profiler_get_enabled(PyObject *self, void *) {
    return PyBool_FromLong(reinterpret_cast<Profiler *>(self)->enabled);
}

PyObject *Profiler_get_slot_name(PyObject *self, void *) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    if (p->slot.generation == 0)
        Py_RETURN_NONE;
    return PyUnicode_FromFormat("coextra_profiler.%lu", p->serial);
}

void Profiler_dealloc(PyObject *self) {
    Profiler *p = reinterpret_cast<Profiler *>(self);
    // Never enabled here (enable() holds a reference).  Evaluations it timed
    // may still be running (disable() then del inside a profiled function):
    // disable() bumped g_epoch, so their exits never touch it.
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (p->hook != nullptr && coextra_hook_remove(p->hook) < 0)
        PyErr_Clear();
    p->hook = nullptr;
    // Releasing the slot empties it in every live code object; its free
    // function is a no-op, so the entries are ours to free, even if the
    // runtime is already gone at interpreter exit (then release fails and
    // the stale values are never read: the generation check rejects them).
    if (p->slot.generation != 0 && coextra_slot_release(p->slot) < 0)
        PyErr_Clear();
    p->slot = coextra_slot{0, 0};
    PyErr_Restore(et, ev, tb);
    Entry *e = p->entries;
    p->entries = nullptr;
    while (e != nullptr) {
        Entry *next = e->next;
        Py_XDECREF(e->filename);
        Py_XDECREF(e->name);
        delete e;
        e = next;
    }
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp); // instances of heap types own a reference to their type
}

PyMethodDef Profiler_methods[] = {
    {"enable", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Profiler_enable)),
     METH_VARARGS | METH_KEYWORDS,
     "enable(subcalls=True, builtins=True): start profiling (the arguments are accepted for cProfile\n"
     "compatibility; C functions are never seen by an eval-frame hook)."},
    {"disable", Profiler_disable, METH_NOARGS, "disable(): stop profiling; statistics are kept."},
    {"clear", Profiler_clear, METH_NOARGS, "clear(): forget all statistics."},
    {"getstats", Profiler_getstats, METH_NOARGS,
     "getstats() -> [(label, callcount, reccallcount, inlinetime, totaltime, callers)]"},
    {"__enter__", Profiler_enter, METH_NOARGS, nullptr},
    {"__exit__", Profiler_exit, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef Profiler_getset[] = {
    {"enabled", Profiler_get_enabled, nullptr, "True between enable() and disable()", nullptr},
    {"slot_name", Profiler_get_slot_name, nullptr, "name of this profiler's coextra slot (None before enable())",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot Profiler_slots[] = {
    {Py_tp_doc, const_cast<char *>("Profiler(): deterministic profiler of Python code through a coextra eval-frame hook.")},
    {Py_tp_new, reinterpret_cast<void *>(Profiler_new)},
    {Py_tp_init, reinterpret_cast<void *>(Profiler_init)},
    {Py_tp_dealloc, reinterpret_cast<void *>(Profiler_dealloc)},
    {Py_tp_methods, Profiler_methods},
    {Py_tp_getset, Profiler_getset},
    {0, nullptr},
};

PyType_Spec Profiler_spec = {"coextra_profiler._profiler.Profiler", sizeof(Profiler), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, Profiler_slots};

PyObject *mod_enabled_profiler(PyObject *, PyObject *) {
    PyObject *r = g_enabled ? reinterpret_cast<PyObject *>(g_enabled) : Py_None;
    Py_INCREF(r);
    return r;
}

PyMethodDef module_methods[] = {
    {"enabled_profiler", mod_enabled_profiler, METH_NOARGS, "the enabled Profile, or None"},
    {nullptr, nullptr, 0, nullptr},
};

// Multi-phase init, as every coextra example.  The only process-wide state
// is the enabled profiler and a thread-local context pointer (coextra
// handles, slots and hooks, live in each Profile object); it belongs to the
// first interpreter that runs this, and others are refused.
PyInterpreterState *g_interp = nullptr;

int exec_module(PyObject *m) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (g_interp != nullptr && g_interp != interp) {
        PyErr_SetString(PyExc_ImportError,
                        "coextra_profiler: already loaded by another interpreter (its state is process-wide)");
        return -1;
    }
    if (coextra_import() < 0)
        return -1;
    PyObject *type = PyType_FromSpec(&Profiler_spec);
    if (type == nullptr || PyModule_AddObject(m, "Profiler", type) < 0) {
        Py_XDECREF(type);
        return -1;
    }
    g_interp = interp;
    return 0;
}

PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, reinterpret_cast<void *>(exec_module)},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED}, // process-wide state
#endif
    {0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                          "coextra_profiler._profiler",
                          "Engine of coextra_profiler (statistics in a coextra slot, timing in a coextra hook).",
                          0,
                          module_methods,
                          module_slots,
                          nullptr,
                          nullptr,
                          nullptr};

} // namespace

PyMODINIT_FUNC PyInit__profiler(void) { return PyModuleDef_Init(&module_def); }
