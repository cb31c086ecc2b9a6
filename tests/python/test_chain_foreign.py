"""test_chain_foreign.py: coextra next to eval-frame tools that know nothing of it: a chaining test
extension (every version), CPython's _testinternalcapi record hook (3.11+) and the perf trampoline
(3.12+ Linux), each installed before and after coextra."""

import os
import subprocess
import sys
import textwrap
import unittest

import coextra
import coextra_test_foreign as foreign
import coextra_test_native as native

from test_chain_helpers import PY, ChainTestCase, is_idle

N_LEAVES = 100


def leaf():
    return 1


def run_leaves():
    """101 frames: this one and N_LEAVES calls of leaf()."""
    total = 0
    for _ in range(N_LEAVES):
        total += leaf()
    return total


DEFAULT = native.default_eval_func()


class TestChainingForeignTool(ChainTestCase):
    def measure(self, seen):
        """(result, foreign frames, leaf frames seen by the hook list) of one run_leaves()."""
        del seen[:]
        foreign.reset()
        r = run_leaves()
        return r, foreign.count(), seen.count(leaf.__code__)

    def test_installed_before(self):
        self.install_foreign()
        self.assertEqual(foreign.prev_func(), DEFAULT)
        seen = []
        p = self.add_hook(on_enter=seen.append)
        n_log = []
        n = self.add_native("log", 100, n_log)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, True))
        self.assertFalse(foreign.is_current())
        # Both coextra's hooks and the foreign tool (our tail) see every frame,
        # also when consecutive sibling frames reuse the same frame memory.
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, N_LEAVES))
        self.assertEqual(sum(1 for e in n_log if e[2] == "leaf" and e[1] == "enter"), N_LEAVES)
        # Deep recursion and exceptions through coextra -> foreign -> CPython.
        with self.assertRaises(ZeroDivisionError):
            (lambda: 1 / 0)()
        p.remove()
        native.remove(n)
        # coextra gives back exactly what it found: the foreign tool, still counting.
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (False, False, True, 0))
        self.assertTrue(foreign.is_current())
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, 0))
        foreign.uninstall()
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertEqual(coextra.status().foreign_tail, False)

    def test_tail_leaves_from_under_us(self):
        # A save/restore tool (torch.compile around every compiled call) that
        # was there first leaves while coextra sits on top: it writes what it
        # found, CPython's evaluator, over coextra's dispatcher.  Nobody
        # displaced coextra; its next check takes the interpreter back, with
        # CPython's evaluator as the tail.
        self.install_foreign()
        seen = []
        p = self.add_hook(on_enter=seen.append)
        dispatcher = native.eval_frame_func()
        foreign.uninstall()
        self.assertEqual(native.eval_frame_func(), DEFAULT)   # until coextra's next call
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (True, False, False, 1))
        self.assertEqual(native.eval_frame_func(), dispatcher)
        self.assertEqual(self.measure(seen), (N_LEAVES, 0, N_LEAVES))
        # The tool comes back over coextra and leaves again, restoring coextra.
        self.install_foreign()
        self.assertEqual(foreign.prev_func(), dispatcher)
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, N_LEAVES))
        foreign.uninstall()
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, False))
        p.remove()
        self.assertTrue(is_idle())
        self.assertEqual(native.eval_frame_func(), DEFAULT)

    def test_installed_after_displaces(self):
        seen = []
        p = self.add_hook(on_enter=seen.append)
        dispatcher = native.eval_frame_func()
        self.install_foreign()
        self.assertEqual(foreign.prev_func(), dispatcher)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.active_hooks), (False, True, 1))
        # The foreign tool chains to what it found (our dispatcher): everybody still runs.
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, N_LEAVES))
        p.remove()
        # coextra must not write its (stale) view back over the foreign tool.
        self.assertTrue(foreign.is_current())
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.active_hooks), (False, False, 0))
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, 0))
        # The foreign tool leaves and restores what it found: coextra's dispatcher,
        # with no hook active.  coextra notices (any API call, status() included)
        # that its own pointer is back and steps out: idle means no eval function.
        foreign.uninstall()
        self.assertEqual(run_leaves(), N_LEAVES)  # the idle dispatcher passes frames through
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (False, False, False, 0))
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        # and a new hook works normally afterwards
        q = self.add_hook(on_enter=seen.append)
        self.assertEqual(native.eval_frame_func(), dispatcher)
        foreign.reset()
        self.assertEqual(self.measure(seen), (N_LEAVES, 0, N_LEAVES))
        q.remove()
        self.assertTrue(is_idle())

    def test_last_hook_removed_mid_frame(self):
        # The frame in flight when the last hook goes still ends in the tail it
        # entered with (the foreign tool, handed back meanwhile).
        self.install_foreign()
        box = {}

        def on_enter(code):
            if code is run_leaves.__code__:
                box["h"].remove()

        box["h"] = self.add_hook(on_enter=on_enter)
        foreign.reset()
        r = run_leaves()
        n = foreign.count()
        self.assertEqual(r, N_LEAVES)
        self.assertEqual(n, N_LEAVES + 2)  # + on_enter's own frame, which went down the chain too
        self.assertTrue(foreign.is_current())
        self.assertFalse(coextra.status().installed)

    def test_uninstall_restores_dispatcher_while_hooks_active(self):
        seen = []
        self.add_hook(on_enter=seen.append)
        dispatcher = native.eval_frame_func()
        self.install_foreign()
        foreign.uninstall()  # back to coextra's dispatcher with the hook still active
        self.assertEqual(native.eval_frame_func(), dispatcher)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.active_hooks), (True, False, 1))
        self.assertEqual(self.measure(seen), (N_LEAVES, 0, N_LEAVES))

    def test_non_chaining_tool_after(self):
        seen = []
        p = self.add_hook(on_enter=seen.append)
        self.install_foreign(chain=False)  # calls CPython's evaluator itself
        self.assertTrue(coextra.status().displaced)
        # coextra is cut off, but nothing breaks.
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, 0))
        p.remove()
        self.assertTrue(foreign.is_current())
        self.assertFalse(coextra.status().displaced)
        foreign.uninstall()
        coextra.status()
        self.assertEqual(native.eval_frame_func(), DEFAULT)

    def test_reinstalled_over_tool_that_chains_to_us(self):
        # coextra -> foreign (prev = dispatcher) -> coextra removed (not written back)
        # -> coextra hook again: now dispatcher -> foreign -> dispatcher.  The
        # dispatcher must recognise the frame coming back and not loop.
        seen = []
        self.add_hook(on_enter=seen.append).remove()
        p = self.add_hook(on_enter=seen.append)
        self.install_foreign()
        p.remove()
        self.assertTrue(foreign.is_current())
        q = self.add_hook(on_enter=seen.append)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, True))
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, N_LEAVES))
        with self.assertRaises(RecursionError):
            (lambda f: f(f))(lambda f: f(f))
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, N_LEAVES))
        q.remove()
        self.assertTrue(foreign.is_current())  # given back what was found
        # Now foreign -> idle dispatcher, whose tail is that same foreign tool:
        # it must not call it again (an endless bounce), but CPython's evaluator.
        self.assertEqual(self.measure(seen), (N_LEAVES, N_LEAVES + 1, 0))
        with self.assertRaises(RecursionError):
            (lambda f: f(f))(lambda f: f(f))
        foreign.uninstall()
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertTrue(is_idle())


