// monitor.cpp: observers on sys.monitoring (3.12+): one tool id, local events on marked code, balanced enter/exit.
//
// Why: any eval-frame function, even one that does nothing, costs the whole
// program on 3.11+ (no Python-to-Python call inlining, no call
// specialisation, C stack for every call).  sys.monitoring (PEP 669) has no
// such cost for code it does not watch: local events instrument one code
// object and leave every other frame alone.  An observer that watches only
// the code holding a value in its `only` slot therefore runs here, on the
// local events of exactly that code, and coextra installs no eval-frame
// function for it (hooks.cpp leaves monitored observers out of its snapshots).
//
// Events: a frame starts or resumes with PY_START, PY_RESUME or PY_THROW (a
// throw() into a suspended generator), and leaves with PY_RETURN, PY_YIELD or
// PY_UNWIND (an exception).  PY_THROW and PY_UNWIND can be local events only
// from 3.15 on; on 3.12-3.14 they are global, so while any monitored observer
// is active their callbacks run for every frame that unwinds or is thrown
// into, and return at the first test for code nobody marked.
//
// Balance: which observers a frame's exit reaches is decided at its entry
// and kept on a per-thread stack (Entered): a value stored or cleared while
// the frame runs takes effect at the next entry, and every entry gets its
// exit, even from an observer removed or paused since (as an eval-frame
// hook's own code runs on after its coextra_eval_next: ctx must stay valid
// until the frames it entered have left).  So that the exit event comes, a
// code object's events stay on while any of its frames is in flight
// (Block::in_flight) and go off at its last exit.  Should an exit be missed
// anyway, the frame is finished, late, at the next exit further out.
//
// Monitoring callbacks run with the thread's tracing flag raised: no event
// fires for code an observer's callback runs, so observers never see
// frames of their own callbacks (or of another observer's).
#include "api.hpp"

#include <algorithm>

