"""test_observers.py: observers (hooks that only watch) on sys.monitoring local events, 3.12+: no eval-frame function, balanced enter/exit, the tool id, coexistence."""

import asyncio
import gc
import re
import sys
import threading
import unittest

import coextra
import coextra_test_native as native

from test_chain_helpers import ChainTestCase, UnraisableCatcher, is_idle, uname

MONITORING = sys.version_info >= (3, 12)
needs_monitoring = unittest.skipUnless(MONITORING, "observers run on sys.monitoring from 3.12 (PEP 669)")


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def gen(n):
    for i in range(n):
        yield i


def catching():
    try:
        yield 1
    except KeyError:
        yield "caught"
    yield 2


def boom():
    raise ValueError("boom")


async def coro(n):
    await asyncio.sleep(0)
    return n + 1


async def agen(n):
    for i in range(n):
        got = yield i
        if got is not None:
            yield got
        await asyncio.sleep(0)


async def agen_consumer():
    out = [v async for v in agen(3)]
    ag = agen(5)
    out.append(await ag.__anext__())
    out.append(await ag.asend("sent"))
    try:
        await ag.athrow(KeyError("into agen"))
    except KeyError:
        out.append("thrown")
    ag = agen(5)
    out.append(await ag.__anext__())
    await ag.aclose()
    return out


def deep(n):
    return 0 if n == 0 else 1 + deep(n - 1)


class ObserverCase(ChainTestCase):
    def slot(self, *codes):
        s = coextra.Slot(uname("marks"))
        self.addCleanup(lambda: s.released or s.release())
        for c in codes:
            s[c] = True
        return s

    def observer(self, only, log=None, name=None, **kw):
        log = [] if log is None else log
        name = name or uname("obs")
        h = self.add_hook(name, only=only, on_enter=lambda c: log.append((name, "enter", c.co_name)),
                          on_exit=lambda c: log.append((name, "exit", c.co_name)), **kw)
        return h, log


class TestMechanism(ObserverCase):
    def test_mechanism_per_version(self):
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        st = coextra.status()
        self.assertEqual(h.monitored, MONITORING)
        self.assertEqual(st.observers, 1)
        if MONITORING:
            self.assertEqual((st.installed, st.active_hooks), (False, 0))  # no eval-frame function at all
            self.assertIn(st.monitoring_tool_id, (3, 4))
            self.assertEqual(sys.monitoring.get_tool(st.monitoring_tool_id), "coextra")
            self.assertEqual(native.eval_frame_func(), native.default_eval_func())
        else:
            self.assertEqual((st.installed, st.active_hooks, st.monitoring_tool_id), (True, 1, None))
        self.assertEqual(fib(5), 5)
        self.assertEqual(len(log), 2 * 15)
        h.remove()
        self.assertTrue(is_idle())
        if MONITORING:
            self.assertIsNone(sys.monitoring.get_tool(4))  # given back with the last observer

    def test_hook_without_only_stays_in_chain(self):
        h = self.add_hook(on_enter=lambda c: None)
        self.assertFalse(h.monitored)
        self.assertTrue(coextra.status().installed)
        self.assertEqual(coextra.status().observers, 1)

    @needs_monitoring
    def test_enter_exit_balanced_like_setprofile(self):
        watched = (fib.__code__, gen.__code__, catching.__code__, boom.__code__, coro.__code__, agen.__code__,
                   agen_consumer.__code__)
        s = self.slot(*watched)
        h, log = self.observer(s)

        def work():
            fib(6)
            list(gen(4))
            g = catching()
            next(g)
            g.throw(KeyError("k"))
            g.close()
            try:
                boom()
            except ValueError:
                pass
            asyncio.run(coro(1))
            asyncio.run(agen_consumer())

        work()
        ours = {}
        for _, what, name in log:
            ours.setdefault(name, [0, 0])[what == "exit"] += 1
        # sys.setprofile: 'call' for every start and resumption, 'return' for every exit.
        prof = {}

        def profiler(frame, event, arg):
            if event in ("call", "return") and frame.f_code in watched:
                prof.setdefault(frame.f_code.co_name, [0, 0])[event == "return"] += 1

        h.active = False
        sys.setprofile(profiler)
        try:
            work()
        finally:
            sys.setprofile(None)
        self.assertEqual(ours, prof)
        for name, (e, x) in ours.items():
            self.assertEqual(e, x, name)

    @needs_monitoring
    def test_exceptions_and_tracebacks_unchanged(self):
        def capture():
            try:
                boom()
            except ValueError as e:
                return str(e), [f.name for f in __import__("traceback").extract_tb(e.__traceback__)]

        plain = capture()
        s = self.slot(boom.__code__)
        self.observer(s)
        self.assertEqual(capture(), plain)

    @needs_monitoring
    def test_deep_recursion_reaches_plain_depth(self):
        # Any eval-frame function makes every Python call take C stack on 3.12+
        # (RecursionError at depth ~5,000); observers install none.
        s = self.slot(deep.__code__)
        self.observer(s)
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(60000)
        try:
            self.assertEqual(deep(50000), 50000)
        finally:
            sys.setrecursionlimit(old)

    @needs_monitoring
    def test_observer_runs_inside_the_frame(self):
        s = self.slot(fib.__code__)
        frames = []
        self.add_hook(only=s, on_enter=lambda c: frames.append(sys._getframe(1).f_code))
        fib(1)
        self.assertEqual(frames, [fib.__code__])  # the frame itself, not its caller

    def test_callback_errors_go_to_unraisablehook(self):
        s = self.slot(fib.__code__)

        def bad(code):
            raise RuntimeError("observer failure")

        self.add_hook(only=s, on_enter=bad)
        with UnraisableCatcher() as u:
            self.assertEqual(fib(3), 2)
        self.assertEqual([t for t, _, _ in u.seen], [RuntimeError] * 5)


