/* frame_compat.h: the ONLY interface to version-specific CPython frame internals (3.9–3.15). */
#ifndef COEXTRA_FRAME_COMPAT_H
#define COEXTRA_FRAME_COMPAT_H

#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#  include <frameobject.h> /* PyFrameObject's public layout (COEXTRA_FC_CODE_OFFSET) */
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The frame handed to an eval-frame function: PyFrameObject on 3.9/3.10,
 * struct _PyInterpreterFrame on 3.11+ (an incomplete type outside CPython's
 * internal headers).  The runtime (C++) only ever passes it around; every
 * field access happens in frame_compat.c.  With CPython's own types, the
 * dispatcher has exactly the type of an eval-frame function
 * (_PyFrameEvalFunction, public since 3.9 in cpython/pystate.h): no call
 * goes through a cast function pointer. */
#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame coextra_raw_frame;
#else
typedef PyFrameObject coextra_raw_frame;
#endif
typedef _PyFrameEvalFunction coextra_raw_eval_fn;

/* --- eval-frame pointer ------------------------------------------------ */
/* CPython's _PyEval_EvalFrameDefault, typed for us. */
coextra_raw_eval_fn coextra_fc_default_eval(void);
/* _PyInterpreterState_GetEvalFrameFunc; 3.11+ maps NULL to the default. */
coextra_raw_eval_fn coextra_fc_get_eval(PyInterpreterState *interp);
/* _PyInterpreterState_SetEvalFrameFunc; setting the default stores NULL on
 * 3.11+.  allow_specialization (3.15+, ignored before): re-apply a tool's
 * _PyInterpreterState_SetEvalFrameAllowSpecialization opt-in, which every
 * change of the function resets; pass what coextra_fc_eval_allows_specialization
 * said while that tool's function was installed, 0 for coextra's own. */
void coextra_fc_set_eval(PyInterpreterState *interp, coextra_raw_eval_fn fn, int allow_specialization);
/* 1 if the installed eval-frame function opted in to keep specialization
 * (3.15+); 0 before 3.15, and when no function is installed. */
int coextra_fc_eval_allows_specialization(PyInterpreterState *interp);

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
 * entry frame, which no eval-frame function receives; 3.14+ the same as a
 * _PyStackRef, a word whose low bit may tag the reference, so it is masked
 * with COEXTRA_FC_CODE_TAG).  A frame handed to an
 * eval-frame function holds a strong reference to its code object.  The dispatcher reads it for every frame an `only`
 * hook meets, so the offset is a constant here rather than a load; these are
 * CPython's frozen frame layouts, and frame_compat.c checks each one with a
 * static assertion against the real struct (the internal headers are only
 * included there). */
#if PY_VERSION_HEX >= 0x030C0000
/* 3.12 _PyInterpreterFrame.f_code / 3.13+ .f_executable: the first member */
#  define COEXTRA_FC_CODE_OFFSET ((size_t)0)
#elif PY_VERSION_HEX >= 0x030B0000
/* 3.11 _PyInterpreterFrame: f_func, f_globals, f_builtins, f_locals, f_code */
#  define COEXTRA_FC_CODE_OFFSET (4 * sizeof(void *))
#else
/* 3.9/3.10: the frame is a PyFrameObject, whose layout is public */
#  define COEXTRA_FC_CODE_OFFSET offsetof(PyFrameObject, f_code)
#endif
#if PY_VERSION_HEX >= 0x030E0000
/* 3.14+: the bits PyStackRef_AsPyObjectBorrow clears from an object
 * reference (Py_TAG_REFCNT, set for immortal or deferred references; checked
 * against the real headers in frame_compat.c). */
#  define COEXTRA_FC_CODE_TAG ((uintptr_t)1)
#else
#  define COEXTRA_FC_CODE_TAG ((uintptr_t)0)
#endif
/* Never NULL (a frame handed to an eval-frame function always has its code
 * object: CPython's own _PyFrame_GetCode only asserts it), so callers need no
 * NULL test. */