namespace coextra {
namespace {

#if PY_VERSION_HEX >= 0x030C0000
constexpr bool kMonitoring = true;
#else
constexpr bool kMonitoring = false;
#endif

// The ids coextra may take, in order: never the conventional DEBUGGER_ID 0,
// COVERAGE_ID 1, PROFILER_ID 2 or OPTIMIZER_ID 5.
constexpr int kToolIds[] = {4, 3};

// The events, by their names in sys.monitoring.events (their numbers move
// between versions: 3.14 inserted BRANCH_LEFT/RIGHT before the exception
// events), read when the tool id is taken: entering, then leaving a frame.
constexpr const char *kEnterNames[] = {"PY_START", "PY_RESUME", "PY_THROW"};
constexpr const char *kExitNames[] = {"PY_RETURN", "PY_YIELD", "PY_UNWIND"};
// 3.15 lets the exception events (PY_THROW, PY_UNWIND) be local.
constexpr bool kLocalExceptionEvents = PY_VERSION_HEX >= 0x030F0000;

// Read sys.monitoring.events; -1 with an error set.
int read_events(PyObject *mon, MonEvents *ev) {
    PyObject *events = PyObject_GetAttrString(mon, "events");
    if (events == nullptr)
        return -1;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 3; i++) {
            PyObject *v = PyObject_GetAttrString(events, pass == 0 ? kEnterNames[i] : kExitNames[i]);
            long n = v != nullptr ? PyLong_AsLong(v) : -1;
            Py_XDECREF(v);
            if (n == -1 && PyErr_Occurred()) {
                Py_DECREF(events);
                return -1;
            }
            (pass == 0 ? ev->enter : ev->exit)[i] = n;
        }
    Py_DECREF(events);
    const long exceptions = ev->enter[2] | ev->exit[2]; // PY_THROW, PY_UNWIND
    const long all = ev->enter[0] | ev->enter[1] | ev->exit[0] | ev->exit[1] | exceptions;
    ev->local = kLocalExceptionEvents ? all : all & ~exceptions;
    ev->global = kLocalExceptionEvents ? 0 : exceptions;
    return 0;
}

bool any_monitored_observer(const Runtime *rt) noexcept;
void release_tool(Runtime *rt) noexcept;

// A frame whose observers were entered, on this thread.
struct Entered {
    PyObject *code; // strong: the exit, even a late one, gets a live code object
    Runtime *rt;    // holds a reference
    uint32_t first; // its observers are t_hooks[first, first + count), each holding a reference
    uint32_t count;
};
thread_local Vector<Entered> t_frames;
thread_local Vector<HookRec *> t_hooks;

void enter_code(PyObject *code) {
    if (!PyCode_Check(code))
        return;
    Runtime *rt = runtime_for(PyInterpreterState_Get());
    if (rt == nullptr || rt->mon_hooks.empty())
        return;
    Block *b = get_block(rt, code);
    if (b == nullptr || b->n_values == 0)
        return;
    const std::size_t first = t_hooks.size();
    try {
        for (HookRec *h : rt->mon_hooks)
            if (block_may_hold(b, h->only_bit) && entry_holds(b, h->only))
                t_hooks.push_back(h);
        if (t_hooks.size() == first)
            return;
        t_frames.push_back(Entered{code, rt, static_cast<uint32_t>(first),
                                   static_cast<uint32_t>(t_hooks.size() - first)});
    } catch (const std::bad_alloc &) {
        t_hooks.resize(first); // no entry, hence no exit either: still balanced
        return;
    }
    Py_INCREF(code);
    rt->refs++;
    b->in_flight++;
    rt->mon_in_flight++;
    const std::size_t end = t_hooks.size();
    for (std::size_t i = first; i < end; i++)
        t_hooks[i]->refs++;
    // No event fires while an observer runs (the tracing flag), so nothing
    // pushes onto the stacks meanwhile: indices stay valid.  An observer that
    // an earlier one removed or paused just now is not entered, and so gets
    // no exit either (nullptr in its place).
    for (std::size_t i = first; i < end; i++) {
        HookRec *h = t_hooks[i];
        if (h->removed || !h->active) {
            t_hooks[i] = nullptr;
            hook_decref(h);
        } else if (h->on_enter != nullptr) {
            call_observer(h->on_enter, code, h->obs_ctx);
        }
    }
}

// The frame left: one fewer in flight, and the code's events off if that
// was the last one and nothing watched is left in it (see monitor_unwatch).
void left(Runtime *rt, PyObject *code) noexcept {
    Block *b = get_block(rt, code);
    if (b == nullptr || b->in_flight == 0)
        return;
    rt->mon_in_flight--;
    if (--b->in_flight == 0)
        monitor_unwatch(rt, b);
    if (rt->mon_in_flight == 0 && !any_monitored_observer(rt))
        release_tool(rt); // the last frame of the last observer, removed meanwhile
}

// Pop the innermost entered frame: its exits, innermost observer first.
void finish_top() {
    const Entered e = t_frames.back();
    t_frames.pop_back();
    for (std::size_t i = e.first + e.count; i-- > e.first;) {
        HookRec *h = t_hooks[i];
        if (h != nullptr && h->on_exit != nullptr)
            call_observer(h->on_exit, e.code, h->obs_ctx);
    }
    for (std::size_t i = e.first; i < e.first + e.count; i++)
        if (t_hooks[i] != nullptr)
            hook_decref(t_hooks[i]);
    t_hooks.resize(e.first);
    left(e.rt, e.code);
    Py_DECREF(e.code);
    runtime_decref(e.rt);
}

void exit_code(PyObject *code) {
    // The common case for a global PY_UNWIND (3.12-3.14): nothing entered.
    std::size_t k = t_frames.size();
    while (k > 0 && t_frames[k - 1].code != code)
        k--;
    if (k == 0)
        return; // no entry for this frame (marked while it ran): no exit
    // Frames above it left without an event (their marks went while they
    // ran): finish them first, as they would have been.
    while (t_frames.size() >= k)
        finish_top();
}

PyObject *enter_cb(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs >= 1)
        enter_code(args[0]);
    Py_RETURN_NONE;
}