class TestMarks(ObserverCase):
    @needs_monitoring
    def test_marking_turns_events_on_and_off(self):
        s = self.slot()
        h, log = self.observer(s)
        tool = coextra.status().monitoring_tool_id
        E = sys.monitoring.events
        fib(2)
        self.assertEqual(log, [])
        s[fib.__code__] = 1
        self.assertEqual(sys.monitoring.get_local_events(tool, fib.__code__) & E.PY_START, E.PY_START)
        fib(2)
        self.assertEqual(len(log), 6)
        del s[fib.__code__]
        self.assertEqual(sys.monitoring.get_local_events(tool, fib.__code__), 0)
        del log[:]
        fib(2)
        self.assertEqual(log, [])

    @needs_monitoring
    def test_value_stored_while_running_takes_effect_at_next_entry(self):
        s = self.slot()
        log = []

        def outer(mark):
            if mark:
                s[outer.__code__] = True
            return 1

        self.observer(s, log)
        outer(True)                      # marked while running: no exit without its entry
        self.assertEqual(log, [])
        outer(False)
        self.assertEqual([w for _, w, _ in log], ["enter", "exit"])

    @needs_monitoring
    def test_mark_deleted_while_running_still_exits(self):
        s = self.slot()
        log = []

        def outer():
            del s[outer.__code__]
            return 1

        s[outer.__code__] = True
        self.observer(s, log)
        outer()
        self.assertEqual([w for _, w, _ in log], ["enter", "exit"])
        del log[:]
        outer_code_marked = outer.__code__ in s
        self.assertFalse(outer_code_marked)

    @needs_monitoring
    def test_release_while_frames_in_flight(self):
        s = self.slot()
        log = []

        def outer():
            s.release()
            return fib(3)

        s[outer.__code__] = True
        s[fib.__code__] = True
        self.observer(s, log)
        self.assertEqual(outer(), 2)
        self.assertEqual([(w, n) for _, w, n in log], [("enter", "outer"), ("exit", "outer")])

    @needs_monitoring
    def test_code_dying_with_values(self):
        s = self.slot()
        h, log = self.observer(s)
        ns = {}
        exec("def ephemeral(x):\n    return x + 1\n", ns)
        s[ns["ephemeral"].__code__] = True
        self.assertEqual(ns["ephemeral"](1), 2)
        self.assertEqual(len(s), 1)
        ns.clear()
        gc.collect()
        self.assertEqual(len(s), 0)
        self.assertEqual([w for _, w, _ in log], ["enter", "exit"])


