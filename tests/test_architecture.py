"""The import graph of hf_ssdd points one way: no cycle, and no module imports from a layer above its own.

Every ``import`` counts, also those inside functions (a lazy import is still a dependency); only imports under
``if TYPE_CHECKING:`` (annotations) are left out.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_ssdd"

# bottom to top; a module's layer is that of its longest matching prefix
LAYERS = [
    # infrastructure: no stage, no artifact
    ["hf_ssdd", "hf_ssdd.utils", "hf_ssdd.io", "hf_ssdd.config", "hf_ssdd.plots", "hf_ssdd.checkpoint",
     "hf_ssdd.runs", "hf_ssdd.hub_client", "hf_ssdd.knn", "hf_ssdd.assets", "hf_ssdd.configs", "hf_ssdd.metrics"],
    ["hf_ssdd.data", "hf_ssdd.models"],  # images in, networks out
    ["hf_ssdd.teachers", "hf_ssdd.ssl"],  # teachers: loaded or trained
    ["hf_ssdd.artifacts", "hf_ssdd.cards"],  # values that cross stages (hf_ssdd.cards: the old path)
    ["hf_ssdd.distill", "hf_ssdd.pretrain"],  # the stages that make and use distilled sets
    ["hf_ssdd.transfer"],  # evaluation of what the stages made
    ["hf_ssdd.hub", "hf_ssdd.quickstart"],  # publishing and the end-to-end pipeline
    ["hf_ssdd.cli"],
]  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "assets" in parts[:2] and len(parts) > 3:  # model code shipped as data, not part of the package
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _layer(module: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("hf_ssdd"):
                found.add(name)
                break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{module} (layer {_layer(module)}) imports {dep} (layer {_layer(dep)})"
        for module, deps in _graph().items()
        for dep in sorted(deps)
        if _layer(dep) > _layer(module) and not module.startswith(dep + ".")  # a package's __init__ aside
    ]
    assert not upward, "\n".join(upward)


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if module.startswith(dep + "."):  # a module importing its own package's __init__
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_imports_and_skips_type_only_ones(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hf_ssdd.hub import push_run\n"
        "def f():\n    from hf_ssdd.cli import main\n"
    )
    assert _imports(source, _modules()) == {"hf_ssdd.cli"}
