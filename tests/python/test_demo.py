"""test_demo.py: `make demo`'s script runs the three example tools together and shows each of them working."""
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "examples", "coexist", "demo.py")

try:
    import coextra_debugger, coextra_memo, coextra_profiler  # noqa: F401
    HAVE_TOOLS = True
except ImportError:
    HAVE_TOOLS = False


@unittest.skipUnless(HAVE_TOOLS, "example tools not built (-Dexamples=false)")
class DemoTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        p = subprocess.run([sys.executable, DEMO], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), COEXTRA_DEMO_QUICK="1"))
        cls.rc, cls.out, cls.err = p.returncode, p.stdout, p.stderr

    def test_exits_cleanly(self):
        self.assertEqual(self.rc, 0, self.err[-2000:])

    def test_debugger_stopped_and_printed_a_variable(self):
        self.assertRegex(self.out, r"> .*workload\.py\(\d+\)summarize\(\)")
        self.assertRegex(self.out, r"\('difflib\.py', \d+\)")

    def test_profiler_counted_the_workload(self):
        m = re.search(r"^\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+ workload\.py:\d+\(summarize\)", self.out, re.M)
        self.assertIsNotNone(m, self.out)
        self.assertEqual(int(m.group(1)), 18)  # 3 rounds x 6 files

    def test_memo_hits(self):
        m = re.search(r"hits=(\d+) misses=(\d+)", self.out)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (12, 6))

    def test_three_hooks_in_priority_order(self):
        block = self.out.split("coextra.hooks() while the three ran")[1].split("coextra.slots()")[0]
        names = re.findall(r"^(coextra_\w+)", block, re.M)
        self.assertEqual(len(names), 3)
        self.assertTrue(names[0].startswith("coextra_debugger"), names)
        self.assertTrue(names[1].startswith("coextra_profiler") and names[2] == "coextra_memo", names)

    def test_unloading_one_tool_leaves_the_others_working(self):
        self.assertIn("after unload: released (live = 0)", self.out)
        self.assertRegex(self.out, r"memo after unload: hits=18 \(\+6\) misses=6")
        self.assertRegex(self.out, r"debugger after unload stopped at .*summarize\(\) and printed \['\d+'\]")
        self.assertIn("status at the end: Status(installed=False", self.out)


if __name__ == "__main__":
    unittest.main()
