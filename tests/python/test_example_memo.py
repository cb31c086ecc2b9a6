"""test_example_memo.py: the coextra_memo example — cached calls finished by coextra_frame_return, no leaks, exceptions/unhashables/generators handled."""
import gc
import os
import sys
import textwrap
import threading
import tracemalloc
import unittest

import coextra
import coextra_memo
from coextra_memo import clear, memoize, stats, unmemoize

# Every test starts and ends with coextra idle (no active hook): a leaked hook
# fails the test that leaked it.
from test_chain_helpers import ChainTestCase


class Counter:
    def __init__(self):
        self.n = 0


class MemoBasics(ChainTestCase):
    def setUp(self):
        super().setUp()
        self.calls = Counter()
        calls = self.calls

        def square(x, y=0):
            calls.n += 1
            return x * x + y

        self.square = square

    def tearDown(self):
        if coextra_memo.is_memoized(self.square):
            unmemoize(self.square)

    def test_returns_same_function(self):
        self.assertIs(memoize(self.square), self.square)
        self.assertIs(memoize(self.square), self.square)  # idempotent
        self.assertTrue(coextra_memo.is_memoized(self.square))

    def test_hits_skip_the_body(self):
        f = memoize(self.square)
        self.assertEqual([f(i % 3) for i in range(30)], [(i % 3) ** 2 for i in range(30)])
        self.assertEqual(self.calls.n, 3)
        self.assertEqual(stats(f), (27, 3))
        self.assertEqual(coextra_memo.cache_size(f), 3)

    def test_key_is_the_bound_arguments(self):
        f = memoize(self.square)
        self.assertEqual(f(3), 9)
        self.assertEqual(f(3, 0), 9)      # the default is bound: same key
        self.assertEqual(f(x=3), 9)       # keywords too
        self.assertEqual(f(3, 1), 10)     # another key
        self.assertEqual(self.calls.n, 2)
        self.assertEqual(stats(f), (2, 2))

    def test_clear_and_unmemoize(self):
        f = memoize(self.square)
        f(2)
        f(2)
        clear(f)
        self.assertEqual(stats(f), (0, 0))
        f(2)
        self.assertEqual(self.calls.n, 2)
        self.assertIs(unmemoize(f), f)
        self.assertFalse(coextra_memo.is_memoized(f))
        f(2)
        f(2)
        self.assertEqual(self.calls.n, 4)
        with self.assertRaises(ValueError):
            stats(f)
        with self.assertRaises(ValueError):
            unmemoize(f)

    def test_hook_only_while_something_is_memoized(self):
        self.assertEqual([h for h in coextra.hooks() if h.name != "coextra_memo" and h.active], [])
        f = memoize(self.square)
        self.assertTrue(coextra.status().installed)
        info = [h for h in coextra.hooks() if h.name == "coextra_memo"]
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0].priority, coextra.PRIORITY_OPTIMIZER)
        self.assertTrue(info[0].active)
        unmemoize(f)
        self.assertFalse(coextra.status().installed)

    def test_not_a_function(self):
        for bad in (len, 42, "x", Counter, Counter().__init__):
            with self.assertRaises(TypeError):
                memoize(bad)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class MemoBehaviour(ChainTestCase):
    def memoized(self, fn):
        """memoize(fn), unmemoized at cleanup (before the idle check, which runs last)."""
        self.addCleanup(unmemoize, memoize(fn))
        return fn

    def test_recursive_function(self):
        self.memoized(fib)
        self.assertEqual(fib(300), 222232244629420445529739893461909967206666939096499764990979600)
        self.assertEqual(stats(fib), (298, 301))

    def test_exceptions_propagate_and_are_not_cached(self):
        calls = Counter()

        @self.memoized
        def inverse(x):
            calls.n += 1
            return 1 / x

        for _ in range(3):
            with self.assertRaises(ZeroDivisionError):
                inverse(0)
        self.assertEqual(calls.n, 3)
        self.assertEqual(coextra_memo.cache_size(inverse), 0)
        self.assertEqual(inverse(4), 0.25)
        self.assertEqual(inverse(4), 0.25)
        self.assertEqual(calls.n, 4)
        self.assertEqual(stats(inverse), (1, 4))

    def test_unhashable_arguments_fall_back(self):
        calls = Counter()

        @self.memoized
        def total(items):
            calls.n += 1
            return sum(items)

        self.assertEqual(total([1, 2, 3]), 6)
        self.assertEqual(total([1, 2, 3]), 6)
        self.assertEqual(total((1, 2, 3)), 6)
        self.assertEqual(total((1, 2, 3)), 6)
        self.assertEqual(calls.n, 3)
        self.assertEqual(stats(total), (1, 3))

    def test_generators_and_coroutines_refused(self):
        def g():
            yield 1

        async def c():
            return 1

        async def ag():
            yield 1

        for f in (g, c, ag):
            with self.assertRaises(TypeError):
                memoize(f)
        self.assertEqual(list(g()), [1])

    def test_kwonly_varargs_and_kwargs_are_part_of_the_key(self):
        calls = Counter()

        def kw(a, *, b=1):
            calls.n += 1
            return a + b

        def va(first, *args):
            calls.n += 1
            return (first, len(args))

        def vk(a, **kwargs):
            calls.n += 1
            return (a, sorted(kwargs.items()))

        for f in (kw, va, vk):
            memoize(f)
        try:
            for _ in range(3):
                self.assertEqual(kw(1, b=2), 3)
                self.assertEqual(va(1, 2), (1, 1))
                self.assertEqual(vk(0, x=1, y=2), (0, [("x", 1), ("y", 2)]))
            self.assertEqual(calls.n, 3)
            self.assertEqual(stats(kw), (2, 1))
            self.assertEqual(stats(va), (2, 1))
            self.assertEqual(stats(vk), (2, 1))

            # keyword-only: the default is bound, another value is another key
            self.assertEqual(kw(1), 2)
            self.assertEqual(kw(1, b=1), 2)
            self.assertEqual(kw(1, b=3), 4)
            self.assertEqual(stats(kw), (3, 3))
            # *args: its length and values are part of the key
            self.assertEqual(va(1), (1, 0))
            self.assertEqual(va(1, 2, 3), (1, 2))
            self.assertEqual(va(first=1), (1, 0))
            self.assertEqual(stats(va), (3, 3))
            # **kwargs: the order of the keywords does not matter, the names do
            self.assertEqual(vk(0, y=2, x=1), (0, [("x", 1), ("y", 2)]))
            self.assertEqual(vk(a=0, x=1, y=2), (0, [("x", 1), ("y", 2)]))
            self.assertEqual(vk(0, x=2, y=1), (0, [("x", 2), ("y", 1)]))
            self.assertEqual(vk(0), (0, []))
            self.assertEqual(stats(vk), (4, 3))
            # an unhashable value in **kwargs or *args runs the body, every time
            for _ in range(2):
                self.assertEqual(vk(0, x=[1]), (0, [("x", [1])]))
                self.assertEqual(va(1, [2]), (1, 1))
            self.assertEqual(stats(vk), (4, 5))
            self.assertEqual(stats(va), (3, 5))
            self.assertEqual(calls.n, 3 + 2 + 2 + 2 + 4)
        finally:
            for f in (kw, va, vk):
                unmemoize(f)

    def test_methods(self):
        calls = Counter()

        class Box:
            def __init__(self, v):
                self.v = v

            @memoize
            def scaled(self, k):
                calls.n += 1
                return self.v * k

        try:
            a, b = Box(2), Box(3)
            self.assertEqual([a.scaled(10), a.scaled(10), b.scaled(10), b.scaled(10)], [20, 20, 30, 30])
            self.assertEqual(calls.n, 2)
        finally:
            unmemoize(Box.scaled)

    def test_cell_arguments(self):
        calls = Counter()

        @memoize
        def cell_arg(x):
            calls.n += 1
            return (lambda: x * 2)()   # x is a cell variable

        try:
            self.assertEqual([cell_arg(5), cell_arg(5), cell_arg(6)], [10, 10, 12])
            self.assertEqual(calls.n, 2)
        finally:
            unmemoize(cell_arg)

    def test_closures_sharing_a_code_object(self):
        def make(k):
            counter = Counter()

            def add(x):
                counter.n += 1
                return x + k

            return add, counter

        add1, c1 = make(1)
        add2, c2 = make(2)
        self.assertIs(add1.__code__, add2.__code__)
        memoize(add1)
        try:
            self.assertEqual([add1(10), add1(10), add2(10), add2(10)], [11, 11, 12, 12])
            self.assertEqual((c1.n, c2.n), (1, 2))   # only add1 is cached
            with self.assertRaises(ValueError):
                memoize(add2)
        finally:
            unmemoize(add1)
        del add1
        gc.collect()
        memoize(add2)   # the previous owner died: the code is free again
        try:
            add2(1)
            add2(1)
            self.assertEqual(stats(add2), (1, 1))
        finally:
            unmemoize(add2)

    def test_body_unmemoizes_itself(self):
        @memoize
        def selfish(x):
            unmemoize(selfish)
            return x

        self.assertEqual(selfish(1), 1)   # the miss must not store into the freed entry
        self.assertFalse(coextra_memo.is_memoized(selfish))
        memoize(selfish)   # and again: a new entry while the old miss is running
        self.assertEqual(selfish(2), 2)

    def test_threads(self):
        @memoize
        def work(x):
            return x * 3

        try:
            out = []

            def run():
                out.append(sum(work(i % 10) for i in range(2000)))

            threads = [threading.Thread(target=run) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(out, [sum(3 * (i % 10) for i in range(2000))] * 4)
            hits, misses = stats(work)
            self.assertEqual(hits + misses, 8000)
        finally:
            unmemoize(work)


class MemoLeaks(ChainTestCase):
    N = 100_000

    def test_refcounts_and_memory_stable_over_100k_hits(self):
        calls = Counter()

        def target(a, b):
            calls.n += 1
            return (a, b)

        memoize(target)
        try:
            a, b = object(), "key-%d" % 12345
            result = target(a, b)
            code = target.__code__
            before = (sys.getrefcount(code), sys.getrefcount(target), sys.getrefcount(a), sys.getrefcount(b),
                      sys.getrefcount(result))
            for _ in range(1000):   # warm up (specialisation, free lists)
                target(a, b)
            gc.collect()
            tracemalloc.start()
            try:
                snap0 = tracemalloc.get_traced_memory()[0]
                for _ in range(self.N):
                    target(a, b)
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - snap0
            finally:
                tracemalloc.stop()
            after = (sys.getrefcount(code), sys.getrefcount(target), sys.getrefcount(a), sys.getrefcount(b),
                     sys.getrefcount(result))
            self.assertEqual(before, after)
            self.assertLess(grown, 64 * 1024)
            self.assertEqual(calls.n, 1)
            self.assertEqual(stats(target), (self.N + 1000, 1))
        finally:
            unmemoize(target)

    def test_closure_hits_do_not_leak_cells(self):
        # 3.11+: reading the arguments initialises the free variables of the
        # incomplete frame (COPY_FREE_VARS has not run); the disposal of a hit
        # frame must release them.
        box = [0]

        def make():
            scale = 3

            def scaled(x):
                box[0] += 1
                return x * scale

            return scaled

        f = memoize(make())
        try:
            cells = f.__closure__
            f(2)
            before = [sys.getrefcount(c) for c in cells] + [sys.getrefcount(f)]
            for _ in range(20_000):
                f(2)
            after = [sys.getrefcount(c) for c in cells] + [sys.getrefcount(f)]
            self.assertEqual(before, after)
            self.assertEqual(box[0], 1)
        finally:
            unmemoize(f)

    def test_entry_freed_with_the_code(self):
        import weakref

        ns = {}
        exec("def temp(x):\n    return [x]\n", ns)
        fn = memoize(ns.pop("temp"))
        result = fn(1)
        self.assertIs(fn(1), result)
        ref = weakref.ref(fn)
        holder = [result]
        before = sys.getrefcount(result)
        del fn
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(sys.getrefcount(result), before - 1)   # the cache let go of it
        del holder
        # The hook stays active until the next memoize/unmemoize notices that
        # nothing is memoized any more (the slot's free function must not
        # call back into coextra): one round trip puts it to rest, which the
        # idle check after the test asserts.
        self.assertTrue([h for h in coextra.hooks() if h.name == "coextra_memo" and h.active])
        unmemoize(memoize(lambda x: x))


class ExamplesRefuseASecondInterpreter(ChainTestCase):
    """The three examples keep process-wide state: the first interpreter that
    loads one owns it, and importing it in another raises ImportError (3.12+
    through Py_mod_multiple_interpreters; before, in the exec slot)."""

    def test_import_in_a_subinterpreter(self):
        try:
            import _testcapi
        except ImportError:
            self.skipTest("no _testcapi in this build")
        import coextra_debugger._debugger  # noqa: F401  (loaded here first: this interpreter owns them)
        import coextra_profiler._profiler  # noqa: F401
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        src = textwrap.dedent("""\
            import os
            out = []
            for name in ("coextra_memo._memo", "coextra_debugger._debugger", "coextra_profiler._profiler"):
                try:
                    __import__(name)
                    out.append(name + ":imported")
                except ImportError as e:
                    out.append(name + ":ImportError:" + str(e))
            os.write(%d, "\\n".join(out).encode())
            """ % w)
        try:
            self.assertEqual(_testcapi.run_in_subinterp(src), 0)
        finally:
            os.close(w)
        got = os.read(r, 65536).decode().splitlines()
        self.assertEqual([g.split(":")[:2] for g in got],
                         [[n, "ImportError"] for n in ("coextra_memo._memo", "coextra_debugger._debugger",
                                                       "coextra_profiler._profiler")], got)


class MemoWithOtherHooks(ChainTestCase):
    def test_outer_python_hook_sees_hit_frames(self):
        log = []

        def square(x):
            return x * x

        memoize(square)
        mark = coextra.Slot("test_example_memo.mark")
        mark[square.__code__] = True
        hook = coextra.add_hook("test_example_memo.outer", on_enter=lambda code: log.append(("enter", code.co_name)),
                                on_exit=lambda code: log.append(("exit", code.co_name)), only=mark)
        try:
            self.assertEqual([square(3) for _ in range(5)], [9] * 5)
            self.assertEqual(stats(square), (4, 1))
            if hook.monitored:
                # 3.12+: a Python hook with `only` is an observer on sys.monitoring, which sees
                # the frames that actually run: the miss, not the four hits memo returned.
                self.assertEqual(log, [("enter", "square"), ("exit", "square")])
            else:
                # in the chain memo is innermost: the outer hook wraps every call, hit or miss
                self.assertEqual(log, [("enter", "square"), ("exit", "square")] * 5)
            self.assertEqual(hook.monitored, sys.version_info >= (3, 12))
            self.assertEqual([h.name for h in coextra.hooks()][-1], "coextra_memo")
        finally:
            hook.remove()
            mark.release()
            unmemoize(square)

    def test_with_profiler(self):
        try:
            import coextra_profiler
        except ImportError:
            self.skipTest("coextra_profiler not built")

        def cube(x):
            return x ** 3

        memoize(cube)
        try:
            with coextra_profiler.Profile() as prof:
                for i in range(20):
                    cube(i % 2)
            prof.create_stats()
            rows = [v for k, v in prof.stats.items() if k[2] == "cube"]
            self.assertEqual(rows[0][:2], (20, 20))
            self.assertEqual(stats(cube), (18, 2))
        finally:
            unmemoize(cube)


if __name__ == "__main__":
    unittest.main()
