"""The house's shape, measured: imports point one way, and reading records does no heavy work.

The import graph is read from the source with `ast` (nothing is imported), counting imports inside
functions: an import moved into a function to dodge a cycle still makes the cycle at run time. The
only imports left out are those in `if TYPE_CHECKING:` blocks (never run) and the function-level
imports in `LAZY_HEAVY` below, each kept inside its function so that an optional heavy dependency
(torch, transformers, a model) loads only when the function runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmsafety", "goat_bench", "visual_attacks", "harmbench")
WORKLOADS = PACKAGES[1:]

# (importer, imported) pairs of function-level imports that stay out of the graph: each defers an
# optional heavy dependency so that a light path (reading records, --help, the leaderboard) never
# pays for it. Everything else counts.
LAZY_HEAVY: dict[tuple[str, str], str] = {
    # The organism's training code (and its version beside it) imports transformers and the LLaVA
    # adapter, whose module registers its builders here: asked for only when a build runs or a cache
    # path is named, never when the builders are listed.
    ("mmsafety.organisms.builders", "mmsafety.organisms.organism"): "transformers, at build time",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool):
    """(import node, in_function) for every import reachable at run time."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for orelse in child.orelse:
                yield from _walk_one(orelse, in_function)
            continue
        yield from _walk_one(child, in_function)


def _walk_one(node: ast.AST, in_function: bool):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, in_function
    inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    yield from _walk(node, inner)


def _with_ancestors(name: str, modules: dict[str, Path]) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules `name` imports at run time. Importing a.b.c runs a/__init__ and a/b/__init__
    too, so those count, except the importer's own packages (already running when it runs)."""
    is_package = path.name == "__init__.py"
    own = set(_with_ancestors(name, modules))
    found = []
    for node, in_function in _walk(ast.parse(path.read_text(), str(path)), False):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            for module in _with_ancestors(target, modules):
                if module != name and (module not in own or module == target):
                    found.append(Import(name, module, node.lineno, in_function))
    return found


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = modules or project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            if not (imp.in_function and (imp.importer, imp.imported) in LAZY_HEAVY):
                graph[name].add(imp.imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_cycle_finder_finds_a_planted_cycle_and_no_false_one():
    # The checker itself must be able to fail: a three-module loop with a tail is one component.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_inside_functions_and_relative_imports_are_counted(tmp_path):
    (tmp_path / "mmsafety").mkdir()
    (tmp_path / "mmsafety" / "__init__.py").write_text("")
    (tmp_path / "mmsafety" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mmsafety import c\n"
        "def f():\n    from . import b\n")
    (tmp_path / "mmsafety" / "b.py").write_text("import mmsafety.a\n")
    (tmp_path / "mmsafety" / "c.py").write_text("")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    modules = project_modules(tmp_path)
    found = {(i.importer, i.imported, i.in_function) for i in imports_of("mmsafety.a", modules["mmsafety.a"], modules)}
    assert found == {("mmsafety.a", "mmsafety.b", True)}  # c only under TYPE_CHECKING
    assert cycles(import_graph(modules)) == [["mmsafety.a", "mmsafety.b"]]


def test_no_import_cycle_between_the_projects_modules():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s), counting imports inside functions:\n" + "\n".join(
        " <-> ".join(component) for component in found)


def test_packages_point_one_way():
    """Workloads import `mmsafety`; no workload imports another; `mmsafety` imports no workload."""
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        top = name.split(".")[0]
        for imp in imports_of(name, path, modules):
            other = imp.imported.split(".")[0]
            if other != top and other != "mmsafety":
                wrong.append(f"{name}:{imp.line} imports {imp.imported}")
    assert not wrong, "\n".join(wrong)


def test_lazy_heavy_allowlist_names_real_function_level_imports():
    # A stale entry would silently hide a future cycle: every allowlisted pair must still exist.
    modules = project_modules()
    present = {(i.importer, i.imported) for name, path in modules.items()
               for i in imports_of(name, path, modules) if i.in_function}
    assert set(LAZY_HEAVY) <= present, sorted(set(LAZY_HEAVY) - present)


def uncommented_function_imports(path: Path) -> list[int]:
    """Lines of imports inside functions with no comment saying why: none on the import's line, and
    none on the line just above its block of consecutive imports."""
    lines = path.read_text().splitlines()
    found = []
    for node, in_function in _walk(ast.parse("\n".join(lines), str(path)), False):
        if not in_function:
            continue
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
            above -= 1
        if "#" not in lines[node.lineno - 1] and not (above >= 0 and lines[above].strip().startswith("#")):
            found.append(node.lineno)
    return found


def test_every_import_inside_a_function_says_why(tmp_path):
    """An import inside a function is for an optional or heavy dependency, with a comment saying so
    (docs/architecture.md); any other import belongs at the top of its module."""
    missing = [f"{path.relative_to(ROOT)}:{line}" for path in project_modules().values()
               for line in uncommented_function_imports(path)]
    assert missing == [], "move these to the top of the module, or say in a comment what they defer"
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    import json\n\n\ndef g():\n    # heavy: torch\n    import torch\n    import numpy\n")
    assert uncommented_function_imports(planted) == [2]


HEAVY = ("torch", "transformers")


@pytest.fixture(scope="module")
def real_records(tmp_path_factory, organism):
    """Records of two workloads, written by the command line on the organism (a few samples each)."""
    from tests.helpers import run_cli

    runs = tmp_path_factory.mktemp("records")
    for script, args in (("mmsafety-eval", ["task.limit=4"]),
                         ("mmsafety-attack", ["attack.steps=2", "images=1", "heldout_prompts=1"])):
        done = run_cli(script, *args, f"hydra.run.dir={runs / script}")
        assert done.returncode == 0, done.stderr[-3000:]
    return runs


def test_leaderboard_on_json_records_imports_neither_torch_nor_transformers(real_records, tmp_path):
    """The leaderboard reads files: collecting records and writing every format (tables, plots, the HTML
    page with its thumbnails) must not load a model stack."""
    out = tmp_path / "board"
    script = (
        "import json, sys\n"
        "from mmsafety.leaderboard.cli import main\n"
        f"code = main([{str(real_records)!r}, '--out', {str(out)!r}, '--with-paper'])\n"
        f"print(json.dumps({{'code': code, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stdout + done.stderr[-3000:]
    assert (out / "leaderboard.html").is_file()
    assert result["heavy"] == [], f"the leaderboard imported {', '.join(result['heavy'])}"