class TestToolIds(ObserverCase):
    def use(self, *ids):
        for i in ids:
            sys.monitoring.use_tool_id(i, "test_observers.other")
            self.addCleanup(sys.monitoring.free_tool_id, i)

    @needs_monitoring
    def test_falls_back_to_chain_without_a_free_id(self):
        self.use(3, 4)
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        st = coextra.status()
        self.assertFalse(h.monitored)
        self.assertIsNone(st.monitoring_tool_id)
        self.assertTrue(st.installed)    # correct, just slower: the chain
        fib(3)
        self.assertEqual(len(log), 10)

    @needs_monitoring
    def test_takes_3_when_4_is_used(self):
        self.use(4)
        s = self.slot(fib.__code__)
        h, _ = self.observer(s)
        self.assertTrue(h.monitored)
        self.assertEqual(coextra.status().monitoring_tool_id, 3)

    @needs_monitoring
    def test_another_tool_asking_for_our_id(self):
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        tool = coextra.status().monitoring_tool_id
        with self.assertRaises(ValueError):
            sys.monitoring.use_tool_id(tool, "intruder")
        fib(2)
        self.assertEqual(len(log), 6)   # unaffected

    @needs_monitoring
    def test_other_monitoring_tools_unaffected(self):
        # A coverage-style tool (LINE on its own id) and cProfile (3.12+: sys.monitoring) beside an observer.
        import cProfile
        import pstats
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        lines = set()
        mon = sys.monitoring
        mon.use_tool_id(mon.COVERAGE_ID, "test_observers.cov")
        self.addCleanup(mon.free_tool_id, mon.COVERAGE_ID)
        mon.register_callback(mon.COVERAGE_ID, mon.events.LINE, lambda code, line: lines.add((code.co_name, line)))
        mon.set_local_events(mon.COVERAGE_ID, fib.__code__, mon.events.LINE)
        prof = cProfile.Profile()
        prof.enable()
        fib(5)
        prof.disable()
        mon.set_local_events(mon.COVERAGE_ID, fib.__code__, 0)
        stats = pstats.Stats(prof).stats
        calls = [v for k, v in stats.items() if k[2] == "fib"][0]
        self.assertEqual(calls[1], 15)  # primitive + recursive calls, as without an observer
        first = fib.__code__.co_firstlineno
        self.assertEqual({l - first for n, l in lines}, {1})
        self.assertEqual(len(log), 30)


class TestBesidePdb(ObserverCase):
    @unittest.skipUnless(sys.version_info >= (3, 14), "pdb's sys.monitoring backend is 3.14+")
    def test_pdb_monitoring_backend_beside(self):
        # pdb (backend='monitoring', DEBUGGER_ID) with a breakpoint in a function that an observer
        # also watches: pdb's session is the same with and without the observer, and the
        # observer sees every frame.
        import io
        import pdb

        def session():
            out = io.StringIO()
            p = pdb.Pdb(stdin=io.StringIO("p n\n" + "c\n" * 10), stdout=out, backend="monitoring")
            p.set_break(fib.__code__.co_filename, fib.__code__.co_firstlineno + 1, temporary=True)
            r = p.runcall(fib, 3)
            p.clear_all_breaks()
            return r, re.sub(r"breakpoint \d+", "breakpoint N", out.getvalue())

        alone = session()
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        self.assertEqual(session(), alone)
        self.assertIn("(Pdb) 3", alone[1])
        self.assertEqual([(w, n) for _, w, n in log].count(("enter", "fib")), 5)
        self.assertEqual(len(log), 10)


