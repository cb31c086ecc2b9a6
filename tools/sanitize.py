"""sanitize.py: `make sanitize`: ASan+UBSan builds and runs (doctest + Python suites) and valgrind memcheck runs; fails on any report from coextra code."""

import glob
import os
import re
import shutil
import subprocess
import sys
import time

import make  # tools/make.py: the build, run and log helpers this reuses (one-way: make.py only starts this)

# Versions sanitized by default (PYTHONS="exe ..." overrides); valgrind runs on the first.
DEFAULT_VERSIONS = ("3.11", "3.12")
# Frames that are coextra's own code (runtime, bindings, test consumers): a report whose
# stack holds one of these is coextra's; any other is CPython's or the C library's.
COEXTRA_FRAME = re.compile(r"coextra|frame_compat|/lib/(runtime|slots|chain|api)\.cpp|python_bindings/")
# CPython functions that intern the string they allocate (dict keys, attribute and descriptor names).
INTERNED = re.compile(r"PyUnicode_InternFromString|PyUnicode_InternInPlace|_PyUnicode_Intern|PyDict_SetItemString|"
                      r"PyObject_SetAttrString|PyObject_GetAttrString")
VALGRIND_PYTHON_SUITE = ["test_slots", "test_reliability_badinput", "test_reliability_alloc"]


def asan_runtime():
    """LD_PRELOAD value for an uninstrumented python: the ASan runtime matching the compiler meson
    uses (gcc's libasan, or clang's), then libstdc++.  Python does not link libstdc++; loaded only
    later with the extension, its __cxa_throw would stay unresolved in ASan's interceptor, which
    then fails a CHECK at the first C++ throw (coextra's bad_alloc path)."""
    cc = os.environ.get("CC", "cc")
    name = "libclang_rt.asan-x86_64.so" if "clang" in cc else "libasan.so"
    paths = []
    for lib in (name, "libstdc++.so"):
        out = subprocess.run([cc if lib == name else os.environ.get("CXX", "c++"), "-print-file-name=" + lib],
                             capture_output=True, text=True)
        path = os.path.realpath(out.stdout.strip())
        if not os.path.exists(path):
            return None
        paths.append(path)
    return ":".join(paths)


def select_pythons():
    found = [i for i in make.find_pythons() if not i.sid and not i.variant]  # sanitizer runtimes are the host's
    if os.environ.get("PYTHONS"):
        return found
    chosen = []
    for interp in found:
        if interp.kind != "pyenv":
            continue
        mm = re.search(r"python(\d+\.\d+)$", interp.exe)
        if mm and mm[1] in DEFAULT_VERSIONS:
            chosen.append(interp)
    return chosen


def build_asan(tag, exe, base, logf):
    bdir = os.path.join(base, "meson")
    stage = os.path.join(base, "stage")
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        # examples on: the Python suites test them; bench off: nothing here runs it
        opts = ["-Db_sanitize=address,undefined", "-Db_lundef=false", "-Dbench=false", "-Dexamples=true",
                "-Dsystem_install=false", "-Dc_args=-fno-omit-frame-pointer",
                "-Dcpp_args=-fno-omit-frame-pointer"]
        rc, _ = make.run(["meson", "setup", bdir, "-Dpython=" + exe, "--prefix=" + os.path.join(base, "install"),
                          "-Dpython.platlibdir=" + stage, "-Dpython.purelibdir=" + stage] + opts, logf)
        if rc != 0:
            return False
    rc, _ = make.run(["meson", "compile", "-C", bdir], logf)
    if rc != 0:
        return False
    rc, _ = make.run(["meson", "install", "-C", bdir, "--quiet"], logf)
    return rc == 0


def split_reports(text):
    """Sanitizer log text -> list of reports (each a block of lines)."""
    reports, cur = [], []
    for line in text.splitlines():
        if re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|Sanitizer: CHECK failed|runtime error:|"
                     r"^(Direct|Indirect) leak of", line):
            if cur:
                reports.append("\n".join(cur))
            cur = [line]
        elif cur:
            cur.append(line)
    if cur:
        reports.append("\n".join(cur))
    return reports


