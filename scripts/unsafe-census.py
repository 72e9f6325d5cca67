#!/usr/bin/env python3
"""Counts the workspace's unsafe code, per crate, and whether each piece carries its proof.

    python3 scripts/unsafe-census.py            # the table
    python3 scripts/unsafe-census.py --check    # also exit 1 if anything lacks its comment

For each crate (`crates/<name>/`; the root `benches/` and `examples/` are bge-m3-core's):
unsafe blocks and unsafe impls with and without a `SAFETY:` comment above them (or above the
statement that holds them), unsafe fns with and without a `# Safety` doc section, and the
crate roots and modules that forbid, deny or allow `unsafe_code`.

Clippy checks the same things where it can (`undocumented_unsafe_blocks`,
`missing_safety_doc`, in the workspace's `[lints]`), but `missing_safety_doc` looks only at
public functions: `--check` is what holds the crate-private unsafe fns to the same rule.
It reads the source as text (comments and strings are not parsed), which is enough for this
codebase's layout: one unsafe item per line, comments on the lines above.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCK = re.compile(r"\bunsafe\s*\{")
FN = re.compile(r"\bunsafe\s+(?:extern\s+\"[^\"]*\"\s+)?fn\s+\w+")
IMPL = re.compile(r"\bunsafe\s+impl\b")
LINT = re.compile(r"#!?\[(forbid|deny|allow|warn)\(([^)]*\bunsafe_code\b[^)]*)\)\]")


def crate_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "crates":
        return rel.parts[1]
    # The root benches and examples are bge-m3-core's targets (see its Cargo.toml).
    return "bge-m3-core"


def code(line: str) -> str:
    """The line without its `//` comment."""
    return line.split("//", 1)[0]


def is_comment(line: str) -> bool:
    return line.strip().startswith("//")


def is_attribute(line: str) -> bool:
    return line.strip().startswith("#[")


def has_safety_comment(lines, index: int) -> bool:
    """Whether a `SAFETY:` comment precedes the unsafe item on line `index`: on the lines just
    above it, or above the statement it continues (a line ending in `=`, `(`, `,` or `=>`)."""
    before = code(lines[index]).split("unsafe", 1)[0]
    if "SAFETY" in lines[index].split("unsafe", 1)[0]:
        return True
    i = index - 1
    while i >= 0:
        line = lines[i]
        stripped = line.strip()
        if is_comment(line):
            if "SAFETY" in line:
                return True
            i -= 1
            continue
        if is_attribute(line) or not stripped:
            if not stripped:
                return False
            i -= 1
            continue
        # A statement that goes on to this line: its comments count.
        if code(line).rstrip().endswith(("=", "(", ",", "=>")) or (
            before.strip() == "" and code(line).rstrip().endswith("(")
        ):
            i -= 1
            continue
        return False
    return False


def has_safety_doc(lines, index: int) -> bool:
    """Whether the doc comment above the fn on line `index` has a `# Safety` section."""
    i = index - 1
    while i >= 0:
        stripped = lines[i].strip()
        if stripped.startswith("///"):
            if re.match(r"///\s*#+\s*Safety\b", stripped):
                return True
        elif not (is_attribute(lines[i]) or stripped.startswith("//")):
            return False
        i -= 1
    return False


def census():
    counts = defaultdict(lambda: defaultdict(int))
    missing = []
    lints = []
    files = sorted(
        p
        for top in ("crates", "benches", "examples")
        for p in (ROOT / top).rglob("*.rs")
        if "target" not in p.parts
    )
    for path in files:
        crate = crate_of(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        rel = path.relative_to(ROOT)
        for n, line in enumerate(lines):
            if is_comment(line):
                continue
            text = code(line)
            for match in LINT.finditer(line):
                level, what = match.groups()
                inner = line.strip().startswith("#!")
                target = "file" if inner else (lines[n + 1].strip() if n + 1 < len(lines) else "")
                lints.append((crate, f"{rel}:{n + 1}", level, target))
            for kind, pattern, documented in (
                ("block", BLOCK, has_safety_comment),
                ("impl", IMPL, has_safety_comment),
                ("fn", FN, has_safety_doc),
            ):
                for _ in pattern.finditer(text):
                    ok = documented(lines, n)
                    counts[crate][(kind, ok)] += 1
                    if not ok:
                        missing.append(f"{rel}:{n + 1}: unsafe {kind} without its "
                                       f"{'# Safety section' if kind == 'fn' else 'SAFETY comment'}")
    return counts, missing, lints


def main():
    counts, missing, lints = census()
    header = ("crate", "blocks", "no SAFETY", "fns", "no # Safety", "impls", "no SAFETY")
    print("{:<22} {:>7} {:>10} {:>5} {:>12} {:>6} {:>10}".format(*header))
    crates = sorted({p.name for p in (ROOT / "crates").iterdir() if p.is_dir()})
    total = defaultdict(int)
    for crate in crates:
        c = counts[crate]
        row = []
        for kind in ("block", "fn", "impl"):
            row += [c[(kind, True)] + c[(kind, False)], c[(kind, False)]]
        for i, v in enumerate(row):
            total[i] += v
        print("{:<22} {:>7} {:>10} {:>5} {:>12} {:>6} {:>10}".format(crate, *row))
    print("{:<22} {:>7} {:>10} {:>5} {:>12} {:>6} {:>10}".format(
        "total", *[total[i] for i in range(6)]))
    print()
    print("unsafe_code lint attributes:")
    if not lints:
        print("  none")
    for crate, where, level, target in lints:
        print(f"  {crate:<22} {level:<7} {where}  ({target})")
    if missing:
        print()
        print("without their comment:")
        for m in missing:
            print("  " + m)
    if "--check" in sys.argv[1:] and missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
