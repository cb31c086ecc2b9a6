"""test_real_tools.py: coextra next to the real tools people run (Debian sid's coverage.py, line_profiler,
yappi and pyinstrument; Dynamo is in test_dynamo.py).

Each tool measures the same workload (workload.py) three ways: alone, then
with coextra's profiler, debugger (a breakpoint in code that never runs),
memoizer and a Python observer all active, the tool started first, then
coextra's tools started first.  The tool's own results must be those it
gets alone, and coextra's tools must get what they get without the tool.

The one legitimate difference is the memoizer's: a call that coextra_memo
answers from its cache never runs, so a tool that learns about calls from
sys.monitoring or sys.setprofile (all four do on 3.12+) does not see it.
That is checked to the call, not excused: `lookup` is seen exactly as often
as the memoizer missed.

A tool that sid ships for this Python but that does not import fails
(realtools.require); one that sid ships no build of is a skip naming that.
"""

import collections
import io
import sys
import unittest

import coextra

import realtools
import workload
from realtools import CoextraTools, require

ROUNDS = 3                        # workload.step per run
LOOKUP_PER_ROUND = 20             # workload.step calls lookup 20 times...
LOOKUP_KEYS = 5                   # ...with 5 distinct arguments: the memoizer misses 5 times per run


class ToolCase:
    """The three runs of one tool.  Subclasses give the tool's start/stop/results."""

    tool = None
    rounds = ROUNDS
    skip_reason = None

    @classmethod
    def run_workload(cls):
        return workload.run(cls.rounds)

    @classmethod
    def setUpClass(cls):
        try:
            cls.mod = require(cls.tool)
        except unittest.SkipTest as e:   # each test skips on its own: counted by run_unittests.py
            cls.skip_reason = str(e)
            return
        assert realtools.coextra_idle(), coextra.status()
        cls.lookup_calls = LOOKUP_PER_ROUND * cls.rounds
        cls.expected = cls.run_workload()
        # The references: the tool alone, and coextra's tools alone.
        cls.alone, r = cls.measure(with_tool=True, with_coextra=False)
        assert r == cls.expected
        cls.coextra_alone, r = cls.measure(with_tool=False, with_coextra=True)
        assert r == cls.expected

    @classmethod
    def measure(cls, with_tool, with_coextra, coextra_first=False):
        """(tool results or coextra results, workload result) of one run."""
        tool = cls.Tool(cls.mod) if with_tool else None
        cx = CoextraTools() if with_coextra else None
        first, second = (cx, tool) if coextra_first else (tool, cx)
        for t in (first, second):
            if t is not None:
                t.start()
        cls.status_during = coextra.status()
        try:
            result = cls.run_workload()
        finally:
            for t in (second, first):
                if t is not None:
                    t.stop()
        if tool is not None and cx is not None:
            return (tool.results(), cx.results()), result
        return (tool or cx).results(), result

    def setUp(self):
        if self.skip_reason:
            self.skipTest(self.skip_reason)
        self.assertTrue(realtools.coextra_idle(), coextra.status())

    def tearDown(self):
        self.assertTrue(realtools.coextra_idle(), coextra.status())
        self.assertIsNone(sys.gettrace())

    # -- the checks --------------------------------------------------------

    def test_alone(self):
        self.check_alone(self.alone)
        cx = self.coextra_alone
        self.assertEqual(cx["memo (hits, misses)"], (self.lookup_calls - LOOKUP_KEYS, LOOKUP_KEYS))
        self.assertEqual(cx["profiler (primitive, total calls)"]["lookup"], (self.lookup_calls, self.lookup_calls))
        self.assertEqual(cx["observer enters"]["lookup"], self.lookup_calls)
        self.assertEqual(cx["observer enters"], cx["observer exits"])
        self.assertEqual(cx["debugger frames"], 0)                     # the breakpoint's code never ran
        self.assertEqual(cx["debugger output"], "")
        self.assertIsNone(cx["trace function left"])

    def check_together(self, coextra_first):
        (mine, theirs), result = self.measure(True, True, coextra_first)
        st = self.status_during                                        # none of these tools uses PEP 523
        self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, False), st)
        self.assertEqual(result, self.expected)
        self.maxDiff = None
        self.assertEqual(theirs, self.coextra_alone)                   # coextra's tools: as without the tool
        self.check_with_coextra(mine, theirs)                          # the tool: as alone, memo aside

    def test_tool_first(self):
        self.check_together(coextra_first=False)

    def test_coextra_first(self):
        self.check_together(coextra_first=True)

    # -- per tool ------------------------------------------------------------

    def check_alone(self, results):
        raise NotImplementedError

    def check_with_coextra(self, results, cx):
        raise NotImplementedError


