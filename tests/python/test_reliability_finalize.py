"""test_reliability_finalize.py: interpreters that exit with active hooks and slots holding values: exit 0, no crash, every free function runs."""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import unittest

PRELUDE = '''
import os, sys
import coextra
import coextra_test_reliability as rel
rel.report_at_exit()
FD = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)

def on_free(value, _write=os.write, _fd=FD, _str=str):
    # runs during finalization too, when even the builtins may be gone: only what the defaults hold
    _write(_fd, b"%s\\n" % _str(value).encode())

def interp_dict():
    # The interpreter dict, where the runtime's capsule is published; a
    # borrowed reference: cast, so that ctypes does not own it.
    import ctypes
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_GetDict.restype = ctypes.c_void_p
    api.PyInterpreterState_GetDict.argtypes = [ctypes.c_void_p]
    return ctypes.cast(api.PyInterpreterState_GetDict(api.PyInterpreterState_Get()), ctypes.py_object).value

RUNTIME_KEY = "coextra.runtime.abi" + str(coextra.ABI_VERSION[0])

def fresh_code(tag):
    mod = compile("def %s(x):\\n    return x\\n" % tag, "<%s>" % tag, "exec")
    return [c for c in mod.co_consts if hasattr(c, "co_code")][0]
'''

REPORT = re.compile(r"^coextra-reliability-at-exit: stored=(\d+) freed=(\d+) bad_ctx=(\d+)$", re.M)