class TestBeside(ObserverCase):
    def test_observer_beside_memo(self):
        import coextra_memo
        calls = []

        def square(x):
            calls.append(x)
            return x * x

        coextra_memo.memoize(square)
        self.addCleanup(coextra_memo.unmemoize, square)
        s = self.slot(square.__code__)
        h, log = self.observer(s)
        self.assertEqual([square(3) for _ in range(4)], [9] * 4)
        self.assertEqual(calls, [3])
        n = len([1 for _, w, _ in log if w == "enter"])
        # On sys.monitoring the observer sees the frame that ran; in the chain it wraps every call.
        self.assertEqual(n, 1 if h.monitored else 4)

    def test_observer_beside_foreign_eval_frame(self):
        self.install_foreign()
        s = self.slot(fib.__code__)
        h, log = self.observer(s)
        self.assertEqual(fib(4), 3)
        self.assertEqual(len(log), 2 * 9)
        if h.monitored:
            self.assertFalse(coextra.status().installed)  # the foreign tool keeps its place alone

    def native_slot(self, *codes):
        slot = native.reserve_slot(uname("nslot"))
        self.addCleanup(lambda: native.release_slot(slot))
        for c in codes:
            native.mark(c, slot)
        return slot

    def test_native_observer(self):
        slot = self.native_slot(fib.__code__)
        log = []
        handle = native.add_observer(uname("nobs"), coextra.PRIORITY_PROFILER, log, only=slot)
        self.addCleanup(self._drop_native, handle)
        self.assertEqual(native.is_monitored(handle), MONITORING)
        fib(3)
        self.assertEqual([w for _, w, n in log if n == "fib"], ["enter", "enter", "enter", "exit", "enter", "exit",
                                                                  "exit", "enter", "exit", "exit"])
        self.assertEqual(coextra.status().observers, 1)

    def test_native_observer_error_is_reported(self):
        slot = self.native_slot(fib.__code__)
        log = []
        handle = native.add_observer(uname("nraise"), coextra.PRIORITY_PROFILER, log, only=slot, raise_=True)
        self.addCleanup(self._drop_native, handle)
        with UnraisableCatcher() as u:
            self.assertEqual(fib(1), 1)
        self.assertEqual([t for t, _, _ in u.seen], [RuntimeError])

    def test_observers_keep_priority_order_and_nest(self):
        s = self.slot(fib.__code__)
        log = []
        self.observer(s, log, name="obs.inner", priority=coextra.PRIORITY_OPTIMIZER)
        self.observer(s, log, name="obs.outer", priority=coextra.PRIORITY_DEBUGGER)
        fib(0)
        self.assertEqual([(n, w) for n, w, _ in log], [("obs.outer", "enter"), ("obs.inner", "enter"),
                                                       ("obs.inner", "exit"), ("obs.outer", "exit")])


class TestChangesWhileRunning(ObserverCase):
    def test_removed_from_its_own_callback(self):
        s = self.slot(fib.__code__)
        log = []
        box = {}

        def enter(code):
            log.append("enter")
            box["h"].remove()

        box["h"] = self.add_hook(only=s, on_enter=enter, on_exit=lambda c: log.append("exit"))
        fib(2)
        self.assertEqual(log, ["enter", "exit"])  # its own frame still exits; nothing after
        self.assertEqual(coextra.status().observers, 0)

    def test_paused_by_an_outer_observer_gets_neither_enter_nor_exit(self):
        s = self.slot(fib.__code__)
        log = []
        box = {}

        def outer_enter(code):
            log.append(("outer", "enter"))
            box["inner"].active = False

        self.add_hook(uname("outer"), only=s, priority=coextra.PRIORITY_DEBUGGER, on_enter=outer_enter,
                      on_exit=lambda c: log.append(("outer", "exit")))
        box["inner"] = self.add_hook(uname("inner"), only=s, priority=coextra.PRIORITY_PROFILER,
                                     on_enter=lambda c: log.append(("inner", "enter")),
                                     on_exit=lambda c: log.append(("inner", "exit")))
        fib(0)
        self.assertEqual(log, [("outer", "enter"), ("outer", "exit")])

    def test_added_from_a_callback(self):
        s = self.slot(fib.__code__)
        log = []
        added = []

        def enter(code):
            if not added:
                added.append(self.observer(s, log, name="obs.late")[0])

        self.add_hook(only=s, on_enter=enter)
        fib(2)
        names = [w for n, w, _ in log if n == "obs.late"]
        self.assertEqual(names.count("enter"), names.count("exit"))
        self.assertGreater(len(names), 0)

    def test_threads_add_and_remove_while_code_runs(self):
        s = self.slot(fib.__code__, gen.__code__)
        stop = threading.Event()
        errors = []

        def worker():
            try:
                while not stop.is_set():
                    fib(8)
                    list(gen(5))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        counts = []
        try:
            for i in range(30):
                c = [0, 0]

                def enter(code, c=c):
                    c[0] += 1

                def exit_(code, c=c):
                    c[1] += 1

                h = coextra.add_hook(uname("thr"), only=s, on_enter=enter, on_exit=exit_)
                for _ in range(200):
                    pass
                h.active = False
                h.active = True
                h.remove()
                counts.append(c)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        for e, x in counts:
            self.assertEqual(e, x)


if __name__ == "__main__":
    unittest.main()
