// hooks.cpp: the hook registry (add, remove, pause), chain snapshots and their hops, and hook introspection.
#include "api.hpp"
#include "chain.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>

namespace coextra {
namespace {

// ---- handles ------------------------------------------------------------------
// A hook handle is what its owner holds as coextra_hook*.  It is a salted
// bijection of a sequence number that is never reused: a stale handle never
// names a later hook, and a guessed or forged one (1, 2, 3, ..., another
// process's) names none, so that it is refused like a stale slot handle.
// (Multiplying by an odd constant and XOR-ing a per-process salt are both
// one-to-one modulo 2^bits.)
std::atomic<uint64_t> g_hook_numbers{0};
std::atomic<uint64_t> g_hook_seq{0};

uintptr_t process_salt() noexcept {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    uint64_t x = static_cast<uint64_t>(now) ^ reinterpret_cast<uintptr_t>(&g_hook_numbers); // ASLR
    x ^= x >> 33; // spread the varying low bits upwards (splitmix64's finaliser)
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return static_cast<uintptr_t>(x);
}

uintptr_t next_handle() noexcept {
    static const uintptr_t salt = process_salt();
    for (;;) {
        const uintptr_t h = static_cast<uintptr_t>(++g_hook_numbers * 0x9E3779B97F4A7C15ULL) ^ salt;
        if (h != 0)
            return h;
    }
}

inline coextra_hook *handle_of(const HookRec *h) noexcept { return reinterpret_cast<coextra_hook *>(h->handle); }

// Outermost first: lower priority, then registration order.
inline bool runs_before(const HookRec *a, const HookRec *b) noexcept {
    return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
}

// ---- hops ---------------------------------------------------------------------
// hops[j] is hook j's own function while it takes every frame; the runtime's
// steps (dispatch.cpp) stand in for a hook that filters, that was removed or
// paused since (in-flight frames of older snapshots must not call it: its
// owner may already have released what ctx points to), and for the end of
// the snapshot.

void set_hop_eval(coextra_hop *hop, const HookRec *h) noexcept {
    if (!h->active || h->removed) {
        hop->eval = &skip_hop;
        hop->ctx = nullptr;
    } else if (h->only.generation != 0) {
        hop->eval = &filter_hop;
        hop->ctx = const_cast<HookRec *>(h);
    } else {
        hop->eval = h->eval;
        hop->ctx = h->ctx;
    }
}

void fill_hops(Chain *c) noexcept {
    for (std::size_t j = 0; j < c->n; j++) {
        set_hop_eval(&c->hops[j], c->hooks[j]);
        c->hops[j].direct = j + 1 == c->n ? c->rt->below_direct : nullptr;
    }
    c->hops[c->n] = coextra_hop{&end_hop, nullptr, nullptr};
}

// After h was removed, paused or resumed: its steps in every live snapshot.
void sync_hops(Runtime *rt, const HookRec *h) noexcept {
    for (Chain *c = rt->chains; c != nullptr; c = c->next)
        for (std::size_t j = 0; j < c->n; j++)
            if (c->hooks[j] == h)
                set_hop_eval(&c->hops[j], h);
}

// ---- snapshots ------------------------------------------------------------------

inline void chain_decref(Chain *c) noexcept {
    if (c != nullptr)
        chain_unpin(c);
}

// Whether h belongs in the chain's snapshot: active, not removed, and not an
// observer that runs on sys.monitoring instead (monitor.cpp).
inline bool in_chain(const HookRec *h) noexcept { return h->active && !h->removed && !h->monitored; }

// One allocation: the Chain, its n + 1 hops, its n hook pointers.
Chain *alloc_chain(Runtime *rt, std::size_t n) {
    static_assert(alignof(coextra_hop) == alignof(HookRec *) && alignof(Chain) >= alignof(coextra_hop),
                  "the hops and hook pointers follow the Chain without padding");
    const std::size_t hops_bytes = (n + 1) * sizeof(coextra_hop);
    auto *c = static_cast<Chain *>(PyMem_RawMalloc(sizeof(Chain) + hops_bytes + n * sizeof(HookRec *)));
    if (c == nullptr)
        return nullptr;
    c->refs = 1;
    c->n = 0;
    c->rt = rt;
    c->hops = reinterpret_cast<coextra_hop *>(c + 1);
    c->hooks = reinterpret_cast<HookRec **>(reinterpret_cast<char *>(c->hops) + hops_bytes);
    return c;
}

// Rebuild the snapshot of active hooks from the registry.  Only allocation
// can fail, and then nothing has changed.
int rebuild_chain(Runtime *rt) {
    std::size_t n = 0;
    for (auto &kv : rt->hooks)
        if (in_chain(kv.second))
            n++;
    Chain *c = nullptr;
    if (n > 0) {
        c = alloc_chain(rt, n);
        if (c == nullptr) {
            PyErr_NoMemory();
            return -1;
        }
        for (auto &kv : rt->hooks) {
            HookRec *h = kv.second;
            if (in_chain(h)) {
                c->hooks[c->n++] = h;
                h->refs++;
            }
        }
        std::sort(c->hooks, c->hooks + c->n, runs_before);
        fill_hops(c); // the last `direct` again by apply_install below if `below` changes
        // A snapshot pinned by a frame in flight may outlive the runtime's
        // capsule (the interpreter dict cleared while frames run): it holds a
        // reference, as blocks do, so that unlinking it and its hops' reads
        // of chain->rt (call_below, filter_hop) stay valid.
        rt->refs++;
        c->prev = nullptr;
        c->next = rt->chains;
        if (rt->chains)
            rt->chains->prev = c;
        rt->chains = c;
    }
    Chain *old = rt->chain;
    rt->chain = c;
    chain_decref(old);
    apply_install(rt);
    return 0;
}

// After h was removed, paused or resumed: the structure it belongs to.
int rebuild_for(Runtime *rt, const HookRec *h) { return h->monitored ? monitor_rebuild(rt) : rebuild_chain(rt); }

// ---- the registry -------------------------------------------------------------------

HookRec *checked_hook(Runtime *rt, coextra_hook *hook) {
    if (hook == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra: hook handle is NULL");
        return nullptr;
    }
    auto it = rt->hooks.find(reinterpret_cast<uintptr_t>(hook));
    if (it == rt->hooks.end()) {
        PyErr_SetString(rt->released_error,
                        "coextra: hook handle was already removed, or belongs to another interpreter");
        return nullptr;
    }
    return it->second;
}

// The live hook `hook` names in the calling interpreter (and its runtime in
// *rt_out), or nullptr with an error set.
HookRec *current_hook(coextra_hook *hook, Runtime **rt_out = nullptr) {
    Runtime *rt = current_runtime();
    if (rt_out != nullptr)
        *rt_out = rt;
    return rt == nullptr ? nullptr : checked_hook(rt, hook);
}

// An observer in the chain (no `only`, before 3.12, or no sys.monitoring tool
// id free): its on_enter and on_exit around the rest of the chain, like a
// Python-level hook.  The code object is kept across the evaluation (3.12+:
// the evaluator drops the frame's reference before it returns), and so is
// the record (a single-hook frame pins no snapshot).  As on sys.monitoring,
// every entry gets its exit, even from an observer removed meanwhile.
PyObject *observer_eval(coextra_frame *f, int throwflag, void *ctx) {
    HookRec *h = static_cast<HookRec *>(ctx);
    PyObject *code = reinterpret_cast<PyObject *>(code_of(f));
    Py_INCREF(code);
    h->refs++;
    if (h->on_enter != nullptr)
        call_observer(h->on_enter, code, h->obs_ctx);
    PyObject *r = api::eval_next(f, throwflag);
    if (h->on_exit != nullptr)
        call_observer(h->on_exit, code, h->obs_ctx);
    hook_decref(h);
    Py_DECREF(code);
    return r;
}

// What hooks and observers have in common when added.
int check_hook_def(Runtime *rt, const char *name, int priority, coextra_slot only, const char *what) {
    if (check_name(name, "hook") < 0)
        return -1;
    if (priority < COEXTRA_PRIORITY_MIN || priority > COEXTRA_PRIORITY_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: priority %d is outside %d..%d", what, priority, COEXTRA_PRIORITY_MIN,
                     COEXTRA_PRIORITY_MAX);
        return -1;
    }
    if ((only.index != 0 || only.generation != 0) && checked_slot(rt, only) == nullptr)
        return -1;
    return 0;
}

// A new record, not yet in the registry; nullptr with an error set.
// native_code: one of the owner's functions (describe_owner).
HookRec *new_hook(Runtime *rt, const char *name, int priority, coextra_slot only, uint32_t flags,
                  const void *native_code) {
    try {
        String key(name);
        auto taken = rt->hook_names.find(key);
        if (taken != rt->hook_names.end()) {
            const HookRec *holder = rt->hooks.find(taken->second)->second;
            PyErr_Format(PyExc_ValueError, "coextra: a hook named '%s' already exists (priority %d, added by %s)",
                         name, holder->priority, holder->owner.c_str());
            return nullptr;
        }
        String owner;
        if (describe_owner(flags, native_code, owner) < 0)
            return nullptr;
        HookRec *h = make<HookRec>();
        h->name.swap(key);
        h->owner.swap(owner);
        h->handle = next_handle();
        h->seq = ++g_hook_seq;
        h->priority = priority;
        h->only = only;
        h->only_bit = present_bit(only.index - 1u);
        h->flags = flags;
        return h;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return nullptr;
    }
}

// Enter h into the registry and the chain or the monitored observers.  On
// failure nothing has changed (h is freed) and an error is set.
int insert_hook(Runtime *rt, HookRec *h, coextra_hook **out) {
    bool named = false, mapped = false;
    try {
        rt->hook_names.emplace(h->name, h->handle);
        named = true;
        rt->hooks.emplace(h->handle, h);
        mapped = true;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    }
    if (mapped && rebuild_for(rt, h) == 0) {
        *out = handle_of(h);
        return 0;
    }
    if (mapped)
        rt->hooks.erase(h->handle);
    if (named)
        rt->hook_names.erase(h->name);
    if (h->monitored) {
        PendingError failure;
        if (monitor_rebuild(rt) < 0) // without h; gives the tool id back if nothing else uses it
            PyErr_Clear();
        failure.restore();
    }
    unmake(h);
    return -1;
}

// The shared start of the add functions: the calling interpreter's runtime,
// with *out cleared; nullptr with an error set.
Runtime *adding_runtime(const void *def, coextra_hook **out, const char *what) {
    if (out != nullptr)
        *out = nullptr;
    if (def == nullptr || out == nullptr) {
        PyErr_Format(PyExc_ValueError, "%s: def and out must not be NULL", what);
        return nullptr;
    }
    return current_runtime();
}

} // namespace

