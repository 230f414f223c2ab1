"""The runtime imports and runs with PyTorch absent."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from helpers import make_colour_model, make_square_slide

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds

BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("timm", "torchvision", "segmentation_models_pytorch"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def test_runtime_runs_without_torch(tmp_path):
    model = make_colour_model(tmp_path / "m.onnx")
    slide = make_square_slide(tmp_path / "s.tiff")["path"]
    code = BLOCK_TORCH + textwrap.dedent(f"""
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("torch was importable")
        import tseg.runtime
        from tseg.runtime.execution.segmenter import Segmenter
        from tseg.runtime.cohort.batch import run_batch
        from tseg.runtime.cli.main import app
        from pathlib import Path
        import tseg.runtime.bench.run, tseg.runtime.bench.check, tseg.runtime.bench.child  # the bench too
        outcome = run_batch([Path({str(slide)!r})], Path({str(tmp_path / 'out')!r}), Segmenter({str(model)!r}))[0]
        assert outcome.status == "done", outcome.error
        assert abs(outcome.summary["areas"]["tumour_area_mm2"] - 0.2) < 1e-6
        import tseg.runtime.service.server, tseg.runtime.service.watch
        from tseg.runtime.service.app import openapi_schema
        assert "/v1/jobs" in openapi_schema()["paths"]
        assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_runtime_runs_without_ray_and_says_how_to_get_it(tmp_path):
    """Ray is an optional extra: the runtime never imports it unless a batch asks for it."""
    model = make_colour_model(tmp_path / "m.onnx")
    slide = make_square_slide(tmp_path / "s.tiff")["path"]
    code = BLOCK_TORCH.replace('name in ("timm",', 'name in ("ray", "timm",').replace(
        'name == "torch" or', 'name == "torch" or name.startswith("ray.") or') + textwrap.dedent(f"""
        from pathlib import Path
        from tseg.runtime.cohort.batch import run_batch
        from tseg.runtime.errors import BackendUnavailableError
        from tseg.runtime.execution.segmenter import Segmenter
        from tseg.runtime.cli.main import app
        import tseg.runtime.cohort.ray_batch, tseg.runtime.cohort.report, tseg.runtime.cohort.shard
        outcome = run_batch([Path({str(slide)!r})], Path({str(tmp_path / 'out')!r}), Segmenter({str(model)!r}))[0]
        assert outcome.status == "done", outcome.error
        try:
            run_batch([Path({str(slide)!r})], Path({str(tmp_path / 'out2')!r}), ray="auto", engine={str(model)!r})
        except BackendUnavailableError as exc:
            assert "pip install 'tseg-rt[ray]'" in str(exc), exc
        else:
            raise SystemExit("no error without Ray")
        assert "ray" not in sys.modules
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
