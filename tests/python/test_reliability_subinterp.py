"""test_reliability_subinterp.py: each subinterpreter has its own runtime, slots and hooks; handles do not cross; destroying one with live state is clean."""

import gc
import itertools
import json
import os
import sys
import tempfile
import textwrap
import unittest

import coextra
import coextra_test_native as native
import coextra_test_reliability as rel

from coextra_testutil import unique_name

PREFIX = "test_reliability_subinterp."
_counter = itertools.count()

if sys.version_info >= (3, 13):
    import _interpreters as _interp

    def create(isolated):
        return _interp.create("isolated" if isolated else "legacy")

    def _exec(i, src):
        err = _interp.exec(i, src)
        if err is not None:
            raise RuntimeError("in the subinterpreter: %s" % (getattr(err, "errdisplay", None) or err,))

    REASON = None
elif sys.version_info >= (3, 11):
    import _xxsubinterpreters as _interp

    def create(isolated):
        return _interp.create(isolated=isolated)

    def _exec(i, src):
        try:
            _interp.run_string(i, src)
        except _interp.RunFailedError as e:
            raise RuntimeError("in the subinterpreter: %s" % (e,)) from None

    REASON = None if sys.version_info >= (3, 12) else (
        "subinterpreters with their own module state are tested on 3.12 (_xxsubinterpreters) and 3.13+ "
        "(_interpreters); 3.11 runs only TestSharedCode")
else:
    _interp = None
    REASON = "no _xxsubinterpreters before 3.11"


def uname(tag):
    return unique_name("test_reliability_subinterp", tag)


def make_function():
    n = next(_counter)
    ns = {}
    exec("def sub_main_%d(x):\n    return x + %d\n" % (n, n), ns)
    return ns["sub_main_%d" % n]


class Sub:
    """A subinterpreter; run() executes a script in it and returns the dict OUT it filled."""

    def __init__(self, isolated):
        self.id = create(isolated)
        self.alive = True

    def run(self, body, **values):
        fd, path = tempfile.mkstemp(prefix="coextra-subinterp-", suffix=".json")
        os.close(fd)
        try:
            src = "import sys, json\nsys.path[:0] = %r\nOUT = {}\n" % (sys.path,)
            for k, v in values.items():
                src += "%s = %r\n" % (k, v)
            src += textwrap.dedent(body)
            src += "\nwith open(%r, 'w') as _f:\n    json.dump(OUT, _f)\n" % (path,)
            _exec(self.id, src)
            with open(path) as f:
                return json.load(f)
        finally:
            os.unlink(path)

    def destroy(self):
        if self.alive:
            self.alive = False
            _interp.destroy(self.id)


def main_state():
    return ([s for s in coextra.slots()], [h for h in coextra.hooks()], coextra.status()[:4],
            native.eval_frame_func())


class SubTestCase(unittest.TestCase):
    """Destroys the subinterpreters a test made."""

    def setUp(self):
        self.subs = []
        rel.reset_freed()

    def tearDown(self):
        for s in self.subs:
            s.destroy()

    def sub(self, isolated):
        s = Sub(isolated)
        self.subs.append(s)
        return s


