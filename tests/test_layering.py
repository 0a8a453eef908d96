"""The package's structure: imports point one way, from the app down to the leaves, with no cycle among
modules (imports inside functions count), reference_models imports nothing of autofix, and no module
is over 400 lines. The layers, bottom up, are autofix's subpackages in LAYERS."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "config", "knowledge", "monitor", "run", "remediate", "app"]   # each imports only those before it
MAX_LINES = 400


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str] = frozenset()) -> set[str]:
    """Every module `path` imports, at the top or inside a function, resolved to dotted names."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import module` depends on the module; `from pkg import name` on the package
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names)
    return found


def graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    return {m: {t for t in imports_of(m, p, set(mods)) if t in mods and t != m} for m, p in mods.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), and modules importing themselves."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_autofix_module_sits_in_a_layer():
    loose = [m for m in modules("autofix") if layer(m) is None and m not in ("autofix", "autofix.__main__")]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def test_no_module_imports_a_higher_layer():
    g = graph("autofix")
    upward = [f"{m} -> {t}" for m, targets in g.items() for t in targets
              if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)]
    assert not upward, "imports that point up: " + "; ".join(sorted(upward))


def test_no_import_cycle():
    found = cycles(graph("autofix")) + cycles(graph("reference_models"))
    assert not found, f"import cycles: {found}"


def test_reference_models_imports_nothing_of_autofix():
    bad = [f"{m} -> {t}" for m, p in modules("reference_models").items() for t in imports_of(m, p)
           if t == "autofix" or t.startswith("autofix.")]
    assert not bad, bad


@pytest.mark.parametrize("package", ["autofix", "reference_models"])
def test_no_module_is_over_400_lines(package):
    long = {m: n for m, p in modules(package).items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The checks above can fail: a made-up package with an upward import inside a function and a cycle."""
    g = {"autofix.core.a": {"autofix.app.b"}, "autofix.app.b": {"autofix.core.a"}}
    assert cycles(g) == [["autofix.app.b", "autofix.core.a"]]
    assert layer("autofix.core.a") < layer("autofix.app.b")
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from ..app import cli\n")
    assert "autofix.app.cli" in imports_of("autofix.core.m", src, {"autofix.app.cli"})
