"""What the API checkers share: a collector of violations with the project's call site.

Used by :mod:`checked_tensorrt` and :mod:`checked_cudart`, which stand between tseg-rt and a
behavioural stand-in while the real bindings are importable, so that every call the project
makes is checked against the real module before the stand-in serves it.
"""

from __future__ import annotations

import ast
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The project's own source: a violation is reported at the innermost frame found in here.
SOURCE_DIRS = tuple(REPO / d for d in ("engines", "runtime", "export", "training"))


def call_site() -> str:
    """``file:line function: code`` of the innermost project frame on the stack ("" if none)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if any(path.is_relative_to(d) for d in SOURCE_DIRS):
            return f"{path.relative_to(REPO)}:{frame.lineno} {frame.name}: {(frame.line or '').strip()}"
    return ""


class Collector:
    """Violations (deduplicated, in order) and the API names the project exercised."""

    def __init__(self) -> None:
        self.violations: list[dict[str, str]] = []
        self.exercised: set[str] = set()
        self._seen: set[tuple[str, ...]] = set()
        self.scenario = ""

    def add(self, kind: str, api: str, message: str, site: str | None = None) -> None:
        """``kind``: ``missing`` (not in the real module), ``signature`` (arguments bind to no real
        overload), ``fake`` (the stand-in disagrees with the real module), ``semantics`` (a rule
        of the simulated device broken), ``checker`` (the checker cannot judge: extend it)."""
        site = call_site() if site is None else site
        key = (kind, api, message, site)
        if key in self._seen:
            return
        self._seen.add(key)
        self.violations.append({"kind": kind, "api": api, "message": message, "site": site,
                                "scenario": self.scenario})

    def to_json(self) -> dict[str, Any]:
        return {"violations": self.violations, "exercised": sorted(self.exercised)}


def format_violations(violations: list[dict[str, str]]) -> str:
    """One line per violation, for assertion messages."""
    return "\n".join(f"[{v['kind']}] {v['api']}: {v['message']}\n    at {v['site'] or '(not in project code)'}"
                     f" (scenario {v['scenario']})" for v in violations)


# --- what the project's source uses (for the coverage checks) ---------------------------------


def source_files(contains: str) -> list[Path]:
    """The project's modules whose text contains ``contains``."""
    return sorted(p for d in SOURCE_DIRS if d.is_dir() for p in d.rglob("*.py") if contains in p.read_text())


def _chain(node: Any) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def module_chains(path: Path, root: str) -> dict[str, int]:
    """``root.A.B`` chains in ``path`` (longest only; ``hasattr/getattr(root.A, "B")`` counts as
    ``A.B``) -> first line: ``{"ILogger.INTERNAL_ERROR": 66, ...}``."""
    tree = ast.parse(path.read_text())
    found: dict[str, int] = {}
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _chain(node)
            if chain and chain[0] == root:
                n = node.value
                while isinstance(n, ast.Attribute):
                    inner.add(id(n))
                    n = n.value
                found.setdefault(".".join(chain[1:]), node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            chain = _chain(node.args[0])
            if chain and chain[0] == root:
                found.setdefault(".".join(chain[1:] + [node.args[1].value]), node.lineno)
    # a chain that is only the prefix of a longer one was used for the longer one
    return {c: line for c, line in found.items() if c and not any(o.startswith(c + ".") for o in found)}


def members_used(path: Path, root: str) -> dict[str, int]:
    """Attributes read on objects that come from module ``root`` -> first line.

    An object comes from ``root`` if it is ``root`` or is assigned (anywhere in the file: the
    analysis ignores control flow) from a call, attribute or ``getattr`` of such an object:
    ``builder = trt.Builder(logger)``, ``self._context = self._engine.create_execution_context()``,
    ``ctx = self._context``. ``getattr/hasattr(obj, "name")`` counts as ``obj.name``."""
    tree = ast.parse(path.read_text())
    tracked = {root}

    def origin(node: Any) -> bool:
        if isinstance(node, (ast.Name, ast.Attribute)) and ast.unparse(node) in tracked:
            return True
        if isinstance(node, ast.Attribute):
            return origin(node.value)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "getattr" and node.args:
                return origin(node.args[0])
            return origin(node.func)
        return False

    assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None]
    changed = True
    while changed:
        changed = False
        for a in assigns:
            if origin(a.value):
                for t in (a.targets if isinstance(a, ast.Assign) else [a.target]):
                    if isinstance(t, (ast.Name, ast.Attribute)) and ast.unparse(t) not in tracked:
                        tracked.add(ast.unparse(t))
                        changed = True
    used: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and origin(node.value):
            used.setdefault(node.attr, node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("hasattr", "getattr", "setattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) and origin(node.args[0]):
            used.setdefault(node.args[1].value, node.lineno)
    return used
