#!/usr/bin/env python3
"""The import graph of the server's route files, and its cycles.

    python3 scripts/route-imports.py [--dot]

Each file of `crates/bge-m3-server/src/routes/` is a node (`input/` is one node, as it is one
module to its siblings; `mod.rs` is `mod`). An edge A -> B is a path of A's code that names
B: a `use super::B...`, `use crate::routes::B...` or `super::B::item` in an expression (in
`mod.rs`, `use self::B...` or `B::item`), and a name that `mod.rs` re-exports from B
(`crate::routes::ROUTES` is `table`'s). A file's own test
module (`use super::*` inside it) is the file itself, not an edge. Comments are skipped.

Prints one line per file with what it imports, then the cycles (strongly connected components
of more than one file); exits 1 when there is one. `--dot` prints the graph in Graphviz's
format instead.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "crates" / "bge-m3-server" / "src" / "routes"


def node_of(path: Path) -> str:
    rel = path.relative_to(ROUTES)
    if rel.parts[0] == "mod.rs":
        return "mod"
    return rel.parts[0].removesuffix(".rs")


def code_of(text: str) -> str:
    """The text without comments (line comments and doc comments; no block comments here)."""
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        # A trailing comment: cut at `//` outside a string (good enough for `use` lines).
        if "//" in line and '"' not in line:
            line = line[: line.index("//")]
        lines.append(line)
    return "\n".join(lines)


def use_trees(code: str):
    """Every `use` declaration's tree, as one string without whitespace."""
    for match in re.finditer(r"\buse\s+([^;]+);", code):
        yield re.sub(r"\s+", "", match.group(1))


def heads(tree: str):
    """The first segment of each path a use tree names below its root: `{a,b::c}` -> a, b."""
    if tree.startswith("{") and tree.endswith("}"):
        depth, start = 0, 1
        for i, ch in enumerate(tree):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if (ch == "," and depth == 1) or (ch == "}" and depth == 0):
                part = tree[start:i]
                start = i + 1
                if part:
                    yield from heads(part)
        return
    yield tree.split("::")[0]


def reexports(modules: set) -> dict:
    """Names that `mod.rs` re-exports, to the file they come from."""
    names = {}
    code = code_of((ROUTES / "mod.rs").read_text())
    for tree in use_trees(code):
        if not tree.startswith("self::"):
            continue
        rest = tree[len("self::"):]
        module, _, items = rest.partition("::")
        if module in modules:
            for name in heads(items) if items else []:
                names[name] = module
    return names


def edges():
    files = sorted(p for p in ROUTES.rglob("*.rs"))
    modules = {node_of(p) for p in files} - {"mod"}
    exported = reexports(modules)
    graph = {node: set() for node in sorted(modules | {"mod"})}

    def target(name: str):
        if name in modules:
            return name
        if name in exported:
            return exported[name]
        if name in ("*", "self"):
            return None
        return "mod"

    for path in files:
        node = node_of(path)
        nested = path.parent != ROUTES  # a file of `input/`: its `super::` is `input`
        code = code_of(path.read_text())
        for tree in use_trees(code):
            if node == "mod" and tree.startswith("self::"):
                names = heads(tree[len("self::"):])
            elif tree.startswith("crate::routes::"):
                names = heads(tree[len("crate::routes::"):])
            elif tree.startswith("super::super::") and nested:
                names = heads(tree[len("super::super::"):])
            elif tree.startswith("super::") and not nested:
                names = heads(tree[len("super::"):])
            else:
                continue
            for name in names:
                found = target(name)
                if found and found != node:
                    graph[node].add(found)
        if node == "mod":
            # `mod.rs` names its children directly: `docs::asset`.
            for match in re.finditer(r"(?<![\w:])(\w+)::", code):
                if match.group(1) in modules:
                    graph[node].add(match.group(1))
        # Paths in expressions: `super::name::...`, `super::name(`, `crate::routes::name`.
        prefix = r"super::super::" if nested else r"(?<!super::)super::"
        for pattern in (prefix, r"crate::routes::"):
            for match in re.finditer(pattern + r"(\w+)", code):
                found = target(match.group(1))
                if found and found != node:
                    graph[node].add(found)
    return graph


def cycles(graph: dict):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    graph = edges()
    if "--dot" in sys.argv[1:]:
        print("digraph routes {")
        for node, targets in graph.items():
            for t in sorted(targets):
                print(f'  "{node}" -> "{t}";')
        print("}")
        return 0
    for node, targets in graph.items():
        print(f"{node:12} -> {', '.join(sorted(targets)) or '(nothing)'}")
    found = cycles(graph)
    for component in found:
        print(f"cycle: {' <-> '.join(component)}")
    if not found:
        print("no cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
