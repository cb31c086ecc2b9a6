"""coextra_debugger: a pdb-compatible debugger whose breakpoints cost nothing outside the code that holds them.

`python -m coextra_debugger [-c command] script.py [args]` behaves like
`python -m pdb` (it runs pdb's own main() with this class): same commands,
same prompt "(Pdb) ", same output.  The difference is how the program runs
between stops.  pdb keeps sys.settrace() on as soon as any breakpoint exists,
so every call and line of the program pays for a Python-level trace
callback.  Here, while no stepping command is in progress:

* every code object that holds a breakpoint is *marked* in the debugger's
  coextra slot (native, see _debugger.c);
* one observer at COEXTRA_PRIORITY_DEBUGGER with `only` = that slot sees
  the frames of marked code, and no other frame, and the thread's trace
  function stays None.  On 3.12+ it runs on sys.monitoring local events of
  exactly the marked code objects, and coextra installs no eval-frame
  function at all: unmarked code runs as fast as without a debugger.
  Before 3.12 (or when no sys.monitoring tool id is free) it is a hook of
  the eval-frame chain, which the dispatcher skips for unmarked code;
* when a marked frame is entered, the observer calls `sys.settrace()`: in
  the chain before the frame's first instruction, so CPython sends the frame
  its 'call' event; on sys.monitoring inside the frame, at its PY_START, so
  the frame gets the f_trace that event would have given it.  Either way bdb
  traces it exactly as pdb would; when the outermost marked frame returns
  and no stepping command is in progress and no other marked frame is on the
  stack, tracing is switched off again.

While stepping (s, n, r, unt, and 3.13's si/ni) tracing is plain pdb tracing,
with one deliberate difference: the whole stack is given its f_trace (as
bdb.set_trace() does), so that stepping out of a marked frame stops in its
caller even though the caller started while tracing was off.  (pdb 3.13 does
this on return too; pdb 3.9-3.12 stop in the caller only if the caller had
been traced, i.e. its file held a breakpoint when it was called.)

Which code objects hold a breakpoint, and code first seen later:

* `b file:line`: every code object of that file whose own line table (co_lines
  on 3.10+, dis.findlinestarts on 3.9) contains the line: a line event can
  only happen there, and bdb stops only on line events.
* `b func`: the code objects of that file with that co_name whose
  co_firstlineno is the breakpoint's line (3.9-3.12 put it on the def line) or
  whose own lines contain it (3.13 puts it on the first executable line).
* Existing code is found when the breakpoint is set, by a scan over
  gc.get_objects() (functions -> __code__, generators and coroutines -> their
  code) plus every frame of every thread (sys._current_frames(): running
  module code, e.g. the script itself), walking nested code through
  co_consts.  Code objects are not GC-tracked, hence these roots.
* Code created AFTER the breakpoint was set (a module imported later, the
  script re-run by pdb's restart loop, exec/eval of new source) is caught by
  an audit hook (sys.addaudithook, PEP 578) on the "exec" event.  CPython
  raises it with the code object, before running it, from builtins.exec/eval
  and from PyRun_* (pythonrun.c run_mod), and importlib runs every module's
  code through exec (_bootstrap._call_with_frames_removed(exec, ...)), for
  source, .pyc and zip imports alike, with co_filename already fixed up.  The
  nested functions of that module are in its co_consts, so one walk marks
  them before any of them can run.  This needs no sys.meta_path or
  builtins.__import__ wrapper (which would miss importlib.import_module, runpy
  and exec), and costs one Python call per audit event (imports, open(),
  ...), never per Python call.  Audit hooks cannot be removed: it becomes a
  no-op when no breakpoint exists.
* Anything that still slips through (e.g. types.FunctionType over code from
  compile() that never went through exec) is marked when bdb sees it while
  tracing is on (break_anywhere below).

`cl`/`clear` (and a temporary breakpoint that fires) recompute the marks and
unmark code objects that no longer hold a breakpoint.

Marks live in CPython's per-code co_extra (through coextra), keyed by object
identity: code objects compare EQUAL by value, ignoring co_filename, so the
Python side never puts code objects in sets or dict keys.

In the chain, CPython 3.13 pushes the `__init__` frame of a specialized `Cls(...)` call
(CALL_ALLOC_AND_ENTER_INIT) without calling the eval-frame hook; on 3.13 the
marked code objects also get sys.monitoring PY_START/PY_RETURN local events
as a safety net (_InitGuard).

Limitations: one debugged thread (like pdb); a marked frame that is on the
stack (e.g. a breakpoint at module level of the running script) keeps
sys.settrace() on until it returns, since sys.settrace has no per-frame
switch; code never executed through exec/eval/import and never seen by a
scan or while tracing is not found.
"""