def lookup_lines():
    code = workload.lookup.__code__
    return sorted({line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno})


class TestCoverage(ToolCase, unittest.TestCase):
    """coverage.py: the set of executed lines of workload.py."""

    tool = "coverage"

    class Tool:
        def __init__(self, mod):
            self.cov = mod.Coverage(data_file=None, config_file=False, include=[workload.__file__])

        def start(self):
            self.cov.start()

        def stop(self):
            self.cov.stop()

        def results(self):
            return sorted(self.cov.get_data().lines(workload.__file__) or ())

    def check_alone(self, lines):
        cold = workload.cold.__code__.co_firstlineno
        self.assertIn(workload.fib.__code__.co_firstlineno + 1, lines)
        self.assertTrue(set(lookup_lines()) <= set(lines))
        self.assertNotIn(cold + 1, lines)                              # cold() never runs

    def check_with_coextra(self, lines, cx):
        # Lines are a set: the memoizer's misses run every line of lookup.
        self.assertEqual(lines, self.alone)


class TestLineProfiler(ToolCase, unittest.TestCase):
    """line_profiler: hits per line of every workload function."""

    tool = "line_profiler"

    class Tool:
        def __init__(self, mod):
            self.lp = mod.LineProfiler()

        def start(self):
            # add_function may give a function a new __code__ (see test_recodes_functions).
            for f in workload.FUNCTIONS.values():
                self.lp.add_function(f)
            self.lp.enable_by_count()

        def stop(self):
            self.lp.disable_by_count()

        def results(self):
            hits = collections.Counter()
            for (filename, _, name), lines in self.lp.get_stats().timings.items():
                if filename == workload.__file__:
                    for lineno, nhits, _ in lines:
                        hits[(name, lineno)] += nhits
            return dict(hits)

    @staticmethod
    def split(hits):
        """(hits outside lookup, hits of lookup's lines)."""
        return ({k: v for k, v in hits.items() if k[0] != "lookup"},
                {k[1]: v for k, v in hits.items() if k[0] == "lookup"})

    def check_alone(self, hits):
        fib_line = workload.fib.__code__.co_firstlineno + 1
        self.assertEqual(hits[("fib", fib_line)], ROUNDS * 1219)       # fib(14): 1219 calls
        self.assertEqual(self.split(hits)[1][lookup_lines()[0]], self.lookup_calls)

    def check_with_coextra(self, hits, cx):
        others, lookup = self.split(hits)
        alone_others, alone_lookup = self.split(self.alone)
        self.assertEqual(others, alone_others)
        # lookup's body runs on the memoizer's misses only.
        misses = cx["memo (hits, misses)"][1]
        self.assertEqual(misses, LOOKUP_KEYS)
        self.assertEqual(lookup[lookup_lines()[0]], misses)
        self.assertEqual(set(lookup), set(alone_lookup))

    def test_coextra_first(self):
        # line_profiler gives functions a new code object (test_recodes_functions),
        # and what coextra's tools stored on the old one stays there.  Started
        # first, the memoizer no longer sees lookup once line_profiler has
        # re-coded it: every call runs, and both tools count exactly that.
        tool, cx = self.Tool(self.mod), CoextraTools()
        cx.start()
        before = workload.lookup.__code__
        tool.start()
        try:
            result = self.run_workload()
        finally:
            tool.stop()
            cx.stop()
        self.assertEqual(result, self.expected)
        self.assertIsNot(workload.lookup.__code__, before)            # re-coded under the memoizer
        self.maxDiff = None
        self.assertEqual(cx.results(), dict(self.coextra_alone, **{"memo (hits, misses)": (0, 0)}))
        self.assertEqual(tool.results(), self.alone)                  # nothing was skipped
        # What a user does: memoize (or set breakpoints, or store any value on
        # the code) once line_profiler has added its functions.
        tool, cx = self.Tool(self.mod), CoextraTools()
        cx.start(memo=False)
        tool.start()
        try:
            cx.memoize()
            result = self.run_workload()
        finally:
            tool.stop()
            cx.stop()
        self.assertEqual(result, self.expected)
        self.assertEqual(cx.results(), self.coextra_alone)
        self.check_with_coextra(tool.results(), cx.results())

    def test_breakpoint_and_recoding(self):
        # coextra_debugger marks the code objects that hold a breakpoint.  Set
        # before line_profiler re-codes the function, the breakpoint is on the
        # old code and never stops; set after, it stops.  (If this starts
        # failing, the debugger follows re-coded functions: docs/coexisting.md.)
        import coextra_debugger
        line = workload.lookup.__code__.co_firstlineno + 1
        stopped = {}
        for breakpoint_first in (True, False):
            out = io.StringIO()
            dbg = coextra_debugger.Debugger(stdin=io.StringIO("c\n"), stdout=out, nosigint=True, readrc=False)
            lp = self.mod.LineProfiler()
            try:
                if not breakpoint_first:
                    lp.add_function(workload.lookup)
                self.assertIsNone(dbg.set_break(workload.__file__, line))
                dbg.attach()
                before = workload.lookup.__code__
                if breakpoint_first:
                    lp.add_function(workload.lookup)
                    self.assertIsNot(workload.lookup.__code__, before)
                self.assertEqual(workload.lookup(3), 5)
            finally:
                dbg.clear_all_breaks()
                dbg.detach()
            stopped[breakpoint_first] = "(%d)lookup()" % line in out.getvalue()
        self.assertEqual(stopped, {True: False, False: True})

    def test_recodes_functions(self):
        # Pinned line_profiler behaviour (5.0): functions with the same bytecode
        # (is_even/is_odd), and every function a later LineProfiler adds again,
        # get a new __code__ (the bytecode padded with NOPs).
        lp = self.mod.LineProfiler()
        before = workload.fib.__code__
        lp.add_function(workload.fib)           # fib was added by the runs before
        self.assertIsNot(workload.fib.__code__, before)
        self.assertEqual(workload.fib(10), 55)


