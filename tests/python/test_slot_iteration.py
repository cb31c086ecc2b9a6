"""test_slot_iteration.py: iter(slot), slot.items() and the C coextra_slot_foreach, also while the slot changes."""

import gc
import unittest
import weakref

import coextra
import coextra_test_consumer_c as cc

from coextra_testutil import make_code, unique_name


def uname(tag="slot"):
    return unique_name("test_slot_iteration", tag)


class Value:
    pass


class TestPythonIteration(unittest.TestCase):
    def slot(self, **kw):
        s = coextra.Slot(uname(), **kw)
        self.addCleanup(lambda: s.released or s.release())
        return s

    def test_iter_and_items_list_every_marked_code(self):
        s = self.slot()
        codes = [make_code() for _ in range(5)]
        for i, c in enumerate(codes[:4]):
            s[c] = i
        self.assertEqual(sorted(map(id, s)), sorted(map(id, codes[:4])))
        self.assertEqual(sorted((c.co_name, v) for c, v in s.items()),
                         sorted((c.co_name, i) for i, c in enumerate(codes[:4])))
        self.assertNotIn(codes[4], list(s))
        self.assertEqual(len(list(s)), len(s))

    def test_empty_and_other_slots_values(self):
        s, other = self.slot(), self.slot()
        other[make_code()] = 1
        self.assertEqual(list(s), [])
        self.assertEqual(list(s.items()), [])

    def test_values_deleted_during_the_loop_are_skipped(self):
        s = self.slot()
        codes = [make_code() for _ in range(6)]
        for c in codes:
            s[c] = c.co_name
        seen = []
        for code in s:
            seen.append(code)
            for other in codes:
                if other is not code and other in s and not any(other is x for x in seen):
                    del s[other]   # the next one still to come
                    break
        self.assertEqual(len(seen), 3)
        self.assertEqual(len(s), 3)

    def test_items_see_the_value_at_their_turn_and_new_codes_are_not_visited(self):
        s = self.slot()
        codes = [make_code() for _ in range(4)]
        for c in codes:
            s[c] = "old"
        late = make_code()
        out = []
        for code, value in s.items():
            out.append(value)
            for c in codes:
                s[c] = "new"   # replaces the values still to come (and frees the old ones)
            s[late] = "late"   # not in the snapshot
        self.assertEqual(out, ["old", "new", "new", "new"])
        self.assertIn(late, s)

    def test_release_during_the_loop_raises_released_error(self):
        freed = []
        s = self.slot(on_free=freed.append)
        values = [Value() for _ in range(3)]
        codes = [make_code() for _ in values]
        for c, v in zip(codes, values):
            s[c] = v
        it = iter(s)
        next(it)
        s.release()
        self.assertEqual(len(freed), 3)
        with self.assertRaisesRegex(coextra.ReleasedError, "has been released"):
            next(it)
        with self.assertRaises(coextra.ReleasedError):
            iter(s)
        with self.assertRaises(coextra.ReleasedError):
            s.items()

    def test_the_snapshot_keeps_code_objects_alive_until_dropped(self):
        freed = []
        s = self.slot(on_free=freed.append)
        code = make_code()
        s[code] = Value()
        wr = weakref.ref(code)
        it = s.items()
        del code
        gc.collect()
        self.assertIsNotNone(wr())          # the snapshot holds it
        (c, v), = list(it)
        self.assertIs(c, wr())
        del c, v, it
        gc.collect()
        self.assertIsNone(wr())             # and nothing else did
        self.assertEqual(len(freed), 1)
        self.assertEqual(len(s), 0)

    def test_item_helper_rejects_non_code(self):
        s = self.slot()
        with self.assertRaises(TypeError):
            s._item("not a code object")


class TestCForeach(unittest.TestCase):
    """coextra_slot_foreach from tests/consumers/consumer_c.c (built from include/ only)."""

    def setUp(self):
        self.h = cc.reserve(uname("c"))
        self.addCleanup(self.release)
        self.codes = [make_code() for _ in range(5)]
        for i, c in enumerate(self.codes):
            cc.set(c, *self.h, 10 * i)

    def release(self):
        try:
            cc.release(*self.h)
        except coextra.ReleasedError:
            pass

    def test_visits_every_value_once(self):
        seen = []
        self.assertEqual(cc.foreach(*self.h, lambda code, v: seen.append((code, v))), 0)
        self.assertEqual(sorted((id(c), v) for c, v in seen),
                         sorted((id(c), 10 * i) for i, c in enumerate(self.codes)))

    def test_a_nonzero_return_stops_and_is_returned(self):
        seen = []

        def fn(code, v):
            seen.append(v)
            return 7 if len(seen) == 2 else None

        self.assertEqual(cc.foreach(*self.h, fn), 7)
        self.assertEqual(len(seen), 2)

    def test_an_exception_stops_with_minus_one(self):
        def fn(code, v):
            raise KeyError("from the callback")

        with self.assertRaisesRegex(KeyError, "from the callback"):
            cc.foreach(*self.h, fn)

    def test_clearing_and_setting_from_the_callback(self):
        seen = []
        late = make_code()

        def fn(code, v):
            seen.append(code)
            for c in self.codes:
                if not any(c is x for x in seen) and cc.get(c, *self.h) is not None:
                    cc.clear(c, *self.h)   # frees one still to come: it is skipped
                    break
            cc.set(late, *self.h, -1)      # not in the snapshot: never visited
            cc.set(code, *self.h, v + 1)   # replacing the current value is fine

        self.assertEqual(cc.foreach(*self.h, fn), 0)
        self.assertEqual(len(seen), 3)
        self.assertFalse(any(c is late for c in seen))
        self.assertEqual(cc.live(*self.h), 4)   # 3 visited (replaced) + late

    def test_release_from_the_callback_stops_with_released_error(self):
        calls = []

        def fn(code, v):
            calls.append(v)
            cc.release(*self.h)

        freed = cc.freed()
        with self.assertRaisesRegex(coextra.ReleasedError, r"index %d, generation %d" % self.h):
            cc.foreach(*self.h, fn)
        self.assertEqual(len(calls), 1)
        self.assertEqual(cc.freed() - freed, 5)

    def test_bad_input(self):
        with self.assertRaises(ValueError):
            cc.foreach(*self.h, None)            # NULL callback
        with self.assertRaises(ValueError):
            cc.foreach(0, 0, lambda c, v: None)  # the zero handle
        stale = self.h
        cc.release(*stale)
        with self.assertRaises(coextra.ReleasedError):
            cc.foreach(*stale, lambda c, v: None)

    def test_values_of_a_dying_code_object_are_not_visited(self):
        # A free function that runs while a code object is deallocated walks the slot: the dying
        # code object (refcount 0) must not be handed out.
        s = coextra.Slot(uname("py"))
        self.addCleanup(lambda: s.released or s.release())
        seen = []

        class Walker:
            def __del__(self_):
                cc.foreach(*self.h, lambda code, v: seen.append(code.co_name))

        code = make_code()
        name = code.co_name
        cc.set(code, *self.h, 99)
        s[code] = Walker()
        del code
        gc.collect()
        self.assertTrue(seen)
        self.assertNotIn(name, seen)


if __name__ == "__main__":
    unittest.main()