import bdb
import dis
import gc
import inspect
import os
import pdb
import sys
import threading
import types
import weakref

from . import _debugger

__all__ = ["Debugger", "main", "run", "runcall", "set_trace", "is_marked"]

_CODE = types.CodeType
_FUNCTION = types.FunctionType
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_GEN_CODE = {types.GeneratorType: "gi_code", types.CoroutineType: "cr_code",
             types.AsyncGeneratorType: "ag_code"}


def _own_lines(code):
    """Line numbers of code's own instructions (not of its nested code)."""
    if hasattr(code, "co_lines"):  # 3.10+
        return {line for _, _, line in code.co_lines() if line is not None}
    return {line for _, line in dis.findlinestarts(code)}


class _Marks:
    """Which code objects hold breakpoints.  Process-wide, like bdb.Breakpoint.bplist."""

    def __init__(self):
        self.codes = {}    # id(code) -> weakref.ref(code): never the code objects themselves as keys
        self.specs = {}    # canonic filename -> (plain lines, {(funcname, line)})
        self.fncache = {}
        self.enabled = False
        self.audit_hook = False

    def canonic(self, filename):
        # bdb.Bdb.canonic, which produced the filenames in Breakpoint.bplist
        if filename == "<" + filename[1:-1] + ">":
            return filename
        canonic = self.fncache.get(filename)
        if not canonic:
            canonic = os.path.normcase(os.path.abspath(filename))
            self.fncache[filename] = canonic
        return canonic

    def enable(self):
        if not self.audit_hook:
            sys.addaudithook(_audit)
            self.audit_hook = True
        if not self.enabled:  # breakpoints set before: mark their existing code now
            self.enabled = True
            self.refresh_specs()
            self.scan(list(self.specs))

    def refresh_specs(self):
        specs = {}
        for (filename, line), bps in list(bdb.Breakpoint.bplist.items()):
            for bp in bps:
                plain, funcs = specs.setdefault(filename, (set(), set()))
                if bp.funcname:
                    funcs.add((bp.funcname, line))
                else:
                    plain.add(line)
        self.specs = specs if self.enabled else {}

    @staticmethod
    def matches(code, spec):
        plain, funcs = spec
        lines = None
        for name, line in funcs:
            if code.co_name == name:
                if code.co_firstlineno == line:
                    return True
                if lines is None:
                    lines = _own_lines(code)
                if line in lines:
                    return True
        if plain:
            if lines is None:
                lines = _own_lines(code)
            return not plain.isdisjoint(lines)
        return False

    def mark(self, code):
        key = id(code)
        if key in self.codes:
            return
        _debugger.mark(code)
        _init_guard.watch(code)

        def gone(ref, key=key, codes=self.codes):
            if codes.get(key) is ref:
                del codes[key]

        self.codes[key] = weakref.ref(code, gone)

    def prune(self):
        """Unmark code that no longer holds a breakpoint."""
        for key, ref in list(self.codes.items()):
            code = ref()
            if code is None:
                continue
            spec = self.specs.get(self.canonic(code.co_filename))
            if spec is None or not self.matches(code, spec):
                _debugger.unmark(code)
                _init_guard.unwatch(code)
                self.codes.pop(key, None)

    def walk(self, roots, wanted):
        """Mark the code objects among roots and their nested code that match wanted."""
        seen = set()
        stack = [c for c in roots if self.canonic(c.co_filename) in wanted]
        while stack:
            code = stack.pop()
            if id(code) in seen:
                continue
            seen.add(id(code))
            spec = wanted.get(self.canonic(code.co_filename))
            if spec is not None and self.matches(code, spec):
                self.mark(code)
            for const in code.co_consts:
                if type(const) is _CODE:
                    stack.append(const)

    def scan(self, filenames):
        """Find the existing code objects of these files (code objects are not
        GC-tracked: reach them through functions, generators and frames)."""
        wanted = {f: self.specs[f] for f in filenames if f in self.specs}
        if not wanted:
            return
        roots = []
        for obj in gc.get_objects():
            t = type(obj)
            if t is _FUNCTION:
                roots.append(obj.__code__)
            elif t in _GEN_CODE:
                roots.append(getattr(obj, _GEN_CODE[t]))
        for frame in sys._current_frames().values():
            while frame is not None:
                roots.append(frame.f_code)
                frame = frame.f_back
        self.walk(roots, wanted)

    def changed(self, added=None):
        """Breakpoints were added (in file `added`) or removed: update the marks."""
        self.refresh_specs()
        self.prune()
        if added is not None:
            self.scan([added])

    def on_exec(self, code):
        if self.canonic(code.co_filename) in self.specs:
            self.walk([code], self.specs)

    def clear(self):
        self.enabled = False
        self.specs = {}
        self.codes.clear()
        _init_guard.close()