def classify(reports):
    """(coextra reports, other reports, leaks-only-other): leak reports outside coextra are CPython's."""
    mine, other_errors, other_leaks = [], [], []
    for r in reports:
        # the allocation or access stack: frames "#n 0x... in func file:line"
        frames = "\n".join(l for l in r.splitlines() if re.match(r"\s*#\d+ ", l))
        is_leak = re.match(r"(Direct|Indirect) leak of", r) is not None
        if re.search(r"ERROR: LeakSanitizer: detected memory leaks", r) and not frames:
            continue  # the header before the leak records
        first = COEXTRA_FRAME.search(frames)
        if is_leak and first and INTERNED.search(frames[:first.start()]):
            # a string CPython interned on coextra's behalf (a dict key, a descriptor name):
            # 3.12 makes interned strings immortal and never frees them at exit
            other_leaks.append(r)
        elif first or (not frames and COEXTRA_FRAME.search(r)):
            mine.append(r)
        elif is_leak:
            other_leaks.append(r)
        elif "SUMMARY" in r and not frames:
            continue
        else:
            other_errors.append(r)
    return mine, other_errors, other_leaks


def read_logs(logdir):
    text = ""
    for path in sorted(glob.glob(os.path.join(logdir, "*"))):
        with open(path, errors="replace") as f:
            text += f.read() + "\n"
    return text


def sanitizer_env(logdir, asan_rt, leaks, preload):
    os.makedirs(logdir, exist_ok=True)
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join([
        "detect_leaks=%d" % leaks, "halt_on_error=1", "abort_on_error=0", "detect_stack_use_after_return=0",
        "check_initialization_order=1", "strict_string_checks=1", "log_path=" + os.path.join(logdir, "asan"),
    ])
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:log_path=" + os.path.join(logdir, "ubsan")
    env["LSAN_OPTIONS"] = "report_objects=0:max_leaks=200"
    env["PYTHONMALLOC"] = "malloc"  # every Python object through malloc: ASan sees them too
    if preload:
        env["LD_PRELOAD"] = asan_rt
    return env


def run_doctest_asan(tag, exe, base, logf, asan_rt):
    logdir = os.path.join(base, "logs-doctest")
    shutil.rmtree(logdir, ignore_errors=True)
    env = sanitizer_env(logdir, asan_rt, leaks=1, preload=False)
    # libpython has no frame pointers: only the slow unwinder follows a leaked block's
    # allocation stack through CPython into coextra's frames.
    env["ASAN_OPTIONS"] += ":fast_unwind_on_malloc=0:malloc_context_size=40"
    env.update(PYTHONPATH=os.path.join(base, "stage"), PYTHONHOME=make.sys_prefix(exe))
    binary = os.path.join(base, "meson", "tests", "test_runtime")
    if not os.path.exists(binary):
        return {"ok": False, "detail": "doctest binary missing"}
    rc, out = make.run([binary], logf, timeout=1200, env=env)
    mm = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", out)
    text = read_logs(logdir) + "\n" + out
    mine, other, leaks = classify(split_reports(text))
    # LeakSanitizer's non-zero exit is expected when only CPython leaks at exit; every other report fails.
    tests_ok = mm is not None and int(mm[3]) == 0 and (rc == 0 or (leaks and not other and not mine))
    return {"ok": tests_ok and not mine and not other, "mine": mine, "other": other, "leaks": leaks,
            "detail": "doctest %s/%s passed, rc=%d" % (mm[2] if mm else "?", mm[1] if mm else "?", rc)}


