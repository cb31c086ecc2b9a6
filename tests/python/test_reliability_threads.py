"""test_reliability_threads.py: 8 threads run Python code while others add/remove/activate hooks and reserve/set/release slots; balanced hooks, every value freed once."""

import collections
import gc
import itertools
import os
import random
import sys
import threading
import time
import unittest

import coextra
import coextra_test_reliability as rel

from coextra_testutil import make_code

PREFIX = "test_reliability_threads."
WORKERS = 8
MUTATORS = 3
MUTATOR_ITERATIONS = int(os.environ.get("COEXTRA_THREAD_ITERATIONS", "400"))
WORKER_MAX_ITERATIONS = 5000
DEADLINE = 20.0  # seconds: a bound, never reached on a healthy run
NATIVE_SLOT_BASE = 40  # coextra_test_reliability slot/hook table entries this test owns
NATIVE_HOOK_BASE = 40

_counter = itertools.count()
_tokens = itertools.count(1)


class V:
    """A value with a serial number, so frees can be counted per value."""

    __slots__ = ("serial",)

    def __init__(self):
        self.serial = next(_counter)


WORKLOAD = '''
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def gen(n):
    for i in range(n):
        yield i

def raiser(n):
    if n:
        raise KeyError(n)

class K:
    def __init__(self, x):
        self.x = x

def work(i):
    total = fib(8)
    total += sum(gen(5))
    g = gen(3)
    next(g)
    g.close()
    try:
        raiser(i)
    except KeyError:
        total += 1
    total += K(i).x
    return total
'''




