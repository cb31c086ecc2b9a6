// test_slots.cpp: doctest cases for the slot registry internals (blocks, generations, growth, release bookkeeping).
#include "embed.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Freed {
    std::vector<void *> values;
};
void record_free(void *v, void *ctx) { static_cast<Freed *>(ctx)->values.push_back(v); }

coextra::Runtime *rt() { return coextra::runtime_for(PyInterpreterState_Get()); }

int dummy[8];

} // namespace

TEST_CASE("reserve, set, get, clear, release round trip") {
    Freed freed;
    coextra_slot s{};
    REQUIRE(coextra_slot_reserve("doctest.roundtrip", record_free, &freed, &s) == 0);
    CHECK(s.index >= 1);
    CHECK(s.generation != 0);
    PyObject *code = embed::code_of("def f(): pass", "f");
    REQUIRE(code != nullptr);
    CHECK(coextra_slot_get(code, s) == nullptr);
    REQUIRE(coextra_slot_set(code, s, &dummy[0]) == 0);
    CHECK(coextra_slot_get(code, s) == &dummy[0]);
    CHECK(rt()->slots[s.index - 1].live == 1);
    // set replaces and frees the old value
    REQUIRE(coextra_slot_set(code, s, &dummy[1]) == 0);
    REQUIRE(freed.values.size() == 1);
    CHECK(freed.values[0] == &dummy[0]);
    // clear frees
    REQUIRE(coextra_slot_clear(code, s) == 0);
    CHECK(freed.values.size() == 2);
    CHECK(coextra_slot_get(code, s) == nullptr);
    CHECK(rt()->slots[s.index - 1].live == 0);
    REQUIRE(coextra_slot_release(s) == 0);
    Py_DECREF(code);
}

TEST_CASE("code death frees each non-empty slot once; the block leaves the list") {
    Freed freed;
    coextra_slot a{}, b{};
    REQUIRE(coextra_slot_reserve("doctest.death.a", record_free, &freed, &a) == 0);
    REQUIRE(coextra_slot_reserve("doctest.death.b", record_free, &freed, &b) == 0);
    PyObject *code = embed::code_of("def g(): return 1", "g");
    REQUIRE(code != nullptr);
    PyGC_Collect(); // earlier cases left function/globals cycles behind
    std::size_t blocks_before = rt()->n_blocks;
    REQUIRE(coextra_slot_set(code, a, &dummy[2]) == 0);
    CHECK(rt()->n_blocks == blocks_before + 1);
    Py_DECREF(code); // the function and its globals form a cycle: collect it
    PyGC_Collect();  // code_dealloc runs the co_extra free function
    CHECK(rt()->n_blocks == blocks_before);
    REQUIRE(freed.values.size() == 1); // b was empty: its free function is not called
    CHECK(freed.values[0] == &dummy[2]);
    CHECK(rt()->slots[a.index - 1].live == 0);
    CHECK(coextra_slot_release(a) == 0);
    CHECK(coextra_slot_release(b) == 0);
}

TEST_CASE("a released index is reused with a new generation; the stale handle reaches nothing") {
    coextra_slot s1{}, s2{};
    REQUIRE(coextra_slot_reserve("doctest.reuse", nullptr, nullptr, &s1) == 0);
    PyObject *code = embed::code_of("def h(): pass", "h");
    REQUIRE(coextra_slot_set(code, s1, &dummy[3]) == 0);
    REQUIRE(coextra_slot_release(s1) == 0);
    REQUIRE(coextra_slot_reserve("doctest.reuse", nullptr, nullptr, &s2) == 0);
    CHECK(s2.index == s1.index);
    CHECK(s2.generation != s1.generation);
    CHECK(coextra_slot_get(code, s1) == nullptr);
    CHECK(coextra_slot_get(code, s2) == nullptr);
    REQUIRE(coextra_slot_set(code, s2, &dummy[4]) == 0);
    CHECK(coextra_slot_get(code, s1) == nullptr); // stale handle never sees the new tool's data
    CHECK(coextra_slot_set(code, s1, &dummy[5]) == -1);
    CHECK(PyErr_Occurred() != nullptr);
    PyErr_Clear();
    CHECK(coextra_slot_release(s1) == -1);
    PyErr_Clear();
    CHECK(coextra_slot_release(s2) == 0);
    Py_DECREF(code);
}