def run_unittests_asan(tag, exe, base, logf, asan_rt):
    logdir = os.path.join(base, "logs-python")
    shutil.rmtree(logdir, ignore_errors=True)
    env = sanitizer_env(logdir, asan_rt, leaks=0, preload=True)
    directory = os.path.join(make.ROOT, "tests", "python")
    env.update(PYTHONPATH=os.pathsep.join([os.path.join(base, "stage"), directory]), COEXTRA_BUILD_TAG=tag,
               PYTHONDONTWRITEBYTECODE="1", COEXTRA_SANITIZE="1")
    env.pop("PYTHONHOME", None)
    rc, out = make.run([exe, os.path.join(make.ROOT, "tests", "run_unittests.py"), directory], logf, timeout=2400,
                       env=env)
    mm = re.search(r"^COEXTRA-RESULT passed=(\d+) failed=(\d+) skipped=(\d+)$", out, re.M)
    text = read_logs(logdir) + "\n" + out
    mine, other, leaks = classify(split_reports(text))
    ok = mm is not None and int(mm[2]) == 0 and rc == 0 and not mine and not other
    return {"ok": ok, "mine": mine, "other": other, "leaks": leaks,
            "detail": "unittest %s passed, %s failed, %s skipped, rc=%d" % (
                mm[1] if mm else "?", mm[2] if mm else "?", mm[3] if mm else "?", rc)}


# ---- valgrind -------------------------------------------------------------------

def parse_valgrind(text):
    """Records of a memcheck log: (kind, block text); kinds 'definite', 'possible', 'error'."""
    records = []
    cur = None
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if re.match(r"\d[\d,]* (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are definitely lost", body):
            cur = ["definite", [body]]
            records.append(cur)
        elif re.match(r"\d[\d,]* (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are possibly lost", body):
            cur = ["possible", [body]]
            records.append(cur)
        elif re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                      r"Mismatched free|Source and destination overlap|Argument .* of function)", body):
            cur = ["error", [body]]
            records.append(cur)
        elif cur is not None and body.strip() == "":
            cur = None
        elif cur is not None:
            cur[1].append(body)
    return [(k, "\n".join(lines)) for k, lines in records]


def run_valgrind(tag, exe, logf):
    if not shutil.which("valgrind"):
        return [{"name": "valgrind", "ok": False, "detail": "valgrind not installed"}]
    ok, why = make.build_one(tag, make.Interp(exe, "pyenv"), logf)
    if not ok:
        return [{"name": "valgrind", "ok": False, "detail": "normal build failed: " + why}]
    base = os.path.join(make.BUILD, "valgrind-" + tag)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    supp = os.path.join(make.ROOT, "tests", "valgrind", "cpython.supp")
    vg = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
          "--errors-for-leak-kinds=definite", "--num-callers=40", "--suppressions=" + supp,
          "--log-file=" + os.path.join(base, "vg.%p.log")]
    env = dict(os.environ, PYTHONMALLOC="malloc", COEXTRA_VALGRIND="1", PYTHONDONTWRITEBYTECODE="1")
    results = []
    # 1. the doctest binary
    binary = os.path.join(make.BUILD, "meson-" + tag, "tests", "test_runtime")
    denv = dict(env, PYTHONPATH=os.path.join(make.BUILD, tag), PYTHONHOME=make.sys_prefix(exe))
    rc, out = make.run(vg + [binary], logf, timeout=2400, env=denv)
    mm = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", out)
    results.append(("doctest", rc == 0 and mm is not None and int(mm[3]) == 0,
                    "doctest %s/%s passed" % (mm[2] if mm else "?", mm[1] if mm else "?")))
    logs_doctest = set(glob.glob(os.path.join(base, "vg.*.log")))
    # 2. Python suites
    directory = os.path.join(make.ROOT, "tests", "python")
    penv = dict(env, PYTHONPATH=os.pathsep.join([os.path.join(make.BUILD, tag), directory]), COEXTRA_BUILD_TAG=tag)
    penv.pop("PYTHONHOME", None)
    rc, out = make.run(vg + [exe, "-m", "unittest"] + VALGRIND_PYTHON_SUITE, logf, timeout=2400, env=penv,
                       cwd=directory)
    ran = re.search(r"^Ran (\d+) tests?", out, re.M)
    results.append(("python " + "+".join(VALGRIND_PYTHON_SUITE), rc == 0 and re.search(r"^OK", out, re.M) is not None,
                    "%s tests" % (ran[1] if ran else "?")))
    rows = []
    for name, tests_ok, detail in results:
        logs = sorted(logs_doctest) if name == "doctest" else sorted(
            set(glob.glob(os.path.join(base, "vg.*.log"))) - logs_doctest)
        text = "".join(open(p, errors="replace").read() for p in logs)
        recs = parse_valgrind(text)
        mine = [b for k, b in recs if COEXTRA_FRAME.search(b)]
        definite = [b for k, b in recs if k == "definite"]
        errors = [b for k, b in recs if k == "error"]
        mine_definite = [b for b in definite if COEXTRA_FRAME.search(b)]
        mine_errors = [b for b in errors if COEXTRA_FRAME.search(b)]
        with open(logf, "a") as f:
            for b in mine:
                f.write("\n--- valgrind record in coextra code ---\n%s\n" % b)
        rows.append({"name": "valgrind " + name, "ok": tests_ok and not mine_definite and not mine_errors,
                     "detail": "%s; definitely lost: %d (coextra %d), errors: %d (coextra %d)" % (
                         detail, len(definite), len(mine_definite), len(errors), len(mine_errors)),
                     "mine": mine_definite + mine_errors})
    return rows


