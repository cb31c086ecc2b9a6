"""test_reliability_alloc.py: every allocation of every coextra operation (Python and C API) fails once: MemoryError or success, a consistent registry, nothing leaked."""

import gc
import itertools
import sys
import unittest
import weakref

import coextra
import coextra_test_reliability as rel

from coextra_testutil import make_code, unique_name

_counter = itertools.count()
PREFIX = "test_reliability_alloc."


def uname(tag):
    return unique_name("test_reliability_alloc", tag)


class Value:
    pass


class Ctx:
    """What setup() hands to op() and undo()."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class AllocSweepCase(unittest.TestCase):
    """sweep(): for n = 1, 2, ...: setup, fail the n-th allocation during op, check, undo, check.

    Each n runs up to three times, and the second or third run must leave as
    many tracked RAW blocks live as it found (an earlier one may grow buffers
    kept for reuse, e.g. a registry table reaching its next capacity when the
    test runs first in a fresh process; a leak leaks on every run).
    The sweep ends at the first n at which op ran without a failure, so every
    allocation op performs has failed once.

    The registry must agree with the Python objects the test holds: every
    Slot in self.slots that is not released is listed with as many live code
    objects as self.codes has holding a value, every Hook in self.hooks that
    is not removed is listed with its active flag, and nothing else of ours.
    """

    points = {}

    @classmethod
    def setUpClass(cls):
        rel.install()

    @classmethod
    def tearDownClass(cls):
        rel.uninstall()
        print("\nallocation points failed: %d in total: %s" % (
            sum(cls.points.values()), ", ".join("%s %d" % kv for kv in sorted(cls.points.items()))), flush=True)

    def setUp(self):
        self.unraisable = []
        self._old_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: self.unraisable.append(u.exc_type)
        self.slots = []
        self.hooks = []
        self.codes = []
        self.c_slots = {}  # C API: name -> live, kept by the test itself
        self.c_hooks = {}

    def tearDown(self):
        sys.unraisablehook = self._old_hook
        # An on_free that could not be called for lack of memory is reported; nothing else is.
        self.assertEqual([t for t in self.unraisable if not issubclass(t, MemoryError)], [])

    def check_registry(self, where):
        expected = {s.name: sum(1 for c in self.codes if c in s) for s in self.slots
                    if s is not None and not s.released}
        expected.update(self.c_slots)
        slots = {s.name: s.live for s in coextra.slots() if s.name.startswith(PREFIX)}
        self.assertEqual(slots, expected, where)
        for s in self.slots:
            if s is not None and not s.released:
                self.assertEqual(len(s), expected[s.name], where)
        hooks = coextra.hooks()
        expected = {h.name: h.active for h in self.hooks if h is not None and not h.removed}
        expected.update(self.c_hooks)
        self.assertEqual({h.name: h.active for h in hooks if h.name.startswith(PREFIX)}, expected, where)
        st = coextra.status()
        # Python hooks on sys.monitoring (3.12+, with `only`) are in no chain.
        monitored = {h.name for h in self.hooks if h is not None and not h.removed and h.monitored}
        self.assertEqual(st.active_hooks, sum(h.active for h in hooks if h.name not in monitored), where)
        self.assertEqual(st.installed, st.active_hooks > 0, where)
        self.assertFalse(st.displaced, where)
        names = [h.name for h in hooks]
        self.assertEqual(len(names), len(set(names)), where)
        if hasattr(sys, "monitoring"):
            # A sys.monitoring tool id is claimed by "coextra" exactly while
            # coextra says it holds it: a failure never leaks one.
            claimed = {i for i in range(6) if sys.monitoring.get_tool(i) == "coextra"}
            held = set() if st.monitoring_tool_id is None else {st.monitoring_tool_id}
            self.assertEqual(claimed, held, where)
        self.assertEqual(hooks, sorted(hooks, key=lambda h: h.priority), where)

    def sweep(self, what, setup, op, undo, mask=rel.ALL):
        """Returns the number of allocations op makes (each failed once)."""
        # warm-up: steady container capacities and CPython caches
        ctx = setup()
        exc, _, _, _ = rel.fail_call(0, False, 0, op, ctx)
        ctx.clean = True
        self.assertIsNone(exc)
        undo(ctx, None)
        rel.track(True)
        points = 0
        try:
            # from_=False: only the n-th allocation fails; True: it and every later one
            # (the error paths themselves then cannot allocate either)
            for from_ in (False, True):
                for n in itertools.count(1):
                    for _round in range(3):
                        gc.collect()
                        raw_before = rel.outstanding()[0]
                        ctx = setup()
                        del self.unraisable[:]
                        exc, _, seen, failed = rel.fail_call(n, from_, mask, op, ctx)
                        if exc is not None:
                            # Frames kept by the traceback until the next round make 3.9 allocate
                            # fresh frames then (it reuses one cached "zombie" frame per code
                            # object): blocks that come and go with the error path, not leaks.
                            exc.__traceback__ = None
                        # every callback ran (when everything fails, even the report of one that could not)
                        ctx.clean = not from_ and not self.unraisable
                        where = "%s: allocation #%d%s failed (%d seen): %r" % (
                            what, n, " and later" if from_ else "", seen, exc)
                        if exc is not None:
                            self.assertIsInstance(exc, MemoryError, where)
                            self.assertGreater(failed, 0, where)
                        self.check_registry(where + " [after op]")
                        undo(ctx, exc)
                        gc.collect()
                        self.check_registry(where + " [after undo]")
                        if _round and rel.outstanding()[0] == raw_before:
                            break  # steady: this round left as many RAW blocks live as it found
                    self.assertEqual(rel.outstanding()[0], raw_before, where + ": RAW blocks leaked")
                    if failed == 0:
                        break
                    if not from_:
                        points += 1
        finally:
            rel.track(False)
        AllocSweepCase.points[what] = points
        return points

    def undo_create(self, held, op, drop):
        """The undo of a sweep whose op creates one named object into
        self.<held>[0] (None until then): after a failure nothing was kept
        and the name is free again (op succeeds now); drop(obj) then ends it."""
        def undo(c, exc):
            store = getattr(self, held)
            if exc is not None:
                self.assertEqual(store, [None])
                op(c)  # the name is free again
            drop(store.pop())
        return undo

    def assertDies(self, holder, attr):
        """Dropping holder.attr frees the object: nobody else (coextra) kept a reference."""
        wr = weakref.ref(getattr(holder, attr))
        delattr(holder, attr)
        gc.collect()
        self.assertIsNone(wr(), "%s is still referenced" % attr)

    # ---- Python API ---------------------------------------------------

    def test_slot_create(self):
        freed = []

        def setup():
            self.slots = [None]  # op stores without allocating
            return Ctx(name=uname("create"))

        def op(c):
            self.slots[0] = coextra.Slot(c.name, on_free=freed.append)

        undo = self.undo_create("slots", op, lambda s: s.release())
        self.assertGreater(self.sweep("Slot()", setup, op, undo), 3)

    def test_slot_set_first_block_and_replace(self):
        freed = []
        s = coextra.Slot(uname("set"), on_free=freed.append)
        self.slots = [s]

        def setup():
            c = Ctx(code=make_code(), v=Value(), v2=Value())
            self.codes = [c.code]
            return c

        def op(c):
            s[c.code] = c.v
            s[c.code] = c.v2  # replace: on_free(v)

        def undo(c, exc):
            if exc is None:
                self.assertIs(s[c.code], c.v2)
                if c.clean:
                    self.assertEqual(freed, [c.v])
            self.codes = []
            del c.code  # the code object dies: every value goes
            gc.collect()
            del freed[:]
            self.assertDies(c, 'v')
            self.assertDies(c, 'v2')
            self.assertEqual(len(s), 0)

        self.assertGreater(self.sweep("slot[code] = v (first block, replace)", setup, op, undo), 1)
        s.release()

    def test_slot_grow_block(self):
        self.slots = [coextra.Slot(uname("grow")) for _ in range(10)]

        def setup():
            c = Ctx(code=make_code(), v=Value())
            self.codes = [c.code]
            self.slots[0][c.code] = c.v
            return c

        def op(c):
            self.slots[-1][c.code] = c.v

        def undo(c, exc):
            self.assertIs(self.slots[0][c.code], c.v)
            self.assertEqual(c.code in self.slots[-1], exc is None)
            self.codes = []
            del c.code
            gc.collect()
            self.assertDies(c, 'v')

        self.assertGreater(self.sweep("slot[code] = v (grow block)", setup, op, undo), 0)
        for x in self.slots:
            x.release()

    def test_slot_del_and_release(self):
        freed = []

        def setup():
            s = coextra.Slot(uname("release"), on_free=freed.append)
            c = Ctx(slot=s, codes=[make_code() for _ in range(4)], values=[Value() for _ in range(4)])
            for code, v in zip(c.codes, c.values):
                s[code] = v
            self.slots = [s]
            self.codes = c.codes
            del freed[:]
            return c

        def op(c):
            del c.slot[c.codes[0]]
            c.slot.release()

        def undo(c, exc):
            if exc is not None:
                self.assertFalse(c.slot.released)
                self.assertNotIn(c.codes[0], c.slot)  # del went through, then release failed
                c.slot.release()
            if c.clean:
                self.assertEqual(sorted(map(id, freed)), sorted(map(id, c.values)))
            del freed[:]
            for i in range(len(c.values)):
                setattr(c, "v%d" % i, c.values[i])
            del c.values
            for i in range(4):
                self.assertDies(c, "v%d" % i)
            self.slots = []
            self.codes = []

        self.assertGreater(self.sweep("del slot[code]; slot.release()", setup, op, undo), 0)

    def test_slot_iteration(self):
        # iter(slot) and items(): the runtime's snapshot (coextra_slot_foreach), the list and the
        # iterators of the Python face.
        def setup():
            s = coextra.Slot(uname("iter"))
            c = Ctx(slot=s, codes=[make_code() for _ in range(3)])
            for code in c.codes:
                s[code] = code.co_name
            self.slots = [s]
            self.codes = c.codes
            return c

        def op(c):
            c.keys = list(c.slot)
            c.items = list(c.slot.items())

        def undo(c, exc):
            if exc is None:
                self.assertEqual(sorted(map(id, c.keys)), sorted(map(id, c.codes)))
                self.assertEqual(sorted(v for _, v in c.items), sorted(k.co_name for k in c.codes))
            c.keys = c.items = None
            c.slot.release()
            self.slots = []
            self.codes = []

        self.assertGreater(self.sweep("iter(slot); slot.items()", setup, op, undo), 0)

    def test_with_slot(self):
        def setup():
            c = Ctx(name=uname("with"), code=make_code(), v=Value())
            self.codes = [c.code]
            self.slots = [None]
            return c

        def op(c):
            with coextra.Slot(c.name) as s:
                self.slots[0] = s
                s[c.code] = c.v

        def undo(c, exc):
            for s in self.slots:
                if s is not None and not s.released:  # release in __exit__ failed: MemoryError
                    self.assertIsNotNone(exc)
                    s.release()
            self.slots = []
            self.assertDies(c, 'v')

        self.assertGreater(self.sweep("with Slot(): set", setup, op, undo), 3)

    def test_add_hook_and_remove(self):
        counter = rel.Counter()
        only = coextra.Slot(uname("only"))
        self.addCleanup(lambda: only.released or only.release())

        def setup():
            self.slots = [only]
            self.hooks = [None]  # op stores without allocating
            return Ctx(name=uname("hook"))

        def op(c):
            self.hooks[0] = coextra.add_hook(c.name, on_enter=counter, on_exit=counter, only=only,
                                             priority=coextra.PRIORITY_PROFILER)

        undo = self.undo_create("hooks", op, lambda h: h.remove())
        self.assertGreater(self.sweep("add_hook()", setup, op, undo), 3)

        def setup2():
            h = coextra.add_hook(uname("hook"), on_enter=counter)
            self.hooks = [h]
            return Ctx(h=h)

        def op2(c):
            c.h.active = False
            c.h.active = True
            c.h.remove()

        def undo2(c, exc):
            if not c.h.removed:
                c.h.remove()
            self.hooks = []

        self.sweep("hook.active = ...; hook.remove()", setup2, op2, undo2)
        only.release()

    def test_introspection(self):
        def op(c):
            coextra.slots()
            coextra.hooks()
            coextra.status()
            repr(c.s)

        def setup():
            self.slots = [coextra.Slot(uname("intro"))]
            return Ctx(s=self.slots[0])

        def undo(c, exc):
            c.s.release()
            self.slots = []

        self.assertGreater(self.sweep("slots()/hooks()/status()", setup, op, undo), 3)

    def test_calls_through_python_hooks(self):
        counter = rel.Counter()
        ns = {}
        exec("def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\n", ns)
        f = ns["f"]

        def setup():
            self.hooks = [coextra.add_hook(uname("call"), on_enter=counter, on_exit=counter),
                          coextra.add_hook(uname("call"), on_enter=counter, priority=coextra.PRIORITY_OPTIMIZER)]
            return Ctx()

        def op(c):
            self.assertEqual(f(6), 8)

        def undo(c, exc):
            for h in self.hooks:
                h.remove()
            self.hooks = []
            self.assertEqual(f(6), 8)

        self.assertGreater(self.sweep("calls through two Python hooks", setup, op, undo), 0)

    # ---- C API (a consumer built from the header only) ----------------

    def test_c_api(self):
        rel.reset_freed()
        prefix = uname("c")

        def setup():
            return Ctx(code=make_code(), name=prefix + ".%d" % next(_counter))

        def op(c):
            rel.reserve(0, c.name)
            self.c_slots = {c.name: 0}
            rel.set(c.code, 0, 1)
            self.c_slots = {c.name: 1}
            rel.set(c.code, 0, 2)
            rel.clear(c.code, 0)
            self.c_slots = {c.name: 0}
            rel.set(c.code, 0, 3)
            self.c_slots = {c.name: 1}
            rel.hook_add(0, c.name, 300, 0)
            self.c_hooks = {c.name: True}
            rel.hook_set_active(0, 0)
            self.c_hooks = {c.name: False}
            rel.hook_set_active(0, 1)
            self.c_hooks = {c.name: True}
            rel.hook_remove(0)
            self.c_hooks = {}
            rel.release(0)
            self.c_slots = {}

        def undo(c, exc):
            if self.c_hooks:
                rel.hook_remove(0)
                self.c_hooks = {}
            if self.c_slots:
                rel.release(0)
                self.c_slots = {}
            del c.code
            gc.collect()
            counts = rel.freed_all()
            self.assertTrue(all(v == 1 for v in counts.values()), counts)
            self.assertEqual(rel.counters()["bad_ctx"], 0)
            rel.reset_freed()

        self.assertGreater(self.sweep("C API: reserve/set/clear/hook_add/set_active/remove/release",
                                      setup, op, undo), 5)


if __name__ == "__main__":
    unittest.main()
