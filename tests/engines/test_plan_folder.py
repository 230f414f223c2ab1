"""``--engine PLANS/``: a folder of plans of one ONNX model built for several GPU types. Each worker
loads the plan whose manifest matches its GPU and TensorRT, refuses with every plan's reason when
none does, and a result made by any plan of the folder is this model's when a batch resumes.
On the TensorRT stand-in and the simulated device (tests/fake_tensorrt.py, helpers.SimDevice)."""

from __future__ import annotations

import sys

import pytest

from fake_tensorrt import ELEVEN, ENGINE_BYTES, TEN, fake_tensorrt
from helpers import SimDevice, make_colour_model, make_square_slide
from tseg.engines.onnx_io import inspect_onnx
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.engine_manifest import EngineManifest, write_manifest
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.execution.backends.tensorrt_loader import select_plan
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.errors import EngineMismatchError, ModelError
from tseg.runtime.execution.segmenter import Segmenter

H200 = {"name": "NVIDIA H200", "compute_capability": "9.0"}
A100 = {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}


def write_plan(folder, name, gpu, trt=TEN, onnx_sha="1" * 64, model=None):
    """A plan file and its manifest (plan bytes differ per GPU, as real plans do)."""
    model = model or make_colour_model(folder / "m.onnx", tile=256, overlap=32, divisor=32, graded=True)
    plan = folder / name
    plan.write_bytes(ENGINE_BYTES + (b"" if gpu is H200 else f" for {gpu['name']}".encode()))
    write_manifest(EngineManifest(plan=plan.name, plan_sha256=file_sha256(plan), plan_bytes=plan.stat().st_size,
                                  tensorrt_version=trt, gpu=dict(gpu), precision="fp16",
                                  profile={k: [1, v, v, 3] for k, v in (("min", 64), ("opt", 256), ("max", 256))},
                                  device_memory_bytes=1, onnx={"path": str(model), "sha256": onnx_sha},
                                  contract=inspect_onnx(model).contract.to_dict()), plan)
    return plan


@pytest.fixture()
def plans(tmp_path):
    folder = tmp_path / "plans"
    folder.mkdir()
    model = make_colour_model(tmp_path / "m.onnx", tile=256, overlap=32, divisor=32, graded=True)
    return {"folder": folder, "a100": write_plan(folder, "model-a100.plan", A100, model=model),
            "h200": write_plan(folder, "model-h200.plan", H200, model=model)}


def test_the_plan_for_this_gpu_is_chosen(plans):
    chosen, equivalent = select_plan(plans["folder"], TEN, H200)
    assert chosen == plans["h200"]
    assert equivalent == {file_sha256(plans["h200"]), file_sha256(plans["a100"])}
    assert select_plan(plans["folder"], TEN, A100)[0] == plans["a100"]


def test_no_plan_for_this_gpu_is_refused_with_each_plan_s_reason(plans):
    with pytest.raises(EngineMismatchError) as err:
        select_plan(plans["folder"], TEN, T4)
    text = str(err.value)
    assert "no plan here runs on Tesla T4 (compute capability 7.5), TensorRT 10.9.0.34" in text
    assert "model-a100.plan: it was built for compute capability 8.0" in text
    assert "model-h200.plan: it was built for compute capability 9.0" in text
    assert "tseg-rt build-engine" in text
    with pytest.raises(EngineMismatchError, match="built with TensorRT 10.9.0.34, this machine has TensorRT 11"):
        select_plan(plans["folder"], ELEVEN, H200)


def test_plans_of_different_models_or_without_manifests_are_refused(plans, tmp_path):
    write_plan(plans["folder"], "other.plan", T4, onnx_sha="2" * 64)
    with pytest.raises(ModelError, match="different ONNX models"):
        select_plan(plans["folder"], TEN, H200)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "x.plan").write_bytes(b"plan")
    with pytest.raises(ModelError, match="x.plan.json is missing"):
        select_plan(bare, TEN, H200)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="without .plan engines"):
        load_backend(empty)


@pytest.fixture()
def gpu(monkeypatch):
    """Switch the simulated GPU (``gpu(H200)``); any plan bytes beginning like the stand-in's engine load."""
    from tseg.runtime.execution import cuda; from tseg.runtime.execution import executor

    device = SimDevice()
    trt = fake_tensorrt(device)
    plain = trt.Runtime

    class Runtime(plain):
        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            return super().deserialize_cuda_engine(ENGINE_BYTES if data.startswith(ENGINE_BYTES) else data)

    trt.Runtime = Runtime
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)

    class SimAPI:
        def __new__(cls, device_id=0):
            device.activate()
            return device

    monkeypatch.setattr(executor, "CudaDeviceAPI", SimAPI)

    def use(props):
        monkeypatch.setattr(cuda, "device_properties", lambda d=0: dict(props))

    return use


def test_a_worker_loads_its_gpu_s_plan_and_resumes_what_another_gpu_type_finished(plans, gpu, tmp_path):
    slide = make_square_slide(tmp_path / "s.tiff", width_um=600, height_um=500, tissue_um=(50, 50, 500, 400),
                              square_um=(200, 150, 200, 200))["path"]
    out = tmp_path / "out"
    gpu(H200)
    backend = load_backend(plans["folder"])
    assert backend.path == plans["h200"] and backend.describe()["plan_folder"] == str(plans["folder"])
    first = run_batch([slide], out, Segmenter(backend))[0]
    assert first.status == "done", first.error
    gpu(A100)  # the same folder on another GPU type: its own plan, and the result is reused
    backend = load_backend(plans["folder"])
    assert backend.path == plans["a100"]
    again = run_batch([slide], out, Segmenter(backend))[0]
    assert again.status == "skipped" and again.detail == "finished with these settings"
    # The A100 plan alone is another model file: the result is redone.
    alone = run_batch([slide], out, Segmenter(load_backend(plans["a100"])))[0]
    assert alone.status == "done" and "another model" in alone.detail
    gpu(T4)
    with pytest.raises(EngineMismatchError, match="no plan here runs on Tesla T4"):
        load_backend(plans["folder"])


@pytest.mark.slow
def test_info_describes_a_folder_of_plans(plans):
    import json
    import subprocess

    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "info", str(plans["folder"]), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)["plans"]
    assert {name: p["gpu"]["compute_capability"] for name, p in data.items()} == {"model-a100.plan": "8.0",
                                                                                  "model-h200.plan": "9.0"}
