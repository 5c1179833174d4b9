"""The house's layering, read from the source with `ast`: imports flow one way, never in a loop.

Layers, top to bottom (docs/layout.md draws them): a module may import modules of the layers
below its own, and modules of its own folder (acyclically); never one above, never a sibling
folder of the same layer (a reducer does not import a backbone). Function-local imports of
tlbench modules hide loops, so they are banned except where EXCEPTIONS names them and says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tlbench"

# Top to bottom; each entry is a layer of one or more module prefixes (a folder is one prefix).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tlbench.__main__",),
    ("tlbench.cli",),
    ("tlbench.study",),
    ("tlbench.report",),
    ("tlbench.quality",),
    ("tlbench.measure",),
    ("tlbench.variants",),
    ("tlbench.config",),
    ("tlbench.reducers", "tlbench.backbones", "tlbench.data"),
    ("tlbench.core",),
    ("tlbench.bounds",),
    ("tlbench.results",),
    ("tlbench.schema",),
    ("tlbench.files",),
    ("tlbench.errors",),
    ("tlbench",),  # the package itself: __version__ and lazily imported public names
)
# module -> why it may import tlbench modules inside functions
EXCEPTIONS = {
    "tlbench.cli.measure": "`tlbench --help` must not pay for torch: each command imports what it runs",
    "tlbench.cli.runs": "`tlbench --help` must not pay for torch: each command imports what it runs",
    "tlbench.cli.app": "`tlbench --help` must not pay for torch: option checks import their tables on use",
    "tlbench.config": "config is read at CLI start-up; the reducer registry it checks methods against imports torch",
}
NO_TORCH = ("tlbench.results", "tlbench.report.plots", "tlbench.core", "tlbench.config", "tlbench.errors")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of `path` (TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local |= {id(n) for n in ast.walk(fn)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}", root) else base for a in node.names]
        else:
            continue
        out += [(t, node.lineno, id(node) in local) for t in targets if t.split(".")[0] == root.name]
    return out


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def graph(root: Path = ROOT) -> dict[str, list[tuple[str, int, bool]]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def layer(module: str, layers: Iterable[tuple[str, ...]] = LAYERS) -> tuple[int, str]:
    """(layer index, the prefix that matched: the folder) of a module."""
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            if module == prefix or (module.startswith(prefix + ".") and "." in prefix):
                return i, prefix
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/layout.md)")


def upward(g: dict[str, list[tuple[str, int, bool]]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Imports that run up the order, or sideways into a sibling folder of the same layer."""
    bad = []
    for src, edges in g.items():
        if src == layers[0][0].split(".")[0]:  # the package's __init__: lazy names only
            continue
        i, folder = layer(src, layers)
        for dst, line, _ in edges:
            j, other = layer(dst, layers)
            if j < i or (j == i and other != folder):
                bad.append(f"{src}:{line} imports {dst}")
    return bad


def loops(g: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Sets of modules that import each other (Tarjan's strongly connected components)."""
    edges = {m: sorted({d for d, _, _ in es if d in g and d != m}) for m, es in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_loops() -> None:
    assert loops(graph()) == []


def test_imports_run_down_the_layers() -> None:
    assert upward(graph()) == []


def test_no_function_local_imports_of_tlbench_outside_the_named_exceptions() -> None:
    hidden = [f"{src}:{line} imports {dst}" for src, edges in graph().items() if src not in EXCEPTIONS
              for dst, line, local in edges if local]  # fmt: skip
    assert hidden == []


@pytest.mark.parametrize("module", NO_TORCH)
def test_records_and_results_do_not_import_torch(module: str) -> None:
    path = ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "torch"]


def test_every_module_is_in_a_layer_and_within_size() -> None:
    for path in ROOT.rglob("*.py"):
        layer(module_name(path))
        lines = len(path.read_text(encoding="utf-8").splitlines())
        limit = 520
        assert lines <= limit, f"{path} has {lines} lines: split it"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "tlbench"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_the_checks_find_a_planted_loop_and_an_upward_import(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "core.py": "",
        "errors.py": "",
        "measure/__init__.py": "",
        "measure/a.py": "from tlbench.measure import b\n",
        "measure/b.py": "def f():\n    from tlbench.measure.a import x\n",  # hidden in a function
        "study/__init__.py": "",
        "study/s.py": "import tlbench.core\n",
        "variants.py": "from tlbench.study.s import y\n",  # up the order
    })  # fmt: skip
    g = graph(root)
    assert loops(g) == [["tlbench.measure.a", "tlbench.measure.b"]]
    assert upward(g) == ["tlbench.variants:1 imports tlbench.study.s"]
    assert ("tlbench.measure.a", 2, True) in g["tlbench.measure.b"]
