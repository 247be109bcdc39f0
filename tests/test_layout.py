"""The layout the tree promises: packages form a DAG (function-local imports counted), the search path imports
no other project package, and no script lives in an installed package."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("retriever", "eval", "experts")
ALLOWED = {"retriever": set(), "eval": {"retriever"}, "experts": {"retriever", "eval"}}  # cli and benchmarks: all


def imported_packages(path: Path) -> set[str]:
    """Project packages that ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


def module_imports(path: Path) -> set[str]:
    """Module names in a package ``__init__``'s ``lazy_exports`` table (imports in all but syntax)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value.split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] in PACKAGES
            and "." in node.value}


def test_packages_form_a_dag_and_retriever_stands_alone():
    edges = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            targets = imported_packages(path) | (module_imports(path) if path.name == "__init__.py" else set())
            bad = targets - ALLOWED[package] - {package}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
            edges.setdefault(package, set()).update(targets - {package})
    assert edges["retriever"] == set()  # the search path a deployed service needs imports nothing above it
    assert edges == {"retriever": set(), "eval": {"retriever"}, "experts": {"retriever", "eval"}}


def test_no_script_in_an_installed_package():
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert '__name__ == "__main__"' not in text and "argparse" not in text, path


def test_every_package_says_what_lives_there():
    for package in (*PACKAGES, "retriever/routers"):
        init = ast.parse((REPO / package / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(init), package
        assert any(isinstance(n, ast.Assign) and "__all__" in ast.unparse(n.targets[0])
                   for n in init.body), f"{package}/__init__.py has no __all__"
    assert (REPO / "benchmarks" / "README.md").is_file()
