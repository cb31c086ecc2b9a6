// runtime.hpp: coextra's per-interpreter runtime (slot registry, hook chain, dispatcher state), internal to lib/.
#pragma once

#include "coextra/coextra.h"
#include "coextra_runtime.h"
#include "frame_compat.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <utility>
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

// A map kept as a vector sorted by key: the registry's name and id indexes,
// a few dozen entries at most, looked up when hooks and slots change, never
// per frame.  The subset of std::map's interface lib/ uses; like std::map
// (and unlike a plain vector), a failed insertion leaves it unchanged.
template <class K, class V>
class FlatMap {
  public:
    using value_type = std::pair<K, V>;
    using iterator = typename Vector<value_type>::iterator;
    using const_iterator = typename Vector<value_type>::const_iterator;

    iterator begin() noexcept { return items_.begin(); }
    iterator end() noexcept { return items_.end(); }
    const_iterator begin() const noexcept { return items_.begin(); }
    const_iterator end() const noexcept { return items_.end(); }
    std::size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }
    void clear() noexcept { items_.clear(); }

    iterator find(const K &key) noexcept {
        iterator it = lower_bound(key);
        return it != end() && !(key < it->first) ? it : end();
    }
    const_iterator find(const K &key) const noexcept { return const_cast<FlatMap *>(this)->find(key); }
    std::size_t count(const K &key) const noexcept { return find(key) != end() ? 1 : 0; }

    // Inserts (key, value) unless key is present.  Throws std::bad_alloc with
    // the map unchanged: vector::insert has no effect when allocation fails.
    template <class... Args>
    std::pair<iterator, bool> emplace(Args &&...args) {
        value_type item(std::forward<Args>(args)...);
        iterator it = lower_bound(item.first);
        if (it != end() && !(item.first < it->first))
            return {it, false};
        return {items_.insert(it, std::move(item)), true};
    }

    std::size_t erase(const K &key) noexcept {
        iterator it = find(key);
        if (it == end())
            return 0;
        items_.erase(it);
        return 1;
    }
    iterator erase(const_iterator it) noexcept { return items_.erase(it); }

  private:
    iterator lower_bound(const K &key) noexcept {
        return std::lower_bound(items_.begin(), items_.end(), key,
                                [](const value_type &item, const K &k) { return item.first < k; });
    }

    Vector<value_type> items_;
};

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

// A pending Python exception kept across code that may raise and clear its
// own (3.12+ PyErr_GetRaisedException; before, the type/value/traceback
// triple): taken at construction, put back by restore().
struct PendingError {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    void restore() noexcept { PyErr_SetRaisedException(exc); }
#else
    PyObject *type, *value, *tb;
    PendingError() noexcept { PyErr_Fetch(&type, &value, &tb); }
    void restore() noexcept { PyErr_Restore(type, value, tb); }
#endif
};

struct Runtime;

// One of the dispatcher's per-frame paths (dispatch.cpp), picked per runtime
// by pick_frame_path.  CPython's three arguments come first, as the
// eval-frame function received them, then the runtime.
using FramePath = PyObject *(*)(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt);
PyObject *path_general(PyThreadState *tstate, coextra_raw_frame *raw, int throwflag, Runtime *rt);

#if defined(__GNUC__)
#define COEXTRA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define COEXTRA_UNLIKELY(x) (x)
#endif

// One reserved slot.  generation == 0 marks a free index.
struct SlotRec {
    String name;
    coextra_free_fn free_fn = nullptr;
    void *ctx = nullptr;
    uint32_t generation = 0;
    uint32_t flags = 0;
    std::size_t live = 0; // code objects holding a value in this slot
    uint32_t watchers = 0; // active observers on sys.monitoring with this slot as `only` (monitor.cpp)
    String owner; // who reserved it, for the "already exists" error: a Python module or a native file
    // The last slot released at this index, to name it in the ReleasedError
    // of a stale handle (moved here at release: no allocation).
    String released_name;
    uint32_t released_generation = 0;
};

