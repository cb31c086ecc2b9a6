"""test_chain.py: the eval-frame chain against real CPython: order, only, activation, changes from
inside hooks and other threads, introspection, input validation, callback isolation, exceptions, idle."""

import itertools
import subprocess
import sys
import threading
import traceback
import unittest

import coextra
import coextra_test_native as native

from test_chain_helpers import PY, ChainTestCase, UnraisableCatcher, native_events, uname


def target():
    return inner() + 1


def inner():
    return 41


def other():
    return 7


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class TestOrder(ChainTestCase):
    def _py_logger(self, log, tag):
        # Python callbacks: their own frames reach the native hooks (named
        # "<lambda>"), which is why the checks filter on the target's name.
        return dict(on_enter=lambda code: log.append((tag, "enter", code.co_name)),
                    on_exit=lambda code: log.append((tag, "exit", code.co_name)))

    @staticmethod
    def _of(log, co_name):
        return [(e[0], e[1]) for e in log if e[2] == co_name]

    def test_three_priorities_python_and_native(self):
        log = []
        # Registered innermost first: the order must come from the priorities.
        self.add_native("log", coextra.PRIORITY_OPTIMIZER, log, name="chain.order.opt")
        self.add_hook("chain.order.py", priority=coextra.PRIORITY_PROFILER, **self._py_logger(log, "chain.order.py"))
        self.add_native("log", coextra.PRIORITY_DEBUGGER, log, name="chain.order.dbg")
        self.assertEqual(target(), 42)
        self.assertEqual(self._of(log, "target"), [
            ("chain.order.dbg", "enter"), ("chain.order.py", "enter"), ("chain.order.opt", "enter"),
            ("chain.order.opt", "exit"), ("chain.order.py", "exit"), ("chain.order.dbg", "exit")])
        # the nested frame is wrapped the same way, inside target's
        seq = [(e[0], e[1], e[2]) for e in log if e[2] in ("target", "inner")]
        self.assertEqual(seq[:3], [("chain.order.dbg", "enter", "target"), ("chain.order.py", "enter", "target"),
                                   ("chain.order.opt", "enter", "target")])
        self.assertEqual(seq[3:9], [("chain.order.dbg", "enter", "inner"), ("chain.order.py", "enter", "inner"),
                                    ("chain.order.opt", "enter", "inner"), ("chain.order.opt", "exit", "inner"),
                                    ("chain.order.py", "exit", "inner"), ("chain.order.dbg", "exit", "inner")])
        mine = [h for h in coextra.hooks() if h.name.startswith("chain.order.")]
        self.assertEqual(mine, [
            coextra.HookInfo("chain.order.dbg", coextra.PRIORITY_DEBUGGER, True, True),
            coextra.HookInfo("chain.order.py", coextra.PRIORITY_PROFILER, True, False),
            coextra.HookInfo("chain.order.opt", coextra.PRIORITY_OPTIMIZER, True, True)])

    def test_equal_priorities_keep_registration_order(self):
        log = []
        self.add_native("log", 500, log, name="chain.eq.a")
        b = self.add_hook("chain.eq.b", **self._py_logger(log, "chain.eq.b"))
        self.add_native("log", 500, log, name="chain.eq.c")
        self.add_hook("chain.eq.d", **self._py_logger(log, "chain.eq.d"))
        self.add_native("log", 499, log, name="chain.eq.first")  # lower priority still goes first
        self.assertEqual(other(), 7)
        names = ["chain.eq.first", "chain.eq.a", "chain.eq.b", "chain.eq.c", "chain.eq.d"]
        self.assertEqual(self._of(log, "other"),
                         [(n, "enter") for n in names] + [(n, "exit") for n in reversed(names)])
        self.assertEqual([h.name for h in coextra.hooks() if h.name.startswith("chain.eq.")], names)
        # Re-registering b makes it the newest of its priority: last among equals.
        b.remove()
        self.add_hook("chain.eq.b", **self._py_logger(log, "chain.eq.b"))
        log.clear()
        other()
        names = ["chain.eq.first", "chain.eq.a", "chain.eq.c", "chain.eq.d", "chain.eq.b"]
        self.assertEqual(self._of(log, "other"),
                         [(n, "enter") for n in names] + [(n, "exit") for n in reversed(names)])
        self.assertEqual([h.name for h in coextra.hooks() if h.name.startswith("chain.eq.")], names)


