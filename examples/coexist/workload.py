"""workload.py: a real standard-library workload for the coexist demo (difflib, json and ast over stdlib sources)."""
import ast
import difflib
import json
import os
import sysconfig

STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["difflib.py", "json/encoder.py", "json/decoder.py", "ast.py", "textwrap.py", "shlex.py"]


def source(name):
    with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
        return f.read()


def parse_and_count(name):
    """Pure in its argument (stdlib files do not change): memoized by the demo."""
    tree = ast.parse(source(name))
    return sum(1 for _ in ast.walk(tree))


def unparse_roundtrip(name):
    tree = ast.parse(source(name))
    text = ast.unparse(tree)
    return len(text.splitlines())


def diff_pair(a, b):
    changed = 0
    for line in difflib.unified_diff(source(a).splitlines(), source(b).splitlines(), a, b, lineterm=""):
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
            changed += 1
    return changed


def json_roundtrip(obj, rounds):
    for _ in range(rounds):
        obj = json.loads(json.dumps(obj, sort_keys=True))
    return obj


def summarize(name):
    nodes = parse_and_count(name)
    lines = unparse_roundtrip(name)
    summary = {"file": name, "nodes": nodes, "lines": lines}  # demo-breakpoint
    return summary


def run(rounds=2):
    report = []
    for _ in range(rounds):
        for name in FILES:
            report.append(summarize(name))
        report.append({"diff": diff_pair("json/encoder.py", "json/decoder.py")})
    return json_roundtrip(report, 20)