// The co_extra block of one code object.  Starts with the frozen public
// layout that the inline fast path of coextra.h reads.
struct Block {
    coextra_block pub;
    Runtime *rt;
    Block *prev;
    Block *next;
    uint32_t n_values;
    // A conservative summary of which entries hold a value: bit min(i, 31)
    // is set while entries[i] does (bit 31 is sticky: it stands for every
    // index from 31 on).  A clear bit proves the entry empty with one load;
    // a set bit proves nothing about generations (the `only` filter then
    // reads the entry).  Kept by set_entry / empty_entry, the only writers.
    uint32_t present;
    PyObject *code;  // the code object holding the block (borrowed: the block dies with it)
    bool monitored;  // sys.monitoring local events are on for `code` (monitor.cpp)
    uint32_t in_flight; // frames of `code` whose observers were entered and not yet exited (monitor.cpp)
    bool dying;         // `code` is being deallocated (block_free_cb): slot_foreach must not take a reference
    static constexpr uint32_t kInline = 2;
    coextra_block_entry inline_entries[kInline];
};

// The bit of Block::present for entry index i (0-based).
constexpr uint32_t present_bit(uint32_t i) noexcept { return 1u << (i < 31u ? i : 31u); }

inline void set_entry(Block *b, uint32_t i, void *value, uint32_t generation) noexcept {
    b->pub.entries[i].value = value;
    b->pub.entries[i].generation = generation;
    b->present |= present_bit(i);
}

inline void empty_entry(Block *b, uint32_t i) noexcept {
    b->pub.entries[i].value = nullptr;
    b->pub.entries[i].generation = 0;
    if (i < 31u)
        b->present &= ~present_bit(i);
}

struct HookRec {
    std::size_t refs = 1; // runtime table + one per chain snapshot holding it
    uintptr_t handle = 0; // what coextra_hook* the owner holds: salted, never reused (hooks.cpp)
    String owner; // who added it, for the "already exists" error (describe_owner)
    uint64_t seq = 0; // registration order, breaks priority ties
    String name;
    int priority = COEXTRA_PRIORITY_DEFAULT;
    coextra_eval_fn eval = nullptr;
    void *ctx = nullptr;
    coextra_slot only{0, 0};
    uint32_t only_bit = 0; // present_bit(only.index - 1): Block::present's bit for the filter
    uint32_t flags = 0;
    bool active = true;
    bool removed = false; // hooks.cpp sync_hops() after any change of these two
    // Observers (ABI 1.3): they watch (enter/exit) instead of evaluating.  In
    // the chain, eval is a wrapper that calls them around coextra_eval_next
    // (hooks.cpp observer_eval, or the Python face's own); `monitored` ones
    // run on sys.monitoring events instead and are in no snapshot.
    bool observer = false;
    bool monitored = false;
    coextra_observe_fn on_enter = nullptr;
    coextra_observe_fn on_exit = nullptr;
    void *obs_ctx = nullptr;
};

// A snapshot of the active hooks, outermost first, and the steps the inline
// coextra_eval_next takes through it (hops[j] runs hooks[j]; hops[n] ends at
// the evaluator below).  The hook list never changes; the dispatcher pins the
// snapshot it entered with (refs) so that hooks can change the chain (even
// remove themselves) while frames are in flight: those frames finish through
// the snapshot they entered, minus hooks removed or deactivated since, whose
// hops the runtime rewrites into skips in every live snapshot (hooks.cpp
// sync_hops), as it rewrites the last `direct` when `below` changes.
struct Chain {
    std::size_t refs;
    std::size_t n;
    Runtime *rt;
    Chain *prev; // the runtime's live snapshots (Runtime::chains)
    Chain *next;
    coextra_hop *hops; // n + 1 entries, in the same allocation after this struct
    HookRec **hooks;   // n entries, after the hops
};

// Where the runtime stands with the interpreter's eval-frame function
// (install.cpp apply_install, the one place that changes it).
enum class Install : uint8_t {
    never,       // no hook was active yet: `below` is unknown
    installed,   // the dispatcher was put in and not taken out (another tool may
                 // have replaced it since: dispatcher_displaced)
    left,        // idle after being displaced: nothing was written back, and
                 // `below` is still what the dispatcher forwards to if called
    handed_back, // idle: `below` was made the interpreter's function again and
                 // may go at any time, so it is never called or reinstated
};

