/* coextra.h: the public, header-only C consumer API of coextra (ABI table, coextra_import(), inline fast paths). */
#ifndef COEXTRA_H
#define COEXTRA_H

/*
 * CONTRACTS (read before changing anything in this file)
 *
 *  Platform   CPython 3.9–3.15, GIL builds (free-threaded: not yet), non-limited C API.
 *             Every function needs the GIL (an attached thread state).
 *
 *  Table      `coextra_api` is reached through the capsule `_C_API` of the
 *             module `coextra._coextra`, named "coextra._coextra._C_API".  It
 *             is process-wide, immutable, append-only, and holds only code
 *             pointers.  COEXTRA_ABI_MAJOR changes only when something is
 *             removed or changes meaning; COEXTRA_ABI_MINOR grows when entries
 *             are appended.  A consumer accepts a table whose major is equal
 *             and whose minor and struct_size are at least what it was built
 *             with.
 *
 *  State      The slot table, hook chain and co_extra index exist once per
 *             interpreter (the "runtime"), created by importing
 *             coextra._coextra and published in PyInterpreterState_GetDict().
 *             Consumers never create one.  Handles (coextra_slot,
 *             coextra_hook*) belong to the interpreter that made them; using
 *             them in another is an error (checked calls) or NULL (fast path).
 *
 *  Layout     coextra_block / coextra_block_entry / coextra_fast_entry /
 *             coextra_frame_head / coextra_hop below are read by the inline
 *             fast paths compiled into consumers; they are frozen for an ABI
 *             major (fields are only appended, with a minor bump;
 *             static_asserts in lib/ guard them).
 *
 *  Inline     What the static inline functions of this header do is compiled
 *             into every consumer, so it is part of the ABI like the table:
 *             any change to it (not only new functions) bumps
 *             COEXTRA_ABI_MINOR, and the runtime keeps supporting what every
 *             earlier minor's inline code does.  tests/python/test_abi_freeze.py
 *             records a hash of this header's inline code per minor and fails
 *             when it changes without a bump.  What the inline code may
 *             assume is written at coextra_frame_head and coextra_eval_next.
 *
 *  Errors     Functions return 0 or a pointer on success and -1 or NULL with
 *             a Python exception set on failure, unless noted.
 */

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>
#include <stdint.h>
#include <stddef.h>
/* dladdr(), to name the extension in the "coextra_import() has not been
 * called" error.  glibc declares it under _GNU_SOURCE, which Python.h's
 * pyconfig.h defines; but a C file that included a libc header before
 * Python.h (against Python's advice) has its features fixed without it
 * (__USE_GNU unset), and then does without.  Define COEXTRA_NO_DLADDR to
 * leave it out; the message then says "this extension". */
#if (defined(__linux__) || defined(__APPLE__)) && !defined(COEXTRA_NO_DLADDR)
#include <dlfcn.h>
#if defined(__APPLE__) || !defined(__GLIBC__) || defined(__USE_GNU)
#define COEXTRA_HAVE_DLADDR_ 1
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define COEXTRA_ABI_MAJOR 1
#define COEXTRA_ABI_MINOR 4

#define COEXTRA_MODULE_NAME "coextra._coextra"
#define COEXTRA_CAPSULE_NAME "coextra._coextra._C_API"

/* Hook priority bands: lower = outer (sees the frame first, finishes last). */
#define COEXTRA_PRIORITY_DEBUGGER 100
#define COEXTRA_PRIORITY_PROFILER 200
#define COEXTRA_PRIORITY_DEFAULT 500
#define COEXTRA_PRIORITY_OPTIMIZER 1000
#define COEXTRA_PRIORITY_MIN 0
#define COEXTRA_PRIORITY_MAX 10000

/* flags of slot_reserve_ex / hook_add_ex: made by the Python face (native = not set) */
#define COEXTRA_FLAG_PYTHON 1u

/* Slot and hook names: non-empty UTF-8, at most this many bytes. */
#define COEXTRA_NAME_MAX 200

/* A reserved per-code slot.  All-zero means "no slot". */
typedef struct coextra_slot {
    uint32_t index;      /* 1-based position in the interpreter's slot table */
    uint32_t generation; /* process-unique; a released/foreign handle never matches */
} coextra_slot;

typedef void (*coextra_free_fn)(void *value, void *ctx);

