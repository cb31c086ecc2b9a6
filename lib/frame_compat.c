/* frame_compat.c: the one C translation unit that touches version-specific CPython frame/eval-frame/co_extra internals (3.9–3.15). */

/*
 * Everything in here is either a thin wrapper over an exported CPython entry
 * point, or a COPY of a CPython function that is static or has hidden
 * visibility in libpython (verified with `nm -D` on the pyenv builds 3.9.18,
 * 3.10.13, 3.11.7, 3.12.1, 3.13.0, and by disassembling the hidden symbols,
 * which those builds keep in .symtab with debug info).  The copies must match
 * the CPython minor version they are compiled against; each one names the
 * CPython function it mirrors so that a reviewer can diff it against
 * Python/frame.c, Objects/frameobject.c, Python/ceval.c and Python/pystate.c.
 *
 * 3.14.10 and 3.15.2 (Debian sid's builds) were checked the same way, and
 * against their internal headers.
 *
 * Exported (usable directly) vs hidden, per `nm -D`:
 *   3.9/3.10  _PyEval_EvalFrameDefault, _PyInterpreterState_{Get,Set}EvalFrameFunc,
 *             _PyEval_RequestCodeExtraIndex, _PyCode_{Get,Set}Extra      exported
 *   3.11.7    same; _PyFrame_MakeAndSetFrameObject, _PyFrame_New_NoTrack,
 *             _PyFrame_Clear, _PyThreadState_PopFrame                    HIDDEN
 *   3.12.1    PyUnstable_* co_extra names exported; _PyFrame_ClearExceptCode,
 *             _PyFrame_MakeAndSetFrameObject, _PyFrame_New_NoTrack,
 *             _PyThreadState_PopFrame, _PyObject_VirtualFree,
 *             _PyEvalFrameClearAndPop (static in ceval.c)                HIDDEN
 *   3.13.0    _PyEval_FrameClearAndPop, _PyThreadState_PopFrame,
 *             _PyEvalFramePushAndInit exported; _PyFrame_MakeAndSetFrameObject,
 *             _PyFrame_New_NoTrack, _PyFrame_ClearExceptCode             HIDDEN
 *   3.14.10   as 3.13                                                    (same)
 *   3.15.2    _PyFrame_MakeAndSetFrameObject, _PyFrame_New_NoTrack now
 *             exported ("for external JIT support", gh-148659): called,
 *             not copied; _PyInterpreterState_SetEvalFrameAllowSpecialization
 *             and _PyInterpreterState_IsSpecializationEnabled are new  exported
 * Any call to a hidden symbol (including through a static inline helper of
 * the internal headers such as _PyFrame_GetFrameObject) compiles fine and
 * then fails at dlopen time with "undefined symbol".  Do not use them.
 */

/* PY_VERSION_HEX without pulling in Python.h, so that the core-build macro can
 * be chosen per version before Python.h is seen. */
#include <patchlevel.h>


/* The internal headers (3.11+ _PyInterpreterFrame; every version's
 * _PyRuntimeState) refuse to compile without
 * Py_BUILD_CORE.  Use the _MODULE
 * flavour (pyport.h then implies Py_BUILD_CORE): with bare Py_BUILD_CORE,
 * 3.12+'s _PyThreadState_GET() would read the thread-local _Py_tss_tstate,
 * which is NOT exported from libpython.  It must be defined before the first
 * #include <Python.h> (3.13 errors "this header requires Py_BUILD_CORE
 * define" otherwise), which is why this file includes Python.h itself before
 * frame_compat.h. */
#ifndef Py_BUILD_CORE_MODULE
#  define Py_BUILD_CORE_MODULE 1
#endif

#include <Python.h>
#include <stddef.h>
#include <string.h>

#include <internal/pycore_runtime.h>   /* _PyRuntime.interpreters.head (exported data, 3.9–3.15) */

#if PY_VERSION_HEX < 0x030B0000
#  include <frameobject.h>          /* PyFrameObject fields (public on 3.9/3.10) */
#else
#  include <opcode.h>               /* MAKE_CELL, COPY_FREE_VARS, EXTENDED_ARG (3.13+: via opcode_ids.h) */
#  include <internal/pycore_frame.h> /* 3.11-3.13: _PyInterpreterFrame too; 3.14+: PyFrameObject only */
#  if PY_VERSION_HEX >= 0x030E0000
     /* 3.14+: the struct moved to pycore_interpframe_structs.h; this header
      * brings it with pycore_stackref.h and the accessors (_PyFrame_GetCode,
      * _PyFrame_GetBytecode).  C only: MSVC's C++ rejects pycore_stackref.h's
      * designated initializers, one more reason this file is C. */
#    include <internal/pycore_interpframe.h>
#  endif
#  if PY_VERSION_HEX >= 0x030D0000
#    include <internal/pycore_ceval.h>  /* _PyEval_FrameClearAndPop (exported since 3.13) */
#  endif
#endif

#include "frame_compat.h"

#if PY_VERSION_HEX < 0x03090000
#  error "coextra frame_compat.c needs CPython 3.9 or newer"
#endif
#if PY_VERSION_HEX >= 0x03100000
#  error "coextra frame_compat.c: CPython 3.16+ is not checked yet; see docs/porting.md"
#endif

/* ------------------------------------------------------------------------ */
/* What changed where: one flag per behaviour, tested below instead of raw  */
/* version numbers where a behaviour spans several versions.                */
/* ------------------------------------------------------------------------ */

/* 3.14+: the frame's code, function and locals are _PyStackRef (a tagged
 * word), read with PyStackRef_AsPyObjectBorrow and written with
 * PyStackRef_FromPyObject{New,Steal} / released with PyStackRef_XCLOSE. */
#define FC_STACKREF (PY_VERSION_HEX >= 0x030E0000)
/* 3.14+: the instruction stream of a frame is _PyFrame_GetBytecode(frame)
 * (a per-thread copy in free-threaded builds), not _PyCode_CODE(code). */
#define FC_FRAME_BYTECODE (PY_VERSION_HEX >= 0x030E0000)
/* 3.15+: _PyFrame_MakeAndSetFrameObject / _PyFrame_New_NoTrack exported. */
#define FC_EXPORTS_FRAME_OBJECT (PY_VERSION_HEX >= 0x030F0000)
/* 3.15+: an eval-frame function may opt in to keep specialisation. */
#define FC_EVAL_ALLOW_SPECIALIZATION (PY_VERSION_HEX >= 0x030F0000)

