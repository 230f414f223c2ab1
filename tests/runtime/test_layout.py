"""The layout of the project's four packages (docs/architecture.md), checked from the modules' own
imports: ``tseg.runtime`` at the bottom (its subpackages in layers), ``tseg.training``,
``tseg.export`` and ``tseg.engines`` above its library, and only the runtime's user benchmarks
(``bench``) and command line (``cli``) above those.

Every import counts, the ones inside functions included (a lazy import is still a dependency):
no cycles between modules; imports go down the layers of :data:`LAYERS` only; no ``_private``
name is imported from another module; no module reaches 500 lines. Read with ``ast``, so nothing
is imported and the test takes well under a second.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

import tseg.runtime

PACKAGE = "tseg.runtime"
ROOT = Path(tseg.runtime.__file__).parent
REPO = Path(__file__).resolve().parents[2]
#: The project's packages and their folders (pyproject.toml's package-dir). Read, never imported:
#: training and export need PyTorch.
PACKAGES = {PACKAGE: ROOT, "tseg.training": REPO / "training", "tseg.export": REPO / "export",
            "tseg.engines": REPO / "engines"}
MAX_LINES = 500

#: Bottom layer first. A module may import from its own subpackage and from lower layers only;
#: two subpackages of one layer never import each other. A new subpackage must be placed here.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),  # the exception root (imports nothing)
    ("util",),  # atomic writes, parallel jobs, versions, signals
    ("wsi", "method", "models"),  # reading slides; the paper's steps as array functions; the bundled model
    ("execution",),  # contract, backends, executor, pipeline, Segmenter
    ("outputs",),  # per-slide result files
    ("cohort",),  # batches, resume, locks, Ray, shards, the cohort report
    ("evaluation",),  # metrics, references, synthetic slides, the demo
    ("service",),  # the HTTP service and hot folder (issue 21)
    ("tseg.training", "tseg.engines"),  # the packages: training (PyTorch); ONNX to TensorRT plans
    ("tseg.export",),  # the package: checkpoints (training) to ONNX, checked for TensorRT (engines)
    ("bench",),  # throughput benchmarks (issue 23)
    ("cli",),  # the command line: may use everything
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the longest prefix that is a module of the package)
    names: tuple[str, ...]  # names taken from it with ``from ... import``
    line: int


def module_name(path: Path, package: str = PACKAGE, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


MODULES = {module_name(p, package, root): p for package, root in PACKAGES.items() for p in sorted(root.rglob("*.py"))}


def in_project(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PACKAGES)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def owning_module(name: str) -> str | None:
    """``name`` if it is a module of the package, else its closest enclosing module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path) -> list[Import]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if in_project(alias.name) and owning_module(alias.name):
                    found.append(Import(module, owning_module(alias.name), (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, path.name == "__init__.py", node)
            if not in_project(base):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:  # ``from tseg.runtime.wsi import dicom_source``: the submodule
                    found.append(Import(module, full, (), node.lineno))
                elif owning_module(base):
                    found.append(Import(module, owning_module(base), (alias.name,), node.lineno))
    return [i for i in found if i.target != module]


IMPORTS = [i for m, p in MODULES.items() for i in imports_of(m, p)]


def layer_of(module: str) -> str:
    """The subpackage (or root module) of ``tseg.runtime.<name>...``; ``""`` for the package itself;
    the package for ``tseg.training``, ``tseg.export`` and ``tseg.engines``."""
    parts = module.split(".")
    if ".".join(parts[:2]) != PACKAGE:
        return ".".join(parts[:2])
    return parts[2] if len(parts) > 2 else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_import_graph_is_read():
    """The checks below see the package: its modules and their imports, lazy ones included."""
    assert len(MODULES) > 40
    pairs = {(i.source, i.target) for i in IMPORTS}
    assert ("tseg.runtime.wsi.slide", "tseg.runtime.wsi.dispatch") in pairs
    assert ("tseg.runtime.cohort.batch", "tseg.runtime.cohort.ray_batch") in pairs  # inside run_batch
    assert ("tseg.runtime.wsi.dispatch", "tseg.runtime.wsi.dicom_source") in pairs  # ``from ... import dicom``
    assert {"tseg.training.train", "tseg.export.onnx_export", "tseg.engines.build"} <= set(MODULES)
    assert ("tseg.engines.build", "tseg.engines.onnx_io") in pairs  # ``from .onnx_io import``
    assert ("tseg.export.onnx_export", "tseg.training.checkpoint") in pairs  # inside a function
    assert ("tseg.runtime.cli.export", "tseg.engines.build") in pairs


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    edges: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        edges[i.source].add(i.target)
        edges.setdefault(i.target, set())
    found = cycles(edges)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
                                                 if i.source in c and i.target in c) for c in found]
    assert not found, "import cycles in tseg.runtime:\n" + "\n".join(detail)


def test_no_cycles_between_layers_and_packages():
    """Nor between subpackages of the runtime and the four packages (issue 28: ``tseg.engines`` <->
    ``tseg.runtime.execution``, ``tseg.export`` <-> ``tseg.training``): a cycle of packages is
    not one of modules, so the module check above cannot see it."""
    edges: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        src, dst = layer_of(i.source), layer_of(i.target)
        if src and dst and src != dst:
            edges[src].add(dst)
            edges.setdefault(dst, set())
    found = cycles(edges)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
                                                 if layer_of(i.source) in c and layer_of(i.target) in c
                                                 and layer_of(i.source) != layer_of(i.target)) for c in found]
    assert not found, "cycles between packages:\n" + "\n".join(detail)


