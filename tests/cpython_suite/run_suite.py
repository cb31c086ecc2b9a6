#!/usr/bin/env python3
"""run_suite.py: CPython's own regression tests, in-process, with and without three coextra hooks; the failure sets must match.

usage: run_suite.py [--hooks|--raw] [--json OUT] [module ...]     (one mode per process)
       run_suite.py --compare                              (runs both modes in subprocesses and compares)

With --raw, a do-nothing PEP 523 hook without coextra and a raw co_extra
value on the same code objects stand in for any such tool: a difference they
produce as well is CPython's, and is reported, not counted.

With --hooks, three hooks are active while the tests run: a Python observer
(on_enter/on_exit counting), a native pass-through and a native hook filtered
by `only` through a slot that holds values for about half of the code objects
seen.  Prints a COEXTRA-RESULT line (passed = modules whose failure set is the
same with and without hooks) in --compare mode.
"""

import json
import os
import re
import subprocess
import sys
import time
import unittest

MODULES = ["test_generators", "test_coroutines", "test_asyncgen", "test_exceptions", "test_contextlib",
           "test_with", "test_scope", "test_class", "test_sys_settrace", "test_code"]


def install_hooks():
    import coextra
    import coextra_test_consumer_c as consumer
    import coextra_test_native as native

    counts = {"enter": 0, "exit": 0}

    def on_enter(code):
        counts["enter"] += 1

    def on_exit(code):
        counts["exit"] += 1

    # A native slot (reserved through the C consumer extension) marks about
    # half of the test functions; the `only` hook runs for those frames only.
    marks = consumer.reserve("cpython-suite.marks")
    observer = coextra.add_hook("cpython-suite.observer", on_enter=on_enter, on_exit=on_exit,
                                priority=coextra.PRIORITY_PROFILER)
    passthrough = native.add("cpython-suite.passthrough", coextra.PRIORITY_DEFAULT, "pass")
    only = native.add("cpython-suite.only", coextra.PRIORITY_OPTIMIZER, "pass", only=marks)
    return counts, marks, observer, passthrough, only, native


def chosen_codes():
    """About half of the test functions' code objects, the same in every process (by a CRC of
    the function's module and qualified name, not by gc order or str hash)."""
    import gc
    import types
    import zlib
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and (obj.__module__ or "").startswith("test."):
            key = "%s.%s" % (obj.__module__, obj.__qualname__)
            if zlib.crc32(key.encode()) % 2 == 0:
                yield obj.__code__


def mark_some(marks):
    import coextra_test_consumer_c as consumer
    n = 0
    for code in chosen_codes():
        n += 1
        if consumer.get(code, *marks) is None:
            consumer.set(code, marks[0], marks[1], n)
    return n


class RawCoExtra:
    """What a tool that uses co_extra without coextra does: one index of its own, a value in
    it for the same code objects that mark_some marks.  3.14+ treats a code object holding
    any co_extra data as not stateless (_PyCode_CheckNoInternalState: co_extra != NULL), e.g.
    for test_code's verify_stateless_code: that is CPython's behaviour with any co_extra user."""

    def __init__(self):
        import ctypes
        api = ctypes.pythonapi
        request = getattr(api, "PyUnstable_Eval_RequestCodeExtraIndex", None) or api._PyEval_RequestCodeExtraIndex
        request.argtypes, request.restype = [ctypes.c_void_p], ctypes.c_ssize_t
        self.set = getattr(api, "PyUnstable_Code_SetExtra", None) or api._PyCode_SetExtra
        self.set.argtypes, self.set.restype = [ctypes.py_object, ctypes.c_ssize_t, ctypes.c_void_p], ctypes.c_int
        self.index = request(None)  # no free function: the value is a dummy, never dereferenced
        assert self.index >= 0

    def mark_some(self):
        for code in chosen_codes():
            assert self.set(code, self.index, 1) == 0


def run_modules(modules, hooks, raw=False):
    import test.support  # noqa: F401  (CPython's test helpers; absent on some distro Pythons)

    results = {}
    state = install_hooks() if hooks else None
    raw_extra = None
    if raw:
        import coextra_bench_raw
        coextra_bench_raw.install()
        raw_extra = RawCoExtra()
    for name in modules:
        t0 = time.time()
        try:
            suite = unittest.defaultTestLoader.loadTestsFromName("test." + name)
        except Exception as e:  # a module missing on this version
            results[name] = {"error": "load: %r" % (e,), "failed": [], "run": 0}
            continue
        if state is not None:
            mark_some(state[1])
        if raw_extra is not None:
            raw_extra.mark_some()
        result = unittest.TestResult()
        suite.run(result)
        # Sub-test ids may name objects by address ("<function f at 0x...>"): the same
        # failure must have the same id in every process.
        failed = sorted(re.sub(r" at 0x[0-9a-f]+", "", t.id()) for t, _ in result.failures + result.errors)
        if failed and result.testsRun == len(failed) and all(t.startswith("unittest.loader._FailedTest") for t in failed):
            results[name] = {"error": "cannot import test.%s" % name, "failed": [], "run": 0}
            continue
        results[name] = {"run": result.testsRun, "failed": failed, "skipped": len(result.skipped),
                         "seconds": round(time.time() - t0, 1)}
    if state is not None:
        counts, native, only = state[0], state[5], state[4]
        results["_hooks"] = {"enter": counts["enter"], "exit": counts["exit"], "only_frames": native.count(only)}
        import coextra
        results["_hooks"]["status"] = list(coextra.status())
    return results


