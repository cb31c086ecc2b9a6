"""test_cpp_moves.py: coextra::Hook and coextra::Slot move-assignment (coextra.hpp), from a C++ consumer."""

import itertools
import unittest

import coextra
import coextra_test_consumer_cpp as cpp

_counter = itertools.count()


def uname(tag):
    return "test_cpp_moves.%s.%d" % (tag, next(_counter))


def work():
    return sum(range(3))


def listed(name):
    return any(h.name == name for h in coextra.hooks())


class TestHookMoveAssignment(unittest.TestCase):
    def tearDown(self):
        cpp.hook_move(0, 1)   # 0 takes 1's hook (removing its own): 1 is empty ...
        cpp.hook_move(0, 1)   # ... and 0 takes the empty one: its hook is removed
        self.assertEqual([s[0] for s in cpp.hook_state()], [False, False])

    def calls(self):
        return [s[1] for s in cpp.hook_state()]

    def test_move_assign_removes_the_old_hook_and_takes_the_other(self):
        a, b = uname("a"), uname("b")
        cpp.hook_add(0, a)
        cpp.hook_add(1, b)
        before = self.calls()
        work()
        after = self.calls()
        self.assertTrue(after[0] > before[0] and after[1] > before[1])
        cpp.hook_move(0, 1)                        # holder0 = std::move(holder1)
        self.assertFalse(listed(a))                # a's hook was removed, as by its destructor
        self.assertTrue(listed(b))
        self.assertEqual([s[0] for s in cpp.hook_state()], [True, False])
        before = self.calls()
        work()
        after = self.calls()
        self.assertEqual(after[0], before[0])      # a's callable is gone
        self.assertGreater(after[1], before[1])    # b's runs, now owned by holder 0
        with self.assertRaisesRegex(RuntimeError, "already added"):
            cpp.hook_add(0, uname("c"))
        cpp.hook_add(1, a)                         # the emptied holder is usable again
        self.assertTrue(listed(a))

    def test_self_move_keeps_the_hook(self):
        a = uname("self")
        cpp.hook_add(0, a)
        cpp.hook_move(0, 0)
        self.assertTrue(listed(a))
        self.assertEqual(cpp.hook_state()[0][0], True)

    def test_moving_an_empty_holder_in_removes(self):
        a = uname("empty")
        cpp.hook_add(0, a)
        cpp.hook_move(0, 1)
        self.assertFalse(listed(a))
        self.assertEqual([s[0] for s in cpp.hook_state()], [False, False])


class TestSlotMoveAssignment(unittest.TestCase):
    def test_move_assign_releases_the_old_slot(self):
        a, b = uname("slot.a"), uname("slot.b")
        self.assertEqual(cpp.slot_move(a, b), (True, True, True))
        names = {s.name for s in coextra.slots()}
        self.assertNotIn(a, names)
        self.assertNotIn(b, names)   # released by the destructor on return


if __name__ == "__main__":
    unittest.main()