typedef struct coextra_frame coextra_frame; /* opaque view of the frame being evaluated */
typedef struct coextra_hook coextra_hook;   /* opaque hook handle */

typedef PyObject *(*coextra_eval_fn)(coextra_frame *frame, int throwflag, void *ctx);

typedef struct coextra_hook_def {
    const char *name;      /* unique among live hooks; copied */
    int priority;          /* COEXTRA_PRIORITY_MIN..MAX */
    coextra_eval_fn eval;  /* must call coextra_eval_next or coextra_frame_return */
    void *ctx;             /* passed to eval; must stay valid until the hook is removed */
    coextra_slot only;     /* non-zero: only frames whose code holds a value in this slot */
} coextra_hook_def;

/* An observer (ABI 1.3): a hook that only watches frames.  on_enter runs when
 * a frame of the code starts or resumes (a call, next/send, throw()), on_exit
 * when it returns, yields or unwinds; both get the frame's code object
 * (borrowed).  They must not raise (a Python exception set on return is
 * reported to sys.unraisablehook and cleared).  With `only` set, on CPython
 * 3.12+ coextra runs them on sys.monitoring local events of exactly the code
 * objects that hold a value in that slot, and installs no eval-frame function
 * for them; otherwise they run in the eval-frame chain like any hook. */
typedef void (*coextra_observe_fn)(PyCodeObject *code, void *ctx);

typedef struct coextra_observer_def {
    const char *name;            /* unique among live hooks and observers; copied */
    int priority;                /* COEXTRA_PRIORITY_MIN..MAX; orders observers among themselves */
    coextra_observe_fn on_enter; /* may be NULL */
    coextra_observe_fn on_exit;  /* may be NULL (not both) */
    void *ctx;                   /* passed to both; must stay valid until the observer is removed and
                                  * the frames it entered have left: every on_enter gets its on_exit */
    coextra_slot only;           /* non-zero: only frames whose code holds a value in this slot */
} coextra_observer_def;

/* ---- frozen layouts read by the inline fast path ------------------------ */

typedef struct coextra_block_entry {
    void *value;         /* NULL = empty (always NULL when generation is 0) */
    uint32_t generation; /* generation of the slot that stored value; 0 = empty */
    uint32_t reserved;
} coextra_block_entry;

/* The one co_extra block a code object holds (set once, changed in place).
 * The runtime keeps private fields after these two. */
typedef struct coextra_block {
    coextra_block_entry *entries; /* entries[slot.index - 1] */
    uint32_t capacity;            /* number of entries */
    uint32_t magic;               /* COEXTRA_BLOCK_MAGIC */
} coextra_block;

#define COEXTRA_BLOCK_MAGIC 0xC0E7B10Cu

/* The runtime publishes (interpreter, co_extra index) for the first
 * interpreter that used coextra (normally the main one); other interpreters
 * take the checked path through the table. */
typedef struct coextra_fast_entry {
    PyInterpreterState *volatile interp;
    volatile Py_ssize_t co_extra_index; /* -1 until the first value is stored */
    /* ABI 1.1: where CPython keeps the head of its interpreter list
     * (&_PyRuntime.interpreters.head) when `interp` is the main interpreter,
     * else the address of a NULL.  CPython links each new interpreter in at
     * the head and the main one is created first, so `*interp_list_head ==
     * interp` means the main interpreter is the process's only one, hence
     * the caller's: coextra_slot_get then needs no PyInterpreterState_Get()
     * call (a __tls_get_addr call on 3.12+).  Never NULL. */
    PyInterpreterState *const volatile *interp_list_head;
} coextra_fast_entry;

/* The evaluator a frame may be handed to directly: CPython's own
 * eval-frame function type (ABI 1.4; before, the same with the frame as
 * void *).  Its frame is a PyFrameObject on 3.9/3.10 and a struct
 * _PyInterpreterFrame on 3.11+, which the frame head keeps as `void *raw`;
 * COEXTRA_RAW_FRAME_ gives it back its type. */
typedef _PyFrameEvalFunction coextra_evaluator_fn;
#if PY_VERSION_HEX >= 0x030B0000
#define COEXTRA_RAW_FRAME_(raw) ((struct _PyInterpreterFrame *)(raw))
#else
#define COEXTRA_RAW_FRAME_(raw) ((PyFrameObject *)(raw))
#endif

