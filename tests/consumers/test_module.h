/* test_module.h: module definition and method-table entries the test and bench extensions share (Python.h only). */
#ifndef COEXTRA_TEST_MODULE_H
#define COEXTRA_TEST_MODULE_H

#include <Python.h>

/* Defines PyInit_<NAME> for a module named NAME with the method table METHODS,
 * whose Py_mod_exec is EXEC (int EXEC(PyObject *module): typically imports
 * coextra's table, which every interpreter that imports the module must do)
 * and whose m_free is FREE (or NULL).  Multi-phase init, so that each
 * (sub)interpreter runs EXEC for itself. */
#define COEXTRA_TEST_MODULE(NAME, METHODS, EXEC, FREE)                                                  \
    static PyModuleDef_Slot NAME##_slots_[] = {{Py_mod_exec, (void *)(EXEC)}, {0, NULL}};               \
    static struct PyModuleDef NAME##_def_ = {PyModuleDef_HEAD_INIT, #NAME, NULL, 0, METHODS, NAME##_slots_, \
                                             NULL, NULL, FREE};                                         \
    PyMODINIT_FUNC PyInit_##NAME(void) { return PyModuleDef_Init(&NAME##_def_); }

/* A method-table entry whose Python name is the C function's name, written
 * once so that the two cannot drift apart.  FN must be a PyCFunction: no cast
 * hides a wrong signature.  A module whose tables name some functions
 * otherwise (set -> set_value, remove -> remove_hook: names C has taken or
 * that say too little in C) spells its whole table out instead. */
#define COEXTRA_TEST_METHOD(FN, FLAGS, DOC) {#FN, FN, FLAGS, DOC}

/* An API call's 0 / -1 as None / NULL (its exception set). */
static inline PyObject *coextra_test_none_unless_failed(int rc) {
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Appends item (a new reference, or NULL when making it failed) to list and
 * drops the reference: 0, or -1 with the error set. */
static inline int coextra_test_append_new(PyObject *list, PyObject *item) {
    int rc;
    if (item == NULL)
        return -1;
    rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

#endif /* COEXTRA_TEST_MODULE_H */
