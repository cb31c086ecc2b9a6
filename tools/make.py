#!/usr/bin/env python3
"""make.py: builds coextra for every CPython found, runs every suite on each, prints a table and 'N passed, N failed'."""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("COEXTRA_BUILD_DIR") or os.path.join(ROOT, "build")
MIN_VERSION = (3, 9)
SIDROOT = os.path.join(ROOT, "tools", "sidroot.sh")
# Interpreters from Debian sid, run inside the sid root (tools/sidroot.sh): (tag, exe inside the root).
SID_PYTHONS = [("py3.13-sid", "/usr/bin/python3.13"), ("py3.14", "/usr/bin/python3.14"),
               ("py3.14d", "/usr/bin/python3.14d"), ("py3.15", "/usr/bin/python3.15")]
# Extra builds of one Python (rows "py3.12-<name>"): name -> (meson options, environment).  The matrix
# builds with GCC at debugoptimized (asserts on); these rows build with clang, and as
# `pip install .` builds (release: -O3, NDEBUG), and run the doctest and unittest suites only.
VARIANT_PYTHON = "3.12"
VARIANTS = {"clang": ([], {"CC": "clang", "CXX": "clang++"}),
            "release": (["-Dbuildtype=release"], {})}
VARIANT_SUITES = ("doctest", "unittest")


def log(msg):
    print(msg, flush=True)


def pyenv_root():
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/.pyenv")


class Interp:
    """One row of the matrix: an interpreter, where it runs, and the tag its build is named by."""

    def __init__(self, exe, kind, tag=None, variant=None):
        self.exe, self.kind, self.tag = exe, kind, tag  # kind: "pyenv" | "system" | "sid"
        self.variant = variant  # a key of VARIANTS, or None

    @property
    def sid(self):
        return self.kind == "sid"

    def wrap(self, cmd, cwd=ROOT):
        """cmd as it must be run for this interpreter: inside the sid root for sid rows (the
        checkout is mounted there at the same path, so every path stays valid)."""
        return ["bash", SIDROOT, "run", "-C", cwd] + list(cmd) if self.sid else list(cmd)

    def exists(self):
        if self.sid:
            root = subprocess.run(["bash", SIDROOT, "path"], capture_output=True, text=True).stdout.strip()
            return os.path.exists(root + self.exe)
        return os.path.exists(self.exe)