void hook_decref(HookRec *h) noexcept {
    if (--h->refs == 0)
        unmake(h);
}

void chain_free(Chain *c) noexcept {
    if (c->prev)
        c->prev->next = c->next;
    else
        c->rt->chains = c->next;
    if (c->next)
        c->next->prev = c->prev;
    for (std::size_t i = 0; i < c->n; i++)
        hook_decref(c->hooks[i]);
    Runtime *rt = c->rt;
    PyMem_RawFree(c);
    runtime_decref(rt); // the snapshot's reference: see rebuild_chain
}

void sync_direct(Runtime *rt) noexcept {
    for (Chain *c = rt->chains; c != nullptr; c = c->next)
        c->hops[c->n - 1].direct = rt->below_direct;
}

void runtime_close_hooks(Runtime *rt) noexcept {
    monitor_close(rt);
    for (auto &kv : rt->hooks) {
        kv.second->removed = true;
        sync_hops(rt, kv.second);
        hook_decref(kv.second);
    }
    rt->hooks.clear();
    rt->hook_names.clear();
    Chain *old = rt->chain;
    rt->chain = nullptr;
    chain_decref(old);
    apply_install(rt);
}

void call_observer(coextra_observe_fn fn, PyObject *code, void *ctx) {
    PendingError pending;
    fn(reinterpret_cast<PyCodeObject *>(code), ctx);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(code);
    pending.restore();
}

