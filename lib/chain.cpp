// chain.cpp: the eval-frame hook chain: registration, copy-on-write snapshots, the dispatcher, frame views.
#include "api.hpp"

#include <algorithm>
#include <atomic>

// GCC only (clang has no such optimize attribute): see fast_chain.
#if defined(__GNUC__) && !defined(__clang__)
#define COEXTRA_NO_SLP [[gnu::optimize("no-tree-slp-vectorize")]]
#else
#define COEXTRA_NO_SLP
#endif

namespace coextra {
namespace {

std::atomic<uint64_t> g_hook_ids{0};
std::atomic<uint64_t> g_hook_seq{0};

PyObject *dispatch(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag);
PyObject *dispatch_main(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag);

// The runtime dispatch_main serves: the main interpreter's, or g_unbound
// (none yet, or closed).  One pointer, so that a reader never pairs one
// runtime with another's path; published after the runtime is complete.
// Written only under the main interpreter's GIL (its runtime's creation and
// close, which test their own `dispatcher` first).
Runtime g_unbound; // fast_path stays dispatch_general_rt, which looks the runtime up
std::atomic<Runtime *> g_main{&g_unbound}; // internal linkage: direct loads, no GOT (see g_entries)

inline coextra_hook *handle_of(const HookRec *h) noexcept {
    return reinterpret_cast<coextra_hook *>(static_cast<uintptr_t>(h->id));
}

} // namespace

void hook_decref(HookRec *h) noexcept {
    if (--h->refs == 0)
        unmake(h);
}

namespace {

// Out of line: the dispatcher only pays for the decrement (bench: per-frame cost).
[[gnu::noinline]] void chain_free(Chain *c) noexcept {
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

inline void chain_decref(Chain *c) noexcept {
    if (c != nullptr && --c->refs == 0)
        chain_free(c);
}

// Put the dispatcher in when the first hook becomes active; give back what
// was there when the last one goes, but only if the interpreter's function is
// still ours.  If another tool replaced it meanwhile we are "displaced": we
// never write our (now stale) view back over theirs.
void apply_install_state(Runtime *rt) noexcept;

FastPath pick_fast_path(const Chain *c) noexcept;
void fill_hops(Chain *c) noexcept;
void sync_hops(Runtime *rt, const HookRec *h) noexcept;
void sync_direct(Runtime *rt) noexcept;

// The dispatcher's fast paths are open only while we are installed over
// CPython's own evaluator with a current tail, and no loop-guard mark is
// pending (tail_raw, set only with a foreign tail; cleared marks call this
// again): then a frame needs no loop guard and the tail can be called
// directly.  Otherwise every frame takes dispatch_general.
void refresh_fast(Runtime *rt) noexcept {
    const bool ok = rt->chain != nullptr && rt->installed && !rt->tail_is_foreign &&
                    !rt->tail_handed_back && rt->tail != nullptr && rt->tail_raw == nullptr;
    const HookRec *h = ok ? rt->chain->hooks[0] : nullptr;
    rt->fast_eval = ok ? h->eval : nullptr;
    rt->fast_ctx = ok ? h->ctx : nullptr;
    rt->fast_only = ok ? h->only : coextra_slot{0, 0};
    rt->fast_only_bit = ok ? h->only_bit : 0;
    rt->fast_path = ok ? pick_fast_path(rt->chain) : &dispatch_general_rt;
}

void apply_install(Runtime *rt) noexcept {
    apply_install_state(rt);
    refresh_fast(rt);
}

void apply_install_state(Runtime *rt) noexcept {
    const bool want = rt->chain != nullptr;
    coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool ours = current == rt->dispatcher;
    // A tail we have handed back owns the interpreter again and may leave at
    // any time: if our pointer comes back later (restored by a tool that had
    // captured it), what lies below is unknown, so never reinstate that tail.
    // (In-flight frames may still call it: it was current when they entered.)
    const bool tail_known = rt->tail != nullptr && !rt->tail_handed_back;
    if (want && !rt->installed) {
        if (!ours) {
            rt->tail = current; // the foreign tool (or the default) becomes our tail
            // 3.15: its specialization opt-in, which our store resets, comes
            // back with it when we hand the interpreter back.  Ours stays off:
            // with it on, an evaluator below us that runs specialized calls
            // inline would keep nested frames from the chain.
            rt->tail_allow_spec = coextra_fc_eval_allows_specialization(rt->interp);
            coextra_fc_set_eval(rt->interp, rt->dispatcher, 0);
        } else if (!tail_known) {
            rt->tail = coextra_fc_default_eval();
            rt->tail_allow_spec = 0;
        }
        rt->tail_handed_back = false;
        rt->tail_is_foreign = rt->tail != coextra_fc_default_eval();
        rt->direct_tail = rt->tail_is_foreign ? nullptr : reinterpret_cast<coextra_evaluator_fn>(rt->tail);
        sync_direct(rt);
        rt->installed = true;
    } else if (want && rt->installed && !ours && rt->tail_is_foreign && current == coextra_fc_default_eval()) {
        // Our chain ended in a foreign tool, and the interpreter now runs no
        // eval-frame function at all: that tool has left from under us,
        // putting back what it had found (CPython's evaluator) over our
        // dispatcher, as save/restore tools do (torch.compile at the end of
        // every compiled call, the perf trampoline).  Nobody displaced us:
        // take the interpreter back, with CPython's evaluator as the tail.
        rt->tail = current;
        rt->tail_allow_spec = 0;
        coextra_fc_set_eval(rt->interp, rt->dispatcher, 0);
        rt->tail_is_foreign = false;
        rt->direct_tail = reinterpret_cast<coextra_evaluator_fn>(rt->tail);
        sync_direct(rt);
    } else if (!want && rt->installed) {
        if (ours) {
            coextra_fc_set_eval(rt->interp, rt->tail, rt->tail_allow_spec);
            rt->tail_handed_back = true;
        }
        rt->installed = false;
    } else if (!want && ours) {
        // Idle, yet the interpreter's function is our dispatcher: a tool that
        // displaced us has left and "restored" the pointer it found (ours).
        // Step out as if we had been current all along: put back the tail a
        // displaced dispatcher still forwards to, or CPython's evaluator.  No
        // active hook = no eval-frame function (CPython's inlining and
        // specialisation back on 3.11+).
        if (tail_known)
            coextra_fc_set_eval(rt->interp, rt->tail, rt->tail_allow_spec);
        else
            coextra_fc_set_eval(rt->interp, coextra_fc_default_eval(), 0);
        rt->tail_handed_back = true;
    }
}

// Whether h belongs in the chain's snapshot: active, not removed, and not an
// observer that runs on sys.monitoring instead (monitor.cpp).
inline bool in_chain(const HookRec *h) noexcept { return h->active && !h->removed && !h->monitored; }

// Rebuild the snapshot of active hooks from the registry.  Only allocation
// can fail, and then nothing has changed.
int rebuild_chain(Runtime *rt) {
    std::size_t n = 0;
    for (auto &kv : rt->hooks)
        if (in_chain(kv.second))
            n++;
    Chain *c = nullptr;
    if (n > 0) {
        const std::size_t hops_end = offsetof(Chain, hops) + (n + 1) * sizeof(coextra_hop);
        static_assert(alignof(coextra_hop) == alignof(HookRec *), "the hook pointers follow the hops");
        c = static_cast<Chain *>(PyMem_RawMalloc(hops_end + n * sizeof(HookRec *)));
        if (c == nullptr) {
            PyErr_NoMemory();
            return -1;
        }
        c->refs = 1;
        c->n = 0;
        c->rt = rt;
        c->hooks = reinterpret_cast<HookRec **>(reinterpret_cast<char *>(c) + hops_end);
        for (auto &kv : rt->hooks) {
            HookRec *h = kv.second;
            if (in_chain(h)) {
                c->hooks[c->n++] = h;
                h->refs++;
            }
        }
        std::sort(c->hooks, c->hooks + c->n, [](const HookRec *a, const HookRec *b) {
            return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
        });
        fill_hops(c); // the last `direct` again by apply_install below if the tail changes
        // A snapshot pinned by a frame in flight may outlive the runtime's
        // capsule (the interpreter dict cleared while frames run): it holds a
        // reference, as blocks do, so that unlinking it and its hops' reads
        // of chain->rt (call_tail, filter_hop) stay valid.
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

// The frame's code object: one load at a fixed offset (frame_compat.h), kept
// in the view where the frame is gone once evaluated (3.12+), so that a hook
// that read it before its coextra_eval_next gets it again after.
inline PyCodeObject *code_of(coextra_frame *f) noexcept {
#if COEXTRA_FC_FRAME_OUTLIVES_EVAL
    return coextra_fc_code(raw_of(f));
#else
    if (f->code == nullptr)
        f->code = coextra_fc_code(raw_of(f));
    return f->code;
#endif
}

inline void mark_consumed(coextra_frame *f) noexcept {
    f->head.consumed = 1;
    f->head.direct = nullptr;
}

// Drop the loop-guard mark.  A mark keeps the fast paths closed (see
// refresh_fast); that only matters once the tail is CPython's own again.
inline void clear_tail_mark(Runtime *rt) noexcept {
    rt->tail_raw = nullptr;
    if (!rt->tail_is_foreign)
        refresh_fast(rt);
}

// Call rt's tail, the evaluator at the end of the chain.  When the tail is a
// foreign eval-frame function that chains to *its* predecessor, and that
// predecessor is us (it was installed after us, then we re-installed over
// it), it calls the dispatcher again with the same frame; tail_raw lets the
// dispatcher see that and hand the frame to CPython's evaluator instead of
// looping.
PyObject *call_rt_tail(Runtime *rt, PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    if (!rt->tail_is_foreign)
        return rt->tail(tstate, raw, throwflag);
    rt->tail_raw = raw;
    PyObject *r = rt->tail(tstate, raw, throwflag);
    // A foreign tail that runs the frame itself (it calls CPython's evaluator
    // rather than its predecessor, or its predecessor is not us) never comes
    // back to clear the mark; a leaf frame leaves it set.  The next frame
    // pushed at the same address (3.11+ data stack, 3.9/3.10 zombie frames:
    // the very next sibling call) would then be taken for the loop and skip
    // every hook and the foreign tool.
    clear_tail_mark(rt);
    return r;
}

// The end of the chain for a frame view.  With `direct` set it is CPython's
// evaluator, called without reading the snapshot (a single-hook frame has
// none); a frame without `direct` that is not finished is a chain frame,
// which pins its snapshot, and the snapshot its runtime.
inline PyObject *call_tail(coextra_frame *f, int throwflag) {
    coextra_evaluator_fn direct = f->head.direct;
    mark_consumed(f);
    if (direct != nullptr)
        return direct(f->head.tstate, f->head.raw, throwflag);
    return call_rt_tail(f->chain->rt, f->head.tstate, raw_of(f), throwflag);
}

// Whether `code` holds a value in `slot` (the `only` filter); bit is
// present_bit of the slot's index (HookRec::only_bit).
inline bool code_holds(const Runtime *rt, PyCodeObject *code, coextra_slot slot, uint32_t bit) noexcept {
    const Block *b = get_block(rt, reinterpret_cast<PyObject *>(code));
    return block_may_hold(b, bit) && entry_holds(b, slot);
}

// Whether hook h takes frames of this code.  Hooks removed or deactivated
// after a frame entered are skipped: their owner may already have released
// what ctx points to.  *code is fetched on first need.
inline bool takes(const Runtime *rt, const HookRec *h, coextra_raw_frame *raw, PyCodeObject **code) noexcept {
    if (!h->active || h->removed)
        return false;
    if (h->only.generation == 0)
        return true;
    if (*code == nullptr)
        *code = coextra_fc_code(raw);
    return code_holds(rt, *code, h->only, h->only_bit);
}

// The dispatcher's first hop: the first hook of the snapshot that takes this
// frame, or c->n.
inline std::size_t first_taker(const Runtime *rt, const Chain *c, coextra_raw_frame *raw,
                               PyCodeObject **code) noexcept {
    for (std::size_t j = 0; j < c->n; j++)
        if (takes(rt, c->hooks[j], raw, code))
            return j;
    return c->n;
}

// ---- hops: the steps of a snapshot (coextra_hop, read by the inline
// coextra_eval_next and by api::eval_next).  hops[j] is hook j's own function
// while it takes every frame; the runtime functions below stand in for a hook
// that filters, that was removed or paused since (in-flight frames of older
// snapshots must not call it: its owner may already have released what ctx
// points to), and for the end of the snapshot.  Each is called as the hook
// would be, with head.next already past it and head.direct set from its hop,
// and so continues exactly as that hook's coextra_eval_next would.

// A hook removed or paused since the snapshot was made: on to the next step.
PyObject *skip_hop(coextra_frame *f, int throwflag, void *) { return api::eval_next(f, throwflag); }

// A hook with `only`: its function for frames of code holding a value in the
// slot, else on to the next step.
PyObject *filter_hop(coextra_frame *f, int throwflag, void *ctx) {
    const HookRec *h = static_cast<const HookRec *>(ctx);
    if (code_holds(f->chain->rt, code_of(f), h->only, h->only_bit)) // a chain frame: see call_tail
        return h->eval(f, throwflag, h->ctx);
    return api::eval_next(f, throwflag);
}

// After the last hook, when its `direct` is not set (a foreign tail).
PyObject *tail_hop(coextra_frame *f, int throwflag, void *) { return call_tail(f, throwflag); }

// What hops[j] runs for hook h now.
inline void set_hop_eval(coextra_hop *hop, const HookRec *h) noexcept {
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
        c->hops[j].direct = j + 1 == c->n ? c->rt->direct_tail : nullptr;
    }
    c->hops[c->n] = coextra_hop{&tail_hop, nullptr, nullptr};
}

// After h was removed, paused or resumed: its steps in every live snapshot.
void sync_hops(Runtime *rt, const HookRec *h) noexcept {
    for (Chain *c = rt->chains; c != nullptr; c = c->next)
        for (std::size_t j = 0; j < c->n; j++)
            if (c->hooks[j] == h)
                set_hop_eval(&c->hops[j], h);
}

// After rt->direct_tail changed: the last hook's `direct` in every live snapshot.
void sync_direct(Runtime *rt) noexcept {
    for (Chain *c = rt->chains; c != nullptr; c = c->next)
        c->hops[c->n - 1].direct = rt->direct_tail;
}

// &f for a fast path's cold branch after the hook call, taken from the
// stack slot itself (an asm the compiler cannot fold into the &f it passed
// to the hook): otherwise GCC keeps &f in a callee-saved register across the
// call, a push/pop pair on every frame for a branch almost none take.
inline coextra_frame *view_address(coextra_frame &f) noexcept {
    coextra_frame *p;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    asm("{lea %1, %0|lea %0, %1}" : "=r"(p) : "m"(f)); // AT&T | Intel dialect
#else
    p = &f;
#endif
    return p;
}

// Whether the outermost hook returned without finishing the frame: the
// view's `consumed` compared in memory.  GCC loads it into a register and
// tests that (one more instruction per frame, for macro-op fusion); the flag
// output of an asm keeps the compare on the memory operand.
inline bool unfinished(const coextra_frame &f) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__GCC_ASM_FLAG_OUTPUTS__)
    bool zero;
    asm("{cmpl $0, %1|cmp %1, 0}" : "=@ccz"(zero) : "m"(f.head.consumed)); // AT&T | Intel
    return zero;
#else
    return f.head.consumed == 0;
#endif
}

// After the outermost hook returned: finish the frame if it neither
// delegated nor returned through coextra_frame_return (on 3.12+ the frame
// would leak: the callee owns it), exactly as frame_return does; unpin.
inline PyObject *finish_frame(coextra_frame &f, PyObject *r) {
    if (unfinished(f)) [[unlikely]]
        r = api::frame_return(view_address(f), r);
    // Unpin, reading the snapshot back from the view (no register kept
    // across the hook call for it; never NULL here).
    Chain *pinned = f.chain;
    if (--pinned->refs == 0) [[unlikely]]
        chain_free(pinned);
    return r;
}

// Run the frame through snapshot c from hook j on (j < c->n, or c->n for
// the tail alone).  Pins c for the frame's lifetime: hooks may change the
// chain, even remove themselves, while it runs.
inline PyObject *run_frame(Runtime *rt, Chain *c, PyThreadState *tstate, coextra_raw_frame *raw, int throwflag,
                           PyCodeObject *code, std::size_t j) {
    c->refs++;
    coextra_frame f{{tstate, raw, nullptr, 0, 0, nullptr}, c};
#if !COEXTRA_FC_FRAME_OUTLIVES_EVAL
    f.code = code; // the code the filters read, or nullptr: code_of's cache
#else
    (void)code;
#endif
    PyObject *r;
    if (j >= c->n) {
        r = call_tail(&f, throwflag);
    } else {
        // Hook j takes the frame (its filter was tested): its own function,
        // not its hop.
        const HookRec *h = c->hooks[j];
        f.head.direct = c->hops[j].direct;
        f.head.next = c->hops + j + 1;
        r = h->eval(&f, throwflag, h->ctx);
    }
    return finish_frame(f, r);
}

// Everything but the fast path: no runtime or a closed one, idle, a foreign
// tail (loop guard), displaced.  Out of line so that the fast path keeps few
// registers.
[[gnu::noinline]] PyObject *dispatch_general(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    Runtime *rt = runtime_for(tstate->interp);
    if (rt == nullptr || rt->closed)
        return coextra_fc_default_eval()(tstate, raw, throwflag);
    if (rt->tail_raw != nullptr) {
        bool again = rt->tail_raw == raw;
        clear_tail_mark(rt);
        if (again)
            return coextra_fc_default_eval()(tstate, raw, throwflag);
    }
    Chain *c = rt->chain;
    if (c == nullptr) {
        // Idle: only a foreign tool that captured our pointer (installed over
        // us) calls us now.  Displaced, we still forward to our tail (what the
        // tool found below us), through call_tail's loop mark in case that
        // tail chains to us as well.  A tail we handed back is not ours to
        // call: it may be the very tool calling us (we re-installed over one
        // that chains to us, then gave it back: calling it would bounce
        // between it and us forever), or gone.
        if (rt->tail == nullptr || rt->tail_handed_back)
            return coextra_fc_default_eval()(tstate, raw, throwflag);
        // call_rt_tail clears its loop mark in rt after the tail returns, and
        // the runtime's capsule may go meanwhile (no snapshot pins it here).
        rt->refs++;
        PyObject *r = call_rt_tail(rt, tstate, raw, throwflag);
        runtime_decref(rt);
        return r;
    }
    PyCodeObject *code = nullptr;
    const std::size_t j = first_taker(rt, c, raw, &code);
    if (j >= c->n && !rt->tail_is_foreign) {
        // No hook takes this frame (every active hook has `only` and this
        // code holds nothing there): straight to the evaluator, as call_tail
        // would, without a frame view or a pin on the snapshot (no Python
        // ran since it was read).
        return rt->tail(tstate, raw, throwflag);
    }
    return run_frame(rt, c, tstate, raw, throwflag, code, j);
}

// The fast paths: the dispatcher jumps to rt->fast_path, picked by
// refresh_fast for the current snapshot.  Each is out of line and reached by
// a tail call, so that dispatch() itself needs no stack frame; each reads
// the snapshot from rt (it is current: no Python ran since the dispatcher
// read rt).

// A single hook that takes every frame (the usual case: one profiler, one
// debugger).  The snapshot is not pinned: with one hook and `direct` set to
// CPython's evaluator nothing reads the chain after the hook was called
// (eval_next takes `direct`; frame_return and the frame accessors never look
// at the chain), so a hook may remove itself or change the chain and the old
// snapshot may go at once.
// (CPython's three arguments first, in the registers they arrive in.)
//
// The view is written field by field, and only what such a frame reads:
// with `direct` set until the frame is consumed, nothing reads `next` (the
// inline and the table coextra_eval_next take `direct`) or `chain` (only
// finish_frame, not on this path, and call_tail without `direct` and
// filter_hop, neither reachable here); a second coextra_eval_next or
// coextra_frame_return sees `consumed`.  Both are left unwritten: stores
// saved on every frame (docs/cpython-limitations.md, the cost table).
inline PyObject *run_single_inline(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    coextra_frame f;
    f.head.tstate = tstate;
    f.head.raw = raw;
    f.head.direct = reinterpret_cast<coextra_evaluator_fn>(rt->tail);
    f.head.consumed = 0;
    f.head.reserved_ = 0; // one 8-byte store with `consumed`
#if !COEXTRA_FC_FRAME_OUTLIVES_EVAL
    f.code = nullptr; // code_of's cache
#endif
    PyObject *r = rt->fast_eval(&f, throwflag, rt->fast_ctx);
    if (unfinished(f)) [[unlikely]]
        return api::frame_return(view_address(f), r); // see finish_frame
    return r;
}

PyObject *fast_single(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    return run_single_inline(tstate, raw, throwflag, rt);
}

// One hook with an `only` filter (a debugger with breakpoints, a JIT for
// marked code): most frames go straight to the evaluator by a tail call.
// The presence bit is tested here; the entry, which few frames reach, out of
// line (so that the skip path loads nothing it does not test).
[[gnu::noinline]] PyObject *run_single_if_held(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag,
                                               Runtime *rt, const Block *b) {
    if (!entry_holds(b, rt->fast_only))
        return rt->tail(tstate, raw, throwflag);
    return run_single_inline(tstate, raw, throwflag, rt);
}

PyObject *fast_single_filtered(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    const Block *b = get_block(rt, reinterpret_cast<PyObject *>(coextra_fc_code(raw)));
    if (!block_may_hold(b, rt->fast_only_bit))
        return rt->tail(tstate, raw, throwflag);
    return run_single_if_held(tstate, raw, throwflag, rt, b);
}

// Several hooks, the outermost without a filter: run_frame from hook 0,
// which is not the last (no `direct`).  Its hop is its own function (the
// snapshot is current, so the hook is active).  (GCC 12's SLP vectorizer
// would pair the view's `next` and `chain` stores through xmm registers: four
// instructions for two stores, on every frame.)
COEXTRA_NO_SLP PyObject *fast_chain(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    Chain *c = rt->chain;
    c->refs++;
    coextra_frame f{{tstate, raw, nullptr, 0, 0, c->hops + 1}, c};
    return finish_frame(f, c->hops[0].eval(&f, throwflag, c->hops[0].ctx));
}

// Several hooks, the outermost with a filter: the first hook of the snapshot
// that takes the frame, else straight to the evaluator.  Every hook of the
// current snapshot is active and not removed (any change rebuilds it), so
// only the filters are tested.
PyObject *fast_filtered(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    Chain *c = rt->chain;
    PyCodeObject *code = coextra_fc_code(raw);
    std::size_t j = 0;
    for (; j < c->n; j++) {
        const HookRec *h = c->hooks[j];
        if (h->only.generation == 0 || code_holds(rt, code, h->only, h->only_bit))
            break;
    }
    if (j == c->n)
        return rt->tail(tstate, raw, throwflag); // nobody takes it: straight to the evaluator
    return run_frame(rt, c, tstate, raw, throwflag, code, j);
}

FastPath pick_fast_path(const Chain *c) noexcept {
    const bool filtered = c->hooks[0]->only.generation != 0;
    if (c->n == 1)
        return filtered ? &fast_single_filtered : &fast_single;
    return filtered ? &fast_filtered : &fast_chain;
}

// 3.15: a resumed generator frame, run as any frame (by Body), then told
// to CPython as yielded or returned from the generator's own state: the
// per-thread field gen_send_ex2 reads may have been overwritten by generator
// code that hooks ran after the evaluation (frame_compat.h).  Out of line,
// so that other frames pay one byte compare (and nothing before 3.15).
template <PyObject *(*Body)(PyThreadState *, coextra_raw_frame *, int)>
[[gnu::noinline]] PyObject *run_generator(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    PyObject *r = Body(tstate, raw, throwflag);
    coextra_fc_keep_return_kind(tstate, raw);
    return r;
}

inline PyObject *dispatch_any(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    Runtime *rt;
    if (!dispatch_first(tstate->interp, &rt))
        return dispatch_general(tstate, raw, throwflag);
    return rt->fast_path(tstate, raw, throwflag, rt);
}

// The eval-frame function coextra installs on every interpreter but the main
// one (which gets dispatch_main, below).  Per frame: one compare to find the
// runtime (entry 0's, normally the main interpreter's, so a subinterpreter
// usually takes the general path's lookup), then a tail call into the path
// refresh_fast picked; with one hook and the inline coextra_eval_next, the
// hook calls the evaluator directly.  No allocation, no hash lookup, no
// Python call (Python-level hooks are ordinary hooks of the bindings).
PyObject *dispatch(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    if (coextra_fc_is_generator_frame(raw)) [[unlikely]]
        return run_generator<&dispatch_any>(tstate, raw, throwflag);
    return dispatch_any(tstate, raw, throwflag);
}

// The main interpreter's eval-frame function: dispatch() without the lookup,
// one load and a jump through the runtime's path.  It is installed only on
// the main interpreter, and CPython calls an interpreter's eval-frame
// function only for that interpreter's frames (ceval reads
// tstate->interp->eval_frame, every version since PEP 523), so the runtime
// is known without comparing interpreters.  A foreign tool installed over us
// captured this pointer from the main interpreter and must call it only for
// the main interpreter's frames, as PEP 523 means a captured function to be
// used.  A tool that keeps one captured pointer for every interpreter (a
// process-wide `prev`) and is enabled in several would run the main
// interpreter's hooks on another interpreter's frames: unsupported, and
// documented (docs/cpython-limitations.md); guarding against it would cost
// a compare on every frame, as much as the lookup this function saves.
inline PyObject *dispatch_main_any(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    Runtime *rt = g_main.load(std::memory_order_acquire);
    return rt->fast_path(tstate, raw, throwflag, rt);
}

PyObject *dispatch_main(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    if (coextra_fc_is_generator_frame(raw)) [[unlikely]]
        return run_generator<&dispatch_main_any>(tstate, raw, throwflag);
    return dispatch_main_any(tstate, raw, throwflag);
}

} // namespace

coextra_raw_eval_fn dispatcher_for(PyInterpreterState *interp) noexcept {
    return interp == PyInterpreterState_Main() ? &dispatch_main : &dispatch;
}

void bind_dispatcher(Runtime *rt) noexcept {
    // A closed runtime of the main interpreter unbound itself at close; a
    // new one (the interpreter dict's entry recreated) takes its place.
    if (rt->dispatcher == &dispatch_main)
        g_main.store(rt, std::memory_order_release);
}

// (Closing already turned the path general through refresh_fast, so the
// runtime would not be run again; this drops the pointer itself before the
// runtime can be freed.)
void unbind_dispatcher(Runtime *rt) noexcept {
    if (rt->dispatcher == &dispatch_main && g_main.load(std::memory_order_relaxed) == rt)
        g_main.store(&g_unbound, std::memory_order_release);
}

PyObject *dispatch_general_rt(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *) {
    return dispatch_general(tstate, raw, throwflag);
}

bool dispatcher_displaced(Runtime *rt) noexcept {
    return rt->installed && coextra_fc_get_eval(rt->interp) != rt->dispatcher;
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

namespace {

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
HookRec *new_hook(Runtime *rt, const char *name, int priority, coextra_slot only, uint32_t flags) {
    try {
        String key(name);
        if (rt->hook_names.find(key) != rt->hook_names.end()) {
            PyErr_Format(PyExc_ValueError, "coextra: a hook named '%s' already exists", name);
            return nullptr;
        }
        HookRec *h = make<HookRec>();
        h->name.swap(key);
        h->id = ++g_hook_ids;
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
        rt->hook_names.emplace(h->name, h->id);
        named = true;
        rt->hooks.emplace(h->id, h);
        mapped = true;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    }
    if (mapped && (h->monitored ? monitor_rebuild(rt) : rebuild_chain(rt)) == 0) {
        *out = handle_of(h);
        return 0;
    }
    if (mapped)
        rt->hooks.erase(h->id);
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

// After h was removed, paused or resumed: the structure it belongs to.
int rebuild_for(Runtime *rt, const HookRec *h) { return h->monitored ? monitor_rebuild(rt) : rebuild_chain(rt); }

} // namespace

[[gnu::noinline, gnu::cold]] static PyObject *eval_next_consumed() {
    PyErr_SetString(PyExc_SystemError,
                    "coextra_eval_next: this frame was already evaluated or finished by coextra_frame_return");
    return nullptr;
}

namespace api {

int hook_add_ex(const coextra_hook_def *def, uint32_t flags, coextra_hook **out) {
    RegistryLock lock;
    if (out != nullptr)
        *out = nullptr;
    if (def == nullptr || out == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_hook_add: def and out must not be NULL");
        return -1;
    }
    Runtime *rt = current_runtime();
    if (rt == nullptr || check_hook_def(rt, def->name, def->priority, def->only, "coextra_hook_add") < 0)
        return -1;
    if (def->eval == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_hook_add: eval must not be NULL");
        return -1;
    }
    HookRec *h = new_hook(rt, def->name, def->priority, def->only, flags);
    if (h == nullptr)
        return -1;
    h->eval = def->eval;
    h->ctx = def->ctx;
    return insert_hook(rt, h, out);
}

int observer_add_ex(const coextra_observer_def *def, coextra_eval_fn chain_eval, uint32_t flags,
                    coextra_hook **out) {
    RegistryLock lock;
    if (out != nullptr)
        *out = nullptr;
    if (def == nullptr || out == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_observer_add: def and out must not be NULL");
        return -1;
    }
    Runtime *rt = current_runtime();
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
    HookRec *h = new_hook(rt, def->name, def->priority, def->only, flags);
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
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    return h == nullptr ? -1 : (h->monitored ? 1 : 0);
}

int hook_add(const coextra_hook_def *def, coextra_hook **out) { return hook_add_ex(def, 0, out); }

int hook_remove(coextra_hook *hook) {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    if (h == nullptr)
        return -1;
    h->removed = true;
    sync_hops(rt, h);
    if (rebuild_for(rt, h) < 0) {
        h->removed = false;
        sync_hops(rt, h);
        return -1;
    }
    rt->hooks.erase(h->id);
    rt->hook_names.erase(h->name);
    hook_decref(h); // in-flight snapshots keep it alive, flagged removed
    return 0;
}

int hook_set_active(coextra_hook *hook, int active) {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
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
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    HookRec *h = checked_hook(rt, hook);
    return h == nullptr ? -1 : (h->active ? 1 : 0);
}

PyObject *eval_next(coextra_frame *f, int throwflag) {
    if (f->head.consumed)
        return eval_next_consumed();
    // What the inline coextra_eval_next does, for callers through the table
    // (the Python face, consumers built against ABI 1.0/1.1, the runtime's
    // own hops).  A frame of run_single has no snapshot and always has
    // `direct` until consumed; every other frame has `next`.
    if (coextra_evaluator_fn direct = f->head.direct) {
        mark_consumed(f);
        return direct(f->head.tstate, f->head.raw, throwflag);
    }
    const coextra_hop *hop = f->head.next; // never NULL here: see coextra_frame_head
    f->head.next = hop + 1;
    f->head.direct = hop->direct;
    return hop->eval(f, throwflag, hop->ctx); // a tail call, as the inline one: see there
}

PyCodeObject *frame_code(coextra_frame *f) noexcept { return code_of(f); }
PyObject *frame_function(coextra_frame *f) noexcept { return coextra_fc_function(raw_of(f)); }
PyObject *frame_globals(coextra_frame *f) noexcept { return coextra_fc_globals(raw_of(f)); }
int frame_is_resume(coextra_frame *f) noexcept { return coextra_fc_is_resume(raw_of(f)); }

PyFrameObject *frame_object(coextra_frame *f) {
    if (f->head.consumed) {
        PyErr_SetString(PyExc_SystemError, "coextra_frame_object: the frame is already finished");
        return nullptr;
    }
    return coextra_fc_frame_object(raw_of(f));
}

PyObject *frame_return(coextra_frame *f, PyObject *result) {
    if (f->head.consumed) {
        Py_XDECREF(result);
        PyErr_SetString(PyExc_SystemError,
                        "coextra_frame_return: this frame was already evaluated or finished");
        return nullptr;
    }
    if (coextra_fc_is_resume(raw_of(f))) {
        // A generator/coroutine frame belongs to its generator, which expects
        // the evaluator to run it (3.12+ asserts on the frame state it leaves
        // behind).  It cannot be skipped, so throw SystemError into it: the
        // evaluator unwinds it through its own exception handling.
        Py_XDECREF(result);
        PyErr_SetString(PyExc_SystemError,
                        "coextra_frame_return: a generator or coroutine resumption cannot be skipped");
        return call_tail(f, 1);
    }
    mark_consumed(f);
    coextra_fc_dispose(f->head.tstate, raw_of(f));
    if (result == nullptr && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "coextra: a hook returned NULL without setting an exception");
    return result;
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

PyObject *status_info() {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    apply_install(rt); // the check the contract promises in status(): see the idle case there
    coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool installed = current == rt->dispatcher;
    const bool displaced = dispatcher_displaced(rt);
    coextra_raw_eval_fn def = coextra_fc_default_eval();
    const bool foreign = rt->installed ? rt->tail != def : (current != def && !installed);
    const Py_ssize_t active = rt->chain ? static_cast<Py_ssize_t>(rt->chain->n) : 0;
    Py_ssize_t observers = 0;
    for (auto &kv : rt->hooks)
        observers += kv.second->observer && kv.second->active && !kv.second->removed;
    PyObject *index = rt->co_extra_index >= 0 ? PyLong_FromSsize_t(rt->co_extra_index) : (Py_INCREF(Py_None), Py_None);
    PyObject *tool = rt->mon_tool >= 0 ? PyLong_FromLong(rt->mon_tool) : (Py_INCREF(Py_None), Py_None);
    if (index == nullptr || tool == nullptr) {
        Py_XDECREF(index);
        Py_XDECREF(tool);
        return nullptr;
    }
    return Py_BuildValue("(OOOnNNn)", installed ? Py_True : Py_False, displaced ? Py_True : Py_False,
                         foreign ? Py_True : Py_False, active, index, tool, observers);
}

} // namespace api
} // namespace coextra