#if FC_STACKREF && defined(Py_STACKREF_DEBUG)
/* A Py_STACKREF_DEBUG build keeps stackrefs as indices into a table: the
 * raw read of coextra_fc_code (frame_compat.h) would be meaningless. */
#  error "coextra: CPython builds with Py_STACKREF_DEBUG are not supported"
#endif

/* ------------------------------------------------------------------------ */
/* Frame type and per-version field accessors.                              */
/* ------------------------------------------------------------------------ */

/* CPython's own frame type (frame_compat.h): PyFrameObject on 3.9/3.10,
 * _PyInterpreterFrame on 3.11+, complete here. */
typedef coextra_raw_frame fc_frame;

#define FC(raw) (raw)

#if FC_STACKREF
/* 3.14+: f_executable is a _PyStackRef (_PyFrame_GetCode reads it the same
 * way, asserting it is a code object). */
#  define FC_CODEOBJ(f) PyStackRef_AsPyObjectBorrow((f)->f_executable)
#elif PY_VERSION_HEX >= 0x030D0000
/* 3.13: f_executable is "code object or None" (None only for the shim frames
 * that never reach an eval-frame function). */
#  define FC_CODEOBJ(f) ((PyObject *)(f)->f_executable)
#else
#  define FC_CODEOBJ(f) ((PyObject *)(f)->f_code)
#endif

#define FC_GEN_FLAGS (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)

/* ------------------------------------------------------------------------ */
/* Eval-frame pointer.                                                      */
/* ------------------------------------------------------------------------ */

/* coextra_raw_eval_fn is CPython's _PyFrameEvalFunction (frame_compat.h):
 * these pass CPython's functions on without a cast. */

coextra_raw_eval_fn
coextra_fc_default_eval(void)
{
    return _PyEval_EvalFrameDefault;
}

coextra_raw_eval_fn
coextra_fc_get_eval(PyInterpreterState *interp)
{
    /* 3.9/3.10: interp->eval_frame starts as _PyEval_EvalFrameDefault.
     * 3.11+: NULL means "default" and the getter already maps NULL to
     * _PyEval_EvalFrameDefault; the check below is belt and braces. */
    _PyFrameEvalFunction fn = _PyInterpreterState_GetEvalFrameFunc(interp);
    if (fn == NULL) {
        fn = _PyEval_EvalFrameDefault;
    }
    return fn;
}

void
coextra_fc_set_eval(PyInterpreterState *interp, coextra_raw_eval_fn fn, int allow_specialization)
{
    /* 3.11/3.12: storing _PyEval_EvalFrameDefault stores NULL, which re-enables
     * Python-to-Python call inlining and PEP 523-sensitive specialisations.
     * 3.13: a non-default store also invalidates all tier-2 executors.
     * 3.14: the store is wrapped in stop-the-world (a no-op in GIL builds).
     * 3.9/3.10 store verbatim, so never let NULL through (it would be called). */
    _PyFrameEvalFunction f = fn ? fn : _PyEval_EvalFrameDefault;
    _PyInterpreterState_SetEvalFrameFunc(interp, f);
#if FC_EVAL_ALLOW_SPECIALIZATION
    /* 3.15 (gh-146031): every change of the function resets the interpreter's
     * allow-specialization flag to 0; the tool that installed `fn` may have
     * set it to 1 afterwards, and this puts that back.  For the default
     * evaluator the flag is moot (no function, specialization on). */
    if (allow_specialization && f != _PyEval_EvalFrameDefault)
        _PyInterpreterState_SetEvalFrameAllowSpecialization(interp, 1);
#else
    (void)allow_specialization;
#endif
}

int
coextra_fc_eval_allows_specialization(PyInterpreterState *interp)
{
#if FC_EVAL_ALLOW_SPECIALIZATION
    /* 1 when no function is set, else the function's opt-in. */
    return _PyInterpreterState_GetEvalFrameFunc(interp) != _PyEval_EvalFrameDefault
        && _PyInterpreterState_IsSpecializationEnabled(interp);
#else
    (void)interp;
    return 0;
#endif
}

/* ------------------------------------------------------------------------ */
/* co_extra.                                                                */
/* ------------------------------------------------------------------------ */

Py_ssize_t
coextra_fc_request_index(freefunc free_fn)
{
    /* Returns -1 WITHOUT an exception once the interpreter's 254 indices are
     * gone (Python/ceval.c, every version); callers must check for that. */
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Eval_RequestCodeExtraIndex(free_fn);
#else
    return _PyEval_RequestCodeExtraIndex(free_fn);
#endif
}

