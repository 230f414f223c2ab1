"""tseg-rt's ``cuda.bindings.runtime`` calls checked against the REAL cuda-bindings 12.x and 13.x.

One process per cuda-bindings major (``tests/api_surface_driver.py``; 12.9.x is installed into
the test cache, 13.x is the test environment's) drives ``tseg.runtime.execution.cuda`` (device_count,
device_properties), ``CudaDeviceAPI`` and ``DoubleBufferedExecutor`` through a checked runtime:
every call is first made to the REAL function with the project's arguments (no device is
visible, so it converts them and returns an error), its arguments are checked against the
types its docstring lists, and a simulated GPU (:class:`checked_cudart.CudaSim`: real handle
types, real pinned host memory, ``helpers.SimDevice``'s clock) answers with results of the real
arity. The simulator also reports races, frees under running work and launches on another
device's stream.

A defect found here is written as a strict xfail naming it, with an entry in :data:`KNOWN`, until
the source is fixed; issue 11's defects (3, 6, 7) were found this way and are fixed.
"""

from __future__ import annotations

import pytest

from api_check import REPO, format_violations, members_used
from real_bindings import CUDA_BINDINGS, cuda_report

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds

MAJORS = sorted(CUDA_BINDINGS)
_REPORTS: dict[int, object] = {}
NO_LEAKS = {"device_buffers": 0, "pinned_buffers": 0, "streams": 0, "events": 0}

#: Violations of known, filed defects: (kind, scenario), excluded from the general checks and
#: asserted absent by their own tests below. Empty: issue 11's are fixed.
KNOWN: list[tuple[str, str]] = []


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    def get(major: int) -> dict:
        if major not in _REPORTS:
            try:
                _REPORTS[major] = cuda_report(major, tmp_path_factory.mktemp(f"cuda-{major}"))
            except BaseException as exc:  # skip (no registry) or failure: the same for every test
                _REPORTS[major] = exc
        r = _REPORTS[major]
        if isinstance(r, BaseException):
            raise r
        return r

    return get


def violations(r: dict, kinds: tuple[str, ...], scenario: str | None = None) -> list[dict]:
    return [v for v in r["cuda"]["violations"] if v["kind"] in kinds and v["scenario"] != "canary"
            and (scenario is None or v["scenario"] == scenario)]


def unknown(found: list[dict]) -> list[dict]:
    return [v for v in found if (v["kind"], v["scenario"]) not in KNOWN]


def describe(s: dict) -> str:
    return s.get("traceback") or f"{s.get('error_type')}: {s.get('error')}"


@pytest.mark.parametrize("major", MAJORS)
def test_the_real_cuda_bindings_were_checked(report, major):
    r = report(major)
    assert r["cuda_bindings_version"].split(".")[0] == str(major)
    assert "cudaMemcpyAsync" in r["cuda_runtime_names"]


@pytest.mark.parametrize("major", MAJORS)
def test_every_cuda_call_matches_the_real_bindings(report, major):
    found = unknown(violations(report(major), ("missing", "signature", "checker")))
    assert not found, "calls that disagree with the real cuda-bindings:\n" + format_violations(found)


@pytest.mark.parametrize("major", MAJORS)
def test_the_simulated_device_saw_no_misuse(report, major):
    found = unknown(violations(report(major), ("semantics",)))
    assert not found, format_violations(found)


@pytest.mark.parametrize("major", MAJORS)
def test_the_checker_reports_wrong_calls(report, major):
    data = report(major)["scenarios"]["canary"]["data"]
    assert data["canary"], "the canary did not run"
    silent = [label for label, found in data["canary"].items() if not found]
    assert not silent, f"the checker let these through: {silent}"


@pytest.mark.parametrize("major", MAJORS)
def test_device_query(report, major):
    s = report(major)["scenarios"]["device_query"]
    assert s["ok"], describe(s)
    d = s["data"]
    assert d["device_count"] == 1
    props = d["properties"]
    assert props["name"] == "NVIDIA H200" and props["compute_capability"] == "9.0"
    assert props["total_memory_bytes"] == 141 << 30
    assert props["runtime_version"] == d["runtime_version"] and props["runtime_version"] // 1000 == major
    assert props["driver_version"] == d["runtime_version"]


