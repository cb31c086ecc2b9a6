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


def log(msg):
    print(msg, flush=True)


def pyenv_root():
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/.pyenv")


def python_version(exe):
    out = subprocess.run([exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def find_pythons():
    """[(tag, exe)].  PYTHONS="exe exe ..." overrides discovery."""
    found = []
    if os.environ.get("PYTHONS"):
        exes = os.environ["PYTHONS"].split()
    else:
        exes = []
        for d in sorted(glob.glob(os.path.join(pyenv_root(), "versions", "*"))):
            m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", os.path.basename(d))
            if m and (int(m[1]), int(m[2])) >= MIN_VERSION:
                exes.append(os.path.join(d, "bin", "python%s.%s" % (m[1], m[2])))
        exes.sort(key=lambda e: [int(x) for x in re.findall(r"python(\d+)\.(\d+)", e)[0]])
        if os.path.exists("/usr/bin/python3"):
            exes.append("/usr/bin/python3")
    for exe in exes:
        system = not exe.startswith(pyenv_root())
        found.append((exe, system))
    return found


def tag_for(exe, system):
    ver = python_version(exe)
    short = ".".join(ver.split(".")[:2])
    return ("py%s-system" % short) if system else ("py%s" % short), ver


def run(cmd, log_path=None, timeout=1800, env=None, cwd=ROOT):
    """Run cmd; output to log_path (or captured).  Returns (rc, output)."""
    t0 = time.time()
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


def setup_deps():
    rc, out = run(["bash", os.path.join(ROOT, "tools", "setup-deps.sh")], timeout=1800)
    if rc != 0:
        log(out)
        sys.exit("setup-deps failed")


def build_one(tag, exe, logf, extra_opts=()):
    """Configure, compile and install into build/<tag>/ (the importable tree)."""
    bdir = os.path.join(BUILD, "meson-" + tag)
    stage = os.path.join(BUILD, tag)
    prefix = os.path.join(BUILD, "install-" + tag)
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        rc, out = run(["meson", "setup", bdir, "-Dpython=" + exe, "--prefix=" + prefix,
                       "-Dpython.platlibdir=" + stage, "-Dpython.purelibdir=" + stage] + list(extra_opts)
                      + os.environ.get("COEXTRA_MESON_OPTS", "").split(),
                      logf)
        if rc != 0:
            return False, "meson setup failed"
    rc, out = run(["meson", "compile", "-C", bdir], logf)
    if rc != 0:
        return False, "compile failed"
    rc, out = run(["meson", "install", "-C", bdir, "--quiet"], logf)
    if rc != 0:
        return False, "install failed"
    return True, ""


def cmd_build(args):
    setup_deps()
    os.makedirs(BUILD, exist_ok=True)
    ok_all = True
    results = []
    for exe, system in find_pythons():
        if not os.path.exists(exe):
            log("MISSING: %s" % exe)
            ok_all = False
            continue
        tag, ver = tag_for(exe, system)
        logf = os.path.join(BUILD, "log-%s.txt" % tag)
        open(logf, "w").close()
        ok, why = build_one(tag, exe, logf)
        log("%-16s %-8s %s" % (tag, ver, "built" if ok else "BUILD FAILED: %s (see %s)" % (why, logf)))
        results.append((tag, exe, ver, ok, why))
        ok_all &= ok
    return ok_all, results


# ---- suites ---------------------------------------------------------------
# Each suite returns (passed, failed, detail) for one Python.

def suite_doctest(tag, exe, logf):
    binary = os.path.join(BUILD, "meson-" + tag, "tests", "test_runtime")
    if not os.path.exists(binary):
        return 0, 1, "doctest binary missing"
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), PYTHONHOME=sys_prefix(exe))
    rc, out = run([binary], logf, timeout=600, env=env)
    m = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", out)
    if not m:
        return 0, 1, "no doctest summary (rc=%d)" % rc
    passed, failed = int(m[2]), int(m[3])
    if rc != 0 and failed == 0:
        failed = 1
    return passed, failed, ""


