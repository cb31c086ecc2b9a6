// frame.cpp: the frame view's public functions: coextra_eval_next through the table, coextra_frame_*.
#include "api.hpp"
#include "chain.hpp"

namespace coextra {
namespace {

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

} // namespace api
} // namespace coextra
