"""test_example_debugger.py: coextra_debugger driven through a pipe as a person would type, compared line by line with `python -m pdb` of the same Python; plus in-process checks that cold breakpoints trace nothing."""

import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from test_chain_helpers import ChainTestCase

try:
    import coextra
    import coextra_debugger
    from coextra_debugger import _debugger
except ImportError as e:  # examples not built
    coextra_debugger = None
    _IMPORT_ERROR = str(e)


PROG = textwrap.dedent('''\
    import sys


    def square(n):
        result = n * n
        return result


    def compute(values):
        total = 0
        for v in values:
            total += square(v)
        data = {"total": total, "values": list(values)}
        return data


    def never_called():
        return 42


    def main():
        import latemod
        out = compute([1, 2, 3])
        print("tracer off:", sys.gettrace() is None)
        r = latemod.work(4)
        print("result", out["total"], r)


    main()
    ''')

# Imported by PROG only after the session has started: breakpoints set in it
# at the first prompt are on code that does not exist yet.
LATEMOD = textwrap.dedent('''\
    def helper(k):
        return k + 1


    def work(k):
        acc = []
        for i in range(k):
            acc.append(helper(i))
        return sum(acc)
    ''')

# Dies with an uncaught exception: pdb's post-mortem path.
CRASH = textwrap.dedent('''\
    def inner(v):
        w = v + 1
        return w


    def bad(x):
        y = inner(x) * 2
        raise RuntimeError("boom %d" % y)


    bad(3)
    ''')


@unittest.skipIf(coextra_debugger is None, "coextra_debugger not built: %s" % (
    _IMPORT_ERROR if coextra_debugger is None else ""))