// sys.monitoring's event numbers (monitor.cpp reads them by name: they move
// between versions).
struct MonEvents {
    long enter[3], exit[3]; // PY_START, PY_RESUME, PY_THROW / PY_RETURN, PY_YIELD, PY_UNWIND
    long local, global;     // turned on for each marked code object / for the interpreter (3.12-3.14)
};

struct Runtime {
    std::size_t refs = 1; // the published capsule + one per live block and per live chain snapshot
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
    FlatMap<uintptr_t, HookRec *> hooks; // by handle
    FlatMap<String, uintptr_t> hook_names;
    Chain *chain = nullptr; // nullptr when no hook is active
    Chain *chains = nullptr; // every live snapshot: chain and those pinned by frames in flight
    // The eval-frame function below coextra: what the interpreter ran before
    // the dispatcher went in (CPython's evaluator, or a foreign tool's).
    Install install = Install::never;
    coextra_raw_eval_fn below = nullptr;
    coextra_raw_eval_fn below_direct = nullptr; // `below` when it is CPython's evaluator, else nullptr
    bool below_is_foreign = false;              // `below` is not CPython's evaluator
    int below_allow_spec = 0;                   // its 3.15 specialization opt-in (coextra_fc_set_eval)
    coextra_raw_frame *loop_guard = nullptr;    // frame just handed to a foreign `below` (dispatch.cpp)
    coextra_raw_eval_fn dispatcher = nullptr;   // the function we install (dispatcher_for, at creation)
    // COEXTRA_CHECK_HOOKS=1 or -X dev: a hook that returns a value without
    // delegating or finishing the frame gets a SystemError (dispatch.cpp).
    bool check_hooks = false;
    // The dispatcher's path (install.cpp pick_frame_path): while we are
    // installed over CPython's own evaluator, one specialised for the
    // snapshot `chain`; else the general path, which sorts out idle, foreign
    // and displaced cases.
    FramePath frame_path = &path_general;
    // The outermost hook's eval, ctx, `only` and its Block::present bit
    // while frame_path is not the general one, read by the single-hook paths
    // without a load of the hook record.
    coextra_eval_fn first_eval = nullptr;
    void *first_ctx = nullptr;
    coextra_slot first_only{0, 0};
    uint32_t first_only_bit = 0;

    // observers on sys.monitoring (monitor.cpp)
    int mon_tool = -1;              // the sys.monitoring tool id held, or -1
    Vector<HookRec *> mon_hooks;    // active monitored observers, outermost first (each holds a ref)
    PyObject *mon_module = nullptr; // sys.monitoring (strong, while mon_tool is held)
    PyObject *mon_free_tool_id = nullptr; // sys.monitoring.free_tool_id (strong, with mon_module)
    std::size_t mon_in_flight = 0;  // sum of Block::in_flight: the tool id is kept while any
    PyObject *mon_callbacks[2] = {nullptr, nullptr}; // enter, exit: the registered callables (strong)
    MonEvents mon_events{};
};

// ---- the frozen-layout read (coextra_slot_get's inline fast path) -----------
// The block `code` holds at this runtime's co_extra index, or nullptr.  The
// caller has checked that `code` is a code object.  (-1, no index yet, wraps
// and fails the bound check.)
inline Block *get_block(const Runtime *rt, PyObject *code) noexcept {
    const auto idx = static_cast<std::size_t>(rt->co_extra_index);
    const auto *ce = static_cast<const coextra_code_extra_ *>(reinterpret_cast<PyCodeObject *>(code)->co_extra);
    if (ce == nullptr || idx >= static_cast<std::size_t>(ce->ce_size))
        return nullptr;
    return static_cast<Block *>(coextra_code_extra_at_(ce, idx));
}

// The value `code` holds in `slot`, or nullptr: what the inline
// coextra_slot_get returns, for the checked slot_get and the `only` filter.
// An all-zero or stale handle matches no entry (generation-0 entries hold
// NULL; generations are process-unique).
inline void *block_value(const Runtime *rt, PyObject *code, coextra_slot slot) noexcept {
    const Block *b = get_block(rt, code);
    const uint32_t i = slot.index - 1u; // index 0 wraps and fails the bound check
    if (b == nullptr || i >= b->pub.capacity || b->pub.entries[i].generation != slot.generation)
        return nullptr;
    return b->pub.entries[i].value;
}

