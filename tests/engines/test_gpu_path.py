"""The GPU path's defects of issue 11, each through the public entry points (build_engine,
load_backend, CudaDeviceAPI, cuda_status) on the TensorRT stand-in and the simulated device."""

from __future__ import annotations

import logging
import sys
import threading
import tomllib

import numpy as np
import pytest

from fake_tensorrt import TEN, DataType, Severity, fake_builder_trt, fake_tensorrt
from helpers import REPO, SimDevice, make_colour_model
from tseg.engines.build import BuildSettings, build_engine
from tseg.runtime.execution.backends.tensorrt_loader import LOGGER_TAIL, make_logger
from tseg.engines.conformance import TENSORRT_FLOOR
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.engine_manifest import (EngineManifest, incompatibilities, read_manifest, version_key,
                                                    write_manifest)
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.errors import BackendUnavailableError, DeviceError, ModelError

SETTINGS = dict(min_tile=64, opt_tile=256, max_tile=256)


@pytest.fixture()
def gpu_here(monkeypatch):
    from tseg.runtime.execution import cuda

    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "device_properties", lambda d=0: {"name": "NVIDIA H200", "compute_capability": "9.0",
                                                                 "runtime_version": 13000, "driver_version": 13000})


def plan_for(tmp_path, trt_version=TEN, name="model.plan"):
    model = make_colour_model(tmp_path / "m.onnx", tile=256, overlap=32, divisor=32, graded=True)
    from tseg.engines.onnx_io import inspect_onnx

    plan = tmp_path / name
    plan.write_bytes(b"serialized engine bytes")
    write_manifest(EngineManifest(plan=plan.name, plan_sha256=file_sha256(plan), plan_bytes=plan.stat().st_size,
                                  tensorrt_version=trt_version, gpu={"name": "NVIDIA H200", "compute_capability": "9.0"},
                                  precision="fp16", profile={k: [1, v, v, 3] for k, v in
                                                             (("min", 64), ("opt", 256), ("max", 256))},
                                  device_memory_bytes=1, onnx={"path": str(model), "sha256": "0" * 64},
                                  contract=inspect_onnx(model).contract.to_dict()), plan)
    return plan


def use_sim(monkeypatch, trt, device):
    from tseg.runtime.execution import cuda; from tseg.runtime.execution import executor

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "device_properties", lambda d=0: {"name": "NVIDIA H200", "compute_capability": "9.0"})

    class SimAPI:
        def __new__(cls, device_id=0):
            device.activate()  # as CudaDeviceAPI.__init__ does, on the constructing thread
            return device

    monkeypatch.setattr(executor, "CudaDeviceAPI", SimAPI)


# --- defect 3: a driver too old is not "no GPU" ------------------------------------------------


def fake_cudart(monkeypatch, error, driver, runtime=13000):
    from cuda.bindings import runtime as rt

    from tseg.runtime.execution import cuda

    class Runtime:
        cudaError_t = rt.cudaError_t

        @staticmethod
        def cudaGetDeviceCount():
            return (rt.cudaError_t(error), None)

        @staticmethod
        def cudaDriverGetVersion():
            return (rt.cudaError_t.cudaSuccess, driver)

        @staticmethod
        def cudaRuntimeGetVersion():
            return (rt.cudaError_t.cudaSuccess, runtime)

        cudaGetErrorName = staticmethod(rt.cudaGetErrorName)
        cudaGetErrorString = staticmethod(rt.cudaGetErrorString)

    monkeypatch.setattr(cuda, "cudart", lambda: Runtime)


def test_an_old_driver_is_reported_as_too_old_with_the_fix(monkeypatch):
    from tseg.runtime.execution.cuda import cuda_status
    from tseg.runtime.execution.executor import CudaDeviceAPI

    fake_cudart(monkeypatch, 35, driver=12040, runtime=13000)  # a CUDA 12.4 driver, cuda-bindings 13
    status = cuda_status()
    assert status.count == 0 and status.error == 35
    assert "too old" in status.reason and "12.4" in status.reason and "13.0" in status.reason
    assert "580.65.06" in status.reason and "tseg-rt[trt-cu12]" in status.reason
    with pytest.raises(BackendUnavailableError, match="driver is too old"):
        CudaDeviceAPI(0)


def test_no_driver_and_no_visible_gpu_are_told_apart(monkeypatch):
    from tseg.runtime.execution.cuda import cuda_status

    fake_cudart(monkeypatch, 35, driver=0)
    assert "no NVIDIA driver" in cuda_status().reason
    fake_cudart(monkeypatch, 100, driver=13000)
    assert "CUDA_VISIBLE_DEVICES" in cuda_status().reason


def test_the_engine_backend_and_builder_give_the_driver_reason(monkeypatch, tmp_path):
    from tseg.runtime.execution import cuda

    trt, _ = fake_builder_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    fake_cudart(monkeypatch, 35, driver=12040)
    monkeypatch.setattr(cuda, "device_count", lambda: 0)
    with pytest.raises(BackendUnavailableError, match="driver is too old"):
        load_backend(plan_for(tmp_path))
    with pytest.raises(BackendUnavailableError, match="driver is too old"):
        build_engine(tmp_path / "m.onnx", tmp_path / "new.plan", BuildSettings(**SETTINGS))


# --- defect 4: timing caches ---------------------------------------------------------------------


