"""test_reliability_badinput.py: every public entry point (Python and C) answers every kind of bad argument with the documented exception."""

import gc
import types
import unittest

import coextra
import coextra_test_consumer_c as consumer_c
import coextra_test_native as native
import coextra_test_reliability as rel

from coextra_testutil import make_code, unique_name

PREFIX = "test_reliability_badinput."
NAME_MAX = coextra._coextra.NAME_MAX
Released = coextra.ReleasedError


def uname(tag="x"):
    return unique_name("test_reliability_badinput", tag)


class Falsy:
    def __bool__(self):
        raise ZeroDivisionError("no truth")


def not_code_keys():
    def f():
        pass

    return [None, 0, 1.5, "code", b"code", f, f.__code__.co_code, (f.__code__,), [f.__code__],
            types.ModuleType("m"), object(), coextra]


BAD_NAME_TYPES = [None, 1, 1.5, b"bytes", ["x"], object()]
BAD_NAME_VALUES = ["", "\0", "a\0b", "x" * (NAME_MAX + 1), "\u20ac" * 67, "x" * 100000]
BAD_PRIORITIES = [(-1, ValueError), (coextra._coextra.PRIORITY_MAX + 1, ValueError),
                  (-2 ** 31, ValueError), (2 ** 31 - 1, ValueError), (2 ** 31, OverflowError),
                  (2 ** 64, OverflowError), (-2 ** 64, OverflowError), ("500", TypeError), (500.0, TypeError),
                  (None, TypeError)]


def state():
    """The registry as the Python face shows it (the co_extra index is taken on first use: left out)."""
    return coextra.slots(), coextra.hooks(), coextra.status()[:4]


class BadInputCase(unittest.TestCase):
    def setUp(self):
        self.before = state()

    def tearDown(self):
        gc.collect()
        # Nothing that was refused left anything behind.
        self.assertEqual(state(), self.before)

    def table(self, rows):
        """rows: (description, callable, exception type(s)); each call must raise exactly that."""
        for desc, fn, exc in rows:
            with self.subTest(desc):
                with self.assertRaises(exc) as cm:
                    fn()
                # ReleasedError is a RuntimeError; an expected RuntimeError must not be a ReleasedError by accident
                if exc is RuntimeError:
                    self.assertNotIsInstance(cm.exception, Released)
        return len(rows)


class TestPythonSlot(BadInputCase):
    def test_constructor(self):
        rows = []
        for name in BAD_NAME_TYPES:
            rows.append(("Slot(%r)" % (name,), lambda n=name: coextra.Slot(n), TypeError))
        for name in BAD_NAME_VALUES:
            rows.append(("Slot(%r...)" % name[:8], lambda n=name: coextra.Slot(n), ValueError))
        rows += [
            ("Slot(surrogate)", lambda: coextra.Slot("bad\udc80"), (ValueError, UnicodeError)),
            ("Slot()", lambda: coextra.Slot(), TypeError),
            ("Slot(name, print)", lambda: coextra.Slot(uname(), print), TypeError),
            ("Slot(name, nope=1)", lambda: coextra.Slot(uname(), nope=1), TypeError),
            ("Slot(on_free=1)", lambda: coextra.Slot(uname(), on_free=1), TypeError),
            ("Slot(on_free='f')", lambda: coextra.Slot(uname(), on_free="f"), TypeError),
            ("Slot(name=..., name=...)", lambda: coextra.Slot(uname(), name="y"), TypeError),
        ]
        s = coextra.Slot(uname("dup"))
        self.addCleanup(s.release)
        rows.append(("duplicate name", lambda: coextra.Slot(s.name), ValueError))
        self.before = state()
        self.table(rows)

    def test_keys(self):
        s = coextra.Slot(uname("keys"))
        self.addCleanup(s.release)
        self.before = state()
        rows = []
        for key in not_code_keys():
            t = type(key).__name__
            rows += [
                ("s[%s] = v" % t, lambda k=key: s.__setitem__(k, 1), TypeError),
                ("s[%s]" % t, lambda k=key: s[k], TypeError),
                ("del s[%s]" % t, lambda k=key: s.__delitem__(k), TypeError),
                ("%s in s" % t, lambda k=key: k in s, TypeError),
                ("s.get(%s)" % t, lambda k=key: s.get(k), TypeError),
                ("s.get(%s, 1)" % t, lambda k=key: s.get(k, 1), TypeError),
            ]
        code = make_code()
        rows += [
            ("s[missing]", lambda: s[code], KeyError),
            ("del s[missing]", lambda: s.__delitem__(code), KeyError),
            ("s.get()", lambda: s.get(), TypeError),
            ("s.get(code, 1, 2)", lambda: s.get(code, 1, 2), TypeError),
            ("s.name = ...", lambda: setattr(s, "name", "x"), AttributeError),
            ("s.index = ...", lambda: setattr(s, "index", 1), AttributeError),
            ("s.released = ...", lambda: setattr(s, "released", True), AttributeError),
        ]
        self.table(rows)
        self.assertEqual(len(s), 0)

    def test_released(self):
        code = make_code()
        s = coextra.Slot(uname("released"))
        s[code] = 1
        s.release()
        rows = [
            ("released: s[code] = v", lambda: s.__setitem__(code, 2), Released),
            ("released: s[code]", lambda: s[code], Released),
            ("released: del s[code]", lambda: s.__delitem__(code), Released),
            ("released: code in s", lambda: code in s, Released),
            ("released: s.get(code)", lambda: s.get(code), Released),
            ("released: len(s)", lambda: len(s), Released),
            ("released: s.index", lambda: s.index, Released),
            ("released: s.release()", lambda: s.release(), Released),
            ("released: with s", lambda: s.__enter__(), Released),
            ("released: add_hook(only=s)", lambda: coextra.add_hook(uname(), only=s), Released),
            # a released slot's key check still comes first or second: either error is documented
            ("released: s[None] = v", lambda: s.__setitem__(None, 2), (Released, TypeError)),
        ]
        self.table(rows)
        self.assertTrue(s.released)
        self.assertEqual(s.name[:len(PREFIX)], PREFIX)
        s.__exit__(None, None, None)  # exiting again is harmless


