#!/usr/bin/env python3
"""Lists import circles among s3spool's modules (issue 11: imports point the way data flows).

Reads every file of src/ whole, without its comments, string literals and `#[cfg(test)]`
items (test code may look anywhere), and collects the modules each file names: `crate::`
paths, `super::` and `self::` paths, and paths that start with a child module the file
declares (`mod deliver;` then `use deliver::Job;` in a mod.rs), in `use` trees with their
`{..}` groups and inline alike. Each file is its module (src/upload/deliver.rs ->
upload::deliver); a module and its own child files are one room, so a child naming its
parent (a split `impl` using `super::Uploader`) or the parent its child is no circle.
Prints each group of modules that import each other in a circle.

  --top       top-level modules only (upload, queue, config, ...)
  --src DIR   another source tree (the tests plant circles in a copy)
  --edges     also list every import between rooms

Exit status: 0 with no circle, 1 otherwise.
"""
import re
import sys
from pathlib import Path

args = sys.argv[1:]
TOP = "--top" in args
SRC = (
    Path(args[args.index("--src") + 1]).resolve()
    if "--src" in args
    else Path(__file__).resolve().parent.parent / "src"
)


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p not in ("mod", "lib", "main")]
    return "::".join(parts) or "crate"


def parent_of(module: str) -> str:
    return module.rsplit("::", 1)[0] if "::" in module else "crate"


def strip(text: str) -> str:
    """The code without comments, string and char literals (each a blank), so that braces
    and paths inside them count for nothing. Newlines stay where they were."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif m := re.compile(r'b?r(#*)"').match(text, i):
            if i and (text[i - 1].isalnum() or text[i - 1] == "_"):
                out.append(c)
                i += 1
                continue
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            if c == "b" and i and (text[i - 1].isalnum() or text[i - 1] == "_"):
                out.append(c)
                i += 1
                continue
            i = i + 2 if c == "b" else i + 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            # A char literal ('{', '\n', '\u{7b}'), or a lifetime ('a), which stays.
            m = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'").match(
                text, i
            )
            if m:
                out.append("' '")
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG_TEST = re.compile(r"#\[cfg\(test\)\]")
ATTRIBUTE = re.compile(r"\s*#\[[^\]]*\]")


def without_tests(code: str) -> str:
    """`code` (stripped) without the items marked `#[cfg(test)]`: an item ends at its `;`
    (`mod tests;`, a `use`) or at the brace that closes its first `{`."""
    while m := CFG_TEST.search(code):
        i = m.end()
        while a := ATTRIBUTE.match(code, i):
            i = a.end()
        j = i
        while j < len(code) and code[j] not in "{;":
            j += 1
        if j < len(code) and code[j] == "{":
            depth = 0
            while j < len(code):
                if code[j] == "{":
                    depth += 1
                elif code[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
        code = code[: m.start()] + code[j + 1 :]
    return code


def use_paths(tree: str) -> list:
    """The paths a `use` tree names: `a::{b, c::{d as e, self}}` -> a::b, a::c::d, a::c."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix: str, items: str):
        depth, start = 0, 0
        for k, ch in enumerate(items + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                item, start = items[start:k], k + 1
                if "{" in item:
                    head, rest = item.split("{", 1)
                    walk(prefix + head, rest[:-1])
                elif item:
                    paths.append(prefix + item)

    walk("", tree)
    return [re.sub(r"(::self|::\*)$", "", p) for p in paths]


codes = {p: without_tests(strip(p.read_text())) for p in sorted(SRC.rglob("*.rs"))}
# The modules the build has: the crate roots and every module a built file declares. A
# file declared only under #[cfg(test)] (queue/tests.rs, src/testing.rs) is test code,
# which may look anywhere.
declared = {"crate"}
for path, code in codes.items():
    me = module_of(path)
    for child in re.findall(r"\bmod\s+(\w+)\s*;", code):
        declared.add(child if me == "crate" else f"{me}::{child}")
files = [p for p in codes if module_of(p) in declared]
modules = {module_of(p) for p in files}


def resolve(segments: list) -> str:
    """The longest prefix of a full path (`upload::deliver::Job`) that names a module."""
    for n in range(len(segments), 0, -1):
        name = "::".join(segments[:n])
        if name in modules:
            return name
    return ""


def related(a: str, b: str) -> bool:
    """A module and its own children are one room."""
    return a == b or a.startswith(b + "::") or b.startswith(a + "::") or "crate" in (a, b)


edges = {}
for path in files:
    me = module_of(path)
    code = codes[path]
    children = set(re.findall(r"\bmod\s+(\w+)\s*;", code))
    found = []
    for m in re.finditer(r"\buse\s+([^;]*);", code):
        found.extend(use_paths(m.group(1)))
    code_without_uses = re.sub(r"\buse\s+[^;]*;", " ", code)
    found.extend(
        m.group(1)
        for m in re.finditer(r"(?<![\w:])((?:\w+::)+\w+)", code_without_uses)
    )
    targets = set()
    for full in found:
        segments = [s for s in full.split("::") if s]
        if not segments:
            continue
        base = me
        if segments[0] == "crate":
            segments = segments[1:]
            base = ""
        elif segments[0] in ("super", "self"):
            while segments and segments[0] in ("super", "self"):
                if segments.pop(0) == "super":
                    base = parent_of(base) if base != "crate" else base
        elif segments[0] in children:
            pass
        else:
            continue  # another crate, a type's associated item, a local enum's variant
        prefix = [] if base in ("", "crate") else base.split("::")
        target = resolve(prefix + segments) or ("::".join(prefix) if prefix else "")
        if target:
            targets.add(target)
    for t in targets:
        if related(me, t):
            continue
        a, b = (me.split("::")[0], t.split("::")[0]) if TOP else (me, t)
        if a != b:
            edges.setdefault(a, set()).add(b)

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
if "--edges" in args:
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a]))}")
if not groups:
    print("no import circles")
sys.exit(1 if groups else 0)
