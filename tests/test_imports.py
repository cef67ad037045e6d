"""The import graph of `cugd_core` has no cycle, library modules do not reach up into the CLI, the
pack's imports are at the top of each module, and no node module imports another.

The graph is read from the source (`ast`), not from `sys.modules`: every `import` and `from ... import`
anywhere in a module (function-level ones included, since they are dependencies all the same),
relative imports resolved, and a package's `__init__` counted as imported with each of its modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests._paths import REPO

PACKAGE = REPO / "cugd_core"


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of a package folder (`pkg`, `pkg.sub`, `pkg.sub.mod`)."""
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (directly, or as the parent package of one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import submodule`
        else:
            continue
        for t in targets:
            if t in known:
                found.update([t, *ancestors(t)])
    # the importer's own packages are already being imported when its code runs
    return {t for t in found if t in known and t != name and t not in ancestors(name)}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path `[a, b, ..., a]`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def test_the_walker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from . import b\nfrom .sub.c import f\n",  # a submodule by name; a module of a subpackage
        "b.py": "def g():\n    from .sub import d  # function-level\n",
        "e.py": "import pkg.a\nfrom os import path\n",  # absolute; outside the package: ignored
        "sub/__init__.py": "from .c import f\n",
        "sub/c.py": "from ..e import x\n",  # two levels up
        "sub/d.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = import_graph(pkg)
    assert g["pkg.a"] == {"pkg.b", "pkg.sub", "pkg.sub.c"}  # the parent package runs too; `pkg` itself is running
    assert g["pkg.b"] == {"pkg.sub", "pkg.sub.d"}
    assert g["pkg.e"] == {"pkg.a"}
    assert g["pkg.sub"] == {"pkg.sub.c"}
    assert g["pkg.sub.c"] == {"pkg.e"}
    cycle = find_cycle(g)  # a -> sub.c -> e -> a, reached through b and sub
    assert cycle[0] == cycle[-1] and {"pkg.a", "pkg.e", "pkg.sub.c"} <= set(cycle)
    assert all(b in g[a] for a, b in zip(cycle, cycle[1:]))
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_cugd_core_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_modules_do_not_import_the_command_line():
    """Only the entry point imports `commands`; devices, errors and defaults live in core modules."""
    graph = import_graph()
    users = sorted(n for n, deps in graph.items() if not n.startswith("cugd_core.commands")
                   and any(d.startswith("cugd_core.commands") for d in deps))
    assert users == ["cugd_core.__main__"]


def test_only_the_commands_package_uses_argparse():
    """The command line has one owner: library modules define no options and parse no arguments."""
    users = sorted(name for name, path in modules(PACKAGE).items()
                   if any(isinstance(node, (ast.Import, ast.ImportFrom))
                          and "argparse" in ([a.name for a in node.names] if isinstance(node, ast.Import)
                                             else [node.module])
                          for node in ast.walk(ast.parse(path.read_text()))))
    assert users and all(n.startswith("cugd_core.commands") for n in users), users


def deferred_internal_imports(package: Path) -> list[str]:
    """`file:line` of each import of the package's own modules inside a function or class, without a
    comment on its line saying why it is deferred."""
    mods = modules(package)
    known, found = set(mods), []
    for name, path in mods.items():
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text(), str(path))
        for scope in ast.walk(tree):
            if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for node in ast.walk(scope):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and imports_of_node(name, path, node, known) \
                        and "#" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return sorted(set(found))


def imports_of_node(name: str, path: Path, node: ast.AST, known: set[str]) -> bool:
    """Whether one import statement names a module of the package (relative imports always do)."""
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] in {k.split(".")[0] for k in known}
    return any(a.name.split(".")[0] in {k.split(".")[0] for k in known} for a in node.names)


def test_package_imports_are_at_the_top():
    """A function-level import of the package's own code hides a dependency; one deferred on purpose
    (a heavy optional module) says why in a comment on its line."""
    assert deferred_internal_imports(PACKAGE) == []
    assert deferred_internal_imports(REPO / "nodes") == []


def test_no_node_module_imports_another():
    """One broken node module must disable only its own nodes: node modules share code only through
    the non-node modules (types, widgets, comfy_bridge, models)."""
    import re

    node_modules = re.search(r"NODE_MODULES = \(([^)]*)\)", (REPO / "nodes" / "__init__.py").read_text()).group(1)
    names = {f"nodes.{m}" for m in re.findall(r'"(\w+)"', node_modules)}
    assert {"nodes.enhance", "nodes.sampler", "nodes.priors"} <= names
    graph = import_graph(REPO / "nodes")
    assert {m: sorted(graph[m] & names) for m in names if graph[m] & names} == {}