class TestThreads(unittest.TestCase):
    def test_hooks_and_slots_change_while_threads_run(self):
        ns = {}
        exec(compile(WORKLOAD, "<thread workload>", "exec"), ns)
        work = ns["work"]
        expected = work(1)
        codes = [ns[n].__code__ for n in ("fib", "gen", "raiser", "work")] + [ns["K"].__init__.__code__]

        errors = []
        stop = threading.Event()
        start = threading.Barrier(WORKERS + MUTATORS)
        freed = []  # Python values whose on_free ran (list.append: atomic, no Python frame)
        stored = []
        py_hooks = []  # (Hook, enter Counter, exit Counter)
        native_hooks = []  # table indices used
        native_tokens = []
        iterations = [0] * WORKERS
        rel.reset_freed()

        def worker(w):
            try:
                start.wait()
                for i in range(WORKER_MAX_ITERATIONS):
                    if stop.is_set():
                        break
                    if work(i % 3) != work(i % 3) or work(1) != expected:
                        raise AssertionError("wrong result under hooks")
                    iterations[w] += 1
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(("worker %d" % w, repr(e)))
                stop.set()

        def mutator(m):
            rng = random.Random(1000 + m)
            slots = []  # Python slots this mutator owns
            hooks = []
            nslot = [NATIVE_SLOT_BASE + m * 6 + i for i in range(6)]
            nslot_live = set()
            nhook = [NATIVE_HOOK_BASE + m * 6 + i for i in range(6)]
            nhook_live = set()
            my_codes = []
            try:
                start.wait()
                for it in range(MUTATOR_ITERATIONS):
                    if stop.is_set():
                        break
                    op = rng.randrange(12)
                    if op == 0 and len(slots) < 4:
                        slots.append(coextra.Slot("%sm%d.s%d" % (PREFIX, m, next(_counter)), on_free=freed.append))
                    elif op == 1 and slots:
                        s = rng.choice(slots)
                        code = rng.choice(codes + my_codes)
                        v = V()
                        stored.append(v.serial)
                        s[code] = v
                    elif op == 2 and slots:
                        s = rng.choice(slots)
                        for code in codes + my_codes:
                            if code in s:
                                del s[code]
                                break
                    elif op == 3 and slots:
                        slots.pop(rng.randrange(len(slots))).release()
                    elif op == 4 and len(hooks) < 3:
                        enter, exit_ = rel.Counter(), rel.Counter()
                        only = rng.choice(slots) if slots and rng.random() < 0.3 else None
                        h = coextra.add_hook("%sm%d.h%d" % (PREFIX, m, next(_counter)), on_enter=enter, on_exit=exit_,
                                             priority=rng.choice([100, 200, 500, 1000]), only=only)
                        hooks.append(h)
                        py_hooks.append((h, enter, exit_))
                    elif op == 5 and hooks:
                        h = rng.choice(hooks)
                        h.active = not h.active
                    elif op == 6 and hooks:
                        hooks.pop(rng.randrange(len(hooks))).remove()
                    elif op == 7:
                        free = [k for k in nslot if k not in nslot_live]
                        if free:
                            k = free[0]
                            rel.reserve(k, "%sm%d.n%d" % (PREFIX, m, next(_counter)))
                            nslot_live.add(k)
                        elif nslot_live:
                            k = rng.choice(sorted(nslot_live))
                            rel.release(k)
                            nslot_live.discard(k)
                    elif op == 8 and nslot_live:
                        k = rng.choice(sorted(nslot_live))
                        t = next(_tokens)
                        native_tokens.append(t)
                        rel.set(rng.choice(codes + my_codes), k, t)
                    elif op == 9:
                        free = [j for j in nhook if j not in nhook_live]
                        if free and rng.random() < 0.6:
                            j = free[0]
                            only = rng.choice(sorted(nslot_live)) if nslot_live and rng.random() < 0.3 else -1
                            rel.hook_add(j, "%sm%d.nh%d" % (PREFIX, m, next(_counter)), rng.randrange(0, 1001), only)
                            nhook_live.add(j)
                            native_hooks.append(j)
                        elif nhook_live:
                            j = rng.choice(sorted(nhook_live))
                            if rng.random() < 0.5:
                                rel.hook_set_active(j, rng.random() < 0.5)
                            else:
                                rel.hook_remove(j)
                                nhook_live.discard(j)
                    elif op == 10:
                        # a code object that holds values and then dies
                        if len(my_codes) < 3:
                            my_codes.append(make_code("threads"))
                        else:
                            my_codes.pop(rng.randrange(len(my_codes)))
                    else:
                        coextra.slots()
                        coextra.hooks()
                        st = coextra.status()
                        if st.displaced:
                            raise AssertionError("displaced: %r" % (st,))
                    if it % 16 == 0:
                        time.sleep(0.0005)  # let the workers run a while with this configuration
                # leave nothing behind
                for h in hooks:
                    h.remove()
                for j in nhook_live:
                    rel.hook_remove(j)
                for s in slots:
                    s.release()
                for k in nslot_live:
                    rel.release(k)
                del my_codes[:]
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(("mutator %d" % m, repr(e)))
                stop.set()

        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        t0 = time.monotonic()
        try:
            workers = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
            mutators = [threading.Thread(target=mutator, args=(m,)) for m in range(MUTATORS)]
            for t in workers + mutators:
                t.start()
            for t in mutators:
                t.join(DEADLINE)
            stop.set()
            for t in workers + mutators:
                t.join(DEADLINE)
            self.assertFalse(any(t.is_alive() for t in workers + mutators), "threads did not finish")
        finally:
            sys.setswitchinterval(old_interval)
        elapsed = time.monotonic() - t0
        self.assertEqual(errors, [])
        gc.collect()

        # Hooks: everything removed; entries and exits balanced for every hook.
        self.assertEqual([h.name for h in coextra.hooks() if h.name.startswith(PREFIX)], [])
        self.assertEqual([s.name for s in coextra.slots() if s.name.startswith(PREFIX)], [])
        st = coextra.status()
        self.assertFalse(st.displaced)
        for h, enter, exit_ in py_hooks:
            self.assertTrue(h.removed)
            self.assertEqual(enter.value, exit_.value, h.name)
        frames = sum(e.value for _, e, _ in py_hooks)
        for j in set(native_hooks):
            enter, exit_ = rel.hook_counts(j)
            self.assertEqual(enter, exit_, "native hook %d" % j)
            frames += enter
        # Values: every value stored was freed exactly once.
        freed_serials = collections.Counter(v.serial for v in freed)
        self.assertEqual(set(freed_serials), set(stored))
        self.assertEqual([s for s, n in freed_serials.items() if n != 1], [])
        native = rel.freed_all()
        self.assertEqual(set(native), set(native_tokens))
        self.assertEqual({t: n for t, n in native.items() if n != 1}, {})
        self.assertEqual(rel.counters()["bad_ctx"], 0)
        print("\nthreads: %d workers x %d iterations (total %d), %d mutators x %d operations, %d hooks, "
              "%d frames through hooks, %d Python + %d native values freed once, %.1fs"
              % (WORKERS, max(iterations), sum(iterations), MUTATORS, MUTATOR_ITERATIONS,
                 len(py_hooks) + len(set(native_hooks)), frames, len(stored), len(native_tokens), elapsed),
              flush=True)
        self.assertGreater(sum(iterations), WORKERS)
        self.assertGreater(frames, 0)


if __name__ == "__main__":
    unittest.main()