def _testinternalcapi():
    try:
        import _testinternalcapi
    except ImportError:
        return None
    if not (hasattr(_testinternalcapi, "set_eval_frame_record")
            and hasattr(_testinternalcapi, "set_eval_frame_default")):
        return None
    return _testinternalcapi


@unittest.skipIf(PY < (3, 11), "_testinternalcapi.set_eval_frame_record is 3.11+")
class TestTestInternalCapi(ChainTestCase):
    """CPython's record_eval appends each function's name and calls _PyEval_EvalFrameDefault
    directly: a tool that does not chain (Modules/_testinternalcapi.c, record_eval)."""

    def setUp(self):
        super().setUp()
        self.capi = _testinternalcapi()
        if self.capi is None:
            self.skipTest("_testinternalcapi.set_eval_frame_record is not available in this build")
        self.addCleanup(self.capi.set_eval_frame_default)

    def test_record_installed_before(self):
        names = []
        self.capi.set_eval_frame_record(names)
        seen = []
        p = self.add_hook(on_enter=seen.append)
        self.assertTrue(coextra.status().foreign_tail)
        del names[:], seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(names.count("leaf"), N_LEAVES)  # recorded: record_eval is our tail
        self.assertEqual(seen.count(leaf.__code__), N_LEAVES)
        p.remove()
        self.assertNotEqual(native.eval_frame_func(), DEFAULT)  # record_eval is back
        del names[:]
        run_leaves()
        self.assertEqual(names.count("leaf"), N_LEAVES)
        self.capi.set_eval_frame_default()
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertTrue(is_idle())

    def test_record_installed_after(self):
        seen = []
        p = self.add_hook(on_enter=seen.append)
        names = []
        self.capi.set_eval_frame_record(names)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced), (False, True))
        del names[:], seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(names.count("leaf"), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), 0)  # record_eval does not chain
        p.remove()
        del names[:]
        run_leaves()
        self.assertEqual(names.count("leaf"), N_LEAVES)  # not overwritten by coextra
        self.assertFalse(coextra.status().displaced)
        self.capi.set_eval_frame_default()
        self.assertTrue(is_idle())

    def test_set_default_clobbers_coextra(self):
        # set_eval_frame_default() stores NULL whatever was there: coextra is
        # displaced by "nothing" and must not put itself back on removal.
        seen = []
        p = self.add_hook(on_enter=seen.append)
        self.capi.set_eval_frame_default()
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertTrue(coextra.status().displaced)
        del seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), 0)
        p.remove()
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertTrue(is_idle())
        q = self.add_hook(on_enter=seen.append)  # and coextra comes back normally
        self.assertTrue(coextra.status().installed)
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), N_LEAVES)
        q.remove()


