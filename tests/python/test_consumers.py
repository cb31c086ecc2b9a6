"""test_consumers.py: the C and C++ consumer extensions (built only against include/) share one runtime with coextra."""

import ctypes
import gc
import types
import unittest
import weakref

import coextra
import coextra_test_consumer_c as cc
import coextra_test_consumer_cpp as cpp

from coextra_testutil import assert_name_taken, kill, make_code, unique_name



def uname(tag="slot"):
    return unique_name("test_consumers", tag)


def capsule_pointer(capsule, name):
    # A private prototype: never change the shared ctypes.pythonapi attribute.
    proto = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)
    get_pointer = proto(("PyCapsule_GetPointer", ctypes.pythonapi))
    return get_pointer(capsule, name)


class ConsumerTestCase(unittest.TestCase):
    def c_slot(self, name=None):
        h = cc.reserve(name or uname("c"))
        self.addCleanup(self._release_c, h)
        return h

    @staticmethod
    def _release_c(h):
        try:
            cc.release(*h)
        except coextra.ReleasedError:
            pass

    def cpp_slot(self, name=None):
        h = cpp.reserve(name or uname("cpp"))
        self.addCleanup(cpp.release)
        return h

    def py_slot(self, name=None, on_free=None):
        s = coextra.Slot(name or uname("py"), on_free=on_free)
        self.addCleanup(lambda: s.released or s.release())
        return s

    def assert_handle_refused(self, code, h):
        """consumer_c refuses the handle h for code: set and clear raise
        ReleasedError, get and get_table (inline and table paths) see nothing."""
        for fn in (lambda: cc.set(code, *h, 2), lambda: cc.clear(code, *h)):
            with self.assertRaises(coextra.ReleasedError):
                fn()
        self.assertIsNone(cc.get(code, *h))
        self.assertIsNone(cc.get_table(code, *h))


class TestOneRuntime(ConsumerTestCase):
    def test_same_table_everywhere(self):
        cap = coextra._coextra._C_API
        self.assertEqual(type(cap).__name__, "PyCapsule")
        ptr = capsule_pointer(cap, b"coextra._coextra._C_API")
        self.assertTrue(ptr)
        self.assertEqual(cc.table_address(), ptr)
        self.assertEqual(cpp.table_address(), ptr)

    def test_capsule_name_is_checked(self):
        with self.assertRaises(ValueError):
            capsule_pointer(coextra._coextra._C_API, b"wrong.name")

    def test_table_header(self):
        ptr = capsule_pointer(coextra._coextra._C_API, b"coextra._coextra._C_API")
        struct_size, major, minor = (ctypes.c_uint32 * 3).from_address(ptr)
        self.assertEqual((major, minor), tuple(coextra.ABI_VERSION))
        # struct_size + 3 uint32 + the fast-entry pointer + at least the 24 ABI 1.0 functions
        self.assertGreaterEqual(struct_size, 16 + 25 * ctypes.sizeof(ctypes.c_void_p))
        self.assertEqual(coextra._coextra._runtime_version(), coextra.__version__)

    def test_native_slots_listed(self):
        cname, cppname = uname("c.listed"), uname("cpp.listed")
        ch = self.c_slot(cname)
        cpph = self.cpp_slot(cppname)
        self.assertEqual(cpp.handle(), cpph)
        py = self.py_slot()
        code = make_code()
        cc.set(code, *ch, 1)
        cpp.tag(code, "t")
        py[code] = "p"
        infos = {i.name: i for i in coextra.slots()}
        self.assertEqual(infos[cname], coextra.SlotInfo(cname, ch[0], 1, True))
        self.assertEqual(infos[cppname], coextra.SlotInfo(cppname, cpph[0], 1, True))
        self.assertEqual(infos[py.name], coextra.SlotInfo(py.name, py.index, 1, False))
        self.assertEqual(len({ch[0], cpph[0], py.index}), 3)

    def test_names_shared_between_python_and_native(self):
        name = uname("shared")
        h = self.c_slot(name)
        assert_name_taken(self, name, coextra.Slot, cpp.reserve)
        name2 = uname("shared2")
        self.py_slot(name2)
        assert_name_taken(self, name2, cc.reserve)
        cc.release(*h)
        s = self.py_slot(name)  # free again once the native slot is gone
        self.assertEqual(s.name, name)