class TestOnly(ChainTestCase):
    def test_only_python_slot(self):
        slot = coextra.Slot(uname("only"))
        self.addCleanup(lambda: slot.released or slot.release())
        seen, done = [], []
        self.add_hook(only=slot, on_enter=seen.append, on_exit=done.append)
        log = []
        self.add_native("log", 100, log)  # a hook without `only` still sees everything
        target(), other()
        self.assertEqual(seen, [])
        slot[inner.__code__] = "mark"
        target(), other(), inner()
        self.assertEqual(seen, [inner.__code__, inner.__code__])
        self.assertEqual(done, seen)
        self.assertEqual(len(native_events(log, "target")), 4)
        del slot[inner.__code__]
        slot[other.__code__] = 1
        seen.clear(), done.clear()
        target(), other()
        self.assertEqual(seen, [other.__code__])
        # A released slot holds no value anywhere: the hook is skipped, nothing breaks.
        slot.release()
        seen.clear()
        self.assertEqual((target(), other()), (42, 7))
        self.assertEqual(seen, [])

    def test_only_native_slot(self):
        handle = native.reserve_slot(uname("native-only"))
        released = []
        self.addCleanup(lambda: released or native.release_slot(handle))
        log = []
        self.add_native("log", 500, log, only=handle)
        target(), other()
        self.assertEqual(log, [])
        native.mark(other.__code__, handle)
        self.assertEqual((target(), other()), (42, 7))
        self.assertEqual([(e[0].startswith("test_chain.native"), e[1], e[2]) for e in log],
                         [(True, "enter", "other"), (True, "exit", "other")])
        native.unmark(other.__code__, handle)
        log.clear()
        other()
        self.assertEqual(log, [])
        native.mark(target.__code__, handle)
        native.release_slot(handle)
        released.append(1)
        target()
        self.assertEqual(log, [])

    def test_only_after_the_index_is_reused(self):
        # The filter's first test is a per-block presence bit per slot index
        # (Block::present); an index released and reserved again sets the same
        # bit, which must not let the old filter through.
        for extra in (False, True):  # the single filtered path, then the chain's
            with self.subTest(another_filtered_hook=extra):
                old = native.reserve_slot(uname("reuse-old"))
                log, other_log = [], []
                self.add_native("log", 500, log, only=old, name=uname("reuse-hook"))
                if extra:
                    keep = native.reserve_slot(uname("reuse-keep"))
                    self.addCleanup(native.release_slot, keep)
                    self.add_native("log", 600, other_log, only=keep, name=uname("reuse-other"))
                native.mark(other.__code__, old)
                other()
                self.assertEqual([e[1] for e in native_events(log, "other")], ["enter", "exit"])
                native.release_slot(old)
                new = native.reserve_slot(uname("reuse-new"))
                self.addCleanup(native.release_slot, new)
                self.assertEqual(new[0], old[0], "the released index is reused")
                native.mark(other.__code__, new)
                log.clear()
                self.assertEqual(other(), 7)
                self.assertEqual(native_events(log, "other"), [])
                self.assertEqual(other_log, [])

    def test_only_on_slot_indices_past_the_presence_bits(self):
        # Indices 32 and up share one sticky presence bit: the entry decides.
        handles = [native.reserve_slot(uname("wide%d" % i)) for i in range(40)]
        for h in handles:
            self.addCleanup(native.release_slot, h)
        self.assertGreaterEqual(max(h[0] for h in handles), 40)
        hi, lo, hi2 = handles[-1], handles[0], handles[-2]
        log = []
        self.add_native("log", 500, log, only=hi)
        native.mark(other.__code__, hi2)  # same presence bit, other slot
        native.mark(inner.__code__, lo)
        self.assertEqual((target(), other()), (42, 7))
        self.assertEqual(log, [])
        native.mark(other.__code__, hi)
        self.assertEqual(other(), 7)
        self.assertEqual([e[1] for e in native_events(log, "other")], ["enter", "exit"])
        native.unmark(other.__code__, hi)  # the shared bit stays set (hi2); the entry says no
        log.clear()
        self.assertEqual(other(), 7)
        self.assertEqual(log, [])
        native.mark(other.__code__, hi)
        native.unmark(other.__code__, hi2)  # must not clear the bit hi still needs
        self.assertEqual(other(), 7)
        self.assertEqual([e[1] for e in native_events(log, "other")], ["enter", "exit"])

    def test_only_released_or_wrong(self):
        slot = coextra.Slot(uname("only-rel"))
        slot.release()
        with self.assertRaises(coextra.ReleasedError):
            coextra.add_hook(uname("x"), on_enter=id, only=slot)
        with self.assertRaises(TypeError):
            coextra.add_hook(uname("x"), on_enter=id, only=42)
        handle = native.reserve_slot(uname("native-rel"))
        native.release_slot(handle)
        with self.assertRaises(coextra.ReleasedError):
            native.add(uname("x"), 500, "pass", None, only=handle)
        self.assertEqual([h for h in coextra.hooks() if h.name.startswith("test_chain.x")], [])


class TestActivation(ChainTestCase):
    def test_active_toggle(self):
        seen, log = [], []
        p = self.add_hook(on_enter=seen.append)
        n = self.add_native("log", 200, log)
        self.assertTrue(p.active)
        self.assertEqual(coextra.status().active_hooks, 2)
        p.active = False
        del seen[:]
        other()
        got = list(seen)
        self.assertFalse(p.active)
        self.assertEqual(got, [])
        self.assertEqual(len(native_events(log, "other")), 2)
        info = {h.name: h for h in coextra.hooks()}
        self.assertFalse(info[p.name].active)
        self.assertEqual(coextra.status().active_hooks, 1)
        native.set_active(n, False)
        # No active hook left: coextra steps out entirely.
        st = coextra.status()
        self.assertEqual((st.installed, st.active_hooks), (False, 0))
        self.assertEqual(native.eval_frame_func(), native.default_eval_func())
        log.clear()
        other()
        self.assertEqual((seen, log), ([], []))
        p.active = False  # same value again: harmless
        p.active = 1      # any truth value
        self.assertTrue(p.active)
        self.assertTrue(coextra.status().installed)
        other()
        self.assertEqual(seen.count(other.__code__), 1)
        native.set_active(n, True)
        other()
        self.assertEqual(len(native_events(log, "other")), 2)
        self.assertEqual(coextra.status().active_hooks, 2)


