"""test_reliability_model.py: seeded random operation sequences against a small reference model (replay one with COEXTRA_SEED=n)."""

import builtins
import collections
import gc
import itertools
import os
import random
import sys
import time
import types
import unittest

import coextra
import coextra_test_reliability as rel

PREFIX = "test_reliability_model."


def default_seeds():
    """A fixed number of seeds per mode, so that what is covered never depends on the machine's
    speed: 40 (about 15 s on a normal build); 10 on a debug CPython (sys.gettotalrefcount), under
    ASan (make sanitize) or valgrind, each several times slower."""
    if os.environ.get("COEXTRA_SANITIZE") or os.environ.get("COEXTRA_VALGRIND") or hasattr(sys, "gettotalrefcount"):
        return 10
    return 40


SEEDS = int(os.environ.get("COEXTRA_MODEL_SEEDS") or default_seeds())
OPS = int(os.environ.get("COEXTRA_MODEL_OPS", "2000"))
NATIVE_K = range(20, 26)  # coextra_test_reliability slot table entries this test owns
NATIVE_J = iter(range(1000, rel.N_HOOKS))  # ... and hook table entries, each used once per process
SLOT_NAMES = ["a", "b", "c", "d", "e", "f", "g"]  # few names: duplicates happen
HOOK_NAMES = ["p", "q", "r", "s", "t"]
MAX_CODES = 10

_serial = itertools.count()
USED_J = []


class V:
    __slots__ = ("serial",)

    def __init__(self):
        self.serial = next(_serial)

    def __repr__(self):
        return "V%d" % self.serial


class ModelError(AssertionError):
    pass


