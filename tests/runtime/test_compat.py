"""Old module paths (before the subpackages, commit b13c780) keep importing, with a warning.

``old_api_b13c780.json`` lists every module of ``tseg.runtime`` at that commit with the public
names it defined (the command functions of the old ``cli`` module aside, and ``evaluate`` of the
old ``evaluation`` module: see :mod:`tseg.runtime.compat`). Each check runs in a fresh
interpreter, so the warnings of first imports are seen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tseg.runtime.compat import FORWARDED, MOVED

OLD_API = json.loads((Path(__file__).parent / "old_api_b13c780.json").read_text(encoding="utf-8"))


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_every_old_module_is_covered():
    unchanged = {"tseg.runtime.errors"}
    assert set(OLD_API) == set(MOVED) | set(FORWARDED) | unchanged


def test_every_old_path_and_name_still_imports_with_a_warning_naming_the_new_path():
    r = run_python(f"""
        import importlib, json, sys, warnings
        old_api = json.loads({json.dumps(json.dumps(OLD_API))})
        from tseg.runtime.compat import MOVED
        problems = []
        for old, names in sorted(old_api.items()):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            if old in MOVED:
                new = importlib.import_module(MOVED[old])
                if module is not new:
                    problems.append(f"{{old}} is not {{MOVED[old]}}")
                if module.__spec__.name != MOVED[old]:
                    problems.append(f"{{old}} changed the spec of {{MOVED[old]}}")
                said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
                if not any(old in s and MOVED[old] in s for s in said):
                    problems.append(f"import {{old}}: no DeprecationWarning naming {{MOVED[old]}} ({{said}})")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                missing = [n for n in names if not hasattr(module, n)]
            if missing:
                problems.append(f"{{old}} lost {{missing}}")
        twice = [m for m in sys.modules if m.endswith(".onnxruntime") and m.startswith("tseg")]
        if len({{id(sys.modules[m]) for m in twice}}) != 1:
            problems.append(f"a module was loaded twice: {{twice}}")
        print(json.dumps(problems))
    """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_old_names_of_modules_that_became_packages_are_forwarded():
    r = run_python("""
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        import tseg.runtime.outputs.files as files, tseg.runtime.cli.main as cli_main
        import tseg.runtime.evaluation.evaluate as evaluate_module
        for statement, value in [("from tseg.runtime.outputs import write_outputs", files.write_outputs),
                                 ("from tseg.runtime.evaluation import sweep", evaluate_module.sweep),
                                 ("from tseg.runtime.cli import app", cli_main.app)]:
            try:
                exec(statement)
            except DeprecationWarning as w:
                assert "deprecated: use tseg.runtime." in str(w), w
            else:
                raise SystemExit(f"no warning for {statement}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                name = statement.split()[-1]
                scope = {}
                exec(statement, scope)
                assert scope[name] is value, statement
        # Submodules of those packages import as usual, without a warning.
        from tseg.runtime.outputs import summary
        from tseg.runtime.evaluation import metrics
        assert summary.__name__ == "tseg.runtime.outputs.summary" and metrics.__name__.endswith(".metrics")
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_the_warning_points_at_the_importing_code_and_is_shown_by_default_in_scripts(tmp_path):
    script = tmp_path / "old_script.py"
    script.write_text("from tseg.runtime.segmenter import Segmenter\n"
                      "from tseg.runtime.outputs import write_outputs\n"
                      "import importlib; batch = importlib.import_module('tseg.runtime.batch')\n"
                      "print(Segmenter.__module__, write_outputs.__module__, batch.__name__)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["tseg.runtime.execution.segmenter", "tseg.runtime.outputs.files",
                                "tseg.runtime.cohort.batch"]
    for line, old, new in [(1, "import tseg.runtime.segmenter", "tseg.runtime.execution.segmenter"),
                           (2, "tseg.runtime.outputs.write_outputs", "tseg.runtime.outputs.files.write_outputs"),
                           (3, "import tseg.runtime.batch", "tseg.runtime.cohort.batch")]:
        assert f"{script}:{line}: DeprecationWarning: {old} is deprecated: use {new}" in r.stderr


@pytest.mark.parametrize("statement", [
    "import tseg.runtime",
    "from tseg.runtime import Segmenter, Result, Slide, open_slide, TsegError, load_backend, run_batch, write_report",
    "import tseg.runtime.wsi.slide, tseg.runtime.cohort.batch, tseg.runtime.cohort.resume, tseg.runtime.cli.main",
    "from tseg.runtime.outputs import files, summary",
])
def test_the_new_paths_warn_about_nothing(statement):
    r = run_python(statement, "-W", "error::DeprecationWarning")
    assert r.returncode == 0, r.stderr
