// test_reliability.cpp: doctest cases for reliability: registry invariants under failing allocations, bad input, finalize + re-initialize.
#include "embed.hpp"
#include "runtime.hpp"

#include "../consumers/failalloc.h"

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

coextra::Runtime *rt() { return coextra::runtime_for(PyInterpreterState_Get()); }

// ---------------------------------------------------------------------------
// The registry's invariants, checked from the inside.  "" = consistent.
// ---------------------------------------------------------------------------
std::string registry_problem(coextra::Runtime *r) {
    std::ostringstream err;
    if (r == nullptr)
        return "no runtime";
    // slots: names <-> records <-> free indices
    std::size_t live_slots = 0;
    for (std::size_t i = 0; i < r->slots.size(); i++)
        if (r->slots[i].generation != 0)
            live_slots++;
    if (live_slots != r->slot_names.size())
        err << "slot_names has " << r->slot_names.size() << " names for " << live_slots << " live slots; ";
    for (auto &kv : r->slot_names) {
        uint32_t idx = kv.second;
        if (idx == 0 || idx > r->slots.size() || r->slots[idx - 1].generation == 0 ||
            r->slots[idx - 1].name != kv.first)
            err << "name '" << kv.first.c_str() << "' maps to a dead or renamed index " << idx << "; ";
    }
    std::set<uint32_t> freeset(r->free_indices.begin(), r->free_indices.end());
    if (freeset.size() != r->free_indices.size())
        err << "duplicate free indices; ";
    for (uint32_t idx : r->free_indices)
        if (idx == 0 || idx > r->slots.size() || r->slots[idx - 1].generation != 0)
            err << "free index " << idx << " is live or out of range; ";
    if (freeset.size() + live_slots != r->slots.size())
        err << "free " << freeset.size() << " + live " << live_slots << " != " << r->slots.size() << " records; ";
    if (r->free_indices.capacity() < r->slots.size())
        err << "free_indices capacity " << r->free_indices.capacity() << " < " << r->slots.size()
            << " (release would allocate); ";
    // blocks: the list, their values, the per-slot live counts, the runtime's refcount
    std::vector<std::size_t> live(r->slots.size(), 0);
    std::size_t n = 0;
    for (coextra::Block *b = r->blocks; b != nullptr; b = b->next) {
        n++;
        if (b->pub.magic != COEXTRA_BLOCK_MAGIC || b->rt != r)
            err << "a listed block is not this runtime's; ";
        if (b->next && b->next->prev != b)
            err << "broken block links; ";
        uint32_t values = 0;
        for (uint32_t i = 0; i < b->pub.capacity; i++) {
            const coextra_block_entry &e = b->pub.entries[i];
            if (e.value == nullptr) {
                if (e.generation != 0)
                    err << "empty entry with a generation; ";
                continue;
            }
            values++;
            if (i >= r->slots.size() || r->slots[i].generation != e.generation)
                err << "entry " << i << " holds a value of a dead slot; ";
            else
                live[i]++;
        }
        if (values != b->n_values)
            err << "block n_values " << b->n_values << " != " << values << "; ";
    }
    if (n != r->n_blocks)
        err << "n_blocks " << r->n_blocks << " != listed " << n << "; ";
    // live chain snapshots: between operations only the current one (none pinned by a frame)
    std::size_t n_chains = 0;
    for (coextra::Chain *c = r->chains; c != nullptr; c = c->next) {
        n_chains++;
        if (c->rt != r || (c->next && c->next->prev != c) || c != r->chain)
            err << "a live snapshot that is not the current chain, or broken links; ";
    }
    if (r->refs != 1 + r->n_blocks + n_chains)
        err << "runtime refs " << r->refs << " != 1 + blocks " << r->n_blocks << " + chains " << n_chains << "; ";
    for (std::size_t i = 0; i < r->slots.size(); i++)
        if (r->slots[i].generation != 0 && r->slots[i].live != live[i])
            err << "slot " << i + 1 << " live " << r->slots[i].live << " != " << live[i] << "; ";
    // hooks: names <-> records <-> the active chain <-> the installed dispatcher
    if (r->hooks.size() != r->hook_names.size())
        err << r->hooks.size() << " hooks but " << r->hook_names.size() << " names; ";
    std::size_t active = 0;
    for (auto &kv : r->hooks) {
        coextra::HookRec *h = kv.second;
        if (h->handle != kv.first || h->removed)
            err << "hook record " << kv.first << " is removed or misfiled; ";
        auto it = r->hook_names.find(h->name);
        if (it == r->hook_names.end() || it->second != h->handle)
            err << "hook '" << h->name.c_str() << "' has no name entry; ";
        bool in_chain = false;
        if (r->chain)
            for (std::size_t i = 0; i < r->chain->n; i++)
                in_chain |= r->chain->hooks[i] == h;
        if (in_chain != h->active)
            err << "hook '" << h->name.c_str() << "' active=" << h->active << " but in_chain=" << in_chain << "; ";
        if (h->refs != 1 + (in_chain ? 1u : 0u))
            err << "hook '" << h->name.c_str() << "' refs " << h->refs << "; ";
        active += h->active;
    }
    if (active == 0 && r->chain != nullptr)
        err << "an empty chain is not null; ";
    if (r->chain != nullptr) {
        if (r->chain->n != active || r->chain->refs != 1)
            err << "chain n " << r->chain->n << " / refs " << r->chain->refs << " for " << active << " active; ";
        // the steps of the current snapshot: each unfiltered hook's own function
        // and ctx, the last `direct` the runtime's, the end a runtime step
        const coextra::Chain *c = r->chain;
        for (std::size_t i = 0; i < c->n; i++)
            if (c->hooks[i]->only.generation == 0 &&
                (c->hops[i].eval != c->hooks[i]->eval || c->hops[i].ctx != c->hooks[i]->ctx))
                err << "step " << i << " does not run its hook; ";
        if (c->hops[c->n - 1].direct != r->below_direct || c->hops[c->n].direct != nullptr ||
            c->hops[c->n].eval == nullptr)
            err << "the last steps are wrong; ";
        for (std::size_t i = 1; i < r->chain->n; i++) {
            auto *a = r->chain->hooks[i - 1], *b = r->chain->hooks[i];
            if (a->priority > b->priority || (a->priority == b->priority && a->seq > b->seq))
                err << "chain out of order; ";
        }
    }
    if ((r->install == coextra::Install::installed) != (r->chain != nullptr))
        err << "installed=" << (r->install == coextra::Install::installed) << " with " << active << " active hooks; ";
    if (coextra::dispatcher_displaced(r))
        err << "dispatcher displaced; ";
    if (r->install != coextra::Install::installed && coextra_fc_get_eval(r->interp) != coextra_fc_default_eval())
        err << "no active hook but the eval-frame function is not the default; ";
    return err.str();
}

