"""Package-structure checks for rlaifv_core, read from the source alone.

Everything here works on `ast` trees: no module of the project is imported, so these tests are fast and load
no torch (tests/conftest.py still does, for the other tests). The rules are the layout the README's
"Layout" section describes:

* rlaifv_core's import graph is acyclic;
* only rlaifv_core/shapes/ (and tests/, bench/) touches the shapes world;
* rlaifv_core/backends/ is a leaf over the foundation modules, and rlaifv_core never imports Prefect;
* tasks/ and flows/ use only rlaifv_core's public names;
* every rlaifv_core module has a docstring and stays under MAX_LINES lines.

How an import becomes graph edges (see `import_refs` and `executed_modules`):

* Every import statement counts wherever it sits: module top level, inside functions, methods and classes,
  under `try:` and under `if TYPE_CHECKING:`. TYPE_CHECKING imports are counted on purpose: a cycle that only
  type checkers see is still a design cycle (and is one refactor away from a runtime ImportError).
* Relative imports are resolved against the importer (`from ..backends.base import Backend` in
  rlaifv_core.models.roles names rlaifv_core.backends.base). `from PKG import NAME` names `PKG.NAME` when that
  is a module (file or package) in the tree, else `PKG`.
* Importing `a.b.c` also runs the packages `a` and `a.b`, so those `__init__` modules get edges too, except
  the importer's own ancestors: they are already running when the importer is imported (without that rule,
  `from .base import X` in backends/hf.py would make a spurious backends/__init__ <-> backends/hf cycle).
  The module an import names explicitly always gets its edge, ancestor or not (`from . import NAME` reading
  a name out of the parent's `__init__` really does depend on it).
* Only edges to modules inside rlaifv_core count. Import strings (`importlib.import_module("...")`,
  `__import__`, `-m rlaifv_core.x` command lines, module names passed as strings) are not edges; every such
  literal must still name a module of the tree (`test_modules_named_by_string_exist`).
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "rlaifv_core"
SHAPES = "rlaifv_core.shapes"
BACKENDS = "rlaifv_core.backends"
FOUNDATION = ("rlaifv_core.seeds", "rlaifv_core.fingerprints", "rlaifv_core.config")  # what backends/ may use
SHAPES_FREE_DIRS = ("rlaifv_core", "tasks", "flows", "deployments")  # not tests/ or bench/: they may use shapes
PUBLIC_API_USERS = ("tasks", "flows")
MAX_LINES = 420  # the target is ~400


# ---------------------------------------------------------------------------------------------------------------
# Reading the source


@dataclass(frozen=True)
class ImportRef:
    """One imported name, absolute: `import source` (name None) or `from source import name`, at path:line."""

    source: str
    name: str | None
    path: Path
    line: int

    @property
    def dotted(self) -> str:
        """The deepest dotted name the statement mentions (`from a.b import c` -> `a.b.c`)."""
        return f"{self.source}.{self.name}" if self.name else self.source


@dataclass(frozen=True)
class Edge:
    """Graph edge `importer -> target`, from the first import that causes it, at path:line (`via`: the module
    imported, when the target is a package `__init__` that only runs because something below it was imported);
    `also`: the lines of the importer's other imports that cause the same edge (all must go to remove it)."""

    importer: str
    target: str
    path: Path
    line: int
    via: str | None = None
    also: tuple[int, ...] = ()


def where(path: Path, line: int | None = None) -> str:
    """`rlaifv_core/x.py:12`, relative to the repository root when possible."""
    try:
        shown = path.relative_to(ROOT).as_posix()
    except ValueError:
        shown = path.as_posix()
    return f"{shown}:{line}" if line is not None else shown


def is_under(dotted: str, prefix: str) -> bool:
    """Whether `dotted` is the module `prefix` or something below it."""
    return dotted == prefix or dotted.startswith(prefix + ".")