@unittest.skipIf(REASON is not None, REASON)
class TestSubinterpreters(SubTestCase):

    def main_fixture(self):
        """Main-interpreter state that no subinterpreter may disturb."""
        f = make_function()
        s = coextra.Slot(uname("main"))
        self.addCleanup(s.release)
        s[f.__code__] = "main-value"
        enter = rel.Counter()
        h = coextra.add_hook(uname("main-hook"), on_enter=enter)
        self.addCleanup(h.remove)
        return f, s, h, enter

    def assertMainIntact(self, before, f, s, enter):
        self.assertEqual(main_state(), before)
        self.assertEqual(s[f.__code__], "main-value")
        n = enter.value
        self.assertEqual(f(1), f(1))
        self.assertGreaterEqual(enter.value, n + 2)  # the main interpreter's hook still runs

    def test_isolated_interpreter_has_its_own_runtime(self):
        f, s, h, enter = self.main_fixture()
        before = main_state()
        sub = self.sub(isolated=True)
        out = sub.run('''
            import coextra
            OUT["slots_before"] = [i.name for i in coextra.slots()]
            OUT["hooks_before"] = [i.name for i in coextra.hooks()]
            OUT["status_before"] = list(coextra.status())
            s = coextra.Slot(SLOT)  # the main interpreter's name: another registry
            freed = []
            s2 = coextra.Slot(SLOT + ".2", on_free=freed.append)
            def f(x):
                return x + 1
            s[f.__code__] = "sub-value"
            s2[f.__code__] = "sub-value-2"
            calls = []
            h = coextra.add_hook(HOOK, on_enter=calls.append)
            f(1)
            OUT["hook_saw_f"] = sum(1 for c in calls if c is f.__code__)
            OUT["status_during"] = list(coextra.status())
            OUT["slots"] = sorted((i.name, i.live) for i in coextra.slots())
            h.remove()
            del calls[:]
            s2.release()
            OUT["freed"] = freed
            OUT["value"] = s[f.__code__]
        ''', SLOT=s.name, HOOK=h.name)
        self.assertEqual(out["slots_before"], [])
        self.assertEqual(out["hooks_before"], [])
        self.assertEqual(out["status_before"][:4], [False, False, False, 0])
        self.assertEqual(out["hook_saw_f"], 1)
        self.assertEqual(out["status_during"][:4], [True, False, False, 1])
        self.assertEqual(out["slots"], [[s.name, 1], [s.name + ".2", 1]])  # JSON: lists
        self.assertEqual(out["freed"], ["sub-value-2"])
        self.assertEqual(out["value"], "sub-value")
        self.assertMainIntact(before, f, s, enter)
        # destroy it with a live slot holding values and an active hook
        sub.run('''
            h2 = coextra.add_hook(HOOK + ".left", on_enter=id)
            s3 = coextra.Slot(SLOT + ".3", on_free=id)
            s3[f.__code__] = "left"
            f(2)
        ''', SLOT=s.name, HOOK=h.name)
        self.assertMainIntact(before, f, s, enter)
        sub.destroy()
        gc.collect()
        self.assertMainIntact(before, f, s, enter)

    def test_destroy_with_native_slots_and_hooks_frees_everything(self):
        f, s, h, enter = self.main_fixture()
        before = main_state()
        sub = self.sub(isolated=False)  # the test consumers declare no per-interpreter GIL support
        out = sub.run('''
            import coextra, coextra_test_reliability as rel
            def g(x):
                return x * 2
            def k():
                pass
            rel.reserve(K, NAME)
            rel.set(g.__code__, K, 101)
            rel.set(k.__code__, K, 102)
            rel.hook_add(J, NAME, 300)
            rel.hook_add(J + 1, NAME + ".only", 400, K)
            py = coextra.Slot(NAME + ".py", on_free=id)
            py[g.__code__] = "x"
            hk = coextra.add_hook(NAME + ".py", on_enter=id, on_exit=id)
            g(1)
            k()
            OUT["counts"] = [rel.hook_counts(J), rel.hook_counts(J + 1)]
            OUT["names"] = sorted(i.name for i in coextra.hooks())
        ''', K=200, J=200, NAME=uname("native"))
        self.assertGreaterEqual(out["counts"][0][0], 2)
        self.assertGreaterEqual(out["counts"][1][0], 1)  # `only`: g holds a value, k too
        self.assertEqual(len(out["names"]), 3)
        self.assertEqual(rel.freed(101), 0)
        self.assertMainIntact(before, f, s, enter)
        sub.destroy()
        gc.collect()
        # the sub's code objects died with it and ran the free functions; hooks balanced
        self.assertEqual((rel.freed(101), rel.freed(102)), (1, 1))
        self.assertEqual(rel.counters()["bad_ctx"], 0)
        for j in (200, 201):
            enter_, exit_ = rel.hook_counts(j)
            self.assertEqual(enter_, exit_)
        self.assertMainIntact(before, f, s, enter)
        # the dead interpreter's handles mean nothing here
        with self.assertRaises(coextra.ReleasedError):
            rel.set(f.__code__, 200, 103)
        with self.assertRaises(coextra.ReleasedError):
            rel.hook_remove(200)
        self.assertIsNone(rel.get(f.__code__, 200))

    def test_handles_do_not_cross_interpreters(self):
        f, s, h, enter = self.main_fixture()
        code = f.__code__
        rel.reserve(210, uname("main-native"))
        self.addCleanup(rel.release, 210)
        rel.set(code, 210, 110)
        rel.hook_add(210, uname("main-native-hook"), 500, 210)
        self.addCleanup(rel.hook_remove, 210)
        before = main_state()
        sub = self.sub(isolated=False)
        out = sub.run('''
            import coextra, coextra_test_reliability as rel
            def g():
                return 1
            res = {}
            for what, call in [
                ("set", lambda: rel.set(g.__code__, 210, 111)),
                ("clear", lambda: rel.clear(g.__code__, 210)),
                ("release", lambda: rel.release(210)),
                ("live", lambda: rel.live(210)),
                ("hook_remove", lambda: rel.hook_remove(210)),
                ("hook_set_active", lambda: rel.hook_set_active(210, 0)),
                ("hook_get_active", lambda: rel.hook_get_active(210)),
                ("hook_add only", lambda: rel.hook_add(211, "sub-hook", 500, 210)),
            ]:
                try:
                    call()
                    res[what] = "accepted"
                except coextra.ReleasedError as e:
                    res[what] = "ReleasedError"
                except Exception as e:
                    res[what] = repr(e)
            OUT["results"] = res
            OUT["get"] = rel.get(g.__code__, 210)
            OUT["get_table"] = rel.get_table(g.__code__, 210)
            # this interpreter's own handle, kept for the main interpreter to try
            rel.reserve(212, "sub-native")
            rel.set(g.__code__, 212, 112)
            rel.hook_add(212, "sub-native-hook", 500)
            OUT["mine"] = rel.get(g.__code__, 212)
        ''')
        self.assertEqual(out["results"], {k: "ReleasedError" for k in out["results"]})
        self.assertEqual(len(out["results"]), 8)
        self.assertIsNone(out["get"])
        self.assertIsNone(out["get_table"])
        self.assertEqual(out["mine"], 112)
        # the main interpreter's native slot and hook are untouched
        self.assertEqual(rel.get(code, 210), 110)
        self.assertEqual(rel.live(210), 1)
        self.assertIs(rel.hook_get_active(210), True)
        self.assertMainIntact(before, f, s, enter)
        # and the sub's live handles are refused here
        with self.assertRaises(coextra.ReleasedError):
            rel.set(code, 212, 113)
        with self.assertRaises(coextra.ReleasedError):
            rel.hook_set_active(212, 0)
        self.assertIsNone(rel.get(code, 212))
        out = sub.run('''
            import coextra_test_reliability as rel
            OUT["still"] = rel.get(g.__code__, 212)
            OUT["active"] = rel.hook_get_active(212)
        ''')
        self.assertEqual(out, {"still": 112, "active": True})
        sub.destroy()
        gc.collect()
        self.assertEqual(rel.freed(112), 1)
        self.assertEqual(rel.freed(110), 0)
        self.assertMainIntact(before, f, s, enter)

    def test_consumer_imported_first_gets_a_runtime(self):
        # A consumer imported into an interpreter that never imported coextra:
        # its coextra_import() (run again by the module's exec there) must
        # import coextra in that interpreter, whose runtime it then uses.
        sub = self.sub(isolated=False)
        out = sub.run('''
            import coextra_test_reliability as rel
            def g():
                pass
            rel.reserve(220, "first")
            rel.set(g.__code__, 220, 120)
            OUT["value"] = rel.get(g.__code__, 220)
            OUT["runtime"] = "coextra._coextra" in sys.modules
        ''')
        self.assertEqual(out, {"value": 120, "runtime": True})
        sub.destroy()
        gc.collect()
        self.assertEqual(rel.freed(120), 1)

    def test_many_interpreters_come_and_go(self):
        f, s, h, enter = self.main_fixture()
        before = main_state()
        for i in range(12):
            sub = self.sub(isolated=bool(i % 2))
            sub.run('''
                import coextra
                s = coextra.Slot("churn")
                def g(x):
                    return x
                s[g.__code__] = [1, 2, 3]
                h = coextra.add_hook("churn", on_enter=id)
                g(1)
                OUT["n"] = len(coextra.slots())
            ''')
            sub.destroy()
        gc.collect()
        self.assertMainIntact(before, f, s, enter)