class FinalizeCase(unittest.TestCase):
    def run_script(self, body, expect_rc=0, dev=True):
        fd, path = tempfile.mkstemp(prefix="coextra-fin-")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        args = [sys.executable] + (["-X", "dev"] if dev else []) + ["-c", PRELUDE + textwrap.dedent(body), path]
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
        where = "rc=%d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
        self.assertEqual(p.returncode, expect_rc, where)
        for bad in ("Fatal Python error", "Segmentation fault", "AddressSanitizer", "runtime error:",
                    "Debug memory block", "Traceback (most recent call last)" if expect_rc == 0 else "\0"):
            self.assertNotIn(bad, p.stderr, where)
        m = REPORT.search(p.stderr)
        self.assertIsNotNone(m, where)
        with open(path) as f:
            freed = f.read().split()
        return {"stored": int(m[1]), "freed": int(m[2]), "bad_ctx": int(m[3]), "py_freed": sorted(freed),
                "stderr": p.stderr, "where": where}

    def assertAllFreed(self, r, py_values):
        self.assertEqual(r["bad_ctx"], 0, r["where"])
        self.assertEqual(r["freed"], r["stored"], r["where"])
        self.assertEqual(r["py_freed"], sorted(py_values), r["where"])

    def test_exit_with_active_hooks_and_values(self):
        r = self.run_script('''
            s = coextra.Slot("fin.py", on_free=on_free)
            def f(x):
                return x + 1
            def g():
                return 2
            class C:
                def m(self):
                    return 3
            s[f.__code__] = "v1"
            s[g.__code__] = "v2"
            s[C.m.__code__] = "v3"
            rel.reserve(0, "fin.native")
            rel.set(f.__code__, 0, 1)
            rel.set(g.__code__, 0, 2)
            rel.set(C.m.__code__, 0, 3)
            h = coextra.add_hook("fin.py.hook", on_enter=id, on_exit=id, only=s)
            h2 = coextra.add_hook("fin.py.hook2", on_enter=id)
            rel.hook_add(0, "fin.native.hook", 500)
            rel.hook_add(1, "fin.native.only", 100, 0)
            f(1), g(), C().m()
            assert coextra.status().installed
        ''')
        self.assertEqual(r["stored"], 3)
        self.assertAllFreed(r, ["v1", "v2", "v3"])

    def test_code_objects_dying_after_module_teardown(self):
        # The code object and the Slot live in the interpreter's state dict,
        # after coextra's published runtime: they die at interpreter clear,
        # once the runtime has been closed; the free functions still run.
        r = self.run_script('''
            s = coextra.Slot("fin.late", on_free=on_free)
            late = fresh_code("late")
            s[late] = "late-py"
            rel.reserve(0, "fin.late.native")
            rel.set(late, 0, 7)
            h = coextra.add_hook("fin.late.hook", on_enter=id)
            rel.hook_add(0, "fin.late.native.hook", 500)
            rel.stash_late(s)      # released last: the list drops its items from the end
            rel.stash_late(late)
            del s, late
        ''')
        self.assertEqual(r["stored"], 1)
        self.assertAllFreed(r, ["late-py"])

    def test_daemon_threads_in_hooked_code_at_exit(self):
        r = self.run_script('''
            import threading
            s = coextra.Slot("fin.threads", on_free=on_free)
            def spin(n):
                return n if n < 2 else spin(n - 1) + spin(n - 2)
            s[spin.__code__] = "spin"
            rel.reserve(0, "fin.threads.native")
            rel.set(spin.__code__, 0, 9)
            coextra.add_hook("fin.threads.hook", on_enter=id, on_exit=id)
            rel.hook_add(0, "fin.threads.native.hook", 500)
            churn = coextra.Slot("fin.threads.churn", on_free=lambda v: spin(3))  # a Python free function
            started = threading.Barrier(5)
            def loop():
                started.wait()
                while True:
                    spin(12)
            def churner():
                code = fresh_code("churn")
                started.wait()
                while True:
                    churn[code] = object()   # replaces: the free function runs
                    del churn[code]
            for _ in range(2):
                threading.Thread(target=loop, daemon=True).start()
                threading.Thread(target=churner, daemon=True).start()
            started.wait()
            spin(15)
        ''')
        self.assertEqual(r["bad_ctx"], 0, r["where"])
        # spin's code object may outlive finalization (a daemon thread's frame
        # still references it): its values are then never freed, like any leak
        # at exit; but nothing runs on freed state and nothing is freed twice.
        self.assertLessEqual(r["freed"], r["stored"], r["where"])

    def run_hooked_ending(self, tag, stmt, token, expect_rc):
        """A script whose last frame, under a Python and a native hook, holding a Python and a
        native value, ends the program with stmt."""
        r = self.run_script('''
            s = coextra.Slot("fin.{0}", on_free=on_free)
            def f():
                {1}
            s[f.__code__] = "{0}"
            rel.reserve(0, "fin.{0}.native")
            rel.set(f.__code__, 0, {2})
            coextra.add_hook("fin.{0}.hook", on_enter=id, on_exit=id)
            rel.hook_add(0, "fin.{0}.native.hook", 500)
            f()
        '''.format(tag, stmt, token), expect_rc=expect_rc)
        self.assertAllFreed(r, [tag])
        return r

    def test_exit_from_inside_a_hooked_frame(self):
        self.run_hooked_ending("exit", "sys.exit(3)", 4, expect_rc=3)

    def test_runtime_closed_while_frames_are_in_flight(self):
        # The interpreter dict loses the runtime's capsule while a frame runs
        # through a pinned chain snapshot (as when the dict is cleared at
        # teardown): the snapshot holds its own reference on the runtime, so
        # the frame finishes through it (ASan runs would report a write into
        # a freed runtime otherwise).
        for when in ("on_enter", "on_exit"):
            with self.subTest(when=when):
                r = self.run_script('''
                    d = interp_dict()
                    def target():
                        return 1
                    def close(code):
                        if code is target.__code__:
                            d.pop(RUNTIME_KEY)
                    coextra.add_hook("fin.close.a", priority=100, WHEN=close)
                    coextra.add_hook("fin.close.b", priority=200, on_enter=id)
                    assert target() == 1
                    print("survived")
                '''.replace("WHEN", when))
                self.assertIn("survived", r["where"])

    def test_second_runtime_of_the_main_interpreter(self):
        # The main interpreter's runtime gets a dispatcher of its own that
        # finds it without a lookup (dispatch.cpp dispatch_main).  Closing that
        # runtime must unbind it (frames then run unhooked, nothing reads the
        # freed runtime: -X dev poisons freed memory), and a runtime created
        # afterwards for the same interpreter must bind it again.
        r = self.run_script('''
            import importlib
            import coextra_test_native as native
            d = interp_dict()
            seen = []
            def target():
                return 1
            before = native.eval_frame_func()
            h = coextra.add_hook("fin.rebind.a", on_enter=seen.append)
            ours = native.eval_frame_func()
            assert ours != before
            target()
            assert seen.count(target.__code__) == 1, seen
            d.pop(RUNTIME_KEY)  # the runtime closes: its hooks go, the function is given back
            del seen[:]
            assert native.eval_frame_func() == before
            for _ in range(3):
                assert target() == 1
            assert seen == [], seen
            import gc; gc.collect()
            # A second runtime for the same interpreter: re-create the module.
            del sys.modules["coextra._coextra"]
            importlib.reload(coextra)
            assert coextra.status().installed is False, coextra.status()
            h2 = coextra.add_hook("fin.rebind.b", on_enter=seen.append)
            assert native.eval_frame_func() == ours  # the main interpreter's dispatcher again
            for _ in range(3):
                assert target() == 1
            assert seen.count(target.__code__) == 3, seen
            h2.remove()
            assert coextra.status().installed is False, coextra.status()
            assert native.eval_frame_func() == before
            assert target() == 1 and seen.count(target.__code__) == 3
            print("rebound")
        ''')
        self.assertIn("rebound", r["where"])

    def test_unhandled_exception_with_hooks_active(self):
        r = self.run_hooked_ending("exc", 'raise KeyError("boom")', 5, expect_rc=1)
        self.assertIn("KeyError: 'boom'", r["stderr"])

    def test_release_and_remove_inside_atexit(self):
        r = self.run_script('''
            import atexit
            s = coextra.Slot("fin.atexit", on_free=on_free)
            def f():
                return 1
            s[f.__code__] = "atexit"
            h = coextra.add_hook("fin.atexit.hook", on_enter=id)
            def bye():
                h.remove()
                s.release()
                rel.hook_remove(0)
                rel.release(0)
            rel.reserve(0, "fin.atexit.native")
            rel.set(f.__code__, 0, 6)
            rel.hook_add(0, "fin.atexit.native.hook", 500)
            atexit.register(bye)
            f()
        ''')
        self.assertAllFreed(r, ["atexit"])


if __name__ == "__main__":
    unittest.main()
