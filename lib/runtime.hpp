// runtime.hpp: coextra's per-interpreter runtime (slot registry, hook chain, dispatcher state), internal to lib/.
#pragma once

#include "coextra/coextra.h"
#include "coextra_runtime.h"
#include "frame_compat.h"

#include <boost/container/flat_map.hpp>
#include <boost/container/small_vector.hpp>

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

namespace coextra {

// ---------------------------------------------------------------------------
// Memory.  Everything the runtime allocates goes through PyMem_Raw*, so a test
// that installs a failing allocator with PyMem_SetAllocator reaches every
// allocation the registry makes.  Allocation failure surfaces as
// std::bad_alloc inside lib/ and is turned into MemoryError at the API edge.
// ---------------------------------------------------------------------------
template <class T>
struct RawAlloc {
    using value_type = T;
    RawAlloc() noexcept = default;
    template <class U>
    RawAlloc(const RawAlloc<U> &) noexcept {}
    T *allocate(std::size_t n) {
        void *p = PyMem_RawMalloc(n * sizeof(T));
        if (p == nullptr)
            throw std::bad_alloc();
        return static_cast<T *>(p);
    }
    void deallocate(T *p, std::size_t) noexcept { PyMem_RawFree(p); }
    template <class U>
    bool operator==(const RawAlloc<U> &) const noexcept { return true; }
    template <class U>
    bool operator!=(const RawAlloc<U> &) const noexcept { return false; }
};

using String = std::basic_string<char, std::char_traits<char>, RawAlloc<char>>;
template <class T>
using Vector = std::vector<T, RawAlloc<T>>;
template <class K, class V>
using FlatMap = boost::container::flat_map<K, V, std::less<K>, RawAlloc<std::pair<K, V>>>;

// ---------------------------------------------------------------------------
// The locking seam.  Every mutation of shared runtime state happens inside a
// RegistryLock.  On GIL builds the GIL already serialises every caller (all
// entry points require it), so this is empty; a free-threaded build replaces
// it with a PyMutex / critical section in this one place.
// ---------------------------------------------------------------------------
struct RegistryLock {
    RegistryLock() {} // user-provided: a guard, not an unused variable
    ~RegistryLock() {}
    RegistryLock(const RegistryLock &) = delete;
    RegistryLock &operator=(const RegistryLock &) = delete;
};

struct Runtime;

// One reserved slot.  generation == 0 marks a free index.
struct SlotRec {
    String name;
    coextra_free_fn free_fn = nullptr;
    void *ctx = nullptr;
    uint32_t generation = 0;
    uint32_t flags = 0;
    std::size_t live = 0; // code objects holding a value in this slot
};

// The co_extra block of one code object.  Starts with the frozen public
// layout that the inline fast path of coextra.h reads.
struct Block {
    coextra_block pub;
    Runtime *rt;
    Block *prev;
    Block *next;
    uint32_t n_values;
    uint32_t reserved;
    static constexpr uint32_t kInline = 2;
    coextra_block_entry inline_entries[kInline];
};

struct HookRec {
    std::size_t refs = 1; // runtime table + one per chain snapshot holding it
    uint64_t id = 0;
    uint64_t seq = 0; // registration order, breaks priority ties
    String name;
    int priority = COEXTRA_PRIORITY_DEFAULT;
    coextra_eval_fn eval = nullptr;
    void *ctx = nullptr;
    coextra_slot only{0, 0};
    uint32_t flags = 0;
    bool active = true;
    bool removed = false;
};

// An immutable snapshot of the active hooks, outermost first.  The dispatcher
// pins the snapshot it entered with (refs) so that hooks can change the chain
// (even remove themselves) while frames are in flight: those frames finish
// through the snapshot they entered, minus hooks removed or deactivated since.
struct Chain {
    std::size_t refs;
    std::size_t n;
    HookRec *hooks[1]; // n entries (allocated with the right size)
};

struct Runtime {
    std::size_t refs = 1; // the published capsule + one per live block
    PyInterpreterState *interp = nullptr;
    bool closed = false;
    PyObject *released_error = nullptr; // coextra.ReleasedError of this interpreter

    // slots
    Py_ssize_t co_extra_index = -1;
    Vector<SlotRec> slots; // slots[i] is slot index i + 1
    Vector<uint32_t> free_indices;
    FlatMap<String, uint32_t> slot_names;
    Block *blocks = nullptr; // intrusive list of every live block
    std::size_t n_blocks = 0;

    // hooks
    FlatMap<uint64_t, HookRec *> hooks;
    FlatMap<String, uint64_t> hook_names;
    Chain *chain = nullptr; // nullptr when no hook is active
    coextra_raw_eval_fn tail = nullptr; // what was installed before us
    bool installed = false;              // we put the dispatcher in and have not taken it out
    bool tail_is_foreign = false;        // tail is not CPython's own evaluator
    bool tail_handed_back = false;       // tail was put back as the interpreter's function (chain.cpp)
    coextra_raw_frame *tail_raw = nullptr; // frame just handed to a foreign tail (loop guard)
};

// ---- runtime.cpp ----------------------------------------------------------
Runtime *current_runtime();          // for the calling thread's interpreter; nullptr + RuntimeError
Runtime *runtime_for(PyInterpreterState *interp) noexcept; // no error set
void runtime_decref(Runtime *rt) noexcept;
int check_name(const char *name, const char *what);
uint32_t next_generation() noexcept;
extern coextra_fast_entry g_fast;

// ---- slots.cpp ------------------------------------------------------------
SlotRec *lookup_slot(Runtime *rt, coextra_slot slot) noexcept;
SlotRec *checked_slot(Runtime *rt, coextra_slot slot); // error set when nullptr
void *slot_get_in(Runtime *rt, PyObject *code, coextra_slot slot) noexcept;
void runtime_close_slots(Runtime *rt) noexcept;

// ---- chain.cpp ------------------------------------------------------------
void runtime_close_hooks(Runtime *rt) noexcept;
bool dispatcher_displaced(Runtime *rt) noexcept;

} // namespace coextra

// The opaque frame view handed to hooks; lives on the dispatcher's C stack.
struct coextra_frame {
    PyThreadState *tstate;
    coextra_raw_frame *raw;
    coextra::Runtime *rt;
    coextra::Chain *chain;
    PyCodeObject *code;
    std::size_t pos;   // index in chain of the hook now running
    bool consumed;     // the evaluator ran it, or it was returned/disposed
};
