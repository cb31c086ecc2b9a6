"""coextra_profiler: a deterministic profiler (cProfile-compatible output) that shares the interpreter through coextra.

Per-code statistics live in a coextra slot of the profiler; timing goes
through an eval-frame hook at ``coextra.PRIORITY_PROFILER``, so it coexists
with a debugger, a JIT or any other coextra tool in the same process::

    import coextra_profiler
    with coextra_profiler.Profile() as prof:
        work()
    prof.print_stats("cumulative")      # or pstats.Stats(prof), prof.dump_stats(path)

Call counts are counted as cProfile counts them (``ncalls`` shows
``total/primitive`` for recursion; each generator or coroutine resumption,
including ``throw()`` and ``close()``, is a call), times as ``tottime`` and
``cumtime``, and callers per (caller, callee) pair.

Differences from cProfile:

* Only Python code is seen.  C functions and builtins (``len``, ``sorted``,
  methods of built-in types...) never go through the eval-frame hook, so they
  have no row and their time is the calling Python function's own time.
  Callers are the calling *Python* function (cProfile would name e.g.
  ``builtins.next`` as a generator's caller).
* The frames already running when ``enable()`` is called (typically the
  function that calls it) are not profiled; functions they call are, with no
  caller.  Frames still running at ``disable()`` on the calling thread are
  counted up to that moment, as cProfile does.
* All threads are profiled, each with its own call stack.
* On CPython 3.13 a specialised ``Class(...)`` call enters ``__init__``
  without the eval-frame hook (a CPython bug, fixed in 3.14), so ``__init__``
  methods are under-counted there.
* One ``Profile`` may be enabled at a time (ValueError otherwise).
"""

import marshal as _marshal
import sys as _sys

from ._profiler import Profiler as _Profiler
from ._profiler import enabled_profiler

__all__ = ["Profile", "run", "runctx", "enabled_profiler", "main"]


def label(code):
    """The pstats key of a code object: (filename, firstlineno, name)."""
    return (code.co_filename, code.co_firstlineno, code.co_name)


class Profile(_Profiler):
    """Profile() -> profiler; enable()/disable()/clear()/getstats() come from the C engine.

    Usable as a context manager (enables on enter, disables on exit) and with
    ``pstats.Stats(profile)``.  The coextra slot holding the per-code
    statistics is reserved on the first ``enable()`` and released when the
    Profile is dropped; ``disable()`` only removes the hook.
    """

    def __init__(self, *args, **kwargs):
        # cProfile.Profile(timer=None, timeunit=0.0, subcalls=True, builtins=True): accepted, ignored.
        super().__init__()
        self.stats = {}

    # -- cProfile.Profile's Python layer -----------------------------------

    def print_stats(self, sort=-1):
        import pstats
        pstats.Stats(self).strip_dirs().sort_stats(sort).print_stats()

    def dump_stats(self, file):
        with open(file, "wb") as f:
            self.create_stats()
            _marshal.dump(self.stats, f)

    def create_stats(self):
        self.disable()
        self.snapshot_stats()

    def snapshot_stats(self):
        """Fill self.stats: {label: (cc, nc, tt, ct, {caller_label: (nc, cc, tt, ct)})}.

        The same shape cProfile produces (including its (nc, cc, ...) order in
        the callers' tuples, which pstats relies on).  Code objects sharing a
        label are merged.
        """
        stats = {}
        for lab, nc, reccc, it, tt, callers in self.getstats():
            cc = nc - reccc
            if lab in stats:
                pcc, pnc, ptt, pct, pcallers = stats[lab]
                cc, nc, it, tt = cc + pcc, nc + pnc, it + ptt, tt + pct
            else:
                pcallers = {}
            for clab, cnc, creccc, cit, ctt in callers:
                ccc = cnc - creccc
                if clab in pcallers:
                    p = pcallers[clab]
                    cnc, ccc, cit, ctt = cnc + p[0], ccc + p[1], cit + p[2], ctt + p[3]
                pcallers[clab] = (cnc, ccc, cit, ctt)
            stats[lab] = (cc, nc, it, tt, pcallers)
        self.stats = stats

    def run(self, cmd):
        import __main__
        d = __main__.__dict__
        return self.runctx(cmd, d, d)

    def runctx(self, cmd, globals, locals):
        self.enable()
        try:
            exec(cmd, globals, locals)
        finally:
            self.disable()
        return self

    def runcall(self, func, /, *args, **kw):
        self.enable()
        try:
            return func(*args, **kw)
        finally:
            self.disable()


def run(statement, filename=None, sort=-1):
    """Like cProfile.run: profile exec(statement) in __main__, then print or dump the stats."""
    import __main__
    runctx(statement, __main__.__dict__, __main__.__dict__, filename, sort)


def runctx(statement, globals, locals, filename=None, sort=-1):
    """Like cProfile.runctx."""
    prof = Profile()
    try:
        prof.runctx(statement, globals, locals)
    except SystemExit:
        pass
    finally:
        if filename is not None:
            prof.dump_stats(filename)
        else:
            prof.print_stats(sort)


def main(argv=None):
    """``python -m coextra_profiler [-o output_file] [-s sort] [-m module | scriptfile] [arg] ...``"""
    import importlib.machinery
    import io
    import optparse
    import os
    import pstats
    import runpy

    usage = "python -m coextra_profiler [-o output_file_path] [-s sort] [-m module | scriptfile] [arg] ..."
    parser = optparse.OptionParser(usage=usage)
    parser.allow_interspersed_args = False
    parser.add_option("-o", "--outfile", dest="outfile", help="Save stats to <outfile>", default=None)
    parser.add_option("-s", "--sort", dest="sort",
                      help="Sort order when printing to stdout, based on pstats.Stats class", default=-1,
                      choices=sorted(pstats.Stats.sort_arg_dict_default))
    parser.add_option("-m", dest="module", action="store_true",
                      help="Profile a library module", default=False)

    argv = _sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_usage()
        _sys.exit(2)
    options, args = parser.parse_args(argv)
    _sys.argv[:] = args
    if options.outfile is not None:
        options.outfile = os.path.abspath(options.outfile)

    if len(args) > 0:
        if options.module:
            code = "run_module(modname, run_name='__main__', alter_sys=True)"
            globs = {"run_module": runpy.run_module, "modname": args[0]}
        else:
            progname = args[0]
            _sys.path.insert(0, os.path.dirname(progname))
            with io.open_code(progname) as fp:
                code = compile(fp.read(), progname, "exec")
            spec = importlib.machinery.ModuleSpec(name="__main__", loader=None, origin=progname)
            globs = {
                "__spec__": spec,
                "__file__": spec.origin,
                "__name__": spec.name,
                "__package__": None,
                "__cached__": None,
            }
        try:
            runctx(code, globs, None, options.outfile, options.sort)
        except BrokenPipeError as exc:
            # Prevent "Exception ignored" during interpreter shutdown.
            _sys.stdout = None
            _sys.exit(exc.errno)
    else:
        parser.print_usage()
    return parser
