// api.hpp: the functions behind the coextra_api table, declared once for api.cpp to assemble.
#pragma once

#include "runtime.hpp"

namespace coextra {

// Allocate a T through PyMem_RawMalloc (so failing-allocator tests reach it).
template <class T>
T *make() {
    void *p = PyMem_RawMalloc(sizeof(T));
    if (p == nullptr)
        throw std::bad_alloc();
    return new (p) T();
}
template <class T>
void unmake(T *p) noexcept {
    p->~T();
    PyMem_RawFree(p);
}

namespace api {
// No function below that can run Python code (a free function, a frame, a
// finalizer run by an allocation, an exception's creation) is noexcept.  A
// daemon thread that takes the GIL during interpreter finalization is ended
// by PyThread_exit_thread (3.9-3.13: pthread_exit, which unwinds the C++
// frames on its stack); a noexcept frame there turns that into
// std::terminate: "terminate called without an active exception", abort.
// slots.cpp
int slot_reserve(const char *name, coextra_free_fn free_fn, void *ctx, coextra_slot *out);
int slot_reserve_ex(const char *name, coextra_free_fn free_fn, void *ctx, uint32_t flags, coextra_slot *out);
int slot_release(coextra_slot slot);
int slot_set(PyObject *code, coextra_slot slot, void *value);
void *slot_get(PyObject *code, coextra_slot slot) noexcept;
int slot_clear(PyObject *code, coextra_slot slot);
Py_ssize_t slot_live(coextra_slot slot);
int slot_foreach(coextra_slot slot, coextra_slot_visit_fn fn, void *arg); // ABI 1.4
PyObject *slots_info();
PyObject *released_error_type() noexcept;

// hooks.cpp, install.cpp (status_info), frame.cpp (eval_next, frame_*)
int hook_add(const coextra_hook_def *def, coextra_hook **out);
int hook_add_ex(const coextra_hook_def *def, uint32_t flags, coextra_hook **out);
int hook_remove(coextra_hook *hook);
int hook_set_active(coextra_hook *hook, int active);
int hook_get_active(coextra_hook *hook);
int observer_add(const coextra_observer_def *def, coextra_hook **out);
int observer_add_ex(const coextra_observer_def *def, coextra_eval_fn chain_eval, uint32_t flags, coextra_hook **out);
int hook_is_monitored(coextra_hook *hook);
PyObject *eval_next(coextra_frame *frame, int throwflag);
PyCodeObject *frame_code(coextra_frame *frame) noexcept;
PyObject *frame_function(coextra_frame *frame) noexcept;
PyObject *frame_globals(coextra_frame *frame) noexcept;
int frame_is_resume(coextra_frame *frame) noexcept;
PyFrameObject *frame_object(coextra_frame *frame);
PyObject *frame_return(coextra_frame *frame, PyObject *result);
PyObject *hooks_info();
PyObject *status_info();
// frame.cpp
PyObject *frame_arguments(coextra_frame *frame);
int frame_is_call_of(coextra_frame *frame, PyObject *function);
int hide_from_tracing(PyThreadState *tstate);
int unhide_from_tracing(PyThreadState *tstate);
} // namespace api

} // namespace coextra