class TestChangesFromInsideHooks(ChainTestCase):
    def test_native_hook_paused_and_resumed_while_frame_in_flight_runs(self):
        # The frame entered with the victim in its snapshot; pausing rewrites
        # the victim's step into a skip in every live snapshot, resuming
        # rewrites it back: the in-flight frame reaches it.  Inline hops and
        # table delegation (ABI 1.1 consumers) alike.
        self.addCleanup(native.set_table_delegation, False)
        for table in (False, True):
            with self.subTest(table=table):
                native.set_table_delegation(table)
                log = []
                victim = native.add(uname("victim"), 1000, "log", log)
                box = {}

                def on_enter(code):
                    if code is target.__code__ and "n" not in box:
                        native.set_active(victim, 0)
                        native.set_active(victim, 1)
                        box["n"] = len(log)

                h = coextra.add_hook(uname("toggler"), on_enter=on_enter, priority=100)
                try:
                    self.assertEqual(target(), 42)
                finally:
                    h.remove()
                    native.remove(victim)
                self.assertEqual([e[1] for e in native_events(log[box["n"]:], "target")], ["enter", "exit"])

    def test_python_hook_removes_itself(self):
        enters, exits = [], []
        box = {}

        def on_enter(code):
            enters.append(code)
            if code is target.__code__:
                box["h"].remove()

        box["h"] = self.add_hook(on_enter=on_enter, on_exit=exits.append)
        self.assertEqual(other(), 7)
        self.assertEqual(target(), 42)       # removal happens while target is in flight
        self.assertEqual((target(), other()), (42, 7))
        # inner() was entered after the removal: not seen; target's own exit still is.
        mine = (other.__code__, target.__code__, inner.__code__)
        self.assertEqual([c for c in enters if c in mine], [other.__code__, target.__code__])
        self.assertEqual([c for c in exits if c in mine], [other.__code__, target.__code__])
        self.assertTrue(box["h"].removed)
        self.assertNotIn(box["h"].name, [h.name for h in coextra.hooks()])

    def test_removed_native_hook_is_never_called_again(self):
        # After coextra_hook_remove() returns, the hook's eval function is not
        # called again (its owner may free ctx), even for a frame that had
        # already entered the chain when the removal happened.
        inner_log = []
        victim = self.add_native("log", 1000, inner_log)
        at_removal = []

        def on_enter(code):
            if code is target.__code__ and not at_removal:
                native.remove(victim)
                at_removal.append((native.count(victim), len(inner_log)))

        self.add_hook(on_enter=on_enter, priority=100)
        self.assertEqual(target(), 42)
        self.assertEqual(target(), 42)
        self.assertEqual(len(at_removal), 1)
        count, n_log = at_removal[0]
        self.assertEqual(native.count(victim), count)
        # The victim was in flight around on_enter's own frame (the callback
        # ran inside it): that one evaluation finishes, nothing else follows.
        self.assertEqual([e[1:3] for e in inner_log[n_log:]], [("exit", "on_enter")])
        self.assertEqual(native_events(inner_log, "target"), [])
        self.assertEqual(native_events(inner_log, "inner"), [])

    def test_native_hook_paused_while_frame_in_flight_is_skipped(self):
        # Pausing a hook inner to a frame in flight: its step in that frame's
        # snapshot becomes a skip, so the frame goes past it; resumed, it sees
        # frames again.  Also for a hook with `only` (a filter step).
        slot = native.reserve_slot(uname("paused-only"))
        self.addCleanup(native.release_slot, slot)
        native.mark(target.__code__, slot)
        native.mark(inner.__code__, slot)
        for only in ((0, 0), slot):
            with self.subTest(only=only != (0, 0)):
                log = []
                victim = self.add_native("log", 1000, log, only=only)
                box = {}

                def on_enter(code):
                    if code is target.__code__ and "n" not in box:
                        native.set_active(victim, 0)
                        box["n"] = len(log)

                h = self.add_hook(on_enter=on_enter, priority=100)
                self.assertEqual(target(), 42)
                self.assertEqual(native_events(log[box["n"]:], "target"), [])
                self.assertEqual(native_events(log[box["n"]:], "inner"), [])
                native.set_active(victim, 1)
                self.assertEqual(target(), 42)
                self.assertEqual([e[1] for e in native_events(log[box["n"]:], "target")], ["enter", "exit"])
                h.remove()
                native.remove(victim)
        self.assertEqual([e[1] for e in native_events(log[box["n"]:], "inner")], ["enter", "exit"])

    def test_native_hook_removes_itself(self):
        h = self.add_native("remove_self", 500)
        self.assertEqual((target(), other(), fib(5)), (42, 7, 5))
        self.assertTrue(native.is_removed(h))
        self.assertEqual(native.count(h), 1)
        with self.assertRaises(coextra.ReleasedError):
            native.remove(h)

    def test_add_from_inside_hook(self):
        added_enters, added_exits = [], []
        added_log = []
        box = {}

        def on_enter(code):
            if code is target.__code__ and "q" not in box:
                box["q"] = coextra.add_hook(uname("added"), priority=1000,
                                            on_enter=added_enters.append, on_exit=added_exits.append)
                box["n"] = native.add(uname("added-native"), 900, "log", added_log)

        self.add_hook(on_enter=on_enter, priority=100)
        interesting = (target.__code__, inner.__code__)
        try:
            r1 = target()
            first = ([c for c in list(added_enters) if c in interesting],
                     [c for c in list(added_exits) if c in interesting],
                     [e[:2] for e in native_events(added_log, "inner")], native_events(added_log, "target"))
            r2 = target()
        finally:
            box["q"].remove()
            native.remove(box["n"])
        self.assertEqual((r1, r2), (42, 42))
        # target was in flight when they were added: it finishes through the
        # chain it entered; inner() was entered afterwards.
        self.assertEqual(first[0], [inner.__code__])
        self.assertEqual(first[1], [inner.__code__])
        self.assertEqual([e[1] for e in first[2]], ["enter", "exit"])
        self.assertEqual(first[3], [])
        self.assertEqual([c for c in added_enters if c in interesting],
                         [inner.__code__, target.__code__, inner.__code__])
        self.assertEqual([c for c in added_exits if c in interesting],
                         [inner.__code__, inner.__code__, target.__code__])


