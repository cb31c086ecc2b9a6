"""test_abi_freeze.py: the header's inline code is frozen per ABI minor (a hash recorded per minor)."""

# What the static inline functions of coextra.h do, and the layouts and
# macros they read, is compiled into every consumer extension: changing it
# changes the ABI even when no table entry moves.  The rule (coextra.h,
# CONTRACTS, "Inline"): any change bumps COEXTRA_ABI_MINOR.  This test keeps
# the rule honest: it hashes the header's inline code (comments and
# whitespace dropped, so rewording a comment is free) and compares it with
# the hash recorded for the header's minor.
#
# When it fails: if the change is intended, bump COEXTRA_ABI_MINOR in
# coextra.h and add the new minor's hash below (keep the old ones: they
# document what earlier minors' consumers run).

import hashlib
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(ROOT, "include", "coextra", "coextra.h")

# minor -> sha256 of inline_code() at that minor (ABI major 1).
RECORDED = {
    4: "2039a4a31751d4f5a3028bd84bf659531ea448993092b13a5f17e2dcefaad7d8",
}

# The layouts the inline code reads (coextra.h, CONTRACTS, "Layout").
FROZEN_TYPES = ("coextra_slot", "coextra_block_entry", "coextra_block", "coextra_fast_entry", "coextra_hop",
                "coextra_frame_head", "coextra_code_extra_")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def braced_block(text, start):
    """text[start:end] up to the brace that closes the first '{' at or after start."""
    depth, i = 0, text.index("{", start)
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1


def inline_code(text):
    """The parts of the header compiled into consumers, normalised: every static inline function, every
    frozen layout, every macro but the minor version itself."""
    text = strip_comments(text)
    parts = []
    for m in re.finditer(r"^static inline [^;{]*\(", text, re.M):
        parts.append(braced_block(text, m.start()))
    for name in FROZEN_TYPES:
        m = re.search(r"typedef struct %s \{" % re.escape(name), text)
        if m is None:
            raise AssertionError("frozen layout %s not found in coextra.h" % name)
        parts.append(braced_block(text, m.start()))
    for m in re.finditer(r"^#\s*define\s+(\w+)[^\n]*", text, re.M):
        if m[1] not in ("COEXTRA_ABI_MINOR", "COEXTRA_H"):
            parts.append(m[0])
    return "\n".join(" ".join(p.split()) for p in parts)


def header():
    with open(HEADER) as f:
        return f.read()


def abi_minor(text):
    return int(re.search(r"^#define COEXTRA_ABI_MINOR (\d+)$", text, re.M)[1])


class TestInlineCodeFrozen(unittest.TestCase):
    def test_inline_code_matches_the_hash_recorded_for_its_minor(self):
        text = header()
        minor, digest = abi_minor(text), hashlib.sha256(inline_code(text).encode()).hexdigest()
        self.assertIn(minor, RECORDED, "COEXTRA_ABI_MINOR %d has no recorded hash: add %d: %r" % (minor, minor, digest))
        self.assertEqual(RECORDED[minor], digest,
                         "coextra.h's inline code changed at ABI minor %d: bump COEXTRA_ABI_MINOR and record "
                         "the new minor's hash (%r), or undo the change" % (minor, digest))

    def test_the_newest_recorded_minor_is_the_header_s(self):
        # An old header's minor with a new recorded hash would let a change slip by.
        self.assertEqual(max(RECORDED), abi_minor(header()))

    def test_a_changed_inline_body_changes_the_hash(self):
        # The extraction really covers function bodies, layouts and macros:
        # a one-token change in each moves the hash, a comment does not.
        text = header()
        base = inline_code(text)
        edits = [("head->next = hop + 1;", "head->next = hop + 2;"),
                 ("void *value;", "void *value_;"),
                 ("#define COEXTRA_BLOCK_MAGIC 0xC0E7B10Cu", "#define COEXTRA_BLOCK_MAGIC 0xC0E7B10Du")]
        for old, new in edits:
            with self.subTest(old=old):
                self.assertIn(old, text)
                self.assertNotEqual(inline_code(text.replace(old, new, 1)), base)
        self.assertEqual(inline_code(text.replace("/* Continue down the chain", "/* Go on down the chain", 1)), base)


if __name__ == "__main__":
    unittest.main()
