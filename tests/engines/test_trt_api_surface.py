"""tseg-rt's TensorRT calls checked against the REAL TensorRT Python bindings, on a CPU.

For each bindings version (10.9.0.34, the floor; 10.16.1.11; 11.4.0.106) one process
(``tests/api_surface_driver.py``, prepared by ``tests/real_bindings.py``) imports the real
``tensorrt_bindings`` over stand-in libraries and runs the project's real code —
``build_engine`` on both version branches (10.x: FP32 graph with the FP16 builder flag; 11.x and
FP16 graphs: strongly typed), failed builds, ``load_backend`` of a plan with ``infer`` and
``infer_many``, the refusal paths — against ``CheckedTensorRT(real, behaviour=fake_builder_trt)``
as ``tensorrt`` and a checked ``cuda.bindings.runtime`` over a simulated GPU (the cuda-bindings
major that TensorRT version pairs with: 12 for 10.x, 13 for 11.x). The checker reports every
name that does not exist in the real module, every call that binds to no real overload, and
every disagreement of the fake with the real module, with the project's call site.

A defect found here is written as a strict xfail naming it, with an entry in :data:`KNOWN`, until
the source is fixed; issue 11's defects (3, 4, 6, 7, 8) were found this way and are fixed.
"""

from __future__ import annotations

import pytest

from api_check import REPO, format_violations, members_used, module_chains
from real_bindings import TENSORRT, tensorrt_report

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds

VERSIONS = list(TENSORRT)
_REPORTS: dict[str, object] = {}