def sys_prefix(exe):
    return subprocess.run([exe, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True).stdout.strip()


def suite_unittest(tag, exe, logf, directory="tests/python"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(BUILD, tag), os.path.join(ROOT, directory)]),
               COEXTRA_BUILD_TAG=tag, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([exe, os.path.join(ROOT, "tests", "run_unittests.py"), os.path.join(ROOT, directory)],
                  logf, timeout=1800, env=env)
    m = re.search(r"^COEXTRA-RESULT passed=(\d+) failed=(\d+) skipped=(\d+)$", out, re.M)
    if not m:
        return 0, 1, "no result line (rc=%d)" % rc
    passed, failed = int(m[1]), int(m[2])
    if rc != 0 and failed == 0:
        failed = 1
    return passed, failed, ("%s skipped" % m[3]) if int(m[3]) else ""


def suite_packaging(tag, exe, logf):
    """pip install into a venv, pkg-config, the out-of-tree template: Debian's Python only (python3-mesonpy)."""
    if not tag.endswith("-system"):
        return 0, 0, "n/a (system Python only)"
    rc, out = run(["bash", os.path.join(ROOT, "tests", "packaging", "run_packaging.sh"), exe,
                   os.path.join(BUILD, "install-" + tag), os.path.join(BUILD, "packaging-" + tag)],
                  logf, timeout=1200)
    passed = len(re.findall(r"^PASS ", out, re.M))
    failed = len(re.findall(r"^FAIL ", out, re.M))
    if rc != 0 or passed == 0:
        failed = max(failed, 1)
    return passed, failed, ""


def suite_bench(tag, exe, logf):
    """bench/run_bench.py --quick: the benchmark harness runs end to end (tiny sizes, nothing timed is asserted)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), COEXTRA_BUILD_TAG=tag, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([exe, os.path.join(ROOT, "bench", "run_bench.py"), "--quick"], logf, timeout=300, env=env)
    return (1, 0, "") if rc == 0 else (0, 1, "bench --quick rc=%d" % rc)


def suite_cpython(tag, exe, logf):
    """CPython's own regression tests with three hooks active vs without: same failures."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    rc, out = run([exe, os.path.join(ROOT, "tests", "cpython_suite", "run_suite.py"), "--compare"],
                  logf, timeout=2400, env=env)
    m = re.search(r"^COEXTRA-RESULT passed=(\d+) failed=(\d+) skipped=(\d+)$", out, re.M)
    if not m:
        return 0, 1, "no result line (rc=%d)" % rc
    passed, failed, skipped = int(m[1]), int(m[2]), int(m[3])
    if passed == 0 and failed == 0:
        return 0, 0, "skipped: this Python has no (complete) CPython test package"
    return passed, failed or (1 if rc else 0), ("%d modules not available" % skipped) if skipped else ""


SUITES = [("doctest", suite_doctest), ("unittest", suite_unittest), ("packaging", suite_packaging),
          ("bench", suite_bench), ("cpython", suite_cpython)]


def cmd_test(args):
    ok_build, results = cmd_build(args)
    total_p = total_f = 0
    rows = []
    if not results:
        log("NO PYTHON FOUND")
        total_f += 1
    for tag, exe, ver, ok, why in results:
        logf = os.path.join(BUILD, "log-%s.txt" % tag)
        if not ok:
            rows.append((tag, ver, "BUILD", 0, 1, why))
            total_f += 1
            continue
        for name, fn in SUITES:
            t0 = time.time()
            p, f, detail = fn(tag, exe, logf)
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
    global log
    if not os.environ.get("PYTHONS"):
        try:  # through pyenv's shim, if any, to the real interpreter
            exe = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            exe = "/usr/bin/python3"
        os.environ["PYTHONS"] = exe
    messages = []
    real_log, log = log, messages.append
    try:
        ok, results = cmd_build(args)
    finally:
        log = real_log
    if not ok or not results:
        print("\n".join(messages))
        return 1
    tag, exe = results[0][0], results[0][1]
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag))
    return subprocess.call([exe, os.path.join(ROOT, "examples", "coexist", "demo.py")], env=env, cwd=ROOT)


def cmd_bench(args):
    ok, results = cmd_build(args)
    if not ok:
        return 1
    rc = 0
    for tag, exe, ver, ok, why in results:
        env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, tag), COEXTRA_BUILD_TAG=tag)
        rc |= subprocess.call([exe, os.path.join(ROOT, "bench", "run_bench.py")] + args.rest, env=env, cwd=ROOT)
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
        # ASan+UBSan and valgrind runs (tools/sanitize.py)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import sanitize
        return sanitize.main(sys.modules[__name__], args)
    return {"test": cmd_test, "demo": cmd_demo, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
