// test_slots.cpp: doctest cases for the slot registry internals (blocks, generations, growth, release bookkeeping).
#include "embed.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

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