class TestCppSlotForeach(ConsumerTestCase):
    """coextra::Slot<T>::foreach, the C++ face of coextra_slot_foreach."""

    def tagged(self, n):
        self.cpp_slot()
        codes = [make_code() for _ in range(n)]
        for i, c in enumerate(codes):
            cpp.tag(c, "t%d" % i)
        return codes

    def test_visits_every_tagged_code_with_its_value(self):
        codes = self.tagged(5)
        cpp.untag(codes[3])
        r, seen = cpp.tags(-1, -1)
        self.assertEqual(r, 0)
        self.assertEqual(len(seen), 4)
        self.assertEqual({id(c): t for c, t in seen},
                         {id(c): "t%d" % i for i, c in enumerate(codes) if i != 3})
        self.assertEqual(cpp.count_tags(), 4)  # a const callable, passed as an lvalue

    def test_a_nonzero_result_stops_the_walk_and_is_returned(self):
        codes = self.tagged(4)  # kept alive: a code object that dies takes its value with it
        r, seen = cpp.tags(2, -1)
        self.assertEqual((r, len(seen)), (7, 2))
        self.assertLessEqual({id(c) for c, _ in seen}, {id(c) for c in codes})

    def test_a_cpp_exception_becomes_runtime_error(self):
        codes = self.tagged(3)
        with self.assertRaisesRegex(RuntimeError, "tags: thrown by the callable"):
            cpp.tags(-1, 1)
        # nothing is left broken: the values are there, a new walk sees them all
        self.assertEqual(cpp.get_tag(codes[0]), "t0")
        self.assertEqual(len(cpp.tags(-1, -1)[1]), 3)

    def test_stale_and_unreserved_slots_are_refused(self):
        with self.assertRaisesRegex(ValueError, "zero slot handle"):
            cpp.tags(-1, -1)  # never reserved: the all-zero handle
        codes = self.tagged(1)
        self.assertEqual(cpp.tags(-1, -1)[0], 0)
        h = cpp.handle()
        cpp.release()  # the Slot forgets its handle: the zero handle again
        with self.assertRaisesRegex(ValueError, "zero slot handle"):
            cpp.tags(-1, -1)
        self.assertIsNone(cpp.get_tag(codes[0]))
        with self.assertRaises(coextra.ReleasedError):  # the old handle, through the C API
            cc.clear(codes[0], *h)