class TestPythonHook(BadInputCase):
    def test_add_hook(self):
        s = coextra.Slot(uname("only"))
        self.addCleanup(s.release)
        h = coextra.add_hook(uname("dup"))
        self.addCleanup(h.remove)
        self.before = state()
        code = make_code()
        rows = []
        for name in BAD_NAME_TYPES:
            rows.append(("add_hook(%r)" % (name,), lambda n=name: coextra.add_hook(n), TypeError))
        for name in BAD_NAME_VALUES:
            rows.append(("add_hook(%r...)" % name[:8], lambda n=name: coextra.add_hook(n), ValueError))
        for prio, exc in BAD_PRIORITIES:
            rows.append(("add_hook(priority=%r)" % (prio,), lambda p=prio: coextra.add_hook(uname(), priority=p),
                         exc))
        for what in ("on_enter", "on_exit"):
            for bad in (1, "f", object()):
                rows.append(("add_hook(%s=%r)" % (what, bad), lambda w=what, b=bad: coextra.add_hook(uname(), **{w: b}),
                             TypeError))
        for bad in (1, "slot", code, object()):
            rows.append(("add_hook(only=%s)" % type(bad).__name__, lambda b=bad: coextra.add_hook(uname(), only=b),
                         TypeError))
        rows += [
            ("add_hook()", lambda: coextra.add_hook(), TypeError),
            ("add_hook(name, print)", lambda: coextra.add_hook(uname(), print), TypeError),
            ("add_hook(nope=1)", lambda: coextra.add_hook(uname(), nope=1), TypeError),
            ("duplicate hook name", lambda: coextra.add_hook(h.name), ValueError),
            ("coextra.Hook()", lambda: coextra.Hook(), TypeError),
            ("Hook.__new__(Hook)", lambda: coextra.Hook.__new__(coextra.Hook), TypeError),
        ]
        n = self.table(rows)
        self.assertGreater(n, 30)

    def test_hook_handle(self):
        h = coextra.add_hook(uname("h"))
        rows = [
            ("del h.active", lambda: delattr(h, "active"), AttributeError),
            ("h.active = <bool raises>", lambda: setattr(h, "active", Falsy()), ZeroDivisionError),
            ("h.name = ...", lambda: setattr(h, "name", "x"), AttributeError),
            ("h.priority = ...", lambda: setattr(h, "priority", 1), AttributeError),
        ]
        self.table(rows)
        self.assertTrue(h.active)
        h.remove()
        rows = [
            ("removed: h.remove()", lambda: h.remove(), Released),
            ("removed: h.active = True", lambda: setattr(h, "active", True), Released),
            ("removed: h.active = False", lambda: setattr(h, "active", False), Released),
        ]
        self.table(rows)
        self.assertFalse(h.active)
        self.assertTrue(h.removed)
        h.__exit__(None, None, None)  # exiting after removal is harmless


