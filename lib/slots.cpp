// slots.cpp: the slot registry: one co_extra index per interpreter, one block per code object, named slots.
#include "runtime.hpp"
#include "api.hpp"

#include <cstring>

// The layout the inline fast path of coextra.h reads is frozen for ABI 1.
static_assert(offsetof(coextra_block, entries) == 0, "coextra_block layout is ABI");
static_assert(offsetof(coextra_block, capacity) == sizeof(void *), "coextra_block layout is ABI");
static_assert(sizeof(coextra_block_entry) == sizeof(void *) + 8, "coextra_block_entry layout is ABI");
static_assert(offsetof(coextra_block_entry, generation) == sizeof(void *), "entry layout is ABI");
static_assert(offsetof(coextra::Block, pub) == 0, "the public block prefix must come first");
static_assert(offsetof(coextra_fast_entry, co_extra_index) == sizeof(void *), "fast entry layout is ABI");
static_assert(offsetof(coextra_fast_entry, interp_list_head) == 2 * sizeof(void *),
              "fast entry layout is ABI (1.1 field appended)");

namespace coextra {
namespace {

void block_free_cb(void *p);

// CPython hands out at most 254 co_extra indices per interpreter and never
// takes one back, so coextra asks for exactly one, the first time a value is
// stored, and keeps it for the interpreter's life.
int ensure_index(Runtime *rt) {
    if (rt->co_extra_index >= 0)
        return 0;
    Py_ssize_t idx = coextra_fc_request_index(block_free_cb);
    if (idx < 0) {
        // CPython returns -1 WITHOUT setting an exception when it is full.
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError,
                            "coextra: CPython has no co_extra index left in this interpreter "
                            "(other tools took all 254)");
        return -1;
    }
    set_co_extra_index(rt, idx);
    return 0;
}

// A block found at our index that another interpreter's runtime made: the
// code object is shared between interpreters (3.11's deep-frozen stdlib code
// objects are; immortal ones may be).  Neither interpreter may touch the
// other's values, so such a code object cannot hold this interpreter's values.
inline bool foreign_block(Runtime *rt, const Block *b) noexcept {
    return b != nullptr && (b->pub.magic != COEXTRA_BLOCK_MAGIC || b->rt != rt);
}

int refuse_shared_code(PyObject *code) {
    PyErr_Format(PyExc_RuntimeError,
                 "coextra: code object %R is shared with another interpreter (a deep-frozen or immortal "
                 "code object): it cannot hold per-interpreter slot values",
                 code);
    return -1;
}

void link_block(Runtime *rt, Block *b) noexcept {
    b->prev = nullptr;
    b->next = rt->blocks;
    if (rt->blocks)
        rt->blocks->prev = b;
    rt->blocks = b;
    rt->n_blocks++;
    rt->refs++;
}

void unlink_block(Runtime *rt, Block *b) noexcept {
    if (b->prev)
        b->prev->next = b->next;
    else
        rt->blocks = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = nullptr;
    rt->n_blocks--;
}

void destroy_block(Block *b) noexcept {
    if (b->pub.entries != b->inline_entries)
        PyMem_RawFree(b->pub.entries);
    b->pub.magic = 0;
    PyMem_RawFree(b);
}

// Grow the entry array in place: the block itself (the pointer CPython holds)
// never moves, so it is set into co_extra exactly once.
int grow_block(Block *b, uint32_t needed) {
    if (needed <= b->pub.capacity)
        return 0;
    uint32_t cap = (needed + 3u) & ~3u;
    auto *e = static_cast<coextra_block_entry *>(PyMem_RawCalloc(cap, sizeof(coextra_block_entry)));
    if (e == nullptr) {
        PyErr_NoMemory();
        return -1;
    }
    std::memcpy(e, b->pub.entries, b->pub.capacity * sizeof(coextra_block_entry));
    if (b->pub.entries != b->inline_entries)
        PyMem_RawFree(b->pub.entries);
    b->pub.entries = e;
    b->pub.capacity = cap;
    return 0;
}

Block *ensure_block(Runtime *rt, PyObject *code, uint32_t needed) {
    if (ensure_index(rt) < 0)
        return nullptr;
    Block *b = get_block(rt, code);
    if (foreign_block(rt, b)) {
        refuse_shared_code(code);
        return nullptr;
    }
    if (b == nullptr) {
        b = static_cast<Block *>(PyMem_RawCalloc(1, sizeof(Block)));
        if (b == nullptr) {
            PyErr_NoMemory();
            return nullptr;
        }
        b->pub.entries = b->inline_entries;
        b->pub.capacity = Block::kInline;
        b->pub.magic = COEXTRA_BLOCK_MAGIC;
        b->rt = rt;
        b->code = code;
        if (grow_block(b, needed) < 0) {
            destroy_block(b);
            return nullptr;
        }
        // The slot is empty, so SetExtra has no old value to free.
        if (coextra_fc_set_extra(code, rt->co_extra_index, b) < 0) {
            destroy_block(b);
            return nullptr;
        }
        link_block(rt, b);
        return b;
    }
    if (grow_block(b, needed) < 0)
        return nullptr;
    return b;
}

// A free function call taken out of the registry under its lock and run
// after the lock is released: free functions are the owner's code and may
// call back into coextra (reserve, store, release, add hooks), which takes
// the lock again (a no-op on GIL builds today; a mutex on free-threaded
// builds, where calling out under it would deadlock).
struct FreeCall {
    coextra_free_fn fn = nullptr;
    void *value = nullptr;
    void *ctx = nullptr;
    void run() const {
        if (fn != nullptr && value != nullptr)
            fn(value, ctx);
    }
};

// The co_extra free function.  CPython's code_dealloc calls it for EVERY
// index below the array's size, with NULL where nothing was stored (3.9–3.14,
// contrary to the docs), and it runs before weakref callbacks.  It may run
// after the interpreter dict was cleared (the runtime is then closed but still
// alive: every block holds a reference to it).
void block_free_cb(void *p) {
    if (p == nullptr)
        return;
    auto *b = static_cast<Block *>(p);
    if (b->pub.magic != COEXTRA_BLOCK_MAGIC)
        return; // not ours: never touch foreign data
    Runtime *rt = b->rt;
    b->dying = true; // slot_foreach skips it: its code object has no reference left
    // The block stays linked while its free functions run: one of them may
    // release another slot whose value is still in this block, and
    // slot_release must then find and free it here, because once release
    // returns, that slot's free function and ctx may be gone and its index
    // may belong to a new slot.  Nothing can store into this block: its code
    // object is unreachable.  Each entry is detached under the registry
    // lock and its free function called after the lock is released (it may
    // call back into coextra); rt->slots is re-read on every step because a
    // free function that reserves slots may reallocate it.
    for (uint32_t i = 0; i < b->pub.capacity; i++) {
        FreeCall call;
        {
            RegistryLock lock;
            coextra_block_entry &e = b->pub.entries[i];
            if (e.value == nullptr)
                continue;
            SlotRec &rec = rt->slots[i];
            call = FreeCall{rec.free_fn, e.value, rec.ctx};
            empty_entry(b, i);
            b->n_values--;
            rec.live--;
        }
        call.run();
    }
    RegistryLock lock;
    unlink_block(rt, b);
    destroy_block(b);
    runtime_decref(rt);
}

int type_error_code(PyObject *code) {
    if (code == nullptr)
        PyErr_SetString(PyExc_TypeError, "coextra: expected a code object, got NULL");
    else
        PyErr_Format(PyExc_TypeError, "coextra: expected a code object, got %.200s", Py_TYPE(code)->tp_name);
    return -1;
}

} // namespace

