"""workload.py: the code every real tool measures in tests/real_tools (no tests of its own).

Mixed recursion, generators, a class with __init__ and comprehensions, plus
two functions that only coextra's own tools use: `lookup`, which coextra_memo
memoizes in the runs "with coextra", and `cold`, which holds the coextra
debugger's breakpoint and is never called.  Everything is deterministic:
every run makes the same calls in the same order.
"""


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def countdown(n):
    while n > 0:
        yield n
        n -= 1


def pairs(n):
    for i in countdown(n):
        yield i, i * i


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm2(self):
        return self.x * self.x + self.y * self.y


def squares(n):
    points = [Point(i, i + 1) for i in range(n)]
    return [p.norm2() for p in points if p.x % 3]


def lookup(k):
    total = 0
    for i in range(k):
        total += i * i
    return total


def cold():
    return "never called"


def step():
    """One round of everything: 2,000-odd Python calls."""
    total = fib(14)
    total += is_even(60)
    total += sum(b for _, b in pairs(40))
    total += sum(squares(60))
    total += sum(lookup(k % 5 + 10) for k in range(20))
    return total


def run(rounds=3):
    return [step() for _ in range(rounds)]


# The workload's own functions, by name: what the tools' results are compared on.
FUNCTIONS = {f.__name__: f for f in (fib, is_even, is_odd, countdown, pairs, squares, lookup, step, run)}
FUNCTIONS["Point.__init__"] = Point.__init__
FUNCTIONS["Point.norm2"] = Point.norm2
CODES = {name: f.__code__ for name, f in FUNCTIONS.items()}