TEST_CASE("blocks grow in place when a high slot index is used; CPython's pointer never changes") {
    std::vector<coextra_slot> slots(40);
    for (std::size_t i = 0; i < slots.size(); i++) {
        std::string name = "doctest.grow." + std::to_string(i);
        REQUIRE(coextra_slot_reserve(name.c_str(), nullptr, nullptr, &slots[i]) == 0);
    }
    PyObject *code = embed::code_of("def k(): pass", "k");
    REQUIRE(coextra_slot_set(code, slots[0], &dummy[0]) == 0);
    void *block_before = nullptr;
    REQUIRE(coextra_fc_get_extra(code, rt()->co_extra_index, &block_before) == 0);
    auto *blk = static_cast<coextra_block *>(block_before);
    CHECK(blk->capacity >= slots[0].index);
    CHECK(blk->capacity < slots.back().index);
    REQUIRE(coextra_slot_set(code, slots.back(), &dummy[1]) == 0);
    void *block_after = nullptr;
    REQUIRE(coextra_fc_get_extra(code, rt()->co_extra_index, &block_after) == 0);
    CHECK(block_after == block_before);
    CHECK(blk->capacity >= slots.back().index);
    CHECK(coextra_slot_get(code, slots[0]) == &dummy[0]);
    CHECK(coextra_slot_get(code, slots.back()) == &dummy[1]);
    for (auto &s : slots)
        REQUIRE(coextra_slot_release(s) == 0);
    Py_DECREF(code);
}

// ---------------------------------------------------------------------------
// Registry internals: generations, index reuse, growth, release bookkeeping.
// ---------------------------------------------------------------------------

namespace {

int g_unique = 0;

// A module code object referenced only by the caller: Py_DECREF kills it.
PyObject *fresh_code() {
    int n = ++g_unique;
    std::string src = "x_" + std::to_string(n) + " = " + std::to_string(n) + "\n";
    PyObject *code = Py_CompileString(src.c_str(), "<doctest fresh>", Py_file_input);
    REQUIRE(code != nullptr);
    REQUIRE(Py_REFCNT(code) == 1);
    return code;
}

std::string uname(const char *tag) { return std::string("doctest.") + tag + "." + std::to_string(++g_unique); }

coextra::Block *block_of(PyObject *code) {
    void *p = nullptr;
    if (rt()->co_extra_index < 0 || coextra_fc_get_extra(code, rt()->co_extra_index, &p) < 0)
        return nullptr;
    return static_cast<coextra::Block *>(p);
}

std::size_t walk_blocks() {
    std::size_t n = 0;
    for (coextra::Block *b = rt()->blocks; b != nullptr; b = b->next)
        n++;
    return n;
}

bool is_free_index(uint32_t index) {
    for (uint32_t i : rt()->free_indices)
        if (i == index)
            return true;
    return false;
}

// A free function that records (slot tag, value) and can act on the registry.
struct Actor {
    const char *tag;
    std::vector<std::pair<std::string, void *>> *log;
    coextra_slot *release_on_free = nullptr; // release this slot (once) from inside the free function
    coextra_slot *reserve_into = nullptr;    // then reserve a new slot into this handle
    Actor *reserve_actor = nullptr;          // with this actor as its ctx
    int release_rc = 1, reserve_rc = 1;
};

void actor_free(void *v, void *ctx) {
    auto *a = static_cast<Actor *>(ctx);
    a->log->emplace_back(a->tag, v);
    if (a->release_on_free != nullptr) {
        coextra_slot s = *a->release_on_free;
        a->release_on_free = nullptr;
        a->release_rc = coextra_slot_release(s);
        if (a->reserve_into != nullptr) {
            std::string n = uname("actor.reserved");
            a->reserve_rc = coextra_slot_reserve(n.c_str(), actor_free, a->reserve_actor, a->reserve_into);
        }
    }
}

} // namespace