int
coextra_fc_get_extra(PyObject *code, Py_ssize_t index, void **extra)
{
    /* 3.9's _PyCode_GetExtra has no `index < 0` check and would read
     * ce_extras[-1]; reject it here the way 3.10+ does. */
    if (index < 0) {
        *extra = NULL;
        PyErr_BadInternalCall();
        return -1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Code_GetExtra(code, index, extra);
#else
    return _PyCode_GetExtra(code, index, extra);
#endif
}

int
coextra_fc_set_extra(PyObject *code, Py_ssize_t index, void *extra)
{
    /* NB: CPython calls the index's freefunc on the value being replaced. */
    int r;
#if PY_VERSION_HEX >= 0x030C0000
    r = PyUnstable_Code_SetExtra(code, index, extra);
#else
    r = _PyCode_SetExtra(code, index, extra);
#endif
    /* When growing the code object's extra array fails, CPython 3.9-3.13
     * returns -1 WITHOUT setting an exception (codeobject.c: `if (co_extra ==
     * NULL) return -1;` after PyMem_Realloc); 3.14.4+ and 3.15 raise
     * MemoryError (gh-144981's rewrite).  Our callers promise -1 with an
     * exception set. */
    if (r < 0 && !PyErr_Occurred())
        PyErr_NoMemory();
    return r;
}

/* ------------------------------------------------------------------------ */
/* Frame view.                                                              */
/* ------------------------------------------------------------------------ */

/* The inline coextra_fc_code (frame_compat.h) reads the code object at a
 * constant offset: check it against the real layouts. */
#if PY_VERSION_HEX >= 0x030D0000
_Static_assert(offsetof(fc_frame, f_executable) == COEXTRA_FC_CODE_OFFSET, "3.13+ f_executable moved");
#  if FC_STACKREF
/* ... and on 3.14+ it is one tagged word that coextra_fc_code untags by
 * masking COEXTRA_FC_CODE_TAG, as PyStackRef_AsPyObjectBorrow does for an
 * object reference in every build but Py_STACKREF_DEBUG's (refused above):
 * 3.14 GIL builds mask Py_TAG_REFCNT (1), free-threaded ones Py_TAG_BITS (1),
 * 3.15 both Py_TAG_REFCNT (1). */
_Static_assert(sizeof(_PyStackRef) == sizeof(uintptr_t), "_PyStackRef is one word");
_Static_assert(COEXTRA_FC_CODE_TAG == 1, "3.14+ stackref object tag");
#  endif
#else
_Static_assert(offsetof(fc_frame, f_code) == COEXTRA_FC_CODE_OFFSET, "f_code moved");
#endif

/* ------------------------------------------------------------------------ */
/* Interpreters.                                                            */
/* ------------------------------------------------------------------------ */

/* _PyRuntime is PyAPI_DATA on every version, and `interpreters.head` keeps
 * its name 3.9–3.13 (its offset moves).  PyInterpreterState_New links each
 * new interpreter in at the head, under the runtime's HEAD_LOCK; the main
 * interpreter, created first, stays the last link. */
PyInterpreterState *const *
coextra_fc_interp_list_head(void)
{
    return (PyInterpreterState *const *)&_PyRuntime.interpreters.head;
}

PyObject *
coextra_fc_function(coextra_raw_frame *raw)
{
#if FC_STACKREF
    /* 3.14+: f_funcobj is a stackref; a function for every frame a hook sees. */
    PyObject *fn = PyStackRef_AsPyObjectBorrow(FC(raw)->f_funcobj);
    return (fn != NULL && PyFunction_Check(fn)) ? fn : NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: f_funcobj is a PyObject* that is a function for every frame a
     * hook can see, but the type does not promise it. */
    PyObject *fn = FC(raw)->f_funcobj;
    return (fn != NULL && PyFunction_Check(fn)) ? fn : NULL;
#elif PY_VERSION_HEX >= 0x030B0000
    PyObject *fn = (PyObject *)FC(raw)->f_func;
    return (fn != NULL && PyFunction_Check(fn)) ? fn : NULL;
#else
    (void)raw;           /* 3.9/3.10 frames do not record their function */
    return NULL;
#endif
}

PyObject *
coextra_fc_globals(coextra_raw_frame *raw)
{
    return FC(raw)->f_globals;
}

int
coextra_fc_is_resume(coextra_raw_frame *raw)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: the creating call of a generator function reaches the hook as a
     * thread-owned frame (RETURN_GENERATOR then copies it into the
     * generator); every later send/next/throw/close evaluates the frame
     * embedded in the generator (gen_send_ex2), owned by the generator. */
    return FC(raw)->owner == FRAME_OWNED_BY_GENERATOR;
#else
    /* 3.9/3.10: _PyEval_EvalCode / _PyEval_Vector build the generator
     * (make_coro) without evaluating, so every evaluation of generator code
     * is a resumption. */
    return (FC(raw)->f_code->co_flags & FC_GEN_FLAGS) != 0;
#endif
}

#if COEXTRA_FC_GEN_RETURN_KIND
#  include <internal/pycore_tstate.h>    /* _PyThreadStateImpl.generator_return_kind */
#  include <internal/pycore_genobject.h> /* _PyGen_GetGeneratorFromFrame */
_Static_assert(offsetof(fc_frame, owner) == COEXTRA_FC_OWNER_OFFSET, "3.15 _PyInterpreterFrame.owner moved");
_Static_assert(FRAME_OWNED_BY_GENERATOR == COEXTRA_FC_OWNED_BY_GENERATOR, "3.15 FRAME_OWNED_BY_GENERATOR");
#endif

void
coextra_fc_keep_return_kind(PyThreadState *tstate, coextra_raw_frame *raw)
{
#if COEXTRA_FC_GEN_RETURN_KIND
    /* What the evaluator stored when the frame suspended (YIELD_VALUE:
     * FRAME_SUSPENDED*, GENERATOR_YIELD) or finished (FRAME_CLEARED,
     * GENERATOR_RETURN), derived from the generator's own state. */
    PyGenObject *gen = _PyGen_GetGeneratorFromFrame(FC(raw));
    ((_PyThreadStateImpl *)tstate)->generator_return_kind =
        FRAME_STATE_SUSPENDED(gen->gi_frame_state) ? GENERATOR_YIELD : GENERATOR_RETURN;
#else
    (void)tstate;
    (void)raw;
#endif
}

/* ------------------------------------------------------------------------ */
/* 3.11+: frame objects and frame disposal.                                 */
/* ------------------------------------------------------------------------ */

#if PY_VERSION_HEX >= 0x030B0000

/* Saving a pending exception around allocations, as CPython does
 * (3.11: PyErr_Fetch/Restore; 3.12+: PyErr_GetRaisedException). */
typedef struct { PyObject *type, *value, *tb; } fc_saved_exc;

static inline void
fc_exc_save(fc_saved_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    e->type = NULL;
    e->tb = NULL;
    e->value = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
#endif
}

static inline void
fc_exc_restore(fc_saved_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->value);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
}

static inline void
fc_exc_drop(fc_saved_exc *e)
{
    Py_XDECREF(e->type);
    Py_XDECREF(e->value);
    Py_XDECREF(e->tb);
}

static inline PyCodeObject *
fc_code(_PyInterpreterFrame *frame)
{
    return (PyCodeObject *)FC_CODEOBJ(frame);
}

static inline _PyInterpreterFrame *
fc_current_frame(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    return tstate->cframe->current_frame;
#endif
}

/* The frame's instruction stream: the code object's own before 3.14; on
 * 3.14+ _PyFrame_GetBytecode (a per-thread copy in free-threaded builds). */
static inline _Py_CODEUNIT *
fc_bytecode(_PyInterpreterFrame *frame)
{
#if FC_FRAME_BYTECODE
    return _PyFrame_GetBytecode(frame);
#else
    return _PyCode_CODE(fc_code(frame));
#endif
}

/* The function object the frame runs (borrowed; may be NULL or a non-function
 * in principle, so callers check). */
static inline PyObject *
fc_funcobj(_PyInterpreterFrame *frame)
{
#if FC_STACKREF
    return PyStackRef_AsPyObjectBorrow(frame->f_funcobj);
#elif PY_VERSION_HEX >= 0x030C0000
    return frame->f_funcobj;
#else
    return (PyObject *)frame->f_func;
#endif
}

