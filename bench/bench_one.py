"""bench_one.py: one benchmark child process (a variant x the workloads, a micro benchmark, or a memory probe); prints one JSON line."""

# Run by run_bench.py, one process per measurement so that "plain" really is
# a process that never imported coextra, and so that variants interleave:
#
#   bench_one.py wall  <variant> <size> <workload,...>   seconds per workload
#   bench_one.py cg    <variant> <size> <workload,...> [get_n]   (under callgrind) one dump per workload
#                                                      (+ the get loops' dumps when get_n > 0)
#   bench_one.py count <size> <workload,...>             frames evaluated per workload
#   bench_one.py get   <n> <repeats> [cg]                ns per coextra_slot_get / raw GetExtra
#   bench_one.py release <n_codes> <repeats>             ms for Slot.release() over n code objects
#   bench_one.py mem   <raw|coextra> <k> <n_codes>       bytes per code object for k tools' data
#
# Variants: plain, idle, raw, co1, co4, skip (hook rows); cprofile, profiler,
# pdb, debugger, memo, memofib (tool rows).  A variant whose tool is not built prints
# {"unavailable": "..."}.

import gc
import importlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import workloads as W  # noqa: E402


class Unavailable(Exception):
    pass


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---- variants: setup() -> teardown() ----------------------------------------

def _idle_slot():
    import coextra
    slot = coextra.Slot("bench-idle")
    codes = W.all_code_objects()
    for i, c in enumerate(codes):
        slot[c] = i
    assert len(slot) == len(codes)
    return slot.release


def _idle():
    import coextra
    stop = _idle_slot()
    assert not coextra.status().installed
    return stop


def _raw():
    import coextra_bench_raw as R
    R.install()
    return R.uninstall


def _native(k=0, skip=False):
    import coextra
    import coextra_bench_native as N
    if k:
        N.add(k)
    if skip:
        N.add_skip()
        # Other tools' data on every code object: the `only` test reads each
        # frame's block down to the entry (the worst case), not just "no
        # co_extra index yet".
        stop_idle = _idle_slot()
    assert coextra.status().installed
    if skip:
        return lambda: (N.remove_all(), stop_idle())
    return N.remove_all


def _cprofile():
    import cProfile
    p = cProfile.Profile()
    p.enable()
    return p.disable


def _example_tool(name):
    # One of the examples' packages, or Unavailable when it was not built.
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise Unavailable("tool not built (%s)" % e)


def _profiler():
    coextra_profiler = _example_tool("coextra_profiler")
    cls = getattr(coextra_profiler, "Profile", None) or getattr(coextra_profiler, "Profiler", None)
    if cls is None:
        raise Unavailable("coextra_profiler has no Profile class")
    p = cls()
    p.enable()
    return p.disable


def _break_cold(cls, **kw):
    # A bdb-style debugger (pdb, coextra_debugger) that reads and prints
    # nothing, after `b cold`: a breakpoint in a function the workloads never call.
    d = cls(stdin=open(os.devnull), stdout=open(os.devnull, "w"), **kw)
    err = d.set_break(W.__file__, W.cold_line())
    if err:
        raise RuntimeError(err)
    return d


def _stopper(d, detach):
    # What ends a debugger session: detach() it, then drop its breakpoints.
    def stop():
        detach()
        d.clear_all_breaks()
    return stop


def _pdb_session(**backend):
    # What `python -m pdb script.py`, `b cold`, `c` leaves running.
    import pdb
    p = _break_cold(pdb.Pdb, **backend)
    p.reset()
    p.botframe = sys._getframe()
    p.set_continue()
    return p


def _pdb():
    # The settrace way (pdb before 3.14): bdb's trace function on every
    # frame, with line tracing in every frame of the file that holds the
    # breakpoint (here: the workloads' file).
    p = _pdb_session()
    sys.settrace(p.trace_dispatch)
    return _stopper(p, lambda: sys.settrace(None))


def _pdbmon():
    # The sys.monitoring backend that `python -m pdb` and breakpoint() use
    # since 3.14.
    import bdb
    import inspect
    if "backend" not in inspect.signature(bdb.Bdb.__init__).parameters:
        raise Unavailable("pdb has no sys.monitoring backend before 3.14")
    p = _pdb_session(backend="monitoring")
    p.start_trace()
    return _stopper(p, p.stop_trace)


