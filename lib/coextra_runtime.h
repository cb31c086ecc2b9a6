/* coextra_runtime.h: what libcoextra offers the module that creates the runtime (and embedding programs). */
#ifndef COEXTRA_RUNTIME_H
#define COEXTRA_RUNTIME_H

#include "coextra/coextra.h"

#ifdef __cplusplus
extern "C" {
#endif

/* COEXTRA_VERSION: the project version of meson.build, the one place that holds it. */
#include "coextra_version.h"

/* Key under which the runtime is published in PyInterpreterState_GetDict();
 * it carries the ABI major so that runtimes of different majors see each other. */
#define COEXTRA_PUBLISH_PREFIX "coextra.runtime.abi"
#define COEXTRA_PUBLISH_CAPSULE "coextra.runtime"

/* What a runtime publishes.  Read by every other build of coextra loaded into
 * the same interpreter: frozen for an ABI major. */
typedef struct coextra_published {
    uint32_t struct_size;
    uint32_t abi_major;
    const coextra_api *api; /* the table every build in this interpreter must use */
    const char *version;    /* COEXTRA_VERSION of the build that created the runtime */
} coextra_published;

/* Find this interpreter's runtime or create it.  Returns the table to use:
 * this build's, or that of a compatible build loaded earlier.  NULL with
 * ImportError naming both versions if an incompatible runtime is there. */
const coextra_api *coextra_runtime_attach(void);

/* This build's own table (not necessarily the one in use). */
const coextra_api *coextra_runtime_own_api(void);

#ifdef __cplusplus
}
#endif
#endif /* COEXTRA_RUNTIME_H */