class TestHopPositions(ChainTestCase):
    # The contract of coextra.h's coextra_eval_next for a second delegation:
    # outer -> inner, and inner returns without running or finishing the
    # frame; outer delegates a second time.  Variants: outer not first (a
    # hook in front), a hook between them that this frame skips (an `only`
    # filter on a slot the code does not hold: a runtime step), a hook below
    # inner (inner not the last), and every hook delegating through the
    # table, as a consumer built against ABI 1.0/1.1 does (no inline hops).

    def _delegate_twice(self, tables):
        """Runs every variant; yields (variant, result, body runs, inner's count, below's log)."""
        runs = []

        def body():
            runs.append(1)
            return 42

        handle = native.reserve_slot(uname("hop-only"))
        self.addCleanup(native.release_slot, handle)
        self.addCleanup(native.set_table_delegation, False)
        for above, between, below, table in itertools.product((False, True), (False, True), (False, True), tables):
            variant = dict(above=above, between=between, below=below, table=table)
            native.set_table_delegation(table)
            hooks, below_log = [], []
            del runs[:]
            try:
                if above:
                    hooks.append(native.add(uname("above"), 50, "pass", None))
                hooks.append(native.add(uname("outer"), 100, "next_twice", None, code=body.__code__))
                if between:
                    hooks.append(native.add(uname("between"), 500, "pass", None, only=handle))
                inner_hook = native.add(uname("inner"), 1000, "no_consume", None, code=body.__code__)
                hooks.append(inner_hook)
                if below:
                    hooks.append(native.add(uname("below"), 5000, "log", below_log, code=body.__code__))
                before = native.count(inner_hook)
                r = body()
                seen = native.count(inner_hook) - before
            finally:
                for h in hooks:
                    native.remove(h)
            yield variant, r, len(runs), seen, [e[1] for e in below_log]
            self.assertEqual(body(), 42)

    def test_delegating_again_after_an_inner_hook_kept_the_frame(self):
        # coextra_eval_next puts nothing back (the step to the next hook is a
        # tail call), so the second delegation continues below inner: the
        # hook below it, or the evaluator.  The frame runs exactly once,
        # inner sees it once, the hook below once, and the result is the
        # frame's own (None if the second delegation reached inner again).
        for variant, r, runs, seen, below_log in self._delegate_twice((False, True)):
            with self.subTest(**variant):
                self.assertEqual((r, runs, seen), (42, 1, 1))
                self.assertEqual(below_log, ["enter", "exit"] if variant["below"] else [])


