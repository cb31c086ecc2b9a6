"""coextra_testutil.py: helpers the unittest modules share (unique names, fresh code objects, cleanups, unraisable capture); no tests."""

import gc
import itertools
import sys
import types

_counter = itertools.count()


def unique_name(prefix, tag):
    """prefix.tag.N, a hook/slot name no other test uses."""
    return "%s.%s.%d" % (prefix, tag, next(_counter))


def make_code(tag="c"):
    """A fresh code object referenced only by the caller (compile() of unique source).

    Returns the code of a function `f_<tag>_<n>(x)` nested in the module code:
    dropping the returned reference (the module code is not kept) kills it.
    """
    n = next(_counter)
    mod = compile("def f_%s_%d(x):\n    return x + %d\n" % (tag, n, n), "<coextra test %s %d>" % (tag, n), "exec")
    return [c for c in mod.co_consts if isinstance(c, types.CodeType)][0]


def finish_at_cleanup(test, obj, done, finish):
    """obj, which test finishes at cleanup: obj.<finish>() unless obj.<done>
    is already true (the test removed or released it itself)."""
    def finish_unless_done():
        if not getattr(obj, done):
            getattr(obj, finish)()
    test.addCleanup(finish_unless_done)
    return obj


def assert_name_taken(test, name, *reserves):
    """Each reserve(name) raises ValueError: a live slot or hook holds the name."""
    for reserve in reserves:
        with test.assertRaises(ValueError):
            reserve(name)


def kill(wr):
    """Collect until the weakly referenced object is gone; fail if something still holds it."""
    for _ in range(3):
        if wr() is None:
            return
        gc.collect()
    raise AssertionError("%r is still alive: %r" % (wr(), gc.get_referrers(wr())))


class UnraisableCatcher:
    """Context manager collecting sys.unraisablehook calls.

    The hook installed is list.append, a C callable: a Python hook function
    would be a frame itself (seen by the hooks under test, and failing in turn
    near the recursion limit)."""

    def __enter__(self):
        self._raw = []
        self._old = sys.unraisablehook
        sys.unraisablehook = self._raw.append
        return self

    @property
    def seen(self):
        """(exc_type, str(exc_value), object) of each call."""
        return [(u.exc_type, str(u.exc_value), u.object) for u in self._raw]

    @property
    def records(self):
        """(exc_type, exc_value, object) of each call."""
        return [(u.exc_type, u.exc_value, u.object) for u in self._raw]

    def seen_raw_clear(self):
        del self._raw[:]

    def __exit__(self, *exc):
        sys.unraisablehook = self._old
        return False
