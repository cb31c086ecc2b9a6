// chain.hpp: what the hook chain's files share (hooks.cpp, install.cpp, dispatch.cpp, frame.cpp); internal to lib/.
#pragma once

#include "runtime.hpp"

// Who does what (docs/internals.md has the whole picture):
//   hooks.cpp    the hook registry, chain snapshots and their hops;
//   install.cpp  the interpreter's eval-frame function: install, hand back,
//                displacement (one state machine, Runtime::install), and
//                which per-frame path the dispatcher takes;
//   dispatch.cpp the eval-frame functions and per-frame paths, the hop
//                functions of the runtime's own steps;
//   frame.cpp    the frame view's public functions (coextra_eval_next through
//                the table, coextra_frame_*).

namespace coextra {

// ---- hooks.cpp ---------------------------------------------------------------
// Free a snapshot nobody pins any more (out of line: pinning frames pay only
// the decrement).
void chain_free(Chain *c) noexcept;
inline void chain_unpin(Chain *c) noexcept {
    if (--c->refs == 0)
        chain_free(c);
}
// After rt->below_direct changed: the last hook's `direct` in every live
// snapshot.
void sync_direct(Runtime *rt) noexcept;

// ---- install.cpp -------------------------------------------------------------
// Bring the interpreter's eval-frame function in line with the chain (the
// dispatcher while a hook is active, else what was below), then pick the
// dispatcher's path.
void apply_install(Runtime *rt) noexcept;
// The dispatcher's path for the current snapshot and install state.
void pick_frame_path(Runtime *rt) noexcept;

// ---- dispatch.cpp ------------------------------------------------------------
// The specialised path for snapshot c, valid while we are installed over
// CPython's own evaluator.
FramePath frame_path_for(const Chain *c) noexcept;
// After rt->frame_path changed: what dispatch_main calls, if rt is the main
// interpreter's bound runtime.
void publish_frame_path(Runtime *rt) noexcept;
// The runtime's own steps (hops): a hook removed or paused since the snapshot
// was made, a hook with `only`, the end of the snapshot.
PyObject *skip_hop(coextra_frame *f, int throwflag, void *ctx);
PyObject *filter_hop(coextra_frame *f, int throwflag, void *ctx);
PyObject *end_hop(coextra_frame *f, int throwflag, void *ctx);
// Call rt's `below` for a frame, guarding against a foreign `below` that
// calls the dispatcher back with the same frame.
PyObject *call_below(Runtime *rt, PyThreadState *tstate, coextra_raw_frame *raw, int throwflag);

// ---- the frame view ------------------------------------------------------------

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

// Hand the frame to what lies below the chain and mark it consumed.  With
// `direct` set that is CPython's evaluator, called without reading the
// snapshot (a single-hook frame has none); a frame without `direct` that is
// not finished is a chain frame, which pins its snapshot, and the snapshot
// its runtime.
inline PyObject *evaluate_below(coextra_frame *f, int throwflag) {
    coextra_evaluator_fn direct = f->head.direct;
    mark_consumed(f);
    if (direct != nullptr)
        return direct(f->head.tstate, raw_of(f), throwflag);
    return call_below(f->chain->rt, f->head.tstate, raw_of(f), throwflag);
}

// ---- the `only` filter ------------------------------------------------------------

// Whether `code` holds a value in `slot`; bit is present_bit of the slot's
// index (HookRec::only_bit).
inline bool code_holds(const Runtime *rt, PyCodeObject *code, coextra_slot slot, uint32_t bit) noexcept {
    const Block *b = get_block(rt, reinterpret_cast<PyObject *>(code));
    return block_may_hold(b, bit) && entry_holds(b, slot);
}

// Whether h, known active and not removed, takes frames of `code`.
inline bool filter_passes(const Runtime *rt, const HookRec *h, PyCodeObject *code) noexcept {
    return h->only.generation == 0 || code_holds(rt, code, h->only, h->only_bit);
}

} // namespace coextra