def test_a_timing_cache_from_another_device_is_replaced_not_fatal(tmp_path, monkeypatch, gpu_here, caplog):
    trt, calls = fake_builder_trt(cache_mismatch=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "cache.bin"
    cache.write_bytes(b"a cache made on an A100")
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    with caplog.at_level(logging.WARNING):
        manifest = build_engine(model, tmp_path / "m.plan", BuildSettings(**SETTINGS, timing_cache=str(cache)))
    attempts = [c for c in calls if c[0] == "set_timing_cache"]
    assert attempts == [("set_timing_cache", False, b"a cache made on an A100"), ("set_timing_cache", False, b"")]
    assert "another GPU or TensorRT version" in caplog.text
    assert cache.read_bytes() == b"timing cache" and manifest.build["timing_cache_saved"] is True
    assert read_manifest(tmp_path / "m.plan").plan_sha256 == file_sha256(tmp_path / "m.plan")


def test_no_timing_cache_after_the_build_keeps_the_finished_plan(tmp_path, monkeypatch, gpu_here, caplog):
    trt, _ = fake_builder_trt(no_timing_cache=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    with caplog.at_level(logging.WARNING):
        manifest = build_engine(model, tmp_path / "m.plan",
                                BuildSettings(**SETTINGS, timing_cache=str(tmp_path / "c.bin")))
    assert (tmp_path / "m.plan").read_bytes() == b"serialized engine bytes"
    assert manifest.build["timing_cache_saved"] is False and "no timing cache" in caplog.text
    assert not (tmp_path / "c.bin").exists()


# --- defect 5: all four version parts --------------------------------------------------------------


def test_engines_need_the_same_tensorrt_build_not_just_major_minor_patch(tmp_path):
    m = read_manifest(plan_for(tmp_path, trt_version="10.9.0.34"))
    gpu = {"compute_capability": "9.0", "name": "NVIDIA H200"}
    assert incompatibilities(m, "10.9.0.34", gpu) == []
    reasons = incompatibilities(m, "10.9.0.30", gpu)
    assert len(reasons) == 1 and "10.9.0.34" in reasons[0] and "10.9.0.30" in reasons[0]
    assert version_key("10.14.1.48.post1") == (10, 14, 1, 48) and version_key("11.4") == (11, 4, 0, 0)


# --- defect 6: threads and devices -----------------------------------------------------------------


def test_an_engine_loaded_on_one_thread_runs_on_another(tmp_path, monkeypatch):
    device = SimDevice(strict_threads=True)
    use_sim(monkeypatch, fake_tensorrt(device), device)
    backend = load_backend(plan_for(tmp_path))
    x = np.random.default_rng(0).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)
    out, errors = [], []

    def worker():
        try:
            out.append(backend.infer(x))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors == []
    np.testing.assert_array_equal(out[0][0, 0], 255 - x[0, ..., 0])


# --- defect 7: an abandoned stream of tiles ---------------------------------------------------------


def test_an_abandoned_infer_many_leaves_nothing_in_flight(tmp_path, monkeypatch):
    device = SimDevice()
    use_sim(monkeypatch, fake_tensorrt(device), device)
    backend = load_backend(plan_for(tmp_path))
    rng = np.random.default_rng(1)
    batches = [(i, rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)) for i in range(5)]
    stream = backend.infer_many(iter(batches))
    next(stream)
    stream.close()
    assert device.idle()
    x = batches[3][1]
    np.testing.assert_array_equal(backend.infer(x)[0, 0], 255 - x[0, ..., 0])
    backend.close()
    assert device.hazards == []


# --- defect 8: dtypes, addresses, log, version of cuda-bindings --------------------------------------


def test_an_engine_whose_io_is_not_uint8_is_refused_at_load(tmp_path, monkeypatch):
    device = SimDevice()
    use_sim(monkeypatch, fake_tensorrt(device, io_dtype=DataType.HALF), device)
    with pytest.raises(ModelError, match="is HALF, not UINT8"):
        load_backend(plan_for(tmp_path))


def test_a_refused_tensor_address_is_a_device_error(tmp_path, monkeypatch):
    device = SimDevice()
    use_sim(monkeypatch, fake_tensorrt(device, address_ok=False), device)
    backend = load_backend(plan_for(tmp_path))
    with pytest.raises(DeviceError, match="refused the device address of 'image'"):
        backend.infer(np.zeros((1, 64, 64, 3), np.uint8))


def test_the_build_logger_drops_verbose_and_keeps_a_bounded_tail():
    trt, _ = fake_builder_trt()
    logger = make_logger(trt)
    logger.log(Severity.ERROR, "the first error")
    for i in range(3 * LOGGER_TAIL):
        logger.log(Severity.VERBOSE, f"tactic {i}")
        logger.log(Severity.INFO, f"layer {i}")
    logger.log(Severity.ERROR, "Requested amount of GPU memory could not be allocated")
    assert len(logger.messages) == LOGGER_TAIL
    assert not any(m.startswith("tactic") for _, m in logger.messages)
    assert logger.tail().endswith("Requested amount of GPU memory could not be allocated")


def test_the_manifest_records_the_cuda_bindings_version(tmp_path, monkeypatch, gpu_here):
    import cuda.bindings

    trt, _ = fake_builder_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = make_colour_model(tmp_path / "m.onnx", divisor=32)
    manifest = build_engine(model, tmp_path / "m.plan", BuildSettings(**SETTINGS, timing_cache=str(tmp_path / "c")))
    assert manifest.cuda["cuda_bindings"] == cuda.bindings.__version__ is not None


# --- defect 2: the version floor and the CUDA-12 way in ----------------------------------------------


def test_the_trt_extras_hold_the_floor_and_offer_cuda_12():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"tensorrt>={TENSORRT_FLOOR}" in extras["trt"]
    assert f"tensorrt-cu12>={TENSORRT_FLOOR},<11" in extras["trt-cu12"]
    assert "cuda-bindings>=12.6,<13" in extras["trt-cu12"]
    guide = (REPO / "docs" / "gpus.md").read_text()
    assert "[trt-cu12]" in guide and "pypi.nvidia.com" in guide and "580.65" in guide