class TestThreads(ChainTestCase):
    def test_changes_from_another_thread(self):
        n_workers, iterations, cycles = 4, 150, 60
        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        self.addCleanup(sys.setswitchinterval, old_interval)
        records = []  # (enters, exits) per Python hook ever added
        native_logs = []
        errors = []
        start = threading.Barrier(n_workers + 1)
        results = [None] * n_workers

        def work(i):
            start.wait()
            total = 0
            for _ in range(iterations):
                total += fib(7) + target()
            results[i] = total

        def change():
            start.wait()
            live = []
            try:
                for k in range(cycles):
                    enters, exits = [], []
                    records.append((enters, exits))
                    live.append(coextra.add_hook(uname("thr"), priority=(k * 37) % 1000,
                                                 on_enter=enters.append, on_exit=exits.append))
                    log = []
                    native_logs.append(log)
                    live.append(native.add(uname("thr-native"), (k * 53) % 1000, "log", log))
                    if k % 3 == 0:
                        h = live[-2]
                        h.active = not h.active
                    if k % 4 == 1:
                        native.set_active(live[-1], False)
                    if len(live) > 6:
                        for h in (live.pop(0), live.pop(0)):
                            h.remove() if isinstance(h, coextra.Hook) else native.remove(h)
                for h in live:
                    h.remove() if isinstance(h, coextra.Hook) else native.remove(h)
            except BaseException as e:  # reported below, never swallowed
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_workers)]
        threads.append(threading.Thread(target=change))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "a thread is stuck")
        self.assertEqual(errors, [])
        self.assertEqual(results, [iterations * (13 + 42)] * n_workers)
        seen_any = 0
        for enters, exits in records:
            self.assertBalanced(enters, exits)
            seen_any += len(enters)
        for log in native_logs:
            self.assertEqual(sum(1 for e in log if e[1] == "enter"), sum(1 for e in log if e[1] == "exit"))
        self.assertGreater(seen_any, 0, "no hook saw any worker frame: the test exercised nothing")
        self.assertEqual([h for h in coextra.hooks() if h.name.startswith("test_chain.thr")], [])