class TestCoexistence(ConsumerTestCase):
    def test_values_independent_on_same_code_objects(self):
        ch = self.c_slot()
        self.cpp_slot()
        freed_py = []
        py = self.py_slot(on_free=freed_py.append)
        codes = [make_code() for _ in range(5)]
        for i, c in enumerate(codes):
            cc.set(c, *ch, 100 + i)
            cpp.tag(c, "tag%d" % i)
            py[c] = ("py", i)
        for i, c in enumerate(codes):
            self.assertEqual(cc.get(c, *ch), 100 + i)
            self.assertEqual(cc.get_table(c, *ch), 100 + i)
            self.assertEqual(cpp.get_tag(c), "tag%d" % i)
            self.assertEqual(py[c], ("py", i))
        # Changing one tool's value leaves the others alone.
        freed0 = cc.freed()
        cc.set(codes[0], *ch, 7)
        self.assertEqual(cc.freed(), freed0 + 1)
        cpp.untag(codes[1])
        del py[codes[2]]
        self.assertEqual(freed_py, [("py", 2)])
        self.assertEqual(cc.get(codes[0], *ch), 7)
        self.assertEqual(cpp.get_tag(codes[0]), "tag0")
        self.assertEqual(py[codes[0]], ("py", 0))
        self.assertIsNone(cpp.get_tag(codes[1]))
        self.assertEqual(cc.get(codes[1], *ch), 101)
        self.assertEqual(py[codes[1]], ("py", 1))
        self.assertNotIn(codes[2], py)
        self.assertEqual(cc.get(codes[2], *ch), 102)
        self.assertEqual(cpp.get_tag(codes[2]), "tag2")

    def test_release_of_one_leaves_the_others(self):
        ch = self.c_slot()
        cpph = self.cpp_slot()
        freed_py = []
        py = self.py_slot(on_free=freed_py.append)
        codes = [make_code() for _ in range(4)]
        for i, c in enumerate(codes):
            cc.set(c, *ch, i)
            cpp.tag(c, str(i))
            py[c] = i
        freed0 = cc.freed()
        cc.release(*ch)
        self.assertEqual(cc.freed(), freed0 + 4)
        for i, c in enumerate(codes):
            self.assertIsNone(cc.get(c, *ch))
            self.assertEqual(cpp.get_tag(c), str(i))
            self.assertEqual(py[c], i)
        cpp.release()
        self.assertEqual(cpp.handle(), (0, 0))
        self.assertNotIn(cpph[0], [i.index for i in coextra.slots() if i.native])
        for i, c in enumerate(codes):
            self.assertIsNone(cpp.get_tag(c))
            self.assertEqual(py[c], i)
        self.assertEqual(len(py), 4)
        py.release()
        self.assertEqual(sorted(freed_py), [0, 1, 2, 3])

    def test_python_release_leaves_native(self):
        ch = self.c_slot()
        self.cpp_slot()
        py = self.py_slot()
        code = make_code()
        cc.set(code, *ch, 5)
        cpp.tag(code, "five")
        py[code] = 5
        py.release()
        self.assertEqual(cc.get(code, *ch), 5)
        self.assertEqual(cpp.get_tag(code), "five")

    def test_code_death_frees_native_values_once(self):
        ch = self.c_slot()
        self.assertEqual(cpp.handle(), (0, 0))  # earlier tests released it
        cpph = self.cpp_slot()
        py_freed = []
        py = self.py_slot(on_free=py_freed.append)
        code = make_code()
        cc.set(code, *ch, 1)
        cpp.tag(code, "dies")
        py[code] = "dies"
        wr = weakref.ref(code)
        freed0 = cc.freed()
        del code
        kill(wr)
        self.assertEqual(cc.freed(), freed0 + 1)
        self.assertEqual(py_freed, ["dies"])
        infos = {i.index: i for i in coextra.slots()}
        self.assertEqual(infos[ch[0]].live, 0)
        self.assertEqual(infos[cpph[0]].live, 0)
        self.assertEqual(cc.live(*ch), 0)
        gc.collect()
        self.assertEqual(cc.freed(), freed0 + 1)

    def test_c_set_clear_frees(self):
        ch = self.c_slot()
        code = make_code()
        f0 = cc.freed()
        cc.set(code, *ch, 1)
        cc.set(code, *ch, 2)  # replace frees 1
        self.assertEqual(cc.freed(), f0 + 1)
        cc.clear(code, *ch)
        self.assertEqual(cc.freed(), f0 + 2)
        self.assertIsNone(cc.get(code, *ch))
        cc.clear(code, *ch)  # clearing an empty slot is fine and frees nothing
        self.assertEqual(cc.freed(), f0 + 2)
        cc.set(code, *ch, 3)
        cc.set_null(code, *ch)  # set(NULL) = clear
        self.assertEqual(cc.freed(), f0 + 3)
        self.assertIsNone(cc.get(code, *ch))
        self.assertEqual(cc.live(*ch), 0)

    def test_fast_path_and_table_agree(self):
        ch = self.c_slot()
        other = self.c_slot()
        codes = [make_code() for _ in range(3)]
        cc.set(codes[0], *ch, 10)
        cc.set(codes[1], *other, 20)
        for c in codes:
            for h in (ch, other, (0, 0), (ch[0], ch[1] + 100000), (60000, ch[1])):
                self.assertEqual(cc.get(c, *h), cc.get_table(c, *h))

    def test_python_and_native_handles_on_many_slots(self):
        # Interleave native and Python slots past CPython's 254 indices.
        handles = [self.c_slot() for _ in range(130)]
        pys = [self.py_slot() for _ in range(130)]
        code = make_code()
        for i, h in enumerate(handles):
            cc.set(code, *h, i)
        for i, s in enumerate(pys):
            s[code] = -i
        self.assertEqual([cc.get(code, *h) for h in handles], list(range(130)))
        self.assertEqual([s[code] for s in pys], [-i for i in range(130)])


