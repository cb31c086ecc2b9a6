// embed.hpp: starting/stopping the embedded interpreter for the doctest suite, and small helpers.
#pragma once

#define COEXTRA_API_SHARED
#include "coextra/coextra.h"

#include <string>

namespace embed {

bool start();        // Py_Initialize + import coextra._coextra + coextra_import()
bool stop();         // Py_FinalizeEx
bool restart();      // stop() then start(): a fresh interpreter in the same process

// Compile `src` and return the code object of the function `name` defined in
// it (new reference), or of the module if name is empty.
PyObject *code_of(const std::string &src, const std::string &name = "");
// Run Python statements in __main__; false (and the error printed) on failure.
bool exec(const std::string &src);
// Evaluate a Python expression in __main__ (new reference or NULL).
PyObject *eval(const std::string &expr);

} // namespace embed