// ---------------------------------------------------------------------------
// Native values and hooks for the sweeps.
// ---------------------------------------------------------------------------
int g_tokens[64];
int g_freed[64];
int g_bad_ctx;
void token_free(void *v, void *ctx) {
    int *t = static_cast<int *>(v);
    if (t < g_tokens || t >= g_tokens + 64 || ctx != &g_tokens[0]) {
        g_bad_ctx++;
        return;
    }
    g_freed[t - g_tokens]++;
}
void reset_freed() {
    std::memset(g_freed, 0, sizeof g_freed);
    g_bad_ctx = 0;
}

struct Counts {
    long enter = 0, exit = 0;
};
PyObject *counting_eval(coextra_frame *f, int throwflag, void *ctx) {
    auto *c = static_cast<Counts *>(ctx);
    c->enter++;
    PyObject *r = coextra_eval_next(f, throwflag);
    c->exit++;
    return r;
}

PyObject *fresh_code(int n) {
    std::string src = "def fa_" + std::to_string(n) + "(x):\n    return x + " + std::to_string(n) + "\n";
    return embed::code_of(src, "fa_" + std::to_string(n));
}

struct SweepResult {
    long points = 0;       // allocation points that failed (one run each)
    long memory_errors = 0; // runs answered with MemoryError
    long succeeded = 0;     // runs that succeeded although an allocation failed (handled internally)
};

