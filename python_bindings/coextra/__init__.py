"""coextra: several tools sharing CPython's PEP 523 eval-frame hook and co_extra slots.

CPython gives each interpreter one eval-frame function and at most 254
co_extra indices that are never given back.  coextra owns both and multiplexes
them: tools reserve named per-code slots (``Slot``) and register hooks
(``add_hook``) that run as one ordered chain.
"""

import os as _os
from collections import namedtuple as _namedtuple

from . import _coextra
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