# 3.12 still deep-freezes, but gives every interpreter but the main one a copy of each code
# object, and 3.13 dropped deep-freezing: no code object is shared between interpreters there.
@unittest.skipUnless(sys.version_info[:2] == (3, 11), "only 3.11 shares (deep-frozen) code objects between "
                     "interpreters")
class TestSharedCode(SubTestCase):
    def test_code_shared_between_interpreters_is_refused(self):
        # 3.11 deep-freezes the frozen stdlib modules (Tools/scripts/deepfreeze.py): their code
        # objects are static, one object for every interpreter.  Both runtimes use the same index
        # of its one co_extra array, so the second interpreter to store finds the first's block and
        # is refused (slots.cpp, refuse_shared_code) rather than taking it over.
        import posixpath
        code = posixpath.join.__code__
        s = coextra.Slot(uname("shared"))
        self.addCleanup(s.release)
        s[code] = "main-value"
        self.addCleanup(s.__delitem__, code)
        sub = self.sub(isolated=False)
        out = sub.run('''
            import coextra, posixpath
            code = posixpath.join.__code__
            OUT["id"] = id(code)
            s = coextra.Slot("sub.shared")
            try:
                s[code] = "sub-value"
                OUT["set"] = "accepted"
            except RuntimeError as e:
                OUT["set"] = str(e)
            OUT["get"] = s.get(code)
            OUT["index"] = coextra.status().co_extra_index
            s.release()
        ''')
        self.assertEqual(out["id"], id(code), "expected posixpath.join's code to be deep-frozen (shared)")
        self.assertEqual(out["index"], coextra.status().co_extra_index)
        self.assertIn("is shared with another interpreter", out["set"])
        self.assertIsNone(out["get"])
        self.assertEqual(s[code], "main-value")  # the main interpreter's value is untouched



