"""The documentation site: generated reference pages are current, and `mkdocs build --strict`
builds it (no broken link, no missing page) with nothing fetched from the internet."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "tools" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_current():
    gen = _generator()
    stale = [str(p.relative_to(ROOT)) for p in gen.stale()]
    assert not stale, f"{', '.join(stale)} stale: regenerate with `{gen.REGENERATE}` and commit"


def test_cli_reference_names_every_command_and_option():
    import typer

    from tseg.runtime.cli.main import app

    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert f"`tseg-rt {name}`" in page
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}`" in page, (name, opt)


def test_stale_page_is_reported_with_the_command(tmp_path, monkeypatch, capsys):
    gen = _generator()
    fake_root = tmp_path / "repo"
    (fake_root / "docs" / "reference").mkdir(parents=True)
    (fake_root / "docs" / "openapi.json").write_text((ROOT / "docs" / "openapi.json").read_text())
    (fake_root / "README.md").write_text("# x\n\n[a page](docs/slides.md)\n")
    monkeypatch.setattr(gen, "ROOT", fake_root)
    assert gen.main(["--check"]) == 1
    assert "docs/reference/cli.md is stale: regenerate it with `.venv/bin/python tools/gen_reference.py`" \
        in capsys.readouterr().err
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    assert "[a page](slides.md)" in (fake_root / "docs" / "index.md").read_text()


def test_readme_is_a_front_page_with_the_ci_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and commands[1] in ci  # the test command is what CI calls
    assert commands[0].endswith(".venv/bin/tseg-rt demo")
    assert "source .venv/bin/activate" in readme
    image = re.search(r"!\[[^]]*\]\((docs/images/[^)]+)\)", readme).group(1)
    assert (ROOT / image).stat().st_size < 200_000
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_site_builds_strictly_and_offline(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs-material is missing: install the `docs` extra (in `dev`)")
        pytest.skip("mkdocs-material is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    assert "reference/python.html" in pages and "viewer.html" in pages
    assert "class=\"doc doc-object" in (site / "reference" / "python.html").read_text(encoding="utf-8")
    fetched = set()
    for page in site.rglob("*"):
        if page.suffix in {".html", ".css", ".js"}:
            text = page.read_text(encoding="utf-8", errors="replace")
            fetched |= set(re.findall(r"<(?:script|img|iframe)[^>]*\bsrc=\"(https?://[^\"]+)", text))
            fetched |= set(re.findall(r"<link[^>]*\bhref=\"(https?://[^\"]+)\"", text))
            fetched |= set(re.findall(r"@import\s+url\(\"?(https?://[^)\"]+)", text))
    assert not fetched, f"the site fetches from the internet: {sorted(fetched)}"


def test_time_to_first_tile_is_described_as_what_is_measured():
    """The service measures from a job's start to its first tile merged (runtime/service/runner.py,
    on_tile); the words in the API, the metrics and the guide say the same."""
    import json

    spec = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    field = spec["components"]["schemas"]["Job"]["properties"]["time_to_first_tile_s"]
    assert "first tile merged" in field["description"]
    assert "first tile merged" in (ROOT / "runtime" / "service" / "metrics.py").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    assert "first tile merged" in guide
    assert "(identity, resume decision, opening, overview and background segmentation)" not in guide