namespace api {

int hook_add_ex(const coextra_hook_def *def, uint32_t flags, coextra_hook **out) {
    RegistryLock lock;
    Runtime *rt = adding_runtime(def, out, "coextra_hook_add");
    if (rt == nullptr || check_hook_def(rt, def->name, def->priority, def->only, "coextra_hook_add") < 0)
        return -1;
    if (def->eval == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_hook_add: eval must not be NULL");
        return -1;
    }
    HookRec *h = new_hook(rt, def->name, def->priority, def->only, flags, reinterpret_cast<const void *>(def->eval));
    if (h == nullptr)
        return -1;
    h->eval = def->eval;
    h->ctx = def->ctx;
    return insert_hook(rt, h, out);
}

int hook_add(const coextra_hook_def *def, coextra_hook **out) { return hook_add_ex(def, 0, out); }

int observer_add_ex(const coextra_observer_def *def, coextra_eval_fn chain_eval, uint32_t flags,
                    coextra_hook **out) {
    RegistryLock lock;
    Runtime *rt = adding_runtime(def, out, "coextra_observer_add");
    if (rt == nullptr || check_hook_def(rt, def->name, def->priority, def->only, "coextra_observer_add") < 0)
        return -1;
    if (def->on_enter == nullptr && def->on_exit == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_observer_add: on_enter and on_exit are both NULL");
        return -1;
    }
    // With `only`, on sys.monitoring where it can (3.12+, a tool id free);
    // else in the chain.
    int monitored = 0;
    if (def->only.generation != 0 && (monitored = monitor_take_tool(rt)) < 0)
        return -1;
    const coextra_observe_fn fn = def->on_enter != nullptr ? def->on_enter : def->on_exit;
    HookRec *h = new_hook(rt, def->name, def->priority, def->only, flags, reinterpret_cast<const void *>(fn));
    if (h == nullptr) {
        if (monitored) {
            PendingError failure;
            if (monitor_rebuild(rt) < 0) // gives the tool id back if nothing else uses it
                PyErr_Clear();
            failure.restore();
        }
        return -1;
    }
    h->observer = true;
    h->monitored = monitored == 1;
    h->on_enter = def->on_enter;
    h->on_exit = def->on_exit;
    h->obs_ctx = def->ctx;
    h->eval = chain_eval != nullptr ? chain_eval : &observer_eval;
    h->ctx = chain_eval != nullptr ? def->ctx : static_cast<void *>(h);
    return insert_hook(rt, h, out);
}

int observer_add(const coextra_observer_def *def, coextra_hook **out) { return observer_add_ex(def, nullptr, 0, out); }

int hook_is_monitored(coextra_hook *hook) {
    HookRec *h = current_hook(hook);
    return h == nullptr ? -1 : (h->monitored ? 1 : 0);
}

int hook_remove(coextra_hook *hook) {
    RegistryLock lock;
    Runtime *rt = nullptr;
    HookRec *h = current_hook(hook, &rt);
    if (h == nullptr)
        return -1;
    h->removed = true;
    sync_hops(rt, h);
    if (rebuild_for(rt, h) < 0) {
        h->removed = false;
        sync_hops(rt, h);
        return -1;
    }
    rt->hooks.erase(h->handle);
    rt->hook_names.erase(h->name);
    hook_decref(h); // in-flight snapshots keep it alive, flagged removed
    return 0;
}

int hook_set_active(coextra_hook *hook, int active) {
    RegistryLock lock;
    Runtime *rt = nullptr;
    HookRec *h = current_hook(hook, &rt);
    if (h == nullptr)
        return -1;
    const bool was = h->active;
    h->active = active != 0;
    sync_hops(rt, h);
    if (was == h->active) {
        apply_install(rt); // also re-checks for displacement
        return 0;
    }
    if (rebuild_for(rt, h) < 0) {
        h->active = was;
        sync_hops(rt, h);
        return -1;
    }
    return 0;
}

int hook_get_active(coextra_hook *hook) {
    HookRec *h = current_hook(hook);
    return h == nullptr ? -1 : (h->active ? 1 : 0);
}

PyObject *hooks_info() {
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
    std::sort(all.begin(), all.end(), runs_before);
    PyObject *list = PyList_New(0);
    if (list == nullptr)
        return nullptr;
    for (HookRec *h : all) {
        PyObject *t = Py_BuildValue("(s#iOO)", h->name.data(), (Py_ssize_t)h->name.size(), h->priority,
                                    h->active ? Py_True : Py_False,
                                    (h->flags & COEXTRA_FLAG_PYTHON) ? Py_False : Py_True);
        if (append_stolen(list, t) < 0) {
            Py_DECREF(list);
            return nullptr;
        }
    }
    return list;
}

} // namespace api
} // namespace coextra
