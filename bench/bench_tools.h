/* bench_tools.h: the memory rows' "tools" both bench extensions model: k of them (0..BENCH_MAX_TOOLS), each storing a value in every code object. */
#ifndef COEXTRA_BENCH_TOOLS_H
#define COEXTRA_BENCH_TOOLS_H

#include <Python.h>

#define BENCH_MAX_TOOLS 8

/* The number of tools an argument names: -1 with the error set unless an
 * int in 0..BENCH_MAX_TOOLS. */
static int bench_tools_arg(PyObject *arg, long *k) {
    *k = PyLong_AsLong(arg);
    if (*k == -1 && PyErr_Occurred())
        return -1;
    if (*k < 0 || *k > BENCH_MAX_TOOLS) {
        PyErr_Format(PyExc_ValueError, "k must be 0..%d", BENCH_MAX_TOOLS);
        return -1;
    }
    return 0;
}

/* The memory rows' set_all(codes, k): store(code, i) for every code object
 * of the sequence codes and every tool i < k, k at most the `reserved` tools
 * (ValueError "<reserve_first> first" otherwise).  None, or NULL with the
 * first failure's error set. */
static PyObject *bench_store_all(PyObject *args, int reserved, const char *reserve_first,
                                 int (*store)(PyObject *code, int i)) {
    PyObject *codes, *seq;
    Py_ssize_t j;
    int k, i, rc = 0;
    if (!PyArg_ParseTuple(args, "Oi", &codes, &k))
        return NULL;
    if (k < 0 || k > reserved)
        return PyErr_Format(PyExc_ValueError, "%s first", reserve_first);
    if (!(seq = PySequence_Fast(codes, "codes must be a sequence")))
        return NULL;
    for (j = 0; j < PySequence_Fast_GET_SIZE(seq) && rc == 0; j++)
        for (i = 0; i < k && rc == 0; i++)
            rc = store(PySequence_Fast_GET_ITEM(seq, j), i) < 0 ? -1 : 0;
    Py_DECREF(seq);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

#endif /* COEXTRA_BENCH_TOOLS_H */
