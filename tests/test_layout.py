"""The layout the tree promises: packages form a DAG (function-local imports counted), the search path imports
no other project package, ``retriever``'s subpackages import only those below them, no script lives in an
installed package, and no module or function outgrows what a reader takes in at once."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("retriever", "eval", "experts")
ALLOWED = {"retriever": set(), "eval": {"retriever"}, "experts": {"retriever", "eval"}}  # cli and benchmarks: all
# retriever's layers, lowest first: each subpackage imports only the layers before it. The facade
# ``router_retriever`` (a module) sits on the subpackages below it; ``adapters`` and ``service`` build on the facade
# (``lazy`` is the helper every ``__init__`` imports)
LAYERS = ("storage", "encoding", "index", "ranking", "routers", "router_retriever", "adapters", "service")
SUBPACKAGES = tuple(layer for layer in LAYERS if layer != "router_retriever")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        found |= {alias.name for alias in node.names} if isinstance(node, ast.Import) else \
            {node.module or ""} if isinstance(node, ast.ImportFrom) and node.level == 0 else set()
    return found


def imported_packages(path: Path) -> set[str]:
    """Project packages that ``path`` imports anywhere."""
    return {name.split(".")[0] for name in imported_modules(path)} & set(PACKAGES)


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


def test_retriever_subpackages_import_only_those_below():
    order = {"lazy": -1} | {name: rank for rank, name in enumerate(LAYERS)}  # lazy: the __init__s' helper
    assert {p.name for p in (REPO / "retriever").iterdir() if (p / "__init__.py").is_file()} == set(SUBPACKAGES)
    for sub in SUBPACKAGES:
        for path in sorted((REPO / "retriever" / sub).rglob("*.py")):
            targets = {name.split(".")[1] for name in imported_modules(path)
                       if name.startswith("retriever.") and name.count(".") >= 1}
            targets |= {value.split(".")[1] for value in module_imports(path) if value.startswith("retriever.")} \
                if path.name == "__init__.py" else set()
            above = {t for t in targets if order.get(t, len(LAYERS)) > order[sub]}
            assert not above, f"{path.relative_to(REPO)} imports retriever.{sorted(above)}, above {sub!r}"
    facade = {name.split(".")[1] for name in imported_modules(REPO / "retriever" / "router_retriever.py")
              if name.startswith("retriever.")}
    assert not {t for t in facade if order.get(t, -1) > order["router_retriever"]}  # nothing above the facade


def test_no_module_or_function_too_long_to_read():
    paths = [REPO / "cli.py", REPO / "cli_options.py",
             *(p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py")))]
    long = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not long, f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function:\n" + "\n".join(long)


def test_no_script_in_an_installed_package():
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert '__name__ == "__main__"' not in text and "argparse" not in text, path


def test_every_package_says_what_lives_there():
    for package in (*PACKAGES, *(f"retriever/{sub}" for sub in SUBPACKAGES)):
        init = ast.parse((REPO / package / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(init), package
        assert any(isinstance(n, ast.Assign) and "__all__" in ast.unparse(n.targets[0])
                   for n in init.body), f"{package}/__init__.py has no __all__"
    assert (REPO / "benchmarks" / "README.md").is_file()