def module_files(root: Path, top: str) -> dict[str, Path]:
    """Every .py file under root/top by dotted module name (a package's `__init__.py` is the package)."""
    modules = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


@lru_cache(maxsize=None)
def parse(path: Path) -> ast.Module:
    """The file's syntax tree (cached: several tests read the same files)."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def import_refs(module: str, path: Path) -> list[ImportRef]:
    """Every import in the file, at any depth (functions, classes, `if TYPE_CHECKING:`), made absolute."""
    is_package = path.name == "__init__.py"
    refs = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            refs += [ImportRef(alias.name, None, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                source = ".".join(package + ([node.module] if node.module else []))
            else:
                source = node.module
            refs += [ImportRef(source, None if a.name == "*" else a.name, path, node.lineno) for a in node.names]
    return sorted(refs, key=lambda r: r.line)


def executed_modules(ref: ImportRef, importer: str, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """The tree modules that running `ref` inside `importer` executes, as (module, via): via is None for the
    module the import names, and that module for the packages above it that run first.

    The named module is `source.name` when that is a module in the tree, else `source`; the packages above it
    run first, except the importer's own ancestors (already running). The importer itself is dropped."""
    named = ref.dotted if ref.name and ref.dotted in modules else ref.source
    parts = named.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts))]
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    executed = [(m, named) for m in chain if m in modules and m not in own]
    if named in modules and named != importer:
        executed.append((named, None))
    return executed


def build_graph(root: Path, top: str) -> dict[str, list[Edge]]:
    """Import graph of the package root/top: module -> its edges to other modules of that package (one edge per
    target, located at the first import that causes it)."""
    modules = module_files(root, top)
    graph = {}
    for module, path in modules.items():
        causes = {}  # target -> [(line, via)] in line order
        for ref in import_refs(module, path):
            for target, via in executed_modules(ref, module, modules):
                causes.setdefault(target, []).append((ref.line, via))
        edges = []
        for target, ((line, via), *others) in causes.items():
            also = tuple(sorted({other for other, _ in others} - {line}))
            edges.append(Edge(module, target, path, line, via, also))
        graph[module] = sorted(edges, key=lambda edge: (edge.line, edge.target))
    return graph


def shortest_cycle_through(graph: dict[str, list[Edge]], start: str) -> list[Edge] | None:
    """A shortest cycle through `start` as its edges (breadth-first search back to `start`), or None."""
    came_by = {start: None}
    queue = deque([start])
    while queue:
        for edge in graph.get(queue.popleft(), ()):
            if edge.target == start:
                cycle = [edge]
                while came_by[cycle[0].importer] is not None:
                    cycle.insert(0, came_by[cycle[0].importer])
                return cycle
            if edge.target not in came_by:
                came_by[edge.target] = edge
                queue.append(edge.target)
    return None


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """A shortest cycle of the graph (the first by module name among the shortest), or None if acyclic."""
    cycles = [cycle for module in sorted(graph) if (cycle := shortest_cycle_through(graph, module))]
    return min(cycles, key=len, default=None)


def modules_on_cycles(graph: dict[str, list[Edge]]) -> list[str]:
    """Every module that lies on some cycle (it can reach itself)."""
    def reachable(start):
        seen, stack = set(), [start]
        while stack:
            for edge in graph.get(stack.pop(), ()):
                if edge.target not in seen:
                    seen.add(edge.target)
                    stack.append(edge.target)
        return seen

    return sorted(m for m in graph if m in reachable(m))


def format_cycle(cycle: list[Edge]) -> str:
    """`a (a.py:3) -> b (b.py:7 via b.c; also :9) -> a`: each module with the imports that lead to the next."""
    steps = []
    for edge in cycle:
        via = f" via {edge.via}" if edge.via else ""
        also = "; also " + ", ".join(f":{line}" for line in edge.also) if edge.also else ""
        steps.append(f"{edge.importer} ({where(edge.path, edge.line)}{via}{also})")
    return " -> ".join(steps + [cycle[0].importer])