// Sweep one operation: for n = 1, 2, ..., run setup(), fail the n-th
// allocation (every domain) during op(), then check the answer (0, or -1 with
// MemoryError), the registry's invariants, and that undo() (which must also
// work after a failure) leaves the registry as before.  Each n runs twice;
// the second run must leave as many tracked RAW blocks live as it found (the
// first may move buffers the runtime keeps for reuse, e.g. a released slot's
// name).  Stops at the first n that fails nothing.
SweepResult sweep(const char *what_, const std::function<void()> &setup, const std::function<int()> &op,
                  const std::function<void(int rc)> &undo) {
    SweepResult res;
    const std::string what(what_);
    INFO("operation: " << what);
    // Warm up: containers reach their steady capacity, CPython its caches.
    setup();
    int rc0 = op();
    REQUIRE(rc0 == 0);
    undo(rc0);
    PyGC_Collect();
    fa_install();
    fa_track(1);
    for (long n = 1; n < 100000; n++) {
        INFO("failing allocation #" << n);
        long failed = 0, raw_before = 0;
        int rc = 0;
        for (int round = 0; round < 2; round++) {
            PyGC_Collect();
            raw_before = fa_outstanding(PYMEM_DOMAIN_RAW);
            setup();
            fa_arm(n, 0, FA_ALL);
            rc = op();
            fa_disarm();
            failed = fa_failed();
            if (rc == 0) {
                CHECK(PyErr_Occurred() == nullptr);
            } else {
                CHECK(rc == -1);
                REQUIRE(PyErr_Occurred() != nullptr);
                if (!PyErr_ExceptionMatches(PyExc_MemoryError))
                    PyErr_Print();
                CHECK(PyErr_ExceptionMatches(PyExc_MemoryError));
                PyErr_Clear();
                CHECK(failed > 0); // no failure without an injected one
            }
            CHECK(g_bad_ctx == 0);
            std::string problem = registry_problem(rt());
            CHECK_MESSAGE(problem.empty(), problem);
            undo(rc);
            CHECK(PyErr_Occurred() == nullptr);
            PyGC_Collect();
            problem = registry_problem(rt());
            CHECK_MESSAGE(problem.empty(), problem);
        }
        CHECK(fa_outstanding(PYMEM_DOMAIN_RAW) == raw_before);
        if (failed == 0)
            break;
        res.points++;
        (rc == 0 ? res.succeeded : res.memory_errors)++;
    }
    fa_track(0);
    fa_uninstall();
    MESSAGE(what << ": " << res.points << " allocation points failed, " << res.memory_errors << " MemoryError, "
                 << res.succeeded << " absorbed");
    return res;
}

std::string publish_key() { return std::string(COEXTRA_PUBLISH_PREFIX) + std::to_string(COEXTRA_ABI_MAJOR); }

} // namespace

TEST_CASE("reliability: the registry is consistent to begin with") {
    std::string problem = registry_problem(rt());
    CHECK_MESSAGE(problem.empty(), problem);
}