class TestBadInputThroughCAPI(ConsumerTestCase):
    def test_bad_names(self):
        with self.assertRaises(ValueError):
            cc.reserve(None)  # NULL name
        with self.assertRaises(ValueError):
            cc.reserve("")
        with self.assertRaises(ValueError):
            cc.reserve("n" * (coextra._coextra.NAME_MAX + 1))
        with self.assertRaises(ValueError):
            cc.reserve_bytes(b"bad\xff\xfeutf8")
        with self.assertRaises(ValueError):
            cpp.reserve("")
        h = cc.reserve_bytes(("ok." + uname()).encode())
        cc.release(*h)
        self.assertEqual(cpp.handle(), (0, 0))

    def test_null_out(self):
        name = uname("nullout")
        with self.assertRaises(ValueError):
            cc.reserve_null_out(name)
        self.assertNotIn(name, [i.name for i in coextra.slots()])

    def test_zero_handle(self):
        code = make_code()
        with self.assertRaises(ValueError):
            cc.set(code, 0, 0, 1)
        with self.assertRaises(ValueError):
            cc.clear(code, 0, 0)
        with self.assertRaises(ValueError):
            cc.release(0, 0)
        with self.assertRaises(ValueError):
            cc.live(0, 0)
        self.assertIsNone(cc.get(code, 0, 0))
        self.assertIsNone(cc.get_table(code, 0, 0))

    def test_stale_handle_after_release(self):
        h = cc.reserve(uname("stale"))
        code = make_code()
        cc.set(code, *h, 1)
        cc.release(*h)
        self.assert_handle_refused(code, h)
        for fn in (lambda: cc.release(*h), lambda: cc.live(*h), lambda: cc.set_null(code, *h)):
            with self.assertRaises(coextra.ReleasedError):
                fn()

    def test_stale_handle_never_reads_the_new_owner(self):
        h = cc.reserve(uname("reused"))
        code = make_code()
        cc.set(code, *h, 1)
        cc.release(*h)
        # Reserve Python slots until one takes the native slot's old index.
        fillers = []
        while True:
            s = self.py_slot()
            if s.index == h[0]:
                break
            fillers.append(s)
        for f in fillers:
            f.release()
        s[code] = "python owns this index now"
        self.assert_handle_refused(code, h)
        with self.assertRaises(coextra.ReleasedError):
            cc.release(*h)
        self.assertEqual(s[code], "python owns this index now")
        self.assertFalse(s.released)

    def test_forged_handles(self):
        h = self.c_slot()
        code = make_code()
        cc.set(code, *h, 1)
        forged = [(h[0], h[1] + 1), (h[0], 0xFFFFFFFF), (h[0] + 100000, h[1]), (0xFFFFFFFF, h[1]), (0, h[1]),
                  (h[0], 0)]
        for bad in forged:
            with self.subTest(handle=bad):
                self.assert_handle_refused(code, bad)
                with self.assertRaises(coextra.ReleasedError):
                    cc.live(*bad)
        self.assertEqual(cc.get(code, *h), 1)
        self.assertEqual(cc.live(*h), 1)

    def test_non_code_objects(self):
        h = self.c_slot()
        fn = make_code  # a function, not its code
        f0 = cc.freed()
        for bad in [fn, None, 1, "code", types.ModuleType("m"), make_code().co_code]:
            with self.subTest(obj=type(bad).__name__):
                with self.assertRaises(TypeError):
                    cc.set(bad, *h, 1)
                with self.assertRaises(TypeError):
                    cc.clear(bad, *h)
                with self.assertRaises(TypeError):
                    cc.set_null(bad, *h)
                self.assertIsNone(cc.get(bad, *h))
                self.assertIsNone(cc.get_table(bad, *h))
        self.assertEqual(cc.freed(), f0)  # the value is the caller's on failure
        self.assertEqual(cc.live(*h), 0)

    def test_cpp_bad_input(self):
        self.cpp_slot()
        with self.assertRaises(RuntimeError):
            cpp.reserve(uname("again"))  # coextra::Slot: already reserved
        for bad in [None, 1, make_code]:
            with self.assertRaises(TypeError):
                cpp.tag(bad, "x")
            self.assertIsNone(cpp.get_tag(bad))
            with self.assertRaises(TypeError):
                cpp.untag(bad)
        code = make_code()
        cpp.tag(code, "x")
        cpp.release()
        cpp.release()  # a no-op once released
        self.assertIsNone(cpp.get_tag(code))
        with self.assertRaises(ValueError):  # the zero handle
            cpp.tag(code, "y")
        self.assertIsNone(cpp.get_tag(code))



