// frame.cpp: the public API's frame accessors and tracing switch (ABI 1.4 entries; version-specific code stays in frame_compat.c).
#include "api.hpp"

namespace coextra::api {

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

} // namespace

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

} // namespace coextra::api
