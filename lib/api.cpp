// api.cpp: assembles this build's coextra_api table (process-wide, immutable, code pointers only).
#include "api.hpp"

namespace {

const char *runtime_version() noexcept { return COEXTRA_VERSION; }

using namespace coextra::api;

const coextra_api g_api = {
    sizeof(coextra_api),
    COEXTRA_ABI_MAJOR,
    COEXTRA_ABI_MINOR,
    0,
    &coextra::g_fast,
    slot_reserve,
    slot_release,
    slot_set,
    slot_get,
    slot_clear,
    hook_add,
    hook_remove,
    hook_set_active,
    eval_next,
    frame_code,
    frame_function,
    frame_globals,
    frame_is_resume,
    frame_object,
    frame_return,
    slot_reserve_ex,
    slot_live,
    hook_add_ex,
    hook_get_active,
    slots_info,
    hooks_info,
    status_info,
    runtime_version,
    released_error_type,
    observer_add,
    observer_add_ex,
    hook_is_monitored,
    frame_arguments,
    frame_is_call_of,
    hide_from_tracing,
    unhide_from_tracing,
    // ABI 1.4: slot iteration
    slot_foreach,
};

} // namespace

extern "C" const coextra_api *coextra_runtime_own_api(void) { return &g_api; }