from test_chain_helpers import ChainTestCase  # noqa: E402  (idle before and after each test)


class TestCppHookExceptions(ChainTestCase):
    """A C++ exception thrown by a coextra::Hook callable becomes a Python
    exception at the trampoline, and the frame is finished as a failing hook
    must finish it."""

    def thrower(self, fn, mode):
        cpp.add_thrower(fn.__code__, mode)
        self.addCleanup(cpp.remove_thrower)

    @staticmethod
    def recorder():
        """f(x) -> x, appending x to f.ran (whether its body ran)."""
        ran = []

        def f(x):
            ran.append(x)
            return x
        f.ran = ran
        return f

    def test_thrown_before_delegating_skips_the_frame(self):
        f = self.recorder()
        self.thrower(f, "before")
        for _ in range(3):  # the frame is finished each time: nothing leaks, nothing is left pending
            with self.assertRaisesRegex(RuntimeError, "^thrown before$"):
                f(1)
        self.assertEqual(f.ran, [])
        self.assertEqual(f.__code__.co_name, "f")

    def test_thrown_after_delegating(self):
        f = self.recorder()
        self.thrower(f, "after")
        with self.assertRaisesRegex(RuntimeError, "^thrown after$"):
            f(1)
        self.assertEqual(f.ran, [1])  # the body ran once: delegated, then failed

    def test_bad_alloc_is_memory_error(self):
        def f():
            return 1
        self.thrower(f, "bad_alloc")
        with self.assertRaises(MemoryError):
            f()

    def test_unknown_exception(self):
        def f():
            return 1
        self.thrower(f, "unknown")
        with self.assertRaisesRegex(RuntimeError, "^unknown C\\+\\+ exception$"):
            f()

    def test_generator_resumption_gets_the_exception_thrown_in(self):
        log = []

        def gen():
            try:
                yield 1
                yield 2
            finally:
                log.append("finally")
        g = gen()
        self.assertEqual(next(g), 1)
        self.thrower(gen, "resume")
        with self.assertRaisesRegex(RuntimeError, "^thrown resume$"):
            next(g)
        self.assertEqual(log, ["finally"])  # thrown into the frame: its finally ran
        with self.assertRaises(StopIteration):
            next(g)


if __name__ == "__main__":
    unittest.main()