/* localsplus[i] as a borrowed object (NULL = unbound). */
static inline PyObject *
fc_local(_PyInterpreterFrame *frame, int i)
{
#if FC_STACKREF
    return PyStackRef_AsPyObjectBorrow(frame->localsplus[i]);
#else
    return frame->localsplus[i];
#endif
}

/* Store `value` (stolen) in localsplus[i] and release what was there, as
 * the evaluator's SETLOCAL does. */
static inline void
fc_local_replace(_PyInterpreterFrame *frame, int i, PyObject *value)
{
#if FC_STACKREF
    _PyStackRef old = frame->localsplus[i];
    frame->localsplus[i] = PyStackRef_FromPyObjectSteal(value);
    PyStackRef_XCLOSE(old);
#else
    PyObject *old = frame->localsplus[i];
    frame->localsplus[i] = value;
    Py_XDECREF(old);
#endif
}

/* Index (in code units) of the next instruction the evaluator will run. */
static inline int
fc_next_index(_PyInterpreterFrame *frame)
{
    _Py_CODEUNIT *first = fc_bytecode(frame);
#if PY_VERSION_HEX >= 0x030D0000
    return (int)(frame->instr_ptr - first);          /* 3.13: instruction about to run */
#else
    return (int)(frame->prev_instr + 1 - first);     /* 3.11/3.12: prev_instr = last started */
#endif
}

static inline void
fc_set_next_index(_PyInterpreterFrame *frame, int index)
{
    _Py_CODEUNIT *first = fc_bytecode(frame);
#if PY_VERSION_HEX >= 0x030D0000
    frame->instr_ptr = first + index;
#else
    frame->prev_instr = first + index - 1;
#endif
}

/* Decodes code[i]: returns its opcode and sets *oparg to its argument with
 * the bits of the EXTENDED_ARG prefixes before it (*ext) folded in.  For an
 * EXTENDED_ARG (which 3.11 may quicken to EXTENDED_ARG_QUICK: reported as
 * EXTENDED_ARG) *ext keeps the bits for the next instruction; any other
 * instruction resets it, as the evaluator's oparg does. */
static inline int
fc_decode(const _Py_CODEUNIT *code, int i, int *ext, int *oparg)
{
#if PY_VERSION_HEX >= 0x030C0000
    int opcode = code[i].op.code;
    *oparg = code[i].op.arg | *ext;
#else
    int opcode = _Py_OPCODE(code[i]);
    *oparg = _Py_OPARG(code[i]) | *ext;
    if (opcode == EXTENDED_ARG_QUICK) {
        opcode = EXTENDED_ARG;
    }
#endif
    *ext = opcode == EXTENDED_ARG ? *oparg << 8 : 0;
    return opcode;
}

/*
 * "Entry state": a thread-owned frame that an eval-frame function has been
 * handed but that the default evaluator has not started (has not run its
 * first RESUME) and that is therefore NOT yet linked into the thread's frame
 * chain.  This is the only state in which a hook sees a fresh frame.
 */
static int
fc_in_entry_state(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    return frame->owner == FRAME_OWNED_BY_THREAD
        && frame != fc_current_frame(tstate)
        && fc_next_index(frame) <= fc_code(frame)->_co_firsttraceable;
}

/*
 * DANGER — frame->previous at hook time is GARBAGE (3.11, 3.12, 3.13), and
 * NULL on 3.14/3.15 (_PyFrame_Initialize takes it as an argument there, and
 * _PyEval_Vector passes NULL; observed at hook time for calls and
 * resumptions alike).  Either way it is not the caller.
 *
 * _PyEvalFramePushAndInit / _PyFrame_Initialize (3.11 _PyFrame_InitializeSpecials)
 * deliberately do not set frame->previous ("Does not initialize
 * frame->previous, which happens when frame is linked into the frame stack",
 * pycore_frame.h 3.12/3.13); disassembly of 3.12.1's _PyEvalFramePushAndInit
 * and _PyEval_Vector confirms nothing stores to it.  Whatever the data stack
 * held before is left there.  The default evaluator links the frame on entry
 * (3.11: frame->previous = prev_cframe->current_frame; 3.12/3.13:
 * frame->previous = &entry_frame, the C-stack shim whose previous is the
 * caller).  But CPython code that runs BEFORE that follows the pointer:
 *   - PyFrame_GetBack() (f.f_back) on a frame object created at hook time;
 *   - take_ownership() inside _PyFrame_Clear (3.11, run by _PyEval_Vector
 *     when a hook returns without delegating) and inside
 *     _PyFrame_ClearExceptCode (3.12 copy below; 3.13's exported
 *     _PyEval_FrameClearAndPop) whenever a frame object with refcount > 1
 *     exists: it walks _PyFrame_GetFirstComplete(frame->previous).
 * We therefore store the value the evaluator would have produced, the
 * thread's current frame (the caller, or NULL at top level), before any of
 * those can run.  The evaluator overwrites it on entry, so this is harmless
 * when the frame is delegated afterwards.  (The simpler alternative, NULL,
 * would also be safe but would give a kept frame object f_back = None.)
 * Generator-owned frames are left alone: 3.12/3.13 hand them over with
 * previous == NULL (set on every suspension and by _PyFrame_Copy), 3.11's
 * gen_send_ex2 links them to the caller before evaluating.
 */
static void
fc_link_previous(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    if (fc_in_entry_state(tstate, frame)) {
        frame->previous = fc_current_frame(tstate);
    }
}

