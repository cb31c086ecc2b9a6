// dispatch.cpp: the eval-frame functions coextra installs and the per-frame paths through the hook chain.
#include "api.hpp"
#include "chain.hpp"

#include <atomic>

// What happens on every Python call while a hook is active: CPython calls the
// interpreter's eval-frame function, dispatch_main (the main interpreter) or
// dispatch (any other).  It finds the runtime and calls through
// rt->frame_path, which install.cpp picked for the current snapshot:
//
//   path_single           one hook, no filter: a frame view on the stack, the
//                         hook's function, nothing pinned;
//   path_single_filtered  one hook with `only`: its filter, then as above;
//   path_chain            several hooks, the outermost without a filter;
//   path_chain_filtered   several, the outermost with one;
//   path_general          everything else: no runtime, idle, a foreign
//                         function below coextra, displaced, checking hooks.
//
// A frame view (struct coextra_frame) is fully written before any hook sees
// it.  A hook delegates with coextra_eval_next, which follows the snapshot's
// hops (coextra_hop, one per hook plus the end) or, for the last hook above
// CPython's evaluator, calls it directly (`direct`).  docs/internals.md walks
// through it; bench/compare_builds.py measures it.

namespace coextra {
namespace {

// What dispatch_main runs: the main interpreter's runtime and its current
// path, or {path_general, nullptr} while it has none (not created yet, or
// closed: path_general looks the runtime up and finds none or a new one).
// Written under the main interpreter's GIL only (the runtime's binding,
// every change of its path, its close) and read by dispatch_main, which
// CPython calls only for the main interpreter's frames, under that same
// GIL; relaxed atomics say that other interpreters' threads may read the
// (unused) values concurrently.
struct MainBinding {
    std::atomic<FramePath> path{&path_general};
    std::atomic<Runtime *> rt{nullptr};
};
MainBinding g_main;

// ---- the end of the chain ------------------------------------------------------

// Drop the loop-guard mark.  A mark keeps the specialised paths closed (see
// pick_frame_path); that only matters once `below` is CPython's own again.
inline void clear_loop_guard(Runtime *rt) noexcept {
    rt->loop_guard = nullptr;
    if (!rt->below_is_foreign)
        pick_frame_path(rt);
}

// ---- finishing a frame -------------------------------------------------------------

// COEXTRA_CHECK_HOOKS: the hook that returned a value for an unfinished frame
// is the one before the step `next` points to (coextra_eval_next moves it on
// as each hook is entered; only chain frames, which the check forces, have
// one).
[[gnu::noinline, gnu::cold]] PyObject *refuse_unfinished(coextra_frame *f, PyObject *r) {
    const Chain *c = f->chain;
    const std::size_t j = static_cast<std::size_t>(f->head.next - c->hops) - 1;
    Py_DECREF(r);
    PyErr_Format(PyExc_SystemError,
                 "coextra: hook '%s' returned a value without calling coextra_eval_next or "
                 "coextra_frame_return, so the function never ran (COEXTRA_CHECK_HOOKS)",
                 c->hooks[j]->name.c_str());
    return nullptr;
}

// The outermost hook returned without the frame being evaluated or finished
// (nobody delegated or called coextra_frame_return): finish it as
// coextra_frame_return does (on 3.12+ the frame would leak otherwise: the
// callee owns it).  It gets the view's fields, not its address, and finishes
// a view of its own made from them: were the address passed, every frame
// would keep it in a callee-saved register across the hook call (a push, a
// pop and a move) for a path that frames almost never take; the fields are
// read from the caller's stack only here.  (The code cache of 3.12+ starts
// empty again: the frame, unfinished, still holds its code.)
[[gnu::noinline, gnu::cold]] PyObject *finish_unfinished(PyThreadState *tstate, void *raw,
                                                         coextra_evaluator_fn direct, const coextra_hop *next,
                                                         Chain *chain, PyObject *r) {
    coextra_frame f{{tstate, raw, direct, 0, 0, next}, chain};
    if (r != nullptr && chain != nullptr && chain->rt->check_hooks)
        r = refuse_unfinished(&f, r);
    return api::frame_return(&f, r);
}

// Run the frame through snapshot c from hook j on (j < c->n), which takes
// it (its filter was tested): its own function, not its hop.  Pins c for the
// frame's lifetime: hooks may change the chain, even remove themselves,
// while it runs.
PyObject *run_frame(Chain *c, PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, PyCodeObject *code,
                    std::size_t j) {
    c->refs++;
    coextra_frame f{{tstate, raw, c->hops[j].direct, 0, 0, c->hops + j + 1}, c};
#if !COEXTRA_FC_FRAME_OUTLIVES_EVAL
    f.code = code; // the code the filters read, or nullptr: code_of's cache
#else
    (void)code;
#endif
    const HookRec *h = c->hooks[j];
    PyObject *r = h->eval(&f, throwflag, h->ctx);
    if (COEXTRA_UNLIKELY(f.head.consumed == 0))
        r = finish_unfinished(f.head.tstate, f.head.raw, f.head.direct, f.head.next, f.chain, r);
    chain_unpin(f.chain);
    return r;
}

// Whether hook h of a snapshot takes frames of this code.  Hooks removed or
// paused after the snapshot was made are skipped: their owner may already
// have released what ctx points to.  *code is read on first need.
inline bool takes(const Runtime *rt, const HookRec *h, coextra_raw_frame *raw, PyCodeObject **code) noexcept {
    if (!h->active || h->removed)
        return false;
    if (h->only.generation == 0)
        return true;
    if (*code == nullptr)
        *code = coextra_fc_code(raw);
    return filter_passes(rt, h, *code);
}

// ---- the per-frame paths ----------------------------------------------------------

// One hook, the last of the chain, above CPython's evaluator (`direct`).
// The snapshot is not pinned: with one hook and `direct` set nothing reads
// the chain after the hook was called (coextra_eval_next takes `direct`;
// coextra_frame_return and the frame accessors never look at the chain), so
// a hook may remove itself or change the chain and the old snapshot may go
// at once.
inline PyObject *run_single(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    coextra_frame f{{tstate, raw, rt->below_direct, 0, 0, nullptr}, nullptr};
    PyObject *r = rt->first_eval(&f, throwflag, rt->first_ctx);
    if (COEXTRA_UNLIKELY(f.head.consumed == 0))
        return finish_unfinished(f.head.tstate, f.head.raw, f.head.direct, f.head.next, nullptr, r);
    return r;
}

PyObject *path_single(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    return run_single(tstate, raw, throwflag, rt);
}

// One hook with `only` (a debugger with breakpoints, a JIT for marked code):
// most frames go straight to the evaluator.  The filter is tested in its two
// steps (runtime.hpp): the presence bit here, the entry, which few frames
// reach, out of line, so that the path of a frame the hook skips stays short.
[[gnu::noinline]] PyObject *run_single_if_held(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag,
                                               Runtime *rt, const Block *b) {
    if (!entry_holds(b, rt->first_only))
        return rt->below(tstate, raw, throwflag);
    return run_single(tstate, raw, throwflag, rt);
}

PyObject *path_single_filtered(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    const Block *b = get_block(rt, reinterpret_cast<PyObject *>(coextra_fc_code(raw)));
    if (!block_may_hold(b, rt->first_only_bit))
        return rt->below(tstate, raw, throwflag);
    return run_single_if_held(tstate, raw, throwflag, rt, b);
}

// Several hooks, the outermost without a filter: hook 0 takes every frame,
// is active (the current snapshot holds only active hooks) and is not the
// last, so its hop is its own function and has no `direct`: run_frame from
// hook 0, read from the hop (in the snapshot itself, one load less).
PyObject *path_chain(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    Chain *c = rt->chain;
    c->refs++;
    coextra_frame f{{tstate, raw, nullptr, 0, 0, c->hops + 1}, c};
    PyObject *r = c->hops[0].eval(&f, throwflag, c->hops[0].ctx);
    if (COEXTRA_UNLIKELY(f.head.consumed == 0))
        r = finish_unfinished(f.head.tstate, f.head.raw, f.head.direct, f.head.next, f.chain, r);
    chain_unpin(f.chain);
    return r;
}

// Several hooks, the outermost with a filter: the first hook of the snapshot
// that takes the frame, else straight to the evaluator.  Every hook of the
// current snapshot is active and not removed (any change rebuilds it), so
// only the filters are tested.
PyObject *path_chain_filtered(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    Chain *c = rt->chain;
    PyCodeObject *code = coextra_fc_code(raw);
    std::size_t j = 0;
    while (j < c->n && !filter_passes(rt, c->hooks[j], code))
        j++;
    if (j == c->n)
        return rt->below(tstate, raw, throwflag); // nobody takes it
    return run_frame(c, tstate, raw, throwflag, code, j);
}

// ---- the C stack (3.9-3.11) ----------------------------------------------------------

#if COEXTRA_FC_C_STACK_CHECK
// A frame refused because the C stack is nearly exhausted (frame_compat.h):
// RecursionError instead of a crash, the frame finished as
// coextra_frame_return would (a resumed generator gets the error thrown in).
[[gnu::noinline, gnu::cold]] PyObject *refuse_deep_frame(PyThreadState *tstate, coextra_raw_frame *raw) {
    PyErr_SetString(PyExc_RecursionError,
                    "maximum recursion depth exceeded (coextra: the C stack is nearly exhausted)");
    if (coextra_fc_is_resume(raw))
        return coextra_fc_default_eval()(tstate, raw, 1);
    coextra_fc_dispose(tstate, raw);
    return nullptr;
}

inline bool c_stack_low(PyThreadState *tstate) noexcept {
    return COEXTRA_UNLIKELY(coextra_fc_python_depth(tstate) > COEXTRA_FC_C_STACK_CHECK_DEPTH) &&
           coextra_fc_c_stack_exhausted();
}
#else
constexpr bool c_stack_low(PyThreadState *) noexcept { return false; }
PyObject *refuse_deep_frame(PyThreadState *, coextra_raw_frame *) { return nullptr; }
#endif

// ---- the eval-frame functions ---------------------------------------------------------

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

// Every eval-frame function coextra installs starts here: the C stack check
// (3.9-3.11), the 3.15 generator wrapper, then Body.
template <PyObject *(*Body)(PyThreadState *, coextra_raw_frame *, int)>
inline PyObject *enter(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    if (c_stack_low(tstate))
        return refuse_deep_frame(tstate, raw);
    if (COEXTRA_UNLIKELY(coextra_fc_is_generator_frame(raw)))
        return run_generator<Body>(tstate, raw, throwflag);
    return Body(tstate, raw, throwflag);
}

// Any interpreter: one compare finds the runtime when it is entry 0's
// (normally the main interpreter's, so a subinterpreter usually takes the
// general path's lookup).
PyObject *dispatch_body(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    Runtime *rt;
    if (!dispatch_first(tstate->interp, &rt))
        return path_general(tstate, raw, throwflag, nullptr);
    return rt->frame_path(tstate, raw, throwflag, rt);
}

// The main interpreter: no lookup.  It is installed only on the main
// interpreter, and CPython calls an interpreter's eval-frame function only
// for that interpreter's frames (ceval reads tstate->interp->eval_frame,
// every version since PEP 523), so the runtime is known without comparing
// interpreters.  A foreign tool installed over us captured this pointer from
// the main interpreter and must call it only for the main interpreter's
// frames, as PEP 523 means a captured function to be used.  A tool that
// keeps one captured pointer for every interpreter (a process-wide `prev`)
// and is enabled in several would run the main interpreter's hooks on
// another interpreter's frames: unsupported, and documented
// (docs/cpython-limitations.md).
PyObject *dispatch_main_body(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    const FramePath path = g_main.path.load(std::memory_order_relaxed);
    return path(tstate, raw, throwflag, g_main.rt.load(std::memory_order_relaxed));
}

PyObject *dispatch(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    return enter<&dispatch_body>(tstate, raw, throwflag);
}

PyObject *dispatch_main(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    return enter<&dispatch_main_body>(tstate, raw, throwflag);
}

} // namespace

// ---- the runtime's steps (hops) ------------------------------------------------------
// Each is called as the hook it stands for would be, with head.next already
// past it and head.direct set from its hop, and so continues exactly as that
// hook's coextra_eval_next would.

// A hook removed or paused since the snapshot was made: on to the next step.
PyObject *skip_hop(coextra_frame *f, int throwflag, void *) { return api::eval_next(f, throwflag); }

// A hook with `only`: its function for frames of code holding a value in the
// slot, else on to the next step.  (A chain frame: f->chain is set.)
PyObject *filter_hop(coextra_frame *f, int throwflag, void *ctx) {
    const HookRec *h = static_cast<const HookRec *>(ctx);
    if (filter_passes(f->chain->rt, h, code_of(f)))
        return h->eval(f, throwflag, h->ctx);
    return api::eval_next(f, throwflag);
}

// After the last hook, when its `direct` is not set (a foreign `below`).
PyObject *end_hop(coextra_frame *f, int throwflag, void *) { return evaluate_below(f, throwflag); }

// When `below` is a foreign eval-frame function that chains to *its*
// predecessor, and that predecessor is us (it was installed after us, then
// we re-installed over it), it calls the dispatcher again with the same
// frame; loop_guard lets the dispatcher see that and hand the frame to
// CPython's evaluator instead of looping.
PyObject *call_below(Runtime *rt, PyThreadState *tstate, coextra_raw_frame *raw, int throwflag) {
    if (!rt->below_is_foreign)
        return rt->below(tstate, raw, throwflag);
    rt->loop_guard = raw;
    PyObject *r = rt->below(tstate, raw, throwflag);
    // A foreign `below` that runs the frame itself (it calls CPython's
    // evaluator rather than its predecessor, or its predecessor is not us)
    // never comes back to clear the mark; a leaf frame leaves it set.  The
    // next frame pushed at the same address (3.11+ data stack, 3.9/3.10
    // zombie frames: the very next sibling call) would then be taken for the
    // loop and skip every hook and the foreign tool.
    clear_loop_guard(rt);
    return r;
}

// Everything the specialised paths leave: no runtime or a closed one, idle,
// a foreign `below` (loop guard), displaced, COEXTRA_CHECK_HOOKS.  rt is the
// caller's runtime if it has one, else nullptr (looked up here).
PyObject *path_general(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt) {
    if (rt == nullptr)
        rt = runtime_for(tstate->interp);
    if (rt == nullptr || rt->closed)
        return coextra_fc_default_eval()(tstate, raw, throwflag);
    if (rt->loop_guard != nullptr) {
        const bool again = rt->loop_guard == raw;
        clear_loop_guard(rt);
        if (again)
            return coextra_fc_default_eval()(tstate, raw, throwflag);
    }
    Chain *c = rt->chain;
    if (c == nullptr) {
        // Idle: only a foreign tool that captured our pointer (installed over
        // us) calls us now.  Displaced (state `left`), we still forward to
        // `below` (what the tool found below us), through call_below's loop
        // mark in case it chains to us as well.  A `below` we handed back is
        // not ours to call: it may be the very tool calling us (we
        // re-installed over one that chains to us, then gave it back: calling
        // it would bounce between it and us forever), or gone.
        if (rt->install != Install::left)
            return coextra_fc_default_eval()(tstate, raw, throwflag);
        // call_below clears its loop mark in rt after `below` returns, and
        // the runtime's capsule may go meanwhile (no snapshot pins it here).
        rt->refs++;
        PyObject *r = call_below(rt, tstate, raw, throwflag);
        runtime_decref(rt);
        return r;
    }
    PyCodeObject *code = nullptr;
    std::size_t j = 0;
    while (j < c->n && !takes(rt, c->hooks[j], raw, &code))
        j++;
    if (j < c->n)
        return run_frame(c, tstate, raw, throwflag, code, j);
    // No hook takes this frame: straight to `below`, without a frame view
    // or a pin on the snapshot (no Python ran since it was read).  A foreign
    // one goes through the loop guard, which writes to rt after it returned:
    // pinned meanwhile, as above.
    if (!rt->below_is_foreign)
        return rt->below(tstate, raw, throwflag);
    rt->refs++;
    PyObject *r = call_below(rt, tstate, raw, throwflag);
    runtime_decref(rt);
    return r;
}

FramePath frame_path_for(const Chain *c) noexcept {
    const bool filtered = c->hooks[0]->only.generation != 0;
    if (c->n == 1)
        return filtered ? &path_single_filtered : &path_single;
    return filtered ? &path_chain_filtered : &path_chain;
}

coextra_raw_eval_fn dispatcher_for(PyInterpreterState *interp) noexcept {
    return interp == PyInterpreterState_Main() ? &dispatch_main : &dispatch;
}

void bind_dispatcher(Runtime *rt) noexcept {
    // A closed runtime of the main interpreter unbound itself at close; a
    // new one (the interpreter dict's entry recreated) takes its place.
    if (rt->dispatcher == &dispatch_main) {
        g_main.rt.store(rt, std::memory_order_relaxed);
        g_main.path.store(rt->frame_path, std::memory_order_relaxed);
    }
}

void publish_frame_path(Runtime *rt) noexcept {
    if (g_main.rt.load(std::memory_order_relaxed) == rt)
        g_main.path.store(rt->frame_path, std::memory_order_relaxed);
}

// (Closing already turned the path general through pick_frame_path, so the
// runtime would not be run again; this drops the pointer itself before the
// runtime can be freed.)
void unbind_dispatcher(Runtime *rt) noexcept {
    if (rt->dispatcher == &dispatch_main && g_main.rt.load(std::memory_order_relaxed) == rt) {
        g_main.path.store(&path_general, std::memory_order_relaxed);
        g_main.rt.store(nullptr, std::memory_order_relaxed);
    }
}

} // namespace coextra
