"""test_dynamo.py: coextra next to torch.compile (Dynamo), the other PEP 523 user, in one process.

Dynamo installs its own eval-frame function for the duration of every
compiled call, over whatever is current (coextra's dispatcher if a coextra
hook is active), chains to it for the frames it does not compile, and puts
back what it found when the call returns.  Checked here:

- A training step with a graph break (a torch.compiler.disable'd function
  that also runs the coextra workload), compiled with the "eager" backend
  and a backend that counts graphs: alone, and with coextra's profiler,
  debugger, memoizer and a Python observer active, Dynamo first and coextra
  first.  Dynamo's losses, weights, graphs and compiles are those it gets
  alone; coextra's tools get what they get on the uncompiled program.
- A coextra hook sees the frame Dynamo leaves to eager execution; it does
  not see the user's code that Dynamo compiled (Dynamo runs its own
  transformed code objects instead).
- coextra slot values on code that Dynamo compiles survive the compiles,
  torch._dynamo.reset() and the slot's release, and cost no recompile.
- A hook added, or removed, while Dynamo's function is installed (inside
  the eager part of a compiled call) leaves both working, and
  coextra.status() truthful once Dynamo has put back what it found.
"""

import sys
import unittest

import coextra

import realtools
import workload
from realtools import CoextraTools, require

STEPS = 3
torch = counters = None


def eager_part(h):
    """Behind the graph break: Dynamo runs this frame as it is.  It also runs one round of the
    coextra workload, so that coextra's tools have work inside every compiled call."""
    workload.step()
    return h * 0.5


class Counted:
    """A backend that counts the graphs Dynamo hands it and runs them like the "eager" backend."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def make_net():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1 = torch.nn.Linear(8, 16)
            self.lin2 = torch.nn.Linear(16, 1)

        def forward(self, x):
            h = self.lin1(x).relu()
            h = eager_part_disabled(h)
            return self.lin2(h)

    return Net


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


class DynamoCase(unittest.TestCase):
    skip_reason = None

    @classmethod
    def setUpClass(cls):
        # Each test skips on its own (counted by run_unittests.py) when sid ships
        # no torch for this Python; a torch that sid ships but that does not
        # import fails here.
        global torch, counters, eager_part_disabled, Net
        try:
            torch = require("torch")
        except unittest.SkipTest as e:
            cls.skip_reason = str(e)
            return
        import torch._dynamo
        from torch._dynamo.utils import counters
        eager_part_disabled = torch.compiler.disable(eager_part)
        Net = make_net()

    def setUp(self):
        if self.skip_reason:
            self.skipTest(self.skip_reason)
        self.assertTrue(realtools.coextra_idle(), coextra.status())
        torch._dynamo.reset()
        counters.clear()

    def tearDown(self):
        if torch is not None:
            torch._dynamo.reset()
        self.assertTrue(realtools.coextra_idle(), coextra.status())

    @staticmethod
    def data():
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        return model, opt, x, y

    def program(self, compiled, between=None):
        """STEPS training steps, compiled or not; between() runs after the first.
        Returns Dynamo's results: losses, final weights, graphs, compiles."""
        model, opt, x, y = self.data()
        backend = Counted()
        step = torch.compile(train_step, backend=backend) if compiled else train_step
        losses = [step(model, opt, x, y).item()]
        if between is not None:
            between()
        for _ in range(STEPS - 1):
            losses.append(step(model, opt, x, y).item())
            if compiled and coextra.status().active_hooks:
                # Dynamo puts back what it found after each compiled call: coextra's dispatcher.
                st = coextra.status()
                self.assertEqual((st.installed, st.displaced), (True, False), st)
        weights = [p.detach().clone() for p in model.parameters()]
        return {"losses": losses, "weights": weights, "graphs": backend.graphs,
                "compiles": counters["frames"]["total"]}

    def assertSameDynamo(self, got, ref):
        self.assertEqual(got["losses"], ref["losses"])
        for a, b in zip(got["weights"], ref["weights"]):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual((got["graphs"], got["compiles"]), (ref["graphs"], ref["compiles"]))


