/* test_module.h: the module definition the test consumer extensions share (multi-phase init, no module state). */
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

/* An API call's 0 / -1 as None / NULL (its exception set). */
static inline PyObject *coextra_test_none_unless_failed(int rc) {
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

#endif /* COEXTRA_TEST_MODULE_H */
