"""test_frame_return.py: finishing frames without running them (coextra_frame_return, the JIT path), the
dispatcher's clean-up of hooks that neither delegate nor return, double delegation, frame objects.

3.12+ hand frame ownership to the eval-frame function (gh-96421): a frame that is not disposed of
exactly once leaks a reference to its code object and function and data-stack space per call, or
crashes.  These tests count references and memory around 100,000 calls."""

import gc
import sys
import tracemalloc
import unittest

import coextra
import coextra_test_native as native

from test_chain_helpers import CREATION_REACHES_HOOK, PY, ChainTestCase, UnraisableCatcher, native_events, rss_bytes

CALLS = 100_000


class Sentinel:
    pass


BODY_RAN = []


def memo_target(x, y=2, *args, **kwargs):
    BODY_RAN.append(x)
    return x + y


def make_closure():
    cell_value = Sentinel()

    def closure(x):
        BODY_RAN.append(cell_value)
        inner_cell = x

        def uses_cell():
            return inner_cell

        return uses_cell

    return closure, cell_value


def caller(fn, n, arg):
    r = None
    for _ in range(n):
        r = fn(arg)
    return r


class TestMemo(ChainTestCase):
    def _refcounts(self, *objs):
        gc.collect()
        return [sys.getrefcount(o) for o in objs]

    def test_memo_100k_calls_no_leak(self):
        code, fn = memo_target.__code__, memo_target
        arg = Sentinel()
        BODY_RAN.clear()
        self.add_native("memo", coextra.PRIORITY_OPTIMIZER, code)
        self.assertEqual(fn(arg), 42)
        caller(fn, 1000, arg)
        before = self._refcounts(code, fn, arg)
        rss0 = rss_bytes()
        tracemalloc.start()
        try:
            snap0 = tracemalloc.take_snapshot()
            r = caller(fn, CALLS, arg)
            snap1 = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        rss1 = rss_bytes()
        after = self._refcounts(code, fn, arg)
        self.assertEqual(r, 42)
        self.assertEqual(BODY_RAN, [], "the memoized body must never run")
        self.assertEqual(after, before, "refcounts of (code, function, argument) changed over %d calls" % CALLS)
        grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
        self.assertLess(grown, 256 * 1024, "tracemalloc: %d bytes more after %d calls" % (grown, CALLS))
        if rss0 is not None:
            # a frame left on the data stack per call would be >= 5 MB here
            self.assertLess(rss1 - rss0, 4 * 1024 * 1024, "RSS grew by %d bytes" % (rss1 - rss0))

    def test_memo_keywords_defaults_varargs_closure(self):
        BODY_RAN.clear()
        closure, cell_value = make_closure()
        ccode = closure.__code__
        arg = Sentinel()
        self.add_native("memo", 1000, memo_target.__code__, name="memo.a")
        self.add_native("memo", 999, ccode, name="memo.b")
        refs = self._refcounts(arg, cell_value, ccode, closure)
        for _ in range(2000):
            self.assertEqual(memo_target(arg, y=3, z=4), 42)
            self.assertEqual(memo_target(arg, 1, 2, 3), 42)
            self.assertEqual(closure(arg), 42)
        self.assertEqual(BODY_RAN, [])
        self.assertEqual(self._refcounts(arg, cell_value, ccode, closure), refs)

    def test_memo_under_outer_hooks_and_exceptions(self):
        # outer hooks wrap a memoized frame like any other and see its result
        log, enters, exits = [], [], []
        self.add_native("log", 100, log)
        self.add_hook(on_enter=enters.append, on_exit=exits.append, priority=200)
        self.add_native("memo", 1000, memo_target.__code__)
        BODY_RAN.clear()

        def use():
            try:
                return memo_target(1) + memo_target(2)
            finally:
                pass

        self.assertEqual(use(), 84)
        self.assertEqual(BODY_RAN, [])
        self.assertEqual([e[1] for e in native_events(log, "memo_target")], ["enter", "exit"] * 2)
        e, x = list(enters), list(exits)
        self.assertBalanced(e, x)
        self.assertEqual(e.count(memo_target.__code__), 2)

    def test_memo_in_threads(self):
        import threading
        self.add_native("memo", 1000, memo_target.__code__)
        BODY_RAN.clear()
        arg = Sentinel()
        refs = self._refcounts(arg, memo_target.__code__)
        out = []
        threads = [threading.Thread(target=lambda: out.append(caller(memo_target, 5000, arg))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(out, [42] * 4)
        self.assertEqual(BODY_RAN, [])
        self.assertEqual(self._refcounts(arg, memo_target.__code__), refs)


def gen_holding(obj):
    keep = obj
    yield 1
    yield keep


async def coro_holding(obj):
    keep = obj
    return keep


class TestReturnOnResumption(ChainTestCase):
    def test_generator_resumption_raises_systemerror(self):
        sentinel = Sentinel()
        base = sys.getrefcount(sentinel)
        gens = [gen_holding(sentinel) for _ in range(1000)]  # created before the hook: see below
        self.assertEqual(sys.getrefcount(sentinel), base + 1000)
        code = gen_holding.__code__
        # 'return' finishes every frame of `code` with None; on a resumption that
        # cannot be done, so SystemError is thrown into the frame.
        self.add_native("return", 1000, code=code)
        for g in gens:
            with self.assertRaises(SystemError) as cm:
                next(g)
            self.assertIn("cannot be skipped", str(cm.exception))
        # every generator is finished and has let go of its locals
        self.assertTrue(all(g.gi_frame is None for g in gens))
        gc.collect()
        self.assertEqual(sys.getrefcount(sentinel), base)
        for g in gens[:10]:
            with self.assertRaises(StopIteration):
                next(g)
        # the interpreter works normally; other frames are untouched
        self.assertEqual(sum(i for i in range(10)), 45)
        del gens
        gc.collect()
        self.assertEqual(sys.getrefcount(sentinel), base)

    def test_generator_creation_call(self):
        # 3.11+: the creating call of a generator function is an ordinary frame
        # for the chain (not a resumption): a hook may finish it with a value,
        # and the caller then gets that value instead of a generator.
        # 3.9/3.10: creation never reaches the chain; destroying the unstarted
        # generator closes it, which evaluates the frame with GeneratorExit
        # (throwflag): a resumption, so it becomes SystemError, reported as
        # unraisable by the generator's finalizer.
        sentinel = Sentinel()
        base = sys.getrefcount(sentinel)
        self.add_native("return", 1000, code=gen_holding.__code__)
        with UnraisableCatcher() as u:
            results = []
            for _ in range(1000):
                r = gen_holding(sentinel)
                results.append(type(r).__name__)
                del r
            gc.collect()
        seen = {t for t, m, o in u.seen}
        u.seen_raw_clear()  # the reports hold tracebacks, hence the frames' locals
        gc.collect()
        self.assertEqual(sys.getrefcount(sentinel), base)
        if CREATION_REACHES_HOOK:
            self.assertEqual(results, ["NoneType"] * 1000)
            self.assertEqual(seen, set())
        else:
            self.assertEqual(results, ["generator"] * 1000)
            self.assertEqual(seen, {SystemError})

    def test_coroutine_resumption(self):
        sentinel = Sentinel()
        base = sys.getrefcount(sentinel)
        coros = [coro_holding(sentinel) for _ in range(100)]
        self.add_native("return", 1000, code=coro_holding.__code__)
        for c in coros:
            with self.assertRaises(SystemError):
                c.send(None)
            self.assertIsNone(c.cr_frame)
        gc.collect()
        self.assertEqual(sys.getrefcount(sentinel), base)

    def test_throw_into_skipped_resumption(self):
        # throw() reaches the hook with an exception pending: SystemError
        # replaces it and the generator still finishes cleanly.
        sentinel = Sentinel()
        g = gen_holding(sentinel)
        next(g)
        self.add_native("return", 1000, code=gen_holding.__code__)
        with self.assertRaises(SystemError):
            g.throw(KeyError("k"))
        self.assertIsNone(g.gi_frame)


class TestOtherEndings(ChainTestCase):
    def _loop_no_leak(self, mode, expect, calls=20_000, fn=memo_target):
        BODY_RAN.clear()
        arg = Sentinel()
        code = fn.__code__
        self.add_native(mode, 1000, code=code)
        gc.collect()
        refs = [sys.getrefcount(o) for o in (arg, code, fn)]
        rss0 = rss_bytes()
        for _ in range(calls):
            expect(arg)
        gc.collect()
        self.assertEqual([sys.getrefcount(o) for o in (arg, code, fn)], refs)
        if rss0 is not None:
            self.assertLess(rss_bytes() - rss0, 4 * 1024 * 1024)

    def test_no_consume(self):
        # The hook returns None without delegating: the dispatcher disposes of
        # the frame as frame_return would, and the call returns None.
        def expect(arg):
            self.assertIsNone(memo_target(arg))

        self._loop_no_leak("no_consume", expect)
        self.assertEqual(BODY_RAN, [])

    def test_raise_without_delegating(self):
        def expect(arg):
            with self.assertRaisesRegex(RuntimeError, "native raise"):
                memo_target(arg)

        self._loop_no_leak("raise", expect)
        self.assertEqual(BODY_RAN, [])

    def test_double_next(self):
        def counted(x):
            BODY_RAN.append(None)
            return x

        def expect(arg):
            with self.assertRaisesRegex(SystemError, "already evaluated"):
                counted(arg)

        self._loop_no_leak("double_next", expect, calls=5000, fn=counted)
        self.assertEqual(len(BODY_RAN), 5000)  # the body ran exactly once per call

    def test_interpreter_usable_after_all_modes(self):
        self.assertEqual(memo_target(1, 2), 3)
        self.assertEqual(caller(memo_target, 10, 5), 7)


def with_cells(a, b):
    def inner():
        return a + b
    return inner()


def closure_factory(v):
    def closure_with_cells(x):
        w = x * 2

        def g():
            return v + w
        return g()
    return closure_with_cells


class TestFrameObject(ChainTestCase):
    def test_frame_object_has_code(self):
        got = []
        self.add_native("frame_object", 500, got, code=memo_target.__code__)
        self.assertEqual(memo_target(1, 2), 3)
        self.assertEqual(got, [(True, memo_target.__code__.co_firstlineno)])

    def test_frame_object_does_not_change_results(self):
        # Materialising the frame object before the frame starts (3.11+: the
        # frame is incomplete, cells and free variables not yet set up) must
        # not change what the function computes.
        closure = closure_factory(10)
        got = []
        for code in (with_cells.__code__, closure.__code__):
            self.add_native("frame_object", 500, got, code=code)
        for i in range(200):
            self.assertEqual(with_cells(i, 1), i + 1)
            self.assertEqual(closure(i), 10 + 2 * i)
        self.assertEqual(len(got), 400)
        self.assertTrue(all(same for same, line in got))

    def test_kept_frame_object(self):
        kept = []
        closure = closure_factory(7)
        self.add_native("keep_frame", 500, kept, code=memo_target.__code__)
        self.add_native("keep_frame", 501, kept, code=closure.__code__)

        def call_them():
            return memo_target(5, 6), closure(3)

        self.assertEqual(call_them(), (11, 13))
        self.assertEqual(len(kept), 2)
        f1, f2 = kept
        self.assertIs(f1.f_code, memo_target.__code__)
        self.assertIs(f2.f_code, closure.__code__)
        self.assertIs(f1.f_back.f_code, call_them.__code__)
        self.assertIs(f2.f_back.f_code, call_them.__code__)
        self.assertEqual(f1.f_locals["x"], 5)
        self.assertEqual(f1.f_locals["y"], 6)
        self.assertEqual(f2.f_locals["x"], 3)
        self.assertEqual(f2.f_locals["w"], 6)
        self.assertEqual(f2.f_locals["v"], 7)
        del f1, f2, kept[:]
        gc.collect()

    def test_frame_function_and_globals(self):
        got = []
        self.add_native("function", 500, got, code=memo_target.__code__)
        memo_target(1)
        (fn, glob), = got
        self.assertIs(glob, memo_target.__globals__)
        if PY >= (3, 11):
            self.assertIs(fn, memo_target)
        else:
            self.assertIsNone(fn)  # 3.9/3.10 frames do not record their function


if __name__ == "__main__":
    unittest.main()