class PipeSessions(unittest.TestCase):
    """Each session is typed into both debuggers; the transcripts must agree."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="coextra_dbg_")
        with open(os.path.join(cls.dir, "prog.py"), "w") as f:
            f.write(PROG)
        with open(os.path.join(cls.dir, "latemod.py"), "w") as f:
            f.write(LATEMOD)
        with open(os.path.join(cls.dir, "crash.py"), "w") as f:
            f.write(CRASH)
        cls.prog = os.path.realpath(os.path.join(cls.dir, "prog.py"))
        cls.latemod = os.path.realpath(os.path.join(cls.dir, "latemod.py"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def session(self, module, commands, script="prog.py"):
        env = dict(os.environ, HOME=self.dir, PYTHONDONTWRITEBYTECODE="1", PYTHON_COLORS="0", NO_COLOR="1",
                   TERM="dumb")
        env.pop("PYTHONSTARTUP", None)
        tree = os.path.dirname(os.path.dirname(os.path.abspath(coextra_debugger.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([tree] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        p = subprocess.run([sys.executable, "-m", module, script], input="\n".join(commands) + "\n",
                           cwd=self.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout)
        return p.stdout

    def compare(self, commands, script="prog.py"):
        """Run the session under both; return both transcripts (lines) after checking that they agree."""
        ours = self.session("coextra_debugger", commands, script).splitlines()
        ref = self.session("pdb", commands, script).splitlines()
        # The one intended difference: the script prints whether a trace
        # function is installed while it runs between stops.  coextra_debugger
        # never has one there; pdb has one whenever a breakpoint exists.
        for l in ours:
            if "tracer off:" in l:
                self.assertTrue(l.endswith("tracer off: True"), l)
        norm = lambda lines: [l.replace("tracer off: False", "tracer off: True") for l in lines]
        self.maxDiff = None
        self.assertEqual(norm(ours), norm(ref), "\n--- ours ---\n%s\n--- pdb ---\n%s" % (
            "\n".join(ours), "\n".join(ref)))
        # Started like pdb: stopped at the first line of the script.
        self.assertIn("> %s(1)<module>()" % os.path.join(os.path.dirname(self.prog), script), ours[0])
        return ours, ref

    @staticmethod
    def stops(lines):
        """The stop locations "file(line)func()" (with "->value" on a return)."""
        found = []
        for l in lines:
            while l.startswith("(Pdb) "):
                l = l[len("(Pdb) "):]
            if l.startswith("> "):
                found.append(l[2:])
        return found

    def test_line_function_and_late_module_breakpoints(self):
        out, ref = self.compare([
            "b square",            # by function, before it is even defined (pdb finds the def)
            "b latemod.py:8",      # by line, in a module imported later
            "c",
            "p n",
            "bt",
            "n",
            "p result",
            "r",
            "n",                   # out of square, back into compute
            "cl 1",
            "c",
            "p acc",
            'pp {"a": acc, "i": i, "k": k}',
            "u",
            "d",
            "l",
            "cl 2",
            "c",                   # runs to the end; pdb restarts the program
            "q",
        ])
        text = "\n".join(out)
        self.assertIn("tracer off: True", text)
        # pdb: traced by sys.settrace while a breakpoint exists; since 3.14 `python -m pdb`
        # uses its sys.monitoring backend, and sys.gettrace() stays None there too.
        self.assertIn("tracer off: %s" % (sys.version_info >= (3, 14)), "\n".join(ref))
        stops = self.stops(out)
        self.assertIn("%s(5)square()" % self.prog, stops)
        self.assertIn("%s(8)work()" % self.latemod, stops)
        self.assertIn("%s(11)compute()" % self.prog, stops)   # after n out of square
        self.assertIn("(Pdb) 1", text)                       # p n / p result
        self.assertIn("{'a': [], 'i': 0, 'k': 4}", text)     # pp
        self.assertIn("%s(23)main()" % self.prog, text)      # bt
        self.assertIn("result 14 10", text)
        self.assertIn("The program finished and will be restarted", text)

    def test_step_next_until_return(self):
        out, _ = self.compare([
            "b compute",
            "b latemod.work",      # function in a module not imported yet
            "c",
            "n",
            "n",
            "s",                   # into square: --Call--
            "s",
            "s",
            "s",                   # --Return--
            "s",                   # back in compute
            "unt 13",
            "p total",
            "p data",
            "c",
            "w",
            "p k",
            "r",
            "c",
            "q",
        ])
        text = "\n".join(out)
        stops = self.stops(out)
        self.assertIn("--Call--", text)
        self.assertIn("--Return--", text)
        self.assertIn("%s(4)square()" % self.prog, stops)
        self.assertIn("%s(13)compute()" % self.prog, stops)
        self.assertIn("(Pdb) 14", text)
        self.assertTrue(any(s.startswith("%s(6)work()" % self.latemod) for s in stops), stops)
        self.assertIn("%s(9)work()->10" % self.latemod, stops)

    def test_clear_all_then_run_untraced(self):
        out, _ = self.compare([
            "b square",
            "b never_called",
            "tbreak latemod.py:6",
            "c",                   # square runs before latemod is imported
            "p n",
            "cl",
            "y",
            "c",                   # nothing left: runs to the end, restarts
            "b",                   # breakpoint list is empty
            "q",
        ])
        text = "\n".join(out)
        self.assertIn("Clear all breaks?", text)
        self.assertIn("result 14 10", text)
        self.assertEqual(text.count("tracer off: True"), 1)

    def test_quit_at_breakpoint(self):
        out, _ = self.compare(["b latemod.py:8", "c", "p i", "q"])
        self.assertIn("> %s(8)work()" % self.latemod, "\n".join(out))
        self.assertNotIn("result", "\n".join(out))

    def test_temporary_breakpoint_in_late_module(self):
        out, _ = self.compare(["tbreak latemod.work", "c", "p k", "c", "b", "q"])
        text = "\n".join(out)
        self.assertIn("Deleted breakpoint 1", text)
        self.assertIn("(Pdb) 4", text)

    def test_post_mortem_and_recursive_debug(self):
        out, _ = self.compare(["b inner", "c", "debug inner(10)", "s", "n", "p w", "c", "p v", "c",
                               "p x", "p y", "bt", "q"], script="crash.py")
        text = "\n".join(out)
        self.assertIn("ENTERING RECURSIVE DEBUGGER", text)
        self.assertIn("LEAVING RECURSIVE DEBUGGER", text)
        self.assertIn("RuntimeError: boom 8", text)
        self.assertIn("Uncaught exception. Entering post mortem debugging", text)
        self.assertIn("(Pdb) 8", text)   # p y, post mortem
        self.assertNotIn("coextra_debugger", text)  # no frame of ours in the traceback or bt


COLD = textwrap.dedent('''\
    import sys


    def cold(x):
        y = x * 2
        return y


    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)


    def hot():
        seen = [sys.gettrace(), sys._getframe().f_trace]
        r = fib(15)
        seen += [sys.gettrace(), sys._getframe().f_trace]
        return r, seen


    class Point:
        def __init__(self, x):
            self.x = x


    def make_points(n):
        return [Point(i) for i in range(n)]


    def gen(n):
        for i in range(n):
            yield i * 10
    ''')

LATER = textwrap.dedent('''\
    def later(k):
        z = k + 1
        return z
    ''')


@unittest.skipIf(coextra_debugger is None, "coextra_debugger not built")
class InProcess(ChainTestCase):
    """A breakpoint in code that never runs: nothing is traced, the hook sees nothing."""

    def setUp(self):
        super().setUp()  # coextra idle before and after: a leaked observer fails the test
        if sys.gettrace() is not None:
            self.skipTest("running under a tracer (coverage?)")
        self.dir = tempfile.mkdtemp(prefix="coextra_dbg_ip_")
        for name, src in (("dbg_cold_mod", COLD), ("dbg_later_mod", LATER)):
            with open(os.path.join(self.dir, name + ".py"), "w") as f:
                f.write(src)
        sys.path.insert(0, self.dir)
        self.mod = importlib.import_module("dbg_cold_mod")
        self.out = io.StringIO()
        self.input = io.StringIO("")
        self.dbg = coextra_debugger.Debugger(stdin=self.input, stdout=self.out, nosigint=True, readrc=False)

    def tearDown(self):
        self.dbg.clear_all_breaks()
        self.dbg.detach()
        coextra_debugger._shutdown()
        sys.path.remove(self.dir)
        for name in ("dbg_cold_mod", "dbg_later_mod"):
            sys.modules.pop(name, None)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.assertIsNone(sys.gettrace())

    def test_cold_breakpoint_traces_nothing(self):
        self.assertIsNone(self.dbg.set_break(self.mod.__file__, 5))
        self.dbg.attach()
        self.assertTrue(coextra_debugger.is_marked(self.mod.cold.__code__))
        self.assertFalse(coextra_debugger.is_marked(self.mod.fib.__code__))
        self.assertFalse(coextra_debugger.is_marked(self.mod.hot.__code__))
        status = coextra.status()
        # 3.12+: the debugger's observer runs on sys.monitoring events of the marked code, and
        # coextra installs no eval-frame function; before, it is a hook of the chain.
        monitored = sys.version_info >= (3, 12)
        self.assertEqual(_debugger.stats()["monitored"], monitored)
        self.assertEqual(status.installed, not monitored, status)
        self.assertEqual(status.monitoring_tool_id is not None, monitored, status)
        self.assertFalse(status.displaced, status)
        mine = [h for h in coextra.hooks() if h.name == "coextra_debugger"]
        self.assertEqual(mine, [coextra.HookInfo("coextra_debugger", coextra.PRIORITY_DEBUGGER, True, True)])
        self.assertIn("coextra_debugger", [s.name for s in coextra.slots()])
        before = _debugger.stats()["frames"]
        r, seen = self.mod.hot()
        self.assertEqual(r, 610)
        self.assertEqual(seen, [None, None, None, None])   # no trace function, no frame traced
        self.assertIsNone(sys.gettrace())
        self.assertEqual(_debugger.stats()["frames"], before)  # the hook never saw an unmarked frame
        self.assertEqual(self.out.getvalue(), "")
        self.dbg.detach()
        mine = [h for h in coextra.hooks() if h.name == "coextra_debugger"]
        self.assertEqual([h.active for h in mine], [False])

    def test_marked_code_stops_then_tracing_goes_off(self):
        self.input.write("p x\nn\np y\nc\n")
        self.input.seek(0)
        self.dbg.set_break(self.mod.__file__, 5)
        later_file = os.path.join(self.dir, "dbg_later_mod.py")
        self.assertIsNone(self.dbg.set_break(later_file, 2))  # module not imported yet
        self.dbg.attach()
        self.assertEqual(self.mod.cold(21), 42)
        self.assertIsNone(sys.gettrace())
        out = self.out.getvalue()
        self.assertIn("> %s(5)cold()" % os.path.realpath(self.mod.__file__), out)
        self.assertIn("(Pdb) 21", out)
        self.assertIn("(Pdb) 42", out)
        # Code first seen after the breakpoint was set: marked on import.
        later = importlib.import_module("dbg_later_mod")
        self.assertTrue(coextra_debugger.is_marked(later.later.__code__))
        self.input.seek(0)
        self.input.truncate()
        self.input.write("p k\nc\n")
        self.input.seek(0)
        self.assertEqual(later.later(6), 7)
        self.assertIn("(Pdb) 6", self.out.getvalue())
        self.assertIsNone(sys.gettrace())
        # Clearing unmarks.
        self.dbg.clear_all_breaks()
        self.assertFalse(coextra_debugger.is_marked(self.mod.cold.__code__))
        self.assertFalse(coextra_debugger.is_marked(later.later.__code__))

    def run_with_input(self, commands, func, *args):
        self.input.seek(0)
        self.input.truncate()
        self.input.write("".join(c + "\n" for c in commands))
        self.input.seek(0)
        start = len(self.out.getvalue())
        r = func(*args)
        return r, self.out.getvalue()[start:]

    def test_init_of_specialized_call_site(self):
        # CPython 3.13.0 enters __init__ of a specialized Cls(...) call
        # without the eval-frame hook (CALL_ALLOC_AND_ENTER_INIT): the 150th
        # call is long specialized by then.
        self.dbg.set_break(self.mod.__file__, 22, cond="x == 150")
        self.dbg.attach()
        pts, out = self.run_with_input(["p x", "c"], self.mod.make_points, 200)
        self.assertEqual(len(pts), 200)
        self.assertIn("(22)__init__()", out)
        self.assertIn("(Pdb) 150", out)
        self.assertIsNone(sys.gettrace())

    def test_generator_resumptions(self):
        self.dbg.set_break(self.mod.__file__, 31)
        self.dbg.attach()
        clear = "cl %s:31" % self.mod.__file__  # breakpoint numbers are process-wide in bdb
        r, out = self.run_with_input(["p i", "c", "p i", clear, "c"], lambda: list(self.mod.gen(4)))
        self.assertEqual(r, [0, 10, 20, 30])
        self.assertEqual(out.count("(31)gen()"), 2)
        self.assertIn("(Pdb) 0", out)
        self.assertIn("(Pdb) 1", out)
        self.assertIsNone(sys.gettrace())


if __name__ == "__main__":
    unittest.main()