@unittest.skipIf(PY < (3, 15), "_PyInterpreterState_SetEvalFrameAllowSpecialization is 3.15+")
class TestAllowSpecialization(ChainTestCase):
    """3.15: an eval-frame function may opt in to keep specialization
    (_PyInterpreterState_SetEvalFrameAllowSpecialization), and every change of the function
    resets the opt-in.  _testinternalcapi.set_eval_frame_interp installs CPython's test copy of
    the interpreter loop with the opt-in on.  coextra installs over it with the opt-in off (an
    evaluator that runs specialized calls inline would keep nested frames from the hooks), and
    hands the interpreter back with the tool's opt-in as it was."""

    def setUp(self):
        super().setUp()
        try:
            import _testinternalcapi as capi
        except ImportError:
            capi = None
        if capi is None or not hasattr(capi, "set_eval_frame_interp"):
            self.fail("CPython 3.15's _testinternalcapi.set_eval_frame_interp is missing "
                      "(Debian: libpython3.15-testsuite)")
        self.capi = capi
        self.addCleanup(capi.set_eval_frame_default)

    def test_opt_in_survives_coextra(self):
        self.assertTrue(self.capi.is_specialization_enabled())  # no function: on
        self.capi.set_eval_frame_interp()
        interp = native.eval_frame_func()
        self.assertTrue(self.capi.is_specialization_enabled())  # the tool opted in
        seen = []
        p = self.add_hook(on_enter=seen.append)
        st = coextra.status()
        self.assertEqual((st.installed, st.foreign_tail), (True, True))
        self.assertFalse(self.capi.is_specialization_enabled())  # coextra's own: off
        del seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), N_LEAVES)    # every nested frame reaches the chain
        p.remove()
        self.assertEqual(native.eval_frame_func(), interp)
        self.assertTrue(self.capi.is_specialization_enabled())  # handed back with its opt-in
        self.assertEqual(run_leaves(), N_LEAVES)
        self.capi.set_eval_frame_default()
        self.assertTrue(is_idle())

    def test_tool_without_opt_in_stays_without(self):
        names = []
        self.capi.set_eval_frame_record(names)                   # installs without the opt-in
        self.assertFalse(self.capi.is_specialization_enabled())
        p = self.add_hook(on_enter=lambda code: None)
        p.remove()
        self.assertNotEqual(native.eval_frame_func(), DEFAULT)
        self.assertFalse(self.capi.is_specialization_enabled())
        self.capi.set_eval_frame_default()
        self.assertTrue(self.capi.is_specialization_enabled())

    def test_idle_coextra_leaves_specialization_on(self):
        p = self.add_hook(on_enter=lambda code: None)
        self.assertFalse(self.capi.is_specialization_enabled())
        p.remove()
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertTrue(self.capi.is_specialization_enabled())