def _debugger():
    coextra_debugger = _example_tool("coextra_debugger")
    cls = getattr(coextra_debugger, "Debugger", None)
    if cls is None or not hasattr(cls, "attach"):
        raise Unavailable("coextra_debugger has no Debugger.attach()")
    # The same session as _pdb(): `b cold`, then continue (attach() = keep
    # running with the breakpoints watched, no stop).
    d = _break_cold(cls)
    d.attach()
    return _stopper(d, d.detach)


def _memo():
    # The memo tool active (one memoized function that the workloads never
    # call): its hook is restricted to its slot, so every workload frame skips it.
    coextra_memo = _example_tool("coextra_memo")

    def memo_target(x):
        return x * 2
    coextra_memo.memoize(memo_target)
    return lambda: coextra_memo.unmemoize(memo_target)


def _memofib():
    # The JIT-shaped path: fib itself memoized (cached calls finished by coextra_frame_return).
    coextra_memo = _example_tool("coextra_memo")
    coextra_memo.memoize(W.fib)
    return lambda: coextra_memo.unmemoize(W.fib)


def _noop(code):
    pass


def _observer(native=False, hot=False, chain=False):
    # An observer with `only` on one function: the cold one that never runs
    # (what a cold breakpoint costs), or fib itself ("hot": what observing
    # costs where it looks).  chain: ids 3 and 4 taken first, so that coextra
    # runs the same observer in the eval-frame chain instead of on
    # sys.monitoring (3.12+; before, observers always use the chain).
    import coextra
    target = (W.fib if hot else W.cold).__code__
    held = []
    if chain and hasattr(sys, "monitoring"):
        for i in (3, 4):
            if sys.monitoring.get_tool(i) is None:
                sys.monitoring.use_tool_id(i, "bench")
                held.append(i)
    if native:
        import coextra_bench_native as N
        N.add_observer(target)
        stop = N.remove_all
    else:
        slot = coextra.Slot("bench-observed")
        slot[target] = True
        h = coextra.add_hook("bench-observer", only=slot, on_enter=_noop, on_exit=_noop)

        def stop():
            h.remove()
            slot.release()
    assert coextra.status().observers == 1

    def teardown():
        stop()
        for i in held:
            sys.monitoring.free_tool_id(i)
    return teardown


VARIANTS = {
    "plain": lambda: (lambda: None),
    "idle": _idle,
    "raw": _raw,
    "co1": lambda: _native(k=1),
    "co4": lambda: _native(k=4),
    "skip": lambda: _native(skip=True),
    "cprofile": _cprofile,
    "profiler": _profiler,
    "pdb": _pdb,
    "pdbmon": _pdbmon,
    "debugger": _debugger,
    "memo": _memo,
    "memofib": _memofib,
    "obspy": lambda: _observer(),
    "obsnat": lambda: _observer(native=True),
    "obshot": lambda: _observer(hot=True),
    "obshotchain": lambda: _observer(hot=True, chain=True),
}


def setup(variant):
    try:
        return VARIANTS[variant]()
    except Unavailable as e:
        emit({"unavailable": str(e)})
        sys.exit(0)


# ---- modes -----------------------------------------------------------------

def mode_wall(variant, size, names):
    inp = W.Inputs(size)
    warm = W.Inputs("quick")
    stop = setup(variant)
    out = {}
    try:
        for name in names:
            W.RUN[name](warm)  # specialise / fill caches under the same hook
            gc.collect()
            t0 = time.perf_counter()
            W.RUN[name](inp)
            out[name] = time.perf_counter() - t0
    finally:
        stop()
    emit(out)


def cg_get_loops(n):
    """Under callgrind: one dump per loop of n coextra_slot_get / raw GetExtra calls."""
    import coextra_bench_native as N
    import coextra_bench_raw as R
    code = compile("def bench_get_target(): pass", "<bench>", "exec").co_consts[0]
    N.prepare_get(code)
    N.loop_coextra(code, 1000)
    N.loop_raw(code, 1000)
    R.cg_start()
    for name, fn in (("get_coextra", N.loop_coextra), ("get_raw", N.loop_raw)):
        R.cg_zero()
        R.cg_toggle()
        fn(code, n)
        R.cg_toggle()
        R.cg_dump(name)