/*
 * DANGER — the frame a hook sees is INCOMPLETE (3.11+): the prefix
 * instructions that precede the first RESUME have not run.  The compiler
 * emits them in this order (checked with dis on 3.11.7/3.12.1/3.13.0):
 *     [COPY_FREE_VARS n]   copy the closure's cells into the free slots
 *     MAKE_CELL i ...      wrap each cell variable (arguments included)
 *     [RETURN_GENERATOR, POP_TOP]   generator/coroutine functions only
 *     RESUME
 * CPython's frame-object code only partly copes with a frame in that state:
 *   3.11/3.12  f_locals (_PyFrame_FastToLocalsWithError / frame_get_var)
 *              copies the free variables itself when lasti < 0 and code[0]
 *              is COPY_FREE_VARS (and moves prev_instr onto it), and shows
 *              cell variables by value until _PyFrame_OpAlreadyRan says their
 *              MAKE_CELL ran.  But once lasti >= 0 it does PyCell_GET() on
 *              every CO_FAST_FREE slot with no NULL check.  take_ownership
 *              "pretends the first RESUME ran" (lasti >= 0), so a closure
 *              whose frame object is kept while the frame is finished
 *              without running (dispose on 3.12, plain return on 3.11)
 *              crashes on the next f.f_locals: its free slots are still NULL.
 *   3.13.0     the FrameLocalsProxy (framelocalsproxy_getitem) does
 *              PyCell_GET() on every CO_FAST_FREE / CO_FAST_CELL slot with no
 *              PyCell_Check (checked in the 3.13.0 disassembly; later fixed by
 *              gh-128396), so an argument that is also a cell variable, still
 *              a plain object before MAKE_CELL, is dereferenced as a cell:
 *              garbage pointer, even at hook time.
 * Before exposing a frame object we therefore run part of the prefix
 * ourselves, exactly as the evaluator would (bytecodes.c COPY_FREE_VARS /
 * MAKE_CELL), and advance the instruction pointer past what we ran, never past
 * RESUME or RETURN_GENERATOR, so RESUME (eval breaker, 'call' trace event,
 * sys.monitoring PY_START) still runs in the evaluator.  Prefix instructions
 * are never specialised or instrumented (_co_firsttraceable exists to keep
 * tracing out of them); 3.11 may quicken EXTENDED_ARG to EXTENDED_ARG_QUICK.
 *   3.11/3.12  COPY_FREE_VARS only: the very state CPython's own f_locals code
 *              produces (prev_instr = &code[0]).  MAKE_CELL is left to the
 *              evaluator: _PyFrame_OpAlreadyRan counts instructions strictly
 *              BEFORE prev_instr, so a MAKE_CELL that we had run last would be
 *              shown (and written back by PyFrame_LocalsToFast) as a raw cell.
 *              Side effect, same as after CPython's own f_locals access: while
 *              positioned on COPY_FREE_VARS, f.f_lineno is None.
 *   3.13       COPY_FREE_VARS and every MAKE_CELL (the proxy needs real cells);
 *              instr_ptr then points at RESUME, which 3.13 considers complete.
 *
 * Returns 0, or -1 with MemoryError set (the frame is then left consistent:
 * the instruction pointer stops before the instruction that failed).
 */
static int
fc_run_prefix(_PyInterpreterFrame *frame)
{
    PyCodeObject *co = fc_code(frame);
    _Py_CODEUNIT *code = fc_bytecode(frame);
    int i = fc_next_index(frame);
    int done = i;
    int ext = 0;
    int rc = 0;
    while (i < co->_co_firsttraceable) {
        int oparg;
        int opcode = fc_decode(code, i, &ext, &oparg);
        if (opcode == EXTENDED_ARG) {
            i++;
            continue;
        }
        if (opcode == MAKE_CELL) {
#if PY_VERSION_HEX < 0x030D0000
            break;          /* 3.11/3.12: left to the evaluator, see above */
#endif
            /* bytecodes.c: initial = GETLOCAL(oparg); cell = PyCell_New(initial);
             * SETLOCAL(oparg, cell)  (SETLOCAL drops the old reference;
             * 3.14+ spells it with stackrefs, same effect) */
            if (oparg >= co->co_nlocalsplus) {
                break;
            }
            PyObject *cell = PyCell_New(fc_local(frame, oparg));
            if (cell == NULL) {
                rc = -1;
                break;
            }
            fc_local_replace(frame, oparg, cell);
        }
        else if (opcode == COPY_FREE_VARS) {
            /* bytecodes.c: closure = func->func_closure;
             * offset = co_nlocalsplus - oparg (3.11 spells it
             * co_nlocals + co_nplaincellvars, the same slot);
             * localsplus[offset + i] = Py_NewRef(closure[i])  (3.14+:
             * PyStackRef_FromPyObjectNew) */
            PyObject *fn = fc_funcobj(frame);
            if (fn == NULL || !PyFunction_Check(fn)) {
                break;
            }
            PyObject *closure = ((PyFunctionObject *)fn)->func_closure;
            if (oparg != co->co_nfreevars || closure == NULL
                || !PyTuple_Check(closure) || PyTuple_GET_SIZE(closure) != oparg) {
                break;
            }
            int offset = co->co_nlocalsplus - oparg;
            for (int j = 0; j < oparg; j++) {
                /* slots start NULL (_PyFrame_Initialize); be exact anyway */
                fc_local_replace(frame, offset + j, Py_NewRef(PyTuple_GET_ITEM(closure, j)));
            }
        }
        else {
            /* RESUME, RETURN_GENERATOR, or anything unexpected: stop. */
            break;
        }
        i++;
        done = i;
    }
    fc_set_next_index(frame, done);
    return rc;
}

/* Copy of _PyFrame_New_NoTrack (Objects/frameobject.c; hidden in 3.11–3.13).
 * Field initialisation checked against the disassembly of each local build:
 *   3.11.7/3.12.1: f_back, f_trace, f_trace_lines=1, f_trace_opcodes=0,
 *                  f_fast_as_locals=0, f_lineno=0
 *   3.13.0:        f_back, f_trace, f_trace_lines=1, f_trace_opcodes=0,
 *                  f_lineno=0, f_extra_locals=NULL, f_locals_cache=NULL
 *   3.14.10:       as 3.13, plus f_overwritten_fast_locals=NULL
 * f_frame is set by the caller.  The object is NOT GC-tracked: a frame object
 * backed by a live _PyInterpreterFrame is untracked until take_ownership.
 * 3.15 exports the function: no copy there. */
#if !FC_EXPORTS_FRAME_OBJECT
static PyFrameObject *
fc_frame_new_notrack(PyCodeObject *code)
{
    int slots = code->co_nlocalsplus + code->co_stacksize;
    PyFrameObject *f = PyObject_GC_NewVar(PyFrameObject, &PyFrame_Type, slots);
    if (f == NULL) {
        return NULL;
    }
    f->f_back = NULL;
    f->f_trace = NULL;
    f->f_trace_lines = 1;
    f->f_trace_opcodes = 0;
#if PY_VERSION_HEX >= 0x030D0000
    f->f_extra_locals = NULL;
    f->f_locals_cache = NULL;
#else
    f->f_fast_as_locals = 0;
#endif
#if PY_VERSION_HEX >= 0x030E0000
    f->f_overwritten_fast_locals = NULL;   /* 3.14 */
#endif
    f->f_lineno = 0;
    return f;
}