def scanned_files(dirs) -> list[tuple[str, Path]]:
    """(module name, path) of every .py file under the given top-level directories of the repository."""
    return [item for top in dirs if (ROOT / top).is_dir() for item in module_files(ROOT, top).items()]


# ---------------------------------------------------------------------------------------------------------------
# The rules


def statement(ref_group: list[ImportRef]) -> str:
    """`path:line from a.b import x, y` (or `path:line import a.b`) for the refs of one import statement."""
    first = ref_group[0]
    names = ", ".join(r.name for r in ref_group if r.name)
    code = f"from {first.source} import {names}" if names else f"import {first.source}"
    return f"{where(first.path, first.line)}  {code}"


def statements(refs: list[ImportRef]) -> list[str]:
    """`statement` for each import statement among `refs` (refs grouped by file, line and source)."""
    groups = {}
    for ref in refs:
        groups.setdefault((ref.path, ref.line, ref.source), []).append(ref)
    return [statement(group) for group in groups.values()]


def fail_listing(offenders: list[str], rule: str) -> None:
    """Fail with the rule (how to fix) and every offender on its own line, if there are offenders."""
    if offenders:
        pytest.fail(f"{rule}\n  " + "\n  ".join(offenders), pytrace=False)


def test_core_import_graph_is_acyclic():
    graph = build_graph(ROOT, CORE)
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail(
            f"import cycle in rlaifv_core (a shortest one; function-level and TYPE_CHECKING imports count, and "
            f"`via X` means the package __init__ runs because X below it is imported; `also` lists the importer's "
            f"other imports that make the same edge):\n  {format_cycle(cycle)}\n"
            f"Break an edge: move the shared code down into the lower module, or let the lower layer take what it "
            f"needs as an argument or through rlaifv_core.plugins.\n"
            f"All modules on some cycle: {', '.join(modules_on_cycles(graph))}", pytrace=False)


def test_only_shapes_uses_shapes():
    refs = [ref for module, path in scanned_files(SHAPES_FREE_DIRS) if not is_under(module, SHAPES)
            for ref in import_refs(module, path) if is_under(ref.dotted, SHAPES)]
    fail_listing(statements(refs),
                 "only rlaifv_core/shapes/ (and tests/, bench/) may import rlaifv_core.shapes; elsewhere reach the "
                 "shapes world through the registries in rlaifv_core.plugins, which the shapes plug-in fills:")


def test_backends_is_a_leaf():
    allowed = (BACKENDS, *FOUNDATION)
    refs = [ref for module, path in module_files(ROOT, CORE).items() if is_under(module, BACKENDS)
            for ref in import_refs(module, path)
            if is_under(ref.dotted, CORE) and not any(is_under(ref.dotted, m) for m in allowed)]
    fail_listing(statements(refs),
                 f"rlaifv_core/backends/ must be a leaf: it may import only rlaifv_core.backends.* and the foundation "
                 f"({', '.join(FOUNDATION)}); move what it needs down into those, or let the caller pass it in:")


def test_core_never_imports_prefect():
    def prefect(name):
        return name.split(".")[0] == "prefect" or name.startswith("prefect_")  # prefect_dask, prefect_ray, ...

    refs = [ref for module, path in module_files(ROOT, CORE).items()
            for ref in import_refs(module, path) if prefect(ref.source)]
    fail_listing(statements(refs), "rlaifv_core must not import Prefect (no module of it, not even inside a "
                                   "function): Prefect belongs to tasks/ and flows/, which call into rlaifv_core:")


