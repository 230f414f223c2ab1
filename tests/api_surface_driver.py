"""Runs tseg-rt's TensorRT and CUDA code against the REAL bindings, in its own process.

    python tests/api_surface_driver.py --out report.json --work DIR [--cuda-path DIR]
        [--trt DIR --stubs DIR]

One process per bindings version (only one TensorRT bindings version can be imported per
process). With ``--trt`` it loads the stand-in TensorRT libraries from ``--stubs`` (so that the
real ``tensorrt_bindings`` of the wheel unpacked in ``--trt`` imports), installs
:class:`checked_tensorrt.CheckedTensorRT` over the behavioural fake as ``tensorrt`` and runs the
TensorRT scenarios; without it, the CUDA scenarios. Either way ``cuda.bindings.runtime`` is the
checked one over a :class:`checked_cudart.CudaSim` (``--cuda-path``: a folder holding another
cuda-bindings version, put first on ``sys.path``). Each scenario's outcome, every violation
with its call site, the names exercised and the real module's names go to the JSON report that
``tests/engines/test_trt_api_surface.py`` and ``tests/runtime/execution/test_cuda_api_surface.py`` read.
Run with ``CUDA_VISIBLE_DEVICES=""`` so that no real device call can succeed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
STUB_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--trt")
    ap.add_argument("--stubs")
    ap.add_argument("--cuda-path")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if args.cuda_path:
        sys.path.insert(0, args.cuda_path)
    real_trt = None
    if args.trt:
        major = Path(args.trt).name.split(".")[0]
        for lib in STUB_LIBRARIES:
            ctypes.CDLL(str(Path(args.stubs) / f"lib{lib}.so.{major}"), mode=ctypes.RTLD_GLOBAL)
        sys.path.insert(0, args.trt)
        import tensorrt_bindings as real_trt  # noqa: F811 - the real bindings, importable for introspection only

    import cuda.bindings
    from cuda.bindings import runtime as real_rt

    report: dict[str, Any] = {"cuda_bindings_version": cuda.bindings.__version__,
                              "cuda_bindings_path": cuda.bindings.__file__,
                              "cuda_runtime_names": sorted(n for n in dir(real_rt) if n.startswith("cuda"))}
    err, count = real_rt.cudaGetDeviceCount()
    if int(err) == 0 and count:
        report["skipped"] = f"a CUDA device is visible here ({count}): these checks need every real device call to fail"
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        if real_trt is not None:
            report.update(run_tensorrt(real_trt, real_rt, work))
        else:
            report.update(run_cuda(real_rt, work))
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))


# --- common ----------------------------------------------------------------------------------


class Harness:
    """A fresh simulated GPU and checked modules per scenario; violations gathered across them."""

    def __init__(self, real_rt: Any, real_trt: Any = None) -> None:
        from api_check import Collector

        self.real_rt, self.real_trt = real_rt, real_trt
        self.cuda_col, self.trt_col = Collector(), Collector()
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.disagreements: set[str] = set()
        self.sim: Any = None

    def device(self, **sim_options: Any) -> Any:
        import cuda.bindings
        from checked_cudart import CheckedCudaRuntime, CudaSim, install

        self.sim = CudaSim(self.real_rt, self.cuda_col, **sim_options)
        install(CheckedCudaRuntime(self.real_rt, self.sim, self.cuda_col, cuda.bindings.__version__))
        return self.sim

    def tensorrt(self, behaviour: Any) -> Any:
        from checked_tensorrt import CheckedTensorRT

        checked = CheckedTensorRT(self.real_trt, behaviour, self.trt_col)
        self.disagreements.update(checked.fake_disagreements())
        sys.modules["tensorrt"] = checked
        return checked

    def run(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        self.cuda_col.scenario = self.trt_col.scenario = name
        data: dict[str, Any] = {}
        outcome: dict[str, Any] = {"ok": True, "data": data}
        try:
            fn(data)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the tests judge
            outcome.update(ok=False, error_type=type(exc).__name__,
                           error_types=[c.__name__ for c in type(exc).__mro__], error=str(exc),
                           traceback="".join(traceback.format_exception(exc))[-3000:])
        if self.sim is not None:
            data.setdefault("leaks", self.sim.leaks())
        self.scenarios[name] = outcome
        self.sim = None
        sys.modules.pop("tensorrt", None)

    def report(self) -> dict[str, Any]:
        return {"scenarios": self.scenarios, "cuda": self.cuda_col.to_json(), "tensorrt": self.trt_col.to_json(),
                "fake_disagreements": sorted(self.disagreements)}


def tiles_ok(batch: Any, out: Any) -> bool:
    import numpy as np

    return out.shape == (batch.shape[0], 1) + batch.shape[1:3] and bool(np.array_equal(out[:, 0], 255 - batch[..., 0]))


# --- TensorRT ----------------------------------------------------------------------------------


def run_tensorrt(real_trt: Any, real_rt: Any, work: Path) -> dict[str, Any]:
    import numpy as np

    import cuda.bindings
    from fake_tensorrt import DataType, fake_builder_trt, fake_tensorrt
    from helpers import make_colour_model
    from tseg.engines.build import BuildSettings, build_engine
    from tseg.runtime.execution.backends.base import file_sha256
    from tseg.runtime.execution.engine_manifest import read_manifest
    from tseg.runtime.execution.backends import load_backend

    version = str(real_trt.__version__)
    h = Harness(real_rt, real_trt)
    fp32 = make_colour_model(work / "fp32.onnx", tile=256, overlap=32, divisor=32, graded=True)
    fp16 = make_colour_model(work / "fp16.onnx", tile=256, overlap=32, divisor=32, graded=True, precision="fp16")
    settings = dict(min_tile=64, opt_tile=256, max_tile=256, workspace_gb=1)

    def build(data: dict, name: str, model: Path = fp32, builder_options: dict | None = None, cache: bytes | None = None,
              devices: Any = None, device: int = 0) -> Path:
        sim = h.device(**({"devices": devices} if devices is not None else {}))
        behaviour, calls = fake_builder_trt(version=version, device=sim, **(builder_options or {}))
        h.tensorrt(behaviour)
        folder = work / name
        folder.mkdir(exist_ok=True)
        cache_path = folder / "timing.cache"
        if cache is not None:
            cache_path.write_bytes(cache)
        plan = folder / "model.plan"
        try:
            manifest = build_engine(model, plan, BuildSettings(**settings, timing_cache=str(cache_path), device=device))
        finally:
            data["calls"] = [[str(c[0])] + [x.decode(errors="replace") if isinstance(x, bytes) else getattr(x, "name", x)
                                            for x in c[1:]] for c in calls]
            data["plan_exists"] = plan.exists()
            data["cache_exists"] = cache_path.exists()
        data["manifest"] = manifest.to_dict()
        return plan

    def runtime_module(io_dtype: Any = DataType.UINT8, address_ok: bool = True) -> None:
        h.tensorrt(fake_tensorrt(h.sim, version, io_dtype=io_dtype, address_ok=address_ok))

    # Builds: both version branches, an FP16 graph, failures and the timing-cache paths.
    h.run("build_fp32", lambda d: build(d, "build_fp32"))
    h.run("build_fp16", lambda d: build(d, "build_fp16", model=fp16))
    h.run("build_fails", lambda d: build(d, "build_fails", builder_options={
        "fail_with": "Requested amount of GPU memory could not be allocated: out of memory"}))
    h.run("build_no_gpu", lambda d: build(d, "build_no_gpu", devices=()))
    h.run("build_cache_from_other_device", lambda d: build(d, "build_cache_other", cache=b"a cache from another GPU",
                                                           builder_options={"cache_mismatch": True}))
    h.run("build_no_timing_cache", lambda d: build(d, "build_no_cache", builder_options={"no_timing_cache": True}))

    def build_parse_fails(data: dict) -> None:
        sim = h.device()
        behaviour, _ = fake_builder_trt(version=version, device=sim)

        class FailingParser(behaviour.OnnxParser):  # TensorRT's parser refusing the graph
            num_errors = 2

            def parse_from_file(self, model: str) -> bool:
                return False

            def get_error(self, index: int) -> Any:
                return behaviour.IParserError(f"error {index}: UINT8 is not supported for intermediate tensors")

        behaviour.OnnxParser = FailingParser
        h.tensorrt(behaviour)
        build_engine(fp32, work / "parse_fails.plan", BuildSettings(**settings, timing_cache=str(work / "pf.cache")))

    h.run("build_parse_fails", build_parse_fails)

    def plan_for(data: dict, name: str) -> Path:
        """A plan built (checked too) for the runtime scenarios, then the runtime-only fake."""
        plan = build(data, name)
        data.pop("calls", None)
        return plan

    def run_engine(data: dict) -> None:
        plan = plan_for(data, "run")
        runtime_module()
        backend = load_backend(plan)
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
        data["infer_ok"] = tiles_ok(batch, backend.infer(batch))
        small = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        data["small_tile_ok"] = tiles_ok(small, backend.infer(small))
        batches = [(k, rng.integers(0, 256, (1, 64 * (k + 1), 64, 3), dtype=np.uint8)) for k in range(3)]
        outs = list(backend.infer_many(batches))
        data["infer_many_ok"] = [k for k, _ in outs] == [0, 1, 2] and all(
            tiles_ok(b, o) for (_, b), (_, o) in zip(batches, outs))
        data["describe"] = backend.describe()
        backend.close()
        data["leaks"] = h.sim.leaks()

    def run_on_device_1_from_another_thread(data: dict) -> None:
        second = {"name": "NVIDIA H200", "major": 9, "minor": 0, "total": 141 << 30}
        plan = build(data, "run_device_1", devices=(second, second), device=1)
        runtime_module()
        backend = load_backend(plan, device_id=1)
        batch = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        result: dict[str, Any] = {}

        def worker() -> None:
            try:
                result["ok"] = tiles_ok(batch, backend.infer(batch))
            except Exception as exc:  # noqa: BLE001
                result["error"] = f"{type(exc).__name__}: {exc}"

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        data.update(result)
        backend.close()

    def refuse_other_version(data: dict) -> None:
        plan = plan_for(data, "refuse_version")
        m = json.loads(plan.with_name(plan.name + ".json").read_text())
        m["tensorrt_version"] = "10.3.0.26" if version != "10.3.0.26" else "10.4.0.26"
        plan.with_name(plan.name + ".json").write_text(json.dumps(m))
        runtime_module()
        load_backend(plan)

    def refuse_corrupt_plan(data: dict) -> None:
        plan = plan_for(data, "refuse_corrupt")
        plan.write_bytes(b"corrupt bytes")
        m = json.loads(plan.with_name(plan.name + ".json").read_text())
        m["plan_sha256"] = file_sha256(plan)
        m["plan_bytes"] = plan.stat().st_size
        plan.with_name(plan.name + ".json").write_text(json.dumps(m))
        read_manifest(plan)
        runtime_module()
        load_backend(plan)

    def refuse_no_gpu(data: dict) -> None:
        plan = plan_for(data, "refuse_no_gpu")
        h.device(devices=())
        runtime_module()
        load_backend(plan)

    def address_rejected(data: dict) -> None:
        plan = plan_for(data, "address_rejected")
        runtime_module(address_ok=False)
        backend = load_backend(plan)
        batch = np.zeros((1, 64, 64, 3), np.uint8)
        try:
            backend.infer(batch)
        finally:
            backend.close()

    def wrong_io_dtype(data: dict) -> None:
        plan = plan_for(data, "wrong_io_dtype")
        runtime_module(io_dtype=DataType.FLOAT)
        load_backend(plan).close()

    def canary(data: dict) -> None:
        """Wrong calls made on purpose: each must be reported (the checker checks)."""
        from checked_tensorrt import CheckedTensorRT
        from tseg.runtime.execution.backends.tensorrt_loader import make_logger

        sim = h.device()
        trt = h.tensorrt(fake_builder_trt(version=version, device=sim)[0])
        logger = make_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        engine = trt.Runtime(logger).deserialize_cuda_engine(b"serialized engine bytes")

        class NoBaseInit(trt.ILogger):
            def __init__(self) -> None:
                pass

            def log(self, severity: Any, msg: str) -> None:
                pass

        attempts: dict[str, Callable[[], Any]] = {
            "enum member for int flags": lambda: builder.create_network(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
            "unknown keyword": lambda: builder.create_network(flag=0),
            "path for str": lambda: trt.OnnxParser(network, logger).parse_from_file(fp32),
            "int for bool": lambda: config.set_timing_cache(config.create_timing_cache(b""), 0),
            "str for buffer": lambda: config.create_timing_cache("cache"),
            "objects swapped": lambda: builder.build_serialized_network(config, network),
            "float in Dims": lambda: profile.set_shape("image", [1, 64.0, 64, 3], [1, 64, 64, 3], [1, 64, 64, 3]),
            "missing enum member": lambda: trt.BuilderFlag.NOT_A_FLAG,
            "missing method": lambda: engine.get_binding_shape(0),
            "missing module attribute": lambda: trt.NotAClass,
            "read-only property": lambda: setattr(engine, "num_io_tensors", 3),
            "no Python constructor": lambda: trt.IBuilderConfig(),
            "subclass without base __init__": lambda: trt.Builder(NoBaseInit()),
            "enum member compared with an int": lambda: trt.ILogger.INFO == 3,
            "enum member ordered against an int": lambda: trt.ILogger.VERBOSE > 3,
            "enum member in arithmetic": lambda: 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED,
            "enum class iterated": lambda: list(trt.DataType),
        }
        try:
            class BadOverride(trt.ILogger):
                def log(self, msg: str) -> None:
                    pass
        except Exception:  # noqa: BLE001
            pass
        data["canary"] = {}
        for label, attempt in list(attempts.items()) + [("override with a wrong signature", lambda: None)]:
            before = len(h.trt_col.violations)
            try:
                attempt()
            except Exception as exc:  # noqa: BLE001 - only the report matters
                data.setdefault("raised", {})[label] = f"{type(exc).__name__}: {exc}"
            found = h.trt_col.violations[before:]
            if label == "override with a wrong signature":
                found = [v for v in h.trt_col.violations if "BadOverride" in v["message"]]
            data["canary"][label] = [f"[{v['kind']}] {v['api']}: {v['message']}" for v in found]
        # A fake of the other major version must be caught disagreeing (the old STRONGLY_TYPED bug).
        other = "11.4.0.106" if version.startswith("10.") else "10.9.0.34"
        from api_check import Collector

        other_fake = CheckedTensorRT(real_trt, fake_builder_trt(version=other)[0], Collector())
        data["other_major_fake"] = other_fake.fake_disagreements()

    h.run("canary", canary)
    h.run("run", run_engine)
    h.run("run_device_1_other_thread", run_on_device_1_from_another_thread)
    h.run("refuse_other_version", refuse_other_version)
    h.run("refuse_corrupt_plan", refuse_corrupt_plan)
    h.run("refuse_no_gpu", refuse_no_gpu)
    h.run("address_rejected", address_rejected)
    h.run("wrong_io_dtype", wrong_io_dtype)
    # The fakes of every version agree with this real module wherever they overlap.
    h.tensorrt(fake_builder_trt(version=version)[0])
    sys.modules.pop("tensorrt", None)

    out = h.report()
    out["tensorrt_version"] = version
    out["real_cuda_bindings_version"] = cuda.bindings.__version__
    out["tensorrt_names"] = sorted(n for n in dir(real_trt) if not n.startswith("_"))
    members: set[str] = set()
    for n in out["tensorrt_names"]:
        obj = getattr(real_trt, n)
        if isinstance(obj, type):
            members.update(m for m in dir(obj) if not m.startswith("_"))
    out["tensorrt_member_names"] = sorted(members)
    out["enums"] = {name: {k: int(v) for k, v in getattr(real_trt, name).__members__.items()}
                    for name in ("NetworkDefinitionCreationFlag", "BuilderFlag", "DataType", "TensorIOMode")}
    return out


# --- CUDA --------------------------------------------------------------------------------------


def run_cuda(real_rt: Any, work: Path) -> dict[str, Any]:
    import numpy as np

    from checked_cudart import H200
    from tseg.runtime.execution import cuda
    from tseg.runtime.execution.executor import CudaDeviceAPI, DoubleBufferedExecutor

    h = Harness(real_rt)

    def device_query(data: dict) -> None:
        h.device()
        data["device_count"] = cuda.device_count()
        data["properties"] = cuda.device_properties(0)
        data["runtime_version"] = h.sim.runtime_version

    def no_device(data: dict) -> None:
        h.device(devices=())
        data["device_count"] = cuda.device_count()
        data["properties"] = cuda.device_properties(0)
        CudaDeviceAPI(0)

    def driver_too_old(data: dict) -> None:
        sim = h.device(insufficient_driver=True, driver_version=(h_runtime_major() - 1) * 1000 + 20)
        data["device_count"] = cuda.device_count()
        data["driver_version"] = sim.driver_version
        data["runtime_version"] = sim.runtime_version
        CudaDeviceAPI(0)

    def device_count_fails(data: dict) -> None:
        sim = h.device()
        sim.fail("cudaGetDeviceCount", 1)  # any other error: named with cudaGetErrorName/String
        status = cuda.cuda_status()
        data["count"], data["reason"] = status.count, status.reason

    def h_runtime_major() -> int:
        return int(real_rt.cudaRuntimeGetVersion()[1]) // 1000

    def executor(sim: Any, api: Any) -> Any:
        def compute(slot: int, dev_in: Any, dev_out: Any, shape: tuple, stream: Any) -> None:
            sim.kernel_255_minus_red(stream, dev_in, dev_out, shape)

        return DoubleBufferedExecutor(api, 3 * 64 * 64, 64 * 64, compute, lambda s: (s[0], 1, s[1], s[2]))

    rng = np.random.default_rng(0)
    tiles = [(k, rng.integers(0, 256, s, dtype=np.uint8))
             for k, s in enumerate([(1, 64, 64, 3), (1, 32, 64, 3), (1, 64, 32, 3), (1, 64, 64, 3), (1, 16, 16, 3)])]

    def run_tiles(data: dict) -> None:
        sim = h.device()
        api = CudaDeviceAPI(0)
        ex = executor(sim, api)
        outs = list(ex.run(tiles))
        data["order_ok"] = [k for k, _ in outs] == [k for k, _ in tiles]
        data["outputs_ok"] = all(tiles_ok(t, o) for (_, t), (_, o) in zip(tiles, outs))
        spans = {kind: [(s, e) for k, _t, s, e, _r, _w in sim.ops if k == kind] for kind in ("h2d", "compute", "d2h")}
        # Tile k+1 is copied in while tile k computes (the design's overlap).
        data["overlap_ok"] = all(spans["h2d"][k + 1][0] < spans["compute"][k][1] for k in range(len(tiles) - 1))
        ex.close()
        data["leaks"] = sim.leaks()
        data["pinned_host_memory"] = True

    def copy_fails_midway(data: dict) -> None:
        sim = h.device()
        sim.fail("cudaMemcpyAsync:DeviceToHost", 3)
        ex = executor(sim, CudaDeviceAPI(0))
        try:
            list(ex.run(tiles))
        except Exception as exc:  # noqa: BLE001
            data["run_error"] = f"{type(exc).__name__}: {exc}"
        ex.close()
        data["leaks"] = sim.leaks()

    def abandoned_generator(data: dict) -> None:
        sim = h.device()
        ex = executor(sim, CudaDeviceAPI(0))
        gen = ex.run(tiles)
        next(gen)
        gen.close()
        outs = list(ex.run(tiles))
        data["outputs_ok"] = all(tiles_ok(t, o) for (_, t), (_, o) in zip(tiles, outs))
        ex.close()
        data["leaks"] = sim.leaks()

    def other_thread(data: dict) -> None:
        sim = h.device(devices=(H200, H200))
        ex = executor(sim, CudaDeviceAPI(1))
        result: dict[str, Any] = {}

        def worker() -> None:
            try:
                result["outputs_ok"] = all(tiles_ok(t, o) for (_, t), (_, o) in zip(tiles, ex.run(tiles)))
            except Exception as exc:  # noqa: BLE001
                result["error"] = f"{type(exc).__name__}: {exc}"

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        data.update(result)
        ex.close()
        data["leaks"] = sim.leaks()

    def bench_device(data: dict) -> None:
        """``tseg-rt bench``: copy rates (pinned and pageable), device memory, and the executor check's
        timing events around real copies and a simulated compute."""
        from tseg.runtime.bench.device import copy_rates, device_memory
        from tseg.runtime.bench.executor_check import check_executor

        sim = h.device()
        data["memory"] = device_memory(0)
        data["rates"] = copy_rates(0, nbytes=3 * 64 * 64, repeats=2)
        api = CudaDeviceAPI(0)
        data["memory_during"] = api.memory_info()

        def compute(slot: int, dev_in: Any, dev_out: Any, shape: tuple, stream: Any) -> None:
            sim.kernel_255_minus_red(stream, dev_in, dev_out, shape)

        check = check_executor(side=64, tiles=5, api=api, compute=compute)
        data["check"] = {k: check[k] for k in ("ok", "overlap_ok", "identical_to_tile_alone", "identical_to_numpy",
                                               "compute_ms_per_tile")}
        data["leaks"] = sim.leaks()

    def canary(data: dict) -> None:
        """Wrong calls made on purpose through the checked runtime: each must be reported."""
        h.device()
        rt = cuda.cudart()
        stream = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)[1]
        event = rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming)[1]
        dev = rt.cudaMalloc(64)[1]
        pageable = np.zeros(64, np.uint8)
        attempts: dict[str, Callable[[], Any]] = {
            "arguments swapped": lambda: rt.cudaEventRecord(stream, event),
            "float size": lambda: rt.cudaMalloc(64.0),
            "str size": lambda: rt.cudaMallocHost("64"),
            "too many arguments": lambda: rt.cudaStreamSynchronize(stream, 0),
            "unknown keyword": lambda: rt.cudaStreamWaitEvent(stream, event, flag=0),
            "missing function": lambda: rt.cudaNoSuchFunction(),
            "module __version__": lambda: rt.__version__,
            "pageable copy": lambda: rt.cudaMemcpyAsync(dev, pageable.ctypes.data, 64,
                                                        rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
            "free twice": lambda: (rt.cudaFree(dev), rt.cudaFree(dev)),
        }
        data["canary"] = {}
        for label, attempt in attempts.items():
            before = len(h.cuda_col.violations)
            try:
                attempt()
            except Exception as exc:  # noqa: BLE001 - only the report matters
                data.setdefault("raised", {})[label] = f"{type(exc).__name__}: {exc}"
            data["canary"][label] = [f"[{v['kind']}] {v['api']}: {v['message']}" for v in h.cuda_col.violations[before:]]
        rt.cudaStreamDestroy(stream)
        rt.cudaEventDestroy(event)

    h.run("canary", canary)
    h.run("device_query", device_query)
    h.run("no_device", no_device)
    h.run("driver_too_old", driver_too_old)
    h.run("device_count_fails", device_count_fails)
    h.run("executor", run_tiles)
    h.run("executor_copy_fails_midway", copy_fails_midway)
    h.run("executor_abandoned_generator", abandoned_generator)
    h.run("executor_other_thread", other_thread)
    h.run("bench_device", bench_device)
    shutil.rmtree(work, ignore_errors=True)
    return h.report()


if __name__ == "__main__":
    main()