def run_mode(mode, modules):
    here = os.path.abspath(__file__)
    flag = {"plain": [], "hooks": ["--hooks"], "raw": ["--raw"]}[mode]
    p = subprocess.run([sys.executable, here, "--json", "-"] + flag + modules, capture_output=True, text=True,
                       timeout=1500)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print("mode %s crashed (rc=%d):\n%s\n%s" % (mode, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        return None


def compare(modules):
    out = {}
    for mode in ("plain", "hooks"):
        out[mode] = run_mode(mode, modules)
        if out[mode] is None:
            print("COEXTRA-RESULT passed=0 failed=%d skipped=0" % len(modules))
            return 1
    passed = failed = 0
    hooks_info = out["hooks"].pop("_hooks", {})
    print("hook activity: %s" % hooks_info)
    # Every frame given to on_enter also reaches on_exit; the counters can
    # still differ by the odd call: test_generators' SignalAndYieldFromTest
    # delivers SIGINT while on_enter's own `+= 1` is about to run (the
    # interrupt is re-armed for the frame, the increment never happens).
    if not hooks_info or hooks_info.get("enter", 0) == 0 or \
            abs(hooks_info["enter"] - hooks_info["exit"]) > max(2, hooks_info["enter"] // 10000):
        print("FAIL: the observer hook saw no frames or unbalanced enter/exit: %s" % hooks_info)
        failed += 1
    # A difference that a do-nothing PEP 523 hook WITHOUT coextra (bench's
    # coextra_bench_raw) plus a raw co_extra value on the same code objects
    # (RawCoExtra) also produces is CPython's behaviour under any eval-frame
    # function and co_extra user, not coextra's: it is reported, not counted.
    raw = None
    skipped = 0
    for name in modules:
        a, b = out["plain"].get(name), out["hooks"].get(name)
        if a and b and "error" in a and "error" in b:
            # Not installed on this Python (Debian's python3 ships only part of
            # CPython's test package): nothing ran, so nothing is claimed.
            print("%-22s not available: %s" % (name, a["error"]))
            skipped += 1
            continue
        same = a is not None and b is not None and a.get("failed") == b.get("failed") and a.get("run") == b.get("run")
        explained = False
        if not same and a and b and a.get("run") == b.get("run"):
            if raw is None:
                raw = run_mode("raw", modules) or {}
            r = raw.get(name) or {}
            diff = set(a["failed"]) ^ set(b["failed"])
            explained = bool(r) and diff == set(a["failed"]) ^ set(r.get("failed", []))
        print("%-22s run %5s/%-5s  failures plain=%d hooks=%d  %s" % (
            name, a.get("run") if a else "-", b.get("run") if b else "-", len(a["failed"]) if a else -1,
            len(b["failed"]) if b else -1,
            "same" if same else ("same as with a raw PEP 523 hook and co_extra (CPython's)" if explained else "DIFFERENT")))
        if not same and a and b:
            for t in sorted(set(a["failed"]) ^ set(b["failed"])):
                print("    only %s: %s" % ("with hooks" if t in b["failed"] else "without hooks", t))
        ok = same or explained
        passed += ok
        failed += not ok
    print("COEXTRA-RESULT passed=%d failed=%d skipped=%d" % (passed, failed, skipped))
    return 0 if failed == 0 else 1


def main():
    args = sys.argv[1:]
    if "--compare" in args:
        args.remove("--compare")
        try:
            import test.support  # noqa: F401
        except ImportError:
            print("CPython's test package is not installed for %s" % sys.executable)
            print("COEXTRA-RESULT passed=0 failed=0 skipped=1")
            return 0
        return compare(args or MODULES)
    hooks = "--hooks" in args
    if hooks:
        args.remove("--hooks")
    raw = "--raw" in args
    if raw:
        args.remove("--raw")
    if "--json" in args:
        i = args.index("--json")
        args[i:i + 2] = []
    results = run_modules(args or MODULES, hooks, raw)
    sys.stdout.flush()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
