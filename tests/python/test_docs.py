"""test_docs.py: every code sample in docs/*.md and README.md is compiled or run against the built coextra.

THE CONVENTION (for whoever writes docs)
========================================

Samples are fenced blocks (```lang ... ```, also indented inside list items) in
docs/*.md and README.md.  The language tag decides what happens to a block:

```python
    Run in a FRESH interpreter (a subprocess of sys.executable; a block never
    sees another block's slots or hooks), in an empty temporary directory,
    with PYTHONPATH = <samples dir> + the inherited PYTHONPATH.  It must exit
    with status 0: write the claims of the text as `assert`s.

```c / ```cpp, classified by content, in this order:
    1. contains `PyInit_NAME(`: a complete extension module.  It is built with
       cc / c++ -shared into <samples dir>/NAME<EXT_SUFFIX> and imported (all
       modules in one subprocess).  Every python block of every doc can then
       `import NAME`, so module names must be unique across the docs (checked).
    2. contains an `#include` line: a complete translation unit, compiled with
       -fsyntax-only (the README's consumer sample is one).
    3. starts with the line `/* fragment */` (C or C++) or `// fragment`
       (C++): placed at file scope after `#include <coextra/coextra.h>` (C) or
       `#include <coextra/coextra.hpp>` (C++), compiled with -fsyntax-only.
    4. anything else FAILS (unclassified sample).
    Flags: -std=c11 / -std=c++17 -Wall -Wextra -Werror -Wno-unused-parameter
    -Wno-unused-function, -I coextra.get_include(), -I sysconfig include.

```sh
    Syntax-checked with `bash -n`.  The commands themselves (pip install of
    the template, pkg-config, meson) are exercised by
    tests/packaging/run_packaging.sh; here the template is built directly.

Other tags (text, toml, meson, ini, ...) and untagged blocks are not samples,
unless marked as excerpts (below).

Markers: an HTML comment on the line just before the opening fence.
    <!-- not-run: REASON -->   skip the block (a unittest skip naming REASON).
                               Use sparingly.
    <!-- excerpt: PATH -->     the block quotes the repository file PATH: its
                               non-blank lines must occur in PATH in this
                               order (whitespace-trimmed; a line `...` stands
                               for omitted lines).  Replaces the rule of its
                               tag.  examples/consumer_template/calltally.c,
                               which the walkthrough quotes, is itself built
                               and its smoke_test.py run by this file.

Also checked: relative links in the docs point to existing files, and their
#anchors to existing headings.

Environment: the `coextra` package must be importable (PYTHONPATH=build/py3.X),
and cc/c++ (or $CC/$CXX) must exist.  Everything is built, then run,
concurrently in setUpModule (about 5 s of CPU per version); the test methods
report the results.  COEXTRA_DOCS_KEEP=1 keeps the samples directory.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unittest

import coextra

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_FILES = sorted(
    [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")]
    if os.path.isdir(os.path.join(ROOT, "docs")) else []) + [os.path.join(ROOT, "README.md")]
TEMPLATE = os.path.join(ROOT, "examples", "consumer_template")

CC = os.environ.get("CC", "cc")
CXX = os.environ.get("CXX", "c++")
WARN = ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-Wno-unused-function"]
TIMEOUT = 120

FENCE = re.compile(r"^(\s*)```([A-Za-z0-9_+-]*)\s*$")   # also indented (inside list items)
MARKER = re.compile(r"^<!--\s*(not-run|excerpt)\s*:\s*(.*?)\s*-->\s*$")
PYINIT = re.compile(r"\bPyInit_([A-Za-z_][A-Za-z0-9_]*)\s*\(")
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)]*)?\)")


class Block:
    def __init__(self, path, line, lang, text, marker):
        self.path, self.line, self.lang, self.text, self.marker = path, line, lang, text, marker
        self.kind = None   # python | module | tu | fragment | sh | excerpt | skip | unclassified
        self.module = None
        self.classify()

    @property
    def where(self):
        return "%s:%d" % (os.path.relpath(self.path, ROOT), self.line)

    def classify(self):
        if self.marker and self.marker[0] == "not-run":
            self.kind = "skip"
        elif self.marker and self.marker[0] == "excerpt":
            self.kind = "excerpt"
        elif self.lang == "python":
            self.kind = "python"
        elif self.lang in ("c", "cpp"):
            m = PYINIT.search(self.text)
            first = self.text.lstrip().splitlines()[0].strip() if self.text.strip() else ""
            if m:
                self.kind, self.module = "module", m.group(1)
            elif re.search(r"^\s*#\s*include\b", self.text, re.M):
                self.kind = "tu"
            elif first == "/* fragment */" or (self.lang == "cpp" and first == "// fragment"):
                self.kind = "fragment"
            else:
                self.kind = "unclassified"
        elif self.lang == "sh":
            self.kind = "sh"


def parse(path):
    blocks = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = [l[len(indent):] if l.startswith(indent) else l.lstrip() for l in lines[start + 1:j]]
        marker = None
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0:
            mm = MARKER.match(lines[k].strip())
            if mm:
                marker = (mm.group(1), mm.group(2))
        b = Block(path, start + 1, lang, "\n".join(body) + "\n", marker)
        if b.kind is not None:
            blocks.append(b)
        i = j + 1
    return blocks


BLOCKS = [b for p in DOC_FILES for b in parse(p)]

# ---- building -----------------------------------------------------------------

_tmp = None        # the samples directory (PYTHONPATH for python blocks)
_results = {}      # id(block) or name -> (ok, output)


# Read once, before any thread starts: sysconfig's lazy initialisation is not thread-safe (3.10).
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
INCLUDES = ["-I" + coextra.get_include(), "-I" + sysconfig.get_paths()["include"]]


def include_flags():
    return INCLUDES


def compiler(lang):
    return ([CXX, "-std=c++17"] if lang == "cpp" else [CC, "-std=c11"]) + WARN + include_flags()


def run(cmd, **kw):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, **kw)
        return p.returncode == 0, p.stdout
    except subprocess.TimeoutExpired:
        return False, "timeout after %ds: %s" % (TIMEOUT, " ".join(cmd))
    except OSError as e:
        return False, "cannot run %s: %s" % (cmd[0], e)


def env_with_samples():
    env = dict(os.environ)
    # Absolute: the blocks run in a temporary directory.
    env["PYTHONPATH"] = os.pathsep.join([_tmp] + [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("PYTHONHOME", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def source_name(b, n):
    base = re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(os.path.basename(b.path))[0])
    return os.path.join(_tmp, "src", "%s_%d_%d.%s" % (base, b.line, n, "cpp" if b.lang == "cpp" else "c"))


def build_block(b, n):
    src = source_name(b, n)
    text = b.text
    if b.kind == "fragment":
        header = "coextra/coextra.hpp" if b.lang == "cpp" else "coextra/coextra.h"
        text = "#include <%s>\n#line %d \"%s\"\n%s" % (header, b.line + 1, b.where.split(":")[0], text)
    else:
        text = "#line %d \"%s\"\n%s" % (b.line + 1, b.where.split(":")[0], text)
    with open(src, "w") as f:
        f.write(text)
    if b.kind == "module":
        out = os.path.join(_tmp, b.module + EXT_SUFFIX)
        return run(compiler(b.lang) + ["-shared", "-fPIC", "-O1", src, "-o", out])
    return run(compiler(b.lang) + ["-fsyntax-only", src])


def build_template():
    out = os.path.join(_tmp, "calltally" + EXT_SUFFIX)
    return run(compiler("c") + ["-shared", "-fPIC", "-O1", os.path.join(TEMPLATE, "calltally.c"), "-o", out])


def setUpModule():
    global _tmp
    _tmp = tempfile.mkdtemp(prefix="coextra-docs-")
    if not os.environ.get("COEXTRA_DOCS_KEEP"):
        unittest.addModuleCleanup(shutil.rmtree, _tmp, True)   # runs even if setUpModule fails
    os.makedirs(os.path.join(_tmp, "src"))
    os.makedirs(os.path.join(_tmp, "cwd"))
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        for n, b in enumerate(BLOCKS):
            if b.kind in ("module", "tu", "fragment"):
                jobs[id(b)] = ex.submit(build_block, b, n)
        jobs["calltally"] = ex.submit(build_template)
        for k, fut in jobs.items():
            _results[k] = fut.result()
    # Then, concurrently: import every module that built (all in one interpreter), run every
    # python block (each in its own), and the template's smoke test.
    names = [b.module for b in BLOCKS if b.kind == "module" and _results[id(b)][0]]
    probe = ("import importlib, traceback\n"
             "for n in %r:\n"
             "    try:\n"
             "        importlib.import_module(n)\n"
             "    except BaseException:\n"
             "        print('IMPORT-FAILED', n)\n"
             "        traceback.print_exc()\n" % (names,))
    with open(os.path.join(TEMPLATE, "smoke_test.py")) as f:
        smoke = f.read()
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as ex:
        jobs["import"] = ex.submit(run_python, probe)
        if _results["calltally"][0]:
            jobs["smoke"] = ex.submit(run_python, smoke)
        for b in BLOCKS:
            if b.kind == "python":
                jobs[id(b)] = ex.submit(run_python, b.text)
        for k, fut in jobs.items():
            _results[k] = fut.result()
    ok, out = _results["import"]
    for b in BLOCKS:
        if b.kind == "module" and _results[id(b)][0]:
            failed = not ok or ("IMPORT-FAILED %s\n" % b.module) in out
            _results[id(b)] = (not failed, out if failed else "")


def run_python(code):
    return run([sys.executable, "-X", "faulthandler", "-c", code], env=env_with_samples(),
               cwd=os.path.join(_tmp, "cwd"))


def excerpt_ok(b):
    path = os.path.join(ROOT, b.marker[1])
    if not os.path.isfile(path):
        return False, "excerpt source %s does not exist" % b.marker[1]
    with open(path, encoding="utf-8") as f:
        src = [l.strip() for l in f.read().splitlines()]
    pos = 0
    for line in (l.strip() for l in b.text.splitlines()):
        if not line or line == "...":
            continue
        try:
            pos = src.index(line, pos) + 1
        except ValueError:
            return False, "line not found (in order) in %s: %r" % (b.marker[1], line)
    return True, ""


# ---- the tests -------------------------------------------------------------------

class DocSamples(unittest.TestCase):
    maxDiff = None

    def check_block(self, b):
        if b.kind == "skip":
            self.skipTest("%s: not-run: %s" % (b.where, b.marker[1]))
        if b.kind == "unclassified":
            self.fail("%s: a ```%s block that is neither a module (PyInit_), a translation unit (#include) "
                      "nor a `/* fragment */`" % (b.where, b.lang))
        if b.kind == "excerpt":
            ok, out = excerpt_ok(b)
        elif b.kind == "sh":
            ok, out = run(["bash", "-n"], input=b.text)
        else:
            ok, out = _results[id(b)]   # built / run in setUpModule
        self.assertTrue(ok, "%s (%s block) failed:\n%s\n--- block ---\n%s" % (b.where, b.kind, out, b.text))

    def test_module_names_unique(self):
        names = [b.module for b in BLOCKS if b.kind == "module"]
        self.assertEqual(sorted(set(names)), sorted(names))
        self.assertNotIn("calltally", names)

    def test_samples_exist(self):
        kinds = {}
        for b in BLOCKS:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        self.assertGreater(kinds.get("python", 0), 0, kinds)

    def test_template_calltally_builds_and_passes_its_smoke_test(self):
        ok, out = _results["calltally"]
        self.assertTrue(ok, out)
        ok, out = _results["smoke"]
        self.assertTrue(ok, out)
        self.assertIn("calltally OK", out)

    def test_relative_links(self):
        """Relative links (and their #anchors, GitHub-style) point to existing files and headings."""
        bad = []
        for path in DOC_FILES:
            with open(path, encoding="utf-8") as f:
                text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
            for m in LINK.finditer(text):
                target, anchor = m.group(1), (m.group(2) or "")[1:]
                if re.match(r"^[a-z]+:", target):
                    continue
                full = os.path.normpath(os.path.join(os.path.dirname(path), target))
                if not full.startswith(ROOT + os.sep):
                    continue  # outside the repository (e.g. the shared folder)
                if not os.path.exists(full):
                    bad.append("%s -> %s" % (os.path.relpath(path, ROOT), target))
                elif anchor and full.endswith(".md") and anchor not in anchors(full):
                    bad.append("%s -> %s#%s" % (os.path.relpath(path, ROOT), target, anchor))
            for m in re.finditer(r"\]\(#([^)]+)\)", text):
                if m.group(1) not in anchors(path):
                    bad.append("%s -> #%s" % (os.path.relpath(path, ROOT), m.group(1)))
        self.assertEqual(bad, [])


def anchors(path):
    """GitHub's heading ids: lower case, punctuation other than - and _ dropped, spaces to -."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    ids = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", text, re.M):
        ids.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return ids


def _add_tests():
    seen = set()
    for b in BLOCKS:
        base = re.sub(r"[^A-Za-z0-9]+", "_", os.path.relpath(b.path, ROOT)).strip("_")
        name = "test_%s_line%04d_%s" % (base, b.line, b.kind)
        assert name not in seen
        seen.add(name)
        setattr(DocSamples, name, lambda self, b=b: self.check_block(b))


_add_tests()

if __name__ == "__main__":
    unittest.main()