class _InitGuard:
    """CPython 3.13 only: catch marked frames that bypass the eval-frame hook.

    3.13's CALL_ALLOC_AND_ENTER_INIT (a specialized `Cls(...)` call) pushes
    the `__init__` frame inline with no PEP 523 check (fixed in 3.14), so
    once a call site has specialized the hook never sees that `__init__`.
    For marked code we therefore also ask sys.monitoring (PEP 669) for
    PY_START/PY_RETURN as LOCAL events: only those code objects are
    instrumented, everything else keeps running untouched.  PY_START fires in
    the frame's INSTRUMENTED_RESUME: if the hook has not switched tracing on
    already, do it here and give the frame the f_trace that its missed 'call'
    event would have given it (sys.settrace re-instruments executing code, so
    its LINE events follow).  Monitoring callbacks run with tstate->tracing
    raised, so they are never traced themselves.
    """

    def __init__(self):
        self.enabled = sys.version_info[:2] == (3, 13) and hasattr(sys, "monitoring")
        self.tool = None
        self.frames = []  # frames whose tracing was switched on here, not by the hook

    def _tool(self):
        if self.tool is None:
            mon = sys.monitoring
            for tool in (mon.DEBUGGER_ID, 1, 2, 3, 4, 5):
                if mon.get_tool(tool) is None:
                    mon.use_tool_id(tool, "coextra_debugger")
                    mon.register_callback(tool, mon.events.PY_START, self.on_start)
                    mon.register_callback(tool, mon.events.PY_RETURN, self.on_return)
                    self.tool = tool
                    break
        return self.tool

    def watch(self, code):
        # An observer on sys.monitoring sees those frames anyway (its events
        # fire inside the frame, whatever pushed it): needed only in the chain.
        if _debugger.stats()["monitored"]:
            return
        if self.enabled and not code.co_flags & _GENERATOR_FLAGS and self._tool() is not None:
            ev = sys.monitoring.events
            sys.monitoring.set_local_events(self.tool, code, ev.PY_START | ev.PY_RETURN)

    def unwatch(self, code):
        if self.tool is not None:
            sys.monitoring.set_local_events(self.tool, code, 0)

    def on_start(self, code, offset):
        dbg = _attached[-1] if _attached else None
        if (dbg is None or dbg.quitting or sys.gettrace() is dbg.trace_dispatch
                or dbg._thread != threading.get_ident()):
            return  # the normal path: the hook already did it (or not ours to debug)
        frame = sys._getframe(1)
        if frame.f_code is not code:
            return
        dbg._on_enter()
        frame.f_trace = dbg.trace_dispatch
        self.frames.append(frame)

    def on_return(self, code, offset, retval):
        if not self.frames:
            return
        frame = sys._getframe(1)
        for i, f in enumerate(self.frames):
            if f is frame:
                del self.frames[i]
                dbg = _attached[-1] if _attached else None
                if dbg is not None:
                    dbg._on_exit(frame.f_back)
                return

    def close(self):
        self.frames = []
        if self.tool is not None:
            sys.monitoring.free_tool_id(self.tool)  # also drops its local events
            self.tool = None


