#!/usr/bin/env python3
"""demo.py: a profiler, a debugger and a JIT-shaped memoizer working at once on one real workload (`make demo`)."""
import gc
import io
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import coextra  # noqa: E402
import coextra_debugger  # noqa: E402
import coextra_memo  # noqa: E402
import coextra_profiler  # noqa: E402
import workload  # noqa: E402


def title(text):
    print("\n" + text + "\n" + "-" * len(text))


def table(rows, headers):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print(fmt % tuple(headers))
    for r in rows:
        print(fmt % tuple(str(x) for x in r))


def breakpoint_line():
    with open(workload.__file__) as f:
        for n, line in enumerate(f, 1):
            if "# demo-breakpoint" in line:
                return n
    raise RuntimeError("marker not found")


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def costs():
    """Each tool alone and all three, on the same workload, as ratios to a plain run."""
    def plain():
        workload.run()

    def profiler():
        with coextra_profiler.Profile():
            workload.run()

    def debugger():
        dbg = coextra_debugger.Debugger(stdin=io.StringIO(""), stdout=io.StringIO())
        # One breakpoint in a function the workload never calls.
        dbg.set_break(os.path.join(HERE, "demo.py"), cold_line)
        dbg.attach()
        try:
            workload.run()
        finally:
            dbg.detach()
            dbg.clear_all_breaks()

    def memo():
        coextra_memo.memoize(workload.parse_and_count)
        try:
            workload.run()
        finally:
            coextra_memo.unmemoize(workload.parse_and_count)

    base = timed(plain)
    rows = [("plain", "%.3f s" % base, "1.00x")]
    for name, fn in (("profiler", profiler), ("debugger (1 cold breakpoint)", debugger), ("memo", memo)):
        t = timed(fn)
        rows.append((name, "%.3f s" % t, "%.2fx" % (t / base)))
    return rows


def cold():
    return "never called"  # cold-breakpoint


cold_line = cold.__code__.co_firstlineno + 1


def main():
    print("coextra %s on Python %s" % (coextra.__version__, sys.version.split()[0]))

    # --- three independent tools, loaded into one interpreter -----------------
    prof = coextra_profiler.Profile()
    coextra_memo.memoize(workload.parse_and_count)
    transcript = io.StringIO()
    dbg = coextra_debugger.Debugger(stdin=io.StringIO("p summary['file'], summary['nodes']\nc\n"),
                                    stdout=transcript)
    dbg.use_rawinput = False
    dbg.set_break(workload.__file__, breakpoint_line() + 1, temporary=True)

    prof.enable()
    dbg.attach()
    result = workload.run(rounds=3)
    hooks_running, slots_running, status_running = coextra.hooks(), coextra.slots(), coextra.status()
    dbg.detach()
    prof.disable()

    title("Debugger: a scripted session stopped at the breakpoint in summarize() and printed a variable")
    for line in transcript.getvalue().splitlines():
        print("  " + line)

    title("Profiler: top entries by cumulative time (pstats)")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(8)
    body = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(body) if "ncalls" in ln)
    print("\n".join("  " + ln for ln in body[start:start + 9]))

    title("Memo: parse_and_count() results served without running the frame")
    hits, misses = coextra_memo.stats(workload.parse_and_count)
    print("  hits=%d misses=%d  (%d report entries computed)" % (hits, misses, len(result)))

    title("coextra.hooks() while the three ran: one ordered chain, outermost first")
    table([tuple(h) for h in hooks_running], coextra.HookInfo._fields)
    title("coextra.slots() while the three ran: one co_extra index, one slot per tool")
    table([tuple(s) for s in slots_running], coextra.SlotInfo._fields)
    print("\nstatus:", status_running)

    # --- unload one tool; the other two keep working ---------------------------
    title("Unloading the profiler: its slot goes, the memoizer and the debugger keep working")
    profiler_slots = [s.name for s in coextra.slots() if "profiler" in s.name]
    del prof, stats
    gc.collect()
    remaining = [s for s in coextra.slots() if s.name in profiler_slots]
    print("  profiler slot(s) %s after unload: %s" % (profiler_slots, remaining or "released (live = 0)"))
    transcript2 = io.StringIO()
    dbg2 = coextra_debugger.Debugger(stdin=io.StringIO("p summary['lines']\nc\n"), stdout=transcript2)
    dbg2.use_rawinput = False
    dbg2.set_break(workload.__file__, breakpoint_line() + 1, temporary=True)
    dbg2.attach()
    workload.run(rounds=1)
    dbg2.detach()
    hits2, misses2 = coextra_memo.stats(workload.parse_and_count)
    print("  memo after unload: hits=%d (+%d) misses=%d" % (hits2, hits2 - hits, misses2))
    printed = [ln.replace("(Pdb) ", "") for ln in transcript2.getvalue().splitlines()]
    stop = [ln for ln in printed if ln.startswith(">")]
    print("  debugger after unload stopped at %s and printed %s" %
          (stop[0].split()[-1] if stop else "nothing", [ln for ln in printed if ln.strip().isdigit()]))
    coextra_memo.unmemoize(workload.parse_and_count)
    table([tuple(s) for s in coextra.slots()], coextra.SlotInfo._fields)

    if not os.environ.get("COEXTRA_DEMO_QUICK"):  # the test of this script skips the timing
        title("What each tool costs on this workload (best of 3, wall clock)")
        table(costs(), ("run", "time", "vs plain"))
    print("\nstatus at the end:", coextra.status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