@pytest.mark.parametrize("major", MAJORS)
def test_no_device(report, major):
    s = report(major)["scenarios"]["no_device"]
    assert s["data"]["device_count"] == 0 and s["data"]["properties"] == {}
    assert not s["ok"] and "BackendUnavailableError" in s["error_types"]


@pytest.mark.parametrize("major", MAJORS)
def test_executor_runs_tiles_with_copies_overlapping_compute(report, major):
    s = report(major)["scenarios"]["executor"]
    assert s["ok"], describe(s)
    d = s["data"]
    assert d["order_ok"] and d["outputs_ok"] and d["overlap_ok"]
    assert d["leaks"] == NO_LEAKS


@pytest.mark.parametrize("major", MAJORS)
def test_bench_copy_rates_memory_and_executor_check(report, major):
    """``tseg-rt bench``'s CUDA calls: pinned and pageable copies, device memory, timing events."""
    s = report(major)["scenarios"]["bench_device"]
    assert s["ok"], describe(s)
    d = s["data"]
    assert d["memory"]["total_bytes"] == 141 << 30 and d["memory"]["used_bytes"] == 0
    assert d["memory_during"][1] == 141 << 30
    for kind in ("pinned_h2d", "pinned_d2h", "pageable_h2d", "pageable_d2h"):
        assert d["rates"][kind]["gb_per_s_best"] > 0
    assert d["check"] == {"ok": True, "overlap_ok": True, "identical_to_tile_alone": True, "identical_to_numpy": True,
                          "compute_ms_per_tile": 4.0}
    assert d["leaks"] == NO_LEAKS


def test_every_cuda_name_in_the_source_is_exercised(report):
    """Each ``cuda.bindings.runtime`` name the runtime uses went through the checker."""
    reports = [report(m) for m in MAJORS]
    exercised = set().union(*(r["cuda"]["exercised"] for r in reports))
    names = set().union(*(r["cuda_runtime_names"] for r in reports))
    missing = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        for name, line in members_used(path, "rt").items():
            if name in names and name not in exercised:
                missing.append(f"{path.relative_to(REPO)}:{line} rt.{name}")
    assert not missing, "cuda-bindings names no scenario exercised (add one to tests/api_surface_driver.py):\n" + \
        "\n".join(missing)


# --- issue 11's defects, each checked against the real bindings ------------------------------


@pytest.mark.parametrize("major", MAJORS)
def test_a_driver_too_old_is_named(report, major):
    s = report(major)["scenarios"]["driver_too_old"]
    assert s["data"]["device_count"] == 0
    assert not s["ok"] and "TsegError" in s["error_types"] and "driver" in s["error"].lower()


@pytest.mark.parametrize("major", MAJORS)
def test_close_after_a_failed_copy_waits_for_the_device(report, major):
    r = report(major)
    s = r["scenarios"]["executor_copy_fails_midway"]
    assert s["ok"] and "CudaError" in s["data"]["run_error"] and s["data"]["leaks"] == NO_LEAKS
    found = violations(r, ("semantics",), "executor_copy_fails_midway")
    assert not found, format_violations(found)


@pytest.mark.parametrize("major", MAJORS)
def test_an_abandoned_run_leaves_no_tile_in_flight(report, major):
    r = report(major)
    s = r["scenarios"]["executor_abandoned_generator"]
    assert s["ok"] and s["data"]["outputs_ok"] and s["data"]["leaks"] == NO_LEAKS
    found = violations(r, ("semantics",), "executor_abandoned_generator")
    assert not found, format_violations(found)


@pytest.mark.parametrize("major", MAJORS)
def test_a_run_from_another_thread_sets_the_device(report, major):
    r = report(major)
    s = r["scenarios"]["executor_other_thread"]
    assert s["ok"] and s["data"].get("outputs_ok"), describe(s)
    found = violations(r, ("semantics",), "executor_other_thread")
    assert not found, format_violations(found)


@pytest.mark.parametrize("major", MAJORS)
def test_another_device_count_error_is_named(report, major):
    s = report(major)["scenarios"]["device_count_fails"]
    assert s["ok"], s
    assert s["data"]["count"] == 0 and "cudaErrorLaunchFailure" in s["data"]["reason"]