# 3.14+: bdb.Bdb(backend='settrace' | 'monitoring').  (Asked of bdb, not of
# pdb.Pdb, which main() below replaces with Debugger.)
_BDB_HAS_BACKENDS = "backend" in inspect.signature(bdb.Bdb.__init__).parameters
_init_guard = _InitGuard()
_marks = _Marks()


def _audit(event, args):
    # PEP 578 audit hook (permanent once added).  "exec" carries the code
    # object about to run: module code on import, exec()/eval() of code, the
    # script run by pdb.  Everything else returns at the first comparison.
    if event == "exec" and _marks.specs:
        code = args[0] if args else None
        if type(code) is _CODE:
            try:
                _marks.on_exec(code)
            except Exception:  # an audit hook that raises would abort the import
                pass


def is_marked(code):
    """True if frames of this code object reach the debugger's hook (it holds a breakpoint)."""
    return _debugger.is_marked(code)


_attached = []  # debuggers owning the hook, innermost last (pdb's `debug` command nests one)


class Debugger(pdb.Pdb):
    """pdb.Pdb whose breakpoints are watched by a coextra hook instead of a global trace function."""

    def __init__(self, *args, **kwargs):
        if _BDB_HAS_BACKENDS:
            # 3.14+: pdb can trace through sys.settrace or sys.monitoring, and
            # its main() asks for 'monitoring'.  This debugger's stops come
            # from turning sys.settrace on for marked frames: the settrace
            # backend is the one it drives (with 'monitoring' as well, every
            # event would reach bdb twice).
            kwargs["backend"] = "settrace"
        super().__init__(*args, **kwargs)
        # A bound method is a new object on every attribute access.  Pin one:
        # bdb installs `self.trace_dispatch` with sys.settrace, and the native
        # hook compares the thread's trace object (tstate->c_traceobj) with it
        # by identity.
        self.trace_dispatch = self.trace_dispatch
        self._interacting = 0
        self._stop_frame = None
        self._stale_trace = None
        self._thread = None

    # ---- the hook ---------------------------------------------------------

    def _attach(self):
        _marks.enable()
        if self in _attached:
            _attached.remove(self)
        _attached.append(self)
        self._thread = threading.get_ident()
        _debugger.install(self._on_enter, self._on_exit, self.trace_dispatch, self._thread)

    def _detach(self):
        self._stale_trace = None
        if self in _attached:
            _attached.remove(self)
        if _attached:
            outer = _attached[-1]
            _debugger.install(outer._on_enter, outer._on_exit, outer.trace_dispatch, outer._thread)
        else:
            # Inactive: coextra takes its dispatcher out when no hook is
            # active, so the interpreter runs with no eval-frame function.
            _debugger.set_active(False)

    def _on_enter(self, frame=None):
        # Called by the observer (native) when a frame of marked code starts
        # or resumes on the debugged thread while that thread's trace function
        # is not ours.  In the eval-frame chain the frame has not executed its
        # first instruction, so turning tracing on now gives it the 'call'
        # event (see _debugger.c).  On sys.monitoring (3.12+) it is already
        # running (`frame`): it gets the f_trace that event would have given.
        if self.quitting or self.botframe is None:
            # No live session: it ended (bdb.run returned, a nested `debug`
            # session finished), or reset() came from a post-mortem.
            # (Within a session botframe is set by the first 'call' event,
            # before any program code runs.)  Release the hook lazily and hand
            # over to an outer session if there is one.
            self._detach()
            if _attached:
                _attached[-1]._on_enter(frame)
            return
        stale, self._stale_trace = self._stale_trace, None
        if stale is not None:
            stale.f_trace = None  # see set_continue
        sys.settrace(self.trace_dispatch)
        if frame is not None:
            frame.f_trace = self.trace_dispatch

    def _on_exit(self, frame=None):
        # Called by the observer after the outermost marked frame (entered
        # through it) returned, tracing still ours, with the frame control
        # returns to (False: none; None: in the chain, where sys._getframe(1)
        # is that frame's caller).
        if self._interacting or not self._continuing():
            return
        if frame is None:
            frame = sys._getframe(1)
        elif frame is False:
            frame = None
        while frame is not None and frame is not self.botframe:
            if _debugger.is_marked(frame.f_code):
                # Marked code still on the stack (e.g. the script's module
                # level): it needs line events when control returns to it.
                if frame.f_trace is None:
                    frame.f_trace = self.trace_dispatch
                return
            frame = frame.f_back
        sys.settrace(None)

    def _continuing(self):
        # bdb's "continue" state (set_continue): stop only at breakpoints.
        return self.stopframe is self.botframe and self.stoplineno == -1 and self.returnframe is None

    # ---- running ----------------------------------------------------------

    # Every session starts with reset(): bdb.run/runeval/runcall and
    # set_trace call it first (pdb's restart loop calls run() again).  Hooking
    # reset() rather than wrapping run() keeps the stack and tracebacks
    # exactly pdb's (no extra frame between pdb._run and bdb.run).  The hook
    # is released by set_quit(), by the first marked frame after the session
    # ended (_on_enter), by detach(), and at the end of main().
    def reset(self):
        super().reset()
        self._attach()

    def runeval(self, expr, globals=None, locals=None):
        try:
            return super().runeval(expr, globals, locals)
        finally:
            self._detach()

    def runcall(self, func, /, *args, **kwds):
        try:
            return super().runcall(func, *args, **kwds)
        finally:
            self._detach()

    def set_trace(self, frame=None):
        if frame is None:
            frame = sys._getframe().f_back
        super().set_trace(frame)

    def attach(self):
        """Watch the breakpoints from now on without stopping: the program
        keeps running with no trace function until marked code runs."""
        self.reset()  # attaches
        frame = sys._getframe()
        while frame.f_back is not None:
            frame = frame.f_back
        self.botframe = frame  # bdb's dispatch_call would otherwise adopt the first traced frame's caller
        self._set_stopinfo(self.botframe, None, -1)

    def detach(self):
        """Stop watching (the hook goes inactive; breakpoints stay)."""
        if sys.gettrace() is self.trace_dispatch:
            sys.settrace(None)
        self._detach()

    start = attach  # aliases for embedders (e.g. bench/bench_one.py)
    stop = detach

    def set_quit(self):
        super().set_quit()
        self._detach()

    # ---- stepping / continuing --------------------------------------------

    def interaction(self, frame, *args, **kwargs):
        self._interacting += 1
        self._stop_frame = frame
        try:
            return super().interaction(frame, *args, **kwargs)
        finally:
            self._interacting -= 1
            self._stop_frame = None

    def _trace_stack(self):
        # Stepping: plain pdb tracing, with every frame of the stack traced
        # (frames that started while tracing was off have no f_trace; a line
        # event is only delivered to frames whose f_trace is set).
        frame = self._stop_frame
        if frame is None:  # set_trace() (bdb does it all) or post-mortem (no live frames)
            return
        while frame is not None and frame is not self.botframe:
            if frame.f_trace is None:
                frame.f_trace = self.trace_dispatch
            frame = frame.f_back
        if sys.gettrace() is not self.trace_dispatch:
            sys.settrace(self.trace_dispatch)

    def set_step(self):
        super().set_step()
        self._trace_stack()

    if hasattr(bdb.Bdb, "set_stepinstr"):  # 3.13
        def set_stepinstr(self):
            super().set_stepinstr()
            self._trace_stack()

    def set_next(self, frame):
        super().set_next(frame)
        self._trace_stack()

    def set_return(self, frame):
        super().set_return(frame)
        self._trace_stack()

    def set_until(self, frame, lineno=None):
        super().set_until(frame, lineno)
        self._trace_stack()

    def set_continue(self):
        super().set_continue()  # no breakpoints at all: bdb already turned tracing off
        if not self.breaks:
            return
        # Keep tracing only for marked frames on the stack (control comes
        # back to them); everything else runs untraced, and marked code
        # entered later switches tracing back on through the hook.
        live = False
        frame = sys._getframe().f_back
        while frame is not None and frame is not self.botframe:
            if _debugger.is_marked(frame.f_code):
                frame.f_trace = self.trace_dispatch
                live = True
            elif frame.f_trace is not None:
                del frame.f_trace
            frame = frame.f_back
        if not live:
            sys.settrace(None)
            # The frame we stopped in gets its f_trace back from CPython's
            # trace trampoline when this trace callback returns (it stores the
            # callback's result).  Left there it would be stale: on 3.9,
            # frame.f_lineno of a frame with f_trace is the line of its last
            # line EVENT, so `bt` at the next stop would show an old line.
            # Drop it when tracing comes back on.
            stop = self._stop_frame
            if stop is not None and not _debugger.is_marked(stop.f_code):
                self._stale_trace = stop

    def break_anywhere(self, frame):
        # bdb: trace a new frame if its FILE holds a breakpoint.  We know the
        # exact code objects.  Code that escaped the scans and exec events is
        # recognised (and marked) here, while tracing is on anyway.
        code = frame.f_code
        if _debugger.is_marked(code):
            return True
        spec = _marks.specs.get(_marks.canonic(code.co_filename))
        if spec is not None and _marks.matches(code, spec):
            _marks.mark(code)
            return True
        return False

    # ---- breakpoints: keep the marks in step --------------------------------

    def set_break(self, filename, lineno, temporary=False, cond=None, funcname=None):
        err = super().set_break(filename, lineno, temporary, cond, funcname)
        if err is None:
            _marks.changed(added=self.canonic(filename))
        return err

    def clear_break(self, filename, lineno):
        err = super().clear_break(filename, lineno)
        _marks.changed()
        return err

    def clear_bpbynumber(self, arg):
        err = super().clear_bpbynumber(arg)
        _marks.changed()
        return err

    def clear_all_file_breaks(self, filename):
        err = super().clear_all_file_breaks(filename)
        _marks.changed()
        return err

    def clear_all_breaks(self):
        err = super().clear_all_breaks()
        _marks.changed()
        return err


def _shutdown():
    """Remove the hook and release the slot (all marks go with it)."""
    del _attached[:]
    _marks.clear()
    _debugger.uninstall()


def run(statement, globals=None, locals=None):
    """Like pdb.run()."""
    dbg = Debugger()
    try:
        dbg.run(statement, globals, locals)
    finally:
        dbg.detach()


def runcall(*args, **kwds):
    """Like pdb.runcall()."""
    return Debugger().runcall(*args, **kwds)


def set_trace(*, header=None):
    """Like pdb.set_trace() / breakpoint()."""
    dbg = Debugger()
    if header is not None:
        dbg.message(header)
    dbg.set_trace(sys._getframe().f_back)


def main():
    """`python -m coextra_debugger`: pdb's own main() (options, restart loop,
    post-mortem) with this debugger in place of pdb.Pdb."""
    saved = pdb.Pdb
    pdb.Pdb = Debugger  # pdb.main() instantiates the module global `Pdb` (3.9-3.13)
    try:
        pdb.main()
    finally:
        pdb.Pdb = saved
        _shutdown()
