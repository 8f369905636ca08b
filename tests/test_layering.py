"""The package's layers: imports go downhill and never round in a circle.

From the bottom: ``config``/``registry``/``tasks`` -> ``data`` and ``models`` -> ``balancing`` and
``train`` -> ``methods`` -> ``runs``/``report``/``compress`` -> ``experiments``.  Every import
counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mtlrepro"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> nx.DiGraph:
    """mtlrepro module -> the mtlrepro modules it imports (``from a import b`` counts as
    ``a.b`` when that is a module)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in modules
                    else node.module
                    for alias in node.names
                ]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in modules and t != name)
    return graph


GRAPH = _import_graph()


def _imports_of(prefix: str) -> set[tuple[str, str]]:
    """(importer, imported) pairs of the modules named ``prefix`` or under it."""
    return {
        (a, b) for a, b in GRAPH.edges if a == prefix or a.startswith(prefix + ".")
    }


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_the_package() -> None:
    assert {"mtlrepro.train", "mtlrepro.data.base", "mtlrepro.models.multitask"} <= set(GRAPH)
    assert ("mtlrepro.train", "mtlrepro.balancing") in GRAPH.edges


def test_the_import_graph_has_no_cycles() -> None:
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("mtlrepro.data", ("mtlrepro.train", "mtlrepro.balancing", "mtlrepro.methods",
                           "mtlrepro.experiments", "mtlrepro.models")),
        ("mtlrepro.models", ("mtlrepro.train", "mtlrepro.balancing", "mtlrepro.methods",
                             "mtlrepro.experiments", "mtlrepro.data")),
        ("mtlrepro.train", ("mtlrepro.methods", "mtlrepro.experiments", "mtlrepro.models",
                            "mtlrepro.data")),
        ("mtlrepro.methods", ("mtlrepro.experiments",)),
        ("mtlrepro.config", ("mtlrepro",)),
    ],
)
def test_a_layer_never_imports_the_layers_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(
        (a, b) for a, b in _imports_of(layer) if _under(b, *forbidden) and not _under(b, layer)
    )
    assert not bad, f"{layer} must not import {forbidden}: {bad}"


def _identifiers(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.update(node.name.split("."))
    return names


def test_the_training_loop_never_names_a_method() -> None:
    """No module, public class, function or constant of ``methods/`` appears in train.py's
    code (its comments may mention one as an example)."""
    method_names: set[str] = set()
    for path in (PACKAGE / "methods").glob("*.py"):
        tree = ast.parse(path.read_text())
        method_names.add(path.stem)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                method_names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                method_names.update(t.id for t in targets if isinstance(t, ast.Name))
    method_names = {n for n in method_names if not n.startswith("_")}
    assert {"proximal", "group_norms", "DistinctivenessPruning"} <= method_names
    named = sorted(method_names & _identifiers(ast.parse((PACKAGE / "train.py").read_text())))
    assert not named, f"train.py names {named} from methods/"