PyObject *exit_cb(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs >= 1)
        exit_code(args[0]);
    Py_RETURN_NONE;
}

PyMethodDef g_enter_def = {"coextra_observers_enter", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(enter_cb)),
                           METH_FASTCALL, "coextra: observers' on_enter for a frame of marked code"};
PyMethodDef g_exit_def = {"coextra_observers_exit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(exit_cb)),
                          METH_FASTCALL, "coextra: observers' on_exit for a frame of marked code"};

int set_local_events(Runtime *rt, PyObject *code, long events) {
    PyObject *r = PyObject_CallMethod(rt->mon_module, "set_local_events", "iOl", rt->mon_tool, code, events);
    Py_XDECREF(r);
    return r == nullptr ? -1 : 0;
}

int set_global_events(Runtime *rt, long events) {
    PyObject *r = PyObject_CallMethod(rt->mon_module, "set_events", "il", rt->mon_tool, events);
    Py_XDECREF(r);
    return r == nullptr ? -1 : 0;
}

// The callables stay alive as long as the runtime (Runtime::mon_callbacks),
// not just while registered: the tool id may be given back from inside one
// of them (the last frame of an observer removed meanwhile, `left`), and
// unregistering must not free the function object that is running.
int register_callbacks(Runtime *rt, bool on) {
    for (int pass = 0; pass < 2; pass++) {
        PyObject *&fn = rt->mon_callbacks[pass];
        if (on && fn == nullptr && (fn = PyCFunction_New(pass == 0 ? &g_enter_def : &g_exit_def, nullptr)) == nullptr)
            return -1;
        for (long ev : pass == 0 ? rt->mon_events.enter : rt->mon_events.exit) {
            PyObject *r = PyObject_CallMethod(rt->mon_module, "register_callback", "ilO", rt->mon_tool, ev,
                                              on ? fn : Py_None);
            if (r == nullptr)
                return -1;
            Py_DECREF(r);
        }
    }
    return 0;
}

// Turn the events of b's code on or off as monitor_wants says.
int sync_block(Runtime *rt, Block *b) {
    const bool want = monitor_wants(rt, b) || b->in_flight > 0; // see `left`
    if (want == b->monitored)
        return 0;
    if (set_local_events(rt, b->code, want ? rt->mon_events.local : 0) < 0)
        return -1;
    b->monitored = want;
    return 0;
}

bool any_monitored_observer(const Runtime *rt) noexcept {
    for (auto &kv : rt->hooks)
        if (kv.second->monitored && !kv.second->removed)
            return true;
    return false;
}

// Give the tool id back: no events, no callbacks, no local events left.
// Errors are cleared: this runs on removal paths that must not fail.
void release_tool(Runtime *rt) noexcept {
    if (rt->mon_tool < 0)
        return;
    PendingError pending;
    for (Block *b = rt->blocks; b != nullptr; b = b->next)
        if (b->monitored) {
            if (set_local_events(rt, b->code, 0) < 0)
                PyErr_Clear();
            b->monitored = false;
        }
    if (set_global_events(rt, 0) < 0 || register_callbacks(rt, false) < 0)
        PyErr_Clear();
    PyObject *r = PyObject_CallMethod(rt->mon_module, "free_tool_id", "i", rt->mon_tool);
    if (r == nullptr)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(rt->mon_module);
    rt->mon_tool = -1;
    pending.restore();
}

} // namespace

bool monitor_wants(const Runtime *rt, const Block *b) noexcept {
    if (b->n_values == 0)
        return false;
    for (const HookRec *h : rt->mon_hooks)
        if (block_may_hold(b, h->only_bit) && entry_holds(b, h->only))
            return true;
    return false;
}

