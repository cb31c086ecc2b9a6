#!/usr/bin/env python3
"""compare_builds.py: best-of wall time of the hook rows on fib, for several builds side by side (one interpreter)."""

# Used to judge changes to the dispatcher's hot path by what users run
# (release builds, GCC and clang) rather than by callgrind instructions:
#
#   python3.12 bench/compare_builds.py [--rounds N] [--callgrind] LABEL=TREE [LABEL=TREE ...]
#
# TREE is an importable build tree (build/<tag>, build/<tag>-release, ...).
# Each round runs every (build, variant) pair once, in a fresh process
# (bench_one.py wall), in rotating order, so that slow phases of a shared
# machine spread over all of them; the minimum over rounds is kept.  Printed:
# seconds per fib workload, and each hook row's ratio to the same build's
# raw PEP 523 hook.  This machine has no hardware counters (perf stat reports
# cycles as not supported), so best-of wall time is the measure; --callgrind
# prints instructions (Ir) per frame path instead, deterministic but blind to
# what a wall clock sees (stalls, fusion, branch prediction).

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("plain", "raw", "co1", "co4", "skip")


def one(tree, variant, workload):
    env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_one.py"), "wall", variant, "wall", workload],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])[workload]


def one_cg(tree, variant, workload):
    sys.path.insert(0, HERE)
    from run_bench import cg_totals
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "cg")
        env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                        "--callgrind-out-file=" + prefix, sys.executable, os.path.join(HERE, "bench_one.py"),
                        "cg", variant, "cg", workload], env=env, capture_output=True, check=True)
        return cg_totals(prefix)[workload]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workload", default="fib")
    ap.add_argument("--callgrind", action="store_true", help="instructions (Ir) instead of wall time")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + " ".join(VARIANTS))
    ap.add_argument("builds", nargs="+", help="LABEL=TREE")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    variants = [v for v in VARIANTS if v in args.variants.split(",") or v == "raw"]
    pairs = [(label, tree, v) for label, tree in builds for v in variants]
    best = {}
    if args.callgrind:
        for label, tree, v in pairs:
            best[label, v] = one_cg(tree, v, args.workload)
    else:
        for r in range(args.rounds):
            k = r % len(pairs)
            for label, tree, v in pairs[k:] + pairs[:k]:
                t = one(tree, v, args.workload)
                best[label, v] = min(best.get((label, v), t), t)
    print("%-14s %s" % ("build", "  ".join("%11s" % v for v in variants)))
    for label, _ in builds:
        print("%-14s %s" % (label, "  ".join(("%11d" if args.callgrind else "%10.4fs") % best[label, v]
                                              for v in variants)))
    print("ratios to the same build's raw hook (%s):" % ("Ir" if args.callgrind else "best of %d" % args.rounds))
    for label, _ in builds:
        raw = best[label, "raw"]
        print("%-14s %s" % (label, "  ".join("%11.3f" % (best[label, v] / raw) for v in variants)))


if __name__ == "__main__":
    main()