static inline PyCodeObject *coextra_fc_code(coextra_raw_frame *frame) {
    uintptr_t word = *(const uintptr_t *)((const char *)frame + COEXTRA_FC_CODE_OFFSET);
    return (PyCodeObject *)(word & ~COEXTRA_FC_CODE_TAG);
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

/* --- generator resumptions: yield or return (3.15+) -------------------- */
/* DANGER (3.15): whether a generator frame yielded or returned is not read
 * from the generator after its evaluation, but from a per-thread field the
 * evaluator sets last (_PyThreadStateImpl.generator_return_kind, read by
 * gen_send_ex2).  Python code that resumes any other generator after the
 * evaluation returned -- a hook's code after coextra_eval_next, e.g. a
 * Python on_exit that runs sum(x for x in ...) -- overwrites it, and the
 * resumed generator's yield is then taken for a return (or the reverse).
 * So the dispatcher tests at entry whether the frame belongs to a generator
 * (coextra_fc_is_generator_frame: one byte read, the frame's owner) and runs
 * such a frame through a wrapper that, after the chain returned, sets the
 * field again from the generator's own state (coextra_fc_keep_return_kind).
 * Other frames pay the one compare.  Before 3.15 the generator's state is
 * what CPython reads, and both compile to nothing. */
#if PY_VERSION_HEX >= 0x030F0000
#  define COEXTRA_FC_GEN_RETURN_KIND 1
/* _PyInterpreterFrame.owner and FRAME_OWNED_BY_GENERATOR (static assertions
 * in frame_compat.c): localsplus[] follows owner and visited at offset 80. */
#  ifdef Py_GIL_DISABLED
#    define COEXTRA_FC_OWNER_OFFSET ((size_t)78)
#  else
#    define COEXTRA_FC_OWNER_OFFSET ((size_t)74)
#  endif
#  define COEXTRA_FC_OWNED_BY_GENERATOR 1
#else
#  define COEXTRA_FC_GEN_RETURN_KIND 0
#endif
static inline int coextra_fc_is_generator_frame(coextra_raw_frame *frame) {
#if COEXTRA_FC_GEN_RETURN_KIND
    return *((const char *)frame + COEXTRA_FC_OWNER_OFFSET) == COEXTRA_FC_OWNED_BY_GENERATOR;
#else
    (void)frame;
    return 0;
#endif
}
/* Only for a frame coextra_fc_is_generator_frame said so of, after its
 * evaluation (the frame lives in the generator, which the caller holds). */
void coextra_fc_keep_return_kind(PyThreadState *tstate, coextra_raw_frame *frame);

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

/* --- the C stack (3.9-3.11) --------------------------------------------- */
/* Before 3.12, CPython bounds only the Python recursion depth
 * (sys.setrecursionlimit), and Python-to-Python calls made through an
 * eval-frame function each take C stack (3.11 inlines them only without
 * one).  With the limit raised, the C stack runs out first and the process
 * crashes (3.11, limit 100,000: a pass-through eval-frame function survives
 * depth 20,000 and segfaults at 50,000).  So the dispatcher asks, for frames
 * deeper than COEXTRA_FC_C_STACK_CHECK_DEPTH (one field read for all
 * others), whether the calling thread is within a margin of its stack's end,
 * and refuses the frame with RecursionError if so.  3.12+ have CPython's own
 * C recursion check (Py_C_RECURSION_LIMIT, then stack bounds on 3.14). */
#if PY_VERSION_HEX < 0x030C0000
#  define COEXTRA_FC_C_STACK_CHECK 1
#  define COEXTRA_FC_C_STACK_CHECK_DEPTH 100
/* Python frames running on the thread: 3.11 counts down from the limit. */
static inline int coextra_fc_python_depth(PyThreadState *tstate) {
#  if PY_VERSION_HEX >= 0x030B0000
    return tstate->recursion_limit - tstate->recursion_remaining;
#  else
    return tstate->recursion_depth;
#  endif
}
/* 1 if the calling thread's stack has less than a margin left (a quarter of
 * the stack, at most 256 KiB); 0 also when its bounds are unknown. */
int coextra_fc_c_stack_exhausted(void);
#else
#  define COEXTRA_FC_C_STACK_CHECK 0
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
