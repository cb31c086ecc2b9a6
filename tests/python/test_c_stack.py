"""test_c_stack.py: deep recursion under hooks ends in RecursionError, never a crash (3.9-3.11 C stack check)."""

# Before 3.12 CPython bounds only the Python recursion depth, and every
# Python call made through an eval-frame function takes C stack: with
# sys.setrecursionlimit raised, a pass-through eval-frame function crashes
# the process (3.11, limit 100,000: at depth 50,000).  coextra's dispatcher
# checks the C stack past a shallow depth and refuses the frame with
# RecursionError instead (frame_compat.h, COEXTRA_FC_C_STACK_CHECK).  3.12+
# have CPython's own C recursion check: the same outcome is asserted there.
# Each case runs in a child process, since the failure being guarded
# against is a crash.

import os
import subprocess
import sys
import textwrap
import unittest

import coextra  # noqa: F401  (the build under test must import)

CHILD = textwrap.dedent(r"""
    import sys, threading
    kind, where = sys.argv[1], sys.argv[2]
    sys.setrecursionlimit(100000)
    import coextra
    import coextra_test_native as native

    seen = []
    if kind == "native":
        handle = native.add("deep-native", 500, "pass", None)
    elif kind == "only":
        slot = native.reserve_slot("deep-only")
    elif kind == "python":
        hook = coextra.add_hook("deep-python", on_enter=lambda code: seen.append(1) if len(seen) < 1 else None)

    deepest = 0

    def down(n):
        global deepest
        deepest = n
        return down(n + 1)

    def probe():
        try:
            down(0)
        except RecursionError as e:
            print("RecursionError", deepest, str(e), flush=True)
        # The interpreter and the chain still work after the error.
        print("after", down.__name__, sum(i for i in range(10)), flush=True)

    if kind == "only":
        native.mark(down.__code__, slot)
        handle = native.add("deep-only", 500, "pass", None, only=slot)
    if where == "thread":
        threading.stack_size(4 << 20)
        t = threading.Thread(target=probe)
        t.start()
        t.join()
    else:
        probe()
    if kind in ("native", "only"):
        print("count", native.count(handle), flush=True)
        native.remove(handle)
    elif kind == "python":
        hook.remove()
    print("done", coextra.status().installed, flush=True)
""")


class TestDeepRecursionUnderHooks(unittest.TestCase):
    def run_child(self, kind, where):
        env = dict(os.environ)
        out = subprocess.run([sys.executable, "-c", CHILD, kind, where], capture_output=True, text=True,
                             env=env, timeout=300)
        return out

    def check(self, kind, where):
        out = self.run_child(kind, where)
        detail = "rc=%d\nstdout:\n%s\nstderr:\n%s" % (out.returncode, out.stdout, out.stderr[-3000:])
        self.assertEqual(out.returncode, 0, detail)
        lines = out.stdout.splitlines()
        first = [line for line in lines if line.startswith("RecursionError")]
        self.assertEqual(len(first), 1, detail)
        deepest = int(first[0].split()[1])
        # Not refused early: thousands of frames deep at least (a 4 MiB
        # thread stack, a quarter of it kept as margin).  3.12+ count every
        # call made through an eval-frame function against CPython's own C
        # recursion limit (3.12: 1500 C levels, about 750 Python frames), so
        # they stop far earlier, by design.
        self.assertGreater(deepest, 2000 if sys.version_info < (3, 12) else 100, detail)
        self.assertIn("after down 45", lines, detail)
        self.assertEqual(lines[-1], "done False", detail)
        if kind in ("native", "only"):
            count = int([line for line in lines if line.startswith("count")][0].split()[1])
            self.assertGreaterEqual(count, deepest, detail)  # the hook saw every frame it ran

    def test_native_pass_through_hook_main_thread(self):
        self.check("native", "main")

    def test_native_pass_through_hook_in_a_thread(self):
        self.check("native", "thread")

    def test_filtered_hook_main_thread(self):
        self.check("only", "main")

    def test_python_hook_main_thread(self):
        self.check("python", "main")


if __name__ == "__main__":
    unittest.main()
