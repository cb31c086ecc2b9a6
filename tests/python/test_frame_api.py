"""test_frame_api.py: ABI 1.4 frame arguments and hiding from tracing, through a consumer built from include/ only."""

import gc
import sys
import threading
import types
import unittest

import coextra_test_native as native

from test_chain_helpers import CREATION_REACHES_HOOK, PY, ChainTestCase, uname


class TestFrameArguments(ChainTestCase):
    """coextra_frame_arguments: the parameters' values before the frame runs."""

    def watch(self, fn, frame_object_first=False):
        log = []
        h = native.add_args_hook(uname("args"), log, fn.__code__, frame_object_first)
        self.addCleanup(native.remove, h)
        return log

    def before(self, log):
        return [e[1] for e in log if e[0] == "before"]

    def assert_args(self, fn, call, expected, frame_object_first=False):
        log = self.watch(fn, frame_object_first)
        call()
        self.assertEqual(self.before(log), [("ok", expected)])
        after = [e[1] for e in log if e[0] == "after"]
        self.assertEqual(len(after), 1)
        self.assertIs(after[0][1], SystemError, after)
        self.assertIn("already finished", after[0][2])

    def test_positional_and_defaults(self):
        def f(a, b=2):
            return a + b
        self.assert_args(f, lambda: f(1), (1, 2))
        self.assert_args(f, lambda: f(b=5, a=3), (3, 5))

    def test_every_kind_of_parameter(self):
        # positional-only, positional, keyword-only (one defaulted), *args, **kwargs: declaration order
        def f(a, /, b, *rest, c, d=4, **kw):
            return a
        self.assert_args(f, lambda: f(1, 2, 3, 5, c=6, e=7), (1, 2, 6, 4, (3, 5), {"e": 7}))
        self.assert_args(f, lambda: f(1, b=2, c=3), (1, 2, 3, 4, (), {}))

    def test_cell_argument(self):
        # x is captured by g: 3.9/3.10 move it into its cell at the call,
        # 3.11+ wrap it in MAKE_CELL, which has not run when the hook reads it
        # (3.13+ runs it when the frame object is made first).
        def f(x):
            def g():
                return x
            return g()
        for first in (False, True):
            with self.subTest(frame_object_first=first):
                self.assert_args(f, lambda: f(5), (5,), first)
                # a cell passed as the argument is the value, not unwrapped
                cell = types.CellType(9)
                self.assert_args(f, lambda: f(cell), (cell,), first)

    def test_closure_free_variables_are_not_parameters(self):
        y = 10

        def g(a):
            return a + y
        for first in (False, True):
            with self.subTest(frame_object_first=first):
                self.assert_args(g, lambda: g(3), (3,), first)

    def test_method(self):
        class C:
            def m(self, x, *, k=1):
                return x

            @classmethod
            def c(cls, x):
                return x
        obj = C()
        self.assert_args(C.m, lambda: obj.m(4), (obj, 4, 1))
        self.assert_args(C.c.__func__, lambda: C.c(7), (C, 7))

    def test_generator(self):
        def gen(a):
            yield a
            yield a + 1
        log = self.watch(gen)
        self.assertEqual(list(gen(1)), [1, 2])
        got = self.before(log)
        # 3.11+: the creating call, then three resumptions; 3.9/3.10: the
        # first run (the frame has not started), then two resumptions.
        self.assertEqual(len(got), 4 if CREATION_REACHES_HOOK else 3, got)
        self.assertEqual(got[0], ("ok", (1,)))
        for e in got[1:]:
            self.assertIs(e[1], RuntimeError, got)
            self.assertIn("has already run", e[2])

    def test_null_frame(self):
        with self.assertRaisesRegex(SystemError, "frame is NULL"):
            native.frame_arguments_null()

    def test_no_reference_leaked(self):
        def f(a, *rest, **kw):
            return a
        obj = object()
        log = self.watch(f)
        before = sys.getrefcount(obj)
        for _ in range(50):
            f(obj, obj, k=obj)
        self.assertEqual(len(self.before(log)), 50)
        del log[:]
        gc.collect()
        self.assertEqual(sys.getrefcount(obj), before)


def make_adder(n):
    def add(x):
        return x + n
    return add


