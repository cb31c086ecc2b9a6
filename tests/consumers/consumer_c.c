/* consumer_c.c: a third-party-style C extension built only against include/coextra/coextra.h. */
/* A libc header first, as real extensions sometimes do against Python's advice: in C (-std=c11)
 * glibc's features are then fixed without _GNU_SOURCE, and coextra.h must still compile. */
#include <string.h>
#include <coextra/coextra.h>

#include "test_module.h"
#include "test_consumer.h"

/* Values are heap ints; the free function counts how often it ran. */
static coextra_slot g_slot;
static long g_freed;

static void free_int(void *value, void *Py_UNUSED(ctx)) {
    g_freed++;
    PyMem_RawFree(value);
}

/* A stored value as an int, or None. */
static PyObject *int_or_none(const long *p) {
    if (p == NULL)
        Py_RETURN_NONE;
    return PyLong_FromLong(*p);
}

/* (code, index, generation) and, if value is not NULL, an int after them. */
static int parse_handle(PyObject *args, PyObject **code, coextra_slot *s, long *value) {
    unsigned int index, generation;
    if (!(value != NULL ? PyArg_ParseTuple(args, "OIIl", code, &index, &generation, value)
                        : PyArg_ParseTuple(args, "OII", code, &index, &generation)))
        return -1;
    s->index = index;
    s->generation = generation;
    return 0;
}

/* reserve(name) -> (index, generation); the module's own slot */
static PyObject *reserve(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *name;
    PyObject *name_obj;
    if (!PyArg_ParseTuple(args, "O", &name_obj))
        return NULL;
    if (name_obj == Py_None) {
        name = NULL; /* bad input on purpose: the runtime must refuse it */
    } else if (!(name = PyUnicode_AsUTF8(name_obj))) {
        return NULL;
    }
    if (coextra_slot_reserve(name, free_int, NULL, &g_slot) < 0)
        return NULL;
    return coextra_test_slot_tuple(g_slot);
}

static PyObject *set_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    long v;
    long *p;
    if (parse_handle(args, &code, &s, &v) < 0)
        return NULL;
    p = (long *)PyMem_RawMalloc(sizeof(long));
    if (p == NULL)
        return PyErr_NoMemory();
    *p = v;
    if (coextra_slot_set(code, s, p) < 0) {
        PyMem_RawFree(p);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *get_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_handle(args, &code, &s, NULL) < 0)
        return NULL;
    return int_or_none((long *)coextra_slot_get(code, s));
}

static PyObject *clear_value(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_handle(args, &code, &s, NULL) < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_clear(code, s));
}

static PyObject *release(PyObject *Py_UNUSED(m), PyObject *args) {
    coextra_slot s;
    if (coextra_test_parse_slot(args, &s) < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_release(s));
}

static PyObject *freed(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromLong(g_freed);
}

/* get_table(code, index, generation): the checked lookup through the table,
 * bypassing the inline fast path (both must agree). */
static PyObject *get_table(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_handle(args, &code, &s, NULL) < 0)
        return NULL;
    return int_or_none((long *)coextra_api_ptr_->slot_get(code, s));
}

/* set_null(code, index, generation): coextra_slot_set with a NULL value (= clear). */
static PyObject *set_null(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *code;
    coextra_slot s;
    if (parse_handle(args, &code, &s, NULL) < 0)
        return NULL;
    return coextra_test_none_unless_failed(coextra_slot_set(code, s, NULL));
}

/* reserve_null_out(name): bad input on purpose (out == NULL). */
static PyObject *reserve_null_out(PyObject *Py_UNUSED(m), PyObject *args) {
    return coextra_test_reserve_null_out(args, free_int);
}

/* reserve_bytes(name: bytes) -> (index, generation): names that are not valid UTF-8. */
static PyObject *reserve_bytes(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "y", &name))
        return NULL;
    return coextra_test_reserve(name, free_int, NULL);
}

/* live(index, generation) -> number of code objects holding a value (checked). */
static PyObject *live(PyObject *Py_UNUSED(m), PyObject *args) {
    coextra_slot s;
    Py_ssize_t n;
    if (coextra_test_parse_slot(args, &s) < 0 || (n = coextra_slot_live(s)) < 0)
        return NULL;
    return PyLong_FromSsize_t(n);
}

/* The address of the table this extension uses: equal in every consumer of
 * one interpreter when they all reach the same runtime. */
/* The callback of foreach(): calls the Python callable with (code, value); its
 * result steers the walk (None = go on, an int = stop with it, raising = -1). */
static int visit_call(PyObject *code, void *value, void *arg) {
    PyObject *r = PyObject_CallFunction((PyObject *)arg, "Ol", code, *(long *)value);
    long rc;
    if (r == NULL)
        return -1;
    rc = r == Py_None ? 0 : PyLong_AsLong(r);
    Py_DECREF(r);
    return rc == -1 && PyErr_Occurred() ? -1 : (int)rc;
}

/* foreach(index, generation, fn) -> what coextra_slot_foreach returned (a
 * -1 with an exception raises it).  fn=None passes a NULL callback. */
static PyObject *foreach(PyObject *m, PyObject *args) {
    unsigned int index, generation;
    PyObject *fn;
    coextra_slot s;
    int rc;
    (void)m;
    if (!PyArg_ParseTuple(args, "IIO", &index, &generation, &fn))
        return NULL;
    s.index = index;
    s.generation = generation;
    rc = coextra_slot_foreach(s, fn == Py_None ? NULL : visit_call, fn);
    if (rc == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(rc);
}

static PyObject *table_address(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noargs)) {
    return PyLong_FromVoidPtr((void *)coextra_api_ptr_);
}

static PyMethodDef methods[] = {
    {"reserve", reserve, METH_VARARGS, "reserve(name) -> (index, generation)"},
    {"set", set_value, METH_VARARGS, "set(code, index, generation, int)"},
    {"get", get_value, METH_VARARGS, "get(code, index, generation) -> int or None"},
    {"clear", clear_value, METH_VARARGS, "clear(code, index, generation)"},
    {"release", release, METH_VARARGS, "release(index, generation)"},
    {"freed", freed, METH_NOARGS, "number of values freed"},
    {"get_table", get_table, METH_VARARGS, "get_table(code, index, generation) -> int or None (table path)"},
    {"set_null", set_null, METH_VARARGS, "set_null(code, index, generation): set a NULL value"},
    {"reserve_null_out", reserve_null_out, METH_VARARGS, "reserve_null_out(name): out == NULL"},
    {"reserve_bytes", reserve_bytes, METH_VARARGS, "reserve_bytes(name: bytes) -> (index, generation)"},
    {"live", live, METH_VARARGS, "live(index, generation) -> int"},
    {"foreach", foreach, METH_VARARGS, "foreach(index, generation, fn) -> int: coextra_slot_foreach"},
    {"table_address", table_address, METH_NOARGS, "address of the coextra table in use"},
    {NULL, NULL, 0, NULL}};

COEXTRA_TEST_MODULE(coextra_test_consumer_c, methods, coextra_test_exec_import, NULL)