class TestIntrospectionAndErrors(ChainTestCase):
    def test_hooks_and_status(self):
        st = coextra.status()
        self.assertIsInstance(st, coextra.Status)
        self.assertEqual(st._fields, ("installed", "displaced", "foreign_tail", "active_hooks", "co_extra_index",
                                      "monitoring_tool_id", "observers"))
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks, st.monitoring_tool_id,
                          st.observers), (False, False, False, 0, None, 0))
        self.assertTrue(st.co_extra_index is None or (isinstance(st.co_extra_index, int) and st.co_extra_index >= 0))
        before = coextra.hooks()
        p = self.add_hook("chain.intro.p", priority=coextra.PRIORITY_OPTIMIZER, on_exit=id)
        n = self.add_native("pass", coextra.PRIORITY_DEBUGGER, name="chain.intro.n")
        self.assertIsInstance(p, coextra.Hook)
        self.assertEqual((p.name, p.priority, p.active, p.removed), ("chain.intro.p", 1000, True, False))
        self.assertIn("chain.intro.p", repr(p))
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (True, False, False, 2))
        mine = [h for h in coextra.hooks() if h not in before]
        self.assertEqual(mine, [coextra.HookInfo("chain.intro.n", 100, True, True),
                                coextra.HookInfo("chain.intro.p", 1000, True, False)])
        self.assertIsInstance(mine[0], coextra.HookInfo)
        p.active = False
        self.assertIn(coextra.HookInfo("chain.intro.p", 1000, False, False), coextra.hooks())
        self.assertEqual(coextra.status().active_hooks, 1)
        native.remove(n)
        p.remove()
        self.assertEqual(coextra.hooks(), before)
        self.assertEqual(coextra.status().active_hooks, 0)
        self.assertIn("removed", repr(p))
        self.assertEqual(coextra.PRIORITY_DEBUGGER < coextra.PRIORITY_PROFILER < coextra.PRIORITY_DEFAULT
                         < coextra.PRIORITY_OPTIMIZER, True)

    def test_with_statement_removes(self):
        seen = []
        with coextra.add_hook(uname("with"), on_enter=seen.append) as h:
            self.assertTrue(coextra.status().installed)
            other()
        self.assertTrue(h.removed)
        other()
        self.assertEqual(seen.count(other.__code__), 1)

    def test_duplicate_names(self):
        name = uname("dup")
        self.add_hook(name, on_enter=id)
        with self.assertRaises(ValueError):
            coextra.add_hook(name, on_enter=id)
        with self.assertRaises(ValueError):
            native.add(name, 500, "pass")
        nname = uname("dup-native")
        self.add_native("pass", name=nname)
        with self.assertRaises(ValueError):
            coextra.add_hook(nname)
        with self.assertRaises(ValueError):
            native.add(nname, 500, "pass")
        self.assertEqual(sum(1 for h in coextra.hooks() if h.name in (name, nname)), 2)

    def test_name_free_again_after_remove(self):
        name = uname("reuse")
        coextra.add_hook(name).remove()
        self.add_hook(name).remove()
        h = native.add(name, 500, "pass")
        native.remove(h)
        h = self.add_hook(name)
        self.assertEqual([i.name for i in coextra.hooks() if i.name == name], [name])
        self.assertFalse(h.removed)

    def test_bad_priorities(self):
        for prio in (coextra._coextra.PRIORITY_MIN - 1, coextra._coextra.PRIORITY_MAX + 1, -(2 ** 31)):
            with self.assertRaises(ValueError, msg=prio):
                coextra.add_hook(uname("prio"), priority=prio)
            with self.assertRaises(ValueError, msg=prio):
                native.add(uname("prio"), prio, "pass")
        with self.assertRaises((TypeError, OverflowError)):
            coextra.add_hook(uname("prio"), priority=2 ** 40)
        with self.assertRaises(TypeError):
            coextra.add_hook(uname("prio"), priority="high")
        with self.assertRaises(TypeError):
            coextra.add_hook(uname("prio"), priority=1.5)
        # the bounds themselves are valid
        self.add_hook(priority=coextra._coextra.PRIORITY_MIN)
        self.add_hook(priority=coextra._coextra.PRIORITY_MAX)
        self.assertEqual([h.name for h in coextra.hooks() if h.name.startswith("test_chain.prio")], [])

    def test_bad_names(self):
        for bad in ("", "a\0b", "x" * (coextra._coextra.NAME_MAX + 1)):
            with self.assertRaises(ValueError, msg=repr(bad[:20])):
                coextra.add_hook(bad)
        for bad in (None, 42, b"bytes"):
            with self.assertRaises(TypeError, msg=repr(bad)):
                coextra.add_hook(bad)
        with self.assertRaises(ValueError):
            native.add(None, 500, "pass")  # NULL name through the C API
        with self.assertRaises(ValueError):
            native.add("", 500, "pass")
        self.add_hook("x" * coextra._coextra.NAME_MAX)  # the limit itself is fine

    def test_bad_callbacks(self):
        for kw in ({"on_enter": 42}, {"on_exit": "not callable"}, {"on_enter": id, "on_exit": 1.0}):
            with self.assertRaises(TypeError, msg=kw):
                coextra.add_hook(uname("cb"), **kw)
        with self.assertRaises(TypeError):
            coextra.add_hook(uname("cb"), id)  # callbacks are keyword-only
        self.assertEqual([h for h in coextra.hooks() if h.name.startswith("test_chain.cb")], [])
        self.assertFalse(coextra.status().installed)

    def test_removed_twice(self):
        h = coextra.add_hook(uname("twice"), on_enter=id)
        h.remove()
        with self.assertRaises(coextra.ReleasedError):
            h.remove()
        self.assertTrue(issubclass(coextra.ReleasedError, RuntimeError))
        with self.assertRaises(coextra.ReleasedError):
            h.active = True
        self.assertFalse(h.active)
        with h:  # leaving a with-block of a removed hook is fine
            pass
        n = native.add(uname("twice-native"), 500, "pass")
        native.remove(n)
        with self.assertRaises(coextra.ReleasedError):
            native.remove(n)
        with self.assertRaises(coextra.ReleasedError):
            native.set_active(n, True)

    def test_native_bad_handles(self):
        with self.assertRaises(coextra.ReleasedError):
            native.remove_raw(12345)
        with self.assertRaises(coextra.ReleasedError):
            native.remove_raw(0xDEADBEEF0)
        with self.assertRaises(ValueError):
            native.remove_raw(0)
        self.assertEqual(other(), 7)

    def test_hook_handles_are_salted_not_sequential(self):
        # A handle names one hook for good: neither its neighbours nor a
        # removed hook's handle name a live hook (another tool's), as a
        # stale slot handle names no slot.
        a = native.add(uname("salt-a"), 500, "pass")
        b = native.add(uname("salt-b"), 500, "pass")
        try:
            raw_a, raw_b = native.raw_handle(a), native.raw_handle(b)
            self.assertNotIn(raw_b - raw_a, (-1, 0, 1))
            native.remove(a)
            with self.assertRaises(coextra.ReleasedError):
                native.remove_raw(raw_a)  # stale: removed
            for guess in (raw_b - 1, raw_b + 1, raw_a + 1, 1, 2, 3):
                with self.subTest(guess=guess):
                    with self.assertRaises(coextra.ReleasedError):
                        native.remove_raw(guess)
            self.assertGreater(native.count(b), 0)  # b, still live, saw frames meanwhile
        finally:
            native.remove(b)
        with self.assertRaises(coextra.ReleasedError):
            native.remove_raw(raw_b)

    def test_hook_handles_differ_between_processes(self):
        # The salt is per process: the first hook of two runs gets two
        # different handles, so a handle written down in one run is no key
        # to the next.
        code = ("import coextra, coextra_test_native as n; h = n.add('first', 500, 'pass');"
                "print(n.raw_handle(h)); n.remove(h)")
        seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout.strip() for _ in range(2)}
        self.assertEqual(len(seen), 2, seen)


