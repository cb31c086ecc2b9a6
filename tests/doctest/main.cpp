// main.cpp: doctest entry for the runtime tests: one embedded interpreter with coextra._coextra imported.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "embed.hpp"

int main(int argc, char **argv) {
    doctest::Context ctx(argc, argv);
    if (!embed::start())
        return 2;
    int rc = ctx.run();
    if (!embed::stop())
        rc = rc ? rc : 3;
    return rc;
}
