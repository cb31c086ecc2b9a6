// test_chain.cpp: doctest cases for the hook chain (installation, order, restoring the previous function).
#include "embed.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {

std::vector<std::string> g_log;

PyObject *logging_hook(coextra_frame *f, int throwflag, void *ctx) {
    const char *tag = static_cast<const char *>(ctx);
    g_log.push_back(std::string(tag) + ">");
    PyObject *r = coextra_eval_next(f, throwflag);
    g_log.push_back(std::string("<") + tag);
    return r;
}

} // namespace

TEST_CASE("hooks run outermost-first by priority and the previous eval function comes back") {
    PyInterpreterState *interp = PyInterpreterState_Get();
    coextra_raw_eval_fn before = coextra_fc_get_eval(interp);
    coextra_hook *inner = nullptr, *outer = nullptr;
    coextra_hook_def d1{"doctest.inner", COEXTRA_PRIORITY_OPTIMIZER, logging_hook, (void *)"inner", {0, 0}};
    coextra_hook_def d2{"doctest.outer", COEXTRA_PRIORITY_DEBUGGER, logging_hook, (void *)"outer", {0, 0}};
    REQUIRE(coextra_hook_add(&d1, &inner) == 0);
    REQUIRE(coextra_hook_add(&d2, &outer) == 0);
    CHECK((coextra_fc_get_eval(interp) != before));
    REQUIRE(embed::exec("def _f():\n    return 7\n"));
    g_log.clear();
    PyObject *r = embed::eval("_f()");
    REQUIRE(r != nullptr);
    CHECK(PyLong_AsLong(r) == 7);
    Py_DECREF(r);
    // The eval() of the expression is a frame too, and encloses _f's.
    CHECK(g_log == std::vector<std::string>{"outer>", "inner>",                     // the expression
                                            "outer>", "inner>", "<inner", "<outer", // _f
                                            "<inner", "<outer"});
    REQUIRE(coextra_hook_remove(inner) == 0);
    REQUIRE(coextra_hook_remove(outer) == 0);
    CHECK((coextra_fc_get_eval(interp) == before));
    CHECK(coextra_hook_remove(outer) == -1); // double removal
    CHECK(PyErr_ExceptionMatches(PyExc_RuntimeError));
    PyErr_Clear();
}
