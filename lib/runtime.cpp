// runtime.cpp: creating, publishing, finding and closing the one coextra runtime of each interpreter.
#include "runtime.hpp"
#include "api.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace coextra {

namespace {

// What g_fast.interp_list_head points to unless the first interpreter is the
// main one: never equal to a live interpreter.
PyInterpreterState *const g_no_list_head = nullptr;

// COEXTRA_CHECK_HOOKS=1 (or any value but 0) turns on the check for hooks
// that return without delegating or finishing the frame (dispatch.cpp), =0
// turns it off; unset, it follows Python's development mode (-X dev,
// PYTHONDEVMODE).  Read once per runtime: at its creation.
bool want_hook_checks() {
    const char *env = std::getenv("COEXTRA_CHECK_HOOKS");
    if (env != nullptr && *env != '\0')
        return std::strcmp(env, "0") != 0;
    PyObject *flags = PySys_GetObject("flags"); // borrowed
    PyObject *dev = flags != nullptr ? PyObject_GetAttrString(flags, "dev_mode") : nullptr;
    const bool on = dev != nullptr && PyObject_IsTrue(dev) == 1;
    Py_XDECREF(dev);
    PyErr_Clear();
    return on;
}
} // namespace

// The first interpreter that creates a runtime (normally the main one) is
// published here for the inline slot fast path of coextra.h; the index is
// filled in when that interpreter's co_extra index is first requested.
coextra_fast_entry g_fast = {nullptr, -1, &g_no_list_head};

// Who made a slot or hook, for the "already exists" errors: for Python code,
// the module of the calling frame (its __name__); for native code, the file
// holding `native_code` (a function of the owner: dladdr, where there is
// one), else "native code".  Throws std::bad_alloc; -1 with an error only if
// reading __name__ raised.
int describe_owner(uint32_t flags, const void *native_code, String &out) {
    if (flags & COEXTRA_FLAG_PYTHON) {
        PyObject *globals = PyEval_GetGlobals(); // borrowed; NULL without a Python frame
        PyObject *mod = globals ? PyDict_GetItemString(globals, "__name__") : nullptr; // borrowed
        const char *s = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : nullptr;
        if (s == nullptr && PyErr_Occurred())
            return -1;
        out = s ? String("Python code in module '") + s + "'" : String("Python code");
        return 0;
    }
#ifdef COEXTRA_HAVE_DLADDR_
    Dl_info info;
    if (native_code != nullptr && dladdr(native_code, &info) != 0 && info.dli_fname != nullptr &&
        info.dli_fname[0]) {
        out = String("native code in ") + info.dli_fname;
        return 0;
    }
#else
    (void)native_code;
#endif
    out = "native code";
    return 0;
}

void set_co_extra_index(Runtime *rt, Py_ssize_t idx) noexcept {
    rt->co_extra_index = idx;
    if (g_fast.interp == rt->interp)
        g_fast.co_extra_index = idx;
}

// Entry 0 is normally the first interpreter: dispatch() and runtime_for()
// check it inline (runtime.hpp).  More than kEntries interpreters at once
// fall back to the interpreter-dict lookup.
InterpEntry g_entries[kEntries];

