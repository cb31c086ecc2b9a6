"""run_bench.py: `make bench` for one Python: measures every performance target (README, docs) against baselines from the same run and prints a MET/MISSED table."""

# Usage (PYTHONPATH = the importable tree build/<tag>, as tools/make.py sets it):
#   python bench/run_bench.py              full run: callgrind + wall clock
#   python bench/run_bench.py --quick      smoke run for `make test` (tiny sizes, no callgrind, no timing asserts)
#   options: --repeats N, --no-callgrind, --keep-cg DIR (keep the callgrind profiles for callgrind_annotate)
#
# Every measurement runs in a child process (bench_one.py), so that "plain"
# is a process that never imported coextra and variants can be interleaved
# (repeat r runs every variant once, in an order rotated by r).  Hook rows
# are judged on callgrind instruction counts of the workload alone (client
# requests toggle collection around it): deterministic, so valid on a busy
# machine; wall-clock medians are printed next to them.  Tool rows are
# wall-clock medians.

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ONE = os.path.join(HERE, "bench_one.py")
sys.path.insert(0, HERE)
import workloads as W  # noqa: E402

HOOK_VARIANTS = ["plain", "idle", "raw", "co1", "co4", "skip", "obspy", "obsnat", "obshot", "obshotchain"]
TOOL_VARIANTS = ["plain", "raw", "cprofile", "profiler", "pdb", "pdbmon", "debugger", "memo", "memofib"]
TOOL_WORKLOADS = ["fib", "difflib"]  # the anchors' workloads
# Tool rows also counted under callgrind (when built): the hook-shaped ones,
# and cProfile + the profiler, shown beside their wall ratio (on 3.9/3.10
# difflib both wall overheads are near zero and their ratio swung sign).
CG_TOOL_VARIANTS = ["debugger", "pdbmon", "memo", "cprofile", "profiler"]

# Anchors measured on these machines: a raw pass-through PEP 523 hook vs plain, fib(23) / difflib
# (docs/cpython-limitations.md, "What any eval-frame function costs").
ANCHORS = {(3, 9): (1.01, 1.00), (3, 11): (1.30, 1.02), (3, 12): (1.82, 1.00), (3, 13): (1.54, 0.99),
           (3, 14): (1.51, 1.00), (3, 15): (1.81, 1.02)}


class ChildError(Exception):
    pass


def child(args, valgrind_out=None, timeout=900):
    cmd = [sys.executable, ONE] + [str(a) for a in args]
    if valgrind_out:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
               "--callgrind-out-file=" + valgrind_out] + cmd
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-15:])
        raise ChildError("%s failed (rc=%d):\n%s" % (" ".join(str(a) for a in args), p.returncode, tail))
    return json.loads(lines[-1])


def cg_totals(prefix):
    """{dump name: total Ir} from the dump files of one callgrind run."""
    out = {}
    for path in glob.glob(prefix + ".*"):
        name = total = None
        with open(path) as f:
            for line in f:
                if line.startswith("desc: Trigger: Client Request: "):
                    name = line.split(":", 2)[2].strip()[len("Client Request: "):]
                elif line.startswith("totals:") or line.startswith("summary:"):
                    total = int(line.split()[1])
        if name is not None and total is not None:
            out[name] = total
    return out


def median(xs):
    return statistics.median(xs) if xs else None


# ---- measurement phases -----------------------------------------------------

