"""test_versions.py: every ABI and project version written in docs/*.md and README.md agrees with the sources."""

import os
import re
import unittest

import coextra

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = sorted(os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
DOCS.append(os.path.join(ROOT, "README.md"))


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def header_abi():
    h = read("include", "coextra", "coextra.h")
    major = int(re.search(r"^#define COEXTRA_ABI_MAJOR (\d+)$", h, re.M).group(1))
    minor = int(re.search(r"^#define COEXTRA_ABI_MINOR (\d+)$", h, re.M).group(1))
    return major, minor


def project_version():
    return re.search(r"^project\([^)]*?\bversion\s*:\s*'([^']+)'", read("meson.build"), re.M | re.S).group(1)


def doc_lines():
    for path in DOCS:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                yield "%s:%d" % (os.path.relpath(path, ROOT), n), line


# "ABI 1.3", "ABI 1.3:", "(1.1)" after a field of a frozen layout, "built against 1.3".
ABI_MENTION = re.compile(r"\b(?:ABI|abi)\s+(\d+)\.(\d+)\b")
# Statements of THE current version: `ABI_VERSION == (1, 4)`, "`(1, 4)` for this release",
# "COEXTRA_ABI_MINOR is 4", "the ABI is 1.4", "currently 1.4".
CURRENT = [
    re.compile(r"ABI_VERSION\s*==\s*\((\d+),\s*(\d+)\)"),
    re.compile(r"`\((\d+),\s*(\d+)\)`\s*for this release"),
    re.compile(r"\bABI (?:is|of this release is) (?:now )?(\d+)\.(\d+)\b"),
    re.compile(r"\bcurrently (?:ABI )?(\d+)\.(\d+)\b"),
    # the constants table of c-api.md: | `COEXTRA_ABI_MAJOR`, `COEXTRA_ABI_MINOR` | 1, 4 | ...
    re.compile(r"COEXTRA_ABI_MAJOR`?,\s*`?COEXTRA_ABI_MINOR`?\s*\|\s*(\d+),\s*(\d+)"),
]
CURRENT_MINOR = re.compile(r"COEXTRA_ABI_MINOR\s*(?:is|==|=)\s*(\d+)")
PROJECT = [
    re.compile(r"__version__\s*==\s*['\"]([^'\"]+)['\"]"),
    re.compile(r"\bcoextra (\d+\.\d+\.\d+)\b"),
    re.compile(r"\bversion (\d+\.\d+\.\d+)\b"),
]


class TestVersionsAgree(unittest.TestCase):
    def test_header_runtime_and_stub_agree(self):
        self.assertEqual(coextra.ABI_VERSION, header_abi())
        self.assertEqual(coextra.__version__, project_version())
        pyproject = re.search(r'^version\s*=\s*"([^"]+)"', read("pyproject.toml"), re.M)
        if pyproject:
            self.assertEqual(pyproject.group(1), project_version())

    def test_current_abi_statements_match_the_header(self):
        major, minor = header_abi()
        bad = []
        for where, line in doc_lines():
            for rx in CURRENT:
                for m in rx.finditer(line):
                    if (int(m.group(1)), int(m.group(2))) != (major, minor):
                        bad.append("%s: %s (header: %d.%d)" % (where, m.group(0), major, minor))
            for m in CURRENT_MINOR.finditer(line):
                if int(m.group(1)) != minor:
                    bad.append("%s: %s (header: %d)" % (where, m.group(0), minor))
        self.assertEqual(bad, [])

    def test_no_doc_names_an_abi_the_header_does_not_have(self):
        # History ("ABI 1.3: observers") is fine; a version past the header's is drift, except in a
        # quoted ABI-mismatch message, which names another build's version on purpose.
        major, minor = header_abi()
        bad = []
        for where, line in doc_lines():
            if "mismatch" in line or "provides ABI" in line:
                continue
            for m in ABI_MENTION.finditer(line):
                v = (int(m.group(1)), int(m.group(2)))
                if v[0] != major or v[1] > minor:
                    bad.append("%s: %s (header: %d.%d)" % (where, m.group(0), major, minor))
        self.assertEqual(bad, [])

    def test_every_minor_is_documented(self):
        # Each append to the table (a minor) says what it added, somewhere in the docs.
        major, minor = header_abi()
        text = "\n".join(line for _, line in doc_lines())
        missing = [m for m in range(1, minor + 1) if not re.search(r"\b%d\.%d\b" % (major, m), text)]
        self.assertEqual(missing, [], "ABI minors the docs never mention")

    def test_project_version_statements(self):
        version = project_version()
        bad = []
        for where, line in doc_lines():
            for rx in PROJECT:
                for m in rx.finditer(line):
                    if m.group(1) != version and not re.match(r"3\.\d+\.\d+$", m.group(1)):  # CPython's
                        bad.append("%s: %s (project: %s)" % (where, m.group(0), version))
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