#: Violations of known, filed defects, excluded from the general checks below and asserted absent by
#: their own tests further down: (kind, api, scenario or None). Empty: issue 11's are fixed.
KNOWN: list[tuple[str, str | None, str | None]] = []
#: Names in the source that no scenario can reach with a supported version: build.py's fallback
#: to ``ICudaEngine.device_memory_size`` (for TensorRT < 10.1, below the 10.9 floor; gone in 11.x).
UNREACHABLE = {"device_memory_size"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The driver's report for one version, run once per test session."""

    def get(version: str) -> dict:
        if version not in _REPORTS:
            try:
                _REPORTS[version] = tensorrt_report(version, tmp_path_factory.mktemp(f"trt-{version}"))
            except BaseException as exc:  # skip (no compiler/registry) or failure: the same for every test
                _REPORTS[version] = exc
        r = _REPORTS[version]
        if isinstance(r, BaseException):
            raise r
        return r

    return get


def is_known(v: dict) -> bool:
    return any(v["kind"] == kind and (api is None or v["api"] == api) and (scenario is None or v["scenario"] == scenario)
               for kind, api, scenario in KNOWN)


def violations(r: dict, kinds: tuple[str, ...], scenario: str | None = None) -> list[dict]:
    found = r["tensorrt"]["violations"] + r["cuda"]["violations"]
    return [v for v in found if v["kind"] in kinds and v["scenario"] != "canary"
            and (scenario is None or v["scenario"] == scenario)]


def outcome(r: dict, name: str) -> dict:
    return r["scenarios"][name]


def describe(s: dict) -> str:
    return s.get("traceback") or f"{s.get('error_type')}: {s.get('error')}"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_real_bindings_were_checked(report, version):
    r = report(version)
    assert r["tensorrt_version"] == version
    cuda_major = TENSORRT[version][2]
    assert r["real_cuda_bindings_version"].split(".")[0] == str(cuda_major)
    assert "Builder" in r["tensorrt_names"] and "ILogger" in r["tensorrt_names"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_and_cuda_call_matches_the_real_bindings(report, version):
    found = [v for v in violations(report(version), ("missing", "signature", "checker", "fake")) if not is_known(v)]
    assert not found, "calls that disagree with the real bindings:\n" + format_violations(found)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_simulated_device_saw_no_misuse(report, version):
    found = [v for v in violations(report(version), ("semantics",)) if not is_known(v)]
    assert not found, format_violations(found)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_fakes_agree_with_the_real_module(report, version):
    """Every enum member and constant the stand-in defines has the real name and value."""
    assert report(version)["fake_disagreements"] == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_checker_reports_wrong_calls(report, version):
    """Wrong calls made on purpose (the canary scenario) are each reported, and a fake of the
    other major version is caught disagreeing (the old STRONGLY_TYPED value)."""
    data = outcome(report(version), "canary")["data"]
    assert data["canary"], "the canary did not run"
    silent = [label for label, found in data["canary"].items() if not found]
    assert not silent, f"the checker let these through: {silent}"
    assert any("STRONGLY_TYPED" in d for d in data["other_major_fake"])


def strongly_typed_flags(r: dict) -> int:
    return 1 << r["enums"]["NetworkDefinitionCreationFlag"]["STRONGLY_TYPED"]


@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_graph_on_each_version_branch(report, version):
    r = report(version)
    s = outcome(r, "build_fp32")
    assert s["ok"], describe(s)
    calls = s["data"]["calls"]
    flags = [c[1] for c in calls if c[0] == "network_flags"]
    builder_flags = [c[1] for c in calls if c[0] == "flag"]
    if version.startswith("10."):  # weakly typed with the FP16 flag (the FP16 flag exists in 10.x only)
        assert flags == [0] and builder_flags == ["FP16"] and "FP16" in r["enums"]["BuilderFlag"]
        assert s["data"]["manifest"]["precision"] == "fp16 (builder flag)"
    else:  # TensorRT 11 removed the flag: strongly typed, FP32 engine
        assert flags == [strongly_typed_flags(r)] and builder_flags == [] and "FP16" not in r["enums"]["BuilderFlag"]
        assert s["data"]["manifest"]["precision"] == "fp32"
    assert s["data"]["manifest"]["tensorrt_version"] == version
    assert ["workspace", "WORKSPACE", 1 << 30] in calls and s["data"]["plan_exists"] and s["data"]["cache_exists"]


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_graph_is_built_strongly_typed(report, version):
    r = report(version)
    s = outcome(r, "build_fp16")
    assert s["ok"], describe(s)
    calls = s["data"]["calls"]
    assert [c[1] for c in calls if c[0] == "network_flags"] == [strongly_typed_flags(r)]
    assert not [c for c in calls if c[0] == "flag"] and s["data"]["manifest"]["precision"] == "fp16"


@pytest.mark.parametrize("version", VERSIONS)
def test_failed_builds_are_reported(report, version):
    r = report(version)
    oom = outcome(r, "build_fails")
    assert not oom["ok"] and "ModelError" in oom["error_types"] and "--workspace-gb" in oom["error"]
    assert not oom["data"]["plan_exists"]
    parse = outcome(r, "build_parse_fails")
    assert not parse["ok"] and "ModelError" in parse["error_types"] and "ONNX parser failed" in parse["error"]
    assert "error 0" in parse["error"] and "error 1" in parse["error"]
    no_gpu = outcome(r, "build_no_gpu")
    assert not no_gpu["ok"] and "BackendUnavailableError" in no_gpu["error_types"]


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_runs_tiles_through_the_executor(report, version):
    s = outcome(report(version), "run")
    assert s["ok"], describe(s)
    d = s["data"]
    assert d["infer_ok"] and d["small_tile_ok"] and d["infer_many_ok"]
    assert d["describe"]["kind"] == "tensorrt" and d["describe"]["tensorrt_version"] == version
    assert d["leaks"] == {"device_buffers": 0, "pinned_buffers": 0, "streams": 0, "events": 0}


@pytest.mark.parametrize("version", VERSIONS)
def test_engines_that_cannot_run_are_refused(report, version):
    r = report(version)
    other = outcome(r, "refuse_other_version")
    assert not other["ok"] and "EngineMismatchError" in other["error_types"] and "10.3.0.26" in other["error"]
    corrupt = outcome(r, "refuse_corrupt_plan")
    assert not corrupt["ok"] and "EngineMismatchError" in corrupt["error_types"]
    assert "refused to deserialize" in corrupt["error"] and "magic tag" in corrupt["error"]
    no_gpu = outcome(r, "refuse_no_gpu")
    assert not no_gpu["ok"] and "BackendUnavailableError" in no_gpu["error_types"]


def test_every_tensorrt_name_in_the_source_is_exercised(report):
    """Each ``trt.<Name>`` chain and each attribute read on a TensorRT object in the project's
    TensorRT code ran through the checker in some version's scenarios (a new call cannot
    escape the check)."""
    reports = [report(v) for v in VERSIONS]
    exercised = set().union(*(r["tensorrt"]["exercised"] for r in reports))
    members = {e.split(" ")[0].rsplit(".", 1)[-1] for e in exercised}
    missing = []
    for path in tensorrt_sources():
        for chain, line in module_chains(path, "trt").items():
            if chain not in exercised:
                missing.append(f"{path.relative_to(REPO)}:{line} trt.{chain}")
        for name, line in members_used(path, "trt").items():
            if name not in members and name not in UNREACHABLE:
                missing.append(f"{path.relative_to(REPO)}:{line} .{name}")
    assert not missing, "TensorRT names no scenario exercised (add a scenario to tests/api_surface_driver.py):\n" + \
        "\n".join(missing)


def tensorrt_sources() -> list:
    files = sorted((REPO / "engines").glob("*.py")) + sorted((REPO / "runtime" / "execution" / "backends").glob("tensorrt*.py"))
    return [p for p in files if "trt" in p.read_text()]


# --- issue 11's defects, each checked against the real bindings ------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_records_the_cuda_bindings_version(report, version):
    r = report(version)
    assert not [v for v in violations(r, ("missing",)) if v["api"] == "cuda.bindings.runtime.__version__"]
    s = outcome(r, "build_fp32")
    assert s["ok"] and s["data"]["manifest"]["cuda"]["cuda_bindings"] == r["real_cuda_bindings_version"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_timing_cache_from_another_device_is_replaced(report, version):
    s = outcome(report(version), "build_cache_from_other_device")
    assert s["ok"], describe(s)
    assert s["data"]["plan_exists"] and s["data"]["cache_exists"]
    caches = [c for c in s["data"]["calls"] if c[0] == "timing_cache_in"]
    assert caches[-1] == ["timing_cache_in", ""]  # the retry starts from a fresh cache


@pytest.mark.parametrize("version", VERSIONS)
def test_a_build_without_timing_cache_keeps_the_plan(report, version):
    s = outcome(report(version), "build_no_timing_cache")
    assert s["ok"], describe(s)
    assert s["data"]["plan_exists"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_rejected_tensor_address_is_an_error(report, version):
    s = outcome(report(version), "address_rejected")
    assert not s["ok"] and "TsegError" in s["error_types"]


@pytest.mark.parametrize("version", VERSIONS)
def test_an_engine_with_other_io_dtypes_is_refused(report, version):
    s = outcome(report(version), "wrong_io_dtype")
    assert not s["ok"] and "TsegError" in s["error_types"] and "uint8" in s["error"].lower()


@pytest.mark.parametrize("version", VERSIONS)
def test_inference_from_another_thread_sets_the_device(report, version):
    r = report(version)
    s = outcome(r, "run_device_1_other_thread")
    assert s["ok"] and s["data"].get("ok"), describe(s)
    found = violations(r, ("semantics",), "run_device_1_other_thread")
    assert not found, format_violations(found)