def main(argv=()):
    t_start = time.time()
    make.setup_deps()
    os.makedirs(make.BUILD, exist_ok=True)
    asan_rt = asan_runtime()
    pythons = select_pythons()
    rows = []
    if not pythons:
        rows.append(("-", "-", "sanitize", False, "no Python %s found" % "/".join(DEFAULT_VERSIONS)))
    if asan_rt is None:
        rows.append(("-", "-", "sanitize", False, "no ASan runtime found"))
        pythons = []
    for i, interp in enumerate(pythons):
        exe = interp.exe
        tag, ver = make.tag_for(interp)
        base = os.path.join(make.BUILD, "asan-" + tag)
        os.makedirs(base, exist_ok=True)
        logf = os.path.join(base, "log.txt")
        open(logf, "w").close()
        t0 = time.time()
        if not build_asan(tag, exe, base, logf):
            rows.append((tag, ver, "asan build", False, "see %s" % logf))
            continue
        make.log("%-16s asan build %.0fs" % (tag, time.time() - t0))
        for name, fn in (("asan doctest", run_doctest_asan), ("asan unittest", run_unittests_asan)):
            t0 = time.time()
            r = fn(tag, exe, base, logf, asan_rt)
            detail = "%s; reports: coextra %d, other %d, CPython leaks at exit %d; %.0fs" % (
                r["detail"], len(r.get("mine", [])), len(r.get("other", [])), len(r.get("leaks", [])),
                time.time() - t0)
            with open(logf, "a") as f:
                for rep in r.get("mine", []) + r.get("other", []):
                    f.write("\n--- sanitizer report ---\n%s\n" % rep)
            rows.append((tag, ver, name, r["ok"], detail))
            make.log("%-16s %-14s %s  %s" % (tag, name, "ok" if r["ok"] else "FAILED", detail))
        if i == 0:
            t0 = time.time()
            vlog = os.path.join(make.BUILD, "valgrind-%s.txt" % tag)
            open(vlog, "w").close()
            for r in run_valgrind(tag, exe, vlog):
                rows.append((tag, ver, r["name"], r["ok"], r["detail"]))
                make.log("%-16s %-14s %s  %s" % (tag, r["name"], "ok" if r["ok"] else "FAILED", r["detail"]))
            make.log("%-16s valgrind %.0fs (log %s)" % (tag, time.time() - t0, vlog))
    make.log("")
    make.log("%-16s %-8s %-34s %-6s %s" % ("build", "python", "check", "result", "notes"))
    for tag, ver, name, ok, detail in rows:
        make.log("%-16s %-8s %-34s %-6s %s" % (tag, ver, name, "ok" if ok else "FAIL", detail))
    passed = sum(1 for r in rows if r[3])
    failed = len(rows) - passed
    make.log("\nmake sanitize: %.0fs" % (time.time() - t_start))
    if failed:
        make.log("failures: see build/asan-<tag>/log.txt and build/valgrind-<tag>.txt")
    make.log("sanitize: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
