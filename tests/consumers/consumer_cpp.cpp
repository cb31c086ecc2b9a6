// consumer_cpp.cpp: a third-party-style C++ extension built only against include/coextra/coextra.hpp.
#include <coextra/coextra.hpp>

#include "test_module.h"
#include "test_consumer.h"

#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace {

// Each code object tagged by this tool holds a std::string.
coextra::Slot<std::string> g_tags;

PyObject *reserve(PyObject *, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return nullptr;
    if (g_tags.reserve(name) < 0)
        return nullptr;
    return coextra_test_slot_tuple(g_tags.handle());
}

PyObject *tag(PyObject *, PyObject *args) {
    PyObject *code;
    const char *text;
    if (!PyArg_ParseTuple(args, "Os", &code, &text))
        return nullptr;
    if (g_tags.set(code, std::make_unique<std::string>(text)) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyObject *get_tag(PyObject *, PyObject *code) {
    const std::string *s = g_tags.get(code);
    if (s == nullptr)
        Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize(s->data(), static_cast<Py_ssize_t>(s->size()));
}

PyObject *untag(PyObject *, PyObject *code) {
    if (g_tags.clear(code) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyObject *release(PyObject *, PyObject *) {
    if (g_tags.release() < 0)
        return nullptr;
    Py_RETURN_NONE;
}

// tags(stop_after, throw_after) -> (result, [(code, text)...]): Slot::foreach
// over the tags, its callable stopping with 7 after `stop_after` visits or
// throwing std::runtime_error after `throw_after` (-1: never).
PyObject *tags(PyObject *, PyObject *args) {
    int stop_after, throw_after;
    if (!PyArg_ParseTuple(args, "ii", &stop_after, &throw_after))
        return nullptr;
    PyObject *seen = PyList_New(0);
    if (seen == nullptr)
        return nullptr;
    int visits = 0;
    const int r = g_tags.foreach([&](PyObject *code, std::string *text) {
        if (visits == throw_after)
            throw std::runtime_error("tags: thrown by the callable");
        if (visits == stop_after)
            return 7;
        visits++;
        PyObject *item = Py_BuildValue("(Os#)", code, text->data(), static_cast<Py_ssize_t>(text->size()));
        if (item == nullptr || PyList_Append(seen, item) < 0) {
            Py_XDECREF(item);
            return -1;
        }
        Py_DECREF(item);
        return 0;
    });
    if (r == -1) {
        Py_DECREF(seen);
        return nullptr;
    }
    PyObject *out = Py_BuildValue("(iO)", r, seen);
    Py_DECREF(seen);
    return out;
}

// count_tags() -> the number of tagged code objects, through Slot::foreach
// with a const callable (an lvalue: foreach takes it by reference).
PyObject *count_tags(PyObject *, PyObject *) {
    long n = 0;
    const auto count = [&n](PyObject *, const std::string *) {
        n++;
        return 0;
    };
    if (g_tags.foreach(count) < 0)
        return nullptr;
    return PyLong_FromLong(n);
}

// handle() -> (index, generation), (0, 0) when not reserved.
PyObject *handle(PyObject *, PyObject *) {
    return coextra_test_slot_tuple(g_tags.handle());
}

// Two hook holders and their call counts, for move-assignment.
coextra::Hook g_hooks[2];
long g_calls[2];

int hook_index(PyObject *arg) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i > 1) {
        PyErr_SetString(PyExc_IndexError, "hook holder index must be 0 or 1");
        return -1;
    }
    return static_cast<int>(i);
}

// hook_add(i, name): a counting hook (counter i) into holder i.
PyObject *hook_add(PyObject *, PyObject *args) {
    int i;
    const char *name;
    if (!PyArg_ParseTuple(args, "is", &i, &name))
        return nullptr;
    if (i < 0 || i > 1) {
        PyErr_SetString(PyExc_IndexError, "hook holder index must be 0 or 1");
        return nullptr;
    }
    int rc = g_hooks[i].add(name, COEXTRA_PRIORITY_DEFAULT, [i](coextra::Frame &f, int throwflag) {
        g_calls[i]++;
        return f.next(throwflag);
    });
    if (rc < 0)
        return nullptr;
    Py_RETURN_NONE;
}

// hook_move(dst, src): g_hooks[dst] = std::move(g_hooks[src]) (dst == src: self-move).
PyObject *hook_move(PyObject *, PyObject *args) {
    PyObject *d, *s;
    if (!PyArg_ParseTuple(args, "OO", &d, &s))
        return nullptr;
    int dst = hook_index(d), src = hook_index(s);
    if (dst < 0 || src < 0)
        return nullptr;
    coextra::Hook &target = g_hooks[dst];
    target = std::move(g_hooks[src]);
    Py_RETURN_NONE;
}

// hook_state() -> ((added0, calls0), (added1, calls1))
PyObject *hook_state(PyObject *, PyObject *) {
    return Py_BuildValue("((Ol)(Ol))", g_hooks[0].added() ? Py_True : Py_False, g_calls[0],
                         g_hooks[1].added() ? Py_True : Py_False, g_calls[1]);
}

// slot_move(name_a, name_b): Slot a = name_a, b = name_b; a = std::move(b).  Returns
// (a holds b's old handle, b is empty, a's old handle is released); both are released on return.
PyObject *slot_move(PyObject *, PyObject *args) {
    const char *na, *nb;
    if (!PyArg_ParseTuple(args, "ss", &na, &nb))
        return nullptr;
    coextra::Slot<std::string> a, b;
    if (a.reserve(na) < 0 || b.reserve(nb) < 0)
        return nullptr;
    coextra_slot old_a = a.handle(), old_b = b.handle();
    a = std::move(b);
    bool took = a.handle().index == old_b.index && a.handle().generation == old_b.generation;
    bool released = coextra_api_ptr_->slot_live(old_a) < 0;
    if (released)
        PyErr_Clear(); // the ReleasedError of the stale handle
    return Py_BuildValue("(OOO)", took ? Py_True : Py_False, b.ok() ? Py_False : Py_True,
                         released ? Py_True : Py_False);
}

PyObject *table_address(PyObject *, PyObject *) {
    return PyLong_FromVoidPtr(const_cast<coextra_api *>(coextra_api_ptr_));
}

// ---- a Hook whose callable throws: coextra.hpp translates at the trampoline ----
coextra::Hook g_thrower;
PyObject *g_target = nullptr; // strong: the code object whose frames the callable throws in
std::string g_mode;           // see add_thrower

[[noreturn]] void throw_for_mode() {
    if (g_mode == "bad_alloc")
        throw std::bad_alloc();
    if (g_mode == "unknown")
        throw 42;
    throw std::runtime_error("thrown " + g_mode);
}

PyObject *thrower(coextra::Frame &f, int throwflag) {
    if (reinterpret_cast<PyObject *>(f.code()) != g_target)
        return f.next(throwflag);
    if (g_mode == "after") {
        PyObject *r = f.next(throwflag);
        Py_XDECREF(r);
        throw_for_mode();
    }
    if (g_mode == "resume" && !f.is_resume())
        return f.next(throwflag);
    throw_for_mode();
}

// add_thrower(code, mode): frames of code throw a C++ exception: mode
// "before" (std::runtime_error before delegating), "after" (after), "resume"
// (before delegating, on generator resumptions only), "bad_alloc", "unknown"
// (an int).
PyObject *add_thrower(PyObject *, PyObject *args) {
    PyObject *code;
    const char *mode;
    if (!PyArg_ParseTuple(args, "O!s", &PyCode_Type, &code, &mode))
        return nullptr;
    if (g_thrower.added()) {
        PyErr_SetString(PyExc_RuntimeError, "add_thrower: already added");
        return nullptr;
    }
    g_mode = mode;
    Py_INCREF(code);
    Py_XSETREF(g_target, code);
    if (g_thrower.add("coextra_test_consumer_cpp.thrower", COEXTRA_PRIORITY_DEFAULT, thrower) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyObject *remove_thrower(PyObject *, PyObject *) {
    if (g_thrower.remove() < 0)
        return nullptr;
    Py_CLEAR(g_target);
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    COEXTRA_TEST_METHOD(reserve, METH_VARARGS, "reserve(name) -> (index, generation)"),
    COEXTRA_TEST_METHOD(tag, METH_VARARGS, "tag(code, text)"),
    COEXTRA_TEST_METHOD(get_tag, METH_O, "get_tag(code) -> str or None"),
    COEXTRA_TEST_METHOD(untag, METH_O, "untag(code)"),
    COEXTRA_TEST_METHOD(release, METH_NOARGS, "release the slot"),
    COEXTRA_TEST_METHOD(handle, METH_NOARGS, "handle() -> (index, generation)"),
    COEXTRA_TEST_METHOD(count_tags, METH_NOARGS, "count_tags() -> int, through a const callable"),
    COEXTRA_TEST_METHOD(tags, METH_VARARGS, "tags(stop_after, throw_after) -> (result, [(code, text)])"),
    COEXTRA_TEST_METHOD(hook_add, METH_VARARGS, "hook_add(i, name): a counting hook into holder i"),
    COEXTRA_TEST_METHOD(hook_move, METH_VARARGS, "hook_move(dst, src): holder dst = std::move(holder src)"),
    COEXTRA_TEST_METHOD(hook_state, METH_NOARGS, "((added, calls), (added, calls))"),
    COEXTRA_TEST_METHOD(slot_move, METH_VARARGS, "slot_move(a, b): Slot move-assignment, see the source"),
    COEXTRA_TEST_METHOD(table_address, METH_NOARGS, "address of the coextra table in use"),
    COEXTRA_TEST_METHOD(add_thrower, METH_VARARGS, "add_thrower(code, mode): a Hook whose callable throws"),
    COEXTRA_TEST_METHOD(remove_thrower, METH_NOARGS, "remove the throwing Hook"),
    {nullptr, nullptr, 0, nullptr}};

int exec_module(PyObject *) { return coextra::import(); }

void free_module(void *) {
    // Release while the interpreter is still there (static destructors run too late).
    if (g_tags.ok() && g_tags.release() < 0)
        PyErr_Clear();
    if (g_thrower.added() && g_thrower.remove() < 0)
        PyErr_Clear();
    g_hooks[0] = coextra::Hook();
    g_hooks[1] = coextra::Hook();
}

} // namespace

COEXTRA_TEST_MODULE(coextra_test_consumer_cpp, methods, exec_module, free_module)
