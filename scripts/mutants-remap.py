#!/usr/bin/env python3
"""Carries cargo-mutants' mutant names across the line moves between two trees.

    scripts/mutants-remap.py FROM [TO] < names > names

A name is `path:line:column: mutation`, of the tree FROM (a commit). Each is written at its line in
TO (a commit; the working tree when left out) when its line did not change between the two
(`git diff -U0`): lines added or removed above it move it. A name whose line changed, or whose
file is gone, is left out: its mutant is tested again. Lines starting with `#` are left out.
cargo-mutants itself matches names exactly, so without this every mutant below a changed line
of its file would be tested again (scripts/mutants.sh uses it for its lists).
"""
import re
import subprocess
import sys

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def hunks(base, to, path):
    """The (old start, old count, new count) of each hunk of `path` from `base` to `to`, or None
    when the file is not in `to`."""
    args = ["git", "diff", "--no-ext-diff", "--no-renames", "-U0", base] + ([to] if to else []) + ["--", path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    if re.search(r"^\+\+\+ /dev/null$", out, re.M):
        return None
    found = []
    for line in out.splitlines():
        m = HUNK.match(line)
        if m:
            a, b, d = int(m[1]), int(m[2] or 1), int(m[4] or 1)
            found.append((a, b, d))
    return found


def moved(line, file_hunks):
    """`line` of the old file in the new one, or None when it changed."""
    shift = 0
    for a, b, d in file_hunks:
        if b == 0:
            # Lines added after old line `a`.
            if line > a:
                shift += d
        elif line >= a + b:
            shift += d - b
        elif line >= a:
            return None
    return line + shift


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    base, to = sys.argv[1], (sys.argv[2] if len(sys.argv) == 3 else None)
    cache = {}
    for raw in sys.stdin:
        name = raw.rstrip("\n")
        if not name or name.startswith("#"):
            continue
        m = re.match(r"^([^:]+):(\d+):(\d+):(.*)$", name)
        if not m:
            continue
        path, line, rest = m[1], int(m[2]), m[3] + ":" + m[4]
        if path not in cache:
            cache[path] = hunks(base, to, path)
        if cache[path] is None:
            continue
        new = moved(line, cache[path])
        if new is not None:
            print(f"{path}:{new}:{rest}")


if __name__ == "__main__":
    main()
