"""realtools.py: shared fixtures of the real-tools suite (no tests of its own).

- Which real tools Debian sid ships for the running Python (`shipped`,
  `require`): read from dpkg's file lists, never guessed, so that a tool sid
  ships but that does not import is a failure, and one it does not ship is
  a skip that says so.
- `CoextraTools`: coextra's example tools running at once, as a user would
  have them: the profiler (coextra_profiler), the debugger (coextra_debugger)
  with a breakpoint in `workload.cold`, which never runs, the memoizer
  (coextra_memo) on `workload.lookup`, and a Python observer
  (coextra.add_hook with on_enter/on_exit).  Its `results()` are what must
  not change when another tool runs beside them.
"""

import collections
import importlib
import importlib.machinery
import io
import os
import sys
import unittest

import coextra

import workload

# tool -> (Debian package, module to import)
TOOLS = {
    "coverage": ("python3-coverage", "coverage"),
    "line_profiler": ("python3-line-profiler", "line_profiler"),
    "yappi": ("python3-yappi", "yappi"),
    "pyinstrument": ("python3-pyinstrument", "pyinstrument"),
    "torch": ("python3-torch", "torch"),
}

DPKG_INFO = "/var/lib/dpkg/info"
PY = "%d.%d" % sys.version_info[:2]


def debian_python():
    """True for a Debian-packaged interpreter (the sid root's), whose dist-packages hold the tools."""
    return sys.prefix == "/usr" and os.path.isdir(DPKG_INFO) and os.path.isdir("/usr/lib/python3/dist-packages")


def package_files(package):
    """The files dpkg installed for `package`, or None if it is not installed."""
    for name in (package + ".list", package + ":amd64.list"):
        path = os.path.join(DPKG_INFO, name)
        if os.path.exists(path):
            with open(path) as f:
                return [line.strip() for line in f if line.strip()]
    return None


def version_suffixes():
    """Extension-module suffixes that name this Python's version (not the bare '.so' any library ends in)."""
    return tuple(s for s in importlib.machinery.EXTENSION_SUFFIXES if "cpython-" in s)


def shipped(tool):
    """(True, why) if sid ships `tool` built for this Python, else (False, why).

    Every tool here has compiled parts: sid ships a tool for a Python when its
    package holds an extension module for that Python's version.  A package
    that is not installed at all is reported as shipped-but-missing by
    `require` (tools/sidroot.sh ensure installs it)."""
    package = TOOLS[tool][0]
    if not debian_python():
        return False, "not Debian's interpreter (the real tools are Debian sid's packages: run in the sid root)"
    files = package_files(package)
    if files is None:
        return True, "%s is not installed in the sid root (tools/sidroot.sh ensure installs it)" % package
    suffixes = version_suffixes()
    if any(f.endswith(suffixes) for f in files):
        return True, "%s ships a build for Python %s" % (package, PY)
    return False, "sid's %s ships no build for Python %s" % (package, PY)


def require(tool):
    """Import and return the tool's module.  SkipTest (naming why) only when sid ships no build for
    this Python; a tool that sid ships but that is missing or does not import raises (a failure)."""
    ok, why = shipped(tool)
    if not ok:
        raise unittest.SkipTest(why)
    if package_files(TOOLS[tool][0]) is None:
        raise AssertionError(why)
    return importlib.import_module(TOOLS[tool][1])


def label(code):
    """coextra_profiler's (and pstats') key of a code object."""
    return (code.co_filename, code.co_firstlineno, code.co_name)


class CoextraTools:
    """coextra's profiler, debugger (cold breakpoint), memoizer and a Python observer, together."""

    def __init__(self, name="real_tools"):
        import coextra_debugger
        import coextra_memo
        import coextra_profiler
        from coextra_debugger import _debugger
        self.coextra_profiler, self.coextra_memo = coextra_profiler, coextra_memo
        self.coextra_debugger, self._debugger = coextra_debugger, _debugger
        self.name = name
        self.running = False

    def start(self, memo=True):
        """Start every tool; memo=False leaves the memoizer to a later memoize()."""
        self.out = io.StringIO()
        self.dbg = self.coextra_debugger.Debugger(stdin=io.StringIO(""), stdout=self.out, nosigint=True,
                                                  readrc=False)
        cold = workload.cold.__code__
        err = self.dbg.set_break(cold.co_filename, cold.co_firstlineno + 1)
        assert err is None, err
        self.dbg.attach()
        assert self.coextra_debugger.is_marked(workload.cold.__code__)
        self.debugger_frames0 = self._debugger.stats()["frames"]
        self.memo_code = None
        if memo:
            self.memoize()
        self.entered, self.exited = [], []
        # C callables as callbacks: no Python frame of their own for the other tools to see.
        self.observer = coextra.add_hook(self.name + ".observer", on_enter=self.entered.append,
                                         on_exit=self.exited.append)
        self.prof = self.coextra_profiler.Profile()
        self.prof.enable()
        self.running = True

    def memoize(self):
        self.coextra_memo.memoize(workload.lookup)
        self.memo_code = workload.lookup.__code__

    def stop(self):
        """Stop everything; keep the results."""
        self.running = False
        self.prof.disable()
        self.prof.create_stats()
        self.observer.remove()
        self.memo = None
        if self.memo_code is not None:
            # coextra_memo finds its entry through fn.__code__.  A tool that gave
            # the function a new code object since (line_profiler does) left the
            # entry on the old one: reach it there, only to read and drop it.
            current = workload.lookup.__code__
            workload.lookup.__code__ = self.memo_code
            try:
                self.memo = self.coextra_memo.stats(workload.lookup)
                self.coextra_memo.unmemoize(workload.lookup)
            finally:
                workload.lookup.__code__ = current
        self.debugger_frames = self._debugger.stats()["frames"] - self.debugger_frames0
        self.debugger_trace = sys.gettrace()
        self.dbg.clear_all_breaks()
        self.dbg.detach()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self.running:
            self.stop()
        return False

    def results(self):
        """What coextra's tools found, by workload function: comparable across runs."""
        codes = {id(f.__code__): name for name, f in workload.FUNCTIONS.items()}
        labels = {label(f.__code__): name for name, f in workload.FUNCTIONS.items()}
        enters = collections.Counter(codes[id(c)] for c in self.entered if id(c) in codes)
        exits = collections.Counter(codes[id(c)] for c in self.exited if id(c) in codes)
        profiled = {labels[k]: v[:2] for k, v in self.prof.stats.items() if k in labels}
        return {
            "profiler (primitive, total calls)": profiled,
            "observer enters": dict(enters),
            "observer exits": dict(exits),
            "memo (hits, misses)": self.memo,
            "debugger frames": self.debugger_frames,
            "debugger output": self.out.getvalue(),
            "trace function left": self.debugger_trace,
        }


def coextra_idle():
    """coextra back to idle: no active hook, no eval-frame function of its own.  (A detached
    coextra_debugger keeps its hook registered, inactive.)"""
    st = coextra.status()
    return (not st.installed and not st.displaced and st.active_hooks == 0
            and not [h for h in coextra.hooks() if h.active])
