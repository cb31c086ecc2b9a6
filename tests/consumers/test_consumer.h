/* test_consumer.h: what the test extensions built on coextra.h share: the import at module exec, slot handles as (index, generation); C and C++. */
#ifndef COEXTRA_TEST_CONSUMER_H
#define COEXTRA_TEST_CONSUMER_H

#include <coextra/coextra.h>

/* A Py_mod_exec that imports coextra's table (each interpreter that imports
 * the module must). */
static inline int coextra_test_exec_import(PyObject *Py_UNUSED(module)) { return coextra_import(); }

/* (index, generation) -> *s: 0, or -1 with the error of PyArg_ParseTuple. */
static inline int coextra_test_parse_slot(PyObject *tuple, coextra_slot *s) {
    unsigned int index, generation;
    if (!PyArg_ParseTuple(tuple, "II", &index, &generation))
        return -1;
    s->index = index;
    s->generation = generation;
    return 0;
}

/* s as (index, generation). */
static inline PyObject *coextra_test_slot_tuple(coextra_slot s) {
    return Py_BuildValue("(II)", s.index, s.generation);
}

/* coextra_slot_reserve into a handle of its own: (index, generation), or
 * NULL with the runtime's error set. */
static inline PyObject *coextra_test_reserve(const char *name, coextra_free_fn free_fn, void *ctx) {
    coextra_slot s;
    if (coextra_slot_reserve(name, free_fn, ctx, &s) < 0)
        return NULL;
    return coextra_test_slot_tuple(s);
}

/* reserve_null_out(name): coextra_slot_reserve with out == NULL, bad input
 * on purpose (the runtime must refuse it): None, or NULL with its error. */
static inline PyObject *coextra_test_reserve_null_out(PyObject *args, coextra_free_fn free_fn) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (coextra_slot_reserve(name, free_fn, NULL, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

#endif /* COEXTRA_TEST_CONSUMER_H */
