/* raw_eval_hook.h: a PEP 523 eval-frame function installed the raw way (no coextra), for the foreign test tool and the raw bench. */
#ifndef COEXTRA_RAW_EVAL_HOOK_H
#define COEXTRA_RAW_EVAL_HOOK_H

#include <Python.h>

/* The frame an eval-frame function receives: _PyInterpreterFrame since 3.11
 * (PEP 523 as changed by bpo-44590), the frame object before. */
#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame raw_frame;
#else
typedef PyFrameObject raw_frame;
#endif
typedef PyObject *(*raw_eval_fn)(PyThreadState *, raw_frame *, int);

/* One tool's installation: what it found installed, and whether it is in. */
typedef struct raw_eval_hook {
    const char *what; /* "foreign hook", ...: names the tool in errors */
    raw_eval_fn prev;
    int installed;
} raw_eval_hook;

/* Makes fn this interpreter's eval-frame function and remembers the one
 * found; RuntimeError if h is installed already. */
static int raw_eval_hook_install(raw_eval_hook *h, raw_eval_fn fn) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (h->installed) {
        PyErr_Format(PyExc_RuntimeError, "%s already installed", h->what);
        return -1;
    }
    h->prev = (raw_eval_fn)_PyInterpreterState_GetEvalFrameFunc(interp);
    _PyInterpreterState_SetEvalFrameFunc(interp, (_PyFrameEvalFunction)fn);
    h->installed = 1;
    return 0;
}

/* Puts back the function found at install (as a typical tool does on exit),
 * whatever is installed now; RuntimeError if h is not installed. */
static int raw_eval_hook_uninstall(raw_eval_hook *h) {
    if (!h->installed) {
        PyErr_Format(PyExc_RuntimeError, "%s not installed", h->what);
        return -1;
    }
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), (_PyFrameEvalFunction)h->prev);
    h->installed = 0;
    return 0;
}

#endif /* COEXTRA_RAW_EVAL_HOOK_H */