SlotRec *lookup_slot(Runtime *rt, coextra_slot slot) noexcept {
    if (slot.generation == 0 || slot.index == 0 || slot.index > rt->slots.size())
        return nullptr;
    SlotRec &rec = rt->slots[slot.index - 1];
    return rec.generation == slot.generation ? &rec : nullptr;
}

SlotRec *checked_slot(Runtime *rt, coextra_slot slot) {
    SlotRec *rec = lookup_slot(rt, slot);
    if (rec != nullptr)
        return rec;
    const SlotRec *old = slot.index >= 1 && slot.index <= rt->slots.size() ? &rt->slots[slot.index - 1] : nullptr;
    if (slot.index == 0 && slot.generation == 0)
        PyErr_SetString(PyExc_ValueError, "coextra: the zero slot handle names no slot");
    else if (old != nullptr && slot.generation != 0 && old->released_generation == slot.generation)
        PyErr_Format(rt->released_error, "coextra: slot '%s' (index %u, generation %u) has been released",
                     old->released_name.c_str(), (unsigned)slot.index, (unsigned)slot.generation);
    else
        PyErr_Format(rt->released_error,
                     "coextra: slot handle (index %u, generation %u) is released, or belongs to "
                     "another interpreter",
                     (unsigned)slot.index, (unsigned)slot.generation);
    return nullptr;
}

