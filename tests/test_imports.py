"""The package's import graph is acyclic: every import of every module, function-level ones
included, walked from the source (an import inside a function is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import scalenc

ROOT = Path(scalenc.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _targets(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The scalenc modules ``name`` imports (``from .a import b``: the module ``a.b`` when it
    is one, else the package ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            names = [None] * len(bases)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            bases = [mod] * len(node.names)
            names = [a.name for a in node.names]
        else:
            continue
        for base, sub in zip(bases, names):
            if not base.startswith("scalenc"):
                continue
            full = f"{base}.{sub}" if sub else base
            target = full if full in modules else base
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                deps.add(target)
    return deps


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _targets(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            # a package's __init__ importing its own submodules is how packages re-export
            if n != "scalenc" and (m.startswith(n + ".") or n.startswith(m + ".")) and m in graph and \
                    _is_reexport(n, m):
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _is_reexport(a: str, b: str) -> bool:
    """``a`` is the package that contains ``b`` (its ``__init__`` re-exports it)."""
    return b.startswith(a + ".")


def test_import_graph_is_acyclic():
    graph = import_graph()
    assert "scalenc.engine" in graph and "scalenc.results" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_and_results_are_leaves():
    """The schema and the data contract import nothing that runs or draws."""
    graph = import_graph()
    assert graph["scalenc.config"] <= {"scalenc.align.fir"}  # the delays check: a pure function
    assert graph["scalenc.results"] <= {"scalenc._io", "scalenc.ridge.scoring"}


def test_the_walker_sees_function_level_imports(tmp_path):
    src = "def f():\n    from .trainer import AbstractTrainer\n    import scalenc.sweep\n"
    p = tmp_path / "x.py"
    p.write_text(src)
    mods = _modules()
    assert _targets("scalenc.results", p, mods) == {"scalenc.trainer", "scalenc.sweep"}


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"scalenc.a": {"scalenc.b"}, "scalenc.b": {"scalenc.c"}, "scalenc.c": {"scalenc.a"}}) == \
        ["scalenc.a", "scalenc.b", "scalenc.c", "scalenc.a"]
    assert _cycle({"scalenc.a": {"scalenc.b"}, "scalenc.b": set()}) is None