/* Copy of _PyFrame_MakeAndSetFrameObject (Python/frame.c; hidden 3.11-3.14).  Like
 * CPython it preserves a pending exception across the allocation (3.11
 * PyErr_Fetch/Restore, 3.12+ PyErr_GetRaisedException/SetRaisedException)
 * and drops it if the allocation fails. */
static PyFrameObject *
fc_make_and_set_frame_object(_PyInterpreterFrame *frame)
{
    assert(frame->frame_obj == NULL);
    fc_saved_exc exc;
    fc_exc_save(&exc);
    PyFrameObject *f = fc_frame_new_notrack(fc_code(frame));
    if (f == NULL) {
        fc_exc_drop(&exc);
        return NULL;
    }
    fc_exc_restore(&exc);
#if PY_VERSION_HEX < 0x030D0000
    if (frame->frame_obj) {
        /* GH-97002 (3.11/3.12 only; 3.13 removed the branch because the GC no
         * longer runs on allocation): allocating f ran a GC whose finalizers
         * created this frame's object meanwhile.  Keep that one; make f look
         * like an owned, cleared frame so frame_dealloc leaves it alone. */
        f->f_frame = (_PyInterpreterFrame *)f->_f_frame_data;
        f->f_frame->owner = FRAME_CLEARED;
        f->f_frame->frame_obj = f;
        Py_DECREF(f);
        return frame->frame_obj;
    }
#endif
    assert(frame->owner != FRAME_OWNED_BY_FRAME_OBJECT);
    f->f_frame = frame;
    frame->frame_obj = f;
    return f;
}
#else
/* 3.15: both are exported; CPython's own (which also keeps a pending
 * exception, and has no GH-97002 branch since 3.13). */
static PyFrameObject *
fc_make_and_set_frame_object(_PyInterpreterFrame *frame)
{
    assert(frame->frame_obj == NULL);
    return _PyFrame_MakeAndSetFrameObject(frame);
}
#endif /* !FC_EXPORTS_FRAME_OBJECT */

PyFrameObject *
coextra_fc_frame_object(coextra_raw_frame *raw)
{
    _PyInterpreterFrame *frame = FC(raw);
    if (frame->frame_obj != NULL) {
        return frame->frame_obj;
    }
    PyThreadState *tstate = PyThreadState_Get();
    if (fc_in_entry_state(tstate, frame)) {
        PyCodeObject *co = fc_code(frame);
        if (co->co_flags & FC_GEN_FLAGS) {
            /* DANGER: the creating call of a generator/coroutine function.
             * RETURN_GENERATOR (3.11–3.13) memcpy's this frame into the new
             * generator and pops it, asserting frame->frame_obj == NULL; a
             * frame object made now would end up referenced by the generator
             * frame without a reference and pointing at the popped stack
             * memory (use-after-free).  Resumptions are fine. */
            PyErr_SetString(PyExc_RuntimeError,
                            "coextra: no frame object for the creating call of a "
                            "generator or coroutine function (CPython 3.11+)");
            return NULL;
        }
        fc_link_previous(tstate, frame);
        /* The prefix allocates (cells); keep a pending exception like
         * _PyFrame_MakeAndSetFrameObject does. */
        fc_saved_exc exc;
        fc_exc_save(&exc);
        if (fc_run_prefix(frame) < 0) {
            fc_exc_drop(&exc);
            return NULL;
        }
        fc_exc_restore(&exc);
    }
    return fc_make_and_set_frame_object(frame);
}

#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
/* ---- 3.12 only: copies of the hidden clear/pop path ---------------------- */

/* Copy of take_ownership (Python/frame.c 3.12; matches the 3.12.1
 * disassembly of _PyFrame_ClearExceptCode, into which it is inlined).  The
 * frame object outlives the frame: move the frame's data into the object.
 * Relies on fc_link_previous() having made frame->previous meaningful. */
static void
fc312_take_ownership(PyFrameObject *f, _PyInterpreterFrame *frame)
{
    assert(frame->owner != FRAME_OWNED_BY_CSTACK);
    assert(frame->owner != FRAME_OWNED_BY_FRAME_OBJECT);
    assert(frame->owner != FRAME_CLEARED);
    Py_ssize_t size = ((char *)&frame->localsplus[frame->stacktop]) - (char *)frame;
    Py_INCREF(frame->f_code);   /* the copy's reference; the caller drops the thread frame's */
    memcpy((_PyInterpreterFrame *)f->_f_frame_data, frame, size);
    frame = (_PyInterpreterFrame *)f->_f_frame_data;
    f->f_frame = frame;
    frame->owner = FRAME_OWNED_BY_FRAME_OBJECT;
    if (_PyFrame_IsIncomplete(frame)) {
        /* Never run (our case when disposing): pretend the first RESUME ran. */
        PyCodeObject *code = frame->f_code;
        frame->prev_instr = _PyCode_CODE(code) + code->_co_firsttraceable;
    }
    assert(f->f_back == NULL);
    _PyInterpreterFrame *prev = _PyFrame_GetFirstComplete(frame->previous);
    frame->previous = NULL;
    if (prev) {
        assert(prev->owner != FRAME_OWNED_BY_CSTACK);
        /* _PyFrame_GetFrameObject(prev) would call the hidden
         * _PyFrame_MakeAndSetFrameObject: use our copy. */
        PyFrameObject *back = prev->frame_obj;
        if (back == NULL) {
            back = fc_make_and_set_frame_object(prev);
        }
        if (back == NULL) {
            /* MemoryError; CPython: "Nothing we can do about it". */
            PyErr_Clear();
        }
        else {
            f->f_back = (PyFrameObject *)Py_NewRef(back);
        }
    }
    if (!PyObject_GC_IsTracked((PyObject *)f)) {
        PyObject_GC_Track((PyObject *)f);
    }
}

/* Copy of _PyFrame_ClearExceptCode (Python/frame.c 3.12). */
static void
fc312_clear_except_code(_PyInterpreterFrame *frame)
{
    if (frame->frame_obj) {
        PyFrameObject *f = frame->frame_obj;
        frame->frame_obj = NULL;
        if (Py_REFCNT(f) > 1) {
            fc312_take_ownership(f, frame);
            Py_DECREF(f);
            return;
        }
        Py_DECREF(f);
    }
    assert(frame->stacktop >= 0);
    for (int i = 0; i < frame->stacktop; i++) {
        Py_XDECREF(frame->localsplus[i]);
    }
    Py_XDECREF(frame->frame_obj);
    Py_XDECREF(frame->f_locals);
    Py_DECREF(frame->f_funcobj);
}