class TestYappi(ToolCase, unittest.TestCase):
    """yappi: calls per workload function (sys.setprofile-based, all threads)."""

    tool = "yappi"

    class Tool:
        def __init__(self, mod):
            self.yappi = mod

        def start(self):
            self.yappi.clear_stats()
            self.yappi.set_clock_type("cpu")
            self.yappi.start(builtins=False, profile_threads=False)

        def stop(self):
            self.yappi.stop()
            self.calls = {}
            for s in self.yappi.get_func_stats():
                if s.module == workload.__file__:
                    self.calls[s.name] = (s.ncall, s.nactualcall)
            self.yappi.clear_stats()

        def results(self):
            return self.calls

    def check_alone(self, calls):
        self.assertEqual(calls["fib"][0], ROUNDS * 1219)
        self.assertEqual(calls["lookup"][0], self.lookup_calls)
        self.assertEqual(calls["Point.__init__"][0], ROUNDS * 60)

    def check_with_coextra(self, calls, cx):
        others = {k: v for k, v in calls.items() if k != "lookup"}
        self.assertEqual(others, {k: v for k, v in self.alone.items() if k != "lookup"})
        self.assertEqual(calls["lookup"][0], cx["memo (hits, misses)"][1])   # yappi sees the misses only


class TestPyinstrument(ToolCase, unittest.TestCase):
    """pyinstrument: a sampling profiler, so which workload functions it sampled, not how often."""

    tool = "pyinstrument"
    rounds = 30                   # about 0.1 s: enough samples to find every function named below
    # Functions that hold most of the workload's time, sampled in every run.
    SURE = {"run", "step", "fib", "squares"}

    class Tool:
        def __init__(self, mod):
            self.profiler = mod.Profiler(interval=0.0001, async_mode="disabled")

        def start(self):
            self.profiler.start()

        def stop(self):
            self.session = self.profiler.stop()

        def results(self):
            found = set()
            stack = [self.session.root_frame()]
            while stack:
                frame = stack.pop()
                if frame is None:
                    continue
                if frame.file_path == workload.__file__:
                    found.add(frame.function)
                stack.extend(frame.children)
            return found

    def check_alone(self, found):
        self.assertTrue(self.SURE <= found, found)
        self.assertTrue(found <= set(workload.FUNCTIONS) | {"__init__", "norm2", "<genexpr>", "<listcomp>"}, found)

    def check_with_coextra(self, found, cx):
        self.check_alone(found)


class TestTogetherWithoutCoextraHooks(unittest.TestCase):
    """coextra imported, slots holding values, no hook: it installs nothing, and the tools see nothing of it."""

    def test_idle_coextra_is_invisible(self):
        cov = require("coverage")
        slot = coextra.Slot("real_tools.idle")
        try:
            for f in workload.FUNCTIONS.values():
                slot[f.__code__] = True
            c = cov.Coverage(data_file=None, config_file=False, include=[workload.__file__])
            c.start()
            workload.run(ROUNDS)
            c.stop()
            self.assertFalse(coextra.status().installed)
            self.assertIn(workload.fib.__code__.co_firstlineno + 1, c.get_data().lines(workload.__file__))
        finally:
            slot.release()


if __name__ == "__main__":
    unittest.main()