/* One step of a chain snapshot (ABI 1.2), read by the inline
 * coextra_eval_next: what runs next and the `direct` it gets.  `eval` is a
 * hook's own function and ctx, or a runtime function (a hook removed or paused
 * since the frame entered is skipped, a filtered hook tests its slot, the end
 * of the snapshot calls the evaluator).  The runtime owns and rewrites these;
 * consumers only read them. */
typedef struct coextra_hop {
    coextra_eval_fn eval;
    void *ctx;
    coextra_evaluator_fn direct; /* the head's `direct` while eval runs */
} coextra_hop;

/* The public head of the frame view a hook receives (ABI 1.1), read by the
 * inline coextra_eval_next.  The runtime writes every field before the first
 * hook runs; hooks never write them (the inline coextra_eval_next does).
 *  - `direct`: set when what comes after the running hook is CPython's
 *    evaluator itself (the hook is the last of the chain and no foreign
 *    eval-frame function lies below coextra): delegating is then one direct
 *    call.
 *  - `next` (ABI 1.2): the step after the running hook.  Never NULL while
 *    `direct` is NULL and `consumed` is 0; may be NULL while `direct` is set
 *    (nothing reads it then).  coextra_eval_next moves it on by one step as
 *    it enters that step, and never back.
 *  - `consumed`: the frame was evaluated, or finished by coextra_frame_return;
 *    every later coextra_eval_next goes through the table, which fails it. */
typedef struct coextra_frame_head {
    PyThreadState *tstate;
    void *raw;                   /* the frame CPython passed to the eval-frame function */
    coextra_evaluator_fn direct; /* NULL = no direct evaluator */
    int consumed;
    int reserved_;
    const coextra_hop *next;     /* ABI 1.2 */
} coextra_frame_head;

/* CPython's per-code extra array (Include/internal/pycore_code.h,
 * _PyCodeObjectExtra): unchanged 3.9–3.15. */
typedef struct coextra_code_extra_ {
    Py_ssize_t ce_size;
    void *ce_extras[1];
} coextra_code_extra_;

/* ce_extras[i] of a co_extra array of ce_size entries (i < ce_size), read
 * through a pointer derived from the whole allocation rather than by indexing
 * past the declared [1] (CPython allocates the entries after the struct). */
static inline void *coextra_code_extra_at_(const coextra_code_extra_ *ce, size_t i) {
    return ((void *const *)((const char *)ce + offsetof(coextra_code_extra_, ce_extras)))[i];
}
/* ABI 1.4: the callback of coextra_slot_foreach: `code` and `value` are
 * borrowed; return 0 to go on, anything else to stop (and have foreach return
 * it: -1 with a Python exception set reports an error). */
typedef int (*coextra_slot_visit_fn)(PyObject *code, void *value, void *arg);

/* ---- the versioned API table (append only) ------------------------------ */