def python_version(interp):
    out = subprocess.run(interp.wrap([interp.exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]),
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def find_pythons():
    """[Interp].  PYTHONS="exe sid:exe ..." overrides discovery (sid:EXE = EXE inside the sid root;
    the VARIANTS rows then only with COEXTRA_VARIANTS); COEXTRA_SID=0 leaves out the sid rows
    (reported, never silent)."""
    if os.environ.get("PYTHONS"):
        found = []
        for exe in os.environ["PYTHONS"].split():
            if exe.startswith("sid:"):
                exe = exe[4:]
                tags = [t for t, e in SID_PYTHONS if e == exe or os.path.basename(e) == exe]
                found.append(Interp(exe if exe.startswith("/") else "/usr/bin/" + exe, "sid",
                                    tags[0] if tags else None))
            else:
                found.append(Interp(exe, "pyenv" if exe.startswith(pyenv_root()) else "system"))
        if os.environ.get("COEXTRA_VARIANTS"):
            found += variant_rows(found)
        return found
    exes = []
    for d in sorted(glob.glob(os.path.join(pyenv_root(), "versions", "*"))):
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", os.path.basename(d))
        if m and (int(m[1]), int(m[2])) >= MIN_VERSION:
            exes.append(os.path.join(d, "bin", "python%s.%s" % (m[1], m[2])))
    exes.sort(key=lambda e: [int(x) for x in re.findall(r"python(\d+)\.(\d+)", e)[0]])
    found = [Interp(e, "pyenv") for e in exes]
    found += variant_rows(found)
    if os.path.exists("/usr/bin/python3"):
        found.append(Interp("/usr/bin/python3", "system"))
    if os.environ.get("COEXTRA_SID", "1") != "0":
        found += [Interp(exe, "sid", tag) for tag, exe in SID_PYTHONS]
    else:
        log("COEXTRA_SID=0: the sid rows (%s) are NOT run" % ", ".join(t for t, _ in SID_PYTHONS))
    return found


def variant_rows(found):
    """The VARIANTS rows of the pyenv VARIANT_PYTHON among found (COEXTRA_VARIANTS="clang" etc. picks,
    "" drops them)."""
    names = os.environ.get("COEXTRA_VARIANTS", " ".join(VARIANTS)).split()
    unknown = set(names) - set(VARIANTS)
    if unknown:
        sys.exit("COEXTRA_VARIANTS: unknown %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(VARIANTS)))
    base = [i for i in found if i.kind == "pyenv" and not i.variant
            and re.search(r"/%s\.\d+/bin/|python%s$" % (re.escape(VARIANT_PYTHON), re.escape(VARIANT_PYTHON)), i.exe)]
    if names and not base:
        log("no pyenv Python %s: the rows %s are NOT run" % (VARIANT_PYTHON, ", ".join(
            "py%s-%s" % (VARIANT_PYTHON, n) for n in names)))
    return [Interp(i.exe, i.kind, variant=name) for i in base[:1] for name in names]


def tag_for(interp):
    ver = python_version(interp)
    if interp.tag is None:
        short = ".".join(ver.split(".")[:2])
        interp.tag = {"system": "py%s-system", "sid": "py%s-sid"}.get(interp.kind, "py%s") % short
        if interp.variant:
            interp.tag += "-" + interp.variant
    return interp.tag, ver


def run(cmd, log_path=None, timeout=1800, env=None, cwd=ROOT, interp=None):
    """Run cmd (inside the sid root for a sid interp); output to log_path (or captured).  Returns (rc, output)."""
    t0 = time.time()
    if interp is not None:
        cmd = interp.wrap(cmd, cwd)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += "\n*** TIMEOUT after %ds ***\n" % timeout
    if log_path:
        with open(log_path, "a") as f:
            f.write("$ %s   (%.1fs, rc=%d)\n%s\n" % (" ".join(cmd), time.time() - t0, rc, out))
    return rc, out


def setup_deps(interps=(), say=log):
    rc, out = run(["bash", os.path.join(ROOT, "tools", "setup-deps.sh")], timeout=1800)
    if rc != 0:
        say(out)
        sys.exit("setup-deps failed")
    if any(i.sid for i in interps):
        # Not fatal here: a sid row whose interpreter is missing fails loudly below.
        t0 = time.time()
        rc, out = run(["bash", SIDROOT, "ensure"], timeout=3000)
        say(("sid root: %s (%.0fs)" % (out.strip().splitlines()[-1] if out.strip() else "ready", time.time() - t0))
            if rc == 0 else "SID ROOT SET-UP FAILED (rc=%d):\n%s" % (rc, out))


def build_one(tag, interp, logf, extra_opts=()):
    """Configure, compile and install into build/<tag>/ (the importable tree)."""
    bdir = os.path.join(BUILD, "meson-" + tag)
    stage = os.path.join(BUILD, tag)
    prefix = os.path.join(BUILD, "install-" + tag)
    opts, env = VARIANTS[interp.variant] if interp.variant else ([], {})
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        rc, out = run(["meson", "setup", bdir, "-Dpython=" + interp.exe, "--prefix=" + prefix,
                       "-Dpython.platlibdir=" + stage, "-Dpython.purelibdir=" + stage] + opts + list(extra_opts)
                      + os.environ.get("COEXTRA_MESON_OPTS", "").split(),
                      logf, interp=interp, env=dict(os.environ, **env))
        if rc != 0:
            return False, "meson setup failed"
    rc, out = run(["meson", "compile", "-C", bdir], logf, interp=interp)
    if rc != 0:
        return False, "compile failed"
    rc, out = run(["meson", "install", "-C", bdir, "--quiet"], logf, interp=interp)
    if rc != 0:
        return False, "install failed"
    return True, ""


def cmd_build(args, say=log):
    """Build every row; say() gets the progress lines (make demo collects them instead)."""
    interps = find_pythons()
    setup_deps(interps, say)
    os.makedirs(BUILD, exist_ok=True)
    ok_all = True
    results = []
    for interp in interps:
        if not interp.exists():
            say("MISSING: %s%s" % (interp.exe, " (in the sid root)" if interp.sid else ""))
            results.append((interp.tag or interp.exe, interp, "?", False, "interpreter missing"))
            ok_all = False
            continue
        tag, ver = tag_for(interp)
        logf = os.path.join(BUILD, "log-%s.txt" % tag)
        open(logf, "w").close()
        ok, why = build_one(tag, interp, logf)
        say("%-16s %-8s %s" % (tag, ver, "built" if ok else "BUILD FAILED: %s (see %s)" % (why, logf)))
        results.append((tag, interp, ver, ok, why))
        ok_all &= ok
    return ok_all, results


# ---- suites ---------------------------------------------------------------
# Each suite returns (passed, failed, detail) for one Python.

def suite_doctest(tag, interp, logf):
    binary = os.path.join(BUILD, "meson-" + tag, "tests", "test_runtime")
    if not os.path.exists(binary):
        return 0, 1, "doctest binary missing"
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), PYTHONHOME=sys_prefix(interp))
    rc, out = run([binary], logf, timeout=600, env=env, interp=interp)
    m = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", out)
    if not m:
        return 0, 1, "no doctest summary (rc=%d)" % rc
    passed, failed = int(m[2]), int(m[3])
    if rc != 0 and failed == 0:
        failed = 1
    return passed, failed, ""