/* Copy of _PyThreadState_PopFrame (Python/pystate.c 3.12), including the case
 * where the frame is the first one in its data-stack chunk: the chunk is
 * released and the thread falls back to the previous chunk (push_chunk never
 * pops the root chunk).  _PyObject_VirtualFree is hidden; it is
 * `_PyObject_Arena.free(_PyObject_Arena.ctx, ptr, size)`, and
 * PyObject_GetArenaAllocator hands out that same _PyObject_Arena (checked in
 * the 3.12.1 disassembly: both read _PyRuntime.allocators.obj_arena). */
static void
fc312_pop_frame(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    assert(tstate->datastack_chunk);
    PyObject **base = (PyObject **)frame;
    if (base == &tstate->datastack_chunk->data[0]) {
        _PyStackChunk *chunk = tstate->datastack_chunk;
        _PyStackChunk *previous = chunk->previous;
        assert(previous);
        tstate->datastack_top = &previous->data[previous->top];
        tstate->datastack_chunk = previous;
        PyObjectArenaAllocator arena;
        PyObject_GetArenaAllocator(&arena);
        arena.free(arena.ctx, chunk, chunk->size);
        tstate->datastack_limit = (PyObject **)(((char *)previous) + previous->size);
    }
    else {
        assert(tstate->datastack_top);
        assert(tstate->datastack_top >= base);
        tstate->datastack_top = base;
    }
}
#endif /* 3.12 */

#endif /* 3.11+ */

#if PY_VERSION_HEX < 0x030B0000
PyFrameObject *
coextra_fc_frame_object(coextra_raw_frame *raw)
{
    /* 3.9/3.10: the eval-frame function is handed the frame object itself;
     * its cells and free variables were set up before the call. */
    return (PyFrameObject *)FC(raw);
}
#endif

/*
 * DANGER — who owns the frame changed in 3.12 (gh-96421).
 *   3.9/3.10  the caller (_PyEval_Vector / function_code_fastcall) decrefs the
 *             PyFrameObject after the eval-frame function returns.
 *   3.11      the caller (_PyEval_Vector) runs _PyEvalFrameClearAndPop
 *             unconditionally after the eval-frame function; generator frames
 *             are finished by gen_send_ex2.
 *   3.12+     the eval-frame function (callee) must clear and pop the frame
 *             on every path; the default evaluator does it in RETURN_VALUE /
 *             exit_unwind (_PyEvalFrameClearAndPop) and RETURN_GENERATOR.
 * So a hook that returns without delegating must call this on 3.12+, and it
 * is a no-op before.  Calling it and then also delegating is a double free.
 */
void
coextra_fc_dispose(PyThreadState *tstate, coextra_raw_frame *raw)
{
#if PY_VERSION_HEX < 0x030C0000
    (void)tstate;
    (void)raw;
#else
    _PyInterpreterFrame *frame = FC(raw);
    /* take_ownership (frame object with refcount > 1) walks frame->previous,
     * which is garbage at hook time: see fc_link_previous(). */
    fc_link_previous(tstate, frame);
#  if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: exported.  Thread frame: clear_thread_frame (c_recursion_remaining
     * --/++ around _PyFrame_ClearExceptCode, Py_DECREF(f_executable),
     * _PyThreadState_PopFrame); generator frame: clear_gen_frame. */
    _PyEval_FrameClearAndPop(tstate, frame);
#  else
    /* 3.12: copy of the static _PyEvalFrameClearAndPop (Python/ceval.c),
     * i.e. clear_thread_frame / clear_gen_frame, checked against the 3.12.1
     * disassembly. */
    if (frame->owner == FRAME_OWNED_BY_THREAD) {
        /* clear_thread_frame: the frame must be the top of the data stack. */
        assert((PyObject **)frame + frame->f_code->co_framesize == tstate->datastack_top);
        tstate->c_recursion_remaining--;
        assert(frame->frame_obj == NULL || frame->frame_obj->f_frame == frame);
        fc312_clear_except_code(frame);
        Py_DECREF(frame->f_code);
        tstate->c_recursion_remaining++;
        fc312_pop_frame(tstate, frame);
    }
    else {
        /* clear_gen_frame: finishing a resumed generator frame without running
         * it makes gen_send_ex2 treat the result as the generator's return
         * value.  (Semantics differ on 3.9–3.11, where dispose does nothing:
         * never skip resumptions.) */
        assert(frame->owner == FRAME_OWNED_BY_GENERATOR);
        PyGenObject *gen = _PyFrame_GetGenerator(frame);
        gen->gi_frame_state = FRAME_CLEARED;
        assert(tstate->exc_info == &gen->gi_exc_state);
        tstate->exc_info = gen->gi_exc_state.previous_item;
        gen->gi_exc_state.previous_item = NULL;
        tstate->c_recursion_remaining--;
        assert(frame->frame_obj == NULL || frame->frame_obj->f_frame == frame);
        fc312_clear_except_code(frame);
        tstate->c_recursion_remaining++;
        frame->previous = NULL;
    }
#  endif
#endif
}

/* ========================================================================
 * Tracing suppression for tools' Python callbacks.
 * ======================================================================== */

void
coextra_fc_enter_tracing(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyThreadState_EnterTracing(tstate);
#elif PY_VERSION_HEX >= 0x030A0000
    /* 3.10: ceval reads cframe->use_tracing on every instruction. */
    tstate->tracing++;
    tstate->cframe->use_tracing = 0;
#else
    tstate->tracing++;
    tstate->use_tracing = 0;
#endif
}

void
coextra_fc_leave_tracing(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyThreadState_LeaveTracing(tstate);
#elif PY_VERSION_HEX >= 0x030A0000
    tstate->tracing--;
    tstate->cframe->use_tracing = tstate->tracing == 0 &&
                                  (tstate->c_tracefunc != NULL || tstate->c_profilefunc != NULL);
#else
    tstate->tracing--;
    tstate->use_tracing = tstate->tracing == 0 &&
                          (tstate->c_tracefunc != NULL || tstate->c_profilefunc != NULL);
#endif
}

/* ------------------------------------------------------------------------ */
/* The C stack (3.9-3.11): see frame_compat.h.                              */
/* ------------------------------------------------------------------------ */

#if COEXTRA_FC_C_STACK_CHECK
#include <pthread.h>