typedef struct coextra_api {
    uint32_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t reserved;
    const coextra_fast_entry *fast; /* process-wide, see coextra_fast_entry */

    int (*slot_reserve)(const char *name, coextra_free_fn free_fn, void *ctx, coextra_slot *out);
    int (*slot_release)(coextra_slot slot);
    int (*slot_set)(PyObject *code, coextra_slot slot, void *value);
    void *(*slot_get)(PyObject *code, coextra_slot slot);
    int (*slot_clear)(PyObject *code, coextra_slot slot);

    int (*hook_add)(const coextra_hook_def *def, coextra_hook **out);
    int (*hook_remove)(coextra_hook *hook);
    int (*hook_set_active)(coextra_hook *hook, int active);
    PyObject *(*eval_next)(coextra_frame *frame, int throwflag);

    PyCodeObject *(*frame_code)(coextra_frame *frame);
    PyObject *(*frame_function)(coextra_frame *frame);
    PyObject *(*frame_globals)(coextra_frame *frame);
    int (*frame_is_resume)(coextra_frame *frame);
    PyFrameObject *(*frame_object)(coextra_frame *frame);
    PyObject *(*frame_return)(coextra_frame *frame, PyObject *result);

    /* Introspection and the Python face (used by coextra._coextra). */
    int (*slot_reserve_ex)(const char *name, coextra_free_fn free_fn, void *ctx, uint32_t flags,
                           coextra_slot *out);
    Py_ssize_t (*slot_live)(coextra_slot slot); /* code objects holding a value; -1 + error if stale */
    int (*hook_add_ex)(const coextra_hook_def *def, uint32_t flags, coextra_hook **out);
    int (*hook_get_active)(coextra_hook *hook); /* 1/0; -1 + error if removed or foreign */
    PyObject *(*slots_info)(void);  /* [(name, index, live, native)] */
    PyObject *(*hooks_info)(void);  /* [(name, priority, active, native)], outermost first */
    PyObject *(*status_info)(void); /* (installed, displaced, foreign_tail, active_hooks, co_extra_index,
                                     *  monitoring_tool_id, observers) (the last two since 1.3) */
    const char *(*runtime_version)(void);
    PyObject *(*released_error_type)(void); /* new reference to this interpreter's coextra.ReleasedError */
    /* ABI 1.0 ends here; append below and bump COEXTRA_ABI_MINOR. */

    /* ABI 1.3: observers.  The handle is a coextra_hook: coextra_hook_remove
     * and coextra_hook_set_active apply.  observer_add_ex is the Python face's:
     * `chain_eval` (with def->ctx) replaces the runtime's own enter/exit
     * wrapper where the observer runs in the eval-frame chain. */
    int (*observer_add)(const coextra_observer_def *def, coextra_hook **out);
    int (*observer_add_ex)(const coextra_observer_def *def, coextra_eval_fn chain_eval, uint32_t flags,
                           coextra_hook **out);
    /* 1 if the hook or observer runs on sys.monitoring events, 0 if in the
     * eval-frame chain; -1 + error if removed or foreign. */
    int (*hook_is_monitored)(coextra_hook *hook);

    /* ABI 1.4: what a tool needs to read frames and call back into Python
     * without CPython's internals (see the inline wrappers). */
    PyObject *(*frame_arguments)(coextra_frame *frame);
    int (*frame_is_call_of)(coextra_frame *frame, PyObject *function);
    int (*hide_from_tracing)(PyThreadState *tstate);
    int (*unhide_from_tracing)(PyThreadState *tstate);
    /* ABI 1.4: slot iteration */
    int (*slot_foreach)(coextra_slot slot, coextra_slot_visit_fn fn, void *arg);
} coextra_api;

/* ---- the hidden per-extension table pointer ----------------------------- */
/* One per consumer extension (each translation unit that includes this header
 * gets its own static copy; define COEXTRA_API_SHARED in all but one TU and
 * COEXTRA_API_DEFINE in that one to share it across TUs). */
/* coextra_fast_ptr_ is the table's fast entry once imported; before that a
 * stand-in whose interpreter test always fails, so that the inline
 * coextra_slot_get needs no "imported?" test of its own on the fast path:
 * it falls back to the table, or NULL without one. */
#if defined(COEXTRA_API_DEFINE) || !defined(COEXTRA_API_SHARED)
static PyInterpreterState *const coextra_no_interp_ = NULL;
static const coextra_fast_entry coextra_fast_none_ = {(PyInterpreterState *)&coextra_no_interp_, -1,
                                                      &coextra_no_interp_};
#endif
#if defined(COEXTRA_API_DEFINE)
const coextra_api *coextra_api_ptr_ = NULL;
const coextra_fast_entry *coextra_fast_ptr_ = &coextra_fast_none_;
#elif defined(COEXTRA_API_SHARED)
extern const coextra_api *coextra_api_ptr_;
extern const coextra_fast_entry *coextra_fast_ptr_;
#else
static const coextra_api *coextra_api_ptr_ = NULL;
static const coextra_fast_entry *coextra_fast_ptr_ = &coextra_fast_none_;
#endif

/* The error of every checked call made before coextra_import() succeeded.
 * It names the extension by the file that holds this translation unit's
 * table pointer (the one that must call coextra_import()), where the
 * platform can tell. */
static inline int coextra_not_imported_(void) {
#ifdef COEXTRA_HAVE_DLADDR_
    Dl_info info;
    if (dladdr((const void *)&coextra_api_ptr_, &info) != 0 && info.dli_fname != NULL && info.dli_fname[0]) {
        PyErr_Format(PyExc_RuntimeError,
                     "coextra: coextra_import() has not been called (or failed) in the extension %s: "
                     "call it from the module's exec function (or PyInit_*) before any other coextra_ call",
                     info.dli_fname);
        return -1;
    }
#endif
    PyErr_SetString(PyExc_RuntimeError,
                    "coextra: coextra_import() has not been called (or failed) in this extension: "
                    "call it from the module's exec function (or PyInit_*) before any other coextra_ call");
    return -1;
}

