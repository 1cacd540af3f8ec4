"""The engine's modules form a tree a reader can follow: only ``__init__`` imports the Batcher module,
the package's modules import each other without cycles, and no web framework is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import microbatch

PACKAGE = Path(microbatch.__file__).parent
FRAMEWORKS = {"flask", "django", "starlette", "fastapi", "asgiref", "uvicorn", "werkzeug"}


def module_name(path: Path) -> str:
    """``path``'s dotted name inside the package: ``_batcher``, ``remote._host``; a package is its ``__init__``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)


def resolve(importer: str, level: int, module: str | None, names: list[str]) -> set[str]:
    """The package modules a relative import in ``importer`` reaches (``from .. import x`` included)."""
    package = importer.split(".")[:-1]  # the package a module sits in; an __init__ sits in its own
    base = package[: len(package) - (level - 1)] if level > 1 else package
    if module:
        target = ".".join([*base, *module.split(".")])
        return {target if target in GRAPH_NAMES else f"{target}.__init__"}
    found = {".".join([*base, name]) for name in names} & GRAPH_NAMES
    return found or {".".join([*base, "__init__"])}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """``(package modules, top-level packages)`` that ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    siblings: set[str] = set()
    packages: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            siblings |= resolve(name, node.level, node.module, [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
    siblings.discard(name)
    return siblings, packages


MODULES = sorted(PACKAGE.rglob("*.py"))
GRAPH_NAMES = {module_name(path) for path in MODULES}
GRAPH = {module_name(path): imports(path) for path in MODULES}


def test_only_the_package_init_and_the_column_front_import_the_batcher_module() -> None:
    # _columns builds ColumnBatcher on Batcher: a front above it, which only __init__ imports in turn.
    assert sorted(name for name, (siblings, _) in GRAPH.items() if "_batcher" in siblings) == ["__init__", "_columns"]
    assert [name for name, (siblings, _) in GRAPH.items() if "_columns" in siblings] == ["__init__"]


def test_the_graph_sees_the_subpackages() -> None:
    assert "remote._host" in GRAPH and "__init__" in GRAPH["remote._host"][0]


def test_the_modules_import_each_other_without_cycles() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for sibling in GRAPH[name][0]:
            visit(sibling, (*path, name))
        done.add(name)

    for name in GRAPH:
        visit(name, ())


def test_no_web_framework_is_imported() -> None:
    assert {name: packages & FRAMEWORKS for name, (_, packages) in GRAPH.items() if packages & FRAMEWORKS} == {}
