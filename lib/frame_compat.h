/* frame_compat.h: the ONLY interface to version-specific CPython frame internals (3.9–3.13, 3.14-ready). */
#ifndef COEXTRA_FRAME_COMPAT_H
#define COEXTRA_FRAME_COMPAT_H

#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#  include <frameobject.h> /* PyFrameObject's public layout (COEXTRA_FC_CODE_OFFSET) */
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The frame handed to an eval-frame function: PyFrameObject* on 3.9/3.10,
 * struct _PyInterpreterFrame* on 3.11+.  The runtime (C++) only ever passes
 * it around; every field access happens in frame_compat.c. */
typedef struct coextra_raw_frame coextra_raw_frame;
typedef PyObject *(*coextra_raw_eval_fn)(PyThreadState *tstate, coextra_raw_frame *frame, int throwflag);

/* --- eval-frame pointer ------------------------------------------------ */
/* CPython's _PyEval_EvalFrameDefault, typed for us. */
coextra_raw_eval_fn coextra_fc_default_eval(void);
/* _PyInterpreterState_GetEvalFrameFunc; 3.11+ maps NULL to the default. */
coextra_raw_eval_fn coextra_fc_get_eval(PyInterpreterState *interp);
/* _PyInterpreterState_SetEvalFrameFunc; setting the default stores NULL on 3.11+. */
void coextra_fc_set_eval(PyInterpreterState *interp, coextra_raw_eval_fn fn);

/* --- co_extra ----------------------------------------------------------- */
/* Request an index (3.9–3.11 _PyEval_RequestCodeExtraIndex, 3.12+ PyUnstable_*).
 * Returns -1 WITHOUT an exception set when CPython's 254 are used up. */
Py_ssize_t coextra_fc_request_index(freefunc free_fn);
int coextra_fc_get_extra(PyObject *code, Py_ssize_t index, void **extra);
int coextra_fc_set_extra(PyObject *code, Py_ssize_t index, void *extra);

/* --- interpreters -------------------------------------------------------- */
/* &_PyRuntime.interpreters.head (see coextra_fast_entry in coextra.h for
 * what comparing it with the main interpreter tells). */
PyInterpreterState *const *coextra_fc_interp_list_head(void);

/* --- frame view (all borrowed, never fail, never set an exception) ------ */
/* Where the frame keeps its code object: f_code (3.9–3.12), f_executable
 * (3.13; "code object or None", None only in the evaluator's own C-stack
 * entry frame, which no eval-frame function receives).  A frame handed to an
 * eval-frame function holds a strong reference to its code object.  The dispatcher reads it for every frame an `only`
 * hook meets, so the offset is a constant here rather than a load; these are
 * CPython's frozen frame layouts, and frame_compat.c checks each one with a
 * static assertion against the real struct (the internal headers are only
 * included there). */
#if PY_VERSION_HEX >= 0x030C0000
/* 3.12 _PyInterpreterFrame.f_code / 3.13 .f_executable: the first member */
#  define COEXTRA_FC_CODE_OFFSET ((size_t)0)
#elif PY_VERSION_HEX >= 0x030B0000
/* 3.11 _PyInterpreterFrame: f_func, f_globals, f_builtins, f_locals, f_code */
#  define COEXTRA_FC_CODE_OFFSET (4 * sizeof(void *))
#else
/* 3.9/3.10: the frame is a PyFrameObject, whose layout is public */
#  define COEXTRA_FC_CODE_OFFSET offsetof(PyFrameObject, f_code)
#endif
static inline PyCodeObject *coextra_fc_code(coextra_raw_frame *frame) {
    PyObject *co = *(PyObject *const *)((const char *)frame + COEXTRA_FC_CODE_OFFSET);
    /* Never NULL, and a code object on 3.13 too: CPython's own
     * _PyFrame_GetCode only asserts PyCode_Check on f_executable.  Telling
     * the compiler lets callers drop NULL tests. */
    if (co == NULL)
        __builtin_unreachable();
    return (PyCodeObject *)co;
}
/* The function object; NULL on 3.9/3.10 (frames have none) and where the
 * frame's funcobj is not a function. */
PyObject *coextra_fc_function(coextra_raw_frame *frame);
PyObject *coextra_fc_globals(coextra_raw_frame *frame);
/* 1 if this evaluation resumes a generator/coroutine/async generator
 * (3.11+: owner == FRAME_OWNED_BY_GENERATOR; 3.9/3.10: the code has
 * CO_GENERATOR|CO_COROUTINE|CO_ASYNC_GENERATOR, since there the creating call
 * never reaches the eval-frame function).  Such a frame cannot be skipped. */
int coextra_fc_is_resume(coextra_raw_frame *frame);

/* The PyFrameObject for this frame, created and attached on demand (3.11+
 * replicates the hidden _PyFrame_MakeAndSetFrameObject).  Borrowed: the frame
 * keeps it alive.  NULL with an exception set on failure. */
PyFrameObject *coextra_fc_frame_object(coextra_raw_frame *frame);

/* Finish a frame that was handed to an eval-frame function WITHOUT running it
 * (the caller must not be a generator resumption).  3.9–3.11: the caller owns
 * the frame, so nothing happens.  3.12: clear and pop it as ceval's static
 * clear_thread_frame does.  3.13+: _PyEval_FrameClearAndPop. */
void coextra_fc_dispose(PyThreadState *tstate, coextra_raw_frame *frame);

/* Whether the frame handed to an eval-frame function still exists when the
 * evaluation returns: 3.9–3.11 yes (the caller owns it and clears it after:
 * _PyEval_Vector, gen_send_ex); 3.12+ no (the evaluator clears and pops it
 * itself before returning, see coextra_fc_dispose).  Where it does not, the
 * frame view keeps the code object once read, for a hook that asks again
 * after its coextra_eval_next. */
#if PY_VERSION_HEX >= 0x030C0000
#  define COEXTRA_FC_FRAME_OUTLIVES_EVAL 0
#else
#  define COEXTRA_FC_FRAME_OUTLIVES_EVAL 1
#endif

/* --- tracing ------------------------------------------------------------ */
/* Hide the calling thread from sys.settrace / sys.setprofile / sys.monitoring
 * while a tool's own Python callback runs, as CPython does for trace
 * functions themselves: 3.11+ PyThreadState_EnterTracing/LeaveTracing (the
 * counter sys.monitoring also honours on 3.12+); 3.9/3.10 the same fields by
 * hand.  Calls nest. */
void coextra_fc_enter_tracing(PyThreadState *tstate);
void coextra_fc_leave_tracing(PyThreadState *tstate);

#ifdef __cplusplus
}
#endif
#endif /* COEXTRA_FRAME_COMPAT_H */