/* The lowest address the calling thread may use before the margin, computed
 * on the thread's first deep frame; (char *)1 when the bounds are unknown
 * (never reached).  Stacks grow down on every platform CPython 3.9-3.11
 * supports on Linux with glibc. */
static _Thread_local char *fc_stack_floor;

static char *
fc_compute_stack_floor(void)
{
    pthread_attr_t attr;
    void *addr;
    size_t size, margin;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return (char *)1;
    if (pthread_attr_getstack(&attr, &addr, &size) != 0) {
        pthread_attr_destroy(&attr);
        return (char *)1;
    }
    pthread_attr_destroy(&attr);
    margin = size / 4 < 256 * 1024 ? size / 4 : 256 * 1024;
    return (char *)addr + margin;
}

int
coextra_fc_c_stack_exhausted(void)
{
    char here;
    if (fc_stack_floor == NULL)
        fc_stack_floor = fc_compute_stack_floor();
    return (uintptr_t)&here < (uintptr_t)fc_stack_floor;
}
#endif

/* ========================================================================
 * The arguments of a frame that has not started (coextra_frame_arguments).
 * ======================================================================== */

/* co_varnames starts with the parameters on every version: positional
 * (positional-only included), keyword-only, then *args and **kwargs. */
static int
fc_nparams(PyCodeObject *co)
{
    return co->co_argcount + co->co_kwonlyargcount + ((co->co_flags & CO_VARARGS) != 0) +
           ((co->co_flags & CO_VARKEYWORDS) != 0);
}

#if PY_VERSION_HEX >= 0x030B0000
/* Whether MAKE_CELL i already ran in this frame (it runs before RESUME, in
 * the prefix: see fc_run_prefix, which runs it itself on 3.13+ when a frame
 * object is made).  Before it runs, the slot of an argument that is also a
 * cell variable holds the argument itself, which may be a cell object passed
 * by the caller: only the instructions before the frame's next one tell.
 * The same test as CPython's _PyFrame_OpAlreadyRan (3.11/3.12), which is
 * not exported. */
static int
fc_cell_made(_PyInterpreterFrame *frame, int local)
{
    _Py_CODEUNIT *code = fc_bytecode(frame);
    int end = fc_next_index(frame);
    int ext = 0;
    for (int i = 0; i < end; i++) {
        int oparg;
        if (fc_decode(code, i, &ext, &oparg) == MAKE_CELL && oparg == local) {
            return 1;
        }
    }
    return 0;
}
#endif

/* The value of parameter i (borrowed), NULL if unbound (never, for a frame
 * an eval-frame function was handed: _PyEval_Vector / _PyEval_MakeFrameVector
 * bind every parameter, defaults included, before evaluating). */
static PyObject *
fc_argument(fc_frame *f, PyCodeObject *co, int i)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *v = fc_local(f, i);
    (void)co;
    if (v != NULL && fc_cell_made(f, i)) {
        v = PyCell_GET(v);
    }
    return v;
#else
    /* 3.9/3.10: _PyEval_MakeFrameVector moves an argument that is also a cell
     * variable into its cell (co_cell2arg[j] == i, the cell in
     * f_localsplus[co_nlocals + j]) and leaves its own slot NULL. */
    PyObject *v = f->f_localsplus[i];
    if (v == NULL && co->co_cell2arg != NULL) {
        Py_ssize_t ncells = PyTuple_GET_SIZE(co->co_cellvars);
        for (Py_ssize_t j = 0; j < ncells; j++) {
            if (co->co_cell2arg[j] == i) {
                PyObject *cell = f->f_localsplus[co->co_nlocals + j];
                return (cell != NULL && PyCell_Check(cell)) ? PyCell_GET(cell) : NULL;
            }
        }
    }
    return v;
#endif
}

PyObject *
coextra_fc_arguments(coextra_raw_frame *raw)
{
    fc_frame *f = FC(raw);
    PyCodeObject *co = (PyCodeObject *)FC_CODEOBJ(f);
    int n = fc_nparams(co);
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: a generator-owned frame has run (its creating call ran the
     * prefix and RETURN_GENERATOR); thread-owned frames reach a hook before
     * their first instruction. */
    int started = f->owner == FRAME_OWNED_BY_GENERATOR;
#else
    /* 3.9/3.10: a generator's first evaluation is its first run (f_lasti -1);
     * every other frame reaches a hook before its first instruction. */
    int started = f->f_lasti >= 0;
#endif
    if (started) {
        PyErr_Format(PyExc_RuntimeError,
                     "coextra_frame_arguments: %U resumes a generator or coroutine that has already run; "
                     "its parameters may have been rebound",
                     co->co_name);
        return NULL;
    }
    PyObject *args = PyTuple_New(n);
    if (args == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *v = fc_argument(f, co, i);
        if (v == NULL) {
            Py_DECREF(args);
            PyErr_Format(PyExc_RuntimeError, "coextra_frame_arguments: parameter %d of %U is not bound", i,
                         co->co_name);
            return NULL;
        }
        Py_INCREF(v);
        PyTuple_SET_ITEM(args, i, v);
    }
    return args;
}

/* ========================================================================
 * Which function a frame runs (coextra_frame_is_call_of).
 * ======================================================================== */

int
coextra_fc_is_call_of(coextra_raw_frame *raw, PyFunctionObject *fn)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: the frame holds its function (f_func / f_funcobj). */
    return coextra_fc_function(raw) == (PyObject *)fn;
#else
    /* 3.9/3.10: frames do not record their function.  A function is its
     * code, globals and closure cells; _PyEval_MakeFrameVector has copied the
     * cells into the free-variable slots (after the cell variables) before
     * any eval-frame function runs. */
    PyFrameObject *f = FC(raw);
    PyCodeObject *co = f->f_code;
    Py_ssize_t nfree, ncells, i;
    if ((PyObject *)co != fn->func_code || f->f_globals != fn->func_globals) {
        return 0;
    }
    nfree = PyTuple_GET_SIZE(co->co_freevars);
    if (nfree == 0) {
        return 1;
    }
    if (fn->func_closure == NULL || PyTuple_GET_SIZE(fn->func_closure) != nfree) {
        return 0;
    }
    ncells = PyTuple_GET_SIZE(co->co_cellvars);
    for (i = 0; i < nfree; i++) {
        if (f->f_localsplus[co->co_nlocals + ncells + i] != PyTuple_GET_ITEM(fn->func_closure, i)) {
            return 0;
        }
    }
    return 1;
#endif
}
