"""test_chain_helpers.py: shared fixtures of the chain tests (no tests of its own).

Conventions of the chain suites:
- Hooks are added through ChainTestCase.add_hook / add_native, which register
  cleanups; the last cleanup checks that coextra is idle again (no active hook,
  the interpreter's eval-frame function is CPython's default), so a test that
  leaks a hook or a pointer fails where it happens, not in the next test.
- Counting callbacks are C callables (list.append) wherever a Python function
  would itself produce frames that other hooks see.
"""

import gc
import os
import sys
import unittest

import coextra
import coextra_test_foreign as foreign
import coextra_test_native as native

from coextra_testutil import UnraisableCatcher, finish_at_cleanup, unique_name  # noqa: F401 (UnraisableCatcher: re-exported)

PY = sys.version_info[:2]
# 3.11+: the creating call of a generator/coroutine function reaches the
# eval-frame function (RETURN_GENERATOR runs in it); 3.9/3.10 build the
# generator without evaluating (3.9/3.10 make_coro; 3.11+ RETURN_GENERATOR in the evaluator).
CREATION_REACHES_HOOK = PY >= (3, 11)

# Frames that CPython itself evaluates without calling ANY eval-frame
# function, on specific versions (bugs pinned by test_chain.TestCpythonBypasses):
#   3.11.0-3.11.3  specialised BINARY_SUBSCR_GETITEM (`obj[k]` with a Python
#                  __getitem__) pushes the frame inline (gh-104405, fixed 3.11.4)
#   3.13           specialised CALL_ALLOC_AND_ENTER_INIT (`Cls(...)`) pushes the
#                  __init__ frame inline (3.13.0 and 3.13.18 alike; 3.14 adds the
#                  PEP 523 check to it)
# Comparisons against sys.setprofile may let the hook see FEWER evaluations of
# such code, by name, on exactly those versions; everything else must match.
_V = sys.version_info[:3]
if (3, 11, 0) <= _V < (3, 11, 4):
    CPYTHON_BYPASSED_NAMES = frozenset({"__getitem__"})
elif _V[:2] == (3, 13):
    CPYTHON_BYPASSED_NAMES = frozenset({"__init__"})
else:
    CPYTHON_BYPASSED_NAMES = frozenset()



def uname(tag):
    """A hook/slot name no other test uses."""
    return unique_name("test_chain", tag)


def rss_bytes():
    """Current resident set size (Linux /proc), or None."""
    if os.environ.get("COEXTRA_SANITIZE"):
        return None  # make sanitize: ASan's quarantine keeps freed memory resident; ASan checks leaks there
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def native_events(log, co_name):
    """(hook, 'enter'/'exit', is_resume, throwflag) of the native log entries for frames of co_name."""
    return [(e[0], e[1], e[3], e[4]) for e in log if e[2] == co_name]


def is_idle():
    st = coextra.status()
    return (not st.installed and not st.displaced and st.active_hooks == 0 and st.observers == 0
            and st.monitoring_tool_id is None and native.eval_frame_func() == native.default_eval_func())


class ChainTestCase(unittest.TestCase):
    """Adds cleanups for every hook a test makes and checks the idle state around each test."""

    def setUp(self):
        self.assertTrue(is_idle(), "coextra is not idle before the test (left over by an earlier test?): "
                        "status=%r hooks=%r" % (coextra.status(), coextra.hooks()))
        # Registered first, so it runs last (cleanups are LIFO).
        self.addCleanup(self._check_idle_after)

    def _check_idle_after(self):
        gc.collect()
        self.assertTrue(is_idle(), "coextra is not idle after the test: status=%r hooks=%r foreign=%r" % (
            coextra.status(), coextra.hooks(), foreign.is_current()))

    def add_hook(self, name=None, **kw):
        return finish_at_cleanup(self, coextra.add_hook(name or uname("py"), **kw), "removed", "remove")

    def add_native(self, mode, priority=coextra.PRIORITY_DEFAULT, arg=None, name=None, **kw):
        h = native.add(name or uname("native"), priority, mode, arg, **kw)
        self.addCleanup(self._drop_native, h)
        return h

    @staticmethod
    def _drop_native(h):
        try:
            native.remove(h)
        except coextra.ReleasedError:
            pass

    def install_foreign(self, chain=True):
        foreign.install(chain)
        self.addCleanup(self._drop_foreign)

    @staticmethod
    def _drop_foreign():
        try:
            foreign.uninstall()
        except RuntimeError:
            pass  # the test uninstalled it already
        coextra.status()  # lets coextra notice its own pointer came back (see test_chain_foreign)

    def assertBalanced(self, enters, exits, msg=None):
        self.assertEqual(sorted(map(id, enters)), sorted(map(id, exits)), msg)
