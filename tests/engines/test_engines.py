"""Engines: ONNX checks, manifests, compatibility, the TensorRT backend's binding logic.

TensorRT is not installed on CPU machines. Its side is thin; here it is exercised against a
stand-in ``tensorrt`` module whose engine computes 255 - red on the simulated device (the same
device the executor's tests use), and compared with ONNX Runtime running the equivalent graph.
A real build-and-parity test runs where TensorRT and a GPU exist (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from fake_tensorrt import ELEVEN, TEN, fake_builder_trt, fake_tensorrt
from helpers import SimDevice, make_colour_model, make_square_slide
from tseg.engines.build import BuildSettings, build_engine
from tseg.engines.onnx_io import inspect_onnx
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.engine_manifest import EngineManifest, incompatibilities, read_manifest, write_manifest
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.errors import (
    BackendUnavailableError,
    ContractError,
    EngineMismatchError,
    InvalidArgumentError,
    ModelError,
    OutputError,
)
from tseg.runtime.execution.segmenter import Segmenter


def fake_plan(tmp_path, contract, name="model.plan", trt_version=TEN, cc="9.0", profile=(64, 256, 256)):
    plan = tmp_path / name
    plan.write_bytes(b"serialized engine bytes")
    m = EngineManifest(plan=plan.name, plan_sha256=file_sha256(plan), plan_bytes=plan.stat().st_size,
                       tensorrt_version=trt_version, gpu={"name": "NVIDIA H200", "compute_capability": cc},
                       precision="fp16", profile={k: [1, v, v, 3] for k, v in zip(("min", "opt", "max"), profile)},
                       device_memory_bytes=123, onnx={"path": "m.onnx", "sha256": "0" * 64}, contract=contract)
    write_manifest(m, plan)
    return plan


@pytest.fixture()
def contract(tmp_path):
    path = make_colour_model(tmp_path / "m.onnx", tile=256, overlap=32, divisor=32, graded=True)
    return inspect_onnx(path).contract.to_dict()


def test_inspect_onnx(tmp_path):
    io = inspect_onnx(make_colour_model(tmp_path / "m.onnx"))
    assert io.input_name == "image" and io.output_name == "tumour_probability" and io.precision == "fp32"
    assert len(io.sha256) == 64 and io.contract.tile_size == 256
    with pytest.raises(ContractError, match="no 'tseg' model contract"):
        inspect_onnx(make_colour_model(tmp_path / "bare.onnx", contract=False))
    with pytest.raises(ContractError, match="uint8 NHWC"):
        inspect_onnx(make_colour_model(tmp_path / "f.onnx", input_dtype=onnx.TensorProto.FLOAT))


def test_profile_settings():
    assert BuildSettings().profile(32) == {"min": [1, 512, 512, 3], "opt": [1, 7680, 7680, 3], "max": [1, 7680, 7680, 3]}
    with pytest.raises(InvalidArgumentError):
        BuildSettings(min_tile=500).profile(32)
    with pytest.raises(InvalidArgumentError):
        BuildSettings(min_tile=1024, opt_tile=512).profile(32)


def test_build_engine_errors_without_tensorrt(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tseg-rt\[trt\]'"):
        build_engine(model, tmp_path / "m.plan", BuildSettings(min_tile=64, opt_tile=256, max_tile=256))
    # Problems with the ONNX are reported before TensorRT is even needed.
    with pytest.raises(ContractError):
        build_engine(make_colour_model(tmp_path / "b.onnx", contract=False), tmp_path / "b.plan")
    (tmp_path / "x.plan").write_bytes(b"")
    with pytest.raises(OutputError, match="--overwrite"):
        build_engine(model, tmp_path / "x.plan", BuildSettings(min_tile=64, opt_tile=256, max_tile=256))
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()


def test_manifest_round_trip_and_checks(tmp_path, contract):
    plan = fake_plan(tmp_path, contract)
    m = read_manifest(plan)
    assert m.model_contract.tile_size == 256 and m.gpu["compute_capability"] == "9.0"
    assert incompatibilities(m, "10.9.0.34", {"compute_capability": "9.0", "name": "NVIDIA H200"}) == []
    reasons = incompatibilities(m, "10.8.0", {"compute_capability": "8.0", "name": "NVIDIA A100"})
    assert any("TensorRT 10.9.0" in r for r in reasons) and any("compute capability 9.0" in r for r in reasons)
    # Plan without manifest; manifest that does not match the plan.
    lone = tmp_path / "lone.plan"
    lone.write_bytes(b"x")
    with pytest.raises(ModelError, match="without manifest"):
        read_manifest(lone)
    plan.write_bytes(b"another engine")
    with pytest.raises(EngineMismatchError, match="does not match"):
        read_manifest(plan)


def test_tensorrt_backend_needs_tensorrt(tmp_path, contract):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        load_backend(fake_plan(tmp_path, contract))


@pytest.mark.slow
def test_info_prints_the_manifest(tmp_path, contract):
    plan = fake_plan(tmp_path, contract)
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "info", str(plan), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["tensorrt_version"] == TEN and data["gpu"]["name"] == "NVIDIA H200"


# --- the backend against a stand-in TensorRT on the simulated device ---------------------------


@pytest.fixture()
def sim_trt(monkeypatch):
    device = SimDevice()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(device))
    from tseg.runtime.execution import cuda; from tseg.runtime.execution import executor

    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "device_properties", lambda d=0: {"name": "NVIDIA H200", "compute_capability": "9.0"})

    class SimAPI(SimDevice):
        def __new__(cls, device_id=0):
            return device

    monkeypatch.setattr(executor, "CudaDeviceAPI", SimAPI)
    return device


def test_tensorrt_backend_binds_by_name_and_matches_onnxruntime(tmp_path, contract, sim_trt):
    plan = fake_plan(tmp_path, contract)
    backend = load_backend(plan)
    assert backend.kind == "tensorrt" and backend.describe()["precision"] == "fp16"
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    out = backend.infer(batch)
    np.testing.assert_array_equal(out[:, 0], 255 - batch[..., 0])
    # A tile below the profile minimum (64) is padded up to it and cropped back.
    small = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(backend.infer(small)[0, 0], 255 - small[0, ..., 0])
    assert backend._context.calls[-1] == (1, 64, 64)
    with pytest.raises(InvalidArgumentError, match="profile maximum"):
        backend.infer(np.zeros((1, 288, 64, 3), np.uint8))
    # The whole pipeline with the engine equals ONNX Runtime running the same computation.
    info = make_square_slide(tmp_path / "s.tiff")
    onnx_model = make_colour_model(tmp_path / "g.onnx", tile=256, overlap=32, divisor=32, graded=True)
    a = Segmenter(backend, low=40, high=100).segment_slide(info["path"])
    b = Segmenter(onnx_model, low=40, high=100).segment_slide(info["path"])
    np.testing.assert_array_equal(a.probability_full, b.probability_full)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.summary["model"]["backend"]["kind"] == "tensorrt"


def test_engine_for_another_gpu_or_version_is_refused(tmp_path, contract, sim_trt):
    with pytest.raises(EngineMismatchError, match="compute capability 8.0"):
        load_backend(fake_plan(tmp_path, contract, "a100.plan", cc="8.0"))
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0"):
        load_backend(fake_plan(tmp_path, contract, "old.plan", trt_version="10.3.0"))
    plan = fake_plan(tmp_path, contract, "bad.plan")
    plan.write_bytes(b"corrupt bytes")
    m = json.loads((tmp_path / "bad.plan.json").read_text())
    m["plan_sha256"] = file_sha256(plan)
    (tmp_path / "bad.plan.json").write_text(json.dumps(m))
    with pytest.raises(EngineMismatchError, match="refused to deserialize"):
        load_backend(plan)


def test_real_tensorrt_build_and_parity(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    from tseg.runtime.execution.cuda import device_count

    if device_count() == 0:
        pytest.skip("no CUDA GPU here")
    model = make_colour_model(tmp_path / "m.onnx", tile=256, overlap=32, divisor=32, graded=True)
    manifest = build_engine(model, tmp_path / "m.plan", BuildSettings(min_tile=64, opt_tile=256, max_tile=256,
                                                                      workspace_gb=1))
    assert manifest.tensorrt_version == trt.__version__
    engine = load_backend(tmp_path / "m.plan")
    ort = load_backend(model, providers="cpu")
    x = np.random.default_rng(0).integers(0, 256, (1, 192, 256, 3), dtype=np.uint8)
    assert np.abs(engine.infer(x).astype(int) - ort.infer(x)).max() <= 1


# --- the builder against a stand-in TensorRT (API calls as documented) ------------------------


@pytest.fixture()
def gpu_here(monkeypatch):
    from tseg.runtime.execution import cuda

    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "device_properties", lambda d=0: {"name": "NVIDIA H200", "compute_capability": "9.0",
                                                                 "runtime_version": 12080, "driver_version": 12080})


def test_builder_follows_the_documented_api_and_writes_plan_and_manifest(tmp_path, monkeypatch, gpu_here):
    trt, calls = fake_builder_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    settings = BuildSettings(min_tile=64, opt_tile=256, max_tile=256, workspace_gb=2, optimization_level=4,
                             timing_cache=str(tmp_path / "cache.bin"))
    manifest = build_engine(model, tmp_path / "m.plan", settings)
    assert (tmp_path / "m.plan").read_bytes() == b"serialized engine bytes"
    assert read_manifest(tmp_path / "m.plan").plan_sha256 == manifest.plan_sha256
    assert manifest.profile == {"min": [1, 64, 64, 3], "opt": [1, 256, 256, 3], "max": [1, 256, 256, 3]}
    assert manifest.gpu["compute_capability"] == "9.0" and manifest.tensorrt_version == TEN
    assert manifest.contract["tile_size"] == 256 and manifest.onnx["sha256"] == file_sha256(model)
    assert (tmp_path / "cache.bin").read_bytes() == b"timing cache"
    # FP32 graph on TensorRT 10: weakly typed with the FP16 flag; workspace, level and profile set.
    assert ("network_flags", 0) in calls and [c[1].name for c in calls if c[0] == "flag"] == ["FP16"]
    assert [(c[1].name, c[2]) for c in calls if c[0] == "workspace"] == [("WORKSPACE", 2 * (1 << 30))] and ("optimization_level", 4) in calls
    assert ("profile", ("image", [1, 64, 64, 3], [1, 256, 256, 3], [1, 256, 256, 3])) in calls
    assert manifest.precision == "fp16 (builder flag)" and manifest.contract["precision"] == "fp16"


def test_builder_on_tensorrt_11_is_strongly_typed(tmp_path, monkeypatch, gpu_here):
    trt, calls = fake_builder_trt(version=ELEVEN)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    manifest = build_engine(model, tmp_path / "m.plan", BuildSettings(min_tile=64, opt_tile=256, max_tile=256,
                                                                      timing_cache=str(tmp_path / "c")))
    assert ("network_flags", 1 << 0) in calls and not any(c[0] == "flag" for c in calls)
    assert manifest.precision == "fp32"


def test_builder_out_of_memory_and_no_gpu(tmp_path, monkeypatch, gpu_here):
    trt, _ = fake_builder_trt(fail_with="Requested amount of GPU memory could not be allocated: out of memory")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    settings = BuildSettings(min_tile=64, opt_tile=256, max_tile=256, timing_cache=str(tmp_path / "c"))
    with pytest.raises(ModelError, match="--workspace-gb"):
        build_engine(model, tmp_path / "m.plan", settings)
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()
    from tseg.runtime.execution import cuda

    monkeypatch.setattr(cuda, "device_count", lambda: 0)
    with pytest.raises(BackendUnavailableError, match="CUDA device 0 cannot be used"):
        build_engine(model, tmp_path / "m.plan", settings)
