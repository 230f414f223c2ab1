"""What the code and its docs point a reader to exists in the repository (issue 28, item 6).

Read as text and with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The project's packages and their folders (pyproject.toml's package-dir).
PACKAGES = {"tseg.runtime": "runtime", "tseg.training": "training", "tseg.export": "export", "tseg.engines": "engines"}
FOLDERS = ("runtime", "engines", "export", "training", "tests", "benchmarks", "docs")
#: Design notes that lived beside the repository while it was written, never in it.
NOTES = re.compile(r"\b(?:TENSORRT|SPEC|DICOM|SLURM|STYLE)\.md\b|\bSTYLE:")
DOTTED = re.compile(r"\btseg\.(?:runtime|training|export|engines)(?:\.\w+)+")


def texts() -> dict[Path, str]:
    """Code, docs and configuration of the project. Left out: README.md while it becomes the docs
    site (its references are the site's), and docs/pending/ (changelog text names old homes)."""
    files = [p for f in FOLDERS for p in (REPO / f).rglob("*") if p.suffix in {".py", ".md", ".toml", ".sh"}
             and "pending" not in p.relative_to(REPO).parts]
    files += [REPO / "pyproject.toml", REPO / ".ci" / "run"]
    return {p: p.read_text(encoding="utf-8") for p in sorted(files) if p.is_file()}


def test_no_pointers_to_notes_outside_the_repository():
    found = [f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}"
             for p, text in texts().items() if p != Path(__file__) for m in NOTES.finditer(text)]
    assert not found, "point to the docs pages (docs/gpus.md, docs/dicom.md, ...) instead:\n" + "\n".join(found)


def module_file(module: str) -> Path | None:
    package = next((p for p in PACKAGES if module == p or module.startswith(p + ".")), None)
    if package is None:
        return None
    base = REPO / PACKAGES[package] / Path(*module[len(package) + 1:].split(".")) if module != package \
        else REPO / PACKAGES[package]
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def top_level_names(path: Path) -> frozenset[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name))
        elif isinstance(node, ast.Dict) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Dict)):
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if "__getattr__" in names:  # a lazy facade: the names it serves are the keys of its table
        names.update(n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier())
    return frozenset(names)


def unresolved(reference: str) -> str | None:
    """Why ``tseg.<package>.<module>...<name>`` names nothing, or None."""
    parts = reference.split(".")
    for cut in range(len(parts), 1, -1):
        path = module_file(".".join(parts[:cut]))
        if path is None:
            continue
        rest = parts[cut:]
        if not rest or rest[0].startswith("__") or rest[0] in top_level_names(path):
            return None
        if module_file(".".join(parts[: cut + 1])):  # a submodule
            return None
        return f"{'.'.join(parts[:cut])} defines no {rest[0]}"
    return f"no module {reference}"


def test_unresolved_names_a_moved_function():
    assert unresolved("tseg.runtime.cohort.runner.run_slide") is None
    assert unresolved("tseg.runtime.execution.backends.tensorrt.TensorRTBackend") is None
    assert unresolved("tseg.runtime.cohort.batch.run_slide") == "tseg.runtime.cohort.batch defines no run_slide"
    assert unresolved("tseg.runtime.nowhere") == "tseg.runtime defines no nowhere"


def test_dotted_names_in_the_code_and_docs_exist():
    """``:func:`tseg.runtime.cohort.runner.run_slide``` and the like name a module that exists and
    a name it defines (not the home a function had before it moved)."""
    found = []
    for p, text in texts().items():
        if p == Path(__file__):
            continue
        for m in DOTTED.finditer(text):
            why = unresolved(m.group().rstrip("."))
            if why:
                found.append(f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()} ({why})")
    assert not found, "\n".join(found)


FROM_IMPORT = re.compile(r"\bfrom (tseg\.(?:runtime|training|export|engines)[\w.]*) import (?:\(([\w, \n]+)\)|([\w, ]+))")


def test_imports_written_in_text_name_what_exists():
    """``from tseg... import name`` in strings and docs (a script a test runs in a subprocess, an
    example), which no import check sees: the name is defined, or imported, by that module."""
    found = []
    for p, text in texts().items():
        if p == Path(__file__):
            continue
        for m in FROM_IMPORT.finditer(text):
            for name in (n.split()[0] for n in (m.group(2) or m.group(3)).split(",") if n.strip()):
                why = unresolved(f"{m.group(1)}.{name}")
                if why:
                    found.append(f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()} ({why})")
    assert not found, "\n".join(found)


def test_paths_named_in_the_code_exist():
    """A path the code tells a reader to look at or write to is the repository's own (there is
    no ``tseg/runtime/`` folder: the package ``tseg.runtime`` lives in ``runtime/``)."""
    found = [f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}"
             for p, text in texts().items() if p != Path(__file__)
             for m in re.finditer(r"\btseg/(?:runtime|training|export|engines)/", text)]
    assert not found, "\n".join(found)
