"""The package's layering rules, checked on the source (ast, no imports executed):

- no module imports a private name (leading underscore) from another module, in the package,
  the tests, the scripts and the benchmarks alike;
- the package's modules form no import cycle (every import counts, lazy ones inside functions
  included: a cycle is a layering error even where Python happens to resolve it);
- no package file is longer than MAX_LINES unless its module docstring says why ("long because").
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "oea_trt"
MAX_LINES = 400
SCANNED = ("oea_trt", "tests", "scripts", "benchmarks", "examples", "builder")


def _python_files(folder: str) -> List[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "results" not in p.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(module imported from, names) for every `from X import ...` and `import X` in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _ours(module: str) -> bool:
    """A module of this repository: the package, or a helper file beside a test or script."""
    if module == PACKAGE or module.startswith(PACKAGE + "."):
        return True
    return any((ROOT / folder / f"{module.replace('.', '/')}.py").is_file() for folder in SCANNED)


def private_imports() -> List[str]:
    """Private names imported from our own modules (a third-party library's private names, e.g.
    tensorrt_llm's, are the integration's business and are guarded by the 1.2.1 symbol list)."""
    found = []
    for folder in SCANNED:
        for path in _python_files(folder):
            for module, names in _imports(path):
                bad = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if bad and _ours(module):
                    found.append(f"{path.relative_to(ROOT)}: from {module} import {', '.join(bad)}")
    return found


def package_graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in _python_files(PACKAGE)}
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for module, names in _imports(path):
            if not module.startswith(PACKAGE):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in files] or [module]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan). A package's __init__
    re-exporting its own submodules is not a cycle of the design: edges from a submodule to an
    ancestor package are ignored."""
    def is_ancestor(a: str, b: str) -> bool:
        return b.startswith(a + ".")

    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    result: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if is_ancestor(w, v):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def long_files() -> List[str]:
    found = []
    for path in _python_files(PACKAGE):
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "long because" not in doc.lower():
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def test_no_private_name_crosses_a_module():
    assert private_imports() == []


def test_the_package_has_no_import_cycle():
    assert cycles(package_graph()) == []


def test_no_package_file_is_long_without_a_reason():
    assert long_files() == []


def test_the_checks_can_fail(tmp_path):
    """The cycle finder and the private-import finder see what they are meant to see."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"p": {"p.x"}, "p.x": {"p"}}) == []  # a package re-exporting its submodule
    bad = ROOT / "tests" / "_layering_probe_tmp.py"
    bad.write_text("from oea_trt.routing.reference import _as_float32\n")
    try:
        assert any("_layering_probe_tmp.py" in line for line in private_imports())
    finally:
        bad.unlink()
