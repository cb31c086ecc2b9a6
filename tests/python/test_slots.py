"""test_slots.py: coextra.Slot against CPython's own co_extra semantics (set frees, code death frees, threads, refcounts)."""

import gc
import itertools
import sys
import threading
import types
import unittest
import weakref

import coextra

from coextra_testutil import UnraisableCatcher, assert_name_taken, finish_at_cleanup, kill, make_code, unique_name

_counter = itertools.count()



def uname(tag="slot"):
    """A slot name no other test uses."""
    return unique_name("test_slots", tag)


def make_function():
    """(function, code) where the function is built with types.FunctionType from a fresh code object."""
    code = make_code("fn")
    return types.FunctionType(code, {"__builtins__": __builtins__}), code


class Value:
    """A value whose identity and reference count the tests can follow."""

    def __init__(self, tag):
        self.tag = tag

    def __repr__(self):
        return "Value(%r)" % (self.tag,)


class SlotTestCase(unittest.TestCase):
    def new_slot(self, name=None, on_free=None):
        return self.release_at_cleanup(coextra.Slot(name or uname(self._testMethodName), on_free=on_free))

    def release_at_cleanup(self, s):
        return finish_at_cleanup(self, s, "released", "release")

    def slot_holding_one(self):
        """(slot, freed, code, v): a slot that appends what it frees to freed,
        holding v = Value("v") for a fresh code (the only reference: the caller's)."""
        freed = []
        s = self.new_slot(on_free=freed.append)
        code = make_code()
        v = Value("v")
        s[code] = v
        return s, freed, code, v


