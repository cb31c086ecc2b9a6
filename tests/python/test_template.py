"""test_template.py: examples/consumer_template builds for THIS Python by the documented route (meson -Dpython=)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "examples", "consumer_template")


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, **kw)
    return p.returncode, p.stdout


@unittest.skipIf(shutil.which("meson") is None or shutil.which("ninja") is None,
                 "meson or ninja is not installed for this row")
class TestTemplateForThisPython(unittest.TestCase):
    """The route writing-a-tool.md documents: `meson setup b -Dpython=<your python> -Dcoextra_from=python`,
    with coextra importable by that Python.  meson's own Python is usually another version (Debian's
    3.11 here), which is exactly what issue 18 hit: the default would build for the wrong one."""

    def test_meson_python_option_builds_and_runs(self):
        tmp = tempfile.mkdtemp(prefix="coextra-template-")
        self.addCleanup(shutil.rmtree, tmp, True)
        build = os.path.join(tmp, "b")
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        # meson runs `python -c 'import coextra'` (coextra_from=python): PYTHONPATH must find this build.
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
        rc, out = run(["meson", "setup", build, "-Dpython=" + sys.executable, "-Dcoextra_from=python"],
                      cwd=TEMPLATE, env=env)
        self.assertEqual(rc, 0, out)
        rc, out = run(["meson", "compile", "-C", build], env=env)
        self.assertEqual(rc, 0, out)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = [n for n in os.listdir(build) if n.startswith("calltally.") and n.endswith((".so", ".pyd"))]
        self.assertEqual(built, ["calltally" + suffix])   # for this Python, not meson's own
        env["PYTHONPATH"] = os.pathsep.join([build, env["PYTHONPATH"]])
        cwd = os.path.join(tmp, "cwd")
        os.mkdir(cwd)
        rc, out = run([sys.executable, os.path.join(TEMPLATE, "smoke_test.py")], cwd=cwd, env=env)
        self.assertEqual(rc, 0, out)
        self.assertIn("calltally OK", out)

    def test_a_wrong_python_option_fails_at_setup(self):
        tmp = tempfile.mkdtemp(prefix="coextra-template-")
        self.addCleanup(shutil.rmtree, tmp, True)
        missing = os.path.join(tmp, "no-such-python3")
        rc, out = run(["meson", "setup", os.path.join(tmp, "b"), "-Dpython=" + missing], cwd=TEMPLATE)
        self.assertNotEqual(rc, 0)
        self.assertIn("no-such-python3", out)


if __name__ == "__main__":
    unittest.main()
