#!/usr/bin/env python3
"""run_unittests.py: runs every test_*.py of a directory with unittest and prints one COEXTRA-RESULT line."""
import os
import sys
import unittest


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "python")
    import coextra  # fail loudly (not as a skipped suite) if the build tree is not importable

    print("coextra %s from %s on Python %s" % (coextra.__version__, os.path.dirname(coextra.__file__),
                                                sys.version.split()[0]), flush=True)
    suite = unittest.defaultTestLoader.discover(directory, pattern="test_*.py", top_level_dir=directory)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print("COEXTRA-RESULT passed=%d failed=%d skipped=%d" % (passed, failed, skipped), flush=True)
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
