#!/usr/bin/env python3
"""overhead.py: what coextra's presence costs each real tool on its workload (wall clock, best of N).

    tools/sidroot.sh run env PYTHONPATH=build/py3.14:tests/real_tools python3.14 tests/real_tools/overhead.py [N]

Not a test (nothing is asserted): the figures in docs/coexisting.md come from
it.  For each tool available on this Python it times the workload of
test_real_tools.py (workload.run, 200 rounds) alone and with coextra present
in three degrees:

- idle: coextra imported, values in a slot, no hook (no eval-frame function);
- one cold tool: coextra_memo memoizing a function that never runs (one
  evaluating hook whose `only` skips every frame: the eval-frame function is
  in, which on 3.11+ costs Python-to-Python call inlining and specialization);
- all four: coextra's profiler (a deterministic profiler timing every frame,
  like cProfile), the debugger, the memoizer and a Python observer that sees
  every frame.

For Dynamo: the first call of a compiled training step (the compile) and
ten steps after warm-up.
"""

import sys
import time
import unittest

import coextra

import realtools
import workload
from realtools import CoextraTools

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ROUNDS = 200


def best(fn, n=N):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class Idle:
    """coextra imported, a value on every workload function, no hook."""

    def start(self):
        self.slot = coextra.Slot("real_tools.overhead.idle")
        for f in workload.FUNCTIONS.values():
            self.slot[f.__code__] = True

    def stop(self):
        self.slot.release()


class ColdHook:
    """coextra_memo alone, on workload.cold (never called): an evaluating hook that skips every frame."""

    def start(self):
        import coextra_memo
        self.memo = coextra_memo
        coextra_memo.memoize(workload.cold)
        assert coextra.status().installed

    def stop(self):
        self.memo.unmemoize(workload.cold)


PRESENCE = {"idle": Idle, "one cold tool": ColdHook,
            "all four": lambda: CoextraTools("real_tools.overhead")}


def timed_run(tool_factory, presence=None):
    def once():
        tool = tool_factory() if tool_factory else None
        cx = PRESENCE[presence]() if presence else None
        for t in (tool, cx):
            if t is not None:
                t.start()
        t0 = time.perf_counter()
        workload.run(ROUNDS)
        dt = time.perf_counter() - t0
        for t in (cx, tool):
            if t is not None:
                t.stop()
        return dt
    return min(once() for _ in range(N))


def tools():
    import test_real_tools as t
    for case in (t.TestCoverage, t.TestLineProfiler, t.TestYappi, t.TestPyinstrument):
        try:
            mod = realtools.require(case.tool)
        except unittest.SkipTest as e:
            print("%-14s n/a: %s" % (case.tool, e))
            continue
        yield case.tool, (lambda case=case, mod=mod: case.Tool(mod))


def dynamo_rows():
    try:
        torch = realtools.require("torch")
    except unittest.SkipTest as e:
        print("%-14s n/a: %s" % ("torch.compile", e))
        return
    import torch._dynamo
    import test_dynamo as d
    d.DynamoCase.setUpClass()

    def run(presence):
        torch._dynamo.reset()
        model, opt, x, y = d.DynamoCase.data()
        step = torch.compile(d.train_step, backend="eager")
        cx = PRESENCE[presence]() if presence else None
        if cx:
            cx.start()
        t0 = time.perf_counter()
        step(model, opt, x, y)
        first = time.perf_counter() - t0
        steady = best(lambda: [step(model, opt, x, y) for _ in range(10)])
        if cx:
            cx.stop()
        return first, steady

    runs = {p: [run(p) for _ in range(3)] for p in (None,) + tuple(PRESENCE)}
    for i, what in enumerate(("torch.compile, first call", "torch.compile, 10 steps")):
        alone = min(r[i] for r in runs[None])
        print(row(what, alone, [min(r[i] for r in runs[p]) / alone for p in PRESENCE]))


def row(name, alone, ratios):
    return "%-26s %9.4f s " % (name, alone) + " ".join("%13s" % ("x%.2f" % r) for r in ratios)


def main():
    print("coextra %s, Python %s, best of %d, workload.run(%d); coextra present, relative to alone:"
          % (coextra.__version__, sys.version.split()[0], N, ROUNDS))
    print("%-26s %11s " % ("", "alone") + " ".join("%13s" % p for p in PRESENCE))
    plain = timed_run(None)
    print(row("no tool", plain, [timed_run(None, p) / plain for p in PRESENCE]))
    for name, factory in tools():
        alone = timed_run(factory)
        print(row(name, alone, [timed_run(factory, p) / alone for p in PRESENCE]))
    dynamo_rows()


if __name__ == "__main__":
    main()
