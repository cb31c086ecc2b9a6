"""test_wrong_interpreter.py: importing a coextra tree built for another Python names both versions."""

import glob
import importlib.machinery
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import coextra

PACKAGE = os.path.dirname(os.path.abspath(coextra.__file__))
RUNNING = "%d.%d.%d" % sys.version_info[:3]


def import_in(python, tree):
    """Import coextra from `tree` alone (-E: no PYTHONPATH) under `python`; (returncode, stderr)."""
    code = "import sys; sys.path.insert(0, %r); import coextra" % tree
    p = subprocess.run([python, "-E", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    return p.returncode, p.stderr


def copy_package(dest, rename):
    """A copy of the built package in dest/coextra whose extension file is renamed by rename(name)."""
    pkg = os.path.join(dest, "coextra")
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for name in os.listdir(pkg):
        if name.startswith("_coextra."):
            os.rename(os.path.join(pkg, name), os.path.join(pkg, rename(name)))
    return pkg


class TestWrongInterpreter(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="coextra-wrongpy-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.suffix = importlib.machinery.EXTENSION_SUFFIXES[0]   # e.g. .cpython-312-x86_64-linux-gnu.so
        self.tag = "cpython-%d%d" % sys.version_info[:2]
        self.assertIn(self.tag, self.suffix)

    def test_extension_for_another_version_names_both(self):
        # As if built for a CPython 3.99: the file exists, but this interpreter never looks for that name.
        copy_package(self.tmp, lambda n: n.replace(self.tag, "cpython-399"))
        rc, err = import_in(sys.executable, self.tmp)
        self.assertNotEqual(rc, 0)
        last = err.strip().splitlines()[-1]
        self.assertTrue(last.startswith("ImportError: coextra: this coextra was built for CPython 3.99 ("), last)
        self.assertIn("but this is CPython %s" % RUNNING, last)
        self.assertIn(sys.executable, last)
        self.assertIn("_coextra" + self.suffix, last)
        self.assertNotIn("partially initialized", err)

    def test_a_loadable_name_that_fails_keeps_its_own_error(self):
        # The right name but not a loadable library: the loader's error, not a version message.
        pkg = copy_package(self.tmp, lambda n: n)
        for name in os.listdir(pkg):
            if name.startswith("_coextra."):
                with open(os.path.join(pkg, name), "wb") as f:
                    f.write(b"not an extension module")
        rc, err = import_in(sys.executable, self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertIn("ImportError", err)
        self.assertNotIn("was built for", err)

    def test_no_extension_at_all_keeps_the_original_error(self):
        pkg = copy_package(self.tmp, lambda n: n)
        for name in os.listdir(pkg):
            if name.startswith("_coextra."):
                os.remove(os.path.join(pkg, name))
        rc, err = import_in(sys.executable, self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot import name '_coextra'", err)
        self.assertNotIn("was built for", err)

    def test_the_built_tree_under_another_installed_python(self):
        # A real second interpreter (pyenv's or the system's, when this machine has one) importing
        # this very build tree.
        found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python3")))
        found += sorted(p for p in glob.glob("/usr/bin/python3.*") if re.fullmatch(r"python3\.\d+", os.path.basename(p)))
        others = [p for p in found if os.path.realpath(p) != os.path.realpath(sys.executable)]
        others = [p for p in others if subprocess.run(
            [p, "-c", "import sys; raise SystemExit(sys.version_info[:2] == %r)" % (sys.version_info[:2],)],
            timeout=60).returncode == 0]
        if not others:
            self.skipTest("no other CPython minor version installed (~/.pyenv, /usr/bin)")
        other = others[0]
        version = subprocess.run([other, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        rc, err = import_in(other, os.path.dirname(PACKAGE))
        self.assertNotEqual(rc, 0)
        last = err.strip().splitlines()[-1]
        self.assertIn("was built for CPython %d.%d (" % sys.version_info[:2], last)
        self.assertIn("but this is CPython %s" % version, last)


if __name__ == "__main__":
    unittest.main()