def sys_prefix(interp):
    """sys.prefix of an Interp (or of an interpreter path on this machine)."""
    if isinstance(interp, str):
        interp = Interp(interp, "system")
    return subprocess.run(interp.wrap([interp.exe, "-c", "import sys; print(sys.prefix)"]), capture_output=True,
                          text=True).stdout.strip()


def suite_unittest(tag, interp, logf, directory="tests/python"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(BUILD, tag), os.path.join(ROOT, directory)]),
               COEXTRA_BUILD_TAG=tag, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([interp.exe, os.path.join(ROOT, "tests", "run_unittests.py"), os.path.join(ROOT, directory)],
                  logf, timeout=1800, env=env, interp=interp)
    m = re.search(r"^COEXTRA-RESULT passed=(\d+) failed=(\d+) skipped=(\d+)$", out, re.M)
    if not m:
        return 0, 1, "no result line (rc=%d)" % rc
    passed, failed = int(m[1]), int(m[2])
    if rc != 0 and failed == 0:
        failed = 1
    return passed, failed, ("%s skipped" % m[3]) if int(m[3]) else ""


# The rows the tools suite runs on: Debian sid's release 3.14 and 3.15, for which sid ships the real
# tools (which of them for which Python, tests/real_tools/realtools.py reads from dpkg: there, a tool
# sid ships that does not import fails).  Elsewhere it is n/a: pyenv's and the system's Pythons have
# none of sid's packages, sid ships none of the tools for 3.13, and on the debug 3.14d torch.compile
# alone would take most of two minutes.
TOOLS_ROWS = ("py3.14", "py3.15")


def suite_tools(tag, interp, logf):
    """tests/real_tools: coextra next to torch.compile, coverage.py, line_profiler, yappi and pyinstrument."""
    if not interp.sid:
        return 0, 0, "n/a (sid's packages: sid rows only)"
    if tag not in TOOLS_ROWS:
        return 0, 0, "n/a (rows %s only)" % ", ".join(TOOLS_ROWS)
    return suite_unittest(tag, interp, logf, directory=os.path.join("tests", "real_tools"))


def suite_packaging(tag, interp, logf):
    """pip install into a venv, pkg-config, the out-of-tree template: Debian's Python only (python3-mesonpy)."""
    if not tag.endswith("-system"):
        return 0, 0, "n/a (system Python only)"
    rc, out = run(["bash", os.path.join(ROOT, "tests", "packaging", "run_packaging.sh"), interp.exe,
                   os.path.join(BUILD, "install-" + tag), os.path.join(BUILD, "packaging-" + tag)],
                  logf, timeout=1200, interp=interp)
    passed = len(re.findall(r"^PASS ", out, re.M))
    failed = len(re.findall(r"^FAIL ", out, re.M))
    if rc != 0 or passed == 0:
        failed = max(failed, 1)
    return passed, failed, ""


def suite_bench(tag, interp, logf):
    """bench/run_bench.py --quick: the benchmark harness runs end to end (tiny sizes, nothing timed is asserted)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), COEXTRA_BUILD_TAG=tag, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([interp.exe, os.path.join(ROOT, "bench", "run_bench.py"), "--quick"], logf, timeout=300, env=env, interp=interp)
    return (1, 0, "smoke check: nothing timed is asserted") if rc == 0 else (0, 1, "bench --quick rc=%d" % rc)


def suite_cpython(tag, interp, logf):
    """CPython's own regression tests with three hooks active vs without: same failures."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([interp.exe, os.path.join(ROOT, "tests", "cpython_suite", "run_suite.py"), "--compare"],
                  logf, timeout=3000, env=env, interp=interp)
    m = re.search(r"^COEXTRA-RESULT passed=(\d+) failed=(\d+) skipped=(\d+)$", out, re.M)
    if not m:
        return 0, 1, "no result line (rc=%d)" % rc
    passed, failed, skipped = int(m[1]), int(m[2]), int(m[3])
    if passed == 0 and failed == 0:
        return 0, 0, "skipped: this Python has no (complete) CPython test package"
    return passed, failed or (1 if rc else 0), ("%d modules not available" % skipped) if skipped else ""


