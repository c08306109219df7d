#!/usr/bin/env python3
"""Lists import circles among s3spool's modules (issue 11: imports point the way data flows).

Reads every `crate::a::b` path in src/ (in `use` lines and inline paths) and `super::`
imports, maps each file to its module (src/upload/deliver.rs -> upload::deliver), and
prints each strongly connected group of modules that import each other in a circle.
`--top` looks at top-level modules only (upload, queue, config, ...).
Exit status: 0 with no circle, 1 otherwise.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
TOP = "--top" in sys.argv


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p not in ("mod", "lib", "main")]
    return "::".join(parts) or "crate"


def shorten(name: str) -> str:
    return name.split("::")[0] if TOP else name


def resolve(target: list, modules: set) -> str:
    # The longest prefix of the path that names a module.
    for n in range(len(target), 0, -1):
        name = "::".join(target[:n])
        if name in modules:
            return name
    return ""


# Test-only files (declared under #[cfg(test)]: `tests.rs` beside a module, the fixtures
# in `testing.rs`) may look anywhere, like test modules inside a file.
files = [p for p in SRC.rglob("*.rs") if p.name not in ("tests.rs", "testing.rs")]
modules = {module_of(p) for p in files}
edges = {}
for path in files:
    me = module_of(path)
    text = path.read_text()
    # Drop test modules (they may look anywhere) and comments (doc links are no imports).
    text = text.split("#[cfg(test)]")[0]
    text = re.sub(r"//[^\n]*", "", text)
    targets = set()
    for m in re.finditer(r"crate::((?:\w+::)*\w+)", text):
        targets.add(resolve(m.group(1).split("::"), modules))
    parent = me.rsplit("::", 1)[0] if "::" in me else ""
    is_mod = path.name == "mod.rs"
    base = me if is_mod else parent
    # `use super::{a::b, c}` lists: each item is a path under super.
    for m in re.finditer(r"\bsuper::\{([^}]*)\}", text):
        for item in m.group(1).split(","):
            item = item.strip().split(" as ")[0]
            if item and item != "self":
                text += f"\nsuper::{item}"
    for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
        names = (base.rsplit("::", 1)[0] if is_mod and "::" in base else ("" if is_mod else base))
        full = ([names] if names else []) + m.group(1).split("::")
        targets.add(resolve(full, modules) or names)
    for t in targets:
        if t and shorten(t) != shorten(me):
            edges.setdefault(shorten(me), set()).add(shorten(t))

# Tarjan's strongly connected components.
index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop()
            on.discard(w)
            group.append(w)
            if w == v:
                break
        if len(group) > 1:
            groups.append(sorted(group))


sys.setrecursionlimit(10000)
for v in sorted(set(edges) | {t for ts in edges.values() for t in ts}):
    if v not in index:
        visit(v)
for group in sorted(groups):
    inner = sorted(f"{a} -> {b}" for a in group for b in edges.get(a, ()) if b in group)
    print(f"circle of {len(group)}: {', '.join(group)}")
    for line in inner:
        print(f"    {line}")
if not groups:
    print("no import circles")
sys.exit(1 if groups else 0)