def child_process(code):
    """Run code in a fresh interpreter with this one's sys.path; returns (returncode, output).
    The perf map the child's trampoline writes (/tmp/perf-<pid>.map) is removed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        map_file = "/tmp/perf-%d.map" % child.pid
        if os.path.exists(map_file):
            os.unlink(map_file)
    return child.returncode, out


def run_child(code):
    rc, out = child_process(code)
    if rc != 0:
        raise AssertionError("child failed (rc=%d):\n%s" % (rc, out))
    return out


def _trampoline_available():
    return sys.platform.startswith("linux") and hasattr(sys, "activate_stack_trampoline")


@unittest.skipUnless(_trampoline_available(), "sys.activate_stack_trampoline is 3.12+ on Linux")
class TestPerfTrampoline(ChainTestCase):
    def setUp(self):
        super().setUp()
        # The trampoline writes /tmp/perf-<pid>.map; remove it if we created it.
        self.map_file = "/tmp/perf-%d.map" % os.getpid()
        existed = os.path.exists(self.map_file)
        self.addCleanup(lambda: existed or not os.path.exists(self.map_file) or os.unlink(self.map_file))
        self.addCleanup(sys.deactivate_stack_trampoline)
        try:
            sys.activate_stack_trampoline("perf")
        except (ValueError, RuntimeError, OSError) as e:
            self.skipTest("perf trampoline unavailable here: %s" % e)
        sys.deactivate_stack_trampoline()
        self.assertEqual(native.eval_frame_func(), DEFAULT)

    @unittest.skipIf(sys.version_info >= (3, 15), "3.15's trampoline chains (test_chains_over_coextra)")
    def test_refused_while_coextra_installed(self):
        seen = []
        self.add_hook(on_enter=seen.append)
        with self.assertRaisesRegex(RuntimeError, "custom eval frame"):
            sys.activate_stack_trampoline("perf")
        self.assertFalse(sys.is_stack_trampoline_active())
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced), (True, False))
        del seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), N_LEAVES)

    @unittest.skipIf(sys.version_info < (3, 15), "3.12-3.14's trampoline refuses (test_refused_while_coextra_installed)")
    def test_chains_over_coextra(self):
        # 3.15: activating over another eval-frame function saves it and calls
        # it (instead of _PyEval_EvalFrameDefault); deactivating puts it back.
        # In a fresh process: this process's trampoline was activated before
        # (setUp), and 3.15.2 crashes on a chained activation that follows a
        # deactivation (test_cpython_315_reactivation_bug).
        out = run_child("""
            import sys, coextra
            import coextra_test_native as native
            def leaf(x):
                return x + 1
            seen = []
            h = coextra.add_hook("t", on_enter=seen.append)
            ours = native.eval_frame_func()
            sys.activate_stack_trampoline("perf")
            st = coextra.status()
            assert sys.is_stack_trampoline_active()
            assert (st.installed, st.displaced) == (False, True), st   # displaced, and says so
            for i in range(100):
                leaf(i)
            assert seen.count(leaf.__code__) == 100, seen.count(leaf.__code__)  # yet called below it
            sys.deactivate_stack_trampoline()
            assert native.eval_frame_func() == ours                   # given back
            st = coextra.status()
            assert (st.installed, st.displaced) == (True, False), st
            del seen[:]
            for i in range(100):
                leaf(i)
            assert seen.count(leaf.__code__) == 100
            h.remove()
            print("OK")
        """)
        self.assertEqual(out.strip().splitlines()[-1:], ["OK"], out)

    @unittest.skipIf(sys.version_info[:2] != (3, 15), "the 3.15 trampoline's reactivation bug")
    def test_cpython_315_reactivation_bug(self):
        # Pinned CPython 3.15.2 bug, without coextra (a stand-alone PEP 523
        # hook): after one activation and deactivation, an activation over
        # another eval-frame function runs without the trampoline's co_extra
        # index and crashes.  If this starts passing, CPython fixed it: update
        # docs/cpython-limitations.md ("The perf trampoline").
        code = """
            import sys, coextra_test_foreign as F
            sys.activate_stack_trampoline("perf")
            sys.deactivate_stack_trampoline()
            F.install(True)
            print("armed", flush=True)
            sys.activate_stack_trampoline("perf")
            ns = {}
            exec("def fresh():\\n    return 1\\n", ns)
            ns["fresh"]()
            sys.deactivate_stack_trampoline()
            F.uninstall()
            print("survived")
        """
        rc, out = child_process(code)
        self.assertIn("armed", out)  # got as far as the second activation
        self.assertNotEqual(rc, 0, "CPython 3.15's trampoline survived: %s" % out)

    def test_trampoline_installed_before(self):
        sys.activate_stack_trampoline("perf")
        trampoline = native.eval_frame_func()
        self.assertNotEqual(trampoline, DEFAULT)
        seen = []
        p = self.add_hook(on_enter=seen.append)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, True))
        del seen[:]
        self.assertEqual(run_leaves(), N_LEAVES)
        self.assertEqual(seen.count(leaf.__code__), N_LEAVES)
        # The trampoline still runs under coextra: it writes a perf map entry
        # for each code object it sees for the first time.
        ns = {}
        exec("def fresh_code_for_the_perf_map():\n    return 5\n", ns)
        self.assertEqual(ns["fresh_code_for_the_perf_map"](), 5)
        with open(self.map_file) as f:
            self.assertIn("fresh_code_for_the_perf_map", f.read())
        # CPython's "active" is pointer identity with its evaluator: not while coextra is on top.
        self.assertFalse(sys.is_stack_trampoline_active())
        if sys.version_info >= (3, 15):
            # 3.15 deactivates anyway and stores what it found before it (the
            # default) over coextra: the tail has left from under coextra,
            # whose next check (status()) takes the interpreter back.
            dispatcher = native.eval_frame_func()
            sys.deactivate_stack_trampoline()
            self.assertEqual(native.eval_frame_func(), DEFAULT)
            st = coextra.status()
            self.assertEqual((st.installed, st.displaced, st.foreign_tail), (True, False, False))
            self.assertEqual(native.eval_frame_func(), dispatcher)
            del seen[:]
            self.assertEqual(run_leaves(), N_LEAVES)
            self.assertEqual(seen.count(leaf.__code__), N_LEAVES)
            p.remove()
            self.assertEqual(native.eval_frame_func(), DEFAULT)
            self.assertTrue(is_idle())
            return
        # While coextra sits on top, 3.12-3.14 refuse to deactivate the trampoline too.
        with self.assertRaisesRegex(RuntimeError, "custom eval frame"):
            sys.deactivate_stack_trampoline()
        self.assertTrue(coextra.status().installed)
        p.remove()
        self.assertEqual(native.eval_frame_func(), trampoline)  # given back
        self.assertTrue(sys.is_stack_trampoline_active())
        self.assertEqual(run_leaves(), N_LEAVES)
        sys.deactivate_stack_trampoline()
        self.assertFalse(sys.is_stack_trampoline_active())
        self.assertEqual(native.eval_frame_func(), DEFAULT)
        self.assertTrue(is_idle())


if __name__ == "__main__":
    unittest.main()