# Interpreters that are only created and destroyed (nothing runs in them):
# the private modules exist on every version tested.
try:
    import _interpreters as _bare
except ImportError:
    import _xxsubinterpreters as _bare


class TestSlotGetWithOtherInterpreters(unittest.TestCase):
    """coextra_slot_get reads co_extra without a call only while the main
    interpreter is alone; any other interpreter, even an idle one, sends it
    through the table, which checks the caller's interpreter."""

    def test_fast_path_only_while_alone(self):
        f = make_function()
        code = f.__code__
        rel.reserve(230, uname("sole"))
        self.addCleanup(rel.release, 230)
        rel.set(code, 230, 130)
        self.assertTrue(rel.fast_sole())
        self.assertEqual(rel.get(code, 230), 130)
        ids = [_bare.create() for _ in range(2)]
        try:
            self.assertFalse(rel.fast_sole())
            # same answers through the table path
            self.assertEqual(rel.get(code, 230), 130)
            self.assertIsNone(rel.get(make_function().__code__, 230))
            self.assertIsNone(rel.get(None, 230))
            _bare.destroy(ids.pop())
            self.assertFalse(rel.fast_sole())  # one left
        finally:
            for i in ids:
                _bare.destroy(i)
        self.assertTrue(rel.fast_sole())
        self.assertEqual(rel.get(code, 230), 130)
        rel.clear(code, 230)
        self.assertIsNone(rel.get(code, 230))


if __name__ == "__main__":
    unittest.main()