int monitor_take_tool(Runtime *rt) {
    if (!kMonitoring)
        return 0;
    if (rt->mon_tool >= 0)
        return 1;
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == nullptr)
        return -1;
    PyObject *mon = PyObject_GetAttrString(sys, "monitoring");
    Py_DECREF(sys);
    if (mon == nullptr)
        return -1;
    MonEvents events;
    if (read_events(mon, &events) < 0) {
        Py_DECREF(mon);
        return -1;
    }
    for (int id : kToolIds) {
        PyObject *holder = PyObject_CallMethod(mon, "get_tool", "i", id);
        if (holder == nullptr) {
            Py_DECREF(mon);
            return -1;
        }
        const bool free = holder == Py_None;
        Py_DECREF(holder);
        if (!free)
            continue;
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is", id, "coextra");
        if (r == nullptr) {
            Py_DECREF(mon);
            return -1;
        }
        Py_DECREF(r);
        rt->mon_module = mon;
        rt->mon_tool = id;
        rt->mon_events = events;
        if (register_callbacks(rt, true) < 0) {
            PendingError failure;
            release_tool(rt);
            failure.restore();
            return -1;
        }
        return 1;
    }
    Py_DECREF(mon);
    return 0; // neither id free: observers take the chain (status() says None)
}

int monitor_rebuild(Runtime *rt) {
    if (rt->mon_tool < 0)
        return 0;
    Vector<HookRec *> list;
    try {
        for (auto &kv : rt->hooks) {
            HookRec *h = kv.second;
            if (h->monitored && h->active && !h->removed)
                list.push_back(h);
        }
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return -1;
    }
    std::sort(list.begin(), list.end(), [](const HookRec *a, const HookRec *b) {
        return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
    });
    // No failure below until the list is in place.
    for (HookRec *h : list)
        h->refs++;
    list.swap(rt->mon_hooks);
    for (HookRec *h : list)
        hook_decref(h);
    for (SlotRec &s : rt->slots)
        s.watchers = 0;
    for (HookRec *h : rt->mon_hooks)
        if (SlotRec *s = lookup_slot(rt, h->only))
            s->watchers++;
    if (!any_monitored_observer(rt) && rt->mon_in_flight == 0) {
        release_tool(rt);
        return 0;
    }
    // Keep going after a failure (the other blocks still get their events
    // right) and report the first one.
    int rc = set_global_events(rt, rt->mon_hooks.empty() ? 0 : rt->mon_events.global);
    for (Block *b = rt->blocks; b != nullptr; b = b->next) {
        if (rc < 0) {
            PendingError first;
            if (sync_block(rt, b) < 0)
                PyErr_Clear();
            first.restore();
        } else {
            rc = sync_block(rt, b);
        }
    }
    return rc;
}

int monitor_set_events(Runtime *rt, Block *b, bool on) {
    return rt->mon_tool < 0 ? 0 : set_local_events(rt, b->code, on ? rt->mon_events.local : 0);
}

void monitor_unwatch(Runtime *rt, Block *b) noexcept {
    if (rt->mon_tool < 0 || !b->monitored || b->in_flight > 0 || monitor_wants(rt, b))
        return;
    PendingError pending;
    if (set_local_events(rt, b->code, 0) < 0)
        PyErr_WriteUnraisable(b->code);
    else
        b->monitored = false;
    pending.restore();
}

void monitor_close(Runtime *rt) noexcept {
    for (HookRec *h : rt->mon_hooks)
        hook_decref(h);
    rt->mon_hooks.clear();
    release_tool(rt);
    if (rt->mon_in_flight == 0) { // else frames still in flight may call them: kept (a few bytes)
        Py_CLEAR(rt->mon_callbacks[0]);
        Py_CLEAR(rt->mon_callbacks[1]);
    }
}

} // namespace coextra
