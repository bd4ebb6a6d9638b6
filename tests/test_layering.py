"""The import graph of jfx (module-level and function-level imports, read with ``ast``) has no
circle, stages never import each other, and io/, sim/ and the shared layers stay below the
stages."""

from __future__ import annotations

import ast
from pathlib import Path

JFX = Path(__file__).resolve().parents[1] / "jfx"
STAGES = {"spotfind", "azint", "index", "refine", "integrate", "scale", "pixelrefine"}
SHARED = {"", "models", "physics", "symmetry", "solvers", "sharding", "validate",
          "lazy"}  # "": jfx itself


def _modules() -> dict[str, Path]:
    out = {}
    for p in JFX.rglob("*.py"):
        parts = ("jfx", *p.relative_to(JFX).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in mods:
                return ".".join(parts[:i])
        return None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[:len(package) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                # "from pkg import submodule" depends on the submodule only
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.startswith("jfx") else None
                if r is not None and r != m:
                    edges[m].add(r)
    return edges


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_import_circle():
    edges = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(edges):
        if v not in state:
            visit(v)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_layers():
    bad = []
    for m, targets in _graph().items():
        a = _top(m)
        for t in targets:
            b = _top(t)
            if a in STAGES and b in STAGES and a != b:
                bad.append(f"stage {m} imports stage {t}")
            if a == "io" and b not in SHARED | {"io"}:
                bad.append(f"io module {m} imports {t}")
            if a == "sim" and b in STAGES:
                bad.append(f"simulator module {m} imports stage {t}")
            if a in SHARED and b not in SHARED:
                bad.append(f"shared-layer module {m} imports {t}")
    assert not bad, bad