class TestFrameIsCallOf(ChainTestCase):
    """coextra_frame_is_call_of: functions that share one code object are told apart."""

    def calls_of(self, fn, run, code=None):
        log = []
        h = native.add_args_hook(uname("callof"), log, code or fn.__code__, fn=fn)
        self.addCleanup(native.remove, h)
        run()
        return [e[1] for e in log if e[0] == "is_call_of"]

    def test_closures_sharing_a_code_object(self):
        a, b = make_adder(1), make_adder(2)
        self.assertIs(a.__code__, b.__code__)
        self.assertEqual(self.calls_of(a, lambda: (a(0), b(0), a(1))),
                         [("ok", True), ("ok", False), ("ok", True)])

    def test_copy_with_other_globals(self):
        def f(x):
            return x
        g = types.FunctionType(f.__code__, {"__builtins__": __builtins__})
        self.assertEqual(self.calls_of(f, lambda: (g(1), f(1))), [("ok", False), ("ok", True)])

    def test_not_a_function(self):
        def f(x):
            return x
        got = self.calls_of(len, lambda: f(1), code=f.__code__)
        self.assertEqual(len(got), 1)
        self.assertIs(got[0][1], TypeError)
        self.assertIn("expected a Python function", got[0][2])


def call_tracer(seen):
    """A sys.settrace function that appends to seen the name of each code object called."""
    def tracer(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_name)
        return None
    return tracer


def traced_calls(run):
    """Names of the code objects sys.settrace saw called while run() ran."""
    seen = []
    sys.settrace(call_tracer(seen))
    try:
        run()
    finally:
        sys.settrace(None)
    return seen


def target():
    return 1


class TestHideFromTracing(ChainTestCase):
    """coextra_hide_from_tracing / coextra_unhide_from_tracing."""

    def test_settrace_does_not_see_hidden_code(self):
        self.assertIn("target", traced_calls(target))
        self.assertNotIn("target", traced_calls(lambda: native.call_hidden(target)))
        # shown again afterwards, nested hides included
        self.assertEqual(traced_calls(lambda: (native.call_hidden(lambda: native.call_hidden(target)), target()))
                         .count("target"), 1)

    def test_setprofile_does_not_see_hidden_code(self):
        seen = []
        sys.setprofile(lambda frame, event, arg: seen.append((frame.f_code.co_name, event)))
        try:
            native.call_hidden(target)
            target()
        finally:
            sys.setprofile(None)
        self.assertEqual([e for e in seen if e[0] == "target"], [("target", "call"), ("target", "return")])

    @unittest.skipUnless(PY >= (3, 12), "sys.monitoring is 3.12+")
    def test_monitoring_does_not_see_hidden_code(self):
        mon = sys.monitoring
        tool = next(t for t in range(6) if mon.get_tool(t) is None)
        seen = []
        mon.use_tool_id(tool, "test_frame_api")
        try:
            mon.register_callback(tool, mon.events.PY_START, lambda code, off: seen.append(code.co_name))
            mon.set_events(tool, mon.events.PY_START)
            native.call_hidden(target)
            target()
        finally:
            mon.set_events(tool, 0)
            mon.register_callback(tool, mon.events.PY_START, None)
            mon.free_tool_id(tool)
        self.assertEqual(seen.count("target"), 1)

    def test_settrace_while_hidden_takes_effect_after(self):
        seen = []
        try:
            native.call_hidden(lambda: sys.settrace(call_tracer(seen)))
            target()
        finally:
            sys.settrace(None)
        self.assertIn("target", seen)

    def test_shown_again_after_an_exception(self):
        def boom():
            raise KeyError("x")
        with self.assertRaises(KeyError):
            native.call_hidden(boom)
        self.assertIn("target", traced_calls(target))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "tstate is NULL"):
            native.hide_bad("null")
        with self.assertRaisesRegex(RuntimeError, "not hidden"):
            native.hide_bad("unhide")
        go = threading.Event()
        t = threading.Thread(target=go.wait)
        t.start()
        try:
            with self.assertRaisesRegex(ValueError, "not the calling thread's"):
                native.hide_bad("other")
        finally:
            go.set()
            t.join()
        self.assertIn("target", traced_calls(target))  # nothing was left hidden


if __name__ == "__main__":
    unittest.main()
