// chain.cpp: the eval-frame hook chain: registration, copy-on-write snapshots, the dispatcher, frame views.
#include "api.hpp"

#include <algorithm>
#include <atomic>

namespace coextra {
namespace {

std::atomic<uint64_t> g_hook_ids{0};
std::atomic<uint64_t> g_hook_seq{0};

PyObject *dispatch(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag);

inline coextra_raw_eval_fn dispatcher() noexcept { return &dispatch; }

inline coextra_hook *handle_of(const HookRec *h) noexcept {
    return reinterpret_cast<coextra_hook *>(static_cast<uintptr_t>(h->id));
}

void hook_decref(HookRec *h) noexcept {
    if (--h->refs == 0)
        unmake(h);
}

void chain_decref(Chain *c) noexcept {
    if (c == nullptr || --c->refs != 0)
        return;
    for (std::size_t i = 0; i < c->n; i++)
        hook_decref(c->hooks[i]);
    PyMem_RawFree(c);
}

// Put the dispatcher in when the first hook becomes active; give back what
// was there when the last one goes, but only if the interpreter's function is
// still ours.  If another tool replaced it meanwhile we are "displaced": we
// never write our (now stale) view back over theirs.
void apply_install(Runtime *rt) noexcept {
    const bool want = rt->chain != nullptr;
    coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool ours = current == dispatcher();
    if (want && !rt->installed) {
        if (!ours) {
            rt->tail = current; // the foreign tool (or the default) becomes our tail
            coextra_fc_set_eval(rt->interp, dispatcher());
        } else if (rt->tail == nullptr) {
            rt->tail = coextra_fc_default_eval();
        }
        rt->tail_is_foreign = rt->tail != coextra_fc_default_eval();
        rt->installed = true;
    } else if (!want && rt->installed) {
        if (ours)
            coextra_fc_set_eval(rt->interp, rt->tail);
        rt->installed = false;
    }
}

// Rebuild the snapshot of active hooks from the registry.  Only allocation
// can fail, and then nothing has changed.
int rebuild_chain(Runtime *rt) noexcept {
    std::size_t n = 0;
    for (auto &kv : rt->hooks)
        if (kv.second->active && !kv.second->removed)
            n++;
    Chain *c = nullptr;
    if (n > 0) {
        c = static_cast<Chain *>(PyMem_RawMalloc(sizeof(Chain) + (n - 1) * sizeof(HookRec *)));
        if (c == nullptr) {
            PyErr_NoMemory();
            return -1;
        }
        c->refs = 1;
        c->n = 0;
        for (auto &kv : rt->hooks) {
            HookRec *h = kv.second;
            if (h->active && !h->removed) {
                c->hooks[c->n++] = h;
                h->refs++;
            }
        }
        std::sort(c->hooks, c->hooks + c->n, [](const HookRec *a, const HookRec *b) {
            return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
        });
    }
    Chain *old = rt->chain;
    rt->chain = c;
    chain_decref(old);
    apply_install(rt);
    return 0;
}

HookRec *checked_hook(Runtime *rt, coextra_hook *hook) {
    if (hook == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra: hook handle is NULL");
        return nullptr;
    }
    auto it = rt->hooks.find(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(hook)));
    if (it == rt->hooks.end()) {
        PyErr_SetString(rt->released_error,
                        "coextra: hook handle was already removed, or belongs to another interpreter");
        return nullptr;
    }
    return it->second;
}

inline PyCodeObject *code_of(coextra_frame *f) noexcept {
    if (f->code == nullptr)
        f->code = coextra_fc_code(f->raw);
    return f->code;
}

// Call the evaluator at the end of the chain.  When the tail is a foreign
// eval-frame function that chains to *its* predecessor, and that predecessor
// is us (it was installed after us, then we re-installed over it), it calls
// the dispatcher again with the same frame; tail_raw lets the dispatcher see
// that and hand the frame to CPython's evaluator instead of looping.
inline PyObject *call_tail(coextra_frame *f, int throwflag) {
    Runtime *rt = f->rt;
    f->consumed = true;
    if (rt->tail_is_foreign)
        rt->tail_raw = f->raw;
    return rt->tail(f->tstate, f->raw, throwflag);
}

// The eval-frame function coextra installs.  Per frame: one scan for the
// runtime, a refcount on the chain snapshot, no allocation, no hash lookup,
// no Python call (Python-level hooks are ordinary hooks of the bindings).
PyObject *dispatch(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    Runtime *rt = runtime_for(tstate->interp);
    if (rt == nullptr || rt->closed)
        return coextra_fc_default_eval()(tstate, raw, throwflag);
    if (rt->tail_raw != nullptr) {
        bool again = rt->tail_raw == raw;
        rt->tail_raw = nullptr;
        if (again)
            return coextra_fc_default_eval()(tstate, raw, throwflag);
    }
    Chain *c = rt->chain;
    coextra_raw_eval_fn tail = rt->tail ? rt->tail : coextra_fc_default_eval();
    if (c == nullptr)
        return tail(tstate, raw, throwflag);
    c->refs++;
    coextra_frame f{tstate, raw, rt, c, nullptr, static_cast<std::size_t>(-1), false};
    PyObject *r = api::eval_next(&f, throwflag);
    if (!f.consumed) {
        // A hook returned without delegating or returning through
        // coextra_frame_return.  On 3.12+ the frame would leak (the callee
        // owns it), so finish it exactly as frame_return does.
        r = api::frame_return(&f, r);
    }
    chain_decref(c);
    return r;
}

} // namespace