/* Import coextra._coextra and check its table.  Call once from your module's
 * init (exec slot); safe to call again.  0 on success, -1 with ImportError. */
static inline int coextra_import(void) {
    PyObject *mod, *cap;
    const coextra_api *api;
    volatile uint32_t built_minor = COEXTRA_ABI_MINOR; /* volatile: no "always false" warning at minor 0 */
    if (coextra_api_ptr_ != NULL) {
        /* The table is process-wide but the runtime is per interpreter, and
         * importing coextra._coextra is what creates it: a consumer whose
         * exec runs again in a new (sub)interpreter must import it there too,
         * or every call would find no runtime in that interpreter. */
        mod = PyImport_ImportModule(COEXTRA_MODULE_NAME);
        if (mod == NULL)
            return -1;
        Py_DECREF(mod);
        return 0;
    }
    mod = PyImport_ImportModule(COEXTRA_MODULE_NAME);
    if (mod == NULL)
        return -1;
    cap = PyObject_GetAttrString(mod, "_C_API");
    Py_DECREF(mod);
    if (cap == NULL)
        return -1;
    if (!PyCapsule_IsValid(cap, COEXTRA_CAPSULE_NAME)) {
        Py_DECREF(cap);
        PyErr_SetString(PyExc_ImportError,
                        "coextra: coextra._coextra._C_API is not a capsule named \"" COEXTRA_CAPSULE_NAME "\"");
        return -1;
    }
    api = (const coextra_api *)PyCapsule_GetPointer(cap, COEXTRA_CAPSULE_NAME);
    Py_DECREF(cap);
    if (api == NULL)
        return -1;
    if (api->abi_major != COEXTRA_ABI_MAJOR || api->abi_minor < built_minor ||
        api->struct_size < sizeof(coextra_api)) {
        PyErr_Format(PyExc_ImportError,
                     "coextra: ABI mismatch: this extension was built for coextra ABI %d.%d "
                     "(table size %u) but the loaded runtime provides ABI %u.%u (table size %u)",
                     COEXTRA_ABI_MAJOR, COEXTRA_ABI_MINOR, (unsigned)sizeof(coextra_api),
                     (unsigned)api->abi_major, (unsigned)api->abi_minor, (unsigned)api->struct_size);
        return -1;
    }
    coextra_api_ptr_ = api;
    coextra_fast_ptr_ = api->fast;
    return 0;
}

/* ---- slots --------------------------------------------------------------- */

static inline int coextra_slot_reserve(const char *name, coextra_free_fn free_fn, void *ctx,
                                       coextra_slot *out) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_reserve(name, free_fn, ctx, out)
                            : coextra_not_imported_();
}
/* Frees the slot's value in every live code object, then retires the handle. */
static inline int coextra_slot_release(coextra_slot slot) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_release(slot) : coextra_not_imported_();
}
/* Stores value (NULL = clear); frees the value it replaces. */
static inline int coextra_slot_set(PyObject *code, coextra_slot slot, void *value) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_set(code, slot, value) : coextra_not_imported_();
}
static inline int coextra_slot_clear(PyObject *code, coextra_slot slot) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_clear(code, slot) : coextra_not_imported_();
}
/* How many code objects hold a value in `slot`; -1 with an error if the
 * handle is stale or foreign (coextra.ReleasedError). */
static inline Py_ssize_t coextra_slot_live(coextra_slot slot) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_live(slot) : coextra_not_imported_();
}

/* ABI 1.4: call fn(code, value, arg) for every code object holding a value
 * in `slot`, in no particular order.  The code objects are taken first (a
 * snapshot of strong references, so none dies during the walk), then visited
 * one by one, each with the value it holds at that moment: fn may set, clear
 * or replace values and run any Python code.  A code object whose value was
 * cleared before its turn is skipped; one that got its first value after the
 * snapshot is not visited.  Returns 0 once every code object was visited, or
 * fn's non-zero return as soon as it gives one.  -1 with an exception: fn is
 * NULL, the handle is stale or foreign (ReleasedError), the slot was
 * released during the walk (ReleasedError, after fn returned; nothing more is
 * visited), or the snapshot could not be allocated (MemoryError, before any
 * call).  Values are borrowed: one read here may be freed by anything that
 * clears or replaces it, fn included. */
