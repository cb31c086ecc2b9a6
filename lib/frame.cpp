// frame.cpp: the frame view's public functions (coextra_eval_next through the table, coextra_frame_*) and the tracing switch.
#include "api.hpp"
#include "chain.hpp"

namespace coextra {
namespace {

// A frame view is valid only inside the hook it was handed to, on that
// thread, until the frame is finished.  What can be checked cheaply: NULL,
// finished (the view says so), and the thread (the view records it).
int check_frame(coextra_frame *f, const char *what) {
    if (f == nullptr) {
        PyErr_Format(PyExc_SystemError, "%s: the frame is NULL", what);
        return -1;
    }
    if (f->head.consumed) {
        PyErr_Format(PyExc_SystemError, "%s: the frame is already finished", what);
        return -1;
    }
    if (f->head.tstate != PyThreadState_Get()) {
        PyErr_Format(PyExc_SystemError, "%s: the frame belongs to another thread", what);
        return -1;
    }
    return 0;
}

// Tracing is per thread state, and only its own thread may change it (the
// counters are plain ints the evaluator reads without a lock).
int check_tstate(PyThreadState *tstate, const char *what) {
    if (tstate == nullptr) {
        PyErr_Format(PyExc_ValueError, "%s: tstate is NULL", what);
        return -1;
    }
    if (tstate != PyThreadState_Get()) {
        PyErr_Format(PyExc_ValueError, "%s: tstate is not the calling thread's", what);
        return -1;
    }
    return 0;
}

[[gnu::noinline, gnu::cold]] PyObject *eval_next_consumed() {
    PyErr_SetString(PyExc_SystemError,
                    "coextra_eval_next: this frame was already evaluated or finished by coextra_frame_return");
    return nullptr;
}

} // namespace

namespace api {

// What the inline coextra_eval_next does (coextra.h), for callers through the
// table (the Python face, consumers built against ABI 1.0/1.1, the runtime's
// own hops).  A single-hook frame has no snapshot and has `direct` until
// consumed; every other frame has `next`.
PyObject *eval_next(coextra_frame *f, int throwflag) {
    if (f->head.consumed)
        return eval_next_consumed();
    if (coextra_evaluator_fn direct = f->head.direct) {
        mark_consumed(f);
        return direct(f->head.tstate, raw_of(f), throwflag);
    }
    const coextra_hop *hop = f->head.next; // never NULL here: see coextra_frame_head
    f->head.next = hop + 1;
    f->head.direct = hop->direct;
    return hop->eval(f, throwflag, hop->ctx);
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
        return evaluate_below(f, 1);
    }
    mark_consumed(f);
    coextra_fc_dispose(f->head.tstate, raw_of(f));
    if (result == nullptr && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "coextra: a hook returned NULL without setting an exception");
    return result;
}

PyObject *frame_arguments(coextra_frame *f) {
    if (check_frame(f, "coextra_frame_arguments") < 0)
        return nullptr;
    return coextra_fc_arguments(raw_of(f));
}

int frame_is_call_of(coextra_frame *f, PyObject *function) {
    if (check_frame(f, "coextra_frame_is_call_of") < 0)
        return -1;
    if (function == nullptr || !PyFunction_Check(function)) {
        PyErr_Format(PyExc_TypeError, "coextra_frame_is_call_of: expected a Python function, got %.200s",
                     function == nullptr ? "NULL" : Py_TYPE(function)->tp_name);
        return -1;
    }
    return coextra_fc_is_call_of(raw_of(f), reinterpret_cast<PyFunctionObject *>(function));
}

int hide_from_tracing(PyThreadState *tstate) {
    if (check_tstate(tstate, "coextra_hide_from_tracing") < 0)
        return -1;
    coextra_fc_enter_tracing(tstate);
    return 0;
}

int unhide_from_tracing(PyThreadState *tstate) {
    if (check_tstate(tstate, "coextra_unhide_from_tracing") < 0)
        return -1;
    // PyThreadState.tracing (public in cpython/pystate.h, 3.9-3.15) counts
    // the hides in force, CPython's own around a trace function included: 0
    // means there is nothing to undo (a mismatch inside a trace function
    // cannot be told apart).
    if (tstate->tracing <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "coextra_unhide_from_tracing: the thread is not hidden from tracing");
        return -1;
    }
    coextra_fc_leave_tracing(tstate);
    return 0;
}

} // namespace api
} // namespace coextra