class TestPythonCallbacks(ChainTestCase):
    def test_own_callback_frames_not_seen(self):
        seen_a, seen_b = [], []

        def helper():
            return other()

        def cb_a(code):
            seen_a.append(code)
            if code is target.__code__:
                helper()
                target()  # even a function the hook otherwise sees

        on_exit = lambda code: code is target.__code__ and helper()  # noqa: E731
        a = self.add_hook(on_enter=cb_a, on_exit=on_exit)
        self.add_hook(on_enter=seen_b.append, priority=900)
        native_log = []
        self.add_native("log", 950, native_log)
        self.assertEqual(target(), 42)
        # a saw only target and inner, never its callbacks' frames (helper, other, the lambda, cb_a)
        callback_codes = (helper.__code__, other.__code__, cb_a.__code__, on_exit.__code__)
        self.assertEqual([c for c in list(seen_a) if c in callback_codes + (target.__code__, inner.__code__)],
                         [target.__code__, inner.__code__])
        # another hook does see a's callback frames: exclusion is per hook
        self.assertIn(cb_a.__code__, seen_b)
        self.assertIn(helper.__code__, seen_b)
        self.assertIn("cb_a", [e[2] for e in native_log])
        self.assertTrue(a.active)

    def test_callback_exceptions_go_to_unraisablehook(self):
        def raiser():
            raise IndexError("from the frame")

        watched = (target.__code__, inner.__code__, raiser.__code__)

        def bad_enter(code):
            if code in watched:
                raise ValueError("boom-enter " + code.co_name)

        def bad_exit(code):
            if code in watched:
                raise KeyError("boom-exit")

        self.add_hook(on_enter=bad_enter, on_exit=bad_exit)
        with UnraisableCatcher() as u:
            result = target()
        self.assertEqual(result, 42)
        self.assertEqual([t for t, m, o in u.seen], [ValueError, ValueError, KeyError, KeyError])
        self.assertEqual([o for t, m, o in u.seen], [bad_enter, bad_enter, bad_exit, bad_exit])
        self.assertEqual(u.seen[0][1], "boom-enter target")
        self.assertEqual(u.seen[1][1], "boom-enter inner")

        # A frame that raises keeps its own exception when the callbacks raise too.
        with UnraisableCatcher() as u:
            try:
                raiser()
            except IndexError as e:
                caught = e
        self.assertEqual(str(caught), "from the frame")
        self.assertIsNone(caught.__context__)
        self.assertEqual([t for t, m, o in u.seen], [ValueError, KeyError])


def _raise_nested(n):
    if n == 0:
        try:
            {}["missing"]
        except KeyError as e:
            raise ValueError("converted %d" % n) from e
    return _raise_nested(n - 1) + 1


def _raise5():
    return _raise_nested(5)


def _raise_context():
    try:
        _raise_nested(3)
    except ValueError:
        1 / 0