static inline int coextra_slot_foreach(coextra_slot slot, coextra_slot_visit_fn fn, void *arg) {
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_foreach(slot, fn, arg) : coextra_not_imported_();
}

/* Whether the main interpreter is the process's only one (then it runs the
 * caller, and its co_extra index is fast->co_extra_index): see
 * coextra_fast_entry.  Two loads and a compare, no call. */
static inline int coextra_sole_interp_(const coextra_fast_entry *fast) {
    return *fast->interp_list_head == fast->interp;
}

/* Fast path: the value stored in `slot` for `code`, or NULL (no value, not a
 * code object, stale/foreign handle, not imported).  Never sets an error.
 *
 * While the main interpreter is the process's only one (the common case),
 * reads CPython's co_extra array directly (PyCodeObject.co_extra is a public
 * field 3.9–3.15) without a call; otherwise (subinterpreters exist, or
 * free-threaded builds) it goes through the table, which checks the calling
 * thread's interpreter. */
static inline void *coextra_slot_get(PyObject *code, coextra_slot slot) {
    const uint32_t gen = slot.generation;
    const uint32_t i = slot.index - 1u; /* index 0 wraps and fails the bound check */
    /* An all-zero handle needs no test of its own: an entry whose generation
     * is 0 is empty and its value is NULL (the runtime keeps it so).  Before
     * coextra_import() the stand-in fast entry fails the interpreter test. */
#if !defined(Py_GIL_DISABLED)
    const coextra_fast_entry *fast = coextra_fast_ptr_;
    /* code == NULL is bad input like any non-code object: NULL, not a crash
     * (PyCode_Check dereferences its argument). */
    if (code != NULL && coextra_sole_interp_(fast) && PyCode_Check(code)) {
        const coextra_code_extra_ *ce = (const coextra_code_extra_ *)((PyCodeObject *)code)->co_extra;
        const size_t idx = (size_t)fast->co_extra_index; /* -1 (none yet) wraps and fails the bound check */
        const coextra_block *blk;
        if (ce == NULL || idx >= (size_t)ce->ce_size)
            return NULL;
        blk = (const coextra_block *)coextra_code_extra_at_(ce, idx);
        if (blk == NULL || i >= blk->capacity || blk->entries[i].generation != gen)
            return NULL;
        return blk->entries[i].value;
    }
#endif
    return coextra_api_ptr_ ? coextra_api_ptr_->slot_get(code, slot) : NULL;
}

/* ---- hooks and frames ----------------------------------------------------- */

static inline int coextra_hook_add(const coextra_hook_def *def, coextra_hook **out) {
    return coextra_api_ptr_ ? coextra_api_ptr_->hook_add(def, out) : coextra_not_imported_();
}
static inline int coextra_hook_remove(coextra_hook *hook) {
    return coextra_api_ptr_ ? coextra_api_ptr_->hook_remove(hook) : coextra_not_imported_();
}
/* ABI 1.3: add an observer (see coextra_observer_def). */
static inline int coextra_observer_add(const coextra_observer_def *def, coextra_hook **out) {
    return coextra_api_ptr_ ? coextra_api_ptr_->observer_add(def, out) : coextra_not_imported_();
}
/* ABI 1.3: 1 if the hook or observer runs on sys.monitoring events (an
 * observer with `only`, 3.12+), 0 if in the eval-frame chain. */
static inline int coextra_hook_is_monitored(coextra_hook *hook) {
    return coextra_api_ptr_ ? coextra_api_ptr_->hook_is_monitored(hook) : coextra_not_imported_();
}
static inline int coextra_hook_set_active(coextra_hook *hook, int active) {
    return coextra_api_ptr_ ? coextra_api_ptr_->hook_set_active(hook, active) : coextra_not_imported_();
}
/* The frame functions below are only valid inside a hook's eval function,
 * on the frame it was given (coextra_import() has necessarily succeeded). */

/* Continue down the chain (the next hook, else the evaluator). New reference.
 * When the evaluator comes next, this is a direct call to it; when a hook
 * comes next, a direct call to that hook (both in tail position: a compiler
 * that makes tail calls, as GCC and clang do from -O2, adds no stack frame).
 * Nothing is put back when they return.  So a hook that delegates a second
 * time, after the hooks below returned without finishing the frame (none of
 * them delegated or called coextra_frame_return), continues below the
 * innermost hook that was entered: with the hook after it, or the evaluator.
 * No hook sees the frame twice, the frame runs at most once, and coextra
 * finishes a frame nobody finished when the outermost hook returns. */