class Run:
    """One seeded sequence: the real coextra next to a model of what it must hold."""

    def __init__(self, seed, ops):
        self.seed = seed
        self.ops = ops
        self.rng = random.Random(seed)
        self.globals = {"__builtins__": builtins}
        self.codes = []  # [serial, function, code]
        self.slots = {}  # name -> {"obj": Slot or k, "native": bool, "values": {code serial: V or token}}
        self.hooks = {}  # name -> {"obj", "native", "prio", "seq", "active", "only": (slot name, slot generation)}
        self.slot_gen = itertools.count(1)  # model-side identity of a reservation (names are reused)
        self.live_gen = {}  # slot name -> model generation of its current reservation
        self.seq = itertools.count()
        self.freed = []  # Python values whose on_free ran
        self.nfreed = 0  # how many of them verify() has counted
        self.actual_freed = collections.Counter()
        self.expect_freed = collections.Counter()
        self.touched = set()  # serials expected to be freed since the last verify()
        self.native_tokens = itertools.count(1)
        self.expect_native_freed = collections.Counter()
        self.log = []  # (hook name, ("enter"|"exit"), code) from Recorders
        self.step = 0
        self.counts = collections.Counter()
        rel.reset_freed()

    # ---- helpers ----------------------------------------------------

    def fail(self, msg):
        raise ModelError("seed %d, operation %d: %s\n(replay: COEXTRA_SEED=%d python -m unittest "
                         "test_reliability_model)" % (self.seed, self.step, msg, self.seed))

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)

    def new_code(self):
        n = next(_serial)
        mod = compile("def m_%d(x):\n    return x + %d\n" % (n, n), "<model %d>" % n, "exec")
        code = [c for c in mod.co_consts if isinstance(c, types.CodeType)][0]
        self.codes.append([n, types.FunctionType(code, self.globals), code])

    def free_value(self, slot, value):
        if slot["native"]:
            self.expect_native_freed[value] += 1
        else:
            self.expect_freed[value.serial] += 1
            self.touched.add(value.serial)

    def fires(self, hook, code_serial):
        """Whether a hook takes a frame of this code (active, and `only` satisfied)."""
        if not hook["active"]:
            return False
        if hook["only"] is None:
            return True
        name, gen = hook["only"]
        slot = self.slots.get(name)
        # a released slot (even if its name was reserved again) never matches
        return slot is not None and self.live_gen[name] == gen and code_serial in slot["values"]

    # ---- operations ---------------------------------------------------

    def op_reserve(self):
        name = PREFIX + self.rng.choice(SLOT_NAMES)
        native = self.rng.random() < 0.35
        if native:
            free = [k for k in NATIVE_K if all(s["obj"] != k for s in self.slots.values() if s["native"])]
            if not free:
                return
            k = free[0]
        try:
            if native:
                rel.reserve(k, name)
                obj = k
            else:
                obj = coextra.Slot(name, on_free=self.freed.append)
        except ValueError:
            self.check(name in self.slots, "reserve %s refused but the name is free" % name)
            return
        self.check(name not in self.slots, "reserve %s accepted a duplicate name" % name)
        self.slots[name] = {"obj": obj, "native": native, "values": {}}
        self.live_gen[name] = next(self.slot_gen)

    def op_release(self):
        if not self.slots:
            return
        name = self.rng.choice(sorted(self.slots))
        slot = self.slots.pop(name)
        del self.live_gen[name]
        if slot["native"]:
            rel.release(slot["obj"])
        else:
            slot["obj"].release()
            self.check(slot["obj"].released, "released is False after release()")
        for v in slot["values"].values():
            self.free_value(slot, v)

    def pick(self):
        if not self.slots or not self.codes:
            return None, None
        return self.slots[self.rng.choice(sorted(self.slots))], self.rng.choice(self.codes)

    def op_set(self):
        slot, entry = self.pick()
        if slot is None:
            return
        serial, _, code = entry
        if slot["native"]:
            v = next(self.native_tokens)
            rel.set(code, slot["obj"], v)
        else:
            v = V()
            slot["obj"][code] = v
        old = slot["values"].get(serial)
        slot["values"][serial] = v
        if old is not None:
            self.free_value(slot, old)

    def op_get(self):
        slot, entry = self.pick()
        if slot is None:
            return
        serial, _, code = entry
        want = slot["values"].get(serial)
        if slot["native"]:
            got = rel.get(code, slot["obj"])
            self.check(got == want, "native get: %r != %r" % (got, want))
            self.check(rel.get_table(code, slot["obj"]) == want, "native table get differs")
            self.check(rel.live(slot["obj"]) == len(slot["values"]), "native live count")
            return
        s = slot["obj"]
        self.check(s.get(code) is want, "get: %r is not %r" % (s.get(code), want))
        self.check((code in s) == (want is not None), "contains")
        self.check(len(s) == len(slot["values"]), "len %d != %d" % (len(s), len(slot["values"])))
        if want is None:
            try:
                s[code]
            except KeyError:
                pass
            else:
                self.fail("s[code] without a value did not raise KeyError")
        else:
            self.check(s[code] is want, "getitem")

    def op_clear(self):
        slot, entry = self.pick()
        if slot is None:
            return
        serial, _, code = entry
        old = slot["values"].pop(serial, None)
        if slot["native"]:
            rel.clear(code, slot["obj"])
        else:
            try:
                del slot["obj"][code]
            except KeyError:
                self.check(old is None, "del of a held value raised KeyError")
                return
            self.check(old is not None, "del of a missing value did not raise KeyError")
        if old is not None:
            self.free_value(slot, old)

    def op_new_code(self):
        if len(self.codes) < MAX_CODES:
            self.new_code()

    def op_drop_code(self):
        if not self.codes:
            return
        serial, _, _ = self.codes.pop(self.rng.randrange(len(self.codes)))
        for slot in self.slots.values():
            v = slot["values"].pop(serial, None)
            if v is not None:
                self.free_value(slot, v)
        # the function and code die here (no cycle): code_dealloc runs the free functions now

    def op_gc(self):
        gc.collect()

    def op_add_hook(self):
        name = PREFIX + self.rng.choice(HOOK_NAMES)
        native = self.rng.random() < 0.35
        prio = self.rng.choice([100, 200, 500, 500, 1000, self.rng.randrange(0, 10001)])
        only = None
        if self.slots and self.rng.random() < 0.4:
            sname = self.rng.choice(sorted(self.slots))
            only = (sname, self.live_gen[sname])
        slot = self.slots[only[0]] if only else None
        try:
            if native:
                if slot is not None and not slot["native"]:
                    return  # native hooks take native slots for `only`
                j = next(NATIVE_J, None)
                if j is None:
                    return
                rel.hook_add(j, name, prio, slot["obj"] if slot else -1)
                USED_J.append(j)
                obj = j
            else:
                if slot is not None and slot["native"]:
                    return  # Python hooks take Python slots for `only`
                obj = coextra.add_hook(name, on_enter=rel.Recorder(self.log, (name, "enter")),
                                       on_exit=rel.Recorder(self.log, (name, "exit")), priority=prio,
                                       only=slot["obj"] if slot else None)
        except ValueError:
            self.check(name in self.hooks, "add_hook %s refused but the name is free" % name)
            return
        self.check(name not in self.hooks, "add_hook %s accepted a duplicate name" % name)
        self.hooks[name] = {"obj": obj, "native": native, "prio": prio, "seq": next(self.seq), "active": True,
                            "only": only}

    def op_remove_hook(self):
        if not self.hooks:
            return
        name = self.rng.choice(sorted(self.hooks))
        h = self.hooks.pop(name)
        if h["native"]:
            rel.hook_remove(h["obj"])
        else:
            h["obj"].remove()
            try:
                h["obj"].remove()
            except coextra.ReleasedError:
                pass
            else:
                self.fail("second remove() did not raise")

    def op_toggle_hook(self):
        if not self.hooks:
            return
        h = self.hooks[self.rng.choice(sorted(self.hooks))]
        h["active"] = not h["active"]
        if h["native"]:
            rel.hook_set_active(h["obj"], h["active"])
            self.check(rel.hook_get_active(h["obj"]) == h["active"], "native active flag")
        else:
            h["obj"].active = h["active"]
            self.check(h["obj"].active == h["active"], "active flag")

    def op_call(self):
        if not self.codes:
            return
        serial, fn, code = self.rng.choice(self.codes)
        native_before = {n: rel.hook_counts(h["obj"]) for n, h in self.hooks.items() if h["native"]}
        del self.log[:]
        x = self.rng.randrange(100)
        r = fn(x)
        seen = [(name, what) for (name, what), c in self.log if c is code]
        del self.log[:]
        self.check(r == x + serial, "call returned %r" % (r,))
        order = sorted((h for h in self.hooks.values()), key=lambda h: (h["prio"], h["seq"]))
        names = {id(h): n for n, h in self.hooks.items()}
        firing = [names[id(h)] for h in order if self.fires(h, serial)]
        py_firing = [n for n in firing if not self.hooks[n]["native"]]
        # Python hooks on sys.monitoring (3.12+, with `only`) run inside the frame: innermost,
        # in priority order among themselves.
        py_firing = ([n for n in py_firing if not self.hooks[n]["obj"].monitored]
                     + [n for n in py_firing if self.hooks[n]["obj"].monitored])
        want = [(n, "enter") for n in py_firing] + [(n, "exit") for n in reversed(py_firing)]
        self.check(seen == want, "hooks saw the frame as %r, expected %r" % (seen, want))
        for n, (e0, x0) in native_before.items():
            e1, x1 = rel.hook_counts(self.hooks[n]["obj"])
            exp = 1 if n in firing else 0
            # a native hook sees every frame, including the harness's own: at least this one
            # (enters and exits balance once no frame is in flight: checked at the end)
            self.check(e1 - e0 >= exp, "native hook %s: %d enters, expected >= %d" % (n, e1 - e0, exp))
            if exp == 0 and not self.hooks[n]["active"]:
                self.check(e1 == e0, "inactive native hook %s ran" % n)

    # ---- the registry against the model ------------------------------

    def verify(self, full=False):
        got = {s.name: (s.live, s.native) for s in coextra.slots() if s.name.startswith(PREFIX)}
        want = {n: (len(s["values"]), s["native"]) for n, s in self.slots.items()}
        self.check(got == want, "slots(): %r != model %r" % (got, want))
        hooks = [h for h in coextra.hooks() if h.name.startswith(PREFIX)]
        got = [(h.name, h.priority, h.active, h.native) for h in hooks]
        order = sorted(self.hooks.items(), key=lambda kv: (kv[1]["prio"], kv[1]["seq"]))
        want = [(n, h["prio"], h["active"], h["native"]) for n, h in order]
        self.check(got == want, "hooks(): %r != model %r" % (got, want))
        st = coextra.status()
        self.check(not st.displaced, "displaced")
        self.check(st.installed == (st.active_hooks > 0), "installed %r with %d active hooks"
                   % (st.installed, st.active_hooks))
        # Frees: checked incrementally for the values touched since the last check (the
        # full comparison every operation would be quadratic), in full every 100 operations.
        for v in self.freed[self.nfreed:]:
            self.actual_freed[v.serial] += 1
            self.touched.add(v.serial)
        self.nfreed = len(self.freed)
        for k in self.touched:
            self.check(self.actual_freed[k] == self.expect_freed[k], "value V%d freed %d times, expected %d"
                       % (k, self.actual_freed[k], self.expect_freed[k]))
        self.touched.clear()
        total = rel.counters()
        self.check(total["freed"] == sum(self.expect_native_freed.values()), "native values freed %d times, "
                   "expected %d" % (total["freed"], sum(self.expect_native_freed.values())))
        self.check(total["bad_ctx"] == 0, "a free function got a wrong ctx")
        if full or self.step % 100 == 0:
            self.check(self.actual_freed == self.expect_freed, "freed Python values differ")
            got = collections.Counter(rel.freed_all())
            self.check(got == self.expect_native_freed, "freed native values differ: %r vs %r"
                       % (dict(got - self.expect_native_freed), dict(self.expect_native_freed - got)))

    OPS_TABLE = [("reserve", 6), ("release", 3), ("set", 14), ("get", 8), ("clear", 4), ("new_code", 4),
                 ("drop_code", 3), ("gc", 1), ("add_hook", 4), ("remove_hook", 3), ("toggle_hook", 3), ("call", 8)]

    def run(self):
        names = [n for n, _ in self.OPS_TABLE]
        weights = [w for _, w in self.OPS_TABLE]
        for _ in range(3):
            self.new_code()
        try:
            for self.step in range(1, self.ops + 1):
                op = self.rng.choices(names, weights)[0]
                self.counts[op] += 1
                del self.log[:]
                getattr(self, "op_" + op)()
                self.verify()
            # tear down through the API, then everything must have been freed once
            self.step += 1
            while self.hooks:
                self.op_remove_hook()
            while self.slots:
                self.op_release()
            while self.codes:
                self.op_drop_code()
            gc.collect()
            self.verify(full=True)
        except ModelError:
            raise
        except Exception as e:
            self.fail("unexpected %r" % (e,))
        finally:
            # leave nothing of this seed behind, whatever happened
            del self.log[:]
            for h in self.hooks.values():
                try:
                    rel.hook_remove(h["obj"]) if h["native"] else h["obj"].remove()
                except Exception:
                    pass
            for s in self.slots.values():
                try:
                    rel.release(s["obj"]) if s["native"] else s["obj"].release()
                except Exception:
                    pass
            self.hooks.clear()
            self.slots.clear()
            self.codes.clear()


class TestModel(unittest.TestCase):
    def test_random_operation_sequences(self):
        if os.environ.get("COEXTRA_SEED"):
            seeds = [int(os.environ["COEXTRA_SEED"])]
        else:
            seeds = list(range(1, SEEDS + 1))
        t0 = time.monotonic()
        counts = collections.Counter()
        for seed in seeds:
            run = Run(seed, OPS)
            run.run()
            counts.update(run.counts)
        print("\nmodel: %d seeds (%d..%d) x %d operations = %d operations in %.1fs: %s"
              % (len(seeds), seeds[0], seeds[-1], OPS, sum(counts.values()), time.monotonic() - t0,
                 ", ".join("%s %d" % kv for kv in sorted(counts.items()))), flush=True)
        self.assertEqual(sum(counts.values()), len(seeds) * OPS)
        # every frame that entered a native hook has left it
        for j in USED_J:
            enter, exit_ = rel.hook_counts(j)
            self.assertEqual(enter, exit_, "native hook table entry %d" % j)


if __name__ == "__main__":
    unittest.main()