class TestTrainingStep(DynamoCase):
    """Dynamo's results alone and beside coextra's tools, in both orders."""

    def reference(self, coextra_first):
        """coextra's tools on the uncompiled program, started where the run under test starts them."""
        cx = CoextraTools("real_tools.dynamo")
        if coextra_first:
            with cx:
                self.program(False)
        else:
            self.program(False, between=cx.start)
            cx.stop()
        return cx.results()

    def run_together(self, coextra_first):
        alone = self.program(True)
        self.assertGreaterEqual(alone["graphs"], 2)           # a graph each side of the break
        eager = self.program(False)
        self.assertEqual(len(alone["losses"]), STEPS)
        for a, b in zip(alone["losses"], eager["losses"]):
            self.assertAlmostEqual(a, b, places=5)             # compiled = eager, to rounding
        ref = self.reference(coextra_first)
        torch._dynamo.reset()
        counters.clear()
        cx = CoextraTools("real_tools.dynamo")
        if coextra_first:
            with cx:
                together = self.program(True)
        else:
            together = self.program(True, between=cx.start)   # Dynamo compiled before coextra started
            cx.stop()
        self.assertSameDynamo(together, alone)
        self.maxDiff = None
        self.assertEqual(cx.results(), ref)
        self.assertEqual(ref["memo (hits, misses)"][0] + ref["memo (hits, misses)"][1],
                         20 * (STEPS if coextra_first else STEPS - 1))

    def test_dynamo_first(self):
        self.run_together(coextra_first=False)

    def test_coextra_first(self):
        self.run_together(coextra_first=True)


class TestFramesCoextraSees(DynamoCase):
    def test_eager_part_seen_compiled_code_replaced(self):
        marks = coextra.Slot("real_tools.dynamo.marks")
        try:
            marks[eager_part.__code__] = "behind the graph break"
            marks[Net.forward.__code__] = "compiled by Dynamo"
            marks[train_step.__code__] = "compiled by Dynamo"
            seen = []
            with coextra.add_hook("real_tools.dynamo.seen", only=marks, on_enter=seen.append):
                self.program(False)
                eager = [c.co_name for c in seen]
                del seen[:]
                self.program(True)
                compiled = [c.co_name for c in seen]
            self.assertEqual(eager, ["train_step", "forward", "eager_part"] * STEPS)
            # Compiled: Dynamo runs its own transformed code objects for train_step
            # and forward; only the frame it leaves to eager execution is the user's.
            self.assertEqual(compiled, ["eager_part"] * STEPS)
        finally:
            marks.release()


class TestSlotsOnCompiledCode(DynamoCase):
    def test_values_survive_compiles_reset_and_release(self):
        freed = []
        kept = coextra.Slot("real_tools.dynamo.kept", on_free=freed.append)
        gone = coextra.Slot("real_tools.dynamo.gone", on_free=freed.append)
        codes = (train_step.__code__, Net.forward.__code__)
        try:
            for c in codes:
                kept[c] = ("kept", c.co_name)
            first = self.program(True)                                  # compiled with values on its code
            torch._dynamo.reset()
            counters.clear()
            model, opt, x, y = self.data()
            step = torch.compile(train_step, backend=Counted())
            step(model, opt, x, y)
            compiles = counters["frames"]["total"]
            entries = [len(torch._dynamo.eval_frame._debug_get_cache_entry_list(c)) for c in codes]
            self.assertEqual(entries[0], 1)
            # Values stored after Dynamo compiled: no recompile, Dynamo's cache intact.
            for c in codes:
                gone[c] = ("gone", c.co_name)
            step(model, opt, x, y)
            self.assertEqual(counters["frames"]["total"], compiles)     # guards hold: no new compile
            gone.release()
            self.assertEqual(sorted(freed), [("gone", "forward"), ("gone", "train_step")])
            step(model, opt, x, y)
            self.assertEqual(counters["frames"]["total"], compiles)     # the release: no recompile either
            self.assertEqual([len(torch._dynamo.eval_frame._debug_get_cache_entry_list(c)) for c in codes],
                             entries)
            # Dynamo drops its caches; coextra's values stay, and the recompile is the first one again.
            torch._dynamo.reset()
            counters.clear()
            self.assertEqual([kept[c] for c in codes], [("kept", "train_step"), ("kept", "forward")])
            again = self.program(True)
            self.assertSameDynamo(again, first)
            self.assertEqual([kept[c] for c in codes], [("kept", "train_step"), ("kept", "forward")])
        finally:
            kept.release()
            if not gone.released:
                gone.release()
        self.assertEqual(len(freed), 4)