bool dispatcher_displaced(Runtime *rt) noexcept {
    return rt->installed && coextra_fc_get_eval(rt->interp) != dispatcher();
}

void runtime_close_hooks(Runtime *rt) noexcept {
    for (auto &kv : rt->hooks) {
        kv.second->removed = true;
        hook_decref(kv.second);
    }
    rt->hooks.clear();
    rt->hook_names.clear();
    Chain *old = rt->chain;
    rt->chain = nullptr;
    chain_decref(old);
    apply_install(rt);
}

namespace api {

int hook_add_ex(const coextra_hook_def *def, uint32_t flags, coextra_hook **out) noexcept {
    RegistryLock lock;
    if (out != nullptr)
        *out = nullptr;
    if (def == nullptr || out == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_hook_add: def and out must not be NULL");
        return -1;
    }
    Runtime *rt = current_runtime();
    if (rt == nullptr || check_name(def->name, "hook") < 0)
        return -1;
    if (def->eval == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_hook_add: eval must not be NULL");
        return -1;
    }
    if (def->priority < COEXTRA_PRIORITY_MIN || def->priority > COEXTRA_PRIORITY_MAX) {
        PyErr_Format(PyExc_ValueError, "coextra_hook_add: priority %d is outside %d..%d", def->priority,
                     COEXTRA_PRIORITY_MIN, COEXTRA_PRIORITY_MAX);
        return -1;
    }
    if ((def->only.index != 0 || def->only.generation != 0) && checked_slot(rt, def->only) == nullptr)
        return -1;
    HookRec *h = nullptr;
    bool named = false, mapped = false;
    try {
        String name(def->name);
        if (rt->hook_names.find(name) != rt->hook_names.end()) {
            PyErr_Format(PyExc_ValueError, "coextra: a hook named '%s' already exists", def->name);
            return -1;
        }
        h = make<HookRec>();
        h->name = name;
        h->id = ++g_hook_ids;
        h->seq = ++g_hook_seq;
        h->priority = def->priority;
        h->eval = def->eval;
        h->ctx = def->ctx;
        h->only = def->only;
        h->flags = flags;
        rt->hook_names.emplace(std::move(name), h->id);
        named = true;
        rt->hooks.emplace(h->id, h);
        mapped = true;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    }
    if (mapped && rebuild_chain(rt) == 0) {
        *out = handle_of(h);
        return 0;
    }
    if (mapped)
        rt->hooks.erase(h->id);
    if (named)
        rt->hook_names.erase(h->name);
    if (h != nullptr)
        unmake(h);
    return -1;
}

int hook_add(const coextra_hook_def *def, coextra_hook **out) noexcept { return hook_add_ex(def, 0, out); }

int hook_remove(coextra_hook *hook) noexcept {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    if (h == nullptr)
        return -1;
    h->removed = true;
    if (rebuild_chain(rt) < 0) {
        h->removed = false;
        return -1;
    }
    rt->hooks.erase(h->id);
    rt->hook_names.erase(h->name);
    hook_decref(h); // in-flight snapshots keep it alive, flagged removed
    return 0;
}

int hook_set_active(coextra_hook *hook, int active) noexcept {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    if (h == nullptr)
        return -1;
    const bool was = h->active;
    h->active = active != 0;
    if (was == h->active) {
        apply_install(rt); // also re-checks for displacement
        return 0;
    }
    if (rebuild_chain(rt) < 0) {
        h->active = was;
        return -1;
    }
    return 0;
}

int hook_get_active(coextra_hook *hook) noexcept {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    return h == nullptr ? -1 : (h->active ? 1 : 0);
}

PyObject *eval_next(coextra_frame *f, int throwflag) noexcept {
    if (f->consumed) {
        PyErr_SetString(PyExc_SystemError,
                        "coextra_eval_next: this frame was already evaluated or finished by coextra_frame_return");
        return nullptr;
    }
    Chain *c = f->chain;
    const std::size_t here = f->pos;
    for (std::size_t j = here + 1; j < c->n; j++) {
        HookRec *h = c->hooks[j];
        // Hooks removed or deactivated after this frame entered are skipped:
        // their owner may already have released what ctx points to.
        if (!h->active || h->removed)
            continue;
        if (h->only.generation != 0 && slot_get_in(f->rt, reinterpret_cast<PyObject *>(code_of(f)), h->only) == nullptr)
            continue;
        f->pos = j;
        PyObject *r = h->eval(f, throwflag, h->ctx);
        f->pos = here;
        return r;
    }
    f->pos = c->n;
    PyObject *r = call_tail(f, throwflag);
    f->pos = here;
    return r;
}

PyCodeObject *frame_code(coextra_frame *f) noexcept { return code_of(f); }
PyObject *frame_function(coextra_frame *f) noexcept { return coextra_fc_function(f->raw); }
PyObject *frame_globals(coextra_frame *f) noexcept { return coextra_fc_globals(f->raw); }
int frame_is_resume(coextra_frame *f) noexcept { return coextra_fc_is_resume(f->raw); }

PyFrameObject *frame_object(coextra_frame *f) noexcept {
    if (f->consumed) {
        PyErr_SetString(PyExc_SystemError, "coextra_frame_object: the frame is already finished");
        return nullptr;
    }
    return coextra_fc_frame_object(f->raw);
}

PyObject *frame_return(coextra_frame *f, PyObject *result) noexcept {
    if (f->consumed) {
        Py_XDECREF(result);
        PyErr_SetString(PyExc_SystemError,
                        "coextra_frame_return: this frame was already evaluated or finished");
        return nullptr;
    }
    if (coextra_fc_is_resume(f->raw)) {
        // A generator/coroutine frame belongs to its generator, which expects
        // the evaluator to run it (3.12+ asserts on the frame state it leaves
        // behind).  It cannot be skipped, so throw SystemError into it: the
        // evaluator unwinds it through its own exception handling.
        Py_XDECREF(result);
        PyErr_SetString(PyExc_SystemError,
                        "coextra_frame_return: a generator or coroutine resumption cannot be skipped");
        return call_tail(f, 1);
    }
    f->consumed = true;
    coextra_fc_dispose(f->tstate, f->raw);
    if (result == nullptr && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "coextra: a hook returned NULL without setting an exception");
    return result;
}

PyObject *hooks_info() noexcept {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    Vector<HookRec *> all;
    try {
        for (auto &kv : rt->hooks)
            all.push_back(kv.second);
    } catch (const std::bad_alloc &) {
        return PyErr_NoMemory();
    }
    std::sort(all.begin(), all.end(), [](const HookRec *a, const HookRec *b) {
        return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
    });
    PyObject *list = PyList_New(0);
    if (list == nullptr)
        return nullptr;
    for (HookRec *h : all) {
        PyObject *t = Py_BuildValue("(s#iOO)", h->name.data(), (Py_ssize_t)h->name.size(), h->priority,
                                    h->active ? Py_True : Py_False,
                                    (h->flags & COEXTRA_FLAG_PYTHON) ? Py_False : Py_True);
        if (t == nullptr || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return nullptr;
        }
        Py_DECREF(t);
    }
    return list;
}

PyObject *status_info() noexcept {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool installed = current == dispatcher();
    const bool displaced = dispatcher_displaced(rt);
    coextra_raw_eval_fn def = coextra_fc_default_eval();
    const bool foreign = rt->installed ? rt->tail != def : (current != def && !installed);
    const Py_ssize_t active = rt->chain ? static_cast<Py_ssize_t>(rt->chain->n) : 0;
    PyObject *index = rt->co_extra_index >= 0 ? PyLong_FromSsize_t(rt->co_extra_index) : (Py_INCREF(Py_None), Py_None);
    if (index == nullptr)
        return nullptr;
    return Py_BuildValue("(OOOnN)", installed ? Py_True : Py_False, displaced ? Py_True : Py_False,
                         foreign ? Py_True : Py_False, active, index);
}

} // namespace api
} // namespace coextra