void runtime_close_slots(Runtime *rt) noexcept {
    // Values stay where they are: each code object that still holds a block
    // runs its free functions when it dies.  Names go, so nothing can look
    // a slot up any more.
    rt->slot_names.clear();
}

namespace {

// The calling interpreter's runtime (in *rt) and the record of `slot` in
// it; nullptr with an error set.
SlotRec *current_slot(coextra_slot slot, Runtime **rt) {
    *rt = current_runtime();
    return *rt == nullptr ? nullptr : checked_slot(*rt, slot);
}

// What an operation on `code`'s value in `slot` needs: the calling
// interpreter's runtime and the slot's record, `code` a code object; -1
// with an error set.
int code_and_slot(PyObject *code, coextra_slot slot, Runtime **rt, SlotRec **rec) {
    if ((*rec = current_slot(slot, rt)) == nullptr)
        return -1;
    if (code == nullptr || !PyCode_Check(code))
        return type_error_code(code);
    return 0;
}

// slot_release's part under the lock: every value of `slot` out of its
// blocks into `values`, the slot retired; its free function and ctx out.
int detach_slot(coextra_slot slot, Vector<void *> &values, coextra_free_fn *fn_out, void **ctx_out) {
    RegistryLock lock;
    Runtime *rt;
    SlotRec *rec = current_slot(slot, &rt);
    if (rec == nullptr)
        return -1;
    try {
        values.reserve(rec->live);
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return -1;
    }
    // Detach every value first (walking only the blocks coextra tracks, never
    // the heap), then run the free functions: they may run arbitrary code,
    // including code that reserves this very index again.
    const uint32_t i = slot.index - 1;
    for (Block *b = rt->blocks; b != nullptr; b = b->next) {
        if (i >= b->pub.capacity)
            continue;
        coextra_block_entry &e = b->pub.entries[i];
        if (e.generation != slot.generation)
            continue;
        if (e.value != nullptr) {
            values.push_back(e.value); // within the reserved capacity
            b->n_values--;
        }
        empty_entry(b, i);
    }
    if (rec->watchers > 0) {
        // Observers keep their (now stale) `only`: they never match again.
        rec->watchers = 0;
        for (Block *b = rt->blocks; b != nullptr; b = b->next)
            if (b->monitored)
                monitor_unwatch(rt, b);
    }
    coextra_free_fn fn = rec->free_fn;
    void *ctx = rec->ctx;
    rt->slot_names.erase(rec->name);
    // No allocation: the name moves aside for the stale handle's error, and
    // the buffers left over (the previous release's name, the owner) are
    // freed, so that an index holds at most one old name.
    rec->released_name.swap(rec->name);
    rec->released_generation = slot.generation;
    String().swap(rec->name);
    String().swap(rec->owner);
    rec->free_fn = nullptr;
    rec->ctx = nullptr;
    rec->generation = 0;
    rec->live = 0;
    rt->free_indices.push_back(slot.index); // capacity reserved when the slot was made
    *fn_out = fn;
    *ctx_out = ctx;
    return 0;
}

// slot_clear's part under the lock: the value out of its entry into *freed.
int clear_entry(PyObject *code, coextra_slot slot, FreeCall *freed) {
    RegistryLock lock;
    Runtime *rt;
    SlotRec *rec;
    if (code_and_slot(code, slot, &rt, &rec) < 0)
        return -1;
    Block *b = get_block(rt, code);
    const uint32_t i = slot.index - 1;
    if (b == nullptr || i >= b->pub.capacity || b->pub.entries[i].generation != slot.generation)
        return 0;
    void *old = b->pub.entries[i].value;
    empty_entry(b, i);
    if (old == nullptr)
        return 0;
    b->n_values--;
    rec->live--;
    if (rec->watchers > 0)
        monitor_unwatch(rt, b);
    *freed = FreeCall{rec->free_fn, old, rec->ctx};
    return 0;
}

// slot_set's part under the lock: the store; the value it replaces into *replaced.
int store_entry(PyObject *code, coextra_slot slot, void *value, FreeCall *replaced) {
    RegistryLock lock;
    Runtime *rt;
    SlotRec *rec;
    if (code_and_slot(code, slot, &rt, &rec) < 0)
        return -1;
    Block *b = ensure_block(rt, code, slot.index);
    if (b == nullptr)
        return -1;
    // An observer on sys.monitoring watches this slot: the code's local
    // events go on first, so that a failure leaves nothing stored.
    if (rec->watchers > 0 && !b->monitored) {
        if (monitor_set_events(rt, b, true) < 0)
            return -1;
        b->monitored = true;
    }
    const coextra_block_entry &e = b->pub.entries[slot.index - 1];
    void *old = e.generation == slot.generation ? e.value : nullptr;
    set_entry(b, slot.index - 1, value, slot.generation);
    if (old == value)
        return 0; // storing the same pointer again frees nothing
    if (old == nullptr) {
        b->n_values++;
        rec->live++;
        return 0;
    }
    *replaced = FreeCall{rec->free_fn, old, rec->ctx};
    return 0;
}

// slot_foreach's part under the lock: strong references to the code objects
// that hold a value in `slot` (none of a dying block: its code object has no
// reference left, and a free function running from its code_dealloc must
// not see it), and the calling interpreter's runtime in *rt.
int snapshot_codes(coextra_slot slot, Vector<PyObject *> &codes, Runtime **rt_out) {
    RegistryLock lock;
    SlotRec *rec = current_slot(slot, rt_out);
    if (rec == nullptr)
        return -1;
    try {
        codes.reserve(rec->live);
        for (Block *b = (*rt_out)->blocks; b != nullptr; b = b->next)
            if (!b->dying && entry_holds(b, slot))
                codes.push_back(b->code);
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return -1;
    }
    for (PyObject *code : codes)
        Py_INCREF(code);
    return 0;
}

} // namespace