TEST_CASE("reliability: every allocation of every C entry point may fail") {
    reset_freed();
    coextra_slot s{}, s2{};
    PyObject *code = nullptr;
    static int serial = 0;
    long total_points = 0;

    // reserve
    total_points += sweep(
        "reserve", [] {},
        [&] { return coextra_slot_reserve("rel.sweep.reserve", token_free, &g_tokens[0], &s); },
        [&](int rc) {
            if (rc != 0)
                REQUIRE(coextra_slot_reserve("rel.sweep.reserve", token_free, &g_tokens[0], &s) == 0);
            REQUIRE(coextra_slot_release(s) == 0);
        }).points;

    // first set on a fresh code object: the block and CPython's co_extra array
    REQUIRE(coextra_slot_reserve("rel.sweep.set", token_free, &g_tokens[0], &s) == 0);
    total_points += sweep(
        "set (first block)", [&] { code = fresh_code(serial++); },
        [&] { return coextra_slot_set(code, s, &g_tokens[1]); },
        [&](int rc) {
            if (rc != 0) {
                CHECK(coextra_slot_get(code, s) == nullptr);
                REQUIRE(coextra_slot_set(code, s, &g_tokens[1]) == 0);
            }
            CHECK(coextra_slot_get(code, s) == &g_tokens[1]);
            int before = g_freed[1];
            Py_CLEAR(code);
            PyGC_Collect();
            CHECK(g_freed[1] == before + 1);
        }).points;

    // set into a high slot index: the block's entry array grows in place
    std::vector<coextra_slot> many(12);
    for (std::size_t i = 0; i < many.size(); i++)
        REQUIRE(coextra_slot_reserve(("rel.sweep.many." + std::to_string(i)).c_str(), token_free, &g_tokens[0],
                                     &many[i]) == 0);
    total_points += sweep(
        "set (grow block)",
        [&] {
            code = fresh_code(serial++);
            REQUIRE(coextra_slot_set(code, s, &g_tokens[2]) == 0);
        },
        [&] { return coextra_slot_set(code, many.back(), &g_tokens[3]); },
        [&](int rc) {
            CHECK(coextra_slot_get(code, s) == &g_tokens[2]); // the other value survived
            if (rc != 0)
                REQUIRE(coextra_slot_set(code, many.back(), &g_tokens[3]) == 0);
            CHECK(coextra_slot_get(code, many.back()) == &g_tokens[3]);
            Py_CLEAR(code);
            PyGC_Collect();
        }).points;

    // replace, clear: no allocation expected, but the sweep proves it
    total_points += sweep(
        "set (replace) + clear",
        [&] {
            code = fresh_code(serial++);
            REQUIRE(coextra_slot_set(code, s, &g_tokens[4]) == 0);
        },
        [&] {
            if (coextra_slot_set(code, s, &g_tokens[5]) < 0)
                return -1;
            return coextra_slot_clear(code, s);
        },
        [&](int) {
            Py_CLEAR(code);
            PyGC_Collect();
        }).points;

    // foreach (ABI 1.4): the snapshot of strong references is its one allocation
    total_points += sweep(
        "foreach",
        [&] {
            code = fresh_code(serial++);
            REQUIRE(coextra_slot_set(code, s, &g_tokens[6]) == 0);
        },
        [&] {
            long seen = 0;
            int rc = coextra_slot_foreach(
                s, +[](PyObject *, void *, void *arg) { return ++*static_cast<long *>(arg), 0; }, &seen);
            CHECK((rc == 0 ? seen >= 1 : seen == 0)); // a failed snapshot calls nothing
            return rc;
        },
        [&](int) {
            CHECK(coextra_slot_get(code, s) == &g_tokens[6]);
            Py_CLEAR(code);
            PyGC_Collect();
        }).points;

    // release with values in live code objects
    std::vector<PyObject *> codes;
    total_points += sweep(
        "release",
        [&] {
            REQUIRE(coextra_slot_reserve("rel.sweep.release", token_free, &g_tokens[0], &s2) == 0);
            for (int i = 0; i < 5; i++) {
                codes.push_back(fresh_code(serial++));
                REQUIRE(coextra_slot_set(codes.back(), s2, &g_tokens[10 + i]) == 0);
            }
        },
        [&] { return coextra_slot_release(s2); },
        [&](int rc) {
            if (rc != 0) {
                for (int i = 0; i < 5; i++) // nothing was freed or detached
                    CHECK(coextra_slot_get(codes[i], s2) == &g_tokens[10 + i]);
                REQUIRE(coextra_slot_release(s2) == 0);
            }
            for (PyObject *c : codes) {
                CHECK(coextra_slot_get(c, s2) == nullptr);
                Py_DECREF(c);
            }
            codes.clear();
            PyGC_Collect();
        }).points;

    // hooks: add (with `only`), set_active both ways, remove
    Counts counts;
    coextra_hook *h = nullptr, *other = nullptr;
    coextra_hook_def other_def{"rel.sweep.other", COEXTRA_PRIORITY_PROFILER, counting_eval, &counts, {0, 0}};
    coextra_hook_def def{"rel.sweep.hook", COEXTRA_PRIORITY_DEFAULT, counting_eval, &counts, s};
    for (int with_other = 0; with_other < 2; with_other++) {
        if (with_other)
            REQUIRE(coextra_hook_add(&other_def, &other) == 0);
        total_points += sweep(
            "hook_add", [] {}, [&] { return coextra_hook_add(&def, &h); },
            [&](int rc) {
                if (rc != 0) {
                    CHECK(h == nullptr);
                    REQUIRE(coextra_hook_add(&def, &h) == 0);
                }
                REQUIRE(coextra_hook_remove(h) == 0);
            }).points;
        total_points += sweep(
            "hook_remove", [&] { REQUIRE(coextra_hook_add(&def, &h) == 0); }, [&] { return coextra_hook_remove(h); },
            [&](int rc) {
                if (rc != 0)
                    REQUIRE(coextra_hook_remove(h) == 0);
                CHECK(coextra_hook_remove(h) == -1); // gone for good
                PyErr_Clear();
            }).points;
        total_points += sweep(
            "hook_set_active(0)", [&] { REQUIRE(coextra_hook_add(&def, &h) == 0); },
            [&] { return coextra_hook_set_active(h, 0); },
            [&](int rc) {
                if (rc != 0)
                    REQUIRE(coextra_hook_set_active(h, 0) == 0);
                REQUIRE(coextra_hook_set_active(h, 1) == 0);
                REQUIRE(coextra_hook_remove(h) == 0);
            }).points;
        total_points += sweep(
            "hook_set_active(1)",
            [&] {
                REQUIRE(coextra_hook_add(&def, &h) == 0);
                REQUIRE(coextra_hook_set_active(h, 0) == 0);
            },
            [&] { return coextra_hook_set_active(h, 1); },
            [&](int rc) {
                if (rc != 0)
                    REQUIRE(coextra_hook_set_active(h, 1) == 0);
                REQUIRE(coextra_hook_remove(h) == 0);
            }).points;
        if (with_other)
            REQUIRE(coextra_hook_remove(other) == 0);
    }

    // introspection
    total_points += sweep(
        "slots_info / hooks_info / status_info", [] {},
        [&] {
            const coextra_api *api = coextra_api_ptr_;
            PyObject *a = api->slots_info();
            if (a == nullptr)
                return -1;
            Py_DECREF(a);
            a = api->hooks_info();
            if (a == nullptr)
                return -1;
            Py_DECREF(a);
            a = api->status_info();
            if (a == nullptr)
                return -1;
            Py_DECREF(a);
            return 0;
        },
        [](int) {}).points;

    REQUIRE(coextra_slot_release(s) == 0);
    for (auto &m : many)
        REQUIRE(coextra_slot_release(m) == 0);
    CHECK(g_bad_ctx == 0);
    CHECK(total_points > 20);
    std::string problem = registry_problem(rt());
    CHECK_MESSAGE(problem.empty(), problem);
}