def private(name: str) -> bool:
    """`_name` is private; `__dunder__` is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def core_module_bindings(tree: ast.Module, core_modules: dict[str, Path]) -> dict[str, str]:
    """Names the file binds to rlaifv_core modules (any scope): `import rlaifv_core.x as y` -> y,
    `import rlaifv_core.x` -> rlaifv_core, `from rlaifv_core import x` (x a module) -> x."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_under(alias.name, CORE):
                    bound[alias.asname or CORE] = alias.name if alias.asname else CORE
        elif isinstance(node, ast.ImportFrom) and not node.level and is_under(node.module or "", CORE):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in core_modules:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def private_attribute_uses(path: Path, bound: dict[str, str]) -> list[str]:
    """`mod._x` and `getattr(mod, "_x")` where `mod` (or `mod.a.b`) is an rlaifv_core module bound in the file."""
    def chain(expr):  # "rlaifv_core.x.a" for `y.a` when y is bound to rlaifv_core.x; None otherwise
        if isinstance(expr, ast.Name):
            return bound.get(expr.id)
        if isinstance(expr, ast.Attribute) and not private(expr.attr) and (base := chain(expr.value)):
            return f"{base}.{expr.attr}"
        return None

    uses = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Attribute) and private(node.attr) and (base := chain(node.value)):
            uses.append(f"{where(path, node.lineno)}  {ast.unparse(node)}  ({base}.{node.attr})")
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2
              and (base := chain(node.args[0])) and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and private(node.args[1].value)):
            uses.append(f"{where(path, node.lineno)}  {ast.unparse(node)}  ({base}.{node.args[1].value})")
    return sorted(uses, key=lambda use: int(use.split(":")[1].split()[0]))


def test_tasks_and_flows_use_only_public_core_names():
    core_modules = module_files(ROOT, CORE)
    offenders = []
    for module, path in scanned_files(PUBLIC_API_USERS):
        offenders += statements([ref for ref in import_refs(module, path)
                                 if is_under(ref.source, CORE) and any(map(private, ref.dotted.split(".")))])
        offenders += private_attribute_uses(path, core_module_bindings(parse(path), core_modules))
    fail_listing(offenders, "tasks/ and flows/ may use only public rlaifv_core names; make the name public in "
                            "rlaifv_core (drop the underscore, give it a docstring) or add a public function:")


def test_core_modules_have_docstrings_and_stay_small():
    missing, too_long = [], []
    for folder in sorted({path.parent for path in (ROOT / CORE).rglob("*.py") if "__pycache__" not in path.parts}):
        if not (folder / "__init__.py").exists():  # a namespace package: packages.find leaves it out of the wheel
            missing.append(f"{where(folder)}/  (no __init__.py: add one, with a docstring)")
    for module, path in module_files(ROOT, CORE).items():
        if not (ast.get_docstring(parse(path)) or "").strip():
            missing.append(f"{where(path)}  ({module})")
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long.append(f"{where(path)}: {lines} lines")
    problems = []
    if missing:
        problems.append("modules without a module docstring (add a line or two saying what the module is "
                        "for):\n  " + "\n  ".join(missing))
    if too_long:
        problems.append(f"files over {MAX_LINES} lines (target ~400; split them along the layout plan):\n  "
                        + "\n  ".join(too_long))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_core_imports_resolve():
    # Not a layout rule but a soundness check on the graph: an import of an rlaifv_core module that does not
    # exist (left behind by a move) would silently drop its edges from the cycle check.
    core_modules = module_files(ROOT, CORE)
    refs = [ref for module, path in scanned_files(SHAPES_FREE_DIRS) for ref in import_refs(module, path)
            if is_under(ref.source, CORE) and ref.source not in core_modules
            and not (ROOT / ref.source.replace(".", "/")).is_dir()]  # a folder lacking __init__.py: see above
    fail_listing(statements(refs), "imports of rlaifv_core modules that do not exist (fix the path after the move):")


STRING_IMPORT_CALLS = {"import_module", "__import__", "run_module", "find_spec"}
MODULE_STRING = re.compile(r"rlaifv_core(\.\w+)+(:\w+)?")


