#!/usr/bin/env python3
"""meson_test.py: what `meson test` runs: installs the build into a stage inside the build directory, then one suite against it.

The `coextra` package only exists as an importable tree once installed (its
Python files live in the source tree, its extension in the build tree), so each
suite first runs `meson install --destdir` into <build>/meson-test-stage (under
a lock: meson runs the suites in parallel) and puts that stage first on
PYTHONPATH.  The interpreter running this script is the one the build was
configured for (tests/meson.build passes it), so its sys.prefix is the
PYTHONHOME of the embedded interpreter of the doctest binary.

usage: meson_test.py BUILD_ROOT INSTALL_DIR doctest BINARY
       meson_test.py BUILD_ROOT INSTALL_DIR unittest DIRECTORY
       meson_test.py BUILD_ROOT INSTALL_DIR script SCRIPT [ARGS...]
"""

import fcntl
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def stage(build_root, install_dir):
    """Install into <build_root>/meson-test-stage once per change; returns the stage's module directory.
    meson install builds what `meson test NAME` did not (it builds only that test's own targets)."""
    destdir = os.path.join(build_root, "meson-test-stage")
    meson = os.environ.get("MESON") or shutil.which("meson") or "meson"
    with open(os.path.join(build_root, "meson-test-stage.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([meson, "install", "-C", build_root, "--only-changed", "--quiet",
                        "--destdir", destdir], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(destdir, os.path.relpath(install_dir, os.sep))


def main(argv):
    build_root, install_dir, suite, target = argv[1:5]
    site = stage(build_root, install_dir)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    if suite == "doctest":
        env.update(PYTHONPATH=site, PYTHONHOME=sys.prefix)
        cmd = [target]
    elif suite == "unittest":
        env["PYTHONPATH"] = os.pathsep.join([site, target])
        cmd = [sys.executable, os.path.join(HERE, "run_unittests.py"), target]
    elif suite == "script":
        env["PYTHONPATH"] = site
        cmd = [sys.executable, target] + argv[5:]
    else:
        sys.exit("meson_test.py: unknown suite %r" % suite)
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