TEST_CASE("generations are unique and never 0, across reserve/release") {
    std::vector<uint32_t> gens;
    std::vector<coextra_slot> live;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 20; i++) {
            coextra_slot s{};
            REQUIRE(coextra_slot_reserve(uname("gen").c_str(), nullptr, nullptr, &s) == 0);
            CHECK(s.generation != 0);
            CHECK(s.index != 0);
            gens.push_back(s.generation);
            live.push_back(s);
        }
        // release half: their indices come back with new generations
        for (std::size_t i = 0; i < live.size(); i += 2)
            REQUIRE(coextra_slot_release(live[i]) == 0);
        std::vector<coextra_slot> keep;
        for (std::size_t i = 1; i < live.size(); i += 2)
            keep.push_back(live[i]);
        live.swap(keep);
    }
    for (auto &s : live)
        REQUIRE(coextra_slot_release(s) == 0);
    std::vector<uint32_t> sorted = gens;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    for (int i = 0; i < 1000; i++)
        CHECK(coextra::next_generation() != 0);
}

TEST_CASE("a freed index is reused lowest first; the table only grows when none is free") {
    std::vector<coextra_slot> made(8);
    for (auto &s : made)
        REQUIRE(coextra_slot_reserve(uname("lowest").c_str(), nullptr, nullptr, &s) == 0);
    // release out of order
    for (int k : {5, 1, 6, 3})
        REQUIRE(coextra_slot_release(made[k]) == 0);
    for (int k : {5, 1, 6, 3})
        CHECK(is_free_index(made[k].index));
    CHECK(rt()->slots[made[5].index - 1].generation == 0);
    std::vector<coextra_slot> again;
    while (!rt()->free_indices.empty()) {
        uint32_t expected = *std::min_element(rt()->free_indices.begin(), rt()->free_indices.end());
        std::size_t size_before = rt()->slots.size();
        coextra_slot s{};
        REQUIRE(coextra_slot_reserve(uname("lowest.again").c_str(), nullptr, nullptr, &s) == 0);
        CHECK(s.index == expected);
        CHECK(rt()->slots.size() == size_before);
        CHECK_FALSE(is_free_index(s.index));
        again.push_back(s);
    }
    std::size_t size_before = rt()->slots.size();
    coextra_slot grown{};
    REQUIRE(coextra_slot_reserve(uname("lowest.grown").c_str(), nullptr, nullptr, &grown) == 0);
    CHECK(grown.index == size_before + 1);
    CHECK(rt()->slots.size() == size_before + 1);
    again.push_back(grown);
    for (int k : {0, 2, 4, 7})
        REQUIRE(coextra_slot_release(made[k]) == 0);
    for (auto &s : again)
        REQUIRE(coextra_slot_release(s) == 0);
    // a released name can be reserved again; the duplicate check sees live names only
    coextra_slot a{}, b{};
    std::string n = uname("lowest.name");
    REQUIRE(coextra_slot_reserve(n.c_str(), nullptr, nullptr, &a) == 0);
    CHECK(coextra_slot_reserve(n.c_str(), nullptr, nullptr, &b) == -1);
    CHECK(PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
    CHECK(b.generation == 0); // out is zeroed on failure
    REQUIRE(coextra_slot_release(a) == 0);
    REQUIRE(coextra_slot_reserve(n.c_str(), nullptr, nullptr, &b) == 0);
    REQUIRE(coextra_slot_release(b) == 0);
}

TEST_CASE("block growth keeps every value, generation and the block's address") {
    // Use a fresh table range so the high indices are really high.
    std::vector<coextra_slot> slots(70);
    for (auto &s : slots)
        REQUIRE(coextra_slot_reserve(uname("growth").c_str(), nullptr, nullptr, &s) == 0);
    std::sort(slots.begin(), slots.end(), [](const coextra_slot &x, const coextra_slot &y) { return x.index < y.index; });
    PyObject *code = fresh_code();
    REQUIRE(coextra_slot_set(code, slots[0], &dummy[0]) == 0);
    coextra::Block *b = block_of(code);
    REQUIRE(b != nullptr);
    CHECK(b->pub.magic == COEXTRA_BLOCK_MAGIC);
    CHECK(b->rt == rt());
    uint32_t cap = b->pub.capacity;
    std::vector<uint32_t> caps{cap};
    for (std::size_t i = 1; i < slots.size(); i++) {
        REQUIRE(coextra_slot_set(code, slots[i], &dummy[i % 8]) == 0);
        CHECK(block_of(code) == b);
        CHECK(b->pub.capacity >= slots[i].index);
        if (b->pub.capacity != caps.back())
            caps.push_back(b->pub.capacity);
        // every earlier value survived the growth
        for (std::size_t j = 0; j <= i; j++) {
            CHECK(coextra_slot_get(code, slots[j]) == &dummy[j % 8]);
            CHECK(b->pub.entries[slots[j].index - 1].generation == slots[j].generation);
        }
    }
    CHECK(caps.size() >= 2); // it really grew
    CHECK(b->n_values == slots.size());
    for (auto &s : slots)
        CHECK(rt()->slots[s.index - 1].live == 1);
    std::size_t blocks = rt()->n_blocks;
    Py_DECREF(code); // dies now: its block leaves the list
    CHECK(rt()->n_blocks == blocks - 1);
    CHECK(walk_blocks() == rt()->n_blocks);
    for (auto &s : slots) {
        CHECK(rt()->slots[s.index - 1].live == 0);
        REQUIRE(coextra_slot_release(s) == 0);
    }
}

TEST_CASE("release bookkeeping: live counts, n_values, the block list, and only that slot's entries") {
    std::vector<std::pair<std::string, void *>> log;
    Actor aa{"A", &log}, ab{"B", &log};
    coextra_slot A{}, B{};
    REQUIRE(coextra_slot_reserve(uname("book.A").c_str(), actor_free, &aa, &A) == 0);
    REQUIRE(coextra_slot_reserve(uname("book.B").c_str(), actor_free, &ab, &B) == 0);
    PyObject *c1 = fresh_code(), *c2 = fresh_code(), *c3 = fresh_code();
    std::size_t blocks0 = rt()->n_blocks;
    REQUIRE(coextra_slot_set(c1, A, &dummy[0]) == 0);
    REQUIRE(coextra_slot_set(c1, B, &dummy[1]) == 0);
    REQUIRE(coextra_slot_set(c2, B, &dummy[2]) == 0);
    REQUIRE(coextra_slot_set(c3, B, &dummy[3]) == 0);
    REQUIRE(coextra_slot_clear(c3, B) == 0); // c3 keeps an empty block
    log.clear();
    CHECK(rt()->n_blocks == blocks0 + 3);
    CHECK(walk_blocks() == rt()->n_blocks);
    CHECK(rt()->slots[A.index - 1].live == 1);
    CHECK(rt()->slots[B.index - 1].live == 2);
    coextra::Block *b1 = block_of(c1), *b2 = block_of(c2), *b3 = block_of(c3);
    REQUIRE((b1 && b2 && b3));
    CHECK(b1->n_values == 2);
    CHECK(b2->n_values == 1);
    CHECK(b3->n_values == 0);
    // A foreign-generation entry at A's index in c2 (what a stale slot would
    // have left): release must not touch it, it is not A's.
    REQUIRE(b2->pub.capacity >= A.index);
    coextra_block_entry saved = b2->pub.entries[A.index - 1];
    b2->pub.entries[A.index - 1].value = &dummy[7];
    b2->pub.entries[A.index - 1].generation = A.generation + 7777;
    std::vector<coextra_block_entry> b2_before(b2->pub.entries, b2->pub.entries + b2->pub.capacity);

    REQUIRE(coextra_slot_release(A) == 0);
    REQUIRE(log.size() == 1);
    CHECK(log[0] == std::make_pair(std::string("A"), static_cast<void *>(&dummy[0])));
    CHECK(b1->n_values == 1);
    CHECK(b1->pub.entries[A.index - 1].value == nullptr);
    CHECK(b1->pub.entries[A.index - 1].generation == 0);
    CHECK(b1->pub.entries[B.index - 1].value == &dummy[1]);
    for (uint32_t i = 0; i < b2->pub.capacity; i++) {
        CHECK(b2->pub.entries[i].value == b2_before[i].value);
        CHECK(b2->pub.entries[i].generation == b2_before[i].generation);
    }
    CHECK(b2->n_values == 1);
    CHECK(rt()->n_blocks == blocks0 + 3); // blocks stay with their code objects
    CHECK(walk_blocks() == rt()->n_blocks);
    CHECK(rt()->slots[B.index - 1].live == 2);
    CHECK(rt()->slots[A.index - 1].generation == 0);
    CHECK(rt()->slots[A.index - 1].live == 0);
    CHECK((rt()->slots[A.index - 1].free_fn == nullptr));
    CHECK(is_free_index(A.index));
    b2->pub.entries[A.index - 1] = saved;

    log.clear();
    REQUIRE(coextra_slot_release(B) == 0);
    CHECK(log.size() == 2);
    CHECK(b1->n_values == 0);
    CHECK(b2->n_values == 0);
    CHECK(rt()->n_blocks == blocks0 + 3);
    // the blocks die with their code objects, without calling anything
    log.clear();
    Py_DECREF(c1);
    Py_DECREF(c2);
    Py_DECREF(c3);
    CHECK(log.empty());
    CHECK(rt()->n_blocks == blocks0);
    CHECK(walk_blocks() == blocks0);
}

TEST_CASE("a free function may release another slot: during code death, release and replace") {
    std::vector<std::pair<std::string, void *>> log;

    SUBCASE("code death") {
        Actor aa{"A", &log}, ab{"B", &log};
        coextra_slot A{}, B{};
        REQUIRE(coextra_slot_reserve(uname("reent.A").c_str(), actor_free, &aa, &A) == 0);
        REQUIRE(coextra_slot_reserve(uname("reent.B").c_str(), actor_free, &ab, &B) == 0);
        if (B.index < A.index) { // A must come first in the block
            std::swap(A, B);
            std::swap(aa.tag, ab.tag);
        }
        // B is released from A's free function while B's value sits in the
        // dying block: B's free function must run for it, exactly once.
        aa.release_on_free = &B;
        PyObject *code = fresh_code();
        PyObject *other = fresh_code();
        REQUIRE(coextra_slot_set(code, A, &dummy[0]) == 0);
        REQUIRE(coextra_slot_set(code, B, &dummy[1]) == 0);
        REQUIRE(coextra_slot_set(other, B, &dummy[2]) == 0);
        std::size_t blocks = rt()->n_blocks;
        Py_DECREF(code);
        CHECK(aa.release_rc == 0);
        REQUIRE(log.size() == 3);
        CHECK(log[0] == std::make_pair(std::string(aa.tag), static_cast<void *>(&dummy[0])));
        std::vector<void *> b_values{log[1].second, log[2].second};
        std::sort(b_values.begin(), b_values.end());
        CHECK(b_values == std::vector<void *>{&dummy[1], &dummy[2]});
        CHECK(log[1].first == ab.tag);
        CHECK(log[2].first == ab.tag);
        CHECK(rt()->n_blocks == blocks - 1);
        CHECK(walk_blocks() == rt()->n_blocks);
        CHECK(block_of(other)->n_values == 0);
        CHECK(rt()->slots[A.index - 1].live == 0);
        CHECK(rt()->slots[B.index - 1].live == 0); // no underflow
        Py_DECREF(other);
        REQUIRE(coextra_slot_release(A) == 0);
    }
    SUBCASE("code death, and the released index is reserved again at once") {
        Actor aa{"A", &log}, ab{"B", &log}, ac{"C", &log};
        coextra_slot A{}, B{}, C{};
        REQUIRE(coextra_slot_reserve(uname("reent2.A").c_str(), actor_free, &aa, &A) == 0);
        REQUIRE(coextra_slot_reserve(uname("reent2.B").c_str(), actor_free, &ab, &B) == 0);
        if (B.index < A.index) {
            std::swap(A, B);
            std::swap(aa.tag, ab.tag);
        }
        aa.release_on_free = &B;
        aa.reserve_into = &C;
        aa.reserve_actor = &ac;
        // make B's index the lowest free one once released: fill every lower hole
        std::vector<coextra_slot> fillers;
        while (!rt()->free_indices.empty()) {
            coextra_slot f{};
            REQUIRE(coextra_slot_reserve(uname("reent2.fill").c_str(), nullptr, nullptr, &f) == 0);
            fillers.push_back(f);
        }
        PyObject *code = fresh_code();
        REQUIRE(coextra_slot_set(code, A, &dummy[0]) == 0);
        REQUIRE(coextra_slot_set(code, B, &dummy[1]) == 0);
        Py_DECREF(code);
        CHECK(aa.release_rc == 0);
        CHECK(aa.reserve_rc == 0);
        CHECK(C.index == B.index); // the index really was reused
        REQUIRE(log.size() == 2);
        CHECK(log[1] == std::make_pair(std::string(ab.tag), static_cast<void *>(&dummy[1])));
        CHECK(rt()->slots[C.index - 1].live == 0);
        REQUIRE(coextra_slot_release(A) == 0);
        REQUIRE(coextra_slot_release(C) == 0);
        for (auto &f : fillers)
            REQUIRE(coextra_slot_release(f) == 0);
        CHECK(log.size() == 2); // C's free function never saw B's value
    }
    SUBCASE("release") {
        Actor aa{"A", &log}, ab{"B", &log};
        coextra_slot A{}, B{};
        REQUIRE(coextra_slot_reserve(uname("reent3.A").c_str(), actor_free, &aa, &A) == 0);
        REQUIRE(coextra_slot_reserve(uname("reent3.B").c_str(), actor_free, &ab, &B) == 0);
        aa.release_on_free = &B;
        PyObject *c1 = fresh_code(), *c2 = fresh_code();
        REQUIRE(coextra_slot_set(c1, A, &dummy[0]) == 0);
        REQUIRE(coextra_slot_set(c2, A, &dummy[1]) == 0);
        REQUIRE(coextra_slot_set(c1, B, &dummy[2]) == 0);
        REQUIRE(coextra_slot_set(c2, B, &dummy[3]) == 0);
        REQUIRE(coextra_slot_release(A) == 0);
        CHECK(aa.release_rc == 0);
        CHECK(log.size() == 4);
        CHECK(block_of(c1)->n_values == 0);
        CHECK(block_of(c2)->n_values == 0);
        CHECK(coextra_slot_release(B) == -1); // already released from inside
        PyErr_Clear();
        Py_DECREF(c1);
        Py_DECREF(c2);
        CHECK(log.size() == 4);
    }
    SUBCASE("replace, releasing its own slot") {
        Actor aa{"A", &log};
        coextra_slot A{};
        REQUIRE(coextra_slot_reserve(uname("reent4.A").c_str(), actor_free, &aa, &A) == 0);
        aa.release_on_free = &A;
        PyObject *c1 = fresh_code(), *c2 = fresh_code();
        REQUIRE(coextra_slot_set(c1, A, &dummy[0]) == 0);
        REQUIRE(coextra_slot_set(c2, A, &dummy[1]) == 0);
        REQUIRE(coextra_slot_set(c1, A, &dummy[2]) == 0); // frees dummy[0] -> release -> frees 1 and 2
        CHECK(aa.release_rc == 0);
        CHECK(log.size() == 3);
        CHECK(coextra_slot_get(c1, A) == nullptr);
        CHECK(block_of(c1)->n_values == 0);
        CHECK(block_of(c2)->n_values == 0);
        CHECK(rt()->slots[A.index - 1].generation == 0);
        Py_DECREF(c1);
        Py_DECREF(c2);
        CHECK(log.size() == 3);
    }
}

TEST_CASE("coextra_slot_get returns NULL, without an error, for every bad input") {
    coextra_slot s{}, high{};
    std::vector<coextra_slot> pad(12);
    REQUIRE(coextra_slot_reserve(uname("get.s").c_str(), nullptr, nullptr, &s) == 0);
    for (auto &p : pad)
        REQUIRE(coextra_slot_reserve(uname("get.pad").c_str(), nullptr, nullptr, &p) == 0);
    REQUIRE(coextra_slot_reserve(uname("get.high").c_str(), nullptr, nullptr, &high) == 0);
    PyObject *code = fresh_code();
    PyObject *bare = fresh_code(); // never held a value: co_extra NULL
    REQUIRE(coextra_slot_set(code, s, &dummy[0]) == 0);
    coextra::Block *b = block_of(code);
    REQUIRE(b != nullptr);
    REQUIRE(high.index > b->pub.capacity); // beyond this block's capacity
    PyObject *fn = embed::eval("lambda: 0");
    REQUIRE(fn != nullptr);
    PyObject *num = PyLong_FromLong(12345);

    const coextra_api *api = coextra_api_ptr_;
    auto both = [&](PyObject *o, coextra_slot h) {
        void *fast = coextra_slot_get(o, h);
        void *table = api->slot_get(o, h);
        CHECK(fast == table);
        CHECK(PyErr_Occurred() == nullptr);
        return fast;
    };
    CHECK(both(code, s) == &dummy[0]);
    CHECK(both(fn, s) == nullptr);     // a function, not its code
    CHECK(both(Py_None, s) == nullptr);
    CHECK(both(num, s) == nullptr);
    CHECK(both(bare, s) == nullptr);
    CHECK(both(code, coextra_slot{0, 0}) == nullptr);
    CHECK(both(code, coextra_slot{s.index, 0}) == nullptr);
    CHECK(both(code, coextra_slot{0, s.generation}) == nullptr);
    CHECK(both(code, coextra_slot{s.index, s.generation + 1}) == nullptr);
    CHECK(both(code, high) == nullptr);
    CHECK(both(code, coextra_slot{0xFFFFFFFFu, s.generation}) == nullptr);
    CHECK(both(code, coextra_slot{b->pub.capacity + 1, s.generation}) == nullptr);
    // the fast path's published entry is this interpreter's
    CHECK(api->fast->interp == PyInterpreterState_Get());
    CHECK(api->fast->co_extra_index == rt()->co_extra_index);
    // stale: released, then the index reused by someone else
    coextra_slot stale = s;
    REQUIRE(coextra_slot_release(s) == 0);
    CHECK(both(code, stale) == nullptr);
    std::vector<coextra_slot> fillers;
    coextra_slot reuse{};
    while (true) {
        REQUIRE(coextra_slot_reserve(uname("get.reuse").c_str(), nullptr, nullptr, &reuse) == 0);
        if (reuse.index == stale.index)
            break;
        fillers.push_back(reuse);
    }
    REQUIRE(coextra_slot_set(code, reuse, &dummy[1]) == 0);
    CHECK(both(code, reuse) == &dummy[1]);
    CHECK(both(code, stale) == nullptr);
    // the checked calls refuse the stale handle with ReleasedError
    CHECK(coextra_slot_set(code, stale, &dummy[2]) == -1);
    PyObject *released_error = api->released_error_type();
    CHECK(PyErr_ExceptionMatches(released_error));
    CHECK(PyErr_ExceptionMatches(PyExc_RuntimeError));
    PyErr_Clear();
    CHECK(coextra_slot_clear(code, stale) == -1);
    CHECK(PyErr_ExceptionMatches(released_error));
    PyErr_Clear();
    Py_DECREF(released_error);
    CHECK(both(code, reuse) == &dummy[1]);
    REQUIRE(coextra_slot_release(reuse) == 0);
    for (auto &f : fillers)
        REQUIRE(coextra_slot_release(f) == 0);
    for (auto &p : pad)
        REQUIRE(coextra_slot_release(p) == 0);
    REQUIRE(coextra_slot_release(high) == 0);
    Py_DECREF(num);
    Py_DECREF(fn);
    Py_DECREF(bare);
    Py_DECREF(code);
}

TEST_CASE("import coextra: the module finds the embedding program's runtime and uses its table") {
    // embed::start() created the runtime with this program's own copy of
    // libcoextra; the extension module carries a second copy.
    CHECK(coextra_api_ptr_ == coextra_runtime_own_api());
    REQUIRE(embed::exec("import coextra, coextra._coextra\n"));
    PyObject *mod = PyImport_ImportModule("coextra._coextra");
    REQUIRE(mod != nullptr);
    PyObject *cap = PyObject_GetAttrString(mod, "_C_API");
    REQUIRE(cap != nullptr);
    CHECK(PyCapsule_IsValid(cap, COEXTRA_CAPSULE_NAME));
    void *ptr = PyCapsule_GetPointer(cap, COEXTRA_CAPSULE_NAME);
    CHECK(ptr == static_cast<const void *>(coextra_api_ptr_));
    Py_DECREF(cap);
    Py_DECREF(mod);
    // attach again from this side: still the same table, no second runtime
    CHECK(coextra_runtime_attach() == coextra_api_ptr_);

    // A Python Slot lands in this program's registry, and its values are
    // visible through the C API.
    std::string name = uname("py");
    REQUIRE(embed::exec("import types\n"
                        "_src = compile('def _pyf(): return 1', '<import test>', 'exec')\n"
                        "_code = [c for c in _src.co_consts if isinstance(c, types.CodeType)][0]\n"
                        "_val = object()\n"
                        "_slot = coextra.Slot('" + name + "')\n"
                        "_slot[_code] = _val\n"));
    PyObject *index_obj = embed::eval("_slot.index");
    REQUIRE(index_obj != nullptr);
    uint32_t index = static_cast<uint32_t>(PyLong_AsUnsignedLong(index_obj));
    Py_DECREF(index_obj);
    REQUIRE(index >= 1);
    REQUIRE(index <= rt()->slots.size());
    const coextra::SlotRec &rec = rt()->slots[index - 1];
    CHECK(std::string(rec.name.c_str()) == name);
    CHECK((rec.flags & COEXTRA_FLAG_PYTHON) != 0);
    CHECK(rec.live == 1);
    PyObject *code = embed::eval("_code");
    PyObject *val = embed::eval("_val");
    REQUIRE((code && val));
    CHECK(coextra_slot_get(code, coextra_slot{index, rec.generation}) == static_cast<void *>(val));
    // a native slot made here shows up in coextra.slots() as native
    coextra_slot mine{};
    std::string native_name = uname("native");
    REQUIRE(coextra_slot_reserve(native_name.c_str(), nullptr, nullptr, &mine) == 0);
    PyObject *r = embed::eval("[tuple(i) for i in coextra.slots() if i.name == '" + native_name + "']");
    REQUIRE(r != nullptr);
    PyObject *expected = Py_BuildValue("[(sIiO)]", native_name.c_str(), mine.index, 0, Py_True);
    CHECK(PyObject_RichCompareBool(r, expected, Py_EQ) == 1);
    Py_DECREF(expected);
    Py_DECREF(r);
    // coextra.status() reports this program's co_extra index
    PyObject *idx = embed::eval("coextra.status().co_extra_index");
    REQUIRE(idx != nullptr);
    CHECK(PyLong_AsSsize_t(idx) == rt()->co_extra_index);
    Py_DECREF(idx);
    REQUIRE(coextra_slot_release(mine) == 0);
    REQUIRE(embed::exec("_slot.release()\nassert _slot.released\n"));
    CHECK(coextra_slot_get(code, coextra_slot{index, rec.generation}) == nullptr);
    Py_DECREF(code);
    Py_DECREF(val);
    REQUIRE(embed::exec("del _slot, _code, _val, _src\n"));
}