def string_imports(path: Path) -> list[str]:
    """Import calls and string constants naming rlaifv_core modules (docstrings left out), as notes."""
    tree = parse(path)
    docstrings = {id(body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and (body := node.body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}
    notes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func in STRING_IMPORT_CALLS:
                notes.append(f"{where(path, node.lineno)} {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if MODULE_STRING.fullmatch(node.value):
                notes.append(f"{where(path, node.lineno)} names {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and ast.unparse(node)[2:].startswith("rlaifv_core."):
            notes.append(f"{where(path, node.lineno)} names {ast.unparse(node)}")
    return notes


def test_modules_named_by_string_exist():
    # Modules reached by name at run time (cache policies naming the source they hash, the accelerate
    # command line, plug-ins named by RLAIFV_PLUGINS) are invisible to the graph above: each name that
    # is a literal must be a module of the tree, or a renamed module would break a cache key or a launch.
    core_modules = module_files(ROOT, CORE)
    stale = []
    for _, path in scanned_files(SHAPES_FREE_DIRS):
        for note in string_imports(path):
            name = MODULE_STRING.search(note)
            if name and "{" not in note and name.group(0).split(":")[0] not in core_modules:
                stale.append(note)
    assert not stale, "module names in strings that name no module of rlaifv_core:\n  " + "\n  ".join(stale)


# ---------------------------------------------------------------------------------------------------------------
# The checker checks itself, on synthetic packages


def write_package(root: Path, files: dict[str, str]) -> None:
    """Write {relative path: source} under root."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cycle_finder_sees_a_function_level_relative_import(tmp_path):
    write_package(tmp_path, {
        "synth/__init__.py": '"""A synthetic package."""\n',
        "synth/a.py": "from .b import f\n",
        "synth/b.py": "import os\n\n\ndef f():\n    from . import a\n    return a\n",
        "synth/c.py": "from .a import f\n",  # hangs off the cycle, is not on it
    })
    graph = build_graph(tmp_path, "synth")
    cycle = find_cycle(graph)
    assert cycle is not None
    assert [(e.importer, e.target, e.path.name, e.line) for e in cycle] == [
        ("synth.a", "synth.b", "a.py", 1), ("synth.b", "synth.a", "b.py", 5)]
    assert format_cycle(cycle).endswith("-> synth.a")
    assert modules_on_cycles(graph) == ["synth.a", "synth.b"]


def test_cycle_finder_sees_package_inits_and_type_checking(tmp_path):
    write_package(tmp_path, {
        "synth/__init__.py": "",
        # c imports synth.sub.leaf, which runs synth/sub/__init__.py, which (in a function) imports c back
        "synth/c.py": "from .sub.leaf import y\n",
        "synth/sub/__init__.py": "def g():\n    from ..c import y\n",
        "synth/sub/leaf.py": "from .other import z\nfrom . import other\ny = z\n",  # no leaf -> sub edge
        "synth/sub/other.py": "z = 1\n",
        # a cycle that only exists under TYPE_CHECKING and in a method
        "synth/t1.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from synth.t2 import C\n",
        "synth/t2.py": "class C:\n    def m(self):\n        import synth.t1\n",
    })
    graph = build_graph(tmp_path, "synth")
    edges = {(e.importer, e.target, e.via) for es in graph.values() for e in es}
    assert ("synth.c", "synth.sub", "synth.sub.leaf") in edges  # the package __init__ that the import runs
    assert ("synth.sub.leaf", "synth.sub.other", None) in edges
    assert not any(e[0] == "synth.sub.leaf" and e[1] in ("synth", "synth.sub") for e in edges)
    assert modules_on_cycles(graph) == ["synth.c", "synth.sub", "synth.t1", "synth.t2"]
    cycle = find_cycle(graph)
    assert [e.importer for e in cycle] in (["synth.c", "synth.sub"], ["synth.t1", "synth.t2"])
    write_package(tmp_path, {"synth/sub/__init__.py": "", "synth/t2.py": "class C:\n    pass\n"})
    parse.cache_clear()
    assert find_cycle(build_graph(tmp_path, "synth")) is None