class TestCApi(BadInputCase):
    """Through coextra_test_reliability, a consumer built from include/coextra/coextra.h only."""

    def test_slots(self):
        code = make_code()
        rel.reserve(1, uname("stale"))
        stale = rel.handle(1)
        rel.release(1)
        rel.reserve(2, uname("live"))
        self.addCleanup(rel.release, 2)
        self.before = state()
        rows = [
            ("reserve(NULL name)", lambda: rel.reserve(3, None), ValueError),
            ("reserve('')", lambda: rel.reserve(3, ""), ValueError),
            ("reserve(overlong)", lambda: rel.reserve(3, "x" * (NAME_MAX + 1)), ValueError),
            ("reserve(invalid UTF-8)", lambda: rel.reserve_bytes(3, b"\xff\xfe"), ValueError),
            ("reserve(truncated UTF-8)", lambda: rel.reserve_bytes(3, b"ab\xe2\x82"), ValueError),
            ("reserve(out=NULL)", lambda: rel.reserve_null_out(uname()), ValueError),
            ("reserve(duplicate)", lambda: rel.reserve(3, coextra.slots()[-1].name), ValueError),
        ]
        handles = [("zero", (0, 0), ValueError), ("stale", stale, Released),
                   ("garbage", (0xFFFFFFF0, 12345), Released), ("index 0", (0, 7), Released),
                   ("generation 0", (rel.handle(2)[0], 0), (Released, ValueError)),
                   ("live index, wrong generation", (rel.handle(2)[0], rel.handle(2)[1] ^ 0x5A5A), Released)]
        for desc, hv, exc in handles:
            rows += [
                ("set(%s handle)" % desc, lambda hv=hv: (rel.set_handle(4, *hv), rel.set(code, 4, 7)), exc),
                ("clear(%s handle)" % desc, lambda hv=hv: (rel.set_handle(4, *hv), rel.clear(code, 4)), exc),
                ("release(%s handle)" % desc, lambda hv=hv: (rel.set_handle(4, *hv), rel.release(4)), exc),
                ("slot_live(%s handle)" % desc, lambda hv=hv: (rel.set_handle(4, *hv), rel.live(4)), exc),
            ]
        for key in [None] + not_code_keys()[1:]:
            t = "NULL" if key is None else type(key).__name__
            rows += [
                ("set(%s key)" % t, lambda k=key: rel.set(k, 2, 7), TypeError),
                ("clear(%s key)" % t, lambda k=key: rel.clear(k, 2), TypeError),
            ]
        self.table(rows)
        # The getters answer NULL (None), never an error, never a crash.
        for desc, hv, _ in handles:
            rel.set_handle(4, *hv)
            self.assertIsNone(rel.get(code, 4), desc)
            self.assertIsNone(rel.get_table(code, 4), desc)
        for key in [None] + not_code_keys()[1:]:
            self.assertIsNone(rel.get(key, 2))
            self.assertIsNone(rel.get_table(key, 2))

    def test_hooks(self):
        rel.reserve(5, uname("stale-only"))
        rel.release(5)
        rel.hook_add(1, uname("dup"), 500)
        self.addCleanup(rel.hook_remove, 1)
        dup = coextra.hooks()[-1].name
        self.before = state()
        rows = [
            ("hook_add(def=NULL)", lambda: rel.hook_add(2, uname(), 500, variant="null_def"), ValueError),
            ("hook_add(out=NULL)", lambda: rel.hook_add(2, uname(), 500, variant="null_out"), ValueError),
            ("hook_add(eval=NULL)", lambda: rel.hook_add(2, uname(), 500, variant="null_eval"), ValueError),
            ("hook_add(name=NULL)", lambda: rel.hook_add(2, None, 500), ValueError),
            ("hook_add(name='')", lambda: rel.hook_add(2, "", 500), ValueError),
            ("hook_add(overlong name)", lambda: rel.hook_add(2, "x" * (NAME_MAX + 1), 500), ValueError),
            ("hook_add(stale only)", lambda: rel.hook_add(2, uname(), 500, only=5), Released),
            ("hook_add(duplicate)", lambda: rel.hook_add(2, dup, 500), ValueError),
        ]
        for prio in (-1, 10001, -2 ** 31, 2 ** 31 - 1):
            rows.append(("hook_add(priority=%d)" % prio, lambda p=prio: rel.hook_add(2, uname(), p), ValueError))
        rel.hook_add(3, uname("removed"), 500)
        rel.hook_remove(3)
        bad_handles = [("NULL", None, ValueError), ("removed", rel.hook_handle(3), Released),
                       ("0xdeadbeef", 0xDEADBEEF, Released),
                       ("an object's address", id(rows), Released), ("~0", 2 ** 64 - 1, Released)]
        for desc, hv, exc in bad_handles:
            rows += [
                ("hook_remove(%s)" % desc, lambda hv=hv: (rel.hook_set_handle(4, hv), rel.hook_remove(4)), exc),
                ("hook_set_active(%s)" % desc,
                 lambda hv=hv: (rel.hook_set_handle(4, hv), rel.hook_set_active(4, 1)), exc),
                ("hook_get_active(%s)" % desc,
                 lambda hv=hv: (rel.hook_set_handle(4, hv), rel.hook_get_active(4)), exc),
            ]
        rows += [
            ("consumer: remove_raw(0)", lambda: native.remove_raw(0), ValueError),
            ("consumer: remove_raw(garbage)", lambda: native.remove_raw(0x1234), Released),
            ("consumer: reserve(NULL)", lambda: consumer_c.reserve(None), ValueError),
            ("consumer: release(0, 0)", lambda: consumer_c.release(0, 0), ValueError),
            ("consumer: set(garbage handle)", lambda: consumer_c.set(make_code(), 999, 999, 1), Released),
        ]
        self.table(rows)

    def test_calls_before_import(self):
        rows = [("%s before coextra_import()" % op, lambda op=op: rel.unimported(op), RuntimeError)
                for op in ("reserve", "release", "set", "clear", "hook_add", "hook_remove", "hook_set_active")]
        self.table(rows)
        self.assertIs(rel.unimported("get"), True)  # NULL, no error


if __name__ == "__main__":
    unittest.main()
