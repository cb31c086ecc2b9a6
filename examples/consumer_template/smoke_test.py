"""smoke_test.py: checks an installed calltally against a real workload (run from outside the source tree)."""
import coextra
import calltally


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def other():
    return 1


calltally.watch(fib)
assert fib(15) == 610
assert calltally.count(fib) == 1973, calltally.count(fib)
assert calltally.count(other) == 0
names = {s.name: s for s in coextra.slots()}
assert names["calltally.counts"].native and names["calltally.counts"].live == 1
assert any(h.name == "calltally" and h.native for h in coextra.hooks())
calltally.unwatch(fib)
assert calltally.count(fib) == 0 and names and coextra.slots()
print("calltally OK", coextra.__version__)
