// install.cpp: the interpreter's eval-frame function: install, hand back, displacement (one state machine), the dispatcher's path.
#include "api.hpp"
#include "chain.hpp"

// The one writer of the interpreter's eval-frame function.  The runtime
// wants its dispatcher in while a hook of the chain is active and nothing at
// all otherwise (so that an idle coextra leaves CPython's inlining and
// specialisation on, 3.11+).  Other tools may replace the function at any
// time; coextra notices on the next API call (and in status()), and never
// writes back a pointer that is no longer its own.
//
//   state (Runtime::install)  chain active                 chain empty
//   never, left, handed_back  -> installed (install)       our pointer came back: step_out
//   installed                 below left from under us:    -> handed_back if ours (hand_back),
//                             take_back                    -> left if displaced (leave)
//
// The function below coextra (Runtime::below) is what the interpreter ran when
// the dispatcher went in: CPython's evaluator or a foreign tool.  The
// dispatcher forwards every frame to it after the hooks.

namespace coextra {
namespace {

// `below` changed: whether it is CPython's evaluator (then hooks may call it
// directly: the last hop's `direct`), in every live snapshot.
void set_below(Runtime *rt, coextra_raw_eval_fn below, int allow_spec) noexcept {
    rt->below = below;
    rt->below_allow_spec = allow_spec;
    rt->below_is_foreign = below != coextra_fc_default_eval();
    rt->below_direct = rt->below_is_foreign ? nullptr : below;
    sync_direct(rt);
}

// A hook became active.  If another function is current, it becomes `below`;
// if ours is current again while idle (a tool that had displaced us restored
// the pointer it found), `below` is still valid only in state `left`.
void install(Runtime *rt, coextra_raw_eval_fn current, bool ours) noexcept {
    if (!ours) {
        // 3.15: the foreign tool's specialization opt-in, which our store
        // resets, comes back with it when we hand the interpreter back.
        // Ours stays off: with it on, an evaluator below us that runs
        // specialized calls inline would keep nested frames from the chain.
        set_below(rt, current, coextra_fc_eval_allows_specialization(rt->interp));
        coextra_fc_set_eval(rt->interp, rt->dispatcher, 0);
    } else if (rt->install != Install::left) {
        set_below(rt, coextra_fc_default_eval(), 0);
    }
    rt->install = Install::installed;
}

// The chain ended in a foreign tool, and the interpreter now runs no
// eval-frame function at all: that tool has left from under us, putting back
// what it had found (CPython's evaluator) over our dispatcher, as save/restore
// tools do (torch.compile at the end of every compiled call, the perf
// trampoline).  Nobody displaced us: take the interpreter back, with CPython's
// evaluator below.
void take_back(Runtime *rt) noexcept {
    set_below(rt, coextra_fc_default_eval(), 0);
    coextra_fc_set_eval(rt->interp, rt->dispatcher, 0);
}

// The last hook went: give the interpreter back what we found, if the
// function is still ours; displaced, write nothing (the tool over us owns
// it) and keep `below` for the frames that tool still sends us.
void uninstall(Runtime *rt, bool ours) noexcept {
    if (ours) {
        coextra_fc_set_eval(rt->interp, rt->below, rt->below_allow_spec);
        rt->install = Install::handed_back;
    } else {
        rt->install = Install::left;
    }
}

// Idle, yet the interpreter's function is our dispatcher: a tool that
// displaced us has left and "restored" the pointer it found (ours).  Step out
// as if we had been current all along: put back the `below` a displaced
// dispatcher still forwards to, or CPython's evaluator (a `below` handed back
// may be gone).
void step_out(Runtime *rt) noexcept {
    if (rt->install == Install::left)
        coextra_fc_set_eval(rt->interp, rt->below, rt->below_allow_spec);
    else
        coextra_fc_set_eval(rt->interp, coextra_fc_default_eval(), 0);
    rt->install = Install::handed_back;
}

void apply_install_state(Runtime *rt) noexcept {
    const bool want = rt->chain != nullptr;
    const coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool ours = current == rt->dispatcher;
    if (rt->install != Install::installed) {
        if (want)
            install(rt, current, ours);
        else if (ours)
            step_out(rt);
    } else if (!want) {
        uninstall(rt, ours);
    } else if (!ours && rt->below_is_foreign && current == coextra_fc_default_eval()) {
        take_back(rt);
    }
}

} // namespace

// The dispatcher's specialised paths are open only while we are installed
// over CPython's own evaluator and no loop-guard mark is pending (set only
// with a foreign `below`; clearing it calls this again): then a frame needs
// no loop guard and CPython's evaluator can be called directly.  With
// COEXTRA_CHECK_HOOKS every frame takes the general path, which pins its
// snapshot and so can name a hook that broke the contract.
void pick_frame_path(Runtime *rt) noexcept {
    const bool ok = rt->chain != nullptr && rt->install == Install::installed && !rt->below_is_foreign &&
                    rt->loop_guard == nullptr && !rt->check_hooks;
    const HookRec *h = ok ? rt->chain->hooks[0] : nullptr;
    rt->first_eval = ok ? h->eval : nullptr;
    rt->first_ctx = ok ? h->ctx : nullptr;
    rt->first_only = ok ? h->only : coextra_slot{0, 0};
    rt->first_only_bit = ok ? h->only_bit : 0;
    rt->frame_path = ok ? frame_path_for(rt->chain) : &path_general;
    publish_frame_path(rt);
}

void apply_install(Runtime *rt) noexcept {
    apply_install_state(rt);
    pick_frame_path(rt);
}

bool dispatcher_displaced(Runtime *rt) noexcept {
    return rt->install == Install::installed && coextra_fc_get_eval(rt->interp) != rt->dispatcher;
}

namespace api {

// status() is one of the calls at which coextra re-checks the interpreter's
// function (a displacement, a foreign `below` that left), as every hook
// change does: so it may install or hand back before it reports.
PyObject *status_info() {
    RegistryLock lock;
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    apply_install(rt);
    coextra_raw_eval_fn current = coextra_fc_get_eval(rt->interp);
    const bool installed = current == rt->dispatcher;
    const bool displaced = dispatcher_displaced(rt);
    const bool foreign = rt->install == Install::installed ? rt->below_is_foreign
                                                           : (current != coextra_fc_default_eval() && !installed);
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