// The `only` filter (whether a code object holds a value in `slot`) in two
// steps.  First the block's presence bit (bit = present_bit(slot.index - 1)),
// which answers "no" for most frames without reading the entry array:
inline bool block_may_hold(const Block *b, uint32_t bit) noexcept {
    return b != nullptr && (b->present & bit) != 0;
}

// then, past it, the entry itself (generations are process-unique, so a
// stale or reused index never matches).
inline bool entry_holds(const Block *b, coextra_slot slot) noexcept {
    const uint32_t i = slot.index - 1u; // index 0 wraps and fails the bound check
    return i < b->pub.capacity && b->pub.entries[i].generation == slot.generation &&
           b->pub.entries[i].value != nullptr;
}

// Append t to list and drop the caller's reference (t may be nullptr, from a
// failed build): -1 with an error set if either failed.
inline int append_stolen(PyObject *list, PyObject *t) {
    const int r = t == nullptr ? -1 : PyList_Append(list, t);
    Py_XDECREF(t);
    return r;
}

// ---- runtime.cpp ----------------------------------------------------------
// interpreter -> runtime, read by dispatch() (the subinterpreters' eval-frame
// function: the main interpreter's finds its runtime without a lookup, see
// dispatch.cpp dispatch_main) on every frame, and by every API call.  Entries are
// written once per runtime under the GIL of the writing interpreter and
// cleared at close; readers only compare interpreter pointers they own, so a
// concurrently changing foreign entry can never match them.
struct InterpEntry {
    std::atomic<PyInterpreterState *> interp{nullptr};
    std::atomic<Runtime *> rt{nullptr};
};
constexpr int kEntries = 16;
// Hidden: -fvisibility=hidden does not apply to extern declarations, and
// through the GOT the dispatcher would pay one more load per frame.
#if defined(__GNUC__)
__attribute__((visibility("hidden")))
#endif
extern InterpEntry g_entries[kEntries];
Runtime *runtime_scan(PyInterpreterState *interp) noexcept; // entries 1.., then the interp dict

// The one read of entry 0: true, with its runtime in *rt, when `interp` is
// its interpreter.  A match never sees the NULL of a half-published entry
// (the interp is published after rt and withdrawn before it: runtime.cpp
// register_entry), so the dispatcher needs no second test.
inline bool dispatch_first(PyInterpreterState *interp, Runtime **rt) noexcept {
    if (g_entries[0].interp.load(std::memory_order_acquire) != interp)
        return false;
    *rt = g_entries[0].rt.load(std::memory_order_relaxed);
    return true;
}

// The runtime of `interp` if it is the first interpreter's (entry 0), else
// nullptr.
inline Runtime *runtime_of_first(PyInterpreterState *interp) noexcept {
    Runtime *rt = nullptr;
    dispatch_first(interp, &rt);
    return rt;
}

// The runtime of `interp` or nullptr (no error set).
inline Runtime *runtime_for(PyInterpreterState *interp) noexcept {
    if (Runtime *rt = runtime_of_first(interp))
        return rt;
    return runtime_scan(interp);
}
Runtime *current_runtime();          // for the calling thread's interpreter; nullptr + RuntimeError
void runtime_decref(Runtime *rt) noexcept;
int check_name(const char *name, const char *what);
// "Python code in module 'm'", "native code in /path/ext.so" or "native
// code": who made a slot or hook (runtime.cpp).  native_code: one of the
// owner's functions.  Throws std::bad_alloc; -1 with an error set.
int describe_owner(uint32_t flags, const void *native_code, String &out);
uint32_t next_generation() noexcept;
// The consumers' fast entry (coextra_fast_entry in coextra.h): written by
// runtime.cpp only; api.cpp hands out its address.
extern coextra_fast_entry g_fast;
// rt's co_extra index, once CPython gave it (slots.cpp), also in g_fast when
// rt is the interpreter published there.
void set_co_extra_index(Runtime *rt, Py_ssize_t idx) noexcept;