namespace {

std::atomic<uint32_t> g_generation{0};

void publish_key(char *buf, std::size_t n, unsigned major) {
    PyOS_snprintf(buf, n, "%s%u", COEXTRA_PUBLISH_PREFIX, major);
}

// An entry is claimed through its rt and published through its interp, and
// withdrawn in the opposite order: whoever sees an entry's interp equal to
// its own also sees that entry's runtime (the dispatcher relies on it and
// does not test rt for NULL; see runtime.hpp dispatch_first).
// Also the main interpreter's dispatcher (dispatch.cpp dispatch_main), which
// reads its runtime without a lookup: bound with the entry, unbound first.
void register_entry(Runtime *rt) noexcept {
    bind_dispatcher(rt);
    for (auto &e : g_entries) {
        Runtime *expected = nullptr;
        if (e.rt.compare_exchange_strong(expected, rt)) {
            e.interp.store(rt->interp, std::memory_order_release);
            return;
        }
    }
}

void unregister_entry(Runtime *rt) noexcept {
    unbind_dispatcher(rt);
    for (auto &e : g_entries) {
        if (e.rt.load() == rt) {
            e.interp.store(nullptr);
            e.rt.store(nullptr);
        }
    }
    if (g_fast.interp == rt->interp) {
        // Py_Finalize + Py_Initialize can hand the next interpreter the same
        // address: forget it before its memory can be reused.
        g_fast.interp_list_head = &g_no_list_head;
        g_fast.co_extra_index = -1;
        g_fast.interp = nullptr;
    }
}

Runtime *runtime_from_dict(PyInterpreterState *interp) noexcept {
    PyObject *dict = PyInterpreterState_GetDict(interp);
    if (dict == nullptr)
        return nullptr;
    char key[64];
    publish_key(key, sizeof key, COEXTRA_ABI_MAJOR);
    PyObject *cap = PyDict_GetItemString(dict, key); // borrowed, never raises
    if (cap == nullptr || !PyCapsule_IsValid(cap, COEXTRA_PUBLISH_CAPSULE))
        return nullptr;
    auto *pub = static_cast<coextra_published *>(PyCapsule_GetPointer(cap, COEXTRA_PUBLISH_CAPSULE));
    if (pub == nullptr || pub->api != coextra_runtime_own_api())
        return nullptr; // another build's runtime: only its own functions may touch it
    return static_cast<Runtime *>(PyCapsule_GetContext(cap));
}

// Runs when the interpreter dict is cleared (PyInterpreterState_Clear, after
// module teardown) or when the publication is replaced.  From here on no hook
// runs and the eval-frame function is given back; the Runtime itself lives on
// while code objects still hold blocks, so that code objects dying after this
// point still get their slot cleanups (they need the free functions).
void close_capsule(PyObject *cap) {
    auto *rt = static_cast<Runtime *>(PyCapsule_GetContext(cap));
    void *pub = PyCapsule_GetPointer(cap, COEXTRA_PUBLISH_CAPSULE);
    if (pub == nullptr)
        PyErr_Clear();
    PyMem_RawFree(pub);
    if (rt == nullptr)
        return;
    rt->closed = true;
    runtime_close_hooks(rt);
    runtime_close_slots(rt);
    unregister_entry(rt);
    Py_CLEAR(rt->released_error);
    runtime_decref(rt);
}

// Refuse to share an interpreter with a runtime of another ABI major.
int check_other_majors(PyObject *dict) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    char ours[64];
    publish_key(ours, sizeof ours, COEXTRA_ABI_MAJOR);
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_Check(key))
            continue;
        const char *k = PyUnicode_AsUTF8(key);
        if (k == nullptr) {
            PyErr_Clear();
            continue;
        }
        if (std::strncmp(k, COEXTRA_PUBLISH_PREFIX, sizeof(COEXTRA_PUBLISH_PREFIX) - 1) != 0 ||
            std::strcmp(k, ours) == 0)
            continue;
        const char *theirs = "unknown";
        if (PyCapsule_IsValid(value, COEXTRA_PUBLISH_CAPSULE)) {
            auto *pub = static_cast<coextra_published *>(PyCapsule_GetPointer(value, COEXTRA_PUBLISH_CAPSULE));
            if (pub != nullptr && pub->version != nullptr)
                theirs = pub->version;
        }
        PyErr_Format(PyExc_ImportError,
                     "coextra: this interpreter already runs coextra %s (published as %s); this build is coextra %s "
                     "(ABI %d.%d), which cannot share it. Load only one major version of coextra.",
                     theirs, k, COEXTRA_VERSION,
                     COEXTRA_ABI_MAJOR, COEXTRA_ABI_MINOR);
        return -1;
    }
    return 0;
}

} // namespace

uint32_t next_generation() noexcept {
    uint32_t g;
    do {
        g = g_generation.fetch_add(1) + 1;
    } while (g == 0);
    return g;
}

Runtime *runtime_scan(PyInterpreterState *interp) noexcept {
    for (auto &e : g_entries) {
        if (e.interp.load(std::memory_order_acquire) == interp) {
            Runtime *rt = e.rt.load(std::memory_order_acquire);
            if (rt != nullptr)
                return rt;
        }
    }
    return runtime_from_dict(interp);
}

Runtime *current_runtime() {
    Runtime *rt = runtime_for(PyInterpreterState_Get());
    if (rt == nullptr || rt->closed) {
        PyErr_SetString(PyExc_RuntimeError,
                        "coextra: no coextra runtime in this interpreter (import coextra._coextra "
                        "in it first), or it is finalizing");
        return nullptr;
    }
    return rt;
}

void runtime_decref(Runtime *rt) noexcept {
    if (--rt->refs == 0)
        unmake(rt);
}

int check_name(const char *name, const char *what) {
    if (name == nullptr) {
        PyErr_Format(PyExc_ValueError, "coextra: %s name is NULL", what);
        return -1;
    }
    std::size_t n = std::strlen(name);
    if (n == 0) {
        PyErr_Format(PyExc_ValueError, "coextra: %s name is empty", what);
        return -1;
    }
    if (n > COEXTRA_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "coextra: %s name is %zu bytes long; the limit is %d", what, n,
                     COEXTRA_NAME_MAX);
        return -1;
    }
    PyObject *u = PyUnicode_DecodeUTF8(name, static_cast<Py_ssize_t>(n), "strict");
    if (u == nullptr) {
        // Only a decoding error means a bad name; anything else (MemoryError
        // when the decode cannot allocate) is passed on as it is.
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return -1;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "coextra: %s name is not valid UTF-8", what);
        return -1;
    }
    Py_DECREF(u);
    return 0;
}

} // namespace coextra

