"""coextra: several tools sharing CPython's PEP 523 eval-frame hook and co_extra slots.

CPython gives each interpreter one eval-frame function and at most 254
co_extra indices that are never given back.  coextra owns both and multiplexes
them: tools reserve named per-code slots (``Slot``) and register hooks
(``add_hook``) that run as one ordered chain.
"""

import os as _os
import sys as _sys
from collections import namedtuple as _namedtuple


def _wrong_interpreter():
    """An ImportError naming both Pythons if this package holds only extensions
    built for other interpreters, else None.  Without it, importing a tree built
    for another Python fails with CPython's "cannot import name '_coextra' from
    partially initialized module", which names neither."""
    import importlib.machinery
    import re
    here = _os.path.dirname(_os.path.abspath(__file__))
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    try:
        names = sorted(n for n in _os.listdir(here) if n.startswith("_coextra.") and n.endswith((".so", ".pyd")))
    except OSError:
        return None
    if not names or any(n[len("_coextra"):] in suffixes for n in names):
        return None  # a loadable one exists: its own error is the one to see

    def describe(name):
        # cpython-312-x86_64-linux-gnu / cp312-win_amd64; d = debug, t = free-threaded (3.13+)
        m = re.search(r"\.(?:cpython-|cp)(\d)(\d+)([a-z]*)", name)
        if not m:
            return name
        flags = {"d": " (debug build)", "t": " (free-threaded)", "td": " (free-threaded debug build)"}
        return "CPython %s.%s%s (%s)" % (m[1], m[2], flags.get(m[3], m[3]), name)

    v = _sys.version_info
    return ImportError(
        "coextra: this coextra was built for %s, but this is CPython %d.%d.%d%s (%s), which loads "
        "extensions named _coextra%s: build coextra for this Python (meson setup -Dpython=%s), or "
        "run the Python it was built for" % (
            " and ".join(describe(n) for n in names), v[0], v[1], v[2], getattr(_sys, "abiflags", ""),
            _sys.executable, suffixes[0], _sys.executable),
        name="coextra", path=here)


try:
    from . import _coextra
except ImportError:
    _err = _wrong_interpreter()
    if _err is None:
        raise
    raise _err from None
from ._coextra import (
    ABI_VERSION,
    PRIORITY_DEBUGGER,
    PRIORITY_DEFAULT,
    PRIORITY_OPTIMIZER,
    PRIORITY_PROFILER,
    Hook,
    ReleasedError,
    Slot,
    __version__,
    add_hook,
)

__all__ = [
    "ABI_VERSION", "PRIORITY_DEBUGGER", "PRIORITY_DEFAULT", "PRIORITY_OPTIMIZER", "PRIORITY_PROFILER",
    "Hook", "HookInfo", "ReleasedError", "Slot", "SlotInfo", "Status", "__version__", "add_hook",
    "get_include", "hooks", "slots", "status",
]

SlotInfo = _namedtuple("SlotInfo", "name index live native")
HookInfo = _namedtuple("HookInfo", "name priority active native")
Status = _namedtuple("Status", "installed displaced foreign_tail active_hooks co_extra_index "
                               "monitoring_tool_id observers")


def _as_named(tuples, cls):
    # In place, growing no list: under allocation failure a 3.14 debug build
    # asserts on the failure path of a list append in the evaluator
    # (LIST_APPEND, or list.append specialised: the item is dropped with the
    # frame's stack pointer not spilled), and on 3.9 list(map(...)) can fail
    # without setting an exception.
    for i, t in enumerate(tuples):
        tuples[i] = cls(*t)
    return tuples


def slots():
    """The live slots of this interpreter (Python and native), by index."""
    return _as_named(_coextra._slots(), SlotInfo)


def hooks():
    """The live hooks of this interpreter, outermost (lowest priority) first."""
    return _as_named(_coextra._hooks(), HookInfo)


def status():
    """Whether coextra's dispatcher is the interpreter's eval-frame function, etc.

    installed:      the interpreter's eval-frame function is coextra's dispatcher
    displaced:      coextra installed it, but another tool has replaced it since
    foreign_tail:   the chain ends in another tool's eval-frame function, not CPython's
    active_hooks:   number of hooks in the active chain
    co_extra_index: the one co_extra index coextra holds (None before the first value)
    monitoring_tool_id: the sys.monitoring tool id coextra holds for observers that
                    run on sys.monitoring (3.12+, hooks with `only`), or None
    observers:      number of active observers (hooks that only watch: every Python
                    hook), whichever mechanism runs them
    """
    return Status(*_coextra._status())


def get_include():
    """Directory to add to the include path to build against <coextra/coextra.h>."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    return _os.path.join(here, "include")
