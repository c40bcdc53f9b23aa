#!/usr/bin/env python3
"""Prints the size of carat-catalogd's production code, the way issue 18
counts it: Rust lines in src/ that are not blank, not comments, and not
inside a #[cfg(test)] item. The total leaves out the simulator (src/sim/,
src/bin/carat-sim.rs) and the test hooks (src/testhooks.rs); the per-file
list includes the simulator. Usage: scripts/size.py [--all] [--max N]"""
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
NOT_PRODUCTION = ("sim/", "bin/carat-sim.rs", "testhooks.rs")


def is_test_cfg(line):
    """`#[cfg(test)]`, or a cfg that holds only in tests (`all(test, ...)`)."""
    return line == "#[cfg(test)]" or (line.startswith("#[cfg(all(test") and line.endswith(")]"))


def production_lines(text):
    lines = text.split("\n")
    count, i, in_block = 0, 0, False
    while i < len(lines):
        t = lines[i].strip()
        if in_block:
            if "*/" in t:
                in_block = False
            i += 1
            continue
        if t.startswith("/*"):
            in_block = "*/" not in t
            i += 1
            continue
        if is_test_cfg(t):
            # Skip the item this attribute gates: its one line up to `;`,
            # or (rustfmt's layout) up to the `}` at its own indentation.
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("#["):
                j += 1
            item = lines[j] if j < len(lines) else ""
            indent = item[: len(item) - len(item.lstrip())]
            if not item.rstrip().endswith(";"):
                j += 1
                while j < len(lines) and lines[j].rstrip() != indent + "}":
                    j += 1
            i = j + 1
            continue
        if t and not t.startswith("//"):
            count += 1
        i += 1
    return count


def test_only_files(sizes_root):
    """Files that are a `#[cfg(test)] mod name;` of their parent."""
    out = set()
    for d, _, files in os.walk(sizes_root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            lines = open(os.path.join(d, f), encoding="utf-8").read().split("\n")
            here = d if f in ("mod.rs", "lib.rs", "main.rs") else os.path.join(d, f[:-3])
            for a, b in zip(lines, lines[1:]):
                b = b.strip()
                if is_test_cfg(a.strip()) and b.startswith("mod ") and b.endswith(";"):
                    name = b[4:-1].strip()
                    for cand in (os.path.join(here, name + ".rs"), os.path.join(here, name, "mod.rs")):
                        out.add(os.path.relpath(cand, sizes_root))
    return out


def main():
    limit = 600
    if "--max" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--max") + 1])
    sizes = {}
    tests = test_only_files(ROOT)
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, ROOT)
                if rel in tests:
                    continue
                with open(p, encoding="utf-8") as fh:
                    sizes[rel] = production_lines(fh.read())
    total = sum(n for f, n in sizes.items() if not f.startswith(NOT_PRODUCTION))
    over = sorted(((n, f) for f, n in sizes.items() if n > limit), reverse=True)
    print(f"production lines (src/, without the simulator and test hooks): {total}")
    print(f"files over {limit} production lines: {len(over)}")
    for n, f in over:
        print(f"  {f}: {n}")
    if "--all" in sys.argv:
        for f, n in sorted(sizes.items(), key=lambda x: -x[1]):
            print(f"{n:6} {f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
