"""test_error_names.py: errors say whose: the duplicate slot's holder, the released slot's name."""

import sys
import unittest

import coextra
import coextra_test_consumer_c as cc

from coextra_testutil import make_code, unique_name


def uname(tag="slot"):
    return unique_name("test_error_names", tag)


def release_c(h):
    try:
        cc.release(*h)
    except coextra.ReleasedError:
        pass


class TestDuplicateSlotNamesItsHolder(unittest.TestCase):
    def test_held_by_python_code_names_the_module(self):
        name = uname()
        s = coextra.Slot(name)
        self.addCleanup(s.release)
        with self.assertRaises(ValueError) as cm:
            coextra.Slot(name)
        self.assertEqual(str(cm.exception), "coextra: a slot named '%s' already exists (index %d, reserved by "
                                            "Python code in module '%s')" % (name, s.index, __name__))
        with self.assertRaises(ValueError) as cm:
            cc.reserve(name)   # a native tool hits the Python one
        self.assertIn("reserved by Python code in module '%s'" % __name__, str(cm.exception))

    def test_python_code_without_a_module_name(self):
        name = uname()
        ns = {"coextra": coextra}
        exec("s = coextra.Slot(%r)" % name, ns)   # globals without __name__
        self.addCleanup(ns["s"].release)
        with self.assertRaisesRegex(ValueError, r"reserved by Python code\)$"):
            coextra.Slot(name)

    def test_held_by_native_code_names_the_file_where_it_can(self):
        name = uname()
        h = cc.reserve(name)
        self.addCleanup(release_c, h)
        with self.assertRaises(ValueError) as cm:
            coextra.Slot(name)
        msg = str(cm.exception)
        self.assertIn("a slot named '%s' already exists (index %d, reserved by native code" % (name, h[0]), msg)
        if sys.platform.startswith("linux") or sys.platform == "darwin":
            self.assertTrue(msg.endswith("reserved by native code in %s)" % cc.__file__), msg)

    def test_the_name_is_free_again_after_release(self):
        name = uname()
        h = cc.reserve(name)
        cc.release(*h)
        s = coextra.Slot(name)
        s.release()


class TestDuplicateHookNamesItsHolder(unittest.TestCase):
    def test_python_hook_names_its_module_and_priority(self):
        name = uname()
        h = coextra.add_hook(name, on_enter=lambda code: None, priority=321)
        self.addCleanup(h.remove)
        with self.assertRaises(ValueError) as cm:
            coextra.add_hook(name, on_enter=lambda code: None)
        self.assertEqual(str(cm.exception), "coextra: a hook named '%s' already exists (priority 321, added by "
                                            "Python code in module '%s')" % (name, __name__))

    def test_native_hook_names_its_file(self):
        import coextra_test_native as native
        name = uname()
        h = native.add(name, 700, "pass")
        self.addCleanup(native.remove, h)
        with self.assertRaises(ValueError) as cm:
            coextra.add_hook(name, on_exit=lambda code: None)
        msg = str(cm.exception)
        self.assertIn("a hook named '%s' already exists (priority 700, added by native code" % name, msg)
        if sys.platform.startswith("linux") or sys.platform == "darwin":
            self.assertTrue(msg.endswith("added by native code in %s)" % native.__file__), msg)
        with self.assertRaises(ValueError) as cm:
            native.add(name, 100, "pass")  # and the other way round: native meets native
        self.assertIn("priority 700, added by native code", str(cm.exception))


class TestReleasedErrorNamesTheSlot(unittest.TestCase):
    def test_a_stale_native_handle_names_its_slot(self):
        name = uname("c")
        h = cc.reserve(name)
        cc.release(*h)
        code = make_code()
        expected = "coextra: slot '%s' (index %d, generation %d) has been released" % ((name,) + h)
        for call in (lambda: cc.set(code, *h, 1), lambda: cc.clear(code, *h), lambda: cc.release(*h),
                     lambda: cc.live(*h)):
            with self.assertRaises(coextra.ReleasedError) as cm:
                call()
            self.assertEqual(str(cm.exception), expected)

    def test_still_named_after_its_index_is_reused(self):
        name = uname("c")
        h = cc.reserve(name)
        cc.release(*h)
        s = coextra.Slot(uname("reuse"))      # takes the freed index (the lowest free one)
        self.addCleanup(s.release)
        self.assertEqual(s.index, h[0])
        with self.assertRaisesRegex(coextra.ReleasedError, r"slot '%s' \(index %d, generation %d\) has been "
                                                           r"released" % ((name,) + h)):
            cc.set(make_code(), *h, 1)

    def test_an_unknown_handle_keeps_the_generic_message(self):
        with self.assertRaisesRegex(coextra.ReleasedError, r"index 999, generation 12345\) is released, or "
                                                           r"belongs to another interpreter"):
            cc.set(make_code(), 999, 12345, 1)

    def test_a_python_slot_names_itself(self):
        s = coextra.Slot(uname("py"))
        index = s.index
        s.release()
        with self.assertRaises(coextra.ReleasedError) as cm:
            s[make_code()] = 1
        self.assertRegex(str(cm.exception), r"^coextra: slot '%s' \(index %d, generation \d+\) has been released$"
                         % (s.name, index))


if __name__ == "__main__":
    unittest.main()