def test_the_runtime_library_never_imports_the_other_packages():
    """Loading a slide, a model or an engine needs only ``tseg.runtime``: below its benchmarks and
    command line, nothing imports training, export or engines (so a deployment never needs them)."""
    top = {"bench", "cli"}
    wrong = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
             if i.source.startswith(PACKAGE) and layer_of(i.source) not in top and not i.target.startswith(PACKAGE)]
    assert not wrong, "\n".join(wrong)


def test_every_subpackage_has_a_layer():
    unplaced = sorted({layer_of(m) for m in MODULES} - set(RANK) - {""})
    assert not unplaced, f"place {unplaced} in LAYERS (tests/runtime/test_layout.py) and docs/architecture.md"


def layer_violation(i: Import) -> str | None:
    """Why ``i`` goes against the layers, or None."""
    src, dst = layer_of(i.source), layer_of(i.target)
    if src == "" or dst == "" or src == dst:  # the package's lazy facade; within one subpackage
        return None
    if src not in RANK or dst not in RANK or RANK[dst] >= RANK[src]:
        return f"{i.source}:{i.line} imports {i.target} ({src} may only use the layers below it)"
    return None


def test_the_layer_rule():
    """Down is allowed; up and sideways (two subpackages of one layer) are not."""
    down = Import("tseg.runtime.cohort.runner", "tseg.runtime.outputs.files", ("write_outputs",), 1)
    inside = Import("tseg.runtime.cohort.batch", "tseg.runtime.cohort.ray_batch", ("run_on_ray",), 1)
    up = Import("tseg.runtime.outputs.files", "tseg.runtime.cohort.resume", ("read_summary",), 1)
    side = Import("tseg.runtime.method.merge", "tseg.runtime.wsi.slide", ("open_slide",), 1)
    assert layer_violation(down) is None and layer_violation(inside) is None
    assert layer_violation(up) and layer_violation(side)
    to_runtime = Import("tseg.engines.build", "tseg.runtime.execution.engine_manifest", ("write_manifest",), 1)
    from_runtime = Import("tseg.runtime.execution.backends.tensorrt", "tseg.engines.build", ("make_logger",), 1)
    back = Import("tseg.training.train", "tseg.export.onnx_export", ("export_checkpoint",), 1)
    cli = Import("tseg.runtime.cli.export", "tseg.engines.build", ("build_engine",), 1)
    assert layer_violation(to_runtime) is None and layer_violation(cli) is None
    assert layer_violation(from_runtime) and layer_violation(back)


def test_imports_go_down_the_layers():
    wrong = [why for why in map(layer_violation, IMPORTS) if why]
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(wrong)


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(paths: dict[str, Path]) -> list[str]:
    """``from tseg... import _name``, and ``module._name`` on a tseg module imported by name."""
    found = []
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules_here: set[str] = set()  # local names bound to tseg modules
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules_here.update(a.asname for a in node.names if a.asname and a.name.startswith("tseg"))
            elif isinstance(node, ast.ImportFrom):
                base = resolve(module, path.name == "__init__.py", node)
                if not base.startswith("tseg"):
                    continue
                for alias in node.names:
                    if private(alias.name):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name} from {base}")
                    elif f"{base}.{alias.name}" in MODULES:
                        modules_here.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules_here and private(node.attr)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_private_names_imported_from_another_module():
    """In the runtime, and in whatever else of the project uses it (tests and benchmarks included):
    a name another module needs is made public or moved."""
    others = {}
    for folder in ("benchmarks", "tests"):
        for p in sorted((REPO / folder).rglob("*.py")) if (REPO / folder).is_dir() else []:
            others[f"{folder}.{p.stem}"] = p
    found = private_imports(MODULES) + private_imports(others)
    assert not found, "\n".join(found)


def test_no_module_over_500_lines():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    big = {m: n for m, n in sizes.items() if n >= MAX_LINES}
    assert not big, f"split these along their seams (docs/architecture.md: < ~450 lines, hard limit {MAX_LINES}): {big}"


@pytest.mark.parametrize("package", sorted({layer_of(m) for m in MODULES if m.startswith(PACKAGE + ".") and m.count(".") >= 3}))
def test_tests_mirror_the_package(package):
    """Each subpackage has its tests in tests/runtime/<subpackage>/ (models is data only)."""
    if package == "models":
        pytest.skip("the bundled model is data; it is tested through execution and evaluation")
    assert sorted((REPO / "tests" / "runtime" / package).glob("test_*.py")), f"no tests/runtime/{package}/test_*.py"


#: Issue 28: a longer function hides state in closures; split it into a class or small steps.
MAX_FUNCTION_LINES = 120


def long_functions(modules: dict[str, Path], limit: int) -> list[str]:
    """``module.function (N lines)`` for every function or method of ``modules`` longer than ``limit``."""
    found = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    found.append(f"{module}.{node.name} ({lines} lines, line {node.lineno})")
    return found


def test_function_length_is_measured():
    assert long_functions({"tseg.runtime.cohort.ray_batch": MODULES["tseg.runtime.cohort.ray_batch"]}, 5)


def test_no_runtime_function_over_120_lines():
    runtime = {name: path for name, path in MODULES.items() if name == PACKAGE or name.startswith(PACKAGE + ".")}
    found = long_functions(runtime, MAX_FUNCTION_LINES)
    assert not found, f"split these (a class with one method per step, or helpers): {found}"
