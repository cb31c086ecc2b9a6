"""coextra_memo: a JIT-shaped memoizer — cached calls are finished by a coextra hook without running the frame.

    import coextra_memo

    @coextra_memo.memoize
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

``memoize(fn)`` marks ``fn.__code__`` in coextra_memo's coextra slot and
returns ``fn`` itself (no wrapper: ``fn`` keeps its identity, signature and
attributes).  A native eval-frame hook at ``coextra.PRIORITY_OPTIMIZER``,
restricted to that slot, reads the call's arguments from the frame before it
runs; on a hit it finishes the frame with the cached result through
``coextra_frame_return`` (the body never runs), on a miss it runs the frame
and stores the result.

Rules:

* The key is the tuple of the parameters' bound values (defaults included,
  keywords bound to their parameters: ``f(3)``, ``f(x=3)`` and ``f(3, 0)``
  with a default ``0`` share an entry), compared like dict keys (so ``f(1)``
  and ``f(1.0)`` share an entry, as in ``functools.lru_cache(typed=False)``).
  Keyword-only parameters and ``*args`` are part of it; ``**kwargs`` is, as
  its items sorted by name (``f(a=1, b=2)`` and ``f(b=2, a=1)`` share an
  entry).
* Exceptions are never cached.  Unhashable arguments run the body (a miss).
* Generator and coroutine functions are refused (TypeError): their frames
  cannot be skipped.
* Only the decorated function object is cached, even if other functions share
  its code object (e.g. closures from the same ``def``); memoizing a second
  function with the same live code raises ValueError.
* Hooks further out in the coextra chain (debuggers, profilers, Python hooks
  from ``coextra.add_hook``) still see a cached call's frame enter and exit:
  memo is innermost, it replaces only the evaluation.  Tracing tools based on
  sys.settrace/sys.monitoring see nothing of a cached call (no line runs).
* The hook is active only while at least one function is memoized.
* The cache keeps its keys and results alive until ``clear``/``unmemoize`` or
  until the code object dies.
"""

from ._memo import cache_size, clear, is_memoized, memoize, stats, unmemoize

__all__ = ["memoize", "unmemoize", "stats", "clear", "cache_size", "is_memoized"]