def mode_cg(variant, size, names, get_n=0):
    import coextra_bench_raw as R
    inp = W.Inputs(size)
    warm = W.Inputs("quick")
    stop = setup(variant)
    R.cg_start()  # started with --instr-atstart=no --collect-atstart=no
    try:
        for name in names:
            W.RUN[name](warm)
            gc.collect()  # same collector state in every variant: GC runs at the same points
            R.cg_zero()
            R.cg_toggle()
            W.RUN[name](inp)
            R.cg_toggle()
            R.cg_dump(name)
    finally:
        stop()
    if get_n:
        cg_get_loops(get_n)  # rides along to save a valgrind start-up
    emit({"running_on_valgrind": R.cg_running()})


def mode_count(size, names):
    import coextra_bench_raw as R
    inp = W.Inputs(size)
    warm = W.Inputs("quick")
    R.install(True)
    out = {}
    try:
        for name in names:
            W.RUN[name](warm)
            W.RUN[name](inp)
            R.reset_frames()
            W.RUN[name](inp)
            out[name] = R.frames()
    finally:
        R.uninstall()
    emit(out)


def mode_get(n, repeats, cg=False):
    if cg:
        cg_get_loops(n)
        emit({"n": n})
        return
    import coextra_bench_native as N
    code = compile("def bench_get_target(): pass", "<bench>", "exec").co_consts[0]
    N.prepare_get(code)
    co, raw = [], []
    N.loop_coextra(code, n)
    N.loop_raw(code, n)
    for _ in range(repeats):  # interleaved
        co.append(N.loop_coextra(code, n))
        raw.append(N.loop_raw(code, n))
    emit({"coextra_ns": co, "raw_ns": raw})


def mode_release(n_codes, repeats):
    import coextra
    template = compile("def f(): return 1", "<bench>", "exec").co_consts[0]
    codes = [template.replace(co_name="f%d" % i) for i in range(n_codes)]
    value = object()  # one shared value: release measures coextra, not deallocation
    times = []
    for r in range(repeats):
        slot = coextra.Slot("bench-release-%d" % r)
        for c in codes:
            slot[c] = value
        assert len(slot) == n_codes
        t0 = time.perf_counter()
        slot.release()
        times.append((time.perf_counter() - t0) * 1e3)
    emit({"ms": times, "n": n_codes})


def mode_mem(kind, k, n_codes):
    import tracemalloc
    template = compile("def f(): return 1", "<bench>", "exec").co_consts[0]
    codes = [template.replace(co_name="f%d" % i) for i in range(n_codes)]
    if kind == "raw":
        import coextra_bench_raw as R
        R.request(k)  # one CPython co_extra index per tool
        setter = lambda: R.set_all(codes, k)  # noqa: E731
    else:
        import coextra_bench_native as N
        N.mem_reserve(k)  # one coextra slot per tool
        warm = template.replace(co_name="warm")
        N.mem_set([warm], k)  # the runtime's one index is requested on first use
        setter = lambda: N.mem_set(codes, k)  # noqa: E731
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    setter()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    emit({"bytes_per_code": (after - before) / float(n_codes)})


def main(argv):
    mode = argv[0]
    if mode == "wall":
        mode_wall(argv[1], argv[2], argv[3].split(","))
    elif mode == "cg":
        mode_cg(argv[1], argv[2], argv[3].split(","), int(argv[4]) if len(argv) > 4 else 0)
    elif mode == "count":
        mode_count(argv[1], argv[2].split(","))
    elif mode == "get":
        mode_get(int(argv[1]), int(argv[2]), len(argv) > 3 and argv[3] == "cg")
    elif mode == "release":
        mode_release(int(argv[1]), int(argv[2]))
    elif mode == "mem":
        mode_mem(argv[1], int(argv[2]), int(argv[3]))
    else:
        raise SystemExit("unknown mode %r" % mode)


if __name__ == "__main__":
    main(sys.argv[1:])