TEST_CASE("reliability: creating the runtime may fail at every allocation") {
    // Drop this interpreter's runtime (no code object holds a block of it
    // now), then attach again under the failing allocator.  No co_extra index
    // is requested, so this does not use up CPython's 254.
    PyObject *dict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    REQUIRE(dict != nullptr);
    std::string key = publish_key();
    long points = 0;
    fa_install();
    fa_track(1);
    for (long n = 1; n < 100000; n++) {
        INFO("failing allocation #" << n);
        PyGC_Collect();
        REQUIRE(rt() != nullptr);
        REQUIRE(rt()->n_blocks == 0);
        REQUIRE(PyDict_DelItemString(dict, key.c_str()) == 0); // closes and frees the runtime
        CHECK(rt() == nullptr);
        PyGC_Collect(); // the old runtime's exception type
        long raw_before = fa_outstanding(PYMEM_DOMAIN_RAW);
        fa_arm(n, 0, FA_ALL);
        const coextra_api *api = coextra_runtime_attach();
        fa_disarm();
        long failed = fa_failed();
        if (api == nullptr) {
            REQUIRE(PyErr_Occurred() != nullptr);
            CHECK(PyErr_ExceptionMatches(PyExc_MemoryError));
            PyErr_Clear();
            CHECK(rt() == nullptr); // nothing half-published
            PyGC_Collect();         // the exception type made before the failure is a cycle
            CHECK(fa_outstanding(PYMEM_DOMAIN_RAW) == raw_before);
            api = coextra_runtime_attach();
        }
        REQUIRE(api != nullptr);
        coextra_api_ptr_ = api;
        std::string problem = registry_problem(rt());
        CHECK_MESSAGE(problem.empty(), problem);
        coextra_slot s{};
        REQUIRE(coextra_slot_reserve("rel.attach", nullptr, nullptr, &s) == 0);
        REQUIRE(coextra_slot_release(s) == 0);
        if (failed == 0)
            break;
        points++;
    }
    fa_track(0);
    fa_uninstall();
    MESSAGE("runtime creation: " << points << " allocation points failed");
    CHECK(points >= 3);

    // First use in a fresh runtime: the co_extra index request and the first
    // block.  Each run drops the runtime first, so each asks CPython for a new
    // index (a dozen of its 254).
    static int serial = 0;
    PyObject *code = nullptr;
    coextra_slot s{};
    SweepResult r = sweep(
        "first set in a fresh runtime",
        [&] {
            PyGC_Collect();
            REQUIRE(rt()->n_blocks == 0);
            REQUIRE(PyDict_DelItemString(dict, key.c_str()) == 0);
            coextra_api_ptr_ = coextra_runtime_attach();
            REQUIRE(coextra_api_ptr_ != nullptr);
            CHECK(rt()->co_extra_index == -1);
            REQUIRE(coextra_slot_reserve("rel.first", token_free, &g_tokens[0], &s) == 0);
            code = fresh_code(5000 + serial++);
        },
        [&] { return coextra_slot_set(code, s, &g_tokens[30]); },
        [&](int rc) {
            if (rc != 0)
                REQUIRE(coextra_slot_set(code, s, &g_tokens[30]) == 0);
            CHECK(rt()->co_extra_index >= 0);
            CHECK(coextra_slot_get(code, s) == &g_tokens[30]);
            Py_CLEAR(code);
            PyGC_Collect();
            REQUIRE(coextra_slot_release(s) == 0);
        });
    CHECK(r.points >= 2);
}