class TestExceptions(ChainTestCase):
    def _capture(self, fn):
        try:
            fn()
        except BaseException as e:
            return type(e), str(e), traceback.format_exception(type(e), e, e.__traceback__), \
                [(f.name, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
        self.fail("no exception")

    def test_exceptions_unchanged(self):
        plain = [self._capture(_raise_context), self._capture(_raise5)]
        self.add_hook(on_enter=list().append, on_exit=list().append)
        self.add_hook(on_enter=lambda c: None, priority=100)
        self.add_native("log", 200, [])
        self.add_native("pass", 1000)
        hooked = [self._capture(_raise_context), self._capture(_raise5)]
        self.assertEqual(hooked, plain)
        self.assertIs(plain[0][0], ZeroDivisionError)
        self.assertIn("converted 0", "".join(plain[0][2]))

    def test_deep_recursion(self):
        enters, exits = [], []
        self.add_hook(on_enter=enters.append, on_exit=exits.append)
        self.add_native("pass", 900)

        def down(n):
            return down(n + 1) + 1

        for _ in range(2):
            with self.assertRaises(RecursionError):
                down(0)
        e, x = list(enters), list(exits)  # snapshot: the assert helpers below are frames too
        self.assertBalanced(e, x)
        self.assertGreater(e.count(down.__code__), 100)
        # the interpreter is usable afterwards, hooks still running
        self.assertEqual(fib(15), 610)
        self.assertEqual(enters.count(fib.__code__), 1973)
        # a Python callback that itself hits the limit is counted, not reported
        calls = []
        h = self.add_hook(on_enter=lambda code: calls.append(code), priority=100)
        with UnraisableCatcher() as u:
            with self.assertRaises(RecursionError):
                down(0)
        self.assertEqual(u.seen, [])
        self.assertGreater(h.recursion_errors, 0)
        self.assertEqual(fib(10), 55)
        e, x = list(enters), list(exits)
        self.assertBalanced(e, x)


def recursion_depth_reached():
    """(depth, traceback length) at which a plain recursion raises RecursionError."""
    reached = [0]

    def down(n):
        reached[0] = n
        return down(n + 1) + 1

    try:
        down(0)
    except RecursionError as e:
        return reached[0], len(traceback.extract_tb(e.__traceback__))
    raise AssertionError("no RecursionError")


class TestRecursionLimitUnderPythonHook(ChainTestCase):
    """A Python callback runs one level deeper than its frame: at the recursion limit it fails
    first.  That failure is counted, never reported, and the frame raises where it would
    without the failing callback (3.13's test_traceback test_recursive_traceback compares the
    tracebacks).  The reference is the same hook with a C callable (`id`), which adds no Python
    frame: on 3.12+ any eval-frame function makes each Python call take C recursion, so the
    depth is not plain CPython's."""

    def _check(self, which):
        with coextra.add_hook(uname("reference"), **{which: id}):
            reference = recursion_depth_reached()
        h = self.add_hook(**{which: lambda code: None})
        with UnraisableCatcher() as u:
            hooked = recursion_depth_reached()
        self.assertEqual(u.seen, [])
        self.assertGreater(h.recursion_errors, 0)
        self.assertEqual(hooked, reference)

    def test_on_enter(self):
        self._check("on_enter")

    def test_on_exit(self):
        self._check("on_exit")

    def test_other_errors_still_reported(self):
        def bad(code):
            if code is fib.__code__:
                raise ValueError("not a recursion error")

        h = self.add_hook(on_enter=bad)
        with UnraisableCatcher() as u:
            fib(2)
        self.assertEqual([t for t, m, o in u.seen], [ValueError] * 3)
        self.assertEqual(h.recursion_errors, 0)


class TestIdle(ChainTestCase):
    def test_pointer_restored_after_last_hook(self):
        before = native.eval_frame_func()
        self.assertEqual(before, native.default_eval_func())
        p = self.add_hook(on_enter=id)
        self.assertNotEqual(native.eval_frame_func(), before)
        dispatcher = native.eval_frame_func()
        n = self.add_native("pass")
        self.assertEqual(native.eval_frame_func(), dispatcher)
        p.remove()
        self.assertEqual(native.eval_frame_func(), dispatcher)
        self.assertTrue(coextra.status().installed)
        native.remove(n)
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (False, False, False, 0))
        self.assertEqual(native.eval_frame_func(), before)
        if PY >= (3, 11):
            self.assertEqual(native.eval_frame_func(), native.default_eval_func())
        # and again, through deactivation instead of removal
        q = self.add_hook(on_enter=id)
        self.assertEqual(native.eval_frame_func(), dispatcher)
        q.active = False
        self.assertEqual(native.eval_frame_func(), before)


class TestCpythonBypasses(ChainTestCase):
    """CPython bugs that make frames skip EVERY eval-frame function, coextra's included.  Nothing in
    coextra can see those frames; these tests pin the observed behaviour per version so that a
    change (a fix in a later patch release, or a regression) shows up.  The profile comparisons in
    test_chain_generators tolerate exactly these (test_chain_helpers.CPYTHON_BYPASSED_NAMES)."""

    def test_init_frames_seen(self):
        # 3.13 (3.13.0 through at least 3.13.18): the specialised CALL_ALLOC_AND_ENTER_INIT has no
        # PEP 523 check, so `Cls(...)` pushes the __init__ frame inline.  3.14 added _CHECK_PEP_523
        # to it (Python/bytecodes.c), and 3.14/3.15 deliver every __init__ frame.
        ns = {}
        exec(compile("class Point:\n"
                     "    def __init__(self, x):\n"
                     "        self.x = x\n"
                     "def make(n):\n"
                     "    for i in range(n):\n"
                     "        Point(i)\n", "<init-bypass>", "exec"), ns)
        init_code = ns["Point"].__init__.__code__
        slot = coextra.Slot(uname("init"))
        self.addCleanup(slot.release)
        slot[init_code] = True
        seen, observed = [], []
        # Without `only` a Python hook is in the eval-frame chain, which the bypass skips...
        self.add_hook(on_enter=lambda code: code is init_code and seen.append(code))
        # ...while an observer on sys.monitoring (3.12+, with `only`) runs inside the frame at
        # its PY_START, however the frame was pushed.
        observer = self.add_hook(on_enter=observed.append, only=slot)
        ns["make"](1000)
        n = len(seen)
        if sys.version_info[:2] == (3, 13):
            # Seen on 3.13.0 and 3.13.18 (Debian sid): the hook sees 1 of 1000.
            self.assertLess(n, 100, "3.13 is expected to bypass the hook for specialised __init__ calls")
        else:
            self.assertEqual(n, 1000)
        self.assertEqual(len(observed), 1000 if observer.monitored else n)

    def test_getitem_frames_seen(self):
        # 3.11.0-3.11.3 (gh-104405, fixed in 3.11.4 by gh-104441): BINARY_SUBSCR_GETITEM neither
        # deoptimises nor refuses to specialise when an eval-frame function is set, so `obj[k]`
        # with a Python __getitem__ pushes the frame inline.  Debian's 3.11.2 has it.
        ns = {}
        exec(compile("class Table:\n"
                     "    def __getitem__(self, k):\n"
                     "        return k\n"
                     "def lookup(t, n):\n"
                     "    s = 0\n"
                     "    for i in range(n):\n"
                     "        s += t[i]\n"
                     "    return s\n", "<getitem-bypass>", "exec"), ns)
        table = ns["Table"]()
        code = ns["Table"].__getitem__.__code__
        self.assertEqual(ns["lookup"](table, 100), 4950)  # specialise while no hook is installed
        seen = []
        self.add_hook(on_enter=seen.append)
        self.assertEqual(ns["lookup"](table, 1000), 499500)
        n = seen.count(code)
        if (3, 11, 0) <= sys.version_info[:3] < (3, 11, 4):
            self.assertLess(n, 100, "3.11.0-3.11.3 are expected to bypass the hook for BINARY_SUBSCR_GETITEM")
        else:
            self.assertEqual(n, 1000)


if __name__ == "__main__":
    unittest.main()
