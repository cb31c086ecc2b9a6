"""workloads.py: the benchmark workloads (fib, difflib, json, ast) at fixed sizes, and the cold function the debugger rows break in."""

import ast
import difflib
import io
import json
import os
import sys

# Sizes per mode.  "wall": timed runs (~0.1 s each on 3.11 without a hook);
# "tool": the tool rows (pdb costs up to ~80x on fib); "cg": callgrind runs;
# "quick": the smoke run of `make test`.
SIZES = {
    #          fib (n, reps)    difflib lines     json (records, rounds)    ast files (stdlib)
    "wall":  {"fib": (23, 4), "difflib": 3000, "json": (400, 6), "ast": ("difflib.py",)},
    "tool":  {"fib": (23, 1), "difflib": 1200, "json": (200, 2), "ast": ("textwrap.py",)},
    "cg":    {"fib": (20, 1), "difflib": 400, "json": (60, 2), "ast": ("string.py",)},
    "quick": {"fib": (15, 1), "difflib": 120, "json": (20, 2), "ast": ("string.py",)},
}
WORKLOADS = ("fib", "difflib", "json", "ast")

STDLIB = os.path.dirname(os.__file__)
# Real stdlib text: the diff and ast inputs (present in every 3.9-3.13 tree).
TEXT_FILES = ("argparse.py", "difflib.py", "textwrap.py", "string.py", "shlex.py", "calendar.py")


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def cold(x):
    """Never called: the debugger rows put their one breakpoint here."""
    y = x + 1  # COLD-BREAK
    return y


def cold_line():
    """Line number of the breakpoint in cold() (its first body line)."""
    return cold.__code__.co_firstlineno + 2


def _read(name):
    path = os.path.join(STDLIB, name)
    if not os.path.exists(path):  # 3.14 made `string` a package (string.templatelib)
        path = os.path.join(STDLIB, name[:-3], "__init__.py")
    with open(path, encoding="utf-8") as f:
        return f.read()


class Inputs:
    """Inputs built once per process, outside the timed region."""

    def __init__(self, mode):
        self.sizes = SIZES[mode]
        lines = []
        for name in TEXT_FILES:
            lines.extend(_read(name).splitlines(True))
        n = min(self.sizes["difflib"], len(lines))
        self.diff_a = lines[:n]
        # b: the same text edited throughout (a changed line every 13, a
        # deleted line every 29, an inserted line every 37).
        b = []
        for i, line in enumerate(self.diff_a):
            if i % 29 == 5:
                continue
            if i % 13 == 7:
                line = line.replace("e", "E", 1)
            b.append(line)
            if i % 37 == 11:
                b.append("# inserted %d\n" % i)
        self.diff_b = b
        # json: a nested structure made of real data (the lines and tokens above).
        self.json_data = [
            {"file": TEXT_FILES[i % len(TEXT_FILES)], "line": i, "text": line.rstrip("\n"),
             "words": line.split()[:8], "len": len(line), "blank": not line.strip(), "ratio": i / 7.0}
            for i, line in enumerate(lines[: self.sizes["json"][0]])
        ]
        self.ast_sources = [_read(name) for name in self.sizes["ast"]]


def run_fib(inp):
    n, reps = inp.sizes["fib"]
    r = 0
    for _ in range(reps):
        r += fib(n)
    return r


def run_difflib(inp):
    return sum(1 for _ in difflib.unified_diff(inp.diff_a, inp.diff_b, "a", "b", n=3))


def run_json(inp):
    total = 0
    for i in range(inp.sizes["json"][1]):
        if i % 2:
            # indented, through a file: json.dump always takes the pure-Python
            # encoder (iterencode without _one_shot); json.dumps(indent=...)
            # would take the C encoder on 3.13+, which handles indent there.
            buf = io.StringIO()
            json.dump(inp.json_data, buf, indent=1, sort_keys=True)
            s = buf.getvalue()
        else:
            s = json.dumps(inp.json_data, sort_keys=True)  # compact: the C encoder
        total += len(json.loads(s))
    return total


def run_ast(inp):
    total = 0
    for src in inp.ast_sources:
        tree = ast.parse(src)
        total += len(ast.unparse(tree))
    return total


RUN = {"fib": run_fib, "difflib": run_difflib, "json": run_json, "ast": run_ast}


def all_code_objects():
    """Every code object reachable from the loaded modules' functions and classes (nested ones too)."""
    seen = {}
    stack = []
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for v in list(d.values()):
            if isinstance(v, type):
                for w in list(vars(v).values()):
                    f = getattr(w, "__func__", w)
                    c = getattr(f, "__code__", None)
                    if c is not None and type(c).__name__ == "code":
                        stack.append(c)
            else:
                c = getattr(v, "__code__", None)
                if c is not None and type(c).__name__ == "code":
                    stack.append(c)
    while stack:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen[id(c)] = c
        for k in c.co_consts:
            if type(k) is type(c):
                stack.append(k)
    return list(seen.values())