SUITES = [("doctest", suite_doctest), ("unittest", suite_unittest), ("tools", suite_tools),
          ("packaging", suite_packaging), ("bench", suite_bench), ("cpython", suite_cpython)]


def cmd_test(args):
    ok_build, results = cmd_build(args)
    total_p = total_f = 0
    rows = []
    if not results:
        log("NO PYTHON FOUND")
        total_f += 1
    for tag, interp, ver, ok, why in results:
        logf = os.path.join(BUILD, "log-%s.txt" % tag)
        if not ok:
            rows.append((tag, ver, "BUILD", 0, 1, why))
            total_f += 1
            continue
        for name, fn in SUITES:
            t0 = time.time()
            if interp.variant and name not in VARIANT_SUITES:
                p, f, detail = 0, 0, "n/a (%s build: %s only)" % (interp.variant, ", ".join(VARIANT_SUITES))
            else:
                p, f, detail = fn(tag, interp, logf)
            rows.append((tag, ver, name, p, f, ("%s %.0fs" % (detail, time.time() - t0)).strip()))
            total_p += p
            total_f += f
            log("%-16s %-10s %5d passed %3d failed  %s" % (tag, name, p, f, rows[-1][5]))
    log("")
    log("%-16s %-8s %-10s %7s %7s  %s" % ("build", "python", "suite", "passed", "failed", "notes"))
    for tag, ver, name, p, f, detail in rows:
        log("%-16s %-8s %-10s %7d %7d  %s" % (tag, ver, name, p, f, detail))
    if total_f:
        log("\nfailures: see build/log-<tag>.txt")
    log("%d passed, %d failed" % (total_p, total_f))
    return 0 if total_f == 0 else 1


def cmd_demo(args):
    """Build for one Python (PYTHONS, else python3 on PATH) quietly, then run examples/coexist/demo.py."""
    if not os.environ.get("PYTHONS"):
        try:  # through pyenv's shim, if any, to the real interpreter
            exe = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            exe = "/usr/bin/python3"
        os.environ["PYTHONS"] = exe
    messages = []
    ok, results = cmd_build(args, say=messages.append)
    if not ok or not results:
        print("\n".join(messages))
        return 1
    tag, interp = results[0][0], results[0][1]
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag))
    return subprocess.call(interp.wrap([interp.exe, os.path.join(ROOT, "examples", "coexist", "demo.py")]),
                           env=env, cwd=ROOT)


def cmd_bench(args):
    """bench/run_bench.py for every Python, on the test build (debugoptimized, asserts on) and on a
    release build (-O3, NDEBUG: what `pip install .` builds).  COEXTRA_BENCH_BUILDS="test" or
    "release" runs one of them."""
    ok, results = cmd_build(args)
    rc = 0 if ok else 1
    kinds = os.environ.get("COEXTRA_BENCH_BUILDS", "test release").split()
    for tag, interp, ver, ok, why in results:
        if not ok or interp.variant:
            continue
        for kind in kinds:
            btag = tag if kind == "test" else "%s-%s" % (tag, kind)
            if kind == "release":
                logf = os.path.join(BUILD, "log-%s.txt" % btag)
                open(logf, "w").close()
                built, why = build_one(btag, interp, logf, ["-Dbuildtype=release", "-Dtests=false"])
                if not built:
                    log("%-16s %s: %s (see %s)" % (btag, "BUILD FAILED", why, logf))
                    rc = 1
                    continue
            env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, btag), COEXTRA_BUILD_TAG=btag)
            env.pop("PYTHONHOME", None)
            rc |= subprocess.call(interp.wrap([interp.exe, os.path.join(ROOT, "bench", "run_bench.py")] + args.rest),
                                  env=env, cwd=ROOT)
    return rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["build", "test", "demo", "bench", "sanitize"])
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.command == "build":
        ok, _ = cmd_build(args)
        return 0 if ok else 1
    if args.command == "sanitize":
        # ASan+UBSan and valgrind runs: tools/sanitize.py, which imports this file as a library
        return subprocess.call([sys.executable, os.path.join(ROOT, "tools", "sanitize.py")] + args.rest)
    return {"test": cmd_test, "demo": cmd_demo, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