def run_wall(variants, size, names, repeats, log):
    """{variant: {workload: [seconds...]}} or {variant: "unavailable reason"}."""
    res = {v: {n: [] for n in names} for v in variants}
    for r in range(repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            if isinstance(res[v], str):
                continue
            out = child(["wall", v, size, ",".join(names)])
            if "unavailable" in out:
                res[v] = out["unavailable"]
                continue
            for n in names:
                res[v][n].append(out[n])
        log("  wall repeat %d/%d done" % (r + 1, repeats))
    return res


def run_callgrind(variants, size, names, keep):
    """({variant: {workload: Ir}}, {get_coextra/get_raw: Ir}, n_get)."""
    tmp = keep or tempfile.mkdtemp(prefix="coextra-cg-")
    os.makedirs(tmp, exist_ok=True)
    n_get = 100000

    def one(v):
        prefix = os.path.join(tmp, "cg-%s.out" % v)
        for old in glob.glob(prefix + "*"):
            os.remove(old)
        # the get loops ride along with co1 (coextra is imported there anyway)
        out = child(["cg", v, size, ",".join(names)] + ([n_get] if v == "co1" else []), valgrind_out=prefix)
        if "unavailable" in out:
            return v, None
        return v, cg_totals(prefix)

    ir, get = {}, {}
    try:
        # Instruction counts do not depend on load: two at a time is safe.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
            for v, tot in ex.map(one, variants):
                if tot is None:
                    continue  # a tool that is not built
                missing = [n for n in names if n not in tot]
                if missing:
                    raise ChildError("callgrind %s: no dump for %s" % (v, missing))
                ir[v] = tot
                if v == "co1":
                    get = {k: tot[k] for k in ("get_coextra", "get_raw")}
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return ir, get, n_get


# ---- the table ----------------------------------------------------------------

class Table:
    def __init__(self, quick=False):
        self.rows = []
        self.quick = quick  # smoke run: nothing is judged

    def add(self, row, workload, ir=None, wall=None, target="report", primary=None, fmt="%.3f", note=""):
        """target: "<= x", ">= x", "1.00x" or "report"; primary: the value judged (default: ir, else wall)."""
        if primary is None:
            primary = ir if ir is not None else wall
        status = "-"
        if self.quick and target != "report":
            status = "(quick)"
        elif primary is not None and target != "report":
            m = re.match(r"(<=|>=)\s*([\d.]+)", target)
            if target == "1.00x":
                tol = 1.005 if ir is not None else 1.03  # rounds to 1.00x / within wall noise
                status = "MET" if primary <= tol else "MISSED"
            elif m:
                x = float(m.group(2))
                ok = primary <= x if m.group(1) == "<=" else primary >= x
                status = "MET" if ok else "MISSED"
        elif primary is None and target != "report":
            status = "n/a"
        self.rows.append((row, workload, ir, wall, target, status, fmt, note))

    def text(self):
        def f(v, fmt):
            return "" if v is None else (fmt % v)
        w0 = max(len(r[0]) for r in self.rows)
        lines = ["%-*s  %-8s  %10s  %10s  %-12s  %s" % (w0, "row", "workload", "Ir ratio", "wall", "target",
                                                      "status")]
        lines.append("-" * len(lines[0]))
        for row, wl, ir, wall, target, status, fmt, note in self.rows:
            lines.append(("%-*s  %-8s  %10s  %10s  %-12s  %s" % (w0, row, wl, f(ir, fmt), f(wall, fmt), target,
                                                                  status + ("  " + note if note else ""))).rstrip())
        return "\n".join(lines)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no callgrind, no timing asserts")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--keep-cg", default=None, help="directory to keep the callgrind profiles in")
    args = ap.parse_args()

    t_start = time.time()
    ver = sys.version_info[:2]
    tag = os.environ.get("COEXTRA_BUILD_TAG", "py%d.%d" % ver)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 7)
    tool_repeats = args.repeats or (1 if quick else 5)
    use_cg = not quick and not args.no_callgrind and shutil.which("valgrind") is not None
    wall_size, tool_size = ("quick", "quick") if quick else ("wall", "tool")
    names = list(W.WORKLOADS)

    def log(msg):
        print("[bench %s %.0fs] %s" % (tag, time.time() - t_start, msg), flush=True)

    print("=" * 100)
    print("coextra bench: Python %s (%s)%s" % (sys.version.split()[0], tag, "  [--quick smoke run]" if quick else ""))
    print("=" * 100, flush=True)

    # 1. callgrind: hook rows and the get loop (deterministic, workload only)
    ir = get_ir = frames = None
    n_get = 0
    if use_cg:
        log("callgrind: %s" % ", ".join(HOOK_VARIANTS + CG_TOOL_VARIANTS))
        frames = child(["count", "cg", ",".join(names)])
        ir, get_ir, n_get = run_callgrind(HOOK_VARIANTS + CG_TOOL_VARIANTS, "cg", names, args.keep_cg)

    # 2. wall clock: hook rows (interleaved, medians)
    log("wall: hook variants x %d repeats" % repeats)
    wall = run_wall(HOOK_VARIANTS, wall_size, names, repeats, log)
    med = {v: {n: median(wall[v][n]) for n in names} for v in HOOK_VARIANTS}

    # 3. wall clock: tool rows
    log("wall: tool variants x %d repeats" % tool_repeats)
    twall = run_wall(TOOL_VARIANTS, tool_size, TOOL_WORKLOADS, tool_repeats, log)
    tmed = {v: (twall[v] if isinstance(twall[v], str) else {n: median(twall[v][n]) for n in TOOL_WORKLOADS})
            for v in TOOL_VARIANTS}

    # 4. micro: get loop (wall), release, memory
    log("micro: slot_get loop, release, memory")
    get = child(["get", 20000 if quick else 200000, 3 if quick else 41])
    n_rel = 10000 if quick else 100000
    rel = child(["release", n_rel, 1 if quick else 5])
    n_mem = 2000 if quick else 20000
    mem = {(kind, k): child(["mem", kind, k, n_mem])["bytes_per_code"]
           for k in (1, 2, 4) for kind in ("raw", "coextra")}

    # ---- rows ----
    t = Table(quick)

    def irr(a, b, n):
        return ratio(ir[a][n], ir[b][n]) if ir else None

    for n in names:
        t.add("idle (coextra, slots in use, no hook) vs plain", n, irr("idle", "plain", n),
              ratio(med["idle"][n], med["plain"][n]), "1.00x")
    anchor = ANCHORS.get(ver)
    for n in names:
        a = ""
        if anchor and n in ("fib", "difflib"):
            a = "anchor %.2f" % anchor[0 if n == "fib" else 1]
        t.add("raw C hook vs plain (the floor)", n, irr("raw", "plain", n),
              ratio(med["raw"][n], med["plain"][n]), "report", note=a)
    for v, label, target in (("co1", "1 native hook via coextra vs raw hook", "<= 1.03"),
                             ("co4", "4 native hooks via coextra vs raw hook", "<= 1.10"),
                             ("skip", "1 hook skipped by `only` vs raw hook", "<= 1.03")):
        for n in names:
            t.add(label, n, irr(v, "raw", n), ratio(med[v][n], med["raw"][n]), target)

    # Observers with `only` (3.12+: on sys.monitoring, no eval-frame function): against PLAIN.
    obs_target = "<= 1.02" if ver >= (3, 12) else "report"
    for v, label in (("obspy", "Python observer, `only` on a cold function, vs plain"),
                     ("obsnat", "native observer, `only` on a cold function, vs plain")):
        for n in names:
            t.add(label, n, irr(v, "plain", n), ratio(med[v][n], med["plain"][n]), obs_target)
    t.add("Python observer on fib itself: sys.monitoring / chain", "fib", irr("obshot", "obshotchain", "fib"),
          ratio(med["obshot"]["fib"], med["obshotchain"]["fib"]), "report")

    g_ir = ratio(get_ir.get("get_coextra"), get_ir.get("get_raw")) if get_ir else None
    g_wall = ratio(median(get["coextra_ns"]), median(get["raw_ns"]))
    t.add("coextra_slot_get vs raw GetExtra (C loop)", "-", g_ir, g_wall, "<= 1.5",
          note="%.1f vs %.1f ns/op%s" % (median(get["coextra_ns"]), median(get["raw_ns"]),
                                          ("; %.1f vs %.1f Ir/op" % (get_ir["get_coextra"] / n_get,
                                                                     get_ir["get_raw"] / n_get)) if get_ir else ""))
    t.add("Slot.release() over %d code objects (ms)" % n_rel, "-", None, median(rel["ms"]),
          "<= 50" if not quick else "report", fmt="%.2f")
    for k in (1, 2, 4):
        t.add("bytes per code object, %d tool%s: coextra / raw" % (k, "s" if k > 1 else ""), "-", None,
              ratio(mem[("coextra", k)], mem[("raw", k)]), "report",
              note="%.0f B vs %.0f B (one co_extra index per tool)" % (mem[("coextra", k)], mem[("raw", k)]))

    # tool rows (wall)
    def tool(v):
        return None if isinstance(tmed[v], str) else tmed[v]

    def na(v):
        return "n/a (%s)" % tmed[v] if isinstance(tmed[v], str) else ""

    plain, raw, cprof = tool("plain"), tool("raw"), tool("cprofile")
    for n in TOOL_WORKLOADS:
        t.add("cProfile vs plain", n, None, ratio(cprof[n], plain[n]), "report", note="anchor 2.4-6.2x / 1.7-2.7x")
        t.add("pdb, 1 breakpoint in a cold function, vs plain", n, None, ratio(tool("pdb")[n], plain[n]), "report",
              note="anchor 44-84x / 1.5-3.5x")
    prof_target = "<= 0.5" if ver >= (3, 11) else "report"
    for n in TOOL_WORKLOADS:
        p = tool("profiler")
        v = ratio(p[n] - plain[n], cprof[n] - plain[n]) if p else None
        v_ir = None
        if ir and "profiler" in ir and "cprofile" in ir:
            v_ir = ratio(ir["profiler"][n] - ir["plain"][n], ir["cprofile"][n] - ir["plain"][n])
        # judged on wall time, as the issue asks of tool rows; Ir shown beside it
        t.add("profiler overhead / cProfile overhead", n, v_ir, v, prof_target, primary=v, note=na("profiler"))
    def cg_tool(v, n):
        return ratio(ir[v][n], ir["raw"][n]) if ir and v in ir else None

    for n in TOOL_WORKLOADS:
        d = tool("debugger")
        t.add("debugger, 1 breakpoint in a cold function, vs raw hook", n, cg_tool("debugger", n),
              ratio(d[n], raw[n]) if d else None, "<= 1.05", note=na("debugger"))
        # ">= 10x faster than pdb" follows from the fib anchor (pdb 44-84x); on
        # difflib pdb itself costs only 1.5-3.5x, so the ratio is reported.
        t.add("debugger vs pdb (same breakpoint)", n, None, ratio(d[n], tool("pdb")[n]) if d else None,
              "<= 0.10" if n == "fib" else "report",
              note=na("debugger") or ("i.e. >= 10x faster than pdb" if n == "fib" else "pdb is only ~2-5x here"))
    # 3.12+: the debugger's observer runs on sys.monitoring (no eval-frame function): against
    # PLAIN, and (3.14+) against pdb's own sys.monitoring backend with the same breakpoint.
    if ver >= (3, 12):
        for n in TOOL_WORKLOADS:
            d, pm = tool("debugger"), tool("pdbmon")
            t.add("debugger, 1 breakpoint in a cold function, vs plain", n, irr("debugger", "plain", n)
                  if ir and "debugger" in ir else None, ratio(d[n], plain[n]) if d else None, "<= 1.02",
                  note=na("debugger"))
            if pm is not None:
                t.add("debugger vs pdb's monitoring backend (same breakpoint)", n,
                      irr("debugger", "pdbmon", n) if ir and "pdbmon" in ir else None,
                      ratio(d[n], pm[n]) if d else None, "<= 1.005",
                      note=na("debugger") or "no slower (the 1.00x rows' 0.5% in Ir)")
    for n in TOOL_WORKLOADS:
        m = tool("memo")
        t.add("memo active (workload not memoized) vs raw hook", n, cg_tool("memo", n),
              ratio(m[n], raw[n]) if m else None, "report", note=na("memo"))
    mf = tool("memofib")
    t.add("memo: fib memoized vs plain fib", "fib", None, ratio(mf["fib"], plain["fib"]) if mf else None, "report",
          note=na("memofib"))

    print(t.text())
    print()
    if ir and frames:
        print("callgrind, instructions per frame (workload only, size 'cg'; frames counted by a counting raw hook):")
        cols = [v for v in HOOK_VARIANTS + CG_TOOL_VARIANTS if v in ir]
        over = [v for v in cols if v not in ("plain", "idle", "raw")]
        print("  %-8s %8s " % ("workload", "frames") + " ".join("%8s" % v for v in cols) +
              " | over raw: " + " / ".join(over))
        for n in names:
            fr = frames[n] or 1
            per = {v: ir[v][n] / fr for v in cols}
            print("  %-8s %8d " % (n, frames[n]) + " ".join("%8.0f" % per[v] for v in cols) +
                  " | " + " / ".join("%+.0f" % (per[v] - per["raw"]) for v in over))
    print("status: hook rows judged on callgrind Ir (deterministic) when available, else on wall medians;"
          " wall = median of %d interleaved runs (tool rows: %d)." % (repeats, tool_repeats))
    if quick:
        print("--quick: smoke run, sizes too small for the ratios to mean anything; nothing is asserted.")
    print("bench %s done in %.0f s" % (tag, time.time() - t_start), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ChildError as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