TEST_CASE("reliability: bad input to every C entry point is an exception, never a crash") {
    coextra_slot s{}, zero{0, 0}, stale{};
    PyObject *code = fresh_code(9000);
    REQUIRE(code != nullptr);
    auto expect = [](int rc, PyObject *type, const char *what) {
        INFO(what);
        CHECK(rc == -1);
        REQUIRE(PyErr_Occurred() != nullptr);
        CHECK(PyErr_ExceptionMatches(type));
        PyErr_Clear();
    };
    PyObject *released = coextra_api_ptr_->released_error_type();
    REQUIRE(released != nullptr);
    // names
    expect(coextra_slot_reserve(nullptr, nullptr, nullptr, &s), PyExc_ValueError, "NULL name");
    expect(coextra_slot_reserve("", nullptr, nullptr, &s), PyExc_ValueError, "empty name");
    std::string longname(COEXTRA_NAME_MAX + 1, 'x');
    expect(coextra_slot_reserve(longname.c_str(), nullptr, nullptr, &s), PyExc_ValueError, "overlong name");
    expect(coextra_slot_reserve("\xff\xfe", nullptr, nullptr, &s), PyExc_ValueError, "invalid UTF-8 name");
    expect(coextra_slot_reserve("rel.bad", nullptr, nullptr, nullptr), PyExc_ValueError, "NULL out");
    REQUIRE(coextra_slot_reserve("rel.bad", nullptr, nullptr, &s) == 0);
    expect(coextra_slot_reserve("rel.bad", nullptr, nullptr, &stale), PyExc_ValueError, "duplicate name");
    CHECK((stale.index == 0 && stale.generation == 0)); // out zeroed on failure
    // handles
    REQUIRE(coextra_slot_reserve("rel.bad.stale", nullptr, nullptr, &stale) == 0);
    REQUIRE(coextra_slot_release(stale) == 0);
    coextra_slot garbage{0xFFFFFFF0u, 12345u}, index0{0, 7};
    for (coextra_slot bad : {zero, stale, garbage, index0}) {
        PyObject *type = (bad.index == 0 && bad.generation == 0) ? PyExc_ValueError : released;
        expect(coextra_slot_set(code, bad, &g_tokens[0]), type, "set with a bad handle");
        expect(coextra_slot_clear(code, bad), type, "clear with a bad handle");
        expect(coextra_slot_release(bad), type, "release with a bad handle");
        CHECK(coextra_slot_get(code, bad) == nullptr);
        CHECK(coextra_api_ptr_->slot_get(code, bad) == nullptr);
        CHECK(PyErr_Occurred() == nullptr);
        CHECK(coextra_api_ptr_->slot_live(bad) == -1);
        PyErr_Clear();
    }
    // keys
    for (PyObject *key : {static_cast<PyObject *>(nullptr), Py_None, PyEval_GetBuiltins()}) {
        expect(coextra_slot_set(key, s, &g_tokens[0]), PyExc_TypeError, "set with a non-code key");
        expect(coextra_slot_clear(key, s), PyExc_TypeError, "clear with a non-code key");
        CHECK(coextra_slot_get(key, s) == nullptr); // the inline fast path, even for NULL
        CHECK(coextra_api_ptr_->slot_get(key, s) == nullptr);
        CHECK(PyErr_Occurred() == nullptr);
    }
    // hooks
    Counts c;
    coextra_hook *h = nullptr;
    coextra_hook_def def{"rel.bad.hook", COEXTRA_PRIORITY_DEFAULT, counting_eval, &c, {0, 0}};
    expect(coextra_hook_add(nullptr, &h), PyExc_ValueError, "NULL def");
    expect(coextra_hook_add(&def, nullptr), PyExc_ValueError, "NULL out");
    for (const char *name : {static_cast<const char *>(nullptr), "", longname.c_str(), "\xc3"}) {
        coextra_hook_def d = def;
        d.name = name;
        expect(coextra_hook_add(&d, &h), PyExc_ValueError, "bad hook name");
    }
    for (int prio : {COEXTRA_PRIORITY_MIN - 1, COEXTRA_PRIORITY_MAX + 1, -2147483647 - 1, 2147483647}) {
        coextra_hook_def d = def;
        d.priority = prio;
        expect(coextra_hook_add(&d, &h), PyExc_ValueError, "bad priority");
    }
    {
        coextra_hook_def d = def;
        d.eval = nullptr;
        expect(coextra_hook_add(&d, &h), PyExc_ValueError, "NULL eval");
        d = def;
        d.only = stale;
        expect(coextra_hook_add(&d, &h), released, "stale only");
        d.only = garbage;
        expect(coextra_hook_add(&d, &h), released, "garbage only");
    }
    CHECK(h == nullptr);
    REQUIRE(coextra_hook_add(&def, &h) == 0);
    coextra_hook *dup = nullptr;
    expect(coextra_hook_add(&def, &dup), PyExc_ValueError, "duplicate hook name");
    REQUIRE(coextra_hook_remove(h) == 0);
    for (coextra_hook *bad : {h, static_cast<coextra_hook *>(nullptr), reinterpret_cast<coextra_hook *>(&c),
                              reinterpret_cast<coextra_hook *>(uintptr_t(1)),
                              reinterpret_cast<coextra_hook *>(~uintptr_t(0))}) {
        PyObject *type = bad == nullptr ? PyExc_ValueError : released;
        expect(coextra_hook_remove(bad), type, "remove a bad hook handle");
        expect(coextra_hook_set_active(bad, 1), type, "activate a bad hook handle");
        expect(coextra_api_ptr_->hook_get_active(bad), type, "query a bad hook handle");
    }
    REQUIRE(coextra_slot_release(s) == 0);
    Py_DECREF(released);
    Py_DECREF(code);
    std::string problem = registry_problem(rt());
    CHECK_MESSAGE(problem.empty(), problem);
}