// ---- slots.cpp ------------------------------------------------------------
SlotRec *lookup_slot(Runtime *rt, coextra_slot slot) noexcept;
SlotRec *checked_slot(Runtime *rt, coextra_slot slot); // error set when nullptr
void runtime_close_slots(Runtime *rt) noexcept;

// ---- the hook chain (hooks.cpp, install.cpp, dispatch.cpp) --------------------
void hook_decref(HookRec *h) noexcept;
void runtime_close_hooks(Runtime *rt) noexcept;
bool dispatcher_displaced(Runtime *rt) noexcept;
// The main interpreter's runtime gets an eval-frame function of its own that
// needs no lookup (dispatch_main); others share the looking-up one.  Chosen
// at creation (Runtime::dispatcher), bound once the runtime is published,
// unbound at close.
coextra_raw_eval_fn dispatcher_for(PyInterpreterState *interp) noexcept;
void bind_dispatcher(Runtime *rt) noexcept;
void unbind_dispatcher(Runtime *rt) noexcept;

// ---- observers (hooks.cpp and monitor.cpp) ----------------------------------
// Call an observer's function.  A Python exception it leaves set is reported
// to sys.unraisablehook and cleared (it must not reach the frame); one that
// was pending before (gen.throw() sets it before the frame runs) is kept.
void call_observer(coextra_observe_fn fn, PyObject *code, void *ctx);

// ---- monitor.cpp: observers on sys.monitoring (3.12+) -----------------------
// Whether an observer with `only` can run on sys.monitoring: 3.12+ and a tool
// id held (taken on first need).  0 = no (use the chain), 1 = yes, -1 = error.
int monitor_take_tool(Runtime *rt);
// After observers were added, removed, paused or resumed: the list of active
// monitored observers, the slots they watch and every marked code object's
// local events; gives the tool id back when no monitored observer is left.
// -1 with an error set if sys.monitoring failed (the registry is then
// consistent, events may be on where none is needed: callbacks filter).
int monitor_rebuild(Runtime *rt);
// Turn the local events of b's code on or off (slots.cpp: on before a value
// is stored in a watched slot, so that a failure leaves nothing stored).
int monitor_set_events(Runtime *rt, Block *b, bool on);
// After a value left a watched slot of b: events off if nothing watched is
// left (a failure is reported as unraisable: extra events only cost time,
// the callbacks find nothing to call).
void monitor_unwatch(Runtime *rt, Block *b) noexcept;
// Whether b holds a value in any slot a monitored observer watches.
bool monitor_wants(const Runtime *rt, const Block *b) noexcept;
void monitor_close(Runtime *rt) noexcept;

} // namespace coextra

// The frame view handed to hooks; lives on the dispatcher's C stack, every
// field written before the first hook runs.  Its head is public (coextra.h,
// read by the inline coextra_eval_next).
struct coextra_frame {
    coextra_frame_head head; // tstate, raw, direct, consumed, next
    // The pinned snapshot (and through it the runtime) of a chain frame;
    // nullptr on the single-hook paths, which pin none (dispatch.cpp).
    coextra::Chain *chain;
#if !COEXTRA_FC_FRAME_OUTLIVES_EVAL
    PyCodeObject *code = nullptr; // until first read (chain.hpp code_of)
#endif
};
static_assert(offsetof(coextra_frame, head) == 0, "the frame head is what coextra.h reads");
static_assert(offsetof(coextra_frame_head, raw) == sizeof(void *) &&
                  offsetof(coextra_frame_head, direct) == 2 * sizeof(void *) &&
                  offsetof(coextra_frame_head, consumed) == 3 * sizeof(void *) &&
                  offsetof(coextra_frame_head, next) == offsetof(coextra_frame_head, reserved_) + sizeof(int),
              "frame head layout is ABI (1.2 appended next)");
static_assert(sizeof(coextra_hop) == 3 * sizeof(void *) && offsetof(coextra_hop, direct) == 2 * sizeof(void *),
              "hop layout is ABI");

inline coextra_raw_frame *raw_of(const coextra_frame *f) noexcept {
    return static_cast<coextra_raw_frame *>(f->head.raw);
}