class TestHooksChangedInsideCompiledCall(DynamoCase):
    """A hook added or removed while Dynamo's own eval-frame function is current: from a frame that
    Dynamo skips without putting its function away (torch.compiler.disable(recursive=False))."""

    def compiled_with_trigger(self):
        """A compiled function with a graph break in the middle, whose eager part calls ACTIONS."""
        actions = []
        seen_inside = []

        def trigger():
            while actions:
                actions.pop(0)()
            seen_inside.append(tuple(coextra.status())[:4])

        trigger = torch.compiler.disable(trigger, recursive=False)

        def f(x):
            y = x.sin() * 2
            trigger()
            return y.cos()

        return torch.compile(f, backend="eager"), actions, seen_inside, f

    def test_hook_added_inside(self):
        fn, actions, inside, f = self.compiled_with_trigger()
        x = torch.linspace(0, 1, 5)
        expected = f(x)
        self.assertTrue(torch.equal(fn(x), expected))                  # compiled, no coextra hook
        self.assertEqual(cache_entries(f), 1)
        seen, box = [], {}
        actions.append(lambda: box.setdefault("hook", coextra.add_hook(
            "real_tools.dynamo.late", on_enter=lambda code: seen.append(code) if code is leaf_code else None)))
        self.assertTrue(torch.equal(fn(x), expected))
        hook = box["hook"]
        try:
            # Added over Dynamo's function: coextra's chain ends in it.
            self.assertEqual(inside[-1][:3], (True, False, True))
            # Dynamo put back what it found (CPython's evaluator) over coextra's
            # dispatcher; coextra's next call takes the interpreter back.
            st = coextra.status()
            self.assertEqual((st.installed, st.displaced, st.foreign_tail, st.active_hooks), (True, False, False, 1))
            workload_leaf()
            self.assertEqual(len(seen), 1)                              # the hook works outside...
            actions.append(workload_leaf)
            self.assertTrue(torch.equal(fn(x), expected))
            self.assertEqual(len(seen), 2)                              # ...and inside compiled calls
            self.assertEqual(inside[-1][:2], (False, True))             # Dynamo on top, chaining to coextra
            st = coextra.status()
            self.assertEqual((st.installed, st.displaced), (True, False))
            self.assertEqual(cache_entries(f), 1)                       # Dynamo: no recompile of f
        finally:
            hook.remove()

    def test_hook_removed_inside(self):
        fn, actions, inside, f = self.compiled_with_trigger()
        x = torch.linspace(0, 1, 5)
        expected = f(x)
        seen = []
        hook = coextra.add_hook("real_tools.dynamo.early",
                                on_enter=lambda code: seen.append(code) if code is leaf_code else None)
        try:
            self.assertTrue(torch.equal(fn(x), expected))
            self.assertEqual(cache_entries(f), 1)
            actions.append(workload_leaf)
            self.assertTrue(torch.equal(fn(x), expected))
            self.assertEqual(len(seen), 1)
            self.assertEqual(inside[-1][:2], (False, True))             # Dynamo on top, chaining to coextra
            actions.append(hook.remove)
        finally:
            self.assertTrue(torch.equal(fn(x), expected))
            if not hook.removed:
                hook.remove()
        st = coextra.status()
        self.assertEqual((st.installed, st.displaced, st.active_hooks), (False, False, 0))
        actions.append(workload_leaf)
        self.assertTrue(torch.equal(fn(x), expected))                   # Dynamo still works
        self.assertEqual(len(seen), 1)                                  # the hook is gone
        self.assertEqual(cache_entries(f), 1)                           # Dynamo: no recompile of f


def cache_entries(fn):
    """How many compiled versions Dynamo keeps for fn's code (a recompile adds one)."""
    return len(torch._dynamo.eval_frame._debug_get_cache_entry_list(fn.__code__))


def workload_leaf():
    return workload.cold()


leaf_code = workload.cold.__code__


if __name__ == "__main__":
    unittest.main()