using namespace coextra;

extern "C" const coextra_api *coextra_runtime_attach(void) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    PyObject *dict = PyInterpreterState_GetDict(interp);
    if (dict == nullptr) {
        PyErr_SetString(PyExc_ImportError, "coextra: this interpreter has no state dict");
        return nullptr;
    }
    if (check_other_majors(dict) < 0)
        return nullptr;

    char key[64];
    publish_key(key, sizeof key, COEXTRA_ABI_MAJOR);
    PyObject *cap = PyDict_GetItemString(dict, key);
    if (cap != nullptr) {
        auto *pub = PyCapsule_IsValid(cap, COEXTRA_PUBLISH_CAPSULE)
                        ? static_cast<coextra_published *>(PyCapsule_GetPointer(cap, COEXTRA_PUBLISH_CAPSULE))
                        : nullptr;
        if (pub == nullptr || pub->api == nullptr) {
            PyErr_Format(PyExc_ImportError, "coextra: the interpreter dict holds a forged %s entry", key);
            return nullptr;
        }
        if (pub->api == coextra_runtime_own_api())
            return pub->api;
        // A different build of the same major got here first: use its runtime,
        // provided it offers at least everything this build's table has.
        volatile uint32_t built_minor = COEXTRA_ABI_MINOR;
        if (pub->api->abi_minor < built_minor || pub->api->struct_size < sizeof(coextra_api)) {
            PyErr_Format(PyExc_ImportError,
                         "coextra: this interpreter already runs coextra %s (ABI %u.%u); this build is "
                         "coextra %s (ABI %d.%d) and needs at least ABI %d.%d",
                         pub->version ? pub->version : "unknown", (unsigned)pub->api->abi_major,
                         (unsigned)pub->api->abi_minor, COEXTRA_VERSION, COEXTRA_ABI_MAJOR,
                         COEXTRA_ABI_MINOR, COEXTRA_ABI_MAJOR, COEXTRA_ABI_MINOR);
            return nullptr;
        }
        return pub->api;
    }

    // First import in this interpreter: create and publish.
    Runtime *rt;
    try {
        rt = make<Runtime>();
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return nullptr;
    }
    rt->interp = interp;
    rt->dispatcher = dispatcher_for(interp);
    rt->check_hooks = want_hook_checks();
    rt->released_error = PyErr_NewExceptionWithDoc(
        "coextra.ReleasedError",
        "A coextra slot or hook handle was used after it was released or removed, or in another "
        "interpreter.",
        PyExc_RuntimeError, nullptr);
    if (rt->released_error == nullptr) {
        unmake(rt);
        return nullptr;
    }
    auto *pub = static_cast<coextra_published *>(PyMem_RawMalloc(sizeof(coextra_published)));
    if (pub == nullptr) {
        Py_DECREF(rt->released_error);
        unmake(rt);
        PyErr_NoMemory();
        return nullptr;
    }
    pub->struct_size = sizeof(coextra_published);
    pub->abi_major = COEXTRA_ABI_MAJOR;
    pub->api = coextra_runtime_own_api();
    pub->version = COEXTRA_VERSION;
    cap = PyCapsule_New(pub, COEXTRA_PUBLISH_CAPSULE, nullptr);
    if (cap == nullptr) {
        PyMem_RawFree(pub);
        Py_DECREF(rt->released_error);
        unmake(rt);
        return nullptr;
    }
    if (PyCapsule_SetContext(cap, rt) < 0 || PyCapsule_SetDestructor(cap, close_capsule) < 0 ||
        PyDict_SetItemString(dict, key, cap) < 0) {
        PyCapsule_SetContext(cap, nullptr);
        Py_DECREF(cap); // destructor frees pub
        Py_DECREF(rt->released_error);
        unmake(rt);
        return nullptr;
    }
    Py_DECREF(cap);
    register_entry(rt);
    if (g_fast.interp == nullptr) {
        g_fast.co_extra_index = -1;
        g_fast.interp = interp;
        // The sole-interpreter shortcut holds only for the main interpreter:
        // it is created first, so it is the list's last link, and the head
        // is the main interpreter only while no other exists.  (For a
        // subinterpreter, being the head only means being the newest.)
        if (interp == PyInterpreterState_Main())
            g_fast.interp_list_head = coextra_fc_interp_list_head();
    }
    return pub->api;
}
