"""test_check_hooks.py: COEXTRA_CHECK_HOOKS / -X dev name a hook that returns without running or finishing the frame."""

# The contract: a hook's eval calls coextra_eval_next or coextra_frame_return.
# A hook that returns a value without either makes the call return that
# value and the function never run.  By default coextra finishes such a
# frame silently (as coextra_frame_return would); with the check on, the
# call raises SystemError naming the hook.  Each case runs in a child, since
# the switch is read when the runtime is created.

import os
import subprocess
import sys
import textwrap
import unittest

CHILD = textwrap.dedent(r"""
    import coextra_test_native as native

    ran = []

    def target():
        ran.append(1)
        return "ran"

    def other():
        return "other"

    hooks = [native.add("outer-ok", 100, "pass", None)] if "chain" in __import__("sys").argv else []
    bad = native.add("forgetful", 500, "no_consume", None, code=target.__code__)
    try:
        try:
            r = target()
            print("returned", repr(r), len(ran))
        except SystemError as e:
            print("SystemError", e)
        print("other", other())  # a hook that delegates is untouched
    finally:
        for h in [bad] + hooks:
            native.remove(h)
    print("after", target(), len(ran))
""")


def run(env_value=None, dev=False, chain=False):
    env = dict(os.environ)
    env.pop("COEXTRA_CHECK_HOOKS", None)
    env.pop("PYTHONDEVMODE", None)
    if env_value is not None:
        env["COEXTRA_CHECK_HOOKS"] = env_value
    cmd = [sys.executable] + (["-X", "dev"] if dev else []) + ["-c", CHILD] + (["chain"] if chain else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise AssertionError("child failed: rc=%d\n%s\n%s" % (out.returncode, out.stdout, out.stderr))
    return out.stdout.splitlines()


class TestCheckHooks(unittest.TestCase):
    def assert_refused(self, lines):
        self.assertTrue(lines[0].startswith("SystemError coextra: hook 'forgetful' returned a value without"),
                        lines)
        self.assertEqual(lines[1:], ["other other", "after ran 1"])

    def test_off_by_default_the_frame_is_finished_silently(self):
        self.assertEqual(run(), ["returned None 0", "other other", "after ran 1"])

    def test_environment_switch_names_the_hook(self):
        self.assert_refused(run("1"))

    def test_named_in_a_chain_of_hooks(self):
        # The outer hook delegated; the inner one kept the frame: it is named.
        self.assert_refused(run("1", chain=True))

    def test_development_mode_turns_it_on(self):
        self.assert_refused(run(dev=True))

    def test_zero_turns_it_off_even_in_development_mode(self):
        self.assertEqual(run("0", dev=True), ["returned None 0", "other other", "after ran 1"])


if __name__ == "__main__":
    unittest.main()