class TestBasics(SlotTestCase):
    def test_released_error_is_runtime_error(self):
        self.assertTrue(issubclass(coextra.ReleasedError, RuntimeError))
        self.assertEqual(coextra._coextra.NAME_MAX, 200)

    def test_round_trip(self):
        s = self.new_slot()
        code = make_code()
        v = Value("v")
        self.assertNotIn(code, s)
        s[code] = v
        self.assertIs(s[code], v)
        self.assertIn(code, s)
        self.assertIs(s.get(code), v)
        self.assertIs(s.get(code, 7), v)

    def test_getitem_missing_is_keyerror(self):
        s = self.new_slot()
        code = make_code()
        with self.assertRaises(KeyError) as cm:
            s[code]
        self.assertIs(cm.exception.args[0], code)

    def test_get_default(self):
        s = self.new_slot()
        code = make_code()
        self.assertIsNone(s.get(code))
        sentinel = object()
        self.assertIs(s.get(code, sentinel), sentinel)
        s[code] = 0  # a falsy value is still a value
        self.assertEqual(s.get(code, sentinel), 0)
        self.assertIn(code, s)
        with self.assertRaises(TypeError):
            s.get()
        with self.assertRaises(TypeError):
            s.get(code, 1, 2)

    def test_del(self):
        s, freed, code, v = self.slot_holding_one()
        del s[code]
        self.assertEqual(freed, [v])
        self.assertNotIn(code, s)
        with self.assertRaises(KeyError):
            s[code]
        with self.assertRaises(KeyError):
            del s[code]
        self.assertEqual(freed, [v])  # a failed del frees nothing

    def test_del_never_set(self):
        s = self.new_slot()
        with self.assertRaises(KeyError):
            del s[make_code()]

    def test_set_replaces_and_frees_old(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        code = make_code()
        a, b, c = Value("a"), Value("b"), Value("c")
        s[code] = a
        self.assertEqual(freed, [])
        s[code] = b
        self.assertEqual(freed, [a])
        self.assertIs(s[code], b)
        s[code] = c
        self.assertEqual(freed, [a, b])
        self.assertIs(s[code], c)
        self.assertEqual(len(s), 1)

    def test_set_same_object_again(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        code = make_code()
        v = Value("v")
        base = sys.getrefcount(v)
        s[code] = v
        s[code] = v
        s[code] = v
        self.assertIs(s[code], v)
        self.assertEqual(len(s), 1)
        del s[code]
        self.assertEqual(freed.count(v), len(freed))
        freed.clear()
        self.assertEqual(sys.getrefcount(v), base)

    def test_values_are_per_code_object(self):
        s = self.new_slot()
        c1, c2 = make_code(), make_code()
        s[c1] = "one"
        s[c2] = "two"
        self.assertEqual((s[c1], s[c2]), ("one", "two"))
        del s[c1]
        self.assertNotIn(c1, s)
        self.assertEqual(s[c2], "two")

    def test_attributes(self):
        name = uname("attrs")
        s = self.new_slot(name)
        self.assertEqual(s.name, name)
        self.assertIsInstance(s.index, int)
        self.assertGreaterEqual(s.index, 1)
        self.assertFalse(s.released)
        self.assertIn(name, repr(s))
        s.release()
        self.assertTrue(s.released)
        self.assertEqual(s.name, name)  # the name stays readable
        self.assertIn(name, repr(s))

    def test_function_code_dies(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        fn, code = make_function()
        self.assertEqual(fn(1), 1 + int(code.co_name.rsplit("_", 1)[1]))
        v = Value("fn")
        s[fn.__code__] = v
        wr = weakref.ref(code)
        del fn, code
        kill(wr)
        self.assertEqual(freed, [v])
        self.assertEqual(len(s), 0)

    def test_on_free_optional(self):
        s = self.new_slot()
        code = make_code()
        v = Value("v")
        base = sys.getrefcount(v)
        s[code] = v
        s[code] = Value("w")
        self.assertEqual(sys.getrefcount(v), base)

    def test_on_free_must_be_callable(self):
        with self.assertRaises(TypeError):
            coextra.Slot(uname(), on_free=42)
        with self.assertRaises(TypeError):
            coextra.Slot(uname(), print)  # keyword-only

    def test_slot_is_weakrefable(self):
        s = self.new_slot()
        wr = weakref.ref(s)
        self.assertIs(wr(), s)


class TestCodeDeath(SlotTestCase):
    def test_on_free_when_code_dies(self):
        s, freed, code, v = self.slot_holding_one()
        wr = weakref.ref(code)
        del code
        kill(wr)
        self.assertEqual(freed, [v])
        self.assertEqual(len(s), 0)

    def test_only_nonempty_slots_freed_once(self):
        freed_a, freed_b, freed_c = [], [], []
        a = self.new_slot(on_free=freed_a.append)
        b = self.new_slot(on_free=freed_b.append)
        c = self.new_slot(on_free=freed_c.append)
        code = make_code()
        a[code] = "A"
        c[code] = "C"
        s_other = make_code()
        b[s_other] = "B-other"
        wr = weakref.ref(code)
        del code
        kill(wr)
        self.assertEqual(freed_a, ["A"])
        self.assertEqual(freed_b, [])
        self.assertEqual(freed_c, ["C"])
        self.assertEqual(b[s_other], "B-other")

    def test_cleared_value_not_freed_again_at_death(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        code = make_code()
        s[code] = "x"
        del s[code]
        wr = weakref.ref(code)
        del code
        kill(wr)
        self.assertEqual(freed, ["x"])

    def test_many_code_objects_die(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        codes = [make_code() for _ in range(200)]
        for i, c in enumerate(codes):
            s[c] = i
        self.assertEqual(len(s), 200)
        wrs = [weakref.ref(c) for c in codes]
        del codes, c
        gc.collect()
        self.assertTrue(all(w() is None for w in wrs))
        self.assertEqual(sorted(freed), list(range(200)))
        self.assertEqual(len(s), 0)

    def test_free_runs_before_weakref_callbacks(self):
        # CPython's code_dealloc runs co_extra free functions before it
        # clears weak references (Objects/codeobject.c code_dealloc): on_free comes first.
        log = []
        s = self.new_slot(on_free=lambda v: log.append("free"))
        code = make_code()
        s[code] = 1
        wr = weakref.ref(code, lambda r: log.append("weakref"))
        del code
        kill(wr)
        self.assertEqual(log, ["free", "weakref"])

    def test_code_dies_on_another_thread(self):
        calls = []
        s = self.new_slot(on_free=lambda v: calls.append((v, threading.get_ident())))
        holder = [make_code()]
        v = Value("threaded")
        s[holder[0]] = v
        wr = weakref.ref(holder[0])
        worker_ident = []

        def worker():
            worker_ident.append(threading.get_ident())
            del holder[0]  # the last reference dies here, on this thread

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        self.assertIsNone(wr())
        self.assertEqual(len(calls), 1)
        self.assertIs(calls[0][0], v)
        self.assertEqual(calls[0][1], worker_ident[0])
        self.assertNotEqual(calls[0][1], threading.get_ident())
        gc.collect()
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(s), 0)

    def test_many_threads_set_and_kill(self):
        freed = []
        lock = threading.Lock()

        def on_free(v):
            with lock:
                freed.append(v)

        s = self.new_slot(on_free=on_free)
        errors = []

        def worker(k):
            try:
                for i in range(50):
                    c = make_code()
                    s[c] = (k, i)
                    assert s[c] == (k, i)
                    del c
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gc.collect()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(freed), sorted((k, i) for k in range(4) for i in range(50)))
        self.assertEqual(len(s), 0)


class TestBadInput(SlotTestCase):
    def test_bad_keys(self):
        s = self.new_slot()
        fn, code = make_function()
        bad = [fn, None, 0, 1, "code", b"code", code.co_code, (code,), [code], types.ModuleType("m"), object()]
        for key in bad:
            with self.subTest(key=type(key).__name__):
                with self.assertRaises(TypeError):
                    s[key] = 1
                with self.assertRaises(TypeError):
                    s[key]
                with self.assertRaises(TypeError):
                    del s[key]
                with self.assertRaises(TypeError):
                    key in s
                with self.assertRaises(TypeError):
                    s.get(key)
                with self.assertRaises(TypeError):
                    s.get(key, 5)
        self.assertEqual(len(s), 0)

    def test_bad_key_does_not_consume_value(self):
        s = self.new_slot()
        v = Value("v")
        base = sys.getrefcount(v)
        with self.assertRaises(TypeError):
            s[None] = v
        self.assertEqual(sys.getrefcount(v), base)

    def test_duplicate_names(self):
        name = uname("dup")
        s = self.new_slot(name)
        assert_name_taken(self, name, coextra.Slot, lambda n: coextra.Slot(n, on_free=print))
        self.assertFalse(s.released)
        self.assertEqual([i.name for i in coextra.slots()].count(name), 1)

    def test_bad_names(self):
        for name in ["", "a\0b", "\0", "x" * (coextra._coextra.NAME_MAX + 1), "\u20ac" * 67]:
            with self.subTest(name=name[:10], length=len(name)):
                with self.assertRaises(ValueError):
                    coextra.Slot(name)
        for name in [None, 1, b"bytes"]:
            with self.subTest(name=name):
                with self.assertRaises(TypeError):
                    coextra.Slot(name)
        with self.assertRaises(TypeError):
            coextra.Slot()

    def test_name_limit_is_in_bytes(self):
        n = coextra._coextra.NAME_MAX
        ok_ascii = "y" * (n - 12) + ".%011d" % next(_counter)
        self.assertEqual(len(ok_ascii.encode()), n)
        s = self.new_slot(ok_ascii)
        self.assertEqual(s.name, ok_ascii)
        ok_multi = "\u20ac" * 60 + "%020d" % next(_counter)  # 180 + 20 = 200 bytes
        self.assertEqual(len(ok_multi.encode()), n)
        s2 = self.new_slot(ok_multi)
        self.assertEqual(s2.name, ok_multi)
        self.assertIn(ok_multi, [i.name for i in coextra.slots()])

    def test_unencodable_name(self):
        with self.assertRaises((ValueError, UnicodeError)):
            coextra.Slot("bad\udc80surrogate")

    def test_failed_construction_leaves_nothing(self):
        before = coextra.slots()
        for name in ["", "a\0b", "x" * 500]:
            with self.assertRaises(ValueError):
                coextra.Slot(name, on_free=print)
        self.assertEqual(coextra.slots(), before)


class TestManySlots(SlotTestCase):
    def test_300_slots_on_the_same_code_objects(self):
        n = 300
        freed = []
        slots = [self.new_slot(uname("many"), on_free=freed.append) for _ in range(n)]
        self.assertEqual(len({s.index for s in slots}), n)
        codes = [make_code() for _ in range(4)]
        for i, s in enumerate(slots):
            for j, c in enumerate(codes):
                s[c] = (i, j)
        for i, s in enumerate(slots):
            for j, c in enumerate(codes):
                self.assertEqual(s[c], (i, j))
            self.assertEqual(len(s), len(codes))
        # Replacing in one slot leaves the 299 others alone.
        slots[150][codes[0]] = "new"
        self.assertEqual(freed, [(150, 0)])
        self.assertEqual(slots[149][codes[0]], (149, 0))
        self.assertEqual(slots[151][codes[0]], (151, 0))
        # Releasing every other slot drops only their values.
        for s in slots[::2]:
            s.release()
        self.assertEqual(len(freed), 1 + (n // 2) * len(codes))
        for i, s in enumerate(slots[1::2]):
            i = 2 * i + 1
            for j, c in enumerate(codes):
                self.assertEqual(s[c], "new" if (i, j) == (150, 0) else (i, j))
        # Code death frees the rest, each once.
        wrs = [weakref.ref(c) for c in codes]
        del codes, c
        gc.collect()
        self.assertTrue(all(w() is None for w in wrs))
        self.assertEqual(len(freed), 1 + n * 4)
        self.assertEqual(sorted(map(repr, freed)),
                         sorted(map(repr, [(i, j) for i in range(n) for j in range(4)] + ["new"])))
        for s in slots[1::2]:
            self.assertEqual(len(s), 0)

    def test_slots_beyond_cpython_limit_all_work(self):
        # More slots than CPython has co_extra indices (254), one index used.
        first = make_code()
        s0 = self.new_slot()
        s0[first] = 0
        index = coextra.status().co_extra_index
        slots = [self.new_slot(uname("beyond")) for _ in range(260)]
        code = make_code()
        for i, s in enumerate(slots):
            s[code] = i
        self.assertEqual([s[code] for s in slots], list(range(260)))
        self.assertEqual(coextra.status().co_extra_index, index)


class TestRelease(SlotTestCase):
    def test_release_frees_every_value(self):
        freed = []
        s = self.new_slot(on_free=freed.append)
        codes = [make_code() for _ in range(10)]
        vals = [Value(i) for i in range(10)]
        for c, v in zip(codes, vals):
            s[c] = v
        s.release()
        self.assertEqual(sorted(freed, key=lambda v: v.tag), vals)
        # The code objects dying later frees nothing more.
        del codes, c
        gc.collect()
        self.assertEqual(len(freed), 10)

    def test_release_and_reuse_name_and_index(self):
        name = uname("reuse")
        freed = []
        s1 = self.new_slot(name, on_free=freed.append)
        code = make_code()
        s1[code] = "old"
        idx = s1.index
        s1.release()
        self.assertEqual(freed, ["old"])
        self.assertNotIn(name, [i.name for i in coextra.slots()])
        used = {i.index for i in coextra.slots()}
        expected = min(set(range(1, idx + 1)) - used)  # the lowest free index
        s2 = self.new_slot(name)
        self.assertEqual(s2.name, name)
        self.assertEqual(s2.index, expected)
        self.assertNotIn(code, s2)  # the new slot never sees the old value
        s2[code] = "new"
        self.assertEqual(s2[code], "new")
        with self.assertRaises(coextra.ReleasedError):
            s1[code]
        self.assertEqual(freed, ["old"])

    def test_reuse_exact_index(self):
        s1 = self.new_slot()
        idx = s1.index
        s1.release()
        # Occupy every lower free index first, then the next reserve must land on idx.
        fillers = []
        while True:
            s = self.new_slot()
            if s.index == idx:
                break
            self.assertLess(s.index, idx)
            fillers.append(s)
        for f in fillers:
            f.release()

    def test_stale_handle_every_method(self):
        s = self.new_slot()
        code = make_code()
        s[code] = 1
        s.release()
        E = coextra.ReleasedError
        checks = {
            "setitem": lambda: s.__setitem__(code, 2),
            "getitem": lambda: s[code],
            "delitem": lambda: s.__delitem__(code),
            "contains": lambda: code in s,
            "get": lambda: s.get(code),
            "get default": lambda: s.get(code, 3),
            "len": lambda: len(s),
            "release": lambda: s.release(),
            "index": lambda: s.index,
            "enter": lambda: s.__enter__(),
        }
        for what, fn in checks.items():
            with self.subTest(what):
                with self.assertRaises(E):
                    fn()
                with self.assertRaises(RuntimeError):
                    fn()
        self.assertTrue(s.released)
        s.__exit__(None, None, None)  # exit after release: nothing left to do

    def test_stale_handle_after_reuse_by_another(self):
        name = uname("stale")
        s1 = self.new_slot(name)
        code = make_code()
        s1[code] = "mine"
        s1.release()
        s2 = self.new_slot(name)
        s2[code] = "theirs"
        for fn in (lambda: s1[code], lambda: s1.get(code), lambda: code in s1):
            with self.assertRaises(coextra.ReleasedError):
                fn()
        with self.assertRaises(coextra.ReleasedError):
            s1[code] = "clobber"
        self.assertEqual(s2[code], "theirs")

    def test_with_statement_releases(self):
        freed = []
        code = make_code()
        v = Value("v")
        base = sys.getrefcount(v)
        name = uname("with")
        with coextra.Slot(name, on_free=freed.append) as s:
            self.assertFalse(s.released)
            s[code] = v
            self.assertIn(name, [i.name for i in coextra.slots()])
        self.assertTrue(s.released)
        self.assertEqual(freed, [v])
        freed.clear()
        self.assertEqual(sys.getrefcount(v), base)
        self.assertNotIn(name, [i.name for i in coextra.slots()])

    def test_with_statement_releases_on_exception(self):
        freed = []
        code = make_code()
        with self.assertRaises(ZeroDivisionError):
            with coextra.Slot(uname("withexc"), on_free=freed.append) as s:
                s[code] = "v"
                1 / 0
        self.assertTrue(s.released)
        self.assertEqual(freed, ["v"])

    def test_with_after_manual_release(self):
        with coextra.Slot(uname("withrel")) as s:
            s.release()
        self.assertTrue(s.released)

    def test_dropping_the_slot_object_releases(self):
        freed = []
        name = uname("drop")
        s = coextra.Slot(name, on_free=freed.append)
        code = make_code()
        v = Value("v")
        base = sys.getrefcount(v)
        s[code] = v
        del s
        gc.collect()
        self.assertEqual(freed, [v])
        freed.clear()
        self.assertEqual(sys.getrefcount(v), base)
        self.assertNotIn(name, [i.name for i in coextra.slots()])
        self.new_slot(name)  # the name is free again

    def test_slot_in_cycle_with_its_on_free(self):
        # on_free closes over the slot: a reference cycle only the GC can
        # break.  Its on_free must still run with a working function.
        freed = []

        def make(name):
            def on_free(v):
                freed.append((s.name, v))
            s = coextra.Slot(name, on_free=on_free)
            return s

        name = uname("cycle")
        s = make(name)
        code = make_code()
        s[code] = "v"
        del s
        gc.collect()
        self.assertEqual(freed, [(name, "v")])
        self.assertNotIn(name, [i.name for i in coextra.slots()])


class TestLen(SlotTestCase):
    def test_len_tracks_live_code_objects(self):
        s = self.new_slot()
        self.assertEqual(len(s), 0)
        c1, c2, c3 = make_code(), make_code(), make_code()
        s[c1] = 1
        self.assertEqual(len(s), 1)
        s[c2] = 2
        s[c3] = 3
        self.assertEqual(len(s), 3)
        s[c1] = 10  # replace: still one code object
        self.assertEqual(len(s), 3)
        del s[c2]
        self.assertEqual(len(s), 2)
        wr = weakref.ref(c3)
        del c3
        kill(wr)
        self.assertEqual(len(s), 1)
        info = [i for i in coextra.slots() if i.name == s.name][0]
        self.assertEqual(info.live, 1)
        s.release()
        with self.assertRaises(coextra.ReleasedError):
            len(s)
        self.assertNotIn(s.name, [i.name for i in coextra.slots()])

    def test_len_independent_per_slot(self):
        a, b = self.new_slot(), self.new_slot()
        codes = [make_code() for _ in range(5)]
        for c in codes:
            a[c] = 1
        b[codes[0]] = 2
        self.assertEqual((len(a), len(b)), (5, 1))
        a.release()
        self.assertEqual(len(b), 1)


class TestSlotsInfo(SlotTestCase):
    def test_slots_contents(self):
        a = self.new_slot(uname("info.a"))
        b = self.new_slot(uname("info.b"))
        c1, c2 = make_code(), make_code()
        a[c1] = 1
        a[c2] = 2
        b[c1] = 3
        infos = coextra.slots()
        for i in infos:
            self.assertIsInstance(i, coextra.SlotInfo)
            self.assertIsInstance(i.name, str)
            self.assertIsInstance(i.index, int)
            self.assertIsInstance(i.live, int)
            self.assertIsInstance(i.native, bool)
        by_name = {i.name: i for i in infos}
        self.assertEqual(by_name[a.name], coextra.SlotInfo(a.name, a.index, 2, False))
        self.assertEqual(by_name[b.name], coextra.SlotInfo(b.name, b.index, 1, False))
        self.assertEqual(by_name[a.name]._fields, ("name", "index", "live", "native"))
        indices = [i.index for i in infos]
        self.assertEqual(indices, sorted(indices))
        self.assertEqual(len(set(indices)), len(indices))
        self.assertEqual(len(set(by_name)), len(infos))
        b.release()
        self.assertNotIn(b.name, {i.name for i in coextra.slots()})

    def test_native_slots_are_listed_as_native(self):
        try:
            import coextra_test_consumer_c as cc
        except ImportError as e:  # pragma: no cover
            self.skipTest("consumer extension not built: %s" % e)
        name = uname("native")
        index, generation = cc.reserve(name)
        try:
            info = [i for i in coextra.slots() if i.name == name]
            self.assertEqual(info, [coextra.SlotInfo(name, index, 0, True)])
            code = make_code()
            cc.set(code, index, generation, 5)
            info = [i for i in coextra.slots() if i.name == name]
            self.assertEqual(info, [coextra.SlotInfo(name, index, 1, True)])
        finally:
            cc.release(index, generation)
        self.assertNotIn(name, [i.name for i in coextra.slots()])


class TestOnFreeErrors(SlotTestCase):
    def test_raising_on_free_goes_to_unraisablehook(self):
        class Boom(Exception):
            pass

        seen = []

        def on_free(v):
            seen.append(v)
            raise Boom(v.tag)

        s = self.new_slot(on_free=on_free)
        c1, c2, c3 = make_code(), make_code(), make_code()
        a, b, c, d = Value("a"), Value("b"), Value("c"), Value("d")
        bases = [sys.getrefcount(x) for x in (a, b, c, d)]
        with UnraisableCatcher() as catcher:
            s[c1] = a
            s[c1] = b  # replace
            self.assertIs(s[c1], b)
            del s[c1]  # delete
            self.assertNotIn(c1, s)
            s[c2] = c
            wr = weakref.ref(c2)
            del c2
            kill(wr)  # code death
            s[c3] = d
            s.release()  # release
        self.assertEqual(seen, [a, b, c, d])
        self.assertEqual(len(catcher.records), 4)
        for (etype, evalue, obj), v in zip(catcher.records, (a, b, c, d)):
            self.assertIs(etype, Boom)
            self.assertEqual(evalue.args, (v.tag,))
            self.assertIs(obj, on_free)
        del seen[:], catcher, etype, evalue, obj, v
        self.assertEqual([sys.getrefcount(x) for x in (a, b, c, d)], bases)

    def test_raising_on_free_does_not_break_later_operations(self):
        s = self.new_slot(on_free=lambda v: 1 / 0)
        code = make_code()
        with UnraisableCatcher() as catcher:
            s[code] = 1
            s[code] = 2
            self.assertEqual(len(catcher.records), 1)
            self.assertIs(catcher.records[0][0], ZeroDivisionError)
            # No exception leaks into ordinary code.
            self.assertEqual(s[code], 2)
            other = self.new_slot()
            other[code] = "ok"
            self.assertEqual(other[code], "ok")
            self.assertEqual(sum(range(4)), 6)
            s.release()
            self.assertEqual(len(catcher.records), 2)
        self.assertEqual(other[code], "ok")

    def test_pending_exception_is_kept(self):
        # A code object dying while an exception propagates: on_free runs
        # with the exception saved and gives it back untouched.
        calls = []
        s = self.new_slot(on_free=lambda v: calls.append(sys.exc_info()[0]))
        holder = [make_code()]
        s[holder[0]] = 1

        def raiser():
            local = holder.pop()  # noqa: F841  (dies when this frame unwinds)
            raise KeyError("original")

        with self.assertRaises(KeyError) as cm:
            raiser()
        self.assertEqual(cm.exception.args, ("original",))
        self.assertEqual(len(calls), 1)


class TestReentrancy(SlotTestCase):
    def test_on_free_sets_values_on_other_code_objects(self):
        other = self.new_slot()
        targets = [make_code() for _ in range(3)]
        log = []

        def on_free(v):
            log.append(v)
            if isinstance(v, str):  # the tuples it stores below free quietly
                for t in targets:
                    other[t] = v
                    s[t] = ("from on_free", v)

        s = self.new_slot(on_free=on_free)
        code = make_code()
        s[code] = "a"
        s[code] = "b"  # replace -> on_free("a")
        self.assertEqual([other[t] for t in targets], ["a"] * 3)
        self.assertEqual([s[t] for t in targets], [("from on_free", "a")] * 3)
        wr = weakref.ref(code)
        del code
        kill(wr)  # death -> on_free("b"), which replaces each target's value (-> on_free of those)
        self.assertEqual([other[t] for t in targets], ["b"] * 3)
        self.assertEqual([s[t] for t in targets], [("from on_free", "b")] * 3)
        self.assertEqual(log, ["a", "b"] + [("from on_free", "a")] * 3)
        self.assertEqual(len(other), 3)
        self.assertEqual(len(s), 3)

    def test_on_free_replaces_value_on_same_code(self):
        freed = []

        def on_free(v):
            freed.append(v)
            if v == "a":
                s[code] = "c"

        s = self.new_slot(on_free=on_free)
        code = make_code()
        s[code] = "a"
        s[code] = "b"  # frees "a", whose on_free stores "c", which frees "b"
        self.assertEqual(freed, ["a", "b"])
        self.assertEqual(s[code], "c")
        self.assertEqual(len(s), 1)

    def test_on_free_releases_another_slot_during_death(self):
        freed_a, freed_b = [], []
        a = self.new_slot(on_free=lambda v: (freed_a.append(v), b.release()))
        b = self.new_slot(on_free=freed_b.append)
        self.assertLess(a.index, b.index)  # a's value is freed first
        code = make_code()
        va, vb = Value("a"), Value("b")
        base_b = sys.getrefcount(vb)
        a[code] = va
        b[code] = vb
        wr = weakref.ref(code)
        del code
        kill(wr)
        self.assertEqual(freed_a, [va])
        self.assertTrue(b.released)
        # b's release happened while code was dying: it still owns vb and must free it, once.
        self.assertEqual(freed_b, [vb])
        freed_b.clear()
        self.assertEqual(sys.getrefcount(vb), base_b)

    def test_on_free_releases_and_reuses_index_during_death(self):
        freed_a, freed_b, freed_c = [], [], []
        box = {}

        def on_free_a(v):
            freed_a.append(v)
            b_index = b.index
            b.release()
            # Reserve until a new slot lands on b's old index (lowest free first).
            fillers = []
            while True:
                c = coextra.Slot(uname("reuse-in-free"), on_free=freed_c.append)
                if c.index == b_index:
                    break
                fillers.append(c)
            for f in fillers:
                f.release()
            box["c"] = c

        a = self.new_slot(on_free=on_free_a)
        b = self.new_slot(on_free=freed_b.append)
        self.assertLess(a.index, b.index)
        code = make_code()
        a[code] = "A"
        b[code] = "B"
        wr = weakref.ref(code)
        del code
        kill(wr)
        c = box.pop("c")
        self.release_at_cleanup(c)
        self.assertEqual(freed_a, ["A"])
        self.assertEqual(freed_b, ["B"])
        self.assertEqual(freed_c, [])  # the new slot never receives b's value
        self.assertEqual(len(c), 0)
        info = {i.name: i for i in coextra.slots()}[c.name]
        self.assertEqual(info.live, 0)

    def test_on_free_releases_another_slot_during_release(self):
        freed_b = []
        a = self.new_slot(on_free=lambda v: b.released or b.release())
        b = self.new_slot(on_free=freed_b.append)
        codes = [make_code() for _ in range(3)]
        for i, c in enumerate(codes):
            a[c] = i
            b[c] = -i
        a.release()
        self.assertTrue(b.released)
        self.assertEqual(sorted(freed_b), [-2, -1, 0])

    def test_on_free_sees_a_finished_change_and_may_use_every_api(self):
        # Free functions run after the change that freed the value is
        # complete and the registry lock released: the registry already
        # shows the change, and hooks, slots and introspection all work from
        # inside them, on every path that frees (replace, delete, release,
        # code death).
        seen = []
        target = make_code("target")

        def on_free(v):
            kind, code = v
            n = coextra.add_hook(uname("from-free"), on_enter=lambda c: None)
            try:
                other = coextra.Slot(uname("from-free"))
                other[target] = kind
                state = (kind, code is None or code not in s or s[code] != v, s.released,
                         other[target], any(h.name == n.name for h in coextra.hooks()))
                other.release()
            finally:
                n.remove()
            seen.append(state)

        s = self.new_slot(on_free=on_free)
        code = make_code("replace")
        s[code] = ("replace", code)
        s[code] = ("new", code)
        del s[code]
        dying = make_code("death")
        s[dying] = ("death", None)
        del dying
        gc.collect()
        s[target] = ("release", None)
        s.release()
        self.assertEqual(seen, [("replace", True, False, "replace", True), ("new", True, False, "new", True),
                                ("death", True, False, "death", True), ("release", True, True, "release", True)])
        self.assertEqual([h for h in coextra.hooks() if h.name.startswith("from-free")], [])

    def test_on_free_releases_its_own_slot(self):
        freed = []

        def on_free(v):
            freed.append(v)
            if not s.released:
                s.release()

        s = self.new_slot(on_free=on_free)
        c1, c2 = make_code(), make_code()
        s[c1] = 1
        s[c2] = 2
        with UnraisableCatcher() as catcher:
            s[c1] = 3  # frees 1 -> releases s -> frees 3 and 2, which see s.released
        self.assertEqual(catcher.records, [])
        self.assertTrue(s.released)
        self.assertEqual(sorted(freed), [1, 2, 3])

    def test_on_free_releases_its_own_slot_and_raises(self):
        def on_free(v):
            if not s.released:
                s.release()
            raise ValueError("after release")

        s = self.new_slot(on_free=on_free)
        code = make_code()
        with UnraisableCatcher() as catcher:
            s[code] = 1
            s[code] = 2
        self.assertTrue(s.released)
        self.assertEqual(len(catcher.records), 2)
        for etype, evalue, obj in catcher.records:
            self.assertIs(etype, ValueError)
            self.assertIs(obj, on_free)

    def test_on_free_uses_a_released_slot(self):
        # During release the slot is already retired: touching it raises
        # ReleasedError inside on_free, reported as unraisable.
        code = make_code()

        def on_free(v):
            s[code] = "again"

        s = self.new_slot(on_free=on_free)
        s[code] = 1
        with UnraisableCatcher() as catcher:
            s.release()
        self.assertEqual(len(catcher.records), 1)
        self.assertIs(catcher.records[0][0], coextra.ReleasedError)

    def test_on_free_kills_other_code_objects(self):
        freed = []
        holder = {}

        def on_free(v):
            freed.append(v)
            holder.pop(v, None)  # drops the last reference to another code object

        s = self.new_slot(on_free=on_free)
        c1, c2, c3 = make_code(), make_code(), make_code()
        holder.update({"1": c2, "2": c3})
        s[c1] = "1"
        s[c2] = "2"
        s[c3] = "3"
        del c2, c3
        gc.collect()
        s[c1] = "x"  # frees "1" -> c2 dies -> frees "2" -> c3 dies -> frees "3"
        self.assertEqual(freed, ["1", "2", "3"])
        self.assertEqual(len(s), 1)


class TestRefcounts(SlotTestCase):
    def test_refcount_back_to_baseline(self):
        v = Value("rc")
        base = sys.getrefcount(v)
        s = self.new_slot()
        codes = [make_code() for _ in range(4)]
        for c in codes:
            s[c] = v
        self.assertEqual(sys.getrefcount(v), base + 4)
        x = s[codes[0]]
        self.assertEqual(sys.getrefcount(v), base + 5)
        del x
        self.assertIs(s.get(codes[0]), v)
        self.assertEqual(sys.getrefcount(v), base + 4)
        del s[codes[0]]  # clear
        self.assertEqual(sys.getrefcount(v), base + 3)
        s[codes[1]] = Value("other")  # replace
        self.assertEqual(sys.getrefcount(v), base + 2)
        wr = weakref.ref(codes[2])
        del codes[2]
        kill(wr)  # code death
        self.assertEqual(sys.getrefcount(v), base + 1)
        s.release()  # release
        self.assertEqual(sys.getrefcount(v), base)

    def test_contains_and_get_do_not_leak(self):
        v = Value("rc2")
        s = self.new_slot()
        code = make_code()
        s[code] = v
        base = sys.getrefcount(v)
        for _ in range(100):
            code in s
            s.get(code)
            s.get(code, None)
            s[code]
            s.get(make_code(), v)
        self.assertEqual(sys.getrefcount(v), base)

    def test_on_free_argument_refcount(self):
        kept = []
        s = self.new_slot(on_free=kept.append)
        v = Value("kept")
        base = sys.getrefcount(v)
        code = make_code()
        s[code] = v
        del s[code]
        self.assertEqual(sys.getrefcount(v), base + 1)  # only kept's reference
        kept.clear()
        self.assertEqual(sys.getrefcount(v), base)


class TestStatus(SlotTestCase):
    def test_co_extra_index(self):
        s = self.new_slot()
        code = make_code()
        s[code] = 1
        idx = coextra.status().co_extra_index
        self.assertIsInstance(idx, int)
        self.assertGreaterEqual(idx, 0)
        # Stays the same whatever happens to slots.
        more = [self.new_slot() for _ in range(10)]
        for m in more:
            m[make_code()] = 2
            m[code] = 3
        for m in more:
            m.release()
        s.release()
        self.assertEqual(coextra.status().co_extra_index, idx)
        again = self.new_slot()
        again[make_code()] = 4
        self.assertEqual(coextra.status().co_extra_index, idx)


if __name__ == "__main__":
    unittest.main()


@unittest.skipIf(sys.version_info < (3, 14), "concurrent.interpreters is 3.14+")
class TestStatelessCode(SlotTestCase):
    """3.14+: a code object holding any co_extra data is not 'stateless'
    (_PyCode_CheckNoInternalState: co_extra != NULL), so Interpreter.exec(func) refuses it.
    coextra keeps one block per code object once a value was stored there, so this holds
    after the value is deleted too.  Interpreter.call(func) shares a function it cannot
    pickle by name the same way, and refuses it likewise."""

    def test_exec_refuses_code_that_held_a_value(self):
        from concurrent import interpreters
        ns = {}
        exec("def f():\n    x = 5\n", ns)  # a "script": no arguments, globals or return value
        f = ns["f"]
        interp = interpreters.create()
        self.addCleanup(interp.close)
        interp.exec(f)                      # stateless: accepted
        slot = self.new_slot()
        slot[f.__code__] = 1
        with self.assertRaisesRegex(ValueError, "only basic code objects"):
            interp.exec(f)
        with self.assertRaisesRegex(interpreters.NotShareableError, "only stateless functions"):
            interp.call(f)                  # not importable by name: shared as code, refused too
        del slot[f.__code__]
        with self.assertRaisesRegex(ValueError, "only basic code objects"):
            interp.exec(f)