namespace api {

int slot_reserve_ex(const char *name, coextra_free_fn free_fn, void *ctx, uint32_t flags,
                    coextra_slot *out) {
    RegistryLock lock;
    if (out == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_slot_reserve: out is NULL");
        return -1;
    }
    *out = coextra_slot{0, 0};
    Runtime *rt = current_runtime();
    if (rt == nullptr || check_name(name, "slot") < 0)
        return -1;
    try {
        String key(name);
        if (rt->slot_names.find(key) != rt->slot_names.end()) {
            const SlotRec &holder = rt->slots[rt->slot_names.find(key)->second - 1];
            PyErr_Format(PyExc_ValueError, "coextra: a slot named '%s' already exists (index %u, reserved by %s)",
                         name, (unsigned)(rt->slot_names.find(key)->second), holder.owner.c_str());
            return -1;
        }
        if (rt->slots.size() >= UINT32_MAX - 1) {
            PyErr_SetString(PyExc_OverflowError, "coextra: too many slots");
            return -1;
        }
        // Everything that can allocate happens before the first change.
        rt->slots.reserve(rt->slots.size() + 1);
        rt->free_indices.reserve(rt->slots.size() + 1);
        SlotRec rec;
        rec.name = key;
        if (describe_owner(flags, reinterpret_cast<const void *>(free_fn), rec.owner) < 0)
            return -1;
        uint32_t index;
        if (!rt->free_indices.empty()) {
            auto lowest = rt->free_indices.begin();
            for (auto it = rt->free_indices.begin(); it != rt->free_indices.end(); ++it)
                if (*it < *lowest)
                    lowest = it;
            index = *lowest;
        } else {
            index = static_cast<uint32_t>(rt->slots.size()) + 1;
        }
        rt->slot_names.emplace(std::move(key), index);
        // No allocation below this line.
        if (index == rt->slots.size() + 1) {
            rt->slots.emplace_back();
        } else {
            for (auto it = rt->free_indices.begin(); it != rt->free_indices.end(); ++it)
                if (*it == index) {
                    rt->free_indices.erase(it);
                    break;
                }
        }
        SlotRec &r = rt->slots[index - 1];
        r.name.swap(rec.name);
        r.owner.swap(rec.owner);
        r.free_fn = free_fn;
        r.ctx = ctx;
        r.flags = flags;
        r.live = 0;
        r.generation = next_generation();
        *out = coextra_slot{index, r.generation};
        return 0;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return -1;
    }
}

int slot_reserve(const char *name, coextra_free_fn free_fn, void *ctx, coextra_slot *out) {
    return slot_reserve_ex(name, free_fn, ctx, 0, out);
}

// Free functions run after the registry lock is released (see FreeCall).
int slot_release(coextra_slot slot) {
    Vector<void *> values;
    coextra_free_fn fn;
    void *ctx;
    if (detach_slot(slot, values, &fn, &ctx) < 0)
        return -1;
    if (fn != nullptr)
        for (void *v : values)
            fn(v, ctx);
    return 0;
}

int slot_clear(PyObject *code, coextra_slot slot) {
    FreeCall freed;
    if (clear_entry(code, slot, &freed) < 0)
        return -1;
    freed.run(); // after the lock: see FreeCall
    return 0;
}

int slot_set(PyObject *code, coextra_slot slot, void *value) {
    if (value == nullptr)
        return slot_clear(code, slot);
    FreeCall replaced;
    if (store_entry(code, slot, value, &replaced) < 0)
        return -1;
    // Like CPython's SetExtra: the replaced value is freed, after the store
    // (and after the lock: see FreeCall).
    replaced.run();
    return 0;
}

void *slot_get(PyObject *code, coextra_slot slot) noexcept {
    if (code == nullptr || !PyCode_Check(code))
        return nullptr;
    Runtime *rt = runtime_for(PyInterpreterState_Get());
    if (rt == nullptr)
        return nullptr;
    return block_value(rt, code, slot);
}

Py_ssize_t slot_live(coextra_slot slot) {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return -1;
    SlotRec *rec = checked_slot(rt, slot);
    return rec ? static_cast<Py_ssize_t>(rec->live) : -1;
}

// ABI 1.4.  The walk holds no pointer into the block list while fn runs
// (fn may free blocks, by killing code objects, or add them), nor the lock
// (fn may call back into coextra): it takes the code objects first, then
// re-reads each value at its turn.
int slot_foreach(coextra_slot slot, coextra_slot_visit_fn fn, void *arg) {
    if (fn == nullptr) {
        PyErr_SetString(PyExc_ValueError, "coextra_slot_foreach: fn is NULL");
        return -1;
    }
    Vector<PyObject *> codes;
    Runtime *rt;
    if (snapshot_codes(slot, codes, &rt) < 0)
        return -1;
    int rc = 0;
    for (PyObject *code : codes) {
        void *value = block_value(rt, code, slot);
        if (value == nullptr)
            continue; // cleared (or replaced by nothing) since the snapshot
        rc = fn(code, value, arg);
        if (rc != 0)
            break;
        if (lookup_slot(rt, slot) == nullptr) {
            checked_slot(rt, slot); // the ReleasedError
            rc = -1;
            break;
        }
    }
    // Dropping the snapshot may free code objects (and run their slots' free
    // functions, which may raise and clear errors of their own).
    PendingError pending;
    for (PyObject *code : codes)
        Py_DECREF(code);
    pending.restore();
    return rc;
}

PyObject *slots_info() {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    PyObject *list = PyList_New(0);
    if (list == nullptr)
        return nullptr;
    for (std::size_t i = 0; i < rt->slots.size(); i++) {
        const SlotRec &r = rt->slots[i];
        if (r.generation == 0)
            continue;
        PyObject *t = Py_BuildValue("(s#nnO)", r.name.data(), (Py_ssize_t)r.name.size(), (Py_ssize_t)(i + 1),
                                    (Py_ssize_t)r.live, (r.flags & COEXTRA_FLAG_PYTHON) ? Py_False : Py_True);
        if (append_stolen(list, t) < 0) {
            Py_DECREF(list);
            return nullptr;
        }
    }
    return list;
}

PyObject *released_error_type() noexcept {
    Runtime *rt = current_runtime();
    if (rt == nullptr)
        return nullptr;
    Py_INCREF(rt->released_error);
    return rt->released_error;
}

} // namespace api
} // namespace coextra