// Last in this file: it replaces the interpreter that the cases after it use.
TEST_CASE("reliability: Py_Finalize with live slots and active hooks, then a second Py_Initialize") {
    reset_freed();
    static Counts counts; // survives the interpreter
    coextra_slot s{}, s_late{};
    coextra_hook *h = nullptr;
    REQUIRE(coextra_slot_reserve("rel.fin.slot", token_free, &g_tokens[0], &s) == 0);
    REQUIRE(coextra_slot_reserve("rel.fin.late", token_free, &g_tokens[0], &s_late) == 0);
    coextra_hook_def def{"rel.fin.hook", COEXTRA_PRIORITY_DEFAULT, counting_eval, &counts, {0, 0}};
    REQUIRE(coextra_hook_add(&def, &h) == 0);
    // Values in code objects that live in __main__ (they die during module
    // teardown) and in one kept in the interpreter dict after the runtime's
    // publication (it dies after the runtime was closed).
    REQUIRE(embed::exec("def _fin_a(x):\n    return x + 1\n"
                        "def _fin_b(x):\n    return x + 2\n"
                        "_fin_a(1); _fin_b(2)\n"));
    PyObject *a = embed::eval("_fin_a.__code__");
    PyObject *b = embed::eval("_fin_b.__code__");
    REQUIRE((a && b));
    REQUIRE(coextra_slot_set(a, s, &g_tokens[20]) == 0);
    REQUIRE(coextra_slot_set(b, s, &g_tokens[21]) == 0);
    PyObject *late = fresh_code(9100);
    REQUIRE(late != nullptr);
    REQUIRE(coextra_slot_set(late, s_late, &g_tokens[22]) == 0);
    PyObject *dict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    REQUIRE(PyDict_SetItemString(dict, "zz.doctest.late", late) == 0);
    Py_DECREF(late);
    Py_DECREF(a);
    Py_DECREF(b);
    CHECK(counts.enter > 0);
    CHECK(counts.enter == counts.exit);

    REQUIRE(embed::restart());
    CHECK(g_freed[20] == 1);
    CHECK(g_freed[21] == 1);
    CHECK(g_freed[22] == 1);
    CHECK(g_bad_ctx == 0);
    CHECK(counts.enter == counts.exit);

    // The new interpreter has a fresh, empty, working runtime; the old handles mean nothing in it.
    std::string problem = registry_problem(rt());
    CHECK_MESSAGE(problem.empty(), problem);
    CHECK(rt()->slots.empty());
    CHECK(rt()->hooks.empty());
    CHECK((coextra_fc_get_eval(PyInterpreterState_Get()) == coextra_fc_default_eval()));
    CHECK(coextra_slot_set(Py_None, s, &g_tokens[0]) == -1);
    PyErr_Clear();
    CHECK(coextra_hook_remove(h) == -1);
    PyErr_Clear();
    coextra_slot s2{};
    REQUIRE(coextra_slot_reserve("rel.fin.slot", token_free, &g_tokens[0], &s2) == 0);
    PyObject *code = fresh_code(9200);
    REQUIRE(coextra_slot_set(code, s2, &g_tokens[23]) == 0);
    long before = counts.enter;
    REQUIRE(coextra_hook_add(&def, &h) == 0);
    REQUIRE(embed::exec("def _fin_c():\n    return 3\n_fin_c()\n"));
    CHECK(counts.enter > before);
    REQUIRE(coextra_hook_remove(h) == 0);
    Py_DECREF(code);
    PyGC_Collect();
    CHECK(g_freed[23] == 1);
    REQUIRE(coextra_slot_release(s2) == 0);
    problem = registry_problem(rt());
    CHECK_MESSAGE(problem.empty(), problem);
}