static inline PyObject *coextra_eval_next(coextra_frame *frame, int throwflag) {
    coextra_frame_head *head = (coextra_frame_head *)frame;
    coextra_evaluator_fn direct = head->direct;
    const coextra_hop *hop;
    if (direct != NULL) {
        head->direct = NULL; /* a second call takes the table and fails there */
        head->consumed = 1;
        return direct(head->tstate, COEXTRA_RAW_FRAME_(head->raw), throwflag);
    }
    if (!head->consumed) {
        hop = head->next; /* never NULL here: see coextra_frame_head */
        head->next = hop + 1;
        head->direct = hop->direct;
        return hop->eval(frame, throwflag, hop->ctx);
    }
    return coextra_api_ptr_->eval_next(frame, throwflag);
}
static inline PyCodeObject *coextra_frame_code(coextra_frame *frame) {
    return coextra_api_ptr_->frame_code(frame);
}
static inline PyObject *coextra_frame_function(coextra_frame *frame) {
    return coextra_api_ptr_->frame_function(frame);
}
static inline PyObject *coextra_frame_globals(coextra_frame *frame) {
    return coextra_api_ptr_->frame_globals(frame);
}
static inline int coextra_frame_is_resume(coextra_frame *frame) {
    return coextra_api_ptr_->frame_is_resume(frame);
}
static inline PyFrameObject *coextra_frame_object(coextra_frame *frame) {
    return coextra_api_ptr_->frame_object(frame);
}
/* ABI 1.4: a new tuple of the values bound to the frame's parameters, read
 * before the frame runs, in declaration order: the positional ones
 * (positional-only included; co_argcount), the keyword-only ones
 * (co_kwonlyargcount), then the *args tuple and the **kwargs dict if the
 * function has them (the frame's own objects).  Defaults are already applied.
 * A parameter that is also a cell variable (an inner function captures it)
 * gives its value, not the cell.  Errors: SystemError for a NULL frame, one
 * already finished, or one of another thread; RuntimeError for a generator
 * or coroutine resumption that has already run (its parameters may have
 * been rebound: read them on the creating call (3.11+) or the first run
 * (3.9/3.10) instead). */
static inline PyObject *coextra_frame_arguments(coextra_frame *frame) {
    return coextra_api_ptr_->frame_arguments(frame);
}
/* ABI 1.4: 1 if the frame runs this function object, 0 if it runs another
 * one (several functions can share a code object: closures made in a loop,
 * copies with other globals).  3.11+ frames record their function; on
 * 3.9/3.10 a function is told by its code, globals and closure cells, so
 * copies that differ only in defaults, name or attributes count as the same.
 * -1 with an error: SystemError as for coextra_frame_arguments, TypeError if
 * `function` is not a Python function. */
static inline int coextra_frame_is_call_of(coextra_frame *frame, PyObject *function) {
    return coextra_api_ptr_->frame_is_call_of(frame, function);
}
/* ABI 1.4: hide the calling thread from sys.settrace, sys.setprofile and
 * sys.monitoring while a tool's own code runs (as CPython hides a trace
 * function's own frames), and show it again.  Calls nest; each hide needs
 * its unhide, on the same thread, before the hook or callback returns.
 * sys.settrace() called while hidden takes effect when the thread is shown
 * again.  tstate must be the calling thread's (PyThreadState_Get()):
 * ValueError otherwise; unhide raises RuntimeError when the thread is not
 * hidden. */
static inline int coextra_hide_from_tracing(PyThreadState *tstate) {
    return coextra_api_ptr_ ? coextra_api_ptr_->hide_from_tracing(tstate) : coextra_not_imported_();
}
static inline int coextra_unhide_from_tracing(PyThreadState *tstate) {
    return coextra_api_ptr_ ? coextra_api_ptr_->unhide_from_tracing(tstate) : coextra_not_imported_();
}
/* Finish the frame WITHOUT running it and return `result` (stolen; NULL with
 * an exception set propagates that exception).  On a generator/coroutine
 * resumption, which cannot be skipped, raises SystemError into the frame and
 * returns NULL. */
static inline PyObject *coextra_frame_return(coextra_frame *frame, PyObject *result) {
    return coextra_api_ptr_->frame_return(frame, result);
}

#ifdef __cplusplus
}
#endif

#endif /* COEXTRA_H */
